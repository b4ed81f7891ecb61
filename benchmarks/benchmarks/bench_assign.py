"""Nearest-segment assignment (segone.assign)."""

import os
import subprocess
import sys


import segone

from .common import THREADS, blobs, centroids_from, scaled


class Assign:
    params = (
        ["cython", "numba"],
        [(scaled(200_000, 10_000_000), 16, 64), (scaled(100_000, 1_000_000), 16, 8),
         (scaled(50_000, 1_000_000), 64, 256), (scaled(50_000, 1_000_000), 8, 1024),
         (scaled(100_000, 1_000_000), 16, 50)],
        ["float32", "float64"],
    )  # fmt: skip
    param_names = ["backend", "shape (N, D, K)", "dtype"]

    def setup(self, backend, shape, dtype):
        n, d, k = shape
        self.X = blobs(n, d, dtype=dtype)[0]
        self.C = centroids_from(n, d, k, dtype=dtype)
        segone.assign(self.X[:1000], self.C, backend=backend, n_threads=THREADS)  # JIT warm-up

    def time_assign(self, backend, shape, dtype):
        segone.assign(self.X, self.C, backend=backend, n_threads=THREADS)

    def time_assign_margin(self, backend, shape, dtype):
        segone.assign(self.X, self.C, margin=True, backend=backend, n_threads=THREADS)

    def peakmem_assign(self, backend, shape, dtype):
        segone.assign(self.X, self.C, backend=backend, n_threads=THREADS)


class NumbaFirstCall:
    """What a user waits for on the first call in a fresh process (no JIT cache)."""

    timeout = 300

    def track_first_call_seconds(self):
        code = (
            "import time, numpy as np, segone; X = np.ones((100, 4), np.float32); "
            "t = time.perf_counter(); segone.assign(X, X[:3], backend='numba'); "
            "print(time.perf_counter() - t)"
        )
        import tempfile

        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1])

    track_first_call_seconds.unit = "seconds"
