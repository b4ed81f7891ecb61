"""migration.parquet's CLV that moved: ``clv`` and ``clv_before`` per (from, to) cell.

A hand-computed example (both join paths: integer ids, shuffled, and string ids), nulls when a run has no CLV,
suppression of small cells, and the same table from ``run --previous`` and ``track OLD NEW``.
"""

import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import segone
from segone import outputs
from segone.privacy import suppress_migration
from segone.track import Contingency, compare_outputs, migration_table, moves_and_contingency

# previous run: customer -> (segment, clv); customer 5 has no CLV before
PREV = {1: (0, 10.0), 2: (0, 20.0), 3: (0, 5.0), 4: (1, 30.0), 5: (1, None), 6: (1, 40.0)}
# new run: 6 is gone, 7 is new
NEW = {1: (0, 11.0), 2: (1, 25.0), 3: (1, 7.0), 4: (1, 33.0), 5: (0, 50.0), 7: (1, 8.0)}
# (from, to) -> (status, customers, clv, clv_before), by hand from the two dicts above
EXPECTED = {
    (0, 0): ("stayed", 1, 11.0, 10.0),  # customer 1
    (0, 1): ("moved", 2, 32.0, 25.0),  # customers 2 and 3: 25 + 7 now, 20 + 5 before
    (1, 0): ("moved", 1, 50.0, None),  # customer 5: no CLV before, so null (not 0)
    (1, 1): ("stayed", 1, 33.0, 30.0),  # customer 4
    (1, None): ("gone", 1, 40.0, 40.0),  # customer 6: the previous run's CLV on both sides
    (None, 1): ("new", 1, 8.0, None),  # customer 7: nothing before
}


def _table(d, order, kind=pa.int64(), clv=True):
    ids = list(order)
    cols = {"customer_id": pa.array(ids if kind == pa.int64() else [f"c{i}" for i in ids], kind),
            "segment": pa.array([d[i][0] for i in ids], pa.int32())}  # fmt: skip
    if clv:
        cols["clv"] = pa.array([d[i][1] for i in ids], pa.float64())
    return pa.table(cols)


def _cells(migration):
    return {(r["from_segment"], r["to_segment"]): (r["status"], r["customers"], r["clv"], r["clv_before"])
            for r in migration.to_pylist()}  # fmt: skip


@pytest.mark.parametrize("kind, shuffle", [(pa.int64(), False), (pa.int64(), True), (pa.string(), True)])
def test_hand_example_sums_each_cell(kind, shuffle):
    order_p, order_n = sorted(PREV), sorted(NEW)
    if shuffle:  # unsorted ids: the compiled merge reads the rows through a sort order
        order_p, order_n = [4, 1, 6, 2, 5, 3], [7, 3, 1, 5, 2, 4]
    moves, cont = moves_and_contingency(_table(PREV, order_p, kind), _table(NEW, order_n, kind), clv="clv")
    t = migration_table(cont)
    assert t.column_names == list(outputs.MIGRATION_COLUMNS)
    assert t.schema.field("clv").type == pa.float64() and t.schema.field("clv_before").type == pa.float64()
    assert _cells(t) == EXPECTED  # exact: these sums are exact in float64
    # the moves carry each customer's values, and their contingency gives the same table
    by_id = {r["customer_id"]: (r["clv"], r["clv_before"]) for r in moves.to_pylist()}
    key = (lambda i: i) if kind == pa.int64() else (lambda i: f"c{i}")
    assert by_id[key(5)] == (50.0, None) and by_id[key(6)] == (40.0, 40.0) and by_id[key(7)] == (8.0, None)
    assert migration_table(Contingency.of(moves)).equals(t)
    # the state survives to_dict / from_dict and a merge of two halves
    halves = Contingency.of(moves.slice(0, 3)).merge(Contingency.of(moves.slice(3)))
    assert migration_table(Contingency.from_dict(halves.to_dict())).equals(t)


