"""Stable segment ids: a new run's segments matched to the previous run's ids (Hungarian on the shared
customers, the centroids as a fallback)."""

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segone.errors import DataError, ParameterError, examples
from segone.track._common import _lookup
from segone.track.moves import _join_tables, _segment_values


# ----------------------------------------------------------------- matching
@dataclass
class SegmentMatch:
    """The stable id of every new segment (see :func:`match_segments`).

    Attributes
    ----------
    ids : ndarray of int64 (k,)
        Stable id of new cluster ``0..k-1``.
    kept : ndarray of bool (k,)
        True where the cluster kept a previous id.
    vanished : list of int
        Previous ids that no new cluster kept.
    next_id : int
        The next unused id after this run.
    method : {"customers", "centroids", "none"}
        What the match was based on.
    overlap : ndarray of int64 (len(prev_ids), k) or None
        Common customers per (previous id, new cluster) (method "customers").
    prev_ids : ndarray of int64
    common_customers : int
        Customers present in both runs.
    matched_customers : int
        Common customers whose previous id is kept by their new cluster.
    """

    ids: np.ndarray
    kept: np.ndarray
    vanished: list
    next_id: int
    method: str
    prev_ids: np.ndarray
    overlap: np.ndarray | None = field(default=None, repr=False)
    common_customers: int = 0
    matched_customers: int = 0

    def to_dict(self):
        """JSON-safe summary for run.json."""
        out = {
            "method": self.method,
            "segment_ids": self.ids.tolist(),
            "kept": [int(i) for i in self.ids[self.kept]],
            "new": [int(i) for i in self.ids[~self.kept]],
            "vanished": [int(i) for i in self.vanished],
            "next_id": int(self.next_id),
            "common_customers": int(self.common_customers),
            "matched_customers": int(self.matched_customers),
        }
        if self.overlap is not None:
            pos = {int(p): r for r, p in enumerate(self.prev_ids)}
            out["overlap_kept"] = {str(int(i)): int(self.overlap[pos[int(i)], j])
                                   for j, i in enumerate(self.ids) if self.kept[j]}  # fmt: skip
        return out


def _check_prev_ids(prev_ids):
    ids = np.asarray(prev_ids)
    if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        raise ParameterError(f"prev_ids must be a 1-D sequence of integers, got {prev_ids!r:.100}.")
    ids = ids.astype(np.int64)
    if (ids < 0).any() or np.unique(ids).size != ids.size:
        raise ParameterError(f"prev_ids must be unique non-negative integers, got {ids.tolist()[:20]}.")
    return ids


def _next_id(prev_ids, next_id):
    top = int(prev_ids.max()) + 1 if prev_ids.size else 0
    if next_id is None:
        return top
    if isinstance(next_id, bool) or not isinstance(next_id, (int, np.integer)) or next_id < top:
        raise ParameterError(f"next_id must be an integer >= {top} (above every previous id), got {next_id!r}.")
    return int(next_id)


def _finish_match(prev_ids, pairs, k, next_id, method, overlap=None, common=0):
    ids = np.full(k, -1, dtype=np.int64)
    kept = np.zeros(k, dtype=bool)
    matched = 0
    for r, c in pairs:
        ids[c] = prev_ids[r]
        kept[c] = True
        if overlap is not None:
            matched += int(overlap[r, c])
    nxt = next_id
    for c in range(k):
        if not kept[c]:
            ids[c] = nxt
            nxt += 1
    vanished = sorted(int(p) for p in set(prev_ids.tolist()) - set(ids[kept].tolist()))
    return SegmentMatch(ids, kept, vanished, nxt, method, prev_ids, overlap, int(common), matched)


def match_counts(prev_ids, overlap, *, next_id=None, min_overlap=1):
    """Match new clusters to previous ids from a (previous id x new cluster) count matrix.

    Parameters
    ----------
    prev_ids : sequence of int (P,)
        The previous stable ids, one per row of ``overlap``.
    overlap : array (P, k)
        Customers shared by previous segment ``prev_ids[i]`` and new cluster ``j``.
    next_id : int, optional
        The previous run's next unused id (default ``max(prev_ids) + 1``).
    min_overlap : int, default 1
        A matched pair keeps the id only when it shares at least this many customers.

    Returns
    -------
    SegmentMatch

    Examples
    --------
    >>> from segone.track import match_counts
    >>> m = match_counts([10, 11], [[0, 90, 0], [80, 5, 0]])
    >>> m.ids.tolist(), m.vanished, m.next_id
    ([11, 10, 12], [], 13)
    """
    from scipy.optimize import linear_sum_assignment

    prev_ids = _check_prev_ids(prev_ids)
    nxt = _next_id(prev_ids, next_id)
    C = np.asarray(overlap)
    if C.ndim != 2 or C.shape[0] != prev_ids.size:
        raise ParameterError(f"overlap must have shape (len(prev_ids), k) = ({prev_ids.size}, k), got {C.shape}.")
    C = C.astype(np.int64)
    pairs = []
    if C.size:
        rows, cols = linear_sum_assignment(C, maximize=True)
        pairs = [(r, c) for r, c in zip(rows, cols) if C[r, c] >= max(int(min_overlap), 1)]
    return _finish_match(prev_ids, pairs, C.shape[1], nxt, "customers", C, int(C.sum()))


