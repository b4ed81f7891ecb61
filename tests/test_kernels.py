"""Both kernel backends against the NumPy reference (kernels/reference.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segone.kernels import _common, _cy, _nb, reference

KERNELS = {"cython": _cy, "numba": _nb}

_ORDER = ["scalar", "generic", "avx2", "avx512"]
SIMD_LEVELS = _ORDER[: _ORDER.index(_cy.cpu_simd_level()) + 1]


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request):
    """Run a test with every Cython kernel variant this CPU can execute."""
    prev = _cy.set_simd_level(request.param)
    try:
        yield request.param
    finally:
        _cy.set_simd_level(prev)


def run_assign(mod, X, C, margin=True, n_threads=2):
    n = X.shape[0]
    labels = np.full(n, -7, dtype=np.int32)
    dist = np.full(n, -7, dtype=X.dtype)
    marg = np.full(n, -7, dtype=X.dtype) if margin else None
    n_invalid = mod.assign(X, C, labels, dist, marg, n_threads)
    return labels, dist, marg, n_invalid


def check_against_reference(X, C, backend, n_threads=2):
    kern = KERNELS[backend]
    rl, rd, rm, rinv = run_assign(reference, X, C)
    kl, kd, km, kinv = run_assign(kern, X, C, n_threads=n_threads)
    assert kinv == rinv
    valid = rl >= 0
    np.testing.assert_array_equal(kl[~valid], -1)
    assert np.isnan(kd[~valid]).all()
    # tolerance of the expanded formula in the input precision, on data centred on the centroids:
    # the kernels centre on the fly, so their error scales with the data's spread, not their offset
    eps = np.finfo(X.dtype).eps
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    m = C64.mean(0)
    scale = ((X64 - m) ** 2).sum(1) + ((C64 - m) ** 2).sum(1).max() if X.shape[0] else np.zeros(0)
    tol = 64 * eps * scale * max(1, X.shape[1])
    tol = tol + 2 * np.spacing(np.abs(rd).astype(X.dtype)).astype(np.float64)  # rounding of the output
    # labels agree except where the reference margin is within tolerance (near-ties)
    clear = valid & (rm > 2 * tol)
    np.testing.assert_array_equal(kl[clear], rl[clear])
    # distances: the kernel's distance to its own label equals the reference's best within tolerance
    np.testing.assert_array_less(np.abs(kd[valid].astype(np.float64) - rd[valid]), tol[valid] + 1e-300)
    assert (kd[valid] >= 0).all()
    if C.shape[0] == 1:
        assert np.isinf(km[valid]).all()
    else:
        np.testing.assert_array_less(np.abs(km[clear].astype(np.float64) - rm[clear]), 2 * tol[clear] + 1e-300)
    return kl, kd, km


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 3, 5), (7, 2, 1), (257, 16, 64), (1000, 5, 300), (3001, 8, 17)])
def test_assign_random(backend, dtype, shape):
    n, d, k = shape
    rng = np.random.default_rng(n * 7 + d * 3 + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(k, d)).astype(dtype)
    check_against_reference(X, C, backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (5, 3, 9), (33, 17, 8), (100, 16, 64), (257, 20, 50), (1000, 64, 130), (70, 8, 1024)]
)
def test_every_simd_variant(simd_level, dtype, shape):
    # shapes cover K and D below, at and above the vector width and block sizes
    n, d, k = shape
    rng = np.random.default_rng(n * 7 + d * 3 + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(k, d)).astype(dtype)
    check_against_reference(X, C, "cython")
    Xi = rng.integers(-9, 9, size=(n, d)).astype(dtype)  # exact: partial sums must match bit for bit
    Ci = rng.integers(-9, 9, size=(k, d)).astype(dtype)
    rl, rs, rc, ri, _ = run_partial(reference, Xi, None, Ci)
    kl, ks, kc, ki, _ = run_partial(_cy, Xi, None, Ci)
    np.testing.assert_array_equal(kl, rl)
    np.testing.assert_array_equal(ks, rs)
    np.testing.assert_array_equal(kc, rc)
    assert ki == ri


def test_assign_empty(backend):
    X = np.empty((0, 4), dtype=np.float32)
    C = np.ones((3, 4), dtype=np.float32)
    labels, dist, marg, n_invalid = run_assign(KERNELS[backend], X, C)
    assert labels.size == 0 and n_invalid == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_resolve_to_lowest_index(backend, dtype):
    # duplicate centroids: exact ties, must pick the first copy
    C = np.array([[1, 1], [0, 0], [1, 1], [0, 0], [5, 5]], dtype=dtype)
    X = np.array([[0, 0], [1, 1], [0.5, 0.5], [5, 5], [3, 3]], dtype=dtype)
    labels, dist, marg, _ = run_assign(KERNELS[backend], X, C)
    # [0.5,0.5] is equidistant from [0,0] and [1,1]; [3,3] from [1,1] and [5,5]: lowest index wins
    np.testing.assert_array_equal(labels, [1, 0, 0, 4, 0])
    np.testing.assert_array_equal(marg[:3], [0, 0, 0])
    rl, _, _, _ = run_assign(reference, X, C)
    np.testing.assert_array_equal(labels, rl)


def test_one_centroid_margin_is_infinite(backend):
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    C = np.zeros((1, 3), dtype=np.float32)
    labels, dist, marg, _ = run_assign(KERNELS[backend], X, C)
    assert (labels == 0).all() and np.isinf(marg).all()
    np.testing.assert_allclose(dist, (X.astype(np.float64) ** 2).sum(1), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_invalid_rows(backend, dtype):
    X = np.arange(24, dtype=dtype).reshape(8, 3)
    X[1, 0] = np.nan
    X[4, 2] = np.inf
    X[6, 1] = -np.inf
    C = X[[0, 3]].copy()
    labels, dist, marg, n_invalid = run_assign(KERNELS[backend], X, C)
    assert n_invalid == 3
    np.testing.assert_array_equal(np.flatnonzero(labels < 0), [1, 4, 6])
    assert np.isnan(dist[[1, 4, 6]]).all() and np.isnan(marg[[1, 4, 6]]).all()
    check_against_reference(X, C, backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_and_duplicate_rows(backend, dtype):
    X = np.tile(np.array([[2.0, -1.0, 0.0]], dtype=dtype), (600, 1))
    X[::3, 2] = 7
    C = np.array([[2, -1, 0], [2, -1, 7], [2, -1, 0]], dtype=dtype)
    labels, dist, _, _ = run_assign(KERNELS[backend], X, C)
    np.testing.assert_array_equal(labels, np.where(np.arange(600) % 3 == 0, 1, 0))
    np.testing.assert_array_equal(dist, 0)


@pytest.mark.parametrize("scale", [1e-20, 1e-6, 1e6, 1e15])
def test_tiny_and_huge_magnitudes(backend, scale):
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        X = (rng.normal(size=(500, 6)) * scale).astype(dtype)
        C = (rng.normal(size=(9, 6)) * scale).astype(dtype)
        check_against_reference(X, C, backend)


def test_chunk_boundaries_and_threads(backend):
    rng = np.random.default_rng(11)
    kern = KERNELS[backend]
    for n in (1, 2, 255, 256, 257, 511, 513, 4099):
        X = rng.normal(size=(n, 5)).astype(np.float32)
        C = rng.normal(size=(13, 5)).astype(np.float32)
        one = run_assign(kern, X, C, n_threads=1)
        two = run_assign(kern, X, C, n_threads=2)
        for a, b in zip(one[:3], two[:3]):
            np.testing.assert_array_equal(a, b)
        check_against_reference(X, C, backend)


def test_backends_agree_exactly_on_integer_data():
    # small integers: the expanded formula is exact, so both backends and the reference agree bit for bit
    rng = np.random.default_rng(5)
    X = rng.integers(-20, 20, size=(2000, 7)).astype(np.float32)
    C = rng.integers(-20, 20, size=(40, 7)).astype(np.float32)
    res = [run_assign(m, X, C) for m in (reference, _cy, _nb)]
    for r in res[1:]:
        np.testing.assert_array_equal(r[0], res[0][0])
        np.testing.assert_array_equal(r[1], res[0][1].astype(np.float32))
        np.testing.assert_array_equal(r[2], res[0][2].astype(np.float32))


@st.composite
def assign_inputs(draw):
    n = draw(st.integers(0, 2000))
    d = draw(st.integers(1, 64))
    k = draw(st.integers(1, 300))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    mag = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e8]))
    offset = draw(st.sampled_from([0.0, 0.0, 1e3, -1e4, 1e7, 1e12]))  # data far from the origin
    if dtype == np.float32:
        offset = min(offset, 1e4) if offset > 0 else offset  # float32 resolves a spread of ~1 up to 1e4..1e5
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["normal", "integers", "duplicates"]))
    if kind == "normal":
        X = rng.normal(size=(n, d)) * mag
        C = rng.normal(size=(k, d)) * mag
    elif kind == "integers":
        X = rng.integers(-3, 4, size=(n, d)).astype(float)
        C = rng.integers(-3, 4, size=(k, d)).astype(float)
    else:
        base = rng.normal(size=(max(1, min(n, 5)), d)) * mag
        X = base[rng.integers(0, len(base), size=n)]
        C = np.concatenate([base, base])[rng.integers(0, 2 * len(base), size=k)]
    order = draw(st.sampled_from(["C", "F"]))
    X = np.asarray(X + offset, dtype=dtype, order=order)
    return X, np.asarray(C + offset, dtype=dtype)


@given(assign_inputs())
def test_assign_hypothesis(data):
    X, C = data
    X = np.ascontiguousarray(X)  # kernels take C order; the public API converts F order
    for backend in KERNELS:
        check_against_reference(X, C, backend)
    prev = _cy.simd_level()
    try:
        for level in SIMD_LEVELS:
            _cy.set_simd_level(level)
            check_against_reference(X, C, "cython")
    finally:
        _cy.set_simd_level(prev)


def test_simd_invalid_rows_and_ties(simd_level):
    test_invalid_rows("cython", np.float32)
    test_invalid_rows("cython", np.float64)
    test_ties_resolve_to_lowest_index("cython", np.float32)
    test_ties_resolve_to_lowest_index("cython", np.float64)
    test_partial_sums_skips_invalid_rows("cython")


def test_set_simd_level_validation():
    with pytest.raises(ValueError, match="unknown SIMD level"):
        _cy.set_simd_level("sse9")
    assert _cy.simd_level() in _ORDER


# ----------------------------------------------------------------- partial sums
def run_partial(mod, X, w, C, n_threads=2):
    n, d = X.shape
    k = C.shape[0]
    labels = np.empty(n, dtype=np.int32)
    sums = np.empty((k, d))
    counts = np.empty(k)
    inertia, n_invalid = mod.partial_sums(X, w, C, labels, sums, counts, n_threads)
    return labels, sums, counts, inertia, n_invalid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [0, 1, 100, 40_000])
def test_partial_sums_against_reference(backend, dtype, weighted, n):
    rng = np.random.default_rng(n + weighted)
    X = rng.integers(-50, 50, size=(n, 6)).astype(dtype)  # exact arithmetic: no near-tie ambiguity
    C = rng.integers(-50, 50, size=(9, 6)).astype(dtype)
    w = rng.random(n) * (rng.random(n) > 0.1) if weighted else None
    rl, rs, rc, ri, rinv = run_partial(reference, X, w, C)
    kl, ks, kc, ki, kinv = run_partial(KERNELS[backend], X, w, C)
    np.testing.assert_array_equal(kl, rl)
    np.testing.assert_allclose(ks, rs, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(kc, rc, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ki, ri, rtol=1e-10, atol=1e-9)
    assert kinv == rinv == 0


def test_partial_sums_deterministic_across_threads_and_backends():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100_003, 8)).astype(np.float32)
    C = X[:16].copy()
    w = rng.random(X.shape[0])
    results = [run_partial(m, X, w, C, n_threads=t) for m in (_cy, _nb) for t in (1, 2)]
    for r in results[1:]:
        np.testing.assert_array_equal(r[0], results[0][0])
        np.testing.assert_allclose(r[1], results[0][1], rtol=1e-12)
        # inertia sums float32 distances: the backends round them differently
        np.testing.assert_allclose(r[3], results[0][3], rtol=1e-6)
    # within one backend the chunked merge is bit-identical for any thread count
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[2][1], results[3][1])
    assert results[0][3] == results[1][3] and results[2][3] == results[3][3]


def test_partial_sums_skips_invalid_rows(backend):
    X = np.ones((10, 2), dtype=np.float32)
    X[3, 1] = np.nan
    C = np.zeros((2, 2), dtype=np.float32)
    labels, sums, counts, inertia, n_invalid = run_partial(KERNELS[backend], X, None, C)
    assert n_invalid == 1 and labels[3] == -1
    assert counts.sum() == 9 and inertia == pytest.approx(18.0)


def test_chunk_plan_is_thread_independent_and_bounded():
    for n, k, d in [(0, 4, 4), (1, 1, 1), (10_000_000, 64, 16), (10_000_000, 1024, 64)]:
        rows, chunks = _common.chunk_plan(n, k, d)
        if n:
            assert rows * chunks >= n and rows * (chunks - 1) < n
            assert chunks * k * (d + 2) <= max(_common.MAX_PARTIAL_VALUES, 64 * k * (d + 2))



# ------------------------------------------------------------- mini-batch steps
def run_minibatch(mod, X, w, idx, C0, ratio=0.0, max_no_improve=None, tol=0.0, n_threads=2):
    C = C0.astype(np.float64).copy()
    totals = np.zeros(C.shape[0])
    state = _common.minibatch_state(0.01, tol, ratio, max_no_improve, 10 * C.shape[0])
    bi = np.full(idx.shape[0], np.nan)
    done, status = mod.minibatch(X, w, idx, C, totals, state, bi, n_threads)
    return done, status, C, totals, state, bi


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_minibatch_against_reference(backend, dtype, weighted):
    rng = np.random.default_rng(4)
    X = rng.integers(-30, 30, size=(3000, 5)).astype(dtype)  # exact arithmetic
    idx = np.sort(rng.integers(0, 3000, size=(25, 300)), axis=1)
    w = rng.random(3000) if weighted else None
    C0 = X[:7]
    ref = run_minibatch(reference, X, w, idx, C0)
    got = run_minibatch(KERNELS[backend], X, w, idx, C0)
    assert got[:2] == ref[:2] == (25, _common.MB_DONE)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[3], ref[3], rtol=1e-12)
    np.testing.assert_allclose(got[5], ref[5], rtol=1e-6)
    np.testing.assert_allclose(got[4], ref[4], rtol=1e-6)


def test_minibatch_statuses(backend):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 3)).astype(np.float32)
    idx = np.sort(rng.integers(0, 2000, size=(200, 64)), axis=1)
    # early stop on no improvement: the same step for the kernel and the oracle
    ref = run_minibatch(reference, X, None, idx, X[:4], max_no_improve=3)
    got = run_minibatch(KERNELS[backend], X, None, idx, X[:4], max_no_improve=3)
    assert got[1] == ref[1] == _common.MB_NO_IMPROVEMENT and got[0] == ref[0] < 200
    # a far-away centroid never wins: the reassignment check reports it
    C0 = np.vstack([X[:3], [[1e3, 1e3, 1e3]]]).astype(np.float32)
    got = run_minibatch(KERNELS[backend], X, None, idx, C0, ratio=0.01)
    assert got[1] == _common.MB_REASSIGN and got[3][3] == 0
    # NaN in a batch stops before the step is applied
    Xn = X.copy()
    Xn[idx[2, 5]] = np.nan
    got = run_minibatch(KERNELS[backend], Xn, None, idx, X[:4])
    assert got[:2] == (2, _common.MB_INVALID)


def test_minibatch_thread_independent():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(20_000, 8)).astype(np.float32)
    idx = np.sort(rng.integers(0, 20_000, size=(10, 2048)), axis=1)
    one = run_minibatch(_cy, X, None, idx, X[:16], n_threads=1)
    two = run_minibatch(_cy, X, None, idx, X[:16], n_threads=2)
    np.testing.assert_array_equal(one[2], two[2])
    np.testing.assert_array_equal(one[5], two[5])


def test_minibatch_tol_stops_like_the_reference(backend):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(4000, 3)).astype(np.float64)
    idx = rng.integers(0, 4000, size=(300, 256))
    ref = run_minibatch(reference, X, None, idx, X[:3], tol=1e-4)
    got = run_minibatch(KERNELS[backend], X, None, idx, X[:3], tol=1e-4)
    assert got[1] == ref[1] == _common.MB_CONVERGED and got[0] == ref[0] < 300


# ------------------------------------------------------------ profile kernels
DAY = 86_400 * 1_000_000


def profile_inputs(rng, n, n_groups, n_cat=5, n_channel=3, ts_range=10**12):
    codes = rng.integers(0, max(n_groups, 1), size=n).astype(np.int64)
    ts = rng.integers(-ts_range, ts_range, size=n).astype(np.int64)
    amount = np.round(rng.normal(20, 40, size=n), 2)
    cat = rng.integers(-1, n_cat, size=n).astype(np.int32) if n_cat else np.empty(0, np.int32)
    ch = rng.integers(-1, n_channel, size=n).astype(np.int32) if n_channel else np.empty(0, np.int32)
    starts = np.array([-ts_range // 2, 0, ts_range // 2], dtype=np.int64)
    return codes, n_groups, ts, amount, cat, n_cat, ch, n_channel, starts, DAY


def check_profile(backend, args, n_threads=2):
    ref = reference.profile_pass(*args)
    got = KERNELS[backend].profile_pass(*args, n_threads)
    assert set(got) == set(_common.PROFILE_FIELDS) == set(ref)
    for name in ref:
        assert got[name].dtype == ref[name].dtype and got[name].shape == ref[name].shape, name
        # sums run over each customer's rows in row order in every backend: exact
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    return ref


@pytest.mark.parametrize(
    "n, n_groups, n_cat, n_channel",
    [(0, 0, 5, 3), (0, 4, 5, 3), (1, 1, 5, 3), (500, 1, 5, 3), (5000, 700, 5, 3), (5000, 9000, 5, 3),
     (3000, 40, 0, 0), (3000, 40, 70, 1)],
)  # fmt: skip
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_profile_pass_matches_reference(backend, n, n_groups, n_cat, n_channel, n_threads):
    rng = np.random.default_rng(n + n_groups + n_cat)
    check_profile(backend, profile_inputs(rng, n, n_groups, n_cat, n_channel), n_threads)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 999])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_profile_pass_in_blocks_of_customers_matches_reference(block_rows, n_threads):
    """The Cython kernel groups rows one block of customers at a time (bounded scratch memory): any block size,
    including blocks smaller than one customer's rows and customers without rows, gives the reference's bits."""
    if "cython" not in KERNELS:
        pytest.skip("no compiled Cython kernels")
    rng = np.random.default_rng(block_rows)
    for n, n_groups in ((3000, 40), (5000, 9000), (200, 1), (0, 5)):
        args = profile_inputs(rng, n, n_groups)
        ref = reference.profile_pass(*args)
        got = KERNELS["cython"].profile_pass(*args, n_threads, block_rows=block_rows)
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{name}, n={n}, groups={n_groups}")


def test_profile_pass_adversarial(backend):
    """Ties, duplicate rows, one day, negative / huge / zero amounts, null categories, epoch edges."""
    codes = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3], dtype=np.int64)
    ts = np.array([DAY, DAY, DAY + 5, -1, -DAY, 0, 0, 0, 0, 2**62, -(2**62)], dtype=np.int64)
    amount = np.array([5.0, 5.0, -3.0, 1e300, -1e300, 0.0, 0.0, -0.0, 1e-300, 7.5, 2.5])
    cat = np.array([0, 0, -1, 1, 1, -1, -1, -1, -1, 2, 0], dtype=np.int32)
    ch = np.array([-1, 0, 0, 1, 1, -1, -1, -1, -1, 0, 0], dtype=np.int32)
    starts = np.array([-1, 0, DAY], dtype=np.int64)
    ref = check_profile(backend, (codes, 5, ts, amount, cat, 3, ch, 2, starts, DAY))
    # hand-checked: customer 0 buys twice on day 1 (the same row twice) and returns once
    assert ref["orders"][0] == 3 and ref["purchase_days"][0] == 1 and ref["first_day_spend"][0] == 7.0
    assert ref["n_categories"][0] == 1 and ref["null_cat_spend"][0] == 0.0 and ref["gross"][0] == 10.0
    # customer 1: -1 us is day -1, -DAY is day -1 too (floor, not truncation)
    assert ref["purchase_days"][1] == 1
    assert ref["purchase_days"][2] == 1 and ref["spend_max"][2] == 1e-300
    assert ref["purchase_days"][3] == 2 and ref["first"][3] == -(2**62)
    # customer 4 has no rows: the documented fill values
    assert ref["orders"][4] == 0 and ref["first"][4] == np.iinfo(np.int64).max and ref["spend_max"][4] == -np.inf


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(-5 * DAY, 5 * DAY), st.floats(-1e6, 1e6), st.integers(-1, 2)),
        max_size=60,
    )
)
def test_profile_pass_hypothesis(rows):
    codes = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    amount = np.array([r[2] for r in rows], dtype=np.float64)
    cat = np.array([r[3] for r in rows], dtype=np.int32)
    args = (codes, 7, ts, amount, cat, 3, cat, 3, np.array([0], dtype=np.int64), DAY)
    for backend in KERNELS:
        check_profile(backend, args)


def test_profile_pass_bad_codes(backend):
    kern = KERNELS[backend]
    codes, _, ts, amount, cat, n_cat, ch, n_ch, starts, day = profile_inputs(np.random.default_rng(0), 10, 4)
    codes[3] = 4
    with pytest.raises(ValueError, match="outside"):
        kern.profile_pass(codes, 4, ts, amount, cat, n_cat, ch, n_ch, starts, day, 2)
    codes[3] = 0
    cat[2] = n_cat
    with pytest.raises(ValueError, match="cat codes"):
        kern.profile_pass(codes, 4, ts, amount, cat, n_cat, ch, n_ch, starts, day, 2)
    with pytest.raises(ValueError, match="same length"):
        kern.profile_pass(codes, 4, ts[:-1], amount, cat, n_cat, ch, n_ch, starts, day, 2)


@pytest.mark.parametrize("n, n_groups, n_types", [(0, 0, 2), (0, 3, 2), (1, 1, 1), (4000, 300, 4), (4000, 5000, 9)])
def test_event_pass_matches_reference(backend, n, n_groups, n_types):
    rng = np.random.default_rng(n + n_types)
    codes = rng.integers(0, max(n_groups, 1), size=n).astype(np.int64)
    ts = rng.integers(-(10**12), 10**12, size=n).astype(np.int64)
    ts[: n // 2] = ts[0] if n else 0  # many ties
    etype = rng.integers(-1, n_types, size=n).astype(np.int32)
    rc, rl = reference.event_pass(codes, n_groups, ts, etype, n_types)
    for n_threads in (1, 2, 3):
        gc, gl = KERNELS[backend].event_pass(codes, n_groups, ts, etype, n_types, n_threads)
        np.testing.assert_array_equal(gc, rc)
        np.testing.assert_array_equal(gl, rl)
    with pytest.raises(ValueError):
        KERNELS[backend].event_pass(np.array([0, 5]), 3, np.zeros(2, np.int64), np.zeros(2, np.int32), 1, 1)


# ------------------------------------------------------------- scoring kernel
def score_params(rng, d, m=9):
    knots = np.sort(rng.normal(size=(d, m)).round(1), axis=1)  # rounded: runs of equal knots (ties)
    knots[0] = 0.0  # one constant grid
    return dict(
        log1p=rng.integers(0, 2, d).astype(np.int8),
        fill=rng.normal(size=d),
        lo=np.where(rng.random(d) < 0.5, -np.inf, -1.0),
        hi=np.where(rng.random(d) < 0.5, np.inf, 1.5),
        quantile=rng.integers(0, 2, d).astype(np.int8),
        knots=knots,
        center=rng.normal(size=d),
        scale=rng.uniform(0.5, 2, size=d),
        weight=rng.uniform(0, 2, size=d),
    )


BUCKET = (np.log(1.01 / 0.99), 1e-9, float(np.ceil(np.log(1e-9) / np.log(1.01 / 0.99))))


def run_score(mod, cols, masks, p, clip, n_threads=2):
    X = np.full((cols[0].shape[0] if cols else 0, len(cols)), -7, dtype=np.float32)
    bad = mod.score_columns(cols, masks, p["log1p"], p["fill"], p["lo"], p["hi"], p["quantile"], p["knots"],
                            p["center"], p["scale"], p["weight"], clip, BUCKET, X, n_threads)  # fmt: skip
    return X, bad


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("clip", [np.inf, 2.0])
def test_score_columns_matches_reference(backend, n, clip):
    rng = np.random.default_rng(n)
    d = 6
    cols = [rng.normal(size=n) * 10.0 ** rng.integers(-3, 4) for _ in range(d)]
    cols[1] = np.full(n, 3.0)  # constant column
    cols[2] = np.round(cols[2])  # ties
    masks = [np.empty(0, np.uint8) if j % 2 else (rng.random(n) < 0.3).astype(np.uint8) for j in range(d)]
    p = score_params(rng, d)
    rX, rbad = run_score(reference, cols, masks, p, clip)
    for nt in (1, 2, 3):
        kX, kbad = run_score(KERNELS[backend], cols, masks, p, clip, nt)
        assert kbad == rbad == -1
        np.testing.assert_allclose(kX, rX, rtol=1e-6, atol=1e-6)


def test_score_columns_adversarial(backend):
    """NaN / inf (reported, first row), nulls over NaN (not reported), huge values, all-null column."""
    big = np.array([1e308, -1e308, 0.0, np.nan, 5.0, np.inf])
    cols = [big, np.array([np.nan, 1.0, 2.0, 3.0, 4.0, 5.0]), np.zeros(6)]
    masks = [np.empty(0, np.uint8), np.array([1, 0, 0, 0, 0, 0], np.uint8), np.ones(6, np.uint8)]
    p = score_params(np.random.default_rng(1), 3)
    rX, rbad = run_score(reference, cols, masks, p, 5.0)
    kX, kbad = run_score(KERNELS[backend], cols, masks, p, 5.0)
    assert rbad == kbad == 3  # the masked NaN in row 0 of column 1 is a null, not an error
    np.testing.assert_allclose(kX, rX, rtol=1e-6, atol=1e-6)
    assert np.isfinite(kX).all()


def test_score_columns_bad_inputs(backend):
    p = score_params(np.random.default_rng(2), 2)
    X = np.empty((3, 2), np.float32)
    args = [p[k] for k in ("log1p", "fill", "lo", "hi", "quantile", "knots", "center", "scale", "weight")]
    with pytest.raises(ValueError, match="columns"):
        KERNELS[backend].score_columns([np.zeros(3)], [np.empty(0, np.uint8)], *args, 1.0, BUCKET, X, 1)
    with pytest.raises(ValueError, match="shape"):
        KERNELS[backend].score_columns([np.zeros(3), np.zeros(4)], [np.empty(0, np.uint8)] * 2, *args, 1.0, BUCKET, X)
    with pytest.raises(ValueError, match="float32"):
        KERNELS[backend].score_columns([np.zeros(3)] * 2, [np.empty(0, np.uint8)] * 2, *args, 1.0, BUCKET, X.astype(float))


def test_quantile_rank_ties_and_bounds():
    k = np.array([0.0, 1.0, 1.0, 1.0, 2.0])
    r = reference.quantile_rank(np.array([-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0]), k)
    np.testing.assert_allclose(r, [0.0, 0.0, 0.125, 0.5, 0.875, 1.0, 1.0])


def test_score_columns_quantile_tables_match_the_searches(backend):
    """Realistic grids (bucket coordinates of the data, with ties): the kernels' rank tables == binary searches."""
    rng = np.random.default_rng(11)
    n, d = 3000, 3
    cols = [rng.lognormal(2, 2, n), np.round(rng.normal(0, 50, n)), np.where(rng.random(n) < 0.6, 0.0, rng.random(n))]
    knots = np.vstack([
        np.quantile(reference.bucket_coords(c, *BUCKET), np.linspace(0, 1, 33), method="lower") for c in cols
    ])  # fmt: skip
    p = score_params(rng, d)
    p.update(quantile=np.ones(d, np.int8), knots=knots, log1p=np.zeros(d, np.int8), lo=np.full(d, -np.inf),
             hi=np.full(d, np.inf), center=np.zeros(d), scale=np.ones(d), weight=np.ones(d))  # fmt: skip
    masks = [np.empty(0, np.uint8)] * d
    rX, _ = run_score(reference, cols, masks, p, np.inf)
    kX, _ = run_score(KERNELS[backend], cols, masks, p, np.inf)
    np.testing.assert_allclose(kX, rX, rtol=1e-6, atol=1e-6)
    assert len(np.unique(rX[:, 0])) > 20  # the interior of the tables is exercised, not only 0 / 1
    assert len(np.unique(rX[cols[2] == 0.0, 2])) == 1  # the tied zeros share one score


