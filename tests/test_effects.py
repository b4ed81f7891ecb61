"""Campaign effects: the effect is recovered, the 95% intervals cover the truth at the nominal rate, a campaign
without effect is found to have none at that rate, and bad treatment files are refused before any work."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from segone import effects as E
from segone._state import merge_all
from segone.synth import campaign_truth, generate_periods


def _moves(prev, new, ids):
    status = np.where(prev == new, "stayed", "moved")
    return pa.table({"customer_id": ids, "previous_segment": prev, "segment": new, "status": status})


def _simulated(seed, n=3000, p0=0.10, d=0.05):
    """Customers of previous segment 0, half treated at random; treated move to segment 1 with p0 + d."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) + 1_000_000 * seed
    treated = rng.random(n) < 0.5
    moved = rng.random(n) < np.where(treated, p0 + d, p0)
    prev = np.zeros(n, dtype=np.int64)
    new = np.where(moved, 1, 0)
    treat = pa.table({"customer_id": ids, "group": np.where(treated, "treatment", "control")})
    return _moves(prev, new, ids), treat


def _moved_row(table):
    t = table.filter(pc.and_(pc.equal(table.column("measure"), "moved"), pc.equal(table.column("to_segment"), 1)))
    assert t.num_rows == 1
    return t.to_pylist()[0]


def _binomial_band(p, n, z=3.0):
    s = np.sqrt(p * (1 - p) / n)
    return p - z * s, p + z * s


@pytest.mark.slow
@pytest.mark.parametrize("d", [0.05, 0.0])
def test_intervals_cover_the_truth_at_the_nominal_rate(d):
    """Across 150 seeds the 95% interval holds the true difference 95% of the time (within a 3-sigma binomial band);
    with no effect it excludes 0 5% of the time."""
    reps = 150
    cover = 0
    for seed in range(reps):
        moves, treat = _simulated(seed, d=d)
        table, _ = E.campaign_effects(moves, treat, n_boot=200, seed=seed)
        r = _moved_row(table)
        cover += r["low"] <= d <= r["high"]
    lo, hi = _binomial_band(0.95, reps)
    assert lo <= cover / reps <= hi, (cover, reps)


def test_effect_of_a_synthetic_campaign_is_recovered():
    """generate_periods(campaign=...): the latent A -> B uplift, measured on the true segments."""
    camp = {"from_segment": 0, "to_segment": 1, "effect": 0.3, "name": "spring"}
    p0, p1 = generate_periods(20_000, periods=2, switch_share=0.1, seed=5, campaign=camp)
    ids = p0.truth.column("customer_id").to_numpy()
    assert np.array_equal(ids, p1.truth.column("customer_id").to_numpy())
    moves = _moves(p0.truth.column("segment").to_numpy().astype(np.int64),
                   p1.truth.column("segment").to_numpy().astype(np.int64), ids)  # fmt: skip
    table, info = E.campaign_effects(moves, p1.treatment, n_boot=200, top_segment=1)
    t = table.filter(pc.and_(pc.equal(table.column("previous_segment"), 0), pc.equal(table.column("to_segment"), 1)))
    r = t.filter(pc.equal(t.column("measure"), "moved")).to_pylist()[0]
    truth = campaign_truth(camp, switch_share=0.1)
    assert r["low"] <= truth <= r["high"] and abs(r["difference"] - truth) < 0.03
    assert r["campaign"] == "spring" and r["reference"] == "control" and not r["observational"]
    # other previous segments: no effect on moving to segment 1 (the campaign only targets segment 0)
    others = table.filter(pc.and_(pc.not_equal(table.column("previous_segment"), 0),
                                  pc.equal(table.column("to_segment"), 1))).to_pylist()  # fmt: skip
    assert others and sum(abs(o["difference"]) > 0.03 for o in others) == 0
    head = info["campaigns"][0]["headline"][0]
    assert head["into_top_segment"]["uplift"] > 0.02 and head["into_top_segment"]["low"] > 0
    srm = info["campaigns"][0]["sample_ratio"]
    assert srm["flagged"] is False and abs(srm["observed_reference_share"] - 0.5) < 0.02


