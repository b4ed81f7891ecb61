"""Dynamic segmentation: stable segment ids and who moved where between runs.

Three pieces:

* **Stable ids** (:func:`match_segments`, :func:`match_counts`,
  :func:`match_centroids`): the segments of a new run are matched one to
  one to the previous run's segment ids with the Hungarian algorithm
  (``scipy.optimize.linear_sum_assignment``), maximising the number of
  customers the matched segments share (customers present in both runs,
  joined by id).  A matched segment keeps its id; an unmatched one gets a
  new id from the ``next_id`` counter (ids are never reused); previous ids
  left without a match have *vanished*.  When the runs share no customer the
  match falls back to the distance between the centroids (in the same
  feature space).
* **Migration** (:func:`moves_piece`, :class:`Contingency`,
  :func:`migration_table`): the customers of both runs joined by id (for
  integer ids one compiled merge pass over the ids in increasing order --
  already sorted, or put in order by a counting sort for compact ranges and
  an O(n) radix sort otherwise --; Arrow's hash join for strings), one row
  per customer with its previous and new segment and a status (``stayed``,
  ``moved``, ``new``, ``gone``), and the mergeable per (previous segment,
  new segment) counts and spend sums (kind ``"migration"``).  The run
  figures (share of common customers that stayed, adjusted Rand index
  between the runs on the common customers, population stability index of
  the segment shares) are computed from the counts alone.
* **Per part** (:func:`track_parts`): on an engine, the previous
  assignments are read part by part, both runs are split by a hash of the
  customer id so that each customer's rows of both runs meet in one bucket,
  each bucket is joined into its moves and a :class:`Contingency`, and only
  the contingencies reach the driver (O(segments^2)), where the ids are
  matched; the moves are then renamed and written bucket by bucket.
* **Feature drift** (:class:`FeatureHistogram`, :func:`feature_psi`): a
  mergeable binned histogram of every feature, stored with the model, and
  the population stability index (PSI) of each feature between two runs.

Reading a previous output (:func:`read_previous`) and comparing two outputs
without refitting (:func:`compare_outputs`) build on these.

Previous outputs that cannot serve every purpose are handled so:

* a model of another format version (or another feature list) still has its
  ``assignments.parquet``, the version-independent record of which customer
  was in which segment id: the ids are matched on the customers only, and
  what could not be used (warm start, centroid fallback, feature PSI) is
  recorded in ``notes`` and ``feature_mismatch``.  Refusing would force a
  renumbering of every segment, which is what stable ids exist to avoid;
* a customer id type that changed (integers then, strings now) is a
  :class:`~segone.errors.SchemaError`: no customer could be joined;
* duplicated customer ids in the previous assignments are a
  :class:`~segone.errors.DataError`;
* a missing path is a :class:`~segone.errors.ParameterError`; a directory
  without ``assignments.parquet`` or ``model/`` (half-written, or not a
  segone output), or with truncated files, is a
  :class:`~segone.errors.ModelFormatError`.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from segone import outputs
from segone._state import State, array_from_data, array_to_data
from segone.errors import DataError, ModelFormatError, ParameterError, SchemaError, examples
from segone.io import to_float64
from segone.sketch import QuantileSketch

STATUSES = ("stayed", "moved", "new", "gone")
STAYED, MOVED, NEW, GONE = range(4)
PSI_EPSILON = 1e-4  # shares are floored at this before the PSI (an empty bin would give infinity)
PSI_BINS = 10
HIST_ALPHA = 0.01  # relative bucket width of the feature histograms


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


def _lookup(ids):
    """Dense lookup table id -> position (-1 for ids not listed)."""
    lut = np.full(int(ids.max()) + 1 if ids.size else 0, -1, dtype=np.int64)
    lut[ids] = np.arange(ids.size)
    return lut


# ------------------------------------------------------------------- joining
@dataclass
class _Join:
    """The union of two id columns: per union row, the row in each side (-1: absent)."""

    ids: object  # numpy int64 array or pyarrow array
    pi: np.ndarray
    ni: np.ndarray


def _id_array(ids, where):
    """A customer id column -> (numpy int64 array, None) or (None, arrow string array); checks nulls."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks != 1 else ids.chunk(0)
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind in "iu":
            return ids.astype(np.int64, copy=False), None
        ids = pa.array(ids)
    t = ids.type
    if pa.types.is_dictionary(t):
        ids = ids.cast(t.value_type)
        t = ids.type
    if ids.null_count:
        rows = np.flatnonzero(pc.is_null(ids).to_numpy(zero_copy_only=False))
        raise DataError(f"{where}: {ids.null_count} null customer ids (rows {examples(rows)}); drop those rows.")
    if pa.types.is_integer(t):
        return ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return None, ids.cast(pa.string()) if pa.types.is_large_string(t) else ids
    raise SchemaError(f"{where}: customer ids have type {t}; expected integers or strings.")


def id_kind(type_):
    """"integer" or "string" for an Arrow id type (dictionaries count as their values)."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_integer(type_):
        return "integer"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "string"
    return str(type_)


def check_id_types(prev_type, new_type, where="the previous run"):
    """Raise SchemaError when customer ids changed kind between runs (integers vs strings)."""
    a, b = id_kind(prev_type), id_kind(new_type)
    if a != b:
        raise SchemaError(
            f"customer ids were {a} ({prev_type}) in {where} but are {b} ({new_type}) now, so no customer can be "
            "matched between the runs. Give the ids the same type in both (e.g. cast with "
            "pyarrow.compute.cast(ids, pa.int64()) or pa.string()), or compare without tracking."
        )


def _duplicates(ids, where):
    vals, cnt = np.unique(ids, return_counts=True)
    dup = vals[cnt > 1]
    raise DataError(
        f"{where}: {dup.size} customer ids occur more than once (e.g. {examples(dup)}); every customer must have "
        "exactly one row. Deduplicate the assignments (or check that the right file was given)."
    )


def _join_ids(prev_ids, new_ids, where=("previous assignments", "new assignments")):
    """Full outer join of two unique id columns; rows sorted by id for integer ids."""
    p, ps = _id_array(prev_ids, where[0])
    n, ns = _id_array(new_ids, where[1])
    if (p is None) != (n is None):
        check_id_types(pa.string() if p is None else pa.int64(), pa.string() if n is None else pa.int64())
    if p is None:
        return _join_strings(ps, ns, where)
    nP, nN = p.size, n.size
    if (nP < 2 or bool((p[1:] > p[:-1]).all())) and (nN < 2 or bool((n[1:] > n[:-1]).all())):
        return _merge_sorted(p, n)
    if nP and nN:
        lo, hi = min(int(p.min()), int(n.min())), max(int(p.max()), int(n.max()))
        if hi - lo <= 2 * (nP + nN) + 4096:
            return _join_dense(p, n, lo, hi - lo + 1, where)
    op = np.argsort(p, kind="stable")
    on = np.argsort(n, kind="stable")
    sp, sn = p[op], n[on]
    for s, w in ((sp, where[0]), (sn, where[1])):
        if s.size > 1 and not (s[1:] > s[:-1]).all():
            _duplicates(s, w)
    j = _merge_sorted(sp, sn)
    pi = np.where(j.pi >= 0, op[np.maximum(j.pi, 0)], -1)
    ni = np.where(j.ni >= 0, on[np.maximum(j.ni, 0)], -1)
    return _Join(j.ids, pi, ni)


def _merge_sorted(P, N):
    """Union of two strictly increasing int64 arrays: O(n) after one binary search per new id."""
    nP, nN = P.size, N.size
    pos = np.searchsorted(P, N)
    if nP:
        matched = P[np.minimum(pos, nP - 1)] == N
    else:
        matched = np.zeros(nN, dtype=bool)
    hit = np.zeros(nP, dtype=bool)
    hit[pos[matched]] = True
    gone = np.flatnonzero(~hit)
    cg = np.zeros(nP + 1, dtype=np.int64)
    np.cumsum(~hit, out=cg[1:])
    out_new = np.arange(nN, dtype=np.int64)
    out_new += cg[pos]
    out_gone = np.searchsorted(N, P[gone]) + np.arange(gone.size)
    U = nN + gone.size
    ids = np.empty(U, dtype=np.int64)
    ids[out_new] = N
    ids[out_gone] = P[gone]
    ni = np.full(U, -1, dtype=np.int64)
    ni[out_new] = np.arange(nN)
    pi = np.full(U, -1, dtype=np.int64)
    pi[out_new[matched]] = pos[matched]
    pi[out_gone] = gone
    return _Join(ids, pi, ni)


def _join_dense(p, n, lo, R, where):
    """Direct addressing for ids in a compact range (no sort): rows sorted by id."""
    small = max(p.size, n.size) < 2**31 - 1
    dt = np.int32 if small else np.int64
    slots = []
    for ids, w in ((p, where[0]), (n, where[1])):
        row = np.full(R, -1, dtype=dt)
        row[ids - lo] = np.arange(ids.size, dtype=dt)
        if np.count_nonzero(row >= 0) != ids.size:
            _duplicates(ids, w)
        slots.append(row)
    rp, rn = slots
    u = np.flatnonzero((rp >= 0) | (rn >= 0))
    return _Join(u + lo, rp[u].astype(np.int64), rn[u].astype(np.int64))


def _join_strings(p, n, where):
    """Hash join (Arrow) for string ids; rows: the new run's order, then the gone customers in previous order."""
    for ids, w in ((p, where[0]), (n, where[1])):
        if pc.count_distinct(ids).as_py() != len(ids):
            vc = pc.value_counts(ids)
            dup = vc.field("values").filter(pc.greater(vc.field("counts"), 1)).to_pylist()
            raise DataError(
                f"{w}: {len(dup)} customer ids occur more than once (e.g. {', '.join(map(repr, dup[:5]))}); every "
                "customer must have exactly one row. Deduplicate the assignments."
            )
    a = pa.table({"k": p, "pi": pa.array(np.arange(len(p), dtype=np.int64))})
    b = pa.table({"k": n, "ni": pa.array(np.arange(len(n), dtype=np.int64))})
    j = a.join(b, "k", join_type="full outer", coalesce_keys=True)
    pi = pc.fill_null(j.column("pi"), -1).to_numpy()
    ni = pc.fill_null(j.column("ni"), -1).to_numpy()
    order = np.argsort(np.where(ni >= 0, ni, len(n) + pi), kind="stable")
    return _Join(j.column("k").take(pa.array(order)).combine_chunks(), pi[order], ni[order])


def _column(table, name, where):
    if name not in table.column_names:
        raise SchemaError(f"{where}: column {name!r} not found; it has {table.column_names[:20]}.")
    return table.column(name)


