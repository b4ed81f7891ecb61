"""`segone demo`: two synthetic periods, the second tracked against the first, the moves scored against the truth."""

import json

import pytest
from click.testing import CliRunner

from segone.cli import main


def test_demo_tracks_a_second_period_and_scores_the_moves(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--customers", "4000", "--clusters", "6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "== period 2 (tracked against period 1: --previous) ==" in text
    assert text.count("adjusted Rand index vs the true segments") == 2
    assert "moves recovered:" in text and "precision" in text and "recall" in text
    assert "migration matrix vs the true one" in text
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "period-1", "period-2", "report.html"] or \
        sorted(p.name for p in out.iterdir()) == ["demo.json", "period-1", "period-2"]  # fmt: skip
    assert (out / "period-2" / "moves.parquet").exists() and (out / "period-2" / "migration.parquet").exists()
    run2 = json.loads((out / "period-2" / "run.json").read_text())
    assert run2["tracking"]["previous"] == str(out / "period-1")  # a path that exists after the demo
    summary = json.loads((out / "demo.json").read_text())
    assert summary["format"] == "segone-demo" and summary["customers"] == 4000 and summary["segments"] == 6
    m = summary["moves"]
    # 10% switch segment at random; the planted win-back campaign moves some treated lapsed customers on top
    assert m["customers_in_both"] == 4000 and 400 < m["true_moved"] < 400 + 0.3 * 0.25 * 4000
    assert m["moved_precision"] >= 0.8 and m["moved_recall"] >= 0.8, m
    camp = summary["campaign"]
    moved = [r for c in camp["effects"] for r in c["largest_moves"] if r["measure"] == "moved"]
    assert moved and moved[0]["low"] > 0.1, camp  # the planted move is found, well away from no effect
    assert (out / "period-2" / "effects.parquet").exists() and (out / "period-2" / "actions.parquet").exists()
    assert m["migration_agreement"] >= 0.95, m
    assert f"precision {m['moved_precision']:.3f}, recall {m['moved_recall']:.3f}" in text
    # the same --out again: an earlier demo's outputs are replaced
    again = CliRunner().invoke(main, ["demo", "--customers", "1000", "--clusters", "3", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "demo.json").read_text())["customers"] == 1000


def test_demo_out_holding_other_files_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    res = CliRunner().invoke(main, ["demo", "--customers", "200", "--clusters", "2", "--out", str(home)])
    assert res.exit_code == 2 and "did not write" in res.output
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("n", [300])
def test_moves_recovery_of_a_perfect_and_a_blind_tracker(n):
    """moves_recovery: the truth itself scores 1, a tracker that flags nobody has recall 0."""
    import numpy as np
    import pyarrow as pa

    from segone.synth import generate_periods, moves_recovery

    p0, p1 = generate_periods(n, switch_share=0.2, seed=1)
    s0, s1 = (p.truth.sort_by("customer_id").column("segment").to_numpy() for p in (p0, p1))
    ids = p0.truth.sort_by("customer_id").column("customer_id")
    status = np.where(s0 == s1, "stayed", "moved")
    perfect = pa.table({"customer_id": ids, "previous_segment": pa.array(s0 + 10), "segment": pa.array(s1 + 10),
                        "status": pa.array(status)})  # fmt: skip
    r = moves_recovery(perfect, p0.truth, p1.truth)
    assert r["moved_precision"] == r["moved_recall"] == r["migration_agreement"] == 1.0
    assert r["true_moved"] == round(0.2 * n)
    blind = perfect.set_column(2, "segment", pa.array(s0 + 10)).set_column(3, "status", pa.array(["stayed"] * n))
    r = moves_recovery(blind, p0.truth, p1.truth)
    assert r["moved_recall"] == 0.0 and r["found_moved"] == 0 and r["migration_agreement"] < 0.85
