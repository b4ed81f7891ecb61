"""BG/NBD + Gamma-Gamma customer value (segone.clv).

Reference data: the CDNOW 1/10 sample summary that the ``lifetimes`` package
ships (2357 customers, weeks).  Its CSV files are read straight from the
installed package folder, without importing lifetimes; the tests that call
lifetimes itself import it (a test dependency).  Predictions are also checked against
lifetimes' formulas transcribed independently below, and the fits against
the parameters Fader & Hardie published.
"""

import doctest
import importlib.util
import json
import math
import os
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special

import segone.clv as clv
from segone._state import merge_all
from segone.clv import (
    BetaGeo,
    ConvergenceError,
    GammaGamma,
    MonetaryHistogram,
    PatternHistogram,
    predict_value,
    sample_bgnbd,
    sample_gamma_gamma,
)
from segone.errors import (
    DataError,
    EmptyInputError,
    ModelFormatError,
    NotFittedError,
    ParameterError,
    SchemaError,
    SegoneError,
)

# lifetimes 0.11.3 on CDNOW (BetaGeoFitter().fit / GammaGammaFitter().fit, penalizer 0): its optimum is
# BFGS-approximate (tol 1e-7), hence the 1e-5 relative tolerance below.
LIFETIMES_BG = {"r": 0.242593, "alpha": 4.413532, "a": 0.792886, "b": 2.425752}
LIFETIMES_BG_SE = {"r": 0.012557, "alpha": 0.378221, "a": 0.185719, "b": 0.705345}
LIFETIMES_GG = {"p": 6.248802, "q": 3.744588, "v": 15.447748}
LIFETIMES_GG_SE = {"p": 1.189687, "q": 0.290166, "v": 4.159994}


# -- data ---------------------------------------------------------------------------
def _lifetimes_dataset(name):
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        pytest.skip("the CDNOW summary ships with the lifetimes package (pip install lifetimes)")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", name)
    if not os.path.exists(path):
        pytest.skip(f"{path} not found")
    return np.loadtxt(path, delimiter=",", skiprows=1)


@pytest.fixture(scope="module")
def cdnow():
    """(frequency, recency, T, monetary_value) of the 2357 CDNOW sample customers, in weeks."""
    a = _lifetimes_dataset("cdnow_customers_summary_with_transactions.csv")  # ID, x, t_x, T, zbar
    b = _lifetimes_dataset("cdnow_customers_summary.csv")  # ID, frequency, recency, T
    assert a.shape == (2357, 5) and np.array_equal(a[:, 1:4], b[:, 1:4])
    return a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy(), a[:, 4].copy()


@pytest.fixture(scope="module")
def weekly():
    """CDNOW-like synthetic customers (weeks, 2 decimals, CDNOW's parameters): needs no lifetimes."""
    rng = np.random.default_rng(2024)
    T = np.round(rng.uniform(27, 39, 2500), 2)
    x, tx, T = sample_bgnbd(2500, 0.24, 4.4, 0.79, 2.43, T, seed=2025)
    tx = np.minimum(np.round(tx, 2), T)
    m = np.round(sample_gamma_gamma(x, 6.25, 3.74, 15.44, seed=2026), 2)
    m[x > 0] = np.maximum(m[x > 0], 0.01)
    return x, tx, T, m


@pytest.fixture(scope="module")
def cdnow_fits(cdnow):
    x, tx, T, m = cdnow
    return BetaGeo().fit(x, tx, T), GammaGamma().fit(x, m)


# -- lifetimes' prediction formulas, transcribed (beta_geo_fitter.py, gamma_gamma_fitter.py, utils.py) --
def lt_expected(params, t, x, tx, T):
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    _a, _b, _c = r + x, b + x, a + b + x - 1
    _z = t / (alpha + T + t)
    ln_hyp = np.log(special.hyp2f1(_a, _b, _c, _z))
    alt = np.log(special.hyp2f1(_c - _a, _c - _b, _c, _z)) + (_c - _a - _b) * np.log(1 - _z)
    ln_hyp = np.where(np.isinf(ln_hyp), alt, ln_hyp)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T)))
    denom = 1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + tx)) ** (r + x)
    return first * second / denom


def lt_p_alive(params, x, tx, T):
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    log_div = (r + x) * np.log((alpha + T) / (alpha + tx)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, special.expit(-log_div))


def lt_expected_new(params, t):
    r, alpha, a, b = (params[k] for k in ("r", "alpha", "a", "b"))
    return (a + b - 1) / (a - 1) * (1 - special.hyp2f1(r, b, a + b - 1, t / (alpha + t)) * (alpha / (alpha + t)) ** r)


def lt_eov(gparams, x, m):
    p, q, v = (gparams[k] for k in ("p", "q", "v"))
    w = p * x / (p * x + q - 1)
    return (1 - w) * (v * p / (q - 1)) + w * m


