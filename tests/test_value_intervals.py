"""segments.parquet's 90% intervals of the predicted segment totals (issue 28, item 4), on both engines.

The state (:class:`segone.clv.SegmentTotals`): merging pieces equals the whole, and its intervals are
:func:`segone.clv.segment_intervals`'.  The run: the columns, their nulls when a value model is skipped, the
merge and withholding of small segments, the report, and the same numbers on Dask.
"""

import datetime as dt
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import segone
from segone import outputs
from segone._state import merge_all
from segone.clv import BetaGeo, GammaGamma, SegmentTotals, sample_bgnbd, sample_gamma_gamma, segment_intervals

INTERVALS = list(outputs.SEGMENT_INTERVAL_COLUMNS)


def _sim(n, seed):
    rng = np.random.default_rng(seed)
    T = rng.integers(20, 53, n).astype(float)
    x, tx, T = sample_bgnbd(n, T=T, seed=rng, r=0.5, alpha=8.0, a=0.6, b=2.5)
    return x, tx, T, sample_gamma_gamma(x, p=6.0, q=4.0, v=15.0, seed=rng)


def _transactions(n, seed=0, days=365, one_purchase=False):
    """BG/NBD-like purchases with gamma-shaped order values (so that both value models fit)."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    cid, ts, amount = [], [], []
    for c in range(n):
        t, lam, p, m = rng.uniform(0, days * 0.8), rng.gamma(2.0, 1 / 40), rng.beta(1, 5), rng.gamma(6, 8)
        while t < days:
            cid.append(c)
            ts.append(start + dt.timedelta(days=float(t)))
            amount.append(float(np.round(rng.gamma(8, m / 8), 2)))
            if one_purchase or rng.random() < p:
                break
            t += rng.exponential(1 / lam)
    return pa.table({"customer_id": cid, "ts": pa.array(ts, pa.timestamp("us")), "amount": amount})


@pytest.fixture(scope="module")
def tx():
    return _transactions(600, seed=1)


# -- the state -------------------------------------------------------------------------------------
def test_state_of_pieces_merges_to_the_whole_and_gives_segment_intervals():
    x, tx_, T, m = _sim(3000, 1)
    x[:5], tx_[:5] = 0.0, 0.0
    seg = np.arange(x.size) % 3
    seg[:7] = -1  # not assigned: adds nothing
    bg, gg = BetaGeo().fit(x, tx_, T), GammaGamma().fit(x, m)
    prof = pa.table({"frequency": x, "recency": tx_, "T": pa.array(T, mask=np.arange(x.size) == 10),
                     "monetary_value": m})  # fmt: skip
    kw = dict(k=4, beta_geo=bg, gamma_gamma=gg, horizon_months=6, freq="W")
    whole = SegmentTotals.of(prof, seg, **kw)
    parts = merge_all([SegmentTotals.of(prof.slice(i, 400), seg[i : i + 400], **kw) for i in range(0, 3000, 400)])
    assert SegmentTotals.from_dict(json.loads(json.dumps(parts.to_dict()))) == parts
    np.testing.assert_array_equal(parts.customers, whole.customers)
    # totals to rounding; derivative sums (central differences of step 1e-5) to the rounding that step amplifies
    np.testing.assert_allclose(parts.sums[..., 0], whole.sums[..., 0], rtol=1e-12)
    np.testing.assert_allclose(parts.sums, whole.sums, rtol=1e-7, atol=1e-6)
    out = parts.finish(bg, gg)
    ok = (seg >= 0) & (np.arange(x.size) != 10)
    ref = segment_intervals(bg, x[ok], tx_[ok], T[ok], seg[ok], gamma_gamma=gg, monetary_value=m[ok], time=6,
                            freq="W")  # fmt: skip
    for name in ("expected_purchases", "clv"):
        np.testing.assert_allclose(out[f"total_{name}"][:3], ref[name], rtol=1e-10)
        np.testing.assert_allclose(out[f"total_{name}_lo"][:3], ref[f"{name}_low"], rtol=1e-8)
        np.testing.assert_allclose(out[f"total_{name}_hi"][:3], ref[f"{name}_high"], rtol=1e-8)
        assert np.isnan(out[f"total_{name}"][3]) and np.isnan(out[f"total_{name}_lo"][3])  # segment 3: nobody
    # merging segments (the privacy merge) adds their totals and gradients: the merged segment's own interval
    merged = parts.merge_segments([0, 0, 1, -1]).finish(bg, gg)
    both = segment_intervals(bg, x[ok], tx_[ok], T[ok], np.minimum(seg[ok], 1) * (seg[ok] == 2),
                             gamma_gamma=gg, monetary_value=m[ok], time=6, freq="W")  # fmt: skip
    np.testing.assert_allclose(merged["total_clv_lo"], both["clv_low"], rtol=1e-8)
    with pytest.raises(segone.errors.ParameterError, match="cannot merge"):
        parts.merge(SegmentTotals.of(prof, seg, k=4, beta_geo=bg, horizon_months=6, freq="W"))


# -- the run ---------------------------------------------------------------------------------------
def _segments(out):
    return pq.read_table(os.path.join(out, outputs.SEGMENTS))


def _run_json(out):
    with open(os.path.join(out, outputs.RUN_JSON)) as f:
        return json.load(f)


def test_run_writes_the_totals_with_their_intervals(tx, tmp_path):
    res = segone.run(tx, tmp_path / "o", 3, n_init=1)
    seg = _segments(tmp_path / "o")
    assert set(INTERVALS) <= set(seg.column_names)
    info = _run_json(tmp_path / "o")["clv"]
    assert info["skipped"]["gamma_gamma"] is None, info  # the premise: both models fitted
    assert info["intervals"]["level"] == 0.9 and info["intervals"]["skipped"] is None
    asg = pq.read_table(os.path.join(tmp_path / "o", outputs.ASSIGNMENTS))
    for name in ("expected_purchases", "clv"):
        total = seg.column(f"total_{name}").to_numpy()
        lo, hi = seg.column(f"total_{name}_lo").to_numpy(), seg.column(f"total_{name}_hi").to_numpy()
        assert (lo < total).all() and (total < hi).all() and (lo > 0).all()
        by_hand = np.bincount(asg.column("segment").to_numpy(), asg.column(name).to_numpy(), minlength=seg.num_rows)
        np.testing.assert_allclose(total, by_hand, rtol=1e-9)
    # a row below the minimum size is suppressed whole, its intervals with it
    from segone.privacy import suppress_segment_table

    small = int(np.argmin(seg.column("size").to_numpy()))
    hidden, _ = suppress_segment_table(seg, int(seg.column("size").to_numpy()[small]) + 1)
    assert all(hidden.column(c)[small].as_py() is None for c in INTERVALS)
    # the report's value table shows the totals with their intervals
    from segone.report import write_report

    page = open(write_report(tmp_path / "o", tmp_path / "r.html"), encoding="utf-8").read()
    assert "(90% interval)" in page and "delta method" in page
    top = seg.column("total_clv_lo").to_pylist()[0]
    assert f"{top:,.0f}" in page


def test_skipped_models_leave_the_intervals_null(tmp_path):
    # nobody bought twice: no purchase model, so no interval (and run.json says why)
    segone.run(_transactions(300, seed=2, one_purchase=True), tmp_path / "a", 2, n_init=1)
    seg, info = _segments(tmp_path / "a"), _run_json(tmp_path / "a")["clv"]
    assert info["skipped"]["bg_nbd"] and "skipped" in info["intervals"]["skipped"]
    assert all(seg.column(c).null_count == seg.num_rows for c in INTERVALS)
    assert seg.column("total_clv").null_count == seg.num_rows  # null, not 0: nothing was predicted


def test_value_by_segment_leaves_the_intervals_null_and_says_why(tx, tmp_path):
    segone.run(tx, tmp_path / "o", 2, n_init=1, value_by="segment")
    seg, info = _segments(tmp_path / "o"), _run_json(tmp_path / "o")["clv"]
    assert "value_by='segment'" in info["intervals"]["skipped"]
    assert all(seg.column(c).null_count == seg.num_rows for c in INTERVALS)
    assert seg.column("total_clv").null_count == 0  # the predictions themselves are there


def test_gamma_gamma_skipped_keeps_the_purchase_intervals(tx, tmp_path, monkeypatch):
    from segone import clv

    real = clv.fit_value

    def no_spend(*a, **k):
        bg, gg, info = real(*a, **k)
        info["skipped"]["gamma_gamma"] = "skipped by the test"
        return bg, None, info

    monkeypatch.setattr(clv, "fit_value", no_spend)
    segone.run(tx, tmp_path / "o", 2, n_init=1)
    seg, info = _segments(tmp_path / "o"), _run_json(tmp_path / "o")["clv"]
    assert seg.column("total_expected_purchases_lo").null_count == 0
    assert seg.column("total_clv_lo").null_count == seg.num_rows == seg.column("total_clv_hi").null_count
    assert "no spend model" in info["intervals"]["skipped"]
    from segone.report import write_report

    page = open(write_report(tmp_path / "o", tmp_path / "r.html"), encoding="utf-8").read()
    assert "Total expected purchases, next 12 months (90% interval)" in page


@pytest.mark.parametrize("how", ["merge", "withhold"])
def test_small_segments_are_merged_or_withheld_with_their_intervals(tx, tmp_path, how):
    kw = dict(n_init=1, random_state=3)
    base = segone.run(tx, tmp_path / "all", 6, **kw)
    sizes = base.segments.column("size").to_numpy()
    k = int(np.sort(sizes)[1]) + 1  # the two smallest segments are below k
    res = segone.run(tx, tmp_path / how, 6, min_segment_size=k, small_segments=how, **kw)
    seg = _segments(tmp_path / how)
    assert seg.num_rows < 6 and (seg.column("size").to_numpy() >= k).all()
    for c in INTERVALS:
        assert seg.column(c).null_count == 0
    # the totals of the exported segments are those of their customers: with "merge" every customer's
    total = pc.sum(seg.column("total_expected_purchases")).as_py()
    everyone = pc.sum(base.segments.column("total_expected_purchases")).as_py()
    if how == "merge":
        assert total == pytest.approx(everyone, rel=1e-9)
    else:
        small = base.segments.filter(pc.less(base.segments.column("size"), k))
        assert small.num_rows == 2
        assert total == pytest.approx(everyone - pc.sum(small.column("total_expected_purchases")).as_py(), rel=1e-9)
    lo, total = (seg.column(c).to_numpy() for c in ("total_expected_purchases_lo", "total_expected_purchases"))
    assert (lo < total).all()
    assert res.summary["privacy"]["small_segments"]["method"] == how


@pytest.mark.slow
def test_dask_gives_the_intervals_of_one_process(tx, tmp_path):
    import distributed

    from segone.dask import DaskEngine

    loc = segone.run(tx, tmp_path / "l", 3, n_init=1, random_state=0)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as client:  # fmt: skip
        das = segone.run(tx, tmp_path / "d", 3, n_init=1, random_state=0, engine=DaskEngine(client, npartitions=3))
    a, b = _segments(tmp_path / "l"), _segments(tmp_path / "d")
    assert a.column("size").to_pylist() == b.column("size").to_pylist()
    for c in ["total_expected_purchases", "total_clv", *INTERVALS]:
        np.testing.assert_allclose(b.column(c).to_numpy(), a.column(c).to_numpy(), rtol=1e-9)
    assert loc.summary["clv"]["intervals"] == das.summary["clv"]["intervals"]
