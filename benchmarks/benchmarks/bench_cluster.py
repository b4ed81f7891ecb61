"""Segmenter (mini-batch k-means) and the partial-sums (refine) pass."""

import numpy as np

import segone

from .common import THREADS, blobs, inertia64, scaled


class Fit:
    params = (["cython", "numba"], [8, 64], [0, 2])
    param_names = ["backend", "K", "refine"]
    timeout = 300

    def setup(self, backend, k, refine):
        self.X, self.y = blobs(scaled(200_000, 10_000_000), 16)
        segone.Segmenter(k, random_state=0, backend=backend, n_threads=THREADS).fit(self.X[:5000])  # warm-up

    def _fit(self, backend, k, refine):
        return segone.Segmenter(k, random_state=0, refine=refine, backend=backend, n_threads=THREADS).fit(self.X)

    def time_fit(self, backend, k, refine):
        self._fit(backend, k, refine)

    def peakmem_fit(self, backend, k, refine):
        self._fit(backend, k, refine)

    def track_inertia(self, backend, k, refine):
        return inertia64(self.X, self._fit(backend, k, refine).cluster_centers_)



class FitQuality:
    """Adjusted Rand index against the 32 true blobs."""

    params = ([0, 2],)
    param_names = ["refine"]

    def setup(self, refine):
        self.X, self.y = blobs(scaled(200_000, 10_000_000), 16)

    def track_ari(self, refine):
        from segone.cli import _adjusted_rand

        seg = segone.Segmenter(32, random_state=0, refine=refine, n_threads=THREADS).fit(self.X)
        return _adjusted_rand(self.y, seg.labels_)


class RefinePass:
    params = (["cython", "numba"], [8, 64])
    param_names = ["backend", "K"]

    def setup(self, backend, k):
        self.X = blobs(scaled(200_000, 10_000_000), 16)[0]
        self.C = np.ascontiguousarray(self.X[:k])
        n, d = self.X.shape
        self.kern = segone._backend.get_kernels(backend)
        self.labels = np.empty(n, np.int32)
        self.sums = np.empty((k, d))
        self.counts = np.empty(k)
        self.kern.partial_sums(self.X[:1000], None, self.C, self.labels[:1000], self.sums, self.counts, THREADS)

    def time_partial_sums(self, backend, k):
        self.kern.partial_sums(self.X, None, self.C, self.labels, self.sums, self.counts, THREADS)
