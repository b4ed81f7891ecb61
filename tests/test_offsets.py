"""Exact at any offset: the distance kernels against an exact float64 reference on data far from the origin.

The kernels use the expanded form ||c||^2 - 2 x.c + ||x||^2, which loses
every bit of a distance when the data sit far from the origin (float32 at
1e4, raw epoch seconds in float64); they centre rows and centroids on the
fly (``segone.kernels._common.centering``).  Here the labels, distances,
margins, partial sums and a small fit are compared with distances computed
directly as sum((x - c) ** 2) in float64 (exact to float64 rounding), with
tolerances scaled by the data's *spread*, never by their offset.
"""

import warnings

import numpy as np
import pytest

import segone
from segone.errors import DataError
from segone.kernels import _common, _cy, _nb, reference

_ORDER = ["scalar", "generic", "avx2", "avx512"]
SIMD_LEVELS = _ORDER[: _ORDER.index(_cy.cpu_simd_level()) + 1]
# every compiled variant: Numba, and each Cython SIMD level this CPU runs
VARIANTS = ["numba"] + [f"cython-{lv}" for lv in SIMD_LEVELS]


@pytest.fixture(params=VARIANTS)
def kern(request):
    if request.param == "numba":
        yield _nb
        return
    prev = _cy.set_simd_level(request.param.split("-", 1)[1])
    try:
        yield _cy
    finally:
        _cy.set_simd_level(prev)


# ------------------------------------------------------------------ helpers
def blobs(n, d, k, *, offset=0.0, scale=1.0, dtype=np.float32, seed=0, noise=0.3):
    """Well-separated blobs (centres N(0, 1) * 3, points +N(0, noise)) moved to ``offset`` and scaled."""
    rng = np.random.default_rng(seed)
    C0 = rng.normal(size=(k, d)) * 3.0
    lab = rng.integers(0, k, n)
    X0 = C0[lab] + rng.normal(size=(n, d)) * noise
    off = np.broadcast_to(np.asarray(offset, dtype=np.float64), (d,))
    X = (X0 * scale + off).astype(dtype)
    C = (C0 * scale + off).astype(dtype)
    return X, C


def exact(X, C):
    """Exact float64 distances of every row to every centroid (direct differences: no cancellation)."""
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return ((X64[:, None, :] - C64[None, :, :]) ** 2).sum(-1)


def spread_tol(X, C):
    """Per-row tolerance of the kernels: a few roundings of the data's spread (around the centroids)."""
    eps = np.finfo(X.dtype).eps
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    m = C64.mean(0)
    r2 = ((C64 - m) ** 2).sum(1).max()
    return 64 * eps * X.shape[1] * (((X64 - m) ** 2).sum(1) + r2)


def run_assign(mod, X, C, n_threads=2):
    n = X.shape[0]
    labels = np.full(n, -7, dtype=np.int32)
    dist = np.full(n, -7, dtype=X.dtype)
    marg = np.full(n, -7, dtype=X.dtype)
    n_invalid = mod.assign(X, C, labels, dist, marg, n_threads)
    return labels, dist, marg, n_invalid


def check_exact(mod, X, C, min_clear=0.95):
    """Labels, distances and margins of ``mod`` against the exact reference; returns the clear rows."""
    D = exact(X, C)
    order = np.argsort(D, axis=1, kind="stable")
    d1 = D[np.arange(len(X)), order[:, 0]]
    tol = spread_tol(X, C)
    labels, dist, marg, n_invalid = run_assign(mod, X, C)
    assert n_invalid == 0
    assert np.isfinite(dist).all() and (dist >= 0).all()
    out_ulp = np.spacing(np.abs(d1).astype(X.dtype)).astype(np.float64)  # rounding of the output itself
    # the distance to the kernel's own label is the best exact distance within tolerance (ties included)
    np.testing.assert_array_less(np.abs(dist.astype(np.float64) - d1), tol + 2 * out_ulp + 1e-300)
    np.testing.assert_array_less(D[np.arange(len(X)), labels] - d1, 2 * tol + 1e-300)
    if C.shape[0] == 1:
        assert (labels == 0).all() and np.isinf(marg).all()
        return np.ones(len(X), dtype=bool)
    d2 = D[np.arange(len(X)), order[:, 1]]
    clear = (d2 - d1) > 2 * tol
    assert clear.mean() >= min_clear, f"only {clear.mean():.3f} of the rows are clear of ties"
    np.testing.assert_array_equal(labels[clear], order[clear, 0])
    m_ulp = np.spacing(np.abs(d2 - d1).astype(X.dtype)).astype(np.float64)
    np.testing.assert_array_less(np.abs(marg[clear].astype(np.float64) - (d2 - d1)[clear]),
                                 (2 * tol + 2 * m_ulp)[clear] + 1e-300)  # fmt: skip
    return clear


