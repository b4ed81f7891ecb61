"""One profile row per customer from transactions, web events and CRM data.

The profile is computed by factorising the customer ids once (Arrow's hash
kernels), then accumulating every aggregate over the integer customer codes
with vectorised NumPy passes (``bincount`` and ufunc ``at``).

Rules for bad or unusual input (each counted in the summary returned by
:func:`build_profiles_with_summary` and stored in the table's schema metadata
under ``b"segone"``):

* rows with a null customer id or a null timestamp are dropped;
* rows after ``as_of`` are excluded;
* negative amounts are returns: kept as negative spend (``drop_returns=True``
  drops them); shares are computed over positive spend only;
* NaN, infinite or null amounts raise :class:`~segone.errors.DataError`, and
  so do amounts whose sums leave the float64 range (1.8e308: per customer, or
  a column's total over the customers), naming the customers; integer
  amounts beyond 2**53 are read as the nearest float;
* a floating-point customer id column raises :class:`~segone.errors.SchemaError`;
  integer ids beyond the int64 range raise :class:`~segone.errors.DataError`;
* timestamps without a time zone are taken as UTC; mixing a zone-aware and a
  naive timestamp column across inputs is an error; timestamps outside the
  years 1-9999 raise :class:`~segone.errors.DataError` naming the rows;
* a CRM attributes table must hold one row per customer (duplicates raise);
  a CRM column named like a profile column becomes ``crm_<name>`` (or
  ``crm_<name>_2``, ... when that is taken too), listed in the summary under
  ``attributes_renamed``.

Every customer present in any input appears exactly once in the output,
sorted by customer id, whatever rows are dropped: a customer whose rows all
have a null timestamp, fall after ``as_of`` or are returns dropped with
``drop_returns`` gets a zero-purchase row (like a CRM-only customer).

BTYD columns (``frequency``, ``recency``, ``T``, ``monetary_value``) follow
the *code* of lifetimes' ``summary_data_from_transaction_data`` (freq="D",
the convention pymc-marketing keeps), where it differs from its docstring:

* the docstring calls ``frequency`` the number of repeat purchases; the code
  counts repeat *periods*: purchases on the same (UTC) day count once, so
  ``frequency`` = distinct purchase days - 1;
* the docstring calls ``monetary_value`` the average value of the purchases;
  the code sums each period's purchases and averages the repeat periods only
  (the first day is left out), 0 for a customer without repeat periods;
* ``recency`` and ``T`` are whole days between period starts (the first and
  last purchase days, and the day of ``as_of``).

One deliberate difference: ``as_of`` is an instant, and rows after it are
left out of every column.  lifetimes truncates both the rows and
``observation_period_end`` to the start of their day, so it also keeps the
purchases made later on the ``as_of`` day.  Pass the end of the day (or leave
``as_of`` to default to the latest timestamp) to get identical BTYD columns.
"""

import datetime as _dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from segone import features as _features
from segone._backend import get_kernels
from segone._state import State
from segone._threads import effective_n_threads
from segone._validation import check_int
from segone.errors import DataError, EmptyInputError, ParameterError, SchemaError, examples
from segone.io import iter_batches, read_table, release_arrow_memory

DEFAULT_SCHEMA = {
    "customer_id": "customer_id",
    "ts": "ts",
    "amount": "amount",
    "category": "category",
    "channel": "channel",
    "event": "event",
    "order_id": "order_id",
}
US_PER_DAY = 86_400 * 1_000_000
MAX_WINDOW_DAYS = 1_000_000  # about 2700 years: window starts stay in the int64 microsecond range
BTYD_UNITS = {"D": "days", "W": "weeks", "M": "months"}
# web funnel: an event type belongs to the first stage (purchase, checkout, cart, view) one of whose words is a
# word of its name (lower case, split on anything but letters and digits); other types are counted but staged nowhere
DEFAULT_FUNNEL = {
    "purchase": ("purchase", "purchased", "order", "transaction", "buy", "bought", "paid"),
    "checkout": ("checkout", "payment", "shipping", "billing"),
    "cart": ("cart", "basket", "bag", "add"),
    "view": ("view", "pageview", "visit", "page", "browse", "search", "product", "pricing", "landing", "home"),
}
FUNNEL_STAGES = ("view", "cart", "checkout", "purchase")  # funnel_stage 1..4; 0: no staged event
SESSION_GAP_MINUTES = 30  # a gap longer than this between two events of a customer starts a new session
FUNNEL_COLUMNS = tuple(f.name for f in _features.features_of_step("funnel"))  # what funnel_features returns


def _period_of(ts_us, freq):
    """Period index of UTC instants: weeks run Monday to Sunday (pandas' "W"), months are calendar months."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    if freq == "W":  # 1970-01-01 was a Thursday: day -3 is the Monday that starts week 0
        return np.floor_divide(np.floor_divide(ts_us, US_PER_DAY) + 3, 7)
    return ts_us.astype("datetime64[us]").astype("datetime64[M]").astype(np.int64)


def _btyd_periods(codes, ts, amount, n, freq, as_of_us):
    """Per customer: (as_of period, first period, last period, distinct periods, spend of the first period)."""
    per = _period_of(ts, freq)
    g = pa.table({"c": codes, "p": per, "a": amount}).group_by(["c", "p"]).aggregate([("a", "sum")])
    gc, gp, ga = (g.column(x).to_numpy() for x in ("c", "p", "a_sum"))
    n_periods = np.bincount(gc, minlength=n)
    first_p = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(first_p, gc, gp)
    last_p = np.full(n, np.iinfo(np.int64).min)
    np.maximum.at(last_p, gc, gp)
    first_spend = np.bincount(gc, weights=np.where(gp == first_p[gc], ga, 0.0), minlength=n)
    has = n_periods > 0
    return (int(_period_of([as_of_us], freq)[0]), np.where(has, first_p, 0), np.where(has, last_p, 0), n_periods,
            first_spend)  # fmt: skip


def resolve_schema(schema):
    """The column name of every role: the defaults updated with ``schema``."""
    out = dict(DEFAULT_SCHEMA)
    if schema:
        unknown = set(schema) - set(DEFAULT_SCHEMA)
        if unknown:
            raise ParameterError(
                f"schema has unknown role(s) {sorted(unknown)}; known roles: {sorted(DEFAULT_SCHEMA)}."
            )
        out.update(schema)
    return out


def _decode(col):
    """A dictionary-encoded (categorical) column -> its values (nulls stay nulls)."""
    value_type = col.type.value_type
    if isinstance(col, pa.ChunkedArray):
        return pa.chunked_array([c.dictionary_decode() for c in col.chunks], type=value_type)
    return col.dictionary_decode()


def _is_text(t):
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))  # fmt: skip


def _check_ids(col, where):
    """Customer id column -> int64 or string values (categorical ids are decoded; every width of both)."""
    t = col.type
    if pa.types.is_dictionary(t):
        return _check_ids(_decode(col), where)
    if pa.types.is_floating(t):
        raise SchemaError(
            f"{where}: customer id column has type {t}; ids must be integers or strings "
            "(floats lose precision). Cast it, e.g. pc.cast(col, pa.int64()); integer ids with nulls read "
            "through pandas become floats: pass the Parquet path, or read with dtype_backend='pyarrow'."
        )
    if pa.types.is_integer(t):
        if t == pa.int64():
            return col
        try:
            return pc.cast(col, pa.int64())
        except pa.ArrowInvalid:
            raise DataError(
                f"{where}: customer ids of type {t} exceed the int64 range; cast them to strings, "
                "e.g. pc.cast(col, pa.string())."
            ) from None
    if _is_text(t):
        return col if pa.types.is_string(t) else pc.cast(col, pa.string())
    raise SchemaError(
        f"{where}: customer id column has type {t}; expected an integer or string column "
        "(cast it, e.g. pc.cast(col, pa.string()))."
    )


# The rule for timestamp strings (documented in _ts_to_us): ISO 8601, with or without an offset.
_TS_OFFSET = r"[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)$"  # after a time
_TS_ISO = r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?" + r"(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$"
TS_FORMATS = (
    "ISO 8601: 'YYYY-MM-DD' (midnight), 'YYYY-MM-DD hh:mm[:ss[.fffffffff]]' with a 'T' or a space between date "
    "and time, optionally followed by 'Z' or a UTC offset ('+hh:mm', '+hhmm', '+hh'); values without an offset "
    "are UTC"
)


def _cast_iso(col, tz):
    """Strings -> timestamp[us, tz] by Arrow's ISO 8601 cast (nanosecond fractions truncated); None if any fails."""
    for unit in ("us", "ns"):
        try:
            out = pc.cast(col, pa.timestamp(unit, tz=tz))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return pc.cast(out, pa.timestamp("us", tz=tz), safe=False)
    return None


