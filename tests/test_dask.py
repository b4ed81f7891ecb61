"""The Dask layer on a real distributed.LocalCluster equals the single-process results."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import segone  # noqa: E402
import segone.dask as sd  # noqa: E402
from segone.synth import generate  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as c:  # fmt: skip
        yield c


@pytest.fixture(scope="module")
def data():
    return generate(6000, seed=3)


@pytest.fixture(scope="module")
def dask_profiles(client, data):
    tx = dd.from_pandas(data.transactions.to_pandas(), npartitions=4)
    ev = dd.from_pandas(data.events.to_pandas(), npartitions=3)
    at = dd.from_pandas(data.customers.to_pandas(), npartitions=2)
    return sd.build_profiles(tx, events=ev, attributes=at, npartitions=5).persist()


@pytest.fixture(scope="module")
def whole(data):
    return segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)


def test_profiles_identical_and_every_customer_once(dask_profiles, whole):
    got = dask_profiles.compute()
    assert got.customer_id.is_unique and len(got) == whole.num_rows
    assert set(got.columns) == set(whole.column_names)
    got = got.sort_values("customer_id").reset_index(drop=True)
    exp = whole.to_pandas()
    for c in exp.columns:
        a, b = exp[c], got[c]
        if a.dtype.kind in "fiu":
            np.testing.assert_allclose(b.to_numpy(float, na_value=np.nan), a.to_numpy(float), rtol=1e-12, err_msg=c)
        else:
            assert (a.astype(str).to_numpy() == b.astype(str).to_numpy()).all(), c
    # customers were hashed into partitions: no customer in two partitions
    per_part = dask_profiles.map_partitions(lambda p: pd.Series([set(p.customer_id)])).compute()
    assert sum(len(s) for s in per_part) == len(set().union(*per_part))


def test_scorer_state_equals_single_process(dask_profiles, whole):
    for kw in ({}, {"scaling": "quantile", "clip_quantiles": (0.01, 0.99)}):
        d = sd.FeatureScorer(**kw)
        d.split_every = 2  # a real tree: 5 partitions -> 3 -> 2 -> 1
        d.fit(dask_profiles)
        s = segone.FeatureScorer(**kw).fit(whole)
        np.testing.assert_allclose(d.center_, s.center_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(d.scale_, s.scale_, rtol=1e-10)
        np.testing.assert_array_equal(d.knots_, s.knots_)
        X = d.transform(dask_profiles).compute()
        ids = dask_profiles.customer_id.compute().to_numpy()
        Xs = s.transform(whole)
        order = np.searchsorted(whole.column("customer_id").to_numpy(), ids)
        np.testing.assert_allclose(X, Xs[order], rtol=1e-6, atol=1e-6)


def _match(a_centers, b_centers):
    """Permutation p with a_centers[i] ~ b_centers[p[i]] (greedy on distances)."""
    d = ((a_centers[:, None, :] - b_centers[None, :, :]) ** 2).sum(-1)
    perm = np.full(len(a_centers), -1)
    for _ in range(len(a_centers)):
        i, j = np.unravel_index(np.argmin(d), d.shape)
        perm[i] = j
        d[i, :] = np.inf
        d[:, j] = np.inf
    return perm


def test_segmenter_and_assign_agree_with_single_process(dask_profiles, whole):
    sc = segone.FeatureScorer().fit(whole)
    Xs = sc.transform(whole)
    ds = sd.FeatureScorer.from_json(sc.to_json())
    X = ds.transform(dask_profiles)
    params = dict(n_clusters=6, n_init=5, refine=30, random_state=0)
    single = segone.Segmenter(**params).fit(Xs)
    dseg = sd.Segmenter(**params)
    dseg.split_every = 2
    dseg.fit(X)
    perm = _match(dseg.cluster_centers_, single.cluster_centers_)
    ids = dask_profiles.customer_id.compute().to_numpy()
    order = np.searchsorted(whole.column("customer_id").to_numpy(), ids)
    labels = perm[dseg.labels_.compute()]
    agree = (labels == single.labels_[order]).mean()
    assert agree >= 0.999, agree
    assert dseg.inertia_ == pytest.approx(single.inertia_, rel=1e-3)
    res = sd.assign(X, dseg.cluster_centers_, margin=True)
    lab, dist, marg = (a.compute() for a in (res.labels, res.distance, res.margin))
    ref = segone.assign(X.compute(), dseg.cluster_centers_, margin=True)
    np.testing.assert_array_equal(lab, ref.labels)
    np.testing.assert_allclose(dist, ref.distance, rtol=1e-6)
    np.testing.assert_allclose(marg, ref.margin, rtol=1e-6, atol=1e-6)


def test_parquet_paths_and_threaded_scheduler(tmp_path, data):
    """Without a client the local scheduler runs it; Parquet paths are read with read_parquet."""
    import pyarrow.parquet as pq

    pq.write_table(data.transactions, tmp_path / "tx.parquet", row_group_size=5000)
    import dask

    with dask.config.set(scheduler="threads"):
        prof = sd.build_profiles(str(tmp_path / "tx.parquet"), npartitions=3).compute()
    assert len(prof) == len(set(data.transactions.column("customer_id").to_pylist()))


def test_errors(client):
    with pytest.raises(segone.errors.ParameterError, match="expected a Dask DataFrame"):
        sd.build_profiles(42)
    with pytest.raises(segone.errors.ParameterError, match="does not exist"):
        sd.build_profiles("/nonexistent/path")
    with pytest.raises(segone.errors.NotFittedError):
        sd.FeatureScorer().transform(dd.from_pandas(pd.DataFrame({"orders": [1]}), npartitions=1))
    X = dd.from_pandas(pd.DataFrame({"a": [1.0, 2.0]}), npartitions=1).to_dask_array(lengths=True)
    with pytest.raises(segone.errors.ParameterError, match="larger than the number of samples"):
        sd.Segmenter(n_clusters=3).fit(X)


def test_run_survives_a_killed_worker(synth_dir, tmp_path):
    """A worker process is killed in the middle of segone.dask.run: distributed recomputes, results are exact."""
    import os
    import signal
    import threading
    import time

    import pyarrow.parquet as pq

    out = tmp_path / "killed"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as c:  # fmt: skip
        victim = sorted(c.scheduler_info()["workers"])[0]
        pid = c.run(os.getpid, workers=[victim])[victim]
        killed = threading.Event()

        def killer():  # kill the first time the victim has tasks, i.e. mid-run
            deadline = time.time() + 60
            while time.time() < deadline:
                if c.processing(workers=[victim]).get(victim):
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.005)

        th = threading.Thread(target=killer)
        th.start()
        info = sd.run(synth_dir, str(out), clusters=6, npartitions=4, partitioned_by_customer=False, client=c).summary
        th.join()
        assert killed.is_set() and victim not in c.scheduler_info()["workers"]  # it really died mid-run
    single = segone.run(synth_dir, str(tmp_path / "single"), clusters=6)
    asg = pq.read_table(out / "assignments.parquet").sort_by("customer_id")
    assert asg.column("customer_id").equals(single.assignments.column("customer_id"))  # every customer once
    assert info["customers_assigned"] == single.summary["customers_assigned"]
    assert info["rows_read"] == single.summary["rows_read"]
    # the same job on both engines: the same segments for every customer
    assert asg.column("segment").equals(single.assignments.column("segment"))


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask-synth") / "data"
    segone.synth.write_dataset(str(path), 8000, seed=5, progress=False)
    return str(path)


def test_run_every_customer_once_and_finds_the_segments(client, synth_dir, tmp_path):
    import json

    import pyarrow.parquet as pq

    from segone.cli import _adjusted_rand

    out = tmp_path / "out"
    res = sd.run(synth_dir, str(out), clusters=6, npartitions=3, client=client)
    asg = pq.read_table(out / "assignments.parquet").sort_by("customer_id")
    truth = pq.read_table(f"{synth_dir}/truth").sort_by("customer_id")
    assert asg.column("customer_id").equals(truth.column("customer_id"))  # each customer exactly once
    assert _adjusted_rand(truth.column("segment").to_numpy(), asg.column("segment").to_numpy()) >= 0.9
    seg = pq.read_table(out / "segments.parquet")
    assert seg.column("size").to_pylist() == sorted(seg.column("size").to_pylist(), reverse=True)
    assert sum(seg.column("size").to_pylist()) == 8000
    run_json = json.loads((out / "run.json").read_text())
    single = segone.run(synth_dir, str(tmp_path / "single"), clusters=6).summary
    for key in ("rows_read", "rows_dropped", "rows_excluded_after_as_of", "returns", "as_of", "customers",
                "customers_without_purchase", "customers_assigned", "features"):  # fmt: skip
        assert run_json[key] == single[key], key
    assert res.summary["engine"]["engine"] == "dask" and (out / "model" / "centroids.npy").exists()


def test_failed_run_leaves_no_output(client, synth_dir, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(segone.errors.ParameterError, match="larger than the number of customers"):
        sd.run(synth_dir, str(out), clusters=10**6, client=client)
    assert not out.exists()


def test_cli_runs_on_a_local_cluster(synth_dir, tmp_path):
    from click.testing import CliRunner

    from segone.cli import main

    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["run", synth_dir, "-o", str(out), "-k", "6", "--workers", "2", "-q"])
    assert res.exit_code == 0, res.output
    assert "8,000 customers -> 6 segments" in res.output
    bad = CliRunner().invoke(main, ["run", synth_dir, "-o", str(out), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert bad.exit_code == 2 and "not both" in bad.output


@pytest.mark.parametrize("declared", [None, False])
def test_customer_partitioned_dataset_skips_the_shuffle(client, synth_dir, declared):
    """segone synth writes every source in the same customer blocks: detected, no shuffle, same profiles."""
    import pyarrow.dataset as pads

    src = {s: f"{synth_dir}/{s}" for s in ("transactions", "events", "customers")}
    frames = {s: dd.read_parquet(p, split_row_groups=True) for s, p in src.items()}
    prof, summary = sd.build_profiles(frames["transactions"], events=frames["events"], attributes=frames["customers"],
                                      partitioned_by_customer=declared, _with_summary=True)  # fmt: skip
    assert summary["shuffled"] is (declared is False)
    got = prof.compute().sort_values("customer_id").reset_index(drop=True)
    exp = segone.build_profiles(pads.dataset(src["transactions"]), events=src["events"],
                                attributes=src["customers"]).to_pandas()  # fmt: skip
    assert got.customer_id.tolist() == exp.customer_id.tolist()
    for c in ("orders", "spend_total", "frequency", "monetary_value", "events_pricing_page", "region"):
        if c in exp:
            assert (got[c].astype(str).to_numpy() == exp[c].astype(str).to_numpy()).all(), c


def test_declared_partitioning_is_checked(client, data):
    tx = dd.from_pandas(data.transactions.to_pandas(), npartitions=4)
    ev = dd.from_pandas(data.events.to_pandas(), npartitions=3)
    with pytest.raises(segone.errors.ParameterError, match="same number of partitions"):
        sd.build_profiles(tx, events=ev, partitioned_by_customer=True)


def test_string_ids_crm_only_customers_and_empty_partitions(client):
    """String ids are hashed, CRM-only customers appear, and partitions without rows are fine."""
    tx = pd.DataFrame({"customer_id": ["a", "b", "a", "c"], "ts": pd.to_datetime(["2025-01-01", "2025-01-02",
                       "2025-01-05", "2025-01-03"], utc=True), "amount": [1.0, 2.0, 3.0, -1.0],
                       "category": ["x", "y", "x", None], "channel": ["web", "web", "store", "web"]})  # fmt: skip
    crm = pd.DataFrame({"customer_id": ["a", "z"], "region": ["n", "s"]})
    prof = sd.build_profiles(dd.from_pandas(tx, npartitions=2), attributes=dd.from_pandas(crm, npartitions=1),
                             npartitions=7).compute()  # fmt: skip
    exp = segone.build_profiles(pa.Table.from_pandas(tx), attributes=pa.Table.from_pandas(crm)).to_pandas()
    got = prof.sort_values("customer_id").reset_index(drop=True)
    assert got.customer_id.tolist() == ["a", "b", "c", "z"] == exp.customer_id.tolist()
    for c in ("orders", "spend_total", "frequency", "share_x", "channel_web"):
        np.testing.assert_allclose(got[c].to_numpy(float), exp[c].to_numpy(float), err_msg=c)
    assert got.region.astype(str).tolist() == exp.region.astype(str).tolist()


def test_transactions_only_partitioned_input_is_detected(client, synth_dir):
    prof, summary = sd.build_profiles(dd.read_parquet(f"{synth_dir}/transactions"), _with_summary=True)
    assert summary["shuffled"] is False
    assert int(prof.shape[0].compute()) == 8000
