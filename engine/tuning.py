"""How many segments?  A fast sweep over k, its quality columns, and an automatic choice.

The module ``segone.tuning`` (it was ``segone.sweep``, a name now held by the
function alone: ``segone.sweep(X)``).  :func:`sweep` fits k-means for every k of a range and measures each fit:

* ``inertia``: the sum of squared distances to the nearest centroid over
  **all** the rows (float64);
* ``silhouette``: the mean silhouette of a documented uniform sample of
  ``silhouette_sample`` rows (distances between the rows of that sample, as
  ``sklearn.metrics.silhouette_score(X, labels, sample_size=...)``), with its
  standard error ``silhouette_se`` (delete-a-group jackknife over 10 groups of
  those rows, see :func:`silhouette_multi`);
* ``calinski_harabasz`` and ``davies_bouldin``: over **all** the rows, from
  per-segment counts, sums, sums of squares and sums of distances to the
  segment means (:class:`SweepStats`, a mergeable state: never a pairwise
  matrix); for the same labels they equal ``sklearn.metrics``' values;
* ``stability``: the mean adjusted Rand index between two fits on the two
  halves of a random split of (a sample of) the data, compared on the same
  rows, over ``n_resamples`` splits, with its spread ``stability_std``;
* ``gaussian_gap``: ``log(W_ref / W)``, how much lower the inertia per row of
  the fit is than that of the same fit on a single Gaussian with the data's
  mean and covariance (the null of "no cluster structure");
* ``min_share`` and ``empty_segments``: the smallest segment's share of the
  rows and the segments left without a member.

Then :func:`choose_k` applies the rule of :data:`RULE` (written out in its
docstring) and says why.

How it is fast: every fit runs on one uniform sample of at most
``sample_size`` rows held in memory (the Segmenter's compiled mini-batch and
Lloyd kernels), the k-means++ seeding of every k comes from one shared greedy
run per initialisation (the first k centres of a k-means++ seeding are a
k-means++ seeding for k), the silhouettes of every k share one distance matrix
of the silhouette sample, and the full data are read in exactly two rounds
whatever the number of k: one round of :class:`~segone.segment.PartialSums`
for every k (inertia and the segment means) and one round of
:class:`SweepStats` for every k (Calinski-Harabasz, Davies-Bouldin).  Each
round is one ``engine.map`` over the parts and one ``engine.reduce``, so
:func:`sweep_parts` runs unchanged on the local engine or on Dask.
"""

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from segone._backend import get_kernels, resolve_backend
from segone._state import State, array_from_data, array_to_data
from segone._threads import effective_n_threads, threads_for_work
from segone._validation import (
    check_finite,
    check_float,
    check_int,
    check_matrix,
    check_n_clusters,
    check_sample_size,
    default_sample_size,
    random_seed,
)
from segone.assignment import assign
from segone.errors import ParameterError
from segone.segment import PartialSums, Segmenter, kmeans_plusplus

DEFAULT_K_MIN = 2
DEFAULT_K_MAX = 20
DEFAULT_SILHOUETTE_SAMPLE = 4_000
DEFAULT_STABILITY_SAMPLE = 20_000
DEFAULT_N_RESAMPLES = 3
#: segments used by :func:`auto_clusters` when the rule finds no cluster structure (``segone run``'s default)
DEFAULT_FALLBACK_K = 8

#: The automatic choice's thresholds (see :func:`choose_k`).
RULE = {
    "tolerance": 0.02,
    "min_stability": 0.80,
    "min_silhouette": 0.25,
    "min_gaussian_gap": 0.10,
}

# below this many rows the sample-level kernels run on one thread
_SMALL_ROWS = 50_000