# ------------------------------------------------------------ sessions (web funnel)
def _session_inputs(rng, n, n_groups, span):
    codes = rng.integers(0, max(n_groups, 1), size=n).astype(np.int64)
    ts = rng.integers(-span, span, size=n).astype(np.int64)
    return codes, ts


@pytest.mark.parametrize("n, n_groups, gap", [(0, 0, 10), (0, 3, 10), (1, 1, 0), (4000, 300, 10**6),
                                              (4000, 5000, 10**6), (3000, 2, 0), (3000, 40, 10**9)])  # fmt: skip
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_session_count_matches_reference(backend, n, n_groups, gap, n_threads):
    rng = np.random.default_rng(n + n_groups)
    codes, ts = _session_inputs(rng, n, n_groups, 10**9)
    ref = reference.session_count(codes, n_groups, ts, gap)
    got = KERNELS[backend].session_count(codes, n_groups, ts, gap, n_threads)
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.int64 and got.shape == (n_groups,)


def test_session_count_adversarial(backend):
    """Ties, duplicates, a step exactly at the gap, unsorted rows, int64 extremes (no overflow), empty groups."""
    big = np.iinfo(np.int64)
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3], dtype=np.int64)
    ts = np.array([30, 0, 10, 10, 5, 5, 5, big.min, big.max, -1, 1, 0], dtype=np.int64)
    got = KERNELS[backend].session_count(codes, 5, ts, 10, 2)
    ref = reference.session_count(codes, 5, ts, 10)
    np.testing.assert_array_equal(got, ref)
    # 0, 10, 10, 30: the step of exactly 10 stays in the session, 20 starts one; min..max: two sessions
    assert ref.tolist() == [2, 1, 2, 1, 0]