def test_null_where_a_run_has_no_clv():
    def cells(prev_clv, new_clv):
        _, cont = moves_and_contingency(_table(PREV, sorted(PREV), clv=prev_clv), _table(NEW, sorted(NEW), clv=new_clv),
                                        clv="clv")  # fmt: skip
        return {k: v[2:] for k, v in _cells(migration_table(cont)).items()}

    # the new run without CLV: every cell of customers present now is null; the gone keep the previous CLV
    assert cells(True, False) == {(0, 0): (None, 10.0), (0, 1): (None, 25.0), (1, 0): (None, None),
                                  (1, 1): (None, 30.0), (1, None): (40.0, 40.0), (None, 1): (None, None)}  # fmt: skip
    # the previous run without CLV: nothing before, and the gone have none
    assert cells(False, True) == {(0, 0): (11.0, None), (0, 1): (32.0, None), (1, 0): (50.0, None),
                                  (1, 1): (33.0, None), (1, None): (None, None), (None, 1): (8.0, None)}  # fmt: skip
    # neither: the columns are there (the schema is fixed), all null, never 0 or NaN
    _, cont = moves_and_contingency(_table(PREV, sorted(PREV), clv=False), _table(NEW, sorted(NEW), clv=False),
                                    clv="clv")  # fmt: skip
    t = migration_table(cont)
    assert t.column("clv").null_count == t.column("clv_before").null_count == t.num_rows == 6
    # an all-null clv column (the value model skipped the spend model) is the same as none
    allnull = _table(NEW, sorted(NEW)).set_column(2, "clv", pa.nulls(len(NEW), pa.float64()))
    _, cont = moves_and_contingency(_table(PREV, sorted(PREV)), allnull, clv="clv")
    assert {k: v[2:] for k, v in _cells(migration_table(cont)).items()} == cells(True, False)


def test_small_cells_suppress_their_clv():
    _, cont = moves_and_contingency(_table(PREV, sorted(PREV)), _table(NEW, sorted(NEW)), clv="clv")
    t, report = suppress_migration(migration_table(cont), 2)
    assert report["cells"] > 0
    for r in t.to_pylist():
        if r["suppressed"]:
            assert r["customers"] is None and r["clv"] is None and r["clv_before"] is None, r
        else:
            assert (r["clv"], r["clv_before"]) == EXPECTED[(r["from_segment"], r["to_segment"])][2:]
    # the lone cell of 2 customers (0 -> 1) goes with the small ones of its row: nothing of the example survives k=2
    assert all(t.column("suppressed").to_pylist())


# ------------------------------------------------------------------ the two paths: run --previous and track
def _transactions(ids, seed, days=365):
    """BG/NBD-like purchases with gamma-shaped order values (so that both value models fit)."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    cid, ts, amount = [], [], []
    for c in ids:
        t, lam, p, m = rng.uniform(0, days * 0.8), rng.gamma(2.0, 1 / 40), rng.beta(1, 5), rng.gamma(6, 8)
        while t < days:
            cid.append(int(c))
            ts.append(start + dt.timedelta(days=float(t)))
            amount.append(float(np.round(rng.gamma(8, m / 8), 2)))
            if rng.random() < p:
                break
            t += rng.exponential(1 / lam)
    return pa.table({"customer_id": cid, "ts": pa.array(ts, pa.timestamp("us")), "amount": amount})


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two periods (customers 0..19 gone, 300..319 new) and the previous output, with CLV."""
    tmp = tmp_path_factory.mktemp("migclv")
    a, b = _transactions(range(300), 0), _transactions(range(20, 320), 1)
    old = str(tmp / "old")
    segone.run(a, old, 3)
    assert pq.read_table(os.path.join(old, outputs.ASSIGNMENTS)).column("clv").null_count == 0  # the test's premise
    return tmp, a, b, old


def _by_hand(old, new):
    """The migration's (from, to) -> (customers, clv, clv_before) summed from the two runs' assignments."""
    a = {r["customer_id"]: r for r in pq.read_table(os.path.join(old, outputs.ASSIGNMENTS)).to_pylist()}
    b = {r["customer_id"]: r for r in pq.read_table(os.path.join(new, outputs.ASSIGNMENTS)).to_pylist()}
    cells = {}
    for c in a.keys() | b.keys():
        was, now = a.get(c), b.get(c)
        key = (was and was["segment"], now and now["segment"])
        value = (now or was).get("clv")  # the new run's CLV, the previous run's for the gone
        before = was.get("clv") if was else None
        n, s, sb = cells.get(key, (0, None, None))
        cells[key] = (n + 1, s if value is None else (s or 0.0) + value, sb if before is None else (sb or 0.0) + before)
    return cells


def _check_against_hand(migration, old, new):
    hand = _by_hand(old, new)
    got = {(r["from_segment"], r["to_segment"]): r for r in migration.to_pylist()}
    assert got.keys() == hand.keys()
    for key, (n, s, sb) in hand.items():
        r = got[key]
        assert r["customers"] == n, key
        for name, want in (("clv", s), ("clv_before", sb)):
            assert (r[name] is None) == (want is None), (key, name)
            if want is not None:
                assert r[name] == pytest.approx(want, rel=1e-12), (key, name)


