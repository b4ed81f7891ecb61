"""Synthetic customer data with known latent segments (the ground truth).

Three sources, the way a company holds them:

* transactions: ``customer_id`` int64, ``ts`` timestamp[us, UTC], ``amount``
  float64 (lognormal, level per segment and per customer), ``category``
  (20 values, dictionary-encoded strings, preferences per segment),
  ``channel`` (4 values);
* web events: ``customer_id``, ``ts``, ``event`` (``visit``, ``pricing_page``,
  ``cart``, ``email_click``);
* CRM attributes: ``customer_id``, ``region``, ``age_band``, ``signup_ts``,
  ``consent_marketing`` (bool); with ``personal_data=True`` also fake but
  plausible personal data and a purpose-consent column (see
  :data:`PERSONAL_COLUMNS`), for the privacy rules of :mod:`segone.privacy`;

plus ``truth`` (``customer_id``, ``segment``, ``segment_name``).

Customers are generated in fixed blocks of :data:`BLOCK_CUSTOMERS`, each
from its own random stream ``default_rng([seed, block])``, so the data depend
only on ``(n_customers, seed, ...)`` and never on how they are chunked into
files.  :func:`write_dataset` streams block by block (bounded memory) into
a Parquet dataset and renames it into place only when complete.
"""

import datetime as _dt
import json
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from segone._validation import check_int
from segone.errors import ParameterError
from segone.io import atomic_directory, check_output

BLOCK_CUSTOMERS = 65_536
ID_OFFSET = 10_000_000
DEFAULT_END = _dt.datetime(2026, 1, 1, tzinfo=_dt.timezone.utc)
HORIZON_DAYS = 730

CATEGORIES = (
    "grocery", "household", "baby", "pets", "beauty", "health", "apparel", "shoes",
    "sports", "outdoor", "toys", "books", "music", "games", "electronics", "computers",
    "phones", "furniture", "garden", "jewelry",
)  # fmt: skip
CHANNELS = ("store", "web", "app", "phone")
EVENTS = ("visit", "pricing_page", "cart", "email_click")
REGIONS = ("north", "south", "east", "west", "central")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")

