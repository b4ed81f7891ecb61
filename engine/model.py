"""The fitted model as plain data: JSON and NumPy arrays with a format version, never pickle.

A model directory holds:

* ``model.json``: ``format`` ("segone-model"), ``version``, ``n_clusters``,
  ``features`` (the scorer's output columns, in order), ``segment_ids`` (the
  stable id of every centroid row), ``labels`` (a string per centroid row),
  ``next_id`` (the next unused segment id: ids are never reused),
  ``settings`` (what the run was asked for) and ``params`` (the segmenter's
  parameters);
* ``centroids.npy``: float32 / float64 array (n_clusters, n_features), read
  with ``allow_pickle=False``;
* ``scorer.json``: the fitted :class:`~segone.score.FeatureScorer`;
* ``feature_histogram.json`` (optional): the binned distribution of every
  feature (:class:`segone.track.FeatureHistogram`), used for the population
  stability index between runs.

Version 1 directories (segone <= 0.1, written before stable segment ids)
still load: their ids are ``0..k-1`` and their labels empty.  Loading checks
every field and the consistency of the parts, and any problem raises
:class:`~segone.errors.ModelFormatError` naming the file and the field.
"""

import json
import numbers
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from segone import outputs
from segone.errors import ModelFormatError, NotFittedError, ParameterError, SchemaError
from segone.io import atomic_directory, check_output, resolve_inputs, write_json, write_parquet

MODEL_FORMAT = "segone-model"
MODEL_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILES = outputs.MODEL_FILES
HISTOGRAM_FILE = outputs.FEATURE_HISTOGRAM
# profile columns that are absent from a profile when a category, channel or
# event never occurs in the data: a model fills them with 0 (no spend there)
ZERO_WHEN_ABSENT = ("share_", "channel_", "events_")

_ADVICE = "re-run `segone run` to write a complete model, or pass the model/ folder of a finished output"


class UnsupportedModelVersion(ModelFormatError):
    """A model directory of a format version this segone cannot read."""


def _json_safe(obj, where):
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where} must be JSON-safe (dicts, lists, str, numbers, bool, None): {exc}") from None


def _centroids_of(segmenter):
    if hasattr(segmenter, "cluster_centers_"):
        return np.asarray(segmenter.cluster_centers_)
    if isinstance(segmenter, np.ndarray):
        return segmenter
    raise NotFittedError(
        f"expected a fitted Segmenter (with cluster_centers_) or an array of centroids, got {type(segmenter).__name__}."
    )


def _check_ids_labels(segment_ids, labels, next_id, k):
    """Default and validate the stable ids, labels and next id of ``k`` centroid rows (ParameterError)."""
    if segment_ids is None:
        ids = list(range(k))
    else:
        ids = list(segment_ids.tolist() if isinstance(segment_ids, np.ndarray) else segment_ids)
        bad = [v for v in ids if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0]
        if bad:
            raise ParameterError(f"segment_ids must be non-negative integers, got {bad[:5]}.")
        ids = [int(v) for v in ids]
        if len(ids) != k:
            raise ParameterError(f"segment_ids has {len(ids)} entries for {k} centroids; give one id per centroid.")
        if len(set(ids)) != k:
            raise ParameterError(f"segment_ids must be unique, got {ids}.")
    if labels is None:
        labels = [""] * k
    else:
        labels = list(labels)
        if len(labels) != k or not all(isinstance(s, str) for s in labels):
            raise ParameterError(f"labels must be {k} strings (one per centroid), got {labels!r:.200}.")
    top = max(ids) + 1 if ids else 0
    if next_id is None:
        next_id = top
    elif isinstance(next_id, bool) or not isinstance(next_id, numbers.Integral) or next_id < top:
        raise ParameterError(f"next_id must be an integer >= {top} (larger than every segment id), got {next_id!r}.")
    return ids, labels, int(next_id)


