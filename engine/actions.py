"""ACT: category propensity, next best offers, channel and timing (issue 29).

For every customer and every kept category (the top categories of the
profiles, ``summary["categories"]``), the probability of buying that category
in the next ``H = horizon_days`` days, learnt from the data's own past:

* **time split.**  The features of a training row are computed at
  ``t0 = as_of - H`` from the rows up to ``t0``; its label is "bought the
  category in ``(t0, as_of]``".  The training rows are the customers with a
  purchase at or before ``t0``.  The same feature definitions are then
  computed at ``as_of`` from all rows and scored with the fitted model (no
  refit).
* **features** (:data:`FEATURES`), per customer and category: the
  customer's own history in the category (bought it, orders, days since the
  last, spend, share of their spend, orders in the last H days, how overdue
  they are against their own rhythm), the customer's profile core (orders,
  days since the last order, tenure, mean order value, all recomputed at the
  cutoff so that the training features never see the label window), and the
  group leverage: ``log`` of how much more of its spend the customer's
  segment puts in the category than the base (the segment's spend share of
  the category over the share of all customers, computed at the cutoff).
  Known limitation: the segment of a customer is the run's (learnt on the
  profiles at ``as_of``) for both cutoffs; the backtest measures the effect.
* **model.**  One L2-penalised logistic regression per category
  (:mod:`segone.propensity`: Newton / IRLS on mergeable ``X'WX``, ``X'Wz``
  sums, ``penalty = 1 / C``), on features standardised by a mergeable scaler.
  A category with no buyer (or only buyers) in the training window is skipped
  with the reason in the info.  Calibration: the intercept is not penalised,
  so the mean training propensity equals the training buy rate; the
  reliability table (ten bins) and its expected calibration error are in the
  info, per category.  No Platt or isotonic step is applied.
* **next best offers.**  Per contactable customer, the ``offers`` categories
  of highest propensity (``new_only``: among those the customer never bought),
  each with ``expected_spend = propensity x expected order value``; the
  expected order value is the customer's own mean order value in the
  category shrunk toward the category's mean order value:
  ``(n * own + k * category) / (n + k)`` with ``n`` the customer's orders in
  the category and ``k = shrink_orders`` (default 3).  A ``reason`` in words
  says why (see :func:`reason_of`).
* **channel and timing.**  Per customer: the channel of most orders (ties
  broken by the channel of the latest order), the weekday and the hour of day
  of most orders (ties likewise), each with its share of the customer's
  orders.  Times are read on the timestamps' UTC clock (naive timestamps as
  they are).  An *order* is a distinct (customer, timestamp) pair; rows with
  a non-positive or null amount are not purchases here.

Everything is per piece of customers (``(transactions, events, attributes)``
of disjoint customers, as :func:`segone.pipeline.profile_stage` hands them)
plus mergeable states, so the same code runs on both engines; only the
category sums, the scaler and the normal equations reach the driver.  The
entry point is :func:`actions_stage`.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import outputs
from segone import profile as _profile
from segone import propensity as _prop
from segone._state import State, array_from_data, array_to_data
from segone._validation import check_float, check_int
from segone.errors import DataError, ParameterError

US_PER_DAY = _profile.US_PER_DAY
US_PER_HOUR = 3_600 * 1_000_000
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
#: the features of one (customer, category) row, in the order of the model's coefficients
FEATURES = ("bought_category", "log_orders_category", "log_days_since_category", "log_spend_category",
            "share_of_spend_category", "log_recent_orders_category", "log_overdue_category", "log_orders",
            "log_days_since_last_order", "log_tenure_days", "log_mean_order_value",
            "log_segment_lift")  # fmt: skip
_CAT_QUANTITIES = ("orders", "spend", "last", "first", "recent")  # per category, at each cutoff
_CUST_QUANTITIES = ("c_orders", "c_spend", "c_last", "c_first")  # per customer, at each cutoff
TIMING_COLUMNS = ("channel", "channel_share", "weekday", "weekday_share", "hour", "hour_share")


# -- reading one piece's purchases --------------------------------------------------------------------------------
def _purchases(transactions, *, schema, as_of_us):
    """(ids, ts us, amount, category strings or None, channel strings or None): rows with an id, a time at or
    before ``as_of`` and a positive amount."""
    from segone.io import iter_batches

    roles = _profile.resolve_schema(schema)
    cid, tcol, acol, ccol, hcol = (roles[r] for r in ("customer_id", "ts", "amount", "category", "channel"))
    ids, ts, amt, cats, chans = [], [], [], [], []
    has = {}
    for batch in iter_batches(transactions, [cid, tcol, acol], name="transactions",
                              optional=(ccol, hcol)):  # fmt: skip
        has = {"category": ccol in batch.schema.names, "channel": hcol in batch.schema.names}
        ok = pc.and_(pc.and_(pc.is_valid(batch.column(cid)), pc.is_valid(batch.column(tcol))),
                     pc.is_valid(batch.column(acol)))  # fmt: skip
        b = batch.filter(ok)
        if not b.num_rows:
            continue
        t = _profile._ts_to_us(b.column(tcol), f"transactions.{tcol}")[0].to_numpy(zero_copy_only=False)
        a = pc.cast(b.column(acol), pa.float64(), safe=False).to_numpy(zero_copy_only=False)
        keep = (t <= as_of_us) & (a > 0)
        if not keep.any():
            continue
        mask = pa.array(keep)
        ids.append(b.column(cid).filter(mask))
        ts.append(t[keep])
        amt.append(a[keep])
        for flag, col, out in ((has["category"], ccol, cats), (has["channel"], hcol, chans)):
            if flag:
                c = b.column(col).filter(mask)
                out.append(pc.cast(c, pa.string()) if not pa.types.is_dictionary(c.type) else
                           pc.cast(c.dictionary_decode(), pa.string()))  # fmt: skip
    if not ids:
        return None
    return (pa.chunked_array(ids), np.concatenate(ts), np.concatenate(amt),
            pa.chunked_array(cats, pa.string()) if cats else None,
            pa.chunked_array(chans, pa.string()) if chans else None)  # fmt: skip


def _positions(ids, universe):
    """Position of each id in ``universe`` (-1 when absent)."""
    if ids.type != universe.type:
        ids = ids.cast(universe.type)
    pos = pc.index_in(ids, value_set=universe)
    return pc.fill_null(pos, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _codes(values, labels):
    """Index of each string in ``labels`` (-1: another label or null)."""
    if values is None:
        return None
    idx = pc.index_in(values, value_set=pa.array([str(v) for v in labels], pa.string()))
    return pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _order_by_customer_time(pos, ts):
    """``np.lexsort((ts, pos))`` (rows by customer, then time, then row), by stable radix passes of 16 bits.

    Least significant first: the time's 16-bit digits, then the customer's; a stable sort of 16-bit keys is a
    counting sort in NumPy, and stable passes compose, so the order is exactly the lexsort's (about twice as fast
    on millions of rows).

    Examples
    --------
    >>> import numpy as np
    >>> pos, ts = np.array([1, 0, 1, 0, 1]), np.array([-5, 3, -5, 2**62, -2**62])
    >>> _order_by_customer_time(pos, ts).tolist(), np.lexsort((ts, pos)).tolist()
    ([1, 3, 4, 0, 2], [1, 3, 4, 0, 2])
    """
    order = None  # None: the rows as they are
    if ts.size < 2:
        return np.arange(ts.size)
    for key in (np.asarray(ts, dtype=np.int64), np.asarray(pos, dtype=np.int64)):
        u = key.view(np.uint64) - np.asarray(key.min()).view(np.uint64)  # the offset from the minimum, order kept
        span = int(u.max())
        shift = 0
        while True:
            digit = ((u if order is None else u[order]) >> np.uint64(shift)).astype(np.uint16)
            step = np.argsort(digit, kind="stable")
            order = step if order is None else order[step]
            shift += 16
            if shift >= 64 or span >> shift == 0:
                break
    return order


def _group_stats(key, ts, amount, size, cutoffs, horizon_us, order=None):
    """Per key (0..size-1) and cutoff: orders (distinct timestamps), spend, days since the last and the first order
    (NaN: none), orders in the H days before the cutoff.

    ``order``: the rows sorted by key, then time, then row (``np.lexsort((ts, key))``, given when the caller has it).
    """
    if order is None:
        order = np.lexsort((ts, key))
    key, ts, amount = key[order], ts[order], amount[order]
    new = np.ones(key.size, dtype=bool)
    new[1:] = (key[1:] != key[:-1]) | (ts[1:] != ts[:-1])
    starts = np.flatnonzero(new)
    pk, pt = key[starts], ts[starts]
    pa_ = np.add.reduceat(amount, starts) if starts.size else np.zeros(0)
    out = []
    for t in cutoffs:
        m = pt <= t
        k, tt, aa = (pk, pt, pa_) if m.all() else (pk[m], pt[m], pa_[m])  # as_of: every row is at or before it
        orders = np.bincount(k, minlength=size).astype(np.float32)
        spend = np.bincount(k, weights=aa, minlength=size).astype(np.float32)
        last = np.full(size, np.nan, np.float32)
        first = np.full(size, np.nan, np.float32)
        if k.size:
            end = np.flatnonzero(np.r_[k[1:] != k[:-1], True])
            beg = np.r_[0, end[:-1] + 1]
            last[k[end]] = (t - tt[end]) / US_PER_DAY
            first[k[beg]] = (t - tt[beg]) / US_PER_DAY
        r = tt > t - horizon_us
        recent = np.bincount(k[r], minlength=size).astype(np.float32)
        out.append({"orders": orders, "spend": spend, "last": last, "first": first, "recent": recent})
    return out


def _mode(pos, code, ts, n, n_codes):
    """Per customer: (the code of most orders, its share of their orders); ties go to the code of the latest order.
    ``pos``, ``code``, ``ts`` are one entry per order; -1 (and share 0) without any."""
    m = max(n_codes, 1)
    latest = np.full((n, m), -np.inf)
    ok = code >= 0
    flat = pos[ok] * m + code[ok]
    counts = np.bincount(flat, minlength=n * m).astype(np.float64).reshape(n, m)
    np.maximum.at(latest.reshape(-1), flat, ts[ok].astype(np.float64))
    top = counts.max(axis=1)
    best = np.argmax(np.where(counts == top[:, None], latest, -np.inf), axis=1)
    total = counts.sum(axis=1)
    share = np.where(total > 0, top / np.maximum(total, 1.0), 0.0)
    return np.where(total > 0, best, -1), share


def _fixed_list(a):
    """(n, C) array -> a FixedSizeList column (zero copy)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.ravel()), a.shape[1])


