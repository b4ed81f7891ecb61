"""BACKTEST (:func:`segone.backtest`): how good is the value prediction on the data's own past?

``segone backtest INPUT --holdout-days N`` (or ``--cutoff DATE``) and
:func:`backtest` cut the history at a cutoff, profile every customer on the
rows up to it (the *calibration* period), fit every purchase model there,
predict each customer's purchases and spend in the *holdout* window after
the cutoff, and compare with what the customers did:

* per model, MAE and RMSE of purchases and of spend, Pearson and Spearman
  correlations, and total predicted against total actual;
* a calibration table by decile of predicted purchases, and the share of
  customers who bought again by decile of ``p_alive``;
* in the same tables, two baselines a model has to beat: ``naive`` (the
  customer's own purchases and spend in the window of the same length just
  before the cutoff) and ``segment_mean`` (the mean of that naive forecast
  over the customer's segment, with segments learnt on the calibration
  profiles as ``segone run`` learns them).

The calibration / holdout columns are those of lifetimes'
``calibration_and_holdout_data`` (``frequency_cal``, ``recency_cal``,
``T_cal``, ``monetary_value_cal``, ``frequency_holdout``,
``monetary_value_holdout``, ``duration_holdout``): the calibration keeps the
rows at or before the cutoff, the holdout those after it and at or before the
end; ``frequency_holdout`` counts the periods (days, weeks or months) with a
purchase.  Only customers with a purchase in the calibration period are
scored, as in lifetimes; the others are counted in the summary.

BG/BB (``models=[..., "bgbb"]``, ``segone backtest --models bgnbd,bgbb
--freq W``) is the discrete-time model of the family: each period of
``freq`` (a week or a month) is one transaction opportunity, the profile's
``frequency``, ``recency`` and ``T`` at the cutoff are its ``frequency``,
``recency`` and ``n_periods``, and ``frequency_holdout`` (the holdout periods
with a purchase) is exactly what it predicts.  It is fitted on request only
(not in ``"all"``) and refused with daily periods (:func:`check_discrete`).

Everything is one implementation over both engines: the per-customer work is
a function of one piece of customers, and every figure is a mergeable
:class:`~segone._state.State` (moments, sums per decile, rank sketches).
Spearman correlations use the mid-ranks of the values' buckets in a
relative-error quantile sketch (values within 1% of each other tie), so they
are the same numbers on one process and on Dask.
"""

import datetime as _dt
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import _progress
from segone import clv as _clv
from segone import outputs
from segone import profile as _profile
from segone._state import State, array_from_data, array_to_data
from segone._validation import check_choice, check_int, default_sample_size
from segone.errors import DataError, EmptyInputError, ParameterError
from segone.sketch import QuantileSketch

#: the holdout's per-customer columns, appended to each calibration profile
HOLDOUT_COLUMNS = ("frequency_holdout", "monetary_value_holdout", "spend_holdout", "duration_holdout",
                   "naive_purchases", "naive_spend")  # fmt: skip
#: lifetimes' names of the calibration columns (the profile's BTYD columns at the cutoff)
CALIBRATION_NAMES = {"frequency": "frequency_cal", "recency": "recency_cal", "T": "T_cal",
                     "monetary_value": "monetary_value_cal"}  # fmt: skip
BASELINES = ("naive", "segment_mean")
N_DECILES = 10
_SKETCH_ALPHA = 0.005


# -- the calibration / holdout split, per piece -------------------------------------------------------------------
def _periods(ts_us, freq):
    if freq == "D":
        return np.floor_divide(ts_us, _profile.US_PER_DAY)
    return _profile._period_of(ts_us, freq)


def _window_sums(ids, ts, amount, lo, hi, freq, universe):
    """Per customer of ``universe``: (periods with a purchase, spend, rows) of the rows with lo < ts <= hi."""
    sel = (ts > lo) & (ts <= hi)
    n = len(universe)
    periods, spend, rows = np.zeros(n), np.zeros(n), np.zeros(n)
    if not sel.any() or n == 0:
        return periods, spend, rows
    t = pa.table({"c": ids.filter(pa.array(sel)), "p": _periods(ts[sel], freq), "a": amount[sel]})
    g = t.group_by(["c", "p"]).aggregate([("a", "sum"), ("a", "count")])
    g = g.group_by("c").aggregate([("p", "count"), ("a_sum", "sum"), ("a_count", "sum")])
    pos = pc.index_in(g.column("c"), value_set=universe).to_numpy(zero_copy_only=False)
    ok = ~np.isnan(pos.astype(np.float64)) if pos.dtype.kind == "f" else np.ones(pos.size, bool)
    pos = pos[ok].astype(np.int64)
    periods[pos] = g.column("p_count").to_numpy(zero_copy_only=False)[ok]
    spend[pos] = g.column("a_sum_sum").to_numpy(zero_copy_only=False)[ok]
    rows[pos] = g.column("a_count_sum").to_numpy(zero_copy_only=False)[ok]
    return periods, spend, rows


