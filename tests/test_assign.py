import numpy as np
import pyarrow as pa
import pytest

import segone
from segone.errors import DataError, ParameterError, SchemaError


def test_basic_and_unpack(backend):
    X = np.array([[0, 0], [10, 10], [9, 9]], dtype=np.float32)
    C = np.array([[0, 0], [10, 10]], dtype=np.float32)
    res = segone.assign(X, C, margin=True, backend=backend)
    np.testing.assert_array_equal(res.labels, [0, 1, 1])
    assert res.labels.dtype == np.int32 and res.distance.dtype == np.float32
    np.testing.assert_allclose(res.distance, [0, 0, 2])
    np.testing.assert_allclose(res.margin, [200, 200, 162 - 2])
    labels, dist, margin, n_invalid = res
    assert n_invalid == 0
    assert segone.assign(X, C, backend=backend).margin is None


def test_float64_and_integers_and_fortran(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    C = X[:7].copy()
    a = segone.assign(X, C, backend=backend)
    assert a.distance.dtype == np.float64
    b = segone.assign(np.asfortranarray(X), C, backend=backend)
    np.testing.assert_array_equal(a.labels, b.labels)
    Xi = rng.integers(0, 10, size=(50, 3))
    res = segone.assign(Xi, Xi[:4].astype(np.float64), backend=backend)
    assert res.distance.dtype == np.float64


def test_centroid_dtype_cast_warns():
    X = np.ones((4, 2), dtype=np.float32)
    C = np.zeros((1, 2), dtype=np.float64)
    with pytest.warns(UserWarning, match="casting the centroids"):
        res = segone.assign(X, C)
    assert res.distance.dtype == np.float32


def test_arrow_input():
    t = pa.table({"a": pa.array([0.0, 10.0], pa.float32()), "b": pa.array([0.0, 10.0], pa.float32())})
    C = np.array([[10, 10], [0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(segone.assign(t, C).labels, [1, 0])
    bad = pa.table({"a": ["x", "y"]})
    with pytest.raises(SchemaError, match="'a'"):
        segone.assign(bad, C[:, :1])
    nulls = pa.table({"a": pa.array([1.0, None])})
    with pytest.raises(DataError, match="null"):
        segone.assign(nulls, C[:, :1])


def test_invalid_rows_raise_or_skip(backend):
    X = np.zeros((6, 2), dtype=np.float32)
    X[2, 1] = np.nan
    X[5, 0] = np.inf
    C = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(DataError, match=r"2 rows .*first rows: 2, 5"):
        segone.assign(X, C, backend=backend)
    res = segone.assign(X, C, on_invalid="skip", backend=backend)
    assert res.n_invalid == 2
    np.testing.assert_array_equal(res.labels, [0, 0, -1, 0, 0, -1])


@pytest.mark.parametrize(
    "X, C, match",
    [
        (np.ones(3), np.ones((1, 1)), "2-D"),
        (np.ones((3, 2)), np.ones((1, 3)), "3 features but X has 2"),
        (np.ones((3, 2)), np.ones((0, 2)), "empty"),
        (np.ones((3, 0)), np.ones((1, 0)), "0 features"),
        (np.ones((3, 2)), np.array([[np.nan, 1.0]]), "centroids hold NaN"),
        (np.array([["a", "b"]]), np.ones((1, 2)), "numbers"),
    ],
)
def test_validation_errors(X, C, match):
    with pytest.raises((ParameterError, DataError, SchemaError), match=match):
        segone.assign(X, C)


def test_bad_options():
    X = np.ones((2, 2))
    with pytest.raises(ParameterError, match="on_invalid"):
        segone.assign(X, X, on_invalid="ignore")
    with pytest.raises(ParameterError, match="backend"):
        segone.assign(X, X, backend="gpu")
    with pytest.raises(ParameterError, match="n_threads=0"):
        segone.assign(X, X, n_threads=0)


def test_threads_give_identical_results(backend):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(5000, 12)).astype(np.float32)
    C = rng.normal(size=(33, 12)).astype(np.float32)
    a = segone.assign(X, C, margin=True, backend=backend, n_threads=1)
    b = segone.assign(X, C, margin=True, backend=backend, n_threads=2)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
