import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segone.errors import DataError, ParameterError
from segone.sketch import QuantileSketch


def exact_quantiles(x, qs):
    # the rank convention of the sketch: the (floor(q (n - 1)) + 1)-th smallest value
    xs = np.sort(x)
    return xs[np.floor(np.asarray(qs) * (len(x) - 1)).astype(int)]


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=300))
def test_relative_error_bound(values):
    x = np.array(values)
    s = QuantileSketch(alpha=0.01).update(x)
    qs = np.linspace(0, 1, 11)
    est, ex = s.quantiles(qs), exact_quantiles(x, qs)
    small = np.abs(ex) < s.min_value
    assert np.all(np.abs(est - ex)[~small] <= 0.01 * np.abs(ex[~small]) * (1 + 1e-9))
    assert np.all(est[small] == 0.0)
    assert s.count == x.size


def test_merge_is_exact_and_order_free():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.lognormal(size=5000), -rng.lognormal(size=2000), np.zeros(700), [1e-12]])
    rng.shuffle(x)
    whole = QuantileSketch().update(x)
    parts = [QuantileSketch().update(p) for p in np.array_split(x, 5)]
    merged = parts[3].merge(parts[0]).merge(parts[4]).merge(parts[1]).merge(parts[2])
    assert merged.to_dict() == whole.to_dict()
    qs = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(merged.quantiles(qs), whole.quantiles(qs))
    np.testing.assert_array_equal(merged.quantiles(qs, as_coords=True), whole.quantiles(qs, as_coords=True))


def test_coords_are_monotone_and_match_quantiles():
    rng = np.random.default_rng(1)
    x = np.sort(np.concatenate([rng.normal(size=3000) * 100, [0.0, 1e-10, -1e-10]]))
    s = QuantileSketch().update(x)
    c = s.coords(x)
    assert np.all(np.diff(c) >= 0)
    # the coordinate of a quantile's bucket equals the coordinate of the quantile value
    qs = np.linspace(0, 1, 17)
    np.testing.assert_array_equal(s.quantiles(qs, as_coords=True), s.coords(s.quantiles(qs)))


def test_weighted_update_empty_round_trip_and_errors():
    s = QuantileSketch()
    assert np.isnan(s.quantile(0.5)) and s.count == 0
    s.update([2.0, 3.0], count=3)
    assert s.count == 6
    t = QuantileSketch.from_dict(s.to_dict())
    assert t.to_dict() == s.to_dict()
    with pytest.raises(DataError, match="NaN"):
        s.update([1.0, np.nan])
    with pytest.raises(ParameterError, match="ranks"):
        s.quantiles([1.5])
    with pytest.raises(ParameterError, match="alpha"):
        s.merge(QuantileSketch(alpha=0.02))
    with pytest.raises(ParameterError, match="alpha"):
        QuantileSketch(alpha=0.0)
