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
                                           ({"churn_share": -0.1}, "churn_share"), ({"period_days": -1}, "period_days")])
def test_periods_parameter_errors(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        synth.generate_periods(10, **kwargs)
