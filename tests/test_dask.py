"""The Dask layer on a real distributed.LocalCluster equals the single-process results."""

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dask.dataframe as dd  # noqa: E402
import distributed  # noqa: E402

import segone  # noqa: E402
import segone.dask as sd  # noqa: E402
from segone.synth import generate  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
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
            assert (a.isna().to_numpy() == b.isna().to_numpy()).all(), c
            ok = ~a.isna().to_numpy()
            assert (a[ok].astype(str).to_numpy() == b[ok].astype(str).to_numpy()).all(), c
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
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
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


def _tricky_inputs(tmp_path, string_ids):
    """Three Parquet files of transactions (nullable int64 or string ids with nulls, null timestamps, one
    empty file), events after the last purchase, CRM-only customers and a CRM row with a null id."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n_tx = 3000
    ids = rng.integers(0, 400, n_tx)
    ts = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 300 * 86400, n_tx), unit="s")
    conv = (lambda a: pa.array([None if v is None else f"c{v:04d}" for v in a], type=pa.string())) if string_ids \
        else (lambda a: pa.array(a, type=pa.int64()))  # fmt: skip
    id_list = [None if i % 97 == 0 else int(v) for i, v in enumerate(ids)]
    ts_arr = pa.array([None if i % 89 == 0 else t for i, t in enumerate(ts)], type=pa.timestamp("us", tz="UTC"))
    tx = pa.table({"customer_id": conv(id_list), "ts": ts_arr, "amount": rng.lognormal(3, 1, n_tx),
                   "category": pa.array(rng.choice(["a", "b", "c", "d"], n_tx)),
                   "channel": pa.array(rng.choice(["web", "store"], n_tx))})  # fmt: skip
    d = tmp_path / ("s" if string_ids else "i")
    for sub in ("transactions", "events", "customers"):
        (d / sub).mkdir(parents=True)
    pq.write_table(tx.slice(0, 1200), d / "transactions" / "part-0.parquet")
    pq.write_table(tx.slice(0, 0), d / "transactions" / "part-1.parquet")  # an empty file
    pq.write_table(tx.slice(1200), d / "transactions" / "part-2.parquet")
    n_ev = 2000
    ev_ids = [int(v) for v in rng.integers(0, 450, n_ev)]  # customers 400..449: events only
    ev_ts = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 330 * 86400, n_ev), unit="s")
    ev = pa.table({"customer_id": conv(ev_ids), "ts": pa.array(ev_ts, type=pa.timestamp("us", tz="UTC")),
                   "event": pa.array(rng.choice(["pricing_page", "login"], n_ev))})  # fmt: skip
    pq.write_table(ev.slice(0, 1000), d / "events" / "part-0.parquet")
    pq.write_table(ev.slice(1000), d / "events" / "part-1.parquet")
    crm_ids = [None] + list(range(380, 470))  # 450..469: CRM only
    crm = pa.table({"customer_id": conv(crm_ids), "region": pa.array(rng.choice(["n", "s"], len(crm_ids)))})
    pq.write_table(crm, d / "customers" / "part-0.parquet")
    return str(d)


@pytest.mark.parametrize("string_ids", [False, True])
def test_local_and_dask_engines_give_the_same_run(client, tmp_path, string_ids):
    """The same job on both engines: same assignments and the same run.json (but the engine facts)."""
    import json

    import pyarrow.parquet as pq

    src = _tricky_inputs(tmp_path, string_ids)
    local = segone.run(src, str(tmp_path / "local"), clusters=5)
    dask_res = segone.run(src, str(tmp_path / "dask"), clusters=5, engine="dask", client=client, npartitions=4)
    a = local.assignments.sort_by("customer_id")
    b = pq.read_table(tmp_path / "dask" / "assignments.parquet").sort_by("customer_id")
    assert a.column("customer_id").equals(b.column("customer_id"))  # every customer once, on both
    assert a.column("segment").equals(b.column("segment"))
    np.testing.assert_allclose(b.column("distance").to_numpy(), a.column("distance").to_numpy(), rtol=1e-4, atol=1e-5)
    ja, jb = (json.loads((tmp_path / w / "run.json").read_text()) for w in ("local", "dask"))
    assert ja.keys() == jb.keys()
    for key in ja:
        if key in ("created", "timings_s", "engine"):
            continue
        if key == "inertia":
            assert ja[key] == pytest.approx(jb[key], rel=1e-5)
        else:
            assert ja[key] == jb[key], key
    assert ja["rows_dropped"] == {"transactions: null customer id": 31, "transactions: null timestamp": 33,
                                  "attributes: null customer id": 1}  # fmt: skip
    assert ja["rows_excluded_after_as_of"]["events"] > 0
    assert ja["customers"] == 470 and ja["engine"]["engine"] == "local" and jb["engine"]["engine"] == "dask"
    assert jb["engine"]["partitions"] == 4 and jb["engine"]["shuffled"] is True
    sa, sb = local.segments, pq.read_table(tmp_path / "dask" / "segments.parquet")
    assert sa.column("size").equals(sb.column("size")) and sa.column("label").equals(sb.column("label"))


def test_dask_dataframe_with_nullable_ids_follows_the_same_rules(client, tmp_path):
    """Arrow-backed Dask DataFrames keep nullable int64 ids: nulls dropped and counted as in one process;
    NumPy-backed frames (ids turned float by pandas) get the SchemaError that says what to do."""
    src = _tricky_inputs(tmp_path, False)
    frame = dd.read_parquet(f"{src}/transactions", dtype_backend="pyarrow")
    _, summary = sd.build_profiles(frame, npartitions=3, _with_summary=True)
    _, single = segone.profile.build_profiles_with_summary(f"{src}/transactions")
    assert summary["dropped"] == single["dropped"] and summary["customers"] == single["customers"]
    import pyarrow.parquet as pq

    floats = dd.from_pandas(pq.read_table(f"{src}/transactions").to_pandas(), npartitions=2)
    assert floats.customer_id.dtype.kind == "f"
    with pytest.raises(segone.errors.SchemaError, match="dtype_backend='pyarrow'"):
        sd.build_profiles(floats).compute()


# ------------------------------------------------------------------ tracking
@pytest.fixture(scope="module")
def two_periods():
    """Two periods, 10% switchers, 5% of the customers gone and 5% new."""
    return segone.synth.generate_periods(3000, switch_share=0.1, churn_share=0.05, new_share=0.05, seed=2)


def _period_tables(p, string_ids):
    tables = [p.transactions, p.events, p.customers]
    if string_ids:
        import pyarrow.compute as pc

        tables = [t.set_column(t.column_names.index("customer_id"), "customer_id",
                               pc.binary_join_element_wise("c", pc.cast(t.column("customer_id"), pa.string()), ""))
                  for t in tables]  # fmt: skip
    return tables


def _run_period(p, out, string_ids, **kw):
    tx, ev, at = _period_tables(p, string_ids)
    return segone.run(tx, str(out), 5, events=ev, attributes=at, **kw)


def _moves_rows(path):
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    rows = list(zip(*(t.column(c).to_pylist() for c in ("customer_id", "previous_segment", "segment", "status"))))
    assert len(rows) == len({r[0] for r in rows})  # every customer once
    return set(rows)


@pytest.mark.parametrize("case", ["int", "string", "private"])
def test_tracking_same_on_both_engines(client, tmp_path, two_periods, monkeypatch, case):
    """--previous on Dask (per partition) and in one process: the same moves, migration and run.json figures,
    whether the previous output was written by Dask (part files) or in one process (one file)."""
    import json

    import pyarrow.parquet as pq

    p0, p1 = two_periods
    string_ids = case == "string"
    kw = {}
    if case == "private":  # pseudonyms, consent and merged small segments: the per-part moves are filtered
        monkeypatch.setenv("SEGONE_ID_KEY", "0123456789abcdef0123456789abcdef")
        kw = dict(consent=["consent_marketing"], hash_ids=True, min_segment_size=100)
    dk = dict(engine="dask", client=client)
    _run_period(p0, tmp_path / "l0", string_ids, **kw)
    _run_period(p0, tmp_path / "d0", string_ids, npartitions=3, **dk, **kw)
    _run_period(p1, tmp_path / "l1", string_ids, previous=tmp_path / "l0", **kw)
    _run_period(p1, tmp_path / "d1", string_ids, previous=tmp_path / "d0", npartitions=4, **dk, **kw)
    _run_period(p1, tmp_path / "d1b", string_ids, previous=tmp_path / "l0", npartitions=2, **dk, **kw)
    assert (tmp_path / "d1" / "moves.parquet").is_dir() and (tmp_path / "l1" / "moves.parquet").is_file()
    assert len(list((tmp_path / "d1" / "moves.parquet").iterdir())) == 4  # written per part, by the workers
    local = _moves_rows(tmp_path / "l1" / "moves.parquet")
    statuses = {r[3] for r in local}  # without consent by default, the gone customers are not written
    assert statuses == ({"stayed", "moved", "new"} if case == "private" else {"stayed", "moved", "new", "gone"})
    mig = pq.read_table(tmp_path / "l1" / "migration.parquet")
    info = json.loads((tmp_path / "l1" / "run.json").read_text())["tracking"]
    for d in ("d1", "d1b"):
        assert _moves_rows(tmp_path / d / "moves.parquet") == local, d
        got = pq.read_table(tmp_path / d / "migration.parquet")
        assert got.drop_columns(["spend"]).equals(mig.drop_columns(["spend"])), d
        np.testing.assert_allclose(got.column("spend").to_numpy(zero_copy_only=False),
                                   mig.column("spend").to_numpy(zero_copy_only=False), rtol=1e-9)  # fmt: skip
        other = json.loads((tmp_path / d / "run.json").read_text())["tracking"]
        assert other.pop("previous") == str(tmp_path / ("d0" if d == "d1" else "l0"))
        assert other == {k: v for k, v in info.items() if k != "previous"}, d
    c = info["customers"]
    if case != "private":
        assert (c["previous"], c["now"], c["new"], c["gone"]) == (3000, 3000, 150, 150)
        assert len(local) == 3150


def test_tracking_on_dask_every_customer_of_both_runs_once(client, tmp_path, two_periods):
    """Several partitions, string ids, customers only in the previous run or only in the new one: each customer
    of either run is in exactly one moves part, with the segments each run gave it."""
    import json

    import pyarrow.parquet as pq

    p0, p1 = two_periods
    dk = dict(engine="dask", client=client)
    _run_period(p0, tmp_path / "d0", True, npartitions=3, **dk)
    _run_period(p1, tmp_path / "d1", True, previous=tmp_path / "d0", npartitions=5, **dk)
    a0 = pq.read_table(tmp_path / "d0" / "assignments.parquet")
    a1 = pq.read_table(tmp_path / "d1" / "assignments.parquet")
    before = dict(zip(a0.column("customer_id").to_pylist(), a0.column("segment").to_pylist()))
    now = dict(zip(a1.column("customer_id").to_pylist(), a1.column("segment").to_pylist()))
    parts = sorted((tmp_path / "d1" / "moves.parquet").iterdir())
    assert len(parts) == 5
    seen = [set(pq.read_table(f).column("customer_id").to_pylist()) for f in parts]
    assert sum(len(s) for s in seen) == len(set().union(*seen))  # no customer in two parts
    moves = pq.read_table(tmp_path / "d1" / "moves.parquet")
    ids = moves.column("customer_id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(before) | set(now)
    only_prev, only_new = set(before) - set(now), set(now) - set(before)
    assert len(only_prev) == 150 and len(only_new) == 150
    for cid, prev, seg, status in zip(ids, *(moves.column(c).to_pylist() for c in
                                            ("previous_segment", "segment", "status"))):  # fmt: skip
        assert prev == before.get(cid) and seg == now.get(cid)
        expected = "gone" if cid in only_prev else "new" if cid in only_new else "stayed" if prev == seg else "moved"
        assert status == expected
    c = json.loads((tmp_path / "d1" / "run.json").read_text())["tracking"]["customers"]
    counts = {s: ids and moves.column("status").to_pylist().count(s) for s in ("stayed", "moved", "new", "gone")}
    assert counts == {k: c[k] for k in counts}


def test_tracking_on_dask_finds_duplicated_previous_ids(client, tmp_path, two_periods):
    """A previous output whose part files repeat customers: a DataError naming it, and no output."""
    import shutil

    import pyarrow.parquet as pq

    p0, p1 = two_periods
    _run_period(p0, tmp_path / "d0", False, npartitions=3, engine="dask", client=client)
    part = tmp_path / "d0" / "assignments.parquet" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).slice(0, 3), tmp_path / "d0" / "assignments.parquet" / "part-00099.parquet")
    out = tmp_path / "d1"
    with pytest.raises(segone.errors.DataError, match="d0/assignments.parquet.*more than once"):
        _run_period(p1, out, False, previous=tmp_path / "d0", npartitions=4, engine="dask", client=client)
    assert not out.exists()
    shutil.rmtree(tmp_path / "d0")


def test_in_memory_table_on_a_cluster_keeps_every_customer(client, tmp_path, data):
    """An in-memory table is sliced and scattered: every slice is its own data (dask tokenizes every slice of a
    table alike, so a hashed scatter sent the first slice three times)."""
    import pyarrow.parquet as pq

    res = segone.run(data.transactions, str(tmp_path / "o"), 4, events=data.events, attributes=data.customers,
                     engine="dask", client=client, npartitions=3)  # fmt: skip
    ids = pq.read_table(tmp_path / "o" / "assignments.parquet").column("customer_id").to_numpy()
    assert ids.size == np.unique(ids).size == 6000 == res.summary["customers"]


def _pause(dask_worker):
    from distributed.core import Status

    dask_worker.memory_manager.memory_pause_fraction = False  # its memory monitor would resume it
    dask_worker.status = Status.paused


def _sleep_then(x, seconds):
    import time

    time.sleep(seconds)
    return x


def test_a_stalled_job_fails_with_a_clear_error_and_writes_nothing(synth_dir, tmp_path):
    """Every worker paused (as by distributed's memory manager): the job fails within stall_timeout, naming
    the stage and each worker's state, instead of waiting forever."""
    out = tmp_path / "stalled"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as c:  # fmt: skip
        c.run(_pause)
        with pytest.raises(segone.errors.StalledError) as err:
            sd.run(synth_dir, str(out), clusters=6, npartitions=2, client=c, stall_timeout=2)
        msg = str(err.value)
        assert "stalled while reading and profiling customers" in msg
        assert msg.count("paused") >= 2 and "GiB limit" in msg and "stall_timeout" in msg
    assert not out.exists()


def test_a_long_task_on_a_running_worker_is_not_a_stall(client):
    eng = sd.DaskEngine(client, stall_timeout=0.5)
    assert eng.gather(eng.map(_sleep_then, [1, 2], seconds=2.0)) == [1, 2]


def test_stall_timeout_is_validated():
    with pytest.raises(segone.errors.ParameterError, match="stall_timeout"):
        sd.DaskEngine(stall_timeout=-1)


def test_spilled_and_in_memory_parts_give_the_same_run_and_leave_no_files(client, synth_dir, tmp_path):
    """Persisted parts go to files under spill_dir (read back memory-mapped) and are removed after the job; the
    outputs are those of the job that keeps every part in worker memory."""
    import pyarrow.parquet as pq

    spill = tmp_path / "spill"
    seen = []
    a = sd.run(synth_dir, str(tmp_path / "spilled"), clusters=5, npartitions=3, client=client, spill_dir=spill,
               partitioned_by_customer=False)  # fmt: skip
    seen.append(sorted(os.listdir(spill)) if spill.exists() else None)
    b = sd.run(synth_dir, str(tmp_path / "memory"), clusters=5, npartitions=3, client=client, spill=False,
               partitioned_by_customer=False)  # fmt: skip
    assert seen == [[]]  # the folder was made, and emptied after the job
    for name in ("assignments.parquet", "personas.parquet"):
        x = pq.read_table(tmp_path / "spilled" / name).sort_by("customer_id")
        y = pq.read_table(tmp_path / "memory" / name).sort_by("customer_id")
        assert x.to_pandas().equals(y.to_pandas()), name
    assert a.summary["customers_assigned"] == b.summary["customers_assigned"] == 8000


def test_a_persisted_part_is_a_file_handle_on_the_workers(client, tmp_path):
    import pyarrow as pa

    eng = sd.DaskEngine(client, spill_dir=tmp_path)
    t = pa.table({"customer_id": np.arange(50_000), "x": np.ones(50_000)})
    parts = eng.persist(eng.map(lambda i: t.slice(i * 25_000, 25_000), [0, 1]), "demo")
    handles = client.gather(client.compute(parts))  # what the workers hold: handles
    assert all(isinstance(h, sd.Spilled) and os.path.exists(h.path) for h in handles)
    got = eng.gather(eng.map(lambda p: p.num_rows, parts))
    assert got == [25_000, 25_000]
    eng.cleanup()
    assert not any(os.path.exists(h.path) for h in handles)


def test_parts_spill_only_to_a_folder_every_worker_sees(client, tmp_path, monkeypatch):
    eng = sd.DaskEngine(client)
    assert eng._spilling() and eng.facts()["spill"] is True  # a LocalCluster: this machine's temporary folder
    far = sd.DaskEngine(client)
    monkeypatch.setattr(far.client, "scheduler_info",
                        lambda **kw: {"workers": {"tcp://10.9.8.7:1": {"host": "10.9.8.7"}}})  # fmt: skip
    assert far._spilling() is False  # workers elsewhere and no spill_dir: parts stay in worker memory
    shared = sd.DaskEngine(client, spill_dir=tmp_path)
    monkeypatch.setattr(shared.client, "scheduler_info",
                        lambda **kw: {"workers": {"tcp://10.9.8.7:1": {"host": "10.9.8.7"}}})  # fmt: skip
    assert shared._spilling() is True  # a folder the user says every worker sees
    assert sd.DaskEngine(client, spill=False)._spilling() is False
