"""PROPENSITY: mergeable L2-penalised logistic regression (Newton / IRLS on per-piece sums).

One model per *group* (in :mod:`segone.actions`, a group is a category): the
probability that ``y = 1`` given a feature row ``x`` is
``expit(b0 + sum_j b_j z_j)`` with ``z = (x - mean) / scale`` the features
standardised by a mergeable scaler (:class:`ScalerState`, Chan's pairwise
moments).  The fit minimises, per group,

    f(b) = -loglik(b) + lam / 2 * sum_{j >= 1} b_j ** 2

(the intercept ``b0`` is not penalised).  This is scikit-learn's
``LogisticRegression(C=1 / lam)`` on the standardised features (scikit-learn
minimises ``C * sum(log-loss) + ||w||^2 / 2`` and does not penalise the
intercept), so ``lam = 1 / C``.

Every pass over the data is one mergeable :class:`NewtonState` holding, per
group, ``X'WX`` and ``X'Wz`` (``W = p (1 - p)``, ``z = Xb + (y - p) / W``: the
IRLS working response), the log-likelihood, the rows and the positives at the
current coefficients.  The Newton step is then ``b <- (X'WX + Lambda)^-1 X'Wz``
with ``Lambda = diag(0, lam, ..., lam)``: only ``G x (d+1) x (d+1)`` numbers
reach the driver, whatever the number of rows, so the same code runs on one
process and on Dask (the driver is :meth:`LogisticFit.fit_passes`, given a
function that maps and reduces the state over the engine's parts).

Rules:

* ``lam > 0`` is required: with the penalty the objective is strictly convex,
  so separable data (a feature that splits buyers from non-buyers) still has
  a finite optimum; the fit converges to it.
* A group is skipped, with the reason, when it has no rows, no positive
  (``"no buyers in the training window"``) or only positives.
* A step that increases ``f`` is halved (up to 30 times); a group converges when
  ``max |b_new - b| <= tol * (1 + max |b|)``; a group still moving after
  ``max_iter`` passes is kept with ``converged = False`` (said in ``info``).
* Calibration: the intercept is not penalised, so on the training rows the
  mean predicted probability equals the share of positives (calibration in the
  large, exactly, at convergence).  :class:`CalibrationState` gives the
  reliability table (ten fixed bins of the predicted probability: rows, mean
  predicted, share observed) and the expected calibration error, mergeable,
  for the training rows and for any holdout; :mod:`segone.actions` reports
  it in its info.  No extra Platt or isotonic step is applied: see the
  backtest's reliability tables for the evidence on held-out time.
"""

import numpy as np

from segone._state import State, array_from_data, array_to_data
from segone._validation import check_float, check_int
from segone.errors import ModelFormatError, ParameterError

N_BINS = 10  # reliability table bins of the predicted probability


def expit(eta):
    """The logistic function, without overflow warnings.

    Examples
    --------
    >>> expit([0.0, 1000.0, -1000.0]).tolist()
    [0.5, 1.0, 0.0]
    """
    return _expit_and_log1pexp(eta)[0]


def _expit_and_log1pexp(eta):
    """``(expit(eta), log(1 + exp(eta)))`` from one ``exp(-|eta|)``, without overflow.

    ``1 / (1 + e)`` for ``eta >= 0`` and ``e / (1 + e)`` below, with ``e = exp(-|eta|)``; and
    ``max(eta, 0) + log1p(e)``, which is how ``np.logaddexp(0, eta)`` computes it.
    """
    eta = np.asarray(eta, dtype=np.float64)
    e = np.abs(eta, out=np.empty_like(eta))  # an array, even for a scalar eta
    np.negative(e, out=e)
    np.exp(e, out=e)
    p = np.where(eta >= 0, 1.0, e)
    np.divide(p, e + 1.0, out=p)
    log1pexp = np.log1p(e)
    log1pexp += np.maximum(eta, 0.0)
    return p, log1pexp


def _with_intercept(Z):
    out = np.empty((Z.shape[0], Z.shape[1] + 1))
    out[:, 0] = 1.0
    out[:, 1:] = Z
    return out


def _blocks(piece, design, groups=None):
    """(group, X, y) blocks of one piece: ``design(piece)`` (``design(piece, groups)`` when only some groups are
    wanted) or the piece itself when it is already a list of them."""
    if design is None:
        blocks = piece
    else:
        blocks = design(piece) if groups is None else design(piece, groups)
    if groups is None:
        return blocks
    wanted = set(int(g) for g in groups)
    return (b for b in blocks if b[0] in wanted)