def match_centroids(prev_ids, prev_centroids, new_centroids, *, next_id=None, max_distance=None):
    """Match new clusters to previous ids by the distance between centroids (no common customers needed).

    Both centroid sets must live in the same feature space (the same
    features, scored the same way: see :func:`remap_centroids`).  The
    matching minimises the summed Euclidean distance (not squared: one far
    outlier must not pull the other pairs apart); with ``max_distance`` a
    pair further apart than that does not keep the id.

    Examples
    --------
    >>> import numpy as np
    >>> from segone.track import match_centroids
    >>> m = match_centroids([4, 9], np.array([[0.0, 0], [5, 5]]), np.array([[5.1, 5], [0, 0.2], [20, 20]]))
    >>> m.ids.tolist(), m.method
    ([9, 4, 10], 'centroids')
    """
    from scipy.optimize import linear_sum_assignment

    prev_ids = _check_prev_ids(prev_ids)
    nxt = _next_id(prev_ids, next_id)
    A = np.asarray(prev_centroids, dtype=np.float64)
    B = np.asarray(new_centroids, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1] or A.shape[0] != prev_ids.size:
        raise ParameterError(
            f"centroids must be (len(prev_ids), d) and (k, d) arrays of the same width, got {A.shape} and {B.shape}."
        )
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise DataError("centroids hold NaN or infinite values; every centroid must be finite.")
    d = np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(-1))
    pairs = []
    if d.size:
        rows, cols = linear_sum_assignment(d)
        limit = np.inf if max_distance is None else float(max_distance)
        pairs = [(r, c) for r, c in zip(rows, cols) if d[r, c] <= limit]
    return _finish_match(prev_ids, pairs, B.shape[0], nxt, "centroids")


def match_segments(prev_ids, prev_segments, new_segments, *, n_clusters=None, next_id=None, min_overlap=1,
                   prev_centroids=None, new_centroids=None, id_column="customer_id"):  # fmt: skip
    """Give every new segment a stable id: keep the previous id of the segment it shares most customers with.

    Parameters
    ----------
    prev_ids : sequence of int
        The previous run's stable segment ids (its model's ``segment_ids``).
    prev_segments, new_segments :
        Either two pyarrow Tables with ``id_column`` and ``segment`` (joined
        by customer id; customers in only one run are ignored), or two
        equally long integer arrays, aligned per customer.  Previous
        segments hold previous ids; new segments hold cluster indices
        ``0..k-1``.
    n_clusters : int, optional
        k (default: the number of ``new_centroids``, else the largest new index + 1).
    next_id : int, optional
        The previous run's next unused id (default ``max(prev_ids) + 1``).
    min_overlap : int, default 1
        Fewest shared customers for a matched pair to keep the id.
    prev_centroids, new_centroids : arrays, optional
        Used when the runs share no customer: match on centroid distance.
    id_column : str
        The customer id column of the tables.

    Returns
    -------
    SegmentMatch
        ``ids`` (stable id per new cluster), ``vanished``, ``next_id``,
        ``overlap`` and counts.

    Examples
    --------
    >>> import numpy as np
    >>> from segone.track import match_segments
    >>> prev = np.array([5, 5, 5, 8, 8, 8])   # previous stable ids
    >>> new = np.array([1, 1, 1, 0, 0, 2])    # new cluster indices
    >>> m = match_segments([5, 8], prev, new)
    >>> m.ids.tolist(), m.next_id
    ([8, 5, 9], 10)
    """
    prev_ids = _check_prev_ids(prev_ids)
    if isinstance(prev_segments, (pa.Table, pa.RecordBatch)) or isinstance(new_segments, (pa.Table, pa.RecordBatch)):
        j = _join_tables(prev_segments, new_segments, id_column)
        both = (j.pi >= 0) & (j.ni >= 0)
        p = _segment_values(prev_segments, "previous")[j.pi[both]]
        n_all = _segment_values(new_segments, "new")
        n = n_all[j.ni[both]]
        if n_clusters is None and new_centroids is None:
            n_clusters = int(n_all.max()) + 1 if n_all.size else 0
    else:
        p, n = np.asarray(prev_segments), np.asarray(new_segments)
        if p.shape != n.shape or p.ndim != 1:
            raise ParameterError(
                f"prev_segments and new_segments must be equally long 1-D arrays (one entry per common customer), "
                f"got shapes {p.shape} and {n.shape}."
            )
    k = n_clusters
    if k is None:
        k = len(new_centroids) if new_centroids is not None else (int(n.max()) + 1 if n.size else 0)
    if n.size and (n.min() < 0 or n.max() >= k):
        raise DataError(f"new segments must be cluster indices in 0..{k - 1}, found {n.min()}..{n.max()}.")
    overlap = _overlap(prev_ids, p, n, k)
    if overlap.sum() == 0 and prev_centroids is not None and new_centroids is not None:
        return match_centroids(prev_ids, prev_centroids, new_centroids, next_id=next_id)
    return match_counts(prev_ids, overlap, next_id=next_id, min_overlap=min_overlap)


def _overlap(prev_ids, p, n, k):
    lut = _lookup(prev_ids)
    p = np.asarray(p, dtype=np.int64)
    if p.size and (p.min() < 0 or p.max() >= lut.size or (lut[p] < 0).any()):
        bad = np.unique(p[(p < 0) | (p >= lut.size)] if (p < 0).any() or (p >= lut.size).any() else p[lut[p] < 0])
        raise DataError(f"previous segments hold ids {examples(bad)} that are not among prev_ids {prev_ids.tolist()[:20]}.")
    P = prev_ids.size
    return np.bincount(lut[p] * k + np.asarray(n, dtype=np.int64), minlength=P * k).reshape(P, k)
