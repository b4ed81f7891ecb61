"""Joining two runs by customer id: per customer its previous and new segment and a status (the moves),
with the migration counts of one piece."""

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._backend import get_kernels
from segone.errors import DataError, ParameterError, SchemaError, examples
from segone.io import to_float64
from segone.track._common import GONE, MOVED, NEW, STATUSES, STAYED, _column, _lookup
from segone.track.migration import Contingency, _keys_of


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
    clv: np.ndarray | None = None  # the new run's CLV (the previous run's for the gone), NaN: none
    clv_before: np.ndarray | None = None  # the previous run's CLV, NaN: none (or new)


# the fused sort-merge of two runs' integer ids (compiled on first use, cached on disk)



def _argsort_ids(ids):
    """(sorted ids, order) of unique int64 ids: a radix sort (O(n), any int64 incl. negative)."""
    dt = np.int32 if ids.size < 2**31 - 1 else np.int64
    return get_kernels("auto", "track").radix_argsort(np.ascontiguousarray(ids, dtype=np.int64),
                                                      np.empty(ids.size, dtype=dt), np.empty(ids.size, dtype=dt))


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


def _moves_ints(p, n, ps, ns, sp, sn, where, cp=None, cn=None, with_clv=False):
    """The fused path for integer ids: sort-merge, segments, status, spend and the contingency in one pass.

    With ``with_clv``, the CLV of each union row is then gathered in NumPy
    (``cp`` / ``cn``: per row of each run, or None): the rows present in a
    run are, in union (id) order, that run's ids in increasing order, so its
    sorted order gives them without a search.
    """
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
    u = get_kernels("auto", "track").merge_moves(
        P, N, none if op is None else op, none if on is None else on, ps.astype(np.int64, copy=False),
        ns.astype(np.int64, copy=False), empty if sp is None else sp, empty if sn is None else sn, lp, ln, ids, prev,
        new, status, spend, counts, csum)  # fmt: skip
    if u < 0:
        _duplicates(P if u == -1 else N, where[0] if u == -1 else where[1])
    prev, new = prev[:u], new[:u]
    cont = Contingency(pk, nk, counts, csum if has_spend else None)
    clv = clv_before = None
    if with_clv:
        inp, inn = prev >= 0, new >= 0
        clv, clv_before = np.full(u, np.nan), np.full(u, np.nan)
        if cp is not None:
            clv_before[inp] = cp if op is None else cp[op]
        if cn is not None:
            clv[inn] = cn if on is None else cn[on]
        clv[~inn] = clv_before[~inn]  # the gone: the previous run's CLV
        cont.clv, cont.clv_n, cont.clv_before, cont.clv_before_n = Contingency.of_arrays(
            prev, new, clv=clv, clv_before=clv_before)._clv_parts()  # same keys: the kernel's pk, nk
    return _Moves(ids[:u], prev, new, status[:u], spend[:u] if has_spend else None, cont, clv, clv_before)


def _moves_arrays(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None, clv=None,
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
    cp = _spend_values(prev_table, clv) if clv is not None else None
    cn = _spend_values(new_table, clv) if clv is not None else None
    with_clv = cp is not None or cn is not None  # found in neither run: no CLV columns
    p, pstr = _id_array(_column(prev_table, id_column, where[0]), where[0])
    n, nstr = _id_array(_column(new_table, id_column, where[1]), where[1])
    if (p is None) != (n is None):
        check_id_types(pa.string() if p is None else pa.int64(), pa.string() if n is None else pa.int64())
    if p is not None:
        return _moves_ints(p, n, ps, ns, sp, sn, where, cp, cn, with_clv)
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
    cv = cb = None
    if with_clv:
        cv, cb = np.full(j.pi.size, np.nan), np.full(j.pi.size, np.nan)
        if cp is not None:
            cb[inp] = cp[j.pi[inp]]
        if cn is not None:
            cv[inn] = cn[j.ni[inn]]
        cv[~inn] = cb[~inn]
    return _Moves(j.ids, prev, new, status, sv, None, cv, cb)


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
    if m.contingency is not None:
        return m.contingency
    return Contingency.of_arrays(m.prev, m.new, m.spend, clv=m.clv, clv_before=m.clv_before)


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
    if m.clv is not None:
        cols["clv"] = pa.array(m.clv, mask=np.isnan(m.clv))
        cols["clv_before"] = pa.array(m.clv_before, mask=np.isnan(m.clv_before))
    return pa.table(cols)


def moves_piece(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None, clv=None):
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
    clv : str, optional
        A CLV column (``"clv"``): when either table has it, the moves gain
        ``clv`` (the new run's CLV for customers present now, the previous
        run's for those gone) and ``clv_before`` (the previous run's CLV;
        null for new customers), null where a run has none.

    Returns
    -------
    pyarrow.Table
        ``id_column``, ``previous_segment`` and ``segment`` (int32, null
        where the customer is absent from that run), ``status``
        (dictionary: stayed, moved, new, gone), ``spend`` when asked, and
        ``clv`` / ``clv_before`` when asked and found.
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
                                      spend=spend, clv=clv), id_column)  # fmt: skip


def moves_and_contingency(prev_table, new_table, *, id_column="customer_id", segment_ids=None, spend=None,
                          clv=None):  # fmt: skip
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
    m = _moves_arrays(prev_table, new_table, id_column=id_column, segment_ids=segment_ids, spend=spend, clv=clv)
    return _moves_table(m, id_column), _contingency_of(m)