def test_sample_ratio_mismatch_is_flagged():
    moves, treat = _simulated(1, n=4000)
    # the analysis lost 40% of the control group (e.g. a join on the wrong id type for part of the file)
    ctrl = pc.equal(treat.column("group"), "control").to_numpy(zero_copy_only=False)
    drop = ctrl & (np.arange(treat.num_rows) % 5 < 2)
    table, info = E.campaign_effects(moves.filter(pa.array(~drop)), treat, n_boot=50)
    assert info["campaigns"][0]["sample_ratio"]["flagged"] is True
    _, info = E.campaign_effects(moves, treat, n_boot=50)
    assert info["campaigns"][0]["sample_ratio"]["flagged"] is False


def test_observational_without_a_control_group():
    moves, treat = _simulated(2, n=2000, d=0.1)
    only = treat.filter(pc.equal(treat.column("group"), "treatment"))
    table, info = E.campaign_effects(moves, only, n_boot=100)
    r = _moved_row(table)
    assert r["reference"] == E.UNTREATED and r["observational"] is True
    assert r["customers"] + r["reference_customers"] == 2000
    assert info["notes"] and "observational" in info["notes"][0] and "sample_ratio" not in info["campaigns"][0]


def test_several_campaigns_are_compared_separately_and_cells_below_k_are_suppressed():
    moves, treat = _simulated(3, n=1000)
    t2 = treat.slice(0, 300).set_column(1, "group", pa.array(["treatment"] * 150 + ["control"] * 150))
    both = pa.concat_tables([treat.append_column("campaign", pa.array(["a"] * treat.num_rows)),
                             t2.append_column("campaign", pa.array(["b"] * t2.num_rows))])  # fmt: skip
    table, info = E.campaign_effects(moves, both, n_boot=50, min_segment_size=200)
    assert [c["campaign"] for c in info["campaigns"]] == ["a", "b"]
    b = table.filter(pc.equal(table.column("campaign"), "b")).to_pylist()
    assert b and all(r["customers"] is None and r["difference"] is None for r in b)
    a = table.filter(pc.equal(table.column("campaign"), "a")).to_pylist()
    assert all(r["customers"] is not None for r in a)


def test_pieces_give_the_numbers_of_the_whole():
    """The replicate weights depend on the ids only: any partitioning gives the same state."""
    moves, treat = _simulated(4, n=1500, d=0.05)
    whole, _ = E.campaign_effects(moves, treat, n_boot=80, seed=9)
    parts = [moves.slice(0, 10), moves.slice(10, 700), moves.slice(710, 0), moves.slice(710)]
    split, _ = E.campaign_effects(parts, treat, n_boot=80, seed=9)
    assert whole.equals(split)
    t = E.read_treatment(treat)
    camps, groups, _ = E.plan_groups(t)
    ctx = {"campaigns": camps, "groups": groups, "segments": [0, 1], "n_boot": 30}
    rows = E.effect_rows(moves, treatment=t, campaigns=camps, groups=groups, segments=[0, 1])
    s = E.EffectState.of(rows, **ctx)
    again = E.EffectState.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again == s
    merged = merge_all([E.EffectState.of(rows.slice(a, b), **ctx) for a, b in ((0, 3), (3, 900), (903, 10_000))])
    np.testing.assert_allclose(merged.boot, s.boot)
    np.testing.assert_array_equal(merged.counts, s.counts)


# -- bad input ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim():
    return _simulated(6, n=400)


def test_a_customer_in_both_groups_is_refused(sim):
    moves, treat = sim
    dup = pa.concat_tables([treat, pa.table({"customer_id": treat.column("customer_id").slice(0, 3),
                                             "group": ["control", "treatment", "control"]})])  # fmt: skip
    dup = dup.filter(pc.is_valid(dup.column("customer_id")))
    with pytest.raises(E.TreatmentError, match="more than one group"):
        E.campaign_effects(moves, dup)


def test_ids_matching_no_run_are_refused_and_partial_matches_counted(sim):
    moves, treat = sim
    far = treat.set_column(0, "customer_id", pc.add(treat.column("customer_id"), 10**12))
    with pytest.raises(E.TreatmentError, match="none of its customers"):
        E.campaign_effects(moves, far)
    half = pa.concat_tables([treat, far.slice(0, 50)])
    _, info = E.campaign_effects(moves, half, n_boot=20)
    assert info["campaigns"][0]["ids"] == {"listed": 450, "found": 400, "not_found": 50}


