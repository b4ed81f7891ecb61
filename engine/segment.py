"""SEGMENT: mini-batch k-means with optional full-data Lloyd refinement.

The estimator follows the scikit-learn API and the meaning of
``sklearn.cluster.MiniBatchKMeans``' parameters where names coincide.  The
heavy work runs in two kernels (Cython or Numba):

* ``assign``: labels / distances / margins, used by ``predict``;
* ``partial_sums``: one pass that labels rows and accumulates per-centroid
  float64 sums, weighted counts and inertia in per-chunk buffers merged in a
  fixed order.

The fit is written as drivers that any engine reuses: the mini-batch phase
runs on rows held in memory (all rows, or a sample), and the refine passes
(:func:`refine_passes`) take a *full pass* callable that returns the
mergeable :class:`PartialSums` of the centroids over all the data, one
kernel call per piece merged by the engine.  ``Segmenter.fit`` is that
sequence over one in-memory array; the pipeline and :mod:`segone.dask` run
the same sequence over partitions (:meth:`Segmenter.fit_passes`).
"""

import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin

from segone._backend import get_kernels, resolve_backend
from segone._state import State, array_from_data, array_to_data
from segone._threads import effective_n_threads, threads_for_work
from segone._validation import (
    check_choice,
    check_estimator_input,
    check_finite,
    check_fitted,
    check_float,
    check_int,
    check_n_clusters,
    check_sample_size,
    check_sample_weight,
    default_sample_size,
    random_seed,
)
from segone.assignment import assign
from segone.errors import DataError, ParameterError, examples
from segone.kernels import _common

STEPS_PER_CALL = 64