def write_model(directory, seg, scorer, *, segment_ids=None, labels=None, next_id=None, settings=None,
                histogram=None, privacy=None, exported_ids=None):  # fmt: skip
    """Write model.json, centroids.npy and scorer.json into a new ``directory``.

    ``directory`` must not exist (the pipeline writes it inside its atomic
    output directory); see :func:`save_model` for the parameters.
    ``privacy`` (a :class:`segone.privacy.PrivacyPlan`) and ``exported_ids``
    (the id every centroid row was exported as, -1: withheld) are recorded as
    ``settings.privacy`` (:func:`segone.privacy.model_record`; never the key),
    which ``apply`` and ``track`` honour.
    """
    C = _centroids_of(seg)
    if C.ndim != 2 or C.dtype.kind != "f":
        raise ParameterError(f"centroids must be a 2-D float array, got {C.dtype} with shape {C.shape}.")
    k = C.shape[0]
    ids, labels, next_id = _check_ids_labels(segment_ids, labels, next_id, k)
    features = list(scorer.feature_names_out_)
    if C.shape[1] != len(features):
        raise ParameterError(f"centroids have {C.shape[1]} columns but the scorer has {len(features)} features.")
    params = {}
    if hasattr(seg, "get_params"):
        params = {k_: v for k_, v in seg.get_params().items() if not isinstance(v, np.ndarray)}
        params = {k_: v for k_, v in params.items() if isinstance(v, (str, int, float, bool, type(None)))}
    settings = _json_safe(settings or {}, "settings")
    if "privacy" in settings:
        raise ParameterError("settings must not hold 'privacy': pass the plan as privacy= (it is recorded there).")
    if privacy is not None:
        from segone.privacy import model_record

        if exported_ids is not None and len(exported_ids) != k:
            raise ParameterError(f"exported_ids has {len(exported_ids)} entries for {k} centroids.")
        settings["privacy"] = model_record(privacy, exported_ids)
    elif exported_ids is not None:
        raise ParameterError("exported_ids needs privacy= (the plan they were exported under).")
    os.makedirs(directory)
    np.save(os.path.join(directory, outputs.CENTROIDS), np.ascontiguousarray(C), allow_pickle=False)
    with open(os.path.join(directory, outputs.SCORER), "w") as f:
        f.write(scorer.to_json())
    if histogram is not None:
        write_json(histogram.to_dict(), os.path.join(directory, outputs.FEATURE_HISTOGRAM))
    write_json(
        {"format": MODEL_FORMAT, "version": MODEL_VERSION, "n_clusters": k, "features": features,
         "segment_ids": ids, "labels": labels, "next_id": next_id, "settings": settings, "params": params},
        os.path.join(directory, outputs.MODEL_JSON),
    )  # fmt: skip


def save_model(directory, segmenter, scorer, *, segment_ids=None, labels=None, settings=None, next_id=None,
               histogram=None, privacy=None, overwrite=False):  # fmt: skip
    """Save a fitted model as a versioned directory (JSON + ``.npy``; never pickle), atomically.

    Parameters
    ----------
    directory : str or path
        Where to write (must not exist or be empty unless ``overwrite``).
    segmenter : Segmenter or ndarray (k, d)
        The fitted segmenter (its ``cluster_centers_``) or the centroids.
    scorer : FeatureScorer
        The fitted scorer; its ``feature_names_out_`` are the model's features.
    segment_ids : sequence of int, optional
        The stable id of every centroid row (unique, >= 0); default ``0..k-1``.
    labels : sequence of str, optional
        A label per centroid row; default empty strings.
    settings : dict, optional
        JSON-safe settings to keep with the model (e.g. the run's parameters).
    next_id : int, optional
        The next unused segment id (default ``max(segment_ids) + 1``); ids
        that vanished earlier stay used.
    histogram : segone.track.FeatureHistogram, optional
        The binned feature distribution (for the population stability index).
    privacy : segone.privacy.PrivacyPlan, optional
        The privacy options the model was fitted with (from
        :func:`segone.privacy.check_privacy`): recorded in model.json
        (``settings.privacy``, never the key) and honoured by
        :func:`apply_model`.
    overwrite : bool
        Replace an existing directory.

    Returns
    -------
    str
        The absolute path written.

    Examples
    --------
    >>> import numpy as np, os, tempfile, segone
    >>> from segone.model import save_model, load_model
    >>> prof = segone.build_profiles(segone.synth.generate(500, seed=0).transactions)
    >>> scorer = segone.FeatureScorer().fit(prof)
    >>> seg = segone.Segmenter(3, random_state=0).fit(scorer.transform(prof))
    >>> path = save_model(os.path.join(tempfile.mkdtemp(), "m"), seg, scorer, segment_ids=[7, 2, 5])
    >>> m = load_model(path)
    >>> m.segment_ids.tolist(), m.next_id, np.array_equal(m.centroids, seg.cluster_centers_)
    ([7, 2, 5], 8, True)
    """
    with check_output(directory, (), overwrite, name="directory"), \
            atomic_directory(directory, overwrite=overwrite) as tmp:  # fmt: skip
        os.rmdir(tmp)  # write_model creates the directory itself
        write_model(tmp, segmenter, scorer, segment_ids=segment_ids, labels=labels, next_id=next_id,
                    settings=settings, histogram=histogram, privacy=privacy)  # fmt: skip
    return os.path.abspath(os.fspath(directory))