def _parse_ts_strings(col, where, rows=None):
    """ISO 8601 strings -> (int64 us since the epoch UTC, tz-aware flag); see :func:`_ts_to_us`."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    naive = _cast_iso(col, None)
    if naive is not None:  # the usual case: one vectorised cast
        return naive.view(pa.int64()), False
    aware = _cast_iso(col, "UTC")
    if aware is not None:
        return aware.view(pa.int64()), True
    # some values with an offset, some without (taken as UTC)
    has_offset = pc.match_substring_regex(col, _TS_OFFSET)
    none = pa.scalar(None, pa.string())
    naive = _cast_iso(pc.if_else(has_offset, none, col), None)
    aware = _cast_iso(pc.if_else(has_offset, col, none), "UTC")
    if naive is not None and aware is not None:
        return pc.if_else(has_offset, aware.view(pa.int64()), naive.view(pa.int64())), True
    raise _ts_strings_error(col, where, rows)


def _ts_strings_error(col, where, rows):
    not_iso = pc.invert(pc.fill_null(pc.match_substring_regex(col, _TS_ISO), True))
    bad = np.flatnonzero(not_iso.to_numpy(zero_copy_only=False))
    if bad.size == 0:  # ISO-shaped but not a real date or time (e.g. month 13): find them one by one
        uniq = pc.unique(pc.drop_null(col))[:2000].to_pylist()
        wrong = {v for v in uniq if _cast_iso(pa.array([v]), None) is None and _cast_iso(pa.array([v]), "UTC") is None}
        bad = np.flatnonzero([v in wrong for v in col.to_pylist()])
    if bad.size == 0:  # every value parses alone (should not happen): show the first ones
        bad = np.arange(min(len(col), 5))
    values = pc.take(col, pa.array(bad[:200])).to_pylist()
    shown = list(dict.fromkeys(values))[:5]
    at = rows[bad] if rows is not None and bad.size else bad
    from segone._validation import ColumnFormatError

    # no value is a timestamp: the column as a whole is wrong (a schema error too)
    cls = ColumnFormatError if bad.size == len(col) - col.null_count else DataError
    return cls(
        f"{where}: timestamp column has type string and {bad.size} of its values match no accepted format "
        f"(values: {examples(shown)}; first rows: {examples(at)}). Accepted: {TS_FORMATS}. Parse other formats first, e.g. "
        "pc.strptime(col, format='%d/%m/%Y %H:%M', unit='us'), or fix those rows."
    )


def _ts_to_us(col, where, rows=None):
    """Timestamp column -> (int64 microseconds since the epoch UTC, tz-aware flag).

    Accepted types: timestamps of any unit (truncated to microseconds) and
    time zone, dates (midnight UTC), and strings (also large / view strings
    and categorical strings) by this rule: Arrow's vectorised ISO 8601 cast,
    :data:`TS_FORMATS` -- "2024-03-18", "2024-03-18 14:05:00",
    "2024-03-18T14:05:00.123", "2024-03-18T14:05:00Z",
    "2024-03-18 14:05:00+01:00".  Strings without an offset are UTC, like
    naive timestamps; a column is time-zone aware when it has offsets.
    Strings matching no format raise :class:`~segone.errors.DataError` naming
    the column, example values (and their ``rows``, when given) and the
    formats.
    """
    t = col.type
    if pa.types.is_dictionary(t):
        col = _decode(col)
        t = col.type
    if _is_text(t):
        return _parse_ts_strings(col, where, rows)
    if pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("us"))
        t = col.type
    if not pa.types.is_timestamp(t):
        hint = (" Numbers since the epoch: pc.cast(col, pa.timestamp('s')) (or 'ms', 'us')."
                if pa.types.is_integer(t) else "")  # fmt: skip
        raise SchemaError(
            f"{where}: timestamp column has type {t}; expected a timestamp, a date or ISO 8601 strings "
            f"({TS_FORMATS}).{hint} Parse other strings first, e.g. pc.strptime(col, format='%d/%m/%Y %H:%M', "
            "unit='us')."
        )
    aware = t.tz is not None
    # truncate to microseconds (pandas-origin data is often timestamp[ns]); seconds and milliseconds are
    # multiplied: an overflow is an error there, not a wrapped value
    try:
        col = pc.cast(col, pa.timestamp("us", tz=t.tz), safe=t.unit in ("s", "ms"))
    except pa.ArrowInvalid:
        raise DataError(
            f"{where}: timestamps of type {t} lie outside the years 1-9999 (the range segone reads); fix or drop "
            "those rows."
        ) from None
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.view(pa.int64()), aware


# the instants segone reads: the years 1 to 9999 (what Python's datetime holds), in microseconds since the epoch
TS_MIN_US, TS_MAX_US = -62_135_596_800_000_000, 253_402_300_799_999_999


def _check_ts_range(ts_us, where, rows=None):
    """Raise DataError naming the rows whose timestamps fall outside the years 1-9999."""
    v = ts_us.to_numpy(zero_copy_only=False) if isinstance(ts_us, (pa.Array, pa.ChunkedArray)) else ts_us
    if v.size == 0:
        return
    if v.min() >= TS_MIN_US and v.max() <= TS_MAX_US:
        return
    bad = np.flatnonzero((v < TS_MIN_US) | (v > TS_MAX_US))
    shown = [str(np.datetime64(int(x), "us")) for x in v[bad[:5]]]
    at = rows[bad] if rows is not None else bad
    raise DataError(
        f"{where}: {bad.size} timestamps lie outside the years 1-9999 (first rows: {examples(at)}, values: "
        f"{', '.join(shown)}); fix or drop those rows (a wrong unit, e.g. milliseconds read as seconds, gives such "
        "values)."
    )


def parse_as_of(as_of):
    """``as_of`` (datetime, date, ISO string, datetime64 or None) -> microseconds since the epoch (UTC)."""
    if as_of is None:
        return None
    if isinstance(as_of, str):
        try:
            as_of = _dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise ParameterError(f"as_of={as_of!r} is not an ISO date or datetime (e.g. '2026-01-01').") from None
    if isinstance(as_of, np.datetime64):
        us = int(as_of.astype("datetime64[us]").astype(np.int64))
        if np.isnat(as_of) or not TS_MIN_US <= us <= TS_MAX_US:
            raise ParameterError(f"as_of={as_of!r} is not a time in the years 1-9999.")
        return us
    if isinstance(as_of, _dt.datetime):
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=_dt.timezone.utc)
        return int(round(as_of.timestamp() * 1_000_000))
    if isinstance(as_of, _dt.date):
        return int(_dt.datetime(as_of.year, as_of.month, as_of.day, tzinfo=_dt.timezone.utc).timestamp() * 1_000_000)
    raise ParameterError(f"as_of must be a datetime, a date, an ISO string or None, got {type(as_of).__name__}.")


def _codes_and_labels(col, where):
    """Categorical column -> (int32 codes with -1 for null, list of labels).

    Labels are in order of first appearance whatever the encoding: a
    dictionary (pandas / polars categorical) column gives the labels and
    codes its decoded strings give (unused categories are dropped, a null
    category value is a null).
    """
    if pa.types.is_null(col.type):  # every value null (e.g. from pandas with only None)
        return np.full(len(col), -1, dtype=np.int32), []
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            if col.num_chunks == 0:
                return np.empty(0, np.int32), []
            col = pa.chunked_array(pa.table({"c": col}).unify_dictionaries().column("c").chunks, type=col.type)
            dictionary = col.chunk(0).dictionary
            indices = pa.chunked_array([c.indices for c in col.chunks]).combine_chunks()
            return _first_appearance(indices, dictionary)
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        return _first_appearance(col.indices, col.dictionary)
    if _is_text(col.type) and not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    if not (pa.types.is_string(col.type) or pa.types.is_integer(col.type)):
        raise SchemaError(
            f"{where}: expected a string, categorical or integer column, found {col.type}; "
            "cast it, e.g. pc.cast(col, pa.string())."
        )
    enc = pc.dictionary_encode(col)
    labels = [str(v) for v in enc.dictionary.to_pylist()]
    codes = pc.fill_null(pc.cast(enc.indices, pa.int32()), -1).to_numpy(zero_copy_only=False)
    return codes, labels


def _first_appearance(indices, dictionary):
    """Dictionary indices -> (int32 codes numbered by first appearance, their labels); null values -> -1."""
    seen = pc.unique(pc.drop_null(indices))  # in order of first appearance (one hash pass over small ints)
    values = pc.take(dictionary, seen)
    if values.null_count:  # a null category value is a null
        keep = pc.is_valid(values)
        seen, values = pc.filter(seen, keep), pc.filter(values, keep)
    remap = np.full(len(dictionary) + 1, -1, dtype=np.int32)  # the last slot: null indices
    remap[seen.to_numpy(zero_copy_only=False).astype(np.int64)] = np.arange(len(seen), dtype=np.int32)
    idx = pc.fill_null(pc.cast(indices, pa.int64()), len(dictionary)).to_numpy(zero_copy_only=False)
    return remap[idx], [str(v) for v in values.to_pylist()]


def _unique_name(prefix, label, taken):
    """``prefix + safe(label)``, with a numeric suffix when it is already taken."""
    base = f"{prefix}{_safe_name(label)}"
    name, i = base, 2
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def _safe_name(label):
    out = "".join(ch if ch.isalnum() else "_" for ch in str(label).strip().lower())
    return out.strip("_") or "blank"


def _drop_null_keys(table, id_col, ts_col, where, summary):
    mask = None
    for col, what in ((id_col, "null customer id"), (ts_col, "null timestamp")):
        if col is None:
            continue
        c = table.column(col)
        if c.null_count:
            summary["dropped"][f"{where}: {what}"] = summary["dropped"].get(f"{where}: {what}", 0) + c.null_count
            valid = pc.is_valid(c)
            mask = valid if mask is None else pc.and_(mask, valid)
    return table.filter(mask) if mask is not None else table


class _Labels:
    """Category labels merged across record batches: batch codes -> one global code space."""

    def __init__(self):
        self.labels = []
        self._index = {}

    def add(self, codes, labels):
        if not labels:
            return codes
        remap = np.empty(len(labels) + 1, dtype=np.int32)
        for i, lab in enumerate(labels):
            remap[i] = self._index.setdefault(lab, len(self.labels))
            if remap[i] == len(self.labels):
                self.labels.append(lab)
        remap[-1] = -1  # code -1 (null) indexes the last slot
        if np.array_equal(remap[:-1], np.arange(len(labels))):
            return codes  # the batch uses the global codes already (the usual case)
        return remap[codes]


def _collect(source, where, cid, tcol, summary, *, amount=None, categorical=(), raw=()):
    """Stream ``source`` batch by batch into compact arrays, validating as it goes.

    Rows with a null id or timestamp are dropped and counted.  Returns a dict
    with ``ids`` (pyarrow ChunkedArray), ``orphans`` (the ids of rows dropped
    for a null timestamp, or None: those customers stay), ``ts`` (int64 us), ``aware``,
    ``amount`` (float64, when asked), ``cats`` ({column: (int32 codes,
    labels)} for the categorical columns present) and ``raw`` ({column:
    ChunkedArray} for the ``raw`` columns present, e.g. order ids).  Errors name rows of the
    input as read (0-based, before any dropping).
    """
    needed = [cid, tcol] + ([amount] if amount else [])
    ids, ts_parts, amt_parts, orphans = [], [], [], []
    cat_parts = {c: [] for c in categorical}
    cat_labels = {c: _Labels() for c in categorical}
    present = None
    aware = None
    offset = 0
    batch = None
    raw_parts = {c: [] for c in raw}
    for batch in iter_batches(source, needed, name=where, optional=tuple(categorical) + tuple(raw)):
        if present is None:
            present = [c for c in categorical if c in batch.schema.names]
            if amount:
                at = batch.schema.field(amount).type
                if not (pa.types.is_floating(at) or pa.types.is_integer(at) or pa.types.is_decimal(at)):
                    raise SchemaError(f"{where}.{amount}: amount column has type {at}; expected a numeric column.")
        n = batch.num_rows
        keep = None
        for col, what in ((cid, "null customer id"), (tcol, "null timestamp")):
            c = batch.column(col)
            if c.null_count:
                valid = pc.is_valid(c)
                # a row is dropped once, for its first reason
                n_new = c.null_count if keep is None else pc.sum(pc.and_(keep, pc.invert(valid))).as_py() or 0
                if n_new:
                    key = f"{where}: {what}"
                    summary["dropped"][key] = summary["dropped"].get(key, 0) + n_new
                keep = valid if keep is None else pc.and_(keep, valid)
        rows = np.arange(offset, offset + n)
        tc = batch.column(tcol)
        if tc.null_count:
            # rows with an id but no timestamp are dropped, their customers are not: keep those ids
            lost = pc.and_(pc.is_valid(batch.column(cid)), pc.is_null(tc))
            if pc.any(lost).as_py():
                orphans.append(_check_ids(batch.column(cid).filter(lost), f"{where}.{cid}"))
        if keep is not None:
            batch = batch.filter(keep)
            rows = rows[keep.to_numpy(zero_copy_only=False)]
        offset += n
        ids.append(_check_ids(batch.column(cid), f"{where}.{cid}"))
        if ids[-1].type != ids[0].type:
            raise SchemaError(
                f"{where}.{cid}: customer ids change type between record batches ({ids[0].type}, then "
                f"{ids[-1].type}); give the column one type."
            )
        t, a = _ts_to_us(batch.column(tcol), f"{where}.{tcol}", rows)
        _check_ts_range(t, f"{where}.{tcol}", rows)
        # timestamp columns have one zone in every batch; string batches are aware when any has offsets
        aware = a if aware is None else (aware or a)
        ts_parts.append(t.to_numpy(zero_copy_only=False))
        if amount:
            ac = batch.column(amount)
            if ac.null_count:
                bad = rows[pc.is_null(ac).to_numpy(zero_copy_only=False)]
                raise DataError(
                    f"{where}.{amount}: null amounts (first rows: {examples(bad)}); "
                    "fill them (e.g. with 0) or drop those rows."
                )
            # integers beyond 2**53 lose their last digits as floats (a safe cast would refuse them)
            v = np.asarray(pc.cast(ac, pa.float64(), safe=not pa.types.is_integer(ac.type))
                           .to_numpy(zero_copy_only=False), dtype=np.float64)  # fmt: skip
            if not np.isfinite(v).all():
                bad = np.flatnonzero(~np.isfinite(v))
                raise DataError(
                    f"{where}.{amount} (amounts): NaN or infinite values (first rows: {examples(rows[bad])}, "
                    f"values: {examples(v[bad])}); fix or drop those rows."
                )
            amt_parts.append(v)
        for c in present:
            codes, labels = _codes_and_labels(batch.column(c), f"{where}.{c}")
            cat_parts[c].append(cat_labels[c].add(codes, labels))
        for c in raw:
            if c in batch.schema.names:
                raw_parts[c].append(batch.column(c))
    if present is None:  # no batch at all: an empty input
        present = []
    summary["rows_read"][where] = offset
    for o in orphans:
        if ids and o.type != ids[0].type:
            raise SchemaError(
                f"{where}.{cid}: customer ids change type between record batches ({ids[0].type}, then "
                f"{o.type}); give the column one type."
            )
    out = {
        "ids": pa.chunked_array(ids, type=ids[0].type) if ids else None,
        # ids of the customers whose rows were dropped for a null timestamp (they stay customers)
        "orphans": pa.chunked_array(orphans, type=ids[0].type) if orphans and ids else None,
        "ts": np.concatenate(ts_parts) if ts_parts else np.empty(0, dtype=np.int64),
        "aware": aware,
        "cats": {},
        "raw": {c: pa.chunked_array(v) for c, v in raw_parts.items() if v},
    }
    del ts_parts, batch
    release_arrow_memory()  # the batches are gone: give their memory back before the next stage
    if amount:
        out["amount"] = np.concatenate(amt_parts) if amt_parts else np.empty(0)
    for c in present:
        codes = np.concatenate(cat_parts.pop(c)) if ids else np.empty(0, dtype=np.int32)
        out["cats"][c] = (codes.astype(np.int32, copy=False), cat_labels[c].labels)
    return out


def _factorize(parts):
    """Customer ids of several inputs -> (sorted unique ids, int64 codes per input).

    Integer ids that are dense enough (the common case: surrogate keys) are
    ranked through a presence table in O(rows + span) without hashing;
    other ids go through one Arrow hash pass (dictionary_encode over all
    inputs, whose chunks share one dictionary), then the dictionary is sorted.
    """
    lengths = [len(p) for p in parts]
    total = sum(lengths)
    id_type = parts[0].type
    if total and pa.types.is_integer(id_type):
        lo = min(pc.min(p).as_py() for p in parts if len(p))
        hi = max(pc.max(p).as_py() for p in parts if len(p))
        span = hi - lo + 1
        if 0 < span <= 4 * total + (1 << 20):
            # one writable int64 copy per input, made offsets and then codes in place; the caller's Arrow ids
            # are released as they are copied (``parts`` is consumed), so ids are held once, not three times
            present = np.zeros(span, dtype=bool)
            arrs = []
            for i, p in enumerate(parts):
                a = np.empty(len(p), dtype=np.int64)
                at = 0
                for c in p.chunks if isinstance(p, pa.ChunkedArray) else [p]:
                    a[at : at + len(c)] = c.to_numpy(zero_copy_only=False)
                    at += len(c)
                parts[i] = None
                a -= lo  # offsets into the presence table
                present[a] = True
                arrs.append(a)
            rank = np.cumsum(present, dtype=np.int64) - 1
            uniq = pa.array(np.flatnonzero(present) + lo, type=pa.int64())
            del present
            for a in arrs:
                np.take(rank, a, out=a, mode="clip")  # in place (indices are valid; no buffering)
            return uniq, arrs
    chunks = [c for p in parts for c in p.chunks]
    enc = pc.dictionary_encode(pa.chunked_array(chunks, type=id_type))
    if enc.num_chunks == 0:
        return pa.array([], type=id_type), [np.empty(0, dtype=np.int64) for _ in parts]
    dictionary = enc.chunk(0).dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    idx = np.concatenate([c.indices.to_numpy(zero_copy_only=False).astype(np.int64) for c in enc.chunks])
    codes = rank[idx]
    bounds = np.cumsum([0] + lengths)
    return pc.take(dictionary, pa.array(order)), [codes[bounds[i]:bounds[i + 1]] for i in range(len(parts))]


def build_profiles_with_summary(
    transactions,
    *,
    events=None,
    attributes=None,
    as_of=None,
    schema=None,
    windows=(30, 90, 365),
    top_categories=20,
    top_channels=10,
    drop_returns=False,
    backend="auto",
    n_threads=None,
    labels=None,
    freq="D",
    _partition=False,
):
    """Like :func:`build_profiles`, returning ``(profiles, summary)``.

    ``labels`` ({"category": [...], "channel": [...], "event": [...]}, each
    optional) fixes the category / channel / event labels that get their own
    columns, in that order, whatever the data holds: the Dask layer passes the
    global labels so that every partition has the same columns.  With
    ``_partition=True`` (the Dask layer, which also fixes ``as_of``) a piece
    without transactions is not an error: its customers come from the events
    and attributes.

    The steps, in order: read and normalise the inputs (:func:`_read_inputs`),
    fix ``as_of`` (:func:`_resolve_as_of`), factorize the customer ids of
    every input (:func:`_factorize_ids`), keep the rows up to ``as_of``
    (:func:`_select_rows`), run the transaction kernel and free the
    transaction rows (:func:`_transaction_pass`), build the columns (the
    registry's "transactions" features, the windows, the category and
    channel mixes, the web events and funnel, the BTYD columns), then attach
    the CRM attributes (:func:`_attach_attributes`).
    """
    roles = resolve_schema(schema)
    cid, acol = roles["customer_id"], roles["amount"]
    windows = tuple(check_int(w, "windows[i]", low=1, high=MAX_WINDOW_DAYS) for w in windows)
    top_categories = check_int(top_categories, "top_categories", low=0)
    top_channels = check_int(top_channels, "top_channels", low=0)
    if freq not in BTYD_UNITS:
        raise ParameterError(f"freq={freq!r} is not a BTYD period; use one of {sorted(BTYD_UNITS)} (day, week, month).")
    summary = {"rows_read": {}, "dropped": {}, "excluded_after_as_of": {}, "returns": 0, "folded": {}}

    tx, ev, attrs = _read_inputs(transactions, events, attributes, roles, summary, _partition)
    as_of_us = _resolve_as_of(as_of, tx, ev, roles["ts"], summary)
    uniq, codes = _factorize_ids(tx, ev, attrs, cid, _partition)
    n = len(uniq)
    _select_rows(tx, ev, codes, as_of_us, drop_returns, roles, summary)
    kern = get_kernels(backend, "group")
    nt = effective_n_threads(n_threads)
    agg, btyd_periods = _transaction_pass(tx, codes, n, as_of_us, windows, freq, roles, kern, nt, summary)

    # the columns, step by step (each step sees the columns before it: names never collide)
    fixed = labels or {}
    k = _Built(agg, as_of_us)
    cols = {"customer_id": uniq}
    cols.update(_registry_columns("transactions", k))  # recency, frequency, monetary
    cols.update(_window_columns(agg, windows))
    _category_columns(cols, agg, tx, roles["category"], fixed, top_categories, n, summary)
    _channel_columns(cols, agg, tx, fixed, top_channels, n, summary)
    summary["events"] = _event_columns(cols, ev, codes, fixed, k, kern, nt, n)
    cols.update(_btyd_columns(k, freq, btyd_periods))
    summary["btyd_unit"] = BTYD_UNITS[freq]
    _check_sums_finite(cols, uniq, f"transactions.{acol}")

    out = pa.table(cols)
    if attrs is not None:  # also when empty: every piece gets the same columns
        out = _attach_attributes(out, attrs, codes.pop("attributes"), uniq, cid, summary)

    summary["customers"] = n
    summary["customers_without_purchase"] = int((~k.has).sum())
    summary["as_of"] = _dt.datetime.fromtimestamp(as_of_us / 1e6, tz=_dt.timezone.utc).isoformat()
    meta = dict(out.schema.metadata or {})
    meta[b"segone"] = json.dumps(summary).encode()
    return out.replace_schema_metadata(meta), summary


def _read_inputs(transactions, events, attributes, roles, summary, _partition):
    """Read and normalise the inputs: ``(tx, ev, attrs)``.

    ``tx`` and ``ev`` are :func:`_collect` dicts (``ev`` None without events
    or without an event row); the transaction order ids, when the schema
    names a column that exists, are in ``tx["raw"]``.  ``attrs`` is the CRM
    table with checked ids and the rows with a null id dropped, or None.
    """
    cid, tcol, acol = roles["customer_id"], roles["ts"], roles["amount"]
    cat_role, ch_role, order_role = roles["category"], roles["channel"], roles["order_id"]
    tx = _collect(transactions, "transactions", cid, tcol, summary, amount=acol, categorical=(cat_role, ch_role),
                  raw=(order_role,))  # fmt: skip
    order_ids = tx["raw"].get(order_role)
    if order_ids is not None and (pa.types.is_nested(order_ids.type) or pa.types.is_union(order_ids.type)):
        raise SchemaError(
            f"transactions.{order_role}: order id column has type {order_ids.type}; expected integers or strings "
            "(one id per row): cast it, e.g. pc.cast(col, pa.string())."
        )
    del order_ids
    if summary["rows_read"]["transactions"] == 0 and not _partition:
        raise EmptyInputError("transactions: the input has 0 rows; nothing to profile.")
    if tx["ts"].size == 0 and not _partition:
        raise EmptyInputError(
            f"transactions: all {summary['rows_read']['transactions']} rows have a null customer id or timestamp."
        )

    ev = None
    if events is not None:
        ev = _collect(events, "events", cid, tcol, summary, categorical=(roles["event"],))
        if ev["ids"] is None:
            ev = None
    attrs = None
    if attributes is not None:
        attrs = read_table(attributes, name="attributes")
        if attrs.column_names.count(cid) > 1:
            raise SchemaError(
                f"attributes: the customer id column {cid!r} appears {attrs.column_names.count(cid)} times; "
                "keep one (rename or drop the others)."
            )
        if cid not in attrs.column_names:
            raise SchemaError(
                f"attributes: customer id column {cid!r} not found; the input has columns "
                f"{attrs.column_names[:20]}. Rename it or pass schema={{'customer_id': 'your_column'}}."
            )
        summary["rows_read"]["attributes"] = attrs.num_rows
        attrs = attrs.set_column(attrs.column_names.index(cid), cid, _check_ids(attrs.column(cid), f"attributes.{cid}"))
        attrs = _drop_null_keys(attrs, cid, None, "attributes", summary)
    return tx, ev, attrs


def _resolve_as_of(as_of, tx, ev, tcol, summary):
    """``as_of`` in microseconds since the epoch (default: the latest transaction), after checking that the
    transactions and the events have the same kind of timestamps (zone-aware or naive)."""
    as_of_us = parse_as_of(as_of)
    if as_of_us is None:
        from segone._validation import check_timestamp_bulk

        check_timestamp_bulk(tx["ts"], f"transactions.{tcol}")  # far-off (damaged) timestamps would move as_of
        as_of_us = int(tx["ts"].max())
        summary["as_of_source"] = "latest transaction timestamp"
    if ev is not None and ev["ts"].size and ev["aware"] != tx["aware"]:
        raise SchemaError(
            f"events.{tcol} is {'time-zone aware' if ev['aware'] else 'naive'} but transactions.{tcol} is "
            f"{'time-zone aware' if tx['aware'] else 'naive'}; give both the same kind (e.g. UTC)."
        )
    return as_of_us


def _factorize_ids(tx, ev, attrs, cid, _partition):
    """The customer universe: ``(sorted unique ids, {"transactions": codes, "events": codes, "attributes": codes})``.

    Every id in any input is a customer (also customers whose rows all fall
    after as_of, are dropped as returns or have a null timestamp: they get a
    zero-purchase row).  The id arrays are popped from ``tx`` / ``ev`` and
    consumed by :func:`_factorize` (ids are held once, not three times).
    """
    id_type = tx["ids"].type
    parts = [tx.pop("ids")]
    others = [(ev.pop("ids"), "events")] if ev is not None else []
    if attrs is not None:
        others.append((attrs.column(cid), "attributes"))
    # then the ids of the rows dropped for a null timestamp (no codes needed: those customers have no rows)
    others += [(o, where) for o, where in ((tx.pop("orphans"), "transactions"),
                                           (ev.pop("orphans") if ev is not None else None, "events")) if o is not None]
    for oid, where in others:
        if oid.type != id_type:
            raise SchemaError(
                f"{where}.{cid} has type {oid.type} but transactions.{cid} has {id_type}; "
                "customer ids must have the same type in every input."
            )
    parts += [oid for oid, _ in others]
    others = oid = None  # _factorize releases each input's ids as it copies them: hold no other reference
    uniq, part_codes = _factorize(parts)
    del parts
    release_arrow_memory()
    if len(uniq) == 0 and not _partition:
        raise EmptyInputError("no customer remains after dropping rows with null ids or timestamps.")
    codes = {"transactions": part_codes.pop(0)}
    if ev is not None:
        codes["events"] = part_codes.pop(0)
    if attrs is not None:
        codes["attributes"] = part_codes.pop(0)
    return uniq, codes


def _select_rows(tx, ev, codes, as_of_us, drop_returns, roles, summary):
    """Keep the rows up to ``as_of`` (and, with ``drop_returns``, the non-negative amounts), in place.

    Afterwards ``tx`` holds ``ts``, ``amount``, ``cat`` / ``ch`` (codes,
    empty without the column), ``cat_labels`` / ``ch_labels`` and
    ``order_ids`` (or None) of the kept rows, and ``codes`` their
    customer codes; ``ev`` its kept ``ts``, ``types`` and ``labels``.
    """
    cat_role, ch_role = roles["category"], roles["channel"]
    ts, amount = tx.pop("ts"), tx.pop("amount")
    tx["cat"], tx["cat_labels"] = tx["cats"].get(cat_role, (np.empty(0, dtype=np.int32), []))
    tx["ch"], tx["ch_labels"] = tx["cats"].get(ch_role, (np.empty(0, dtype=np.int32), []))
    tx["cats"] = {c: (None, labels_) for c, (_, labels_) in tx["cats"].items()}
    tx["order_ids"] = tx.pop("raw").get(roles["order_id"])
    keep = ts <= as_of_us
    summary["excluded_after_as_of"]["transactions"] = int((~keep).sum())
    if drop_returns:
        neg = amount < 0
        if neg.any():
            summary["dropped"]["transactions: negative amount (drop_returns=True)"] = int((neg & keep).sum())
            keep &= ~neg
    if not keep.all():
        ts, amount, codes["transactions"] = ts[keep], amount[keep], codes["transactions"][keep]
        for key in ("cat", "ch"):
            if tx[key].size:
                tx[key] = tx[key][keep]
        if tx["order_ids"] is not None:
            tx["order_ids"] = tx["order_ids"].filter(pa.array(keep))
    del keep
    tx["ts"], tx["amount"] = ts, amount
    summary["returns"] = int((amount < 0).sum())
    if ev is not None:
        ev_ts = ev.pop("ts")
        ekeep = ev_ts <= as_of_us
        summary["excluded_after_as_of"]["events"] = int((~ekeep).sum())
        et, ev["labels"] = ev["cats"].get(roles["event"], (np.empty(0, dtype=np.int32), []))
        ev["cats"] = {c: (None, labels_) for c, (_, labels_) in ev["cats"].items()}
        if not ekeep.all():
            ev_ts, codes["events"], et = ev_ts[ekeep], codes["events"][ekeep], et[ekeep]
        ev["ts"], ev["types"] = ev_ts, et


def _transaction_pass(tx, codes, n, as_of_us, windows, freq, roles, kern, nt, summary):
    """The transaction kernel: ``(per-customer aggregates, BTYD periods or None)``; frees the transaction rows.

    The aggregates are the kernel's outputs (``kernels/_common.PROFILE_FIELDS``),
    with orders, window orders, the largest order and the channel mix per
    order id when the schema has an ``order_id`` column.  The transaction
    rows (the largest arrays of the stage) are dropped from ``tx`` and
    ``codes`` before returning, so the columns are built without them.
    """
    ts, amount, tcodes = tx.pop("ts"), tx.pop("amount"), codes.pop("transactions")
    cat, ch, order_ids = tx.pop("cat"), tx.pop("ch"), tx.pop("order_ids")
    n_ch = len(tx["ch_labels"])
    starts = np.array([as_of_us - w * US_PER_DAY for w in windows], dtype=np.int64)
    agg = kern.profile_pass(tcodes, n, ts, amount, cat, len(tx["cat_labels"]), ch, n_ch, starts, US_PER_DAY, nt)
    if order_ids is not None:
        _orders_from_ids(agg, tcodes, order_ids, ts, amount, starts, n, ch, n_ch)
        summary["orders_from"] = f"distinct {roles['order_id']}"
    else:
        summary["orders_from"] = "rows"
    btyd_periods = _btyd_periods(tcodes, ts, amount, n, freq, as_of_us) if freq != "D" else None
    # the transaction rows are aggregated: free them (the largest arrays of the stage) before the columns are built
    del ts, amount, tcodes, cat, ch, order_ids
    return agg, btyd_periods


class _Built:
    """What the column builders read: the kernel's aggregates, ``as_of`` and who has a purchase."""

    def __init__(self, agg, as_of_us):
        self.agg, self.as_of_us = agg, as_of_us
        self.has = agg["orders"] > 0
        self.btyd = None  # the BTYD step's periods (see _btyd_columns)