def _matrix(table, name, c):
    col = table.column(name)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(col) == 0:
        return np.zeros((0, c), np.float32)
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), c)


def category_piece(piece, profiles, assignments, *, categories, as_of_us, horizon_days, schema=None):
    """Per customer of one piece (rows follow ``profiles``): the raw category and customer quantities at
    ``as_of - H`` (suffix ``0``) and at ``as_of`` (suffix ``1``), the segment, and the channel and timing columns.

    Parameters
    ----------
    piece : tuple
        ``(transactions, events, attributes)`` of the customers of ``profiles``.
    profiles, assignments : pyarrow.Table
        The piece's profiles and assignments (the same rows, ``segment`` in the assignments).
    categories : list of str
        The kept categories (``summary["categories"]`` of the profile stage).
    as_of_us : int
        The profiles' reference time (microseconds since the epoch, UTC).
    horizon_days : int
    schema : dict, optional
        Column names, as :func:`segone.run` takes them.

    Returns
    -------
    pyarrow.Table
        ``customer_id``, ``segment``; per cutoff j in (0, 1): ``orders{j}``,
        ``spend{j}``, ``last{j}`` and ``first{j}`` (days since the last / first
        order in the category, NaN without any), ``recent{j}`` (orders in the H
        days before the cutoff) as fixed-size lists of one value per category;
        ``c_orders{j}``, ``c_spend{j}``, ``c_last{j}``, ``c_first{j}`` (every
        category); and :data:`TIMING_COLUMNS`.

    Examples
    --------
    >>> import pyarrow as pa, datetime as dt
    >>> tx = pa.table({"customer_id": [1, 1, 2], "amount": [5.0, 7.0, 3.0], "category": ["toys", "toys", "garden"],
    ...                "ts": [dt.datetime(2024, 1, 1), dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2)]})
    >>> prof = pa.table({"customer_id": [1, 2]}); asg = pa.table({"segment": [0, 0]})
    >>> t = category_piece((tx, None, None), prof, asg, categories=["toys", "garden"],
    ...                    as_of_us=int(dt.datetime(2024, 3, 2).timestamp() * 1e6), horizon_days=30)
    >>> t.column("orders0").to_pylist(), t.column("orders1").to_pylist()
    ([[1.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 1.0]])
    """
    tx = piece[0] if isinstance(piece, tuple) else piece
    ids = profiles.column(outputs.ID_COLUMN)
    universe = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if assignments.num_rows != profiles.num_rows:
        raise ParameterError(f"the assignments piece has {assignments.num_rows} rows but its profiles piece "
                             f"{profiles.num_rows}; give the assignments computed from these profiles.")  # fmt: skip
    n, C = len(universe), len(categories)
    H = int(horizon_days) * US_PER_DAY
    cutoffs = (as_of_us - H, as_of_us)
    rows = None if tx is None else _purchases(tx, schema=schema, as_of_us=as_of_us)
    cols = {outputs.ID_COLUMN: universe}
    seg = assignments.column("segment")
    cols["segment"] = pc.fill_null(pc.cast(seg, pa.int64()), -1)
    if rows is None:
        pos = np.zeros(0, np.int64)
        ts = amount = np.zeros(0)
        cat = chan_codes = None
        chan_labels = []
    else:
        rid, ts, amount, cat_s, chan_s = rows
        pos = _positions(rid, universe)
        ok = pos >= 0
        pos, ts, amount = pos[ok], ts[ok], amount[ok]
        cat = None if cat_s is None else _codes(cat_s, categories)[ok]
        chan_codes, chan_labels = None, []
        if chan_s is not None:
            enc = pc.dictionary_encode(chan_s.combine_chunks())
            chan_labels = [str(v) for v in enc.dictionary.to_pylist()]
            chan_codes = pc.fill_null(pc.cast(enc.indices, pa.int64()), -1).to_numpy(zero_copy_only=False)[ok]
    ts = np.asarray(ts, dtype=np.int64)
    # one sort of the rows by customer, then time (then row): the customer sums, the orders of the timing below,
    # and, re-sorted by category within each customer (a stable sort of nearly sorted keys), the category sums
    order = _order_by_customer_time(pos, ts)
    if cat is not None:
        kept = cat >= 0
        key = pos * C + cat
        by_cat = order[kept[order]]
        by_cat = by_cat[np.argsort(key[by_cat], kind="stable")]  # = np.lexsort((ts, key)) of the kept rows
        per_cat = _group_stats(key, ts, amount, n * C, cutoffs, H, order=by_cat)
    else:
        per_cat = _group_stats(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), n * C, cutoffs, H)
    per_cust = _group_stats(pos, ts, amount, n, cutoffs, H, order=order)
    for j in range(2):
        for q in _CAT_QUANTITIES:
            cols[f"{q}{j}"] = _fixed_list(per_cat[j][q].reshape(n, C) if C else np.zeros((n, 0)))
        for q in _CUST_QUANTITIES:
            cols[f"{q}{j}"] = pa.array(per_cust[j][q[2:]].astype(np.float64))
    # channel and timing, per order (distinct customer and timestamp)
    p_, t_ = pos[order], ts[order]
    first = np.ones(p_.size, dtype=bool)
    first[1:] = (p_[1:] != p_[:-1]) | (t_[1:] != t_[:-1])
    op, ot = p_[first], t_[first]
    if chan_codes is not None:
        ch, ch_share = _mode(op, chan_codes[order][first], ot, n, len(chan_labels))
        lab = np.array(chan_labels + [None], dtype=object)
        cols["channel"] = pa.array(lab[np.where(ch >= 0, ch, len(chan_labels))].tolist(), pa.string())
    else:
        ch_share = np.zeros(n)
        cols["channel"] = pa.nulls(n, pa.string())
    cols["channel_share"] = pa.array(ch_share)
    wd, wd_share = _mode(op, (np.floor_divide(ot, US_PER_DAY) + 3) % 7, ot, n, 7)
    hr, hr_share = _mode(op, np.floor_divide(ot, US_PER_HOUR) % 24, ot, n, 24)
    cols["weekday"] = pa.array(np.array(list(WEEKDAYS) + [None], dtype=object)[np.where(wd >= 0, wd, 7)].tolist(),
                               pa.string())  # fmt: skip
    cols["weekday_share"] = pa.array(wd_share)
    cols["hour"] = pa.array(hr, pa.int64(), mask=hr < 0)
    cols["hour_share"] = pa.array(hr_share)
    return pa.table(cols)