@pytest.mark.parametrize("block_rows", [1, 5, 333])
def test_session_count_in_blocks_matches_reference(block_rows):
    if "cython" not in KERNELS:
        pytest.skip("no compiled Cython kernels")
    rng = np.random.default_rng(block_rows)
    codes, ts = _session_inputs(rng, 5000, 700, 10**6)
    ref = reference.session_count(codes, 700, ts, 1000)
    np.testing.assert_array_equal(KERNELS["cython"].session_count(codes, 700, ts, 1000, 2, block_rows=block_rows),
                                  ref)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-(2**63), 2**63 - 1)), max_size=40),
       st.integers(0, 2**62))  # fmt: skip
def test_session_count_hypothesis(rows, gap):
    codes = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    ref = reference.session_count(codes, 5, ts, gap)
    for backend in KERNELS:
        np.testing.assert_array_equal(KERNELS[backend].session_count(codes, 5, ts, gap, 2), ref)


def test_session_count_bad_codes(backend):
    with pytest.raises(ValueError, match="outside"):
        KERNELS[backend].session_count(np.array([0, 3], np.int64), 3, np.array([1, 2], np.int64), 5, 1)


# ------------------------------------------------------------------ quantile sketch
SKETCH_LG = float(np.log(1.005 / 0.995))  # QuantileSketch's default alpha = 0.005


