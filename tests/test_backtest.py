"""segone.backtest: the calibration / holdout split equals lifetimes', the figures equal a direct computation,
bad windows are refused, models the data cannot support are skipped, and Dask gives the same numbers."""

import datetime as dt
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from lifetimes.utils import calibration_and_holdout_data

import lifetimes
import segone
from segone import outputs
from segone.backtesting import BacktestState, calibration_and_holdout
from segone.cli import main
from segone.errors import ParameterError
from segone.synth import generate

CAL_COLUMNS = ["frequency_cal", "recency_cal", "T_cal", "monetary_value_cal", "frequency_holdout",
               "monetary_value_holdout", "duration_holdout"]  # fmt: skip


@pytest.fixture(scope="module")
def cdnow_tx():
    """The CDNOW 1/10 sample's transactions (lifetimes ships them): 2357 customers, 1997-01 to 1998-06."""
    path = os.path.join(os.path.dirname(lifetimes.__file__), "datasets", "CDNOW_sample.txt")
    df = pd.read_csv(path, sep=r"\s+", header=None, names=["customer_id", "cid2", "date", "cds", "amount"])
    df["ts"] = pd.to_datetime(df["date"].astype(str), format="%Y%m%d")
    return df[["customer_id", "ts", "amount"]]


@pytest.mark.parametrize("freq", ["W", "D"])  # lifetimes 0.11.3 fails on "M" with current pandas
def test_cdnow_split_equals_lifetimes_column_for_column(cdnow_tx, freq):
    """The classic CDNOW split: calibration up to 1997-09-28, holdout to 1998-06-30."""
    ref = calibration_and_holdout_data(cdnow_tx, "customer_id", "ts", calibration_period_end="1997-09-28",
                                       observation_period_end="1998-06-30", freq=freq,
                                       monetary_value_col="amount").sort_index()  # fmt: skip
    got = calibration_and_holdout(pa.Table.from_pandas(cdnow_tx), "1997-09-28", end="1998-06-30", freq=freq)
    assert got.column_names == ["customer_id", *CAL_COLUMNS]
    assert got.column("customer_id").to_pylist() == ref.index.tolist()
    for c in CAL_COLUMNS:
        np.testing.assert_allclose(got.column(c).to_numpy(), ref[c].to_numpy(), rtol=1e-12, atol=1e-9, err_msg=c)


@pytest.fixture(scope="module")
def synth():
    return generate(4000, seed=11)


