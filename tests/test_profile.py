import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import segone
from segone.errors import DataError, EmptyInputError, ParameterError, SchemaError
from segone.profile import build_profiles_with_summary

UTC = dt.timezone.utc


def tx_table(rows, tz="UTC"):
    cid, ts, amount, cat, ch = zip(*rows)
    return pa.table(
        {
            "customer_id": pa.array(cid, pa.int64()),
            "ts": pa.array(ts, pa.timestamp("us", tz=tz)),
            "amount": pa.array(amount, pa.float64()),
            "category": pa.array(cat),
            "channel": pa.array(ch),
        }
    )


def d(day, hour=12):
    return dt.datetime(2025, 1, day, hour, tzinfo=UTC)


def test_btyd_hand_example():
    # customer 1: purchases on Jan 1 (two, same day), Jan 3, Jan 10; as_of Jan 20
    # customer 2: one purchase on Jan 5
    rows = [
        (1, d(1, 9), 10.0, "a", "web"),
        (1, d(1, 15), 5.0, "b", "web"),
        (1, d(3), 20.0, "a", "store"),
        (1, d(10), 30.0, "a", "store"),
        (2, d(5), 7.0, "b", "web"),
    ]
    p = segone.build_profiles(tx_table(rows), as_of="2025-01-20").to_pylist()
    c1, c2 = p
    assert c1["customer_id"] == 1 and c1["orders"] == 4 and c1["purchase_days"] == 3
    assert c1["frequency"] == 2  # three distinct days minus the first
    assert c1["recency"] == 9  # Jan 10 - Jan 1
    assert c1["T"] == 19  # Jan 20 - Jan 1
    assert c1["monetary_value"] == pytest.approx(25.0)  # mean of 20 and 30: first day excluded
    assert c1["spend_total"] == 65.0 and c1["spend_max"] == 30.0
    assert c1["share_a"] == pytest.approx(60 / 65) and c1["n_categories"] == 2
    assert c1["channel_web"] == pytest.approx(0.5)
    assert c1["recency_days"] == pytest.approx(9.5)  # Jan 20 00:00 - Jan 10 12:00
    assert c2["frequency"] == 0 and c2["recency"] == 0 and c2["monetary_value"] == 0 and c2["T"] == 15


def pandas_profile(df, as_of):
    g = df.groupby("customer_id")
    out = pd.DataFrame(
        {
            "orders": g.size(),
            "spend_total": g["amount"].sum(),
            "spend_max": g["amount"].max(),
            "recency_days": (as_of - g["ts"].max()).dt.total_seconds() / 86400,
            "tenure_days": (as_of - g["ts"].min()).dt.total_seconds() / 86400,
            "purchase_days": df.assign(day=df.ts.dt.floor("D")).groupby("customer_id")["day"].nunique(),
        }
    )
    recent = df[df.ts > as_of - pd.Timedelta(days=30)].groupby("customer_id")["amount"].sum()
    out["spend_30d"] = recent.reindex(out.index).fillna(0.0)
    return out.sort_index()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_pandas(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    base = pd.Timestamp("2025-01-01", tz="UTC")
    df = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 300, n).astype(np.int64),
            "ts": base + pd.to_timedelta(rng.integers(0, 200 * 86400, n), unit="s"),
            "amount": np.round(rng.lognormal(3, 1, n), 2),
            "category": rng.choice(list("abcdefg"), n),
            "channel": rng.choice(["web", "store"], n),
        }
    )
    as_of = base + pd.Timedelta(days=150)
    prof = segone.build_profiles(pa.Table.from_pandas(df, preserve_index=False), as_of=as_of.to_pydatetime())
    got = prof.to_pandas().set_index("customer_id")
    exp = pandas_profile(df[df.ts <= as_of], as_of)
    got = got.loc[exp.index]
    for col in exp.columns:
        np.testing.assert_allclose(got[col].to_numpy(float), exp[col].to_numpy(float), rtol=1e-9, err_msg=col)
    # customers whose purchases all fall after as_of still appear, with no purchases
    late_only = set(df.customer_id) - set(exp.index)
    assert set(prof.column("customer_id").to_pylist()) == set(df.customer_id)
    for c in late_only:
        assert got_row(prof, c)["orders"] == 0