def test_an_empty_group_and_a_missing_control_are_refused(sim):
    moves, treat = sim
    t = pa.concat_tables([treat, pa.table({"customer_id": pa.array([10**12], pa.int64()), "group": ["control2"]})])
    with pytest.raises(E.TreatmentError, match="none is named 'control'"):
        E.campaign_effects(moves, t.set_column(1, "group", pc.replace_substring(t.column("group"), "control", "ctl")))
    ghost = pa.concat_tables([treat.filter(pc.equal(treat.column("group"), "treatment")),
                              pa.table({"customer_id": pa.array([10**12 + 1], pa.int64()), "group": ["control"]})])
    with pytest.raises(E.TreatmentError, match="group 'control' .* has no customer"):
        E.campaign_effects(moves, ghost)


def test_a_campaign_sent_after_the_run_is_refused(sim):
    moves, treat = sim
    import datetime as dt

    sent = pa.array([dt.datetime(2025, 3, 1)] * treat.num_rows)
    t = treat.append_column("sent_at", sent)
    as_of = int(dt.datetime(2025, 2, 1, tzinfo=dt.timezone.utc).timestamp() * 1e6)
    with pytest.raises(E.TreatmentError, match="after the new run's as_of"):
        E.campaign_effects(moves, t, as_of=as_of)
    E.campaign_effects(moves, t, as_of=as_of + 86_400_000_000 * 60, n_boot=20)


@pytest.mark.parametrize("bad, match", [
    (pa.table({"id": [1], "group": ["treatment"]}), "'customer_id' not found"),
    (pa.table({"customer_id": [1, None], "group": ["treatment", "control"]}), "null values"),
])  # fmt: skip
def test_malformed_treatment_files(sim, bad, match):
    with pytest.raises(E.TreatmentError, match=match):
        E.campaign_effects(sim[0], bad)


# -- through segone run --previous --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    import segone

    root = tmp_path_factory.mktemp("eff")
    camp = {"from_segment": 0, "to_segment": 1, "effect": 0.5, "name": "spring"}
    p0, p1 = generate_periods(6000, periods=2, switch_share=0.05, seed=7, campaign=camp)
    r0 = segone.run(p0.transactions, root / "r0", 6, events=p0.events, attributes=p0.customers)
    return root, r0, p1, camp


def test_run_with_previous_and_treatment_writes_the_effects(two_runs):
    import pyarrow.parquet as pq

    import segone

    root, r0, p1, camp = two_runs
    res = segone.run(p1.transactions, root / "r1", 6, events=p1.events, attributes=p1.customers,
                     previous=r0.out, treatment=p1.treatment)  # fmt: skip
    eff = pq.read_table(root / "r1" / "effects.parquet")
    info = res.summary["effects"]
    assert info["campaigns"][0]["campaign"] == "spring" and info["campaigns"][0]["reference"] == "control"
    assert info["values"]["spend_change"] > 5000  # the customers of both runs
    rows = eff.to_pylist()
    want = {"stayed", "moved", "spend_change", "spend_gained_per_treated"}
    if info["values"]["clv_change"]:  # the CLV is empty when the spend model is skipped (synthetic lognormal spend)
        want |= {"clv_change", "clv_gained_per_treated"}
    assert {r["measure"] for r in rows} >= want
    # the planted move: treated customers of latent segment 0 leave their segment far more often than the control
    stayed = [r for r in rows if r["measure"] == "stayed" and r["difference"] is not None]
    assert min(r["difference"] for r in stayed) < -0.15
    assert all(r["low"] <= r["difference"] <= r["high"] for r in stayed)


def test_treatment_without_previous_and_bad_files_fail_before_any_work(two_runs, tmp_path):
    import segone
    from segone.errors import ParameterError

    root, r0, p1, camp = two_runs
    with pytest.raises(ParameterError, match="treatment= needs previous="):
        segone.run("no/such/input", tmp_path / "o", 4, treatment=p1.treatment)
    bad = p1.treatment.drop_columns(["group"])
    with pytest.raises(E.TreatmentError, match="'group' not found"):
        segone.run(p1.transactions, tmp_path / "o", 4, previous=r0.out, treatment=bad)
    assert not (tmp_path / "o").exists()