# ----------------------------------------------------------------------------- mergeable statistics
class SweepStats(State):
    """Mergeable per-segment statistics of one labelling: Calinski-Harabasz and Davies-Bouldin over all rows.

    For ``k`` segments of rows with ``d`` features the state holds, per
    segment, the weighted count, the float64 sums of ``x - shift``, the sums of
    ``||x - shift||^2``, the sums of the Euclidean distances ``||x - means_j||``
    to given reference means (when ``means`` is given) and the inertia: the
    sum of squared distances to the centroids the rows were assigned with
    (:meth:`of`), or to ``means`` (:meth:`of_labels`; 0 without ``means``).
    ``shift`` (one point, the same for every piece; the data's mean is a
    good one) keeps the sums of squares well conditioned.  States of disjoint pieces add up to the state of their
    union; ``shift`` and ``means`` must be the same.

    With ``means`` the member means of the labelling (what a first round of
    :class:`~segone.segment.PartialSums` gives), :meth:`finish` returns
    exactly ``sklearn.metrics.calinski_harabasz_score`` and
    ``davies_bouldin_score`` of those labels (segments without a member are
    left out, as scikit-learn only sees the labels present).  Without
    ``means``, Davies-Bouldin is NaN.
    """

    kind = "sweep_stats"

    def __init__(self, shift, means, counts, sums, sumsq, dist, inertia):
        self.shift = np.asarray(shift, dtype=np.float64)
        self.means = None if means is None else np.asarray(means, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.float64)
        self.sums = np.asarray(sums, dtype=np.float64)
        self.sumsq = np.asarray(sumsq, dtype=np.float64)
        self.dist = None if dist is None else np.asarray(dist, dtype=np.float64)
        self.inertia = float(inertia)

    @property
    def k(self):
        return self.counts.shape[0]

    @classmethod
    def empty(cls, k, d, *, shift=None, means=None):
        shift = np.zeros(d) if shift is None else shift
        return cls(shift, means, np.zeros(k), np.zeros((k, d)), np.zeros(k), None if means is None else np.zeros(k),
                   0.0)  # fmt: skip

    @classmethod
    def of(cls, X, centers, *, means=None, shift=None, backend="auto", n_threads=None):
        """The state of rows ``X`` labelled by their nearest row of ``centers`` (the compiled kernels)."""
        X = check_matrix(X, "X")
        centers = np.ascontiguousarray(centers, dtype=X.dtype)
        k, d = centers.shape
        _check_shift_means(shift, means, k, X.shape[1])
        if X.shape[0] == 0:
            return cls.empty(k, d, shift=shift, means=means)
        return _stats_of(X, [centers], [means], shift, backend, n_threads)[0]

    @classmethod
    def of_labels(cls, X, labels, k, *, means=None, shift=None):
        """The state of rows ``X`` with given ``labels`` in ``0..k-1`` (any labelling; no kernel)."""
        X = check_matrix(X, "X")
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],):
            raise ParameterError(f"labels has shape {labels.shape}, expected ({X.shape[0]},): one label per row.")
        k = check_int(k, "k", low=1)
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ParameterError(f"labels must lie in 0..{k - 1}, got values from {labels.min()} to {labels.max()}.")
        d = X.shape[1]
        _check_shift_means(shift, means, k, d)
        shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
        counts, sums, sumsq, dist, inertia = _accumulate(X, labels, k, shift, means, True)
        if means is None:
            inertia = 0.0
        return cls(shift, means, counts, sums, sumsq, dist, inertia)

    def merge(self, other):
        self._check_same(other, "shift")
        if self.sums.shape != other.sums.shape:
            raise ParameterError(f"cannot merge sweep statistics of shapes {self.sums.shape} and {other.sums.shape}.")
        if (self.means is None) != (other.means is None) or (
            self.means is not None and not np.array_equal(self.means, other.means)
        ):
            raise ParameterError("cannot merge sweep statistics measured against different reference means.")
        return SweepStats(
            self.shift, self.means, self.counts + other.counts, self.sums + other.sums, self.sumsq + other.sumsq,
            None if self.dist is None else self.dist + other.dist, self.inertia + other.inertia,
        )  # fmt: skip

    def within(self):
        """Within-segment sum of squares around the member means (float64)."""
        nz = self.counts > 0
        w = self.sumsq[nz] - (self.sums[nz] ** 2).sum(1) / self.counts[nz]
        return float(np.maximum(w, 0.0).sum())

    def finish(self):
        """``dict(n, k, counts, inertia, within, between, calinski_harabasz, davies_bouldin)``."""
        nz = self.counts > 0
        n = float(self.counts.sum())
        k_eff = int(nz.sum())
        cnt = self.counts[nz]
        means = self.sums[nz] / cnt[:, None]  # shifted coordinates
        grand = self.sums[nz].sum(0) / n if n > 0 else np.zeros(self.sums.shape[1])
        between = float((cnt * ((means - grand) ** 2).sum(1)).sum())
        within = self.within()
        if k_eff < 2 or n <= k_eff:
            ch = db = math.nan
        else:
            ch = 1.0 if within == 0.0 else between * (n - k_eff) / (within * (k_eff - 1.0))
            db = math.nan
            if self.dist is not None:
                intra = self.dist[nz] / cnt
                cd = np.sqrt(((means[:, None, :] - means[None, :, :]) ** 2).sum(2))
                if np.allclose(intra, 0) or np.allclose(cd, 0):
                    db = 0.0
                else:
                    cd[cd == 0] = np.inf
                    db = float(np.mean(np.max((intra[:, None] + intra[None, :]) / cd, axis=1)))
        return {
            "n": n, "k": self.k, "counts": self.counts, "inertia": self.inertia, "within": within,
            "between": between, "calinski_harabasz": float(ch), "davies_bouldin": float(db),
        }  # fmt: skip

    def _data(self):
        return {
            "shift": array_to_data(self.shift),
            "means": None if self.means is None else array_to_data(self.means),
            "counts": array_to_data(self.counts),
            "sums": array_to_data(self.sums),
            "sumsq": array_to_data(self.sumsq),
            "dist": None if self.dist is None else array_to_data(self.dist),
            "inertia": self.inertia,
        }

    @classmethod
    def _from_data(cls, d):
        def arr(name):
            return None if d[name] is None else array_from_data(d[name], name)

        return cls(arr("shift"), arr("means"), arr("counts"), arr("sums"), arr("sumsq"), arr("dist"), d["inertia"])


class SweepRound(State):
    """One round of the sweep over a piece: one state per k (:class:`PartialSums` or :class:`SweepStats`).

    Merges k by k, so a round over many pieces is one ``engine.reduce``.
    """

    kind = "sweep_round"

    def __init__(self, states):
        self.states = tuple(states)

    def merge(self, other):
        if type(other) is not type(self) or len(other.states) != len(self.states):
            raise ParameterError("cannot merge sweep rounds over different numbers of k.")
        return SweepRound(a.merge(b) for a, b in zip(self.states, other.states))

    def finish(self):
        return self.states

    def _data(self):
        return {"states": [s.to_dict() for s in self.states]}

    @classmethod
    def _from_data(cls, d):
        kinds = {PartialSums.kind: PartialSums, SweepStats.kind: SweepStats}
        return cls(kinds[s["kind"]].from_dict(s) for s in d["states"])


def _check_shift_means(shift, means, k, d):
    if shift is not None and np.shape(shift) != (d,):
        raise ParameterError(f"shift has shape {np.shape(shift)}, expected ({d},): one value per feature.")
    if means is not None and np.shape(means) != (k, d):
        raise ParameterError(f"means has shape {np.shape(means)}, expected (k, d) = ({k}, {d}).")


def _labels(X, C, backend, nt):
    """Nearest-centroid labels (the compiled assign kernel); NaN / inf rows raise naming them."""
    return assign(X, np.ascontiguousarray(C, dtype=X.dtype), backend=backend, n_threads=nt).labels


def _inertia(X, C, backend, nt):
    """Sum of squared distances to the nearest centroid, float64 (the partial-sums kernel)."""
    return PartialSums.of(X, C, backend=backend, n_threads=nt).inertia


