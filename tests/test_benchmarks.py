"""CI smoke test of the asv suite: every benchmark runs once on tiny data.

A benchmark that breaks fails CI.  Timings are not checked here (speed is
measured by ``asv`` and ``benchmarks/compare.py``, never asserted in tests).
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


@pytest.mark.skipif(shutil.which("git") is None, reason="asv needs git")
def test_asv_quick_smoke(tmp_path):
    pytest.importorskip("asv")
    if not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    env = dict(os.environ, SEGONE_BENCH_SCALE="tiny", HOME=str(tmp_path))  # machine file in a temp home
    asv = [sys.executable, "-m", "asv"]
    subprocess.run(asv + ["machine", "--yes"], cwd=BENCH, env=env, check=True, capture_output=True)
    proc = subprocess.run(
        asv + ["run", "--quick", "--python=same", "--dry-run", "--show-stderr"],
        cwd=BENCH, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert "failed" not in out.lower(), out[-5000:]
    assert "Traceback" not in out, out[-5000:]
    assert "bench_assign.Assign.time_assign" in out