def lt_clv(params, gparams, x, tx, T, m, time=12, discount_rate=0.01, freq="D"):
    m_adj = lt_eov(gparams, x, m)
    factor = {"W": 4.345, "M": 1.0, "D": 30, "H": 30 * 24}[freq]
    out = np.zeros(x.shape)
    for i in np.arange(1, time + 1) * factor:
        n = lt_expected(params, i, x, tx, T) - lt_expected(params, i - factor, x, tx, T)
        out += m_adj * n / (1 + discount_rate) ** (i / factor)
    return out


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# -- CDNOW: published parameters ---------------------------------------------------------
def test_cdnow_bgnbd_matches_published(cdnow_fits):
    bg, _ = cdnow_fits
    # Fader, Hardie & Lee (2005), "Counting your customers the easy way", and lifetimes' docs
    assert {k: round(v, 3) for k, v in bg.params_.items()} == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert round(bg.log_likelihood_, 1) == -9582.4  # the published log-likelihood
    assert bg.n_customers_ == 2357
    for k in LIFETIMES_BG:
        assert bg.params_[k] == pytest.approx(LIFETIMES_BG[k], rel=1e-5)
        assert bg.standard_errors_[k] == pytest.approx(LIFETIMES_BG_SE[k], rel=1e-4)


def test_cdnow_gamma_gamma_matches_published(cdnow_fits):
    _, gg = cdnow_fits
    # Fader & Hardie's note 025 reports p=6.25, q=3.74, gamma=15.44; the exact MLE is 6.2488, 3.7446,
    # 15.4477 (lifetimes agrees), so the published values hold to 2 decimals with gamma truncated:
    # compare within 0.01.
    for k, pub in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert abs(gg.params_[k] - pub) < 0.01, (k, gg.params_[k])
        assert gg.params_[k] == pytest.approx(LIFETIMES_GG[k], rel=1e-5)
        assert gg.standard_errors_[k] == pytest.approx(LIFETIMES_GG_SE[k], rel=1e-4)
    assert gg.n_customers_ == 946
    assert gg.n_excluded_zero_frequency_ == 2357 - 946
    assert gg.n_excluded_nonpositive_monetary_ == 0
    assert round(gg.log_likelihood_, 1) == -4055.9


# -- predictions: lifetimes' definitions --------------------------------------------------
@pytest.mark.parametrize("dataset", ["cdnow", "weekly"])
def test_predictions_match_lifetimes_formulas(dataset, request):
    x, tx, T, m = request.getfixturevalue(dataset)
    bg, gg = BetaGeo().fit(x, tx, T), GammaGamma().fit(x, m)
    for t in (1, 10, 52):
        assert _rel(bg.expected_purchases(t, x, tx, T), lt_expected(bg.params_, t, x, tx, T)) < 1e-9
    assert _rel(bg.p_alive(x, tx, T), lt_p_alive(bg.params_, x, tx, T)) < 1e-12
    ts = np.array([1.0, 10.0, 52.0, 104.0])
    assert _rel(bg.expected_purchases_new(ts), lt_expected_new(bg.params_, ts)) < 1e-9
    assert _rel(gg.expected_order_value(x, m), lt_eov(gg.params_, x, m)) < 1e-12
    for freq in ("W", "D", "M", "H"):
        got = gg.customer_lifetime_value(bg, x, tx, T, m, time=12, discount_rate=0.01, freq=freq)
        assert _rel(got, lt_clv(bg.params_, gg.params_, x, tx, T, m, freq=freq)) < 1e-9
    got = gg.customer_lifetime_value(bg, x, tx, T, m, time=6, discount_rate=0.05, freq="W")
    assert _rel(got, lt_clv(bg.params_, gg.params_, x, tx, T, m, time=6, discount_rate=0.05, freq="W")) < 1e-9


def test_predictions_match_lifetimes_itself(cdnow):
    import lifetimes
    import pandas as pd

    x, tx, T, m = cdnow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lbg = lifetimes.BetaGeoFitter().fit(x, tx, T)
        lgg = lifetimes.GammaGammaFitter().fit(x[x > 0], m[x > 0])
    bg = BetaGeo.from_params(lbg.params_.to_dict())
    gg = GammaGamma.from_params(lgg.params_.to_dict())
    for t in (1, 10, 52):
        want = lbg.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T)
        assert _rel(bg.expected_purchases(t, x, tx, T), want) < 1e-6
    assert _rel(bg.p_alive(x, tx, T), lbg.conditional_probability_alive(x, tx, T)) < 1e-6
    assert _rel(bg.expected_purchases_new(np.array([1.0, 39.0])), lbg.expected_number_of_purchases_up_to_time(
        np.array([1.0, 39.0]))) < 1e-6  # fmt: skip
    assert _rel(gg.expected_order_value(x, m), lgg.conditional_expected_average_profit(x, m)) < 1e-6
    s = [pd.Series(v) for v in (x, tx, T, m)]
    for freq in ("W", "D"):
        want = lgg.customer_lifetime_value(lbg, *s, time=12, discount_rate=0.01, freq=freq).to_numpy()
        assert _rel(gg.customer_lifetime_value(bg, x, tx, T, m, time=12, freq=freq), want) < 1e-6
    # and our fits land on lifetimes' (BFGS-approximate) optimum
    ours = BetaGeo().fit(x, tx, T)
    for k, v in lbg.params_.items():
        assert ours.params_[k] == pytest.approx(v, rel=1e-5)
        assert ours.standard_errors_[k] == pytest.approx(lbg.standard_errors_[k], rel=1e-4)


