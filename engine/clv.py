"""Predicted customer value: BG/NBD purchases and Gamma-Gamma spend.

Two classic "buy till you die" models, fitted by maximum likelihood on the
BTYD columns that :func:`segone.build_profiles` writes (``frequency``,
``recency``, ``T``, ``monetary_value``, in days):

* :class:`BetaGeo`, the BG/NBD model of Fader, Hardie & Lee (2005): each
  customer buys at a Poisson rate ``lambda ~ Gamma(r, alpha)`` and, after
  each repeat purchase, drops out with probability ``p ~ Beta(a, b)``.  It
  predicts the expected number of purchases in the next ``t`` periods
  (:meth:`BetaGeo.expected_purchases`) and the probability that a customer
  is still active (:meth:`BetaGeo.p_alive`).
* :class:`GammaGamma` (Fader, Hardie & Lee 2005b; Hardie's note 025): the
  average order value of repeat purchases.  It predicts each customer's
  expected order value and, with a fitted :class:`BetaGeo`, the discounted
  customer lifetime value.

The rest of the family, with the same interface and the same exactness to
lifetimes:

* :class:`ParetoNBD` (Schmittlein, Morrison & Colombo 1987; lifetimes'
  ``ParetoNBDFitter``): drop-out at any time, not only after a purchase;
* :class:`ModifiedBetaGeo` (MBG/NBD, Batislam et al. 2007; lifetimes'
  ``ModifiedBetaGeoFitter``): customers may drop out right after the first
  purchase, so a one-time buyer is not certainly alive;
* :class:`BetaGeoBetaBinom` (BG/BB, Fader, Hardie & Shang 2010; lifetimes'
  ``BetaGeoBetaBinomFitter``) for discrete-time (opportunity) data, with its
  own mergeable :class:`OpportunityHistogram`; ``segone backtest --models
  bgnbd,bgbb --freq W`` fits it on the weekly (or monthly) periods.

:data:`PURCHASE_MODELS` maps the names ``bgnbd``, ``pareto`` and ``mbgnbd``
to the continuous-time classes (any of them works with
:meth:`GammaGamma.customer_lifetime_value` and :func:`fit_value`), and
:func:`segment_intervals` gives segment totals of expected purchases and CLV
with intervals from the fitted parameters' covariance; :class:`SegmentTotals`
is the same as a mergeable state, which ``segone run`` uses for the
``total_*_lo`` / ``total_*_hi`` columns of segments.parquet.

Every formula follows the ``lifetimes`` package (``BetaGeoFitter``,
``GammaGammaFitter``, ``utils.customer_lifetime_value``): the same
likelihoods, the same L2 penalizer, the same standard errors and the same
predictions (to rounding), so numbers can be compared one to one.  What is
different is the speed:

* the data are reduced to the exact histogram of distinct
  ``(frequency, recency, T)`` patterns (:class:`PatternHistogram`, a
  mergeable :class:`~segone._state.State`), the "weights trick" of Fader and
  Hardie that ``lifetimes`` documents but leaves to the user;
* the likelihood is evaluated with its ``gammaln``/``digamma`` terms over the
  distinct frequencies only and its ``log(alpha + T)`` terms over the distinct
  ages only; the per-pattern work is one log-sum-exp;
* the gradient and the Hessian are analytic (no automatic differentiation):
  a trust-region Newton method on the log-parameters (scipy's ``trust-exact``,
  one pass over the patterns per iteration, about 7 iterations from
  lifetimes' start), with BFGS plus Newton steps as the fallback;
  Pareto/NBD and BG/BB use numerical derivatives of their exact likelihoods
  (see the classes);
* predictions evaluate the Gauss hypergeometric function once per distinct
  ``(frequency, T)`` pair, not once per customer and time step.

Conventions and defined behaviour for awkward input:

* NaN, infinite or negative ``frequency``/``recency``/``T``, a non-integer
  ``frequency``, ``recency > T`` or ``recency != 0`` with ``frequency == 0``
  raise :class:`~segone.errors.DataError` naming the column and example rows.
* :class:`BetaGeo` needs at least one repeat customer (``frequency > 0``;
  otherwise :class:`~segone.errors.EmptyInputError`) and at least two
  distinct ``(frequency, recency, T)`` patterns (a single customer, or
  customers that are all identical, raise :class:`~segone.errors.DataError`:
  four parameters cannot be estimated from one pattern; so does ``T == 0``
  for every customer).
* :class:`GammaGamma` uses repeat customers with a positive monetary value
  only.  Customers with ``frequency == 0`` carry no information on spend;
  repeat customers with ``monetary_value <= 0`` (every repeat order returned
  or free) cannot come from a Gamma distribution: both are excluded from the
  fit and counted (``n_excluded_zero_frequency_``,
  ``n_excluded_nonpositive_monetary_``).  With no usable customer the fit
  raises :class:`~segone.errors.EmptyInputError`; when every usable
  customer has the same monetary value, :class:`~segone.errors.DataError`
  (the spread of order values cannot be estimated).  Predictions still cover
  every customer: with ``frequency == 0`` the expected order value is the
  population mean ``v p / (q - 1)``, as in ``lifetimes``.
* A fit that does not converge (the likelihood has no interior maximum: too
  few repeat customers, degenerate data) raises :class:`ConvergenceError`,
  whose message suggests ``penalizer``; it never returns a silent result.
* Predictions that would not be finite (e.g. Gamma-Gamma ``q <= 1``, whose
  population mean spend is infinite) raise :class:`~segone.errors.DataError`.

:func:`predict_value` runs both models on a profile table and returns one
row of predictions per customer, plus an info dict for ``run.json``.
"""

import math

import numpy as np
from scipy import optimize, special

from segone._state import State, array_from_data, array_to_data
from segone._validation import (
    check_choice,
    check_finite_column,
    check_float,
    check_int,
    check_random_state,
    is_arrow_tabular,
)
from segone.errors import (
    DataError,
    EmptyInputError,
    NotFittedError,
    ParameterError,
    SchemaError,
    SegoneError,
    examples,
)

__all__ = [
    "FREQ_FACTORS",
    "BetaGeo",
    "BetaGeoBetaBinom",
    "ModifiedBetaGeo",
    "OpportunityHistogram",
    "PURCHASE_MODELS",
    "ParetoNBD",
    "ConvergenceError",
    "GammaGamma",
    "MonetaryHistogram",
    "PatternHistogram",
    "predict_value",
    "sample_bgnbd",
    "sample_gamma_gamma",
    "segment_intervals",
    "SegmentTotals",
    "INTERVAL_LEVEL",
    "with_interval_columns",
]

#: Periods of the BTYD columns per month, as in ``lifetimes.utils.customer_lifetime_value``.
FREQ_FACTORS = {"D": 30.0, "W": 4.345, "M": 1.0, "H": 720.0}

_UMAX = 25.0  # log-parameters are kept in [-25, 25] (e^25 ~ 7e10): beyond, the fit is degenerate
_GTOL = 1e-7  # converged when every component of the gradient of the mean objective is below this


class ConvergenceError(SegoneError, RuntimeError):
    """A maximum-likelihood fit did not reach an interior optimum."""


# -- validation ------------------------------------------------------------------
def _as_float(values, name, where):
    """``values`` as a float64 ndarray (a view when possible)."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values
    if type(values).__module__.startswith("pyarrow"):
        if getattr(values, "null_count", 0):
            import pyarrow.compute as pc

            rows = np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))
            raise DataError(
                f"{where}: column {name!r} has {rows.size} null values (first rows: {examples(rows)}); "
                "fill or drop them first."
            )
        values = values.to_numpy(zero_copy_only=False)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise SchemaError(
            f"{where}: {name} must be numeric, got {type(values).__name__} "
            f"of {getattr(getattr(values, 'dtype', None), 'name', 'objects')}."
        ) from None
    return arr


def _check_values(v, name, where, *, nonneg=True, integer=False):
    """Raise DataError (naming ``name`` and example rows) for NaN/inf, negative or non-integer values."""
    flat = v.ravel()
    if not flat.size:
        return
    with np.errstate(all="ignore"):
        total = np.add.reduce(flat)
    if not np.isfinite(total):
        check_finite_column(flat, f"{where}: column {name!r}", "drop or fix these customers first.")
    if nonneg and flat.min() < 0:
        bad = np.flatnonzero(flat < 0)
        why = "weights count customers" if name == "weights" else f"{name} counts periods"
        raise DataError(
            f"{where}: column {name!r} has {bad.size} negative values (first rows: {examples(bad)}, "
            f"values: {examples(flat[bad])}); {why} and must be >= 0."
        )
    if integer:
        bad = np.flatnonzero(flat != np.floor(flat))
        if bad.size:
            why = (
                "the weights of a histogram count customers" if name == "weights"
                else "frequency is the number of repeat purchase periods"
            )  # fmt: skip
            raise DataError(
                f"{where}: column {name!r} has {bad.size} non-integer values (first rows: {examples(bad)}, "
                f"values: {examples(flat[bad])}); {why}, a whole number."
            )


def _check_btyd(frequency, recency, T, where, *, same_length=False, t_name="T"):
    """Validated float64 (frequency, recency, T), broadcast to one shape."""
    x = _as_float(frequency, "frequency", where)
    tx = _as_float(recency, "recency", where)
    t_age = _as_float(T, t_name, where)
    if same_length:
        for name, a in (("frequency", x), ("recency", tx), (t_name, t_age)):
            if a.ndim != 1:
                raise ParameterError(f"{where}: {name} must be 1-D (one value per customer), got shape {a.shape}.")
        if not (x.shape == tx.shape == t_age.shape):
            raise ParameterError(
                f"{where}: frequency, recency and {t_name} must have the same length, got {x.size}, {tx.size}, "
                f"{t_age.size}."
            )
    else:
        try:
            x, tx, t_age = np.broadcast_arrays(x, tx, t_age)
        except ValueError:
            raise ParameterError(
                f"{where}: frequency, recency and T have shapes {x.shape}, {tx.shape}, {t_age.shape} "
                "that do not broadcast together."
            ) from None
    _check_values(x, "frequency", where, integer=True)
    _check_values(tx, "recency", where)
    _check_values(t_age, t_name, where)
    xf, txf, tf = x.ravel(), tx.ravel(), t_age.ravel()
    if xf.size:
        bad = np.flatnonzero(txf > tf)
        if bad.size:
            raise DataError(
                f"{where}: {bad.size} rows have recency > {t_name} (first rows: {examples(bad)}, recency: "
                f"{examples(txf[bad])}, {t_name}: {examples(tf[bad])}); recency is the age at the last repeat purchase "
                "and T the age at the end of the observation period: use the same unit and origin for both."
            )
        bad = np.flatnonzero((xf == 0) & (txf != 0))
        if bad.size:
            raise DataError(
                f"{where}: {bad.size} rows have frequency 0 but recency != 0 (first rows: {examples(bad)}, "
                f"recency: {examples(txf[bad])}); without a repeat purchase recency must be 0 "
                "(lifetimes' summary_data_from_transaction_data convention)."
            )
    return x, tx, t_age


def _check_weights(weights, n, where, *, integer=False):
    w = _as_float(weights, "weights", where)
    if w.ndim != 1 or w.size != n:
        raise ParameterError(f"{where}: weights must be 1-D with one value per customer ({n}), got shape {w.shape}.")
    _check_values(w, "weights", where, integer=integer)
    return w


def _check_params(params, names, where):
    try:
        vals = [params[k] for k in names]
    except (KeyError, TypeError):
        raise ParameterError(
            f"{where}: params must be a mapping with keys {', '.join(names)}; got {params!r}."
        ) from None
    return {k: check_float(v, f"{where}: {k}", low=0.0, low_inclusive=False) for k, v in zip(names, vals)}


# -- grouping: the exact histogram of distinct rows ----------------------------------------
def _sorted_unique(c):
    s = np.sort(c)
    keep = np.empty(s.size, dtype=bool)
    keep[:1] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep] + 0.0  # -0.0 -> 0.0


def _codes(c):
    """Order-preserving int64 codes of a float64 column: (codes, decoder, number of codes)."""
    lo, hi = float(c.min()), float(c.max())
    if -(2.0**52) < lo and hi < 2.0**52 and hi - lo < 2.0**40:
        ci = c.astype(np.int64)
        if np.array_equal(ci, c):  # whole numbers: the code is the offset from the minimum
            ilo = int(lo)
            if ilo:
                ci -= ilo
            return ci, ("offset", ilo), int(hi) - ilo + 1
    u = _sorted_unique(c)
    return np.searchsorted(u, c).astype(np.int64), ("table", u), int(u.size)


def _decode(code, dec):
    kind, d = dec
    if kind == "offset":
        return (code + d).astype(np.float64) if d else code.astype(np.float64)
    return d[code]


def _group(cols, weights=None, inverse=False):
    """Group rows by the tuple of float64 columns ``cols``.

    Returns ``(ucols, totals, inv)``: the distinct rows in lexicographic order
    (one array per column), the number of rows (int64) or the sum of
    ``weights`` of each, and when asked the index of each row's group.
    Whole-number columns are coded by offset, others by rank; the codes are
    packed into one int64 key (mixed radix) which is counted densely
    (``bincount``) when its range is small, else sorted.
    """
    n = cols[0].shape[0]
    int_w = weights is not None and weights.dtype.kind in "iu"
    if n == 0:
        return [np.empty(0) for _ in cols], np.empty(0, np.int64 if weights is None or int_w else np.float64), (
            np.empty(0, np.intp) if inverse else None
        )
    parts = [_codes(c) for c in cols]
    R = 1
    for _, _, span in parts:
        R *= span
    if R >= 2**62:
        return _group_lexsort(cols, weights, inverse)
    key = parts[0][0]
    for code, _, span in parts[1:]:
        key *= span
        key += code
    inv = None
    if R <= max(n, 1 << 16):
        cnt = np.bincount(key, minlength=R)
        ukeys = np.flatnonzero(cnt)
        totals = cnt[ukeys] if weights is None else np.bincount(key, weights=weights, minlength=R)[ukeys]
        if inverse:
            lut = np.empty(R, dtype=np.intp)
            lut[ukeys] = np.arange(ukeys.size)
            inv = lut[key]
    else:
        if weights is None and not inverse:
            s = np.sort(key)
        else:
            order = np.argsort(key, kind="stable")
            s = key[order]
        flag = np.empty(n, dtype=bool)
        flag[0] = True
        np.not_equal(s[1:], s[:-1], out=flag[1:])
        starts = np.flatnonzero(flag)
        ukeys = s[starts]
        totals = np.diff(np.append(starts, n)) if weights is None else np.add.reduceat(weights[order], starts)
        if inverse:
            inv = np.empty(n, dtype=np.intp)
            inv[order] = np.cumsum(flag) - 1
    if int_w:
        totals = np.asarray(np.rint(totals), dtype=np.int64)
    ucols = [None] * len(cols)
    rem = ukeys.astype(np.int64)
    for j in range(len(cols) - 1, -1, -1):
        code, dec, span = parts[j]
        if j:
            ucols[j] = _decode(rem % span, dec)
            rem //= span
        else:
            ucols[j] = _decode(rem, dec)
    return ucols, totals, inv


def _group_lexsort(cols, weights, inverse):
    n = cols[0].shape[0]
    order = np.lexsort(tuple(reversed(cols)))
    sc = [c[order] for c in cols]
    flag = np.zeros(n, dtype=bool)
    flag[0] = True
    for c in sc:
        flag[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(flag)
    totals = np.diff(np.append(starts, n)) if weights is None else np.add.reduceat(weights[order], starts)
    if weights is not None and weights.dtype.kind in "iu":
        totals = totals.astype(np.int64)
    inv = None
    if inverse:
        inv = np.empty(n, dtype=np.intp)
        inv[order] = np.cumsum(flag) - 1
    return [c[starts] + 0.0 for c in sc], totals, inv


def _table_columns(table, names, where, optional=()):
    """Columns of an Arrow table as float64 arrays plus their null masks (None if no nulls)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    out = {}
    for name in names:
        if name not in table.column_names:
            if name in optional:
                out[name] = (None, None)
                continue
            raise SchemaError(
                f"{where}: the table has no {name!r} column (columns: {', '.join(table.column_names)}); "
                "pass a profile table from segone.build_profiles or rename the BTYD columns "
                "to frequency, recency, T, monetary_value."
            )
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
            raise SchemaError(f"{where}: column {name!r} has type {col.type}, expected a numeric column.")
        mask = pc.is_null(col).to_numpy(zero_copy_only=False) if col.null_count else None
        vals = col.to_numpy(zero_copy_only=False) if col.num_chunks != 1 or col.null_count else col.chunk(0).to_numpy()
        vals = np.asarray(vals, dtype=np.float64)
        if mask is not None:
            vals = np.where(mask, 0.0, vals)
        out[name] = (vals, mask)
    return out