def got_row(prof, cid):
    return [r for r in prof.to_pylist() if r["customer_id"] == cid][0]


def test_all_sources_and_every_customer_once(small_synth):
    d = small_synth
    prof, summary = build_profiles_with_summary(d.transactions, events=d.events, attributes=d.customers)
    ids = prof.column("customer_id").to_numpy()
    assert len(ids) == len(np.unique(ids)) == d.customers.num_rows
    assert (np.diff(ids) > 0).all()
    for col in ("events_visit", "days_since_pricing_page", "consent_marketing", "region", "share_other", "orders_90d"):
        assert col in prof.column_names
    assert summary["rows_read"]["transactions"] == d.transactions.num_rows
    assert b"segone" in prof.schema.metadata


def test_crm_only_customer_and_string_ids():
    rows = [("a", d(1), 5.0, "x", "web"), ("b", d(2), 6.0, "x", "web")]
    cid, ts, amount, cat, ch = zip(*rows)
    tx = pa.table({"customer_id": list(cid), "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "amount": list(amount)})
    attrs = pa.table({"customer_id": ["a", "c"], "consent_marketing": [True, False]})
    prof = segone.build_profiles(tx, attributes=attrs)
    rows = {r["customer_id"]: r for r in prof.to_pylist()}
    assert set(rows) == {"a", "b", "c"}
    assert rows["c"]["orders"] == 0 and rows["c"]["recency_days"] is None and rows["c"]["consent_marketing"] is False
    assert rows["b"]["consent_marketing"] is None


def test_null_keys_dropped_and_counted_and_returns():
    tx = pa.table(
        {
            "customer_id": pa.array([1, None, 2, 2], pa.int64()),
            "ts": pa.array([d(1), d(2), None, d(3)], pa.timestamp("us", tz="UTC")),
            "amount": [5.0, 6.0, 7.0, -2.0],
        }
    )
    prof, s = build_profiles_with_summary(tx)
    assert s["dropped"] == {"transactions: null customer id": 1, "transactions: null timestamp": 1}
    assert s["returns"] == 1
    assert prof.num_rows == 2
    _, s2 = build_profiles_with_summary(tx, drop_returns=True)
    assert s2["returns"] == 0


def test_rows_after_as_of_excluded_and_counted():
    tx = tx_table([(1, d(1), 1.0, "a", "w"), (1, d(9), 1.0, "a", "w"), (2, d(2), 1.0, "a", "w")])
    prof, s = build_profiles_with_summary(tx, as_of=dt.date(2025, 1, 5))
    assert s["excluded_after_as_of"]["transactions"] == 1
    assert prof.column("orders").to_pylist() == [1, 1]


def test_bad_inputs():
    good = tx_table([(1, d(1), 1.0, "a", "w")])
    with pytest.raises(SchemaError, match="'amount'"):
        segone.build_profiles(good.drop(["amount"]))
    with pytest.raises(SchemaError, match="customer id column has type double"):
        segone.build_profiles(good.set_column(0, "customer_id", pa.array([1.0])))
    # ISO 8601 strings are parsed (tests/test_inputs.py); other strings and other types are named
    assert segone.build_profiles(good.set_column(1, "ts", pa.array(["2025-01-01"]))).num_rows == 1
    with pytest.raises(DataError, match=r"transactions.ts: timestamp column has type string and 1 of its values match no accepted format.*01/02/2025"):
        segone.build_profiles(good.set_column(1, "ts", pa.array(["01/02/2025"])))
    with pytest.raises(SchemaError, match="timestamp column has type bool"):
        segone.build_profiles(good.set_column(1, "ts", pa.array([True])))
    with pytest.raises(DataError, match=r"amount.*NaN or infinite values \(first rows: 1"):
        segone.build_profiles(tx_table([(1, d(1), 1.0, "a", "w"), (1, d(2), float("nan"), "a", "w")]))
    with pytest.raises(DataError, match="null amounts"):
        segone.build_profiles(good.set_column(2, "amount", pa.array([None], pa.float64())))
    with pytest.raises(EmptyInputError):
        segone.build_profiles(good.slice(0, 0))
    naive_events = pa.table(
        {"customer_id": pa.array([1], pa.int64()), "ts": pa.array([dt.datetime(2025, 1, 1)]), "event": ["visit"]}
    )
    with pytest.raises(SchemaError, match="naive"):
        segone.build_profiles(good, events=naive_events)
    dup_attrs = pa.table({"customer_id": pa.array([1, 1], pa.int64()), "x": [1, 2]})
    with pytest.raises(DataError, match="duplicate customer ids"):
        segone.build_profiles(good, attributes=dup_attrs)
    with pytest.raises(ParameterError, match="as_of"):
        segone.build_profiles(good, as_of="yesterday")
    with pytest.raises(ParameterError, match="schema has unknown role"):
        segone.build_profiles(good, schema={"cust": "customer_id"})
    with pytest.raises(ParameterError, match="does not exist"):
        segone.build_profiles("/nonexistent/path.parquet")


def test_schema_mapping_and_parquet_path(tmp_path):
    import pyarrow.parquet as pq

    t = tx_table([(1, d(1), 3.0, "a", "w"), (2, d(2), 4.0, "b", "s")]).rename_columns(
        ["cust", "when", "value", "cat", "chan"]
    )
    pq.write_table(t, tmp_path / "t.parquet")
    prof = segone.build_profiles(
        tmp_path / "t.parquet",
        schema={"customer_id": "cust", "ts": "when", "amount": "value", "category": "cat", "channel": "chan"},
    )
    assert prof.column("spend_total").to_pylist() == [3.0, 4.0]
    assert "share_a" in prof.column_names and "channel_w" in prof.column_names


def test_nanosecond_timestamps_are_truncated():
    ts = pa.array([1_704_103_200_000_000_001, 1_704_189_600_000_000_999], pa.timestamp("ns", tz="UTC"))
    tx = pa.table({"customer_id": pa.array([1, 1], pa.int64()), "ts": ts, "amount": [1.0, 2.0]})
    prof = segone.build_profiles(tx)
    assert prof.column("orders").to_pylist() == [2] and prof.column("purchase_days").to_pylist() == [2]


def test_generated_column_names_never_collide():
    rows = [(1, d(1), 10.0, "Home & Garden", "web"), (1, d(2), 20.0, "home garden", "Web"),
            (1, d(3), 30.0, "other", "store")]  # fmt: skip
    prof = segone.build_profiles(tx_table(rows))
    row = prof.to_pylist()[0]
    shares = {k: v for k, v in row.items() if k.startswith("share_")}
    assert sum(shares.values()) == pytest.approx(1.0)
    assert len([k for k in shares if k != "share_other"]) == 3
    channels = {k: v for k, v in row.items() if k.startswith("channel_")}
    assert len(channels) == 3 and sum(channels.values()) == pytest.approx(1.0)


def test_dictionary_ids_normalised_and_attribute_nulls_counted_once():
    tx = tx_table([(1, d(1), 1.0, "a", "w"), (2, d(2), 1.0, "a", "w")])
    ids = pa.array([1, 2], pa.int32()).dictionary_encode()
    tx = tx.set_column(0, "customer_id", ids)
    events = pa.table({"customer_id": pa.array([2], pa.int64()), "ts": pa.array([d(1)], pa.timestamp("us", tz="UTC")),
                       "event": ["visit"]})  # fmt: skip
    attrs = pa.table({"customer_id": pa.array([1, None], pa.int64()), "x": [1, 2]})
    prof, s = build_profiles_with_summary(tx, events=events, attributes=attrs)
    assert prof.column("customer_id").to_pylist() == [1, 2]
    assert s["dropped"] == {"attributes: null customer id": 1}


def test_customers_with_only_late_rows_are_kept():
    tx = tx_table([(1, d(1), 1.0, "a", "w"), (3, d(20), 5.0, "a", "w")])
    events = pa.table({"customer_id": pa.array([4], pa.int64()), "ts": pa.array([d(25)], pa.timestamp("us", tz="UTC")),
                       "event": ["visit"]})  # fmt: skip
    prof, s = build_profiles_with_summary(tx, events=events, as_of="2025-01-10")
    rows = {r["customer_id"]: r for r in prof.to_pylist()}
    assert set(rows) == {1, 3, 4}
    assert rows[3]["orders"] == 0 and rows[4]["orders"] == 0
    assert s["excluded_after_as_of"] == {"transactions": 1, "events": 1}


# ------------------------------------------------ hypothesis: every column vs pandas
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_BASE = pd.Timestamp("2025-01-01", tz="UTC")
_rows = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3", "c4", "c5"]),
        st.integers(0, 40 * 86400),  # seconds after the base: several purchases per day happen
        st.integers(-5000, 50000).map(lambda c: c / 100),  # cents, returns included
        st.sampled_from(["a", "b", "c", None]),
        st.sampled_from(["web", "store"]),
    ),
    min_size=1,
    max_size=40,
)