@pytest.fixture(scope="module")
def bt(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("bt") / "out"
    return segone.backtest(synth.transactions, out, holdout_days=60, n_clusters=4, random_state=0)


def _direct(tx, cutoff_us, end_us):
    """Per customer with a purchase at or before the cutoff: actual holdout days and the naive window's, in pandas."""
    df = tx.select(["customer_id", "amount"]).to_pandas()
    t = tx.column("ts")
    us = pd.Series(t.cast(pa.timestamp("us", tz=t.type.tz)).cast(pa.int64()).to_numpy(zero_copy_only=False))
    df["day"] = us // 86_400_000_000
    cal = df[us <= cutoff_us]
    custs = np.sort(cal["customer_id"].unique())
    length = end_us - cutoff_us

    def days(mask):
        d = df[mask]
        return d.groupby("customer_id")["day"].nunique().reindex(custs, fill_value=0).to_numpy(float), \
            d.groupby("customer_id")["amount"].sum().reindex(custs, fill_value=0).to_numpy(float)

    actual = days((us > cutoff_us) & (us <= end_us))
    naive = days((us > cutoff_us - length) & (us <= cutoff_us))
    return custs, actual, naive


def test_baseline_figures_equal_a_direct_computation(bt, synth):
    s = bt.summary
    cutoff = int(np.datetime64(s["cutoff"], "us").astype(np.int64))
    end = int(np.datetime64(s["end"], "us").astype(np.int64))
    custs, (ap, asp), (np_, ns) = _direct(synth.transactions, cutoff, end)
    assert s["customers_scored"] == custs.size
    row = {r["model"]: r for r in bt.metrics.to_pylist()}
    naive = row["naive"]
    assert naive["customers"] == custs.size
    np.testing.assert_allclose(naive["mae_purchases"], np.abs(np_ - ap).mean(), rtol=1e-12)
    np.testing.assert_allclose(naive["rmse_purchases"], np.sqrt(((np_ - ap) ** 2).mean()), rtol=1e-12)
    np.testing.assert_allclose(naive["pearson_purchases"], np.corrcoef(np_, ap)[0, 1], rtol=1e-10)
    np.testing.assert_allclose(naive["mae_spend"], np.abs(ns - asp).mean(), rtol=1e-10)
    np.testing.assert_allclose([naive["predicted_purchases"], naive["actual_purchases"]], [np_.sum(), ap.sum()])
    # Spearman from the rank sketch: integer counts are told apart, so it is scipy's up to the bucket ties
    from scipy.stats import spearmanr

    assert abs(naive["spearman_purchases"] - spearmanr(np_, ap).statistic) < 0.01


def test_model_rows_deciles_and_p_alive(bt):
    row = {r["model"]: r for r in bt.metrics.to_pylist()}
    assert list(row) == [*bt.summary["models"], "naive", "segment_mean"]
    bg = row["bgnbd"]
    assert bg["skipped"] is None and bg["customers"] == bt.summary["customers_scored"]
    assert 0 < bg["mae_purchases"] < row["naive"]["mae_purchases"] * 2
    dec = bt.deciles.to_pandas()
    d = dec[(dec.model == "bgnbd") & (dec.by == "predicted_purchases")]
    assert d.customers.sum() == bg["customers"]
    np.testing.assert_allclose((d.predicted_purchases * d.customers).sum(), bg["predicted_purchases"], rtol=1e-9)
    assert d.predicted_purchases.is_monotonic_increasing
    a = dec[(dec.model == "bgnbd") & (dec.by == "p_alive")]
    assert a.customers.sum() == bg["customers"] and a.p_alive.is_monotonic_increasing
    # on data drawn from a buy-till-you-die process, those the model thinks alive buy again more often
    assert a.repurchased_share.iloc[-1] > a.repurchased_share.iloc[0]


def test_outputs_and_run_json(bt):
    files = sorted(os.listdir(bt.out))
    assert files == sorted([outputs.BACKTEST, outputs.BACKTEST_DECILES, outputs.RUN_JSON])
    assert pq.read_table(os.path.join(bt.out, outputs.BACKTEST)).equals(bt.metrics)
    info = json.load(open(os.path.join(bt.out, outputs.RUN_JSON)))
    assert info["format"] == "segone-backtest" and info["duration_holdout"] == 60.0
    assert info["cutoff"].endswith("23:59:59.999999")  # whole days with --holdout-days


def test_state_merges_to_the_whole(bt, synth, tmp_path):
    """Predictions in pieces give the figures of the whole (the Dask engine's path)."""
    from segone.backtesting import SketchState

    names = ["naive"]
    rng = np.random.default_rng(0)
    n = 500
    piece = pa.table({"actual_purchases": rng.poisson(1.0, n).astype(float), "actual_spend": rng.gamma(2, 30, n),
                      "naive:purchases": rng.poisson(1.2, n).astype(float), "naive:spend": rng.gamma(2, 28, n)})
    sk = SketchState.of(piece, names=names)
    whole = BacktestState.of(piece, names=names, sketches=sk)
    parts = [BacktestState.of(piece.slice(a, b - a), names=names, sketches=sk)
             for a, b in ((0, 7), (7, 250), (250, 250), (250, 500))]  # fmt: skip
    merged = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3]))
    for f in BacktestState._FIELDS:
        np.testing.assert_allclose(getattr(merged, f), getattr(whole, f), rtol=1e-10, atol=1e-9, err_msg=f)
    assert BacktestState.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_tx():
    ts = [dt.datetime(2024, 1, d) for d in (1, 3, 5, 9)] + [dt.datetime(2024, 2, d) for d in (1, 2, 20)]
    return pa.table({"customer_id": [1, 1, 2, 2, 3, 1, 2], "ts": ts, "amount": [10.0, 12, 5, 6, 7, 11, 4]})


@pytest.mark.parametrize("kw, match", [
    ({"cutoff": "2023-06-01"}, "before the first transaction"),
    ({"cutoff": "2024-03-01"}, "at or after the last transaction"),
    ({"cutoff": "2024-02-19", "freq": "W"}, "shorter than one period"),
    ({"cutoff": "2024-02-01", "end": "2024-01-15"}, "not after the cutoff"),
    ({"holdout_days": 10, "cutoff": "2024-02-01"}, "exactly one of"),
    ({}, "exactly one of"),
    ({"holdout_days": 0}, "holdout_days"),
    ({"holdout_days": 10, "models": ["bgnbd", "nope"]}, "unknown purchase model"),
    ({"holdout_days": 10, "value_penalizer": -1}, "value_penalizer"),
])  # fmt: skip
def test_bad_windows_and_parameters_are_refused_and_nothing_is_written(small_tx, tmp_path, kw, match):
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=match):
        segone.backtest(small_tx, out, **kw)
    assert not out.exists()


