import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segone import synth
from segone.errors import ParameterError


def test_generate_shapes_and_types():
    d = synth.generate(2000, seed=1)
    tx = d.transactions
    assert tx.schema.field("customer_id").type == pa.int64()
    assert pa.types.is_timestamp(tx.schema.field("ts").type)
    assert tx.schema.field("amount").type == pa.float64()
    assert pa.types.is_dictionary(tx.schema.field("category").type)
    assert set(d.customers.column_names) == {"customer_id", "region", "age_band", "signup_ts", "consent_marketing",
                                             *synth.PERSONAL_COLUMNS}  # fmt: skip
    plain = synth.generate(50, seed=1, personal_data=False)
    assert set(plain.customers.column_names) == {"customer_id", "region", "age_band", "signup_ts", "consent_marketing"}
    assert set(d.events.column_names) == {"customer_id", "ts", "event"}
    assert d.truth.num_rows == 2000 == d.customers.num_rows
    # every customer buys at least once; the mean is near tx_per_customer
    n_tx = np.bincount(tx.column("customer_id").to_numpy() - synth.ID_OFFSET)
    assert (n_tx >= 1).all()
    assert 15 < tx.num_rows / 2000 < 25
    assert (tx.column("amount").to_numpy() > 0).all()
    seg = d.truth.column("segment").to_numpy()
    assert set(np.unique(seg)) == set(range(len(synth.SEGMENTS)))


def test_reproducible_and_independent_of_files(tmp_path):
    a = synth.generate(70_000, seed=5, tx_per_customer=3)
    b = synth.generate(70_000, seed=5, tx_per_customer=3)
    assert a.transactions.equals(b.transactions)
    c = synth.generate(70_000, seed=6, tx_per_customer=3)
    assert not a.truth.equals(c.truth)
    m = synth.write_dataset(tmp_path / "ds", 70_000, seed=5, tx_per_customer=3, customers_per_file=1)
    files = sorted(os.listdir(tmp_path / "ds" / "transactions"))
    assert len(files) == 2  # two generator blocks, one file each
    t = pq.read_table(tmp_path / "ds" / "transactions")
    assert t.num_rows == a.transactions.num_rows == m["rows"]["transactions"]
    key = ["customer_id", "ts"]
    assert t.sort_by([(k, "ascending") for k in key]).equals(
        a.transactions.sort_by([(k, "ascending") for k in key])
    )
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["n_customers"] == 70_000


def test_write_refuses_existing_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "ds"
    synth.write_dataset(target, 100, seed=0)
    with pytest.raises(ParameterError, match="already exists"):
        synth.write_dataset(target, 100, seed=0)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_block", boom)
    with pytest.raises(RuntimeError):
        synth.write_dataset(tmp_path / "other", 100, seed=0)
    assert not (tmp_path / "other").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".segone")] == []


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_customers": 0}, "n_customers"), ({"seed": -1}, "seed"), ({"tx_per_customer": 0.5}, "tx_per_customer"),
     ({"end": 5}, "end")],
)  # fmt: skip
def test_parameter_errors(kwargs, match):
    args = {"n_customers": 10, **kwargs}
    with pytest.raises(ParameterError, match=match):
        synth.generate(**args)


def test_periods_first_period_is_generate_and_switch_share_is_exact():
    base = synth.generate(3000, seed=9, tx_per_customer=4)
    p0, p1, p2 = synth.generate_periods(3000, periods=3, switch_share=0.1, seed=9, tx_per_customer=4)
    for a, b in zip((base.transactions, base.events, base.customers, base.truth),
                    (p0.transactions, p0.events, p0.customers, p0.truth)):  # fmt: skip
        assert a.equals(b)
    s0, s1, s2 = (p.truth.column("segment").to_numpy() for p in (p0, p1, p2))
    assert (s0 != s1).mean() == pytest.approx(0.1, abs=1e-3) and (s1 != s2).mean() == pytest.approx(0.1, abs=1e-3)
    # stayers keep their history, shifted by period_days; switchers get a new one
    stay = int(p0.truth.column("customer_id").to_numpy()[np.flatnonzero(s0 == s1)[0]])
    moved = int(p0.truth.column("customer_id").to_numpy()[np.flatnonzero(s0 != s1)[0]])

    def rows(d, cid):
        t = d.transactions.filter(pa.compute.equal(d.transactions.column("customer_id"), cid)).sort_by("ts")
        return t.column("amount").to_pylist(), t.column("ts").cast(pa.int64()).to_numpy()

    (a0, t0), (a1, t1) = rows(p0, stay), rows(p1, stay)
    assert a0 == a1 and (t1 - t0 == 90 * 86_400 * 10**6).all()
    assert rows(p0, moved)[0] != rows(p1, moved)[0]
    # the same arguments give the same periods
    again = synth.generate_periods(3000, periods=3, switch_share=0.1, seed=9, tx_per_customer=4)
    assert again[2].transactions.equals(p2.transactions) and again[2].truth.equals(p2.truth)


