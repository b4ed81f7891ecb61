"""SWEEP: the sweep over k = 2..20 (segone.sweep), its full-data rounds, and the automatic choice.

The side-by-side comparison with a scikit-learn loop (MiniBatchKMeans and a
sampled silhouette per k) is ``benchmarks/sweep_compare.py``.
"""

import numpy as np

from segone import sweep
from segone.tuning import SweepStats, stats_piece, sums_piece

from .common import THREADS, blobs, scaled

KS = range(2, 21)


class Sweep:
    """The whole sweep on WORKLOADS.md blobs (32 centres, 16 features, float32)."""

    timeout = 600

    def setup(self):
        self.X = blobs(scaled(200_000, 1_000_000), 16)[0]
        sweep(self.X[:5000], ks=range(2, 5), silhouette_sample=500, n_threads=THREADS)  # warm-up (Numba cache)

    def _sweep(self):
        return sweep(self.X, ks=KS, random_state=0, n_threads=THREADS)

    def time_sweep(self):
        self._sweep()

    def peakmem_sweep(self):
        self._sweep()

    def track_silhouette_k20(self):
        return self._sweep().table.column("silhouette")[-1].as_py()


class SweepRounds:
    """The two rounds over all rows for every k: PartialSums (means, inertia), then SweepStats."""

    timeout = 300

    def setup(self):
        self.X = blobs(scaled(200_000, 1_000_000), 16)[0]
        rng = np.random.default_rng(0)
        self.centers = [np.ascontiguousarray(self.X[rng.choice(len(self.X), k, replace=False)]) for k in KS]
        self.means = [c.astype(np.float64) for c in self.centers]
        self.shift = self.X[:10000].mean(0, dtype=np.float64)
        SweepStats.of(self.X[:1000], self.centers[0], means=self.means[0], n_threads=THREADS)  # warm-up

    def time_round_partial_sums(self):
        sums_piece(self.X, centers=self.centers, n_threads=THREADS)

    def time_round_sweep_stats(self):
        stats_piece(self.X, centers=self.centers, means=self.means, shift=self.shift, n_threads=THREADS)


class SweepChoice:
    """The automatic choice on blobs with a known number of well-separated centres."""

    params = ([4, 9],)
    param_names = ["centers"]
    timeout = 300

    def setup(self, centers):
        from sklearn.datasets import make_blobs

        X, _ = make_blobs(scaled(20_000, 200_000), n_features=8, centers=centers, center_box=(-12, 12),
                          random_state=centers)  # fmt: skip
        self.X = X.astype(np.float32)

    def track_best_k(self, centers):
        return sweep(self.X, k_max=12, random_state=1, n_threads=THREADS).best_k
