"""FeatureScorer: customer profiles -> float32 feature matrix.

Per feature, in this order:

1. nulls are filled (see below), NaN / infinite values raise;
2. an optional ``log1p`` (values clipped at 0 first);
3. optional winsorising at the quantiles ``clip_quantiles`` of the fitted data;
4. scaling: ``"standard"`` (mean / standard deviation), ``"robust"``
   (median / interquartile range, as scikit-learn's ``RobustScaler``),
   ``"quantile"`` (the value's rank in the fitted data, as a score
   ``(rank - 0.5) * sqrt(12)`` that has mean 0 and variance 1 like the
   other scalings; tied values share one score) or ``"none"``;
5. clipping of the scaled value to ``[-clip, clip]`` and a weight.

Steps 1-5 run in one fused kernel (Cython or Numba, with a NumPy reference)
that reads every Arrow column once and writes the row-major float32 matrix.

The fitted state is mergeable: fitting on pieces of the data and merging the
states (:meth:`FeatureScorer.merge_states`) gives the same scorer as fitting
on the whole.  Means and variances merge exactly (Chan et al.); medians,
quartiles and quantile grids come from a :class:`~segone.sketch.QuantileSketch`
(relative error ``alpha``, 0.5% by default) whose merge is exact, so the
merged result equals the whole-data result, and both are within the sketch
error of the exact quantiles.

Default features (those present in the profile are used) come from the
feature registry (:mod:`segone.features`, :func:`~segone.features.scorer_defaults`):
every feature with a ``transform`` -- today ``log1p`` for orders,
purchase_days, spend_total, spend_mean, recency_days, tenure_days and the
events_* counts; as is for the share_* category spend shares and the
channel_* shares.

Share groups (registry ``share_group``) are down-weighted so that a group of
``g`` columns counts like about two features: weight ``sqrt(2 / g)`` per
column.

Null rules: nulls of the features whose registry entry has
``null_means_never`` (``recency_days``, ``days_since_*``) mean "never" and
are filled with the largest value seen in fit; other nulls are filled with 0.
"""

import json
import numbers

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, TransformerMixin

from segone._backend import get_kernels
from segone._threads import effective_n_threads
from segone._validation import (
    check_choice,
    check_finite_column,
    check_fitted,
    check_float,
    check_stored_array,
    check_stored_number,
)
from segone.errors import DataError, ModelFormatError, ParameterError, SchemaError, examples
from segone._state import State
from segone import features as _features
from segone.io import read_table
from segone.sketch import QuantileSketch

TRANSFORMS = ("identity", "log1p")
SCALINGS = ("standard", "robust", "quantile", "none")
N_KNOTS = 257  # quantile grid of the "quantile" scaling: ranks in steps of 1/256
FORMAT_VERSION = 3  # 3: the state carries its kind and version (stage protocol)


def default_features(columns):
    """Default (feature, transform) list for a profile with these columns (see :func:`segone.features.scorer_defaults`).

    Examples
    --------
    >>> default_features(["customer_id", "orders", "spend_total", "share_shoes", "share_other"])
    [('orders', 'log1p'), ('spend_total', 'log1p'), ('share_shoes', 'identity'), ('share_other', 'identity')]
    """
    return _features.scorer_defaults(columns)


def _default_weights(names):
    groups = {}
    for n in names:
        g = _features.share_group_of(n)
        if g is not None:
            groups.setdefault(g, []).append(n)
    w = {n: 1.0 for n in names}
    for cols in groups.values():
        for n in cols:
            w[n] = float(np.sqrt(2.0 / len(cols)))
    return w


def _check_numeric(table, names):
    for name in names:
        t = table.schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise SchemaError(f"feature column {name!r} has type {t}; expected a numeric column.")


def _never(name):
    return _features.null_means_never(name)


