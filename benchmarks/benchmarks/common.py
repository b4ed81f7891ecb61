"""Shared data for the asv suite.

Sizes are small by default so that ``asv run --quick`` of the whole suite
takes a few minutes; ``SEGONE_BENCH_SCALE=full`` switches to the sizes of
shared/WORKLOADS.md (10M rows, 1M customers) and ``SEGONE_BENCH_SCALE=tiny``
to the sizes of the CI smoke test (tests/test_benchmarks.py).
"""

import functools
import os

import numpy as np

SCALE = os.environ.get("SEGONE_BENCH_SCALE", "small")
if SCALE not in ("tiny", "small", "full"):
    raise ValueError(f"SEGONE_BENCH_SCALE={SCALE!r}: use tiny (CI smoke test), small (default) or full")
FULL = SCALE == "full"
THREADS = int(os.environ.get("SEGONE_BENCH_THREADS", "2"))


def scaled(small, full):
    """Size for the current scale: ``tiny`` is a tenth of ``small`` (CI smoke test)."""
    if SCALE == "tiny":
        return max(small // 10, 2000)
    return full if FULL else small


@functools.lru_cache(maxsize=8)
def blobs(n, d=16, centers=32, seed=0, dtype="float32"):
    """WORKLOADS.md blobs: centers in [-10, 10]^d, spreads linspace(0.5, 2.5),
    equal sizes, shuffled (the same recipe as sklearn.datasets.make_blobs)."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-10, 10, size=(centers, d))
    std = np.linspace(0.5, 2.5, centers)
    lab = rng.integers(0, centers, size=n)
    X = np.empty((n, d), dtype=dtype)
    step = 1 << 20
    for s in range(0, n, step):
        l = lab[s : s + step]
        X[s : s + step] = c[l] + rng.standard_normal((l.size, d)) * std[l, None]
    return X, lab


@functools.lru_cache(maxsize=8)
def centroids_from(n, d, k, seed=1, dtype="float32"):
    X, _ = blobs(n, d, dtype=dtype)
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(X[rng.choice(n, size=k, replace=False)])


def inertia64(X, C, step=1 << 18):
    """The shared inertia: sum of squared distances to the nearest centroid, in float64."""
    C64 = C.astype(np.float64)
    cn = (C64**2).sum(1)
    tot = 0.0
    for s in range(0, X.shape[0], step):
        xb = X[s : s + step].astype(np.float64)
        d = (xb**2).sum(1)[:, None] - 2 * xb @ C64.T + cn[None]
        tot += float(np.maximum(d.min(1), 0).sum())
    return tot


@functools.lru_cache(maxsize=4)
def synth_data(n_customers, seed=0):
    from segone.synth import generate

    return generate(n_customers, seed=seed)