def _segment_values(table, where, column="segment"):
    col = _column(table, column, f"{where} assignments")
    if not pa.types.is_integer(col.type):
        raise SchemaError(f"{where} assignments: column {column!r} has type {col.type}; expected integers.")
    if col.null_count:
        raise DataError(f"{where} assignments: column {column!r} holds {col.null_count} nulls; every customer "
                        "needs a segment.")  # fmt: skip
    v = col.to_numpy() if isinstance(col, pa.Array) else np.asarray(col.to_numpy())
    v = v.astype(np.int64, copy=False)
    if v.size and v.min() < 0:
        raise DataError(f"{where} assignments: column {column!r} holds negative segments (e.g. "
                        f"{examples(v[v < 0])}); unassigned rows cannot be tracked.")  # fmt: skip
    return v


def _join_tables(prev, new, id_column):
    if isinstance(prev, pa.RecordBatch):
        prev = pa.Table.from_batches([prev])
    if isinstance(new, pa.RecordBatch):
        new = pa.Table.from_batches([new])
    return _join_ids(_column(prev, id_column, "previous assignments"), _column(new, id_column, "new assignments"))


def _spend_values(table, spend):
    if spend is None or spend not in table.column_names:
        return None
    col = table.column(spend)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise SchemaError(f"spend column {spend!r} has type {col.type}; expected numbers.")
    return pc.fill_null(to_float64(col), np.nan).to_numpy()


@dataclass
class _Moves:
    ids: object
    prev: np.ndarray  # segment id, -1 where absent
    new: np.ndarray
    status: np.ndarray  # int8
    spend: np.ndarray | None
    contingency: "Contingency | None" = None  # filled by the fused integer path


# the fused sort-merge of two runs' integer ids (compiled on first use, cached on disk)
@njit(nogil=True, cache=True)
def _merge(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts,
          csum):  # pragma: no cover
    # P, N: the sorted ids; op, on: the row of each sorted id in ps / sp and ns / sn (empty: the same row)
    nP, nN = P.shape[0], N.shape[0]
    use_op = op.shape[0] == nP and nP > 0
    use_on = on.shape[0] == nN and nN > 0
    for i in range(1, nP):
        if P[i] <= P[i - 1]:
            return -1
    for j in range(1, nN):
        if N[j] <= N[j - 1]:
            return -2
    use_sp = sp.shape[0] == nP and nP > 0
    use_sn = sn.shape[0] == nN and nN > 0
    has_spend = spend.shape[0] > 0
    pa_, na_ = counts.shape[0] - 1, counts.shape[1] - 1
    i = 0
    j = 0
    u = 0
    nan = np.nan
    while i < nP or j < nN:
        if j >= nN or (i < nP and P[i] < N[j]):
            ri = op[i] if use_op else i
            a = ps[ri]
            ids[u] = P[i]
            prev[u] = a
            new[u] = -1
            status[u] = 3
            r = lp[a]
            c = na_
            v = sp[ri] if use_sp else nan
            i += 1
        elif i >= nP or N[j] < P[i]:
            rj = on[j] if use_on else j
            b = ns[rj]
            ids[u] = N[j]
            prev[u] = -1
            new[u] = b
            status[u] = 2
            r = pa_
            c = ln[b]
            v = sn[rj] if use_sn else nan
            j += 1
        else:
            ri = op[i] if use_op else i
            rj = on[j] if use_on else j
            a = ps[ri]
            b = ns[rj]
            ids[u] = P[i]
            prev[u] = a
            new[u] = b
            status[u] = 0 if a == b else 1
            r = lp[a]
            c = ln[b]
            v = sn[rj] if use_sn else nan
            i += 1
            j += 1
        counts[r, c] += 1
        if has_spend:
            spend[u] = v
            if v == v:
                csum[r, c] += v
        u += 1
    return u



# the LSD radix argsort of int64 keys (compiled on first use, cached on disk)
@njit(nogil=True, cache=True)
def _radix_argsort(keys, ia, ib):  # pragma: no cover - compiled
    # 11-bit digits of the key with its sign bit flipped (so negative ids sort first); one pass
    # builds every digit's histogram, digits that are the same for every key are skipped
    n = keys.shape[0]
    bits = 11
    R = 1 << bits
    D = 6  # 66 bits >= 64
    sign = np.uint64(1) << np.uint64(63)
    mask = np.uint64(R - 1)
    hist = np.zeros((D, R), dtype=np.int64)
    ka = np.empty(n, dtype=np.uint64)
    for i in range(n):
        v = np.uint64(keys[i]) ^ sign
        ka[i] = v
        for d in range(D):
            hist[d, np.int64((v >> np.uint64(d * bits)) & mask)] += 1
    kb = np.empty(n, dtype=np.uint64)
    off = np.empty(R, dtype=np.int64)
    first = True
    for d in range(D):
        shift = np.uint64(d * bits)
        if n == 0 or hist[d, np.int64((ka[0] >> shift) & mask)] == n:
            continue
        s = 0
        for b in range(R):
            off[b] = s
            s += hist[d, b]
        if first:
            for i in range(n):
                v = ka[i]
                b = np.int64((v >> shift) & mask)
                p = off[b]
                kb[p] = v
                ib[p] = i
                off[b] = p + 1
            first = False
        else:
            for i in range(n):
                v = ka[i]
                b = np.int64((v >> shift) & mask)
                p = off[b]
                kb[p] = v
                ib[p] = ia[i]
                off[b] = p + 1
        ka, kb = kb, ka
        ia, ib = ib, ia
    if first:
        for i in range(n):
            ia[i] = i
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = np.int64(ka[i] ^ sign)
    return out, ia



def _argsort_ids(ids):
    """(sorted ids, order) of unique int64 ids: a radix sort (O(n), any int64 incl. negative)."""
    dt = np.int32 if ids.size < 2**31 - 1 else np.int64
    return _radix_argsort(np.ascontiguousarray(ids, dtype=np.int64), np.empty(ids.size, dtype=dt), np.empty(ids.size, dtype=dt))


def _sorted_side(ids, where):
    """(ids in increasing order, the row of each, or None when already sorted): a counting or a radix sort."""
    n = ids.size
    if n < 2 or bool((ids[1:] > ids[:-1]).all()):
        return ids, None
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo <= 4 * n + 4096:  # compact range: counting sort, no comparisons
        dt = np.int32 if n < 2**31 - 1 else np.int64
        slot = np.full(hi - lo + 1, -1, dtype=dt)
        slot[ids - lo] = np.arange(n, dtype=dt)
        order = slot[slot >= 0]
        if order.size != n:
            _duplicates(ids, where)
        sids = ids[order]
    else:  # sparse or huge ids: a radix sort (duplicates are found by the merge, which needs strict order)
        sids, order = _argsort_ids(ids)
    return sids, order


def _moves_ints(p, n, ps, ns, sp, sn, where):
    """The fused path for integer ids: sort-merge, segments, status, spend and the contingency in one pass."""
    P, op = _sorted_side(p, where[0])  # the segments and spend are read through the orders by the kernel
    N, on = _sorted_side(n, where[1])
    pk, nk = _keys_of(ps), _keys_of(ns)
    lp = np.full(int(pk.max()) + 1 if pk.size else 1, pk.size, dtype=np.int64)
    lp[pk] = np.arange(pk.size)
    ln = np.full(int(nk.max()) + 1 if nk.size else 1, nk.size, dtype=np.int64)
    ln[nk] = np.arange(nk.size)
    L = P.size + N.size
    has_spend = sp is not None or sn is not None
    empty = np.empty(0)
    ids = np.empty(L, dtype=np.int64)
    prev = np.empty(L, dtype=np.int32)
    new = np.empty(L, dtype=np.int32)
    status = np.empty(L, dtype=np.int8)
    spend = np.empty(L if has_spend else 0)
    counts = np.zeros((pk.size + 1, nk.size + 1), dtype=np.int64)
    csum = np.zeros(counts.shape)
    none = np.empty(0, dtype=np.int64)
    u = _merge(P, N, none if op is None else op, none if on is None else on, ps.astype(np.int64, copy=False),
             ns.astype(np.int64, copy=False), empty if sp is None else sp, empty if sn is None else sn, lp, ln, ids,
             prev, new, status, spend, counts, csum)  # fmt: skip
    if u < 0:
        _duplicates(P if u == -1 else N, where[0] if u == -1 else where[1])
    cont = Contingency(pk, nk, counts, csum if has_spend else None)
    return _Moves(ids[:u], prev[:u], new[:u], status[:u], spend[:u] if has_spend else None, cont)


def _moves_arrays(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None,
                  where=("previous assignments", "new assignments")):  # fmt: skip
    for t in (prev_table, new_table):
        if not isinstance(t, (pa.Table, pa.RecordBatch)):
            raise ParameterError(f"expected pyarrow Tables of assignments, got {type(t).__name__}.")
    ps = _segment_values(prev_table, "previous")
    ns = _segment_values(new_table, "new")
    if segment_ids is not None:
        sid = np.asarray(segment_ids, dtype=np.int64)
        if ns.size and ns.max() >= sid.size:
            raise DataError(f"new segments run to {ns.max()} but segment_ids maps only {sid.size} clusters.")
        ns = sid[ns]
    sp = _spend_values(prev_table, spend) if spend is not None else None
    sn = _spend_values(new_table, spend) if spend is not None else None
    if spend is not None and sp is None and sn is None:
        sn = np.full(ns.size, np.nan)  # asked for, found nowhere: an all-null spend column
    p, pstr = _id_array(_column(prev_table, id_column, where[0]), where[0])
    n, nstr = _id_array(_column(new_table, id_column, where[1]), where[1])
    if (p is None) != (n is None):
        check_id_types(pa.string() if p is None else pa.int64(), pa.string() if n is None else pa.int64())
    if p is not None:
        return _moves_ints(p, n, ps, ns, sp, sn, where)
    j = _join_strings(pstr, nstr, where)
    inp, inn = j.pi >= 0, j.ni >= 0
    prev = np.full(j.pi.size, -1, dtype=np.int64)
    new = np.full(j.ni.size, -1, dtype=np.int64)
    prev[inp] = ps[j.pi[inp]]
    new[inn] = ns[j.ni[inn]]
    status = np.where(inp & inn, np.where(prev == new, STAYED, MOVED), np.where(inn, NEW, GONE)).astype(np.int8)
    sv = None
    if spend is not None:
        sv = np.full(j.pi.size, np.nan)
        if sn is not None:
            sv[inn] = sn[j.ni[inn]]
        if sp is not None:
            gone = ~inn
            sv[gone] = sp[j.pi[gone]]
    return _Moves(j.ids, prev, new, status, sv)