def test_periods_churn_new_customers_and_redraw(tmp_path):
    p0, p1 = synth.generate_periods(2000, periods=2, switch_share=0.2, churn_share=0.1, new_share=0.05, seed=2,
                                    tx_per_customer=3, redraw=True)  # fmt: skip
    ids0, ids1 = (set(p.truth.column("customer_id").to_pylist()) for p in (p0, p1))
    assert len(ids0 - ids1) == 200 and len(ids1 - ids0) == 100 and min(ids1 - ids0) > max(ids0)
    for t in (p1.transactions, p1.events, p1.customers):
        assert set(t.column("customer_id").to_pylist()) <= ids1
    assert set(p1.customers.column("customer_id").to_pylist()) == ids1
    common = p0.truth.join(p1.truth, "customer_id", right_suffix="_1", join_type="inner")
    sw = (common.column("segment").to_numpy() != common.column("segment_1").to_numpy()).mean()
    assert sw == pytest.approx(0.2, abs=1e-3)
    m = synth.write_periods(tmp_path / "p", 500, periods=2, seed=1, tx_per_customer=3)
    assert [x["period"] for x in m] == [0, 1]
    for p in range(2):
        assert sorted(os.listdir(tmp_path / "p" / f"period-{p}")) == ["customers", "events", "manifest.json",
                                                                      "transactions", "truth"]  # fmt: skip
    with pytest.raises(ParameterError, match="already exists"):
        synth.write_periods(tmp_path / "p", 500)


@pytest.mark.parametrize("kwargs, match", [({"periods": 0}, "periods"), ({"switch_share": 1.5}, "switch_share"),
                                           ({"churn_share": -0.1}, "churn_share"), ({"period_days": -1}, "period_days"),
                                           ({"drift_share": 1.5}, "drift_share")])  # fmt: skip
