import numpy as np
import pyarrow as pa
import pytest

import segone
from segone.errors import ParameterError, SchemaError
from segone.rfm import DEFAULT_RFM_RULES, UNCLASSIFIED, rfm_scores, rule_grid


def test_every_default_segment_is_reachable_and_unnamed_cells_are_counted(capsys):
    names, grid = rule_grid()
    assert names == [r["segment"] for r in DEFAULT_RFM_RULES]
    assert len(names) == 11
    for i, name in enumerate(names):
        assert (grid == i).any(), f"segment {name!r} matches no score cell (shadowed by an earlier rule)"
    unnamed = int((grid < 0).sum())
    with capsys.disabled():
        print(f"\nRFM default rules: {125 - unnamed} of 125 cells named, {unnamed} unnamed")
    assert unnamed == 0  # the documented property of the default table
    # a customer in every cell gets the rule's name: scores drive the lookup
    r, f, m = np.meshgrid(np.arange(5), np.arange(5), np.arange(5), indexing="ij")
    assert set(np.array(names)[grid[r, f, m]].ravel()) == set(names)


def test_scores_ranks_ties_and_direction():
    t = pa.table({
        "customer_id": np.arange(10),
        "recency_days": [1.0, 2, 3, 4, 5, 6, 7, 8, 9, None],
        "orders": [1, 1, 1, 1, 1, 1, 2, 3, 4, 0],
        "spend_total": np.arange(10, dtype=float) * 10,
    })  # fmt: skip
    out = rfm_scores(t).to_pydict()
    r, f, m = np.array(out["r_score"]), np.array(out["f_score"]), np.array(out["m_score"])
    assert r[0] == 5 and r[9] == 1 and np.all(np.diff(r[:9]) <= 0)  # recent is best; never bought is worst
    assert len(set(f[:6])) == 1  # ties share a score
    assert f[8] == 5 and f[9] == 1
    np.testing.assert_array_equal(m, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    assert out["rfm_code"][0] == f"{r[0]}{f[0]}{m[0]}"
    assert set(out["rfm_segment"]) <= set(rule_grid()[0])


def test_scores_do_not_depend_on_row_order():
    prof = segone.build_profiles(segone.synth.generate(3000, seed=1).transactions)
    a = rfm_scores(prof)
    perm = np.random.default_rng(0).permutation(prof.num_rows)
    b = rfm_scores(prof.take(perm))
    assert a.take(perm).equals(b)
    counts = {s: a["rfm_segment"].to_pylist().count(s) for s in set(a["rfm_segment"].to_pylist())}
    assert len(counts) >= 6  # synthetic data spans most segments


def test_custom_rules_bins_and_unclassified():
    t = pa.table({"customer_id": [1, 2, 3], "recency_days": [1.0, 50, 100], "orders": [5, 2, 1],
                  "spend_total": [500.0, 50, 5]})  # fmt: skip
    rules = [{"segment": "Top", "r": [3, 3], "f": [3, 3], "m": [1, 3]}]
    out = rfm_scores(t, bins=3, rules=rules).to_pydict()
    assert out["rfm_segment"] == ["Top", UNCLASSIFIED, UNCLASSIFIED]
    assert "rfm_segment" not in rfm_scores(t, bins=3).column_names  # default table is for bins=5


def test_errors():
    t = pa.table({"customer_id": [1], "recency_days": [1.0], "orders": [1], "spend_total": [1.0]})
    with pytest.raises(ParameterError, match="bins"):
        rfm_scores(t, bins=1)
    with pytest.raises(SchemaError, match="lack"):
        rfm_scores(t.drop(["orders"]))
    with pytest.raises(ParameterError, match="exactly the keys"):
        rfm_scores(t, rules=[{"segment": "x"}])
    with pytest.raises(ParameterError, match="low <= high"):
        rfm_scores(t, rules=[{"segment": "x", "r": [0, 9], "f": [1, 1], "m": [1, 1]}])
    with pytest.raises(SchemaError, match="numeric"):
        rfm_scores(t.set_column(2, "orders", pa.array(["a"])))
