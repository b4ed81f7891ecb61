"""Tracking between runs: the moves join + migration contingency, and stable-id matching."""

import os
import sys

import numpy as np

from segone.track import Contingency, match_counts, moves_and_contingency

from .common import scaled

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _runs(n, seed=0):
    from track_compare import make_runs

    return make_runs(n, seed=seed)


class Moves:
    """moves_and_contingency on two assignments tables (int64 ids sorted as segone writes them, ~95% shared)."""

    timeout = 300

    def setup(self):
        self.prev, self.new = _runs(scaled(1_000_000, 10_000_000))
        moves_and_contingency(self.prev, self.new, spend="spend")  # JIT (cached on disk) + page faults
        # Dask outputs are sorted per part only: the join then sorts first
        self.shuffled = self.new.take(np.random.default_rng(1).permutation(self.new.num_rows))

    def time_moves_and_contingency(self):
        moves_and_contingency(self.prev, self.new, spend="spend")

    def peakmem_moves_and_contingency(self):
        moves_and_contingency(self.prev, self.new, spend="spend")

    def time_moves_unsorted(self):
        moves_and_contingency(self.prev, self.shuffled, spend="spend")


class ContingencyFigures:
    """Merging per-piece states and the run figures (ARI, PSI) from the counts alone."""

    def setup(self):
        rng = np.random.default_rng(0)
        n = scaled(1_000_000, 10_000_000)
        prev = rng.integers(-1, 32, n)
        new = np.where(rng.random(n) < 0.9, prev, rng.integers(-1, 32, n))
        new[(prev < 0) & (new < 0)] = 0
        self.parts = [Contingency.of_arrays(prev[i::16], new[i::16]) for i in range(16)]

    def time_merge_and_figures(self):
        from segone._state import merge_all

        merge_all(self.parts).figures()


class Matching:
    params = [8, 64, 256]
    param_names = ["k"]

    def setup(self, k):
        rng = np.random.default_rng(0)
        self.overlap = rng.integers(0, 1000, (k, k)) + np.diag(rng.integers(10_000, 20_000, k))
        self.ids = np.arange(k)

    def time_match_counts(self, k):
        match_counts(self.ids, self.overlap)