OFFSETS = [
    (np.float32, 1e4),
    (np.float32, -1e4),
    (np.float32, 1e6),
    (np.float64, 1e8),
    (np.float64, 1.7e9),  # raw epoch seconds
    (np.float64, 1e12),
    (np.float64, -1e12),
]


# ----------------------------------------------------------------- assign
@pytest.mark.parametrize("dtype, offset", OFFSETS)
@pytest.mark.parametrize("shape", [(3000, 8, 16), (517, 3, 5), (300, 20, 70)])
def test_offset_data_exact(kern, dtype, offset, shape):
    n, d, k = shape
    X, C = blobs(n, d, k, offset=offset, dtype=dtype, seed=n + d + k)
    assert _common.centering(C).active
    check_exact(kern, X, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_offsets_per_feature(kern, dtype):
    # features at the origin, far away, far away negative, and one at 1e3 with a small spread
    big = 1e4 if dtype == np.float32 else 1e10
    offset = np.array([0.0, big, -big, 1e3, 0.0, big / 7])
    X, C = blobs(4000, 6, 12, offset=offset, dtype=dtype, seed=5)
    check_exact(kern, X, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-20, 1e-12, 1e15])
def test_scaled_data_exact(kern, dtype, scale):
    X, C = blobs(2000, 7, 9, scale=scale, dtype=dtype, seed=3)
    check_exact(kern, X, C)
    Xo, Co = blobs(2000, 7, 9, scale=scale, offset=1e3 * scale, dtype=dtype, seed=4)
    check_exact(kern, Xo, Co)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_scale_float64(kern, dtype):
    # float64 far beyond float32's range, and float32 near its top (distances still representable)
    scale = 1e150 if dtype == np.float64 else 1e17
    X, C = blobs(1500, 5, 6, scale=scale, dtype=dtype, seed=8)
    check_exact(kern, X, C)


@pytest.mark.parametrize("dtype, offset", OFFSETS[::2])
def test_near_ties(kern, dtype, offset):
    # rows on (or within rounding of) the bisector of two centroids: either label is right,
    # the distance must be the best one within tolerance, and the clear rows must match
    rng = np.random.default_rng(11)
    d = 4
    C0 = rng.normal(size=(6, d)) * 3
    a, b = C0[rng.integers(0, 6, 3000)], C0[rng.integers(0, 6, 3000)]
    t = 0.5 + rng.normal(size=(3000, 1)) * 1e-3
    X0 = a * t + b * (1 - t)
    X = (X0 + offset).astype(dtype)
    C = (C0 + offset).astype(dtype)
    check_exact(kern, X, C, min_clear=0.0)


@pytest.mark.parametrize("dtype, offset", OFFSETS)
def test_duplicated_points_and_centroids(kern, dtype, offset):
    # rows equal to centroids (distance ~0), and duplicated centroids: exact ties go to the lowest index
    X, C = blobs(64, 5, 8, offset=offset, dtype=dtype, seed=2)
    C = np.concatenate([C, C[:3]])  # centroids 8, 9, 10 duplicate 0, 1, 2
    Xd = np.concatenate([C[:8], C[:8], X])
    labels, dist, marg, _ = run_assign(kern, Xd, C)
    np.testing.assert_array_equal(labels[:16], np.tile(np.arange(8), 2))
    tol = spread_tol(Xd, C)
    np.testing.assert_array_less(dist[:16].astype(np.float64), tol[:16] + 1e-300)
    np.testing.assert_array_equal(marg[[0, 1, 2, 8, 9, 10]], 0)  # an exact duplicate is an exact tie
    check_exact(kern, Xd, C, min_clear=0.0)


@pytest.mark.parametrize("dtype, offset", OFFSETS)
def test_one_centroid(kern, dtype, offset):
    X, C = blobs(700, 6, 1, offset=offset, dtype=dtype, seed=7)
    check_exact(kern, X, C)
    Xs = np.repeat(X[:5], 3, axis=0)  # duplicated rows
    check_exact(kern, Xs, C)


@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("dtype, offset", [(np.float32, 1e4), (np.float64, 1e8)])
def test_public_assign_offset(backend, dtype, offset):
    X, C = blobs(5000, 16, 32, offset=offset, dtype=dtype, seed=1)
    res = segone.assign(X, C, margin=True, backend=backend)
    D = exact(X, C)
    order = np.argsort(D, axis=1)
    d1, d2 = np.take_along_axis(D, order[:, :2], axis=1).T
    clear = (d2 - d1) > 2 * spread_tol(X, C)
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(res.labels[clear], order[clear, 0])