@pytest.mark.parametrize("penalizer", [0.01, 0.1])
def test_penalizer_is_lifetimes_penalizer(cdnow, penalizer):
    import lifetimes
    x, tx, T, m = cdnow
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lbg = lifetimes.BetaGeoFitter(penalizer_coef=penalizer).fit(x, tx, T)
        lgg = lifetimes.GammaGammaFitter(penalizer_coef=penalizer).fit(x[x > 0], m[x > 0])
    bg = BetaGeo(penalizer).fit(x, tx, T)
    gg = GammaGamma(penalizer).fit(x, m)
    for ours, theirs in ((bg, lbg), (gg, lgg)):
        for k, v in theirs.params_.items():
            assert ours.params_[k] == pytest.approx(v, rel=1e-4)
            assert ours.standard_errors_[k] == pytest.approx(theirs.standard_errors_[k], rel=1e-3)


def test_penalizer_pinned_values(cdnow):
    # lifetimes 0.11.3 with penalizer_coef=0.1, so that the check also runs without lifetimes
    x, tx, T, m = cdnow
    bg = BetaGeo(0.1).fit(x, tx, T)
    want = {"r": 0.23094701, "alpha": 4.21928752, "a": 0.12865474, "b": 0.2671268}
    for k, v in want.items():
        assert bg.params_[k] == pytest.approx(v, rel=1e-4)
    # the penalty is on alpha in units where max(T) is 1: the same fit in days gives the same model
    bg_days = BetaGeo(0.1).fit(x, tx * 7, T * 7)
    assert bg_days.params_["alpha"] == pytest.approx(7 * bg.params_["alpha"], rel=1e-8)
    assert bg_days.params_["r"] == pytest.approx(bg.params_["r"], rel=1e-8)


# -- likelihood: analytic derivatives ----------------------------------------------------
def _fd_grad(fun, u, h=1e-6):
    g = np.zeros_like(u)
    for i in range(u.size):
        e = np.zeros_like(u)
        e[i] = h
        g[i] = (fun(u + e)[0] - fun(u - e)[0]) / (2 * h)
    return g


def _fd_hess(fun, u, h=1e-5):
    H = np.zeros((u.size, u.size))
    for i in range(u.size):
        e = np.zeros_like(u)
        e[i] = h
        H[:, i] = (fun(u + e)[1] - fun(u - e)[1]) / (2 * h)
    return H


@pytest.mark.parametrize("penalizer", [0.0, 0.3])
def test_bgnbd_gradient_and_hessian_vs_finite_differences(weekly, penalizer):
    x, tx, T, _ = weekly
    s = 1 / T.max()
    lik = clv._BGNBDLikelihood(x, tx * s, T * s, np.ones(x.size), penalizer)
    rng = np.random.default_rng(0)
    for u in [np.log([0.24, 4.4 * s, 0.79, 2.4])] + [rng.normal(0, 1, 4) for _ in range(3)]:
        f, g = lik.value_grad(u)
        assert np.allclose(g, _fd_grad(lik.value_grad, u), rtol=1e-6, atol=1e-8)
        H = lik.hessian(u)
        assert np.allclose(H, H.T)
        assert np.allclose(H, _fd_hess(lik.value_grad, u), rtol=1e-5, atol=1e-7)
        # the value is lifetimes' objective: mean weighted NLL + penalizer * sum(params**2)
        r, al, a, b = np.exp(u)
        A1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(al)
        A2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
        A3 = -(r + x) * np.log(al + T * s)
        A4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(al + tx * s)
        ll = A1 + A2 + np.log(np.exp(A3) + np.exp(A4) * (x > 0))
        assert f == pytest.approx(-ll.mean() + penalizer * np.sum(np.exp(u) ** 2), rel=1e-12)