# personal_data=True: columns added to the customers table, after the others
PERSONAL_COLUMNS = ("name", "email", "phone", "birth_date", "consent_purposes")
FIRST_NAMES = (
    ("Olivia", "olivia"), ("Liam", "liam"), ("Emma", "emma"), ("Noah", "noah"), ("Ava", "ava"),
    ("Oliver", "oliver"), ("Sophia", "sophia"), ("Elijah", "elijah"), ("Mia", "mia"), ("James", "james"),
    ("Amelia", "amelia"), ("Lucas", "lucas"), ("Zoë", "zoe"), ("Mateo", "mateo"), ("Chloé", "chloe"),
    ("Henry", "henry"), ("Aisha", "aisha"), ("Omar", "omar"), ("Yuki", "yuki"), ("Wei", "wei"),
    ("Priya", "priya"), ("Arjun", "arjun"), ("Fatima", "fatima"), ("José", "jose"), ("Ingrid", "ingrid"),
    ("Lars", "lars"), ("Sofía", "sofia"), ("Mohammed", "mohammed"), ("Grace", "grace"), ("Daniel", "daniel"),
    ("Hannah", "hannah"), ("Samuel", "samuel"),
)  # fmt: skip
LAST_NAMES = (
    ("Smith", "smith"), ("Johnson", "johnson"), ("Williams", "williams"), ("Brown", "brown"),
    ("Jones", "jones"), ("Garcia", "garcia"), ("Miller", "miller"), ("Davis", "davis"),
    ("Rodriguez", "rodriguez"), ("Martinez", "martinez"), ("Müller", "mueller"), ("Schmidt", "schmidt"),
    ("Núñez", "nunez"), ("Rossi", "rossi"), ("Dubois", "dubois"), ("Kowalski", "kowalski"),
    ("Nguyen", "nguyen"), ("Kim", "kim"), ("Tanaka", "tanaka"), ("Singh", "singh"), ("Patel", "patel"),
    ("O'Brien", "obrien"), ("Andersen", "andersen"), ("Björk", "bjork"), ("Silva", "silva"),
    ("Cohen", "cohen"), ("Okafor", "okafor"), ("Haddad", "haddad"), ("Ivanova", "ivanova"),
    ("Taylor", "taylor"), ("Wilson", "wilson"), ("Moore", "moore"),
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")  # reserved for examples (RFC 2606)
AREA_CODES = ("201", "212", "305", "312", "415", "503", "617", "702", "713", "808")
# consent_purposes: "marketing" exactly when consent_marketing, "analytics" and "personalisation" by chance,
# and no record (null) for a share of customers
PURPOSE_SHARES = {"analytics": 0.85, "personalisation": 0.5}
NO_CONSENT_RECORD = 0.03
AGE_RANGES = ((18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 90))


def _mix(ids, seed, stream):
    """Per-customer uniform 64-bit values from (id, seed, stream): splitmix64, vectorised.

    The personal data depend on the customer id only (never on the block's
    random stream), so adding them changes no other column and a customer
    keeps its name, e-mail and phone in every period of :func:`generate_periods`.
    """
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z ^= np.uint64((seed * 0x2545F4914F6CDD1D + stream * 0x632BE59BD9B4E5B5) & 0xFFFFFFFFFFFFFFFF)
        z += np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _uniform(ids, seed, stream):
    return (_mix(ids, seed, stream) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _pick(ids, seed, stream, values):
    """One of ``values`` (a pyarrow string array) per customer."""
    idx = (_mix(ids, seed, stream) % np.uint64(len(values))).astype(np.int64)
    return pc.take(values, pa.array(idx))


def _personal_columns(ids, seed, age, consent, end_us):
    """The PERSONAL_COLUMNS of the customers ``ids`` (fake: reserved example domains, fictional numbers)."""
    n = ids.size
    first = np.uint64(len(FIRST_NAMES))
    fi = (_mix(ids, seed, 1) % first).astype(np.int64)
    li = (_mix(ids, seed, 2) % np.uint64(len(LAST_NAMES))).astype(np.int64)
    take = lambda names, col, idx: pc.take(pa.array([x[col] for x in names]), pa.array(idx))  # noqa: E731
    name = pc.binary_join_element_wise(take(FIRST_NAMES, 0, fi), take(LAST_NAMES, 0, li), " ")
    number = pc.cast(pa.array((_mix(ids, seed, 3) % np.uint64(1000)).astype(np.int64)), pa.string())
    email = pc.binary_join_element_wise(take(FIRST_NAMES, 1, fi), ".", take(LAST_NAMES, 1, li), number, "@",
                                        _pick(ids, seed, 4, pa.array(EMAIL_DOMAINS)), "")  # fmt: skip
    line = pc.utf8_lpad(pc.cast(pa.array((_mix(ids, seed, 5) % np.uint64(100)).astype(np.int64)), pa.string()), 2,
                        "0")  # fmt: skip
    phone = pc.binary_join_element_wise("+1-", _pick(ids, seed, 6, pa.array(AREA_CODES)), "-555-01", line, "")
    # birth date within the customer's age band at the end of the data
    lo = np.array([r[0] for r in AGE_RANGES], dtype=np.float64)[age]
    hi = np.array([r[1] + 1 for r in AGE_RANGES], dtype=np.float64)[age]
    age_days = ((lo + _uniform(ids, seed, 7) * (hi - lo)) * 365.2425).astype(np.int64)
    birth = pa.array((end_us // 86_400_000_000 - age_days).astype(np.int32), type=pa.date32())
    # purposes: bit 0 marketing (= consent_marketing), bit 1 analytics, bit 2 personalisation
    code = consent.astype(np.int64)
    for bit, (purpose, share) in enumerate(PURPOSE_SHARES.items(), start=1):
        code |= (_uniform(ids, seed, 8 + bit) < share).astype(np.int64) << bit
    names = ("marketing",) + tuple(PURPOSE_SHARES)
    combos = [",".join(p for b, p in enumerate(names) if c >> b & 1) for c in range(1 << len(names))]
    purposes = pc.take(pa.array(combos), pa.array(code, mask=_uniform(ids, seed, 20) < NO_CONSENT_RECORD))
    assert len(purposes) == n
    return {"name": name, "email": email, "phone": phone, "birth_date": birth, "consent_purposes": purposes}


def _cat(*names, base=0.05, hi=3.0):
    a = np.full(len(CATEGORIES), base)
    for n in names:
        a[CATEGORIES.index(n)] = hi
    return a


# Latent segments.  active = (start, stop) in days before the end date, each
# drawn uniformly from its range; rate = orders per active year (scaled so
# the mean matches tx_per_customer); amount = lognormal (mu, sigma); web =
# events per active year (visit, pricing_page, cart, email_click).
SEGMENTS = (
    dict(name="champions", weight=0.10, start=(730, 730), stop=(0, 20), rate=25.0,
         amount=(4.3, 0.5), cats=_cat("electronics", "apparel", "beauty", "jewelry"),
         channels=(0.10, 0.40, 0.45, 0.05), web=(12, 2.5, 4, 3), consent=0.9,
         age=(0.10, 0.35, 0.30, 0.15, 0.07, 0.03)),
    dict(name="loyal_in_store", weight=0.20, start=(730, 730), stop=(0, 45), rate=12.0,
         amount=(3.6, 0.45), cats=_cat("grocery", "household", "health", "garden"),
         channels=(0.80, 0.05, 0.05, 0.10), web=(1, 0.1, 0.1, 0.6), consent=0.6,
         age=(0.02, 0.10, 0.20, 0.28, 0.25, 0.15)),
    dict(name="bargain_hunters", weight=0.15, start=(730, 730), stop=(0, 30), rate=15.0,
         amount=(2.4, 0.4), cats=_cat("grocery", "baby", "pets", "toys"),
         channels=(0.35, 0.15, 0.50, 0.00), web=(5, 0.4, 2, 5), consent=0.8,
         age=(0.15, 0.40, 0.30, 0.10, 0.04, 0.01)),
    dict(name="big_ticket", weight=0.15, start=(730, 730), stop=(0, 200), rate=1.5,
         amount=(6.2, 0.5), cats=_cat("furniture", "computers", "phones", "outdoor"),
         channels=(0.30, 0.60, 0.05, 0.05), web=(3, 1.6, 0.6, 0.2), consent=0.5,
         age=(0.05, 0.20, 0.30, 0.25, 0.15, 0.05)),
    dict(name="new_customers", weight=0.15, start=(20, 90), stop=(0, 10), rate=8.0,
         amount=(3.5, 0.6), cats=_cat("books", "music", "games", "sports"),
         channels=(0.15, 0.35, 0.45, 0.05), web=(8, 1.2, 1.6, 0.8), consent=0.7,
         age=(0.30, 0.35, 0.20, 0.10, 0.04, 0.01)),
    dict(name="lapsed", weight=0.25, start=(730, 600), stop=(300, 500), rate=6.0,
         amount=(3.8, 0.6), cats=_cat("shoes", "apparel", "sports", "outdoor"),
         channels=(0.50, 0.30, 0.10, 0.10), web=(0.4, 0.05, 0.05, 0.1), consent=0.3,
         age=(0.05, 0.15, 0.20, 0.25, 0.20, 0.15)),
)  # fmt: skip


@dataclass
class SyntheticData:
    """In-memory synthetic data (see :func:`generate`)."""

    transactions: pa.Table
    events: pa.Table
    customers: pa.Table
    truth: pa.Table
    treatment: pa.Table | None = None  # generate_periods(campaign=...): who the campaign reached (period >= 1)
    drift: pa.Table | None = None  # generate_periods(drift_share=...): whose category preference drifted (period >= 1)


def _expected_orders_per_customer():
    tot = 0.0
    for s in SEGMENTS:
        active = np.mean(s["start"]) - np.mean(s["stop"])
        tot += s["weight"] * (1.0 + s["rate"] * active / 365.0)
    return tot


def _dict_array(codes, values):
    return pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int8()), pa.array(values, type=pa.string()))


def _block(seed, block, first, n, end_us, rate_scale, events_scale, seg=None, stream=None, personal=False):
    """Generate customers [first, first + n) of block ``block``.

    ``seg`` fixes the latent segment of every customer (default: drawn from
    the segment weights); ``stream`` replaces the random stream
    ``[seed, block]`` (the periods of :func:`generate_periods`); ``personal``
    adds the :data:`PERSONAL_COLUMNS` (drawn from the ids, not from the stream).
    """
    rng = np.random.default_rng([seed, block] if stream is None else stream)
    weights = np.array([s["weight"] for s in SEGMENTS])
    if seg is None:
        seg = rng.choice(len(SEGMENTS), size=n, p=weights / weights.sum())
    ids = np.arange(first, first + n, dtype=np.int64) + ID_OFFSET

    start = np.empty(n)
    stop = np.empty(n)
    rate = np.empty(n)
    mu = np.empty(n)
    sigma = np.empty(n)
    for s_idx, s in enumerate(SEGMENTS):
        m = seg == s_idx
        k = int(m.sum())
        start[m] = rng.uniform(*sorted(s["start"]), size=k)
        stop[m] = rng.uniform(*sorted(s["stop"]), size=k)
        rate[m] = s["rate"] * rate_scale * rng.lognormal(0.0, 0.25, size=k)
        mu[m] = s["amount"][0] + rng.normal(0.0, 0.25, size=k)
        sigma[m] = s["amount"][1]
    stop = np.minimum(stop, start - 1.0)
    active_years = (start - stop) / 365.0
    n_orders = 1 + rng.poisson(rate * active_years)

    # per-customer category and channel preferences
    cat_p = np.empty((n, len(CATEGORIES)))
    chan_p = np.empty((n, len(CHANNELS)))
    for s_idx, s in enumerate(SEGMENTS):
        m = seg == s_idx
        k = int(m.sum())
        cat_p[m] = rng.dirichlet(s["cats"], size=k) if k else cat_p[m]
        chan_p[m] = rng.dirichlet(np.asarray(s["channels"]) * 20 + 0.05, size=k) if k else chan_p[m]
    cust = np.repeat(np.arange(n), n_orders)
    n_tx = cust.size
    day = stop[cust] + rng.random(n_tx) * (start - stop)[cust]  # days before end
    ts = end_us - (day * 86_400e6).astype(np.int64)
    amount = np.round(rng.lognormal(mu[cust], sigma[cust]), 2)
    cat = _sample_rows(rng, np.cumsum(cat_p, axis=1), cust)
    chan = _sample_rows(rng, np.cumsum(chan_p, axis=1), cust)
    order = rng.permutation(n_tx)  # events arrive in no particular customer order
    tx = pa.table(
        {
            "customer_id": pa.array(ids[cust][order]),
            "ts": pa.array(ts[order], type=pa.timestamp("us", tz="UTC")),
            "amount": pa.array(amount[order]),
            "category": _dict_array(cat[order], CATEGORIES),
            "channel": _dict_array(chan[order], CHANNELS),
        }
    )

    # web events
    web_rates = np.array([s["web"] for s in SEGMENTS])[seg] * events_scale  # (n, 4) per year
    ev_counts = rng.poisson(web_rates * active_years[:, None])
    ev_cust = np.repeat(np.repeat(np.arange(n), len(EVENTS)), ev_counts.ravel())
    ev_type = np.repeat(np.tile(np.arange(len(EVENTS)), n), ev_counts.ravel())
    ev_day = stop[ev_cust] + rng.random(ev_cust.size) * (start - stop)[ev_cust]
    ev_ts = end_us - (ev_day * 86_400e6).astype(np.int64)
    order = rng.permutation(ev_cust.size)
    ev = pa.table(
        {
            "customer_id": pa.array(ids[ev_cust][order]),
            "ts": pa.array(ev_ts[order], type=pa.timestamp("us", tz="UTC")),
            "event": _dict_array(ev_type[order], EVENTS),
        }
    )

    # CRM attributes
    age_p = np.array([s["age"] for s in SEGMENTS])
    age = _sample_rows(rng, np.cumsum(age_p, axis=1)[seg], np.arange(n))
    consent_p = np.array([s["consent"] for s in SEGMENTS])[seg]
    signup_day = start + rng.uniform(0, 30, size=n)
    region = rng.integers(0, len(REGIONS), size=n)  # the stream's order: region, then consent
    consent = rng.random(n) < consent_p
    crm = pa.table(
        {
            "customer_id": pa.array(ids),
            "region": _dict_array(region, REGIONS),
            "age_band": _dict_array(age, AGE_BANDS),
            "signup_ts": pa.array(end_us - (signup_day * 86_400e6).astype(np.int64), type=pa.timestamp("us", tz="UTC")),
            "consent_marketing": pa.array(consent),
        }
    )
    if personal:
        for name, col in _personal_columns(ids, seed, age, consent, end_us).items():
            crm = crm.append_column(name, col)
    names = np.array([s["name"] for s in SEGMENTS])
    truth = pa.table(
        {
            "customer_id": pa.array(ids),
            "segment": pa.array(seg.astype(np.int32)),
            "segment_name": _dict_array(seg, tuple(names)),
        }
    )
    return tx, ev, crm, truth


def _sample_rows(rng, cdf, rows):
    """Draw one index per entry of ``rows`` from the row-wise CDFs ``cdf``."""
    u = rng.random(rows.size) * cdf[rows, -1]
    out = np.empty(rows.size, dtype=np.int8)
    step = 1 << 20
    for s in range(0, rows.size, step):
        r = rows[s : s + step]
        out[s : s + step] = (u[s : s + step, None] >= cdf[r]).sum(axis=1)
    np.minimum(out, cdf.shape[1] - 1, out=out)
    return out


def _params(n_customers, seed, tx_per_customer, events_scale, end):
    n_customers = check_int(n_customers, "n_customers", low=1)
    seed = check_int(seed, "seed", low=0)
    if not (isinstance(tx_per_customer, (int, float)) and 1.0 <= tx_per_customer <= 10_000):
        raise ParameterError(f"tx_per_customer must be a number in [1, 10000], got {tx_per_customer!r}.")
    if not (isinstance(events_scale, (int, float)) and 0.0 <= events_scale <= 1_000):
        raise ParameterError(f"events_scale must be a number in [0, 1000], got {events_scale!r}.")
    end = DEFAULT_END if end is None else end
    if isinstance(end, str):
        end = _dt.datetime.fromisoformat(end)
    if not isinstance(end, _dt.datetime):
        raise ParameterError(f"end must be a datetime or ISO string, got {end!r}.")
    if end.tzinfo is None:
        end = end.replace(tzinfo=_dt.timezone.utc)
    end_us = int(end.timestamp() * 1_000_000)
    base = _expected_orders_per_customer()
    # solve 1 + scale * (base - 1) = tx_per_customer
    rate_scale = max(0.0, (tx_per_customer - 1.0) / (base - 1.0))
    return n_customers, seed, end, end_us, rate_scale, float(events_scale)


def _blocks(n_customers):
    for b, first in enumerate(range(0, n_customers, BLOCK_CUSTOMERS)):
        yield b, first, min(BLOCK_CUSTOMERS, n_customers - first)


def generate(n_customers=100_000, *, seed=0, tx_per_customer=20.0, events_scale=1.0, end=None, personal_data=True):
    """Generate synthetic customer data in memory.

    Parameters
    ----------
    n_customers : int
        Number of customers (every customer has at least one purchase).
    seed : int
        Random seed; the same seed and sizes give the same data.
    tx_per_customer : float, default 20
        Mean number of transactions per customer.
    events_scale : float, default 1
        Multiplies the web-event rates (0 for no web events).
    end : datetime or ISO string, default 2026-01-01 UTC
        The end of the two-year window of the data.
    personal_data : bool, default True
        Add fake but plausible personal data to the customers table, after
        the other columns: ``name`` ("Zoë Müller"), ``email``
        ("zoe.mueller123@example.com", reserved example domains), ``phone``
        ("+1-415-555-0142", numbers reserved for fiction), ``birth_date``
        (date, within the customer's ``age_band``) and ``consent_purposes``
        (comma-separated purposes: "marketing" exactly when
        ``consent_marketing``, "analytics" and "personalisation" by chance;
        null, i.e. no consent record, for about 3% of the customers).  They
        are drawn from the customer id, so every other column is unchanged.

    Returns
    -------
    SyntheticData
        ``transactions``, ``events``, ``customers`` (CRM) and ``truth``.

    Examples
    --------
    >>> from segone.synth import generate
    >>> data = generate(1000, seed=1)
    >>> data.truth.num_rows
    1000
    """
    n_customers, seed, _, end_us, rate_scale, events_scale = _params(
        n_customers, seed, tx_per_customer, events_scale, end
    )
    parts = [_block(seed, b, first, n, end_us, rate_scale, events_scale, personal=bool(personal_data))
             for b, first, n in _blocks(n_customers)]  # fmt: skip
    return SyntheticData(*(pa.concat_tables([p[i] for p in parts]).combine_chunks() for i in range(4)))


def write_dataset(
    path,
    n_customers=100_000,
    *,
    seed=0,
    tx_per_customer=20.0,
    events_scale=1.0,
    end=None,
    customers_per_file=500_000,
    overwrite=False,
    progress=False,
    personal_data=True,
):
    """Write synthetic data as a Parquet dataset, streaming with bounded memory.

    Layout: ``path/transactions/part-NNNNN.parquet``, ``path/events/...``,
    ``path/customers/...``, ``path/truth/...`` and ``path/manifest.json``.
    The dataset is written to a temporary directory next to ``path`` and
    renamed into place when complete, so a failed run leaves nothing behind.
    ``personal_data`` adds the personal columns of :func:`generate`.

    Returns the manifest (a dict of what was written).
    """
    n_customers, seed, end, end_us, rate_scale, events_scale = _params(
        n_customers, seed, tx_per_customer, events_scale, end
    )
    customers_per_file = check_int(customers_per_file, "customers_per_file", low=1)
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ParameterError(f"{path} already exists; choose a new directory or pass overwrite=True.")
    # written into a temporary directory next to `path` and renamed into place, holding the output's lock
    with check_output(path, (), overwrite, name="path"), atomic_directory(path, overwrite=True) as tmp:
        return _write_dataset(tmp, n_customers, seed, end, end_us, rate_scale, events_scale, tx_per_customer,
                              customers_per_file, progress, personal_data)  # fmt: skip


def _write_dataset(tmp, n_customers, seed, end, end_us, rate_scale, events_scale, tx_per_customer, customers_per_file,
                   progress, personal_data):  # fmt: skip
    blocks_per_file = max(1, customers_per_file // BLOCK_CUSTOMERS)
    counts = {"transactions": 0, "events": 0, "customers": 0, "truth": 0}
    names = ("transactions", "events", "customers", "truth")
    writers = None
    try:
        for name in names:
            os.makedirs(os.path.join(tmp, name))
        file_idx = -1
        blocks = list(_blocks(n_customers))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_customers, unit="customers", desc="synth")
        for i, (b, first, n) in enumerate(blocks):
            if i % blocks_per_file == 0:
                if writers:
                    for w in writers:
                        w.close()
                file_idx += 1
                writers = None
            tables = _block(seed, b, first, n, end_us, rate_scale, events_scale, personal=bool(personal_data))
            if writers is None:
                writers = [
                    pq.ParquetWriter(os.path.join(tmp, name, f"part-{file_idx:05d}.parquet"), t.schema)
                    for name, t in zip(names, tables)
                ]
            for name, w, t in zip(names, writers, tables):
                w.write_table(t, row_group_size=1 << 20)
                counts[name] += t.num_rows
            if bar is not None:
                bar.update(n)
        if writers:
            for w in writers:
                w.close()
        if bar is not None:
            bar.close()
        manifest = {
            "format": "segone-synth",
            "version": 1,
            "seed": seed,
            "n_customers": n_customers,
            "tx_per_customer": tx_per_customer,
            "events_scale": events_scale,
            "end": end.isoformat(),
            "rows": counts,
            "segments": [s["name"] for s in SEGMENTS],
        }
        if personal_data:
            manifest["personal_data"] = list(PERSONAL_COLUMNS)
        with open(os.path.join(tmp, "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    except BaseException:
        for w in writers or ():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already failing; the directory is removed next
                pass
        raise
    return manifest


# ------------------------------------------------------------------ periods
def _shift_ts(table, columns, delta_us):
    """The table with ``delta_us`` microseconds added to the timestamp ``columns``."""
    if not delta_us:
        return table
    for name in columns:
        i = table.column_names.index(name)
        col = table.column(i)
        vals = col.cast(pa.int64()).to_numpy() + np.int64(delta_us)
        table = table.set_column(i, name, pa.array(vals).cast(col.type))
    return table


def _other_segments(rng, current):
    """A new latent segment for every entry of ``current``, drawn by weight among the other segments."""
    weights = np.array([s["weight"] for s in SEGMENTS])
    out = np.empty_like(current)
    for s in np.unique(current):
        m = current == s
        others = np.array([j for j in range(len(SEGMENTS)) if j != s])
        p = weights[others] / weights[others].sum()
        out[m] = rng.choice(others, size=int(m.sum()), p=p)
    return out


def _period_rows(tables, keep_local, first):
    """Rows of a block's (tx, events, crm, truth) tables whose customers are kept."""
    out = []
    for t in tables:
        local = t.column("customer_id").to_numpy() - ID_OFFSET - first
        out.append(t.filter(pa.array(keep_local[local])))
    return out


def _check_campaign(campaign):
    """The campaign option of :func:`generate_periods`, checked, with its defaults."""
    if campaign is None:
        return None
    if not isinstance(campaign, dict):
        raise ParameterError(f"campaign must be a dict (share, from_segment, to_segment, effect, name), got "
                             f"{type(campaign).__name__}.")  # fmt: skip
    known = {"share", "from_segment", "to_segment", "effect", "name", "control"}
    bad = sorted(set(campaign) - known)
    if bad:
        raise ParameterError(f"campaign: unknown key {bad[0]!r}; use {sorted(known)}.")
    c = {"share": 0.5, "from_segment": 0, "to_segment": 1, "effect": 0.3, "name": "campaign", "control": True,
         **campaign}  # fmt: skip
    for k in ("share", "effect"):
        v = c[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ParameterError(f"campaign[{k!r}] must be a number in [0, 1], got {v!r}.")
    for k in ("from_segment", "to_segment"):
        if not isinstance(c[k], (int, np.integer)) or not 0 <= c[k] < len(SEGMENTS) or isinstance(c[k], bool):
            raise ParameterError(f"campaign[{k!r}] must be a latent segment 0..{len(SEGMENTS) - 1}, got {c[k]!r}.")
    if c["from_segment"] == c["to_segment"]:
        raise ParameterError("campaign: from_segment and to_segment must differ.")
    return c


def campaign_truth(campaign, switch_share=0.1):
    """The true uplift of moving from ``from_segment`` to ``to_segment`` among the campaign's latent segment.

    A treated customer of ``from_segment`` who did not switch by chance moves
    with probability ``effect``, so the uplift of the share moving there is
    ``(1 - switch_share) * effect``; the other customers are unaffected.

    Examples
    --------
    >>> round(campaign_truth({"effect": 0.3}, switch_share=0.1), 6)
    0.27
    """
    c = _check_campaign(campaign)
    return (1.0 - switch_share) * c["effect"]


def generate_periods(n_customers=100_000, *, periods=2, switch_share=0.1, churn_share=0.0, new_share=0.0,
                     period_days=90, redraw=False, seed=0, tx_per_customer=20.0, events_scale=1.0,
                     end=None, personal_data=True, campaign=None, drift_share=0.0):  # fmt: skip
    """Synthetic data for several periods, with a known share of customers switching latent segment.

    Period 0 is exactly :func:`generate` ``(n_customers, seed=seed, ...)``.
    Before each later period:

    * a share ``churn_share`` of the customers present leave for good;
    * a share ``switch_share`` of the remaining customers switch to another
      latent segment (drawn by the segments' weights among the others); their
      whole history is drawn again from the new segment's behaviour;
    * ``new_share * n_customers`` new customers join (new ids, above the others);
    * with ``drift_share``, a share of the customers who did not switch
      drift: their category preference moves from one category to another
      at the start of the new period (see ``drift_share``).

    Customers who do not switch keep exactly their history (unless
    ``redraw``); every timestamp of period ``p`` is shifted by ``p *
    period_days`` days (the data end ``p * period_days`` days after
    ``end``), so their profiles relative to the end of the data stay the
    same.  With ``redraw=True`` every customer's history is drawn again each
    period from its (possibly new) segment: customers who stay in their
    segment then differ by sampling noise, as real customers do, and some of
    them cross segment boundaries.  The per-period ``truth`` tables
    (customer_id, segment, segment_name of the customers present) give the
    true moves: a customer present in two periods switched when its
    segment differs.

    Parameters
    ----------
    n_customers : int
        Customers in period 0.
    periods : int, default 2
    switch_share : float in [0, 1], default 0.1
    churn_share, new_share : float in [0, 1], default 0
    period_days : int, default 90
    redraw : bool, default False
    campaign : dict, optional
        A campaign before period 1 (``share``, ``from_segment``,
        ``to_segment``, ``effect``, ``name``, ``control``): a random ``share``
        of the customers present is treated; a treated customer of latent
        segment ``from_segment`` who did not switch by chance moves to
        ``to_segment`` with probability ``effect`` (:func:`campaign_truth` is
        the resulting uplift).  Period 1's ``treatment`` table lists the
        treated customers (group "treatment") and, with ``control`` (default),
        the others (group "control").
    drift_share : float in [0, 1], default 0
        Category drift (the truth for the next best offers).  Before each
        later period ``p``, this share of the *eligible* customers drifts:
        present, not switching segment (nor moved by the campaign) now, not
        already drifting, with an order before the drift starts and a
        category they never bought before it.  A drifting customer's
        ``from_category`` is the category of most of their orders before the
        drift (ties: the first in :data:`CATEGORIES`), their
        ``to_category`` one they never bought before it (drawn uniformly);
        from ``drift_ts = end + (p - 1) * period_days`` on (the start of
        period ``p``'s new days), every order they would have placed in
        ``from_category`` is placed in ``to_category`` instead, in period
        ``p`` and every later one (only the ``category`` of those rows
        changes).  A customer who later switches segment stops drifting
        (their history is drawn again).  Period ``p``'s ``drift`` table
        lists the customers present and drifting: ``customer_id``,
        ``drift_period``, ``from_category``, ``to_category``, ``drift_ts``
        and ``drifted_orders`` (rows of this period's transactions moved to
        ``to_category``; 0 when the customer has not bought since the drift,
        so that nothing in the data shows it).  ``drift_share=0`` (the
        default) changes nothing, and no other column depends on it.
    seed, tx_per_customer, events_scale, end, personal_data :
        As for :func:`generate` (a customer keeps its personal data in every period).

    Returns
    -------
    list of SyntheticData
        One per period (``drift``: None in period 0 and without drift).

    Examples
    --------
    >>> import numpy as np
    >>> from segone.synth import generate_periods
    >>> p0, p1 = generate_periods(2000, periods=2, switch_share=0.1, seed=3)
    >>> s0, s1 = (p.truth.column("segment").to_numpy() for p in (p0, p1))
    >>> float((s0 != s1).mean())
    0.1
    """
    n_customers, seed, _, end_us, rate_scale, events_scale = _params(
        n_customers, seed, tx_per_customer, events_scale, end
    )
    periods = check_int(periods, "periods", low=1)
    period_days = check_int(period_days, "period_days", low=0)
    campaign = _check_campaign(campaign)
    if campaign is not None and periods < 2:
        raise ParameterError("campaign needs periods >= 2 (it runs between period 0 and period 1).")
    treated_parts = []
    for name, v in (("switch_share", switch_share), ("churn_share", churn_share), ("new_share", new_share),
                    ("drift_share", drift_share)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ParameterError(f"{name} must be a number in [0, 1], got {v!r}.")
    # groups of customers: the first n_customers, then those joining at period g
    groups = [(0, 0, n_customers)]
    first = n_customers
    for g in range(1, periods):
        n_new = int(round(new_share * n_customers))
        if n_new:
            groups.append((g, first, n_new))
            first += n_new
    names = np.array([s["name"] for s in SEGMENTS])
    out = [[[] for _ in range(4)] for _ in range(periods)]
    drift_parts = [[] for _ in range(periods)]
    day_us = 86_400 * 1_000_000
    for g, start, size in groups:
        for b, off, n in _blocks(size):
            lo = start + off

            def gen(version, seg=None, b=b, lo=lo, n=n, g=g):
                stream = None if (g, version) == (0, 0) else [seed, b, version, g + 1000]
                return _block(seed, b, lo, n, end_us, rate_scale, events_scale, seg=seg, stream=stream,
                              personal=bool(personal_data))  # fmt: skip

            cache = {g: gen(g)}
            seg = cache[g][3].column("segment").to_numpy().astype(np.int64)
            version = np.full(n, g)
            present = np.ones(n, dtype=bool)
            d_from = np.full(n, -1, dtype=np.int64)  # the drift of each customer: from, to, the period it began
            d_to = np.full(n, -1, dtype=np.int64)
            d_period = np.full(n, -1, dtype=np.int64)
            for p in range(g, periods):
                if p > g:
                    rng = np.random.default_rng([seed, b, p, g + 2000])
                    idx = np.flatnonzero(present)
                    present[rng.choice(idx, size=int(round(churn_share * idx.size)), replace=False)] = False
                    idx = np.flatnonzero(present)
                    sw = np.sort(rng.choice(idx, size=int(round(switch_share * idx.size)), replace=False))
                    if sw.size:
                        seg[sw] = _other_segments(rng, seg[sw])
                        version[sw] = p
                    if campaign is not None and p == 1:  # the campaign: its own random stream
                        crng = np.random.default_rng([seed, b, g + 3000])
                        treated = present & (crng.random(n) < campaign["share"])
                        switched = np.zeros(n, dtype=bool)
                        switched[sw] = True
                        hit = treated & ~switched & (seg == campaign["from_segment"]) & \
                            (crng.random(n) < campaign["effect"])  # fmt: skip
                        seg[hit] = campaign["to_segment"]
                        version[hit] = p
                        sw = np.union1d(sw, np.flatnonzero(hit))
                        listed = present if campaign["control"] else treated
                        ids_c = np.flatnonzero(listed).astype(np.int64) + lo + ID_OFFSET
                        treated_parts.append(pa.table({
                            "customer_id": pa.array(ids_c),
                            "group": pa.array(np.where(treated[listed], "treatment", "control")),
                            "campaign": pa.array([campaign["name"]] * ids_c.size, pa.string()),
                        }))  # fmt: skip
                    if redraw:
                        version[present] = p
                    if sw.size or redraw:
                        cache[p] = gen(p, seg.astype(np.int64))
                    d_from[sw] = d_to[sw] = d_period[sw] = -1  # a new history: the drift ends
                delta = p * period_days * day_us
                txs = []
                for v in np.unique(version[present]):
                    keep = present & (version == v)
                    parts = _period_rows(cache[int(v)], keep, lo) if not keep.all() else list(cache[int(v)])
                    tx, ev, crm, _ = parts
                    txs.append(_shift_ts(tx, ["ts"], delta))
                    out[p][1].append(_shift_ts(ev, ["ts"], delta))
                    out[p][2].append(_shift_ts(crm, ["signup_ts"], delta))
                if drift_share and p > g:
                    new_ts = end_us + (p - 1) * period_days * day_us
                    moved = np.zeros(n, dtype=bool)
                    moved[sw] = True
                    _draw_drift(txs, np.random.default_rng([seed, b, p, g + 4000]), lo, new_ts,
                                present & ~moved & (d_from < 0), drift_share, d_from, d_to, d_period, p)  # fmt: skip
                    drift_ts = end_us + (d_period - 1) * period_days * day_us
                    txs, moved_orders = _apply_drift(txs, lo, d_from, d_to, drift_ts)
                    on = np.flatnonzero(present & (d_from >= 0))
                    names_c = np.asarray(CATEGORIES, dtype=object)
                    drift_parts[p].append(pa.table({
                        "customer_id": pa.array(on.astype(np.int64) + lo + ID_OFFSET),
                        "drift_period": pa.array(d_period[on]),
                        "from_category": pa.array(names_c[d_from[on]].tolist(), pa.string()),
                        "to_category": pa.array(names_c[d_to[on]].tolist(), pa.string()),
                        "drift_ts": pa.array(drift_ts[on], pa.timestamp("us", tz="UTC")),
                        "drifted_orders": pa.array(moved_orders[on]),
                    }))  # fmt: skip
                out[p][0].extend(txs)
                ids = np.flatnonzero(present).astype(np.int64) + lo + ID_OFFSET
                s = seg[present]
                out[p][3].append(pa.table({
                    "customer_id": pa.array(ids),
                    "segment": pa.array(s.astype(np.int32)),
                    "segment_name": _dict_array(s, tuple(names)),
                }))  # fmt: skip
    result = []
    for p in range(periods):
        tables = [pa.concat_tables(t).combine_chunks() for t in out[p]]
        tables[3] = tables[3].sort_by("customer_id") if p else tables[3]
        if p:  # a customer's rows may come from several versions: keep the truth sorted, the rest as drawn
            tables[2] = tables[2].sort_by("customer_id")
        treatment = None
        if p >= 1 and campaign is not None:
            treatment = pa.concat_tables(treated_parts).sort_by("customer_id") if treated_parts else None
        drift = None
        if p >= 1 and drift_share:
            drift = pa.concat_tables(drift_parts[p]).sort_by("customer_id") if drift_parts[p] else None
        result.append(SyntheticData(*tables, treatment=treatment, drift=drift))
    return result


def _draw_drift(txs, rng, first, drift_ts, candidates, share, d_from, d_to, d_period, period):
    """Draw this period's drifting customers of one block (in place: ``d_from``, ``d_to``, ``d_period``).

    Eligible: ``candidates`` with an order before ``drift_ts`` and a category never bought before it; a share
    ``share`` of them drifts from their most bought category to one they never bought (uniformly).
    """
    n, C = candidates.size, len(CATEGORIES)
    counts = np.zeros((n, C), dtype=np.int64)
    for t in txs:
        local = t.column("customer_id").to_numpy() - ID_OFFSET - first
        ts = t.column("ts").cast(pa.int64()).to_numpy()
        cat = _category_codes(t)
        before = ts <= drift_ts
        np.add.at(counts, (local[before], cat[before]), 1)
    eligible = np.flatnonzero(candidates & (counts.sum(axis=1) > 0) & (counts == 0).any(axis=1))
    chosen = np.sort(rng.choice(eligible, size=int(round(share * eligible.size)), replace=False))
    if not chosen.size:
        return
    c = counts[chosen]
    unbought = c == 0
    # the k-th unbought category, k uniform over the customer's unbought ones
    k = (rng.random(chosen.size) * unbought.sum(axis=1)).astype(np.int64)
    to = np.argmax(np.cumsum(unbought, axis=1) > k[:, None], axis=1)
    d_from[chosen] = np.argmax(c, axis=1)
    d_to[chosen] = to
    d_period[chosen] = period


def _category_codes(tx):
    col = tx.column("category").combine_chunks()
    return col.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _apply_drift(txs, first, d_from, d_to, drift_ts):
    """The tables with each drifting customer's orders in ``d_from`` after their ``drift_ts`` moved to ``d_to``;
    and the number of rows moved per customer of the block."""
    moved = np.zeros(d_from.size, dtype=np.int64)
    out = []
    for t in txs:
        local = t.column("customer_id").to_numpy() - ID_OFFSET - first
        ts = t.column("ts").cast(pa.int64()).to_numpy()
        cat = _category_codes(t)
        hit = (d_from[local] >= 0) & (cat == d_from[local]) & (ts > drift_ts[local])
        if hit.any():
            cat = cat.copy()
            cat[hit] = d_to[local[hit]]
            moved += np.bincount(local[hit], minlength=d_from.size)
            i = t.column_names.index("category")
            t = t.set_column(i, "category", _dict_array(cat.astype(np.int8), CATEGORIES))
        out.append(t)
    return out, moved


def moves_recovery(moves, truth_before, truth_after):
    """How well a moves table (``segone run --previous``) recovered the true switchers of :func:`generate_periods`.

    Parameters
    ----------
    moves : pyarrow.Table
        ``customer_id``, ``previous_segment``, ``segment`` and ``status``
        (``moves.parquet`` of the later run).
    truth_before, truth_after : pyarrow.Table
        The ``truth`` tables of the two periods (``customer_id``, ``segment``).

    Returns
    -------
    dict
        ``customers_in_both`` (of the truth), ``true_moved`` (customers whose
        latent segment changed), ``found_moved`` (status "moved" among them),
        ``moved_precision`` and ``moved_recall`` of status "moved" against
        the truth, and ``migration_agreement``: one minus the total variation
        distance between the found and the true migration matrices, the
        found one in latent segments (each stable segment id stands for the
        latent segment most of its customers belong to, in its period), both
        over the customers of both periods (1.0: the same matrix).
        ``migration_tv_distance`` is that distance.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from segone.synth import moves_recovery
    >>> t0 = pa.table({"customer_id": [1, 2, 3, 4], "segment": [0, 0, 1, 1]})
    >>> t1 = pa.table({"customer_id": [1, 2, 3, 4], "segment": [0, 1, 1, 1]})
    >>> m = pa.table({"customer_id": [1, 2, 3, 4], "previous_segment": [5, 5, 7, 7], "segment": [5, 7, 7, 7],
    ...               "status": ["stayed", "moved", "stayed", "stayed"]})
    >>> r = moves_recovery(m, t0, t1)
    >>> r["moved_precision"], r["moved_recall"], r["migration_agreement"]
    (1.0, 1.0, 1.0)
    """
    for name, t, cols in (("moves", moves, ("customer_id", "previous_segment", "segment", "status")),
                          ("truth_before", truth_before, ("customer_id", "segment")),
                          ("truth_after", truth_after, ("customer_id", "segment"))):  # fmt: skip
        missing = [c for c in cols if c not in t.column_names]
        if missing:
            raise ParameterError(f"{name} has no column(s) {missing}; it has {t.column_names[:10]}.")
    truth = truth_before.select(["customer_id", "segment"]).join(
        truth_after.select(["customer_id", "segment"]).rename_columns(["customer_id", "segment_after"]),
        "customer_id", join_type="inner")  # fmt: skip
    m = moves.select(["customer_id", "previous_segment", "segment", "status"]).rename_columns(
        ["customer_id", "found_before", "found_after", "status"])
    j = truth.join(m, "customer_id", join_type="left outer")
    s0 = j.column("segment").to_numpy().astype(np.int64)
    s1 = j.column("segment_after").to_numpy().astype(np.int64)
    status = pc.cast(j.column("status"), pa.string()).to_numpy(zero_copy_only=False)
    f0 = pc.fill_null(j.column("found_before"), -1).to_numpy().astype(np.int64)
    f1 = pc.fill_null(j.column("found_after"), -1).to_numpy().astype(np.int64)
    true_moved = s0 != s1
    found_moved = status == "moved"
    tp = int((true_moved & found_moved).sum())
    n = int(s0.size)

    def latent_of(found, latent):  # stable id -> the latent segment most of its customers have
        out = {}
        for i in np.unique(found[found >= 0]):
            out[int(i)] = int(np.bincount(latent[found == i]).argmax())
        return out

    lat0, lat1 = latent_of(f0, s0), latent_of(f1, s1)
    L = int(max(s0.max(initial=0), s1.max(initial=0))) + 1
    true_m = np.zeros((L, L))
    np.add.at(true_m, (s0, s1), 1)
    found_m = np.zeros((L, L))
    both = (f0 >= 0) & (f1 >= 0)
    a = np.array([lat0[int(v)] for v in f0[both]], dtype=np.int64)
    b = np.array([lat1[int(v)] for v in f1[both]], dtype=np.int64)
    np.add.at(found_m, (a, b), 1)
    tv = float(np.abs(found_m - true_m).sum() / 2 / max(n, 1))
    return {
        "customers_in_both": n,
        "true_moved": int(true_moved.sum()),
        "found_moved": int(found_moved.sum()),
        "moved_precision": tp / max(int(found_moved.sum()), 1),
        "moved_recall": tp / max(int(true_moved.sum()), 1),
        "migration_tv_distance": tv,
        "migration_agreement": 1.0 - tv,
    }


def drift_recovery(actions, drift, transactions, *, horizon_days=30, min_orders=1):
    """How well the next best offers (``actions.parquet``) found the category drift of :func:`generate_periods`,
    against global popularity.

    The drifting customers counted are those of the ``drift`` truth whose drift shows in the data
    (``drifted_orders >= min_orders``) and who have an actions row (contactable, ids not pseudonymised).
    A customer is *found* when their ``to_category`` is among their offers.  Popularity offers every
    customer the same categories: the ``N`` bought by the most customers in the last ``horizon_days`` days
    of ``transactions`` (``N``: the most offers of any actions row; ties broken by category name), and
    finds a customer when their ``to_category`` is one of them.

    Parameters
    ----------
    actions : pyarrow.Table
        ``customer_id`` and the list column ``category`` (best first).
    drift : pyarrow.Table
        The period's ``drift`` table (``customer_id``, ``to_category``, ``drifted_orders``).
    transactions : pyarrow.Table
        The period's transactions (``customer_id``, ``ts``, ``category``; rows with a positive ``amount``
        count when it is there).
    horizon_days : int, default 30
    min_orders : int, default 1

    Returns
    -------
    dict
        ``drifted`` (counted customers), ``without_actions`` (visible drifters without an actions row),
        ``offers_found``, ``offers_hit_rate``, ``popularity_found``, ``popularity_hit_rate``,
        ``popular_categories`` and ``offers`` (N).

    Examples
    --------
    >>> import datetime as dt, pyarrow as pa
    >>> tx = pa.table({"customer_id": [1, 2, 3], "ts": [dt.datetime(2026, 1, 1)] * 3, "amount": [1.0, 1.0, 1.0],
    ...                "category": ["grocery", "grocery", "toys"]})
    >>> act = pa.table({"customer_id": [1, 2], "category": [["toys"], ["grocery"]]})
    >>> drift = pa.table({"customer_id": [1, 2], "to_category": ["toys", "books"], "drifted_orders": [2, 1]})
    >>> r = drift_recovery(act, drift, tx)
    >>> r["offers_hit_rate"], r["popularity_hit_rate"], r["popular_categories"]
    (0.5, 0.0, ['grocery'])
    """
    for name, t, cols in (("actions", actions, ("customer_id", "category")),
                          ("drift", drift, ("customer_id", "to_category", "drifted_orders")),
                          ("transactions", transactions, ("customer_id", "ts", "category"))):  # fmt: skip
        missing = [c for c in cols if c not in t.column_names]
        if missing:
            raise ParameterError(f"{name} has no column(s) {missing}; it has {t.column_names[:10]}.")
    n_offers = pc.max(pc.list_value_length(actions.column("category"))).as_py() or 0
    # popularity: customers who bought each category in the last horizon_days days
    tx = transactions
    ts = tx.column("ts").cast(pa.timestamp("us", tz=tx.schema.field("ts").type.tz)).cast(pa.int64()).to_numpy(
        zero_copy_only=False)  # fmt: skip
    recent = ts > ts.max(initial=0) - int(horizon_days) * 86_400 * 1_000_000
    if "amount" in tx.column_names:
        recent &= pc.fill_null(pc.greater(tx.column("amount"), 0), False).to_numpy(zero_copy_only=False)
    cat = tx.column("category")
    cat = cat.cast(pa.string()) if not pa.types.is_dictionary(cat.type) else cat.combine_chunks().dictionary_decode()
    pairs = pa.table({"c": tx.column("customer_id"), "k": cat}).filter(pa.array(recent))
    buyers = pairs.group_by(["k", "c"]).aggregate([]).group_by("k").aggregate([("c", "count")])
    ranked = sorted(zip(buyers.column("k").to_pylist(), buyers.column("c_count").to_pylist()),
                    key=lambda kv: (-kv[1], str(kv[0])))  # fmt: skip
    popular = [str(k) for k, _ in ranked if k is not None][:n_offers]
    d = drift.filter(pc.greater_equal(drift.column("drifted_orders"), min_orders))
    d = d.select(["customer_id", "to_category"])
    ids = actions.column("customer_id")
    at = pc.index_in(d.column("customer_id").cast(ids.type), value_set=ids.combine_chunks())
    has = at.is_valid().to_numpy(zero_copy_only=False)
    to = d.column("to_category").to_pylist()
    offers = pc.take(actions.column("category"), at).to_pylist()
    found = sum(1 for t, o, h in zip(to, offers, has) if h and t in o)
    pop_found = sum(1 for t, h in zip(to, has) if h and t in popular)
    n = int(has.sum())
    return {"drifted": n, "without_actions": int((~has).sum()), "offers_found": found,
            "offers_hit_rate": found / n if n else None, "popularity_found": pop_found,
            "popularity_hit_rate": pop_found / n if n else None, "popular_categories": popular,
            "offers": int(n_offers)}  # fmt: skip


def write_periods(path, n_customers=100_000, *, periods=2, overwrite=False, **kwargs):
    """Write :func:`generate_periods` data as ``path/period-0``, ``path/period-1``, ... (atomically).

    Each period directory has the layout of :func:`write_dataset`
    (``transactions/``, ``events/``, ``customers/``, ``truth/`` and
    ``manifest.json``), so ``segone run path/period-1 ...`` reads it;
    with a campaign, period 1 also has ``treatment.parquet``, and with
    ``drift_share``, every later period has ``drift.parquet`` (the drifting
    customers: see :func:`generate_periods`).  Keyword arguments are those
    of :func:`generate_periods`.  Returns the list of manifests.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ParameterError(f"{path} already exists; choose a new directory or pass overwrite=True.")
    manifests = []
    with check_output(path, (), overwrite, name="path"), atomic_directory(path, overwrite=True) as tmp:
        data = generate_periods(n_customers, periods=periods, **kwargs)
        for p, d in enumerate(data):
            base = os.path.join(tmp, f"period-{p}")
            counts = {}
            for name, t in zip(("transactions", "events", "customers", "truth"),
                               (d.transactions, d.events, d.customers, d.truth)):  # fmt: skip
                os.makedirs(os.path.join(base, name))
                pq.write_table(t, os.path.join(base, name, "part-00000.parquet"), row_group_size=1 << 20)
                counts[name] = t.num_rows
            if d.treatment is not None:  # the campaign between the previous period and this one
                pq.write_table(d.treatment, os.path.join(base, "treatment.parquet"))
                counts["treatment"] = d.treatment.num_rows
            if d.drift is not None:  # the customers whose category preference drifted (drift_share)
                pq.write_table(d.drift, os.path.join(base, "drift.parquet"))
                counts["drift"] = d.drift.num_rows
            manifest = {"format": "segone-synth", "version": 1, "period": p, "periods": periods,
                        "n_customers": d.truth.num_rows, "rows": counts,
                        "segments": [s["name"] for s in SEGMENTS],
                        "generate_periods": {"n_customers": n_customers, **{k: v for k, v in kwargs.items()
                                                                             if k != "end"}}}  # fmt: skip
            with open(os.path.join(base, "manifest.json"), "w") as f:
                json.dump(manifest, f, indent=2)
            manifests.append(manifest)
    return manifests
