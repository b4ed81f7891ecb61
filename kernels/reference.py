"""Plain NumPy reference kernels: slow, obvious, the oracle for the tests.

Every function has the same signature as its Cython (``_cy``) and Numba
(``_nb``) twins.  Distances are computed directly as ``sum((x - c) ** 2)`` in
float64, so they are the most accurate of the three; the fast kernels use the
expanded form ``||x||^2 - 2 x.c + ||c||^2`` in the input precision and may
differ at near-ties only.
"""

import numpy as np

_BLOCK = 512


def _block_distances(X, centroids, start, stop):
    xb = X[start:stop].astype(np.float64)
    diff = xb[:, None, :] - centroids.astype(np.float64)[None, :, :]
    return np.einsum("nkd,nkd->nk", diff, diff)


def assign(X, centroids, labels, distance, margin=None, n_threads=None):
    """Nearest-centroid assignment.

    Parameters
    ----------
    X : (N, D) float array                       # IN
    centroids : (K, D) array of X's dtype         # IN
    labels : (N,) int32                           # OUT, -1 for invalid rows
    distance : (N,) X.dtype                       # OUT, squared distance, NaN if invalid
    margin : (N,) X.dtype or None                 # OUT, 2nd-best minus best squared distance
    n_threads : ignored

    Returns
    -------
    n_invalid : int
        Rows holding NaN or infinity (left unassigned: label -1).
    """
    n, k = X.shape[0], centroids.shape[0]
    n_invalid = 0
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        valid = np.isfinite(X[start:stop]).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            d = _block_distances(X, centroids, start, stop)
        best = np.argmin(d, axis=1)  # first minimum: ties go to the lowest index
        rows = np.arange(stop - start)
        bestd = d[rows, best]
        labels[start:stop] = np.where(valid, best, -1)
        distance[start:stop] = np.where(valid, bestd, np.nan)
        if margin is not None:
            if k == 1:
                m = np.full(stop - start, np.inf)
            else:
                d2 = d.copy()
                d2[rows, best] = np.inf
                with np.errstate(invalid="ignore"):
                    m = d2.min(axis=1) - bestd
            margin[start:stop] = np.where(valid, m, np.nan)
        n_invalid += int((~valid).sum())
    return n_invalid


def partial_sums(X, sample_weight, centroids, labels, sums, counts, chunk_rows, n_threads=None):
    """One Lloyd pass: assign every row and accumulate per-centroid sums.

    Parameters
    ----------
    X : (N, D) float array                         # IN
    sample_weight : (N,) float64 or None           # IN (None: all ones)
    centroids : (K, D) array of X's dtype          # IN
    labels : (N,) int32                            # OUT, -1 for invalid rows
    sums : (K, D) float64                          # OUT, weighted sum of member rows
    counts : (K,) float64                          # OUT, weighted member count
    chunk_rows : int                               # rows per partial-sum chunk (ignored)
    n_threads : ignored

    Returns
    -------
    (inertia, n_invalid) : (float, int)
        Weighted sum of squared distances to the nearest centroid (float64)
        and the number of rows holding NaN or infinity (skipped).
    """
    n, d = X.shape
    k = centroids.shape[0]
    dist = np.empty(n, dtype=X.dtype)
    n_invalid = assign(X, centroids, labels, dist, None)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    ok = labels >= 0
    sums[...] = 0.0
    counts[...] = 0.0
    lab = labels[ok]
    wv = w[ok]
    np.add.at(counts, lab, wv)
    np.add.at(sums, lab, X[ok].astype(np.float64) * wv[:, None])
    inertia = float(np.sum(dist[ok].astype(np.float64) * wv))
    return inertia, n_invalid