def full_pandas_profile(df, as_of):
    """Every transaction-derived profile column, the obvious pandas way."""
    df = df.assign(day=df.ts.dt.floor("D"), pos=df.amount.clip(lower=0))
    g = df.groupby("customer_id")
    out = pd.DataFrame({"orders": g.size(), "spend_total": g.amount.sum(), "spend_max": g.amount.max()})
    out["spend_mean"] = out.spend_total / out.orders
    out["recency_days"] = (as_of - g.ts.max()).dt.total_seconds() / 86400
    out["tenure_days"] = (as_of - g.ts.min()).dt.total_seconds() / 86400
    out["purchase_days"] = g.day.nunique()
    recent = df[df.ts > as_of - pd.Timedelta(days=7)].groupby("customer_id")
    out["orders_7d"] = recent.size().reindex(out.index).fillna(0)
    out["spend_7d"] = recent.amount.sum().reindex(out.index).fillna(0.0)
    gross = g.pos.sum()
    denom = gross.where(gross > 0, 1.0)
    for cat in ("a", "b", "c"):
        out[f"share_{cat}"] = df[df.category == cat].groupby("customer_id").pos.sum().reindex(out.index).fillna(0) / denom
    out["share_other"] = df[df.category.isna()].groupby("customer_id").pos.sum().reindex(out.index).fillna(0) / denom
    out["n_categories"] = g.category.nunique()
    for ch in ("web", "store"):
        out[f"channel_{ch}"] = df[df.channel == ch].groupby("customer_id").size().reindex(out.index).fillna(0) / out.orders
    # lifetimes' summary_data_from_transaction_data(freq="D"): per-day totals
    per_day = df.groupby(["customer_id", "day"]).amount.sum().reset_index()
    first_day = per_day.groupby("customer_id").day.min()
    out["frequency"] = per_day.groupby("customer_id").size() - 1
    out["recency"] = (per_day.groupby("customer_id").day.max() - first_day).dt.days
    out["T"] = (as_of.floor("D") - first_day).dt.days
    repeat = per_day[per_day.day != per_day.customer_id.map(first_day)]
    out["monetary_value"] = repeat.groupby("customer_id").amount.mean().reindex(out.index).fillna(0.0)
    return out.sort_index()