def test_run_previous_and_track_give_the_same_clv(two_runs):
    tmp, _, b, old = two_runs
    new = str(tmp / "new")
    segone.run(b, new, 3, previous=old)
    ran = pq.read_table(os.path.join(new, outputs.MIGRATION))
    assert ran.column_names == list(outputs.MIGRATION_COLUMNS)
    new_rows = ran.column("from_segment").is_null()
    assert ran.column("clv").null_count == 0 and ran.column("clv_before").is_null().equals(new_rows)  # nothing before
    _check_against_hand(ran, old, new)
    tracked = pq.read_table(os.path.join(compare_outputs(old, new, str(tmp / "cmp")).out, outputs.MIGRATION))
    for name in ("from_segment", "to_segment", "status", "customers", "share", "spend", "clv", "clv_before"):
        assert tracked.column(name).equals(ran.column(name)), name
    gone = ran.filter(ran.column("to_segment").is_null())
    assert gone.num_rows and all(v > 0 for v in gone.column("spend").to_pylist())  # the previous run's spend


def test_run_without_value_has_null_clv_but_the_gone_keep_theirs(two_runs):
    tmp, _, b, old = two_runs
    new = str(tmp / "novalue")
    segone.run(b, new, 3, previous=old, value=False)
    t = pq.read_table(os.path.join(new, outputs.MIGRATION))
    gone = np.asarray(t.column("to_segment").is_null())
    assert t.column("clv").is_null().to_pylist() == (~gone).tolist()  # null exactly where the customers are here now
    _check_against_hand(t, old, new)
    tracked = pq.read_table(os.path.join(compare_outputs(old, new, str(tmp / "cmp-novalue")).out, outputs.MIGRATION))
    for name in ("customers", "clv", "clv_before"):
        assert tracked.column(name).equals(t.column(name)), name


def test_run_previous_suppresses_the_clv_of_small_cells(two_runs):
    tmp, _, b, old = two_runs
    new = str(tmp / "private")
    segone.run(b, new, 3, previous=old, min_segment_size=15)
    t = pq.read_table(os.path.join(new, outputs.MIGRATION))
    hidden = np.asarray(t.column("suppressed"))
    assert hidden.any() and not hidden.all()
    for name in ("customers", "share", "spend", "clv", "clv_before"):
        assert t.column(name).filter(pa.array(hidden)).null_count == int(hidden.sum()), name
    assert t.column("clv").filter(pa.array(~hidden)).null_count == 0


def test_report_shows_the_clv_that_moved(two_runs):
    from segone.report import read_outputs

    tmp, _, b, old = two_runs
    new = str(tmp / "report")
    segone.run(b, new, 3, previous=old)
    want = {(r["from_segment"], r["to_segment"]): (r["clv"], r["clv_before"])
            for r in pq.read_table(os.path.join(new, outputs.MIGRATION)).to_pylist()}  # fmt: skip
    got = {(m["from"], m["to"]): (m["clv"], m["clv_before"]) for m in read_outputs(new).migration}
    assert got == want
    pytest.importorskip("altair")
    from segone.report import _charts

    spec = _charts.migration_chart(read_outputs(new), {})  # a Vega-Lite spec (dict)
    assert "Their CLV now" in str(spec) and "Their CLV before" in str(spec)


def test_dask_engine_gives_the_same_clv(two_runs):
    pytest.importorskip("dask")
    from segone.dask import DaskEngine

    tmp, _, b, old = two_runs
    local, parts = str(tmp / "local"), str(tmp / "dask")
    segone.run(b, local, 3, previous=old)
    segone.run(b, parts, 3, previous=old, engine=DaskEngine(npartitions=3))  # threaded scheduler: three buckets
    a, d = (pq.read_table(os.path.join(o, outputs.MIGRATION)) for o in (local, parts))
    for name in ("from_segment", "to_segment", "status", "customers"):
        assert d.column(name).equals(a.column(name)), name
    for name in ("clv", "clv_before"):  # summed per bucket, then merged: equal up to float64 rounding
        assert d.column(name).is_null().equals(a.column(name).is_null()), name
        np.testing.assert_allclose(d.column(name).to_numpy(zero_copy_only=False),
                                   a.column(name).to_numpy(zero_copy_only=False), rtol=1e-12)  # fmt: skip
    _check_against_hand(d, old, parts)