def _accumulate(X, labels, k, shift, means, want_sums, backend="auto", n_threads=None):
    """(counts, sums, sumsq, dist, sq. distance to the means) of rows X with ``labels``, all in float64.

    ``sums`` and ``sumsq`` are of ``x - shift``; ``dist`` (None without
    ``means``) sums ``||x - means_label||``.  Counts and sums are only
    accumulated with ``want_sums`` (else zeros).  One fused pass of the
    compiled ``sweep_accumulate`` kernel (the "sweep" kernel family).
    """
    d = X.shape[1]
    counts, sums, sumsq = np.zeros(k), np.zeros((k, d)), np.zeros(k)
    dist = None if means is None else np.zeros(k)
    Ms = np.zeros((k, d)) if means is None else np.ascontiguousarray(np.asarray(means, dtype=np.float64) - shift)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    tot = get_kernels(backend, "sweep").sweep_accumulate(X, labels, shift, Ms, means is not None, want_sums, counts,
                                                        sums, sumsq, np.zeros(k) if dist is None else dist,
                                                        effective_n_threads(n_threads))  # fmt: skip
    return counts, sums, sumsq, dist, float(tot)


def _stats_of(X, centers_list, means_list, shift, backend, n_threads):
    """SweepStats of one piece for every centroid set: labels and distances from the compiled assign
    kernel, then counts, sums, sums of squares and sums of distances to the means in one fused pass."""
    d = X.shape[1]
    shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
    out = []
    for C, M in zip(centers_list, means_list):
        res = assign(X, np.ascontiguousarray(C, dtype=X.dtype), backend=backend, n_threads=n_threads)
        counts, sums, sumsq, dist, _ = _accumulate(X, res.labels, C.shape[0], shift, M, True, backend, n_threads)
        out.append(SweepStats(shift, M, counts, sums, sumsq, dist, float(res.distance.sum(dtype=np.float64))))
    return out


def sums_piece(X, *, centers, backend="auto", n_threads=None):
    """Round 1 over one piece of rows: the :class:`PartialSums` of every centroid set in ``centers``."""
    X = np.ascontiguousarray(X)
    return SweepRound(
        PartialSums.of(X, C, backend=backend, n_threads=n_threads) for C in centers
    )  # fmt: skip


def stats_piece(X, *, centers, means, shift, backend="auto", n_threads=None):
    """Round 2 over one piece of rows: the :class:`SweepStats` of every centroid set (labels by ``centers``)."""
    X = np.ascontiguousarray(X)
    if X.shape[0] == 0:
        return SweepRound(SweepStats.empty(C.shape[0], C.shape[1], shift=shift, means=M)
                          for C, M in zip(centers, means))  # fmt: skip
    return SweepRound(_stats_of(X, centers, means, shift, backend, n_threads))