@settings(deadline=None)
@given(_rows, st.integers(0, 45 * 86400))
def test_every_column_against_pandas_hypothesis(rows, as_of_s):
    df = pd.DataFrame(rows, columns=["customer_id", "ts", "amount", "category", "channel"])
    df["ts"] = _BASE + pd.to_timedelta(df.ts, unit="s")
    as_of = _BASE + pd.Timedelta(seconds=as_of_s)
    table = pa.Table.from_pandas(df, preserve_index=False)
    prof = segone.build_profiles(table, as_of=as_of.to_pydatetime(), windows=(7,), top_categories=10)
    got = prof.to_pandas().set_index("customer_id")
    assert sorted(got.index) == sorted(set(df.customer_id))  # every customer once, even if all rows are late
    kept = df[df.ts <= as_of]
    if kept.empty:
        assert (got.orders == 0).all()
        return
    exp = full_pandas_profile(kept, as_of)
    assert (got.drop(exp.index).orders == 0).all()
    got = got.loc[exp.index]
    for col in exp.columns:
        g = got[col].to_numpy(float) if col in got else np.zeros(len(exp))  # a category nobody bought
        np.testing.assert_allclose(g, exp[col].to_numpy(float), rtol=1e-9, atol=1e-9, err_msg=col)


def test_fixed_labels_make_customer_partitions_add_up(small_synth):
    """Profiles of customer-disjoint pieces with the global labels == the whole (the Dask contract)."""
    d = small_synth
    whole, summary = build_profiles_with_summary(d.transactions, events=d.events, attributes=d.customers)
    labels = {
        "category": summary["categories"],
        "channel": sorted({c for c in d.transactions.column("channel").to_pylist() if c is not None}),
        "event": sorted({e for e in d.events.column("event").to_pylist() if e is not None}),
    }
    as_of = summary["as_of"]
    parts = []
    for keep in (lambda c: c % 3 == 0, lambda c: c % 3 != 0):
        def sel(t):
            return t.filter(pa.array([keep(c) for c in t.column("customer_id").to_pylist()]))
        parts.append(segone.profile.build_profiles_with_summary(
            sel(d.transactions), events=sel(d.events), attributes=sel(d.customers), as_of=as_of, labels=labels,
        )[0])  # fmt: skip
    assert parts[0].schema.names == parts[1].schema.names
    joined = pa.concat_tables(parts).sort_by("customer_id")
    expected = whole.select(joined.schema.names)
    for name in joined.schema.names:
        a, b = joined.column(name).to_pylist(), expected.column(name).to_pylist()
        if pa.types.is_floating(joined.schema.field(name).type):
            np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), rtol=1e-12, err_msg=name)
        else:
            assert a == b, name
    # a piece without a given channel / event / category still has its column, all zero
    one = build_profiles_with_summary(d.transactions.slice(0, 1), as_of=as_of,
                                      labels={**labels, "category": labels["category"] + ["zzz"]})[0]  # fmt: skip
    assert one.column("share_zzz").to_pylist() == [0.0]
    assert set(f"events_{e}" for e in labels["event"]) <= set(one.schema.names)