_UTC_US = pa.timestamp("us", tz="UTC")


def _btyd_spend(k):
    b = k.btyd
    with np.errstate(invalid="ignore", over="ignore"):  # overflowing sums are reported by _check_sums_finite
        return pa.array(np.where(b.repeat > 0, (k.agg["spend"] - b.first_spend) / np.maximum(b.repeat, 1), 0.0))


# One builder per registry feature of the "transactions" and "btyd" steps (segone.features): the column from the
# kernel's aggregates. Adding such a feature: its registry entry, its kernel output, and its builder here.
_BUILDERS = {
    "first_purchase": lambda k: pa.array(np.where(k.has, k.agg["first"], 0), type=_UTC_US, mask=~k.has),
    "last_purchase": lambda k: pa.array(np.where(k.has, k.agg["last"], 0), type=_UTC_US, mask=~k.has),
    "recency_days": lambda k: pa.array((k.as_of_us - k.agg["last"]) / US_PER_DAY, mask=~k.has),
    "tenure_days": lambda k: pa.array((k.as_of_us - k.agg["first"]) / US_PER_DAY, mask=~k.has),
    "orders": lambda k: pa.array(k.agg["orders"]),
    "purchase_days": lambda k: pa.array(k.agg["purchase_days"]),  # distinct UTC calendar days with a purchase
    "spend_total": lambda k: pa.array(k.agg["spend"]),
    "spend_mean": lambda k: pa.array(np.where(k.has, k.agg["spend"] / np.maximum(k.agg["orders"], 1), 0.0)),
    "spend_max": lambda k: pa.array(np.where(k.has, k.agg["spend_max"], 0.0)),
    # BTYD / lifetime-value summary (lifetimes' summary_data_from_transaction_data, in periods of `freq`)
    "frequency": lambda k: pa.array(k.btyd.repeat.astype(np.float64)),
    "recency": lambda k: pa.array(np.where(k.has, k.btyd.last_p - k.btyd.first_p, 0).astype(np.float64)),
    "T": lambda k: pa.array(np.where(k.has, k.btyd.as_of_p - k.btyd.first_p, 0).astype(np.float64), mask=~k.has),
    "monetary_value": _btyd_spend,
}