@pytest.mark.parametrize("penalizer", [0.0, 0.3])
def test_gamma_gamma_gradient_and_hessian_vs_finite_differences(weekly, penalizer):
    x, _, _, m = weekly
    use = x > 0
    x, m = x[use], m[use]
    w = np.random.default_rng(1).integers(1, 4, x.size).astype(float)
    lik = clv._GGLikelihood(x, m / 30.0, w, penalizer, pen_scale=30.0)
    for u in (np.log([6.2, 3.7, 15.4 / 30]), np.array([0.3, -0.2, 1.1]), np.array([1.5, 0.7, -0.4])):
        f, g = lik.value_grad(u)
        assert np.allclose(g, _fd_grad(lik.value_grad, u), rtol=1e-6, atol=1e-8)
        assert np.allclose(lik.hessian(u), _fd_hess(lik.value_grad, u), rtol=1e-5, atol=1e-7)
        p, q, v = np.exp(u)
        mm = m / 30.0
        ll = (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q) + q * np.log(v)
              + (p * x - 1) * np.log(mm) + p * x * np.log(x) - (p * x + q) * np.log(x * mm + v))  # fmt: skip
        pen = penalizer * (p**2 + q**2 + (30 * v) ** 2)
        assert f == pytest.approx(-(w @ ll) / w.sum() + pen, rel=1e-12)


# -- mergeable histograms -------------------------------------------------------------
_row = st.tuples(st.integers(0, 4), st.integers(0, 12), st.integers(0, 12))


def _rows_to_arrays(rows):
    x = np.array([r[0] for r in rows], dtype=float)
    T = np.array([max(r[1], r[2]) for r in rows], dtype=float)
    tx = np.array([min(r[1], r[2]) if r[0] else 0 for r in rows], dtype=float)
    return x, tx, T


@given(st.lists(_row, max_size=60), st.lists(st.integers(0, 60), max_size=4), st.sampled_from([1.0, 0.25]))
def test_pattern_histogram_merge_equals_whole(rows, cuts, unit):
    x, tx, T = _rows_to_arrays(rows)
    tx, T = tx * unit, T * unit  # unit 0.25: non-integer ages, the rank-coded grouping
    bounds = [0] + sorted(min(c, len(rows)) for c in cuts) + [len(rows)]
    pieces = [PatternHistogram.of(x[a:b], tx[a:b], T[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    whole = PatternHistogram.of(x, tx, T)
    merged = merge_all(pieces)
    assert merged == whole
    assert merge_all(pieces[::-1]) == whole  # order-independent
    if len(pieces) >= 3:
        a, b, c = pieces[:3]
        assert a.merge(b).merge(c) == a.merge(b.merge(c))  # associative
    assert whole.merge(PatternHistogram.empty()) == whole
    assert PatternHistogram.empty().merge(whole) == whole
    fx, ftx, fT, counts = whole.finish()
    assert counts.sum() == len(rows)
    order = np.lexsort((fT, ftx, fx))
    assert np.array_equal(order, np.arange(order.size))  # sorted lexicographically ...
    assert len(set(zip(fx, ftx, fT))) == fx.size  # ... and distinct
    for xi, ti, Ti, c in zip(fx, ftx, fT, counts):
        assert c == np.sum((x == xi) & (tx == ti) & (T == Ti))
    d = whole.to_dict()
    assert PatternHistogram.from_dict(json.loads(json.dumps(d))) == whole


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([-2.0, 0.0, 0.5, 10.25, 33.3])), max_size=40),
       st.integers(0, 40))  # fmt: skip
def test_monetary_histogram_merge_equals_whole(rows, cut):
    x = np.array([r[0] for r in rows], dtype=float)
    m = np.array([r[1] for r in rows], dtype=float)
    a, b = MonetaryHistogram.of(x[:cut], m[:cut]), MonetaryHistogram.of(x[cut:], m[cut:])
    whole = MonetaryHistogram.of(x, m)
    assert a.merge(b) == whole == b.merge(a)
    assert whole.n_zero_frequency == np.sum(x == 0)
    assert whole.n_nonpositive_monetary == np.sum((x > 0) & (m <= 0))
    assert whole.n_customers == np.sum((x > 0) & (m > 0))
    assert MonetaryHistogram.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole


def test_histogram_float_values_weights_and_table_pieces(weekly):
    x, tx, T, _ = weekly  # non-integer weeks: the rank-coded path
    h = PatternHistogram.of(x, tx, T)
    assert h.n_customers == x.size and len(h) == len(set(zip(x, tx, T)))
    w = np.random.default_rng(0).integers(0, 3, x.size)
    hw = PatternHistogram.of(x, tx, T, weights=w)
    rep = np.repeat(np.arange(x.size), w)
    assert hw == PatternHistogram.of(x[rep], tx[rep], T[rep])
    table = pa.table({"frequency": x, "recency": tx, "T": pa.array(T, mask=np.arange(x.size) % 10 == 0)})
    ht = PatternHistogram.of(table)
    keep = np.arange(x.size) % 10 != 0
    assert ht.n_without_purchase == int((~keep).sum())
    assert ht.finish()[3].sum() == keep.sum()
    assert np.array_equal(ht.finish()[3], PatternHistogram.of(x[keep], tx[keep], T[keep]).finish()[3])


