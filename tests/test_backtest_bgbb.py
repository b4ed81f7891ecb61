"""BG/BB's path from the command line: ``segone backtest --models bgnbd,bgbb --freq W`` (issue 28, item 2).

Each period of the BTYD freq is one transaction opportunity: the calibration columns are BG/BB's data, the
holdout's periods with a purchase what it predicts.  Refused with daily periods, and by ``segone run``.
"""

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import segone
from segone.backtesting import calibration_and_holdout, model_names
from segone.cli import main
from segone.clv import BetaGeoBetaBinom
from segone.errors import ParameterError



def _transactions(n, seed=0, days=365):
    """BG/NBD-like purchases with gamma-shaped order values."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    cid, ts, amount = [], [], []
    for c in range(n):
        t, lam, p, m = rng.uniform(0, days * 0.8), rng.gamma(2.0, 1 / 40), rng.beta(1, 5), rng.gamma(6, 8)
        while t < days:
            cid.append(c)
            ts.append(start + dt.timedelta(days=float(t)))
            amount.append(float(np.round(rng.gamma(8, m / 8), 2)))
            if rng.random() < p:
                break
            t += rng.exponential(1 / lam)
    return pa.table({"customer_id": cid, "ts": pa.array(ts, pa.timestamp("us")), "amount": amount})


@pytest.fixture(scope="module")
def weekly(tmp_path_factory):
    tx = _transactions(1200, seed=5, days=500)
    res = segone.backtest(tx, tmp_path_factory.mktemp("bgbb") / "o", holdout_days=91, freq="W",
                          models="bgnbd,bgbb", n_clusters=2)  # fmt: skip
    return tx, res


def test_backtest_fits_bgbb_on_the_weekly_opportunities(weekly):
    tx, res = weekly
    rows = {r["model"]: r for r in res.metrics.to_pylist()}
    assert list(rows) == ["bgnbd", "bgbb", "naive", "segment_mean"]
    bb = rows["bgbb"]
    assert bb["skipped"] is None and bb["kind"] == "model" and bb["mae_purchases"] is not None
    # the same fit and predictions as BG/BB on lifetimes' calibration / holdout columns at that cutoff
    cal = calibration_and_holdout(tx, res.summary["cutoff"], freq="W")
    x, tx_, n = (cal.column(c).to_numpy() for c in ("frequency_cal", "recency_cal", "T_cal"))
    ref = BetaGeoBetaBinom().fit(x, tx_, n)
    got = res.summary["fitted"]["models"]["bgbb"]["params"]
    assert got == pytest.approx(ref.params_, rel=1e-9)
    m = cal.column("duration_holdout").to_numpy()[0]
    assert m == res.summary["duration_holdout"] == 13
    assert bb["predicted_purchases"] == pytest.approx(ref.expected_purchases(m, x, tx_, n).sum(), rel=1e-9)
    assert bb["actual_purchases"] == cal.column("frequency_holdout").to_numpy().sum()
    dec = res.deciles.filter(np.array([v == "bgbb" for v in res.deciles.column("model").to_pylist()]))
    assert dec.num_rows > 0
    from segone.report import write_report

    page = open(write_report(res.out, os.path.join(res.out, "..", "r.html")), encoding="utf-8").read()
    assert "BG/BB" in page


def test_bgbb_is_refused_where_it_cannot_apply(tmp_path):
    tx = _transactions(200, seed=6)
    with pytest.raises(ParameterError, match="freq='D'.*discrete-time.*freq='W'"):
        segone.backtest(tx, tmp_path / "o", holdout_days=60, models=["bgnbd", "bgbb"])
    assert not os.path.exists(tmp_path / "o")  # nothing written
    src = tmp_path / "tx.parquet"
    import pyarrow.parquet as pq

    pq.write_table(tx, src)
    r = CliRunner().invoke(main, ["backtest", str(src), "-o", str(tmp_path / "c"), "--holdout-days", "60",
                                  "--models", "bgbb"])  # fmt: skip
    assert r.exit_code == 2 and "discrete-time" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    help_text = CliRunner().invoke(main, ["backtest", "--help"]).output
    assert "bgbb" in help_text
    with pytest.raises(ParameterError, match="value_model='bgbb'.*segone backtest"):
        segone.run(tx, tmp_path / "r", 2, value_model="bgbb")
    assert "bgbb" not in model_names("all") and model_names("bgbb") == ["bgbb"]


@pytest.mark.slow
def test_bgbb_backtest_gives_the_same_numbers_on_dask(weekly, tmp_path):
    import distributed

    from segone.dask import DaskEngine

    tx, res = weekly
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as client:  # fmt: skip
        das = segone.backtest(tx, tmp_path / "d", holdout_days=91, freq="W", models="bgnbd,bgbb", n_clusters=2,
                              engine=DaskEngine(client, npartitions=3))  # fmt: skip
    assert das.summary["engine"]["name"] == "dask"
    assert das.summary["fitted"]["models"]["bgbb"]["params"] == pytest.approx(
        res.summary["fitted"]["models"]["bgbb"]["params"], rel=1e-9)
    a = {r["model"]: r for r in res.metrics.to_pylist()}["bgbb"]
    b = {r["model"]: r for r in das.metrics.to_pylist()}["bgbb"]
    for k in ("mae_purchases", "rmse_purchases", "predicted_purchases", "pearson_purchases", "spearman_purchases"):
        assert b[k] == pytest.approx(a[k], rel=1e-9), k