def _registry_columns(step, k):
    """The columns of the registry's features of ``step``, in registry order, each from its builder."""
    return {f.name: _BUILDERS[f.name](k) for f in _features.features_of_step(step)}


def _window_columns(agg, windows):
    """``orders_{w}d`` and ``spend_{w}d`` per window, window by window."""
    cols = {}
    for i, w in enumerate(windows):
        cols[f"orders_{w}d"] = pa.array(agg["window_orders"][:, i])
        cols[f"spend_{w}d"] = pa.array(agg["window_spend"][:, i])
    return cols


def _category_columns(cols, agg, tx, cat_role, fixed, top_categories, n, summary):
    """Category spend shares (of positive spend), ``share_other`` and ``n_categories``, added to ``cols``.

    With fixed labels (the Dask layer) every partition gets the same columns.
    """
    cat_labels = tx["cat_labels"]
    denom = np.where(agg["gross"] > 0, agg["gross"], 1.0)
    if cat_role in tx["cats"] or "category" in fixed:
        cat_spend = agg["cat_spend"]
        where = {lab: j for j, lab in enumerate(cat_labels)}
        if "category" in fixed:
            chosen = [str(lab) for lab in fixed["category"]]
        else:
            chosen = [cat_labels[j] for j in np.argsort(-cat_spend.sum(axis=0), kind="stable")[:top_categories]]
        taken = set(cols) | {"share_other"}
        for lab in chosen:
            v = cat_spend[:, where[lab]] if lab in where else np.zeros(n)
            cols[_unique_name("share_", lab, taken)] = pa.array(v / denom)
        rest = [j for j, lab in enumerate(cat_labels) if lab not in set(chosen)]
        # added one label at a time in label order: the same bits whichever piece of the customers (a Dask
        # partition, a state bucket) holds which other labels (a pairwise sum over the piece's columns is not)
        other = np.zeros(n)
        for j in sorted(rest, key=lambda j: str(cat_labels[j])):
            other += cat_spend[:, j]
        other += agg["null_cat_spend"]
        cols["share_other"] = pa.array(other / denom)
        cols["n_categories"] = pa.array(agg["n_categories"])
        summary["categories"] = chosen
        if "category" not in fixed:
            summary["folded"]["category"] = len(rest)
    if fixed:  # pieces of a larger input: the global fold counts
        summary["folded"] = dict(fixed.get("folded", {}))


