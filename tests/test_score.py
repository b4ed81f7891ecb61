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


def test_merge_equals_whole(profiles):
    n = profiles.num_rows
    a, b = profiles.slice(0, n // 3), profiles.slice(n // 3)
    sc = FeatureScorer()
    merged = FeatureScorer.merge_states(sc.partial_state(a), sc.partial_state(b))
    whole = FeatureScorer().fit(profiles)
    part = FeatureScorer()._set_state(*merged)
    np.testing.assert_allclose(part.mean_, whole.mean_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(part.scale_, whole.scale_, rtol=1e-10)
    np.testing.assert_allclose(part.transform(profiles), whole.transform(profiles), rtol=1e-6, atol=1e-6)


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