# -- the scaler ------------------------------------------------------------------------------------------------
class ScalerState(State):
    """Per group: rows, means and centred sums of squares of the features (Chan's merge).

    ``of(piece, design=..., n_groups=G, n_features=d)``: ``design(piece)``
    yields ``(group, X, y)`` blocks (``X``: rows x d floats; ``y`` unused).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(8.0).reshape(4, 2)
    >>> a = ScalerState.of([(0, X[:2], None)], n_groups=1, n_features=2)
    >>> b = ScalerState.of([(0, X[2:], None)], n_groups=1, n_features=2)
    >>> mean, scale = a.merge(b).finish()
    >>> mean.tolist(), np.round(scale, 4).tolist()
    ([[3.0, 4.0]], [[2.2361, 2.2361]])
    """

    kind = "propensity_scaler"

    def __init__(self, n_groups, n_features, n=None, mean=None, m2=None):
        self.n_groups, self.n_features = int(n_groups), int(n_features)
        g, d = self.n_groups, self.n_features
        self.n = np.zeros(g) if n is None else np.asarray(n, dtype=np.float64).reshape(g)
        self.mean = np.zeros((g, d)) if mean is None else np.asarray(mean, dtype=np.float64).reshape(g, d)
        self.m2 = np.zeros((g, d)) if m2 is None else np.asarray(m2, dtype=np.float64).reshape(g, d)

    @classmethod
    def empty(cls, n_groups=1, n_features=1):
        return cls(n_groups, n_features)

    @classmethod
    def of(cls, piece, *, n_groups, n_features, design=None):
        out = cls(n_groups, n_features)
        for g, X, _ in _blocks(piece, design):
            X = np.asarray(X, dtype=np.float64)
            if X.shape[0] == 0:
                continue
            one = cls(n_groups, n_features)
            one.n[g] = X.shape[0]
            one.mean[g] = X.mean(axis=0)
            one.m2[g] = ((X - one.mean[g]) ** 2).sum(axis=0)
            out = out.merge(one)
        return out

    def merge(self, other):
        self._check_same(other, "n_groups", "n_features")
        n1, n2 = self.n[:, None], other.n[:, None]
        n = n1 + n2
        safe = np.where(n > 0, n, 1.0)
        delta = other.mean - self.mean
        mean = self.mean + delta * (n2 / safe)
        m2 = self.m2 + other.m2 + delta * delta * (n1 * n2 / safe)
        return ScalerState(self.n_groups, self.n_features, n[:, 0], np.where(n > 0, mean, 0.0), m2)

    def finish(self):
        """(mean, scale) of shape (G, d); a constant feature (or a group without rows) gets scale 1."""
        with np.errstate(invalid="ignore", divide="ignore"):
            var = self.m2 / np.maximum(self.n[:, None], 1.0)
        scale = np.sqrt(np.where(np.isfinite(var), var, 0.0))
        return self.mean.copy(), np.where(scale > 1e-12, scale, 1.0)

    def _data(self):
        return {"n_groups": self.n_groups, "n_features": self.n_features, "n": array_to_data(self.n),
                "mean": array_to_data(self.mean), "m2": array_to_data(self.m2)}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["n_groups"], d["n_features"], array_from_data(d["n"], "n"), array_from_data(d["mean"], "mean"),
                   array_from_data(d["m2"], "m2"))  # fmt: skip


def standardized_blocks(piece, *, design=None, mean, scale, dtype=np.float32):
    """The ``(group, A, y)`` blocks of one piece with ``A`` the standardised design and its intercept column
    first, stored as ``dtype`` (float32: half the memory; the Newton sums still accumulate in float64).

    Persist them once (``eng.persist(eng.map(standardized_blocks, parts, ...))``) and pass them to
    :meth:`NewtonState.of` with ``prepared=True``: the passes then skip building the features.
    """
    out = []
    for g, X, y in _blocks(piece, design):
        X = np.asarray(X, dtype=np.float64)
        A = _with_intercept((X - mean[g]) / scale[g]).astype(dtype)
        out.append((int(g), A, np.asarray(y, dtype=dtype)))
    return out


