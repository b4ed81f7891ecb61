"""Nearest-segment assignment: the public entry point over the kernels.

The module ``segone.assignment`` (it was ``segone.assign``, a name now held
by the function alone: ``segone.assign(X, centroids)``).
"""

import warnings
from typing import NamedTuple

import numpy as np

from segone._backend import get_kernels
from segone._threads import effective_n_threads
from segone._validation import check_choice, check_matrix
from segone.errors import DataError, ParameterError, examples


class Assignment(NamedTuple):
    """Result of :func:`segone.assign`.

    Attributes
    ----------
    labels : ndarray of int32, shape (N,)
        Index of the nearest centroid; -1 for rows skipped as invalid.
    distance : ndarray, shape (N,), X's dtype
        Squared Euclidean distance to the own centroid (NaN for skipped rows).
    margin : ndarray or None
        Second-nearest minus nearest squared distance (``margin=True`` only):
        how sure the membership is.  Infinite when there is one centroid.
    n_invalid : int
        Rows holding NaN or infinity (only non-zero with ``on_invalid="skip"``).
    """

    labels: np.ndarray
    distance: np.ndarray
    margin: np.ndarray | None = None
    n_invalid: int = 0


def _check_centroids(centroids, X):
    C = check_matrix(centroids, "centroids")
    if C.shape[0] == 0:
        raise ParameterError("centroids is empty (0 rows); pass at least one centroid.")
    if C.shape[1] != X.shape[1]:
        raise ParameterError(
            f"centroids have {C.shape[1]} features but X has {X.shape[1]}; "
            "both must describe the same feature columns in the same order."
        )
    if C.dtype != X.dtype:
        warnings.warn(
            f"centroids are {C.dtype} but X is {X.dtype}: casting the centroids to {X.dtype}.",
            stacklevel=3,
        )
        C = C.astype(X.dtype)
    if not np.isfinite(C).all():
        rows = np.flatnonzero(~np.isfinite(C).all(axis=1))
        raise DataError(f"centroids hold NaN or infinity in rows {examples(rows)}; every centroid must be finite.")
    return np.ascontiguousarray(C)


def assign(X, centroids, *, margin=False, on_invalid="raise", backend="auto", n_threads=None):
    """Assign every row of ``X`` to its nearest centroid.

    Parameters
    ----------
    X : array-like of shape (N, D), float32 or float64, or an Arrow table
        The scored customer features.  float32 stays float32 (no copy when it
        is already C-contiguous); integer input becomes float64.
    centroids : array-like of shape (K, D)
        Cast to X's dtype (with a warning) when it differs.
    margin : bool, default False
        Also return the second-nearest minus nearest squared distance.
    on_invalid : {"raise", "skip"}, default "raise"
        Rows with NaN or infinity raise :class:`~segone.errors.DataError`, or
        with "skip" get label -1 and are counted in ``n_invalid``.
    backend : {"auto", "cython", "numba"}, default "auto"
    n_threads : int or None
        None = all CPUs; negative counts back from the number of CPUs.

    Returns
    -------
    Assignment
        ``labels`` (int32), ``distance`` (squared), ``margin`` and ``n_invalid``.

    Raises
    ------
    DataError
        Rows with NaN or infinity (unless ``on_invalid="skip"``), and finite
        rows whose squared distance to the centroids exceeds the largest
        value of X's dtype (float32: 3.4e38, e.g. values around 1e19); those
        are never skipped: rescale the features or use float64.

    Notes
    -----
    Distances, margins and labels are exact to the input precision of the
    data's *spread*, wherever the data sit: the kernels centre rows and
    centroids on the fly when the centroids lie far from the origin against
    their spread (float32 at 1e4, epoch seconds in float64), and rescale by
    a power of two when the spread itself is extreme.  Data near the origin
    run untransformed.

    Examples
    --------
    >>> import numpy as np, segone
    >>> X = np.array([[0, 0], [10, 10], [9, 9]], dtype=np.float32)
    >>> C = np.array([[0, 0], [10, 10]], dtype=np.float32)
    >>> segone.assign(X, C).labels
    array([0, 1, 1], dtype=int32)
    """
    X = check_matrix(X, "X")
    C = _check_centroids(centroids, X)
    check_choice(on_invalid, "on_invalid", ("raise", "skip"))
    kern = get_kernels(backend, "assign")
    nt = effective_n_threads(n_threads)
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=X.dtype)
    marg = np.empty(n, dtype=X.dtype) if margin else None
    n_invalid = kern.assign(X, C, labels, dist, marg, nt)
    if n_invalid and on_invalid == "raise":
        rows = np.flatnonzero(labels < 0)
        raise DataError(
            f"X has {n_invalid} rows with NaN or infinite values (first rows: {examples(rows)}); "
            "impute or drop them, or pass on_invalid='skip' to label them -1."
        )
    return Assignment(labels, dist, marg, int(n_invalid))


def assign_piece(profiles, X, centroids, *, id_column="customer_id", backend="auto", n_threads=None):
    """ASSIGN per piece: a table of ``id_column``, segment, distance and margin for the rows of X."""
    import pyarrow as pa

    res = assign(X, centroids, margin=True, backend=backend, n_threads=n_threads)
    return pa.table({
        id_column: profiles.column(id_column),
        "segment": pa.array(res.labels),
        "distance": pa.array(res.distance),
        "margin": pa.array(res.margin),
    })  # fmt: skip