def test_order_ids_make_orders_and_baskets():
    """With an order id, orders are distinct order ids and spend_mean / spend_max are per basket (vs pandas)."""
    import pandas as pd

    rng = np.random.default_rng(3)
    n = 4000
    cust = rng.integers(0, 200, n)
    order = cust * 1000 + rng.integers(0, 6, n)  # a few baskets per customer, several lines each
    ts = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(order % 1000 * 30 + cust % 7, unit="D")
    amount = rng.lognormal(2, 1, n)
    oid = pa.array([None if i % 50 == 0 else int(o) for i, o in enumerate(order)], pa.int64())
    t = pa.table({"customer_id": cust, "ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "amount": amount,
                  "basket": oid, "channel": pa.array(rng.choice(["web", "store"], n))})  # fmt: skip
    prof, summary = segone.profile.build_profiles_with_summary(t, schema={"order_id": "basket"})
    assert summary["orders_from"] == "distinct basket"
    df = t.to_pandas()
    df["okey"] = df["basket"].astype("Int64").astype(str)
    df.loc[df["basket"].isna(), "okey"] = "row" + df.index[df["basket"].isna()].astype(str)
    baskets = df.groupby(["customer_id", "okey"]).agg(a=("amount", "sum"), ts=("ts", "min")).reset_index()
    exp = baskets.groupby("customer_id").agg(orders=("a", "size"), smax=("a", "max"), spend=("a", "sum"))
    got = prof.to_pandas().set_index("customer_id")
    np.testing.assert_array_equal(got["orders"].to_numpy(), exp["orders"].to_numpy())
    np.testing.assert_allclose(got["spend_max"].to_numpy(), exp["smax"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["spend_mean"].to_numpy(), (exp["spend"] / exp["orders"]).to_numpy(), rtol=1e-12)
    as_of = df["ts"].max()
    w90 = baskets[baskets.ts >= as_of - pd.Timedelta(days=90)].groupby("customer_id").size()
    np.testing.assert_array_equal(got["orders_90d"].to_numpy(), w90.reindex(got.index, fill_value=0).to_numpy())
    # channel shares are shares of orders (an order's rows disagreeing here: each order counts once)
    np.testing.assert_allclose((got["channel_web"] + got["channel_store"]).to_numpy(), 1.0)
    # one channel per basket (a store id, say): the shares are those of the baskets, not of the lines
    t2 = t.set_column(t.schema.get_field_index("channel"), "channel",
                      pa.array(np.where(order % 3 == 0, "web", "store")))  # fmt: skip
    p2 = segone.profile.build_profiles(t2, schema={"order_id": "basket"}).to_pandas().set_index("customer_id")
    df["web"] = (order % 3 == 0)
    per_basket = df.groupby(["customer_id", "okey"]).web.first().groupby("customer_id").mean()
    np.testing.assert_allclose(p2["channel_web"].to_numpy(), per_basket.reindex(p2.index).to_numpy(), rtol=1e-12)
    plain, s2 = segone.profile.build_profiles_with_summary(t)  # no order id role mapped: rows are orders
    assert s2["orders_from"] == "rows" and plain.column("orders").to_numpy().sum() == n


def test_high_cardinality_channels_fold_into_other():
    rng = np.random.default_rng(0)
    n = 5000
    store = rng.zipf(1.5, n) % 457  # a store id used as the channel: 457 possible values
    t = pa.table({"customer_id": rng.integers(0, 300, n), "ts": pa.array(np.arange(n) * 10**9, pa.timestamp("us")),
                  "amount": np.ones(n), "channel": pa.array([f"s{v}" for v in store])})  # fmt: skip
    prof, summary = segone.profile.build_profiles_with_summary(t, top_channels=10)
    ch = [c for c in prof.column_names if c.startswith("channel_")]
    assert len(ch) == 11 and ch[-1] == "channel_other"
    assert summary["folded"]["channel"] == len(set(store.tolist())) - 10
    total = sum(prof.column(c).to_numpy() for c in ch)
    np.testing.assert_allclose(total, 1.0)
    # the ten kept are the ten most frequent
    counts = pd_counts = {}
    for v in store:
        pd_counts[v] = pd_counts.get(v, 0) + 1
    top = sorted(counts, key=lambda v: -counts[v])[:10]
    assert {c[len("channel_"):] for c in ch[:-1]} == {f"s{v}" for v in top}


def test_btyd_columns_in_weeks_and_months():
    """freq="W" equals lifetimes' summary (weeks Monday-Sunday); freq="M" counts calendar months."""
    import warnings

    t = pa.table({"customer_id": [1, 1, 1, 2, 2],
                  "ts": pa.array(["2025-01-06 10:00", "2025-01-12 09:00", "2025-03-31 12:00", "2025-02-28 08:00",
                                  "2025-03-01 08:00"]).cast(pa.timestamp("us")),  # fmt: skip
                  "amount": [10.0, 5.0, 7.0, 3.0, 4.0]})
    w = segone.build_profiles(t, freq="W", as_of="2025-04-02").to_pydict()
    # customer 1: Jan 6 (Mon) and Jan 12 (Sun) share a week, Mar 31 is 12 weeks later;
    # customer 2: Feb 28 (Fri) and Mar 1 (Sat) share a week, 5 weeks before the week of as_of
    assert w["frequency"] == [1.0, 0.0] and w["recency"] == [12.0, 0.0] and w["T"] == [12.0, 5.0]
    assert w["monetary_value"] == [7.0, 0.0]
    m = segone.build_profiles(t, freq="M", as_of="2025-04-02").to_pydict()
    assert m["frequency"] == [1.0, 1.0] and m["recency"] == [2.0, 1.0] and m["T"] == [3.0, 2.0]
    assert m["monetary_value"] == [7.0, 4.0]
    with pytest.raises(segone.errors.ParameterError, match="freq"):
        segone.build_profiles(t, freq="Q")
    import lifetimes.utils as lifetimes_utils
    d = segone.synth.generate(500, seed=1)
    prof = segone.build_profiles(d.transactions, freq="W").to_pandas().set_index("customer_id")
    df = d.transactions.select(["customer_id", "ts", "amount"]).to_pandas()
    df["ts"] = df["ts"].dt.tz_convert(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = lifetimes_utils.summary_data_from_transaction_data(df, "customer_id", "ts", monetary_value_col="amount",
                                                               observation_period_end=df["ts"].max(), freq="W")
    for c in ("frequency", "recency", "T", "monetary_value"):
        np.testing.assert_allclose(prof.loc[s.index, c].to_numpy(), s[c].to_numpy(), rtol=1e-12, err_msg=c)