def _sketch_span(min_value=1e-9):
    lo = int(np.ceil(np.log(min_value) / SKETCH_LG))
    hi = int(np.ceil(np.log(np.finfo(np.float64).max) / SKETCH_LG)) + 1
    return lo, hi - lo + 1


def check_sketch(backend, v, min_value=1e-9, width=None):
    lo, w = _sketch_span(min_value)
    w = w if width is None else width
    v = np.ascontiguousarray(v, dtype=np.float64)
    pr, nr = np.zeros(w, np.int64), np.zeros(w, np.int64)
    ref = reference.sketch_summary(v, SKETCH_LG, lo, min_value, pr, nr)
    pg, ng = np.zeros(w, np.int64), np.zeros(w, np.int64)
    got = KERNELS[backend].sketch_summary(v, SKETCH_LG, lo, min_value, pg, ng, 2)
    assert len(got) == 10
    for a, b in zip(got, ref):  # the same bits: a sequential sum and the C library's log everywhere
        assert np.array_equal(np.float64(a), np.float64(b)), (got, ref)
    np.testing.assert_array_equal(pg, pr)
    np.testing.assert_array_equal(ng, nr)
    mag = np.abs(v[np.isfinite(v) & (np.abs(v) >= min_value)])
    kr, kg = np.empty(mag.size, np.int64), np.empty(mag.size, np.int64)
    reference.sketch_keys(mag, SKETCH_LG, kr)
    KERNELS[backend].sketch_keys(mag, SKETCH_LG, kg, 2)
    np.testing.assert_array_equal(kg, kr)


