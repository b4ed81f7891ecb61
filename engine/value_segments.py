"""Customer value per segment: the purchase model and Gamma-Gamma fitted per segment, shrunk toward the pooled fit.

``segone run --value-by segment`` fits the purchase and spend models on each
segment's own customers (a mergeable :class:`SegmentValueState`: one pattern
histogram per segment), then shrinks every segment's parameters toward the
fit on all customers.  The shrinkage is the random-effects (empirical Bayes)
model of meta-analysis, applied to each log-parameter:

* the segment's estimate ``y_s = log(theta_s)`` has variance ``v_s`` (its
  standard error on the log scale, from the fit's Hessian);
* the segments' true log-parameters are normal around the pooled fit's
  ``mu = log(theta_pooled)`` with a between-segment variance ``tau^2``,
  estimated by DerSimonian and Laird's moment estimator;
* the shrunk value is the posterior mean ``mu + T (T + V_s)^-1 (y_s - mu)``
  with ``T = diag(tau^2)`` and ``V_s`` the covariance of the segment's
  log-estimates (one parameter alone: ``(y_s / v_s + mu / tau^2) / (1 / v_s +
  1 / tau^2)``).

A segment whose own fit is precise (many customers) keeps its estimate; a
small or noisy segment moves toward the pooled value; with ``tau^2 = 0``
(the segments do not differ more than their noise) every segment gets the
pooled value.  This is a quadratic penalty on the log-parameters centred on
the pooled fit, with its weight learnt from the data, rather than lifetimes'
penalty toward 0.  A segment's own fit that does not converge is retried
once with lifetimes' penalizer 0.001; a segment with fewer than
``min_customers`` customers, or whose own fit still fails, uses the pooled
parameters (and says why).
"""

import numpy as np
import pyarrow as pa

from segone import clv as _clv
from segone._state import State
from segone._validation import check_int
from segone.errors import ParameterError

MIN_CUSTOMERS = 200
FALLBACK_PENALIZER = 1e-3  # a segment's fit that does not converge unpenalized is retried once with this penalizer


def _empty_value_state():
    return _clv.ValueState(_clv.PatternHistogram.empty(), _clv.MonetaryHistogram.empty())


class SegmentValueState(State):
    """One :class:`segone.clv.ValueState` per segment (mergeable)."""

    kind = "segment_value_state"

    def __init__(self, states):
        self.states = list(states)

    @classmethod
    def empty(cls, k=1):
        return cls([_empty_value_state() for _ in range(k)])

    @classmethod
    def of(cls, profiles, segments, *, k):
        """The per-segment value states of one piece; ``segments`` holds each customer's segment (0..k-1)."""
        seg = np.asarray(segments)
        if seg.shape[0] != profiles.num_rows:
            raise ParameterError("SegmentValueState.of: one segment per profile row is needed.")
        states = []
        for s in range(k):
            rows = np.flatnonzero(seg == s)
            states.append(_clv.ValueState.of(profiles.take(pa.array(rows))) if rows.size else _empty_value_state())
        return cls(states)

    def merge(self, other):
        if type(other) is not type(self) or len(other.states) != len(self.states):
            raise ParameterError("cannot merge segment value states of different numbers of segments.")
        return SegmentValueState([a.merge(b) for a, b in zip(self.states, other.states)])

    def finish(self):
        return self

    def _data(self):
        return {"states": [s.to_dict() for s in self.states]}

    @classmethod
    def _from_data(cls, d):
        return cls([_clv.ValueState.from_dict(s) for s in d["states"]])


