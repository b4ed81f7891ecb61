"""Minimum segment size: small segments merged or withheld, and small cells of the exported tables
suppressed (with a complementary suppression)."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._validation import check_int
from segone.errors import DataError, ParameterError
from segone.io import to_float64


SMALL_SEGMENTS = ("merge", "withhold")


# ========================================================= minimum segment size
def _check_k(k, n=None, what="customers"):
    k = check_int(k, "min_segment_size", low=1)
    if n is not None and k > n:
        raise ParameterError(
            f"min_segment_size={k} is larger than the {n} {what}: no segment could be shown. Lower it to at most "
            f"{n}, or leave it unset."
        )
    return k


def merge_small_segments(sizes, centroids, k, *, return_survivors=False):
    """Merge every segment below ``k`` customers into its nearest segment: old id -> new id.

    Repeatedly takes the smallest segment below ``k`` (ties: the lowest id)
    and merges it into the nearest remaining segment by squared Euclidean
    distance between centroids (ties: the lowest id); the merged segment's
    centroid is the size-weighted mean of the two.  Empty segments merge too.
    The surviving segments are renumbered 0..m-1 in their old order.

    Parameters
    ----------
    sizes : array of int (n_segments,)
    centroids : array (n_segments, n_features)
    k : int >= 1; at most ``sizes.sum()``

    Returns
    -------
    ndarray of int64 (n_segments,): the new id of every old segment.
    With ``return_survivors``, also the old id of every new segment (the
    segment the others were merged into).

    Examples
    --------
    >>> import numpy as np
    >>> merge_small_segments([50, 3, 40, 2], np.array([[0.0], [0.9], [1.0], [0.1]]), 10).tolist()
    [0, 1, 1, 0]
    """
    size = np.asarray(sizes, dtype=np.int64).copy()
    if size.ndim != 1 or (size < 0).any():
        raise ParameterError("sizes must be a 1-D array of non-negative counts.")
    cent = np.asarray(centroids, dtype=np.float64).copy()
    if cent.ndim != 2 or cent.shape[0] != size.size:
        raise ParameterError(f"centroids has shape {cent.shape}; expected ({size.size}, n_features).")
    if not np.isfinite(cent).all():
        raise ParameterError("centroids hold NaN or infinite values.")
    k = _check_k(k, int(size.sum()), "customers in the segments")
    m = size.size
    alive = np.ones(m, dtype=bool)
    target = np.arange(m)
    while True:
        cand = alive & (size < k)
        if not cand.any() or alive.sum() <= 1:
            break
        i = int(np.argmin(np.where(cand, size, np.iinfo(np.int64).max)))
        d = ((cent - cent[i]) ** 2).sum(axis=1)
        d[~alive] = np.inf
        d[i] = np.inf
        j = int(np.argmin(d))
        tot = size[i] + size[j]
        if tot > 0:
            cent[j] = (size[j] * cent[j] + size[i] * cent[i]) / tot
        size[j] = tot
        size[i] = 0
        alive[i] = False
        target[i] = j
    root = target.copy()
    for _ in range(m):  # follow chains of merges to the survivor
        nxt = target[root]
        if (nxt == root).all():
            break
        root = nxt
    new_id = np.cumsum(alive) - 1
    mapping = new_id[root].astype(np.int64)
    return (mapping, np.flatnonzero(alive).astype(np.int64)) if return_survivors else mapping


def withhold_small_segments(sizes, k):
    """Withhold every segment below ``k`` customers: old id -> new id, -1 for a withheld segment.

    Examples
    --------
    >>> withhold_small_segments([50, 3, 40, 0], 10).tolist()
    [0, -1, 1, -1]
    """
    size = np.asarray(sizes, dtype=np.int64)
    k = _check_k(k)
    keep = size >= k
    return np.where(keep, np.cumsum(keep) - 1, -1).astype(np.int64)


def small_segment_mapping(sizes, centroids, k, how="merge"):
    """:func:`merge_small_segments` or :func:`withhold_small_segments` by ``how``, and a report.

    Returns ``(mapping, report)``; the report (for :func:`privacy_summary`)
    holds the method, the segments merged (old -> old id of the segment it
    was merged into) or withheld, how many customers were withheld, the
    ``mapping`` (old cluster -> exported segment, -1: withheld; the model
    keeps the fitted clusters) and the ``survivors`` (the old id of every
    exported segment).
    """
    if how not in SMALL_SEGMENTS:
        raise ParameterError(f"small_segments={how!r}; use one of {SMALL_SEGMENTS}.")
    sizes = np.asarray(sizes, dtype=np.int64)
    if how == "merge":
        mapping, survivors = merge_small_segments(sizes, centroids, k, return_survivors=True)
        merged = {str(o): int(survivors[n]) for o, n in enumerate(mapping.tolist()) if survivors[n] != o}
        report = {"method": "merge", "segments_before": int(sizes.size), "segments_after": int(mapping.max()) + 1,
                  "merged": merged, "withheld": [], "customers_withheld": 0, "mapping": mapping.tolist(),
                  "survivors": survivors.tolist()}  # fmt: skip
    else:
        mapping = withhold_small_segments(sizes, k)
        held = np.flatnonzero(mapping < 0)
        report = {"method": "withhold", "segments_before": int(sizes.size),
                  "segments_after": int((mapping >= 0).sum()), "merged": {}, "withheld": held.tolist(),
                  "customers_withheld": int(sizes[held].sum()), "mapping": mapping.tolist(),
                  "survivors": np.flatnonzero(mapping >= 0).tolist()}  # fmt: skip
    return mapping, report


def relabel_segments(table, mapping, column="segment"):
    """One piece with ``column`` renamed through ``mapping`` (old -> new; -1 becomes null).

    Examples
    --------
    >>> import pyarrow as pa
    >>> relabel_segments(pa.table({"segment": [0, 1, 2, None]}), [0, -1, 0]).column("segment").to_pylist()
    [0, None, 0, None]
    """
    if column not in table.column_names:
        return table
    mapping = np.asarray(mapping, dtype=np.int64)
    i = table.column_names.index(column)
    col = table.column(i)
    v = pc.fill_null(col, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    if v.size and v.max() >= mapping.size:
        raise DataError(f"column {column!r} holds segment {v.max()} but the mapping covers 0..{mapping.size - 1}.")
    new = np.where(v >= 0, mapping[np.maximum(v, 0)], -1)
    return table.set_column(i, column, pa.array(new.astype(np.int32), mask=new < 0))


def exported_ids(mapping, survivors, segment_ids=None):
    """Cluster index -> the id written in the outputs, -1 for a withheld cluster.

    ``mapping`` and ``survivors`` come from :func:`small_segment_mapping`;
    ``segment_ids`` are the stable ids of the clusters (tracking; default:
    the cluster index), so an exported segment carries its survivor's id.

    Examples
    --------
    >>> exported_ids([0, 1, 1, -1], [0, 2], segment_ids=[7, 8, 9, 10]).tolist()
    [7, 9, 9, -1]
    >>> exported_ids([0, 1, 1, -1], [0, 2]).tolist()
    [0, 1, 1, -1]
    """
    mapping = np.asarray(mapping, dtype=np.int64)
    survivors = np.asarray(survivors, dtype=np.int64)
    if segment_ids is None:
        ids = np.arange(survivors.size, dtype=np.int64)
    else:
        ids = np.asarray(segment_ids, dtype=np.int64)[survivors]
    return np.where(mapping >= 0, ids[np.maximum(mapping, 0)] if ids.size else -1, -1).astype(np.int64)


def id_lookup(old_ids, new_ids):
    """A lookup array for :func:`relabel_segments` sending each ``old_ids[i]`` to ``new_ids[i]`` (others: -1).

    For tables already holding stable ids (moves, migration): e.g.
    ``id_lookup(segment_ids, exported_ids(mapping, survivors, segment_ids))``.

    Examples
    --------
    >>> id_lookup([7, 8, 9], [7, 9, 9]).tolist()
    [-1, -1, -1, -1, -1, -1, -1, 7, 9, 9]
    """
    old_ids = np.asarray(old_ids, dtype=np.int64)
    if old_ids.size and old_ids.min() < 0:
        raise ParameterError("segment ids must be non-negative.")
    out = np.full(int(old_ids.max()) + 1 if old_ids.size else 0, -1, dtype=np.int64)
    out[old_ids] = np.asarray(new_ids, dtype=np.int64)
    return out


def cluster_labels(mapping, labels, withheld="(withheld)"):
    """One label per fitted cluster (for the model): its exported segment's label, ``withheld`` for a withheld one.

    Examples
    --------
    >>> cluster_labels([0, 1, 1, -1], ["Loyal", "New"])
    ['Loyal', 'New', 'New', '(withheld)']
    """
    labels = list(labels)
    return [labels[m] if m >= 0 else withheld for m in np.asarray(mapping, dtype=np.int64).tolist()]


def relabel_moves(moves, lookup):
    """A moves table (:func:`segone.track.moves_piece`, new segments in stable ids) after merging or withholding.

    ``segment`` goes through ``lookup`` (:func:`id_lookup`: stable id ->
    exported id, -1 withheld); the rows of customers whose segment was
    withheld are dropped (they are in no exported segment), and ``status``
    is recomputed (stayed when the previous and the exported segment agree).
    """
    from segone.track import STATUSES

    seg = moves.column("segment")
    before = seg.is_valid().to_numpy(zero_copy_only=False) if seg.null_count else np.ones(moves.num_rows, bool)
    moves = relabel_segments(moves, lookup)
    after = moves.column("segment")
    now = after.is_valid().to_numpy(zero_copy_only=False) if after.null_count else np.ones(moves.num_rows, bool)
    keep = ~(before & ~now)
    if not keep.all():
        moves = moves.filter(pa.array(keep))
        now = now[keep]
    prev = moves.column("previous_segment")
    had = prev.is_valid().to_numpy(zero_copy_only=False) if prev.null_count else np.ones(moves.num_rows, bool)
    p = pc.fill_null(prev, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    q = pc.fill_null(moves.column("segment"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
    status = np.where(had & now, np.where(p == q, 0, 1), np.where(now, 2, 3)).astype(np.int8)
    col = pa.DictionaryArray.from_arrays(pa.array(status), pa.array(STATUSES))
    return moves.set_column(moves.column_names.index("status"), "status", col)


def merge_segment_stats(stats, mapping):
    """The :class:`~segone.describe.SegmentStats` of the segments after ``mapping`` (old -> new, -1: withheld).

    Exact: sizes, sums and counts add, the median sketches and the attribute
    value counts merge; the customers of a withheld segment count in ``n``
    only (as unassigned customers do), so the shares of the other segments
    keep their denominator.  ``stats.finish(rules)`` then gives the segment
    table, labels included.  (The same as a ``SegmentStats.merge_segments``
    method would do; the integrator may move it there.)
    """
    from segone.describe import SegmentStats

    mapping = np.asarray(mapping, dtype=np.int64)
    if mapping.shape != (stats.k,):
        raise ParameterError(f"mapping has shape {mapping.shape}; give one new id per segment ({stats.k}).")
    if (mapping >= 0).all() and (mapping == np.arange(stats.k)).all():
        return stats
    k2 = int(mapping.max()) + 1 if (mapping >= 0).any() else 0
    if k2 and set(np.unique(mapping[mapping >= 0]).tolist()) != set(range(k2)):
        raise ParameterError("mapping must send the kept segments onto 0..m-1 without gaps.")
    out = SegmentStats(k2, stats.columns, stats.median_columns, stats.categorical)
    out.n = stats.n
    keep = mapping >= 0
    out.size = np.bincount(mapping[keep], weights=stats.size[keep], minlength=k2).astype(np.int64)
    for j in range(k2):
        members = np.flatnonzero(mapping == j)
        out.sums[j] = stats.sums[members].sum(axis=0)
        out.counts[j] = stats.counts[members].sum(axis=0)
        for m in range(len(stats.median_columns)):
            sk = stats.seg_sketch[m][members[0]]
            for i in members[1:]:
                sk = sk.merge(stats.seg_sketch[m][i])
            out.seg_sketch[m][j] = sk
        for c in stats.categorical:
            d = {}
            for i in members:
                for key, v in stats.cat_counts[c][i].items():
                    d[key] = d.get(key, 0) + v
            out.cat_counts[c][j] = d
    out.all_sketch = list(stats.all_sketch)
    out.gap = stats.gap
    return out


# -- suppressing small cells -------------------------------------------------------
def _values(table, column):
    """A numeric column as float64 with NaN for nulls."""
    col = to_float64(table.column(column))
    return pc.fill_null(col, np.nan).to_numpy(zero_copy_only=False).astype(np.float64)


def suppress_small_cells(table, k, *, count_columns=(), share_columns=None, groups=(), row_columns=(),
                         flag_column="suppressed"):  # fmt: skip
    """Null every cell of ``table`` that stands for 1..k-1 customers, and the cells that would reveal it.

    Parameters
    ----------
    table : pyarrow.Table
        A small exported table (segment table, migration table, a report).
    k : int >= 1
        The minimum number of customers a shown cell may stand for.
    count_columns : names
        Columns holding customer counts.
    share_columns : dict {column: size}, optional
        Columns holding shares of a number of customers: ``size`` is a column
        name, a number or an array; the implied count is ``round(share * size)``.
    groups : list of lists of (column, row)
        Cells whose total is published or can be derived (a row's shares sum
        to 1, a segment's migration counts to its size): when one cell of a
        group is suppressed, the smallest other positive cell of the group is
        suppressed as well (repeated until no group has a lone suppressed cell).
    row_columns : names
        Columns nulled in every row with a suppressed cell (e.g. the spend of
        a suppressed migration cell).
    flag_column : str or None
        A boolean column added (True: the row has a suppressed cell).

    Zero cells are shown (they stand for no customer).  Returns ``(table,
    report)`` with report = {"k", "cells", "primary", "secondary", "rows"}.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"size": [100, 40], "x=a": [0.95, 0.5], "x=b": [0.05, 0.5]})
    >>> out, rep = suppress_small_cells(t, 10, share_columns={"x=a": "size", "x=b": "size"},
    ...                                 groups=[[("x=a", 0), ("x=b", 0)], [("x=a", 1), ("x=b", 1)]])
    >>> out.column("x=b").to_pylist(), out.column("x=a").to_pylist(), rep["primary"], rep["secondary"]
    ([None, 0.5], [None, 0.5], 1, 1)
    """
    k = _check_k(k)
    share_columns = dict(share_columns or {})
    sizes = [v for v in share_columns.values() if isinstance(v, str)]
    missing = [c for c in [*count_columns, *share_columns, *sizes, *row_columns] if c not in table.column_names]
    if missing:
        raise ParameterError(f"the table has no column(s) {missing}; columns: {table.column_names[:30]}.")
    n = table.num_rows
    counts = {}
    for c in count_columns:
        counts[c] = _values(table, c)
    for c, size in share_columns.items():
        s = _values(table, size) if isinstance(size, str) else np.broadcast_to(np.asarray(size, np.float64), (n,))
        counts[c] = np.round(_values(table, c) * s)
    sup = {c: (v > 0) & (v < k) for c, v in counts.items()}
    primary = int(sum(m.sum() for m in sup.values()))
    secondary = 0
    groups = [list(g) for g in groups]
    changed = True
    while changed:
        changed = False
        for g in groups:
            cells = [(c, r) for c, r in g if c in counts]
            hidden = [cell for cell in cells if sup[cell[0]][cell[1]]]
            if len(hidden) != 1:
                continue
            cand = [(counts[c][r], i) for i, (c, r) in enumerate(cells)
                    if not sup[c][r] and np.isfinite(counts[c][r]) and counts[c][r] > 0]  # fmt: skip
            if not cand:
                continue
            _, i = min(cand)
            c, r = cells[i]
            sup[c][r] = True
            secondary += 1
            changed = True
    rows = np.zeros(n, dtype=bool)
    for m in sup.values():
        rows |= m
    for c, m in sup.items():
        if m.any():
            i = table.column_names.index(c)
            col = table.column(i)
            table = table.set_column(i, table.field(i), pc.if_else(pa.array(m), pa.scalar(None, col.type), col))
    for c in row_columns:
        if rows.any():
            i = table.column_names.index(c)
            col = table.column(i)
            table = table.set_column(i, table.field(i), pc.if_else(pa.array(rows), pa.scalar(None, col.type), col))
    if flag_column:
        flag = pa.array(rows)
        if flag_column in table.column_names:
            table = table.set_column(table.column_names.index(flag_column), flag_column, flag)
        else:
            table = table.append_column(flag_column, flag)
    return table, {"k": k, "cells": primary + secondary, "primary": primary, "secondary": secondary,
                   "rows": int(rows.sum())}  # fmt: skip


def _mix_groups(names, categorical):
    """{attribute: [mix column names]} of a segment table (columns ``attribute=value``)."""
    out = {}
    if categorical is None:
        for n in names:
            if "=" in n:
                out.setdefault(n.split("=", 1)[0], []).append(n)
    else:
        for c in categorical:
            cols = [n for n in names if n.startswith(f"{c}=")]
            if cols:
                out[c] = cols
    return out


def suppress_segment_table(segments, k, *, categorical=None):
    """The segment table with no cell below ``k`` customers: ``(table, report)``.

    A segment whose ``size`` is 1..k-1 (merge or withhold them first) has
    every cell but its id nulled.  Attribute-mix columns (``attribute=value``,
    shares of the segment's size; those of ``categorical`` when given, else
    every column with ``=`` in its name) imply ``share * size`` customers:
    cells of 1..k-1 customers are nulled, and per segment and attribute one
    more cell when a single one was (the shares sum to 1).
    """
    k = _check_k(k)
    size = _values(segments, "size")
    small = (size > 0) & (size < k)
    mixes = _mix_groups(segments.column_names, categorical)
    share_columns = {c: "size" for cols in mixes.values() for c in cols}
    groups = [[(c, r) for c in cols] for cols in mixes.values() for r in range(segments.num_rows)]
    out, report = suppress_small_cells(segments, k, share_columns=share_columns, groups=groups)
    if small.any():
        rows = pa.array(small)
        for i, name in enumerate(out.column_names):
            if name in ("segment", "suppressed"):
                continue
            col = out.column(i)
            out = out.set_column(i, out.field(i), pc.if_else(rows, pa.scalar(None, col.type), col))
        flag = out.column_names.index("suppressed")
        out = out.set_column(flag, "suppressed", pc.or_(out.column(flag), rows))
        report["rows"] = int(pc.sum(out.column(flag)).as_py() or 0)
        report["small_segments"] = np.flatnonzero(small).tolist()
    return out, report


def suppress_counts_table(table, k, *, count="customers", keys=(), row_columns=("share", "spend")):
    """A long table of customer counts per cell (one row per combination of ``keys``) with no cell below ``k``.

    ``count`` of 1..k-1 becomes null with the ``row_columns`` of its row
    (those present), and a ``suppressed`` column flags those rows; within
    every value of every key (whose totals are published or derivable) a lone
    suppressed cell takes the smallest other cell with it.  Returns ``(table,
    report)``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"r": [1, 1, 2, 2], "f": [1, 2, 1, 2], "customers": [30, 3, 40, 50]})
    >>> out, rep = suppress_counts_table(t, 10, keys=("r",))
    >>> out.column("customers").to_pylist(), out.column("suppressed").to_pylist(), rep["cells"]
    ([None, None, 40, 50], [True, True, False, False], 2)
    >>> suppress_counts_table(t, 10, keys=("r", "f"))[0].column("customers").to_pylist()  # 2 x 2: all or none
    [None, None, None, None]
    """
    k = _check_k(k)
    groups = {}
    for key in keys:
        for r, v in enumerate(table.column(key).to_pylist()):
            groups.setdefault((key, v), []).append((count, r))
    rows = [c for c in row_columns if c in table.column_names]
    return suppress_small_cells(table, k, count_columns=[count], groups=list(groups.values()), row_columns=rows)


def suppress_migration(table, k):
    """The migration table (:func:`segone.track.migration_table`) with no cell below ``k`` customers.

    ``customers`` of 1..k-1 become null with their ``share``, ``spend``,
    ``clv`` and ``clv_before``, and a ``suppressed`` column flags those rows;
    within every from-segment and every to-segment (whose totals are
    published) a lone suppressed cell takes the smallest other cell with it.
    Returns ``(table, report)``.
    """
    return suppress_counts_table(table, k, keys=("from_segment", "to_segment"),
                                 row_columns=("share", "spend", "clv", "clv_before"))


def suppress_counts(counts, k):
    """A dict of customer counts (e.g. run.json's tracking counts) with every 1..k-1 value replaced by None.

    Examples
    --------
    >>> suppress_counts({"new": 3, "gone": 0, "stayed": 120, "note": "x"}, 10)
    {'new': None, 'gone': 0, 'stayed': 120, 'note': 'x'}
    """
    k = _check_k(k)
    return {key: (None if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 < v < k else v)
            for key, v in counts.items()}  # fmt: skip