def test_every_customer_born_after_the_cutoff_is_a_clear_error(tmp_path):
    tx = pa.table({"customer_id": [1, 2, 3, 3], "amount": [1.0, 2, 3, 4],
                   "ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2),
                          dt.datetime(2024, 3, 5)]})  # fmt: skip
    # without customer 1 nobody bought before the cutoff: the window is refused, naming the first purchase
    with pytest.raises(ParameterError, match=r"before the first transaction \(2024-03-01"):
        segone.backtest(tx.slice(1), tmp_path / "o", cutoff="2024-02-15")
    assert not (tmp_path / "o").exists()


def test_no_repeat_buyers_skips_the_model_and_keeps_the_baselines(tmp_path):
    n = 60
    ts = [dt.datetime(2024, 1, 1) + dt.timedelta(days=i % 50) for i in range(n)]
    tx = pa.table({"customer_id": list(range(n)), "ts": ts, "amount": [10.0] * n})  # one purchase each
    res = segone.backtest(tx, tmp_path / "o", holdout_days=10, n_clusters=2)
    row = {r["model"]: r for r in res.metrics.to_pylist()}
    assert row["bgnbd"]["skipped"] and row["bgnbd"]["mae_purchases"] is None
    assert row["naive"]["skipped"] is None and row["naive"]["customers"] == res.summary["customers_scored"]
    assert "bgnbd" in res.summary["skipped"]


def test_min_segment_size_drops_small_decile_cells(synth, tmp_path):
    res = segone.backtest(synth.transactions, tmp_path / "o", holdout_days=60, n_clusters=3, min_segment_size=400)
    assert res.deciles.num_rows == 0 or min(res.deciles.column("customers").to_pylist()) >= 400
    assert res.summary["deciles_suppressed"] > 0


def test_cli_prints_the_table_and_errors_in_one_line(synth, tmp_path):
    src = tmp_path / "tx.parquet"
    pq.write_table(synth.transactions, src)
    r = CliRunner().invoke(main, ["backtest", str(src), "-o", str(tmp_path / "o"), "--holdout-days", "60", "-k", "3",
                                  "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "naive" in r.output and "segment_mean" in r.output and "bgnbd" in r.output
    r = CliRunner().invoke(main, ["backtest", str(src), "-o", str(tmp_path / "o2"), "--cutoff", "2001-01-01"])
    assert r.exit_code == 2 and "before the first transaction" in r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1


@pytest.mark.slow
def test_dask_gives_the_numbers_of_one_process(synth, bt, tmp_path):
    import dask.dataframe as dd
    import distributed

    tx = dd.from_pandas(synth.transactions.to_pandas(), npartitions=3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as client:  # fmt: skip
        from segone.dask import DaskEngine

        res = segone.backtest(tx, tmp_path / "o", holdout_days=60, n_clusters=4, random_state=0,
                              engine=DaskEngine(client))  # fmt: skip
    a, b = res.metrics.to_pandas(), bt.metrics.to_pandas()
    assert a.model.tolist() == b.model.tolist() and (a.customers == b.customers).all()
    exact = ["mae_purchases", "rmse_purchases", "pearson_purchases", "predicted_purchases", "actual_purchases",
             "spearman_purchases"]  # fmt: skip
    rows = a.model.isin(["bgnbd", "naive"])  # segment_mean depends on the segments' sample (same here)
    np.testing.assert_allclose(a.loc[rows, exact].to_numpy(float), b.loc[rows, exact].to_numpy(float), rtol=1e-9)
    assert res.summary["engine"]["name"] == "dask"


def test_report_of_a_backtest_has_the_table_and_the_calibration_chart(bt, tmp_path):
    from segone.report import write_report

    path = write_report(bt.out, tmp_path / "r.html")
    page = open(path, encoding="utf-8").read()
    assert "How good is the value prediction?" in page and "Segment mean" in page
    assert '"chart-calibration"' in page and '"chart-alive"' in page
    mae = {r["model"]: r["mae_purchases"] for r in bt.metrics.to_pylist()}
    assert f"{mae['naive']:.3f}" in page