class ScalerState:
    """Mergeable per-feature statistics: count, mean, M2, max (float64)."""

    def __init__(self, n_features):
        self.count = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.max = np.full(n_features, -np.inf)

    def merge(self, other):
        """Combine two states (Chan's parallel update); returns a new state."""
        out = ScalerState(self.count.size)
        n = self.count + other.count
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, other.count / np.where(n > 0, n, 1), 0.0)
        out.count = n
        out.mean = self.mean + delta * frac
        out.m2 = self.m2 + other.m2 + delta**2 * self.count * frac
        out.max = np.maximum(self.max, other.max)
        return out

    @property
    def std(self):
        var = np.where(self.count > 0, self.m2 / np.maximum(self.count, 1), 0.0)
        return np.sqrt(var)

    def to_dict(self):
        return {k: getattr(self, k).tolist() for k in ("count", "mean", "m2", "max")}

    @classmethod
    def from_dict(cls, d, n_features=None, where="scaler state"):
        """The state of :meth:`to_dict`; every field is checked (ModelFormatError naming it)."""
        if not isinstance(d, dict):
            raise ModelFormatError(f"{where}: expected an object with count, mean, m2 and max, got {type(d).__name__}.")
        n = len(d["count"]) if n_features is None and isinstance(d.get("count"), list) else n_features
        st = cls(n or 0)
        st.count = check_stored_array(d.get("count"), "count", where, length=n, low=0.0)
        st.mean = check_stored_array(d.get("mean"), "mean", where, length=n)
        st.m2 = check_stored_array(d.get("m2"), "m2", where, length=n, low=0.0)
        st.max = check_stored_array(d.get("max"), "max", where, length=n, allow_neg_inf=st.count == 0)
        return st


class ScorerState(State):
    """The mergeable statistics a :class:`FeatureScorer` fits on some rows.

    ``ScorerState.of(profiles, scorer)`` is the state of one piece (the same
    as ``scorer.partial_state(profiles)``); ``finish(scorer)`` fits the
    scorer from the merged state.

    ``features`` is the list of (name, transform, scaling); ``moments`` the
    per-feature :class:`ScalerState` of the transformed values (the rows of a
    "never" column that are null are left out and counted in ``n_never``);
    ``sketches`` a :class:`~segone.sketch.QuantileSketch` per feature (None
    where no quantile is needed).
    """

    kind = "scorer_state"

    def __init__(self, features, moments, n_never, sketches):
        self.features = [tuple(f) for f in features]
        self.moments = moments
        self.n_never = np.asarray(n_never, dtype=np.float64)
        self.sketches = list(sketches)

    @classmethod
    def of(cls, profiles, scorer):
        return scorer.partial_state(profiles)

    def finish(self, scorer):
        return scorer.fit_state(self)

    def merge(self, other):
        self._check_same(other)
        if self.features != other.features:
            raise ParameterError(
                "cannot merge scorer states fitted on different feature lists "
                f"({[f[0] for f in self.features]} vs {[f[0] for f in other.features]})."
            )
        sketches = [None if a is None else a.merge(b) for a, b in zip(self.sketches, other.sketches)]
        return ScorerState(self.features, self.moments.merge(other.moments), self.n_never + other.n_never, sketches)

    def _data(self):
        return {
            "features": [list(f) for f in self.features],
            "moments": self.moments.to_dict(),
            "n_never": self.n_never.tolist(),
            "sketches": [None if s is None else s.to_dict() for s in self.sketches],
        }

    @classmethod
    def _from_data(cls, d):
        where = "scorer state"
        feats = d.get("features")
        if not isinstance(feats, list) or not feats:
            raise ModelFormatError(f"{where}: field 'features' must be a non-empty list, got {feats!r:.80}.")
        for i, f in enumerate(feats):
            if not (isinstance(f, (list, tuple)) and len(f) == 3 and isinstance(f[0], str) and f[1] in TRANSFORMS
                    and f[2] in SCALINGS):  # fmt: skip
                raise ModelFormatError(
                    f"{where}: field 'features' entry {i} must be [name, transform, scaling] with transform in "
                    f"{TRANSFORMS} and scaling in {SCALINGS}, got {f!r:.80}."
                )
        names = [f[0] for f in feats]
        if len(set(names)) != len(names):
            raise ModelFormatError(f"{where}: field 'features' names a feature twice ({names[:10]}).")
        d_ = len(feats)
        moments = ScalerState.from_dict(d.get("moments"), d_, f"{where}: moments")
        n_never = check_stored_array(d.get("n_never"), "n_never", where, length=d_, low=0.0)
        sk = d.get("sketches")
        if not isinstance(sk, list) or len(sk) != d_:
            raise ModelFormatError(f"{where}: field 'sketches' must be a list of {d_} entries (null or a sketch).")
        sketches = [None if s is None else QuantileSketch.from_dict(s, f"{where}: sketches[{j}]")
                    for j, s in enumerate(sk)]  # fmt: skip
        return cls(feats, moments, n_never, sketches)