@pytest.mark.parametrize("n", [0, 1, 2, 1000])
def test_sketch_summary_matches_reference(backend, n):
    rng = np.random.default_rng(n)
    v = rng.lognormal(3.0, 2.0, size=n) * rng.choice([-1.0, 1.0], size=n)
    check_sketch(backend, v)


def test_sketch_summary_adversarial(backend):
    g = np.exp(SKETCH_LG)
    at_edges = np.concatenate([g ** np.arange(-50, 50, dtype=np.float64), np.nextafter(g ** np.arange(-5, 5.0), 0),
                               np.nextafter(g ** np.arange(-5, 5.0), np.inf)])  # fmt: skip
    cases = [
        np.array([np.nan, np.inf, -np.inf]),  # nothing finite
        np.array([np.nan, 3.0, np.inf, 3.0]),  # the shift is the first finite value
        np.full(50, 7.25),  # constant
        np.repeat([1.0, 2.0, 2.0, 1e6], 5),  # ties and duplicates
        np.array([0.0, -0.0, 1e-12, -1e-12, 5e-324, 1e-9, -1e-9]),  # the zero bucket and its edge
        np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 1e300, 1e-300]),  # huge and tiny
        1e12 + np.arange(100, dtype=np.float64) * 0.25,  # a large offset: the shifted moments stay exact
        at_edges, -at_edges,  # values at and beside the bucket boundaries
    ]
    for v in cases:
        check_sketch(backend, v)
    check_sketch(backend, np.array([1e-5, 1.0, 1e5, -1e5]), width=40)  # keys beyond the histogram clamp to its ends


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=40))
def test_sketch_summary_hypothesis(values):
    for backend in KERNELS:
        check_sketch(backend, np.array(values, dtype=np.float64))


