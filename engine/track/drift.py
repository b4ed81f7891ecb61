"""Feature drift: a mergeable binned histogram of every feature and the PSI of each between two runs."""

import numpy as np

from segone._state import State
from segone.errors import ModelFormatError, ParameterError
from segone.io import to_float64
from segone.sketch import QuantileSketch
from segone.track._common import HIST_ALPHA, PSI_BINS
from segone.track.migration import psi


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