_PARAM_KEYS = ("scaling", "clip", "clip_quantiles", "sketch_alpha", "weights")


def _check_params_doc(params, names):
    """The ``params`` of a scorer document, checked field by field (ModelFormatError naming the field)."""
    where = "scorer document: params"
    if not isinstance(params, dict):
        raise ModelFormatError(f"{where}: expected an object, got {type(params).__name__}.")
    unknown = sorted(set(params) - set(_PARAM_KEYS))
    if unknown:
        raise ModelFormatError(f"{where}: unknown field(s) {unknown}; known: {list(_PARAM_KEYS)}.")
    out = {}
    if params.get("scaling", "standard") not in SCALINGS:
        raise ModelFormatError(f"{where}: field 'scaling' is {params.get('scaling')!r}; expected one of {SCALINGS}.")
    out["scaling"] = params.get("scaling", "standard")
    out["clip"] = check_stored_number(params.get("clip"), "clip", where, low=0.0, low_inclusive=False,
                                      allow_none=True)  # fmt: skip
    cq = params.get("clip_quantiles")
    if cq is not None:
        if not isinstance(cq, list) or len(cq) != 2:
            raise ModelFormatError(f"{where}: field 'clip_quantiles' must be null or [low, high], got {cq!r:.60}.")
        lo = check_stored_number(cq[0], "clip_quantiles[0]", where, low=0.0, high=1.0)
        hi = check_stored_number(cq[1], "clip_quantiles[1]", where, low=0.0, high=1.0)
        if lo >= hi:
            raise ModelFormatError(f"{where}: field 'clip_quantiles' must have low < high, got {cq}.")
        cq = (lo, hi)
    out["clip_quantiles"] = cq
    out["sketch_alpha"] = check_stored_number(params.get("sketch_alpha", 0.005), "sketch_alpha", where, low=0.0,
                                              high=0.5, low_inclusive=False)  # fmt: skip
    w = params.get("weights")
    if w is not None:
        if not isinstance(w, dict) or not set(w) <= set(names):
            raise ModelFormatError(
                f"{where}: field 'weights' must map feature names ({names[:10]}) to numbers, got {w!r:.80}."
            )
        w = {k: check_stored_number(v, f"weights[{k!r}]", where, low=0.0) for k, v in w.items()}
    out["weights"] = w
    return out


