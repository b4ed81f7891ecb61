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
    assert set(d.customers.column_names) == {"customer_id", "region", "age_band", "signup_ts", "consent_marketing"}
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