def test_centred_data_run_untransformed():
    # data around the origin pay nothing: the kernels run without any transform
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        C = rng.normal(size=(64, 16)).astype(dtype) * 5
        assert not _common.centering(C).active
        assert not _common.centering(C + 1).active  # a small offset (against the spread) is not worth it
        assert _common.centering(C + 100).active
    # the shift is a value of the data's type, near the centroids, exact for rows near it
    C = (rng.normal(size=(10, 3)) + 1e4).astype(np.float32)
    tf = _common.centering(C)
    assert tf.scale == 1.0 and np.all(np.abs(tf.shift - 1e4) < 8)
    assert np.array_equal(tf.shift.astype(np.float32).astype(np.float64), tf.shift)


# ---------------------------------------------------------- partial sums
@pytest.mark.parametrize("dtype, offset", OFFSETS)
@pytest.mark.parametrize("weighted", [False, True])
def test_partial_sums_offset(kern, dtype, offset, weighted):
    X, C = blobs(40_000, 6, 9, offset=offset, dtype=dtype, seed=9)
    rng = np.random.default_rng(1)
    w = rng.random(len(X)) if weighted else None
    n, d = X.shape
    k = C.shape[0]
    labels, sums, counts = np.empty(n, np.int32), np.empty((k, d)), np.empty(k)
    inertia, n_invalid = kern.partial_sums(X, w, C, labels, sums, counts, 2)
    assert n_invalid == 0
    D = exact(X, C)
    lab = D.argmin(1)
    np.testing.assert_array_equal(labels, lab)  # well separated: no near-ties
    ww = np.ones(n) if w is None else w
    ref_counts = np.bincount(lab, weights=ww, minlength=k)
    ref_sums = np.zeros((k, d))
    np.add.at(ref_sums, lab, X.astype(np.float64) * ww[:, None])  # sums of the ORIGINAL rows
    np.testing.assert_allclose(counts, ref_counts, rtol=1e-12)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-12, atol=0)
    ref_inertia = float((D[np.arange(n), lab] * ww).sum())
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    assert inertia == pytest.approx(ref_inertia, rel=rtol)
    # and the NumPy reference kernel agrees
    rl, rs, rc = np.empty(n, np.int32), np.empty((k, d)), np.empty(k)
    ri, _ = reference.partial_sums(X, w, C, rl, rs, rc)
    np.testing.assert_array_equal(rl, labels)
    assert ri == pytest.approx(ref_inertia, rel=rtol)


# ------------------------------------------------------------- mini-batch
def run_minibatch(mod, X, idx, C0, centering=None, chunks=1):
    C = C0.astype(np.float64).copy()
    totals = np.zeros(C.shape[0])
    state = _common.minibatch_state(0.01, 0.0, 0.0, None, 10 * C.shape[0])
    bi = np.full(idx.shape[0], np.nan)
    done = 0
    for part in np.array_split(np.arange(idx.shape[0]), chunks):
        kw = {} if centering is None else {"centering": centering}
        got, status = mod.minibatch(X, None, idx[part], C, totals, state, bi[part[0]:], 2, **kw)
        done += got
        assert status == _common.MB_DONE
    return done, C, totals, bi


@pytest.mark.parametrize("dtype, offset, rtol", [(np.float32, 1e4, 1e-6), (np.float64, 1e8, 1e-6),
                                                 (np.float64, 1e12, 1e-4)])  # fmt: skip
def test_minibatch_offset_matches_reference(kern, dtype, offset, rtol):
    # small integers far from the origin: the exact reference and the centred kernels take the same
    # steps.  The float64 centres themselves round at ulp(offset) in the update (c * n + sum) / (n + m)
    # (1.2e-4 at 1e12, FMA-contracted or not), so the batch inertias agree to that, not to the distances'.
    rng = np.random.default_rng(4)
    X = (rng.integers(-30, 30, size=(3000, 5)) + offset).astype(dtype)
    idx = np.sort(rng.integers(0, 3000, size=(25, 300)), axis=1)
    C0 = X[:7]
    ref = run_minibatch(reference, X, idx, C0)
    tf = _common.centering(C0, X.dtype)  # fixed for the whole fit
    got = run_minibatch(kern, X, idx, C0, centering=tf)
    assert got[0] == ref[0] == 25
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, atol=1e-12 * abs(offset))
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-12)
    np.testing.assert_allclose(got[3], ref[3], rtol=rtol)
    # the same fixed transform over several calls gives the same steps as one call
    split = run_minibatch(kern, X, idx, C0, centering=tf, chunks=3)
    np.testing.assert_array_equal(split[1], got[1])
    np.testing.assert_array_equal(split[3], got[3])