# -- the category sums ------------------------------------------------------------------------------------------------
class CategoryStats(State):
    """Sums over customers, per cutoff j (0: ``as_of - H``, 1: ``as_of``): spend per segment and category, spend
    per segment; per category at ``as_of``: orders, spend, buyers in the last H days; customers; the longest
    history (days before ``as_of`` of the first order) (mergeable)."""

    kind = "actions_category_stats"
    _FIELDS = ("seg_spend", "seg_total", "cat_orders", "cat_spend", "cat_recent_buyers", "cat_ever_buyers")

    def __init__(self, n_segments, n_categories, customers=0, history_days=None, **arrays):
        self.n_segments, self.n_categories = int(n_segments), int(n_categories)
        self.customers = int(customers)
        self.history_days = None if history_days is None else float(history_days)
        k, c = self.n_segments, self.n_categories
        shapes = {"seg_spend": (2, k + 1, c), "seg_total": (2, k + 1), "cat_orders": (c,), "cat_spend": (c,),
                  "cat_recent_buyers": (c,), "cat_ever_buyers": (c,)}  # fmt: skip
        for f in self._FIELDS:
            a = arrays.get(f)
            setattr(self, f, np.zeros(shapes[f]) if a is None else np.asarray(a, dtype=np.float64).reshape(shapes[f]))

    @classmethod
    def empty(cls, n_segments=1, n_categories=1):
        return cls(n_segments, n_categories)

    @classmethod
    def of(cls, part, *, n_segments, n_categories):
        """The sums of one part of :func:`category_piece` (segments outside 0..k-1 count in row k: no segment)."""
        s = cls(n_segments, n_categories)
        n = part.num_rows
        if n == 0:
            return s
        k, C = s.n_segments, s.n_categories
        seg = part.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
        seg = np.where((seg >= 0) & (seg < k), seg, k)
        for j in range(2):
            sp = _matrix(part, f"spend{j}", C).astype(np.float64)
            for c in range(C):
                s.seg_spend[j, :, c] = np.bincount(seg, weights=sp[:, c], minlength=k + 1)
            s.seg_total[j] = np.bincount(seg, weights=part.column(f"c_spend{j}").to_numpy(zero_copy_only=False),
                                         minlength=k + 1)  # fmt: skip
        o1 = _matrix(part, "orders1", C)
        s.cat_orders = o1.sum(axis=0, dtype=np.float64)
        s.cat_spend = _matrix(part, "spend1", C).sum(axis=0, dtype=np.float64)
        s.cat_recent_buyers = (_matrix(part, "recent1", C) > 0).sum(axis=0).astype(np.float64)
        s.cat_ever_buyers = (o1 > 0).sum(axis=0).astype(np.float64)
        s.customers = n
        first = part.column("c_first1").to_numpy(zero_copy_only=False)
        s.history_days = float(np.nanmax(first)) if np.isfinite(first).any() else None
        return s

    def merge(self, other):
        self._check_same(other, "n_segments", "n_categories")
        h = [v for v in (self.history_days, other.history_days) if v is not None]
        return CategoryStats(self.n_segments, self.n_categories, self.customers + other.customers,
                             max(h) if h else None,
                             **{f: getattr(self, f) + getattr(other, f) for f in self._FIELDS})  # fmt: skip

    def lift(self, j):
        """(k + 1, C): the segment's spend share of each category over the base's (1 where undefined); row k: no
        segment."""
        tot = self.seg_total[j].sum()
        base = self.seg_spend[j].sum(axis=0) / tot if tot > 0 else np.zeros(self.n_categories)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = self.seg_spend[j] / self.seg_total[j][:, None]
            lift = share / base[None, :]
        lift = np.where(np.isfinite(lift), lift, 1.0)
        lift[-1] = 1.0
        return lift

    def category_order_value(self):
        """Per category: mean order value over every customer at ``as_of`` (NaN: never bought)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.cat_orders > 0, self.cat_spend / self.cat_orders, np.nan)

    def finish(self):
        return self

    def _data(self):
        return {"n_segments": self.n_segments, "n_categories": self.n_categories, "customers": self.customers,
                "history_days": self.history_days,
                **{f: array_to_data(getattr(self, f)) for f in self._FIELDS}}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["n_segments"], d["n_categories"], d["customers"], d["history_days"],
                   **{f: array_from_data(d[f], f) for f in cls._FIELDS})  # fmt: skip


# -- the design ----------------------------------------------------------------------------------------------------
def _quantities(part, j, n_categories):
    """The arrays of cutoff ``j`` of a :func:`category_piece` part, read once (float64).

    The per-category quantities are stored one category per row (``q[name][c]``: contiguous), and the
    customer columns that every category's features share are computed here once.
    """
    C = n_categories
    q = {name: np.ascontiguousarray(_matrix(part, f"{name}{j}", C).T, dtype=np.float64) for name in _CAT_QUANTITIES}
    for name in _CUST_QUANTITIES:
        q[name] = part.column(f"{name}{j}").to_numpy(zero_copy_only=False)
    q["segment"] = part.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
    co, cs = q["c_orders"], q["c_spend"]
    q["tenure"] = np.nan_to_num(q["c_first"], nan=0.0)
    q["customer_features"] = (np.log1p(co), np.log1p(np.nan_to_num(q["c_last"], nan=0.0)), np.log1p(q["tenure"]),
                              np.log1p(cs / np.maximum(co, 1.0)))  # fmt: skip
    q["spend_positive"] = cs > 0
    q["spend_or_one"] = np.where(q["spend_positive"], cs, 1.0)
    return q


def _features(q, c, log_lift):
    o, sp, last, first, rec = (q[name][c] for name in _CAT_QUANTITIES)
    tenure = q["tenure"]
    k = log_lift.shape[0] - 1
    seg = np.where((q["segment"] >= 0) & (q["segment"] < k), q["segment"], k)
    bought = o > 0
    last0 = np.nan_to_num(last, nan=0.0)
    days = np.where(bought, last0, tenure)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(o >= 2, (np.nan_to_num(first) - last0) / np.maximum(o - 1, 1), 0.0)
        overdue = np.where(o >= 2, np.log((days + 1.0) / (gap + 1.0)), 0.0)
        share = np.where(q["spend_positive"], sp / q["spend_or_one"], 0.0)
    out = np.empty((o.shape[0], len(FEATURES)))
    for i, col in enumerate((bought, np.log1p(o), np.log1p(days), np.log1p(sp), share, np.log1p(rec), overdue,
                             *q["customer_features"], log_lift[seg, c])):  # fmt: skip
        out[:, i] = col
    return out


def features_at(part, j, c, log_lift, n_categories):
    """The :data:`FEATURES` (rows x 12) of category ``c`` at cutoff ``j`` for every row of a :func:`category_piece`
    part; ``log_lift``: (k + 1, C) from :meth:`CategoryStats.lift`."""
    return _features(_quantities(part, j, n_categories), c, log_lift)


class TrainingDesign:
    """``(category, X, y)`` blocks of the training rows of a part: features at ``as_of - H`` of the customers with
    an order by then; ``y``: bought the category in ``(as_of - H, as_of]``."""

    def __init__(self, log_lift, n_categories):
        self.log_lift, self.n_categories = log_lift, int(n_categories)

    def __call__(self, part, groups=None):
        if part.num_rows == 0:
            return
        rows = part.column("c_orders0").to_numpy(zero_copy_only=False) > 0
        rec1 = _matrix(part, "recent1", self.n_categories)[rows]
        cols = [f"{name}0" for name in _CAT_QUANTITIES + _CUST_QUANTITIES] + ["segment"]  # only what is read
        q = _quantities(part.select(cols).filter(pa.array(rows)), 0, self.n_categories)
        for c in range(self.n_categories) if groups is None else groups:
            yield c, _features(q, c, self.log_lift), (rec1[:, c] > 0).astype(np.float64)


class _ProbaDesign:
    """``(category, p, y)`` blocks of the training rows under a fitted model (for the reliability table)."""

    def __init__(self, design, model):
        self.design, self.model = design, model

    def __call__(self, part):
        for c, X, y in self.design(part):
            if c not in self.model.skipped_:
                yield c, self.model.predict_proba(c, X), y


def propensities(part, *, model, log_lift, n_categories, j=1):
    """(rows, C) propensities of every customer of a part at cutoff ``j`` (NaN for skipped categories)."""
    out = np.full((part.num_rows, n_categories), np.nan)
    if part.num_rows == 0:
        return out
    q = _quantities(part, j, n_categories)
    for c in range(n_categories):
        if c not in model.skipped_:
            out[:, c] = model.predict_proba(c, _features(q, c, log_lift))
    return out


# -- reasons -------------------------------------------------------------------------------------------------------
def _duration(days):
    days = max(float(days), 0.0)
    if days < 14:
        d = int(round(days))
        return f"{d} day{'s' if d != 1 else ''}"
    if days < 70:
        w = int(round(days / 7))
        return f"{w} weeks"
    m = int(round(days / 30.44))
    return f"{m} months"


def reason_of(category, *, orders, days_since, gap_days, lift, recent_buyer_share, horizon_days):
    """The reason of one offer, in words (the first rule that applies).

    * two or more orders in the category: "buys toys every 3 weeks, last bought 5 weeks ago";
    * the segment's spend share of the category is at least 1.5 times the base's:
      "their segment buys garden 4.1x more than the base";
    * one order: "bought toys once, 5 weeks ago";
    * else: "popular: 12% of customers bought toys in the last 30 days".

    Examples
    --------
    >>> reason_of("toys", orders=4, days_since=35, gap_days=21, lift=1.0, recent_buyer_share=0.1, horizon_days=30)
    'buys toys every 3 weeks, last bought 5 weeks ago'
    >>> reason_of("garden", orders=0, days_since=None, gap_days=None, lift=4.08, recent_buyer_share=0.1,
    ...           horizon_days=30)
    'their segment buys garden 4.1x more than the base'
    """
    if orders >= 2:
        return f"buys {category} every {_duration(gap_days)}, last bought {_duration(days_since)} ago"
    if lift >= 1.5:
        return f"their segment buys {category} {lift:.1f}x more than the base"
    if orders == 1:
        return f"bought {category} once, {_duration(days_since)} ago"
    return f"popular: {recent_buyer_share:.0%} of customers bought {category} in the last {horizon_days} days"


def _part_of_day(hour):
    if hour is None:
        return None
    return "mornings" if 5 <= hour < 12 else "afternoons" if 12 <= hour < 17 else "evenings" if 17 <= hour < 22 \
        else "nights"  # fmt: skip


#: below this propensity the next step says the customer is unlikely to buy (a "likely ... (1%)" would mislead)
UNLIKELY = 0.05


def _pct(p):
    return "<1%" if p < 0.005 else f"{p:.0%}"


def next_step(category, propensity, horizon_days, *, channel=None, weekday=None, hour=None, unlikely=UNLIKELY):
    """The persona's next step in words (for the persona sentence).

    Below ``unlikely`` the words say that the customer is unlikely to buy,
    and name the best chance.

    Examples
    --------
    >>> next_step("toys", 0.62, 30, channel="app", weekday="Saturday", hour=19)
    'likely to buy toys in the next 30 days (62%), best via app on Saturday evenings'
    >>> next_step("garden", 0.081, 30)
    'likely to buy garden in the next 30 days (8%)'
    >>> next_step("garden", 0.003, 30, channel="web")
    'unlikely to buy in the next 30 days (best chance: garden, <1%), best via web'
    """
    if propensity < unlikely:
        out = f"unlikely to buy in the next {horizon_days} days (best chance: {category}, {_pct(propensity)})"
    else:
        out = f"likely to buy {category} in the next {horizon_days} days ({_pct(propensity)})"
    when = " ".join(w for w in (weekday, _part_of_day(hour)) if w)
    how = " ".join(w for w in (f"via {channel}" if channel else None, f"on {when}" if when else None) if w)
    return f"{out}, best {how}" if how else out


def next_steps(actions, horizon_days, *, unlikely=UNLIKELY):
    """Vectorised :func:`next_step` of the top offer of every row of an actions table (None: no offer).

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"category": [["toys", "garden"], []], "propensity": [[0.62, 0.1], []],
    ...               "channel": ["app", None], "weekday": ["Saturday", None], "hour": [19, None]})
    >>> next_steps(t, 30)
    ['likely to buy toys in the next 30 days (62%), best via app on Saturday evenings', None]
    """
    n = actions.num_rows
    if not n:
        return []
    import pyarrow.compute as _pc

    cat = actions.column("category")
    has = (_pc.list_value_length(cat).fill_null(0).to_numpy(zero_copy_only=False) > 0)
    first = lambda name: _pc.list_element(actions.column(name).filter(pa.array(has)), 0)  # noqa: E731
    rows = np.flatnonzero(has)
    out = np.full(n, None, dtype=object)
    if not rows.size:
        return out.tolist()
    names = np.asarray(first("category").to_pylist(), dtype=object)
    prop = np.asarray(first("propensity").to_pylist(), dtype=np.float64)
    pct = np.asarray([_pct(p) for p in prop], dtype=object)
    text = np.where(prop < unlikely,
                    f"unlikely to buy in the next {horizon_days} days (best chance: " + names + ", " + pct + ")",
                    "likely to buy " + names + f" in the next {horizon_days} days (" + pct + ")")  # fmt: skip

    def col(name):
        return (np.asarray(actions.column(name).filter(pa.array(has)).to_pylist(), dtype=object)
                if name in actions.column_names else np.full(rows.size, None, dtype=object))  # fmt: skip

    chan, wd, hr = col("channel"), col("weekday"), col("hour")
    h = np.array([-1 if x is None else x for x in hr], dtype=np.int64)
    part = np.select([h < 0, (5 <= h) & (h < 12), (12 <= h) & (h < 17), (17 <= h) & (h < 22)],
                     [None, "mornings", "afternoons", "evenings"], "nights").astype(object)  # fmt: skip
    part[h < 0] = None
    when = np.array([" ".join(w for w in (a, b) if w) for a, b in zip(wd, part)], dtype=object)
    how = np.array([" ".join(w for w in (f"via {c}" if c else None, f"on {w}" if w else None) if w)
                    for c, w in zip(chan, when)], dtype=object)  # fmt: skip
    out[rows] = np.where(how != "", text + ", best " + how, text)
    return out.tolist()


def _durations(days):
    """Vectorised :func:`_duration`: an object array of strings."""
    d = np.maximum(np.nan_to_num(np.asarray(days, dtype=np.float64), nan=0.0), 0.0)
    n_days = np.round(d).astype(np.int64)
    n_weeks = np.round(d / 7).astype(np.int64)
    n_months = np.round(d / 30.44).astype(np.int64)
    n = np.where(d < 14, n_days, np.where(d < 70, n_weeks, n_months))
    unit = np.where(d < 14, np.where(n_days == 1, " day", " days"), np.where(d < 70, " weeks", " months"))
    return np.char.add(n.astype(str), unit).astype(object)


def reasons_of(categories, *, orders, days_since, gap_days, lift, recent_buyer_share, horizon_days):
    """Vectorised :func:`reason_of` over arrays of offers (the same words, offer by offer).

    Examples
    --------
    >>> import numpy as np
    >>> reasons_of(np.array(["toys", "garden"], dtype=object), orders=np.array([4, 0]), days_since=np.array([35, 0]),
    ...            gap_days=np.array([21, 0]), lift=np.array([1.0, 4.08]), recent_buyer_share=np.array([0.1, 0.1]),
    ...            horizon_days=30)
    ['buys toys every 3 weeks, last bought 5 weeks ago', 'their segment buys garden 4.1x more than the base']
    """
    cat = np.asarray(categories, dtype=object)
    if cat.size == 0:
        return []
    orders = np.asarray(orders)
    days_since, gap_days = np.asarray(days_since), np.asarray(gap_days)
    lift = np.asarray(lift, dtype=np.float64)
    recent_buyer_share = np.asarray(recent_buyer_share, dtype=np.float64)
    # the first rule that applies; each offer's words are built for its own rule only
    every = orders >= 2
    segment = ~every & (lift >= 1.5)
    once = ~every & ~segment & (orders == 1)
    popular = ~every & ~segment & ~once
    out = np.empty(cat.size, dtype=object)
    if every.any():
        m = every
        out[m] = "buys " + cat[m] + " every " + _durations(gap_days[m]) + ", last bought " + \
            _durations(days_since[m]) + " ago"  # fmt: skip
    if segment.any():
        tenths = np.round(lift[segment] * 10).astype(np.int64)
        lift_s = np.char.add(np.char.add((tenths // 10).astype(str), "."), (tenths % 10).astype(str)).astype(object)
        out[segment] = "their segment buys " + cat[segment] + " " + lift_s + "x more than the base"
    if once.any():
        out[once] = "bought " + cat[once] + " once, " + _durations(days_since[once]) + " ago"
    if popular.any():
        pct = np.round(recent_buyer_share[popular] * 100).astype(np.int64).astype(str).astype(object)
        out[popular] = "popular: " + pct + "% of customers bought " + cat[popular] + f" in the last {horizon_days} days"
    return out.tolist()


# -- next best offers ------------------------------------------------------------------------------------------------
ACTION_SCHEMA_FIELDS = [
    ("segment", pa.int64()), ("offers", pa.int64()), ("category", pa.list_(pa.string())),
    ("propensity", pa.list_(pa.float64())), ("expected_spend", pa.list_(pa.float64())),
    ("reason", pa.list_(pa.string())), ("channel", pa.string()), ("channel_share", pa.float64()),
    ("weekday", pa.string()), ("weekday_share", pa.float64()), ("hour", pa.int64()), ("hour_share", pa.float64()),
]  # fmt: skip


def contact_mask(profiles, contact=None, *, default=False, purposes=None):
    """Who may be contacted, per row of a profiles piece (bool ndarray).

    ``contact``: None (everyone), a callable ``profiles -> bool array``, or
    consent rule(s) as :func:`segone.privacy.consent_mask` reads them, e.g.
    ``"consent_marketing"`` or ``"consent_purposes=marketing"``; ``default``:
    what a customer without a consent record counts as.
    """
    from segone import privacy as _privacy

    if contact is None:
        return np.ones(profiles.num_rows, dtype=bool)
    if callable(contact):
        mask = np.asarray(contact(profiles), dtype=bool)
        if mask.shape != (profiles.num_rows,):
            raise ParameterError(f"contact() returned {mask.shape[0] if mask.ndim else 'a scalar'} values for a "
                                 f"piece of {profiles.num_rows} customers; return one boolean per row.")  # fmt: skip
        return mask
    kw = {} if purposes is None else {"purposes": purposes}
    return _privacy.consent_mask(profiles, contact, default=default, **kw)[0]


def offers_piece(part, profiles, *, model, stats, categories, horizon_days, offers=3, new_only=False,
                 shrink_orders=3.0, contact=None, contact_default=False, plan=None):  # fmt: skip
    """actions.parquet rows of one part: one row per contactable customer (and consenting, under ``plan``).

    Columns: ``customer_id``, ``segment``, ``offers`` (how many), the list
    columns ``category``, ``propensity``, ``expected_spend``, ``reason``
    (best first), and ``channel``, ``channel_share``, ``weekday``,
    ``weekday_share``, ``hour``, ``hour_share``.  ``plan`` (a
    :class:`segone.privacy.PrivacyPlan`): its consent rules also apply, ids
    are pseudonymised when it hashes them.
    """
    from segone import privacy as _privacy

    C = len(categories)
    n = part.num_rows
    keep = contact_mask(profiles, contact, default=contact_default)
    if plan is not None and plan.rules:
        keep &= _privacy.consent_mask(profiles, plan.rules, default=plan.default, purposes=plan.purposes)[0]
    lift1 = stats.lift(1)
    P = propensities(part, model=model, log_lift=np.log(np.maximum(lift1, 1e-3)), n_categories=C)
    o1 = _matrix(part, "orders1", C).astype(np.float64) if n else np.zeros((0, C))
    s1 = _matrix(part, "spend1", C).astype(np.float64) if n else np.zeros((0, C))
    last1 = _matrix(part, "last1", C).astype(np.float64) if n else np.zeros((0, C))
    first1 = _matrix(part, "first1", C).astype(np.float64) if n else np.zeros((0, C))
    cat_eov = np.nan_to_num(stats.category_order_value(), nan=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        own = np.where(o1 > 0, s1 / np.maximum(o1, 1.0), 0.0)
    eov = (o1 * own + shrink_orders * cat_eov[None, :]) / (o1 + shrink_orders)
    score = np.where(np.isfinite(P), P, -np.inf)
    if new_only:
        score = np.where(o1 > 0, -np.inf, score)
    m = min(offers, C)
    top = np.argsort(-score, axis=1, kind="stable")[:, :m] if C else np.zeros((n, 0), np.int64)
    seg = part.column("segment").to_numpy(zero_copy_only=False).astype(np.int64)
    k = stats.n_segments
    segc = np.where((seg >= 0) & (seg < k), seg, k)
    buyer_share = stats.cat_recent_buyers / max(stats.customers, 1)
    rows = np.flatnonzero(keep)
    chosen = top[rows]
    valid = np.isfinite(np.take_along_axis(score[rows], chosen, axis=1)) if rows.size else np.zeros((0, m), bool)
    R = np.repeat(rows, chosen.shape[1])[valid.ravel()]
    Cc = chosen.ravel()[valid.ravel()]
    counts = valid.sum(axis=1)
    offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
    o, last = o1[R, Cc], last1[R, Cc]
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(o >= 2, (first1[R, Cc] - last) / np.maximum(o - 1, 1), 0.0)
    names = np.asarray(categories, dtype=object)[Cc]
    reasons = reasons_of(names, orders=o, days_since=last, gap_days=gap, lift=lift1[segc[R], Cc],
                         recent_buyer_share=buyer_share[Cc], horizon_days=horizon_days)  # fmt: skip
    prop = P[R, Cc]
    sel = pa.array(keep)
    out = {outputs.ID_COLUMN: part.column(outputs.ID_COLUMN).filter(sel),
           "segment": part.column("segment").filter(sel), "offers": pa.array(counts.astype(np.int64))}  # fmt: skip
    for (name, typ), vals in zip(ACTION_SCHEMA_FIELDS[2:6], (pa.array(names.tolist(), pa.string()), pa.array(prop),
                                                             pa.array(prop * eov[R, Cc]),
                                                             pa.array(reasons, pa.string()))):  # fmt: skip
        out[name] = pa.ListArray.from_arrays(offsets, vals).cast(typ)
    for name in TIMING_COLUMNS:
        out[name] = part.column(name).filter(sel)
    table = pa.table(out)
    if plan is not None and plan.key is not None:
        table = _privacy.pseudonymise_column(table, outputs.ID_COLUMN, plan.key, length=plan.pseudonym_length)
    return table


def keep_piece(piece, **kwargs):
    """The profile kernel of one piece that also keeps the piece: ``((profiles, piece), summary)``.

    ``pipeline.profile_stage(eng, sources, piece=actions.keep_piece, ...)``
    then returns parts of ``(profiles, piece)`` pairs: ``eng.map(_first, ...)``
    gives the profiles and ``eng.map(_second, ...)`` the pieces that
    :func:`actions_stage` needs, partitioned alike (on Dask the pieces are not
    shuffled twice).
    """
    table, summary = _profile.profile_piece(*piece, **kwargs)
    return (table, piece), summary


# -- the stage -----------------------------------------------------------------------------------------------------
def check_history(stats, horizon_days):
    """Raise DataError when the history is shorter than the horizon or than twice the horizon."""
    h = stats.history_days
    if h is None:
        raise DataError("actions: no purchase with a positive amount at or before as_of; nothing to learn "
                        "propensities from (turn actions off with --no-actions).")  # fmt: skip
    if h < horizon_days:
        raise DataError(f"actions: the horizon ({horizon_days} days, --horizon-days) is longer than the data "
                        f"({h:.0f} days of purchases before as_of); give a horizon of at most {int(h // 2)} days "
                        "or turn actions off with --no-actions.")  # fmt: skip
    if h < 2 * horizon_days:
        raise DataError(f"actions: the history ({h:.0f} days of purchases before as_of) is shorter than 2 x the "
                        f"horizon ({2 * horizon_days} days): the training window needs H days of features and H "
                        f"days of labels; give --horizon-days {int(h // 2)} or less, or turn actions off with "
                        "--no-actions.")  # fmt: skip


def fit_propensity(eng, parts, *, stats, categories, penalty=1.0, max_iter=50):
    """Fit the per-category models on the training rows of the :func:`category_piece` parts.

    Returns ``(LogisticFit, calibration info)``: the reliability table and
    expected calibration error of each fitted category on its training rows.
    The standardised training design is built once and persisted as float32
    for the Newton passes: ``training customers x categories x 13 x 4`` bytes
    (about 1 GB for 1M customers and 20 categories); the sums are float64.
    """
    C = len(categories)
    design = TrainingDesign(np.log(np.maximum(stats.lift(0), 1e-3)), C)
    d = len(FEATURES)
    scaler = eng.reduce(eng.map(_prop.ScalerState.of, parts, design=design, n_groups=C, n_features=d))
    model = _prop.LogisticFit(penalty, max_iter=max_iter, group_names=categories)
    mean, scale = scaler.finish()
    # the standardised training design, built once (float32) and persisted: the passes only multiply
    blocks = eng.persist(eng.map(_prop.standardized_blocks, parts, design=design, mean=mean, scale=scale),
                         "propensity design")  # fmt: skip
    model.fit_passes(scaler, lambda b, m, s, g: eng.reduce(eng.map(_one_blas_thread, blocks, func=_prop.NewtonState.of,
                                                                    beta=b, mean=m, scale=s, groups=g,
                                                                    prepared=True)))  # fmt: skip
    del blocks
    cal = eng.reduce(eng.map(_one_blas_thread, parts, func=_prop.CalibrationState.of,
                             design=_ProbaDesign(design, model), n_groups=C))  # fmt: skip
    table, ece = cal.finish()
    calibration = {}
    for c, name in enumerate(categories):
        if c in model.skipped_:
            continue
        calibration[name] = {"ece": None if not np.isfinite(ece[c]) else round(float(ece[c]), 6),
                             "bins": [[int(r[0]), round(float(r[1]), 6), round(float(r[2]), 6)]
                                      for r in table[c] if r[0] > 0]}  # fmt: skip
    return model, calibration


def _one_blas_thread(*parts, func, **kwargs):
    """``func(*parts, **kwargs)`` with BLAS on one thread for the call (the Newton passes, the scoring).

    Their products are tall and skinny (rows x 13): a BLAS thread team costs more than they do (5 to 10x slower
    on two busy cores), as in :func:`segone.tuning._fit_all`.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return func(*parts, **kwargs)