@dataclass
class Model:
    """A loaded model: apply it to new customers without refitting.

    Attributes
    ----------
    scorer : FeatureScorer
    centroids : ndarray (k, d)
    segment_ids : ndarray of int64 (k,)
        Stable id of every centroid row.
    labels : list of str (k,)
    next_id : int
        The next unused segment id.
    features : list of str (d,)
    settings, params : dict
    version : int
        The format version the directory was written with.
    histogram : segone.track.FeatureHistogram or None
    path : str
    """

    scorer: object = field(repr=False)
    centroids: np.ndarray = field(repr=False)
    segment_ids: np.ndarray
    labels: list
    next_id: int
    features: list
    settings: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict, repr=False)
    version: int = MODEL_VERSION
    histogram: object = field(default=None, repr=False)
    path: str | None = None

    def features_of(self, profiles):
        """The scored feature matrix of ``profiles`` (the model's scorer; no refit).

        Feature columns of the ``share_*``, ``channel_*`` and ``events_*``
        groups that the profiles lack (a category, channel or event that does
        not occur in the new data) are taken as 0; any other missing feature
        raises :class:`~segone.errors.SchemaError`.
        """
        table, _ = self._complete(profiles)
        return self.scorer.transform(table)

    def _complete(self, profiles):
        from segone.io import read_table

        table = read_table(profiles, name="profiles")
        missing = [f for f in self.features if f not in table.column_names]
        fill = [f for f in missing if f.startswith(ZERO_WHEN_ABSENT)]
        hard = [f for f in missing if f not in fill]
        if hard:
            raise SchemaError(
                f"profiles lack the model's feature column(s) {hard[:10]}; the model was fitted on "
                f"{len(self.features)} features. Build the profiles the same way as for the model "
                "(same schema and inputs: events for events_*, attributes for CRM columns)."
            )
        for f in fill:
            table = table.append_column(f, pa.array(np.zeros(table.num_rows)))
        return table, fill

    def apply(self, profiles, *, id_column="customer_id", backend="auto", n_threads=None):
        """Assign customers to the model's segments: a table of id, segment, distance, margin.

        Parameters
        ----------
        profiles : pyarrow Table (or anything :func:`segone.build_profiles` returns)
            One row per customer with the model's feature columns and ``id_column``.
        id_column : str
            The customer id column (copied to the output).

        Returns
        -------
        pyarrow.Table
            ``id_column``, ``segment`` (the stable id, int32), ``distance``
            (squared, to the own centroid) and ``margin`` (second-nearest minus
            nearest squared distance), one row per profile row, in order.

        Examples
        --------
        >>> import numpy as np, os, tempfile, segone
        >>> from segone.model import save_model, load_model
        >>> prof = segone.build_profiles(segone.synth.generate(500, seed=0).transactions)
        >>> scorer = segone.FeatureScorer().fit(prof)
        >>> seg = segone.Segmenter(3, random_state=0).fit(scorer.transform(prof))
        >>> m = load_model(save_model(os.path.join(tempfile.mkdtemp(), "m"), seg, scorer, segment_ids=[7, 2, 5]))
        >>> out = m.apply(prof)
        >>> out.column_names
        ['customer_id', 'segment', 'distance', 'margin']
        >>> bool((out.column("segment").to_numpy() == np.array([7, 2, 5])[seg.labels_]).all())
        True
        """
        from segone.assignment import assign

        table, _ = self._complete(profiles)
        if id_column not in table.column_names:
            raise SchemaError(
                f"profiles have no customer id column {id_column!r}; columns: {table.column_names[:20]}. "
                "Pass id_column= (or schema= to apply_model)."
            )
        X = self.scorer.transform(table)
        res = assign(X, self.centroids.astype(X.dtype, copy=False), margin=True, backend=backend,
                     n_threads=n_threads)  # fmt: skip
        ids = self.segment_ids.astype(np.int32)
        return pa.table({
            id_column: table.column(id_column),
            "segment": pa.array(ids[res.labels]),
            "distance": pa.array(res.distance),
            "margin": pa.array(res.margin),
        })  # fmt: skip

    def predict(self, X):
        """Stable segment id of every row of an already scored feature matrix ``X``."""
        from segone.assignment import assign

        res = assign(X, self.centroids.astype(np.asarray(X).dtype, copy=False))
        return self.segment_ids[res.labels]