def test_group_paths_agree():
    rng = np.random.default_rng(3)
    n = 5000
    cols_small = [rng.integers(0, 5, n) * 1.0, rng.integers(0, 30, n) * 1.0, rng.integers(0, 30, n) + 0.5]
    cols_big = [rng.integers(0, 5, n).astype(float), rng.integers(0, 10**6, n).astype(float), rng.random(n).round(2)]
    for cols in (cols_small, cols_big):
        w = rng.integers(1, 5, n)
        for weights in (None, w):
            u1, t1, i1 = clv._group(cols, weights, inverse=True)
            u2, t2, i2 = clv._group_lexsort(cols, weights, inverse=True)
            assert all(np.array_equal(a, b) for a, b in zip(u1, u2))
            assert np.array_equal(t1, t2) and np.array_equal(i1, i2)
            assert all(np.array_equal(u[i1], c) for u, c in zip(u1, cols))


def test_state_from_dict_rejects_bad_data():
    d = PatternHistogram.of([0, 1], [0, 2], [3, 4]).to_dict()
    with pytest.raises(ModelFormatError):
        PatternHistogram.from_dict({**d, "kind": "gg_patterns"})
    bad = json.loads(json.dumps(d))
    bad["counts"]["data"] = [1, 0]
    with pytest.raises(ModelFormatError):
        PatternHistogram.from_dict(bad)
    with pytest.raises(ParameterError):
        PatternHistogram.empty().merge(MonetaryHistogram.empty())


# -- fitting ---------------------------------------------------------------------------
def test_fit_on_histogram_equals_fit_on_rows(weekly):
    x, tx, T, m = weekly
    rows = BetaGeo().fit(x, tx, T)
    cut = [0, 500, 501, 1800, x.size]
    pieces = [PatternHistogram.of(x[a:b], tx[a:b], T[a:b]) for a, b in zip(cut[:-1], cut[1:])]
    hist = BetaGeo().fit_histogram(merge_all(pieces))
    assert hist.params_ == rows.params_
    assert hist.standard_errors_ == rows.standard_errors_
    assert hist.log_likelihood_ == rows.log_likelihood_
    # weights are counts: duplicated rows == weight 2
    w = np.random.default_rng(0).integers(1, 3, x.size)
    rep = np.repeat(np.arange(x.size), w)
    a, b = BetaGeo().fit(x, tx, T, weights=w), BetaGeo().fit(x[rep], tx[rep], T[rep])
    assert a.params_ == b.params_
    g_rows = GammaGamma().fit(x, m)
    merged = MonetaryHistogram.of(x[:900], m[:900]).merge(MonetaryHistogram.of(x[900:], m[900:]))
    g_hist = GammaGamma().fit_histogram(merged)
    for k in g_rows.params_:
        assert g_hist.params_[k] == pytest.approx(g_rows.params_[k], rel=1e-9)
    assert g_hist.n_excluded_zero_frequency_ == g_rows.n_excluded_zero_frequency_


def test_synthetic_recovery_within_three_standard_errors():
    true = {"r": 0.5, "alpha": 20.0, "a": 0.7, "b": 3.0}
    rng = np.random.default_rng(11)
    T = rng.uniform(30, 400, 200_000)
    x, tx, T = sample_bgnbd(200_000, T=T, seed=12, **true)
    bg = BetaGeo().fit(x, tx, T)
    for k, v in true.items():
        assert abs(bg.params_[k] - v) < 3 * bg.standard_errors_[k], (k, bg.params_[k], bg.standard_errors_[k])
    # Gamma-Gamma on the same customers
    gtrue = {"p": 6.0, "q": 4.0, "v": 15.0}
    m = sample_gamma_gamma(x, seed=13, **gtrue)
    gg = GammaGamma().fit(x, m)
    for k, v in gtrue.items():
        assert abs(gg.params_[k] - v) < 3 * gg.standard_errors_[k], (k, gg.params_[k], gg.standard_errors_[k])


def test_sampler_matches_model_expectation():
    # E[X(T)] of a new customer: the unconditional expectation of the model
    params = {"r": 0.8, "alpha": 10.0, "a": 0.6, "b": 2.0}
    x, _, _ = sample_bgnbd(100_000, T=30.0, seed=5, **params)
    want = BetaGeo.from_params(params).expected_purchases_new(30.0)
    assert x.mean() == pytest.approx(want, rel=0.03)