def _channel_columns(cols, agg, tx, fixed, top_channels, n, summary):
    """Channel shares of orders (``channel_*``, ``channel_other``), added to ``cols``."""
    ch_labels = tx["ch_labels"]
    rows_per_customer = agg["orders"]  # rows (line items) unless an order id says otherwise: shares of orders
    if "channel" in fixed:
        ch_chosen = [str(lab) for lab in fixed["channel"]]
        ch_other = bool(fixed.get("channel_other"))
    else:  # the top_channels most frequent, the rest folded into channel_other
        counts = agg["channel_orders"].sum(axis=0) if len(ch_labels) else np.zeros(0)
        ch_chosen = [ch_labels[j] for j in np.argsort(-counts, kind="stable")[:top_channels]]
        ch_other = len(ch_labels) > len(ch_chosen)
        summary["folded"]["channel"] = len(ch_labels) - len(ch_chosen)
    summary["channels"], summary["channel_other"] = [str(x) for x in ch_chosen], bool(ch_other)
    if ch_chosen or ch_other:
        where = {lab: j for j, lab in enumerate(ch_labels)}
        taken = set(cols) | {"channel_other"}
        for lab in ch_chosen:
            v = agg["channel_orders"][:, where[lab]] if lab in where else np.zeros(n, dtype=np.int64)
            cols[_unique_name("channel_", lab, taken)] = pa.array(v / np.maximum(rows_per_customer, 1))
        if ch_other:
            rest = [j for j, lab in enumerate(ch_labels) if lab not in set(ch_chosen)]
            other = agg["channel_orders"][:, rest].sum(axis=1) if rest else np.zeros(n, dtype=np.int64)
            cols["channel_other"] = pa.array(other / np.maximum(rows_per_customer, 1))