# -- loading and validation -----------------------------------------------------
def _fail(path, field_, what, fix=_ADVICE):
    raise ModelFormatError(f"{path}: field {field_!r} {what}; {fix}.")


def _model_dir(path):
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "model.json")):
        sub = os.path.join(path, "model")
        if os.path.isdir(sub):  # an output directory: its model/ folder
            return sub
    return path


def _read_json(path, what):
    if not os.path.isfile(path):
        raise ModelFormatError(f"{path}: {what} is missing (a half-written or foreign directory?); {_ADVICE}.")
    from segone._validation import load_json

    return load_json(path, what, fix=_ADVICE)  # nesting bounded: never a RecursionError


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def read_model_json(path):
    """The checked ``model.json`` of a model directory (raises ModelFormatError)."""
    directory = _model_dir(path)
    if not os.path.isdir(directory):
        raise ModelFormatError(f"model directory {os.fspath(path)!r} does not exist or is not a directory; "
                               f"{_ADVICE}.")  # fmt: skip
    mpath = os.path.join(directory, "model.json")
    meta = _read_json(mpath, "model.json")
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{mpath}: expected a JSON object, got {type(meta).__name__}; {_ADVICE}.")
    if meta.get("format") != MODEL_FORMAT:
        _fail(mpath, "format", f"is {meta.get('format')!r}, expected {MODEL_FORMAT!r} (not a segone model)",
              "pass the model/ folder of a segone output")  # fmt: skip
    version = meta.get("version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise UnsupportedModelVersion(
            f"{mpath}: field 'version' is {version!r}; this segone (model format version {MODEL_VERSION}) reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}. Re-run `segone run` with this segone to write "
            "the model again (or use the segone version that wrote it)."
        )
    k = meta.get("n_clusters")
    if not _is_int(k) or k < 1:
        _fail(mpath, "n_clusters", f"must be a positive integer, got {k!r}")
    feats = meta.get("features")
    if not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats):
        _fail(mpath, "features", f"must be a non-empty list of column names, got {feats!r:.100}")
    if len(set(feats)) != len(feats):
        _fail(mpath, "features", "holds duplicate names")
    if version == 1:
        meta.update(segment_ids=list(range(k)), labels=[""] * k, next_id=k, settings={})
    ids = meta.get("segment_ids")
    if not isinstance(ids, list) or not all(_is_int(v) for v in ids):
        _fail(mpath, "segment_ids", f"must be a list of integers, got {ids!r:.100}")
    if any(v < 0 for v in ids):
        _fail(mpath, "segment_ids", f"holds negative ids {[v for v in ids if v < 0][:5]}")
    if len(set(ids)) != len(ids):
        dup = sorted({v for v in ids if ids.count(v) > 1})
        _fail(mpath, "segment_ids", f"holds duplicate ids {dup[:5]}; every segment needs its own id")
    if len(ids) != k:
        _fail(mpath, "segment_ids", f"has {len(ids)} entries but n_clusters is {k}")
    labels = meta.get("labels")
    if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
        _fail(mpath, "labels", f"must be a list of strings, got {labels!r:.100}")
    if len(labels) != k:
        _fail(mpath, "labels", f"has {len(labels)} entries but n_clusters is {k}")
    nid = meta.get("next_id")
    if not _is_int(nid) or nid < (max(ids) + 1):
        _fail(mpath, "next_id", f"must be an integer larger than every segment id ({max(ids)}), got {nid!r}")
    for name in ("settings", "params"):
        if not isinstance(meta.get(name, {}), dict):
            _fail(mpath, name, f"must be a JSON object, got {type(meta.get(name)).__name__}")
    cid = meta.get("settings", {}).get("id_column")
    if cid is not None and (not isinstance(cid, str) or not cid):
        _fail(mpath, "settings.id_column", f"must be a column name, got {cid!r:.60}")
    return directory, meta