# -- defined behaviour for bad input -------------------------------------------------------
@pytest.mark.parametrize(
    "col, values, match",
    [
        ("frequency", [0, 1, np.nan, 2], r"'frequency': 1 NaN or infinite.*rows: 2"),
        ("recency", [0, np.inf, 1, 2], r"'recency': 1 NaN or infinite.*rows: 1"),
        ("T", [5, 5, -1, 5], r"'T' has 1 negative.*rows: 2"),
        ("frequency", [0, 1, -1, 2], r"'frequency' has 1 negative"),
        ("frequency", [0, 1.5, 1, 2], r"'frequency' has 1 non-integer.*1.5"),
        ("recency", [0, 1, 9, 2], r"recency > T.*rows: 2"),
        ("recency", [3, 1, 1, 2], r"frequency 0 but recency != 0.*rows: 0"),
    ],
)
def test_bad_btyd_values_raise_data_error(col, values, match):
    data = {"frequency": [0, 1, 1, 2], "recency": [0, 1, 1, 2], "T": [5, 5, 5, 5]}
    data[col] = values
    with pytest.raises(DataError, match=match):
        BetaGeo().fit(data["frequency"], data["recency"], data["T"])
    bg = BetaGeo.from_params({"r": 0.2, "alpha": 4, "a": 0.8, "b": 2.4})
    with pytest.raises(DataError, match=match):
        bg.expected_purchases(10, data["frequency"], data["recency"], data["T"])
    with pytest.raises(DataError, match=match):
        PatternHistogram.of(data["frequency"], data["recency"], data["T"])


def test_degenerate_bgnbd_inputs():
    with pytest.raises(EmptyInputError, match="no customers"):
        BetaGeo().fit([], [], [])
    with pytest.raises(DataError, match="1 customer"):
        BetaGeo().fit([2], [3], [5])
    with pytest.raises(DataError, match="all 4 customers have the same pattern"):
        BetaGeo().fit([2] * 4, [3] * 4, [5] * 4)
    with pytest.raises(EmptyInputError, match=r"repeat purchase \(frequency > 0\)"):
        BetaGeo().fit([0, 0, 0], [0, 0, 0], [3, 4, 5])
    with pytest.raises(ConvergenceError, match="penalizer") as exc:  # two patterns: no interior optimum
        BetaGeo().fit([0] * 10 + [1] * 10, [0] * 10 + [5] * 10, [10] * 20)
    assert isinstance(exc.value, SegoneError)
    with pytest.raises(EmptyInputError, match="no customers"):
        BetaGeo().fit([1, 2], [1, 2], [3, 3], weights=[0, 0])
    with pytest.raises(EmptyInputError):
        BetaGeo().fit_histogram(PatternHistogram.empty())
    with pytest.raises(DataError, match="every T is 0"):
        BetaGeo().fit([0, 1, 2], [0, 0, 0], [0, 0, 0])
    with pytest.raises(DataError, match="'weights' has 1 negative"):
        BetaGeo().fit([0, 1], [0, 1], [2, 2], weights=[1, -1])
    with pytest.raises(DataError, match="'weights' has 1 non-integer.*count customers"):
        PatternHistogram.of([0, 1], [0, 1], [2, 2], weights=[1, 0.5])
    with pytest.raises(ParameterError, match="same length"):
        PatternHistogram.of([0, 1], [0, 1], [2, 2, 3])


def test_degenerate_gamma_gamma_inputs():
    msg = "1 customers with frequency 0, 2 repeat customers with monetary_value <= 0"
    with pytest.raises(EmptyInputError, match=msg):
        GammaGamma().fit([0, 2, 3], [0.0, 0.0, -1.0])
    with pytest.raises(DataError, match="same monetary_value"):
        GammaGamma().fit([1, 2, 3], [10.0, 10.0, 10.0])
    with pytest.raises(DataError, match="'monetary_value': 1 NaN"):
        GammaGamma().fit([1, 2, 3], [10.0, np.nan, 10.0])
    with pytest.raises(ConvergenceError, match="penalizer"):
        GammaGamma().fit([1, 2, 3], [10.0, 20.0, 15.0])


def test_nonpositive_monetary_values_are_excluded_and_counted(weekly):
    x, _, _, m = weekly
    m2 = m.copy()
    rep = np.flatnonzero(x > 0)
    m2[rep[:5]] = 0.0
    m2[rep[5:8]] = -3.0
    gg = GammaGamma().fit(x, m2)
    ref = GammaGamma().fit(x[rep[8:]], m[rep[8:]])
    assert gg.n_excluded_nonpositive_monetary_ == 8 and gg.n_customers_ == rep.size - 8
    assert gg.params_ == pytest.approx(ref.params_, rel=1e-12)
    # predictions still cover them (lifetimes' formula, shrunk towards the population mean)
    eov = gg.expected_order_value(x[rep[:8]], m2[rep[:8]])
    assert np.all(np.isfinite(eov)) and np.all(eov < gg.population_mean())


