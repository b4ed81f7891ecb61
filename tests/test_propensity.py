"""segone.propensity: the mergeable penalised logistic regression against scikit-learn, skips, separation."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from segone._state import merge_all
from segone.errors import ModelFormatError, ParameterError
from segone.propensity import CalibrationState, LogisticFit, NewtonState, ScalerState


def _data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, 5.0, 0.0, 100.0]
    y = (X[:, 0] + 0.1 * X[:, 1] + rng.normal(size=n) > 0.5).astype(float)
    return X, y


@pytest.mark.parametrize("lam", [0.05, 1.0, 20.0])
def test_fit_equals_sklearn_logistic_regression_with_c_one_over_lambda(lam):
    X, y = _data()
    m = LogisticFit(lam).fit_arrays(X, y)
    Z = (X - m.mean_[0]) / m.scale_[0]  # the same standardised features; C = 1 / lam, intercept not penalised
    sk = LogisticRegression(C=1.0 / lam, tol=1e-12, max_iter=10_000).fit(Z, y)
    assert m.converged_[0]
    np.testing.assert_allclose(m.coef_[0, 1:], sk.coef_[0], atol=1e-6)
    assert m.coef_[0, 0] == pytest.approx(sk.intercept_[0], abs=1e-6)
    np.testing.assert_allclose(m.predict_proba(0, X), sk.predict_proba(Z)[:, 1], atol=1e-7)
    b0, w = m.raw_coef(0)  # the same model on the raw features
    np.testing.assert_allclose(b0 + X @ w, m.decision_function(0, X), atol=1e-8)


def test_groups_are_independent_models_and_the_intercept_calibrates_in_the_large():
    X, y = _data(3000, seed=1)
    groups = np.arange(3000) % 3
    m = LogisticFit(0.5).fit_arrays(X, y, groups)
    for g in range(3):
        one = LogisticFit(0.5).fit_arrays(X[groups == g], y[groups == g])
        np.testing.assert_allclose(m.coef_[g], one.coef_[0], atol=1e-9)
        assert m.predict_proba(g, X[groups == g]).mean() == pytest.approx(y[groups == g].mean(), abs=1e-9)


def test_pieces_give_the_same_fit_as_the_whole():
    X, y = _data(1500, seed=2)
    cuts = [0, 7, 7, 600, 1499, 1500]
    pieces = [[(0, X[a:b], y[a:b])] for a, b in zip(cuts, cuts[1:])]
    scaler = merge_all([ScalerState.of(p, n_groups=1, n_features=4) for p in pieces], 3)

    def newton(beta, mean, scale, groups):
        return merge_all([NewtonState.of(p, beta=beta, mean=mean, scale=scale, groups=groups) for p in pieces], 2)

    m = LogisticFit(1.0).fit_passes(scaler, newton)
    whole = LogisticFit(1.0).fit_arrays(X, y)
    np.testing.assert_allclose(m.coef_, whole.coef_, atol=1e-9)


def test_separable_data_stays_finite_and_converges():
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(-2, 0.1, (50, 1)), rng.normal(2, 0.1, (50, 1))]
    y = np.r_[np.zeros(50), np.ones(50)]
    m = LogisticFit(0.01).fit_arrays(X, y)
    assert m.converged_[0] and np.isfinite(m.coef_).all()
    sk = LogisticRegression(C=100.0, tol=1e-12, max_iter=10_000).fit((X - m.mean_[0]) / m.scale_[0], y)
    np.testing.assert_allclose(m.coef_[0, 1:], sk.coef_[0], atol=1e-5)


def test_groups_without_buyers_or_with_only_buyers_are_skipped_with_the_reason():
    X, y = _data(300, seed=4)
    groups = np.repeat([0, 1, 2], 100)
    y = y.copy()
    y[groups == 1] = 0.0
    y[groups == 2] = 1.0
    m = LogisticFit(1.0, group_names=["toys", "garden", "books"]).fit_arrays(X, y, groups)
    assert set(m.skipped_) == {1, 2}
    assert "garden: no buyers in the training window" in m.skipped_[1]
    assert "books: every one of the 100 customers" in m.skipped_[2]
    assert np.isnan(m.predict_proba(1, X[:3])).all() and np.isfinite(m.predict_proba(0, X[:3])).all()
    info = m.info()
    assert info["groups"]["garden"]["skipped"] and info["groups"]["toys"]["converged"]
    again = LogisticFit.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_array_equal(again.coef_, m.coef_)
    assert again.skipped_ == m.skipped_


def test_bad_parameters_and_models_are_refused():
    with pytest.raises(ParameterError, match="lam must be > 0"):
        LogisticFit(0.0)
    with pytest.raises(ModelFormatError):
        LogisticFit.from_dict({"kind": "other"})


def test_reliability_table_counts_and_ece():
    p = np.array([0.05, 0.05, 0.95, 0.55])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    table, ece = CalibrationState.of([(0, p, y)], n_groups=1).finish()
    assert table[0, 0, 0] == 2 and table[0, 9, 0] == 1 and table[0, 5, 2] == 1.0
    assert ece[0] == pytest.approx((0.1 + 0.05 + 0.45) / 4)


def test_prepared_float32_design_gives_the_float64_fit_to_float32_precision():
    from segone.propensity import standardized_blocks

    X, y = _data(3000, seed=5)
    groups = np.arange(3000) % 2
    blocks = [(g, X[groups == g], y[groups == g]) for g in range(2)]
    exact = LogisticFit(1.0).fit_arrays(X, y, groups)
    scaler = ScalerState.of(blocks, n_groups=2, n_features=4)
    mean, scale = scaler.finish()
    prepared = standardized_blocks(blocks, mean=mean, scale=scale)
    assert prepared[0][1].dtype == np.float32 and (prepared[0][1][:, 0] == 1).all()
    m = LogisticFit(1.0).fit_passes(scaler, lambda b, mu, s, g: NewtonState.of(prepared, beta=b, mean=mu, scale=s,
                                                                                groups=g, prepared=True))  # fmt: skip
    np.testing.assert_allclose(m.coef_, exact.coef_, atol=1e-5)
