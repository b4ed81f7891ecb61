"""Hardening: no crash, no lost customer, no lost output, one kind of error.

Fault injection by class (each test names the case of the sweep it covers):

1. crashes: extreme values and dtypes into the public entry points;
2. lost customers: every customer of any input appears exactly once in every
   per-customer output, whatever rows are dropped, on both engines;
3. lost or destroyed output: outputs overlapping inputs, a file as output,
   kills at chosen points of the write (subprocess + SIGKILL through the
   ``SEGONE_TEST_KILL_AT`` hook of ``segone.io.atomic_directory``), a full disk
   (an injected ENOSPC, and a real 64 KiB tmpfs when this process may mount
   one), read-only outputs (a forked child running as ``nobody``, a read-only
   tmpfs), concurrent writers (two processes);
4. silently wrong numbers: overflowing sums, mixed-schema datasets, NaN into
   transform, malformed model / scorer / histogram documents (each field);
5. unclear errors: corrupt and disagreeing datasets, uint64 ids, colliding
   CRM names, duplicate columns, OS errors: every one a SegoneError naming
   what, where and how to fix (the CLI prints one line, status 2).
"""

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import segone
from segone import io
from segone.errors import DataError, ModelFormatError, OutputError, ParameterError, SchemaError, SegoneError

N = 300


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data():
    return segone.synth.generate(N, seed=3)