def holdout_columns(transactions, ids, *, cutoff_us, end_us, freq="D", schema=None):
    """The holdout and naive-baseline columns of the customers ``ids`` (one piece of customers).

    ``frequency_holdout``: periods with a purchase in ``(cutoff, end]``;
    ``monetary_value_holdout``: the mean amount of those rows (lifetimes'
    definition, 0 without any); ``spend_holdout``: their sum;
    ``duration_holdout``: the holdout's length in periods; ``naive_*``: the
    same counts in the window of the same length just before the cutoff.
    """
    from segone.io import iter_batches

    roles = _profile.resolve_schema(schema)
    cid, tcol, acol = roles["customer_id"], roles["ts"], roles["amount"]
    universe = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(universe)
    # the profile kernel has read and checked these rows already: only the three columns, no second validation
    id_parts, ts_parts, amt_parts = [], [], []
    for batch in iter_batches(transactions, [cid, tcol, acol], name="transactions"):
        valid = pc.and_(pc.is_valid(batch.column(cid)), pc.is_valid(batch.column(tcol)))
        b = batch.filter(valid) if pc.sum(pc.invert(valid)).as_py() else batch
        if b.num_rows:
            id_parts.append(b.column(cid))
            ts_parts.append(_profile._ts_to_us(b.column(tcol), f"transactions.{tcol}")[0].to_numpy(zero_copy_only=False))
            amt_parts.append(pc.cast(b.column(acol), pa.float64(), safe=False).to_numpy(zero_copy_only=False))
    tx_ids = pa.chunked_array(id_parts, type=universe.type if not id_parts else id_parts[0].type)
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    amount = np.concatenate(amt_parts) if amt_parts else np.zeros(0)
    if tx_ids.type != universe.type:
        tx_ids = tx_ids.cast(universe.type)
    hp, hs, hr = _window_sums(tx_ids, ts, amount, cutoff_us, end_us, freq, universe)
    length = end_us - cutoff_us
    npd, ns, _ = _window_sums(tx_ids, ts, amount, cutoff_us - length, cutoff_us, freq, universe)
    duration = float(_periods(np.array([end_us]), freq)[0] - _periods(np.array([cutoff_us]), freq)[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        mv = np.where(hr > 0, hs / np.maximum(hr, 1), 0.0)
    return {"frequency_holdout": hp, "monetary_value_holdout": mv, "spend_holdout": hs,
            "duration_holdout": np.full(n, duration), "naive_purchases": npd, "naive_spend": ns}  # fmt: skip


def _backtest_piece(piece, *, holdout, **kwargs):
    """PROFILE at the cutoff plus the holdout columns, for one piece of customers."""
    tx, ev, at = piece
    table, summary = _profile.profile_piece(tx, ev, at, **kwargs)
    cols = holdout_columns(tx, table.column(outputs.ID_COLUMN), schema=kwargs.get("schema"),
                           freq=kwargs.get("freq", "D"), **holdout)  # fmt: skip
    for name in HOLDOUT_COLUMNS:
        table = table.append_column(name, pa.array(cols[name]))
    return table, summary


def calibration_and_holdout(transactions, cutoff, *, end=None, freq="D", schema=None):
    """lifetimes' ``calibration_and_holdout_data`` in segone, as an Arrow table (one process).

    Parameters
    ----------
    transactions : Arrow table, data frame or path
        One row per purchase (``customer_id``, ``ts``, ``amount``; see ``schema``).
    cutoff : date, datetime or ISO string
        The last instant of the calibration period (inclusive).
    end : date, datetime or ISO string, optional
        The last instant of the holdout (default: the latest transaction).
    freq : {"D", "W", "M"}
    schema : dict, optional
        Column names, as :func:`segone.run` takes them.

    Returns
    -------
    pyarrow.Table
        ``customer_id``, ``frequency_cal``, ``recency_cal``, ``T_cal``,
        ``monetary_value_cal``, ``frequency_holdout``,
        ``monetary_value_holdout``, ``duration_holdout``, one row per customer
        with a purchase in the calibration period, sorted by id.

    Examples
    --------
    >>> import pyarrow as pa, datetime as dt
    >>> tx = pa.table({"customer_id": [1, 1, 1, 2], "amount": [10.0, 20.0, 5.0, 7.0],
    ...                "ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 5), dt.datetime(2024, 2, 1),
    ...                       dt.datetime(2024, 1, 20)]})
    >>> t = calibration_and_holdout(tx, "2024-01-20")
    >>> t.column("frequency_cal").to_pylist(), t.column("frequency_holdout").to_pylist()
    ([1.0, 0.0], [1.0, 0.0])
    >>> t.column("duration_holdout").to_pylist()
    [12.0, 12.0]
    """
    freq = check_choice(freq, "freq", tuple(_profile.BTYD_UNITS))
    cutoff_us, end_us = _profile.parse_as_of(cutoff), _profile.parse_as_of(end)
    if cutoff_us is None:
        raise ParameterError("cutoff=None: give the last instant of the calibration period, e.g. '2024-06-30'.")
    if end_us is None:
        roles = _profile.resolve_schema(schema)
        got = _profile._collect(transactions, "transactions", roles["customer_id"], roles["ts"],
                                {"rows_read": {}, "dropped": {}})  # fmt: skip
        if not got["ts"].size:
            raise EmptyInputError("transactions: no row with a customer id and a timestamp.")
        end_us = int(got["ts"].max())
    _check_window(cutoff_us, end_us, None, None, freq)
    table, _ = _backtest_piece((transactions, None, None), holdout={"cutoff_us": cutoff_us, "end_us": end_us},
                               as_of_us=cutoff_us, schema=schema, freq=freq)  # fmt: skip
    table = table.filter(pc.is_valid(table.column("T")))
    cols = [outputs.ID_COLUMN, *CALIBRATION_NAMES, "frequency_holdout", "monetary_value_holdout", "duration_holdout"]
    return table.select(cols).rename_columns([CALIBRATION_NAMES.get(c, c) for c in cols])


# -- the time window ---------------------------------------------------------------------------------------------
class TimeRange(State):
    """The first and last transaction time and the row count of the inputs (mergeable)."""

    kind = "time_range"

    def __init__(self, min_ts=None, max_ts=None, rows=0):
        self.min_ts, self.max_ts, self.rows = min_ts, max_ts, int(rows)

    @classmethod
    def empty(cls):
        return cls()

    @classmethod
    def of(cls, source, *, schema=None):
        """The range of one piece: only the id and time columns are read, and ids are not decoded."""
        from segone.io import iter_batches

        roles = _profile.resolve_schema(schema)
        cid, tcol = roles["customer_id"], roles["ts"]
        out = cls()
        for batch in iter_batches(source, [cid, tcol], name="transactions"):
            valid = pc.and_(pc.is_valid(batch.column(cid)), pc.is_valid(batch.column(tcol)))
            tc = batch.column(tcol).filter(valid)
            if len(tc):
                ts = _profile._ts_to_us(tc, f"transactions.{tcol}")[0].to_numpy(zero_copy_only=False)
                out = out.merge(cls(int(ts.min()), int(ts.max()), ts.size))
        return out

    def merge(self, other):
        self._check_same(other)
        lo = [v for v in (self.min_ts, other.min_ts) if v is not None]
        hi = [v for v in (self.max_ts, other.max_ts) if v is not None]
        return TimeRange(min(lo) if lo else None, max(hi) if hi else None, self.rows + other.rows)

    def finish(self):
        return self

    def _data(self):
        return {"min_ts": self.min_ts, "max_ts": self.max_ts, "rows": self.rows}

    @classmethod
    def _from_data(cls, d):
        return cls(d["min_ts"], d["max_ts"], d["rows"])


def _iso(us):
    return _dt.datetime.fromtimestamp(us / 1e6, tz=_dt.timezone.utc).replace(tzinfo=None).isoformat()


def _check_window(cutoff_us, end_us, min_ts, max_ts, freq):
    """A cutoff inside the data and a holdout of at least one whole period, else a ParameterError."""
    if min_ts is not None and cutoff_us < min_ts:
        raise ParameterError(f"cutoff {_iso(cutoff_us)} is before the first transaction ({_iso(min_ts)}): nothing "
                             "to calibrate on; choose a later cutoff or a shorter --holdout-days.")  # fmt: skip
    if max_ts is not None and cutoff_us >= max_ts:
        raise ParameterError(f"cutoff {_iso(cutoff_us)} is at or after the last transaction ({_iso(max_ts)}): the "
                             "holdout is empty; choose an earlier cutoff.")  # fmt: skip
    if end_us <= cutoff_us:
        raise ParameterError(f"end {_iso(end_us)} is not after the cutoff {_iso(cutoff_us)}; the holdout must "
                             "follow the calibration period.")  # fmt: skip
    periods = _periods(np.array([end_us]), freq)[0] - _periods(np.array([cutoff_us]), freq)[0]
    if periods < 1:
        unit = _profile.BTYD_UNITS[freq]
        raise ParameterError(f"the holdout from {_iso(cutoff_us)} to {_iso(end_us)} is shorter than one period "
                             f"({unit[:-1]}, freq={freq!r}); give a longer holdout or a shorter freq.")  # fmt: skip


# -- the figures: one mergeable state -----------------------------------------------------------------------------
def _moments(x, y):
    """(n, mean x, mean y, M2 x, M2 y, C xy) of paired values."""
    n = x.size
    if n == 0:
        return np.zeros(6)
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    return np.array([n, mx, my, dx @ dx, dy @ dy, dx @ dy])


def _merge_moments(a, b):
    """Chan et al.'s pairwise merge of :func:`_moments` (arrays of shape (..., 6))."""
    n1, n2 = a[..., 0], b[..., 0]
    n = n1 + n2
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n > 0, n1 * n2 / np.where(n > 0, n, 1), 0.0)
        f2 = np.where(n > 0, n2 / np.where(n > 0, n, 1), 0.0)
    dx, dy = b[..., 1] - a[..., 1], b[..., 2] - a[..., 2]
    out = np.empty_like(a)
    out[..., 0] = n
    out[..., 1] = a[..., 1] + dx * f2
    out[..., 2] = a[..., 2] + dy * f2
    out[..., 3] = a[..., 3] + b[..., 3] + dx * dx * w
    out[..., 4] = a[..., 4] + b[..., 4] + dy * dy * w
    out[..., 5] = a[..., 5] + b[..., 5] + dx * dy * w
    return out


def _pearson(m):
    with np.errstate(invalid="ignore", divide="ignore"):
        r = m[..., 5] / np.sqrt(m[..., 3] * m[..., 4])
    return np.where(np.isfinite(r), r, np.nan)


def _midranks(sketch, values):
    """Mid-rank (1-based) of each value among the sketch's values; values in one bucket tie."""
    vals, counts = sketch._table(as_coords=True)
    cum = np.cumsum(counts)
    idx = np.clip(np.searchsorted(vals, sketch.coords(values)), 0, vals.size - 1)
    return cum[idx] - counts[idx] + (counts[idx] + 1) / 2.0


class SketchState(State):
    """Quantile sketches of every predictor's purchases and ``p_alive``, and of the actual purchases and spend."""

    kind = "backtest_sketches"

    def __init__(self, names, sketches):
        self.names, self.sketches = list(names), dict(sketches)

    @classmethod
    def empty(cls, names=()):
        return cls(names, {})

    @classmethod
    def of(cls, piece, *, names):
        sk = {}
        for col in _sketched_columns(names):
            if col in piece.column_names:
                v = piece.column(col).to_numpy(zero_copy_only=False)
                sk[col] = QuantileSketch(_SKETCH_ALPHA).update(v[np.isfinite(v)])
        return cls(names, sk)

    def merge(self, other):
        self._check_same(other, "names")
        out = dict(self.sketches)
        for k, s in other.sketches.items():
            out[k] = out[k].merge(s) if k in out else s
        return SketchState(self.names, out)

    def finish(self):
        return self

    def _data(self):
        return {"names": self.names, "sketches": {k: s.to_dict() for k, s in self.sketches.items()}}

    @classmethod
    def _from_data(cls, d):
        return cls(d["names"], {k: QuantileSketch.from_dict(v) for k, v in d["sketches"].items()})


def _sketched_columns(names):
    cols = ["actual_purchases", "actual_spend"]
    for name in names:
        cols += [f"{name}:purchases", f"{name}:spend", f"{name}:p_alive"]
    return cols


class BacktestState(State):
    """Every figure of the backtest tables, as sums and co-moments per predictor (mergeable).

    Arrays are indexed [predictor, target] with targets (purchases, spend):
    ``moments`` / ``rank_moments`` (n, means, M2s, co-moment) for Pearson and
    Spearman, ``errors`` (sum |e|, sum e^2), ``totals`` (predicted, actual),
    and per decile [predictor, decile]: ``dec_n``, ``dec_sums`` (predicted and
    actual purchases and spend), ``alive_n``, ``alive_sums`` (p_alive, customers
    who bought again).  ``nonfinite`` counts predictions that overflowed.
    """

    kind = "backtest_state"
    _FIELDS = ("moments", "rank_moments", "errors", "totals", "dec_n", "dec_sums", "alive_n", "alive_sums",
               "nonfinite")  # fmt: skip

    def __init__(self, names, **arrays):
        self.names = list(names)
        j = len(self.names)
        shapes = {"moments": (j, 2, 6), "rank_moments": (j, 2, 6), "errors": (j, 2, 2), "totals": (j, 2, 2),
                  "dec_n": (j, N_DECILES), "dec_sums": (j, N_DECILES, 4), "alive_n": (j, N_DECILES),
                  "alive_sums": (j, N_DECILES, 2), "nonfinite": (j,)}  # fmt: skip
        for f in self._FIELDS:
            a = arrays.get(f)
            setattr(self, f, np.zeros(shapes[f]) if a is None else np.asarray(a, dtype=np.float64).reshape(shapes[f]))

    @classmethod
    def empty(cls, names=()):
        return cls(names)

    @classmethod
    def of(cls, piece, *, names, sketches):
        """The figures of one piece of predictions (see :func:`_prediction_piece`)."""
        s = cls(names)
        if piece.num_rows == 0:
            return s
        col = {c: piece.column(c).to_numpy(zero_copy_only=False) for c in piece.column_names if c != outputs.ID_COLUMN}
        actual = (col["actual_purchases"], col["actual_spend"])
        sk = sketches.sketches
        ranks_actual = tuple(_midranks(sk[k], v) if k in sk else v
                             for k, v in zip(("actual_purchases", "actual_spend"), actual))  # fmt: skip
        for j, name in enumerate(names):
            if f"{name}:purchases" not in col:
                continue
            pred = (col[f"{name}:purchases"], col[f"{name}:spend"])
            ok = np.isfinite(pred[0])
            s.nonfinite[j] = (~ok).sum()
            if s.nonfinite[j]:  # an overflowing model is reported as such, never scored on the rest
                continue
            for t in range(2):
                fin = np.isfinite(pred[t])  # spend: NaN for every customer when no spend model was fitted
                p, a = pred[t][fin], actual[t][fin]
                s.moments[j, t] = _moments(p, a)
                key = f"{name}:{'purchases' if t == 0 else 'spend'}"
                rp = _midranks(sk[key], p) if key in sk and sk[key].count else p
                s.rank_moments[j, t] = _moments(rp, ranks_actual[t][fin])
                e = p - a
                s.errors[j, t] = (np.abs(e).sum(), e @ e)
                s.totals[j, t] = (p.sum(), a.sum())
            d = _deciles(sk.get(f"{name}:purchases"), pred[0])
            np.add.at(s.dec_n[j], d, 1)
            spend = np.where(np.isfinite(pred[1]), pred[1], np.nan)
            for i, v in enumerate((pred[0], actual[0], spend, actual[1])):
                np.add.at(s.dec_sums[j, :, i], d, v)
            pal_key = f"{name}:p_alive"
            if pal_key in col:
                pal = col[pal_key]
                fin = np.isfinite(pal)
                d = _deciles(sk.get(pal_key), pal[fin])
                np.add.at(s.alive_n[j], d, 1)
                np.add.at(s.alive_sums[j, :, 0], d, pal[fin])
                np.add.at(s.alive_sums[j, :, 1], d, (actual[0][fin] > 0).astype(np.float64))
        return s

    def merge(self, other):
        self._check_same(other, "names")
        out = BacktestState(self.names)
        for f in self._FIELDS:
            a, b = getattr(self, f), getattr(other, f)
            setattr(out, f, _merge_moments(a, b) if f in ("moments", "rank_moments") else a + b)
        return out

    def finish(self):
        return self

    def _data(self):
        return {"names": self.names, **{f: array_to_data(getattr(self, f)) for f in self._FIELDS}}

    @classmethod
    def _from_data(cls, d):
        return cls(d["names"], **{f: array_from_data(d[f], f) for f in cls._FIELDS})


def _deciles(sketch, values):
    """Decile (0..9) of each value: by the sketch's deciles, ties in one bucket kept together."""
    if sketch is None or sketch.count == 0 or values.size == 0:
        return np.zeros(values.size, dtype=np.int64)
    edges = sketch.quantiles(np.arange(1, N_DECILES) / N_DECILES, as_coords=True)
    return np.searchsorted(edges, sketch.coords(values), side="left").astype(np.int64)


class SegmentNaive(State):
    """Per segment: customers scored and the sums of their naive purchases and spend (mergeable)."""

    kind = "backtest_segment_naive"

    def __init__(self, k, sums=None):
        self.k = int(k)
        self.sums = np.zeros((self.k, 3)) if sums is None else np.asarray(sums, dtype=np.float64).reshape(self.k, 3)

    @classmethod
    def empty(cls, k=1):
        return cls(k)

    @classmethod
    def of(cls, piece, *, k):
        s = cls(k)
        if piece.num_rows:
            seg = piece.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
            np.add.at(s.sums[:, 0], seg, 1.0)
            np.add.at(s.sums[:, 1], seg, piece.column("naive:purchases").to_numpy(zero_copy_only=False))
            np.add.at(s.sums[:, 2], seg, piece.column("naive:spend").to_numpy(zero_copy_only=False))
        return s

    def merge(self, other):
        self._check_same(other, "k")
        return SegmentNaive(self.k, self.sums + other.sums)

    def finish(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums[:, 1:] / np.maximum(self.sums[:, :1], 1.0)

    def _data(self):
        return {"k": self.k, "sums": array_to_data(self.sums)}

    @classmethod
    def _from_data(cls, d):
        return cls(d["k"], array_from_data(d["sums"], "sums"))


# -- per piece: predictions ----------------------------------------------------------------------------------------
def _prediction_piece(profiles, assignments, *, models, gamma_gamma):
    """One row per customer with a calibration purchase: actual holdout figures and every predictor's forecast."""
    keep = pc.is_valid(profiles.column("T"))
    p = profiles.filter(keep)
    seg = assignments.column("segment").filter(keep)
    f = {c: p.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
         for c in ("frequency", "recency", "T", "monetary_value", "frequency_holdout", "spend_holdout",
                   "duration_holdout", "naive_purchases", "naive_spend")}  # fmt: skip
    cols = {outputs.ID_COLUMN: p.column(outputs.ID_COLUMN), "segment": seg,
            "actual_purchases": f["frequency_holdout"], "actual_spend": f["spend_holdout"],
            "naive:purchases": f["naive_purchases"], "naive:spend": f["naive_spend"]}  # fmt: skip
    if p.num_rows:
        t = float(f["duration_holdout"][0])
        eov = None
        if gamma_gamma is not None:
            with np.errstate(all="ignore"):
                eov = gamma_gamma._eov(f["frequency"], f["monetary_value"])
        for name, m in models.items():
            with np.errstate(all="ignore"):
                try:
                    e = np.asarray(m.expected_purchases(t, f["frequency"], f["recency"], f["T"]), dtype=np.float64)
                    pal = np.asarray(m.p_alive(f["frequency"], f["recency"], f["T"]), dtype=np.float64)
                except (ArithmeticError, DataError):
                    e = pal = np.full(p.num_rows, np.nan)
            cols[f"{name}:purchases"] = e
            cols[f"{name}:spend"] = e * eov if eov is not None else np.full(p.num_rows, np.nan)
            cols[f"{name}:p_alive"] = pal
    else:
        for name in models:
            for what in ("purchases", "spend", "p_alive"):
                cols[f"{name}:{what}"] = np.zeros(0)
    return pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)) for k, v in cols.items()})