def load_model(path):
    """Load and validate a model directory written by :func:`save_model` or ``segone run``.

    Parameters
    ----------
    path : str or path
        The model directory, or an output directory holding ``model/``.

    Returns
    -------
    Model

    Raises
    ------
    ModelFormatError
        When a file is missing, truncated or corrupt, or a field is invalid
        or inconsistent with another part; the message names the file and
        the field.  :class:`UnsupportedModelVersion` (a subclass) when the
        format version is not one this segone reads.

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.model import load_model
    >>> d = segone.synth.generate(1000, seed=0)
    >>> out = os.path.join(tempfile.mkdtemp(), "out")
    >>> res = segone.run(d.transactions, out, 3, events=d.events, attributes=d.customers)
    >>> m = load_model(out)
    >>> m.centroids.shape == (3, len(m.features)), m.segment_ids.tolist()
    (True, [0, 1, 2])
    """
    directory, meta = read_model_json(path)
    k, feats = meta["n_clusters"], meta["features"]
    cpath = os.path.join(directory, "centroids.npy")
    if not os.path.isfile(cpath):
        raise ModelFormatError(f"{cpath}: centroids.npy is missing (a half-written directory?); {_ADVICE}.")
    C = _load_centroids(cpath, k, len(feats))
    spath = os.path.join(directory, "scorer.json")
    if not os.path.isfile(spath):
        raise ModelFormatError(f"{spath}: scorer.json is missing (a half-written directory?); {_ADVICE}.")
    scorer = _load_scorer(spath)
    if list(scorer.feature_names_out_) != feats:
        _fail(spath, "features", f"the scorer has {len(scorer.feature_names_out_)} features "
                                 f"{scorer.feature_names_out_[:5]}... but model.json and the centroid width say "
                                 f"{len(feats)} {feats[:5]}...; the parts come from different models")  # fmt: skip
    hist = None
    hpath = os.path.join(directory, HISTOGRAM_FILE)
    if os.path.exists(hpath):
        from segone.track import FeatureHistogram

        d = _read_json(hpath, HISTOGRAM_FILE)
        try:
            hist = FeatureHistogram.from_dict(d)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{hpath}: {exc}") from None
        if hist.features != feats:
            _fail(hpath, "features", "differ from model.json's features")
    return Model(scorer=scorer, centroids=C, segment_ids=np.asarray(meta["segment_ids"], dtype=np.int64),
                 labels=list(meta["labels"]), next_id=int(meta["next_id"]), features=list(feats),
                 settings=dict(meta.get("settings", {})), params=dict(meta.get("params", {})),
                 version=int(meta["version"]), histogram=hist, path=os.path.abspath(directory))  # fmt: skip


def _load_centroids(cpath, k, d):
    """centroids.npy, checked before anything is allocated: its header's dtype (float32 / float64, never
    pickle) and shape ``(k, d)`` (model.json's) against the file's byte size; then finite values that fit the
    float32 features they are compared with (ModelFormatError naming the file)."""
    from segone._validation import check_npy_header

    check_npy_header(cpath, "centroids.npy (field 'centroids')", shape=(k, d), fix=_ADVICE)
    try:
        C = np.load(cpath, mmap_mode="r", allow_pickle=False)
        C = np.array(C, copy=True)  # the checked bytes, in memory (the file is not kept open)
    except (ValueError, OSError, EOFError) as exc:
        raise ModelFormatError(f"{cpath}: field 'centroids' cannot be read ({exc}); the file is truncated or "
                               f"not a NumPy .npy array; {_ADVICE}.") from None  # fmt: skip
    if not np.isfinite(C).all():
        rows = np.flatnonzero(~np.isfinite(C).all(axis=1))
        _fail(cpath, "centroids", f"holds NaN or infinite values in rows {rows[:5].tolist()}")
    big = np.abs(C) > np.finfo(np.float32).max
    if big.any():
        r, c = (int(v[0]) for v in np.nonzero(big))
        _fail(cpath, "centroids", f"holds values beyond the float32 range (row {r}, column {c}: {C[r, c]:.6g}); "
                                  "features are float32, so these centroids would be infinite")  # fmt: skip
    return C