def dersimonian_laird(y, v):
    """(pooled mean, between-group variance tau^2) of estimates ``y`` with variances ``v`` (random effects).

    Examples
    --------
    >>> m, tau2 = dersimonian_laird([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    >>> float(m), float(tau2)
    (0.0, 0.0)
    >>> round(float(dersimonian_laird([-2.0, 0.0, 2.0], [0.1, 0.1, 0.1])[1]), 3)
    3.9
    """
    y, v = np.asarray(y, float), np.asarray(v, float)
    w = 1.0 / v
    m = (w * y).sum() / w.sum()
    q = (w * (y - m) ** 2).sum()
    denom = w.sum() - (w**2).sum() / w.sum()
    tau2 = max(0.0, (q - (y.size - 1)) / denom) if denom > 0 else 0.0
    return m, tau2


def shrink(estimates, log_covariances, pooled):
    """Posterior means of the log-parameters: each segment's estimate pulled toward ``pooled`` (see the module).

    ``estimates`` (segments x parameters, natural scale; NaN rows are
    segments without their own fit), ``log_covariances`` (segments x
    parameters x parameters: the covariance of each segment's
    log-estimates; or segments x parameters, their variances alone) and
    ``pooled`` (parameters).  The between-segment variance ``tau^2`` of each
    log-parameter is DerSimonian and Laird's; the posterior mean is
    ``mu + T (T + V_s)^-1 (y_s - mu)`` with ``T = diag(tau^2)``, so that a
    parameter pinned to the pooled value (``tau^2 = 0``) moves the others
    through their correlation (BG/NBD's ``r`` and ``alpha`` are strongly
    correlated: shrinking one alone would change the purchase rate).
    Returns (shrunk parameters, tau^2 per parameter); segments without an
    estimate get ``pooled``.
    """
    est = np.asarray(estimates, float)
    cov = np.asarray(log_covariances, float)
    if cov.ndim == 2:
        cov = np.stack([np.diag(v) for v in cov]) if cov.size else cov.reshape(0, est.shape[1], est.shape[1])
    var = np.diagonal(cov, axis1=1, axis2=2)
    mu = np.log(np.asarray(pooled, float))
    out = np.tile(np.exp(mu), (est.shape[0], 1))
    ok = (np.isfinite(est).all(axis=1) & np.isfinite(cov).all(axis=(1, 2)) & (var > 0).all(axis=1)
          & (est > 0).all(axis=1))  # fmt: skip
    tau2 = np.zeros(est.shape[1])
    if ok.sum() >= 2:
        y = np.log(est[ok])
        for j in range(est.shape[1]):
            tau2[j] = dersimonian_laird(y[:, j], var[ok, j])[1]
        T = np.diag(tau2)
        for s_, row in zip(np.flatnonzero(ok), y):
            try:
                gain = T @ np.linalg.solve(T + cov[s_], row - mu)
            except np.linalg.LinAlgError:
                continue  # a singular covariance: the pooled value
            out[s_] = np.exp(mu + gain)
    return out, tau2


