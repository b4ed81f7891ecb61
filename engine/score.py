"""FeatureScorer: customer profiles -> float32 feature matrix.

Per feature: fill nulls, an optional ``log1p`` (values clipped at 0 first),
standard scaling with statistics that merge exactly (count, mean, M2 as in
Chan et al.), clipping to ``[-clip, clip]`` and a weight.  The fitted state is
mergeable: fitting two halves and merging equals fitting the whole (up to
float rounding), which the Dask layer relies on.

Default features (those present in the profile are used):

* ``log1p``: orders, spend_mean, spend_total, recency_days, tenure_days,
  purchase_days, events_* counts;
* as is: share_* category spend shares, channel_* shares.

Share groups are down-weighted so that a group of ``g`` columns counts like
about two features: weight ``sqrt(2 / g)`` per column.

Null rules: ``recency_days`` and ``days_since_*`` nulls mean "never" and are
filled with the largest value seen in fit; other nulls are filled with 0.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone._validation import check_finite_column, check_float
from segone.errors import NotFittedError, ParameterError, SchemaError
from segone.io import read_table

LOG_FEATURES = ("orders", "purchase_days", "spend_total", "spend_mean", "recency_days", "tenure_days")
NEVER_FILLED = ("recency_days",)


def default_features(columns):
    """Default (feature, transform) list for a profile with these columns."""
    feats = [(c, "log1p") for c in LOG_FEATURES if c in columns]
    feats += [(c, "log1p") for c in columns if c.startswith("events_")]
    feats += [(c, "identity") for c in columns if c.startswith("share_")]
    feats += [(c, "identity") for c in columns if c.startswith("channel_")]
    return feats


def _default_weights(names):
    groups = {}
    for n in names:
        for prefix in ("share_", "channel_"):
            if n.startswith(prefix):
                groups.setdefault(prefix, []).append(n)
    w = {n: 1.0 for n in names}
    for cols in groups.values():
        for n in cols:
            w[n] = float(np.sqrt(2.0 / len(cols)))
    return w


class ScalerState:
    """Mergeable per-feature statistics: count, mean, M2, max (float64)."""

    def __init__(self, n_features):
        self.count = np.zeros(n_features)
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.max = np.full(n_features, -np.inf)

    @classmethod
    def from_values(cls, V, raw_max):
        st = cls(V.shape[1])
        n = V.shape[0]
        st.count[:] = n
        if n:
            st.mean[:] = V.mean(axis=0)
            st.m2[:] = ((V - st.mean) ** 2).sum(axis=0)
        st.max[:] = raw_max
        return st

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
    def from_dict(cls, d):
        st = cls(len(d["count"]))
        for k in ("count", "mean", "m2", "max"):
            setattr(st, k, np.asarray(d[k], dtype=np.float64))
        return st


class FeatureScorer:
    """Turn profiles into a float32, C-contiguous N x D feature matrix.

    Parameters
    ----------
    features : list of str or list of (str, transform) or None
        Profile columns to use and their transform (``"log1p"`` or
        ``"identity"``); None uses :func:`default_features`.
    weights : dict or None
        Weight per feature (multiplies the scaled value); None uses the
        default group weights.
    clip : float or None, default 5.0
        Clip scaled values to ``[-clip, clip]`` (robust to outliers).

    Attributes
    ----------
    feature_names_out_ : list of str
    state_ : ScalerState
        The mergeable fitted statistics.

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> prof = segone.build_profiles(generate(300, seed=0).transactions)
    >>> X = segone.FeatureScorer().fit_transform(prof)
    >>> X.dtype, X.shape[0]
    (dtype('float32'), 300)
    """

    def __init__(self, features=None, *, weights=None, clip=5.0):
        self.features = features
        self.weights = weights
        self.clip = clip

    def _resolve(self, table):
        cols = table.column_names
        if self.features is None:
            feats = default_features(cols)
            if not feats:
                raise SchemaError(
                    "profiles hold none of the default feature columns (orders, spend_*, recency_days, "
                    f"share_*, ...); found {cols[:20]}. Pass features=[...] explicitly."
                )
        else:
            feats = []
            for f in self.features:
                name, tr = (f, "identity") if isinstance(f, str) else tuple(f)
                if tr not in ("identity", "log1p"):
                    raise ParameterError(f"transform {tr!r} for feature {name!r} is not known; use 'identity' or 'log1p'.")
                feats.append((name, tr))
            missing = [n for n, _ in feats if n not in cols]
            if missing:
                raise SchemaError(f"profiles lack the feature column(s) {missing}; available: {cols[:30]}.")
        for name, _ in feats:
            t = table.schema.field(name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise SchemaError(f"feature column {name!r} has type {t}; expected a numeric column.")
        return feats

    def _raw(self, table, feats):
        """Raw float64 matrix (N x D) with transforms applied, and null masks."""
        n = table.num_rows
        V = np.empty((n, len(feats)), dtype=np.float64)
        nulls = np.zeros((n, len(feats)), dtype=bool)
        for j, (name, tr) in enumerate(feats):
            col = table.column(name)
            if col.null_count:
                nulls[:, j] = pc.is_null(col).to_numpy(zero_copy_only=False)
                col = pc.fill_null(col, 0)
            v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            check_finite_column(v, f"feature column {name!r}", "fix them in the profile.")
            if tr == "log1p":
                v = np.log1p(np.maximum(v, 0.0))
            V[:, j] = v
        return V, nulls

    @staticmethod
    def _never(name):
        return name in NEVER_FILLED or name.startswith("days_since_")

    def partial_state(self, profiles):
        """Statistics of one piece of data (for merging); does not change self."""
        table = read_table(profiles, name="profiles")
        feats = self._resolve(table)
        V, nulls = self._raw(table, feats)
        return self._state_from_raw(feats, V, nulls)

    def _state_from_raw(self, feats, V, nulls):
        raw_max = np.array(
            [V[~nulls[:, j], j].max() if (~nulls[:, j]).any() else -np.inf for j in range(V.shape[1])]
        )
        # statistics over the filled values need the fill value, which needs the
        # global max: nulls are excluded here and accounted for in _set_state.
        st = ScalerState(V.shape[1])
        for j in range(V.shape[1]):
            v = V[~nulls[:, j], j] if self._never(feats[j][0]) else np.where(nulls[:, j], 0.0, V[:, j])
            part = ScalerState.from_values(v[:, None], raw_max[j])
            st.count[j], st.mean[j], st.m2[j], st.max[j] = part.count[0], part.mean[0], part.m2[0], part.max[0]
        n_never = np.array([nulls[:, j].sum() if self._never(feats[j][0]) else 0 for j in range(V.shape[1])])
        return feats, st, n_never

    def fit(self, profiles):
        """Fit the per-feature statistics on the profiles."""
        feats, st, n_never = self.partial_state(profiles)
        return self._set_state(feats, st, n_never)

    def _set_state(self, feats, st, n_never):
        if self.clip is not None:
            check_float(self.clip, "clip", low=0.0, low_inclusive=False)
        self._feats = feats
        self.feature_names_out_ = [n for n, _ in feats]
        self.state_ = st
        self.n_never_ = np.asarray(n_never, dtype=np.float64)
        fill = np.where(np.isfinite(st.max), st.max, 0.0)
        # fold the "never" rows (filled with the max) into the statistics
        extra = ScalerState(len(feats))
        extra.count[:] = self.n_never_
        extra.mean[:] = fill
        full = st.merge(extra)
        self.fill_ = fill
        self.mean_ = full.mean
        std = full.std
        self.scale_ = np.where(std > 1e-12, std, 1.0)  # constant columns: scale 1 (value becomes 0)
        w = _default_weights(self.feature_names_out_) if self.weights is None else dict(self.weights)
        unknown = set(w) - set(self.feature_names_out_)
        if unknown:
            raise ParameterError(f"weights name unknown feature(s) {sorted(unknown)}; features: {self.feature_names_out_}.")
        self.weights_ = np.array([float(w.get(n, 1.0)) for n in self.feature_names_out_])
        return self

    @staticmethod
    def merge_states(a, b):
        """Merge two ``partial_state`` results (feature lists must agree)."""
        fa, sa, na = a
        fb, sb, nb = b
        if fa != fb:
            raise ParameterError("cannot merge scorer states fitted on different feature lists.")
        return fa, sa.merge(sb), na + nb

    def transform(self, profiles):
        """Scored features: float32, C-contiguous, N x D."""
        if not hasattr(self, "state_"):
            raise NotFittedError("this FeatureScorer is not fitted yet; call fit(profiles) first.")
        table = read_table(profiles, [n for n, _ in self._feats], name="profiles")
        V, nulls = self._raw(table, self._feats)
        return self._scale(V, nulls)

    def _scale(self, V, nulls):
        for j, (name, _) in enumerate(self._feats):
            if nulls[:, j].any():
                V[nulls[:, j], j] = self.fill_[j] if self._never(name) else 0.0
        V -= self.mean_
        V /= self.scale_
        if self.clip is not None:
            np.clip(V, -self.clip, self.clip, out=V)
        V *= self.weights_
        return np.ascontiguousarray(V, dtype=np.float32)

    def fit_transform(self, profiles):
        """``fit(profiles).transform(profiles)``, reading and transforming the columns once."""
        table = read_table(profiles, name="profiles")
        feats = self._resolve(table)
        V, nulls = self._raw(table, feats)
        self._set_state(*self._state_from_raw(feats, V, nulls))
        return self._scale(V, nulls)

    def to_json(self):
        if not hasattr(self, "state_"):
            raise NotFittedError("this FeatureScorer is not fitted yet.")
        return json.dumps(
            {
                "format": "segone-scorer",
                "version": 1,
                "features": self._feats,
                "clip": self.clip,
                "weights": dict(zip(self.feature_names_out_, self.weights_.tolist())),
                "state": self.state_.to_dict(),
                "n_never": self.n_never_.tolist(),
            }
        )

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        if d.get("format") != "segone-scorer":
            raise ParameterError("not a segone scorer document (format field missing or wrong).")
        sc = cls([tuple(f) for f in d["features"]], weights=d["weights"], clip=d["clip"])
        return sc._set_state([tuple(f) for f in d["features"]], ScalerState.from_dict(d["state"]), d["n_never"])