# ----------------------------------------------------------------------------- silhouette on a sample
def _silhouettes(t, sizes, own):
    """Per-row silhouettes from the sums of distances ``t`` (rows x k) to every segment of ``sizes`` members."""
    r = np.arange(t.shape[0])
    n_own = sizes[own]
    a = t[r, own] / np.maximum(n_own - 1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_other = t / sizes[None, :]
    mean_other[:, sizes <= 0] = np.inf
    mean_other[r, own] = np.inf
    b = mean_other.min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sil = (b - a) / np.maximum(a, b)
    sil[(n_own <= 1) | ~np.isfinite(sil)] = 0.0
    return sil


def silhouette_multi(S, labelings, *, n_groups=10, block=512):
    """Silhouette of the rows ``S`` under each labelling (a list of ``(labels, k)``), with standard errors.

    Same definition as ``sklearn.metrics.silhouette_score`` on these rows (a
    row alone in its segment scores 0).  One float64 distance matrix of ``S``
    (in row blocks) is shared by every labelling: per block, the sums of
    distances to every segment of every labelling are one matrix product with
    the stacked one-hot matrix.

    The standard error is the delete-a-group jackknife over ``n_groups``
    groups of rows (row ``i`` is in group ``i % n_groups``; the rows are a
    uniform sample in random order): it accounts both for which rows are
    scored and for which rows the mean distances are measured against, which
    the naive ``std / sqrt(m)`` of the per-row values does not (it is
    too small by a factor of about 1.5 on clustered data).

    Returns ``(values, standard_errors)``, two float64 arrays (one per labelling).
    """
    S = np.asarray(S, dtype=np.float64)
    m = S.shape[0]
    G = max(2, min(int(n_groups), m))
    # rows in group order, so that every group is a contiguous block of columns
    order = np.argsort(np.arange(m) % G, kind="stable")
    S = S[order]
    grp = (np.arange(m) % G)[order]
    bounds = np.searchsorted(grp, np.arange(G + 1))
    ks = [int(k) for _, k in labelings]
    offs = np.cumsum([0] + ks)
    H = np.zeros((m, offs[-1]), dtype=np.float32)
    for (lab, _), o in zip(labelings, offs):
        H[np.arange(m), o + np.asarray(lab)[order]] = 1.0
    sizes = H.sum(0, dtype=np.float64)
    sizes_g = np.stack([H[bounds[g] : bounds[g + 1]].sum(0, dtype=np.float64) for g in range(G)])  # (G, sum k)
    sn = (S * S).sum(1)
    # sums of distances from every row to the members of group g of every segment; float32 products
    # (relative error ~1e-6, far below the sampling error)
    Tg = np.zeros((G, m, offs[-1]))
    for s in range(0, m, block):
        e = min(m, s + block)
        D = np.sqrt(np.maximum(sn[s:e, None] - 2.0 * S[s:e] @ S.T + sn[None, :], 0.0))
        D[np.arange(e - s), np.arange(s, e)] = 0.0
        D = D.astype(np.float32)
        for g in range(G):
            Tg[g, s:e] = D[:, bounds[g] : bounds[g + 1]] @ H[bounds[g] : bounds[g + 1]]
    T = Tg.sum(0)
    values, ses = np.empty(len(ks)), np.empty(len(ks))
    for i, ((lab, k), o) in enumerate(zip(labelings, offs)):
        lab = np.asarray(lab)[order]
        sl = slice(o, o + k)
        values[i] = _silhouettes(T[:, sl], sizes[sl], lab).mean()
        theta = np.empty(G)
        for g in range(G):
            keep = grp != g
            theta[g] = _silhouettes((T[:, sl] - Tg[g, :, sl])[keep], sizes[sl] - sizes_g[g, sl], lab[keep]).mean()
        ses[i] = math.sqrt((G - 1) / G * float(((theta - theta.mean()) ** 2).sum()))
    return values, ses


# ----------------------------------------------------------------------------- result and rule
@dataclass
class SweepResult:
    """What :func:`sweep` found.

    Attributes
    ----------
    table : pyarrow.Table
        One row per k: ``k``, ``inertia`` (all rows), ``silhouette``,
        ``silhouette_se``, ``calinski_harabasz``, ``davies_bouldin``,
        ``stability``, ``stability_std``, ``gaussian_gap``, ``min_share``,
        ``empty_segments`` and ``chosen`` (the row of ``best_k``).
    best_k : int or None
        The automatic choice; None when the rule finds no cluster structure.
    reason : str
        Why ``best_k`` is what it is, in one sentence.
    rule : dict
        The thresholds the choice used (:data:`RULE` unless overridden).
    centers : dict
        ``k -> (k, n_features)`` centroids of every fit (the data's dtype).
    n_rows, sample_rows, silhouette_rows, stability_rows : int
        Rows of the data, of the fit sample, of the silhouette sample, and of
        the sample split in halves for the stability.
    n_resamples : int
    timings_s : dict
    constant : bool
        True when every row of the sample is the same point (nothing was fitted).
    """

    table: object
    best_k: int | None
    reason: str
    rule: dict
    centers: dict = field(repr=False)
    n_rows: int = 0
    sample_rows: int = 0
    silhouette_rows: int = 0
    stability_rows: int = 0
    n_resamples: int = 0
    timings_s: dict = field(default_factory=dict, repr=False)
    constant: bool = False

    @property
    def structure(self):
        """True when the rule found cluster structure (``best_k`` is not None)."""
        return self.best_k is not None

    def labels(self, X, k=None, *, backend="auto", n_threads=None):
        """Segment of every row of X under the fit at ``k`` (default ``best_k``), int32."""
        k = self.best_k if k is None else k
        if k not in self.centers:
            raise ParameterError(
                f"k={k!r} was not swept; choose one of {sorted(self.centers)}"
                + (" (best_k is None: the rule found no cluster structure)." if k is None else ".")
            )
        return assign(X, self.centers[k], backend=backend, n_threads=n_threads).labels

    def to_dict(self):
        """Plain JSON-safe data for run.json: the rule, the choice, the reason and the table's rows."""
        rows = []
        for r in self.table.to_pylist():
            rows.append({c: (None if isinstance(v, float) and not math.isfinite(v) else v) for c, v in r.items()})
        return {
            "best_k": self.best_k, "structure": self.structure, "reason": self.reason, "rule": dict(self.rule),
            "n_rows": self.n_rows, "sample_rows": self.sample_rows, "silhouette_rows": self.silhouette_rows,
            "stability_rows": self.stability_rows, "n_resamples": self.n_resamples, "constant": self.constant,
            "timings_s": dict(self.timings_s), "table": rows,
        }  # fmt: skip


def choose_k(table, *, tolerance=None, min_stability=None, min_silhouette=None, min_gaussian_gap=None):
    """The automatic choice of the number of segments: ``(best_k or None, reason)``.

    The rule (thresholds in :data:`RULE`):

    1. A k is **eligible** when its fit is reproducible and really beats a
       single Gaussian: ``stability >= min_stability`` (0.80: the mean adjusted
       Rand index between fits on the two halves of random splits),
       ``gaussian_gap >= min_gaussian_gap`` (0.10: its inertia per row is at
       least 10% lower, in log terms, than the same fit on a single Gaussian
       with the data's mean and covariance) and no segment is empty.
    2. If no k is eligible, or the best silhouette among the eligible k is
       below ``min_silhouette`` (0.25, Kaufman and Rousseeuw's "no substantial
       structure"), the answer is **no cluster structure**: ``best_k`` is
       None and the reason says which test failed.  Segments are not
       invented: a caller that needs a number falls back to its own
       documented default and says so.
    3. Otherwise ``best_k`` is the **smallest** eligible k whose silhouette is
       within ``tolerance`` (0.02) of the best eligible silhouette: when
       several k fit about as well, the simplest segmentation wins.

    On a single Gaussian (any covariance) the k-means fits are either unstable
    or no better than on the Gaussian null, so ``best_k`` is None.
    """
    rule = dict(RULE)
    for name, v in (("tolerance", tolerance), ("min_stability", min_stability), ("min_silhouette", min_silhouette),
                    ("min_gaussian_gap", min_gaussian_gap)):  # fmt: skip
        if v is not None:
            rule[name] = check_float(v, name)
    cols = {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64)
            for c in ("k", "silhouette", "stability", "gaussian_gap", "empty_segments")}  # fmt: skip
    ks = cols["k"].astype(int)
    sil = cols["silhouette"]
    stab = np.nan_to_num(cols["stability"], nan=-1.0)
    gap = np.nan_to_num(cols["gaussian_gap"], nan=-np.inf)
    ok_empty = cols["empty_segments"] == 0
    ok_stab = stab >= rule["min_stability"]
    ok_gap = gap >= rule["min_gaussian_gap"]
    eligible = ok_empty & ok_stab & ok_gap & np.isfinite(sil)
    if not eligible.any():
        if not np.isfinite(cols["stability"]).any():
            why = "the stability was not measured (n_resamples=0), and the rule needs it"
        elif not ok_empty.any():
            why = "every fit left segments empty (fewer distinct rows than segments)"
        elif not (ok_stab & ok_empty).any():
            why = (f"no k gives a stable segmentation (best stability {np.max(stab):.2f} < "
                   f"{rule['min_stability']:.2f} at k={ks[int(np.argmax(stab))]})")  # fmt: skip
        else:
            cand = ok_stab & ok_empty
            j = int(np.argmax(np.where(cand, gap, -np.inf)))
            why = (f"no stable k fits the data better than a single Gaussian with the same covariance "
                   f"(best gaussian_gap {gap[j]:.3f} < {rule['min_gaussian_gap']:.2f} at k={ks[j]})")  # fmt: skip
        return None, f"no cluster structure: {why}."
    best = float(np.max(sil[eligible]))
    j_best = int(np.flatnonzero(eligible & (sil == best))[0])
    if best < rule["min_silhouette"]:
        return None, (f"no cluster structure: the best silhouette of a stable k is {best:.3f} at k={ks[j_best]}, "
                      f"below {rule['min_silhouette']:.2f}.")  # fmt: skip
    pick = int(np.flatnonzero(eligible & (sil >= best - rule["tolerance"]))[0])
    k = int(ks[pick])
    if pick == j_best:
        reason = (f"k={k} has the best silhouette ({sil[pick]:.3f}) of the stable k "
                  f"(stability {stab[pick]:.2f}, gaussian_gap {gap[pick]:.2f}).")  # fmt: skip
    else:
        reason = (f"k={k} is the smallest stable k whose silhouette ({sil[pick]:.3f}) is within "
                  f"{rule['tolerance']:.2f} of the best ({best:.3f} at k={ks[j_best]}); "
                  f"stability {stab[pick]:.2f}, gaussian_gap {gap[pick]:.2f}.")  # fmt: skip
    return k, reason