def fit_by_segment(state, pooled_bg, pooled_gg=None, *, penalizer=0.0, min_customers=MIN_CUSTOMERS):
    """Per segment: (BetaGeo, GammaGamma or None) shrunk toward the pooled models, and a description per segment.

    Parameters
    ----------
    state : SegmentValueState
        The merged per-segment histograms.
    pooled_bg, pooled_gg : purchase model, GammaGamma or None
        The fits on all customers (``segone.clv.fit_value``); the segments'
        purchase model is of the pooled one's class (BG/NBD, Pareto/NBD, ...).
    penalizer : float
        lifetimes' penalizer for the segments' own fits.
    min_customers : int
        Segments with fewer customers (with a purchase) use the pooled fit.

    Returns
    -------
    (list of (BetaGeo, GammaGamma or None), list of dict, dict)
        The models of each segment, what each segment's fit did (own
        parameters, shrunk parameters, reason when pooled) and the
        between-segment variances.
    """
    min_customers = check_int(min_customers, "min_customers", low=1)
    if pooled_bg is None:
        raise ParameterError("fit_by_segment needs the pooled BG/NBD fit; it was skipped (see run.json).")
    k = len(state.states)
    out = []
    for kind, cls, pooled in (("bg", type(pooled_bg), pooled_bg), ("gg", _clv.GammaGamma, pooled_gg)):
        if pooled is None:
            out.append((None, [None] * k, {}, ["no pooled model"] * k))
            continue
        names = list(cls._names)
        est = np.full((k, len(names)), np.nan)
        var = np.full((k, len(names), len(names)), np.nan)
        why = [None] * k
        for s, st in enumerate(state.states):
            hist = st.patterns if kind == "bg" else st.monetary
            n = hist.n_customers
            if n < min_customers:
                why[s] = f"{int(n)} customers < {min_customers}: the pooled fit"
                continue
            m, reason, _ = _clv.fit_with_fallback(cls, hist, penalizer, FALLBACK_PENALIZER)
            if m is None:
                why[s] = f"own fit failed ({reason[:120]}): the pooled fit"
                continue
            est[s] = [m.params_[p] for p in names]
            c = getattr(m, "_cov_log_", None)  # the fit's covariance of its log-parameters
            if c is None:
                se = np.array([m.standard_errors_[p] for p in names])
                c = np.diag((se / est[s]) ** 2)
            var[s] = np.asarray(c, float)
            if not np.isfinite(var[s]).all():
                why[s] = "own fit has no finite standard errors: the pooled fit"
                est[s] = np.nan
        shrunk, tau2 = shrink(est, var, [pooled.params_[p] for p in names])
        models = [cls.from_params(dict(zip(names, map(float, row)))) for row in shrunk]
        out.append((names, models, dict(zip(names, map(float, tau2))),
                    [{"own": None if not np.isfinite(est[s]).all() else dict(zip(names, map(float, est[s]))),
                      "shrunk": dict(zip(names, map(float, shrunk[s]))), "pooled_because": why[s]}
                     for s in range(k)]))  # fmt: skip
    (_, bgs, tau_bg, d_bg), (_, ggs, tau_gg, d_gg) = out
    if pooled_gg is None:
        ggs = [None] * k
    desc = [{"bg_nbd": d_bg[s], "gamma_gamma": d_gg[s]} for s in range(k)]
    return list(zip(bgs, ggs)), desc, {"bg_nbd": tau_bg, "gamma_gamma": tau_gg}


def value_piece_by_segment(profiles, segments, *, models, horizon_months=12, discount_rate=0.01, freq="D"):
    """:func:`segone.clv.value_piece` with each customer's segment's models (``models[s] = (bg, gg)``)."""
    seg = np.asarray(segments)
    n = profiles.num_rows
    cols = {name: np.full(n, np.nan) for name in _clv.VALUE_COLUMNS}
    valid = {name: np.zeros(n, dtype=bool) for name in _clv.VALUE_COLUMNS}
    for s, (bg, gg) in enumerate(models):
        rows = np.flatnonzero(seg == s)
        if not rows.size:
            continue
        part = _clv.value_piece(profiles.take(pa.array(rows)), beta_geo=bg, gamma_gamma=gg,
                                horizon_months=horizon_months, discount_rate=discount_rate, freq=freq)  # fmt: skip
        for name in _clv.VALUE_COLUMNS:
            c = part.column(name)
            cols[name][rows] = c.fill_null(np.nan).to_numpy(zero_copy_only=False)
            valid[name][rows] = c.is_valid().to_numpy(zero_copy_only=False)
    out = profiles
    for name in _clv.VALUE_COLUMNS:
        arr = pa.array(cols[name], mask=~valid[name])
        if name in out.column_names:
            out = out.set_column(out.column_names.index(name), name, arr)
        else:
            out = out.append_column(name, arr)
    return out


__all__ = ["MIN_CUSTOMERS", "SegmentValueState", "dersimonian_laird", "fit_by_segment", "shrink",
           "value_piece_by_segment"]  # fmt: skip