def _relabel_moves(m, mapping):
    """Rename the new segments of moves arrays through ``mapping`` (index -> id) and redo the statuses."""
    inn = m.new >= 0
    m.new[inn] = np.asarray(mapping)[m.new[inn]]
    both = m.status <= MOVED
    m.status[both] = np.where(m.prev[both] == m.new[both], STAYED, MOVED)


def _overlap_from(cont, prev_ids, cols, k):
    """The (prev_ids x k) common-customer counts of a contingency whose new keys sit in columns ``cols``."""
    out = np.zeros((prev_ids.size, k), dtype=np.int64)
    if not (cont.prev_ids.size and cont.new_ids.size):
        return out
    unknown = np.setdiff1d(cont.prev_ids, prev_ids)
    if unknown.size:
        raise DataError(f"previous segments {unknown.tolist()[:10]} are not among the previous ids "
                        f"{prev_ids.tolist()[:20]}.")  # fmt: skip
    rows = _lookup(prev_ids)[cont.prev_ids]
    out[np.ix_(rows, np.asarray(cols))] = cont.common()
    return out


def _contingency_of(m):
    return m.contingency if m.contingency is not None else Contingency.of_arrays(m.prev, m.new, m.spend)


def _moves_table(m, id_column):
    status = pa.DictionaryArray.from_arrays(pa.array(m.status, type=pa.int8()), pa.array(STATUSES))
    cols = {
        id_column: pa.array(m.ids) if isinstance(m.ids, np.ndarray) else m.ids,
        "previous_segment": pa.array(m.prev.astype(np.int32), mask=m.prev < 0),
        "segment": pa.array(m.new.astype(np.int32), mask=m.new < 0),
        "status": status,
    }
    if m.spend is not None:
        cols["spend"] = pa.array(m.spend, mask=np.isnan(m.spend))
    return pa.table(cols)


def moves_piece(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None):
    """Who moved where: one row per customer of either run.

    Parameters
    ----------
    prev_table, new_table : pyarrow Table
        Assignments of the previous and the new run: ``id_column`` and
        ``segment`` (plus the ``spend`` column, if given).  Ids are unique
        within each table (duplicates raise DataError), integers or strings
        in both (a mix raises SchemaError).
    id_column : str
    segment_ids : array of int, optional
        Maps the new table's segment (a cluster index) to its stable id.
    spend : str, optional
        A spend column: the new run's value for customers present now, the
        previous run's value for those gone (null where the table lacks it).

    Returns
    -------
    pyarrow.Table
        ``id_column``, ``previous_segment`` and ``segment`` (int32, null
        where the customer is absent from that run), ``status``
        (dictionary: stayed, moved, new, gone) and ``spend`` when asked.
        Every customer of either run appears exactly once; rows are sorted by
        id for integer ids, and for string ids follow the new run's order,
        then the gone customers in the previous run's order.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> m = moves_piece(prev, new)
    >>> m.column("status").to_pylist()
    ['gone', 'stayed', 'moved', 'new']
    >>> m.column("previous_segment").to_pylist(), m.column("segment").to_pylist()
    ([0, 0, 1, None], [None, 0, 0, 1])
    """
    return _moves_table(_moves_arrays(prev_table, new_table, id_column=id_column, segment_ids=segment_ids,
                                      spend=spend), id_column)  # fmt: skip


# -------------------------------------------------------------- the contingency
def _keys_of(v):
    """Sorted distinct non-negative values of an int64 array (bincount when they are small)."""
    v = v[v >= 0]
    if not v.size:
        return np.empty(0, dtype=np.int64)
    top = int(v.max())
    if top < 4 * v.size + 1024:
        return np.flatnonzero(np.bincount(v, minlength=top + 1)).astype(np.int64)
    return np.unique(v)


class Contingency(State):
    """Mergeable migration counts: customers and spend per (previous segment, new segment).

    ``counts[i, j]`` counts the customers in previous segment ``prev_ids[i]``
    now in segment ``new_ids[j]``; the extra last row counts customers absent
    before (new customers, per new segment) and the extra last column those
    absent now (gone customers, per previous segment).  ``spend`` holds the
    spend sums of the same cells.  Built per piece of the *joined* data (a
    moves table, :func:`moves_piece`), merged by adding the cells (the keys
    are unioned): counts merge exactly, spend sums up to float64 rounding.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import Contingency, moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> m = moves_piece(prev, new)
    >>> c = Contingency.of(m.slice(0, 2)).merge(Contingency.of(m.slice(2)))
    >>> c == Contingency.of(m), c.stayed_share(), c.customers()
    (True, 0.5, {'previous': 3, 'now': 3, 'common': 2, 'new': 1, 'gone': 1, 'stayed': 1, 'moved': 1})
    """

    kind = "migration"

    def __init__(self, prev_ids, new_ids, counts, spend=None):
        self.prev_ids = np.asarray(prev_ids, dtype=np.int64)
        self.new_ids = np.asarray(new_ids, dtype=np.int64)
        shape = (self.prev_ids.size + 1, self.new_ids.size + 1)
        self.counts = np.asarray(counts, dtype=np.int64).reshape(shape)
        self.spend = None if spend is None else np.asarray(spend, dtype=np.float64).reshape(shape)

    @classmethod
    def empty(cls, spend=True):
        return cls([], [], np.zeros((1, 1)), np.zeros((1, 1)) if spend else None)

    @classmethod
    def of(cls, piece, *, spend="spend"):
        """The state of one piece of joined data: a moves table (``previous_segment``, ``segment``, ``spend``)."""
        if isinstance(piece, pa.RecordBatch):
            piece = pa.Table.from_batches([piece])
        prev = pc.fill_null(_column(piece, "previous_segment", "moves"), -1).to_numpy().astype(np.int64)
        new = pc.fill_null(_column(piece, "segment", "moves"), -1).to_numpy().astype(np.int64)
        sv = None
        if spend is not None and spend in piece.column_names:
            sv = pc.fill_null(to_float64(piece.column(spend)), 0.0).to_numpy()
        return cls.of_arrays(prev, new, sv)

    @classmethod
    def of_arrays(cls, prev, new, spend=None):
        """From per-customer arrays: previous and new segment ids (-1 where absent) and optional spend."""
        prev = np.asarray(prev, dtype=np.int64)
        new = np.asarray(new, dtype=np.int64)
        if prev.shape != new.shape or prev.ndim != 1:
            raise ParameterError(f"prev and new must be equally long 1-D arrays, got {prev.shape} and {new.shape}.")
        both_absent = (prev < 0) & (new < 0)
        if both_absent.any():
            raise DataError(f"{int(both_absent.sum())} rows are absent from both runs (rows "
                            f"{examples(np.flatnonzero(both_absent))}); a moves row needs at least one segment.")  # fmt: skip
        pk, nk = _keys_of(prev), _keys_of(new)
        P, N = pk.size, nk.size
        lp = np.full(int(pk.max()) + 2 if P else 1, P, dtype=np.int64)
        lp[pk + 1] = np.arange(P)
        ln = np.full(int(nk.max()) + 2 if N else 1, N, dtype=np.int64)
        ln[nk + 1] = np.arange(N)
        code = lp[prev + 1]
        code *= N + 1
        code += ln[new + 1]
        size = (P + 1) * (N + 1)
        counts = np.bincount(code, minlength=size)
        sp = None
        if spend is not None:
            w = np.nan_to_num(np.asarray(spend, dtype=np.float64), nan=0.0)
            sp = np.bincount(code, weights=w, minlength=size)
        return cls(pk, nk, counts, sp)

    def merge(self, other):
        self._check_same(other)
        pk = np.union1d(self.prev_ids, other.prev_ids)
        nk = np.union1d(self.new_ids, other.new_ids)
        counts = np.zeros((pk.size + 1, nk.size + 1), dtype=np.int64)
        both = self.spend is not None and other.spend is not None
        spend = np.zeros(counts.shape) if both else None
        for s in (self, other):
            r = np.append(np.searchsorted(pk, s.prev_ids), pk.size)
            c = np.append(np.searchsorted(nk, s.new_ids), nk.size)
            counts[np.ix_(r, c)] += s.counts
            if both:
                spend[np.ix_(r, c)] += s.spend
        return Contingency(pk, nk, counts, spend)

    def relabel(self, mapping):
        """A new state with the new segments renamed: ``new_ids[j] -> mapping[new_ids[j]]`` (one to one)."""
        mapping = np.asarray(mapping, dtype=np.int64)
        if self.new_ids.size and self.new_ids.max() >= mapping.size:
            raise ParameterError(f"mapping covers ids 0..{mapping.size - 1} but the state holds id {self.new_ids.max()}.")
        nk = mapping[self.new_ids]
        if np.unique(nk).size != nk.size:
            raise ParameterError("mapping must send different segments to different ids.")
        order = np.argsort(nk, kind="stable")
        cols = np.append(order, self.new_ids.size)
        spend = None if self.spend is None else self.spend[:, cols]
        return Contingency(self.prev_ids, nk[order], self.counts[:, cols], spend)

    def finish(self):
        """The migration table (see :func:`migration_table`)."""
        return migration_table(self)

    # -- figures ------------------------------------------------------------------
    def common(self):
        """The (previous x new) counts of the customers present in both runs."""
        return self.counts[:-1, :-1]

    def customers(self):
        """Customer counts: previous, now, common, new, gone, stayed, moved."""
        common = int(self.common().sum())
        stayed = self._stayed()
        return {
            "previous": int(self.counts[:-1, :].sum()),
            "now": int(self.counts[:, :-1].sum()),
            "common": common,
            "new": int(self.counts[-1, :-1].sum()),
            "gone": int(self.counts[:-1, -1].sum()),
            "stayed": stayed,
            "moved": common - stayed,
        }

    def _stayed(self):
        _, ip, jn = np.intersect1d(self.prev_ids, self.new_ids, return_indices=True)
        return int(self.counts[ip, jn].sum())

    def stayed_share(self):
        """Share of the common customers whose segment id did not change (None without common customers)."""
        common = int(self.common().sum())
        return self._stayed() / common if common else None

    def adjusted_rand(self):
        """Adjusted Rand index of the two runs' segmentations on the common customers, from the counts.

        The pair-counting form of scikit-learn's ``adjusted_rand_score``
        (in exact integer arithmetic); None without common customers.
        """
        C = self.common()
        n = int(C.sum())
        if n == 0:
            return None
        sum_sq = int((C.astype(object) ** 2).sum()) if C.size else 0
        a = [int(v) for v in C.sum(axis=1)]
        b = [int(v) for v in C.sum(axis=0)]
        fp = sum(v * v for v in b) - sum_sq
        fn = sum(v * v for v in a) - sum_sq
        tp = sum_sq - n
        tn = n * n - fp - fn - sum_sq
        if fn == 0 and fp == 0:
            return 1.0
        return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))

    def shares(self):
        """(ids, previous shares, new shares) of every segment id of either run."""
        ids = np.union1d(self.prev_ids, self.new_ids)
        prev_n = self.counts[:-1, :].sum(axis=1)
        new_n = self.counts[:, :-1].sum(axis=0)
        p = np.zeros(ids.size)
        q = np.zeros(ids.size)
        p[np.searchsorted(ids, self.prev_ids)] = prev_n / max(prev_n.sum(), 1)
        q[np.searchsorted(ids, self.new_ids)] = new_n / max(new_n.sum(), 1)
        return ids, p, q

    def segment_psi(self):
        """Population stability index of the segment shares (previous -> now), per stable id.

        ``sum((q - p) * ln(q / p))`` with shares floored at ``PSI_EPSILON``
        (a segment that exists in one run only counts with that floor).
        Rules of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 large.
        """
        ids, p, q = self.shares()
        if not ids.size:
            return None
        return psi(p, q)

    def figures(self):
        """The tracking figures of run.json (JSON-safe)."""
        c = self.customers()
        ids, p, q = self.shares()
        return {
            "customers": c,
            "stayed_share": self.stayed_share(),
            "adjusted_rand_common": self.adjusted_rand(),
            "segment_psi": self.segment_psi(),
            "segment_shares": {str(int(i)): {"previous": float(a), "now": float(b)} for i, a, b in zip(ids, p, q)},
        }

    def _data(self):
        return {
            "prev_ids": self.prev_ids.tolist(),
            "new_ids": self.new_ids.tolist(),
            "counts": array_to_data(self.counts),
            "spend": None if self.spend is None else array_to_data(self.spend),
        }

    @classmethod
    def _from_data(cls, d):
        spend = None if d["spend"] is None else array_from_data(d["spend"], "spend")
        return cls(d["prev_ids"], d["new_ids"], array_from_data(d["counts"], "counts"), spend)