def _with_segment_mean(piece, *, means):
    seg = piece.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
    m = means[seg] if seg.size else np.zeros((0, 2))
    return piece.append_column("segment_mean:purchases", pa.array(m[:, 0])).append_column(
        "segment_mean:spend", pa.array(m[:, 1]))


# -- the tables ----------------------------------------------------------------------------------------------------
def metrics_table(state, skipped, kinds):
    """``backtest.parquet``: one row per model and baseline."""
    rows = {k: [] for k in ("model", "kind", "customers", "mae_purchases", "rmse_purchases", "pearson_purchases",
                            "spearman_purchases", "predicted_purchases", "actual_purchases", "mae_spend",
                            "rmse_spend", "pearson_spend", "spearman_spend", "predicted_spend", "actual_spend",
                            "skipped")}  # fmt: skip
    r, rr = _pearson(state.moments), _pearson(state.rank_moments)
    for j, name in enumerate(state.names):
        n = state.moments[j, 0, 0]
        reason = skipped.get(name)
        if reason is None and state.nonfinite[j]:
            reason = f"predictions overflow for {int(state.nonfinite[j])} customers"
        rows["model"].append(name)
        rows["kind"].append(kinds[name])
        rows["customers"].append(int(n))
        rows["skipped"].append(reason)
        for t, what in enumerate(("purchases", "spend")):
            nt = state.moments[j, t, 0]
            ok = nt > 0 and reason is None
            rows[f"mae_{what}"].append(float(state.errors[j, t, 0] / nt) if ok else None)
            rows[f"rmse_{what}"].append(float(np.sqrt(state.errors[j, t, 1] / nt)) if ok else None)
            rows[f"pearson_{what}"].append(float(r[j, t]) if ok and np.isfinite(r[j, t]) else None)
            rows[f"spearman_{what}"].append(float(rr[j, t]) if ok and np.isfinite(rr[j, t]) else None)
            rows[f"predicted_{what}"].append(float(state.totals[j, t, 0]) if ok else None)
            rows[f"actual_{what}"].append(float(state.totals[j, t, 1]) if ok else None)
    schema = pa.schema([("model", pa.string()), ("kind", pa.string()), ("customers", pa.int64())]
                       + [(k, pa.float64()) for k in rows if k not in ("model", "kind", "customers", "skipped")]
                       + [("skipped", pa.string())])  # fmt: skip
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in schema}, schema=schema)