def auto_clusters(result, fallback=DEFAULT_FALLBACK_K):
    """The number of segments of ``n_clusters="auto"``: ``(k, record for run.json)``.

    ``k`` is ``result.best_k``, or ``fallback`` (default 8, ``segone run``'s
    default, clamped to the swept range) when the rule found no cluster
    structure, or 1 when every row is the same point; the record is :meth:`SweepResult.to_dict` plus ``clusters``
    (the k used), ``fallback`` (True when the default was used) and ``note``
    (one sentence saying so).
    """
    fallback = check_int(fallback, "fallback", low=1)
    rec = result.to_dict()
    if result.best_k is not None:
        return result.best_k, {**rec, "clusters": result.best_k, "fallback": False,
                               "note": f"n_clusters=auto chose k={result.best_k}: {result.reason}"}  # fmt: skip
    if result.constant:
        return 1, {**rec, "clusters": 1, "fallback": True,
                   "note": f"n_clusters=auto: {result.reason} One segment holds every customer."}  # fmt: skip
    ks = [int(k) for k in result.table.column("k").to_pylist()]
    k = min(max(fallback, ks[0]), ks[-1]) if ks else fallback
    note = (f"n_clusters=auto found no cluster structure ({result.reason}); fell back to the default of {k} segments, "
            "which then describe ranges of a continuum rather than natural groups.")  # fmt: skip
    return k, {**rec, "clusters": k, "fallback": True, "note": note}


# ----------------------------------------------------------------------------- the sweep
def resolve_ks(ks=None, k_min=None, k_max=None):
    """The sorted distinct k of a sweep, validated: ``ks``, or ``range(k_min, k_max + 1)`` (default 2..20)."""
    if ks is not None and (k_min is not None or k_max is not None):
        raise ParameterError("give either ks or k_min / k_max, not both (ks=range(k_min, k_max + 1)).")
    if ks is None:
        k_min = DEFAULT_K_MIN if k_min is None else check_int(k_min, "k_min")
        k_max = DEFAULT_K_MAX if k_max is None else check_int(k_max, "k_max")
        if k_min < 2:
            raise ParameterError(
                f"k_min must be >= 2, got {k_min}: the sweep compares segmentations; k=1 (no structure) is "
                "what the automatic choice answers by itself when no k >= 2 is convincing."
            )
        if k_max <= k_min:
            raise ParameterError(
                f"k_max={k_max} must be larger than k_min={k_min}: a sweep needs at least two values of k to compare "
                f"(for a fixed number of segments fit segone.Segmenter(n_clusters={k_min}))."
            )
        ks = range(k_min, k_max + 1)
    try:
        vals = sorted({check_int(k, "every k in ks") for k in ks})
    except TypeError:
        raise ParameterError(f"ks must be an iterable of integers, got {ks!r}.") from None
    if not vals:
        raise ParameterError("ks is empty; give at least two numbers of segments, e.g. ks=range(2, 21).")
    if vals[0] < 2:
        raise ParameterError(
            f"every k must be >= 2, got {vals[0]}: k=1 (no structure) is what the automatic choice answers "
            "by itself when no k >= 2 is convincing."
        )
    if len(vals) < 2:
        raise ParameterError(
            f"ks holds one value ({vals[0]}); a sweep needs at least two values of k to compare "
            f"(for a fixed number of segments fit segone.Segmenter(n_clusters={vals[0]}))."
        )
    return vals


def check_sweep_parameters(ks=None, k_min=None, k_max=None, *, sample_size=None,
                           silhouette_sample=DEFAULT_SILHOUETTE_SAMPLE, stability_sample=DEFAULT_STABILITY_SAMPLE,
                           n_resamples=DEFAULT_N_RESAMPLES, n_init=3, refine=5, rule=None):  # fmt: skip
    """Every parameter of :func:`sweep` checked before the data: ``(ks, sample_size, silhouette_sample,
    stability_sample, n_resamples, n_init, refine, rule)`` resolved (``sample_size`` None: the default for k_max;
    ``rule``: :data:`RULE` with the overrides; an unknown key is named).

    Examples
    --------
    >>> ks, sample_size, *_ = check_sweep_parameters(k_max=6)
    >>> ks, sample_size
    ([2, 3, 4, 5, 6], 131072)
    """
    ks = resolve_ks(ks, k_min, k_max)
    sample_size = check_sample_size(sample_size)
    sample_size = default_sample_size(ks[-1]) if sample_size is None else sample_size
    silhouette_sample = check_int(silhouette_sample, "silhouette_sample", low=2)
    stability_sample = check_int(stability_sample, "stability_sample", low=2)
    n_resamples = check_int(n_resamples, "n_resamples", low=0)
    n_init = check_int(n_init, "n_init", low=1)
    refine = check_int(refine, "refine", low=0)
    if rule is not None and not isinstance(rule, dict):
        raise ParameterError(f"rule must be a dict of overrides of segone.tuning.RULE, got {rule!r:.80}.")
    unknown = set(rule or {}) - set(RULE)
    if unknown:
        raise ParameterError(f"rule has unknown keys {sorted(unknown)}; valid keys: {', '.join(sorted(RULE))}.")
    rule = dict(RULE, **(rule or {}))
    return ks, sample_size, silhouette_sample, stability_sample, n_resamples, n_init, refine, rule