def actions_stage(eng, pieces, profiles, assignments, *, categories, as_of, n_segments, horizon_days=30, offers=3,
                  new_only=False, penalty=1.0, shrink_orders=3.0, contact=None, contact_default=False, plan=None,
                  schema=None, max_iter=50):  # fmt: skip
    """ACT over an engine: the next best offers of every contactable customer, and the facts for run.json.

    Parameters
    ----------
    eng : LocalEngine or DaskEngine
    pieces : list of parts
        The customer pieces the profile stage mapped over (``eng.by_customer``'s
        output: ``(transactions, events, attributes)`` of disjoint customers),
        part i holding the customers of ``profiles[i]``.
    profiles, assignments : list of parts
        The profile parts and the assignment parts (``segment`` = cluster index
        0..n_segments-1; rows following the profiles), before any privacy filter.
    categories : list of str
        The kept categories: ``summary["categories"]`` of the profile stage.
    as_of : ISO string, datetime or int microseconds
        The profiles' reference time (``summary["as_of"]``).
    n_segments : int
        The number of segments (assignments' ``segment`` values).
    horizon_days : int, default 30
        H: the propensity is the probability of buying in the next H days.
    offers : int, default 3
        Offers per customer.
    new_only : bool, default False
        Offer only categories the customer has not bought.
    penalty : float, default 1.0
        The L2 penalty on the standardised coefficients (scikit-learn's C = 1 / penalty).
    shrink_orders : float, default 3.0
        Pseudo-orders of the category's mean order value in the expected order value.
    contact, contact_default :
        Who may be contacted (see :func:`contact_mask`): None (everyone), a
        callable, or consent rules such as ``"consent_marketing"``.
    plan : segone.privacy.PrivacyPlan, optional
        The run's privacy plan: its consent rules also apply (a customer
        without consent gets no row) and ids are pseudonymised when it hashes.
    schema : dict, optional
    max_iter : int, default 50

    Returns
    -------
    (parts, info)
        ``parts``: per piece, the actions table of :func:`offers_piece` (write
        them with ``eng.write_parts(parts, path)``); None when the data have no
        category (``info["skipped"]`` says why).  ``info``: horizon, training
        window, per category rows, buyers, converged or skipped (with the
        reason), calibration, coefficients' names, contactable customers.

    Raises
    ------
    DataError
        The history is shorter than the horizon, or than 2 x the horizon.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone import actions, pipeline
    >>> from segone._engine import LocalEngine
    >>> from segone.synth import generate
    >>> d = generate(800, seed=2)
    >>> eng = LocalEngine()
    >>> sources = {"transactions": d.transactions, "events": None, "attributes": d.customers}
    >>> prof, summary, _ = pipeline.profile_stage(eng, sources)
    >>> asg = [pa.table({"segment": [0] * p.num_rows}) for p in prof]  # one segment
    >>> parts, info = actions.actions_stage(eng, [(d.transactions, None, d.customers)], prof, asg,
    ...     categories=summary["categories"], as_of=summary["as_of"], n_segments=1, contact="consent_marketing")
    >>> parts[0].column_names[:5]
    ['customer_id', 'segment', 'offers', 'category', 'propensity']
    """
    horizon_days = check_int(horizon_days, "horizon_days", low=1, high=_profile.MAX_WINDOW_DAYS)
    offers = check_int(offers, "offers", low=1)
    penalty = check_float(penalty, "penalty", low=0.0, low_inclusive=False)
    shrink_orders = check_float(shrink_orders, "shrink_orders", low=0.0)
    n_segments = check_int(n_segments, "n_segments", low=1)
    as_of_us = as_of if isinstance(as_of, (int, np.integer)) else _profile.parse_as_of(as_of)
    if as_of_us is None:
        raise ParameterError("as_of=None: give the profiles' reference time (the profile summary's 'as_of').")
    categories = [str(c) for c in (categories or [])]
    info = {"horizon_days": horizon_days, "offers": offers, "new_only": bool(new_only), "penalty": penalty,
            "C": 1.0 / penalty, "features": list(FEATURES), "categories": categories}  # fmt: skip
    if not categories:
        info["skipped"] = ("the transactions have no category column (or no kept category): no propensity to "
                           "learn; give schema={'category': ...} to name it.")  # fmt: skip
        return None, info
    parts = eng.persist(eng.map(category_piece, pieces, profiles, assignments, categories=categories,
                                as_of_us=int(as_of_us), horizon_days=horizon_days, schema=schema),
                        "actions")  # fmt: skip
    stats = eng.reduce(eng.map(CategoryStats.of, parts, n_segments=n_segments, n_categories=len(categories)))
    check_history(stats, horizon_days)
    model, calibration = fit_propensity(eng, parts, stats=stats, categories=categories, penalty=penalty,
                                        max_iter=max_iter)  # fmt: skip
    t0 = as_of_us - horizon_days * US_PER_DAY
    fit = model.info()
    info.update(training_window={"features_at": _iso(t0), "labels_from": _iso(t0), "labels_to": _iso(as_of_us)},
                history_days=round(stats.history_days, 3), passes=fit["passes"], categories_fitted=fit["groups"],
                skipped={categories[g]: r for g, r in model.skipped_.items()}, calibration=calibration,
                not_converged=[categories[g] for g in range(len(categories))
                               if g not in model.skipped_ and not model.converged_[g]])  # fmt: skip
    out = eng.persist(eng.map(_one_blas_thread, parts, profiles, func=offers_piece, model=model, stats=stats, categories=categories,
                              horizon_days=horizon_days, offers=offers, new_only=new_only,
                              shrink_orders=shrink_orders, contact=contact, contact_default=contact_default,
                              plan=plan), "actions")  # fmt: skip
    counts = eng.reduce(eng.map(ActionCounts.of, out))
    info["customers_with_actions"] = counts.rows
    info["customers_not_contactable"] = stats.customers - counts.rows
    return out, info