def deciles_table(state, skipped):
    """``backtest_deciles.parquet``: per model and decile, predicted against actual, and repurchase by p_alive."""
    rows = {k: [] for k in ("model", "by", "decile", "customers", "predicted_purchases", "actual_purchases",
                            "predicted_spend", "actual_spend", "p_alive", "repurchased_share")}  # fmt: skip
    for j, name in enumerate(state.names):
        if skipped.get(name) is not None or state.nonfinite[j]:
            continue
        for d in range(N_DECILES):
            n = state.dec_n[j, d]
            if n:
                s = [float(v) if np.isfinite(v) else None for v in state.dec_sums[j, d] / n]
                for k, v in zip(rows, (name, "predicted_purchases", d + 1, int(n), *s, None, None)):
                    rows[k].append(v)
        for d in range(N_DECILES):
            n = state.alive_n[j, d]
            if n:
                a = state.alive_sums[j, d] / n
                for k, v in zip(rows, (name, "p_alive", d + 1, int(n), None, None, None, None, float(a[0]),
                                       float(a[1]))):  # fmt: skip
                    rows[k].append(v)
    types = {"model": pa.string(), "by": pa.string(), "decile": pa.int64(), "customers": pa.int64()}
    return pa.table({k: pa.array(v, types.get(k, pa.float64())) for k, v in rows.items()})