# -- one Newton pass ---------------------------------------------------------------------------------------------
class NewtonState(State):
    """Per group, at coefficients ``beta``: rows, positives, ``X'WX``, ``X'Wz`` and the log-likelihood (sums).

    ``X`` here is the standardised design with the intercept column first
    (``d + 1`` columns).  ``of(piece, design=..., beta=B, mean=M, scale=S)``
    with ``B`` of shape (G, d+1) and ``M``, ``S`` of shape (G, d); ``groups``
    (optional): only these groups' sums (the others stay zero), so that the
    passes after a group has converged skip it; ``prepared``: the blocks come
    from :func:`standardized_blocks` (``mean`` and ``scale`` are then unused).
    """

    kind = "propensity_newton"
    _FIELDS = ("n", "pos", "xtwx", "xtwz", "loglik")

    def __init__(self, n_groups, n_features, **arrays):
        self.n_groups, self.n_features = int(n_groups), int(n_features)
        g, k = self.n_groups, self.n_features + 1
        shapes = {"n": (g,), "pos": (g,), "xtwx": (g, k, k), "xtwz": (g, k), "loglik": (g,)}
        for f in self._FIELDS:
            a = arrays.get(f)
            setattr(self, f, np.zeros(shapes[f]) if a is None else np.asarray(a, dtype=np.float64).reshape(shapes[f]))

    @classmethod
    def empty(cls, n_groups=1, n_features=1):
        return cls(n_groups, n_features)

    @classmethod
    def of(cls, piece, *, beta, mean, scale, design=None, groups=None, prepared=False):
        beta = np.asarray(beta, dtype=np.float64)
        out = cls(beta.shape[0], beta.shape[1] - 1)
        buf = np.empty(0)  # the weighted design W X, reused from block to block
        for g, X, y in _blocks(piece, design, groups):
            if X.shape[0] == 0:
                continue
            y = np.asarray(y, dtype=np.float64)
            if prepared:  # blocks of standardized_blocks: standardised, intercept first
                A = np.asarray(X, dtype=np.float64)
            else:
                A = _with_intercept((np.asarray(X, dtype=np.float64) - mean[g]) / scale[g])
            eta = A @ beta[g]
            p, log1pexp = _expit_and_log1pexp(eta)
            w = np.maximum(p * (1.0 - p), 1e-12)
            out.n[g] += X.shape[0]
            out.pos[g] += y.sum()
            if buf.size < A.size:
                buf = np.empty(A.size)
            wa = buf[: A.size].reshape(A.shape)
            np.multiply(A, w[:, None], out=wa)
            out.xtwx[g] += A.T @ wa
            out.xtwz[g] += A.T @ (w * eta + (y - p))  # X'W z with z = eta + (y - p) / w
            out.loglik[g] += float(y @ eta - log1pexp.sum())  # log(1 + exp(eta)) = np.logaddexp(0, eta)
        return out

    def merge(self, other):
        self._check_same(other, "n_groups", "n_features")
        return NewtonState(self.n_groups, self.n_features,
                           **{f: getattr(self, f) + getattr(other, f) for f in self._FIELDS})  # fmt: skip

    def finish(self):
        return self

    def _data(self):
        return {"n_groups": self.n_groups, "n_features": self.n_features,
                **{f: array_to_data(getattr(self, f)) for f in self._FIELDS}}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["n_groups"], d["n_features"], **{f: array_from_data(d[f], f) for f in cls._FIELDS})