class FeatureScorer(TransformerMixin, BaseEstimator):
    """Turn profiles into a float32, C-contiguous N x D feature matrix.

    A scikit-learn transformer (``BaseEstimator``, ``TransformerMixin``):
    ``get_params`` / ``set_params`` / ``clone``, ``fit(profiles, y=None)``,
    ``transform``, ``get_feature_names_out`` and ``set_output``, so that
    ``make_pipeline(FeatureScorer(), Segmenter())`` fits and predicts on
    profile tables.  ``profiles`` is any table segone reads
    (:mod:`segone.io`): pyarrow, pandas, polars, DuckDB, Arrow streams or
    files.  Columns are found by name: extra columns and any column order
    are fine.

    Parameters
    ----------
    features : list or None
        Profile columns to use.  Each entry is a column name, a
        ``(name, transform)`` or a ``(name, transform, scaling)`` tuple, with
        transform ``"identity"`` or ``"log1p"`` and scaling one of
        ``"standard"``, ``"robust"``, ``"quantile"``, ``"none"`` (default:
        the ``scaling`` parameter).  None uses :func:`default_features`.
    scaling : {"standard", "robust", "quantile", "none"}, default "standard"
        Scaling of the features that do not name their own.
    weights : dict or None
        Weight per feature (multiplies the scaled value); None uses the
        default group weights.
    clip : float or None, default 5.0
        Clip scaled values to ``[-clip, clip]`` (robust to outliers).
    clip_quantiles : (float, float) or None
        Winsorise every feature at these quantiles of the fitted data (after
        ``log1p``, before scaling), e.g. ``(0.01, 0.99)``.  The standard
        scaling's mean and deviation are those of the values before clipping.
    sketch_alpha : float, default 0.005
        Relative error of the quantile sketch (robust and quantile scaling,
        ``clip_quantiles``).
    backend : {"auto", "cython", "numba"}
    n_threads : int or None

    Attributes
    ----------
    feature_names_out_ : list of str
        The features, in the order of the output columns.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        The columns of the table given to ``fit`` (fitted from a state: the
        feature columns the transform reads).
    state_ : ScorerState
        The mergeable fitted statistics.
    center_, scale_, weights_, fill_, lower_, upper_ : ndarray (D,)
        What the transform applies per feature.

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> prof = segone.build_profiles(generate(300, seed=0).transactions)
    >>> X = segone.FeatureScorer().fit_transform(prof)
    >>> X.dtype, X.shape[0]
    (dtype('float32'), 300)
    >>> Xq = segone.FeatureScorer(scaling="quantile").fit_transform(prof)
    >>> bool(abs(Xq).max() <= 3 ** 0.5 + 1e-6)
    True
    """

    def __init__(self, features=None, *, scaling="standard", weights=None, clip=5.0, clip_quantiles=None,
                 sketch_alpha=0.005, backend="auto", n_threads=None):  # fmt: skip
        self.features = features
        self.scaling = scaling
        self.weights = weights
        self.clip = clip
        self.clip_quantiles = clip_quantiles
        self.sketch_alpha = sketch_alpha
        self.backend = backend
        self.n_threads = n_threads

    # -- scikit-learn plumbing -------------------------------------------
    def set_params(self, **params):
        """Set parameters; unknown names raise ParameterError."""
        valid = self.get_params(deep=True)
        for key in params:
            if key.split("__", 1)[0] not in valid:
                raise ParameterError(
                    f"{type(self).__name__} has no parameter {key!r}; valid parameters: {', '.join(sorted(valid))}."
                )
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # a profile table: id and label columns are read past
        tags.input_tags.categorical = True
        tags.transformer_tags.preserves_dtype = []  # always float32
        return tags

    def __sklearn_is_fitted__(self):
        return hasattr(self, "state_")

    def get_feature_names_out(self, input_features=None):
        """The output column names: the features, in order (ndarray of str).

        ``input_features`` (the names of the columns coming in, e.g. from a
        previous pipeline step) must hold every feature.
        """
        check_fitted(self, "state_", "fit(profiles)")
        names = np.asarray(self.feature_names_out_, dtype=object)
        if input_features is not None:
            missing = [n for n in names if n not in set(map(str, input_features))]
            if missing:
                raise SchemaError(
                    f"input_features lack the feature column(s) {missing}; the scorer reads {list(names)}."
                )
        return names

    # -- parameters and columns --------------------------------------------
    def _check_params(self):
        check_choice(self.scaling, "scaling", SCALINGS)
        if self.clip is not None:
            check_float(self.clip, "clip", low=0.0, low_inclusive=False)
        check_float(self.sketch_alpha, "sketch_alpha", low=0.0, high=0.5, low_inclusive=False)
        if self.clip_quantiles is not None:
            try:
                lo, hi = (float(q) for q in self.clip_quantiles)
            except (TypeError, ValueError):
                raise ParameterError(
                    f"clip_quantiles must be a pair (low, high) such as (0.01, 0.99), got {self.clip_quantiles!r}."
                ) from None
            if not 0.0 <= lo < hi <= 1.0:
                raise ParameterError(f"clip_quantiles must satisfy 0 <= low < high <= 1, got ({lo}, {hi}).")

    def _check_weights(self):
        """``weights`` as {feature: finite number >= 0} (ParameterError otherwise)."""
        if not hasattr(self.weights, "items"):
            raise ParameterError(
                f"weights must be a dict {{feature: weight}}, got {type(self.weights).__name__}; e.g. "
                "weights={'orders': 2.0}."
            )
        out = {}
        for name, v in self.weights.items():
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or v < 0:
                raise ParameterError(f"weights[{name!r}] must be a finite number >= 0, got {v!r}.")
            out[name] = float(v)
        return out

    def _resolve(self, table):
        cols = table.column_names
        if self.features is None:
            feats = [(n, tr, self.scaling) for n, tr in default_features(cols)]
            if not feats:
                raise SchemaError(
                    "profiles hold none of the default feature columns (orders, spend_*, recency_days, "
                    f"share_*, ...); found {cols[:20]}. Pass features=[...] explicitly."
                )
        else:
            if isinstance(self.features, (str, bytes)) or not hasattr(self.features, "__iter__"):
                raise ParameterError(
                    f"features must be a list of column names or (name, transform[, scaling]) tuples, got "
                    f"{self.features!r:.80} ({type(self.features).__name__}); e.g. features=['orders', "
                    "('spend_total', 'log1p')]."
                )
            given = list(self.features)
            if not given:
                raise ParameterError("features is empty; give at least one feature column, or None for the defaults.")
            feats = []
            for f in given:
                spec = (f,) if isinstance(f, str) else tuple(f) if isinstance(f, (tuple, list)) else None
                if spec is None or not 1 <= len(spec) <= 3 or not isinstance(spec[0], str):
                    raise ParameterError(
                        f"feature entry {f!r} is not a name, (name, transform) or (name, transform, scaling)."
                    )
                name, tr, sc = (spec + ("identity", self.scaling)[len(spec) - 1 :])[:3]
                if tr not in TRANSFORMS:
                    raise ParameterError(f"transform {tr!r} for feature {name!r} is not known; use 'identity' or 'log1p'.")
                if sc not in SCALINGS:
                    raise ParameterError(f"scaling {sc!r} for feature {name!r} is not known; use one of {SCALINGS}.")
                feats.append((name, tr, sc))
            names = [n for n, _, _ in feats]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ParameterError(f"features name {twice} more than once; give every feature once.")
            missing = [n for n, _, _ in feats if n not in cols]
            if missing:
                raise SchemaError(f"profiles lack the feature column(s) {missing}; available: {cols[:30]}.")
        _check_numeric(table, [n for n, _, _ in feats])
        return feats

    @staticmethod
    def _column(table, name):
        """(float64 values with nulls as 0, uint8 null mask or empty) of one column, zero-copy when possible."""
        col = table.column(name)
        mask = np.empty(0, dtype=np.uint8)
        if col.null_count:
            mask = pc.is_null(col).to_numpy(zero_copy_only=False).view(np.uint8)
            col = pc.fill_null(col, 0)
        if col.type != pa.float64():  # integers beyond 2**53 lose their last digits (a safe cast would refuse them)
            col = pc.cast(col, pa.float64(), safe=not pa.types.is_integer(col.type))
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        return col.to_numpy(zero_copy_only=False), mask

    # -- fitting -------------------------------------------------------------
    def _needs_sketch(self, scaling):
        return scaling in ("robust", "quantile") or self.clip_quantiles is not None

    def partial_state(self, profiles):
        """The mergeable statistics of one piece of data (:class:`ScorerState`); does not change self."""
        self._check_params()
        table = read_table(profiles, name="profiles")
        return self._state(table, self._resolve(table))

    def _state(self, table, feats):
        d = len(feats)
        moments = ScalerState(d)
        n_never = np.zeros(d)
        sketches = []
        for j, (name, tr, sc) in enumerate(feats):
            v, mask = self._column(table, name)
            check_finite_column(v, f"feature column {name!r}", "fix them in the profile.")
            if tr == "log1p":
                v = np.log1p(np.maximum(v, 0.0))
            if mask.size and _never(name):
                # "never" rows are filled with the global max, known only after merging
                n_never[j] = int(mask.sum())
                v = v[mask == 0]
            if v.size:
                moments.count[j] = v.size
                with np.errstate(over="ignore", invalid="ignore"):
                    moments.mean[j] = v.mean()
                    moments.m2[j] = ((v - moments.mean[j]) ** 2).sum()
                moments.max[j] = v.max()
                if not (np.isfinite(moments.mean[j]) and np.isfinite(moments.m2[j])):
                    raise DataError(
                        f"feature column {name!r}: values up to {v.max():.3g} (in magnitude "
                        f"{np.abs(v).max():.3g}) are too large to scale: their mean or variance exceeds the float64 "
                        f"range; use the log1p transform for it (features=[({name!r}, 'log1p')]) or rescale it."
                    )
            sketches.append(QuantileSketch(self.sketch_alpha).update(v) if self._needs_sketch(sc) else None)
        return ScorerState(feats, moments, n_never, sketches)

    def fit(self, profiles, y=None):
        """Fit the per-feature statistics on the profiles (any table; ``y`` is ignored)."""
        self._check_params()
        table = read_table(profiles, name="profiles")
        self.fit_state(self._state(table, self._resolve(table)))
        self._set_input_columns(table.column_names)
        return self

    def _set_input_columns(self, names):
        self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(names)

    @staticmethod
    def merge_states(a, b):
        """Merge two :meth:`partial_state` results (feature lists must agree)."""
        return a.merge(b)

    def fit_state(self, state):
        """Set the fitted transform from a (merged) :class:`ScorerState`; returns self."""
        self._check_params()
        feats = state.features
        d = len(feats)
        names = [f[0] for f in feats]
        st = state.moments
        fill = np.where([_never(n) for n in names], np.where(np.isfinite(st.max), st.max, 0.0), 0.0)
        # fold the "never" rows (filled with the max) into the statistics
        extra = ScalerState(d)
        extra.count[:] = state.n_never
        extra.mean[:] = fill
        full = st.merge(extra)
        std = full.std
        lower, upper = np.full(d, -np.inf), np.full(d, np.inf)
        center, scale = full.mean.copy(), np.where(std > 1e-12, std, 1.0)
        quantile = np.zeros(d, dtype=np.int8)
        grid = np.linspace(0.0, 1.0, N_KNOTS)
        knots = np.tile(grid, (d, 1))  # unused rows for the features without quantile scaling
        for j, (name, _, sc) in enumerate(feats):
            sk = state.sketches[j]
            if sk is not None and state.n_never[j]:
                sk = sk.merge(QuantileSketch(sk.alpha, sk.min_value).update(np.full(int(state.n_never[j]), fill[j])))
            if sk is not None and sk.count == 0:
                sk = None
            if self.clip_quantiles is not None and sk is not None:
                lower[j], upper[j] = sk.quantiles(self.clip_quantiles)
            if sc == "robust" and sk is not None:
                q1, med, q3 = sk.quantiles([0.25, 0.5, 0.75])
                center[j] = med
                if q3 - q1 > 1e-12:  # else (a constant middle half) keep the standard deviation
                    scale[j] = q3 - q1
            elif sc in ("quantile", "none"):
                center[j], scale[j] = 0.0, 1.0
                if sc == "quantile" and sk is not None:
                    quantile[j] = 1
                    # ranks are taken on bucket coordinates: values the sketch cannot tell
                    # apart tie exactly and share the middle rank of their bucket
                    knots[j] = sk.quantiles(grid, as_coords=True)
        w = _default_weights(names) if self.weights is None else self._check_weights()
        unknown = set(w) - set(names)
        if unknown:
            raise ParameterError(f"weights name unknown feature(s) {sorted(unknown)}; features: {names}.")
        self.state_ = state
        self._feats = feats
        self.feature_names_out_ = names
        self.fill_, self.center_, self.scale_ = fill, center, scale
        self.lower_, self.upper_ = lower, upper
        self.quantile_, self.knots_ = quantile, knots
        ref = QuantileSketch(self.sketch_alpha)
        self.bucket_ = (ref.log_gamma, ref.min_value, float(ref.min_key))
        self.weights_ = np.array([float(w.get(n, 1.0)) for n in names])
        self._set_input_columns(names)  # fit() replaces them with the columns of its table
        return self

    # -- transform ---------------------------------------------------------
    def transform(self, profiles):
        """Scored features: float32, C-contiguous, N x D (columns: :meth:`get_feature_names_out`)."""
        check_fitted(self, "state_", "fit(profiles)")
        table = read_table(profiles, self.feature_names_out_, name="profiles")
        return self._transform_table(table)

    def _transform_table(self, table):
        _check_numeric(table, self.feature_names_out_)
        cols, masks = zip(*(self._column(table, n) for n in self.feature_names_out_)) if self._feats else ((), ())
        X = np.empty((table.num_rows, len(self._feats)), dtype=np.float32)
        if X.size == 0:
            return X
        kern = get_kernels(self.backend, "score")
        log1p = np.array([tr == "log1p" for _, tr, _ in self._feats], dtype=np.int8)
        clip = np.inf if self.clip is None else float(self.clip)
        bad = kern.score_columns(
            list(cols), list(masks), log1p, self.fill_, self.lower_, self.upper_, self.quantile_, self.knots_,
            self.center_, self.scale_, self.weights_, clip, self.bucket_, X, effective_n_threads(self.n_threads),
        )  # fmt: skip
        if bad >= 0:
            for j, c in enumerate(cols):
                if not np.isfinite(c[bad]) and not (masks[j].size and masks[j][bad]):
                    rows = np.flatnonzero(~np.isfinite(c) & ~(masks[j].astype(bool) if masks[j].size else False))
                    raise DataError(
                        f"feature column {self.feature_names_out_[j]!r} has {rows.size} NaN or infinite values "
                        f"(rows {examples(rows)}); fix them in the profile."
                    )
        return X

    def fit_transform(self, profiles, y=None):
        """``fit(profiles).transform(profiles)``, reading the input once; ``y`` is ignored."""
        self._check_params()
        table = read_table(profiles, name="profiles")
        self.fit_state(self._state(table, self._resolve(table)))
        self._set_input_columns(table.column_names)
        return self._transform_table(table)

    # -- persistence -----------------------------------------------------------
    def to_json(self):
        check_fitted(self, "state_", "fit(profiles)")
        return json.dumps(
            {
                "format": "segone-scorer",
                "version": FORMAT_VERSION,
                "params": {
                    "scaling": self.scaling,
                    "clip": self.clip,
                    "clip_quantiles": None if self.clip_quantiles is None else list(self.clip_quantiles),
                    "sketch_alpha": self.sketch_alpha,
                    "weights": dict(zip(self.feature_names_out_, self.weights_.tolist())),
                },
                "state": self.state_.to_dict(),
            }
        )

    @classmethod
    def from_json(cls, text):
        """The scorer of :meth:`to_json`.

        Every field is checked (its type, its shape, finiteness and sign):
        a malformed document raises :class:`~segone.errors.ModelFormatError`
        naming the field, never a scorer that makes NaN or infinite features.
        """
        if not isinstance(text, (str, bytes, bytearray)):
            raise ParameterError(f"FeatureScorer.from_json expects the JSON text (str), got {type(text).__name__}.")
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFormatError(
                f"scorer document: not valid JSON ({exc}); the file is truncated or corrupt."
            ) from None
        if not isinstance(d, dict) or d.get("format") != "segone-scorer":
            raise ParameterError("not a segone scorer document (format field missing or wrong).")
        if d.get("version") != FORMAT_VERSION:
            raise ParameterError(
                f"scorer document version {d.get('version')} is not supported (this segone reads version "
                f"{FORMAT_VERSION}); refit the scorer."
            )
        state = ScorerState.from_dict(d.get("state"))
        params = _check_params_doc(d.get("params"), [f[0] for f in state.features])
        bad = [j for j, sk in enumerate(state.sketches) if sk is not None and sk.alpha != params["sketch_alpha"]]
        if bad:
            raise ModelFormatError(
                f"scorer document: field 'state.sketches[{bad[0]}]' has alpha {state.sketches[bad[0]].alpha} but "
                f"params.sketch_alpha is {params['sketch_alpha']}; the document is corrupt or was edited."
            )
        sc = cls([tuple(f) for f in state.features], **params)
        sc.fit_state(state)
        for attr in ("fill_", "center_", "scale_", "weights_", "knots_"):
            v = getattr(sc, attr)
            if not np.isfinite(v).all() or (attr == "scale_" and (v <= 0).any()):
                j = int(np.flatnonzero(~np.isfinite(v) | ((v <= 0) if attr == "scale_" else False))[0] //
                        (v.shape[1] if v.ndim == 2 else 1))  # fmt: skip
                raise ModelFormatError(
                    f"scorer document: the statistics of feature {sc.feature_names_out_[j]!r} give a non-finite "
                    f"{attr.rstrip('_')}; the document is corrupt or was edited: refit the scorer."
                )
        return sc
