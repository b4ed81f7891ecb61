"""Importing segone has no process-wide effect; keeping freed memory is an explicit choice."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import segone
from segone import outputs

# a fresh interpreter: what segone's import (and a small job) does to the process, against the state before it
_CHILD = textwrap.dedent(
    r"""
    import json, os, sys
    import numpy as np

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    env_before = dict(os.environ)
    import numba
    threads_before = numba.get_num_threads()
    import segone
    from segone.synth import generate
    d = generate(300, seed=0)
    segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
    out = {"env_added": sorted(set(os.environ) - set(env_before)),
           "env_changed": sorted(k for k in env_before if os.environ.get(k) != env_before[k]),
           "numba_threads": [threads_before, numba.get_num_threads()],
           "settings": segone.memory_settings()}
    if sys.argv[1] == "keep":
        segone.keep_freed_memory()
    base = rss()
    a = np.ones(2**30 // 8)  # 1 GiB, touched
    high = rss()
    del a
    out.update(base=base, high=high, after=rss())
    print(json.dumps(out))
    """
)


def _child(mode):
    res = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_import_changes_neither_the_environment_nor_the_allocator():
    out = _child("default")
    assert out["env_added"] == [] and out["env_changed"] == []
    assert out["numba_threads"][0] == out["numba_threads"][1]
    assert out["settings"]["keep_freed_memory"] is False
    gib = 2**30
    assert out["high"] - out["base"] > 0.9 * gib  # the array was touched
    # a freed 1 GiB array goes back to the OS: glibc's defaults unmap it
    assert out["after"] - out["base"] < 0.1 * gib, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_keep_freed_memory_is_an_explicit_choice_that_works():
    out = _child("keep")
    gib = 2**30
    assert out["high"] - out["base"] > 0.9 * gib
    # kept: the heap holds the freed GiB for reuse (this is what the opt-in is for)
    assert out["after"] - out["base"] > 0.9 * gib, out


def test_keep_freed_memory_can_be_turned_off_again():
    try:
        s = segone.keep_freed_memory()
        if s["glibc"] == "not glibc":
            pytest.skip("no glibc")
        assert s["keep_freed_memory"] is True
    finally:
        s = segone.keep_freed_memory(False)
    assert s["keep_freed_memory"] is False and s["glibc"] == "defaults"
    assert segone.memory_settings() == s


def test_personas_built_in_blocks_equal_personas_built_at_once(tmp_path, monkeypatch):
    """The job builds personas a block of customers at a time (bounded scratch): a small block gives the same
    outputs as one block, segment contrast, RFM columns and privacy included."""
    import pyarrow.parquet as pq

    from segone import pipeline
    from segone.synth import generate

    d = generate(1500, seed=11)
    kw = dict(events=d.events, attributes=d.customers, min_segment_size=20)
    segone.run(d.transactions, tmp_path / "whole", 5, **kw)
    monkeypatch.setattr(pipeline, "PERSONA_BLOCK", 97)
    segone.run(d.transactions, tmp_path / "blocks", 5, **kw)
    for name in ("personas.parquet", "assignments.parquet", "segments.parquet", "rfm.parquet"):
        a, b = pq.read_table(tmp_path / "whole" / name), pq.read_table(tmp_path / "blocks" / name)
        assert a.schema == b.schema and a.to_pandas().equals(b.to_pandas()), name  # NaN where NaN


def test_large_inputs_split_by_customer_are_profiled_file_by_file_with_the_same_outputs(tmp_path):
    """LocalEngine(stream_rows=0): a synth directory whose files hold disjoint customers is profiled file by file
    (bounded memory); every output equals the one-piece run's, up to row order."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from segone._engine import LocalEngine

    from segone.synth import generate

    d = generate(3000, seed=4)
    data = tmp_path / "data"
    bounds = [0, 700, 1500, 2200, 10**9]  # file i of every input: the customers of one id range
    ids = d.customers.column("customer_id").to_numpy()
    lo = int(ids.min())
    for role, t in (("transactions", d.transactions), ("events", d.events), ("customers", d.customers)):
        (data / role).mkdir(parents=True)
        cid = t.column("customer_id").to_numpy() - lo
        for i in range(4):
            sel = (cid >= bounds[i]) & (cid < bounds[i + 1])
            pq.write_table(t.filter(sel), data / role / f"part-{i:05d}.parquet")
    assert len(os.listdir(data / "transactions")) == 4
    whole = segone.run(str(data), tmp_path / "whole", 5, min_segment_size=10)
    stream = segone.run(str(data), tmp_path / "stream", 5, min_segment_size=10,
                        engine=LocalEngine(stream_rows=0))  # fmt: skip
    assert stream.summary["engine"]["pieces"] == len(os.listdir(data / "transactions"))
    assert "pieces" not in whole.summary["engine"]
    for name in ("assignments.parquet", "personas.parquet", "segments.parquet", "rfm.parquet"):
        a = pq.read_table(tmp_path / "whole" / name)
        b = pq.read_table(tmp_path / "stream" / name)
        if "customer_id" in a.column_names:
            a, b = a.sort_by("customer_id"), b.sort_by("customer_id")
        assert a.schema == b.schema, name
        for col in a.column_names:  # sums merged piece by piece differ in the last bits only (as on Dask)
            x, y = a.column(col), b.column(col)
            if pa.types.is_floating(x.type):
                # the segment totals' interval bounds come from sums of central differences (step 1e-5), which
                # magnify the summation's rounding by 1/step: equal to 1e-9 there (as the Dask parity test asks)
                rtol = 1e-9 if col in outputs.SEGMENT_INTERVAL_COLUMNS else 1e-12
                np.testing.assert_allclose(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False),
                                           rtol=rtol, atol=0, equal_nan=True, err_msg=f"{name}.{col}")  # fmt: skip
            else:
                assert x.to_pylist() == y.to_pylist(), f"{name}.{col}"
    keys = ("rows_read", "rows_dropped", "customers", "customers_without_purchase", "as_of", "features", "inertia")
    ja = json.loads((tmp_path / "whole" / "run.json").read_text())
    jb = json.loads((tmp_path / "stream" / "run.json").read_text())
    for key in keys:
        assert ja[key] == pytest.approx(jb[key], rel=1e-12) if key == "inertia" else ja[key] == jb[key], key
    assert stream.assignments.num_rows == 3000