def sweep(
    X,
    ks=None,
    *,
    k_min=None,
    k_max=None,
    random_state=0,
    sample_size=None,
    silhouette_sample=DEFAULT_SILHOUETTE_SAMPLE,
    stability_sample=DEFAULT_STABILITY_SAMPLE,
    n_resamples=DEFAULT_N_RESAMPLES,
    n_init=3,
    refine=5,
    rule=None,
    backend="auto",
    n_threads=None,
    verbose=False,
):
    """Fit k-means for every k, measure every fit, and choose the number of segments.

    Parameters
    ----------
    X : array-like (n_samples, n_features), float32 / float64, or an Arrow table
        The scored features (e.g. ``segone.FeatureScorer().fit_transform(profiles)``).
    ks : iterable of int, optional
        The numbers of segments to try (each >= 2, at least two values);
        default ``range(k_min, k_max + 1)``.
    k_min, k_max : int, optional
        The bounds of the range when ``ks`` is not given (default 2 and 20).
    random_state : int, RandomState, Generator or None
        One seed for everything (samples, seedings, splits).
    sample_size : int or None
        The fits run on a uniform sample of at most this many rows (every row
        when there are fewer); inertia, Calinski-Harabasz and Davies-Bouldin
        are then measured on **all** rows.  None: segone's one default,
        ``max(131072, 128 * k_max)``.
    silhouette_sample : int, default 4,000
        Rows of the uniform sample the silhouette is computed on (its
        standard error is reported).
    stability_sample : int, default 20,000
        Rows of the uniform sample split in random halves for the stability.
    n_resamples : int, default 3
        Random splits behind the stability (0 skips it: the column is NaN and
        no k is eligible for the automatic choice).
    n_init : int, default 3
        k-means++ seedings tried per fit (each improved by Lloyd iterations on
        the seeding sample; the best is kept).
    refine : int, default 5
        Lloyd passes over the fit sample after the mini-batch phase (stops
        early when the centroids no longer move).
    rule : dict, optional
        Overrides of :data:`RULE` (see :func:`choose_k`).
    backend, n_threads :
        Kernel backend and threads (see :func:`segone.assign`).
    verbose : bool
        Print progress.

    Returns
    -------
    SweepResult
        ``table`` (one row per k), ``best_k`` (None when there is no cluster
        structure), ``reason``, ``centers``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.datasets import make_blobs
    >>> from segone import sweep
    >>> X, _ = make_blobs(3000, n_features=8, centers=4, random_state=0)
    >>> res = sweep(X.astype(np.float32), k_max=8, silhouette_sample=1000)
    >>> res.best_k
    4
    """
    from segone._engine import LocalEngine

    # every parameter before the data (one helper per rule)
    ks, sample_size, *_ = check_sweep_parameters(ks, k_min, k_max, sample_size=sample_size,
                                                 silhouette_sample=silhouette_sample,
                                                 stability_sample=stability_sample, n_resamples=n_resamples,
                                                 n_init=n_init, refine=refine, rule=rule)  # fmt: skip
    seed = random_seed(random_state)
    resolve_backend(backend, "partial_sums")
    X = check_matrix(X, "X", min_rows=1)
    n = X.shape[0]
    if n > sample_size:
        rng = np.random.default_rng([seed, 0])
        sample = np.ascontiguousarray(X[np.sort(rng.choice(n, size=sample_size, replace=False))])
    else:
        sample = X
    return sweep_parts(
        LocalEngine(n_threads), [X], sample, ks, n_rows=n, random_state=seed,
        sample_size=sample_size, silhouette_sample=silhouette_sample, stability_sample=stability_sample,
        n_resamples=n_resamples, n_init=n_init, refine=refine, rule=rule, backend=backend, n_threads=n_threads,
        verbose=verbose,
    )  # fmt: skip


