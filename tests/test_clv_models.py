"""The other purchase models of segone.clv: Pareto/NBD, MBG/NBD (continuous time) and BG/BB (discrete time).

Parity with lifetimes 0.11.3 (a test dependency, imported directly) on the
data it ships: CDNOW for ``ParetoNBDFitter`` and ``ModifiedBetaGeoFitter``,
the donations panel for ``BetaGeoBetaBinomFitter``; parameters to 1e-3
relative (lifetimes' Pareto/NBD optimum is Nelder-Mead's, ~1e-4 from the
maximum), predictions to 1e-6 given the same parameters.  Then the
histogram fits, the penalizer's meaning, adversarial inputs, and the
BG/NBD hypergeometric term at frequency 0 with ``a + b < 1``.
"""

import warnings

import lifetimes
import numpy as np
import pandas as pd
import pytest
from lifetimes.datasets import load_cdnow_summary, load_donations

from segone.clv import (
    PURCHASE_MODELS,
    BetaGeo,
    BetaGeoBetaBinom,
    ConvergenceError,
    GammaGamma,
    ModifiedBetaGeo,
    OpportunityHistogram,
    ParetoNBD,
    PatternHistogram,
    sample_bgnbd,
    sample_gamma_gamma,
    segment_intervals,
)
from segone.errors import DataError, ParameterError, SegoneError

PAIRS = {ParetoNBD: lifetimes.ParetoNBDFitter, ModifiedBetaGeo: lifetimes.ModifiedBetaGeoFitter}


@pytest.fixture(scope="module")
def cdnow():
    c = load_cdnow_summary(index_col=[0])
    return c["frequency"].to_numpy(float), c["recency"].to_numpy(float), c["T"].to_numpy(float)


@pytest.fixture(scope="module")
def donations():
    d = load_donations()
    return tuple(d[k].to_numpy() for k in ("frequency", "recency", "periods", "weights"))


def _lifetimes_fit(cls, *args, penalizer=0.0, **kw):
    np.random.seed(0)  # ParetoNBDFitter starts Nelder-Mead from a random point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(penalizer).fit(*args, **kw)


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


# -- parity with lifetimes -------------------------------------------------------------------------
@pytest.mark.parametrize("model", [ParetoNBD, ModifiedBetaGeo])
@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_continuous_models_match_lifetimes_on_cdnow(cdnow, model, penalizer):
    x, tx, T = cdnow
    peer = _lifetimes_fit(PAIRS[model], x, tx, T, penalizer=penalizer)
    ours = model(penalizer).fit(x, tx, T)
    ref = {k: float(v) for k, v in peer.params_.items()}
    assert list(ours.params_) == list(ref)
    for k in ref:
        assert ours.params_[k] == pytest.approx(ref[k], rel=1e-3), k
    if model is ModifiedBetaGeo:  # lifetimes' gradient-based optimum: ours agrees much closer, and so do the SEs
        for k in ref:
            assert ours.params_[k] == pytest.approx(ref[k], rel=1e-5), k
            assert ours.standard_errors_[k] == pytest.approx(float(peer.standard_errors_[k]), rel=1e-4), k
    # the predictions, given lifetimes' parameters
    same = model.from_params(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in (1.0, 39.0, 100.0):
            want = np.asarray(peer.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T))
            assert _rel(same.expected_purchases(t, x, tx, T), want) < 1e-6
        assert _rel(same.p_alive(x, tx, T), np.asarray(peer.conditional_probability_alive(x, tx, T))) < 1e-6
        t = np.array([1.0, 39.0, 100.0])
        assert _rel(same.expected_purchases_new(t), np.asarray(peer.expected_number_of_purchases_up_to_time(t))) < 1e-6


@pytest.mark.parametrize("penalizer", [0.0, 0.01])
def test_bgbb_matches_lifetimes_on_donations(donations, penalizer):
    x, tx, n, w = donations
    peer = _lifetimes_fit(lifetimes.BetaGeoBetaBinomFitter, x, tx, n, weights=w, penalizer=penalizer)
    ours = BetaGeoBetaBinom(penalizer).fit(x, tx, n, weights=w)
    ref = {k: float(v) for k, v in peer.params_.items()}
    assert list(ours.params_) == ["alpha", "beta", "gamma", "delta"]
    for k in ref:
        assert ours.params_[k] == pytest.approx(ref[k], rel=1e-3), k
        assert ours.standard_errors_[k] == pytest.approx(float(peer.standard_errors_[k]), rel=1e-3), k
    same = BetaGeoBetaBinom.from_params(ref)
    for m in (1, 5, 10):
        want = np.asarray(peer.conditional_expected_number_of_purchases_up_to_time(m, x, tx, n))
        assert _rel(same.expected_purchases(m, x, tx, n), want) < 1e-6
        assert _rel(same.p_alive(x, tx, n, m), np.asarray(peer.conditional_probability_alive(m, x, tx, n))) < 1e-6
    # eq. 8 of Fader, Hardie & Shang (2010), against lifetimes' distribution of X(n): its mean
    dist = peer.expected_number_of_transactions_in_first_n_periods(6)
    mean = float((dist.index.to_numpy() * dist["model"].to_numpy()).sum() / w.sum())
    assert same.expected_purchases_new(6) == pytest.approx(mean, rel=1e-6)