def test_sketch_family_is_dispatched():
    from segone._backend import get_kernels

    for name in ("cython", "numba"):
        assert get_kernels(name, "sketch").sketch_summary is KERNELS[name].sketch_summary


# ------------------------------------------------------------------ tracking: radix argsort
def check_radix(backend, keys, dt=np.int32):
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    n = keys.size
    ref_keys, ref_order = reference.radix_argsort(keys, np.empty(n, dt), np.empty(n, dt))
    got_keys, got_order = KERNELS[backend].radix_argsort(keys, np.empty(n, dt), np.empty(n, dt), 2)
    assert got_order.dtype == dt
    np.testing.assert_array_equal(got_keys, ref_keys)
    np.testing.assert_array_equal(got_order, ref_order)  # stable: ties keep their input order


@pytest.mark.parametrize("n", [0, 1, 2, 1000, 70_000])
def test_radix_argsort_matches_reference(backend, n):
    rng = np.random.default_rng(n)
    check_radix(backend, rng.integers(-(2**63), 2**63 - 1, size=n, dtype=np.int64))
    check_radix(backend, rng.integers(0, 1000, size=n), dt=np.int64)  # small keys, many ties


def test_radix_argsort_adversarial(backend):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    cases = [
        [lo, hi, 0, -1, 1, lo + 1, hi - 1],  # the extremes and the sign flip
        [5] * 40,  # one key: no digit pass at all
        [3, 1, 2, 1, 3, 2, 1],  # duplicates: a stable order
        np.arange(3000),  # sorted
        np.arange(3000)[::-1] - 1500,  # reversed, across zero
        10**15 + np.random.default_rng(1).permutation(5000) * 2048,  # a large offset; the low digit constant
        [2**11 - 1, 2**11, 2**22, -(2**22), 2**33 + 1, -(2**55)],  # values at digit boundaries
    ]
    for keys in cases:
        check_radix(backend, keys)
        check_radix(backend, keys, dt=np.int64)