def test_periods_parameter_errors(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        synth.generate_periods(10, **kwargs)


def _codes(tx):
    return tx.column("category").combine_chunks().indices.to_numpy().astype(np.int64)


def _us(col):
    return col.cast(pa.int64()).to_numpy()


def test_periods_drift_moves_the_orders_after_the_drift_and_writes_the_truth(tmp_path):
    kw = dict(periods=3, switch_share=0.1, seed=4, tx_per_customer=8)
    plain = synth.generate_periods(3000, **kw)
    drifted = synth.generate_periods(3000, drift_share=0.3, **kw)
    assert plain[0].drift is None and drifted[0].drift is None
    for a, b in zip(plain, drifted):  # only the category of some rows changes
        assert a.transactions.drop(["category"]).equals(b.transactions.drop(["category"]))
        assert a.truth.equals(b.truth) and a.customers.equals(b.customers) and a.events.equals(b.events)
    assert drifted[0].transactions.equals(plain[0].transactions)
    cats = list(synth.CATEGORIES)
    for p in (1, 2):
        tx, d = drifted[p].transactions, drifted[p].drift
        assert 0 < d.num_rows and d.column("customer_id").to_pylist() == sorted(d.column("customer_id").to_pylist())
        assert set(d.column("drift_period").to_pylist()) <= set(range(1, p + 1))
        # drift_ts: the first day of the period the drift began in, on the data's own clock
        starts = {int(v): int(synth.DEFAULT_END.timestamp() * 1e6) + (int(v) - 1) * 90 * 86_400 * 10**6
                  for v in d.column("drift_period").to_pylist()}  # fmt: skip
        periods = d.column("drift_period").to_pylist()
        assert all(_us(d.column("drift_ts"))[i] == starts[v] for i, v in enumerate(periods))
        info = {r["customer_id"]: r for r in d.to_pylist()}
        cid, ts = tx.column("customer_id").to_numpy(), _us(tx.column("ts"))
        new, old = _codes(tx), _codes(plain[p].transactions)
        changed = new != old
        # exactly the drifters' orders in from_category after drift_ts moved, to to_category
        ids = d.column("customer_id").to_numpy()
        at = np.minimum(np.searchsorted(ids, cid), ids.size - 1)
        on = ids[at] == cid
        frm = np.where(on, np.array([cats.index(c) for c in d.column("from_category").to_pylist()])[at], -1)
        to = np.where(on, np.array([cats.index(c) for c in d.column("to_category").to_pylist()])[at], -1)
        t_d = np.where(on, _us(d.column("drift_ts"))[at], 0)
        expect = (frm >= 0) & (old == frm) & (ts > t_d)
        assert (changed == expect).all() and (new[changed] == to[changed]).all()
        assert ((new == frm) & (ts > t_d) & (frm >= 0)).sum() == 0  # nothing left in from_category after the drift
        moved = np.bincount(np.searchsorted(d.column("customer_id").to_numpy(), cid[changed]), minlength=d.num_rows)
        assert moved.tolist() == d.column("drifted_orders").to_pylist()
        assert d.column("drifted_orders").to_numpy().sum() > 0
        before = (ts <= t_d) & (frm >= 0)
        assert ((new == to) & before).sum() == 0  # to_category: never bought before the drift
        for c in [c for c, r in info.items() if r["drift_period"] == p][:50]:
            # from_category: the category of most orders before the drift (ties: the first), in its period's data
            m = (cid == c) & (ts <= t_d)
            assert cats.index(info[c]["from_category"]) == int(np.argmax(np.bincount(old[m], minlength=len(cats))))
    # the drift goes on in later periods, except for customers who switched segment (a new history)
    d1, d2 = (drifted[p].drift.to_pylist() for p in (1, 2))
    s1, s2 = ({r["customer_id"]: r["segment"] for r in drifted[p].truth.to_pylist()} for p in (1, 2))
    still = {r["customer_id"] for r in d2 if r["drift_period"] == 1}
    assert still == {r["customer_id"] for r in d1 if s1[r["customer_id"]] == s2[r["customer_id"]]}
    assert any(r["drift_period"] == 2 for r in d2)
    # written out per period
    m = synth.write_periods(tmp_path / "p", 800, periods=2, seed=1, tx_per_customer=6, drift_share=0.2)
    t = pq.read_table(tmp_path / "p" / "period-1" / "drift.parquet")
    assert m[1]["rows"]["drift"] == t.num_rows > 0 and "drift" not in m[0]["rows"]
    assert not os.path.exists(tmp_path / "p" / "period-0" / "drift.parquet")


def test_cli_synth_drift(tmp_path):
    from click.testing import CliRunner

    from segone.cli import main

    r = CliRunner().invoke(main, ["synth", str(tmp_path / "d"), "-n", "500", "--periods", "2", "--drift", "0.2",
                                  "--tx-per-customer", "5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "d" / "period-1" / "drift.parquet").num_rows > 0
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "e"), "-n", "500", "--drift", "0.2"])
    assert r.exit_code == 2 and "--periods 2" in r.output


def test_drift_recovery_counts_visible_drifters_with_an_actions_row():
    import datetime as dt

    tx = pa.table({"customer_id": [1, 2, 3, 4, 4], "amount": [1.0, 1.0, 1.0, 1.0, -1.0],
                   "ts": [dt.datetime(2026, 1, 1)] * 4 + [dt.datetime(2026, 1, 2)],
                   "category": ["grocery", "grocery", "toys", "toys", "books"]})  # fmt: skip
    act = pa.table({"customer_id": [1, 2, 3], "category": [["toys", "books"], ["grocery"], []]})
    drift = pa.table({"customer_id": [1, 2, 3, 4, 5], "to_category": ["toys", "books", "grocery", "toys", "toys"],
                      "drifted_orders": [2, 1, 1, 1, 0]})  # fmt: skip
    r = synth.drift_recovery(act, drift, tx)
    # customer 4: no actions row; 5: nothing in the data shows the drift; popularity: grocery and toys (2 buyers each)
    assert (r["drifted"], r["without_actions"], r["offers_found"], r["popularity_found"]) == (3, 1, 1, 2)
    assert r["popular_categories"] == ["grocery", "toys"] and r["offers"] == 2
    assert synth.drift_recovery(act, drift, tx, min_orders=2)["drifted"] == 1
    with pytest.raises(ParameterError, match="to_category"):
        synth.drift_recovery(act, drift.drop(["to_category"]), tx)