def test_the_report_shows_the_campaign_effects_only_when_there_are_some(two_runs, tmp_path):
    import segone
    from segone.report import write_report

    root, r0, p1, camp = two_runs
    out = root / "r1"
    if not out.exists():
        segone.run(p1.transactions, out, 6, events=p1.events, attributes=p1.customers, previous=r0.out,
                   treatment=p1.treatment)  # fmt: skip
    page = open(write_report(out, tmp_path / "r.html"), encoding="utf-8").read()
    assert 'id="effects" data-present="yes"' in page and '"chart-effects-0"' in page
    assert "spring" in page and 'href="#effects"' in page
    plain = open(write_report(r0.out, tmp_path / "p.html"), encoding="utf-8").read()
    assert 'id="effects"' not in plain and 'href="#effects"' not in plain


def test_track_gives_the_effects_of_run_previous(two_runs, tmp_path):
    import pyarrow.parquet as pq

    import segone

    root, r0, p1, camp = two_runs
    out = root / "r1"
    if not out.exists():
        segone.run(p1.transactions, out, 6, events=p1.events, attributes=p1.customers, previous=r0.out,
                   treatment=p1.treatment)  # fmt: skip
    cmp = segone.track.compare_outputs(r0.out, out, tmp_path / "t", treatment=p1.treatment)
    a = pq.read_table(out / "effects.parquet")
    b = pq.read_table(tmp_path / "t" / "effects.parquet")
    assert a.equals(b)
    assert cmp.summary["effects"]["campaigns"][0]["ids"]["found"] == p1.treatment.num_rows


def test_pseudonymised_runs_match_the_treatment_ids_with_the_key(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    import segone

    monkeypatch.setenv("SEGONE_ID_KEY", "an id key of at least sixteen bytes")
    p0, p1 = generate_periods(2000, periods=2, switch_share=0.05, seed=9,
                              campaign={"from_segment": 0, "to_segment": 1, "effect": 0.5})  # fmt: skip
    r0 = segone.run(p0.transactions, tmp_path / "r0", 4, hash_ids=True)
    r1 = segone.run(p1.transactions, tmp_path / "r1", 4, hash_ids=True, previous=r0.out, treatment=p1.treatment)
    ids = r1.summary["effects"]["campaigns"][0]["ids"]
    assert ids["found"] == ids["listed"] == 2000
    raw = {str(v) for v in p1.treatment.column("customer_id").to_pylist()}
    for name in ("effects.parquet", "moves.parquet"):
        t = pq.read_table(tmp_path / "r1" / name)
        for c in t.column_names:
            vals = {str(v) for v in t.column(c).to_pylist()}
            assert not (vals & raw) or c in ("previous_segment", "segment", "to_segment", "customers",
                                            "reference_customers"), (name, c)  # fmt: skip


@pytest.mark.slow
def test_dask_run_gives_the_effects_of_one_process(two_runs, tmp_path):
    import distributed
    import pyarrow.parquet as pq

    import segone
    from segone.dask import DaskEngine

    root, r0, p1, camp = two_runs
    out = root / "r1"
    if not out.exists():
        segone.run(p1.transactions, out, 6, events=p1.events, attributes=p1.customers, previous=r0.out,
                   treatment=p1.treatment)  # fmt: skip
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as client:  # fmt: skip
        segone.run(p1.transactions, tmp_path / "d", 6, events=p1.events, attributes=p1.customers, previous=r0.out,
                   treatment=p1.treatment, engine=DaskEngine(client, npartitions=3))  # fmt: skip
    a = pq.read_table(out / "effects.parquet").to_pandas()
    b = pq.read_table(tmp_path / "d" / "effects.parquet").to_pandas()
    assert a.drop(columns=["value", "reference_value", "difference", "low", "high"]).equals(
        b.drop(columns=["value", "reference_value", "difference", "low", "high"]))
    for c_ in ("value", "reference_value", "difference", "low", "high"):
        np.testing.assert_allclose(a[c_].to_numpy(float), b[c_].to_numpy(float), rtol=1e-9, atol=1e-12)