# ------------------------------------------------------------------- fit
@pytest.mark.parametrize("backend", ["cython", "numba"])
@pytest.mark.parametrize("dtype, offset", [(np.float32, 0.0), (np.float32, 1e4), (np.float32, 1e6),
                                           (np.float64, 1e8), (np.float64, 1e12)])  # fmt: skip
def test_fit_inertia_is_exact(backend, dtype, offset):
    X, _ = blobs(2000, 3, 4, offset=offset, dtype=dtype, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = segone.Segmenter(4, random_state=0, backend=backend).fit(X)
    D = exact(X, seg.cluster_centers_)
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    # inertia_ is the final pass over the returned centroids: their exact inertia
    assert seg.inertia_ == pytest.approx(float(D.min(1).sum()), rel=rtol)
    order = np.argsort(D, axis=1)
    d1, d2 = np.take_along_axis(D, order[:, :2], axis=1).T
    clear = (d2 - d1) > 2 * spread_tol(X, seg.cluster_centers_)
    np.testing.assert_array_equal(seg.labels_[clear], order[clear, 0])
    assert -seg.score(X) == pytest.approx(seg.inertia_, rel=rtol)
    np.testing.assert_array_equal(seg.predict(X)[clear], order[clear, 0])


# --------------------------------------------------------------- overflow
def overflow_data(dtype):
    big = 3e19 if dtype == np.float32 else 3e158
    return blobs(1000, 4, 5, scale=big, dtype=dtype, seed=6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflow_raises(kern, dtype):
    X, C = overflow_data(dtype)
    assert np.isfinite(X).all() and np.isfinite(C).all()
    n = len(X)
    with pytest.raises(DataError, match=rf"rows of X \(first rows: .*\).*largest {np.dtype(dtype).name}.*rescale"):
        kern.assign(X, C, np.empty(n, np.int32), np.empty(n, dtype), np.empty(n, dtype), 2)
    with pytest.raises(DataError, match="rescale"):
        kern.partial_sums(X, None, C, np.empty(n, np.int32), np.empty(C.shape), np.empty(len(C)), 2)
    with pytest.raises(DataError, match="rescale"):
        run_minibatch(kern, X, np.arange(200).reshape(2, 100), C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflow_rows_named_like_the_reference(kern, dtype):
    # one far-away row among ordinary ones: only it is named
    X, C = blobs(700, 4, 5, dtype=dtype, seed=6)
    X[[123, 456]] = np.finfo(dtype).max / 4
    n = len(X)
    msgs = []
    for mod in (reference, kern):
        with pytest.raises(DataError) as err:
            mod.assign(X, C, np.empty(n, np.int32), np.empty(n, dtype), None, 2)
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1]
    assert "2 rows of X (first rows: 123, 456)" in msgs[0]
    if dtype == np.float32:
        assert "float64" in msgs[0]  # the fix: convert to float64


@pytest.mark.parametrize("backend", ["cython", "numba"])
def test_overflow_public_api(backend):
    X, C = overflow_data(np.float32)
    with pytest.raises(DataError, match="float32"):
        segone.assign(X, C, backend=backend)
    with pytest.raises(DataError, match="float32"):
        segone.assign(X, C, on_invalid="skip", backend=backend)  # not an invalid row: never skipped
    with pytest.raises(DataError, match="float32"):
        segone.Segmenter(3, random_state=0, backend=backend).fit(X)
    # the same values in float64 are fine, and exact
    res = segone.assign(X.astype(np.float64), C.astype(np.float64), backend=backend)
    np.testing.assert_array_equal(res.labels, exact(X, C).argmin(1))


def test_no_silent_infinite_distances(kern):
    # float32 up to the edge of the range: either finite distances (exact to the spread) or
    # DataError when some row's distance does not fit, never inf
    raised = []
    for scale in (1e16, 1e17, 1e18, 3e18, 1e19, 1.4e19, 2e19, 3e19):
        X, C = blobs(400, 4, 5, scale=scale, dtype=np.float32, seed=1)
        n = len(X)
        dist = np.empty(n, np.float32)
        best = exact(X, C).min(1)
        try:
            kern.assign(X, C, np.empty(n, np.int32), dist, None, 2)
        except DataError:
            assert (best > np.finfo(np.float32).max * 0.99).any()
            raised.append(scale)
            continue
        assert np.isfinite(dist).all()
        np.testing.assert_array_less(np.abs(dist - best), spread_tol(X, C) + 2 * np.spacing(dist).astype(np.float64))
    assert raised and raised[0] >= 1.4e19  # both outcomes were exercised