@given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=60))
def test_radix_argsort_hypothesis(keys):
    for backend in KERNELS:
        check_radix(backend, keys)


def test_track_family_is_dispatched():
    from segone._backend import get_kernels

    for name in ("cython", "numba"):
        assert get_kernels(name, "track").radix_argsort is KERNELS[name].radix_argsort


# ------------------------------------------------------------------ tracking: the merge of two runs
def merge_inputs(rng, n_p, n_n, k=4, universe=None, orders=True, spend=True, dt=np.int32, nan_share=0.1):
    universe = max(n_p + n_n, 1) * 2 if universe is None else universe
    P = np.sort(rng.choice(universe, size=n_p, replace=False)).astype(np.int64) - universe // 3
    N = np.sort(rng.choice(universe, size=n_n, replace=False)).astype(np.int64) - universe // 3
    ps, ns = rng.integers(0, k, size=n_p).astype(np.int64), rng.integers(0, k + 1, size=n_n).astype(np.int64)
    op = rng.permutation(n_p).astype(dt) if orders and n_p else np.empty(0, np.int64)
    on = rng.permutation(n_n).astype(dt) if orders and n_n else np.empty(0, np.int64)

    def values(n):
        v = rng.lognormal(2.0, 1.5, size=n)
        v[rng.random(n) < nan_share] = np.nan
        return v

    sp, sn = (values(n_p), values(n_n)) if spend else (np.empty(0), np.empty(0))
    pk, nk = np.unique(ps), np.unique(ns)
    lp = np.full(int(pk.max()) + 1 if pk.size else 1, pk.size, np.int64)
    lp[pk] = np.arange(pk.size)
    ln = np.full(int(nk.max()) + 1 if nk.size else 1, nk.size, np.int64)
    ln[nk] = np.arange(nk.size)
    return P, N, op, on, ps, ns, sp, sn, lp, ln, (pk.size + 1, nk.size + 1), spend