def _event_columns(cols, ev, codes, fixed, k, kern, nt, n):
    """The event kernel: ``events_*`` / ``days_since_*`` per event type and the web funnel, added to ``cols``.

    Returns the event labels that got columns."""
    as_of_us = k.as_of_us
    ev_chosen = fixed.get("event")
    ev_ts = ev["ts"] if ev is not None else None
    ecodes = codes.get("events")
    if ev is not None and ev_ts.size:
        e_labels = ev["labels"]
        cnt, lst = kern.event_pass(ecodes, n, ev_ts, ev["types"], len(e_labels), nt)
    else:
        cnt, lst, e_labels = np.zeros((n, 0), dtype=np.int64), np.zeros((n, 0), dtype=np.int64), []
    if ev_chosen is None:
        ev_chosen = e_labels
    where = {lab: j for j, lab in enumerate(e_labels)}
    taken_ev = set(cols)
    for lab in (str(x) for x in ev_chosen):
        j = where.get(lab)
        c = cnt[:, j] if j is not None else np.zeros(n, dtype=np.int64)
        last_ts = lst[:, j] if j is not None else np.zeros(n, dtype=np.int64)
        ev_name = _unique_name("events_", lab, taken_ev)
        name = ev_name[len("events_"):]
        cols[ev_name] = pa.array(c)
        cols[f"days_since_{name}"] = pa.array((as_of_us - last_ts) / US_PER_DAY, mask=c == 0)
    if len(ev_chosen):  # events with a type: the web funnel (the same columns in every piece)
        if ev is None or not ev_ts.size:
            ecodes, ev_ts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        sessions = kern.session_count(ecodes, n, ev_ts, SESSION_GAP_MINUTES * 60 * 1_000_000, nt)
        events_per_customer = np.bincount(ecodes, minlength=n)
        cols.update(funnel_features(cnt, lst, e_labels, sessions, events_per_customer,
                                    np.where(k.has, k.agg["last"], np.iinfo(np.int64).min)))  # fmt: skip
    return [str(x) for x in ev_chosen]


class _Periods:
    """The BTYD periods per customer: as_of, first and last purchase period, repeat periods, first-period spend."""

    def __init__(self, as_of_p, first_p, last_p, n_periods, first_spend):
        self.as_of_p, self.first_p, self.last_p = as_of_p, first_p, last_p
        self.first_spend = first_spend
        self.repeat = np.maximum(n_periods - 1, 0)