def test_parameter_and_state_errors():
    with pytest.raises(ParameterError):
        BetaGeo(penalizer=-1)
    with pytest.raises(ParameterError):
        GammaGamma(penalizer=float("nan"))
    with pytest.raises(NotFittedError):
        BetaGeo().p_alive(1, 2, 3)
    with pytest.raises(NotFittedError):
        GammaGamma().expected_order_value(1, 2.0)
    with pytest.raises(ParameterError, match="keys r, alpha, a, b"):
        BetaGeo.from_params({"r": 1})
    with pytest.raises(ParameterError):
        BetaGeo.from_params({"r": 1, "alpha": -1, "a": 1, "b": 1})
    bg = BetaGeo.from_params({"r": 0.2, "alpha": 4, "a": 0.8, "b": 2.4})
    gg = GammaGamma.from_params({"p": 6, "q": 3.7, "v": 15})
    with pytest.raises(ParameterError, match="freq"):
        gg.customer_lifetime_value(bg, [1], [1], [2], [3.0], freq="Y")
    with pytest.raises(ParameterError):
        gg.customer_lifetime_value(bg, [1], [1], [2], [3.0], time=1.5)
    with pytest.raises(ParameterError, match="BetaGeo"):
        gg.customer_lifetime_value(object(), [1], [1], [2], [3.0])
    with pytest.raises(ParameterError, match="same length"):
        BetaGeo().fit([1, 2], [1], [2, 2])
    with pytest.raises(DataError, match="q = 0.8 <= 1"):
        GammaGamma.from_params({"p": 6, "q": 0.8, "v": 15}).expected_order_value([1], [3.0])
    with pytest.raises(SchemaError):
        BetaGeo().fit(["a", "b"], [1, 2], [2, 2])
    singular = BetaGeo.from_params({"r": 0.2, "alpha": 4, "a": 1.0, "b": 2.4})  # (a + b + x - 1) / (a - 1)
    with pytest.raises(DataError, match="not finite for 2 .frequency, T. pairs"):
        singular.expected_purchases(10, [1, 2], [2, 3], [5, 5])
    with pytest.raises(DataError, match="not finite"):
        gg.customer_lifetime_value(singular, [1, 2], [2, 3], [5, 5], [3.0, 4.0])
    assert singular.p_alive([1, 2], [2, 3], [5, 5]).shape == (2,)


def test_scalar_and_broadcast_predictions():
    bg = BetaGeo.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
    one = bg.expected_purchases(39, 2, 30.43, 38.86)
    assert isinstance(one, float) and one == pytest.approx(1.226, abs=5e-4)  # Fader, Hardie & Lee (2005)
    grid = bg.expected_purchases(np.array([[1.0], [10.0]]), [0, 2, 2], [0, 30.43, 10], 38.86)
    assert grid.shape == (2, 3)
    assert grid[1, 1] == pytest.approx(bg.expected_purchases(10, 2, 30.43, 38.86))
    assert bg.expected_purchases(0, [0, 3], [0, 2], [5, 5]).tolist() == [0.0, 0.0]
    big = np.tile([0.0, 2.0, 5.0], 700)  # the deduplicated path (> 1024 rows)
    got = bg.expected_purchases(10.0, big, np.minimum(big * 3, 30), np.full(big.size, 35.0))
    assert _rel(got[:3], lt_expected(bg.params_, 10.0, big[:3], np.minimum(big[:3] * 3, 30), 35.0)) < 1e-12


# -- predict_value -------------------------------------------------------------------
def _profile_table(n=20_000, seed=0, days=730):
    rng = np.random.default_rng(seed)
    T = rng.integers(1, days + 1, n).astype(float)
    x, tx, T = sample_bgnbd(n, 0.27, 42.0, 0.48, 2.1, T, seed=seed + 1)
    m = sample_gamma_gamma(x, 6.0, 4.0, 15.0, seed=seed + 2)
    return pa.table({"customer_id": np.arange(n), "frequency": x, "recency": np.floor(tx), "T": T, "monetary_value": m})


def test_predict_value_matches_the_models():
    table = _profile_table()
    mask = np.zeros(table.num_rows, bool)
    mask[::97] = True  # customers without a purchase: T null (as build_profiles writes CRM-only customers)
    f = table.column("frequency").to_numpy().copy()
    r = table.column("recency").to_numpy().copy()
    mv = table.column("monetary_value").to_numpy().copy()
    f[mask], r[mask], mv[mask] = 0, 0, 0
    table = table.set_column(1, "frequency", pa.array(f)).set_column(2, "recency", pa.array(r))
    table = table.set_column(3, "T", pa.array(table.column("T").to_numpy(), mask=mask))
    table = table.set_column(4, "monetary_value", pa.array(mv))
    out, info = predict_value(table, horizon_months=6, discount_rate=0.02, id_column="customer_id")
    assert out.column_names == ["customer_id", "expected_purchases", "p_alive", "expected_order_value", "clv"]
    assert out.num_rows == table.num_rows
    assert out.column("customer_id").equals(table.column("customer_id"))
    for name in out.column_names[1:]:
        assert out.column(name).null_count == mask.sum()
        assert np.all(np.asarray(out.column(name).is_null()) == mask)
    json.dumps(info)  # JSON-safe
    assert info["skipped"] == {"rows_without_purchase": int(mask.sum()), "gamma_gamma": None}
    keep = ~mask
    x, tx, T, m = f[keep], r[keep], table.column("T").to_numpy(zero_copy_only=False)[keep], mv[keep]
    bg = BetaGeo().fit(x, tx, T)
    gg = GammaGamma().fit(x, m)
    assert info["bg_nbd"]["params"] == bg.params_ and info["gamma_gamma"]["params"] == gg.params_
    assert info["bg_nbd"]["n_customers"] == keep.sum()
    got = {k: out.column(k).drop_null().to_numpy() for k in out.column_names[1:]}
    assert _rel(got["expected_purchases"], bg.expected_purchases(180.0, x, tx, T)) < 1e-12
    assert _rel(got["p_alive"], bg.p_alive(x, tx, T)) < 1e-15
    assert _rel(got["expected_order_value"], gg.expected_order_value(x, m)) < 1e-15
    assert _rel(got["clv"], lt_clv(bg.params_, gg.params_, x, tx, T, m, time=6, discount_rate=0.02, freq="D")) < 1e-9