# -- mergeable states ------------------------------------------------------------------
class PatternHistogram(State):
    """Exact, mergeable histogram of distinct ``(frequency, recency, T)`` patterns.

    Customers with the same purchase pattern contribute identical terms to
    the BG/NBD likelihood, so the histogram is all that :meth:`BetaGeo.fit`
    needs (the "weights trick" of Fader & Hardie).  Patterns are kept sorted
    lexicographically with int64 counts, so merging is exact, associative
    and independent of the order of the pieces.

    Parameters
    ----------
    frequency, recency, T : ndarray of float64
        Distinct patterns, sorted lexicographically.
    counts : ndarray of int64
        Customers per pattern (all > 0).
    n_without_purchase : int
        Rows of profile tables skipped because ``T`` was null (a customer
        with no purchase yet, e.g. known from CRM data only).

    Examples
    --------
    >>> a = PatternHistogram.of([0, 2, 2], [0, 5, 5], [10, 10, 10])
    >>> b = PatternHistogram.of([0, 1], [0, 3], [10, 7])
    >>> x, tx, T, counts = a.merge(b).finish()
    >>> x.tolist(), tx.tolist(), T.tolist(), counts.tolist()
    ([0.0, 1.0, 2.0], [0.0, 3.0, 5.0], [10.0, 7.0, 10.0], [2, 1, 2])
    >>> a.merge(b) == PatternHistogram.of([0, 2, 2, 0, 1], [0, 5, 5, 0, 3], [10, 10, 10, 10, 7])
    True
    """

    kind = "btyd_patterns"
    version = 1

    def __init__(self, frequency, recency, T, counts, n_without_purchase=0):
        self.frequency = np.asarray(frequency, dtype=np.float64)
        self.recency = np.asarray(recency, dtype=np.float64)
        self.T = np.asarray(T, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.n_without_purchase = int(n_without_purchase)

    @classmethod
    def empty(cls):
        """The identity of :meth:`merge`."""
        z = np.empty(0)
        return cls(z, z, z, np.empty(0, np.int64))

    @classmethod
    def of(cls, frequency, recency=None, T=None, weights=None):
        """Histogram of one piece.

        Parameters
        ----------
        frequency : array-like or pyarrow.Table / RecordBatch
            Repeat purchase periods per customer; or a profile table with
            ``frequency``, ``recency`` and ``T`` columns (then ``recency`` and
            ``T`` are not given; rows whose ``T`` is null are skipped and
            counted in ``n_without_purchase``).
        recency, T : array-like
            Age at the last repeat purchase and at the end of observation.
        weights : array-like of non-negative integers, optional
            Customers per row (default 1).  Rows with weight 0 are dropped.
        """
        skipped = 0
        where = "PatternHistogram.of"
        if recency is None and T is None and is_arrow_tabular(frequency):
            cols = _table_columns(frequency, ["frequency", "recency", "T"], where)
            for name in ("frequency", "recency"):
                if cols[name][1] is not None:
                    rows = np.flatnonzero(cols[name][1])
                    raise DataError(
                        f"{where}: column {name!r} has {rows.size} null values (first rows: {examples(rows)}); "
                        "only T may be null (customers without a purchase); fill or drop them first."
                    )
            frequency, recency, (T, tmask) = cols["frequency"][0], cols["recency"][0], cols["T"]
            if tmask is not None:
                keep = ~tmask
                skipped = int(tmask.sum())
                frequency, recency, T = frequency[keep], recency[keep], T[keep]
        elif recency is None or T is None:
            raise ParameterError(f"{where}: give frequency, recency and T arrays, or one profile table alone.")
        x, tx, t_age = _check_btyd(frequency, recency, T, where, same_length=True)
        w = None
        if weights is not None:
            w = _check_weights(weights, x.size, "PatternHistogram.of", integer=True).astype(np.int64)
        (ux, utx, uT), counts, _ = _group([x, tx, t_age], w)
        keep = counts > 0
        if not keep.all():
            ux, utx, uT, counts = ux[keep], utx[keep], uT[keep], counts[keep]
        return cls(ux, utx, uT, counts, skipped)

    def merge(self, other):
        """The histogram of both pieces (a new state; neither input changes)."""
        self._check_same(other)
        if not other.counts.size:
            return PatternHistogram(self.frequency, self.recency, self.T, self.counts,
                                    self.n_without_purchase + other.n_without_purchase)
        if not self.counts.size:
            return PatternHistogram(other.frequency, other.recency, other.T, other.counts,
                                    self.n_without_purchase + other.n_without_purchase)
        cat = [np.concatenate([getattr(self, f), getattr(other, f)]) for f in ("frequency", "recency", "T")]
        (ux, utx, uT), counts, _ = _group(cat, np.concatenate([self.counts, other.counts]))
        return PatternHistogram(ux, utx, uT, counts, self.n_without_purchase + other.n_without_purchase)

    def finish(self):
        """``(frequency, recency, T, counts)`` arrays of the distinct patterns."""
        return self.frequency, self.recency, self.T, self.counts

    @property
    def n_customers(self):
        return int(self.counts.sum())

    def __len__(self):
        return int(self.counts.size)

    def _data(self):
        return {
            "frequency": array_to_data(self.frequency),
            "recency": array_to_data(self.recency),
            "T": array_to_data(self.T),
            "counts": array_to_data(self.counts),
            "n_without_purchase": self.n_without_purchase,
        }

    @classmethod
    def _from_data(cls, d):
        x, tx, t_age = (array_from_data(d[k], k) for k in ("frequency", "recency", "T"))
        counts = array_from_data(d["counts"], "counts")
        if not (x.ndim == tx.ndim == t_age.ndim == counts.ndim == 1 and x.size == tx.size == t_age.size == counts.size):
            raise ValueError("frequency, recency, T and counts must be 1-D arrays of one length")
        if counts.size and counts.min() <= 0:
            raise ValueError("counts must be positive")
        out = cls.of(x, tx, t_age, weights=counts) if x.size else cls.empty()
        out.n_without_purchase = int(d["n_without_purchase"])
        return out


class MonetaryHistogram(State):
    """Exact, mergeable histogram of ``(frequency, monetary_value)`` for the Gamma-Gamma fit.

    Only repeat customers with a positive monetary value enter the
    histogram; the others are counted (``n_zero_frequency``,
    ``n_nonpositive_monetary``) so that the fit can report them.

    Examples
    --------
    >>> h = MonetaryHistogram.of([0, 1, 2, 2, 3], [0.0, 10.0, 25.0, 25.0, -4.0])
    >>> x, m, counts = h.finish()
    >>> x.tolist(), m.tolist(), counts.tolist(), h.n_zero_frequency, h.n_nonpositive_monetary
    ([1.0, 2.0], [10.0, 25.0], [1, 2], 1, 1)
    """

    kind = "gg_patterns"
    version = 1

    def __init__(self, frequency, monetary_value, counts, n_zero_frequency=0, n_nonpositive_monetary=0):
        self.frequency = np.asarray(frequency, dtype=np.float64)
        self.monetary_value = np.asarray(monetary_value, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.n_zero_frequency = int(n_zero_frequency)
        self.n_nonpositive_monetary = int(n_nonpositive_monetary)

    @classmethod
    def empty(cls):
        z = np.empty(0)
        return cls(z, z, np.empty(0, np.int64))

    @classmethod
    def of(cls, frequency, monetary_value=None, weights=None):
        """Histogram of one piece: arrays, or a profile table with ``frequency`` and ``monetary_value``."""
        where = "MonetaryHistogram.of"
        if monetary_value is None and is_arrow_tabular(frequency):
            cols = _table_columns(frequency, ["frequency", "monetary_value"], where)
            for name in ("frequency", "monetary_value"):
                if cols[name][1] is not None:
                    rows = np.flatnonzero(cols[name][1])
                    raise DataError(
                        f"{where}: column {name!r} has {rows.size} null values (first rows: {examples(rows)}); "
                        "fill or drop them first."
                    )
            frequency, monetary_value = cols["frequency"][0], cols["monetary_value"][0]
        elif monetary_value is None:
            raise ParameterError(f"{where}: give frequency and monetary_value arrays, or one profile table alone.")
        x, m, w, n_zero, n_nonpos = _gg_rows(frequency, monetary_value, weights, where, integer_weights=True)
        (ux, um), counts, _ = _group([x, m], w)
        keep = counts > 0
        return cls(ux[keep], um[keep], counts[keep], n_zero, n_nonpos)

    def merge(self, other):
        self._check_same(other)
        n0 = self.n_zero_frequency + other.n_zero_frequency
        nn = self.n_nonpositive_monetary + other.n_nonpositive_monetary
        if not other.counts.size or not self.counts.size:
            src = self if self.counts.size else other
            return MonetaryHistogram(src.frequency, src.monetary_value, src.counts, n0, nn)
        cat = [np.concatenate([getattr(self, f), getattr(other, f)]) for f in ("frequency", "monetary_value")]
        (ux, um), counts, _ = _group(cat, np.concatenate([self.counts, other.counts]))
        return MonetaryHistogram(ux, um, counts, n0, nn)

    def finish(self):
        """``(frequency, monetary_value, counts)`` arrays of the distinct usable rows."""
        return self.frequency, self.monetary_value, self.counts

    @property
    def n_customers(self):
        return int(self.counts.sum())

    def _data(self):
        return {
            "frequency": array_to_data(self.frequency),
            "monetary_value": array_to_data(self.monetary_value),
            "counts": array_to_data(self.counts),
            "n_zero_frequency": self.n_zero_frequency,
            "n_nonpositive_monetary": self.n_nonpositive_monetary,
        }

    @classmethod
    def _from_data(cls, d):
        x = array_from_data(d["frequency"], "frequency")
        m = array_from_data(d["monetary_value"], "monetary_value")
        counts = array_from_data(d["counts"], "counts")
        if not (x.ndim == m.ndim == counts.ndim == 1 and x.size == m.size == counts.size):
            raise ValueError("frequency, monetary_value and counts must be 1-D arrays of one length")
        if x.size and (counts.min() <= 0 or x.min() <= 0 or m.min() <= 0):
            raise ValueError("counts, frequency and monetary_value must be positive")
        (ux, um), c, _ = _group([x, m], counts)
        return cls(ux, um, c, int(d["n_zero_frequency"]), int(d["n_nonpositive_monetary"]))


class OpportunityHistogram(State):
    """Exact, mergeable histogram of distinct ``(frequency, recency, n_periods)`` of discrete-time data.

    The data of :class:`BetaGeoBetaBinom`: over ``n_periods`` transaction
    opportunities after the first, a customer transacted at ``frequency``
    of them, the last at opportunity ``recency`` (0 without a repeat).  All
    three are whole numbers with ``frequency <= recency <= n_periods``.
    Merging is exact, associative and independent of the order of the pieces.

    Examples
    --------
    >>> a = OpportunityHistogram.of([0, 2, 2], [0, 5, 5], [6, 6, 6])
    >>> b = OpportunityHistogram.of([1], [3], [6])
    >>> x, tx, n, counts = a.merge(b).finish()
    >>> x.tolist(), tx.tolist(), n.tolist(), counts.tolist()
    ([0.0, 1.0, 2.0], [0.0, 3.0, 5.0], [6.0, 6.0, 6.0], [1, 1, 2])
    """

    kind = "bgbb_patterns"
    version = 1

    def __init__(self, frequency, recency, n_periods, counts):
        self.frequency = np.asarray(frequency, dtype=np.float64)
        self.recency = np.asarray(recency, dtype=np.float64)
        self.n_periods = np.asarray(n_periods, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.int64)

    @classmethod
    def empty(cls):
        """The identity of :meth:`merge`."""
        z = np.empty(0)
        return cls(z, z, z, np.empty(0, np.int64))

    @classmethod
    def of(cls, frequency, recency, n_periods, weights=None):
        """Histogram of one piece (arrays; ``weights``: customers per row, whole numbers)."""
        where = "OpportunityHistogram.of"
        x, tx, n = _check_opportunities(frequency, recency, n_periods, where)
        w = None
        if weights is not None:
            w = _check_weights(weights, x.size, where, integer=True).astype(np.int64)
        (ux, utx, un), counts, _ = _group([x, tx, n], w)
        keep = counts > 0
        return cls(ux[keep], utx[keep], un[keep], counts[keep])

    def merge(self, other):
        """The histogram of both pieces (a new state; neither input changes)."""
        self._check_same(other)
        if not other.counts.size or not self.counts.size:
            src = self if self.counts.size else other
            return OpportunityHistogram(src.frequency, src.recency, src.n_periods, src.counts)
        cat = [np.concatenate([getattr(self, f), getattr(other, f)]) for f in ("frequency", "recency", "n_periods")]
        (ux, utx, un), counts, _ = _group(cat, np.concatenate([self.counts, other.counts]))
        return OpportunityHistogram(ux, utx, un, counts)

    def finish(self):
        """``(frequency, recency, n_periods, counts)`` arrays of the distinct patterns."""
        return self.frequency, self.recency, self.n_periods, self.counts

    @property
    def n_customers(self):
        return int(self.counts.sum())

    def _data(self):
        return {k: array_to_data(getattr(self, k)) for k in ("frequency", "recency", "n_periods", "counts")}

    @classmethod
    def _from_data(cls, d):
        x, tx, n, counts = (array_from_data(d[k], k) for k in ("frequency", "recency", "n_periods", "counts"))
        if not (x.ndim == tx.ndim == n.ndim == counts.ndim == 1 and x.size == tx.size == n.size == counts.size):
            raise ValueError("frequency, recency, n_periods and counts must be 1-D arrays of one length")
        if counts.size and counts.min() <= 0:
            raise ValueError("counts must be positive")
        return cls.of(x, tx, n, weights=counts) if x.size else cls.empty()


def _check_opportunities(frequency, recency, n_periods, where, same_length=True):
    """Validated float64 (frequency, recency, n_periods) of discrete-time data."""
    x, tx, n = _check_btyd(frequency, recency, n_periods, where, same_length=same_length, t_name="n_periods")
    _check_values(tx, "recency", where, integer=True)
    _check_values(n, "n_periods", where, integer=True)
    bad = np.flatnonzero(x.ravel() > tx.ravel())
    if bad.size:
        raise DataError(
            f"{where}: {bad.size} rows have frequency > recency (first rows: {examples(bad)}); in discrete time "
            "recency is the opportunity of the last transaction, so it is at least the number of transactions."
        )
    return x, tx, n


def _gg_rows(frequency, monetary_value, weights, where, integer_weights=False):
    """Usable Gamma-Gamma rows (frequency > 0, monetary_value > 0) and the excluded counts."""
    x = _as_float(frequency, "frequency", where)
    m = _as_float(monetary_value, "monetary_value", where)
    if x.ndim != 1 or m.shape != x.shape:
        raise ParameterError(
            f"{where}: frequency and monetary_value must be 1-D of one length, got shapes {x.shape} and {m.shape}."
        )
    _check_values(x, "frequency", where, integer=True)
    _check_values(m, "monetary_value", where, nonneg=False)
    if weights is None:
        w = None
    else:
        w = _check_weights(weights, x.size, where, integer=integer_weights)
        w = w.astype(np.int64) if integer_weights else w
    rep = x > 0
    use = rep & (m > 0)
    if w is None:
        n_zero = int(x.size - np.count_nonzero(rep))
        n_nonpos = int(np.count_nonzero(rep) - np.count_nonzero(use))
    else:
        n_zero = w[~rep].sum().item()
        n_nonpos = w[rep & ~use].sum().item()
    if use.all():
        return x, m, w, n_zero, n_nonpos
    return x[use], m[use], None if w is None else w[use], n_zero, n_nonpos


# -- optimisation -------------------------------------------------------------------------
def _minimize(lik, u0, where, advice, warm=None):
    """Trust-region Newton with the analytic Hessian; else BFGS on the log-parameters, then Newton steps.

    ``warm`` (optional) is a better start for the Newton method only (e.g.
    the optimum on a coarser histogram); when Newton fails from there it
    is retried from ``u0``, and BFGS always starts from ``u0`` (lifetimes' start).
    Returns ``(u, f, g, H, n_iter)``; raises ConvergenceError when the end
    point is not an interior optimum with a positive definite Hessian.
    """
    k = u0.size

    def fg(u):
        f, g = lik.value_grad(u)
        if not np.isfinite(f) or not np.all(np.isfinite(g)):
            return np.inf, np.zeros(k)
        return f, g

    found = None
    if getattr(lik, "newton", True):
        with np.errstate(all="ignore"):
            if warm is not None:
                found = _trust_newton(lik, warm)
            if found is None:
                found = _trust_newton(lik, u0)
    if found is not None:
        return found
    if not getattr(lik, "newton", True):  # numerical derivatives: BFGS to the final tolerance, one Hessian
        with np.errstate(all="ignore"):
            res = optimize.minimize(fg, u0, jac=True, method="BFGS", options={"maxiter": 2000, "gtol": _GTOL / 4})
            u = np.asarray(res.x, dtype=np.float64)
            f, g = fg(u)
            H = lik.hessian(u) if np.isfinite(f) else np.full((k, k), np.nan)
        n_iter = int(res.nit)
        return _check_optimum(u, f, g, H, n_iter, where, advice)
    with np.errstate(all="ignore"):
        # Fallback when the trust-region Newton did not reach an interior optimum: BFGS, as lifetimes
        # (from the same start), to gtol 1e-6; the Newton steps below finish.  Not
        # L-BFGS-B: its Fortran core calls scipy's bundled OpenBLAS between our evaluations, whose
        # worker threads then busy-wait through each evaluation (twice the CPU on a shared machine).
        res = optimize.minimize(fg, u0, jac=True, method="BFGS", options={"maxiter": 2000, "gtol": 1e-6})
        u = np.asarray(res.x, dtype=np.float64)
        f, g = fg(u)
        n_iter = int(res.nit)
        for _ in range(20):  # Newton polish: quadratic convergence from where BFGS stopped
            H, H_at = lik.hessian(u), u
            if np.max(np.abs(g)) < 1e-13 or not np.all(np.isfinite(H)):
                break
            try:
                step = np.linalg.solve(H, g)
                np.linalg.cholesky(H)
            except np.linalg.LinAlgError:
                break
            t, moved = 1.0, False
            while t >= 1.0 / 64:
                un = u - t * step
                if np.max(np.abs(un)) > _UMAX:
                    t /= 2
                    continue
                fn, gn = fg(un)
                # f carries ~1e-12 relative roundoff (sums of large, cancelling terms): near the optimum a
                # step that shrinks the gradient is taken unless f clearly grows
                if fn < f or (fn <= f + 1e-10 * max(1.0, abs(f)) and np.max(np.abs(gn)) < np.max(np.abs(g))):
                    u, f, g, moved = un, fn, gn, True
                    break
                t /= 2
            n_iter += 1
            if not moved:
                break
        if H_at is not u:
            H = lik.hessian(u)
    return _check_optimum(u, f, g, H, n_iter, where, advice)


def _check_optimum(u, f, g, H, n_iter, where, advice):
    """``(u, f, g, H, n_iter)``, or ConvergenceError when it is not an interior optimum."""
    reason = None
    if not np.isfinite(f):
        reason = "the likelihood is not finite"
    elif np.max(np.abs(u)) >= _UMAX - 1e-6:
        reason = "a parameter ran to 0 or infinity (log-parameter at the bound ±25)"
    elif np.max(np.abs(g)) > _GTOL:
        reason = f"the gradient is still {np.max(np.abs(g)):.3g} after {n_iter} iterations"
    elif not np.all(np.isfinite(H)):
        reason = "the Hessian at the end point is not finite"
    else:
        try:
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            reason = "the Hessian at the end point is not positive definite (a saddle or a flat ridge)"
    if reason is not None:
        params = ", ".join(f"{v:.4g}" for v in np.exp(u))
        raise ConvergenceError(
            f"{where}: the maximum-likelihood fit did not converge: {reason} (parameters reached: {params}). "
            f"{advice} Add an L2 penalty on the parameters with penalizer=0.001 to 0.1 (as lifetimes' "
            "penalizer_coef), or check the input columns."
        )
    return u, f, g, H, n_iter


def _trust_newton(lik, u0):
    """Newton's method with a trust region (scipy's ``trust-exact``) and the analytic Hessian.

    The value, gradient and Hessian come from one pass over the patterns
    (``lik._terms(u, 2)``), so each iteration costs one evaluation: from
    lifetimes' start it takes about 7 on BG/NBD, against about 30 BFGS
    evaluations plus Newton steps.  Returns ``(u, f, g, H, n_iter)`` when
    the end point is an interior optimum (finite, gradient below ``_GTOL``,
    well inside the bounds, positive definite Hessian), else None (the
    caller falls back to BFGS).
    """
    k = u0.size
    last = {}

    def full(u):
        key = u.tobytes()
        if key not in last:
            out = None
            if np.max(np.abs(u)) <= _UMAX + 5:
                f, g, H = lik._terms(u, 2)
                if np.isfinite(f) and np.all(np.isfinite(g)) and np.all(np.isfinite(H)):
                    out = (f, g, H)
            if out is None:  # outside the bounds or not finite: the trust region shrinks
                out = (np.inf, np.zeros(k), np.eye(k))
            last.clear()
            last[key] = out
        return last[key]

    try:
        res = optimize.minimize(
            lambda u: full(np.asarray(u, dtype=np.float64))[:2], u0, jac=True,
            hess=lambda u: full(np.asarray(u, dtype=np.float64))[2], method="trust-exact",
            options={"gtol": _GTOL / 10, "maxiter": 200},
        )  # fmt: skip
    except (np.linalg.LinAlgError, ValueError, ArithmeticError):
        return None
    u = np.asarray(res.x, dtype=np.float64)
    f, g, H = full(u)
    # far out (|log-parameter| > 12, a parameter beyond e^12 ~ 1.6e5 in the fit's scaled units) the optimum is
    # often a flat ridge to infinity that Newton calls converged: BFGS decides those, as before
    if not np.isfinite(f) or np.max(np.abs(u)) > 12.0 or np.max(np.abs(g)) > _GTOL:
        return None
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    return u, f, g, H, int(res.nit)


def _standard_errors(theta, H, n):
    """lifetimes' standard errors: ``theta * sqrt(diag(inv(H)) / n)``.

    ``H`` is the Hessian of the mean objective in the log-parameters: this is
    the delta method from the log scale; at an unpenalized optimum it equals
    the square root of the diagonal of the inverse observed information on
    the natural scale.
    """
    cov = np.linalg.inv(H) / n
    return theta * np.sqrt(np.maximum(np.diag(cov), 0.0))


def _dot(a, b):
    """Dot product of two 1-D arrays without BLAS (whose threads only contend on vectors)."""
    return float(np.einsum("i,i->", a, b))


def _to_log_space(th, f_nat, g_nat, H_nat=None):
    g = th * g_nat
    if H_nat is None:
        return f_nat, g
    H = H_nat * np.outer(th, th) + np.diag(g)
    return f_nat, g, H


def _one_minus_hyp(A, B, C, z, pre):
    """``pre * (1 - 2F1(A, B; C; z) * (1 - z)**A)``, elementwise, without losing digits near 0.

    Where the hypergeometric term is positive the difference is taken as
    ``-expm1(ln 2F1 + A ln(1 - z))`` (exact for small ``z``); where scipy's
    2F1 overflows, Euler's transformation ``2F1(A, B; C; z) = (1 - z)**(C - A - B)
    2F1(C - A, C - B; C; z)`` is used (as lifetimes does); where 2F1 is
    negative (``C < 0``: BG/NBD at frequency 0 with ``a + b < 1``) the
    product is formed directly: its logarithm does not exist.
    """
    A, B, C, z, pre = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (A, B, C, z, pre)))
    h = special.hyp2f1(A, B, C, z)
    l1z = np.log1p(-z)
    ln_h = np.log(h)
    out = np.array(-pre * np.expm1(ln_h + A * l1z), dtype=np.float64)
    bad = ~np.isfinite(h)
    if bad.any():
        Ab, Bb, Cb, zb = A[bad], B[bad], C[bad], z[bad]
        he = special.hyp2f1(Cb - Ab, Cb - Bb, Cb, zb)
        e = (Cb - Bb) * l1z[bad]  # ln of (1 - z)**(C - A - B) * (1 - z)**A
        out[bad] = np.where(he > 0, -pre[bad] * np.expm1(np.log(he) + e), pre[bad] * (1.0 - he * np.exp(e)))
    neg = np.isfinite(h) & (h <= 0)
    if neg.any():
        out[neg] = pre[neg] * (1.0 - h[neg] * np.exp(A[neg] * l1z[neg]))
    return out if out.ndim else out[()]