# -- the job -------------------------------------------------------------------------------------------------------
def _fit_models(state, names, *, penalizer, freq):
    """{name: fitted model}, {name: reason skipped}, the Gamma-Gamma model and the value info of run.json."""
    bg, gg, info = _clv.fit_value(state, penalizer=penalizer, freq=freq)
    models, skipped = {}, {}
    for name in names:
        if name == "bgnbd":
            if bg is None:
                skipped[name] = info["skipped"].get("bg_nbd") or "not fitted"
            else:
                models[name] = bg
            continue
        if name in DISCRETE_MODELS:
            m, reason, note = _clv.fit_with_fallback(DISCRETE_MODELS[name], _opportunities(state.patterns), penalizer)
        else:
            m, reason, note = _clv.fit_with_fallback(_clv.PURCHASE_MODELS[name], state.patterns, penalizer)
        if m is None:
            skipped[name] = reason
        else:
            models[name] = m
        if note:
            info["notes"].append(note)
    spend = None if gg is not None else (info["skipped"].get("gamma_gamma") or "no spend model")
    fitted = {}
    for name, m in models.items():
        fitted[name] = {"params": m.params_, "penalizer": m.penalizer,
                        "standard_errors": getattr(m, "standard_errors_", None)}  # fmt: skip
    return models, skipped, gg, {"models": fitted, "gamma_gamma": info.get("gamma_gamma"), "spend_skipped": spend,
                                 "notes": info["notes"], "rows_without_purchase": info["skipped"][
                                     "rows_without_purchase"]}  # fmt: skip


