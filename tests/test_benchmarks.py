"""CI smoke tests of the benchmark suite: every asv benchmark runs once on tiny data, in this process.

A benchmark that breaks fails CI.  Timings are not checked here (speed is
measured by ``asv`` and ``benchmarks/compare.py``, never asserted in tests).
Each benchmark method runs once with the first value of every parameter, so
the suite's cost does not grow with its parameter grid; ``asv check`` checks
the configuration and the discovery of every benchmark.
"""

import importlib
import inspect
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
PREFIXES = ("time_", "peakmem_", "mem_", "track_")


def _benchmark_classes():
    sys.path.insert(0, BENCH)
    before = os.environ.get("SEGONE_BENCH_SCALE")
    os.environ["SEGONE_BENCH_SCALE"] = "tiny"  # read when benchmarks.common is imported
    try:
        names = sorted(f[:-3] for f in os.listdir(os.path.join(BENCH, "benchmarks"))
                       if f.startswith("bench_") and f.endswith(".py"))  # fmt: skip
        out = []
        for name in names:
            mod = importlib.import_module(f"benchmarks.{name}")
            for cname, cls in inspect.getmembers(mod, inspect.isclass):
                if cls.__module__ == mod.__name__ and any(m.startswith(PREFIXES) for m in dir(cls)):
                    out.append(pytest.param(cls, id=f"{name}.{cname}"))
        return out
    finally:
        sys.path.remove(BENCH)
        if before is None:
            os.environ.pop("SEGONE_BENCH_SCALE", None)
        else:
            os.environ["SEGONE_BENCH_SCALE"] = before


def _first_params(cls):
    params = getattr(cls, "params", None)
    if params is None:
        return ()
    if isinstance(params, tuple) and params and isinstance(params[0], list):
        return tuple(p[0] for p in params)
    return (params[0],)


@pytest.mark.slow
@pytest.mark.parametrize("cls", _benchmark_classes())
def test_every_benchmark_runs_once_on_tiny_data(cls, monkeypatch):
    monkeypatch.setenv("SEGONE_BENCH_SCALE", "tiny")
    bench = cls()
    args = _first_params(cls)
    cache = bench.setup_cache() if hasattr(bench, "setup_cache") else None
    pre = (cache,) if hasattr(bench, "setup_cache") else ()
    methods = [m for m in dir(bench) if m.startswith(PREFIXES)]
    assert methods
    for m in methods:
        if hasattr(bench, "setup"):
            bench.setup(*pre, *args)
        try:
            getattr(bench, m)(*pre, *args)
        finally:
            if hasattr(bench, "teardown"):
                bench.teardown(*pre, *args)


@pytest.mark.skipif(shutil.which("git") is None, reason="asv needs git")
def test_asv_discovers_the_suite(tmp_path):
    """asv's own check of the configuration and of every benchmark's discovery (the benchmarks run above)."""
    import asv  # noqa: F401  (a test dependency)

    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    env = dict(os.environ, SEGONE_BENCH_SCALE="tiny", HOME=str(tmp_path))  # machine file in a temp home
    asv = [sys.executable, "-m", "asv"]
    subprocess.run(asv + ["machine", "--yes"], cwd=BENCH, env=env, check=True, capture_output=True)
    proc = subprocess.run(asv + ["check", "--python=same"], cwd=BENCH, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "Traceback" not in out, out[-5000:]