class _Likelihood:
    """Objective of a fit in log-parameters: ``_terms(u, order)`` gives (value, gradient[, Hessian])."""

    def value_grad(self, u):
        return self._terms(u, 1)

    def hessian(self, u):
        return self._terms(u, 2)[2]


class _BGNBDLikelihood(_Likelihood):
    """Mean negative log-likelihood of BG/NBD over weighted patterns, plus lifetimes' L2 penalty.

    Per pattern (x, tx, T) with weight w (Fader, Hardie & Lee 2005, eq. 6):

        LL = A12(x) + A3 + softplus(A4 - A3)   (the A4 term only when x > 0)
        A12 = lnG(r+x) - lnG(r) + r ln(alpha) + lnG(a+b) + lnG(b+x) - lnG(b) - lnG(a+b+x)
        A3  = -(r+x) ln(alpha+T)
        A4  = ln(a) - ln(b+x-1) - (r+x) ln(alpha+tx)

    A12 is summed over the distinct frequencies, the A3 sum over the distinct
    ages; only softplus(A4 - A3) is per repeat pattern.

    With ``modified=True`` it is the MBG/NBD likelihood of Batislam, Denizel &
    Filiztekin (2007) as lifetimes' ``ModifiedBetaGeoFitter`` writes it: ``b + x``
    and ``a + b + x`` become ``b + x + 1`` and ``a + b + x + 1`` in A12, A4 has
    ``ln(b + x)`` and its softplus applies to every pattern, ``x = 0`` included
    (a customer may drop out right after the first purchase).
    """

    def __init__(self, x, tx, T, w, penalizer, modified=False):
        self.kb = 1.0 if modified else 0.0
        self.N = float(w.sum())
        self.pen = float(penalizer)
        (self.ux,), self.Wx, _ = _group([x], w)
        (self.uT,), _, iT = _group([T], inverse=True)
        self.WT = np.bincount(iT, w, minlength=self.uT.size)
        self.WXT = np.bincount(iT, w * x, minlength=self.uT.size)
        pos = x >= 0 if modified else x > 0
        xp, wp = x[pos], w[pos]
        self.xp, self.wp, self.iTp = xp, wp, iT[pos]
        (self.utx,), _, self.itxp = _group([tx[pos]], inverse=True)
        (self.uxp,), _, self.ixp = _group([xp], inverse=True)
        self.wpx = wp * xp

    def _terms(self, u, order):
        r, al, a, b = th = np.exp(u)
        ux, Wx, N = self.ux, self.Wx, self.N
        lT = np.log(al + self.uT)
        ltx = np.log(al + self.utx)
        kb = self.kb
        c4 = np.log(a) - np.log(b + self.uxp - 1.0 + kb)
        rx = r + self.xp
        dl = lT[self.iTp] - ltx[self.itxp]  # ln(alpha+T) - ln(alpha+tx) >= 0
        delta = c4[self.ixp] + rx * dl  # A4 - A3
        ll = (
            _dot(Wx, special.gammaln(r + ux) + special.gammaln(b + ux + kb) - special.gammaln(a + b + ux + kb))
            + N * (-special.gammaln(r) + r * np.log(al) + special.gammaln(a + b) - special.gammaln(b))
            - r * _dot(self.WT, lT) - _dot(self.WXT, lT)
            + _dot(self.wp, np.logaddexp(0.0, delta))
        )
        pi = special.expit(delta)  # posterior weight of the "dropped out after tx" branch
        q = self.wp * pi
        iT = 1.0 / (al + self.uT)
        itx = 1.0 / (al + self.utx)
        diT = iT[self.iTp] - itx[self.itxp]  # d(A4 - A3)/d alpha = rx * diT
        qx = np.bincount(self.ixp, q, minlength=self.uxp.size)
        ib = 1.0 / (b + self.uxp - 1.0 + kb)
        psi_ab, psi_abx = special.digamma(a + b), special.digamma(a + b + ux + kb)
        qrx = q * rx
        g = np.array([
            _dot(Wx, special.digamma(r + ux)) + N * (np.log(al) - special.digamma(r)) - _dot(self.WT, lT) + _dot(q, dl),
            N * r / al - _dot(r * self.WT + self.WXT, iT) + _dot(qrx, diT),
            N * psi_ab - _dot(Wx, psi_abx) + q.sum() / a,
            N * (psi_ab - special.digamma(b)) + _dot(Wx, special.digamma(b + ux + kb) - psi_abx) - _dot(qx, ib),
        ])  # fmt: skip
        f = -ll / N + self.pen * _dot(th, th)
        gf = -g / N + 2 * self.pen * th
        if order == 1:
            return _to_log_space(th, f, gf)
        # Hessian of LL on the natural scale
        t1_ab, t1_abx = special.polygamma(1, a + b), special.polygamma(1, a + b + ux + kb)
        s = q * (1.0 - pi)  # w * pi * (1 - pi)
        gd = np.stack([dl, rx * diT, np.full(dl.size, 1.0 / a), -ib[self.ixp]])  # grad of (A4 - A3)
        H = np.empty((4, 4))
        for i in range(4):
            sg = s * gd[i]
            for j in range(i, 4):
                H[i, j] = H[j, i] = _dot(sg, gd[j])
        H[0, 1] += _dot(q, diT) - _dot(self.WT, iT) + N / al
        H[1, 1] += (
            _dot(qrx, itx[self.itxp] ** 2 - iT[self.iTp] ** 2) + _dot(r * self.WT + self.WXT, iT * iT) - N * r / al**2
        )
        H[0, 0] += _dot(Wx, special.polygamma(1, r + ux)) - N * special.polygamma(1, r)
        aa = N * t1_ab - _dot(Wx, t1_abx)
        H[2, 2] += aa - q.sum() / a**2
        H[2, 3] += aa
        H[3, 3] += aa - N * special.polygamma(1, b) + _dot(Wx, special.polygamma(1, b + ux + kb)) + _dot(qx, ib * ib)
        H[1, 0], H[3, 2] = H[0, 1], H[2, 3]
        Hf = -H / N + 2 * self.pen * np.eye(4)
        return _to_log_space(th, f, gf, Hf)

    def log_likelihood(self, u):
        return -(self._terms(u, 1)[0] - self.pen * _dot(np.exp(u), np.exp(u))) * self.N


class _GGLikelihood(_Likelihood):
    """Mean negative log-likelihood of Gamma-Gamma (Hardie's note 025, eq. 1a), plus lifetimes' L2 penalty.

        LL = lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(xm+v)

    ``pen_scale`` converts the fitted ``v`` (in scaled money units) to the unit
    of the penalty (the input's), so the penalty is lifetimes' ``p² + q² + v²``.
    """

    def __init__(self, x, m, w, penalizer, pen_scale=1.0):
        self.N = float(w.sum())
        self.pen = float(penalizer)
        self.ps = np.array([1.0, 1.0, float(pen_scale)])
        (self.ux,), self.Wx, _ = _group([x], w)
        self.xm = x * m
        self.w = w
        self.wx = w * x
        lnm = np.log(m)
        self.S = _dot(self.wx, lnm) + _dot(self.Wx, self.ux * np.log(self.ux))  # sum w x (ln m + ln x)
        self.Slnm = _dot(w, lnm)

    def _terms(self, u, order):
        p, q, v = th = np.exp(u)
        ux, Wx, N = self.ux, self.Wx, self.N
        px = p * ux
        lxv = np.log(self.xm + v)
        A = _dot(self.wx, lxv)
        B = _dot(self.w, lxv)
        ll = (
            _dot(Wx, special.gammaln(px + q) - special.gammaln(px))
            + N * (q * np.log(v) - special.gammaln(q))
            + p * self.S - self.Slnm - p * A - q * B
        )
        inv = 1.0 / (self.xm + v)
        Ai, Bi = _dot(self.wx, inv), _dot(self.w, inv)
        psi_pxq = special.digamma(px + q)
        g = np.array([
            _dot(Wx, ux * (psi_pxq - special.digamma(px))) + self.S - A,
            _dot(Wx, psi_pxq) - N * special.digamma(q) + N * np.log(v) - B,
            N * q / v - p * Ai - q * Bi,
        ])  # fmt: skip
        ths = th * self.ps
        f = -ll / N + self.pen * _dot(ths, ths)
        gf = -g / N + 2 * self.pen * th * self.ps**2
        if order == 1:
            return _to_log_space(th, f, gf)
        t1 = special.polygamma(1, px + q)
        inv2 = inv * inv
        H = np.empty((3, 3))
        H[0, 0] = _dot(Wx, ux * ux * (t1 - special.polygamma(1, px)))
        H[0, 1] = _dot(Wx, ux * t1)
        H[0, 2] = -Ai
        H[1, 1] = _dot(Wx, t1) - N * special.polygamma(1, q)
        H[1, 2] = N / v - Bi
        H[2, 2] = -N * q / v**2 + p * _dot(self.wx, inv2) + q * _dot(self.w, inv2)
        H[1, 0], H[2, 0], H[2, 1] = H[0, 1], H[0, 2], H[1, 2]
        Hf = -H / N + 2 * self.pen * np.diag(self.ps**2)
        return _to_log_space(th, f, gf, Hf)

    def log_likelihood(self, u):
        ths = np.exp(u) * self.ps
        return -(self._terms(u, 1)[0] - self.pen * _dot(ths, ths)) * self.N


def _count(total):
    t = float(total)
    return int(round(t)) if t == round(t) else t