#: The discrete-time purchase models a backtest can fit on request (never in ``"all"``): each period of the BTYD
#: ``freq`` (a week or a month) is one transaction opportunity.
DISCRETE_MODELS = {"bgbb": _clv.BetaGeoBetaBinom}


def model_names(models):
    """The purchase models a backtest fits: ``"all"`` or a list of names.

    ``"all"`` is every continuous-time model of
    :data:`segone.clv.PURCHASE_MODELS`; a list may also name ``"bgbb"``
    (:data:`DISCRETE_MODELS`, BG/BB on the periods of ``freq``).

    Examples
    --------
    >>> model_names("all"), model_names("bgnbd,bgbb")
    (['bgnbd', 'pareto', 'mbgnbd'], ['bgnbd', 'bgbb'])
    """
    registry = {**_clv.PURCHASE_MODELS, **DISCRETE_MODELS}
    if models is None or (isinstance(models, str) and models == "all"):
        return list(_clv.PURCHASE_MODELS)
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in models if m not in registry]
    if bad or not models:
        raise ParameterError(f"models={models!r}: unknown purchase model {bad[0] if bad else '(none)'}; use 'all' or "
                             f"a list of {sorted(registry)}.")  # fmt: skip
    return list(dict.fromkeys(models))


def check_discrete(names, freq):
    """ParameterError when a discrete-time model (BG/BB) is asked for with daily periods.

    BG/BB counts the transaction opportunities (the periods of ``freq``)
    with a purchase; a day is no sensible opportunity (the chance per day is
    tiny and the likelihood sums over every day of every customer's
    history), so BG/BB needs ``freq="W"`` or ``"M"``.

    Examples
    --------
    >>> check_discrete(["bgnbd", "bgbb"], "W")
    >>> from segone.errors import ParameterError
    >>> try:
    ...     check_discrete(["bgbb"], "D")
    ... except ParameterError as exc:
    ...     print(str(exc)[:62])
    models=['bgbb'] with freq='D': BG/BB (bgbb) is a discrete-time
    """
    discrete = [n for n in names if n in DISCRETE_MODELS]
    if discrete and freq == "D":
        raise ParameterError(f"models={list(names)!r} with freq='D': BG/BB (bgbb) is a discrete-time model whose "
                             "transaction opportunities are the periods of freq; daily periods are no "
                             "opportunities. Give freq='W' (each week one opportunity) or 'M' (--freq W), or leave "
                             "bgbb out.")  # fmt: skip


def _opportunities(patterns):
    """The BTYD pattern histogram (whole periods of freq W or M) as BG/BB's :class:`~segone.clv.OpportunityHistogram`.

    ``frequency`` is the periods with a repeat purchase, ``recency`` the
    period of the last one and ``T`` the periods observed after the first
    purchase: BG/BB's ``frequency``, ``recency`` and ``n_periods``.
    """
    x, tx, t_age, counts = patterns.finish()
    return _clv.OpportunityHistogram.of(x, tx, t_age, weights=counts)


class BacktestResult:
    """What :func:`backtest` produced: the tables (Arrow) and the summary written to run.json."""

    def __init__(self, out, metrics, deciles, summary):
        self.out, self.metrics, self.deciles, self.summary = out, metrics, deciles, summary

    def __repr__(self):
        return f"BacktestResult(out={self.out!r}, models={self.metrics.column('model').to_pylist()})"