def _iso(us):
    import datetime as _dt

    return _dt.datetime.fromtimestamp(us / 1e6, tz=_dt.timezone.utc).replace(tzinfo=None).isoformat()


class ActionCounts(State):
    """Rows of the actions parts (mergeable)."""

    kind = "actions_counts"

    def __init__(self, rows=0):
        self.rows = int(rows)

    @classmethod
    def of(cls, part):
        return cls(part.num_rows)

    def merge(self, other):
        self._check_same(other)
        return ActionCounts(self.rows + other.rows)

    def finish(self):
        return self.rows

    def _data(self):
        return {"rows": self.rows}

    @classmethod
    def _from_data(cls, d):
        return cls(d["rows"])


__all__ = ["CategoryStats", "FEATURES", "TrainingDesign", "actions_stage", "category_piece", "check_history",
           "OfferSummary", "contact_mask", "features_at", "fit_propensity", "keep_piece", "next_step", "next_steps", "reasons_of", "offers_piece", "propensities", "reason_of"]  # fmt: skip


class OfferSummary(State):
    """Per segment and category: the customers whose top offer it is, their propensity and expected spend (mergeable).

    Built on the exported actions parts (consent applied, exported segment ids; a null segment is not
    counted).  :meth:`finish` gives the report's "What to do next" rows.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"segment": [0, 0, 1], "category": [["toys"], ["toys", "garden"], []],
    ...               "propensity": [[0.5], [0.3, 0.1], []], "expected_spend": [[10.0], [6.0, 1.0], []]})
    >>> OfferSummary.of(t).finish()
    [{'segment': 0, 'category': 'toys', 'customers': 2, 'mean_propensity': 0.4, 'expected_spend': 16.0}]
    """

    kind = "actions_offer_summary"

    def __init__(self, cells=None):
        self.cells = {k: list(v) for k, v in (cells or {}).items()}  # (segment, category) -> [n, sum p, sum spend]

    @classmethod
    def of(cls, part):
        if not part.num_rows:
            return cls()
        n_off = pc.list_value_length(part.column("category")).fill_null(0).to_numpy(zero_copy_only=False)
        seg = part.column("segment")
        keep = (n_off > 0) & seg.is_valid().to_numpy(zero_copy_only=False)
        if not keep.any():
            return cls()
        t = part.filter(pa.array(keep))
        g = pa.table({"segment": pc.cast(t.column("segment"), pa.int64()),
                      "category": pc.list_element(t.column("category"), 0),
                      "p": pc.list_element(t.column("propensity"), 0),
                      "e": pc.list_element(t.column("expected_spend"), 0)})  # fmt: skip
        agg = g.group_by(["segment", "category"]).aggregate([("p", "count"), ("p", "sum"), ("e", "sum")])
        cells = {(int(s), str(c)): [int(n), float(p), float(e)]
                 for s, c, n, p, e in zip(*(agg.column(x).to_pylist() for x in
                                            ("segment", "category", "p_count", "p_sum", "e_sum")))}  # fmt: skip
        return cls(cells)

    def merge(self, other):
        self._check_same(other)
        out = OfferSummary(self.cells)
        for k, v in other.cells.items():
            a = out.cells.setdefault(k, [0, 0.0, 0.0])
            out.cells[k] = [a[0] + v[0], a[1] + v[1], a[2] + v[2]]
        return out

    def finish(self, min_customers=None):
        """Rows sorted by segment then customers (most first); cells of fewer than ``min_customers`` left out."""
        rows = [{"segment": s, "category": c, "customers": n, "mean_propensity": round(p / n, 6),
                 "expected_spend": round(e, 2)}
                for (s, c), (n, p, e) in self.cells.items() if n and (min_customers is None or n >= min_customers)]
        return sorted(rows, key=lambda r: (r["segment"], -r["customers"], r["category"]))

    def _data(self):
        return {"cells": [[s, c, *v] for (s, c), v in sorted(self.cells.items())]}

    @classmethod
    def _from_data(cls, d):
        return cls({(int(r[0]), str(r[1])): [int(r[2]), float(r[3]), float(r[4])] for r in d["cells"]})
