"""The sweep's per-segment sums (kernel family "sweep"): Cython and Numba twins against the NumPy reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segone.kernels import _cy, _nb, reference

KERNELS = {"cython": _cy, "numba": _nb}


def run(mod, X, labels, k, shift=None, means=None, want_dist=True, want_sums=True):
    X = np.ascontiguousarray(X)
    d = X.shape[1]
    shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64)
    means = np.zeros((k, d)) if means is None else np.asarray(means, dtype=np.float64)
    out = (np.zeros(k), np.zeros((k, d)), np.zeros(k), np.zeros(k))
    kw = {} if mod is reference else {"n_threads": 2}
    tot = mod.sweep_accumulate(X, labels, shift, means, want_dist, want_sums, *out, **kw)
    return (tot, *out)


def check(backend, X, labels, k, **kw):
    want = run(reference, X, labels, k, **kw)
    got = run(KERNELS[backend], X, labels, k, **kw)
    assert isinstance(got[0], float)
    for a, b in zip(got, want):  # rows and features added in order everywhere: the same bits (NaN equal NaN)
        np.testing.assert_array_equal(a, b)
    return want


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, d", [(0, 3, 2), (1, 1, 1), (7, 3, 5), (1000, 6, 9)])
@pytest.mark.parametrize("want_dist, want_sums", [(True, True), (False, True), (True, False), (False, False)])
def test_sweep_accumulate_matches_reference(backend, dtype, n, k, d, want_dist, want_sums):
    rng = np.random.default_rng(n * 7 + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    labels = rng.integers(0, k, n)
    shift = rng.normal(size=d)
    means = rng.normal(size=(k, d))
    tot, counts, sums, sumsq, dist = check(backend, X, labels, k, shift=shift, means=means, want_dist=want_dist,
                                           want_sums=want_sums)  # fmt: skip
    # and the reference means what it says (an independent computation, to rounding)
    V = X.astype(np.float64) - shift
    sq = (V**2).sum(1)
    t2 = ((V - means[labels]) ** 2).sum(1)
    np.testing.assert_allclose(sumsq, np.bincount(labels, sq, minlength=k), rtol=1e-12)
    if want_sums:
        np.testing.assert_array_equal(counts, np.bincount(labels, minlength=k))
        for f in range(d):
            np.testing.assert_allclose(sums[:, f], np.bincount(labels, V[:, f], minlength=k), rtol=1e-9, atol=1e-9)
    else:
        assert not counts.any() and not sums.any()
    if want_dist:
        np.testing.assert_allclose(dist, np.bincount(labels, np.sqrt(t2), minlength=k), rtol=1e-12)
        assert tot == pytest.approx(t2.sum(), rel=1e-12)
    else:
        assert tot == 0.0 and not dist.any()


def test_sweep_accumulate_adversarial(backend):
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        big = np.finfo(dtype).max
        cases = [
            (np.tile([[1.0, 2.0, 3.0]], (50, 1)), np.zeros(50, np.int64), 2),  # duplicates: one segment, one empty
            (np.repeat([[0.5, 0.5], [0.5, 0.5], [-0.5, 0.5]], 4, axis=0), np.arange(12) % 3, 3),  # ties
            (np.c_[rng.normal(size=40), np.full(40, 7.0)], rng.integers(0, 4, 40), 4),  # a constant column
            (np.array([[np.nan, 1.0], [2.0, np.inf], [3.0, 4.0]]), np.array([0, 1, 1]), 2),  # NaN / inf propagate
            (np.empty((0, 4)), np.empty(0, np.int64), 5),  # empty
            (np.array([[2.5, -1.0, 0.0]]), np.array([2]), 3),  # one row
            (np.array([[big, -big], [big / 2, big / 2], [1.0, 1.0]]), np.array([0, 0, 1]), 2),  # huge: overflow alike
            (1e12 + rng.integers(0, 8, (60, 3)) * 0.25, rng.integers(0, 3, 60), 3),  # a large offset
        ]
        for X, labels, k in cases:
            X = np.asarray(X, dtype=dtype)
            d = X.shape[1]
            for shift in (np.zeros(d), np.full(d, 1e12 if np.abs(X[np.isfinite(X)]).max(initial=0) > 1e11 else 1.0)):
                means = np.full((k, d), 0.25)
                check(backend, X, labels, k, shift=shift, means=means)
                check(backend, X, labels, k, shift=shift, want_dist=False)
    # the large offset: with the shift at the offset, every sum is exact (quarters of small integers)
    X = 1e12 + np.arange(16, dtype=np.float64).reshape(8, 2) * 0.25
    _, counts, sums, sumsq, _ = check(backend, X, np.arange(8) % 2, 2, shift=np.full(2, 1e12))
    V = X - 1e12
    np.testing.assert_array_equal(sums, [V[::2].sum(0), V[1::2].sum(0)])
    np.testing.assert_array_equal(sumsq, [(V[::2] ** 2).sum(), (V[1::2] ** 2).sum()])


@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True, width=32), st.floats(-1e6, 1e6),
                          st.integers(0, 2)), max_size=30))  # fmt: skip
def test_sweep_accumulate_hypothesis(rows):
    X = np.array([[a, b] for a, b, _ in rows], dtype=np.float32).reshape(-1, 2)
    labels = np.array([c for _, _, c in rows], dtype=np.int64)
    for backend in KERNELS:
        check(backend, X, labels, 3, shift=np.array([0.5, -2.0]), means=np.arange(6.0).reshape(3, 2))


def test_sweep_accumulate_refuses_labels_and_shapes_it_cannot_follow(backend):
    X = np.ones((3, 2), np.float32)
    for mod in (KERNELS[backend], reference):
        for bad in ([0, 1, 3], [0, -1, 1]):  # past k, or -1 (an invalid row): the compiled loops check no bounds
            with pytest.raises(ValueError, match="labels must lie"):
                run(mod, X, np.array(bad), 3)
        with pytest.raises(ValueError, match="shapes"):
            mod.sweep_accumulate(X, np.zeros(3, np.int64), np.zeros(3), np.zeros((3, 2)), True, True, np.zeros(3),
                                 np.zeros((3, 2)), np.zeros(3), np.zeros(3))  # fmt: skip
        with pytest.raises(ValueError, match="sums must be"):
            mod.sweep_accumulate(X, np.zeros(3, np.int64), np.zeros(2), np.zeros((3, 2)), True, True, np.zeros(3),
                                 np.zeros((3, 2), np.float32), np.zeros(3), np.zeros(3))  # fmt: skip


def test_sweep_family_is_dispatched_and_used_by_the_sweep_statistics(monkeypatch):
    from segone import tuning
    from segone._backend import get_kernels

    for name in ("cython", "numba"):
        assert get_kernels(name, "sweep").sweep_accumulate is KERNELS[name].sweep_accumulate
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3)).astype(np.float32)
    C = X[:4].copy()
    states = {b: tuning.SweepStats.of(X, C, means=C.astype(np.float64), backend=b) for b in ("cython", "numba")}
    for field in ("counts", "sums", "sumsq", "dist"):
        np.testing.assert_array_equal(getattr(states["cython"], field), getattr(states["numba"], field))
    calls = []
    monkeypatch.setattr(_nb, "sweep_accumulate", lambda *a, **kw: calls.append(1) or reference.sweep_accumulate(*a))
    tuning.SweepStats.of(X, C, backend="numba")
    assert calls == [1]