def backtest(input, out, *, holdout_days=None, cutoff=None, end=None, events=None, attributes=None, schema=None,
             freq="D", models="all", value_penalizer=0.0, n_clusters=8, random_state=0, backend="auto",
             n_threads=None, engine=None, partitioned_by_customer=None, min_segment_size=None, overwrite=False,
             verbose=False):  # fmt: skip
    """Backtest the value models on the data's own past.

    Parameters
    ----------
    input : path, Arrow table or data frame
        The transactions (as :func:`segone.run` reads them).
    out : path
        The output directory (written atomically): ``backtest.parquet``,
        ``backtest_deciles.parquet`` and ``run.json``.
    holdout_days : int, optional
        The holdout is the last ``holdout_days`` days of the data (the cutoff
        is the latest transaction minus that many days).
    cutoff : date, datetime or ISO string, optional
        The last instant of the calibration period (instead of ``holdout_days``).
    end : date, datetime or ISO string, optional
        The last instant of the holdout (default: the latest transaction).
    events, attributes, schema :
        As :func:`segone.run` (the calibration profiles use them; the
        segments of the ``segment_mean`` baseline are learnt on them).
    freq : {"D", "W", "M"}
        The BTYD period; the literature's CDNOW split uses weeks.
    models : "all" or list of str
        Purchase models to fit: ``"all"`` is every continuous-time model of
        :data:`segone.clv.PURCHASE_MODELS` (``bgnbd``, ``pareto``,
        ``mbgnbd``); a list (or a comma-separated string) may add ``"bgbb"``,
        BG/BB (:class:`segone.clv.BetaGeoBetaBinom`) for discrete-time data:
        each period of ``freq`` is one transaction opportunity, so
        ``frequency`` is the periods with a repeat purchase and ``T`` the
        periods observed (whole numbers).  It needs ``freq="W"`` or ``"M"``
        (:class:`~segone.errors.ParameterError` with ``"D"``); it predicts
        the holdout periods with a purchase, which ``frequency_holdout``
        counts.
    value_penalizer : float
        lifetimes' ``penalizer_coef`` for every fit.
    n_clusters : int
        Segments of the ``segment_mean`` baseline.
    min_segment_size : int, optional
        Decile cells with fewer customers are left out of the tables.
    engine : None or an engine
        Where the job runs: this process (default) or
        ``segone.dask.DaskEngine(...)`` (see :class:`segone.Engine`).
    partitioned_by_customer, backend, n_threads, random_state, overwrite, verbose :
        As :func:`segone.run`.

    Returns
    -------
    BacktestResult

    Examples
    --------
    >>> import segone, tempfile, os
    >>> from segone.synth import generate
    >>> d = generate(3000, seed=1)
    >>> res = segone.backtest(d.transactions, os.path.join(tempfile.mkdtemp(), "bt"), holdout_days=60,
    ...                       n_clusters=4)
    >>> res.metrics.column("model").to_pylist()[-2:]
    ['naive', 'segment_mean']
    """
    from segone import pipeline as _pipe
    from segone.io import check_output, resolve_inputs

    if (holdout_days is None) == (cutoff is None):
        raise ParameterError("give exactly one of holdout_days (e.g. 90) and cutoff (e.g. '2024-06-30').")
    if holdout_days is not None:
        holdout_days = check_int(holdout_days, "holdout_days", low=1, high=_profile.MAX_WINDOW_DAYS)
    cutoff_us = _profile.parse_as_of(cutoff)
    end_us = _profile.parse_as_of(end)
    freq = check_choice(freq, "freq", tuple(_profile.BTYD_UNITS))
    names = model_names(models)
    check_discrete(names, freq)
    value_penalizer = _clv.check_penalizer(value_penalizer, "value_penalizer")
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    if min_segment_size is not None:
        min_segment_size = check_int(min_segment_size, "min_segment_size", low=1)
    inputs = resolve_inputs(input, events, attributes)
    lock = check_output(out, [(role, src) for role, src in zip(("transactions", "events", "attributes"), inputs)],
                        overwrite)  # fmt: skip
    if engine is not None and isinstance(engine, str):
        raise ParameterError(f"engine={engine!r}: give None (this process) or an engine object, e.g. "
                             "segone.dask.DaskEngine(client).")  # fmt: skip
    try:
        eng, owned = _pipe._engine_for(engine, None, n_threads, None, verbose)
        shown = lock.releasing(_progress.stage_line("reading the time range", enabled=verbose and eng.name == "local"))
    except BaseException:
        lock.release()
        raise
    try:
        return _backtest(eng, inputs, out, holdout_days=holdout_days, cutoff_us=cutoff_us, end_us=end_us,
                         schema=schema, freq=freq, names=names, penalizer=value_penalizer, n_clusters=n_clusters,
                         random_state=random_state, backend=backend, n_threads=n_threads,
                         partitioned_by_customer=partitioned_by_customer, min_segment_size=min_segment_size,
                         overwrite=overwrite, shown=shown, input=input)  # fmt: skip
    finally:
        shown.close()
        if owned:
            eng.close()


def _backtest(eng, inputs, out, *, overwrite, **kwargs):
    """Evaluate (:func:`evaluate`), then write the tables and run.json atomically."""
    from segone.io import atomic_directory, write_json, write_parquet

    t_all = time.perf_counter()
    metrics, deciles, info = evaluate(eng, inputs, **kwargs)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_parquet(metrics, os.path.join(tmp, outputs.BACKTEST))
        write_parquet(deciles, os.path.join(tmp, outputs.BACKTEST_DECILES))
        info["timings_s"]["total"] = round(time.perf_counter() - t_all, 4)
        write_json(info, os.path.join(tmp, outputs.RUN_JSON))
    return BacktestResult(os.path.abspath(os.fspath(out)), metrics, deciles, info)