def sweep_parts(
    engine,
    X_parts,
    sample,
    ks=None,
    *,
    k_min=None,
    k_max=None,
    n_rows=None,
    random_state=0,
    sample_size=None,
    silhouette_sample=DEFAULT_SILHOUETTE_SAMPLE,
    stability_sample=DEFAULT_STABILITY_SAMPLE,
    n_resamples=DEFAULT_N_RESAMPLES,
    n_init=3,
    refine=5,
    rule=None,
    backend="auto",
    n_threads=None,
    verbose=False,
    log=None,
):
    """:func:`sweep` over an engine's parts: the entry point of the pipeline (local or Dask).

    ``sample`` is the in-memory fit sample (a uniform sample of the rows, in
    a fixed order: the pipeline's customer-hash sample); every fit, the
    silhouette and the stability use it (a uniform subsample of
    ``sample_size`` rows of it when it is larger).  The full-data columns
    come from two rounds over ``X_parts`` (the feature parts of the engine),
    each ``engine.reduce(engine.map(fn, X_parts, ...))``: :func:`sums_piece`
    (inertia and segment means for every k) and :func:`stats_piece`
    (:class:`SweepStats` for every k).  ``n_rows`` (the rows of all parts),
    when given, checks ``k_max`` before any work.  ``log(msg)`` receives
    progress messages (default: printed with ``verbose``).  The other
    parameters are those of :func:`sweep`.
    """
    t_all = time.perf_counter()
    timings = {}
    say = log or ((lambda msg: print(f"[segone.sweep] {msg}", flush=True)) if verbose else (lambda msg: None))
    ks, sample_size, silhouette_sample, stability_sample, n_resamples, n_init, refine, rule = \
        check_sweep_parameters(ks, k_min, k_max, sample_size=sample_size, silhouette_sample=silhouette_sample,
                               stability_sample=stability_sample, n_resamples=n_resamples, n_init=n_init,
                               refine=refine, rule=rule)  # fmt: skip
    resolve_backend(backend, "partial_sums")
    sample = check_matrix(sample, "sample", min_rows=1)
    if n_rows is not None:
        check_n_clusters(ks[-1], check_int(n_rows, "n_rows", low=1), "k_max", "rows")
    seed = random_seed(random_state)
    if sample.shape[0] > sample_size:
        keep = np.sort(np.random.default_rng([seed, 0]).choice(sample.shape[0], size=sample_size, replace=False))
        sample = np.ascontiguousarray(sample[keep])
    check_finite(sample, "sample")
    m = sample.shape[0]
    check_n_clusters(ks[-1], m, "k_max", "rows in the fit sample")
    if 2 * ks[-1] > min(m, stability_sample):
        raise ParameterError(
            f"k_max={ks[-1]} needs at least {2 * ks[-1]} rows in the fit sample and in stability_sample (the "
            f"stability compares fits on two halves of {min(m, stability_sample)} rows); use k_max <= "
            f"{min(m, stability_sample) // 2} or give more rows."
        )

    # a constant sample: nothing to segment (a documented result, not an error)
    shift = sample.mean(axis=0, dtype=np.float64)
    spread = float(((sample.astype(np.float64) - shift) ** 2).sum())
    if spread == 0.0:
        return _no_spread_result(ks, sample, rule, n_rows, timings)

    # 1. fits on the sample: a shared k-means++ seeding per initialisation, then the Segmenter
    t0 = time.perf_counter()
    centers = _fit_all(sample, ks, seed, n_init, refine, backend, n_threads, salt=1)
    timings["fit"] = time.perf_counter() - t0
    say(f"fits for k={ks[0]}..{ks[-1]} on {m} rows in {timings['fit']:.2f}s")

    # 2. silhouette on a uniform sample (one distance matrix for every k)
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 2])
    # random order: the jackknife groups of the standard error are then random
    S = sample[rng.choice(m, size=min(m, silhouette_sample), replace=False)]
    nt_s = _threads_for(S.shape[0], n_threads)
    sil_labels = [_labels(S, centers[k], backend, nt_s) for k in ks]
    sil_values, sil_ses = silhouette_multi(S, list(zip(sil_labels, ks)))
    timings["silhouette"] = time.perf_counter() - t0

    # 3. stability: fits on the two halves of random splits, compared on the silhouette rows
    t0 = time.perf_counter()
    stab_idx = np.sort(rng.choice(m, size=stability_sample, replace=False)) if m > stability_sample else np.arange(m)
    P = sample[stab_idx]
    aris = np.full((len(ks), n_resamples), np.nan)
    for b in range(n_resamples):
        perm = np.random.default_rng([seed, 3, b]).permutation(P.shape[0])
        half = P.shape[0] // 2
        A, B = P[np.sort(perm[:half])], P[np.sort(perm[half : 2 * half])]
        ca = _fit_all(A, ks, seed, n_init, refine, backend, n_threads, salt=(4, b, 0))
        cb = _fit_all(B, ks, seed, n_init, refine, backend, n_threads, salt=(4, b, 1))
        for i, k in enumerate(ks):
            aris[i, b] = _ari(_labels(S, ca[k], backend, nt_s), _labels(S, cb[k], backend, nt_s))
    timings["stability"] = time.perf_counter() - t0

    # 4. the Gaussian null: the same fits on a Gaussian with the stability rows' mean and covariance
    t0 = time.perf_counter()
    G = _gaussian_like(P, np.random.default_rng([seed, 5]))
    cg = _fit_all(G, ks, seed, n_init, refine, backend, n_threads, salt=6)
    nt_p = _threads_for(P.shape[0], n_threads)
    w_ref = np.array([_inertia(G, cg[k], backend, nt_p) / G.shape[0] for k in ks])
    w_dat = np.array([_inertia(P, centers[k], backend, nt_p) / P.shape[0] for k in ks])
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.log(w_ref / w_dat)
    timings["gaussian_null"] = time.perf_counter() - t0

    # 5. two rounds over all the data: segment means and inertia, then the mergeable statistics
    t0 = time.perf_counter()
    cl = [centers[k] for k in ks]
    r1 = engine.reduce(engine.map(sums_piece, X_parts, centers=cl, backend=backend, n_threads=n_threads))
    means = []
    for C, ps in zip(cl, r1.states):
        mu = C.astype(np.float64).copy()
        nz = ps.counts > 0
        mu[nz] = ps.sums[nz] / ps.counts[nz, None]
        means.append(mu)
    r2 = engine.reduce(engine.map(stats_piece, X_parts, centers=cl, means=means, shift=shift, backend=backend,
                                  n_threads=n_threads))  # fmt: skip
    timings["full_passes"] = time.perf_counter() - t0
    fin = [s.finish() for s in r2.states]
    n_total = int(round(fin[0]["n"]))
    say(f"two rounds over {n_total} rows in {timings['full_passes']:.2f}s")

    table = _table(ks, fin, [ps.inertia for ps in r1.states], sil_values, sil_ses, aris, gaps)
    best_k, reason = choose_k(table, **rule)
    table = _with_chosen(table, best_k)
    timings["total"] = time.perf_counter() - t_all
    say(f"best_k={best_k}: {reason}")
    return SweepResult(
        table, best_k, reason, rule, {k: c for k, c in zip(ks, cl)}, n_rows=n_total, sample_rows=m,
        silhouette_rows=int(S.shape[0]), stability_rows=int(P.shape[0]), n_resamples=n_resamples,
        timings_s={k: round(v, 4) for k, v in timings.items()},
    )  # fmt: skip


def _table(ks, fin, inertias, sil, sil_se, aris, gaps):
    import pyarrow as pa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stab = [float(np.nanmean(a)) if np.isfinite(a).any() else math.nan for a in aris]
        stab_sd = [float(np.nanstd(a, ddof=1)) if np.isfinite(a).sum() > 1 else math.nan for a in aris]
    return pa.table({
        "k": pa.array(ks, pa.int32()),
        "inertia": pa.array([float(v) for v in inertias], pa.float64()),
        "silhouette": pa.array([float(v) for v in sil], pa.float64()),
        "silhouette_se": pa.array([float(v) for v in sil_se], pa.float64()),
        "calinski_harabasz": pa.array([f["calinski_harabasz"] for f in fin], pa.float64()),
        "davies_bouldin": pa.array([f["davies_bouldin"] for f in fin], pa.float64()),
        "stability": pa.array(stab, pa.float64()),
        "stability_std": pa.array(stab_sd, pa.float64()),
        "gaussian_gap": pa.array([float(g) for g in gaps], pa.float64()),
        "min_share": pa.array([float(f["counts"].min() / max(f["n"], 1.0)) for f in fin], pa.float64()),
        "empty_segments": pa.array([int((f["counts"] <= 0).sum()) for f in fin], pa.int32()),
    })  # fmt: skip


