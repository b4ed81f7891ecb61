"""A tracked run: stable ids, moves and figures of a run against a previous one, in one process or per part."""

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone.errors import DataError, ParameterError, SchemaError
from segone.track._common import GONE, MOVED, NEW, STATUSES, STAYED
from segone.track.drift import feature_psi
from segone.track.matching import SegmentMatch, match_centroids, match_counts
from segone.track.migration import Contingency, migration_table
from segone.track.moves import _contingency_of, _moves_arrays, _moves_table, _overlap_from, check_id_types
from segone.track.previous import previous_piece


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
                      histogram=None, clv=None):  # fmt: skip
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
    clv : str, optional
        CLV column of ``assignments`` (and of the previous assignments, if
        present): the migration gains the CLV that moved (:func:`migration_table`).

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
    moves, raw, _ = moves_bucket(prev_table, assignments, id_column=cid, spend=spend, clv=clv, where=prev.where,
                                 prev_type=prev_table.schema.field(cid).type)  # fmt: skip
    match, cont, figures = finish_tracking(prev, raw, centroids=centroids, scorer=scorer, min_overlap=min_overlap,
                                           histogram=histogram)  # fmt: skip
    moves = relabel_moves_piece(moves, segment_ids=match.ids)
    return Tracking(match, cont, moves, migration_table(cont), figures)


def moves_bucket(prev_piece, new_piece, excluded=None, *, id_column="customer_id", spend=None, prev_type=None,
                 where="previous assignments", clv=None):  # fmt: skip
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
    m = _moves_arrays(prev_piece, new_piece, id_column=id_column, spend=spend, clv=clv,
                      where=(where, "new assignments"))  # fmt: skip
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
                excluded=None, min_overlap=1, clv=None):  # fmt: skip
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
        Per part: the id column, ``segment`` (cluster indices), ``spend``
        and ``clv`` when the run has it (:func:`tracking_columns`).
    excluded : parts, optional
        Per part: an array of ids to carry along (the ids without consent).
    clv : str, optional
        The CLV column of both runs (``"clv"``): the migration gains the CLV that moved.

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
    results = eng.persist(eng.map(_moves_of_piece, pieces, id_column=cid, spend=spend, clv=clv,
                                  prev_type=prev.id_type, where=prev.where), "moves")  # fmt: skip
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


def tracking_columns(profiles, assignments, *, id_column="customer_id", spend="spend_total", clv="clv",
                     spend_as="spend"):  # fmt: skip
    """Per part: the id and segment of the assignments with the profile's spend column (named ``spend_as``).

    The rows of an assignments part follow the rows of its profiles part
    (the pipeline assigns each profile piece), so the spend is taken by
    position.  Without that profile column, no spend column.  The profile's
    ``clv`` column (the value model's) comes along too, when present.
    ``spend_as`` is the name the previous output's assignments give the
    same figure (``spend_total`` for a ``segone run`` output), so that a
    gone customer's spend is found there.

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
        cols[spend_as] = profiles.column(spend)
    if clv is not None and clv in profiles.column_names:
        if profiles.num_rows != assignments.num_rows:
            raise ParameterError("profiles and assignments of a part must have the same rows.")
        cols["clv"] = profiles.column(clv)
    return pa.table(cols)