def evaluate(eng, inputs, *, holdout_days=None, cutoff_us=None, end_us=None, schema=None, freq="D", names=("bgnbd",),
             penalizer=0.0, n_clusters=8, random_state=0, backend="auto", n_threads=None,
             partitioned_by_customer=None, min_segment_size=None, shown=None, input=None):  # fmt: skip
    """The backtest over an engine, without writing: ``(metrics table, deciles table, summary dict)``.

    ``inputs`` are the (transactions, events, attributes) sources.  With
    ``n_clusters=1`` no segments are learnt and ``segment_mean`` is the mean
    over every customer (what ``segone run --value-model auto`` uses).
    """
    from segone import _progress
    from segone import pipeline as _pipe

    check_discrete(names, freq)
    shown = shown or _progress.NullProgress()
    timings = {}
    sources = dict(zip(("transactions", "events", "attributes"), inputs))
    t0 = time.perf_counter()
    parts = eng.read({"transactions": sources["transactions"]})["transactions"]
    rng = eng.reduce(eng.map(TimeRange.of, parts, schema=schema))
    if rng.max_ts is None:
        raise EmptyInputError("transactions: no row with a customer id and a timestamp; nothing to backtest.")
    end_us = rng.max_ts if end_us is None else end_us
    if holdout_days == "auto":  # a quarter of the history, at most 90 days
        holdout_days = int(max(1, min(90, (end_us - rng.min_ts) // _profile.US_PER_DAY // 4)))
    if cutoff_us is None:  # whole days: the cutoff is the last instant of the day holdout_days before the end's
        day = _profile.US_PER_DAY
        cutoff_us = (end_us // day - holdout_days + 1) * day - 1
    _check_window(cutoff_us, end_us, rng.min_ts, rng.max_ts, freq)
    timings["range"] = time.perf_counter() - t0

    # PROFILE at the cutoff, with each customer's holdout and naive-window figures
    t0 = time.perf_counter()
    shown.set_description("profiling the calibration period")
    profiles, summary, facts = _pipe.profile_stage(
        eng, sources, as_of=np.datetime64(int(cutoff_us), "us"), schema=schema, backend=backend, n_threads=n_threads,
        partitioned_by_customer=partitioned_by_customer, freq=freq, piece=_backtest_piece,
        holdout={"cutoff_us": int(cutoff_us), "end_us": int(end_us)},
    )  # fmt: skip
    timings["profile"] = time.perf_counter() - t0
    state = eng.reduce(eng.map(_clv.ValueState.of, profiles))
    n_cal = state.patterns.n_customers
    if n_cal == 0:
        raise DataError(f"no customer bought at or before the cutoff {_iso(cutoff_us)} (every customer's first "
                        "purchase is after it); choose a later cutoff or a shorter holdout.")  # fmt: skip

    # FIT every purchase model (skipped with the reason when the data cannot support it)
    t0 = time.perf_counter()
    shown.set_description("fitting the value models")
    models, skipped, gg, fit_info = _fit_models(state, names, penalizer=penalizer, freq=freq)
    timings["fit"] = time.perf_counter() - t0

    # SEGMENTS of the calibration profiles, for the segment-mean baseline
    t0 = time.perf_counter()
    shown.set_description("segmenting the calibration profiles")
    n = summary["customers"]
    k = min(n_clusters, n)
    if k <= 1:  # one segment: the segment mean is the mean over every customer (no segmentation needed)
        k = 1
        assignments = eng.map(_one_segment, profiles)
    else:
        assignments = _calibration_segments(eng, profiles, k, n=n, schema=schema, random_state=random_state,
                                            backend=backend, n_threads=n_threads)  # fmt: skip
    timings["segment"] = time.perf_counter() - t0

    # PREDICT per piece, then the figures
    t0 = time.perf_counter()
    shown.set_description("predicting the holdout")
    preds = eng.persist(eng.map(_prediction_piece, profiles, assignments, models=models, gamma_gamma=gg),
                        "predictions")  # fmt: skip
    means = eng.reduce(eng.map(SegmentNaive.of, preds, k=k)).finish()
    preds = eng.persist(eng.map(_with_segment_mean, preds, means=means), "predictions")
    all_names = list(models) + list(BASELINES)
    sketches = eng.reduce(eng.map(SketchState.of, preds, names=all_names))
    figures = eng.reduce(eng.map(BacktestState.of, preds, names=all_names, sketches=sketches))
    for name in names:
        if name not in models:
            skipped.setdefault(name, "not fitted")
    kinds = {**{m: "model" for m in names}, **{b: "baseline" for b in BASELINES}}
    figures = _with_skipped_rows(figures, names, models)
    metrics = metrics_table(figures, skipped, kinds)
    deciles = deciles_table(figures, skipped)
    suppressed = 0
    if min_segment_size is not None:
        small = pc.less(deciles.column("customers"), min_segment_size)
        suppressed = int(pc.sum(small).as_py() or 0)
        deciles = deciles.filter(pc.invert(small))
    timings["predict"] = time.perf_counter() - t0

    info = {
        "format": "segone-backtest",
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
        "segone_version": __import__("segone").__version__,
        "input": os.fspath(input) if isinstance(input, (str, os.PathLike)) else type(input).__name__,
        "cutoff": _iso(cutoff_us),
        "end": _iso(end_us),
        "first_transaction": _iso(rng.min_ts),
        "freq": freq,
        "unit": _profile.BTYD_UNITS[freq],
        "duration_holdout": float(_periods(np.array([end_us]), freq)[0] - _periods(np.array([cutoff_us]), freq)[0]),
        "customers": n,
        "customers_scored": int(n_cal),
        "customers_without_purchase_before_cutoff": int(n - n_cal),
        "rows_read": summary["rows_read"],
        "rows_excluded_after_cutoff": summary["excluded_after_as_of"],
        "models": names,
        "fitted": fit_info,
        "skipped": {m: r for m, r in skipped.items()},
        "segments": int(k),
        "min_segment_size": min_segment_size,
        "deciles_suppressed": suppressed,
        "best": _best(metrics),
        "engine": {"name": eng.name, **eng.facts(), **facts},
    }
    info["timings_s"] = {k_: round(v, 4) for k_, v in timings.items()}
    return metrics, deciles, info


def _one_segment(profiles):
    return pa.table({"segment": pa.array(np.zeros(profiles.num_rows, dtype=np.int64))})


def _calibration_segments(eng, profiles, k, *, n, schema, random_state, backend, n_threads):
    """Assignments (parts) of the calibration profiles to ``k`` segments, learnt as ``segone run`` learns them."""
    from segone import pipeline as _pipe
    from segone.assignment import assign_piece
    from segone.score import FeatureScorer, ScorerState
    from segone.segment import PartialSums, Segmenter

    scorer = FeatureScorer(backend=backend, n_threads=n_threads)
    scorer.fit_state(eng.reduce(eng.map(ScorerState.of, profiles, scorer=scorer)))
    X = eng.persist(eng.map(scorer.transform, profiles), "features")
    sample = _pipe._fit_sample(eng, profiles, X, min(1.0, default_sample_size(k) / max(n, 1)), random_state, schema)
    seg = Segmenter(k, random_state=random_state, backend=backend, n_threads=n_threads)
    seg.fit_passes(sample, lambda c: eng.reduce(eng.map(PartialSums.of, X, centers=c, backend=backend,
                                                        n_threads=n_threads)))  # fmt: skip
    del sample
    return eng.map(assign_piece, profiles, X, centroids=seg.cluster_centers_, id_column=outputs.ID_COLUMN,
                   backend=backend, n_threads=n_threads)  # fmt: skip


def _with_skipped_rows(figures, names, models):
    """The state with a (zero) row for every requested model that was not fitted, models first."""
    order = [m for m in names] + list(BASELINES)
    out = BacktestState(order)
    for f in BacktestState._FIELDS:
        dst = getattr(out, f)
        for j, name in enumerate(order):
            if name in figures.names:
                dst[j] = getattr(figures, f)[figures.names.index(name)]
    return out


def _best(metrics):
    """The predictor with the lowest purchases MAE, and whether a model beat both baselines."""
    rows = [r for r in metrics.to_pylist() if r["mae_purchases"] is not None]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["mae_purchases"])
    base = [r["mae_purchases"] for r in rows if r["kind"] == "baseline"]
    mods = [r for r in rows if r["kind"] == "model"]
    return {"by_mae_purchases": best["model"],
            "model_beats_baselines": bool(mods and base and min(r["mae_purchases"] for r in mods) < min(base))}


__all__ = ["DISCRETE_MODELS", "BacktestResult", "BacktestState", "check_discrete", "SegmentNaive", "SketchState",
           "TimeRange", "backtest",
           "calibration_and_holdout", "holdout_columns", "metrics_table", "deciles_table"]  # fmt: skip