def check_merge(backend, inputs):
    P, N, op, on, ps, ns, sp, sn, lp, ln, shape, spend = inputs
    L = P.size + N.size

    def run(mod):
        out = (np.empty(L, np.int64), np.empty(L, np.int32), np.empty(L, np.int32), np.empty(L, np.int8),
               np.empty(L if spend else 0), np.zeros(shape, np.int64), np.zeros(shape))  # fmt: skip
        u = mod.merge_moves(P, N, op, on, ps, ns, sp, sn, lp, ln, *out, **({} if mod is reference else {"n_threads": 2}))
        return u, out

    u_ref, ref = run(reference)
    u, got = run(KERNELS[backend])
    assert u == u_ref
    if u < 0:
        return u
    for a, b in zip(got[:5], ref[:5]):
        np.testing.assert_array_equal(a[:u], b[:u])  # NaN spend compares equal
    np.testing.assert_array_equal(got[5], ref[5])
    assert np.array_equal(got[6], ref[6])  # the spend sums in id order: the same bits
    return u


@pytest.mark.parametrize("n_p, n_n", [(0, 0), (1, 0), (0, 1), (1, 1), (300, 200), (5000, 7000)])
@pytest.mark.parametrize("orders, spend", [(True, True), (False, True), (True, False)])
def test_merge_moves_matches_reference(backend, n_p, n_n, orders, spend):
    rng = np.random.default_rng(n_p * 31 + n_n)
    check_merge(backend, merge_inputs(rng, n_p, n_n, orders=orders, spend=spend))
    check_merge(backend, merge_inputs(rng, n_p, n_n, orders=orders, spend=spend, dt=np.int64))


def test_merge_moves_adversarial(backend):
    rng = np.random.default_rng(5)
    # the same customers in both runs (all stay or move), disjoint runs (all new or gone), one segment, all NaN
    same = merge_inputs(rng, 400, 0, k=1)
    P = same[0]
    check_merge(backend, (P, P.copy(), *same[2:4], same[4], np.zeros(400, np.int64), same[6], same[6].copy(),
                          same[8], np.array([0], np.int64), (2, 2), True))  # fmt: skip
    check_merge(backend, merge_inputs(rng, 300, 300, universe=600, nan_share=1.0))
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    ext = merge_inputs(rng, 3, 3)
    check_merge(backend, (np.array([lo, 0, hi]), np.array([lo, 1, hi - 1]), *ext[2:]))  # the int64 extremes
    huge = merge_inputs(rng, 50, 50, nan_share=0.0)  # huge spend: the sums overflow to inf alike
    check_merge(backend, (*huge[:6], huge[6] * 1e304, huge[7] * 1e304, *huge[8:]))
    # a duplicated id: -1 for the previous run, -2 for the new one, nothing written
    dup = merge_inputs(rng, 5, 5, orders=False)
    P2 = dup[0].copy()
    P2[3] = P2[2]
    assert check_merge(backend, (P2, *dup[1:])) == -1
    N2 = dup[1].copy()
    N2[1] = N2[0]
    assert check_merge(backend, (dup[0], N2, *dup[2:])) == -2


def test_merge_moves_family_is_dispatched():
    from segone._backend import get_kernels

    for name in ("cython", "numba"):
        assert get_kernels(name, "track").merge_moves is KERNELS[name].merge_moves


# -- the Poisson bootstrap of campaign effects ---------------------------------------------------------------------
def _boot_case(rng, n, n_cells=7, n_vcells=3, q=4):
    h = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64).view(np.uint64)
    return h, rng.integers(0, n_cells, n), rng.integers(0, n_vcells, n), rng.normal(size=(n, q)), n_cells, n_vcells


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("n", [0, 1, 2, 997])
def test_bootstrap_sums_match_reference(backend, n):
    from segone.kernels import reference as ref

    kern = KERNELS[backend]
    rng = np.random.default_rng(n)
    h, c, v, vals, nc, nv = _boot_case(rng, n)
    for seed, threads in ((0, 1), (12345, 2), (2**40, 3)):
        want = ref.bootstrap_sums(h, c, v, vals, seed, 17, nc, nv)
        got = kern.bootstrap_sums(h, c, v, vals, seed, 17, nc, nv, n_threads=threads)
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)  # the same additions in the same order: the same bits


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_bootstrap_sums_adversarial(backend):
    from segone.kernels import reference as ref

    kern = KERNELS[backend]
    h = np.array([0, 2**64 - 1, 0, 2**63, 1, 1], dtype=np.uint64)  # extreme and duplicated hashes
    c = np.array([0, 0, 0, 1, 1, 1])
    v = np.array([0, 1, 0, 1, 0, 1])
    vals = np.array([[1e300, -1e300], [np.nan, 1.0], [5e-324, 0.0], [-0.0, 2.0], [1e15 + 1, 3.0], [7.0, 7.0]])
    want = ref.bootstrap_sums(h, c, v, vals, 3, 40, 2, 2)
    got = kern.bootstrap_sums(h, c, v, vals, 3, 40, 2, 2)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    # the weights are Poisson(1): mean and variance 1 over many ids
    w = ref.poisson1_weights(np.arange(200_000, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), 0, 0)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02
    with pytest.raises(ValueError, match="cell"):
        kern.bootstrap_sums(h, c + 5, v, vals, 3, 4, 2, 2)


def test_effects_family_is_dispatched():
    from segone._backend import resolve_backend

    assert resolve_backend("auto", family="effects") in ("cython", "numba")
