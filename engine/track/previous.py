"""Reading a previous output: its assignments (part by part), its model and its run facts
(:func:`read_previous`)."""

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import outputs
from segone.errors import ModelFormatError, ParameterError
from segone.track._common import _column
from segone.track.migration import _keys_of
from segone.track.moves import _duplicates, _id_array, _join_strings, _segment_values


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