def _btyd_columns(k, freq, btyd_periods):
    """The BTYD columns (the registry's "btyd" step) in periods of ``freq``."""
    if freq == "D":
        has, agg = k.has, k.agg
        k.btyd = _Periods(k.as_of_us // US_PER_DAY, np.where(has, agg["first"] // US_PER_DAY, 0),
                          np.where(has, agg["last"] // US_PER_DAY, 0), agg["purchase_days"], agg["first_day_spend"])
    else:
        k.btyd = _Periods(*btyd_periods)
    return _registry_columns("btyd", k)


def _attach_attributes(out, attrs, acodes, uniq, cid, summary):
    """The CRM attributes joined on the customer codes (one row per customer; renamed when a name is taken)."""
    n = len(uniq)
    per_customer = np.bincount(acodes, minlength=n)
    if (per_customer > 1).any():
        dup_codes = np.flatnonzero(per_customer > 1)
        dup = pc.take(uniq, pa.array(dup_codes[:5])).to_pylist()
        raise DataError(
            f"attributes.{cid}: {int((per_customer[dup_codes] - 1).sum())} duplicate customer ids "
            f"(e.g. {', '.join(map(repr, dup))}); CRM attributes need one row per customer."
        )
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[acodes] = np.arange(attrs.num_rows)
    take = pa.array(row_of, mask=row_of < 0)
    # a CRM column keeps its name unless a profile column (or an earlier CRM column) has it: then it
    # becomes crm_<name>, or crm_<name>_2, ... (never a name another CRM column has)
    placed, reserved, renamed = set(out.column_names), set(attrs.column_names), {}
    for i, name in enumerate(attrs.column_names):
        if name == cid:
            continue
        target = name
        if name in placed:
            base = target = f"crm_{name}"
            j = 2
            while target in placed or target in reserved:
                target, j = f"{base}_{j}", j + 1
            renamed[name] = target
        placed.add(target)
        out = out.append_column(target, pc.take(attrs.column(i), take))
    if renamed:
        summary["attributes_renamed"] = renamed
    return out


def funnel_stage_of(label, funnel=None):
    """The funnel stage (1 view, 2 cart, 3 checkout, 4 purchase; 0 none) of an event type, by :data:`DEFAULT_FUNNEL`.

    Examples
    --------
    >>> [funnel_stage_of(x) for x in ("page_view", "add_to_cart", "begin_checkout", "purchase", "email_open")]
    [1, 2, 3, 4, 0]
    """
    import re

    words = set(re.split(r"[^0-9a-z]+", str(label).lower()))
    funnel = DEFAULT_FUNNEL if funnel is None else funnel
    for stage in reversed(FUNNEL_STAGES):
        if words & set(funnel.get(stage, ())):
            return FUNNEL_STAGES.index(stage) + 1
    return 0


def funnel_features(counts, last, labels, sessions, events, last_purchase_us):
    """Web funnel columns per customer from the per-type event counts and latest times (``event_pass``).

    ``counts`` / ``last`` are (n, types) from the event kernel, ``labels`` the
    type names, ``sessions`` the sessions per customer (``session_count``
    with a gap of :data:`SESSION_GAP_MINUTES`), ``events`` all events per
    customer (null types included), ``last_purchase_us`` the last purchase
    (int64 min without one).  Returns:

    * ``sessions``: runs of a customer's events with no gap longer than ``SESSION_GAP_MINUTES``;
    * ``pages_per_session``: page views (events of the "view" stage; every event when no type is one) per
      session, null without a session;
    * ``funnel_stage``: the furthest stage reached, 1 viewed, 2 carted, 3 started checkout, 4 bought (a purchase
      event, or any purchase in ``last_purchase_us``); 0 without any;
    * ``cart_abandoned``: 1 when the customer's last cart or checkout event came after their last purchase.
    """
    low = np.iinfo(np.int64).min
    sessions = np.asarray(sessions, np.int64)
    n = sessions.shape[0]
    counts = np.asarray(counts).reshape(n, -1)
    last = np.asarray(last).reshape(n, -1)
    stage_of = np.array([funnel_stage_of(lab) for lab in labels], np.int8)[: counts.shape[1]]
    views = stage_of == 1
    pages = counts[:, views].sum(axis=1) if views.any() else np.asarray(events, np.int64)
    stage = np.zeros(n, np.int64)
    for k in range(1, len(FUNNEL_STAGES) + 1):
        m = stage_of == k
        if m.any():
            stage[(counts[:, m] > 0).any(axis=1)] = k
    bought = np.asarray(last_purchase_us) > low
    stage[bought] = len(FUNNEL_STAGES)

    def latest(mask, start):  # per customer: the latest time of an event of the masked types, or ``start``
        if not mask.any():
            return np.asarray(start, np.int64)
        return np.maximum(np.asarray(start, np.int64), last[:, mask].max(axis=1))

    last_buy = latest(stage_of == 4, last_purchase_us)
    last_cart = latest((stage_of == 2) | (stage_of == 3), np.full(n, low, np.int64))
    with np.errstate(invalid="ignore", divide="ignore"):
        pps = pages / np.maximum(sessions, 1)
    return {
        "sessions": pa.array(sessions),
        "pages_per_session": pa.array(pps, mask=sessions == 0),
        "funnel_stage": pa.array(stage),
        "cart_abandoned": pa.array((last_cart > last_buy).astype(np.int64)),
    }


def _check_sums_finite(cols, uniq, where):
    """Raise DataError when sums of amounts overflow float64 (1.8e308): per customer, or over all of them.

    Every amount is finite (checked as read), so an infinite or NaN profile
    value can only come from a sum that left the float64 range: the spend of
    a customer, or the total of a column over the customers (what the segment
    table adds up).
    """
    for name, arr in cols.items():
        if not pa.types.is_floating(arr.type):
            continue
        v = arr.to_numpy(zero_copy_only=False)
        valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
        with np.errstate(over="ignore", invalid="ignore"):
            total = np.add.reduce(np.abs(v if valid is None else v[valid]), dtype=np.float64)
        if np.isfinite(total):
            continue
        bad = ~np.isfinite(v) if valid is None else (~np.isfinite(v) & valid)
        if bad.any():
            rows = np.flatnonzero(bad)
            who = pc.take(uniq, pa.array(rows[:5])).to_pylist()
            raise DataError(
                f"{where}: the amounts of {rows.size} customer(s) add up beyond the float64 range (1.8e308), so their "
                f"{name} is infinite or NaN (customers: {examples(who)}); amounts must be one currency unit whose "
                "sums stay below 1.8e308: rescale them (e.g. divide by 1e6) or fix those rows."
            )
        raise DataError(
            f"{where}: {name} summed over all {len(v)} customers exceeds the float64 range (1.8e308); amounts "
            "must be one currency unit whose sums stay below 1.8e308: rescale them (e.g. divide by 1e6)."
        )


def _orders_from_ids(agg, codes, order_ids, ts, amount, starts, n, ch=None, n_ch=0):
    """Line items -> orders: orders, window orders, the largest basket and the channel mix per customer.

    An order's channel is the channel of its rows (the lowest channel code
    when its rows disagree); orders without a channel count in no channel.
    """
    valid = order_ids.is_valid().to_numpy(zero_copy_only=False) if order_ids.null_count else None
    with_ch = ch is not None and ch.size > 0 and n_ch > 0
    cols = {"c": codes, "o": order_ids, "ts": ts, "a": amount}
    if with_ch:
        cols["ch"] = pa.array(ch, mask=ch < 0)
    t = pa.table(cols)
    if valid is not None:
        t = t.filter(pa.array(valid))
    g = t.group_by(["c", "o"], use_threads=True).aggregate(
        [("ts", "min"), ("a", "sum")] + ([("ch", "min")] if with_ch else []))
    gc = g.column("c").to_numpy()
    gts, basket = g.column("ts_min").to_numpy(), g.column("a_sum").to_numpy()
    orders = np.bincount(gc, minlength=n)
    smax = np.full(n, -np.inf)
    np.maximum.at(smax, gc, basket)
    worders = np.stack([np.bincount(gc[gts >= s], minlength=n) for s in starts], axis=1) if len(starts) else \
        np.zeros((n, 0), dtype=np.int64)  # fmt: skip
    if valid is not None:  # a row without an order id is an order of its own
        lone = ~valid
        orders = orders + np.bincount(codes[lone], minlength=n)
        np.maximum.at(smax, codes[lone], amount[lone])
        for i, s in enumerate(starts):
            worders[:, i] += np.bincount(codes[lone & (ts >= s)], minlength=n)
    if with_ch:
        gch = g.column("ch_min").fill_null(-1).to_numpy().astype(np.int64)
        pairs = [(gc, gch)] + ([(codes[~valid], ch[~valid].astype(np.int64))] if valid is not None else [])
        mix = np.zeros(n * n_ch, dtype=np.int64)
        for c, h in pairs:
            ok = h >= 0
            mix += np.bincount(c[ok].astype(np.int64) * n_ch + h[ok], minlength=n * n_ch)
        agg["channel_orders"] = mix.reshape(n, n_ch).astype(agg["channel_orders"].dtype)
    agg["orders"] = orders.astype(agg["orders"].dtype)
    agg["window_orders"] = worders.astype(agg["window_orders"].dtype)
    agg["spend_max"] = np.where(orders > 0, smax, 0.0)


def build_profiles(transactions, *, events=None, attributes=None, as_of=None, schema=None,
                   windows=(30, 90, 365), top_categories=20, top_channels=10, drop_returns=False,
                   freq="D", backend="auto", n_threads=None):  # fmt: skip
    """Build one profile row per customer.

    Parameters
    ----------
    transactions : pyarrow Table / Dataset / RecordBatchReader, Parquet path, or Arrow stream
        Purchase rows with (by default) ``customer_id``, ``ts``, ``amount`` and
        optionally ``category`` and ``channel``.
    events : same kinds, optional
        Web events with ``customer_id``, ``ts``, ``event``.
    attributes : same kinds, optional
        CRM attributes, one row per customer (all columns are carried through).
    as_of : datetime, date, ISO string or None
        The reference time; defaults to the latest transaction timestamp.
        Rows after it are excluded and counted.
    schema : dict, optional
        Maps roles (customer_id, ts, amount, category, channel, event,
        order_id) to column names.  With an ``order_id`` column, ``orders``
        counts distinct order ids per customer (rows with a null order id
        count one order each) and ``spend_mean`` / ``spend_max`` are per
        basket; without it every row is an order.
    windows : tuple of int
        Day windows for ``orders_{w}d`` / ``spend_{w}d``.
    top_categories : int
        Number of categories with their own ``share_*`` column (by spend);
        the others are folded into ``share_other``.
    top_channels : int
        Number of channels with their own ``channel_*`` column (the most
        frequent by orders); ``channel_*`` is the share of the customer's
        orders (of its rows, without an order id) made through that channel; the
        others are folded into ``channel_other``.  Folded counts are in the
        summary (``folded``).
    drop_returns : bool
        Drop negative amounts instead of keeping them as negative spend.
    freq : {"D", "W", "M"}, default "D"
        Period of the BTYD columns (``frequency``, ``recency``, ``T``,
        ``monetary_value``): days, weeks (Monday to Sunday, as pandas' "W")
        or calendar months, as lifetimes' ``freq``; the literature uses weeks.
    backend, n_threads :
        Kernel backend and threads for the grouping kernels (see :func:`segone.assign`).

    Returns
    -------
    pyarrow.Table
        One row per customer, sorted by customer id.  The run summary (rows
        read, dropped and why) is in ``table.schema.metadata[b"segone"]``.

    Examples
    --------
    >>> import segone
    >>> from segone.synth import generate
    >>> data = generate(500, seed=0)
    >>> prof = segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)
    >>> prof.num_rows
    500
    """
    return build_profiles_with_summary(
        transactions, events=events, attributes=attributes, as_of=as_of, schema=schema,
        windows=windows, top_categories=top_categories, top_channels=top_channels, drop_returns=drop_returns,
        freq=freq, backend=backend, n_threads=n_threads,
    )[0]  # fmt: skip


# ------------------------------------------------------------ the stage states
def _add_counts(a, b):
    """Add two {key: count} dicts (keys of ``a`` first, then new keys of ``b``, in order)."""
    out = dict(a)
    for key, v in b.items():
        out[key] = out.get(key, 0) + v
    return out


class ProfileSummary(State):
    """What the profile stage read, dropped and built: the mergeable run-summary part.

    ``ProfileSummary.of(summary)`` wraps the summary dict that
    :func:`build_profiles_with_summary` returns for one piece; pieces hold
    disjoint customers, so counts add up (rows read / dropped / excluded per
    input and reason, returns, customers, customers without purchase).
    ``as_of`` and the category columns must agree between pieces (the
    pipeline fixes them before profiling pieces).
    """

    kind = "profile_summary"
    COUNTS = ("rows_read", "dropped", "excluded_after_as_of")
    SCALARS = ("returns", "customers", "customers_without_purchase")
    SHARED = ("as_of", "as_of_source", "categories", "channels", "channel_other", "events", "folded", "orders_from",
              "attributes_renamed")  # the same in every piece  # fmt: skip

    def __init__(self, summary):
        self.summary = {k: dict(summary.get(k, {})) for k in self.COUNTS}
        for k in self.SCALARS:
            self.summary[k] = int(summary.get(k, 0))
        for k in self.SHARED:
            if summary.get(k) is not None:
                self.summary[k] = summary[k]

    @classmethod
    def of(cls, summary):
        return cls(summary)

    def merge(self, other):
        self._check_same(other)
        a, b = self.summary, other.summary
        for k in ("as_of", "categories", "channels", "channel_other", "events", "folded", "orders_from"):
            if k in a and k in b and a[k] != b[k]:
                raise ParameterError(f"cannot merge profile summaries with different {k}: {a[k]!r} vs {b[k]!r}.")
        out = {k: _add_counts(a[k], b[k]) for k in self.COUNTS}
        for k in self.SCALARS:
            out[k] = a[k] + b[k]
        for k in self.SHARED:
            if k in a or k in b:
                out[k] = a.get(k, b.get(k))
        return ProfileSummary(out)

    def finish(self):
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.summary.items()}

    def _data(self):
        return {"summary": self.finish()}

    @classmethod
    def _from_data(cls, d):
        return cls(d["summary"])


class ScanState(State):
    """The light global pass over one input that fixes what every piece must share.

    For transactions: the latest timestamp (the default ``as_of``), positive
    spend per category (the top categories), channel labels; for events: the
    event labels; for every input: the (min, max) customer id of each piece,
    which tells whether the inputs are already split by customer.  Labels keep
    their order of first appearance, so merging pieces in order gives the
    order one pass over the whole input gives.
    """

    kind = "profile_scan"

    def __init__(self, role, max_ts=None, aware=None, has_category=False, cat_spend=None, channels=(), events=(),
                 id_ranges=()):  # fmt: skip
        self.role = role
        self.max_ts = max_ts
        self.aware = aware
        self.has_category = bool(has_category)
        self.cat_spend = dict(cat_spend or {})
        self.channels = dict(channels) if isinstance(channels, dict) else dict.fromkeys(channels, 0)
        self.events = list(events)
        self.id_ranges = [None if r is None else tuple(r) for r in id_ranges]

    @classmethod
    def of(cls, source, role, *, schema=None, as_of=None, drop_returns=False):
        """Scan one piece of the ``role`` input ("transactions", "events" or "attributes")."""
        roles = resolve_schema(schema)
        cid, tcol = roles["customer_id"], roles["ts"]
        summary = {"rows_read": {}, "dropped": {}}
        if role == "attributes":
            ids = read_table(source, [cid], name="attributes").column(cid)
            return cls(role, id_ranges=[_id_range(_check_ids(ids, f"attributes.{cid}"))])
        if role == "events":
            got = _collect(source, "events", cid, tcol, summary, categorical=(roles["event"],))
            return cls(role, events=got["cats"].get(roles["event"], (None, []))[1],
                       id_ranges=[_id_range(_all_ids(got))])  # fmt: skip
        cat_role, ch_role = roles["category"], roles["channel"]
        got = _collect(source, "transactions", cid, tcol, summary, amount=roles["amount"], categorical=(cat_role, ch_role))
        ts, amount = got["ts"], got["amount"]
        as_of_us = parse_as_of(as_of)
        if as_of_us is None:  # this piece's far-off (damaged) timestamps would move the global as_of
            from segone._validation import check_timestamp_bulk

            check_timestamp_bulk(ts, f"transactions.{tcol}")
        keep = ts <= as_of_us if as_of_us is not None else np.ones(ts.size, dtype=bool)
        if drop_returns:
            keep &= amount >= 0
        cat_spend = {}
        if cat_role in got["cats"]:
            codes, labels = got["cats"][cat_role]
            valid = keep & (codes >= 0)
            spend = np.bincount(codes[valid], weights=np.maximum(amount[valid], 0.0), minlength=len(labels))
            cat_spend = dict(zip(labels, spend.tolist()))
        channels = {}
        if ch_role in got["cats"]:
            codes, labels = got["cats"][ch_role]
            valid = keep & (codes >= 0)
            channels = dict(zip(labels, np.bincount(codes[valid], minlength=len(labels)).tolist()))
        return cls(
            role, max_ts=int(ts.max()) if ts.size else None, aware=got["aware"] if ts.size else None,
            has_category=cat_role in got["cats"], cat_spend=cat_spend,
            channels=channels, id_ranges=[_id_range(_all_ids(got))],
        )  # fmt: skip

    def merge(self, other):
        self._check_same(other, "role")
        cat = dict(self.cat_spend)
        for lab, v in other.cat_spend.items():
            cat[lab] = cat.get(lab, 0.0) + v
        chans = dict(self.channels)
        for lab, v in other.channels.items():
            chans[lab] = chans.get(lab, 0) + v
        maxes = [m for m in (self.max_ts, other.max_ts) if m is not None]
        if self.aware is not None and other.aware is not None and self.aware != other.aware:
            raise SchemaError(f"{self.role}: some pieces have time-zone aware timestamps and others naive ones.")
        return ScanState(
            self.role, max(maxes) if maxes else None, self.aware if self.aware is not None else other.aware,
            self.has_category or other.has_category, cat, chans,
            _merge_ordered([self.events, other.events]), self.id_ranges + other.id_ranges,
        )  # fmt: skip

    def finish(self):
        return self

    def _data(self):
        return {"role": self.role, "max_ts": self.max_ts, "aware": self.aware, "has_category": self.has_category,
                "cat_spend": [[k, v] for k, v in self.cat_spend.items()],
                "channels": [[k, v] for k, v in self.channels.items()],
                "events": self.events, "id_ranges": [None if r is None else list(r) for r in self.id_ranges]}  # fmt: skip

    @classmethod
    def _from_data(cls, d):
        return cls(d["role"], d["max_ts"], d["aware"], d["has_category"], dict(map(tuple, d["cat_spend"])),
                   dict(map(tuple, d["channels"])), d["events"], d["id_ranges"])  # fmt: skip


def _merge_ordered(lists):
    seen = {}
    for lst in lists:
        for x in lst:
            seen.setdefault(x, None)
    return list(seen)


def _all_ids(got):
    """The ids a collected input holds: its rows' and those of its rows dropped for a null timestamp."""
    ids, orphans = got["ids"], got.get("orphans")
    if orphans is None or ids is None:
        return ids
    return pa.chunked_array(ids.chunks + orphans.chunks, type=ids.type)


def _id_range(ids):
    """(min, max) of a piece's customer ids, None when empty or not integers."""
    if ids is None or len(ids) == 0 or not pa.types.is_integer(ids.type):
        return None
    mm = pc.min_max(ids)
    if mm["min"].as_py() is None:
        return None
    return int(mm["min"].as_py()), int(mm["max"].as_py())


def labels_of_summary(summary):
    """The labels dict (:func:`global_labels`' form) a profile summary says the profiles were built with, or None.

    A model records them (``settings["profile"]["labels"]``) so that applying it, or updating its state, profiles
    new data with the model's category, channel and event columns, whatever the new data's own top ones are.
    """
    if "channels" not in summary or "events" not in summary:
        return None
    labels = {"channel": list(summary["channels"]), "channel_other": bool(summary.get("channel_other")),
              "event": list(summary["events"])}  # fmt: skip
    if summary.get("categories") is not None:
        labels["category"] = list(summary["categories"])
    return labels


def global_labels(scans, *, as_of=None, top_categories=20, top_channels=10):
    """From the merged scans ({role: ScanState}): (labels dict, as_of in us since the epoch).

    The labels are those one pass over the whole input picks: the
    ``top_categories`` categories by positive spend and the ``top_channels``
    channels by rows (first appearance breaks ties, the rest folded into
    "other"), and every event type, in order of first appearance.
    """
    tx = scans["transactions"]
    as_of_us = parse_as_of(as_of)
    if as_of_us is None:
        if tx.max_ts is None:
            raise EmptyInputError("transactions: no row with a customer id and a timestamp; nothing to profile.")
        as_of_us = tx.max_ts
    ch = tx.channels
    ch_top = sorted(ch, key=lambda lab: -ch[lab])[: check_int(top_channels, "top_channels", low=0)]  # stable
    labels = {"channel": ch_top, "channel_other": len(ch) > len(ch_top),
              "event": scans["events"].events if "events" in scans else [],
              "folded": {"channel": len(ch) - len(ch_top)}}  # fmt: skip
    if tx.has_category:
        order = sorted(tx.cat_spend, key=lambda lab: -tx.cat_spend[lab])  # stable: first appearance breaks ties
        labels["category"] = order[: check_int(top_categories, "top_categories", low=0)]
        labels["folded"]["category"] = len(order) - len(labels["category"])
    return labels, as_of_us


def split_by_customer(scans):
    """True when piece i of every input holds the same customers (no shuffle needed).

    The transaction pieces must cover disjoint increasing integer id ranges
    and every other input must have as many pieces, piece i inside the i-th
    range (an empty piece fits anywhere).
    """
    tx_ranges = scans["transactions"].id_ranges
    if any(r is None for r in tx_ranges):
        return False
    for a, b in zip(tx_ranges, tx_ranges[1:]):
        if a[1] >= b[0]:
            return False
    lows = [r[0] for r in tx_ranges][1:]
    for role, st in scans.items():
        if role == "transactions":
            continue
        if len(st.id_ranges) != len(tx_ranges):
            return False
        for i, r in enumerate(st.id_ranges):
            if r is None:
                continue
            if (i > 0 and r[0] < lows[i - 1]) or (i < len(lows) and r[1] >= lows[i]):
                return False
    return True


def profile_piece(transactions, events=None, attributes=None, *, labels=None, as_of_us=None, **params):
    """PROFILE per piece: ``(profiles table, ProfileSummary)`` for customer-disjoint inputs.

    With ``labels`` and ``as_of_us`` fixed (several pieces), a piece may be
    empty or hold customers with events or attributes only.
    """
    fixed = labels is not None
    as_of = None if as_of_us is None else np.datetime64(int(as_of_us), "us")
    table, summary = build_profiles_with_summary(
        transactions, events=events, attributes=attributes, as_of=as_of, labels=labels, _partition=fixed, **params
    )
    return table, ProfileSummary.of(summary)