@pytest.fixture(scope="module")
def tx_dir(tmp_path_factory, data):
    """A transactions dataset directory of two files."""
    d = tmp_path_factory.mktemp("hardening") / "tx"
    d.mkdir()
    t = data.transactions
    pq.write_table(t.slice(0, t.num_rows // 2), d / "part-0.parquet")
    pq.write_table(t.slice(t.num_rows // 2), d / "part-1.parquet")
    return d


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tx_dir):
    """The output of one run (a model directory inside)."""
    out = tmp_path_factory.mktemp("fitted") / "out"
    segone.run(tx_dir, out, 3, value=False)
    return out


def _tx(ids, ts, amount, id_type=pa.int64()):
    return pa.table({"customer_id": pa.array(ids, id_type), "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                     "amount": pa.array(amount, pa.float64())})  # fmt: skip


def _aux(directory):
    return sorted(p for p in os.listdir(directory) if p.startswith(".segone"))


def _cli(*args, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("SEGONE_PROGRESS", "0")
    return subprocess.run([sys.executable, "-m", "segone.cli", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)  # fmt: skip


def _tree(path):
    return {os.path.relpath(os.path.join(r, f), path): os.path.getsize(os.path.join(r, f))
            for r, _, fs in os.walk(path) for f in fs}  # fmt: skip


# ================================================================== 1. crashes
def test_integers_beyond_2_53_do_not_crash_profiles_or_scorer():
    """uint64 amounts and features above 2**53 (a safe cast to float64 refused them: raw ArrowInvalid)."""
    t = pa.table({"customer_id": pa.array([1, 2], pa.int64()), "ts": pa.array([1, 2], pa.timestamp("us")),
                  "amount": pa.array([2**64 - 1, 3], pa.uint64())})  # fmt: skip
    prof = segone.build_profiles(t)
    assert prof.column("spend_total").to_pylist() == [float(2**64 - 1), 3.0]
    X = segone.FeatureScorer(features=["x"]).fit_transform(pa.table({"x": pa.array([2**64 - 1, 1, 5], pa.uint64())}))
    assert np.isfinite(X).all()


@pytest.mark.parametrize("case", ["window", "ts-us", "ts-seconds", "as_of-datetime64"])
def test_extreme_windows_and_timestamps_raise_clear_errors(case):
    """OverflowError / 'year out of range' / silently wrapped seconds before."""
    t = _tx([1, 2], [1, 2], [1.0, 2.0])
    if case == "window":
        with pytest.raises(ParameterError, match="windows"):
            segone.build_profiles(t, windows=(10**15,))
    elif case == "ts-us":
        far = t.set_column(1, "ts", pa.array([0, 2**62], pa.int64()).cast(pa.timestamp("us")))
        with pytest.raises(DataError, match="years 1-9999.*first rows: 1"):
            segone.build_profiles(far)
    elif case == "ts-seconds":
        far = t.set_column(1, "ts", pa.array([-(2**62), 2**62], pa.int64()).cast(pa.timestamp("s")))
        with pytest.raises(DataError, match="years 1-9999"):
            segone.build_profiles(far)
    else:
        with pytest.raises(ParameterError, match="as_of"):
            segone.build_profiles(t, as_of=np.datetime64("NaT"))


def test_bad_estimator_parameters_raise_segone_errors():
    """Raw TypeError / ValueError from NumPy before: init arrays, weights, feature lists."""
    X = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(ParameterError, match="init"):
        segone.Segmenter(2, init=np.array([["a", "b", "c"]] * 2, dtype=object)).fit(X)
    with pytest.raises(ParameterError, match="init"):
        segone.Segmenter(2, init=[[1, 2], [3]]).fit(X)
    with pytest.raises(DataError, match="sample_weight"):
        segone.Segmenter(2, random_state=0).fit(X, sample_weight=np.full(40, 1e308))
    prof = segone.build_profiles(_tx([1, 2, 3], [1, 2, 3], [1.0, 2.0, 3.0]))
    bad = [{"features": [1]}, {"features": "orders"}, {"features": []}, {"features": ["orders", "orders"]},
           {"weights": [1, 2]}, {"weights": {"orders": "a"}}, {"weights": {"orders": float("nan")}}]  # fmt: skip
    for kw in bad:
        with pytest.raises(ParameterError):
            segone.FeatureScorer(**kw).fit_transform(prof)
    with pytest.raises(ParameterError, match="labels"):
        segone.describe_segments(prof, np.array([0.5, 0.5, 0.5]), 2)
    with pytest.raises(ParameterError, match="n_clusters"):
        segone.Segmenter(2**40).fit(X)  # int32 segment numbers
    nested = _tx([1, 2], [1, 2], [1.0, 2.0]).append_column("order_id", pa.array([[1], [2]]))
    with pytest.raises(SchemaError, match="order id"):
        segone.build_profiles(nested)  # ArrowNotImplementedError before
    with pytest.raises(ParameterError, match="n_clusters="):
        segone.describe_segments(prof, np.zeros(3, dtype=int), 10**12)  # MemoryError before


@pytest.mark.parametrize("dtype", [np.uint64, bool, np.float16, object, "U8", np.int8])
def test_any_dtype_into_the_estimators_works_or_raises_a_segone_error(dtype):
    X = np.abs(np.random.default_rng(1).normal(size=(30, 3))) * 10
    Xd = X.astype(str).astype(dtype) if dtype == "U8" else X.astype(dtype)
    for call in (lambda: segone.Segmenter(2, random_state=0).fit(Xd).predict(Xd),
                 lambda: segone.Segmenter(2, random_state=0).fit(X).transform(Xd),
                 lambda: segone.assign(Xd, Xd[:2]).labels,
                 lambda: segone.assign(X, Xd[:2]).labels):  # fmt: skip
        try:
            out = call()
        except SegoneError:
            continue
        assert np.all(np.isfinite(np.asarray(out, dtype=np.float64)))


# =========================================================== 2. lost customers
def _lost_customer_inputs():
    # customer 2: only a null timestamp; 4: only a row after as_of; 5: only a return (dropped with drop_returns);
    # 7: events only, every event without a timestamp; 8: both its events lack a timestamp, one transaction
    tx = _tx([1, 1, 2, 3, 4, 5, 6, 8], [10, 20, None, 30, 10**12, 40, 50, 60], [5.0, 6, 7, 8, 9, -3, 4, 2])
    ev = pa.table({"customer_id": pa.array([7, 7, 1, 8, 8], pa.int64()),
                   "ts": pa.array([None, None, 15, None, None], pa.timestamp("us", tz="UTC")),
                   "event": ["view", "cart", "view", "view", "view"]})  # fmt: skip
    return tx, ev, [1, 2, 3, 4, 5, 6, 7, 8]


def test_customers_whose_rows_are_all_dropped_keep_a_profile_row():
    tx, ev, every = _lost_customer_inputs()
    prof, summary = segone.profile.build_profiles_with_summary(tx, events=ev, as_of="1970-01-02", drop_returns=True)
    assert prof.column("customer_id").to_pylist() == every
    orders = dict(zip(every, prof.column("orders").to_pylist()))
    assert orders[2] == orders[4] == orders[5] == orders[7] == 0 and orders[8] == 1
    assert summary["customers"] == len(every) and summary["dropped"]["transactions: null timestamp"] == 1
    assert summary["dropped"]["events: null timestamp"] == 4


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_run_writes_every_customer_exactly_once_on_both_engines(engine, tmp_path):
    tx, ev, every = _lost_customer_inputs()
    kw = {"engine": "dask", "npartitions": 3} if engine == "dask" else {}
    res = segone.run(tx, tmp_path / "out", 2, events=ev, as_of="1970-01-02", value=False, **kw)
    assert res.summary["customers"] == len(every)
    for name in ("assignments.parquet", "personas.parquet"):
        ids = pq.read_table(tmp_path / "out" / name).column("customer_id").to_pylist()
        assert sorted(ids) == every, name


def test_lost_customer_with_a_dataset_of_several_files_on_dask(tmp_path):
    """Pieces read file by file: the null-timestamp customer sits in a file of its own."""
    tx, ev, every = _lost_customer_inputs()
    d = tmp_path / "tx"
    d.mkdir()
    pq.write_table(tx.filter(pc.field("customer_id") != 2), d / "part-0.parquet")
    pq.write_table(tx.filter(pc.field("customer_id") == 2), d / "part-1.parquet")
    res = segone.run(d, tmp_path / "out", 2, events=ev, as_of="1970-01-02", value=False, engine="dask")
    ids = pq.read_table(tmp_path / "out" / "assignments.parquet").column("customer_id").to_pylist()
    assert sorted(ids) == every and res.summary["customers"] == len(every)


# ====================================================== 3. lost or destroyed output
@pytest.mark.parametrize("where", ["same", "contains", "inside"])
def test_out_overlapping_an_input_is_refused_and_the_input_survives(where, tmp_path, data):
    d = tmp_path / "data" / "tx"
    d.mkdir(parents=True)
    pq.write_table(data.transactions, d / "part-0.parquet")
    before = _tree(tmp_path / "data")
    out = {"same": d, "contains": tmp_path / "data", "inside": d / "out"}[where]
    with pytest.raises(OutputError, match="is the transactions|contains the transactions|inside the transactions"):
        segone.run(d, out, 2, overwrite=True)
    assert _tree(tmp_path / "data") == before
    res = _cli("run", d, "--out", out, "-k", "2", "--overwrite", "-q")  # the CLI: one line, status 2
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert _tree(tmp_path / "data") == before


def test_out_a_regular_file_or_under_one_is_refused(tmp_path, data):
    f = tmp_path / "afile"
    f.write_text("keep me")
    with pytest.raises(OutputError, match="not a directory"):
        segone.run(data.transactions, f, 2, overwrite=True)
    assert f.read_text() == "keep me"
    with pytest.raises(OutputError, match="is a file"):
        segone.run(data.transactions, f / "out", 2)
    res = _cli("run", os.devnull, "--out", f / "out", "-k", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert _aux(tmp_path) == []


def test_overwrite_never_replaces_a_directory_segone_did_not_write(tmp_path, data):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    for call in (lambda: segone.run(data.transactions, home, 2, overwrite=True),
                 lambda: segone.synth.write_dataset(home, 100, overwrite=True),
                 lambda: _cli("demo", "--customers", "200", "--clusters", "2", "--out", home)):  # fmt: skip
        try:
            res = call()
        except OutputError as exc:
            assert "did not write" in str(exc)
        else:
            assert res.returncode == 2 and "did not write" in res.stderr
        assert (home / "thesis.tex").read_text() == "years of work"
    segone.run(data.transactions, tmp_path / "out", 2, value=False)
    segone.run(data.transactions, tmp_path / "out", 3, value=False, overwrite=True)  # its own output: replaced


def test_out_equal_to_the_model_or_a_compared_run_is_refused(tmp_path, fitted, tx_dir):
    with pytest.raises(OutputError, match="model"):
        segone.model.apply_model(fitted, tx_dir, fitted, overwrite=True)
    with pytest.raises(OutputError, match="old output"):
        segone.track.compare_outputs(fitted, fitted, fitted, overwrite=True)
    assert (fitted / "model" / "model.json").exists()


def test_output_problems_are_found_before_any_work(tmp_path, data, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("previous")

    def boom(*a, **k):
        raise AssertionError("the job started before the output was checked")

    monkeypatch.setattr(segone.pipeline, "profile_stage", boom)
    with pytest.raises(OutputError, match="exists and is not empty"):
        segone.run(data.transactions, out, 2)
    monkeypatch.setattr(segone.profile, "build_profiles_with_summary", boom)
    with pytest.raises(OutputError, match="exists and is not empty"):
        segone.model.apply_model(tmp_path / "model", data.transactions, out)  # (an out inside it: refused too)
    assert _aux(tmp_path) == []


def _fail_writes(monkeypatch, err):
    real = pq.write_table

    def full(table, where, *a, **k):
        if ".segone-tmp-" in str(where):
            raise OSError(err, os.strerror(err), str(where))
        return real(table, where, *a, **k)

    monkeypatch.setattr(io.pq, "write_table", full)


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_failing_disk_raises_an_output_error_and_keeps_the_previous_output(err, tmp_path, data, monkeypatch):
    out = tmp_path / "out"
    segone.run(data.transactions, out, 2, value=False)
    before = _tree(out)
    _fail_writes(monkeypatch, err)
    with pytest.raises(OutputError, match=os.strerror(err)):
        segone.run(data.transactions, out, 3, overwrite=True, value=False)
    assert _tree(out) == before and _aux(tmp_path) == []


@contextlib.contextmanager
def _tmpfs(path, options):
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_really_full_disk(tmp_path, data):
    with _tmpfs(tmp_path / "small", "size=16k") as disk:
        with pytest.raises(OutputError, match="No space left.*full"):
            segone.run(data.transactions, disk / "out", 2, value=False)
        assert _aux(disk) == [] and not (disk / "out").exists()


def test_a_read_only_disk_is_reported_before_any_work(tmp_path, data):
    with _tmpfs(tmp_path / "ro", "size=64k,ro") as disk:
        with pytest.raises(OutputError, match="read-only"):
            segone.run(data.transactions, disk / "out", 2)


def _as_nobody(fn, timeout=60):
    """``fn()`` in a forked child running as user nobody: (exception class name or "ok", message).

    (The interpreter lives under /root, which nobody cannot reach: no new process, a fork.)
    """
    import select

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            try:
                fn()
                res = ["ok", ""]
            except BaseException as exc:  # noqa: BLE001
                res = [type(exc).__name__, str(exc)]
            os.write(w, json.dumps(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        if not select.select([r], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the forked child did not answer")
        with os.fdopen(r, closefd=False) as f:
            text = f.read()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return json.loads(text)


@pytest.fixture
def shared_dir():
    """A directory every user can reach (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="segone-hardening-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_no_permission_to_write_the_output_or_read_the_input(shared_dir, data):
    """As root every permission holds: the checks run in a forked child of user nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as user nobody (as a normal user, chmod alone is enough)")
    locked = os.path.join(shared_dir, "locked")
    os.mkdir(locked, 0o755)
    secret = os.path.join(shared_dir, "secret.parquet")
    pq.write_table(data.transactions, secret)
    os.chmod(secret, 0o600)
    kind, msg = _as_nobody(lambda: io.check_output(os.path.join(locked, "out"), (), False))
    assert kind == "OutputError" and "permission" in msg and locked in msg, msg
    kind, msg = _as_nobody(lambda: segone.build_profiles(secret))
    assert kind in ("ParameterError", "DataError") and "secret.parquet" in msg and "ermission" in msg, (kind, msg)


# ---- kills at chosen points of the write
_WRITER = textwrap.dedent("""
    import os, sys
    from segone import io
    out, tag = sys.argv[1], sys.argv[2]
    with io.atomic_directory(out, overwrite=True) as tmp:
        with open(os.path.join(tmp, "result.txt"), "w") as f:
            f.write(tag)
        io.write_json({"format": "segone-run"}, os.path.join(tmp, "run.json"))
""")


def _write(out, tag, kill_at=None):
    env = dict(os.environ)
    if kill_at:
        env[io.KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-c", _WRITER, str(out), tag], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize("point", ["written", "moved-old", "replaced"])
def test_a_killed_overwrite_is_repaired_by_the_next_writer(point, tmp_path):
    out = tmp_path / "out"
    assert _write(out, "first").returncode == 0
    res = _write(out, "second", kill_at=point)
    assert res.returncode == -signal.SIGKILL
    assert _aux(tmp_path), "the kill left the run's temporaries and lock behind"
    # the state a kill leaves: the output is the previous or the new one, or (between the renames) put back next
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock = io.check_output(out, (), overwrite=True)
        lock.release()
    texts = " ".join(str(w.message) for w in caught)
    assert "removed the lock file" in texts
    assert (out / "result.txt").read_text() == ("second" if point == "replaced" else "first")
    if point == "moved-old":
        assert "restored the previous output" in texts
    assert _aux(tmp_path) == []
    assert _write(out, "third").returncode == 0 and (out / "result.txt").read_text() == "third"


def test_a_run_killed_between_the_renames_gets_its_previous_output_back(tmp_path, tx_dir):
    out = tmp_path / "out"
    assert _cli("run", tx_dir, "--out", out, "-k", "2", "-q", "--no-value").returncode == 0
    before = _tree(out)
    res = _cli("run", tx_dir, "--out", out, "-k", "3", "-q", "--no-value", "--overwrite",
               env={io.KILL_ENV: "moved-old"})  # fmt: skip
    assert res.returncode == -signal.SIGKILL and not out.exists()
    res = _cli("run", tx_dir, "--out", out, "-k", "3", "-q", "--no-value")  # no --overwrite: refused, but repaired
    assert res.returncode == 2 and "exists and is not empty" in res.stderr and "restored" in res.stderr
    assert _tree(out) == before and _aux(tmp_path) == []


def test_legacy_leftovers_are_reported_with_the_command_to_restore(tmp_path):
    """Directories an older segone left (random names, no owner): reported, never touched."""
    old = tmp_path / ".segone-old-ab12cd34"
    (old / "x").mkdir(parents=True)
    (tmp_path / ".segone-tmp-zz98yy76").mkdir()
    with pytest.warns(io.OutputRecoveryWarning) as caught:
        io.check_output(tmp_path / "out", ()).release()
    texts = [str(w.message) for w in caught]
    assert any("restore it with: mv " in t and "ab12cd34/x" in t for t in texts)
    assert any("rm -rf" in t and "zz98yy76" in t for t in texts)
    assert (old / "x").is_dir() and (tmp_path / ".segone-tmp-zz98yy76").is_dir()


# ---- concurrent writers
_HOLDER = textwrap.dedent("""
    import sys, time
    from segone import io
    lock = io.check_output(sys.argv[1], (), True)
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_is_refused_while_the_first_runs_and_a_dead_ones_lock_is_removed(tmp_path, data):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=f"being written by another segone run \\(pid {holder.pid}"):
            segone.run(data.transactions, out, 2, overwrite=True)
        with pytest.raises(OutputError, match="being written"):
            segone.synth.write_dataset(out, 100, overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(io.OutputRecoveryWarning, match="removed the lock file"):
        segone.run(data.transactions, out, 2, overwrite=True, value=False)
    assert (out / "run.json").exists() and _aux(tmp_path) == []


def test_two_overlapping_overwrites_never_both_succeed(tmp_path, tx_dir):
    """Run A takes the lock and is paused (SIGSTOP); run B, started meanwhile with --overwrite, is refused."""
    out = tmp_path / "out"
    assert _cli("run", tx_dir, "--out", out, "-k", "2", "-q", "--no-value").returncode == 0
    args = [sys.executable, "-m", "segone.cli", "run", str(tx_dir), "--out", str(out), "-q", "--no-value", "--overwrite"]
    a = subprocess.Popen(args + ["-k", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (tmp_path / ".segone-lock-out").exists():
            assert time.time() < deadline and a.poll() is None, "run A never took the lock of its output"
            time.sleep(0.02)
        a.send_signal(signal.SIGSTOP)
        b = _cli("run", tx_dir, "--out", out, "-k", "4", "-q", "--no-value", "--overwrite")
        assert b.returncode == 2 and f"being written by another segone run (pid {a.pid}" in b.stderr, b.stderr
    finally:
        a.send_signal(signal.SIGCONT)
        _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    assert pq.read_table(out / "segments.parquet").num_rows == 3 and _aux(tmp_path) == []


def test_a_lock_left_by_an_earlier_failed_call_in_this_thread_is_taken_over(tmp_path, data):
    io.check_output(tmp_path / "out", ())  # never released (e.g. a crash between check and write)
    segone.run(data.transactions, tmp_path / "out", 2, value=False)
    assert _aux(tmp_path) == []


# ===================================================== 4. silently wrong numbers
def test_overflowing_sums_raise_naming_the_column_and_the_customers():
    t = _tx([1, 1, 2], [1, 2, 3], [1e308, 1e308, 1.0])
    with pytest.raises(DataError, match=r"transactions\.amount.*customers: 1"):
        segone.build_profiles(t)
    t = _tx(list(range(10)), list(range(10)), [1e308] * 10)  # every customer finite, the total is not
    with pytest.raises(DataError, match="over all 10 customers"):
        segone.build_profiles(t)
    with pytest.raises(DataError, match="too large to scale"):
        segone.FeatureScorer(features=["x"]).fit(pa.table({"x": [1e308, -1e308, 5.0]}))
    with pytest.raises(DataError, match="income"):  # e.g. a CRM column, or pieces whose totals add up too far
        segone.describe_segments(pa.table({"orders": [1, 2, 3], "income": [1e308, 1e308, 5.0]}), np.array([0, 0, 1]), 2)


def test_a_column_missing_from_the_first_file_is_read_from_the_others(tmp_path, data):
    d = tmp_path / "tx"
    d.mkdir()
    t = data.transactions
    pq.write_table(t.slice(0, 100).drop_columns(["category"]), d / "part-0.parquet")
    pq.write_table(t.slice(100), d / "part-1.parquet")
    prof = segone.build_profiles(d)
    assert any(c.startswith("share_") for c in prof.column_names)
    whole = segone.build_profiles(t.slice(100))
    shares = [c for c in whole.column_names if c.startswith("share_") and c != "share_other"]
    assert set(shares) <= set(prof.column_names)


def test_transform_of_nan_rows_raises():
    X = np.random.default_rng(0).normal(size=(20, 2))
    seg = segone.Segmenter(2, random_state=0).fit(X)
    X[3, 1] = np.nan
    for call in (seg.transform, seg.predict):
        with pytest.raises(DataError, match="3"):
            call(X)


def _scorer_doc():
    prof = segone.build_profiles(segone.synth.generate(200, seed=2).transactions)
    return json.loads(segone.FeatureScorer(scaling="robust").fit(prof).to_json())


_DOC_EDITS = {
    "mean NaN": lambda d: d["state"]["moments"]["mean"].__setitem__(0, float("nan")),
    "m2 infinite": lambda d: d["state"]["moments"]["m2"].__setitem__(1, float("inf")),
    "m2 negative": lambda d: d["state"]["moments"]["m2"].__setitem__(1, -4.0),
    "count negative": lambda d: d["state"]["moments"]["count"].__setitem__(0, -1),
    "mean mis-shaped": lambda d: d["state"]["moments"]["mean"].pop(),
    "mean not numbers": lambda d: d["state"]["moments"].__setitem__("mean", "0,1"),
    "max NaN": lambda d: d["state"]["moments"]["max"].__setitem__(0, float("nan")),
    "n_never negative": lambda d: d["state"]["n_never"].__setitem__(0, -2),
    "n_never mis-shaped": lambda d: d["state"].__setitem__("n_never", [0]),
    "features bad transform": lambda d: d["state"]["features"][0].__setitem__(1, "exp"),
    "features empty": lambda d: d["state"].__setitem__("features", []),
    "sketch count negative": lambda d: d["state"]["sketches"][0]["pos"][1].__setitem__(0, -5),
    "sketch key huge": lambda d: d["state"]["sketches"][0]["pos"][0].__setitem__(-1, 10**9),
    "sketch alpha bad": lambda d: d["state"]["sketches"][0].__setitem__("alpha", 2.0),
    "sketch zero negative": lambda d: d["state"]["sketches"][0].__setitem__("zero", -1),
    "sketches mis-shaped": lambda d: d["state"]["sketches"].pop(),
    "clip negative": lambda d: d["params"].__setitem__("clip", -1.0),
    "clip NaN": lambda d: d["params"].__setitem__("clip", float("nan")),
    "weights NaN": lambda d: d["params"]["weights"].__setitem__("orders", float("nan")),
    "weights negative": lambda d: d["params"]["weights"].__setitem__("orders", -1.0),
    "sketch_alpha other": lambda d: d["params"].__setitem__("sketch_alpha", 0.01),
    "clip_quantiles reversed": lambda d: d["params"].__setitem__("clip_quantiles", [0.9, 0.1]),
    "params unknown": lambda d: d["params"].__setitem__("bogus", 1),
    "state not an object": lambda d: d.__setitem__("state", [1, 2]),
}


@pytest.mark.parametrize("edit", sorted(_DOC_EDITS))
def test_a_malformed_scorer_document_is_refused_naming_the_field(edit):
    doc = _scorer_doc()
    _DOC_EDITS[edit](doc)
    with pytest.raises(SegoneError):
        sc = segone.FeatureScorer.from_json(json.dumps(doc))
        # what the old loader did with it: features that are not finite
        prof = segone.build_profiles(segone.synth.generate(50, seed=5).transactions)
        assert np.isfinite(sc.transform(prof)).all()
        raise AssertionError(f"accepted a scorer document with {edit}")


@pytest.mark.parametrize("what", ["scorer mean NaN", "histogram missing negative", "histogram counts disagree",
                                  "scorer truncated"])  # fmt: skip
def test_a_malformed_model_directory_is_refused_naming_the_file(what, tmp_path, fitted):
    import shutil

    m = tmp_path / "model"
    shutil.copytree(fitted / "model", m)
    if what.startswith("scorer"):
        text = (m / "scorer.json").read_text()
        if what == "scorer truncated":
            (m / "scorer.json").write_text(text[: len(text) // 2])
        else:
            doc = json.loads(text)
            doc["state"]["moments"]["mean"][0] = float("nan")
            (m / "scorer.json").write_text(json.dumps(doc))
        name = "scorer.json"
    else:
        doc = json.loads((m / "feature_histogram.json").read_text())
        if what == "histogram missing negative":
            doc["missing"][0] = -3
        else:
            doc["missing"][0] += 7
        (m / "feature_histogram.json").write_text(json.dumps(doc))
        name = "feature_histogram.json"
    with pytest.raises(ModelFormatError, match=name):
        segone.model.load_model(m)


# ========================================================== 5. unclear errors
def _dataset(tmp_path, tables, name="tx"):
    d = tmp_path / name
    d.mkdir()
    for i, t in enumerate(tables):
        pq.write_table(t, d / f"part-{i}.parquet")
    return d


def test_files_disagreeing_on_a_type_or_a_name_are_named(tmp_path, data):
    t = data.transactions.select(["customer_id", "ts", "amount"])
    a, b = t.slice(0, 100), t.slice(100)
    d = _dataset(tmp_path, [a, b.set_column(0, "customer_id", pc.cast(b.column("customer_id"), pa.string()))])
    with pytest.raises(SchemaError, match=r"disagree on the type of column 'customer_id'.*part-1\.parquet"):
        segone.build_profiles(d)
    d = _dataset(tmp_path, [a, b.rename_columns(["cust", "ts", "amount"])], "names")
    with pytest.raises(SchemaError, match=r"'customer_id' is missing from 1 of the 2 files.*part-1\.parquet"):
        segone.build_profiles(d)
    # a categorical column in one file, plain strings in another: one type, no error
    cat = data.transactions.select(["customer_id", "ts", "amount", "category"])
    d = _dataset(tmp_path, [cat.slice(0, 100), cat.slice(100).set_column(
        3, "category", pc.cast(cat.slice(100).column("category"), pa.string()))], "cats")  # fmt: skip
    assert segone.build_profiles(d).num_rows == segone.build_profiles(cat).num_rows


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_corrupt_file_in_a_dataset_is_named(damage, tmp_path, data):
    d = _dataset(tmp_path, [data.transactions.slice(0, 100), data.transactions.slice(100)])
    f = d / "part-1.parquet"
    raw = f.read_bytes()
    f.write_bytes({"truncated": raw[: len(raw) // 2], "empty": b"", "garbage": raw[:4] + b"\0" * 64 + raw[-8:]}[damage])
    with pytest.raises(SegoneError, match="part-1.parquet"):
        segone.build_profiles(d)
    res = _cli("run", d, "--out", tmp_path / "out", "-k", "2")
    assert res.returncode == 2 and "part-1.parquet" in res.stderr and "Traceback" not in res.stderr


def test_an_empty_directory_says_there_are_no_data_files(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(ParameterError, match="holds no data files"):
        segone.build_profiles(tmp_path / "empty")


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_uint64_ids_beyond_int64_are_a_data_error(engine, tmp_path):
    f = tmp_path / "u64.parquet"
    pq.write_table(pa.table({"customer_id": pa.array([2**63 + 5, 1, 2], pa.uint64()),
                             "ts": pa.array([1, 2, 3], pa.timestamp("us")), "amount": [1.0, 2.0, 3.0]}), f)  # fmt: skip
    kw = {"engine": "dask"} if engine == "dask" else {}
    with pytest.raises(DataError, match="int64 range"):
        segone.run(f, tmp_path / "out", 2, **kw)


@pytest.mark.parametrize("order", [["crm_orders", "orders"], ["orders", "crm_orders"]])
def test_crm_columns_colliding_with_generated_ones_are_renamed(order, tmp_path):
    t = _tx([1, 2, 3], [1, 2, 3], [1.0, 2.0, 3.0])
    vals = {"crm_orders": [10, 20, 30], "orders": [7, 8, 9]}
    at = pa.table({"customer_id": pa.array([1, 2, 3], pa.int64()), **{c: vals[c] for c in order}})
    prof, summary = segone.profile.build_profiles_with_summary(t, attributes=at)
    assert prof.column("orders").to_pylist() == [1, 1, 1]  # the profile's own column is never replaced
    assert prof.column("crm_orders").to_pylist() == [10, 20, 30]
    assert prof.column("crm_orders_2").to_pylist() == [7, 8, 9]
    assert summary["attributes_renamed"] == {"orders": "crm_orders_2"}
    assert len(set(prof.column_names)) == len(prof.column_names)
    res = segone.run(t, tmp_path / "out", 2, attributes=at, value=False)  # a KeyError before
    assert res.summary["customers"] == 3


def test_duplicate_column_names_are_a_schema_error():
    t = _tx([1, 2], [1, 2], [1.0, 2.0])
    dup = pa.Table.from_arrays(t.columns + [t.column(2)], names=t.column_names + ["amount"])
    with pytest.raises(SchemaError, match="'amount' appears 2 times"):
        segone.build_profiles(dup)
    at = pa.Table.from_arrays([t.column(0), t.column(0)], names=["customer_id", "customer_id"])
    with pytest.raises(SchemaError, match="appears 2 times"):
        segone.build_profiles(t, attributes=at)


# ====================================================================================================
# Round two (issue 26): the newer commands (apply, track, --previous, value and privacy options)
# ====================================================================================================
def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------- class 1: loss (an output inside a protected directory)
_INSIDE = {
    "apply -o FIT/model": lambda fit, other, tx, out: segone.model.apply_model(fit, tx, fit / "model", overwrite=True),
    "apply -o FIT/sub": lambda fit, other, tx, out: segone.model.apply_model(fit, tx, fit / "sub", overwrite=True),
    "track -o NEW/model": lambda fit, other, tx, out: segone.track.compare_outputs(other, fit, fit / "model",
                                                                                  overwrite=True),
    "track -o OLD/model": lambda fit, other, tx, out: segone.track.compare_outputs(fit, other, fit / "model",
                                                                                  overwrite=True),
    "run -o PREV/model --previous PREV": lambda fit, other, tx, out: segone.run(tx, fit / "model", 3, previous=fit,
                                                                               overwrite=True, value=False),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_INSIDE))
def test_an_output_inside_a_protected_directory_is_refused(case, tmp_path, fitted, tx_dir):
    """Each exited 0 and replaced the model's files (out inside the model, the previous or a compared run)."""
    fit = _copy_run(fitted, tmp_path / "fit")
    other = _copy_run(fitted, tmp_path / "other")
    before = _tree(fit)
    with pytest.raises(OutputError, match="lies inside the (model|new output|old output|previous output)"):
        _INSIDE[case](fit, other, tx_dir, tmp_path / "out")
    assert _tree(fit) == before
    segone.model.load_model(fit)  # still a whole model


@pytest.mark.parametrize("command", ["apply", "track", "run"])
def test_the_cli_refuses_an_output_inside_the_model_or_a_run(command, tmp_path, fitted, tx_dir):
    fit = _copy_run(fitted, tmp_path / "fit")
    before = _tree(fit)
    args = {"apply": ["apply", fit, tx_dir, "-o", fit / "model", "--overwrite"],
            "track": ["track", fitted, fit, "-o", fit / "model", "--overwrite"],
            "run": ["run", tx_dir, "-o", fit / "model", "--previous", fit, "-k", "3", "--no-value", "--overwrite",
                    "-q"]}[command]  # fmt: skip
    res = _cli(*args)
    assert res.returncode == 2 and "lies inside" in res.stderr and "Traceback" not in res.stderr
    assert _tree(fit) == before


# ------------------------------------------------- class 2: crash (model files that lie about their size)
def _lying_npy(path, shape, descr="<f8", data=b"\0" * 64):
    from numpy.lib import format as npf

    with open(path, "wb") as f:
        npf.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
        f.write(data)


@pytest.mark.parametrize("claim", ["(4, 10**12)", "(10**12, d)"])
def test_a_centroids_file_that_lies_about_its_size_is_refused_before_allocating(claim, tmp_path, fitted, tx_dir):
    """A 200-byte centroids.npy claiming (4, 10**12) ended in a raw MemoryError (29.1 TiB) in load_model and apply."""
    fit = _copy_run(fitted, tmp_path / "fit")
    d = segone.model.load_model(fit).centroids.shape[1]
    _lying_npy(fit / "model" / "centroids.npy", (4, 10**12) if claim == "(4, 10**12)" else (10**12, d))
    with pytest.raises(ModelFormatError, match=r"centroids\.npy.*declares shape"):
        segone.model.load_model(fit)
    with pytest.raises(ModelFormatError, match=r"centroids\.npy"):
        segone.model.apply_model(fit, tx_dir, tmp_path / "out")
    res = _cli("apply", fit, tx_dir, "-o", tmp_path / "out2")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "MemoryError" not in res.stderr


@pytest.mark.parametrize("doc", ["scorer.json", "model.json", "feature_histogram.json", "run.json of --previous"])
def test_deeply_nested_json_is_a_model_format_error_not_a_recursion_error(doc, tmp_path, fitted, tx_dir):
    """A 100,000-deep nested scorer.json gave a RecursionError."""
    fit = _copy_run(fitted, tmp_path / "fit")
    deep = "[" * 100_000 + "]" * 100_000
    if doc == "run.json of --previous":
        (fit / "run.json").write_text(deep)  # unreadable run.json of a previous output: noted, not fatal
        res = segone.run(tx_dir, tmp_path / "out", 3, previous=fit, value=False)
        assert any("run.json" in n for n in res.summary["tracking"]["notes"])
        return
    (fit / "model" / doc).write_text(deep)
    with pytest.raises(ModelFormatError, match=doc.replace(".", r"\.")):
        segone.model.load_model(fit)


# ------------------------------------------------- class 3: silently wrong
def _no_work(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the job started before the parameters were checked")

    monkeypatch.setattr(segone.pipeline, "profile_stage", boom)


@pytest.mark.parametrize("param,value", [("discount_rate", -0.5), ("discount_rate", float("nan")),
                                         ("discount_rate", float("inf")), ("horizon_months", 10**9),
                                         ("horizon_months", -1), ("n_init", 0), ("refine", -1), ("n_traits", 0),
                                         ("freq", "Y")])  # fmt: skip
def test_every_numeric_parameter_of_run_is_range_checked_before_any_work(param, value, tmp_path, data, monkeypatch):
    """discount_rate=-0.5 was accepted and inflated every CLV about 700x; a huge horizon ended in OverflowError."""
    _no_work(monkeypatch)
    with pytest.raises(ParameterError, match=param):
        segone.run(data.transactions, tmp_path / "out", 2, **{param: value})
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_a_huge_horizon_in_one_line(tmp_path, tx_dir):
    res = _cli("run", tx_dir, "-o", tmp_path / "out", "-k", "2", "--horizon-months", "1000000000", "-q")
    assert res.returncode == 2 and "horizon_months" in res.stderr and "Traceback" not in res.stderr


def test_track_with_a_spend_column_no_run_holds_is_refused(tmp_path, fitted):
    """track --spend nope exited 0 and wrote null spend."""
    with pytest.raises(SchemaError, match="'nope'"):
        segone.track.compare_outputs(fitted, fitted, tmp_path / "cmp", spend="nope")
    res = _cli("track", fitted, fitted, "-o", tmp_path / "cmp2", "--spend", "nope")
    assert res.returncode == 2 and "'nope'" in res.stderr and not (tmp_path / "cmp2").exists()


@pytest.fixture
def id_key(monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", "0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("ids", ["string", "int"])
@pytest.mark.parametrize("hashed", ["new", "previous"])
def test_tracking_a_pseudonymised_run_against_a_plain_one_names_the_cause(ids, hashed, tmp_path, data, id_key,
                                                                         monkeypatch):  # fmt: skip
    """With string ids every customer was marked 'new' without a word; with int ids the hint was to cast the ids."""
    tx = data.transactions
    if ids == "string":
        tx = tx.set_column(0, "customer_id", pc.cast(tx.column("customer_id"), pa.string()))
    prev = tmp_path / "prev"
    segone.run(tx, prev, 2, value=False, hash_ids=hashed == "previous")
    _no_work(monkeypatch)
    with pytest.raises(SchemaError, match="pseudonymised") as err:
        segone.run(tx, tmp_path / "out", 2, value=False, previous=prev, hash_ids=hashed == "new")
    assert "cast" not in str(err.value) and not (tmp_path / "out").exists()


def _corrupt_ts_page(path, table):
    """Write ``table`` uncompressed (page checksums as asked) and flip bytes inside the timestamp column's page."""
    md = pq.ParquetFile(path).metadata
    col = md.row_group(0).column(table.column_names.index("ts"))
    raw = bytearray(path.read_bytes())
    start = col.data_page_offset + col.total_compressed_size // 2
    for i in range(start, start + 8):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_damaged_parquet_page_is_found_by_its_checksum(tmp_path, data):
    """Bytes corrupted inside a Parquet page were read as data (as_of jumped to 2032)."""
    t = data.transactions.select(["customer_id", "ts", "amount"])
    f = tmp_path / "tx.parquet"
    pq.write_table(t, f, compression="none", write_page_checksum=True)
    _corrupt_ts_page(f, t)
    with pytest.raises(DataError, match=r"tx\.parquet.*checksum"):
        segone.run(f, tmp_path / "out", 2, value=False)
    assert not (tmp_path / "out").exists()


def _far_future(t, rows=3):
    """``t`` with the timestamps of a few rows moved to 2032 (what damaged bytes without a checksum did)."""
    ts = t.column("ts").to_numpy().astype("datetime64[us]").copy()
    ts[5 : 5 + rows] = np.datetime64("2032-06-01")
    return t.set_column(t.column_names.index("ts"), "ts", pa.array(ts, t.schema.field("ts").type))


def test_timestamps_far_beyond_the_bulk_are_refused_instead_of_moving_as_of(tmp_path, data):
    t = _far_future(data.transactions.select(["customer_id", "ts", "amount"]))
    with pytest.raises(DataError, match="far beyond the bulk.*2032-06-01"):
        segone.run(t, tmp_path / "out", 2, value=False)
    res = segone.run(t, tmp_path / "out", 2, value=False, as_of="2030-01-01")  # explicit: those rows are excluded
    assert res.summary["rows_excluded_after_as_of"]["transactions"] == 3


# ------------------------------------------------- class 4: unclear errors
def test_min_segment_size_against_the_rows_bound_says_rows_not_customers(tmp_path):
    """--min-segment-size 1000 on 30 customers (90 rows) said '90 customers'."""
    t = _tx([i for i in range(30) for _ in range(3)], list(range(90)), [1.0] * 90)
    with pytest.raises(ParameterError, match="90 rows") as err:
        segone.run(t, tmp_path / "out", 2, min_segment_size=1000, value=False)
    assert "90 customers" not in str(err.value)


def test_centroids_beyond_float32_are_refused_naming_the_file(tmp_path, fitted, tx_dir):
    """Finite 1e300 centroids got 'NaN or infinity' (after the cast to float32) without the file's name."""
    fit = _copy_run(fitted, tmp_path / "fit")
    C = np.load(fit / "model" / "centroids.npy").astype(np.float64)
    C[1, 2] = 1e300
    np.save(fit / "model" / "centroids.npy", C)
    with pytest.raises(ModelFormatError, match=r"centroids\.npy.*float32 range"):
        segone.model.apply_model(fit, tx_dir, tmp_path / "out")


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_with_another_delimiter_is_read_or_named(sep, tmp_path, data):
    """A ;-separated CSV was told to rename its columns."""
    t = data.transactions.select(["customer_id", "ts", "amount"]).slice(0, 200)
    f = tmp_path / "tx.csv"
    t.to_pandas().to_csv(f, sep=sep, index=False)
    prof = segone.build_profiles(f)
    assert prof.num_rows == segone.build_profiles(t).num_rows
    # forced to the wrong separator: the error says what the file looks like
    shown = "tab" if sep == "\t" else sep
    with pytest.raises(SchemaError, match=f"looks {re.escape(shown)}-separated"):
        segone.build_profiles(io.dataset(f, delimiter=","))


def test_a_withheld_output_as_previous_says_what_to_do(tmp_path, tx_dir, monkeypatch):
    """A --small-segments withhold output was refused as --previous with no way forward."""
    prev = tmp_path / "prev"
    segone.run(tx_dir, prev, 4, value=False, min_segment_size=60, small_segments="withhold")
    assert json.loads((prev / "run.json").read_text())["privacy"]["small_segments"]["customers_withheld"] > 0
    _no_work(monkeypatch)
    with pytest.raises(DataError, match=r"withhold.*small_segments='merge'"):
        segone.run(tx_dir, tmp_path / "out", 4, value=False, previous=prev)
    with pytest.raises(DataError, match=r"withhold.*small_segments='merge'"):
        segone.track.compare_outputs(prev, prev, tmp_path / "cmp")
    # what the message says works: the same period with merge is tracked
    monkeypatch.undo()
    segone.run(tx_dir, prev, 4, value=False, min_segment_size=60, small_segments="merge", overwrite=True)
    res = segone.run(tx_dir, tmp_path / "out", 4, value=False, previous=prev)
    assert res.summary["tracking"]["customers"]["common"] == N


# ------------------------------------------------- class 5: the same on Dask (a 2-worker LocalCluster)
@pytest.fixture(scope="module")
def cluster_client():
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit="2GiB") as cluster, distributed.Client(cluster) as c:  # fmt: skip
        yield c


@pytest.mark.parametrize("case", ["damaged page", "far timestamps", "pseudonymised previous"])
def test_round_two_errors_are_the_same_on_dask(case, tmp_path, data, fitted, cluster_client, id_key):
    t = data.transactions.select(["customer_id", "ts", "amount"])
    d = tmp_path / "tx"
    d.mkdir()
    kw = {}
    if case == "damaged page":
        pq.write_table(t.slice(0, 150), d / "part-0.parquet")
        pq.write_table(t.slice(150), d / "part-1.parquet", compression="none", write_page_checksum=True)
        _corrupt_ts_page(d / "part-1.parquet", t)
        err, match = DataError, r"part-1\.parquet.*checksum"
    elif case == "far timestamps":
        pq.write_table(t.slice(0, 150), d / "part-0.parquet")
        pq.write_table(_far_future(t.slice(150)), d / "part-1.parquet")
        err, match = DataError, "far beyond the bulk"
    else:
        pq.write_table(t, d / "part-0.parquet")
        kw = {"hash_ids": True, "previous": fitted}
        err, match = SchemaError, "pseudonymised"
    with pytest.raises(err, match=match):
        segone.run(d, tmp_path / "out", 2, value=False, engine="dask", client=cluster_client, **kw)
    assert not (tmp_path / "out").exists() and _aux(tmp_path) == []


def test_a_dask_run_tracked_against_a_previous_writes_every_customer_once(tmp_path, tx_dir, fitted, cluster_client):
    fit = _copy_run(fitted, tmp_path / "fit")
    with pytest.raises(OutputError, match="lies inside"):
        segone.run(tx_dir, fit / "model", 3, value=False, previous=fit, overwrite=True, engine="dask",
                   client=cluster_client)  # fmt: skip
    res = segone.run(tx_dir, tmp_path / "out", 3, value=False, previous=fit, engine="dask", client=cluster_client)
    for name in ("assignments.parquet", "moves.parquet"):
        ids = pq.read_table(tmp_path / "out" / name).column("customer_id").to_pylist()
        assert sorted(ids) == sorted(set(ids)) and len(ids) == N, name
    assert res.summary["tracking"]["customers"]["common"] == N