def psi(expected, actual, epsilon=PSI_EPSILON):
    """Population stability index ``sum((a - e) * ln(a / e))`` of two share vectors (floored at ``epsilon``).

    Examples
    --------
    >>> from segone.track import psi
    >>> round(psi([0.5, 0.5], [0.6, 0.4]), 4)
    0.0405
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(((a - e) * np.log(a / e)).sum())


def migration_table(contingency):
    """The migration.parquet rows: one per (from, to) pair holding customers.

    Columns: ``from_segment`` (null: absent before, i.e. new customers),
    ``to_segment`` (null: absent now, i.e. gone customers), ``status``,
    ``customers``, ``share`` (of the from-segment's customers; of all new
    customers for the null row) and ``spend`` (the spend of those customers,
    null when no spend column was given).  Sorted by from, then to (nulls last).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import Contingency, migration_table, moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> t = migration_table(Contingency.of(moves_piece(prev, new)))
    >>> t.select(["from_segment", "to_segment", "customers", "share"]).to_pylist()[:2]
    [{'from_segment': 0, 'to_segment': 0, 'customers': 1, 'share': 0.5}, {'from_segment': 0, 'to_segment': None, 'customers': 1, 'share': 0.5}]
    """
    c = contingency
    P, N = c.prev_ids.size, c.new_ids.size
    r, k = np.nonzero(c.counts)
    frm = np.append(c.prev_ids, -1)[r]
    to = np.append(c.new_ids, -1)[k]
    n = c.counts[r, k]
    row_tot = c.counts.sum(axis=1)[r]
    status = np.where((r < P) & (k < N), np.where(frm == to, STAYED, MOVED), np.where(k < N, NEW, GONE))
    # order: from ascending (absent last), then to ascending (absent last)
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(to < 0, big, to), np.where(frm < 0, big, frm)))
    frm, to, n, row_tot, status, r, k = (a[order] for a in (frm, to, n, row_tot, status, r, k))
    spend = c.spend[r, k] if c.spend is not None else np.full(r.size, np.nan)
    return pa.table({
        "from_segment": pa.array(frm.astype(np.int32), mask=frm < 0),
        "to_segment": pa.array(to.astype(np.int32), mask=to < 0),
        "status": pa.DictionaryArray.from_arrays(pa.array(status.astype(np.int8)), pa.array(STATUSES)),
        "customers": pa.array(n.astype(np.int64)),
        "share": pa.array(n / np.maximum(row_tot, 1)),
        "spend": pa.array(spend, mask=np.full(r.size, c.spend is None)),
    })  # fmt: skip


def moves_and_contingency(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None):
    """:func:`moves_piece` and its :class:`Contingency` from one join (the fast path of a whole comparison).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import moves_and_contingency
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [0, 0, 1], "spend": [5.0, 1.0, 2.0]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1], "spend": [3.0, 4.0, 6.0]})
    >>> moves, cont = moves_and_contingency(prev, new, spend="spend")
    >>> moves.num_rows, float(cont.spend.sum())
    (4, 18.0)
    """
    m = _moves_arrays(prev_table, new_table, id_column=id_column, segment_ids=segment_ids, spend=spend)
    return _moves_table(m, id_column), _contingency_of(m)


# ---------------------------------------------------------- feature histograms
class FeatureHistogram(State):
    """Mergeable binned distribution of every feature (kind ``"feature_histogram"``).

    Bins: the buckets of a DDSketch (:class:`~segone.sketch.QuantileSketch`)
    per feature: logarithmic buckets of relative width ``alpha`` (1%) on
    each side of 0, values within 1e-9 of 0 in one zero bucket, plus a count
    of missing (null or non-finite) values.  The buckets do not depend on
    the data, so histograms of pieces merge exactly, and histograms of two
    runs compare bucket by bucket.  :func:`feature_psi` groups the buckets
    into (at most) 10 bins at the deciles of the reference run.

    Built on the raw profile columns named by the scorer's features (before
    the scaling, which differs between runs).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from segone.track import FeatureHistogram
    >>> t = pa.table({"x": np.arange(100.0), "y": np.ones(100)})
    >>> h = FeatureHistogram.of(t.slice(0, 30), features=["x", "y"]).merge(
    ...     FeatureHistogram.of(t.slice(30), features=["x", "y"]))
    >>> h == FeatureHistogram.of(t, features=["x", "y"]), h.count()
    (True, 100)
    """

    kind = "feature_histogram"

    def __init__(self, features, sketches, missing, alpha=HIST_ALPHA):
        self.features = list(features)
        self.sketches = list(sketches)
        self.missing = np.asarray(missing, dtype=np.int64)
        self.alpha = float(alpha)
        if len(self.sketches) != len(self.features) or self.missing.shape != (len(self.features),):
            raise ParameterError("FeatureHistogram: one sketch and one missing count per feature are needed.")

    @classmethod
    def of(cls, profiles, *, features, alpha=HIST_ALPHA):
        from segone.io import read_table

        features = list(features)
        table = read_table(profiles, None, name="profiles")
        sketches, missing = [], []
        for f in features:
            sk = QuantileSketch(alpha)
            if f not in table.column_names:  # a share / channel column absent from these profiles: all 0
                sk.update(np.zeros(table.num_rows))
                missing.append(0)
            else:
                col = table.column(f)
                v = to_float64(col).to_numpy(zero_copy_only=False) if col.num_chunks else np.empty(0)
                v = np.asarray(v, dtype=np.float64)
                ok = np.isfinite(v)
                sk.update(v[ok])
                missing.append(int(v.size - ok.sum()))
            sketches.append(sk)
        return cls(features, sketches, missing, alpha)

    def merge(self, other):
        self._check_same(other, "features", "alpha")
        return FeatureHistogram(self.features, [a.merge(b) for a, b in zip(self.sketches, other.sketches)],
                                self.missing + other.missing, self.alpha)  # fmt: skip

    def finish(self):
        return self

    def count(self):
        """Rows seen (the same for every feature)."""
        return int(self.sketches[0].count + self.missing[0]) if self.features else 0

    def _data(self):
        return {"features": self.features, "alpha": self.alpha, "missing": self.missing.tolist(),
                "sketches": [s.to_dict() for s in self.sketches]}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        from segone._validation import check_stored_array, check_stored_number

        where = "feature histogram"
        feats = d["features"]
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise ValueError("features must be a list of names")
        alpha = check_stored_number(d.get("alpha"), "alpha", where, low=0.0, high=0.5, low_inclusive=False)
        missing = check_stored_array(d.get("missing"), "missing", where, length=len(feats), low=0, integer=True)
        sk = d.get("sketches")
        if not isinstance(sk, list) or len(sk) != len(feats):
            raise ModelFormatError(
                f"{where}: field 'sketches' must be a list of {len(feats)} sketches (one per feature)."
            )
        sketches = [QuantileSketch.from_dict(s, f"{where}: sketches[{j}]") for j, s in enumerate(sk)]
        if any(s.alpha != alpha for s in sketches):
            raise ModelFormatError(f"{where}: the sketches' alpha differs from field 'alpha' ({alpha}).")
        rows = {s.count + int(m) for s, m in zip(sketches, missing)}
        if len(rows) > 1:
            raise ModelFormatError(f"{where}: the features count different numbers of rows ({sorted(rows)[:5]}); "
                                   "every feature sees every row.")  # fmt: skip
        return cls(feats, sketches, missing, alpha)


def _bucket_table(sketch):
    vals, counts = sketch._table(as_coords=True)
    keep = counts > 0
    return vals[keep], counts[keep].astype(np.float64)


def feature_psi(reference, current, bins=PSI_BINS):
    """Population stability index of every feature common to two :class:`FeatureHistogram`.

    The sketch buckets are grouped into at most ``bins`` bins at the
    ``1/bins, 2/bins, ...`` quantiles of the reference (the previous run, or
    the model's training data); a bucket holding more than one decile makes
    fewer bins.  Missing values form their own bin.  Shares are floored at
    ``PSI_EPSILON`` (1e-4).  Returns ``{feature: psi}`` (None for a feature
    that is empty in either run).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from segone.track import FeatureHistogram, feature_psi
    >>> rng = np.random.default_rng(0)
    >>> a = FeatureHistogram.of(pa.table({"x": rng.lognormal(0, 1, 10_000)}), features=["x"])
    >>> b = FeatureHistogram.of(pa.table({"x": rng.lognormal(0.5, 1, 10_000)}), features=["x"])
    >>> feature_psi(a, a)["x"], feature_psi(a, b)["x"] > 0.2
    (0.0, True)
    """
    if not isinstance(reference, FeatureHistogram) or not isinstance(current, FeatureHistogram):
        raise ParameterError("feature_psi compares two FeatureHistogram states.")
    if reference.alpha != current.alpha:
        raise ParameterError(f"histograms with different bucket widths ({reference.alpha} vs {current.alpha}).")
    out = {}
    pos = {f: i for i, f in enumerate(current.features)}
    for i, f in enumerate(reference.features):
        if f not in pos:
            continue
        j = pos[f]
        rv, rc = _bucket_table(reference.sketches[i])
        cv, cc = _bucket_table(current.sketches[j])
        rm, cm = float(reference.missing[i]), float(current.missing[j])
        rn, cn = rc.sum() + rm, cc.sum() + cm
        if rn == 0 or cn == 0:
            out[f] = None
            continue
        if rv.size:
            cum = np.cumsum(rc)
            targets = np.arange(1, bins) / bins * rc.sum()
            edges = np.unique(rv[np.minimum(np.searchsorted(cum, targets, side="left"), rv.size - 1)])
        else:
            edges = np.empty(0)
        nb = edges.size + 1
        e = np.append(np.bincount(np.searchsorted(edges, rv, side="left"), weights=rc, minlength=nb), rm) / rn
        a = np.append(np.bincount(np.searchsorted(edges, cv, side="left"), weights=cc, minlength=nb), cm) / cn
        out[f] = psi(e, a)
    return out


# ---------------------------------------------------------- previous outputs
ASSIGNMENT_COLUMNS = ("segment", "distance", "margin")


PART_ROWS = 1 << 20  # rows per part when a previous output's assignments are read part by part


def _read_assignments(path, id_column, spend, lazy=False):
    """(table or None when ``lazy``, id column, columns to read, the parts: ``(file, row groups)``, id type)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    apath = os.path.join(path, outputs.ASSIGNMENTS)
    if not os.path.exists(apath):
        raise ModelFormatError(
            f"{path}: assignments.parquet is missing, so this is not a complete segone output (a half-written "
            "directory, or the wrong folder?). Pass the --out directory of a finished `segone run`, or re-run it."
        )
    try:
        from segone.io import parquet_format

        dataset = ds.dataset(apath, format=parquet_format())  # page checksums verified where written
        names = dataset.schema.names
        cid = id_column
        if cid is None:
            cid = "customer_id" if "customer_id" in names else next((c for c in names if c not in
                                                                      ASSIGNMENT_COLUMNS), None)  # fmt: skip
        if cid is None or cid not in names:
            raise ModelFormatError(
                f"{apath}: no customer id column {id_column or 'customer_id'!r} (columns {names}); pass "
                "id_column= (the name the run's schema used)."
            )
        if "segment" not in names:
            raise ModelFormatError(f"{apath}: field 'segment' is missing (columns {names}); not a segone output.")
        wanted = [spend] if isinstance(spend, str) else list(spend or ())
        cols = [cid, "segment"] + [c for c in wanted if c in names and c not in (cid, "segment")]
        id_type = dataset.schema.field(cid).type
        if not lazy:
            return dataset.to_table(columns=cols), cid, cols, None, id_type
        parts = []  # the footers only: every file is readable, and big files are read in row-group ranges
        for f in dataset.files:
            md = pq.ParquetFile(f).metadata
            group, rows = [], 0
            for g in range(md.num_row_groups):
                group.append(g)
                rows += md.row_group(g).num_rows
                if rows >= PART_ROWS:
                    parts.append((f, tuple(group)))
                    group, rows = [], 0
            if group or not md.num_row_groups:
                parts.append((f, tuple(group)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ModelFormatError(f"{apath}: cannot be read ({exc}); the file is truncated or corrupt. Re-run the "
                               "job that wrote it.") from None  # fmt: skip
    return None, cid, cols, parts, id_type


def previous_piece(source, *, id_column, columns, segment_ids=None, where="previous assignments"):
    """One part of a previous output's assignments, read and checked: ``id_column``, ``segment`` (and spend).

    ``source`` is a pyarrow Table (already read) or ``(file, row groups)``
    from :attr:`PreviousRun.parts`.  Null ids, null, negative or non-integer
    segments raise DataError / SchemaError, segments that are not among
    ``segment_ids`` (the previous model's) ModelFormatError; duplicated ids
    are found when the parts are joined (:func:`moves_bucket`).
    """
    import pyarrow.parquet as pq

    if isinstance(source, (pa.Table, pa.RecordBatch)):
        table = source if isinstance(source, pa.Table) else pa.Table.from_batches([source])
        table = table.select([c for c in columns if c in table.column_names])
    else:
        path, groups = source
        try:
            pf = pq.ParquetFile(path, page_checksum_verification=True)
            table = pf.read_row_groups(list(groups), columns=list(columns)) if groups else \
                pf.schema_arrow.empty_table().select(list(columns))  # fmt: skip
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise ModelFormatError(f"{path}: cannot be read ({exc}); the file is truncated or corrupt. Re-run the "
                                   "job that wrote it.") from None  # fmt: skip
    seg = _segment_values(table, where)
    _id_array(_column(table, id_column, where), where)  # null ids, id type
    if segment_ids is not None:
        unknown = np.setdiff1d(_keys_of(seg), np.asarray(segment_ids, dtype=np.int64))
        if unknown.size:
            raise ModelFormatError(
                f"{where}: segments {unknown.tolist()[:10]} are not among the model's segment ids "
                f"{np.asarray(segment_ids).tolist()[:20]}; assignments.parquet and model/ come from different runs. "
                "Pass an untouched output directory."
            )
    return table


@dataclass
class PreviousRun:
    """A previous output read by :func:`read_previous`.

    Attributes
    ----------
    path : str
    assignments : pyarrow.Table
        ``id_column``, ``segment`` (stable ids) and the spend column if asked and present.
    id_column : str
    model : segone.model.Model or None
        None when the model's format version cannot be read (then ids are
        matched on customers only).
    segment_ids : ndarray of int64 or None
        The previous stable ids (the model's, else those in the assignments;
        None until the tracking has seen them when read with ``lazy=True``
        and without a usable model).
    next_id : int or None
    parts : list of (file, row groups) or None
        With ``lazy=True``: the parts to read (:meth:`sources`).
    id_type : pyarrow.DataType
        The type of the customer ids.
    notes : list of str
        What could not be used and why.
    feature_mismatch : dict or None
        ``{"added": [...], "removed": [...]}`` when the features differ from
        the ones given to :func:`read_previous`.
    run : dict or None
        The previous run.json, when readable.
    """

    path: str
    assignments: pa.Table | None = field(repr=False)
    id_column: str
    model: object = field(repr=False)
    segment_ids: np.ndarray | None
    next_id: int | None
    notes: list = field(default_factory=list)
    feature_mismatch: dict | None = None
    run: dict | None = field(default=None, repr=False)
    parts: list | None = field(default=None, repr=False)
    columns: list = field(default_factory=list, repr=False)
    id_type: object = field(default=None, repr=False)

    @property
    def where(self):
        return os.path.join(self.path, outputs.ASSIGNMENTS)

    def sources(self):
        """The parts of the assignments, for :func:`previous_piece`: the table itself, or ``(file, row groups)``."""
        return [self.assignments] if self.assignments is not None else list(self.parts)

    @property
    def features_match(self):
        return self.model is not None and self.feature_mismatch is None

    def centroids_for(self, scorer):
        """The previous centroids in the space of ``scorer`` (see :func:`remap_centroids`), or None."""
        if not self.features_match or set(scorer.feature_names_out_) != set(self.model.features):
            return None
        return remap_centroids(self.model.centroids, self.model.scorer, scorer)

    def warm_start(self, scorer, clusters):
        """Initial centroids for a refit with ``clusters`` segments, or None (the reason goes to ``notes``).

        The previous centroids, moved into the new scorer's space, when the
        feature lists match and the number of segments is unchanged.
        """
        C = self.centroids_for(scorer)
        if C is None:
            self._note("no warm start: the previous model is unavailable or has other features")
            return None
        if C.shape[0] != clusters:
            self._note(f"no warm start: the previous model has {C.shape[0]} segments, this run {clusters}")
            return None
        return np.ascontiguousarray(C, dtype=np.float32)

    def _note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)


def read_previous(path, *, features=None, id_column=None, spend=None, lazy=False):
    """Read a previous output directory (``model/`` and ``assignments.parquet``) for tracking.

    Parameters
    ----------
    path : str or path
        The ``--out`` directory of an earlier ``segone run``.
    features : list of str, optional
        The new run's features: when they differ from the previous model's,
        ``feature_mismatch`` is set and ids are matched on customers only.
    id_column : str, optional
        The customer id column (default: the model's, else ``customer_id``,
        else the first non-segment column).
    spend : str or list of str, optional
        Spend column(s) to read along, those present.
    lazy : bool, default False
        Read only the model and the Parquet footers: ``assignments`` is None
        and ``parts`` lists the pieces an engine reads and checks part by
        part (:func:`previous_piece`, :func:`track_parts`), so that nothing
        per customer is read here.  Duplicated ids, null ids and foreign
        segments are then found during the tracking.

    Returns
    -------
    PreviousRun

    Raises
    ------
    ParameterError
        ``path`` does not exist.
    ModelFormatError
        ``assignments.parquet`` or ``model/`` is missing, truncated or
        inconsistent (segments not in the model).
    DataError
        Duplicated or null customer ids, null or negative segments.

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import read_previous
    >>> d = segone.synth.generate(1000, seed=0)
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> _ = segone.run(d.transactions, out, 3, events=d.events, attributes=d.customers)
    >>> prev = read_previous(out)
    >>> prev.assignments.num_rows, prev.segment_ids.tolist(), prev.next_id
    (1000, [0, 1, 2], 3)
    """
    from segone.model import UnsupportedModelVersion, load_model

    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise ParameterError(f"previous output {path!r} does not exist; pass the --out directory of an earlier "
                             "`segone run`.")  # fmt: skip
    if not os.path.isdir(path):
        raise ParameterError(f"previous output {path!r} is not a directory; pass the --out directory of an earlier "
                             "`segone run`.")  # fmt: skip
    notes = []
    mdir = outputs.model_dir(path)
    if not os.path.isdir(mdir):
        raise ModelFormatError(f"{path}: model/ is missing, so this is not a complete segone output (half-written?). "
                               "Pass the --out directory of a finished `segone run`, or re-run it.")  # fmt: skip
    model = None
    try:
        model = load_model(mdir)
    except UnsupportedModelVersion as exc:
        notes.append(f"model not used ({exc}); segment ids matched on customers only")
    if id_column is None and model is not None:
        id_column = model.settings.get("id_column")
    table, cid, cols, parts, id_type = _read_assignments(path, id_column, spend, lazy)
    where = os.path.join(path, outputs.ASSIGNMENTS)
    if lazy:
        mismatch = None
        if model is not None:
            seg_ids, next_id = model.segment_ids.copy(), model.next_id
            mismatch = _feature_mismatch(features, model, notes)
        else:
            seg_ids = next_id = None  # the segments present: known from the tracking's contingency
            notes.append("next id taken from the assignments: ids that vanished before the previous run may be "
                         "reused")  # fmt: skip
        return PreviousRun(path, None, cid, model, seg_ids, next_id, notes, mismatch, _read_run(path, notes), parts,
                           cols, id_type)  # fmt: skip
    seg = _segment_values(table, where)
    ids_np, ids_str = _id_array(table.column(cid), where)
    if ids_np is not None:
        if ids_np.size > 1 and not (ids_np[1:] > ids_np[:-1]).all():
            if np.unique(ids_np).size != ids_np.size:
                _duplicates(ids_np, where)
    elif pc.count_distinct(ids_str).as_py() != len(ids_str):
        _join_strings(ids_str, ids_str[:0], (where, where))  # raises naming the duplicates
    present = _keys_of(seg)
    mismatch = None
    if model is not None:
        unknown = np.setdiff1d(present, model.segment_ids)
        if unknown.size:
            raise ModelFormatError(
                f"{where}: segments {unknown.tolist()[:10]} are not among the model's segment ids "
                f"{model.segment_ids.tolist()[:20]}; assignments.parquet and model/ come from different runs. "
                "Pass an untouched output directory."
            )
        seg_ids, next_id = model.segment_ids.copy(), model.next_id
        mismatch = _feature_mismatch(features, model, notes)
    else:
        seg_ids = present
        next_id = int(present.max()) + 1 if present.size else 0
        notes.append("next id taken from the assignments: ids that vanished before the previous run may be reused")
    return PreviousRun(path, table, cid, model, seg_ids, int(next_id), notes, mismatch, _read_run(path, notes),
                       None, cols, id_type)  # fmt: skip


def _feature_mismatch(features, model, notes):
    if features is None or set(features) == set(model.features):
        return None
    notes.append("the previous model has other features: segment ids matched on customers only, "
                 "no warm start, no feature PSI")  # fmt: skip
    return {"added": [f for f in features if f not in model.features],
            "removed": [f for f in model.features if f not in features]}  # fmt: skip


def _read_run(path, notes):
    from segone._validation import load_json

    rpath = os.path.join(path, "run.json")
    if os.path.isfile(rpath):
        try:
            run = load_json(rpath, "run.json")  # nesting bounded: never a RecursionError
            return run if isinstance(run, dict) else None
        except ModelFormatError:
            notes.append("run.json of the previous output is unreadable (ignored)")
    return None


def remap_centroids(centroids, old_scorer, new_scorer):
    """Move centroids from one scorer's feature space to another's (same features, in any order).

    The result has the new scorer's column order.

    For features scaled affinely by both scorers (standard, robust, none),
    ``x -> (x / w * s + c - c') / s' * w'`` undoes the old centring, scale
    and weight and applies the new ones (clipping is not undone).  Features
    with quantile scaling (already comparable scores) are kept.
    """
    old_names, new_names = list(old_scorer.feature_names_out_), list(new_scorer.feature_names_out_)
    if set(old_names) != set(new_names) or len(old_names) != len(new_names):
        raise ParameterError("remap_centroids needs two scorers of the same features.")
    idx = np.array([old_names.index(f) for f in new_names], dtype=np.int64)  # old columns in the new order
    C = np.asarray(centroids, dtype=np.float64)[:, idx]
    out = C.copy()
    q_old, q_new = np.asarray(old_scorer.quantile_)[idx], np.asarray(new_scorer.quantile_)
    w_old, w_new = np.asarray(old_scorer.weights_)[idx], np.asarray(new_scorer.weights_)
    ok = (q_old == 0) & (q_new == 0) & (w_old != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = C / np.where(ok, w_old, 1.0) * np.asarray(old_scorer.scale_)[idx] + np.asarray(old_scorer.center_)[idx]
        new = (raw - new_scorer.center_) / new_scorer.scale_ * w_new
    out[:, ok] = new[:, ok]
    return out


# ------------------------------------------------------------- a tracked run
@dataclass
class Tracking:
    """What :func:`track_assignments` produced for a new run tracked against a previous one.

    ``match`` (stable ids per new cluster), ``contingency`` (in stable ids),
    ``moves`` and ``migration`` tables, and ``figures`` for run.json.
    """

    match: SegmentMatch
    contingency: Contingency
    moves: pa.Table = field(repr=False)
    migration: pa.Table = field(repr=False)
    figures: dict

    @property
    def segment_ids(self):
        return self.match.ids

    @property
    def next_id(self):
        return self.match.next_id


def track_assignments(prev, assignments, *, centroids=None, scorer=None, spend=None, min_overlap=1,
                      histogram=None):  # fmt: skip
    """Track a new run's assignments against a previous output: stable ids, moves, migration, figures.

    Parameters
    ----------
    prev : PreviousRun
        From :func:`read_previous`.
    assignments : pyarrow.Table
        The new run's assignments: the id column (named as in ``prev``) and
        ``segment`` holding cluster indices ``0..k-1``, plus ``spend`` if given.
    centroids : ndarray (k, d), optional
        The new centroids (for the centroid fallback without common customers).
    scorer : FeatureScorer, optional
        The new scorer (moves the previous centroids into its space for that fallback).
    spend : str, optional
        Spend column of ``assignments`` (and of the previous assignments, if present).
    min_overlap : int
        See :func:`match_counts`.
    histogram : FeatureHistogram, optional
        The new run's feature histogram: with the previous model's, the
        feature PSI goes into the figures.

    Returns
    -------
    Tracking

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import read_previous, track_assignments
    >>> d = segone.synth.generate(2000, seed=0)
    >>> tmp = tempfile.mkdtemp()
    >>> _ = segone.run(d.transactions, os.path.join(tmp, "a"), 6, events=d.events, attributes=d.customers)
    >>> r = segone.run(d.transactions, os.path.join(tmp, "b"), 6, events=d.events, attributes=d.customers,
    ...                random_state=5)
    >>> t = track_assignments(read_previous(os.path.join(tmp, "a")), r.assignments)
    >>> t.figures["stayed_share"] > 0.99, sorted(t.segment_ids.tolist())
    (True, [0, 1, 2, 3, 4, 5])
    """
    cid = prev.id_column
    if cid not in assignments.column_names:
        raise SchemaError(f"new assignments have no id column {cid!r} (the previous output's); columns: "
                          f"{assignments.column_names[:20]}.")  # fmt: skip
    prev_table = prev.assignments
    if prev_table is None:  # read lazily: the parts, checked, as one table
        pieces = [previous_piece(src, id_column=cid, columns=prev.columns, where=prev.where,
                                 segment_ids=None if prev.model is None else prev.segment_ids)
                  for src in prev.sources()]  # fmt: skip
        prev_table = pa.concat_tables(pieces, promote_options="permissive")
    moves, raw, _ = moves_bucket(prev_table, assignments, id_column=cid, spend=spend, where=prev.where,
                                 prev_type=prev_table.schema.field(cid).type)  # fmt: skip
    match, cont, figures = finish_tracking(prev, raw, centroids=centroids, scorer=scorer, min_overlap=min_overlap,
                                           histogram=histogram)  # fmt: skip
    moves = relabel_moves_piece(moves, segment_ids=match.ids)
    return Tracking(match, cont, moves, migration_table(cont), figures)


def moves_bucket(prev_piece, new_piece, excluded=None, *, id_column="customer_id", spend=None, prev_type=None,
                 where="previous assignments"):  # fmt: skip
    """The moves of one bucket of customers (every customer of the bucket in both pieces), before the matching.

    Returns ``(moves, contingency, excluded)``: the moves table with the new
    segments still cluster indices (rename them with
    :func:`relabel_moves_piece` once the ids are matched), its raw
    :class:`Contingency`, and ``excluded`` (a table of ids) as its id column.
    ``prev_type`` is the previous output's id type: a new id of the other
    kind (integers vs strings) raises SchemaError.
    """
    if prev_type is not None and id_column in new_piece.column_names:
        check_id_types(prev_type, new_piece.schema.field(id_column).type, f"the previous output {where}")
    m = _moves_arrays(prev_piece, new_piece, id_column=id_column, spend=spend, where=(where, "new assignments"))
    ids = None
    if excluded is not None:
        ids = excluded.column(id_column) if isinstance(excluded, pa.Table) else excluded
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    return _moves_table(m, id_column), _contingency_of(m), ids


def relabel_moves_piece(moves, *, segment_ids):
    """A moves piece of :func:`moves_bucket` with its new segments renamed to stable ids, statuses redone.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import moves_bucket, relabel_moves_piece
    >>> prev = pa.table({"customer_id": [1, 2, 3], "segment": [7, 7, 9]})
    >>> new = pa.table({"customer_id": [2, 3, 4], "segment": [0, 0, 1]})
    >>> m = relabel_moves_piece(moves_bucket(prev, new)[0], segment_ids=[7, 9])
    >>> m.column("segment").to_pylist(), m.column("status").to_pylist()
    ([None, 7, 7, 9], ['gone', 'stayed', 'moved', 'new'])
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    seg = moves.column("segment")
    prev = moves.column("previous_segment")
    q = pc.fill_null(seg, -1).to_numpy().astype(np.int64)
    p = pc.fill_null(prev, -1).to_numpy().astype(np.int64)
    here = q >= 0
    if here.any() and q.max() >= ids.size:
        raise DataError(f"moves hold segment {q.max()} but only {ids.size} segment ids were given.")
    q[here] = ids[q[here]]
    had = p >= 0
    status = np.where(had & here, np.where(p == q, STAYED, MOVED), np.where(here, NEW, GONE)).astype(np.int8)
    moves = moves.set_column(moves.column_names.index("segment"), "segment",
                             pa.array(q.astype(np.int32), mask=~here))  # fmt: skip
    col = pa.DictionaryArray.from_arrays(pa.array(status, type=pa.int8()), pa.array(STATUSES))
    return moves.set_column(moves.column_names.index("status"), "status", col)


def finish_tracking(prev, raw, *, centroids=None, scorer=None, min_overlap=1, histogram=None):
    """The driver's part of the tracking, from the merged raw contingency alone: ``(match, contingency, figures)``.

    ``raw`` counts the customers per (previous stable id, new cluster
    index); the result's contingency is in stable ids.  O(segments^2):
    nothing per customer.  A previous run read lazily without a usable model
    gets its segment ids and next id from ``raw`` here.
    """
    if prev.segment_ids is None:  # the segments present in the previous assignments
        prev.segment_ids = raw.prev_ids.copy()
        prev.next_id = int(raw.prev_ids.max()) + 1 if raw.prev_ids.size else 0
    k = len(centroids) if centroids is not None else (int(raw.new_ids.max()) + 1 if raw.new_ids.size else 0)
    if raw.new_ids.size and raw.new_ids.max() >= k:
        raise DataError(f"new assignments hold segment {raw.new_ids.max()} but there are {k} centroids.")
    overlap = _overlap_from(raw, prev.segment_ids, raw.new_ids, k)
    if overlap.sum() == 0 and centroids is not None and scorer is not None and prev.centroids_for(scorer) is not None:
        match = match_centroids(prev.segment_ids, prev.centroids_for(scorer), centroids, next_id=prev.next_id)
    else:
        match = match_counts(prev.segment_ids, overlap, next_id=prev.next_id, min_overlap=min_overlap)
    cont = raw.relabel(match.ids)
    return match, cont, tracking_figures(cont, match, prev=prev, histogram=histogram)


@dataclass
class TrackedParts:
    """What :func:`track_parts` produced: like :class:`Tracking`, with the moves as an engine's parts.

    ``moves`` holds one moves table per part (customers split by a hash of
    their id, so every customer is in exactly one part); ``excluded`` the
    ids without consent of each part (or None), for
    :func:`segone.privacy.filter_moves`.
    """

    match: SegmentMatch
    contingency: Contingency
    moves: list = field(repr=False)
    excluded: list | None = field(repr=False)
    migration: pa.Table = field(repr=False)
    figures: dict

    @property
    def segment_ids(self):
        return self.match.ids

    @property
    def next_id(self):
        return self.match.next_id


def track_parts(eng, prev, new_parts, *, centroids=None, scorer=None, spend="spend", histogram=None,
                excluded=None, min_overlap=1):  # fmt: skip
    """:func:`track_assignments` over an engine's parts, with nothing per customer on the driver.

    The previous assignments are read part by part (:func:`previous_piece`,
    on the workers with Dask), both sides (and ``excluded``, the ids without
    consent per part) are brought together by a hash of the customer id
    (``eng.co_partition``: one part in one process, a hash split on Dask),
    each bucket is joined into its moves and a raw :class:`Contingency`
    (:func:`moves_bucket`), the contingencies are tree-reduced, the ids
    matched on the driver (:func:`finish_tracking`, O(segments^2)), and the
    moves of each bucket renamed to stable ids (:func:`relabel_moves_piece`).
    A customer of both runs hashes to the same bucket, so it is joined; one
    of either run only is in one bucket: every customer is in exactly one
    moves part.

    Parameters
    ----------
    eng : LocalEngine or DaskEngine
    prev : PreviousRun
        From :func:`read_previous` (``lazy=True`` keeps the driver free of customers).
    new_parts : parts
        Per part: the id column, ``segment`` (cluster indices) and ``spend``
        (:func:`tracking_columns`).
    excluded : parts, optional
        Per part: an array of ids to carry along (the ids without consent).

    Returns
    -------
    TrackedParts
    """
    cid = prev.id_column
    seg_ids = None if prev.model is None else prev.segment_ids
    prev_parts = eng.map(previous_piece, prev.sources(), id_column=cid, columns=prev.columns, segment_ids=seg_ids,
                         where=prev.where)  # fmt: skip
    lists = [prev_parts, new_parts]
    if excluded is not None:
        lists.append(eng.map(_ids_table, excluded, column=cid))
    pieces = eng.co_partition(lists, cid, eng.count(new_parts))
    results = eng.persist(eng.map(_moves_of_piece, pieces, id_column=cid, spend=spend, prev_type=prev.id_type,
                                  where=prev.where), "moves")  # fmt: skip
    raw = eng.reduce(eng.map(_item, results, i=1))
    match, cont, figures = finish_tracking(prev, raw, centroids=centroids, scorer=scorer, min_overlap=min_overlap,
                                           histogram=histogram)  # fmt: skip
    moves = eng.map(relabel_moves_piece, eng.map(_item, results, i=0), segment_ids=match.ids)
    excl = eng.map(_item, results, i=2) if excluded is not None else None
    return TrackedParts(match, cont, moves, excl, migration_table(cont), figures)


def _ids_table(ids, *, column):
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    return pa.table({column: ids})


def _moves_of_piece(piece, **kwargs):
    return moves_bucket(*piece, **kwargs)


def _item(values, *, i):
    return values[i]


def tracking_figures(contingency, match=None, *, prev=None, histogram=None, notes=()):
    """run.json's ``tracking`` block: counts, stayed share, ARI, PSI, matching and notes."""
    out = {"previous": None if prev is None else prev.path, **contingency.figures()}
    if match is not None:
        out["matching"] = match.to_dict()
    fpsi = None
    all_notes = list(notes) + ([] if prev is None else list(prev.notes))
    if histogram is not None and prev is not None:
        if prev.model is not None and prev.model.histogram is not None and prev.feature_mismatch is None:
            fpsi = feature_psi(prev.model.histogram, histogram)
        else:
            all_notes.append("no feature PSI: the previous model holds no feature histogram (or other features)")
    out["feature_psi"] = fpsi
    if fpsi:
        vals = [v for v in fpsi.values() if v is not None]
        out["feature_psi_max"] = max(vals) if vals else None
    if prev is not None and prev.feature_mismatch is not None:
        out["feature_mismatch"] = prev.feature_mismatch
    out["notes"] = all_notes
    return out


def relabel_piece(table, *, segment_ids, column="segment"):
    """Replace cluster indices by stable ids in the ``column`` of a table (assignments or segments).

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import relabel_piece
    >>> relabel_piece(pa.table({"segment": [0, 1, 1]}), segment_ids=[7, 3]).column("segment").to_pylist()
    [7, 3, 3]
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    if column not in table.column_names:  # e.g. a personas part without segments: nothing to rename
        return table
    col = table.column(column)
    v = col.to_numpy()
    if v.size and (v.min() < 0 or v.max() >= ids.size):
        raise DataError(f"column {column!r} holds cluster indices outside 0..{ids.size - 1}.")
    return table.set_column(table.column_names.index(column), column, pa.array(ids[v].astype(np.int32)))


def tracking_columns(profiles, assignments, *, id_column="customer_id", spend="spend_total"):
    """Per part: the id and segment of the assignments with the profile's spend column (named ``spend``).

    The rows of an assignments part follow the rows of its profiles part
    (the pipeline assigns each profile piece), so the spend is taken by
    position.  Without that profile column, no spend column.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.track import tracking_columns
    >>> prof = pa.table({"customer_id": [1, 2], "spend_total": [5.0, 7.0]})
    >>> asg = pa.table({"customer_id": [1, 2], "segment": [0, 1], "distance": [0.1, 0.2]})
    >>> tracking_columns(prof, asg).column_names
    ['customer_id', 'segment', 'spend']
    """
    cols = {id_column: assignments.column(id_column), "segment": assignments.column("segment")}
    if spend is not None and spend in profiles.column_names:
        if profiles.num_rows != assignments.num_rows:
            raise ParameterError("profiles and assignments of a part must have the same rows.")
        cols["spend"] = profiles.column(spend)
    return pa.table(cols)


# ------------------------------------------------------------ comparing outputs
def output_pseudonymised(path):
    """True when the output directory ``path`` holds pseudonyms instead of customer ids (a ``--hash-ids`` run).

    The id column of assignments.parquet carries the ``segone.pseudonym``
    field metadata; run.json's ``privacy.pseudonymous_ids.enabled`` says so
    too (either is enough).  False for plain ids or when neither can be read.
    """
    import pyarrow.dataset as ds

    from segone._validation import load_json

    rpath = os.path.join(os.fspath(path), "run.json")
    if os.path.isfile(rpath):
        try:
            run = load_json(rpath, "run.json")
            hashing = (run.get("privacy") or {}).get("pseudonymous_ids") or {}
            if isinstance(hashing, dict) and hashing.get("enabled") is True:
                return True
        except (ModelFormatError, AttributeError):
            pass
    try:
        schema = ds.dataset(os.path.join(os.fspath(path), "assignments.parquet"), format="parquet").schema
    except (pa.ArrowInvalid, OSError, ValueError):
        return False
    return any(f.metadata and b"segone.pseudonym" in f.metadata for f in schema)


def _withheld(run):
    """(customers withheld, segment ids withheld, min_segment_size) of a run.json, or None."""
    try:
        priv = run.get("privacy") or {}
        small = priv.get("small_segments") or {}
        n = small.get("customers_withheld") or 0
        if small.get("method") == "withhold" and isinstance(n, int) and n > 0:
            return n, list(small.get("withheld") or []), priv.get("min_segment_size")
    except AttributeError:
        pass
    return None


def check_previous(path, *, pseudonymised=None, role="previous output", now="this run"):
    """Check before any work that the output ``path`` can be tracked against (SegoneError saying what to do).

    * ``pseudonymised`` (True / False; None: not checked): whether the
      other side of the tracking holds pseudonyms (``hash_ids``).  A
      pseudonymised run and a plain one share no id, so every customer
      would be "new": refused, naming the side that is pseudonymised.
    * A previous run written with ``small_segments="withhold"`` published no
      segment for the customers of its small segments: refused, saying how
      to write a previous output every customer of which has a segment.

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import check_previous
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> _ = segone.run(segone.synth.generate(300, seed=0).transactions, out, 3, value=False)
    >>> check_previous(out, pseudonymised=False)
    """
    from segone._validation import load_json

    path = os.fspath(path)
    if not os.path.isdir(path):
        return
    if pseudonymised is not None:
        theirs = output_pseudonymised(path)
        if theirs and not pseudonymised:
            raise SchemaError(
                f"the {role} {path!r} is pseudonymised (written with hash_ids / --hash-ids: its ids are HMAC "
                f"pseudonyms) but {now} has plain customer ids, so no customer can be matched and every one would "
                "count as new. Pass hash_ids=True (--hash-ids) with the same key ($SEGONE_ID_KEY or --id-key-file) "
                f"so that both sides hold the same pseudonyms, or track against a {role} written without --hash-ids."
            )
        if pseudonymised and not theirs:
            raise SchemaError(
                f"{now} is pseudonymised (hash_ids / --hash-ids) but the {role} {path!r} holds plain customer ids, "
                "so no customer can be matched and every one would count as new. Track against a run written with "
                "--hash-ids and the same key, or run this one without --hash-ids (then no id is pseudonymised)."
            )
    rpath = os.path.join(path, "run.json")
    run = None
    if os.path.isfile(rpath):
        try:
            run = load_json(rpath, "run.json")
        except ModelFormatError:
            run = None
    held = _withheld(run) if isinstance(run, dict) else None
    if held is not None:
        n, ids, k = held
        raise DataError(
            f"the {role} {path!r} was written with small_segments='withhold' (min_segment_size={k}): its "
            f"{n} customers of the small segments {ids[:10]} have no segment in assignments.parquet, so where "
            "they were is not published and they cannot be tracked. To track against that period, write it "
            "again with small_segments='merge' (--small-segments merge: a small segment joins its nearest, every "
            "customer keeps a segment) and pass that output" + ("; or leave out previous (--previous) for this run."
                                                              if role == "previous output" else ".")
        )


def _check_spend(spend, *outputs):
    """A spend column asked for (``--spend``) must be a column of the assignments of at least one output."""
    import pyarrow.dataset as ds

    if spend is None:
        return
    names = []
    for out in outputs:
        try:
            names.append(ds.dataset(os.path.join(out, "assignments.parquet"), format="parquet").schema.names)
        except (pa.ArrowInvalid, OSError, ValueError):
            names.append([])
    if not any(spend in n for n in names):
        have = sorted({c for n in names for c in n if c not in ("segment",)})
        raise SchemaError(
            f"spend column {spend!r} (--spend) is not a column of the assignments of {' or '.join(map(repr, outputs))}"
            f"; their columns are {have[:20]}. Give one of them (e.g. --spend spend_total when the runs wrote it), "
            "or leave out --spend."
        )


@dataclass
class Comparison:
    """What :func:`compare_outputs` wrote: the tables and tracking.json's content."""

    out: str
    moves: pa.Table = field(repr=False)
    migration: pa.Table = field(repr=False)
    summary: dict


def compare_outputs(old_dir, new_dir, out_dir, *, match=True, spend=None, id_column=None, overwrite=False):
    """Compare two existing outputs without refitting: migration.parquet, moves.parquet, tracking.json.

    The outputs honour the privacy options of both runs (their models'
    records, else their run.json): the stricter ones apply
    (:func:`segone.privacy.tracking_plan`).  With consent rules, customers
    gone since the old output are left out of moves.parquet (they may have
    withdrawn consent) unless both runs count a missing record as consent;
    with a minimum segment size (the larger of the two), migration cells and
    tracking counts of fewer customers are suppressed.  Outputs with raw ids
    and pseudonyms, or pseudonyms of two keys, are refused
    (:class:`segone.privacy.WiderPrivacyError`).

    Parameters
    ----------
    old_dir, new_dir : str or path
        ``--out`` directories of two ``segone run`` (or ``segone apply``, with ``model/``) calls.
    out_dir : str or path
        Where to write (atomically; must not exist or be empty unless ``overwrite``).
    match : bool, default True
        Match the new output's segment ids to the old ones on the common
        customers first (the identity for a run tracked against ``old_dir``;
        needed for two independent runs, whose ids mean nothing to each
        other).  The mapping used is in tracking.json (``id_map``).
    spend : str, optional
        A spend column of the assignments (default: ``spend`` or
        ``spend_total`` when present).
    id_column : str, optional
        The customer id column (default: as written by the runs).
    overwrite : bool

    Returns
    -------
    Comparison

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.track import compare_outputs
    >>> d = segone.synth.generate(2000, seed=0)
    >>> tmp = tempfile.mkdtemp()
    >>> for name, seed in (("a", 0), ("b", 5)):
    ...     _ = segone.run(d.transactions, os.path.join(tmp, name), 3, events=d.events, attributes=d.customers,
    ...                    random_state=seed)
    >>> c = compare_outputs(os.path.join(tmp, "a"), os.path.join(tmp, "b"), os.path.join(tmp, "cmp"))
    >>> sorted(os.listdir(c.out)), c.summary["customers"]["common"]
    (['migration.parquet', 'moves.parquet', 'tracking.json'], 2000)
    """
    from segone.io import check_output

    # checked and locked before any work: writable, neither run's directory, not written by another run
    with check_output(out_dir, (), overwrite, others=[("old output", old_dir), ("new output", new_dir)]):
        return _compare_outputs(old_dir, new_dir, out_dir, id_column=id_column, match=match, spend=spend,
                                overwrite=overwrite)  # fmt: skip


def _compare_outputs(old_dir, new_dir, out_dir, *, id_column, match, spend, overwrite):
    from segone import privacy as _privacy
    from segone.io import atomic_directory, write_json, write_parquet

    # the privacy options of both outputs, checked before any work: the stricter apply
    (rec_old, src_old), (rec_new, src_new) = _privacy.output_record(old_dir), _privacy.output_record(new_dir)
    plan = _privacy.tracking_plan(rec_old, rec_new, where=(f"the old output {os.fspath(old_dir)!r}",
                                                           f"the new output {os.fspath(new_dir)!r}"))  # fmt: skip
    check_previous(old_dir, pseudonymised=output_pseudonymised(new_dir), role="old output",
                   now=f"the new output {os.fspath(new_dir)!r}")  # fmt: skip
    check_previous(new_dir, role="new output")
    _check_spend(spend, os.fspath(old_dir), os.fspath(new_dir))
    probe = [spend] if spend is not None else ["spend", "spend_total"]
    old = read_previous(old_dir, id_column=id_column, spend=probe)
    new = read_previous(new_dir, id_column=id_column or old.id_column, spend=probe)
    if spend is None:
        spend = next((c for c in ("spend", "spend_total") if c in new.assignments.column_names
                      or c in old.assignments.column_names), None)  # fmt: skip
    notes = [f"old: {n}" for n in old.notes] + [f"new: {n}" for n in new.notes]
    if old.id_column != new.id_column:
        new.assignments = new.assignments.rename_columns(
            [old.id_column if c == new.id_column else c for c in new.assignments.column_names])
    cid = old.id_column
    check_id_types(old.assignments.schema.field(cid).type, new.assignments.schema.field(cid).type,
                   f"the old output {old.path}")  # fmt: skip
    m = _moves_arrays(old.assignments, new.assignments, id_column=cid, spend=spend)
    id_map = None
    seg_match = None
    raw = _contingency_of(m)
    cont = raw
    if match:
        new_keys = np.union1d(new.segment_ids, raw.new_ids)
        overlap = _overlap_from(raw, old.segment_ids, np.searchsorted(new_keys, raw.new_ids), new_keys.size)
        nxt = max(old.next_id, new.next_id)
        seg_match = match_counts(old.segment_ids, overlap, next_id=nxt)
        # an unmatched new segment keeps its own id unless an old segment used it
        taken = set(old.segment_ids.tolist())
        ids = seg_match.ids.copy()
        for j in np.flatnonzero(~seg_match.kept):
            own = int(new_keys[j])
            if own not in taken and own not in set(ids[seg_match.kept].tolist()):
                ids[j] = own
        seg_match.ids = ids
        seg_match.next_id = max(nxt, int(ids.max()) + 1 if ids.size else 0)
        id_map = {str(int(a)): int(b) for a, b in zip(new_keys, ids)}
        mapping = np.zeros(int(new_keys.max()) + 1 if new_keys.size else 0, dtype=np.int64)
        mapping[new_keys] = ids
        _relabel_moves(m, mapping)
        cont = raw.relabel(mapping)
    moves = _moves_table(m, cid)
    hist = new.model.histogram if new.model is not None else None
    old.feature_mismatch = None
    if old.model is not None and new.model is not None and old.model.features != new.model.features:
        old.feature_mismatch = {"added": [f for f in new.model.features if f not in old.model.features],
                                "removed": [f for f in old.model.features if f not in new.model.features]}  # fmt: skip
    summary = {"format": "segone-tracking", "version": 1, "old": old.path, "new": new.path,
               **tracking_figures(cont, seg_match, prev=old, histogram=hist, notes=notes)}  # fmt: skip
    summary["previous"] = old.path
    summary["id_map"] = id_map
    summary["spend_column"] = spend
    if hist is None and "no feature PSI" not in " ".join(summary["notes"]):
        summary["notes"].append("no feature PSI: the new model holds no feature histogram")
    # EXPORT: the same functions as run: consent on the moves, small cells suppressed
    migration = cont.finish()
    n_moves = moves.num_rows
    moves = _privacy.filter_moves(moves, pa.array([], moves.schema.field(cid).type), plan=plan, id_column=cid)
    suppressed = {}
    if plan.min_segment_size is not None:
        migration, suppressed["migration"] = _privacy.suppress_migration(migration, plan.min_segment_size)
        summary["customers"] = _privacy.suppress_counts(summary["customers"], plan.min_segment_size)
    summary["privacy"] = {
        "from": {"old": src_old, "new": src_new},
        "consent": [str(r) for r in plan.rules] or None,
        "consent_default": plan.default if plan.rules else None,
        "moves_left_out": n_moves - moves.num_rows,
        "pseudonymous_ids": bool(rec_old and rec_old.get("hash_ids")),
        "min_segment_size": plan.min_segment_size,
        "cells_suppressed": {name: int(r.get("cells", 0)) for name, r in suppressed.items()},
    }
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_parquet(migration, os.path.join(tmp, outputs.MIGRATION))
        write_parquet(moves, os.path.join(tmp, outputs.MOVES))
        write_json(summary, os.path.join(tmp, outputs.TRACKING_JSON))
    return Comparison(os.path.abspath(os.fspath(out_dir)), moves, migration, summary)


__all__ = [
    "Comparison",
    "Contingency",
    "FeatureHistogram",
    "PreviousRun",
    "SegmentMatch",
    "Tracking",
    "check_id_types",
    "check_previous",
    "compare_outputs",
    "feature_psi",
    "match_centroids",
    "match_counts",
    "match_segments",
    "migration_table",
    "moves_and_contingency",
    "moves_piece",
    "output_pseudonymised",
    "psi",
    "read_previous",
    "relabel_piece",
    "remap_centroids",
    "TrackedParts",
    "finish_tracking",
    "moves_bucket",
    "previous_piece",
    "relabel_moves_piece",
    "track_assignments",
    "track_parts",
    "tracking_columns",
    "tracking_figures",
]