def _with_chosen(table, best_k):
    import pyarrow as pa

    ks = table.column("k").to_numpy()
    return table.append_column("chosen", pa.array(ks == (best_k if best_k is not None else -1)))


def _no_spread_result(ks, sample, rule, n_rows, timings):
    import pyarrow as pa

    nan = [math.nan] * len(ks)
    table = pa.table({
        "k": pa.array(ks, pa.int32()), "inertia": pa.array([0.0] * len(ks)), "silhouette": pa.array(nan),
        "silhouette_se": pa.array(nan), "calinski_harabasz": pa.array(nan), "davies_bouldin": pa.array(nan),
        "stability": pa.array(nan), "stability_std": pa.array(nan), "gaussian_gap": pa.array(nan),
        "min_share": pa.array(nan), "empty_segments": pa.array([k - 1 for k in ks], pa.int32()),
    })  # fmt: skip
    table = _with_chosen(table, None)
    reason = ("no cluster structure: every row of the sample is the same point (all features constant); "
              "there is nothing to segment.")  # fmt: skip
    return SweepResult(table, None, reason, rule, {}, n_rows=int(n_rows or sample.shape[0]),
                       sample_rows=sample.shape[0], timings_s=timings, constant=True)  # fmt: skip


def _gaussian_like(P, rng):
    """A sample of the Gaussian with P's mean and covariance (as many rows as P, P's dtype)."""
    P64 = P.astype(np.float64)
    mu = P64.mean(0)
    cov = np.cov(P64, rowvar=False).reshape(P.shape[1], P.shape[1])
    lam, V = np.linalg.eigh(cov)
    Z = rng.standard_normal(P.shape) * np.sqrt(np.maximum(lam, 0.0))
    return np.ascontiguousarray(mu + Z @ V.T, dtype=P.dtype)


def _threads_for(rows, n_threads):
    """Kernel threads for ``rows`` rows: one below :data:`_SMALL_ROWS`."""
    return threads_for_work(rows, _SMALL_ROWS, n_threads)


def _fit_all(rows, ks, seed, n_init, refine, backend, n_threads, salt):
    """Centroids of a fit for every k on ``rows``: shared k-means++ seedings, then Segmenter.fit.

    BLAS runs on one thread here: the seeding's products are tiny, and a BLAS
    thread team costs more than they do.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit_all_inner(rows, ks, seed, n_init, refine, backend, n_threads, salt)


def _fit_all_inner(rows, ks, seed, n_init, refine, backend, n_threads, salt):
    salt = salt if isinstance(salt, tuple) else (salt,)
    rng = np.random.default_rng([seed, *salt])
    n = rows.shape[0]
    init_size = min(n, max(3 * 4096, 3 * ks[-1]))
    init_idx = np.sort(rng.choice(n, size=init_size, replace=False)) if init_size < n else np.arange(n)
    Xs = rows[init_idx]
    nt_init = _threads_for(init_size, n_threads)
    nt_fit = _threads_for(n, n_threads)
    # the first k centres of a greedy k-means++ seeding of k_max centres are a k-means++ seeding of k
    seedings = [kmeans_plusplus(Xs, ks[-1], rng) for _ in range(n_init)]
    out = {}
    for k in ks:
        best, best_inertia = None, np.inf
        for idx in seedings:
            c = np.ascontiguousarray(Xs[idx[:k]], dtype=rows.dtype)
            if n_init > 1:  # compare the seedings after a few Lloyd iterations on the seeding sample
                c, inertia = _lloyd(Xs, c, 10, backend, nt_init)
            else:
                inertia = 0.0
            if inertia < best_inertia:
                best, best_inertia = c, inertia
        seg = Segmenter(n_clusters=k, init=best, n_init=1, refine=refine, random_state=int(rng.integers(2**31)),
                        backend=backend, n_threads=nt_fit)  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # empty segments are counted in the table
            seg.fit(rows)
        out[k] = np.ascontiguousarray(seg.cluster_centers_, dtype=rows.dtype)
    return out


def _lloyd(Xs, centers, n_iter, backend, nt):
    """A few Lloyd iterations on a small sample: (centroids, their inertia on the sample)."""
    c = centers
    for _ in range(n_iter):
        ps = PartialSums.of(Xs, c, backend=backend, n_threads=nt)
        new = c.astype(np.float64)
        nz = ps.counts > 0
        new[nz] = ps.sums[nz] / ps.counts[nz, None]
        new = np.ascontiguousarray(new, dtype=c.dtype)
        if np.array_equal(new, c):
            return c, ps.inertia
        c = new
    return c, _inertia(Xs, c, backend, nt)


def _ari(a, b):
    """Adjusted Rand index (Hubert and Arabie) of two labellings, from the contingency table."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    n = a.size
    if n < 2:
        return 1.0
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    table = np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).astype(np.float64)

    def comb2(x):
        return float((x * (x - 1.0) / 2.0).sum())

    sum_ij = comb2(table)
    sum_a = comb2(table.sum(1))
    sum_b = comb2(table.sum(0))
    expected = sum_a * sum_b / (n * (n - 1) / 2.0)
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:
        return 1.0
    return (sum_ij - expected) / (max_index - expected)


__all__ = [
    "DEFAULT_FALLBACK_K",
    "RULE",
    "SweepResult",
    "SweepRound",
    "SweepStats",
    "auto_clusters",
    "choose_k",
    "resolve_ks",
    "silhouette_multi",
    "stats_piece",
    "sums_piece",
    "sweep",
    "sweep_parts",
]

