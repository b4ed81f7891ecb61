"""segone.actions: category features and the time split, channel and timing, next best offers, bad input."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from segone import actions as A
from segone import pipeline
from segone._engine import LocalEngine
from segone.errors import DataError, ParameterError
from segone.synth import generate

DAY = 86_400 * 1_000_000


def _us(*args):
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp() * 1_000_000)


def _ts(values):
    return pa.array(values, pa.timestamp("us", tz="UTC"))


@pytest.fixture(scope="module")
def synth():
    d = generate(1200, seed=4)
    eng = LocalEngine()
    prof, summary, _ = pipeline.profile_stage(eng, {"transactions": d.transactions, "events": None,
                                                    "attributes": d.customers})  # fmt: skip
    seg = (np.arange(prof[0].num_rows) % 3).astype(np.int64)
    return d, prof[0], pa.table({"segment": seg}), summary


def _stage(synth, **kw):
    d, prof, asg, summary = synth
    kw.setdefault("contact", "consent_marketing")
    return A.actions_stage(LocalEngine(), [(d.transactions, None, d.customers)], [prof], [asg],
                           categories=kw.pop("categories", summary["categories"]), as_of=summary["as_of"],
                           n_segments=3, **kw)  # fmt: skip


def test_category_piece_counts_orders_spend_and_times_at_both_cutoffs():
    as_of = _us(2024, 6, 30)
    tx = pa.table({
        "customer_id": [1, 1, 1, 1, 1, 2, 2, 2],
        "ts": _ts([_us(2024, 1, 1), _us(2024, 1, 1), _us(2024, 5, 1), _us(2024, 6, 20), _us(2024, 7, 5),
                   _us(2024, 6, 10), _us(2024, 6, 11), _us(2024, 3, 1)]),
        "amount": [10.0, 5.0, 20.0, 7.0, 99.0, 3.0, -3.0, 8.0],
        "category": ["toys", "toys", "toys", "garden", "toys", "garden", "garden", "books"],
        "channel": ["app", "app", "web", "web", "app", "store", "store", "store"],
    })  # fmt: skip
    prof = pa.table({"customer_id": [2, 1, 3]})  # rows follow the profiles; 3 has no purchase
    t = A.category_piece((tx, None, None), prof, pa.table({"segment": [0, 1, 0]}), categories=["toys", "garden"],
                         as_of_us=as_of, horizon_days=30)  # fmt: skip
    assert t.column("customer_id").to_pylist() == [2, 1, 3]
    # customer 1: two toys rows at the same time are one order; the row after as_of is not read
    assert t.column("orders0").to_pylist() == [[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]
    assert t.column("orders1").to_pylist() == [[0.0, 1.0], [2.0, 1.0], [0.0, 0.0]]
    assert t.column("spend1").to_pylist()[1] == [35.0, 7.0]
    assert t.column("recent1").to_pylist() == [[0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]  # the labels of the training
    assert t.column("last0").to_pylist()[1][0] == pytest.approx((as_of - 30 * DAY - _us(2024, 5, 1)) / DAY)
    assert t.column("first1").to_pylist()[1][0] == pytest.approx((as_of - _us(2024, 1, 1)) / DAY)
    assert t.column("c_orders1").to_pylist() == [2.0, 3.0, 0.0]  # books counts for the customer, the -3 row not
    assert np.isnan(t.column("c_last1").to_pylist()[2])
    # channel: 1 has app 1 order, web 2 orders; 2 store; 3 none
    assert t.column("channel").to_pylist() == ["store", "web", None]
    assert t.column("channel_share").to_pylist()[1] == pytest.approx(2 / 3)
    assert t.column("weekday").to_pylist()[2] is None and t.column("hour").to_pylist()[2] is None


def test_channel_and_timing_ties_go_to_the_latest_order():
    as_of = _us(2024, 6, 30)
    tx = pa.table({"customer_id": [1, 1, 1, 1], "amount": [1.0] * 4, "category": ["a"] * 4,
                   "ts": _ts([_us(2024, 6, 3, 9), _us(2024, 6, 4, 10), _us(2024, 6, 10, 9), _us(2024, 6, 11, 10)]),
                   "channel": ["web", "app", "web", "app"]})  # fmt: skip
    t = A.category_piece((tx, None, None), pa.table({"customer_id": [1]}), pa.table({"segment": [0]}),
                         categories=["a"], as_of_us=as_of, horizon_days=7)  # fmt: skip
    # web and app 2 orders each, app the latest; Monday (3rd, 10th) and Tuesday (4th, 11th) 2 each, Tuesday latest
    assert t.column("channel").to_pylist() == ["app"] and t.column("channel_share").to_pylist() == [0.5]
    assert t.column("weekday").to_pylist() == ["Tuesday"] and t.column("hour").to_pylist() == [10]


def test_every_consenting_customer_gets_one_row_and_no_other_customer_does(synth):
    d, prof, _, summary = synth
    parts, info = _stage(synth)
    out = parts[0]
    consent = np.asarray([bool(v) if v is not None else False for v in prof.column("consent_marketing").to_pylist()])
    want = set(pc.filter(prof.column("customer_id"), pa.array(consent)).to_pylist())
    got = out.column("customer_id").to_pylist()
    assert len(got) == len(set(got)) and set(got) == want
    assert info["customers_with_actions"] == len(want)
    assert all(0 < n <= 3 for n in out.column("offers").to_pylist())
    p = out.column("propensity").to_pylist()
    assert all(a >= b for row in p for a, b in zip(row, row[1:]))  # best first
    assert all(0.0 < v < 1.0 for row in p for v in row)
    assert info["calibration"] and all(c["ece"] is not None for c in info["calibration"].values())
    assert json.loads(json.dumps(info)) == info  # plain data for run.json


def test_new_only_offers_only_categories_not_bought(synth):
    d, prof, asg, summary = synth
    parts, _ = _stage(synth, new_only=True, contact=None)
    out = parts[0]
    assert out.num_rows == prof.num_rows  # contact=None: everyone
    bought = {}
    for r in d.transactions.select(["customer_id", "category"]).to_pylist():
        bought.setdefault(r["customer_id"], set()).add(r["category"])
    for cid, cats in zip(out.column("customer_id").to_pylist(), out.column("category").to_pylist()):
        assert not set(cats) & bought.get(cid, set())


def test_expected_spend_is_propensity_times_the_shrunk_order_value(synth):
    d, prof, asg, summary = synth
    cats = summary["categories"]
    part = A.category_piece((d.transactions, None, None), prof, asg, categories=cats,
                            as_of_us=A._profile.parse_as_of(summary["as_of"]), horizon_days=30)  # fmt: skip
    stats = A.CategoryStats.of(part, n_segments=3, n_categories=len(cats))
    parts, _ = _stage(synth, contact=None, offers=1, shrink_orders=2.0)
    out = parts[0]
    o1, s1 = A._matrix(part, "orders1", len(cats)), A._matrix(part, "spend1", len(cats))
    cat_eov = stats.cat_spend / stats.cat_orders
    for i in range(0, out.num_rows, 97):
        c = cats.index(out.column("category")[i].as_py()[0])
        own = s1[i, c] / o1[i, c] if o1[i, c] else 0.0
        eov = (o1[i, c] * own + 2.0 * cat_eov[c]) / (o1[i, c] + 2.0)
        p = out.column("propensity")[i].as_py()[0]
        assert out.column("expected_spend")[i].as_py()[0] == pytest.approx(p * eov, rel=1e-5)


def test_a_category_without_buyers_in_training_is_skipped_with_the_reason(synth):
    parts, info = _stage(synth, categories=synth[3]["categories"] + ["no_such_category"])
    assert "no_such_category" in info["skipped"]
    assert "no buyers in the training window" in info["skipped"]["no_such_category"]
    assert "no_such_category" not in {c for row in parts[0].column("category").to_pylist() for c in row}


def test_short_history_and_long_horizon_are_clear_errors(synth):
    d, prof, asg, summary = synth  # about two years of data
    with pytest.raises(DataError, match="shorter than 2 x the horizon"):
        _stage(synth, horizon_days=400)
    with pytest.raises(DataError, match="longer than the data"):
        _stage(synth, horizon_days=900)
    with pytest.raises(ParameterError, match="horizon_days"):
        _stage(synth, horizon_days=0)


def test_no_category_column_skips_the_stage(synth):
    parts, info = _stage(synth, categories=[])
    assert parts is None and "no category" in info["skipped"]


def test_pieces_of_customers_give_the_same_offers_as_the_whole(synth):
    d, prof, asg, summary = synth
    whole, info_w = _stage(synth, contact=None)
    ids = prof.column("customer_id")
    odd = pc.equal(pc.bit_wise_and(ids, 1), 1)
    pieces, profs, asgs = [], [], []
    for m in (odd, pc.invert(odd)):
        keep = pc.is_in(d.transactions.column("customer_id"), value_set=ids.filter(m))
        pieces.append((d.transactions.filter(keep), None, None))
        profs.append(prof.filter(m))
        asgs.append(asg.filter(m))
    parts, info = A.actions_stage(LocalEngine(), pieces, profs, asgs, categories=summary["categories"],
                                  as_of=summary["as_of"], n_segments=3)  # fmt: skip
    got = pa.concat_tables(parts).sort_by("customer_id")
    want = whole[0].sort_by("customer_id")
    assert got.column("customer_id").equals(want.column("customer_id"))
    assert got.column("category").to_pylist() == want.column("category").to_pylist()
    np.testing.assert_allclose(np.concatenate([np.asarray(r) for r in got.column("propensity").to_pylist()]),
                               np.concatenate([np.asarray(r) for r in want.column("propensity").to_pylist()]),
                               rtol=1e-9)  # fmt: skip
    assert got.column("reason").to_pylist() == want.column("reason").to_pylist()
    assert info["categories_fitted"] == info_w["categories_fitted"]


def test_reasons_in_words():
    assert A.reason_of("toys", orders=1, days_since=35, gap_days=None, lift=1.0, recent_buyer_share=0.1,
                       horizon_days=30) == "bought toys once, 5 weeks ago"  # fmt: skip
    assert A.reason_of("toys", orders=0, days_since=None, gap_days=None, lift=1.2, recent_buyer_share=0.123,
                       horizon_days=30) == "popular: 12% of customers bought toys in the last 30 days"  # fmt: skip
    assert A.reason_of("toys", orders=3, days_since=200, gap_days=3, lift=9.0, recent_buyer_share=0.1,
                       horizon_days=30) == "buys toys every 3 days, last bought 7 months ago"  # fmt: skip


def _segment_of(pair):
    ids = pair[0].column("customer_id").to_numpy()
    return pa.table({"segment": pa.array(ids % 3)})


def test_the_same_offers_on_the_local_and_the_dask_engine():
    from segone.dask import DaskEngine

    d = generate(700, seed=6)
    out = {}
    for name, eng in (("local", LocalEngine()), ("dask", DaskEngine(npartitions=3))):
        pp, summary, _ = pipeline.profile_stage(eng, {"transactions": d.transactions, "events": None,
                                                      "attributes": d.customers}, piece=A.keep_piece)  # fmt: skip
        parts, info = A.actions_stage(eng, eng.map(pipeline._second, pp), eng.map(pipeline._first, pp),
                                      eng.map(_segment_of, pp), categories=summary["categories"],
                                      as_of=summary["as_of"], n_segments=3, contact="consent_marketing")  # fmt: skip
        out[name] = (pa.concat_tables(eng.gather(parts)).sort_by("customer_id"), info)
    (a, ia), (b, ib) = out["local"], out["dask"]
    assert a.column("customer_id").equals(b.column("customer_id"))
    assert a.column("category").to_pylist() == b.column("category").to_pylist()
    np.testing.assert_allclose(pc.list_flatten(a.column("propensity")).to_numpy(),
                               pc.list_flatten(b.column("propensity")).to_numpy(), rtol=1e-9)  # fmt: skip
    assert ia["categories_fitted"] == ib["categories_fitted"] and ia["skipped"] == ib["skipped"]


def test_backtest_offers_beat_popularity_on_synthetic_data():
    from segone.actions_backtest import backtest_actions

    d = generate(1500, seed=3)
    m, per_cat, info = backtest_actions(d.transactions, n_segments=4, peers=())
    rows = {r["predictor"]: r for r in m.to_pylist()}
    assert set(rows) == {"segone", "popularity", "segment_top"}
    assert rows["segone"]["hit_rate_at_k"] > rows["popularity"]["hit_rate_at_k"]
    assert rows["segone"]["mean_auc"] > 0.6 and rows["popularity"]["mean_auc"] == pytest.approx(0.5)
    assert per_cat.num_rows == 3 * len(info["categories"]) and info["customers_scored"] > 0


def test_vectorised_reasons_equal_the_reason_of_each_offer():
    rng = np.random.default_rng(8)
    n = 400
    cats = np.array(["toys", "garden", "books"], dtype=object)[rng.integers(0, 3, n)]
    orders = rng.integers(0, 4, n)
    days = rng.choice([0.2, 1.0, 1.4, 13.9, 14.0, 30.0, 69.9, 70.0, 400.0], n)
    gap = rng.uniform(0, 200, n)
    lift = rng.choice([0.3, 1.49, 1.5, 4.08, 12.96], n)
    share = rng.uniform(0, 1, n)
    got = A.reasons_of(cats, orders=orders, days_since=days, gap_days=gap, lift=lift, recent_buyer_share=share,
                       horizon_days=28)  # fmt: skip
    want = [A.reason_of(c, orders=int(o), days_since=d, gap_days=g, lift=float(li), recent_buyer_share=float(s),
                        horizon_days=28) for c, o, d, g, li, s in zip(cats, orders, days, gap, lift, share)]  # fmt: skip
    assert got == want


def test_the_privacy_plan_applies_its_consent_and_pseudonyms(synth):
    from segone.privacy import ConsentRule, PrivacyPlan, pseudonym_of

    d, prof, asg, summary = synth
    key = b"0123456789abcdef0123456789abcdef"
    plan = PrivacyPlan(rules=(ConsentRule.parse("consent_purposes=analytics"),), key=key)
    parts, _ = _stage(synth, contact="consent_marketing", plan=plan)
    rows = prof.select(["customer_id", "consent_marketing", "consent_purposes"]).to_pylist()
    want = {pseudonym_of(r["customer_id"], key) for r in rows
            if r["consent_marketing"] and r["consent_purposes"] and "analytics" in r["consent_purposes"]}  # fmt: skip
    got = parts[0].column("customer_id").to_pylist()
    assert want and set(got) == want and len(got) == len(want)


def test_the_customer_then_time_order_is_the_lexsort_on_adversarial_inputs():
    rng = np.random.default_rng(7)
    big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    cases = [(np.zeros(0, np.int64), np.zeros(0, np.int64)), (np.array([3]), np.array([7])),  # empty, one row
             (np.zeros(50, np.int64), np.zeros(50, np.int64)),  # one customer, one time: the rows as they are
             (np.array([1, 0, 1, 0, 1, 0]), np.array([-5, 3, -5, 2**62, -(2**62), 3])),  # negative, huge, ties
             (np.array([0, 0, 0]), np.array([big, small, 0])),  # the whole int64 range
             (np.array([70_000, 5, 70_000, 5]), np.array([1, 2, 1, 2]) + 10**15)]  # a customer past 2**16, offset
    for _ in range(30):
        n = int(rng.integers(2, 2000))
        pos = rng.integers(0, int(rng.integers(1, 300_000)), n)
        ts = rng.integers(0, 5000, n) + int(rng.integers(-(2**60), 2**60))  # a large offset, few distinct times
        ts[rng.random(n) < 0.3] = ts[0]  # duplicates
        cases.append((pos, ts))
    for pos, ts in cases:
        assert np.array_equal(A._order_by_customer_time(pos, ts), np.lexsort((ts, pos)))


def test_the_probability_and_log_likelihood_of_a_pass_equal_the_plain_formulas():
    from segone.propensity import _expit_and_log1pexp, expit

    rng = np.random.default_rng(3)
    eta = np.r_[rng.normal(scale=4, size=5000), rng.normal(scale=300, size=500), 0.0, -0.0, 36.0, -36.0, 745.0,
                -745.0, 1e308, -1e308, 1e-300, np.inf, -np.inf]  # fmt: skip
    p, log1pexp = _expit_and_log1pexp(eta)
    with np.errstate(over="ignore", invalid="ignore"):  # the branch np.where leaves out overflows
        plain = np.where(eta >= 0, 1.0 / (1.0 + np.exp(-eta)), np.exp(eta) / (1.0 + np.exp(eta)))
    assert np.array_equal(p, plain) and np.array_equal(expit(eta), p)
    np.testing.assert_array_max_ulp(log1pexp, np.logaddexp(0.0, eta), maxulp=2)
    assert np.isnan(_expit_and_log1pexp(np.array([np.nan]))[0]).all()
    assert float(expit(0.0)) == 0.5 and _expit_and_log1pexp(-2.0)[1] == np.logaddexp(0.0, -2.0)  # scalars too