# -- the reliability table -------------------------------------------------------------------------------------
class CalibrationState(State):
    """Per group and bin of the predicted probability (ten bins of width 0.1): rows, sum of p, sum of y.

    ``of(piece)`` takes ``(group, p, y)`` blocks.
    """

    kind = "propensity_calibration"

    def __init__(self, n_groups, sums=None):
        self.n_groups = int(n_groups)
        shape = (self.n_groups, N_BINS, 3)
        self.sums = np.zeros(shape) if sums is None else np.asarray(sums, dtype=np.float64).reshape(shape)

    @classmethod
    def empty(cls, n_groups=1):
        return cls(n_groups)

    @classmethod
    def of(cls, piece, *, n_groups, design=None):
        out = cls(n_groups)
        for g, p, y in _blocks(piece, design):
            p = np.asarray(p, dtype=np.float64)
            b = np.clip((p * N_BINS).astype(np.int64), 0, N_BINS - 1)
            out.sums[g, :, 0] += np.bincount(b, minlength=N_BINS)
            out.sums[g, :, 1] += np.bincount(b, weights=p, minlength=N_BINS)
            out.sums[g, :, 2] += np.bincount(b, weights=np.asarray(y, dtype=np.float64), minlength=N_BINS)
        return out

    def merge(self, other):
        self._check_same(other, "n_groups")
        return CalibrationState(self.n_groups, self.sums + other.sums)

    def finish(self):
        """(table, ece): table[g, bin] = (rows, mean predicted, share observed); ece[g] = expected calibration error."""
        n = self.sums[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = self.sums[..., 1] / n
            share = self.sums[..., 2] / n
        table = np.stack([n, mean_p, share], axis=-1)
        tot = n.sum(axis=1)
        gap = np.where(n > 0, np.abs(self.sums[..., 1] - self.sums[..., 2]), 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ece = np.where(tot > 0, gap / np.maximum(tot, 1), np.nan)
        return table, ece

    def _data(self):
        return {"n_groups": self.n_groups, "sums": array_to_data(self.sums)}

    @classmethod
    def _from_data(cls, d):
        return cls(d["n_groups"], array_from_data(d["sums"], "sums"))


# -- the fit ---------------------------------------------------------------------------------------------------------
class LogisticFit:
    """The fitted (or to-be-fitted) per-group penalised logistic regressions.

    Parameters
    ----------
    lam : float, default 1.0
        The L2 penalty on the standardised coefficients (not the intercept);
        scikit-learn's ``C`` is ``1 / lam``.  Must be > 0.
    max_iter : int, default 50
        Newton passes at most.
    tol : float, default 1e-8
        A group has converged when no coefficient moved more than
        ``tol * (1 + max |b|)`` in its last step.
    group_names : list of str, optional
        Names of the groups (for the skip reasons).

    Attributes
    ----------
    coef_ : ndarray (G, d + 1)
        Intercept first, then one coefficient per standardised feature.
    mean_, scale_ : ndarray (G, d)
    skipped_ : dict {group index: reason}
    converged_ : ndarray of bool (G,)
    n_iter_ : int
        Passes over the data (Newton steps plus halvings).
    n_rows_, n_pos_ : ndarray (G,)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2)); y = (X[:, 0] + rng.normal(size=500) > 0).astype(float)
    >>> m = LogisticFit(lam=1.0).fit_arrays(X, y)
    >>> bool(m.converged_[0]), m.coef_.shape
    (True, (1, 3))
    >>> float(np.round(m.predict_proba(0, X).mean() - y.mean(), 8))
    0.0
    """

    def __init__(self, lam=1.0, *, max_iter=50, tol=1e-8, group_names=None):
        self.lam = check_float(lam, "lam", low=0.0, low_inclusive=False)
        self.max_iter = check_int(max_iter, "max_iter", low=1)
        self.tol = check_float(tol, "tol", low=0.0, low_inclusive=False)
        self.group_names = None if group_names is None else [str(g) for g in group_names]

    # -- driver ----------------------------------------------------------------
    def fit_passes(self, scaler, newton):
        """Fit from a merged :class:`ScalerState` and ``newton(beta, mean, scale, groups) -> merged NewtonState``.

        ``newton`` is where an engine maps :meth:`NewtonState.of` over its parts
        and reduces (``groups``: the groups still being fitted, None on the
        first pass); this method only solves (d+1) x (d+1) systems.
        """
        G, d = scaler.n_groups, scaler.n_features
        self.mean_, self.scale_ = scaler.finish()
        k = d + 1
        beta = np.zeros((G, k))
        pen = np.full(k, self.lam)
        pen[0] = 0.0
        names = self.group_names or [str(g) for g in range(G)]
        self.skipped_, self.converged_ = {}, np.zeros(G, dtype=bool)
        active = np.ones(G, dtype=bool)
        prev_obj = np.full(G, np.inf)
        prev_beta = beta.copy()
        halvings = np.zeros(G, dtype=np.int64)
        self.n_iter_ = 0
        self.n_rows_ = self.n_pos_ = np.zeros(G)
        first = True
        while active.any() and self.n_iter_ < self.max_iter:
            st = newton(beta, self.mean_, self.scale_, None if first else [int(g) for g in np.flatnonzero(active)])
            self.n_iter_ += 1
            if first:  # the groups the data cannot support, from the first pass's counts
                self.n_rows_, self.n_pos_ = st.n.copy(), st.pos.copy()
                for g in range(G):
                    reason = _skip_reason(st.n[g], st.pos[g], names[g])
                    if reason:
                        self.skipped_[g] = reason
                        active[g] = False
                first = False
            obj = -st.loglik + 0.5 * (beta[:, 1:] ** 2).sum(axis=1) * self.lam
            for g in np.flatnonzero(active):
                if obj[g] > prev_obj[g] + 1e-12 * (1 + abs(prev_obj[g])) and halvings[g] < 30:
                    beta[g] = 0.5 * (beta[g] + prev_beta[g])  # the step went too far: halve it, re-evaluate
                    halvings[g] += 1
                    continue
                halvings[g] = 0
                try:
                    new = np.linalg.solve(st.xtwx[g] + np.diag(pen), st.xtwz[g])
                except np.linalg.LinAlgError:
                    new = np.linalg.lstsq(st.xtwx[g] + np.diag(pen), st.xtwz[g], rcond=None)[0]
                prev_beta[g], prev_obj[g] = beta[g].copy(), obj[g]
                step = np.abs(new - beta[g]).max()
                beta[g] = new
                if step <= self.tol * (1.0 + np.abs(new).max()):
                    self.converged_[g] = True
                    active[g] = False
        self.coef_ = beta
        return self

    def fit_arrays(self, X, y, groups=None):
        """One process: fit on arrays (``groups``: an int array of group per row, default all 0)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        groups = np.zeros(X.shape[0], dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        G = int(groups.max()) + 1 if groups.size else 1
        blocks = [(g, X[groups == g], y[groups == g]) for g in range(G)]
        scaler = ScalerState.of(blocks, n_groups=G, n_features=X.shape[1])
        return self.fit_passes(scaler, lambda b, m, s, g: NewtonState.of(blocks, beta=b, mean=m, scale=s, groups=g))

    # -- use -------------------------------------------------------------------
    def decision_function(self, g, X):
        Z = (np.asarray(X, dtype=np.float64) - self.mean_[g]) / self.scale_[g]
        return self.coef_[g, 0] + Z @ self.coef_[g, 1:]

    def predict_proba(self, g, X):
        """P(y = 1) of the rows ``X`` under group ``g``'s model (NaN for a skipped group)."""
        if g in self.skipped_:
            return np.full(np.asarray(X).shape[0], np.nan)
        return expit(self.decision_function(g, X))

    def raw_coef(self, g):
        """Group ``g``'s (intercept, coefficients) on the unstandardised features."""
        w = self.coef_[g, 1:] / self.scale_[g]
        return self.coef_[g, 0] - w @ self.mean_[g], w

    def info(self):
        """JSON-safe facts for run.json: penalty, passes, per group rows, positives, converged or skipped."""
        names = self.group_names or [str(g) for g in range(self.coef_.shape[0])]
        return {"penalty": self.lam, "C": 1.0 / self.lam, "passes": int(self.n_iter_),
                "groups": {names[g]: {"rows": int(self.n_rows_[g]), "positives": int(self.n_pos_[g]),
                                      "converged": bool(self.converged_[g]),
                                      "skipped": self.skipped_.get(g)} for g in range(len(names))}}  # fmt: skip

    def to_dict(self):
        return {"kind": "logistic_fit", "version": 1, "lam": self.lam, "max_iter": self.max_iter, "tol": self.tol,
                "group_names": self.group_names, "coef": array_to_data(self.coef_),
                "mean": array_to_data(self.mean_), "scale": array_to_data(self.scale_),
                "skipped": {str(k): v for k, v in self.skipped_.items()},
                "converged": [bool(c) for c in self.converged_], "n_iter": int(self.n_iter_)}  # fmt: skip

    @classmethod
    def from_dict(cls, d):
        if not isinstance(d, dict) or d.get("kind") != "logistic_fit" or d.get("version") != 1:
            raise ModelFormatError("expected a 'logistic_fit' model of version 1.")
        try:
            m = cls(d["lam"], max_iter=d["max_iter"], tol=d["tol"], group_names=d["group_names"])
            m.coef_ = array_from_data(d["coef"], "coef")
            m.mean_, m.scale_ = array_from_data(d["mean"], "mean"), array_from_data(d["scale"], "scale")
            m.skipped_ = {int(k): v for k, v in d["skipped"].items()}
            m.converged_ = np.asarray(d["converged"], dtype=bool)
            m.n_iter_ = int(d["n_iter"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"logistic_fit is malformed: {exc}") from None
        return m


def _skip_reason(n, pos, name):
    if n == 0:
        return f"{name}: no customer in the training window"
    if pos == 0:
        return f"{name}: no buyers in the training window ({int(n)} customers, none bought it)"
    if pos == n:
        return f"{name}: every one of the {int(n)} customers bought it in the training window; nothing to rank"
    return None


__all__ = ["CalibrationState", "LogisticFit", "NewtonState", "ScalerState", "expit", "standardized_blocks"]