def _load_scorer(spath):
    from segone._validation import MAX_JSON_DEPTH, json_depth
    from segone.score import FeatureScorer

    try:
        with open(spath, "rb") as f:
            raw = f.read()
        depth = json_depth(raw)
        if depth > MAX_JSON_DEPTH:
            raise ModelFormatError(f"{spath}: field 'scorer' nests arrays or objects {depth} levels deep (a scorer "
                                   f"document nests a few); the file is corrupt; {_ADVICE}.")  # fmt: skip
        return FeatureScorer.from_json(raw.decode("utf-8"))
    except ModelFormatError as exc:
        if str(exc).startswith(spath):
            raise
        raise ModelFormatError(f"{spath}: field 'scorer' is not a valid segone scorer ({exc}); {_ADVICE}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{spath}: field 'scorer' is not valid JSON ({exc}); the file is truncated or "
                               f"corrupt; {_ADVICE}.") from None  # fmt: skip
    except (ParameterError, KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise ModelFormatError(f"{spath}: field 'scorer' is not a valid segone scorer ({type(exc).__name__}: "
                               f"{exc}); {_ADVICE}.") from None  # fmt: skip


# -- apply ------------------------------------------------------------------------
@dataclass
class ApplyResult:
    """What :func:`apply_model` produced: the output path, the assignments (as written) and run.json's content."""

    out: str
    assignments: pa.Table
    summary: dict


def apply_model(model_dir, input, out, *, events=None, attributes=None, as_of=None, schema=None, overwrite=False,
                backend="auto", n_threads=None, consent=None, consent_scope=None, consent_default=None,
                hash_ids=None, id_key_file=None, min_segment_size=None, small_segments=None, keep_columns=None,
                personal_columns=None, purposes=None):  # fmt: skip
    """Assign the customers of ``input`` to a saved model's segments (no refit); write to ``out``.

    Profiles the input with :func:`segone.build_profiles`, scores it with the
    model's scorer and assigns every customer to the nearest centroid.
    Writes ``assignments.parquet`` (customer id, segment = stable id,
    distance, margin) and ``run.json`` atomically, through the same export
    stage as :func:`segone.run`.  When the model holds a feature histogram,
    run.json reports the population stability index of every feature between
    the model's data and this input (drift).

    Privacy: the model records the options it was fitted with (consent, id
    hashing and its key check, minimum segment size, personal columns, the
    segments merged or withheld).  Every privacy option left at None takes
    the model's value; options that would widen them (``hash_ids=False``
    where the model hashed, another key, consent rules that leave one of the
    model's out, ``consent_scope="export"`` after "processing",
    ``consent_default=True`` after False, a smaller ``min_segment_size``,
    keeping a column the model removed) raise
    :class:`segone.privacy.WiderPrivacyError` before any work.  Narrower
    options are taken.  A model written before the record applies with the
    options given (none by default).  Customers are counted, merged or
    withheld per segment as in :func:`segone.run`, on this input's sizes.

    Parameters
    ----------
    model_dir : str or path
        A model directory, or an output directory holding ``model/``.
    input, events, attributes, as_of, schema :
        As for :func:`segone.run`.
    out : str or path
        Output directory (must not exist or be empty unless ``overwrite``).
    overwrite : bool
    backend, n_threads :
        Kernel backend and threads.
    consent, consent_scope, consent_default, hash_ids, id_key_file, min_segment_size, small_segments, \
keep_columns, personal_columns, purposes :
        As for :func:`segone.run`; None (the default) takes the model's.

    Returns
    -------
    ApplyResult

    Examples
    --------
    >>> import os, tempfile, segone
    >>> from segone.model import apply_model
    >>> d = segone.synth.generate(1000, seed=0)
    >>> tmp = tempfile.mkdtemp()
    >>> res = segone.run(d.transactions, os.path.join(tmp, "fit"), 3, events=d.events, attributes=d.customers)
    >>> ap = apply_model(os.path.join(tmp, "fit"), d.transactions, os.path.join(tmp, "apply"),
    ...                  events=d.events, attributes=d.customers)
    >>> ap.assignments.column("segment").equals(res.assignments.column("segment"))
    True

    With the model of a private run, the same options hold by default:

    >>> os.environ["SEGONE_ID_KEY"] = "an example key, 16+ bytes"
    >>> _ = segone.run(d.transactions, os.path.join(tmp, "private"), 3, attributes=d.customers,
    ...                consent="consent_marketing", hash_ids=True)
    >>> ap = apply_model(os.path.join(tmp, "private"), d.transactions, os.path.join(tmp, "apply2"),
    ...                  attributes=d.customers)
    >>> ap.summary["privacy"]["from_model"], ap.assignments.num_rows < 1000
    (['consent', 'hash_ids'], True)
    >>> apply_model(os.path.join(tmp, "private"), d.transactions, os.path.join(tmp, "apply3"),
    ...             attributes=d.customers, hash_ids=False)
    Traceback (most recent call last):
    ...
    segone.privacy.WiderPrivacyError: hash_ids=False: the model (...) was fitted with hash_ids=True, ...
    >>> del os.environ["SEGONE_ID_KEY"]
    """
    import time

    from segone import privacy as _privacy

    from segone._threads import effective_n_threads
    from segone._validation import check_min_segment_size, check_path

    t0 = time.perf_counter()
    # every parameter, then the paths, before any input is read (the model itself: load_model, before the data)
    check_min_segment_size(min_segment_size)
    effective_n_threads(n_threads)
    for name, src in (("input", input), ("events", events), ("attributes", attributes)):
        check_path(src, name)
    check_path(out, "out", must_exist=False)
    check_path(id_key_file, "id_key_file", kind="file")
    tx, ev, at = resolve_inputs(input, events, attributes)
    # checked and locked before any work: writable, not an input, not written by another run
    lock = check_output(out, [("transactions", tx), ("events", ev), ("attributes", at)], overwrite,
                        others=[("model", model_dir)])  # fmt: skip
    with lock:
        # the model and the privacy options, checked before any work: nothing wider than the model's
        model = load_model(model_dir)
        record = _privacy.model_privacy(model)
        plan, taken = _privacy.apply_plan(
            record, attributes=at, inputs=(tx, ev, at), schema=schema, where=model.path, consent=consent,
            consent_scope=consent_scope, consent_default=consent_default, hash_ids=hash_ids,
            id_key_file=id_key_file, min_segment_size=min_segment_size, small_segments=small_segments,
            keep_columns=keep_columns, personal_columns=personal_columns, purposes=purposes,
        )  # fmt: skip
        return _apply_model(model, tx, ev, at, out, input=input, as_of=as_of, schema=schema, overwrite=overwrite,
                            backend=backend, n_threads=n_threads, t0=t0, plan=plan, record=record,
                            taken=taken)  # fmt: skip


def _export_ids(model, record, sizes_of, plan):
    """The id written for every centroid row (-1: withheld) and the small-segment report (or None).

    The fit's merges and withholdings (the record's ``exported_ids``), then,
    with a minimum segment size, those of this input: exported segments of
    fewer customers here (``sizes_of(ids per row)`` counts them) are merged
    into their nearest exported segment or withheld, as in :func:`segone.run`.
    """
    from segone import privacy as _privacy

    rows = np.asarray(model.segment_ids, dtype=np.int64)
    if record is not None and record.get("exported_ids") is not None:
        rows = np.asarray(record["exported_ids"], dtype=np.int64)
    if plan.min_segment_size is None:
        return rows, None
    exp = np.array(list(dict.fromkeys(int(i) for i in rows if i >= 0)), dtype=np.int64)
    sizes = sizes_of(rows, exp)
    centroids = model.centroids[[int(np.flatnonzero(model.segment_ids == e)[0]) for e in exp]]
    mapping, report = _privacy.small_segment_mapping(sizes, centroids, plan.min_segment_size, plan.small_segments)
    final = _privacy.exported_ids(mapping, report["survivors"], exp)  # per exported segment
    index = {int(e): i for i, e in enumerate(exp)}
    return np.array([final[index[int(r)]] if r >= 0 else -1 for r in rows], dtype=np.int64), report


def _apply_model(model, tx, ev, at, out, *, input, as_of, schema, overwrite, backend, n_threads, t0, plan, record,
                 taken):  # fmt: skip
    import datetime as _dt
    import time

    from segone import privacy as _privacy
    from segone.profile import build_profiles_with_summary

    # the model's category, channel and event columns (recorded since this release), whatever the input's own
    # top categories are: otherwise a category of the model missing from the input's top ones would read as 0
    labels = ((model.settings or {}).get("profile") or {}).get("labels")
    profiles, summary = build_profiles_with_summary(tx, events=ev, attributes=at, as_of=as_of, schema=schema,
                                                    backend=backend, n_threads=n_threads, labels=labels)  # fmt: skip
    # PRIVACY: count consent, drop the customers without it (scope "processing") and the personal columns
    counts = _privacy.PrivacyCounts(customers=profiles.num_rows, consented=profiles.num_rows)
    if plan.active:
        profiles, counts = _privacy.processing_piece(profiles, plan=plan)
    try:
        plan.check_customers(profiles.num_rows)
    except ParameterError as exc:
        if "min_segment_size" not in taken:
            raise
        raise ParameterError(f"the model's min_segment_size={plan.min_segment_size} is larger than the "
                             f"{profiles.num_rows} customers of this input (after consent): no segment could be "
                             "shown. Apply the model to more customers.") from exc  # fmt: skip
    table, filled = model._complete(profiles)
    assignments = model.apply(table, id_column=outputs.ID_COLUMN, backend=backend, n_threads=n_threads)
    seg = assignments.column(outputs.SEGMENT_COLUMN).to_numpy()  # the stable id of every customer's centroid row

    def sizes_of(rows, ids):
        lookup = _privacy.id_lookup(model.segment_ids, rows)
        now = lookup[seg] if seg.size else seg
        return np.array([int((now == i).sum()) for i in ids], dtype=np.int64)

    final, seg_report = _export_ids(model, record, sizes_of, plan)
    mapping = None if np.array_equal(final, model.segment_ids) else _privacy.id_lookup(model.segment_ids, final)
    # EXPORT: the same per-piece stage as run (relabel, consent filter, pseudonyms, personal columns)
    exported = assignments
    if plan.active or mapping is not None:
        exported = _privacy.export_piece(assignments, table, plan=plan, mapping=mapping)
    shown = [int(i) for i in dict.fromkeys(final.tolist()) if i >= 0]
    sizes = dict(zip(shown, sizes_of(final, shown).tolist()))
    row_of = {int(sid): r for r, sid in enumerate(model.segment_ids.tolist())}  # an exported id is its row's id
    segments = {str(i): {"label": model.labels[row_of[i]], "customers": sizes[i]} for i in shown}
    if plan.min_segment_size is not None:
        segments = {i: _privacy.suppress_counts(s, plan.min_segment_size) for i, s in segments.items()}
    info = {
        "format": "segone-apply",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "segone_version": __import__("segone").__version__,
        "model": model.path,
        "model_version": model.version,
        "input": os.fspath(input) if isinstance(input, (str, os.PathLike)) else type(input).__name__,
        "rows_read": summary["rows_read"],
        "rows_dropped": summary["dropped"],
        "rows_excluded_after_as_of": summary["excluded_after_as_of"],
        "as_of": summary["as_of"],
        "customers": summary["customers"],
        "customers_written": exported.num_rows,
        "segments": segments,
        "features": model.features,
        "features_filled_with_zero": filled,
    }
    if model.histogram is not None:
        from segone.track import FeatureHistogram, feature_psi

        hist = FeatureHistogram.of(table, features=model.features)
        info["feature_psi"] = feature_psi(model.histogram, hist)
    info["privacy"] = _privacy.privacy_summary(plan, counts, segments=seg_report,
                                               exported_ids=final if seg_report is not None else None)  # fmt: skip
    info["privacy"]["from_model"] = list(taken)
    info["privacy"]["model_record"] = record is not None
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_parquet(exported, os.path.join(tmp, outputs.ASSIGNMENTS))
        info["timings_s"] = {"total": round(time.perf_counter() - t0, 4)}
        write_json(info, os.path.join(tmp, outputs.RUN_JSON))
    return ApplyResult(os.path.abspath(os.fspath(out)), exported, info)
