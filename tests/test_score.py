import numpy as np
import pyarrow as pa
import pytest

import segone
from segone.errors import DataError, NotFittedError, ParameterError, SchemaError
from segone.score import FeatureScorer


@pytest.fixture(scope="module")
def profiles(small_synth):
    d = small_synth
    return segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)


def test_default_transform(profiles):
    sc = FeatureScorer()
    X = sc.fit_transform(profiles)
    assert X.dtype == np.float32 and X.flags.c_contiguous and X.shape == (profiles.num_rows, len(sc.feature_names_out_))
    assert np.isfinite(X).all() and np.abs(X).max() <= 5.0 + 1e-6
    j = sc.feature_names_out_.index("orders")
    assert abs(X[:, j].mean()) < 0.05 and abs(X[:, j].std() - 1) < 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"scaling": "robust"}, {"scaling": "quantile"}, {"scaling": "none", "clip": None},
     {"clip_quantiles": (0.05, 0.95)}, {"scaling": "quantile", "clip_quantiles": (0.1, 0.9)}],
)  # fmt: skip
def test_merge_equals_whole(profiles, kwargs):
    """Fitting on pieces and merging the states gives the scorer fitted on the whole."""
    n = profiles.num_rows
    pieces = [profiles.slice(0, n // 3), profiles.slice(n // 3, n // 4), profiles.slice(n // 3 + n // 4)]
    sc = FeatureScorer(**kwargs)
    merged = sc.partial_state(pieces[0])
    for p in pieces[1:]:
        merged = FeatureScorer.merge_states(merged, sc.partial_state(p))
    whole = FeatureScorer(**kwargs).fit(profiles)
    part = FeatureScorer(**kwargs).fit_state(merged)
    np.testing.assert_allclose(part.center_, whole.center_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.scale_, whole.scale_, rtol=1e-10)
    # sketch quantiles merge exactly: bounds and quantile grids are identical
    np.testing.assert_array_equal(part.lower_, whole.lower_)
    np.testing.assert_array_equal(part.upper_, whole.upper_)
    np.testing.assert_array_equal(part.knots_, whole.knots_)
    np.testing.assert_allclose(part.transform(profiles), whole.transform(profiles), rtol=1e-6, atol=1e-6)


def test_robust_and_clip_quantiles_within_sketch_error():
    rng = np.random.default_rng(3)
    x = rng.lognormal(3, 1, size=20_000)
    t = pa.table({"x": x})
    sc = FeatureScorer(["x"], scaling="robust", clip=None, clip_quantiles=(0.01, 0.99)).fit(t)
    q1, med, q3, lo, hi = np.quantile(x, [0.25, 0.5, 0.75, 0.01, 0.99])
    alpha = sc.sketch_alpha
    assert abs(sc.center_[0] - med) <= alpha * med * 1.0001
    assert abs(sc.scale_[0] - (q3 - q1)) <= alpha * (q3 + q1) * 1.0001
    assert abs(sc.lower_[0] - lo) <= alpha * lo * 1.0001 and abs(sc.upper_[0] - hi) <= alpha * hi * 1.0001
    X = sc.transform(t)[:, 0]
    assert X.max() == pytest.approx((sc.upper_[0] - sc.center_[0]) / sc.scale_[0], rel=1e-6)


def test_quantile_scores_ties_share_a_score():
    x = np.r_[np.zeros(400), np.ones(300), np.arange(2, 302, dtype=float)]
    t = pa.table({"x": x})
    X = FeatureScorer(["x"], scaling="quantile", clip=None).fit_transform(t)[:, 0]
    # every tie shares one score, the order is kept, scores have mean ~0 and variance ~1
    assert len(np.unique(X[:400])) == 1 and len(np.unique(X[400:700])) == 1
    assert X[0] < X[400] < X[700] and np.all(np.diff(X[700:]) >= 0)
    # the tied block sits in the middle of its ranks: 400 zeros -> rank ~ 0.2 of 1000
    assert (X[0] / np.sqrt(12) + 0.5) == pytest.approx(0.2, abs=0.01)
    assert (X[400] / np.sqrt(12) + 0.5) == pytest.approx(0.55, abs=0.01)
    assert abs(X.mean()) < 0.05 and abs(X.std() - 1.0) < 0.1


def test_transform_backends_agree(profiles):
    ref = FeatureScorer(scaling="quantile", clip_quantiles=(0.02, 0.98), backend="cython").fit(profiles)
    Xc = ref.transform(profiles)
    other = FeatureScorer.from_json(ref.to_json())
    other.backend = "numba"
    Xn = other.transform(profiles)
    np.testing.assert_allclose(Xc, Xn, rtol=1e-6, atol=1e-6)


def test_nulls_never_filled_with_max_and_constant_column():
    t = pa.table({"recency_days": pa.array([1.0, None, 3.0]), "orders": [2, 2, 2]})
    sc = FeatureScorer([("recency_days", "log1p"), "orders"], clip=None)
    X = sc.fit_transform(t)
    assert X[1, 0] == X[2, 0]  # "never" = the largest seen
    np.testing.assert_array_equal(X[:, 1], 0.0)  # constant column -> 0, no division by zero


def test_json_round_trip(profiles):
    sc = FeatureScorer().fit(profiles)
    sc2 = FeatureScorer.from_json(sc.to_json())
    np.testing.assert_array_equal(sc.transform(profiles), sc2.transform(profiles))


def test_errors(profiles):
    with pytest.raises(NotFittedError):
        FeatureScorer().transform(profiles)
    with pytest.raises(SchemaError, match="lack the feature"):
        FeatureScorer(["nope"]).fit(profiles)
    with pytest.raises(ParameterError, match="transform 'sqrt'"):
        FeatureScorer([("orders", "sqrt")]).fit(profiles)
    with pytest.raises(SchemaError, match="numeric"):
        FeatureScorer(["region"]).fit(profiles)
    with pytest.raises(DataError, match="NaN"):
        FeatureScorer(["x"]).fit(pa.table({"x": [1.0, float("nan")]}))
    with pytest.raises(ParameterError, match="weights name unknown"):
        FeatureScorer(["orders"], weights={"zzz": 2.0}).fit(profiles)
    with pytest.raises(SchemaError, match="none of the default"):
        FeatureScorer().fit(pa.table({"zzz": [1.0]}))
    with pytest.raises(ParameterError, match="scaling"):
        FeatureScorer(scaling="minmax").fit(profiles)
    with pytest.raises(ParameterError, match="scaling 'zz'"):
        FeatureScorer([("orders", "log1p", "zz")]).fit(profiles)
    with pytest.raises(ParameterError, match="clip_quantiles"):
        FeatureScorer(clip_quantiles=(0.9, 0.1)).fit(profiles)
    with pytest.raises(ParameterError, match="clip_quantiles must be a pair"):
        FeatureScorer(clip_quantiles=0.5).fit(profiles)
    with pytest.raises(DataError, match="rows 1"):
        sc = FeatureScorer(["x"]).fit(pa.table({"x": [1.0, 2.0]}))
        sc.transform(pa.table({"x": [1.0, float("inf")]}))
    with pytest.raises(ParameterError, match="version"):
        FeatureScorer.from_json('{"format": "segone-scorer", "version": 1}')