# -- BG/NBD ----------------------------------------------------------------------------
class BetaGeo:
    """BG/NBD model of repeat purchases (lifetimes' ``BetaGeoFitter``), fitted exactly and fast.

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty ``penalizer * (r² + alpha² + a² + b²)`` added to the mean
        negative log-likelihood, exactly as lifetimes' ``penalizer_coef``
        (``alpha`` in the unit where the largest ``T`` is 1, as lifetimes
        fits it; so the penalty does not depend on the time unit).

    Attributes
    ----------
    params_ : dict
        ``r``, ``alpha``, ``a``, ``b`` (``alpha`` in the time unit of the data).
    standard_errors_ : dict
        lifetimes' standard errors: the inverse Hessian of the penalized
        negative log-likelihood in the log-parameters, carried to the natural
        scale by the delta method (``theta * sqrt(diag(inv(H)))``).  Without
        a penalizer this equals the inverse observed information on the
        natural scale at the optimum.
    log_likelihood_ : float
        Total (weighted) log-likelihood at ``params_``, without the penalty,
        in the time unit of the data.
    n_customers_ : int or float
        Customers (sum of weights) used by the fit.
    n_patterns_ : int
        Distinct ``(frequency, recency, T)`` patterns the likelihood was evaluated on.
    n_iter_ : int
        BFGS iterations plus Newton steps.

    Examples
    --------
    >>> from segone.clv import BetaGeo
    >>> bg = BetaGeo.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
    >>> round(float(bg.p_alive(2, 30.43, 38.86)), 4)
    0.7266
    >>> round(float(bg.expected_purchases(39, 2, 30.43, 38.86)), 4)
    1.226
    >>> round(float(bg.expected_purchases_new(39)), 4)
    1.1967

    Fitting (here on data drawn from the model itself):

    >>> from segone.clv import sample_bgnbd
    >>> x, tx, T = sample_bgnbd(5000, r=0.25, alpha=4.0, a=0.8, b=2.5, T=39.0, seed=1)
    >>> bg = BetaGeo().fit(x, tx, T)
    >>> sorted(bg.params_), bg.n_customers_
    (['a', 'alpha', 'b', 'r'], 5000)
    """

    _names = ("r", "alpha", "a", "b")
    _label = "BG/NBD"
    _time_params = (1,)  # indices of the parameters in units of time (scaled by the fit)
    _advice = "BG/NBD needs one-time and repeat customers of varied ages and recencies."
    _overflow_hint = "the hypergeometric term of BG/NBD overflows there (a close to 1)."

    def __init__(self, penalizer=0.0):
        self.penalizer = check_float(penalizer, "penalizer", low=0.0)

    def __repr__(self):
        name = type(self).__name__
        if not hasattr(self, "params_"):
            return f"{name}(penalizer={self.penalizer!r})"
        p = ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items())
        return f"{name}({p})"

    @classmethod
    def from_params(cls, params):
        """A model with given parameters (e.g. from ``params_`` or a run.json), without fitting."""
        out = cls()
        out.params_ = _check_params(params, cls._names, f"{cls.__name__}.from_params")
        return out

    def _likelihood(self, x, tx, t_age, w):
        return _BGNBDLikelihood(x, tx, t_age, w, self.penalizer)

    # -- fitting -------------------------------------------------------------------
    def fit(self, frequency, recency, T, weights=None):
        """Fit by maximum likelihood.

        Parameters
        ----------
        frequency : array-like
            Repeat purchase periods of each customer (``x``, whole numbers).
        recency : array-like
            Age of the customer at the last repeat purchase (``t_x``; 0 when
            ``frequency`` is 0).
        T : array-like
            Age of the customer at the end of the observation period.
        weights : array-like, optional
            Customers per row (non-negative; lifetimes' ``weights``).

        Returns
        -------
        self
        """
        where = f"{type(self).__name__}.fit"
        x, tx, t_age = _check_btyd(frequency, recency, T, where, same_length=True)
        w = None if weights is None else _check_weights(weights, x.size, where)
        (ux, utx, uT), counts, _ = _group([x, tx, t_age], w)
        return self._fit_patterns(ux, utx, uT, counts.astype(np.float64))

    def fit_histogram(self, hist):
        """Fit on a :class:`PatternHistogram` (the merged histogram of every piece of the data)."""
        if not isinstance(hist, PatternHistogram) or isinstance(hist, OpportunityHistogram):
            raise ParameterError(
                f"{type(self).__name__}.fit_histogram: expected a PatternHistogram, got {type(hist).__name__}."
            )
        x, tx, t_age, counts = hist.finish()
        return self._fit_patterns(x, tx, t_age, counts.astype(np.float64))

    def _fit_patterns(self, x, tx, t_age, w):
        where = f"{type(self).__name__}.fit"
        keep = w > 0
        if not keep.all():
            x, tx, t_age, w = x[keep], tx[keep], t_age[keep], w[keep]
        if not x.size:
            raise EmptyInputError(f"{where}: no customers (0 rows, or every weight is 0); nothing to fit.")
        n = _count(w.sum())
        if x.size < 2:
            what = "1 customer" if n == 1 else f"all {n} customers have the same pattern"
            raise DataError(
                f"{where}: {what} (frequency={x[0]:g}, recency={tx[0]:g}, T={t_age[0]:g}); the 4 {self._label} "
                "parameters cannot be estimated from one purchase pattern. Fit on a population of customers."
            )
        if not (x > 0).any():
            raise EmptyInputError(
                f"{where}: none of the {n} customers has a repeat purchase (frequency > 0); {self._label} cannot "
                "estimate purchase and drop-out rates without repeat purchases. Use a longer observation period."
            )
        t_max = float(t_age.max())
        if t_max == 0:
            raise DataError(
                f"{where}: every T is 0: the customers were observed for no time after their first purchase. "
                "Use an observation end (as_of) after the first purchases."
            )
        scale = 1.0 / t_max  # lifetimes' _scale_time: fit in units where the oldest customer is 1 old
        lik = self._likelihood(x, tx * scale, t_age * scale, w)
        u, f, g, H, n_iter = _minimize(lik, np.full(4, 0.1), where, self._advice,
                                       warm=self._warm_start(x, tx * scale, t_age * scale, w, lik))  # fmt: skip
        theta = np.exp(u)
        theta[list(self._time_params)] /= scale
        self._cov_log_ = np.linalg.inv(H) / lik.N  # covariance of the log-parameters (time unit of the data)
        self.params_ = dict(zip(self._names, map(float, theta)))
        self.standard_errors_ = dict(zip(self._names, map(float, _standard_errors(theta, H, lik.N))))
        # LL in the data's time unit: scaling times by s shifts each row's LL by -x ln(s)
        self.log_likelihood_ = float(lik.log_likelihood(u) + self._ll_shift(scale, x, w))
        self.n_customers_ = n
        self.n_patterns_ = int(x.size)
        self.n_iter_ = n_iter
        return self

    @staticmethod
    def _ll_shift(scale, x, w):
        return math.log(scale) * _dot(w, x)

    _WARM_PATTERNS = 50_000  # above this many patterns, Newton starts from the optimum of a coarse histogram
    _WARM_GRID = 64  # recency and T rounded to 1/64 of the largest T there

    def _warm_start(self, x, tx, t_age, w, lik):
        """The optimum of the same likelihood on a coarse histogram (times rounded to 1/64), or None.

        Many patterns make each Newton iteration costly; on the coarse
        histogram (about a tenth of the patterns on 1M BG/NBD draws) the
        optimum is close, so the full fit needs 2 iterations instead of
        about 7.  The start changes the path, not the end point (the same
        gradient tolerance; 1e-10 relative on those draws).
        """
        if x.size <= self._WARM_PATTERNS or not getattr(lik, "newton", True):
            return None
        g = self._WARM_GRID
        (cx, ctx, cT), cw, _ = _group([x, np.round(tx * g) / g, np.round(t_age * g) / g], w)
        np.minimum(ctx, cT, out=ctx)
        with np.errstate(all="ignore"):
            found = _trust_newton(self._likelihood(cx, ctx, cT, cw), np.full(4, 0.1))
        return None if found is None else found[0]

    # -- predictions ------------------------------------------------------------------
    def _theta(self, where):
        if not hasattr(self, "params_"):
            name = type(self).__name__
            raise NotFittedError(f"{where}: this {name} is not fitted yet; call fit() or {name}.from_params().")
        return [self.params_[k] for k in self._names]

    def _numerator(self, t, x, T):
        """Expected purchases in ``(T, T + t]`` of a customer still alive at ``T``, elementwise.

        The numerator of eq. 10 of Fader, Hardie & Lee (2005) as lifetimes
        computes it (its denominator is ``1 / p_alive``); it depends on
        ``(t, frequency, T)`` only, not on recency.
        """
        r, al, a, b = self._theta(type(self).__name__)
        C = a + b + x - 1.0
        with np.errstate(all="ignore"):
            return _one_minus_hyp(r + x, b + x, C, t / (al + T + t), C / (a - 1.0))

    def _p_alive(self, x, tx, T):
        r, al, a, b = self._theta(f"{type(self).__name__}.p_alive")
        with np.errstate(divide="ignore"):
            log_div = (r + x) * np.log1p((T - tx) / (al + tx)) + np.log(a / (b + np.maximum(x, 1.0) - 1.0))
        return np.where(x > 0, special.expit(-log_div), 1.0)

    def _finite(self, out, where, x, T):
        """``out``, or DataError naming the (frequency, T) pairs where it is not finite."""
        bad = np.flatnonzero(~np.isfinite(out.ravel()))
        if bad.size:
            xf = np.broadcast_to(x, out.shape).ravel()
            tf = np.broadcast_to(T, out.shape).ravel()
            raise DataError(
                f"{where}: predictions are not finite for {bad.size} (frequency, T) pairs (frequency: "
                f"{examples(xf[bad])}, T: {examples(tf[bad])}) with parameters {self.params_}; the "
                f"{self._overflow_hint} Refit with a penalizer."
            )
        return out

    def p_alive(self, frequency, recency, T):
        """Probability that a customer with history ``(frequency, recency, T)`` is still active.

        lifetimes' ``conditional_probability_alive`` (Hardie's note 021): 1
        for customers without a repeat purchase.

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        where = f"{type(self).__name__}.p_alive"
        self._theta(where)
        x, tx, t_age = _check_btyd(frequency, recency, T, where)
        out = self._p_alive(x, tx, t_age)
        return out if out.ndim else float(out)

    def expected_purchases(self, t, frequency, recency, T):
        """Expected repeat purchases in the next ``t`` periods, given the history.

        lifetimes' ``conditional_expected_number_of_purchases_up_to_time``
        (Fader, Hardie & Lee 2005, eq. 10).  ``t`` is in the unit of the BTYD
        columns and broadcasts against them.

        Parameters
        ----------
        t : float or array-like
            Horizon, in periods of the BTYD columns (e.g. 360 for a year in days).
        frequency, recency, T : array-like
            The customers' histories.

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        where = f"{type(self).__name__}.expected_purchases"
        self._theta(where)
        x, tx, t_age = _check_btyd(frequency, recency, T, where)
        tt = _as_float(t, "t", where)
        _check_values(tt, "t", where)
        try:
            tt, x, tx, t_age = np.broadcast_arrays(tt, x, tx, t_age)
        except ValueError:
            raise ParameterError(f"{where}: t with shape {tt.shape} does not broadcast against the columns.") from None
        shape = x.shape
        tf, xf, txf, Tf = (np.ascontiguousarray(a).ravel() for a in (tt, x, tx, t_age))
        if xf.size > 1024:  # the hypergeometric term depends on (t, x, T) only: evaluate it once per distinct triple
            (ut, ux, uT), _, inv = _group([tf, xf, Tf], inverse=True)
            num = self._finite(self._numerator(ut, ux, uT), where, ux, uT)[inv]
        else:
            num = self._finite(self._numerator(tf, xf, Tf), where, xf, Tf)
        out = (num * self._p_alive(xf, txf, Tf)).reshape(shape)  # p_alive is always in [0, 1]
        return out if out.ndim else float(out)

    def expected_purchases_new(self, t):
        """Expected repeat purchases of a new customer in ``t`` periods.

        lifetimes' ``expected_number_of_purchases_up_to_time`` (eq. 9 of Fader, Hardie & Lee 2005).

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        where = f"{type(self).__name__}.expected_purchases_new"
        self._theta(where)
        tt = _as_float(t, "t", where)
        _check_values(tt, "t", where)
        with np.errstate(all="ignore"):
            out = self._new(tt)
        out = np.where(tt == 0, 0.0, out)
        out = self._finite(np.asarray(out, dtype=np.float64), where, 0.0, 0.0)
        return out if out.ndim else float(out)

    def _new(self, t):
        r, al, a, b = self._theta("BetaGeo")
        return _one_minus_hyp(r, b, a + b - 1.0, t / (al + t), (a + b - 1.0) / (a - 1.0))

    def _value_terms(self, x, tx, T, time, discount_rate, factor):
        """Per customer: p_alive, expected purchases in ``time`` months, and the discounted sum

        ``sum_k (E[X(k f)] - E[X((k-1) f)]) / (1 + d)^k`` of lifetimes' CLV, k = 1..time.
        """
        pa = self._p_alive(x, tx, T)
        if x.size > 1024:
            (ux, uT), _, inv = _group([x, T], inverse=True)
        else:
            ux, uT, inv = x, T, None
        prev = np.zeros(ux.size)
        disc = np.zeros(ux.size)
        with np.errstate(invalid="ignore"):  # non-finite terms are reported just below
            for k in range(1, time + 1):
                cur = self._numerator(k * factor, ux, uT)
                disc += (cur - prev) / (1.0 + discount_rate) ** k
                prev = cur
        self._finite(prev, type(self).__name__, ux, uT)
        self._finite(disc, type(self).__name__, ux, uT)
        if inv is not None:
            prev, disc = prev[inv], disc[inv]
        prev *= pa
        disc *= pa
        return pa, prev, disc



# -- likelihoods with numerical derivatives ---------------------------------------------
class _NumericLikelihood(_Likelihood):
    """A likelihood whose subclass gives only the value (``_value(u)``, mean objective).

    The gradient is the central difference in each log-parameter (step
    ``_H1``), the Hessian the classic second differences (step ``_H2``); the
    mean objective is O(1) with ~1e-15 relative roundoff, so the gradient
    is good to ~1e-10 and the Hessian to ~1e-7, enough for the fit's
    convergence test (``_GTOL``) and for standard errors.
    """

    newton = False
    _H1 = 1e-5
    _H2 = 1e-4

    def _terms(self, u, order):
        u = np.asarray(u, dtype=np.float64)
        f = self._value(u)
        k = u.size
        g = np.empty(k)
        h = self._H1
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            g[i] = (self._value(u + e) - self._value(u - e)) / (2 * h)
        if order == 1:
            return f, g
        h = self._H2
        H = np.empty((k, k))
        fp, fm = np.empty(k), np.empty(k)
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            fp[i], fm[i] = self._value(u + e), self._value(u - e)
            H[i, i] = (fp[i] - 2 * f + fm[i]) / h**2
        for i in range(k):
            for j in range(i + 1, k):
                e = np.zeros(k)
                e[i] = e[j] = h
                # f(u + h ei + h ej) and f(u - h ei - h ej) with the diagonal terms: 2 evaluations per pair
                H[i, j] = H[j, i] = (self._value(u + e) - fp[i] - fp[j] + 2 * f - fm[i] - fm[j]
                                     + self._value(u - e)) / (2 * h**2)  # fmt: skip
        return f, g, H

    def log_likelihood(self, u):
        th = np.exp(u)
        return -(self._value(u) - self.pen * _dot(th, th)) * self.N


class _ParetoNBDLikelihood(_NumericLikelihood):
    """Mean negative log-likelihood of Pareto/NBD (Fader & Hardie's note 009, eq. 18).

    Per pattern, with ``I = int_tx^T (alpha+y)^-(r+x) (beta+y)^-(s+1) dy``:

        LL = lnG(r+x) - lnG(r) + r ln(alpha) + s ln(beta) + logaddexp(P1, Q)
        P1 = -(r+x) ln(alpha+T) - s ln(beta+T)
        Q  = ln(s) - ln(r+s+x) + ln A0 = ln(s I)

    with lifetimes' ``A0 = K(tx) - K(T)``.  Each ``ln K(y)`` is evaluated
    after Euler's transformation, with ``z = |alpha - beta| / (max(alpha, beta) + y)``:

        alpha <  beta: ln K = -(r+x-1) ln(alpha+y) - (s+1) ln(beta+y) + ln 2F1(1, s+1; r+s+x+1; z)
        alpha >= beta: ln K = -(r+x) ln(alpha+y) - s ln(beta+y) + ln 2F1(1, r+x; r+s+x+1; z)

    whose 2F1 has first parameter 1, positive terms and no overflow (the
    untransformed 2F1 of lifetimes grows like ``((beta+y)/(alpha+y))^(r+x-1)``
    and overflows for large frequencies); ``ln A0 = ln K(tx) +
    ln(-expm1(ln K(T) - ln K(tx)))``.  ``K(tx)`` is evaluated once per distinct
    ``(x, tx)``, ``K(T)`` and ``P1`` once per distinct ``(x, T)``.

    The gradient is analytic except for the derivatives of ``ln 2F1`` in the
    parameters, which are central differences per distinct pair (cheap: a
    few thousand pairs), carried to the patterns by the chain rule; the
    Hessian is the central difference of the gradient.

    The penalty is lifetimes' ``ParetoNBDFitter``'s on one row per customer:
    ``penalizer * sum(theta^2)`` added to the *total* negative
    log-likelihood (that fitter divides by the mean weight, not the sum).
    """

    _HF = 1e-6  # step of the differences of ln 2F1 in its parameters b and c

    def __init__(self, x, tx, T, w, penalizer):
        self.N = float(w.sum())
        self.pen = float(penalizer) / self.N
        self.w = w
        (self.ux,), self.Wx, _ = _group([x], w)
        (self.ax, self.atx), _, self.ia = _group([x, tx], inverse=True)
        (self.bx, self.bT), _, self.ib = _group([x, T], inverse=True)
        self.na, self.nb = self.ax.size, self.bx.size

    @staticmethod
    def _fparams(r, al, s, be, x, y, low):
        """(b, c, z) of the 2F1(1, b; c; z) of ln K (``low``: the alpha < beta form)."""
        if low:
            return s + 1.0, r + s + x + 1.0, (be - al) / (be + y)
        return r + x, r + s + x + 1.0, (al - be) / (al + y)

    @classmethod
    def _ln_k(cls, r, al, s, be, x, y, grad=False):
        """ln K(y) per element; with ``grad`` also its gradient in (r, alpha, s, beta), shape (4, n)."""
        low = al < be
        la, lb = np.log(al + y), np.log(be + y)
        c1, c2 = (r + x - 1.0, s + 1.0) if low else (r + x, s)
        fb, fc, z = cls._fparams(r, al, s, be, x, y, low)
        F = special.hyp2f1(1.0, fb, fc, z)
        out = -c1 * la - c2 * lb + np.log(F)
        if not grad:
            return out
        # d ln F: in z analytically (dF/dz = b/c 2F1(2, b+1; c+1; z)); in b and c by central differences
        dz = fb / fc * special.hyp2f1(2.0, fb + 1.0, fc + 1.0, z) / F
        h = cls._HF
        dfb = (np.log(special.hyp2f1(1.0, fb + h, fc, z)) - np.log(special.hyp2f1(1.0, fb - h, fc, z))) / (2 * h)
        dfc = (np.log(special.hyp2f1(1.0, fb, fc + h, z)) - np.log(special.hyp2f1(1.0, fb, fc - h, z))) / (2 * h)
        d = np.empty((4, np.size(out)))
        if low:  # z = (be - al) / (be + y): dz/dal = -1/(be + y), dz/dbe = (al + y)/(be + y)^2
            d[0] = dfc - la
            d[2] = dfb + dfc - lb
            d[1] = -dz / (be + y) - c1 / (al + y)
            d[3] = dz * (al + y) / (be + y) ** 2 - c2 / (be + y)
        else:  # z = (al - be) / (al + y): dz/dal = (be + y)/(al + y)^2, dz/dbe = -1/(al + y)
            d[0] = dfb + dfc - la
            d[2] = dfc - lb
            d[1] = dz * (be + y) / (al + y) ** 2 - c1 / (al + y)
            d[3] = -dz / (al + y) - c2 / (be + y)
        return out, d

    def _terms(self, u, order):
        if order == 2:
            return self._fd_hessian(u)
        th = np.exp(u)
        r, al, s, be = th
        ax, bx, bT = self.ax, self.bx, self.bT
        with np.errstate(all="ignore"):
            k1, dk1 = self._ln_k(r, al, s, be, ax, self.atx, grad=True)
            k2, dk2 = self._ln_k(r, al, s, be, bx, bT, grad=True)
            lab, lbb = np.log(al + bT), np.log(be + bT)
            p1 = -(r + bx) * lab - s * lbb
            rsf = r + s + ax
            qa = np.log(s) - np.log(rsf) + k1
            e = np.exp(k2[self.ib] - k1[self.ia])  # K(T) / K(tx) in [0, 1]; 1 where tx == T
            p1p = p1[self.ib]
            delta = qa[self.ia] + np.log1p(-e) - p1p  # Q - P1 (-inf where tx == T)
            e2 = np.exp(-np.abs(delta))
            ll = _dot(self.Wx, special.gammaln(r + self.ux)) + self.N * (
                -special.gammaln(r) + r * np.log(al) + s * np.log(be)) + _dot(
                self.w, p1p + np.maximum(delta, 0.0) + np.log1p(e2))
            pi = np.where(delta > 0, 1.0, e2) / (1.0 + e2)  # weight of the "died between tx and T" branch
            rho = np.where(e < 1.0, e / (1.0 - e), 0.0)
            wpi = self.w * pi
            wq = np.bincount(self.ia, wpi, minlength=self.na)
            wa = wq + np.bincount(self.ia, wpi * rho, minlength=self.na)
            wbk = np.bincount(self.ib, wpi * rho, minlength=self.nb)
            wbp = np.bincount(self.ib, self.w - wpi, minlength=self.nb)
            g = np.array([
                _dot(self.Wx, special.digamma(r + self.ux)) + self.N * (np.log(al) - special.digamma(r))
                - _dot(wq, 1.0 / rsf) - _dot(wbp, lab),
                self.N * r / al - _dot(wbp, (r + bx) / (al + bT)),
                self.N * np.log(be) + _dot(wq, 1.0 / s - 1.0 / rsf) - _dot(wbp, lbb),
                self.N * s / be - _dot(wbp, np.full(self.nb, s) / (be + bT)),
            ])  # fmt: skip
            g += dk1 @ wa - dk2 @ wbk
        f = -ll / self.N + self.pen * _dot(th, th)
        gf = -g / self.N + 2 * self.pen * th
        return _to_log_space(th, f, gf)

    def _fd_hessian(self, u):
        """(f, g, H): H is the symmetrized central difference of the gradient (step 1e-4 in u)."""
        f, g = self._terms(u, 1)
        k, h = u.size, 1e-4
        H = np.empty((k, k))
        for i in range(k):
            e = np.zeros(k)
            e[i] = h
            H[i] = (self._terms(u + e, 1)[1] - self._terms(u - e, 1)[1]) / (2 * h)
        return f, g, (H + H.T) / 2

    def _value(self, u):
        return self._terms(u, 1)[0]


# -- Pareto/NBD and MBG/NBD ----------------------------------------------------------------
class ModifiedBetaGeo(BetaGeo):
    """MBG/NBD model of repeat purchases (lifetimes' ``ModifiedBetaGeoFitter``).

    Batislam, Denizel & Filiztekin (2007): as BG/NBD, but a customer may also
    drop out right after the first purchase, so customers without a repeat
    purchase are not certainly alive (``p_alive < 1`` at frequency 0).  The
    interface, the penalizer (lifetimes' ``penalizer_coef``), the standard
    errors and the fit (the same trust-region Newton with an analytic
    Hessian on the pattern histogram) are those of :class:`BetaGeo`.

    Examples
    --------
    >>> from segone.clv import ModifiedBetaGeo
    >>> mbg = ModifiedBetaGeo.from_params({"r": 0.525, "alpha": 6.183, "a": 0.891, "b": 1.614})
    >>> round(float(mbg.p_alive(0, 0.0, 38.86)), 4)
    0.3897
    >>> round(float(mbg.expected_purchases(39, 2, 30.43, 38.86)), 4)
    1.263
    """

    _label = "MBG/NBD"
    _advice = "MBG/NBD needs one-time and repeat customers of varied ages and recencies."
    _overflow_hint = "the hypergeometric term of MBG/NBD overflows there (a close to 1)."

    def _likelihood(self, x, tx, t_age, w):
        return _BGNBDLikelihood(x, tx, t_age, w, self.penalizer, modified=True)

    def _numerator(self, t, x, T):
        r, al, a, b = self._theta("ModifiedBetaGeo")
        C = a + b + x
        with np.errstate(all="ignore"):
            return _one_minus_hyp(r + x, b + x + 1.0, C, t / (al + T + t), C / (a - 1.0))

    def _p_alive(self, x, tx, T):
        r, al, a, b = self._theta("ModifiedBetaGeo.p_alive")
        with np.errstate(divide="ignore"):
            log_div = (r + x) * np.log1p((T - tx) / (al + tx)) + np.log(a / (b + x))
        return special.expit(-log_div)

    def _new(self, t):
        r, al, a, b = self._theta("ModifiedBetaGeo")
        return _one_minus_hyp(r, b + 1.0, a + b, t / (al + t), b / (a - 1.0))


class ParetoNBD(BetaGeo):
    """Pareto/NBD model of repeat purchases (lifetimes' ``ParetoNBDFitter``).

    Schmittlein, Morrison & Colombo (1987): each customer buys at a Poisson
    rate ``lambda ~ Gamma(r, alpha)`` and has an exponential lifetime of
    rate ``mu ~ Gamma(s, beta)``; drop-out can happen at any time, not only
    after a purchase.  Parameters ``r``, ``alpha``, ``s``, ``beta``
    (``alpha`` and ``beta`` in the time unit of the data).

    The interface is that of :class:`BetaGeo`.  What differs:

    * the likelihood's hypergeometric terms are evaluated in log space after
      Euler's transformation (finite for any frequency and age; see
      ``_ParetoNBDLikelihood``), once per distinct ``(frequency, recency)``
      and ``(frequency, T)``;
    * the derivatives are numerical (central differences of the exact
      likelihood): BFGS to the same gradient tolerance, then one Hessian
      for the standard errors;
    * ``penalizer`` is lifetimes' ``ParetoNBDFitter`` ``penalizer_coef`` on
      one row per customer: ``penalizer * (r² + alpha² + s² + beta²)`` added to
      the *total* negative log-likelihood (times in units of the largest ``T``).
      lifetimes divides that total by the mean of its weights, so its fit
      with the weights trick means ``penalizer x patterns / customers``.

    lifetimes fits with Nelder-Mead from a random start (its optimum moves by
    ~1e-4 between runs); this fit converges to the gradient tolerance.

    Examples
    --------
    >>> from segone.clv import ParetoNBD
    >>> pnbd = ParetoNBD.from_params({"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669})
    >>> round(float(pnbd.p_alive(2, 30.43, 38.86)), 4)
    0.8692
    >>> round(float(pnbd.expected_purchases(39, 2, 30.43, 38.86)), 4)
    1.4551
    >>> round(float(pnbd.expected_purchases_new(39)), 4)
    1.213
    """

    _names = ("r", "alpha", "s", "beta")
    _label = "Pareto/NBD"
    _time_params = (1, 3)
    _advice = "Pareto/NBD needs one-time and repeat customers of varied ages and recencies."
    _overflow_hint = "s is close to 1 or the horizon is extreme."

    def _likelihood(self, x, tx, t_age, w):
        return _ParetoNBDLikelihood(x, tx, t_age, w, self.penalizer)

    @staticmethod
    def _ll_shift(scale, x, w):
        # times scaled by c: alpha and beta scale by c, and each row's density by c^-x (x event times)
        return math.log(scale) * _dot(w, x)

    def _p_alive(self, x, tx, T):
        r, al, s, be = self._theta("ParetoNBD.p_alive")
        with np.errstate(all="ignore"):
            k1 = _ParetoNBDLikelihood._ln_k(r, al, s, be, x, tx)
            k2 = _ParetoNBDLikelihood._ln_k(r, al, s, be, x, T)  # fmt: skip
            ln_a0 = k1 + np.log(-np.expm1(k2 - k1))
            e = np.log(s) - np.log(r + s + x) + (r + x) * np.log(al + T) + s * np.log(be + T) + ln_a0
        return special.expit(-e)

    def _numerator(self, t, x, T):
        r, al, s, be = self._theta("ParetoNBD")
        with np.errstate(all="ignore"):
            ln_ratio = np.log(be + T) - np.log(be + T + t)
            if s == 1.0:
                tail = -ln_ratio
            else:
                tail = -np.expm1((s - 1.0) * ln_ratio) / (s - 1.0)
            return (r + x) * (be + T) / (al + T) * tail

    def _new(self, t):
        r, al, s, be = self._theta("ParetoNBD")
        ln_ratio = np.log(be) - np.log(be + t)
        tail = -ln_ratio if s == 1.0 else -np.expm1((s - 1.0) * ln_ratio) / (s - 1.0)
        return r * be / al * tail


# -- BG/BB: discrete time --------------------------------------------------------------------
class _BGBBLikelihood(_NumericLikelihood):
    """Mean negative log-likelihood of BG/BB (Fader, Hardie & Shang 2010, eq. 5), plus lifetimes' L2 penalty.

    Per pattern ``(x, tx, n)``:

        LL = logaddexp(A, B)
        A  = lnB(al+x, be+n-x) - lnB(al, be) + lnB(ga, de+n) - lnB(ga, de)
        B  = logsumexp_{j=0}^{n-tx-1} [lnB(al+x, be+tx-x+j) + lnB(ga+1, de+tx+j)] - lnB(ga, de) - lnB(al, be)

    The sum runs over the flattened (pattern, j) pairs; each Beta function is
    evaluated once per distinct whole-number argument and gathered (about
    10x fewer evaluations on weekly data).  lifetimes adds
    1e-15 inside B's logarithm (a guard); here B is exact (-inf when
    ``tx == n``).
    """

    def __init__(self, x, tx, n, w, penalizer):
        self.N = float(w.sum())
        self.pen = float(penalizer)
        self.x, self.tx, self.n, self.w = x, tx, n, w
        m = (n - tx).astype(np.int64)
        self.has = m > 0
        mm = m[self.has]
        self.starts = np.concatenate([[0], np.cumsum(mm)[:-1]]).astype(np.int64)
        rep = np.repeat(np.flatnonzero(self.has), mm)
        j = np.arange(int(mm.sum())) - np.repeat(self.starts, mm)
        self.jx = x[rep]
        self.jb = (tx - x)[rep] + j  # be + tx - x + j
        self.jd = tx[rep] + j  # de + tx + j
        # the Beta functions are evaluated once per distinct argument (whole numbers repeat across patterns)
        (self.ux_, self.ub_), _, self.jxb_inv = _group([self.jx, self.jb], inverse=True)
        self.ud_, self.jd_inv = np.unique(self.jd, return_inverse=True)
        (self.ax_, self.anx_), _, self.a_inv = _group([x, n - x], inverse=True)
        self.un_, self.n_inv = np.unique(n, return_inverse=True)

    def pattern_ll(self, th):
        al, be, ga, de = th
        bab, bgd = special.betaln(al, be), special.betaln(ga, de)
        A = (special.betaln(al + self.ax_, be + self.anx_)[self.a_inv] - bab
             + special.betaln(ga, de + self.un_)[self.n_inv] - bgd)  # fmt: skip
        B = np.full(self.x.size, -np.inf)
        if self.starts.size:
            terms = (special.betaln(al + self.ux_, be + self.ub_)[self.jxb_inv]
                     + special.betaln(ga + 1.0, de + self.ud_)[self.jd_inv])  # fmt: skip
            mx = np.maximum.reduceat(terms, self.starts)
            rep = np.repeat(mx, np.diff(np.append(self.starts, terms.size)))
            B[self.has] = mx + np.log(np.add.reduceat(np.exp(terms - rep), self.starts)) - bgd - bab
        return np.logaddexp(A, B)

    def _value(self, u):
        th = np.exp(u)
        with np.errstate(all="ignore"):
            ll = _dot(self.w, self.pattern_ll(th))
        return -ll / self.N + self.pen * _dot(th, th)


class BetaGeoBetaBinom:
    """BG/BB model of discrete-time repeat transactions (lifetimes' ``BetaGeoBetaBinomFitter``).

    Fader, Hardie & Shang (2010): at each of ``n_periods`` transaction
    opportunities (e.g. yearly donation drives) an alive customer transacts
    with probability ``p ~ Beta(alpha, beta)`` and, before each, drops out
    with probability ``theta ~ Beta(gamma, delta)``.  The data per customer:
    ``frequency`` (opportunities with a transaction), ``recency`` (the last
    such opportunity, 0 without one) and ``n_periods``.

    On customer data, ``segone backtest INPUT --models bgnbd,bgbb --freq W``
    (:func:`segone.backtest` with ``models=[..., "bgbb"], freq="W"``) fits it
    with each week (or month, ``--freq M``) as one opportunity: the
    profile's ``frequency``, ``recency`` and ``T`` at the cutoff are its
    ``frequency``, ``recency`` and ``n_periods``, and it predicts the holdout
    periods with a purchase.  Daily periods are refused
    (:func:`segone.backtesting.check_discrete`), and so is ``segone run
    --value-model bgbb`` (its CLV is over months of continuous time).

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty ``penalizer * (alpha² + beta² + gamma² + delta²)`` on the mean
        negative log-likelihood (lifetimes' ``penalizer_coef``).

    Attributes
    ----------
    params_, standard_errors_, log_likelihood_, n_customers_, n_patterns_, n_iter_
        As :class:`BetaGeo` (the derivatives are numerical).

    Examples
    --------
    >>> from segone.clv import BetaGeoBetaBinom
    >>> bb = BetaGeoBetaBinom.from_params({"alpha": 1.204, "beta": 0.750, "gamma": 0.657, "delta": 2.783})
    >>> round(float(bb.p_alive(3, 4, 6)), 4)
    0.4723
    >>> round(float(bb.expected_purchases(5, 3, 4, 6)), 4)
    1.0342
    """

    _names = ("alpha", "beta", "gamma", "delta")

    def __init__(self, penalizer=0.0):
        self.penalizer = check_float(penalizer, "penalizer", low=0.0)

    def __repr__(self):
        if not hasattr(self, "params_"):
            return f"BetaGeoBetaBinom(penalizer={self.penalizer!r})"
        return "BetaGeoBetaBinom(" + ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items()) + ")"

    @classmethod
    def from_params(cls, params):
        """A model with given parameters, without fitting."""
        out = cls()
        out.params_ = _check_params(params, cls._names, "BetaGeoBetaBinom.from_params")
        return out

    def fit(self, frequency, recency, n_periods, weights=None):
        """Fit by maximum likelihood.

        Parameters
        ----------
        frequency, recency, n_periods : array-like of whole numbers
            Per customer (or per pattern with ``weights``), ``frequency <= recency <= n_periods``.
        weights : array-like, optional
            Customers per row.

        Returns
        -------
        self
        """
        where = "BetaGeoBetaBinom.fit"
        x, tx, n = _check_opportunities(frequency, recency, n_periods, where)
        w = None if weights is None else _check_weights(weights, x.size, where)
        (ux, utx, un), counts, _ = _group([x, tx, n], w)
        return self._fit_patterns(ux, utx, un, counts.astype(np.float64))

    def fit_histogram(self, hist):
        """Fit on an :class:`OpportunityHistogram`."""
        if not isinstance(hist, OpportunityHistogram):
            raise ParameterError(
                f"BetaGeoBetaBinom.fit_histogram: expected an OpportunityHistogram, got {type(hist).__name__}."
            )
        x, tx, n, counts = hist.finish()
        return self._fit_patterns(x, tx, n, counts.astype(np.float64))

    def _fit_patterns(self, x, tx, n, w):
        where = "BetaGeoBetaBinom.fit"
        keep = w > 0
        if not keep.all():
            x, tx, n, w = x[keep], tx[keep], n[keep], w[keep]
        if not x.size:
            raise EmptyInputError(f"{where}: no customers (0 rows, or every weight is 0); nothing to fit.")
        total = _count(w.sum())
        if x.size < 2:
            raise DataError(
                f"{where}: all {total} customers have the same pattern (frequency={x[0]:g}, recency={tx[0]:g}, "
                f"n_periods={n[0]:g}); the 4 BG/BB parameters cannot be estimated from one pattern."
            )
        if not (x > 0).any():
            raise EmptyInputError(
                f"{where}: none of the {total} customers has a transaction (frequency > 0); BG/BB cannot "
                "estimate transaction and drop-out rates. Use more transaction opportunities."
            )
        lik = _BGBBLikelihood(x, tx, n, w, self.penalizer)
        u, f, g, H, n_iter = _minimize(lik, np.full(4, 0.1), where,
                                       "BG/BB needs customers with varied frequencies and recencies.")  # fmt: skip
        theta = np.exp(u)
        self._cov_log_ = np.linalg.inv(H) / lik.N
        self.params_ = dict(zip(self._names, map(float, theta)))
        self.standard_errors_ = dict(zip(self._names, map(float, _standard_errors(theta, H, lik.N))))
        self.log_likelihood_ = float(lik.log_likelihood(u))
        self.n_customers_ = total
        self.n_patterns_ = int(x.size)
        self.n_iter_ = n_iter
        return self

    def _theta(self, where):
        if not hasattr(self, "params_"):
            raise NotFittedError(
                f"{where}: this BetaGeoBetaBinom is not fitted yet; call fit() or BetaGeoBetaBinom.from_params()."
            )
        return [self.params_[k] for k in self._names]

    def _inputs(self, m, frequency, recency, n_periods, where):
        self._theta(where)
        x, tx, n = _check_opportunities(frequency, recency, n_periods, where, same_length=False)
        mm = _as_float(m, "m_periods_in_future", where)
        _check_values(mm, "m_periods_in_future", where, integer=True)
        try:
            mm, x, tx, n = np.broadcast_arrays(mm, x, tx, n)
        except ValueError:
            raise ParameterError(f"{where}: m_periods_in_future does not broadcast against the columns.") from None
        shape = x.shape
        return shape, [np.ascontiguousarray(a, dtype=np.float64).ravel() for a in (mm, x, tx, n)]

    def _ll(self, x, tx, n):
        (ux, utx, un), _, inv = _group([x, tx, n], inverse=True)
        lik = _BGBBLikelihood(ux, utx, un, np.ones(ux.size), 0.0)
        with np.errstate(all="ignore"):
            return lik.pattern_ll(np.array(self._theta("BetaGeoBetaBinom")))[inv]

    def p_alive(self, frequency, recency, n_periods, m_periods_in_future=0):
        """Probability that a customer is alive at opportunity ``n_periods + m_periods_in_future``.

        lifetimes' ``conditional_probability_alive`` (Fader, Hardie & Shang 2010, eq. A10).

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        shape, (m, x, tx, n) = self._inputs(m_periods_in_future, frequency, recency, n_periods,
                                            "BetaGeoBetaBinom.p_alive")  # fmt: skip
        al, be, ga, de = self._theta("BetaGeoBetaBinom.p_alive")
        out = np.exp(special.betaln(al + x, be + n - x) - special.betaln(al, be) + special.betaln(ga, de + n + m)
                     - special.betaln(ga, de) - self._ll(x, tx, n)).reshape(shape)  # fmt: skip
        return out if out.ndim else float(out)

    def expected_purchases(self, m_periods_in_future, frequency, recency, n_periods):
        """Expected transactions in the next ``m_periods_in_future`` opportunities, given the history.

        lifetimes' ``conditional_expected_number_of_purchases_up_to_time``
        (Fader, Hardie & Shang 2010, eq. 13).

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        shape, (m, x, tx, n) = self._inputs(m_periods_in_future, frequency, recency, n_periods,
                                            "BetaGeoBetaBinom.expected_purchases")  # fmt: skip
        al, be, ga, de = self._theta("BetaGeoBetaBinom.expected_purchases")
        with np.errstate(all="ignore"):
            lead = (special.betaln(al + x + 1, be + n - x) - special.betaln(al, be) - self._ll(x, tx, n)
                    + special.gammaln(ga + de) - special.gammaln(1 + de))  # fmt: skip
            g1 = special.gammaln(1 + de + n) - special.gammaln(ga + de + n)
            g2 = special.gammaln(1 + de + n + m) - special.gammaln(ga + de + n + m)
            out = de / (ga - 1.0) * np.exp(lead + g1) * -np.expm1(g2 - g1)
        out = out.reshape(shape)
        return out if out.ndim else float(out)

    def expected_purchases_new(self, n_periods):
        """Expected transactions of a new customer in the first ``n_periods`` opportunities (eq. 8)."""
        al, be, ga, de = self._theta("BetaGeoBetaBinom.expected_purchases_new")
        n = _as_float(n_periods, "n_periods", "BetaGeoBetaBinom.expected_purchases_new")
        _check_values(n, "n_periods", "BetaGeoBetaBinom.expected_purchases_new", integer=True)
        with np.errstate(all="ignore"):
            e = (special.gammaln(ga + de) - special.gammaln(1 + de) + special.gammaln(1 + de + n)
                 - special.gammaln(ga + de + n))  # fmt: skip
            out = al / (al + be) * de / (ga - 1.0) * -np.expm1(e)
        return out if np.ndim(out) else float(out)


#: The continuous-time purchase models usable on profiles (``frequency``, ``recency``, ``T``): the name used by
#: ``--value-model`` -> class.  All share :class:`BetaGeo`'s interface (``fit``, ``fit_histogram`` on a
#: :class:`PatternHistogram`, ``p_alive``, ``expected_purchases``, ``expected_purchases_new``) and work with
#: :meth:`GammaGamma.customer_lifetime_value`.  :class:`BetaGeoBetaBinom` is for discrete-time data and is not here.
PURCHASE_MODELS = {"bgnbd": BetaGeo, "pareto": ParetoNBD, "mbgnbd": ModifiedBetaGeo}


# -- Gamma-Gamma ----------------------------------------------------------------------
class GammaGamma:
    """Gamma-Gamma model of the average order value (lifetimes' ``GammaGammaFitter``).

    Each order of a customer is ``Gamma(p, nu)``, and ``nu ~ Gamma(q, v)``
    over customers; ``monetary_value`` is the mean of a customer's
    ``frequency`` repeat orders.  Only repeat customers (``frequency > 0``)
    with ``monetary_value > 0`` enter the fit (the others are counted, see
    the module docstring).

    Parameters
    ----------
    penalizer : float, default 0.0
        L2 penalty ``penalizer * (p² + q² + v²)`` on the mean negative
        log-likelihood, exactly as lifetimes' ``penalizer_coef``.

    Attributes
    ----------
    params_ : dict
        ``p``, ``q``, ``v`` (``v`` is Fader & Hardie's gamma, in money units).
    standard_errors_ : dict
        As :attr:`BetaGeo.standard_errors_`.
    log_likelihood_ : float
    n_customers_ : int or float
        Customers used by the fit.
    n_excluded_zero_frequency_, n_excluded_nonpositive_monetary_ : int or float
        Customers left out of the fit, by reason.

    Examples
    --------
    >>> from segone.clv import BetaGeo, GammaGamma
    >>> gg = GammaGamma.from_params({"p": 6.25, "q": 3.74, "v": 15.44})
    >>> [round(float(e), 2) for e in gg.expected_order_value([0, 2], [0.0, 22.35])]
    [35.22, 24.66]
    >>> bg = BetaGeo.from_params({"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426})
    >>> clv = gg.customer_lifetime_value(bg, [2], [30.43], [38.86], [22.35], time=12, freq="W")
    >>> round(float(clv[0]), 2)
    36.29
    """

    _names = ("p", "q", "v")

    def __init__(self, penalizer=0.0):
        self.penalizer = check_float(penalizer, "penalizer", low=0.0)

    def __repr__(self):
        if not hasattr(self, "params_"):
            return f"GammaGamma(penalizer={self.penalizer!r})"
        return "GammaGamma(" + ", ".join(f"{k}={v:.4g}" for k, v in self.params_.items()) + ")"

    @classmethod
    def from_params(cls, params):
        """A model with given parameters, without fitting."""
        out = cls()
        out.params_ = _check_params(params, cls._names, "GammaGamma.from_params")
        return out

    def fit(self, frequency, monetary_value, weights=None):
        """Fit by maximum likelihood on the repeat customers with a positive monetary value.

        Parameters
        ----------
        frequency : array-like
            Repeat purchase periods (whole numbers).
        monetary_value : array-like
            Mean value of the repeat purchases (lifetimes' convention: the
            first purchase is left out).
        weights : array-like, optional
            Customers per row.

        Returns
        -------
        self
        """
        x, m, w, n0, nn = _gg_rows(frequency, monetary_value, weights, "GammaGamma.fit")
        w = np.ones(x.size) if w is None else w
        return self._fit_rows(x, m, w, n0, nn)

    def fit_histogram(self, hist):
        """Fit on a :class:`MonetaryHistogram`."""
        if not isinstance(hist, MonetaryHistogram):
            raise ParameterError(f"GammaGamma.fit_histogram: expected a MonetaryHistogram, got {type(hist).__name__}.")
        x, m, counts = hist.finish()
        return self._fit_rows(x, m, counts.astype(np.float64), hist.n_zero_frequency, hist.n_nonpositive_monetary)

    def _fit_rows(self, x, m, w, n_zero, n_nonpos):
        where = "GammaGamma.fit"
        keep = w > 0
        if not keep.all():
            x, m, w = x[keep], m[keep], w[keep]
        if not x.size:
            raise EmptyInputError(
                f"{where}: no repeat customer with a positive monetary value ({_count(n_zero)} customers with "
                f"frequency 0, {_count(n_nonpos)} repeat customers with monetary_value <= 0); the Gamma-Gamma "
                "spend model needs repeat purchases of positive value."
            )
        n = _count(w.sum())
        if float(m.min()) == float(m.max()):
            raise DataError(
                f"{where}: all {n} usable customers have the same monetary_value ({m[0]:g}); the spread of "
                "order values cannot be estimated. Fit on a population with varied order values."
            )
        scale = _dot(w, m) / float(w.sum())  # fit with money in units of the mean order value
        lik = _GGLikelihood(x, m / scale, w, self.penalizer, pen_scale=scale)
        u, f, g, H, n_iter = _minimize(
            lik, np.full(3, 0.1), where, "Gamma-Gamma needs repeat customers with varied order values.",
        )  # fmt: skip
        theta = np.exp(u)
        theta[2] *= scale
        self._cov_log_ = np.linalg.inv(H) / lik.N  # covariance of the log-parameters
        self.params_ = dict(zip(self._names, map(float, theta)))
        self.standard_errors_ = dict(zip(self._names, map(float, _standard_errors(theta, H, lik.N))))
        self.log_likelihood_ = float(lik.log_likelihood(u) - lik.N * math.log(scale))
        self.n_customers_ = n
        self.n_excluded_zero_frequency_ = _count(n_zero)
        self.n_excluded_nonpositive_monetary_ = _count(n_nonpos)
        self.n_iter_ = n_iter
        return self

    def _theta(self, where):
        if not hasattr(self, "params_"):
            raise NotFittedError(f"{where}: this GammaGamma is not fitted yet; call fit() or GammaGamma.from_params().")
        p, q, v = (self.params_[k] for k in self._names)
        if q <= 1.0:
            raise DataError(
                f"{where}: q = {q:.4g} <= 1, so the population mean order value v*p/(q-1) is not finite "
                "(the fitted spend distribution has too heavy a tail). Refit with a penalizer, or remove "
                "outlying monetary values."
            )
        return p, q, v

    def population_mean(self):
        """Mean order value of the population, ``v p / (q - 1)``."""
        p, q, v = self._theta("GammaGamma.population_mean")
        return v * p / (q - 1.0)

    def _eov(self, x, m):
        p, q, v = self._theta("GammaGamma.expected_order_value")
        wi = p * x / (p * x + q - 1.0)
        return (1.0 - wi) * (v * p / (q - 1.0)) + wi * m

    def expected_order_value(self, frequency, monetary_value):
        """Expected value of a customer's future orders (lifetimes' ``conditional_expected_average_profit``).

        A weighted mean of the customer's own ``monetary_value`` and the
        population mean; customers with ``frequency == 0`` get the
        population mean.

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        where = "GammaGamma.expected_order_value"
        self._theta(where)
        x = _as_float(frequency, "frequency", where)
        m = _as_float(monetary_value, "monetary_value", where)
        _check_values(x, "frequency", where, integer=True)
        _check_values(m, "monetary_value", where, nonneg=False)
        try:
            x, m = np.broadcast_arrays(x, m)
        except ValueError:
            raise ParameterError(
                f"{where}: frequency {x.shape} and monetary_value {m.shape} do not broadcast."
            ) from None
        out = self._eov(x, m)
        return out if out.ndim else float(out)

    def customer_lifetime_value(self, beta_geo, frequency, recency, T, monetary_value, time=12,
                                discount_rate=0.01, freq="D"):
        """Discounted value of each customer's purchases over the next ``time`` months.

        lifetimes' ``customer_lifetime_value``: for each month ``k = 1..time``
        the expected purchases in that month (differences of
        :meth:`BetaGeo.expected_purchases` at ``k`` and ``k - 1`` months,
        converted to the BTYD unit with ``FREQ_FACTORS[freq]`` periods per
        month), times the expected order value, discounted by
        ``(1 + discount_rate) ** k``.

        Parameters
        ----------
        beta_geo : BetaGeo
            A fitted purchase model.
        frequency, recency, T, monetary_value : array-like
            The BTYD columns.
        time : int, default 12
            Horizon in months.
        discount_rate : float, default 0.01
            Monthly discount rate.
        freq : {"D", "W", "M", "H"}, default "D"
            Unit of ``recency`` and ``T``: day, week, month or hour.

        Returns
        -------
        ndarray of float64 (float for scalar input)
        """
        where = "GammaGamma.customer_lifetime_value"
        if not isinstance(beta_geo, BetaGeo):  # ParetoNBD and ModifiedBetaGeo are BetaGeo subclasses
            raise ParameterError(
                f"{where}: beta_geo must be a fitted continuous-time purchase model of segone.clv "
                f"({', '.join(c.__name__ for c in PURCHASE_MODELS.values())}), got {type(beta_geo).__name__}."
            )
        beta_geo._theta(where)
        self._theta(where)
        time = check_int(time, "time", low=0)
        discount_rate = check_float(discount_rate, "discount_rate", low=0.0)
        factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
        x, tx, t_age = _check_btyd(frequency, recency, T, where)
        m = _as_float(monetary_value, "monetary_value", where)
        _check_values(m, "monetary_value", where, nonneg=False)
        try:
            x, tx, t_age, m = np.broadcast_arrays(x, tx, t_age, m)
        except ValueError:
            raise ParameterError(f"{where}: monetary_value does not broadcast against the BTYD columns.") from None
        shape = x.shape
        xf, txf, tf, mf = (np.ascontiguousarray(a).ravel() for a in (x, tx, t_age, m))
        _, _, disc = beta_geo._value_terms(xf, txf, tf, time, discount_rate, factor)
        out = (self._eov(xf, mf) * disc).reshape(shape)
        return out if out.ndim else float(out)


# -- uncertainty of segment totals ------------------------------------------------------------------
def _cov_log(model, where):
    cov = getattr(model, "_cov_log_", None)
    if cov is None:
        raise ParameterError(
            f"{where}: {type(model).__name__} has no parameter covariance (made with from_params, or fitted by "
            "an older segone); intervals need a model fitted here (fit or fit_histogram)."
        )
    return cov


def _segment_totals_fn(purchase_model, gamma_gamma, x, tx, t_age, m, seg, time, discount_rate, factor):
    """``(segments, customers per segment, u0, totals)`` for the segment totals of expected purchases (and CLV).

    ``totals(u)`` gives, for the log-parameters ``u`` (the purchase model's,
    then Gamma-Gamma's when ``gamma_gamma`` is given; ``u0`` are the fitted
    ones), the per-segment totals of expected purchases in ``time`` months,
    then of the CLV: the sums of :func:`value_piece`'s columns over each
    segment's customers.  The work is per distinct ``(pattern, segment)``
    pair (the CLV is linear in ``monetary_value``, so its sum per pair is enough).
    """
    with_clv = gamma_gamma is not None
    (px, ptx, pT, pseg), cnt, inv = _group([x, tx, t_age, seg], inverse=True)
    cnt = cnt.astype(np.float64)
    msum = np.bincount(inv, m, minlength=cnt.size) if with_clv else None
    (ux, utx, uT), _, pat = _group([px, ptx, pT], inverse=True)
    useg, sidx = np.unique(pseg, return_inverse=True)
    k_bg = len(purchase_model._names)
    u0 = np.log([purchase_model.params_[k] for k in purchase_model._names])
    if with_clv:
        u0 = np.concatenate([u0, np.log([gamma_gamma.params_[k] for k in gamma_gamma._names])])

    terms = {}  # the purchase model's terms by its log-parameters: Gamma-Gamma's derivatives reuse them

    def totals(u):
        key = tuple(u[:k_bg].tolist())
        if key not in terms:
            bg = type(purchase_model).from_params(dict(zip(purchase_model._names, np.exp(u[:k_bg]))))
            with np.errstate(all="ignore"):
                terms[key] = bg._value_terms(ux, utx, uT, time, discount_rate, factor)[1:]
        exp_p, disc = terms[key]
        out = [np.bincount(sidx, exp_p[pat] * cnt, minlength=useg.size)]
        if with_clv:
            p, q, v = np.exp(u[k_bg:])
            wx = p * px / (p * px + q - 1.0)
            eov_sum = (1.0 - wx) * (v * p / (q - 1.0)) * cnt + wx * msum
            out.append(np.bincount(sidx, disc[pat] * eov_sum, minlength=useg.size))
        return np.concatenate(out)

    n_seg = np.bincount(sidx, cnt, minlength=useg.size).astype(np.int64)
    return useg, n_seg, u0, totals


#: The level of the intervals written in segments.parquet (``total_*_lo`` / ``total_*_hi``).
INTERVAL_LEVEL = 0.9
_DELTA_STEP = 1e-5  # central differences in the log-parameters


class SegmentTotals(State):
    """Per segment: the totals of expected purchases and CLV, and the sums of their derivatives (mergeable).

    The delta method needs, per segment ``s``, the total ``T_s = sum_i
    f_i(u)`` of the customers' predictions and its gradient ``dT_s/du =
    sum_i df_i/du`` in the fitted log-parameters ``u`` (the purchase model's,
    then Gamma-Gamma's).  Both are sums over customers, so the state of a
    piece of customers holds them and states add: the same numbers on one
    process and on Dask, up to float rounding.  :meth:`finish` turns them,
    with the fits' covariance, into 90% intervals: ``T_s * exp(+-z sd_s)``
    with ``sd_s^2 = g' C g`` and ``g = (dT_s/du) / T_s`` the gradient of
    ``log T_s`` (as :func:`segment_intervals` with ``method="delta"``; the
    derivatives are central differences of step 1e-5 per customer instead
    of per total, the same to O(1e-10)).

    Customers without a purchase (null ``T``) and customers of segment -1
    add nothing (their predictions are null).

    Parameters
    ----------
    k : int
        Number of segments (rows).
    n_params : int
        Log-parameters differentiated: the purchase model's, plus 3 with CLV.
    with_clv : bool
        Whether the CLV totals are kept (a Gamma-Gamma model was fitted).

    Examples
    --------
    >>> import numpy as np, pyarrow as pa
    >>> from segone.clv import BetaGeo, SegmentTotals, sample_bgnbd
    >>> x, tx, T = sample_bgnbd(2000, r=0.3, alpha=10.0, a=0.7, b=2.5, T=52.0, seed=2)
    >>> bg = BetaGeo().fit(x, tx, T)
    >>> prof = pa.table({"frequency": x, "recency": tx, "T": T})
    >>> seg = np.arange(2000) % 2
    >>> a = SegmentTotals.of(prof.slice(0, 700), seg[:700], k=2, beta_geo=bg, horizon_months=6, freq="W")
    >>> b = SegmentTotals.of(prof.slice(700), seg[700:], k=2, beta_geo=bg, horizon_months=6, freq="W")
    >>> out = a.merge(b).finish(bg)
    >>> bool((out["total_expected_purchases_lo"] < out["total_expected_purchases"]).all()), out["total_clv"]
    (True, None)
    """

    kind = "segment_totals"

    def __init__(self, k, n_params, with_clv, customers=None, sums=None):
        self.k, self.n_params, self.with_clv = int(k), int(n_params), bool(with_clv)
        self.customers = np.zeros(self.k) if customers is None else np.asarray(customers, np.float64).reshape(self.k)
        shape = (self.k, 2, 1 + self.n_params)
        self.sums = np.zeros(shape) if sums is None else np.asarray(sums, np.float64).reshape(shape)

    @classmethod
    def empty(cls, k=1, n_params=4, with_clv=False):
        return cls(k, n_params, with_clv)

    @classmethod
    def of(cls, profiles, segments, *, k, beta_geo, gamma_gamma=None, horizon_months=12, discount_rate=0.01,
           freq="D"):  # fmt: skip
        """The totals and derivative sums of one piece: ``profiles`` (BTYD columns) and each row's segment.

        ``beta_geo`` and ``gamma_gamma`` are the fitted models the piece's
        predictions were made with (:func:`fit_value`); without
        ``gamma_gamma`` (or without a ``monetary_value`` column) only the
        expected purchases are totalled.
        """
        where = "SegmentTotals.of"
        if not isinstance(beta_geo, BetaGeo):
            raise ParameterError(f"{where}: beta_geo must be a fitted continuous-time purchase model, got "
                                 f"{type(beta_geo).__name__}.")  # fmt: skip
        k = check_int(k, "k", low=1)
        factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
        with_clv = gamma_gamma is not None and "monetary_value" in profiles.column_names
        n_params = len(beta_geo._names) + (len(gamma_gamma._names) if with_clv else 0)
        out = cls(k, n_params, with_clv)
        seg = np.asarray(segments)
        if seg.shape != (profiles.num_rows,):
            raise ParameterError(f"{where}: give one segment per profile row ({profiles.num_rows}), got shape "
                                 f"{seg.shape}.")  # fmt: skip
        if not profiles.num_rows:
            return out
        c = _table_columns(profiles, ["frequency", "recency", "T", "monetary_value"], where,
                           optional=("monetary_value",))  # fmt: skip
        (x, _), (tx, _), (t_age, tmask) = c["frequency"], c["recency"], c["T"]
        keep = seg >= 0
        if tmask is not None:
            keep &= ~tmask
        if not keep.any():
            return out
        seg = seg[keep].astype(np.int64)
        if seg.max() >= k:
            raise ParameterError(f"{where}: segments must lie in -1..{k - 1}; found {seg.max()}.")
        m = c["monetary_value"][0][keep] if with_clv else np.zeros(int(keep.sum()))
        useg, n_seg, u0, totals = _segment_totals_fn(beta_geo, gamma_gamma if with_clv else None, x[keep],
                                                     tx[keep], t_age[keep], m, seg, horizon_months,
                                                     discount_rate, factor)  # fmt: skip
        ns = useg.size
        useg = useg.astype(np.int64)
        point = totals(u0)
        out.customers[useg] = n_seg
        out.sums[useg, 0, 0] = point[:ns]
        if with_clv:
            out.sums[useg, 1, 0] = point[ns:]
        for i in range(u0.size):
            e = np.zeros(u0.size)
            e[i] = _DELTA_STEP
            d = (totals(u0 + e) - totals(u0 - e)) / (2 * _DELTA_STEP)
            out.sums[useg, 0, 1 + i] = d[:ns]
            if with_clv:
                out.sums[useg, 1, 1 + i] = d[ns:]
        return out

    @classmethod
    def of_assigned(cls, profiles, assignments, **kwargs):
        """:meth:`of` with the segments read from an assignments piece's ``segment`` column (the run's stage)."""
        seg = assignments.column("segment")
        if seg.null_count:
            import pyarrow.compute as pc

            seg = pc.fill_null(seg, -1)
        return cls.of(profiles, np.asarray(seg.to_numpy(zero_copy_only=False), dtype=np.int64), **kwargs)

    def merge(self, other):
        self._check_same(other, "k", "n_params", "with_clv")
        return SegmentTotals(self.k, self.n_params, self.with_clv, self.customers + other.customers,
                             self.sums + other.sums)  # fmt: skip

    def merge_segments(self, mapping):
        """The state of the segments after ``mapping`` (old -> new id, -1: withheld), as the segment table merges.

        Totals and derivative sums add, so the result is exact.

        Examples
        --------
        >>> s = SegmentTotals(3, 4, False, customers=[5, 1, 2])
        >>> s.merge_segments([0, 0, -1]).customers.tolist()
        [6.0]
        """
        mapping = np.asarray(mapping, dtype=np.int64)
        if mapping.shape != (self.k,):
            raise ParameterError(f"mapping has shape {mapping.shape}; give one new id per segment ({self.k}).")
        keep = mapping >= 0
        k2 = int(mapping[keep].max()) + 1 if keep.any() else 0
        out = SegmentTotals(k2, self.n_params, self.with_clv)
        np.add.at(out.customers, mapping[keep], self.customers[keep])
        np.add.at(out.sums, mapping[keep], self.sums[keep])
        return out

    def finish(self, beta_geo=None, gamma_gamma=None, level=INTERVAL_LEVEL):
        """Per segment: ``total_expected_purchases`` and ``total_clv`` with ``_lo`` / ``_hi`` (None: no CLV).

        ``beta_geo`` and ``gamma_gamma`` are the models the state was built
        with: their parameter covariance (``_cov_log_``, the inverse Hessian
        of the fit) gives the intervals.  A segment without a customer with a
        prediction gets NaN (null in the outputs).
        """
        where = "SegmentTotals.finish"
        level = check_float(level, "level", low=0.0, high=1.0, low_inclusive=False)
        if level == 1.0:
            raise ParameterError(f"{where}: level must be < 1 (a probability), got 1.")
        covs = [_cov_log(beta_geo, where)]
        if self.with_clv:
            covs.append(_cov_log(gamma_gamma, where))
        cov = covs[0] if len(covs) == 1 else np.block(
            [[covs[0], np.zeros((covs[0].shape[0], 3))], [np.zeros((3, covs[0].shape[0])), covs[1]]])
        if cov.shape != (self.n_params, self.n_params):
            raise ParameterError(f"{where}: the models have {cov.shape[0]} parameters, the state {self.n_params}.")
        z = special.ndtri(0.5 + level / 2)
        out = {}
        for t, name in enumerate(("expected_purchases", "clv")):
            key = f"total_{name}"
            if t == 1 and not self.with_clv:
                out[key] = out[f"{key}_lo"] = out[f"{key}_hi"] = None
                continue
            total, grad = self.sums[:, t, 0], self.sums[:, t, 1:]
            with np.errstate(divide="ignore", invalid="ignore"):
                g = grad / total[:, None]
                sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", g, cov, g), 0.0))
                lo, hi = total * np.exp(-z * sd), total * np.exp(z * sd)
            zero, none = total == 0, self.customers == 0
            lo, hi = np.where(zero, 0.0, lo), np.where(zero, 0.0, hi)
            total = np.where(none, np.nan, total)
            lo, hi = np.where(none, np.nan, lo), np.where(none, np.nan, hi)
            out[key], out[f"{key}_lo"], out[f"{key}_hi"] = total, lo, hi
        return out

    def _data(self):
        return {"k": self.k, "n_params": self.n_params, "with_clv": self.with_clv,
                "customers": array_to_data(self.customers), "sums": array_to_data(self.sums)}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["k"], d["n_params"], d["with_clv"], array_from_data(d["customers"], "customers"),
                   array_from_data(d["sums"], "sums"))  # fmt: skip


def with_interval_columns(segments, totals, beta_geo=None, gamma_gamma=None, *, mapping=None, reason=None,
                          level=INTERVAL_LEVEL):  # fmt: skip
    """The segment table with the intervals of its predicted totals, and what run.json says of them.

    Appends :data:`segone.outputs.SEGMENT_INTERVAL_COLUMNS`
    (``total_expected_purchases_lo`` / ``_hi``, ``total_clv_lo`` / ``_hi``)
    from a merged :class:`SegmentTotals`; ``mapping`` (old -> new segment,
    -1: withheld) is the merge of small segments the table went through.
    With ``totals=None`` (the value model was skipped; ``reason`` says why)
    the columns are null, as the CLV columns are when only Gamma-Gamma was
    skipped.  Segments below the minimum size are suppressed afterwards with
    the rest of their row (:func:`segone.privacy.suppress_segment_table`).

    Returns
    -------
    (pyarrow.Table, dict)
        The table and ``{"level", "method", "skipped"}`` for run.json's ``clv.intervals``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t, info = with_interval_columns(pa.table({"segment": [0, 1]}), None, reason="no purchase model")
    >>> t.column("total_clv_lo").null_count, info["skipped"]
    (2, 'no purchase model')
    """
    import pyarrow as pa

    from segone.outputs import SEGMENT_INTERVAL_COLUMNS

    n = segments.num_rows
    info = {"level": level, "method": "delta method on the log of each segment total, from the value models' "
            "parameter covariance (estimation uncertainty only, not the customers' own randomness)",
            "skipped": reason}  # fmt: skip
    cols = dict.fromkeys(SEGMENT_INTERVAL_COLUMNS)
    if totals is not None:
        if mapping is not None:
            totals = totals.merge_segments(mapping)
        if totals.k != n:
            raise ParameterError(f"with_interval_columns: {totals.k} segments in the totals, {n} rows in the table.")
        got = totals.finish(beta_geo, gamma_gamma, level)
        for name in cols:
            v = got[name]
            cols[name] = None if v is None else pa.array(v, mask=~np.isfinite(v))
        if not totals.with_clv:
            info["skipped"] = "no spend model (see clv.skipped.gamma_gamma): the CLV intervals are empty"
    for name, col in cols.items():
        segments = segments.append_column(name, pa.nulls(n, pa.float64()) if col is None else col)
    return segments, info


def segment_intervals(purchase_model, frequency, recency, T, segments, *, gamma_gamma=None, monetary_value=None,
                      time=12, discount_rate=0.01, freq="D", level=0.9, method="delta", n_draws=500,
                      random_state=0):  # fmt: skip
    """Per-segment totals of expected purchases (and CLV) with intervals from the parameter covariance.

    The totals are those of :func:`predict_value` summed over each segment's
    customers: expected purchases in the next ``time`` months and, with a
    fitted ``gamma_gamma`` and ``monetary_value``, the CLV.  The intervals
    express the estimation uncertainty of the fitted parameters (not the
    randomness of the customers' future purchases): the log-parameters are
    asymptotically normal with the covariance of the fit (the inverse
    Hessian behind ``standard_errors_``; the purchase and spend fits are
    independent, so the joint covariance is block diagonal).

    * ``method="delta"`` (default): the delta method on the logarithm of
      each total (central differences in the log-parameters), so the
      interval is ``total * exp(+-z sd)``, positive and asymmetric.
    * ``method="draws"``: ``n_draws`` parameter vectors drawn from that
      normal; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2``
      quantiles of the totals.

    Parameters
    ----------
    purchase_model : BetaGeo, ParetoNBD or ModifiedBetaGeo
        Fitted (with ``fit`` or ``fit_histogram``).
    frequency, recency, T : array-like
        The customers' BTYD columns.
    segments : array-like of int
        Each customer's segment.
    gamma_gamma : GammaGamma, optional
        Fitted spend model; with ``monetary_value`` the CLV totals are added.
    monetary_value : array-like, optional
    time, discount_rate, freq
        As :func:`predict_value` (``horizon_months``, ``discount_rate``, ``freq``).
    level : float, default 0.9
    method : {"delta", "draws"}
    n_draws : int, default 500
    random_state : int, Generator or None
        Seed of the draws.

    Returns
    -------
    dict of ndarray
        ``segment``, ``n_customers``, ``expected_purchases`` with
        ``expected_purchases_low`` / ``_high``, and with a spend model
        ``clv``, ``clv_low``, ``clv_high``; one entry per distinct segment, sorted.

    Examples
    --------
    >>> import numpy as np
    >>> from segone.clv import BetaGeo, sample_bgnbd, segment_intervals
    >>> x, tx, T = sample_bgnbd(2000, r=0.3, alpha=10.0, a=0.7, b=2.5, T=52.0, seed=2)
    >>> bg = BetaGeo().fit(x, tx, T)
    >>> out = segment_intervals(bg, x, tx, T, np.arange(2000) % 2, time=6, freq="W")
    >>> out["segment"].tolist(), bool((out["expected_purchases_low"] < out["expected_purchases"]).all())
    ([0, 1], True)
    """
    where = "segment_intervals"
    if not isinstance(purchase_model, BetaGeo):
        raise ParameterError(
            f"{where}: purchase_model must be a fitted {', '.join(c.__name__ for c in PURCHASE_MODELS.values())}, "
            f"got {type(purchase_model).__name__}."
        )
    purchase_model._theta(where)
    covs = [_cov_log(purchase_model, where)]
    level = check_float(level, "level", low=0.0, high=1.0, low_inclusive=False)
    if level == 1.0:
        raise ParameterError(f"{where}: level must be < 1 (a probability), got 1.")
    method = check_choice(method, "method", ("delta", "draws"))
    time = check_int(time, "time", low=0)
    discount_rate = check_float(discount_rate, "discount_rate", low=0.0)
    factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
    x, tx, t_age = _check_btyd(frequency, recency, T, where, same_length=True)
    seg = _as_float(segments, "segments", where)
    if seg.shape != x.shape:
        raise ParameterError(f"{where}: segments must have one value per customer ({x.size}), got shape {seg.shape}.")
    _check_values(seg, "segments", where, nonneg=False, integer=True)
    with_clv = gamma_gamma is not None
    if with_clv:
        if not isinstance(gamma_gamma, GammaGamma) or monetary_value is None:
            raise ParameterError(f"{where}: the CLV totals need a fitted GammaGamma and the monetary_value column.")
        gamma_gamma._theta(where)
        covs.append(_cov_log(gamma_gamma, where))
        m = _as_float(monetary_value, "monetary_value", where)
        if m.shape != x.shape:
            raise ParameterError(f"{where}: monetary_value must have one value per customer ({x.size}).")
        _check_values(m, "monetary_value", where, nonneg=False)
    else:
        m = np.zeros(x.size)
    if not x.size:
        raise EmptyInputError(f"{where}: no customers.")
    useg, n_seg, u0, totals = _segment_totals_fn(purchase_model, gamma_gamma if with_clv else None, x, tx, t_age, m,
                                                 seg, time, discount_rate, factor)  # fmt: skip
    k_bg = len(purchase_model._names)
    cov = covs[0] if len(covs) == 1 else np.block([[covs[0], np.zeros((k_bg, 3))], [np.zeros((3, k_bg)), covs[1]]])

    point = totals(u0)
    z = special.ndtri(0.5 + level / 2)
    if method == "delta":
        h = 1e-5
        J = np.empty((point.size, u0.size))
        for i in range(u0.size):
            e = np.zeros(u0.size)
            e[i] = h
            with np.errstate(divide="ignore", invalid="ignore"):
                J[:, i] = (np.log(totals(u0 + e)) - np.log(totals(u0 - e))) / (2 * h)
        sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", J, cov, J), 0.0))
        low, high = point * np.exp(-z * sd), point * np.exp(z * sd)
    else:
        n_draws = check_int(n_draws, "n_draws", low=2)
        rng = check_random_state(random_state)
        draws = rng.multivariate_normal(u0, cov, size=n_draws, method="eigh")
        tot = np.array([totals(d) for d in draws])
        low, high = np.quantile(tot, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    bad = ~(np.isfinite(point) & np.isfinite(low) & np.isfinite(high))
    if bad.any():
        raise DataError(
            f"{where}: the totals or their intervals are not finite for {int(bad.sum())} segment(s); the fitted "
            f"parameters make the predictions overflow ({PENALIZER_ADVICE})."
        )
    ns = useg.size
    out = {"segment": useg.astype(np.int64), "n_customers": n_seg,
           "expected_purchases": point[:ns], "expected_purchases_low": low[:ns],
           "expected_purchases_high": high[:ns]}  # fmt: skip
    if with_clv:
        out.update(clv=point[ns:], clv_low=low[ns:], clv_high=high[ns:])
    return out


# -- sampling --------------------------------------------------------------------------
def sample_bgnbd(n, r, alpha, a, b, T, seed=None):
    """Draw ``(frequency, recency, T)`` of ``n`` customers from the BG/NBD process.

    Each customer buys at rate ``lambda ~ Gamma(r, rate alpha)`` from time 0
    (the first purchase) and after each repeat purchase drops out with
    probability ``p ~ Beta(a, b)``; observation ends at age ``T``.  Exact and
    vectorised: the number of purchases in ``(0, T]`` is
    ``min(Poisson(lambda T), Geometric(p))`` and the last one, the ``x``-th of
    ``N`` uniform arrival times, is ``T * Beta(x, N - x + 1)``.

    Parameters
    ----------
    n : int
    r, alpha, a, b : float > 0
    T : float or array-like of n floats >= 0
        Age of each customer at the end of observation.
    seed : None, int or numpy.random.Generator

    Returns
    -------
    frequency, recency, T : ndarray of float64

    Examples
    --------
    >>> x, tx, T = sample_bgnbd(1000, r=0.25, alpha=4.0, a=0.8, b=2.5, T=39.0, seed=0)
    >>> bool((tx <= T).all() and (tx[x == 0] == 0).all())
    True
    """
    n = check_int(n, "n", low=0)
    named = ((r, "r"), (alpha, "alpha"), (a, "a"), (b, "b"))
    r, alpha, a, b = (check_float(v, k, low=0.0, low_inclusive=False) for v, k in named)
    t_age = np.array(np.broadcast_to(_as_float(T, "T", "sample_bgnbd"), (n,)), dtype=np.float64)
    _check_values(t_age, "T", "sample_bgnbd")
    rng = check_random_state(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    N = rng.poisson(lam * t_age)
    J = rng.geometric(np.maximum(p, 1e-12))  # index of the repeat purchase after which the customer drops out
    x = np.minimum(N, J)
    tx = np.zeros(n)
    pos = x > 0
    tx[pos] = t_age[pos] * rng.beta(x[pos], N[pos] - x[pos] + 1)
    return x.astype(np.float64), tx, t_age


def sample_gamma_gamma(frequency, p, q, v, seed=None):
    """Draw each customer's mean repeat order value from the Gamma-Gamma model.

    ``nu ~ Gamma(q, rate v)`` per customer, orders ``~ Gamma(p, rate nu)``; the
    mean of ``frequency`` orders is ``Gamma(p x, rate nu x)``.  Customers with
    ``frequency == 0`` get 0 (lifetimes' convention).

    Examples
    --------
    >>> m = sample_gamma_gamma([0, 1, 5], p=6.0, q=4.0, v=15.0, seed=0)
    >>> bool(m[0] == 0 and (m[1:] > 0).all())
    True
    """
    x = _as_float(frequency, "frequency", "sample_gamma_gamma")
    _check_values(x, "frequency", "sample_gamma_gamma", integer=True)
    p, q, v = (check_float(val, k, low=0.0, low_inclusive=False) for val, k in ((p, "p"), (q, "q"), (v, "v")))
    rng = check_random_state(seed)
    x = x.ravel()
    nu = rng.gamma(q, 1.0 / v, x.size)
    m = np.zeros(x.size)
    pos = x > 0
    m[pos] = rng.gamma(p * x[pos], 1.0 / (nu[pos] * x[pos]))
    return m


# -- one call for a profile table ----------------------------------------------------------
def predict_value(profiles, *, horizon_months=12, discount_rate=0.01, freq="D", penalizer=0.0,
                  gg_penalizer=0.0, id_column=None):
    """Fit BG/NBD and Gamma-Gamma on a profile table and predict every customer's value.

    Parameters
    ----------
    profiles : pyarrow.Table or RecordBatch
        One row per customer with ``frequency``, ``recency``, ``T`` and
        (optionally) ``monetary_value`` columns, as written by
        :func:`segone.build_profiles` (days).
    horizon_months : int, default 12
        Horizon of ``expected_purchases`` and ``clv``, in months.
    discount_rate : float, default 0.01
        Monthly discount rate of the CLV.
    freq : {"D", "W", "M", "H"}, default "D"
        Unit of ``recency`` and ``T`` (``FREQ_FACTORS[freq]`` periods per month).
    penalizer, gg_penalizer : float, default 0.0
        L2 penalizers of the BG/NBD and Gamma-Gamma fits.
    id_column : str, optional
        A column copied first into the output (e.g. ``"customer_id"``).

    Returns
    -------
    table : pyarrow.Table
        One row per input row, in the same order, with float64 columns
        ``expected_purchases`` (in the next ``horizon_months`` months),
        ``p_alive``, ``expected_order_value`` and ``clv``.
    info : dict
        JSON-safe: both models' parameters, standard errors,
        log-likelihoods and customer counts, the horizon and discount rate,
        and ``skipped`` (what was left out and why).

    Notes
    -----
    Defined behaviour:

    * rows with a null ``T`` (customers without a purchase yet) are left out
      of the fits and get nulls in every output column;
      ``info["skipped"]["rows_without_purchase"]`` counts them;
    * any other null, NaN, infinite or negative BTYD value raises
      :class:`~segone.errors.DataError`; a failed BG/NBD fit raises (there is
      nothing to predict without it);
    * when the Gamma-Gamma model cannot be used (no ``monetary_value``
      column, no repeat customer with a positive monetary value, a fit that
      does not converge, or ``q <= 1``) ``expected_order_value`` and ``clv``
      are null and ``info["skipped"]["gamma_gamma"]`` says why; the purchase
      predictions are still returned.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.clv import predict_value, sample_bgnbd, sample_gamma_gamma
    >>> x, tx, T = sample_bgnbd(3000, r=0.3, alpha=40.0, a=0.5, b=2.0, T=365.0, seed=3)
    >>> m = sample_gamma_gamma(x, p=6.0, q=4.0, v=15.0, seed=4)
    >>> table = pa.table({"frequency": x, "recency": tx, "T": T, "monetary_value": m})
    >>> out, info = predict_value(table, horizon_months=6)
    >>> out.column_names
    ['expected_purchases', 'p_alive', 'expected_order_value', 'clv']
    >>> out.num_rows, info["bg_nbd"]["n_customers"], info["skipped"]["gamma_gamma"]
    (3000, 3000, None)
    """
    import pyarrow as pa

    where = "predict_value"
    if not is_arrow_tabular(profiles):
        raise ParameterError(
            f"{where}: profiles must be a pyarrow Table or RecordBatch, got {type(profiles).__name__}."
        )
    horizon_months = check_int(horizon_months, "horizon_months", low=0)
    discount_rate = check_float(discount_rate, "discount_rate", low=0.0)
    factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
    bg, gg = BetaGeo(penalizer), GammaGamma(gg_penalizer)
    if id_column is not None and id_column not in profiles.column_names:
        raise SchemaError(f"{where}: id_column {id_column!r} is not a column of the table.")
    btyd = ["frequency", "recency", "T", "monetary_value"]
    cols = _table_columns(profiles, btyd, where, optional=("monetary_value",))
    for name in ("frequency", "recency", "monetary_value"):
        if cols[name][1] is not None:
            rows = np.flatnonzero(cols[name][1])
            raise DataError(
                f"{where}: column {name!r} has {rows.size} null values (first rows: {examples(rows)}); only T may "
                "be null (customers without a purchase); fill or drop them first."
            )
    n_rows = profiles.num_rows
    (x, _), (tx, _), (t_age, tmask) = cols["frequency"], cols["recency"], cols["T"]
    m = cols["monetary_value"][0]
    keep = None
    if tmask is not None:
        keep = ~tmask
        x, tx, t_age = x[keep], tx[keep], t_age[keep]
        m = None if m is None else m[keep]
    x, tx, t_age = _check_btyd(x, tx, t_age, where, same_length=True)

    (ux, utx, uT), counts, _ = _group([x, tx, t_age])
    bg._fit_patterns(ux, utx, uT, counts.astype(np.float64))
    pa_, exp_p, disc = bg._value_terms(x, tx, t_age, horizon_months, discount_rate, factor)

    gg_info, skip_gg, eov, clv = None, None, None, None
    if m is None:
        skip_gg = "no monetary_value column: the Gamma-Gamma spend model and the CLV need it"
    else:
        gx, gm, _, n0, nn = _gg_rows(x, m, None, where)  # bad values raise here
        try:
            gg._fit_rows(gx, gm, np.ones(gx.size), n0, nn)
        except (DataError, ConvergenceError) as exc:  # no usable customer, degenerate data, no convergence
            skip_gg = str(exc)
        else:
            gg_info = {
                "params": gg.params_,
                "standard_errors": gg.standard_errors_,
                "log_likelihood": gg.log_likelihood_,
                "n_customers": gg.n_customers_,
                "excluded_zero_frequency": gg.n_excluded_zero_frequency_,
                "excluded_nonpositive_monetary": gg.n_excluded_nonpositive_monetary_,
                "penalizer": gg.penalizer,
                "n_iter": gg.n_iter_,
            }
            if gg.params_["q"] <= 1.0:
                skip_gg = (
                    f"Gamma-Gamma q = {gg.params_['q']:.4g} <= 1: the population mean order value v*p/(q-1) is "
                    "not finite; refit with gg_penalizer > 0 or remove outlying monetary values"
                )
            else:
                eov = gg._eov(x, m)
                clv = eov * disc

    def column(v):
        if v is None:
            return pa.nulls(n_rows, pa.float64())
        if keep is None:
            return pa.array(v)
        full = np.zeros(n_rows)
        full[keep] = v
        return pa.array(full, mask=~keep)

    names = ["expected_purchases", "p_alive", "expected_order_value", "clv"]
    arrays = [column(v) for v in (exp_p, pa_, eov, clv)]
    if id_column is not None:
        names.insert(0, id_column)
        arrays.insert(0, profiles.column(id_column))
    info = {
        "model": "BG/NBD + Gamma-Gamma (lifetimes definitions)",
        "freq": freq,
        "periods_per_month": factor,
        "horizon_months": horizon_months,
        "horizon_periods": horizon_months * factor,
        "discount_rate": discount_rate,
        "rows": n_rows,
        "bg_nbd": {
            "params": bg.params_,
            "standard_errors": bg.standard_errors_,
            "log_likelihood": bg.log_likelihood_,
            "n_customers": bg.n_customers_,
            "n_patterns": bg.n_patterns_,
            "penalizer": bg.penalizer,
            "n_iter": bg.n_iter_,
        },
        "gamma_gamma": gg_info,
        "skipped": {
            "rows_without_purchase": int(n_rows - x.size),
            "gamma_gamma": skip_gg,
        },
    }
    return pa.table(dict(zip(names, arrays))), info


# ------------------------------------------------------------- the PREDICT stage
class ValueState(State):
    """The PREDICT stage's mergeable state: the BG/NBD pattern histogram and the Gamma-Gamma one.

    ``ValueState.of(profiles)`` reads the BTYD columns of one piece of
    profiles; states of customer-disjoint pieces merge exactly.
    :func:`fit_value` turns the merged state into the two fitted models and
    :func:`value_piece` predicts per piece, so the stage runs the same in one
    process and on Dask.
    """

    kind = "value_state"

    def __init__(self, patterns, monetary):
        self.patterns, self.monetary = patterns, monetary

    @classmethod
    def of(cls, profiles):
        pat = PatternHistogram.of(profiles)
        mon = MonetaryHistogram.empty()
        if "monetary_value" in profiles.column_names:
            t = profiles.select(["frequency", "monetary_value", "T"])
            if t.column("T").null_count:
                import pyarrow.compute as pc

                t = t.filter(pc.is_valid(t.column("T")))
            mon = MonetaryHistogram.of(t.select(["frequency", "monetary_value"]))
        return cls(pat, mon)

    def merge(self, other):
        self._check_same(other)
        return ValueState(self.patterns.merge(other.patterns), self.monetary.merge(other.monetary))

    def finish(self, **kwargs):
        return fit_value(self, **kwargs)

    def _data(self):
        return {"patterns": self.patterns.to_dict(), "monetary": self.monetary.to_dict()}

    @classmethod
    def _from_data(cls, d):
        return cls(PatternHistogram.from_dict(d["patterns"]), MonetaryHistogram.from_dict(d["monetary"]))


class _Unpredictable(DataError):
    """A fitted value model whose predictions leave the float64 range (internal: fit_value skips or refits it)."""


PENALIZER_ADVICE = ("give a penalizer (segone run --value-penalizer 0.01, or value_penalizer=0.01 in segone.run; "
                    "lifetimes' penalizer_coef), or cap outlying purchase counts and amounts")  # fmt: skip


def check_penalizer(value, name="value_penalizer"):
    """A penalizer as a finite float >= 0 (lifetimes' ``penalizer_coef``), or ParameterError naming ``name``."""
    return check_float(value, name, low=0.0)


def _check_predictions(bg, gg, state, horizon_months, discount_rate, factor):
    """Raise :class:`_Unpredictable` when a fitted model's predictions overflow for a pattern of the data.

    The pattern histograms hold every distinct ``(frequency, recency, T)``
    and ``(frequency, monetary_value)`` of the base, so this checks exactly
    the values :func:`value_piece` will compute (for Gamma-Gamma, the CLV
    bound ``max eov x max discounted purchases`` per frequency).
    """
    x, tx, t_age, _ = state.patterns.finish()
    if bg is not None and x.size:
        try:
            with np.errstate(all="ignore"):
                p_alive, _, disc = bg._value_terms(x, tx, t_age, horizon_months, discount_rate, factor)
        except DataError as exc:
            raise _Unpredictable(
                f"the BG/NBD predictions overflow ({exc}); the expected-purchase, p_alive and CLV columns are left "
                f"empty: {PENALIZER_ADVICE}."
            ) from None
        if not np.isfinite(p_alive).all():
            raise _Unpredictable(f"the BG/NBD probability alive is not finite for some customers; {PENALIZER_ADVICE}.")
        if gg is not None:
            mx, mm, _ = state.monetary.finish()
            with np.errstate(all="ignore"):
                eov = gg._eov(mx, mm)
            if not np.isfinite(eov).all():
                bad = np.flatnonzero(~np.isfinite(eov))
                raise _Unpredictable(
                    f"the Gamma-Gamma expected order value overflows for {bad.size} (frequency, monetary_value) "
                    f"patterns (monetary_value: {examples(mm[bad])}); the CLV is left empty: {PENALIZER_ADVICE}."
                )
            if mx.size:  # the largest CLV per frequency: max eov x max discounted purchases
                ux, inv = np.unique(mx, return_inverse=True)
                top_eov = np.zeros(ux.size)
                np.maximum.at(top_eov, inv, np.abs(eov))
                xs, xinv = np.unique(x, return_inverse=True)
                d_max = np.zeros(xs.size)
                np.maximum.at(d_max, xinv, np.abs(disc))
                pos = np.minimum(np.searchsorted(xs, ux), xs.size - 1)
                top_disc = np.where(xs[pos] == ux, d_max[pos], 0.0)
                with np.errstate(over="ignore", invalid="ignore"):
                    worst = top_eov * top_disc
                if not np.isfinite(worst).all():
                    raise _Unpredictable(
                        f"the CLV (expected order value x discounted purchases) overflows for frequencies "
                        f"{examples(ux[~np.isfinite(worst)])}; the CLV is left empty: {PENALIZER_ADVICE}."
                    )


def fit_with_fallback(model_cls, hist, penalizer=0.0, fallback_penalizer=1e-3):
    """Fit ``model_cls(penalizer)`` on a histogram; an unpenalized fit that fails is retried once, penalized.

    Returns ``(model or None, reason or None, note or None)``: the fitted
    model; why no model could be fitted (the last error); what the retry did
    (for run.json's notes).  Never raises for what the data cannot support
    (:class:`ConvergenceError`, a :class:`~segone.errors.DataError`, an
    arithmetic error).

    Examples
    --------
    >>> from segone.clv import BetaGeo, PatternHistogram, fit_with_fallback, sample_bgnbd
    >>> x, tx, T = sample_bgnbd(2000, r=0.3, alpha=4.0, a=0.8, b=2.5, T=39.0, seed=1)
    >>> m, reason, note = fit_with_fallback(BetaGeo, PatternHistogram.of(x, tx, T))
    >>> sorted(m.params_), reason, note
    (['a', 'alpha', 'b', 'r'], None, None)
    """
    numeric = (ConvergenceError, DataError, ArithmeticError)
    try:
        return model_cls(penalizer).fit_histogram(hist), None, None
    except numeric as exc:
        if penalizer != 0 or not fallback_penalizer:
            return None, str(exc), None
        first = exc
    try:
        model = model_cls(fallback_penalizer).fit_histogram(hist)
    except numeric as exc:
        return None, str(exc), None
    return model, None, (f"{model_cls.__name__} did not converge unpenalized; refitted with penalizer "
                         f"{fallback_penalizer:g} ({first})")  # fmt: skip


def fit_value(state, *, penalizer=0.0, gg_penalizer=None, fallback_penalizer=1e-3, max_mean_ratio=3.0,
              horizon_months=12, discount_rate=0.01, freq="D", model="bgnbd"):  # fmt: skip
    """Fit BG/NBD and Gamma-Gamma on a merged :class:`ValueState`: ``(beta_geo, gamma_gamma, info)``.

    ``model`` names the purchase model in :data:`PURCHASE_MODELS` (``"bgnbd"``,
    ``"pareto"``, ``"mbgnbd"``); whichever it is, it is returned first and
    reported under ``info["bg_nbd"]`` (the key the outputs read), with
    ``info["purchase_model"]`` naming it.

    ``penalizer`` is lifetimes' ``penalizer_coef`` (an L2 penalty on the
    parameters), applied to both fits; ``gg_penalizer`` (default: the same)
    replaces it for Gamma-Gamma.  ``horizon_months``, ``discount_rate`` and
    ``freq`` are those :func:`value_piece` will predict with: the fitted
    models are checked on every pattern of the data before they are used.

    Defined behaviour, recorded in ``info["skipped"]`` / ``info["notes"]``
    (this function never raises for what the data cannot support): a fit
    that does not converge, or whose predictions overflow for a pattern of
    the data, is retried once with ``fallback_penalizer`` when it was
    unpenalized (and says so); a model that still cannot be fitted or
    predicted (no repeat customer, all customers identical, no usable spend,
    ``q <= 1``, overflowing predictions) is None with the reason, and its
    prediction columns are null in the outputs, never NaN.  A Gamma-Gamma
    fit whose implied mean order value ``v p / (q - 1)`` exceeds
    ``max_mean_ratio`` times the observed mean of the repeat customers'
    order values is not used either (q close to 1: the tail would dominate
    every CLV); on CDNOW the two means agree within 1%.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.clv import ValueState, fit_value, sample_bgnbd
    >>> x, tx, T = sample_bgnbd(2000, r=0.3, alpha=40.0, a=0.5, b=2.0, T=365.0, seed=3)
    >>> bg, gg, info = fit_value(ValueState.of(pa.table({"frequency": x, "recency": tx, "T": T})))
    >>> bg is not None, gg is None, info["skipped"]["bg_nbd"]
    (True, True, None)
    """
    penalizer = check_penalizer(penalizer, "penalizer")
    gg_penalizer = penalizer if gg_penalizer is None else check_penalizer(gg_penalizer, "gg_penalizer")
    horizon_months = check_int(horizon_months, "horizon_months", low=0)
    discount_rate = check_float(discount_rate, "discount_rate", low=0.0)
    factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
    purchase_model = PURCHASE_MODELS[check_choice(model, "model", tuple(PURCHASE_MODELS))]
    info = {"skipped": {"rows_without_purchase": state.patterns.n_without_purchase, "bg_nbd": None,
                        "gamma_gamma": None}, "notes": [], "purchase_model": model}  # fmt: skip
    numeric = (ConvergenceError, DataError, ArithmeticError)  # EmptyInputError is a DataError

    def attempt(model, fit, what):
        try:
            return fit(model)
        except (ConvergenceError, _Unpredictable) as exc:
            if model.penalizer == 0 and fallback_penalizer:
                why = "did not converge" if isinstance(exc, ConvergenceError) else "gave overflowing predictions"
                info["notes"].append(f"{what} {why} unpenalized; refitted with penalizer {fallback_penalizer:g} "
                                     f"({exc})")  # fmt: skip
                model = type(model)(fallback_penalizer)
                try:
                    return fit(model)
                except numeric as exc2:
                    info["skipped"][what] = str(exc2)
                    return None
            info["skipped"][what] = str(exc)
            return None
        except numeric as exc:
            info["skipped"][what] = str(exc)
            return None

    def fit_bg(model):
        model.fit_histogram(state.patterns)
        _check_predictions(model, None, state, horizon_months, discount_rate, factor)
        return model

    bg = attempt(purchase_model(penalizer), fit_bg, "bg_nbd")
    gg = None
    if bg is not None:
        def fit_gg(model):
            model.fit_histogram(state.monetary)
            if model.params_["q"] > 1.0:
                _check_predictions(bg, model, state, horizon_months, discount_rate, factor)
            return model

        gg = attempt(GammaGamma(gg_penalizer), fit_gg, "gamma_gamma")
        if gg is not None and gg.params_["q"] <= 1.0:
            info["skipped"]["gamma_gamma"] = (
                f"Gamma-Gamma q = {gg.params_['q']:.4g} <= 1: the mean order value is not finite; the CLV is left "
                "empty (give a penalizer with --value-penalizer / value_penalizer, or remove outlying spend)")  # fmt: skip
            gg = None
        elif gg is not None:
            x, m, c = state.monetary.finish()
            observed = float((m * c).sum() / c.sum())
            implied = gg.population_mean()
            if implied > max_mean_ratio * observed:
                info["skipped"]["gamma_gamma"] = (
                    f"the fitted spend model implies a mean order value of {implied:.4g}, {implied / observed:.1f}x "
                    f"the observed mean of the repeat customers ({observed:.4g}; q = {gg.params_['q']:.4g} is close "
                    "to 1): its heavy tail would dominate every CLV, so the CLV is left empty. Spend that is "
                    "far from gamma-shaped (e.g. a few huge orders) causes this; cap outlying amounts or give a "
                    "penalizer (--value-penalizer / value_penalizer).")  # fmt: skip
                gg = None
    else:
        info["skipped"]["gamma_gamma"] = "needs the BG/NBD model"
    for name, m in (("bg_nbd", bg), ("gamma_gamma", gg)):
        info[name] = None if m is None else {
            "params": m.params_, "standard_errors": m.standard_errors_, "log_likelihood": m.log_likelihood_,
            "n_customers": m.n_customers_, "penalizer": m.penalizer}  # fmt: skip
    return bg, gg, info


VALUE_COLUMNS = ("expected_purchases", "p_alive", "expected_order_value", "clv")


def value_piece(profiles, *, beta_geo, gamma_gamma, horizon_months=12, discount_rate=0.01, freq="D"):
    """PREDICT per piece: ``profiles`` with the four value columns appended (null where not predictable).

    ``expected_purchases`` over the next ``horizon_months``, ``p_alive``,
    ``expected_order_value`` and ``clv`` (lifetimes' definition, monthly
    ``discount_rate``); customers without a purchase (null ``T``) get nulls.
    """
    import pyarrow as pa

    n = profiles.num_rows
    factor = FREQ_FACTORS[check_choice(freq, "freq", tuple(FREQ_FACTORS))]
    cols = {name: pa.nulls(n, pa.float64()) for name in VALUE_COLUMNS}
    if beta_geo is not None and n:
        c = _table_columns(profiles, ["frequency", "recency", "T", "monetary_value"], "value_piece",
                           optional=("monetary_value",))
        x, tx, (t_age, tmask) = c["frequency"][0], c["recency"][0], c["T"]
        keep = np.ones(n, dtype=bool) if tmask is None else ~tmask
        pa_, exp_p, disc = beta_geo._value_terms(x[keep], tx[keep], t_age[keep], horizon_months, discount_rate,
                                                 factor)  # fmt: skip

        def full(v):
            out = np.zeros(n)
            out[keep] = v
            return pa.array(out, mask=~keep)

        cols["expected_purchases"], cols["p_alive"] = full(exp_p), full(pa_)
        if gamma_gamma is not None and "monetary_value" in profiles.column_names:
            m = c["monetary_value"][0][keep]
            eov = gamma_gamma._eov(x[keep], m)
            cols["expected_order_value"], cols["clv"] = full(eov), full(eov * disc)
    out = profiles
    for name in VALUE_COLUMNS:
        if name in out.column_names:
            out = out.drop_columns([name])
        out = out.append_column(name, cols[name])
    return out