@pytest.mark.parametrize("model", [ParetoNBD, ModifiedBetaGeo])
def test_clv_with_each_purchase_model_matches_lifetimes(cdnow, model):
    x, tx, T = cdnow
    m = np.where(x > 0, 20.0 + 3.0 * (np.arange(x.size) % 7), 0.0)
    peer = _lifetimes_fit(PAIRS[model], x, tx, T)
    gg_params = {"p": 6.25, "q": 3.74, "v": 15.44}
    lgg = lifetimes.GammaGammaFitter()
    lgg.params_ = pd.Series(gg_params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S = pd.Series
        want = np.asarray(lgg.customer_lifetime_value(peer, S(x), S(tx), S(T), S(m), time=6, discount_rate=0.01,
                                                      freq="W"))  # fmt: skip
    ours = GammaGamma.from_params(gg_params).customer_lifetime_value(
        model.from_params({k: float(v) for k, v in peer.params_.items()}), x, tx, T, m, time=6, freq="W")
    assert _rel(ours, want) < 1e-6


def test_purchase_models_registry():
    assert PURCHASE_MODELS == {"bgnbd": BetaGeo, "pareto": ParetoNBD, "mbgnbd": ModifiedBetaGeo}
    with pytest.raises(ParameterError, match="ParetoNBD"):
        GammaGamma.from_params({"p": 6.0, "q": 4.0, "v": 15.0}).customer_lifetime_value(
            BetaGeoBetaBinom.from_params({"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "delta": 1.0}), [1], [2], [3], [10])


# -- histograms and weights ---------------------------------------------------------------------
@pytest.mark.parametrize("model", [ParetoNBD, ModifiedBetaGeo])
def test_histogram_fit_equals_row_fit(model):
    x, tx, T = sample_bgnbd(3000, r=0.3, alpha=10.0, a=0.7, b=2.5, T=np.arange(3000) % 40 + 10.0, seed=5)
    tx = np.round(tx, 1)
    rows = model().fit(x, tx, T)
    hist = PatternHistogram.of(x[:1000], tx[:1000], T[:1000]).merge(PatternHistogram.of(x[1000:], tx[1000:], T[1000:]))
    whole = model().fit_histogram(hist)
    assert whole.n_customers_ == rows.n_customers_ == 3000
    for k in rows.params_:
        assert whole.params_[k] == pytest.approx(rows.params_[k], rel=1e-9)
        assert whole.standard_errors_[k] == pytest.approx(rows.standard_errors_[k], rel=1e-6)
    assert whole.log_likelihood_ == pytest.approx(rows.log_likelihood_, rel=1e-12)
    with pytest.raises(ParameterError, match="PatternHistogram"):
        model().fit_histogram(OpportunityHistogram.of([1], [2], [3]))


def test_bgbb_histogram_fit_equals_weighted_fit(donations):
    x, tx, n, w = donations
    hist = OpportunityHistogram.empty()
    for i in range(x.size):  # one piece per pattern, expanded to customers
        hist = hist.merge(OpportunityHistogram.of(np.repeat(x[i], w[i]), np.repeat(tx[i], w[i]), np.repeat(n[i], w[i])))
    a = BetaGeoBetaBinom().fit_histogram(hist)
    b = BetaGeoBetaBinom().fit(x, tx, n, weights=w)
    assert a.n_customers_ == b.n_customers_ == int(w.sum())
    for k in a.params_:
        assert a.params_[k] == pytest.approx(b.params_[k], rel=1e-9)


# -- the penalizer ---------------------------------------------------------------------------
def test_pareto_penalizer_is_lifetimes_on_one_row_per_customer(cdnow):
    """penalizer * sum(theta^2) on the total NLL: the fit does not depend on how the customers are grouped."""
    x, tx, T = cdnow
    rows = ParetoNBD(0.5).fit(x, tx, T)
    u, c = np.unique(np.stack([x, tx, T]), axis=1, return_counts=True)
    grouped = ParetoNBD(0.5).fit(u[0], u[1], u[2], weights=c)
    for k in rows.params_:
        assert grouped.params_[k] == pytest.approx(rows.params_[k], rel=1e-6)
    peer = _lifetimes_fit(lifetimes.ParetoNBDFitter, x, tx, T, penalizer=0.5)
    for k in rows.params_:
        assert rows.params_[k] == pytest.approx(float(peer.params_[k]), rel=1e-3)
    plain = ParetoNBD().fit(x, tx, T)
    assert rows.params_ != plain.params_


def test_penalizer_shrinks_and_is_validated(cdnow):
    x, tx, T = cdnow
    free, pen = ModifiedBetaGeo().fit(x, tx, T), ModifiedBetaGeo(0.1).fit(x, tx, T)
    assert pen.params_["a"] < free.params_["a"] and pen.params_["b"] < free.params_["b"]
    for model in (ParetoNBD, ModifiedBetaGeo, BetaGeoBetaBinom):
        with pytest.raises(ParameterError, match="penalizer"):
            model(-1.0)


# -- adversarial inputs ------------------------------------------------------------------------
@pytest.mark.parametrize("model", [BetaGeo, ParetoNBD, ModifiedBetaGeo])
def test_degenerate_data_raise_a_segone_error_never_nan(model):
    with pytest.raises(DataError, match="one purchase pattern"):
        model().fit([2], [5.0], [10.0])
    with pytest.raises(DataError, match="no customers|repeat"):
        model().fit([0, 0, 0], [0.0, 0.0, 0.0], [5.0, 6.0, 7.0])
    # frequency 0 everywhere but one customer: no interior optimum, or a finite one
    x = np.zeros(500)
    x[0] = 3
    tx = np.zeros(500)
    tx[0] = 20.0
    T = 30.0 + np.arange(500) % 5
    try:
        fit = model().fit(x, tx, T)
    except ConvergenceError as exc:
        assert "penalizer" in str(exc)
    else:
        assert all(np.isfinite(v) and v > 0 for v in fit.params_.values())
        assert np.isfinite(fit.p_alive(x, tx, T)).all()
    # with a penalizer the fit is finite
    fit = model(0.1).fit(x, tx, T)
    assert all(np.isfinite(v) and v > 0 for v in fit.params_.values())


@pytest.mark.parametrize("model", [BetaGeo, ParetoNBD, ModifiedBetaGeo])
@pytest.mark.parametrize("params", ["fitted", "tiny", "huge"])
def test_predictions_stay_finite_for_extreme_histories(cdnow, model, params):
    x, tx, T = cdnow
    fit = model().fit(x, tx, T)
    p = dict(fit.params_)
    if params == "tiny":
        p = {k: v * 1e-4 for k, v in p.items()}
    elif params == "huge":
        p = {k: v * 1e4 for k, v in p.items()}
    m = model.from_params(p)
    fx = np.array([0, 1, 50, 500, 5000, 0, 300.0])
    ftx = np.array([0, 1e6, 10, 1e6 - 1, 9e5, 0, 1.0])
    fT = np.array([1e6, 1e6, 1e6, 1e6, 1e6, 1e-3, 1e6])
    try:
        pa = m.p_alive(fx, ftx, fT)
        e = m.expected_purchases(52.0, fx, ftx, fT)
    except DataError as exc:  # overflow is reported, never returned
        assert "not finite" in str(exc)
        return
    assert np.isfinite(pa).all() and ((pa >= 0) & (pa <= 1)).all()
    assert np.isfinite(e).all() and (e >= 0).all()


def test_pareto_large_frequencies_where_lifetimes_overflows():
    m = ParetoNBD.from_params({"r": 0.55, "alpha": 0.1, "s": 0.6, "beta": 50.0})
    x, tx, T = np.array([400.0, 800.0]), np.array([30.0, 35.0]), np.array([38.0, 38.0])
    pa = m.p_alive(x, tx, T)
    peer = lifetimes.ParetoNBDFitter()
    peer.params_ = pd.Series({"r": 0.55, "alpha": 0.1, "s": 0.6, "beta": 50.0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(peer.conditional_probability_alive(x, tx, T))
    assert not np.isfinite(theirs).all() or np.allclose(theirs, pa)  # lifetimes' 2F1 overflows here
    assert np.isfinite(pa).all() and (pa > 0).all() and (pa < 1).all()
    # the customer who bought 800 times and was last seen 3 periods ago is more likely alive than not,
    # and p_alive decreases with the time since the last purchase
    later = m.p_alive(x, tx - 20.0, T)
    assert (later < pa).all()


def test_bgnbd_numerator_at_frequency_zero_with_a_plus_b_below_one():
    """2F1(r, b; a + b - 1; z) < 0 there: its logarithm was NaN (DataError); the product is formed directly.

    Reference: without a repeat purchase a BG/NBD customer is alive, lambda | T ~ Gamma(r, alpha + T), p ~ Beta(a, b)
    and E[Y(t) | lambda, p] = (1 - exp(-lambda p t)) / p: one quadrature over p.
    """
    from scipy import integrate, stats

    r, al, a, b, T = 2.0, 1.0, 0.2, 0.5, 30.0
    m = BetaGeo.from_params({"r": r, "alpha": al, "a": a, "b": b})
    for t in (1.0, 10.0, 52.0):
        for age, got in ((T, m.expected_purchases(t, 0, 0.0, T)), (0.0, m.expected_purchases_new(t))):
            def integrand(p):
                return -np.expm1(r * np.log1p(-p * t / (al + age + p * t))) / p * stats.beta.pdf(p, a, b)

            want = integrate.quad(integrand, 0, 1, limit=200)[0]
            assert got == pytest.approx(want, rel=1e-7)
    # and the vectorised path (many customers, grouped by (t, frequency, T))
    x = np.zeros(2000)
    got = m.expected_purchases(10.0, x, x, np.full(2000, T))
    assert np.isfinite(got).all() and np.ptp(got) == 0


# -- BG/BB input checks ---------------------------------------------------------------------------
def test_bgbb_input_errors_name_the_column():
    with pytest.raises(DataError, match="frequency > recency"):
        BetaGeoBetaBinom().fit([2, 1], [1, 3], [6, 6])
    with pytest.raises(DataError, match="'recency'.*non-integer"):
        BetaGeoBetaBinom().fit([1, 1], [1.5, 3], [6, 6])
    with pytest.raises(DataError, match="recency > n_periods"):
        BetaGeoBetaBinom().fit([1, 1], [7, 3], [6, 6])
    with pytest.raises(DataError, match="same pattern"):
        BetaGeoBetaBinom().fit([1, 1], [3, 3], [6, 6])
    with pytest.raises(SegoneError, match="not fitted"):
        BetaGeoBetaBinom().p_alive(1, 2, 6)


# -- intervals of segment totals -------------------------------------------------------------------
def _sim(n, seed):
    rng = np.random.default_rng(seed)
    T = rng.integers(20, 53, n).astype(float)
    x, tx, T = sample_bgnbd(n, T=T, seed=rng, r=0.5, alpha=8.0, a=0.6, b=2.5)
    m = sample_gamma_gamma(x, p=6.0, q=4.0, v=15.0, seed=rng)
    return x, tx, T, m


def test_segment_intervals_totals_methods_and_errors():
    x, tx, T, m = _sim(3000, 1)
    seg = np.arange(x.size) % 3 - 1  # -1, 0, 1
    bg, gg = BetaGeo().fit(x, tx, T), GammaGamma().fit(x, m)
    out = segment_intervals(bg, x, tx, T, seg, gamma_gamma=gg, monetary_value=m, time=6, freq="W")
    assert out["segment"].tolist() == [-1, 0, 1] and out["n_customers"].tolist() == [1000] * 3
    # the totals are the sums of the per-customer predictions
    clv = gg.customer_lifetime_value(bg, x, tx, T, m, time=6, freq="W")
    ep = bg.expected_purchases(6 * 4.345, x, tx, T)
    np.testing.assert_allclose(out["clv"], np.bincount(seg + 1, clv), rtol=1e-10)
    np.testing.assert_allclose(out["expected_purchases"], np.bincount(seg + 1, ep), rtol=1e-10)
    for k in ("expected_purchases", "clv"):
        assert (out[f"{k}_low"] < out[k]).all() and (out[k] < out[f"{k}_high"]).all()
    # parameter draws give the same intervals within their Monte-Carlo error
    dr = segment_intervals(bg, x, tx, T, seg, gamma_gamma=gg, monetary_value=m, time=6, freq="W", method="draws",
                           n_draws=400, random_state=3)  # fmt: skip
    for k in ("expected_purchases", "clv"):
        width = out[f"{k}_high"] - out[f"{k}_low"]
        np.testing.assert_allclose(dr[f"{k}_low"], out[f"{k}_low"], atol=0.1 * width.max())
        np.testing.assert_allclose(dr[f"{k}_high"], out[f"{k}_high"], atol=0.1 * width.max())
    # a wider level, a wider interval; Pareto/NBD works the same way
    wide = segment_intervals(bg, x, tx, T, seg, time=6, freq="W", level=0.99)
    assert (wide["expected_purchases_low"] < out["expected_purchases_low"]).all()
    assert "clv" not in wide
    pn = segment_intervals(ParetoNBD().fit(x, tx, T), x, tx, T, seg, time=6, freq="W")
    assert (pn["expected_purchases_low"] < pn["expected_purchases"]).all()
    with pytest.raises(ParameterError, match="no parameter covariance"):
        segment_intervals(BetaGeo.from_params(bg.params_), x, tx, T, seg)
    with pytest.raises(ParameterError, match="level"):
        segment_intervals(bg, x, tx, T, seg, level=1.0)
    with pytest.raises(ParameterError, match="one value per customer"):
        segment_intervals(bg, x, tx, T, seg[:-1])


@pytest.mark.slow
def test_segment_intervals_cover_the_true_totals_at_the_nominal_rate():
    """300 data sets of 1500 customers from known parameters: the 90% intervals of the segment totals (expected
    purchases and CLV over 6 months, given each data set's histories) cover the totals computed with the true
    parameters in 90% of them, within 3 binomial standard deviations (sqrt(0.09 / 300) = 0.017)."""
    true_bg = BetaGeo.from_params({"r": 0.5, "alpha": 8.0, "a": 0.6, "b": 2.5})
    true_gg = GammaGamma.from_params({"p": 6.0, "q": 4.0, "v": 15.0})
    reps, hits = 300, np.zeros(4)
    for rep in range(reps):
        x, tx, T, m = _sim(1500, 100 + rep)
        seg = np.arange(x.size) % 2
        out = segment_intervals(BetaGeo().fit(x, tx, T), x, tx, T, seg, gamma_gamma=GammaGamma().fit(x, m),
                                monetary_value=m, time=6, freq="W")  # fmt: skip
        ep = np.bincount(seg, true_bg.expected_purchases(6 * 4.345, x, tx, T))
        clv = np.bincount(seg, true_gg.customer_lifetime_value(true_bg, x, tx, T, m, time=6, freq="W"))
        hits[:2] += (out["expected_purchases_low"] <= ep) & (ep <= out["expected_purchases_high"])
        hits[2:] += (out["clv_low"] <= clv) & (clv <= out["clv_high"])
    coverage = hits / reps
    assert (np.abs(coverage - 0.9) <= 3 * np.sqrt(0.09 / reps)).all(), coverage


@pytest.mark.parametrize("name", ["bgnbd", "pareto", "mbgnbd"])
def test_fit_value_and_value_piece_take_each_purchase_model(name):
    import pyarrow as pa

    from segone.clv import ValueState, fit_value, value_piece

    x, tx, T, m = _sim(2000, 4)
    table = pa.table({"frequency": x, "recency": tx, "T": T, "monetary_value": m})
    bg, gg, info = fit_value(ValueState.of(table), model=name, freq="W", horizon_months=6)
    assert type(bg) is PURCHASE_MODELS[name] and gg is not None, info
    assert info["purchase_model"] == name and info["bg_nbd"]["params"] == bg.params_
    out = value_piece(table, beta_geo=bg, gamma_gamma=gg, horizon_months=6, freq="W")
    np.testing.assert_allclose(out.column("p_alive").to_numpy(), bg.p_alive(x, tx, T), rtol=1e-12)
    np.testing.assert_allclose(out.column("clv").to_numpy(),
                               gg.customer_lifetime_value(bg, x, tx, T, m, time=6, freq="W"), rtol=1e-12)  # fmt: skip
    with pytest.raises(ParameterError, match="model='bgbb'"):
        fit_value(ValueState.of(table), model="bgbb")


@pytest.mark.parametrize("model", [BetaGeo, ModifiedBetaGeo])
def test_warm_start_on_a_coarse_histogram_changes_the_path_not_the_optimum(model, monkeypatch):
    x, tx, T, _ = _sim(4000, 9)
    tx = np.round(tx, 2)
    cold = model(0.01).fit(x, tx, T)
    monkeypatch.setattr(model, "_WARM_PATTERNS", 10)  # large data only, by default: here for 4000 customers
    calls = []
    real = model._warm_start

    def spy(self, *args):
        out = real(self, *args)
        calls.append(out)
        return out

    monkeypatch.setattr(model, "_warm_start", spy)
    warm = model(0.01).fit(x, tx, T)
    assert len(calls) == 1 and calls[0] is not None
    for k in cold.params_:
        assert warm.params_[k] == pytest.approx(cold.params_[k], rel=1e-8)
        assert warm.standard_errors_[k] == pytest.approx(cold.standard_errors_[k], rel=1e-6)