def test_predict_value_skips_gamma_gamma_with_a_reason():
    table = _profile_table(5000)
    out, info = predict_value(table.drop_columns(["monetary_value"]))
    assert info["gamma_gamma"] is None and "no monetary_value column" in info["skipped"]["gamma_gamma"]
    assert out.column("clv").null_count == out.num_rows == out.column("expected_order_value").null_count
    assert out.column("p_alive").null_count == 0
    zero = table.set_column(4, "monetary_value", pa.array(np.zeros(table.num_rows)))
    out, info = predict_value(zero)
    assert "no repeat customer with a positive monetary value" in info["skipped"]["gamma_gamma"]
    assert out.column("clv").null_count == out.num_rows


def test_predict_value_skips_gamma_gamma_when_q_below_one(cdnow):
    x, tx, T, m = cdnow
    table = pa.table({"frequency": x, "recency": tx, "T": T, "monetary_value": m})
    out, info = predict_value(table, freq="W", gg_penalizer=0.1)  # pulls q to 0.34 (as in lifetimes)
    assert "q = 0.3359 <= 1" in info["skipped"]["gamma_gamma"]
    assert info["gamma_gamma"]["params"]["q"] < 1
    assert out.column("clv").null_count == out.num_rows
    out, info = predict_value(table, freq="W")
    bg, gg = BetaGeo().fit(x, tx, T), GammaGamma().fit(x, m)
    assert _rel(out.column("clv").to_numpy(), gg.customer_lifetime_value(bg, x, tx, T, m, freq="W")) < 1e-12


def test_predict_value_bad_input():
    table = _profile_table(2000)
    with pytest.raises(SchemaError, match="no 'T' column"):
        predict_value(table.drop_columns(["T"]))
    with pytest.raises(DataError, match="'frequency' has 1 null"):
        predict_value(table.set_column(1, "frequency", pa.array([None] + table.column("frequency").to_pylist()[1:])))
    with pytest.raises(DataError, match="'monetary_value': 1 NaN"):
        mv = table.column("monetary_value").to_numpy().copy()
        mv[7] = np.nan
        predict_value(table.set_column(4, "monetary_value", pa.array(mv)))
    with pytest.raises(ParameterError):
        predict_value({"frequency": [1]})
    with pytest.raises(ParameterError):
        predict_value(table, horizon_months=-1)
    with pytest.raises(SchemaError):
        predict_value(table, id_column="nope")
    with pytest.raises(ParameterError):
        predict_value(table.drop_columns(["monetary_value"]), gg_penalizer=-1)
    no_purchase = table.set_column(3, "T", pa.nulls(table.num_rows, pa.float64()))
    with pytest.raises(EmptyInputError, match="no customers"):
        predict_value(no_purchase)


def test_predict_value_on_build_profiles_output(small_synth):
    import segone

    profiles = segone.build_profiles(small_synth.transactions, attributes=small_synth.customers)
    out, info = predict_value(profiles, gg_penalizer=1e-3)
    assert out.num_rows == profiles.num_rows
    assert info["bg_nbd"]["n_customers"] == profiles.num_rows - profiles.column("T").null_count
    assert np.all(np.asarray(out.column("p_alive").drop_null()) <= 1)


def test_doc_examples():
    result = doctest.testmod(clv, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_log_likelihood_in_data_units(weekly):
    x, tx, T, _ = weekly
    bg = BetaGeo().fit(x, tx, T)
    r, al, a, b = (bg.params_[k] for k in ("r", "alpha", "a", "b"))
    A1 = special.gammaln(r + x) - special.gammaln(r) + r * math.log(al)
    A2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    A3 = -(r + x) * np.log(al + T)
    A4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(al + tx)
    ll = np.sum(A1 + A2 + np.log(np.exp(A3) + np.exp(A4) * (x > 0)))
    assert bg.log_likelihood_ == pytest.approx(ll, rel=1e-12)