def _sq_dists(A, B):
    """Squared distances (len(A), len(B)) in float64 (small inputs only), centred on B's mean (exact at any offset)."""
    A = A.astype(np.float64, copy=False)
    B = B.astype(np.float64, copy=False)
    m = B.mean(axis=0) if B.shape[0] else 0.0
    A, B = A - m, B - m
    d = (A * A).sum(1)[:, None] - 2.0 * A @ B.T + (B * B).sum(1)[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def kmeans_plusplus(X, n_clusters, rng, sample_weight=None, n_local_trials=None):
    """Greedy k-means++ seeding on (a sample of) X; returns row indices.

    At each step ``2 + log(k)`` candidates are drawn with probability
    proportional to the weighted squared distance to the nearest chosen
    centre, and the one that lowers the potential most is kept.  When every
    remaining point coincides with a chosen centre (fewer distinct points than
    clusters), further centres are drawn uniformly among the rows.
    """
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    # centred once in float64 (exact at any offset), squared norms once: each step is one small product
    Xc = X.astype(np.float64)
    Xc -= Xc.mean(axis=0) if n else 0.0
    norms = np.einsum("ij,ij->i", Xc, Xc)

    def dists(rows):
        d = norms[rows][:, None] + norms[None, :] - 2.0 * (Xc[rows] @ Xc.T)
        np.maximum(d, 0.0, out=d)
        return d

    p0 = w / w.sum() if w.sum() > 0 else None
    first = int(rng.choice(n, p=p0))
    idx = [first]
    closest = dists([first])[0]
    pot = float((closest * w).sum())
    for _ in range(1, n_clusters):
        if pot <= 0.0:
            idx.append(int(rng.integers(n)))
            continue
        cum = np.cumsum(closest * w)
        cand = np.searchsorted(cum, rng.random(n_local_trials) * cum[-1], side="right")
        np.minimum(cand, n - 1, out=cand)
        d = dists(cand)
        np.minimum(d, closest[None, :], out=d)
        pots = d @ w
        best = int(np.argmin(pots))
        idx.append(int(cand[best]))
        closest = d[best]
        pot = float(pots[best])
    return np.asarray(idx)


def _full_pass(kern, X, w, centers, nt):
    """One partial-sums pass: (labels, sums, counts, inertia); NaN / inf rows raise naming the rows."""
    n, d = X.shape
    k = centers.shape[0]
    labels = np.empty(n, dtype=np.int32)
    sums = np.empty((k, d), dtype=np.float64)
    counts = np.empty(k, dtype=np.float64)
    inertia, n_invalid = kern.partial_sums(X, w, centers, labels, sums, counts, nt)
    if n_invalid:
        rows = np.flatnonzero(labels < 0)
        raise DataError(
            f"X has {n_invalid} rows with NaN or infinite values (first rows: {examples(rows)}); "
            "impute or drop them before fitting."
        )
    return labels, sums, counts, inertia


def _lloyd_update(centers, sums, counts):
    """New centroids = member means (float64), in the centroids' dtype; empty ones stay put."""
    new = centers.astype(np.float64)
    nz = counts > 0
    new[nz] = sums[nz] / counts[nz, None]
    return np.ascontiguousarray(new, dtype=centers.dtype)


class PartialSums(State):
    """Mergeable state of one full pass: per-centroid float64 sums, weighted counts, inertia.

    ``PartialSums.of(X, centers)`` runs the partial-sums kernel over one
    piece; states of disjoint pieces add up exactly to the state of their
    union (up to float64 rounding of the additions).
    """

    kind = "partial_sums"

    def __init__(self, sums, counts, inertia):
        self.sums = np.asarray(sums, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.float64)
        self.inertia = float(inertia)

    @classmethod
    def of(cls, X, centers, *, sample_weight=None, backend="auto", n_threads=None):
        X = np.ascontiguousarray(X)
        centers = np.ascontiguousarray(centers, dtype=X.dtype)
        if X.shape[0] == 0:
            return cls.empty(*centers.shape)
        kern = get_kernels(backend, "partial_sums")
        _, sums, counts, inertia = _full_pass(kern, X, sample_weight, centers, effective_n_threads(n_threads))
        return cls(sums, counts, inertia)

    @classmethod
    def empty(cls, k, d):
        return cls(np.zeros((k, d)), np.zeros(k), 0.0)

    def merge(self, other):
        self._check_same(other)
        if self.sums.shape != other.sums.shape:
            raise ParameterError(f"cannot merge partial sums of shapes {self.sums.shape} and {other.sums.shape}.")
        return PartialSums(self.sums + other.sums, self.counts + other.counts, self.inertia + other.inertia)

    def finish(self):
        return self.sums, self.counts, self.inertia

    def _data(self):
        return {"sums": array_to_data(self.sums), "counts": array_to_data(self.counts), "inertia": self.inertia}

    @classmethod
    def _from_data(cls, d):
        return cls(array_from_data(d["sums"], "sums"), array_from_data(d["counts"], "counts"), d["inertia"])


def refine_passes(centers, full_pass, n_passes, relocate=None, log=None, final_pass=None):
    """Lloyd passes over all the data, through ``full_pass(centers) -> PartialSums``.

    Runs ``n_passes`` updates (stopping early when the centroids no longer
    move) and one final pass with the final centroids.  ``relocate(new,
    counts)`` may move centroids that lost every member and returns how many
    it moved; ``final_pass(centers)``, when given, runs the final pass
    instead (its sums are not used).  Returns ``(centers, final
    PartialSums, passes run)``.  The
    engine decides what a full pass is: one kernel call over an in-memory
    array, or one per partition tree-reduced on Dask.
    """
    n_iter = 0
    for it in range(n_passes + 1):
        # the last pass only labels: ``final_pass`` (when given) may skip the sums
        ps = final_pass(centers) if (it == n_passes and final_pass is not None) else full_pass(centers)
        n_iter += 1
        if it == n_passes:
            break
        new = _lloyd_update(centers, ps.sums, ps.counts)
        moved = relocate(new, ps.counts) if relocate is not None else 0
        if not moved and np.array_equal(new, centers):
            if log:
                log(f"refine converged after {it + 1} passes")
            break
        centers = new
        if log:
            log(f"refine pass {it + 1}: inertia {ps.inertia:.6g}")
    return centers, ps, n_iter


SMALL_PASS = 1 << 21  # rows x centroids below which a pass runs on one thread


def _lloyd_on_sample(kern, Xs, ws, centers, nt, n_iter=10):
    """A few Lloyd iterations on a small sample; returns (centers, inertia of the returned centers)."""
    nt = threads_for_work(Xs.shape[0] * centers.shape[0], SMALL_PASS, nt)
    c = centers
    for _ in range(n_iter):
        _, sums, counts, inertia = _full_pass(kern, Xs, ws, c, nt)
        new = _lloyd_update(c, sums, counts)
        if np.array_equal(new, c):
            return c, float(inertia)
        c = new
    return c, float(_full_pass(kern, Xs, ws, c, nt)[3])


# -- the fit sample, the same whatever the partitioning -------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x):
    """splitmix64 finaliser over uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def customer_hash(ids, seed=0):
    """A uint64 hash of every customer id (integers or strings), stable across runs and processes."""
    import pyarrow as pa

    if isinstance(ids, (pa.Array, pa.ChunkedArray)) and not pa.types.is_integer(ids.type):
        import pandas as pd

        vals = ids.to_numpy(zero_copy_only=False).astype(object)
        h = pd.util.hash_array(vals, categorize=False)
    else:
        arr = ids.to_numpy(zero_copy_only=False) if isinstance(ids, (pa.Array, pa.ChunkedArray)) else ids
        h = np.asarray(arr).astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(h + _GOLDEN * np.uint64(int(seed) + 1))


def sample_piece(X, ids, fraction, seed=0):
    """The fit sample's rows of one piece: ``(rows of X, their ids)``.

    A customer is in the sample when its id hash falls below ``fraction``, so
    the sample depends on the customers only, never on how they are split in
    pieces; ``fraction >= 1`` keeps every row.
    """
    if fraction >= 1.0:
        return X, ids
    keep = customer_hash(ids, seed) < np.uint64(min(fraction, 1.0) * 2.0**64)
    idx = np.flatnonzero(keep)
    return np.ascontiguousarray(X[idx]), ids.take(idx)


class Segmenter(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Learn customer segments with mini-batch k-means.

    A scikit-learn estimator (``BaseEstimator``, ``ClusterMixin``,
    ``TransformerMixin``): ``get_params`` / ``set_params`` / ``clone``,
    ``Pipeline``, ``GridSearchCV``, ``cross_val_score``, metadata routing of
    ``sample_weight`` (``set_fit_request``), ``set_output`` for ``transform``
    and the notebook HTML display all work as for
    ``sklearn.cluster.MiniBatchKMeans``, whose parameter meanings it keeps
    where names coincide.

    ``X`` may be a NumPy array (float32 stays float32; no copy when it is
    already C-contiguous), a pandas DataFrame (the index is never a feature),
    or an Arrow table: pyarrow Table / RecordBatch / RecordBatchReader,
    polars or DuckDB frames, anything with ``__arrow_c_stream__``.  Column
    names become ``feature_names_in_``; predicting on columns in another
    order raises.

    Parameters
    ----------
    n_clusters : int, default 8
        Number of segments.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
        Greedy k-means++ on a sample of ``init_size`` rows, random rows, or
        given centroids (warm start from a previous model).
    batch_size : int, default 4096
        Rows per mini-batch.
    max_iter : int, default 1
        Epochs of mini-batch steps: ``max_iter * n_samples // batch_size`` steps.
    tol : float, default 0.0
        Stop when the summed squared centre shift of a step falls below
        ``tol`` times the mean feature variance, as in scikit-learn
        (0 disables).
    max_no_improvement : int or None, default 10
        Stop after this many steps without improvement of the smoothed batch
        inertia (None disables).
    init_size : int or None
        Rows sampled for the initialisation; default ``max(3 * batch_size, 3 * n_clusters)``.
    reassignment_ratio : float, default 0.01
        Centres whose weighted count falls below this fraction of the largest
        are re-seeded from the current batch (points far from their centre
        are preferred).
    n_init : int or "auto", default "auto"
        Initialisations tried.  With more than one, each seeding is refined
        by 10 Lloyd iterations on the ``init_size`` rows and the one with
        the lowest inertia there is kept (and used as the starting point).
        "auto" is 5 for ``n_clusters <= 16`` with the sample algorithm (few
        clusters: few, far-apart local optima, and cheap restarts), else 1
        (as ``MiniBatchKMeans``' "auto" with k-means++).
    algorithm : {"auto", "sample", "minibatch"}, default "auto"
        How the centroids are learnt before the full-data passes.
        ``"sample"`` (what ``"auto"`` means): greedy k-means++ on
        ``init_size`` rows, then Lloyd iterations to convergence on a uniform
        sample of ``sample_size`` rows (until an iteration lowers the sample
        inertia by less than 0.03%), then ``refine`` Lloyd passes over all
        the data.  It reached the best inertia per second on large data (see
        the README's FIT figures).  ``"minibatch"``: scikit-learn
        ``MiniBatchKMeans``' steps with ``batch_size``, ``max_iter``,
        ``tol``, ``max_no_improvement`` and ``reassignment_ratio`` (which
        only this algorithm uses), then the refine passes.
    sample_size : int or None
        Rows of the Lloyd sample (``algorithm="sample"``); None: segone's one
        default of every ``sample_size`` (:func:`segone.run`,
        :func:`segone.sweep`, the Dask Segmenter),
        ``max(131072, 128 * n_clusters)``; all rows when there are fewer.
    refine : int or "auto", default "auto"
        Full-data Lloyd passes after the sample or mini-batch phase (0 for
        none); "auto" is 0 after the sample phase (its centroids are
        already converged; a pass lowered the inertia by 0.04% on the FIT
        benchmark for 60% more time), 2 after the mini-batch phase.  Each pass reads the data once, and one more pass labels
        every row.
    decay : float in (0, 1] or None
        Forgetting factor for ``partial_fit``: the weight of past data is
        multiplied by ``decay`` before each update (Spark StreamingKMeans'
        decayFactor).  None or 1 keeps all history.
    half_life : float or None
        Alternative to ``decay``: the number of ``partial_fit`` calls after
        which past data weighs half (``decay = 0.5 ** (1 / half_life)``).
    random_state : None, int, numpy RandomState or numpy Generator
        Any kind scikit-learn accepts, turned into one integer seed of the
        fit's NumPy Generator: a non-negative int is the seed itself; None
        draws it from NumPy's global RandomState (so ``np.random.seed``
        applies, as in scikit-learn); a RandomState or a Generator draws it
        from that stream (advancing it).  The seed is recorded as ``seed_``:
        ``random_state=seg.seed_`` reproduces a fit.  The parameter itself is
        never changed.
    backend : {"auto", "cython", "numba"}
    n_threads : int or None
    verbose : bool or int

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features), X's dtype
    labels_ : ndarray of int32 (n_samples,)
        Segment of every row of X (after ``partial_fit``: of its last batch).
    inertia_ : float
        Weighted sum of squared distances to the nearest centre (float64),
        of X (after ``partial_fit``: of its last batch, with the updated
        centres).
    counts_ : ndarray of float64 (n_clusters,)
        Weighted members per centre (from the final pass; after
        ``partial_fit``: the decayed mini-batch weights).
    n_iter_ : int
        Iterations over the full dataset, as in MiniBatchKMeans: the epochs of
        the mini-batch phase (``ceil(n_steps_ * batch_size / n_samples)``)
        plus the Lloyd refine iterations.  Not changed by ``partial_fit``.
    n_passes_ : int
        Full passes over the data after the mini-batch phase: the refine
        passes plus the final labelling pass (what ``run.json`` reports).
    n_steps_ : int
        Mini-batch steps taken (``partial_fit`` adds one per call).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Column names of X in fit (only for inputs with string column names).
    seed_ : int
        The seed the fit's random stream was drawn from.

    Examples
    --------
    >>> import numpy as np
    >>> from segone import Segmenter
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(0, 1, (100, 2)), rng.normal(10, 1, (100, 2))]).astype(np.float32)
    >>> seg = Segmenter(n_clusters=2, random_state=0).fit(X)
    >>> sorted(np.bincount(seg.labels_).tolist())
    [100, 100]
    """

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        batch_size=4096,
        max_iter=1,
        tol=0.0,
        max_no_improvement=10,
        init_size=None,
        reassignment_ratio=0.01,
        n_init="auto",
        algorithm="auto",
        sample_size=None,
        refine="auto",
        decay=None,
        half_life=None,
        random_state=None,
        backend="auto",
        n_threads=None,
        verbose=False,
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.reassignment_ratio = reassignment_ratio
        self.n_init = n_init
        self.algorithm = algorithm
        self.sample_size = sample_size
        self.refine = refine
        self.decay = decay
        self.half_life = half_life
        self.random_state = random_state
        self.backend = backend
        self.n_threads = n_threads
        self.verbose = verbose

    # -- scikit-learn plumbing -------------------------------------------
    def set_params(self, **params):
        """Set parameters (nested ``step__param`` names too); unknown names raise ParameterError."""
        valid = self.get_params(deep=True)
        for key in params:
            if key.split("__", 1)[0] not in valid:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {key!r}; valid parameters: "
                    f"{', '.join(sorted(k for k in valid if '__' not in k))}."
                )
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        # transform (distances) keeps float32 as float32 (ClusterMixin's default says none)
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "cluster_centers_")

    # -- validation -------------------------------------------------------
    def _check_params(self, X):
        n, d = X.shape
        k = check_n_clusters(self.n_clusters, n)
        check_int(self.batch_size, "batch_size", low=1)
        check_int(self.max_iter, "max_iter", low=0)
        check_float(self.tol, "tol", low=0.0)
        check_int(self.max_no_improvement, "max_no_improvement", low=0, allow_none=True)
        check_int(self.init_size, "init_size", low=1, allow_none=True)
        check_float(self.reassignment_ratio, "reassignment_ratio", low=0.0, high=1.0)
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            check_int(self.n_init, "n_init", low=1)
        check_choice(self.algorithm, "algorithm", ("auto", "sample", "minibatch"))
        check_sample_size(self.sample_size)
        if not (isinstance(self.refine, str) and self.refine == "auto"):
            check_int(self.refine, "refine", low=0)
        self._decay_factor()
        resolve_backend(self.backend, "partial_sums")
        if isinstance(self.init, str):
            check_choice(self.init, "init", ("k-means++", "random"))
        else:
            try:
                init = np.asarray(self.init, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ParameterError(
                    f"init must be 'k-means++', 'random' or an array of numbers of shape (n_clusters, n_features) = "
                    f"({k}, {d}); it cannot be read as numbers: {exc}"
                ) from None
            if init.shape != (k, d):
                raise ParameterError(
                    f"init array has shape {init.shape}, expected (n_clusters, n_features) = ({k}, {d})."
                )
            if not np.isfinite(init).all():
                raise ParameterError("init array holds NaN or infinity; every initial centroid must be finite.")
        return k

    def _check_weight(self, sample_weight, n):
        return check_sample_weight(sample_weight, n)

    def _check_fitted(self):
        check_fitted(self, "cluster_centers_", "fit(X) or partial_fit(X)")

    def _validate_X(self, X, reset):
        """X -> C-contiguous float32 / float64 rows; sets (reset) or checks the features seen in fit."""
        return check_estimator_input(self, X, reset=reset)

    def _check_X_predict(self, X):
        self._check_fitted()
        return self._validate_X(X, reset=False)

    # -- core ---------------------------------------------------------------
    def _log(self, msg):
        if self.verbose:
            print(f"[segone.Segmenter] {msg}", file=sys.stderr, flush=True)

    def _n_init(self, k):
        if isinstance(self.n_init, str):  # "auto": few clusters have few, far-apart optima; restarts are cheap
            return 5 if k <= 16 and self._algorithm() == "sample" else 1
        return int(self.n_init)

    def _algorithm(self):
        return "minibatch" if self.algorithm == "minibatch" else "sample"

    def _refine(self):
        if isinstance(self.refine, str):
            return 2 if self._algorithm() == "minibatch" else 0
        return int(self.refine)

    def _init_centers(self, X, w, k, rng, kern=None, nt=1):
        n = X.shape[0]
        if not isinstance(self.init, str):
            return np.ascontiguousarray(self.init, dtype=X.dtype)
        init_size = self.init_size or max(3 * self.batch_size, 3 * k)
        init_size = min(max(init_size, k), n)
        best, best_inertia = None, np.inf
        n_init = self._n_init(k)
        for _ in range(n_init):
            sample = np.sort(rng.choice(n, size=init_size, replace=False)) if init_size < n else np.arange(n)
            Xs = X[sample]
            if not np.isfinite(Xs).all():
                check_finite(X)  # names the rows of X
            ws = None if w is None else w[sample]
            if ws is not None and ws.sum() <= 0:
                ws = None
            if self.init == "k-means++":
                idx = kmeans_plusplus(Xs, k, rng, ws)
            else:
                idx = rng.choice(init_size, size=k, replace=False)
            centers = np.ascontiguousarray(Xs[idx], dtype=X.dtype)
            if n_init == 1:
                return centers
            # compare candidates after a few Lloyd iterations on the sample:
            # raw seeding inertia is a poor predictor of the final optimum
            kern = kern or get_kernels(self.backend, "partial_sums")
            centers, inertia = _lloyd_on_sample(kern, Xs, ws, centers, nt, n_iter=10)
            if inertia < best_inertia:
                best, best_inertia = centers, inertia
        return best

    def _reassign(self, Xb, wb, centers, totals, rng):
        low = totals < self.reassignment_ratio * totals.max()
        if not low.any():
            return
        cand = np.flatnonzero(low)[: max(1, Xb.shape[0] // 2)]
        d = _sq_dists(Xb, centers).min(axis=1)
        p = d * (1.0 if wb is None else wb)
        if p.sum() <= 0:
            return
        pick = rng.choice(Xb.shape[0], size=cand.size, replace=cand.size > np.count_nonzero(p), p=p / p.sum())
        centers[cand] = Xb[pick]
        keep = ~low
        totals[cand] = totals[keep].min() if keep.any() else 1.0
        self.n_reassigned_ = getattr(self, "n_reassigned_", 0) + int(cand.size)

    def _relocate_empty(self, X, w, centers, counts, rng):
        """Move centres with no members to far-away rows of a sample."""
        empty = np.flatnonzero(counts <= 0)
        if empty.size == 0:
            return 0
        n = X.shape[0]
        sample = rng.choice(n, size=min(n, 65536), replace=False) if n > 65536 else np.arange(n)
        d = _sq_dists(X[sample], centers).min(axis=1)
        if w is not None:
            d = d * w[sample]
        order = np.argsort(-d, kind="stable")
        far = order[: empty.size]
        far = far[d[far] > 0]
        centers[empty[: far.size]] = X[sample[far]]
        return int(far.size)

    def fit(self, X, y=None, sample_weight=None):
        """Fit the segments on X.

        Parameters
        ----------
        X : array-like (n_samples, n_features), pandas DataFrame or Arrow table
            float32 / float64 rows (kept as they are), other numbers become float64.
        y : ignored
            Present for the scikit-learn API (``Pipeline.fit(X, y)``).
        sample_weight : array-like (n_samples,) or None
            Non-negative weight of every row.

        Returns
        -------
        self
        """
        X = self._validate_X(X, reset=True)
        w = self._check_weight(sample_weight, X.shape[0])
        # No O(N) finiteness pre-check: the kernels flag NaN / inf rows as they
        # read them (the init sample is checked, the mini-batch kernel stops on
        # an invalid batch, and the final full pass names the rows).
        kern = get_kernels(self.backend, "partial_sums")
        nt = effective_n_threads(self.n_threads)
        last = {}

        def full_pass(centers):
            last["labels"], sums, counts, inertia = _full_pass(kern, X, w, centers, nt)
            return PartialSums(sums, counts, inertia)

        def label_pass(centers):  # the last pass: labels, counts and inertia from the (faster) assign kernel
            res = assign(X, centers, backend=self.backend, n_threads=nt)
            if res.n_invalid:
                return full_pass(centers)  # names the rows
            last["labels"] = res.labels
            d = res.distance.astype(np.float64)
            inertia = float(d.sum() if w is None else d @ w)
            counts = np.bincount(res.labels, weights=w, minlength=centers.shape[0]).astype(np.float64)
            return PartialSums(np.zeros(centers.shape), counts, inertia)  # sums: not needed after the last pass

        self._fit_passes(X, full_pass, w, final_pass=label_pass)
        self.labels_ = last["labels"]
        return self

    def fit_passes(self, sample, full_pass, sample_weight=None):
        """Fit on in-memory rows, then refine with full passes over all the data.

        The driver every engine shares: seeding and the mini-batch phase run on
        ``sample`` (all the rows, or a uniform sample of them, in a fixed
        order), then ``refine`` Lloyd passes call ``full_pass(centers)``,
        which returns the :class:`PartialSums` of the centroids over *all* the
        data (one kernel call over an array, or one per partition merged by an
        engine).  Centroids that lose every member move to far-away rows of
        ``sample``.  Sets every fitted attribute except ``labels_`` (the
        caller has the data); returns self.
        """
        X = self._validate_X(sample, reset=True)
        return self._fit_passes(X, full_pass, self._check_weight(sample_weight, X.shape[0]))

    def _fit_passes(self, X, full_pass, w, final_pass=None):
        """:meth:`fit_passes` on validated rows ``X`` and weights ``w``."""
        n, d = X.shape
        k = self._check_params(X)
        self.seed_ = random_seed(self.random_state)
        rng = np.random.default_rng(self.seed_)
        self._rng = rng  # partial_fit after fit continues this stream
        kern = get_kernels(self.backend, "partial_sums")
        nt = effective_n_threads(self.n_threads)
        t0 = time.perf_counter()
        for name in ("_mb_state", "labels_", "_sample_epochs"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        if self._algorithm() == "minibatch":
            centers, totals = self._minibatch_phase(X, w, k, rng, kern, nt, t0)
        else:
            centers, totals = self._sample_phase(X, w, k, rng, kern, nt, t0)

        # refine passes (Lloyd) + final labelling pass
        centers, ps, n_passes = refine_passes(
            centers, full_pass, self._refine(), lambda new, counts: self._relocate_empty(X, w, new, counts, rng),
            self._log, final_pass,
        )  # fmt: skip
        self.cluster_centers_ = np.ascontiguousarray(centers, dtype=X.dtype)
        self.inertia_ = float(ps.inertia)
        self.counts_ = ps.counts
        bs = min(self.batch_size, n)
        # iterations over the full dataset (MiniBatchKMeans' meaning): mini-batch epochs + Lloyd iterations
        # (the sample phase's Lloyd iterations count in the sample's share of a pass)
        self.n_iter_ = int(np.ceil(self.n_steps_ * bs / n + getattr(self, "_sample_epochs", 0.0))) + (n_passes - 1)
        self.n_passes_ = n_passes
        self._n_features_out = k
        self._totals = totals
        if (ps.counts <= 0).any():
            self._warn_degenerate(X, k, ps.counts)
        self._log(f"done: inertia {self.inertia_:.6g}, {time.perf_counter() - t0:.3f}s")
        return self

    def _sample_phase(self, X, w, k, rng, kern, nt, t0, max_iter=100, rtol=3e-4):
        """Seeding, then Lloyd iterations to convergence on a uniform sample; returns (centers, counts)."""
        n = X.shape[0]
        m = self.sample_size or default_sample_size(k)
        m = min(max(m, k), n)
        rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else None
        Xs = X if rows is None else X[rows]
        ws = None if w is None or rows is None else w[rows]
        ws = w if rows is None else ws
        if not np.isfinite(Xs).all():
            check_finite(X)  # names the rows of X
        centers = self._init_centers(Xs, ws, k, rng, kern, nt)
        self._log(f"init {self.init if isinstance(self.init, str) else 'array'}: {time.perf_counter() - t0:.3f}s")
        # coarse to fine: Lloyd on every 4th sample row (itself a uniform sample) until it settles, then on
        # the whole sample, which then needs few iterations
        levels = [4, 1] if m >= 4 * max(16384, 32 * k) else [1]
        it, epochs, counts = 0, 0.0, np.zeros(k)
        for step in levels:
            Xl = Xs if step == 1 else np.ascontiguousarray(Xs[::step])
            wl = ws if (ws is None or step == 1) else ws[::step]
            prev, lit = np.inf, 0
            nt_l = threads_for_work(Xl.shape[0] * k, SMALL_PASS, nt)
            while lit < max_iter:
                _, sums, counts, inertia = _full_pass(kern, Xl, wl, centers, nt_l)
                lit += 1
                new = _lloyd_update(centers, sums, counts)
                moved = self._relocate_empty(Xl, wl, new, counts, rng)
                if not moved and (np.array_equal(new, centers) or prev - inertia <= rtol * inertia):
                    centers = new
                    break
                centers, prev = new, inertia
            it += lit
            epochs += lit * Xl.shape[0] / n
        self.n_steps_ = 0
        self._sample_epochs = epochs
        self._log(f"sample phase: {it} Lloyd iterations on {m} rows, {time.perf_counter() - t0:.3f}s")
        return np.ascontiguousarray(centers, dtype=X.dtype), counts.astype(np.float64)

    def _minibatch_phase(self, X, w, k, rng, kern, nt, t0):
        """Seeding and the mini-batch steps on the rows of X; returns (centers, weighted totals)."""
        n = X.shape[0]
        centers = self._init_centers(X, w, k, rng, kern, nt)
        self._log(f"init {self.init if isinstance(self.init, str) else 'array'}: {time.perf_counter() - t0:.3f}s")
        totals = np.zeros(k, dtype=np.float64)
        bs = min(self.batch_size, n)
        n_steps = (self.max_iter * n) // bs if self.max_iter else 0
        if self.max_iter and n_steps == 0:
            n_steps = 1
        alpha = min(1.0, 2.0 * bs / (n + 1))
        tol = 0.0
        if self.tol > 0:
            tol = self.tol * float(np.mean(np.var(X[rng.choice(n, size=min(n, 65536), replace=False)], axis=0)))
        self.n_reassigned_ = 0
        # the steps run inside the kernel, STEPS_PER_CALL at a time; Python only
        # draws the batches (row indices; the kernel prefetches the rows)
        # and re-seeds low-count centroids when the kernel asks for it
        state = _common.minibatch_state(alpha, tol, self.reassignment_ratio, self.max_no_improvement, 10 * k)
        centers64 = centers.astype(np.float64)
        tf = _common.centering(centers, X.dtype)  # one shift for the whole fit: exact distances at any offset
        step = 0
        stop = False
        report_every = max(1, n_steps // 10)
        next_report = report_every
        while step < n_steps and not stop:
            s = min(STEPS_PER_CALL, n_steps - step)
            idx = rng.integers(0, n, size=(s, bs))  # the kernel prefetches the rows: no need to sort
            batch_inertia = np.empty(s)
            pos = 0
            while pos < s:
                done, status = kern.minibatch(X, w, idx[pos:], centers64, totals, state, batch_inertia[pos:], nt,
                                              centering=tf)
                pos += done
                if status == _common.MB_INVALID:
                    check_finite(X)  # names the rows
                    raise DataError("X holds NaN or infinite values; impute or drop those rows before fitting.")
                if status == _common.MB_REASSIGN:
                    last = idx[pos - 1]
                    self._reassign(X[last], None if w is None else w[last], centers64, totals, rng)
                elif status != _common.MB_DONE:
                    stop = True
                    why = "no improvement" if status == _common.MB_NO_IMPROVEMENT else "centre shift below tol"
                    self._log(f"stopped at step {step + pos}: {why}")
                    break
            step += pos
            if self.verbose and step >= next_report:
                next_report += report_every
                self._log(
                    f"step {step}/{n_steps}: batch inertia {batch_inertia[pos - 1]:.5g}, "
                    f"ewa inertia {state[_common.MB_EWA]:.5g}"
                )
        centers = np.ascontiguousarray(centers64, dtype=X.dtype)
        self.n_steps_ = step
        t1 = time.perf_counter()
        self._log(f"mini-batch phase: {self.n_steps_} steps, {t1 - t0:.3f}s")

        return centers, totals

    def _warn_degenerate(self, X, k, counts):
        n_empty = int((counts <= 0).sum())
        n_distinct = len(np.unique(X, axis=0)) if X.shape[0] <= 1_000_000 else None
        if n_distinct is not None and n_distinct < k:
            warnings.warn(
                f"the data hold only {n_distinct} distinct points but n_clusters={k}: {n_empty} segments are "
                "empty (counts_ == 0). Use fewer clusters.",
                stacklevel=3,
            )
        else:
            warnings.warn(f"{n_empty} segments ended empty (counts_ == 0).", stacklevel=3)

    def _decay_factor(self):
        check_float(self.decay, "decay", low=0.0, high=1.0, low_inclusive=False, allow_none=True)
        check_float(self.half_life, "half_life", low=0.0, low_inclusive=False, allow_none=True)
        if self.decay is not None and self.half_life is not None:
            raise ParameterError("set either decay or half_life, not both (half_life=h means decay=0.5 ** (1 / h)).")
        if self.half_life is not None:
            return 0.5 ** (1.0 / self.half_life)
        return self.decay

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the segments with one mini-batch step on all of X.

        The first call initialises the centroids on X.  With ``decay`` (or
        ``half_life``) set, the weight of everything seen before is multiplied
        by the decay factor before the update, so that the model follows
        drifting segments (Spark StreamingKMeans' forgetfulness, with batches
        as the time unit).  The step runs in the same kernel as ``fit``; as
        in MiniBatchKMeans, ``labels_`` and ``inertia_`` are then those of
        X under the updated centroids (one more pass over the batch).
        ``y`` is ignored.
        """
        fitted = hasattr(self, "cluster_centers_")
        X = self._validate_X(X, reset=not fitted)
        n, d = X.shape
        w = self._check_weight(sample_weight, n)
        check_finite(X)
        decay = self._decay_factor()
        kern = get_kernels(self.backend, "partial_sums")
        nt = effective_n_threads(self.n_threads)
        if not fitted:
            k = self._check_params(X)
            self.seed_ = random_seed(self.random_state)
            self._rng = np.random.default_rng(self.seed_)
            self.cluster_centers_ = self._init_centers(X, w, k, self._rng, kern, nt)
            self._totals = np.zeros(k, dtype=np.float64)
            self._mb_state = _common.minibatch_state(1.0, 0.0, self.reassignment_ratio, None, 10 * k)
            self.n_steps_ = 0
            self.n_reassigned_ = 0
            self._n_features_out = k
        else:
            if X.dtype != self.cluster_centers_.dtype:
                X = X.astype(self.cluster_centers_.dtype)
            if not hasattr(self, "_mb_state"):  # after fit(): continue from its state
                self._mb_state = _common.minibatch_state(
                    1.0, 0.0, self.reassignment_ratio, None, 10 * self.cluster_centers_.shape[0]
                )
        if decay is not None:
            self._totals *= decay
        rng = getattr(self, "_rng", None) or np.random.default_rng(random_seed(self.random_state))
        centers64 = self.cluster_centers_.astype(np.float64)
        idx = np.arange(n, dtype=np.int64)[None, :]
        done, status = kern.minibatch(X, w, idx, centers64, self._totals, self._mb_state, np.empty(1), nt)
        if status == _common.MB_INVALID:
            raise DataError("X holds NaN or infinite values; impute or drop those rows.")
        if status == _common.MB_REASSIGN:
            self._reassign(X, w, centers64, self._totals, rng)
        self.cluster_centers_ = np.ascontiguousarray(centers64, dtype=X.dtype)
        self.n_steps_ += 1
        self.counts_ = self._totals.copy()
        self.labels_, _, _, self.inertia_ = _full_pass(kern, X, w, self.cluster_centers_, nt)
        self.inertia_ = float(self.inertia_)
        return self

    def reorder_clusters(self, order):
        """Renumber the segments: new segment ``i`` is old segment ``order[i]``.

        Every per-segment fitted attribute (centroids, ``counts_``, the
        mini-batch weights used by ``partial_fit``) and ``labels_`` follow, so
        the model stays consistent.  Returns self.
        """
        self._check_fitted()
        k = self.cluster_centers_.shape[0]
        order = np.asarray(order)
        if order.shape != (k,) or not np.array_equal(np.sort(order), np.arange(k)):
            raise ParameterError(f"order must be a permutation of 0..{k - 1}, got {order.tolist()[:10]}.")
        self.cluster_centers_ = np.ascontiguousarray(self.cluster_centers_[order])
        for name in ("counts_", "_totals"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name)[order])
        if hasattr(self, "labels_"):
            new_id = np.empty(k, dtype=np.int32)
            new_id[order] = np.arange(k, dtype=np.int32)
            self.labels_ = np.where(self.labels_ >= 0, new_id[np.maximum(self.labels_, 0)], -1).astype(np.int32)
        return self

    def predict(self, X):
        """Index of the nearest segment for every row (int32)."""
        X = self._check_X_predict(X)
        C = self.cluster_centers_.astype(X.dtype, copy=False)
        return assign(X, C, backend=self.backend, n_threads=self.n_threads).labels

    def fit_predict(self, X, y=None, sample_weight=None):
        """``fit(X).labels_``: the segment of every row of X (int32); ``y`` is ignored."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Euclidean distances (N x K) from every row to every centroid, in X's dtype."""
        X = self._check_X_predict(X)
        C = self.cluster_centers_.astype(X.dtype, copy=False)
        out = np.empty((X.shape[0], C.shape[0]), dtype=X.dtype)
        step = 65536
        for s in range(0, X.shape[0], step):
            with np.errstate(invalid="ignore", over="ignore"):
                d = _sq_dists(X[s : s + step], C)
            if not np.isfinite(d).all():  # NaN / inf rows give NaN distances: name them
                rows = s + np.flatnonzero(~np.isfinite(d).all(axis=1))
                raise DataError(
                    f"X has rows with NaN or infinite values (first rows: {examples(rows)}); "
                    "impute or drop them before transform."
                )
            out[s : s + step] = np.sqrt(d)
        return out

    def fit_transform(self, X, y=None, sample_weight=None):
        """``fit(X).transform(X)``; ``y`` is ignored."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Negative (weighted) inertia of X under the fitted segments; ``y`` is ignored."""
        X = self._check_X_predict(X)
        w = self._check_weight(sample_weight, X.shape[0])
        kern = get_kernels(self.backend, "partial_sums")  # the pass names any NaN / inf rows
        C = self.cluster_centers_.astype(X.dtype, copy=False)
        _, _, _, inertia = _full_pass(kern, X, w, C, effective_n_threads(self.n_threads))
        return -float(inertia)
