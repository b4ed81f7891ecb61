"""Incremental updates (segone.update): after any sequence of batches, the state equals a full profile-and-apply
of all data at the same as_of, bit for bit; re-applied batches, late rows, kills, locks and bad batches."""

import json
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import segone
from segone import update as up
from segone.errors import SegoneError
from segone.model import load_model

CUT = "2025-06-01"


@pytest.fixture(scope="module")
def data():
    return segone.synth.generate(300, seed=11)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    """A run on the rows before CUT (the state's starting point)."""
    d = data
    out = tmp_path_factory.mktemp("fit") / "fit"
    tx0 = d.transactions.filter(up._before(d.transactions, CUT))
    ev0 = d.events.filter(up._before(d.events, CUT))
    segone.run(tx0, out, 3, events=ev0, attributes=d.customers)
    return out, tx0, ev0


def _reference(state, tx, ev, at):
    """Profiles and segments of a full profile-and-apply of all rows at the state's as_of."""
    m = up._read_manifest(os.fspath(state))
    s = up._Settings(m["settings"])
    ref, _ = segone.profile.build_profiles_with_summary(
        tx, events=ev, attributes=at, as_of=np.datetime64(int(m["as_of_us"]), "us"), labels=s.labels,
        _partition=True, windows=s.windows, freq=s.freq,
    )  # fmt: skip
    ref = up._sorted(ref.replace_schema_metadata(None))
    return ref, load_model(os.path.join(state, "model")).apply(ref)


def _assert_equal_to_full(state, tx, ev, at):
    got = up.read_profiles(state)
    ref, asg = _reference(state, tx, ev, at)
    assert got.drop_columns(["segment"]).column_names == ref.column_names
    for name in ref.column_names:  # bit for bit: the same rows of every customer, in the same order
        assert got.column(name).equals(ref.column(name)), name
    assert got.column("segment").to_pylist() == asg.column("segment").to_pylist()


def _init(fitted, data, path, buckets=3):
    out, tx0, ev0 = fitted
    return up.init_state(path, out, tx0, events=ev0, attributes=data.customers, buckets=buckets)


def _late_rows(data):
    after = data.transactions.filter(up._before(data.transactions, CUT, after=True))
    ev_after = data.events.filter(up._before(data.events, CUT, after=True))
    return after, ev_after


def test_init_state_assigns_like_the_run(fitted, data, tmp_path):
    out, tx0, ev0 = fitted
    info = _init(fitted, data, tmp_path / "s")
    assert info["customers"] == data.customers.num_rows
    got = up.read_profiles(tmp_path / "s")
    run_asg = pa.parquet.read_table(out / "assignments.parquet").sort_by("customer_id")
    assert got.column("segment").to_pylist() == run_asg.column("segment").to_pylist()
    _assert_equal_to_full(tmp_path / "s", tx0, ev0, data.customers)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.floats(0, 1), min_size=0, max_size=3), empty_at=st.integers(0, 3),
       new_customers=st.booleans(), late=st.booleans(), buckets=st.integers(1, 4))  # fmt: skip
def test_any_split_into_batches_equals_a_full_run(fitted, data, tmp_path_factory, cuts, empty_at, new_customers, late,
                                                  buckets):  # fmt: skip
    out, tx0, ev0 = fitted
    path = tmp_path_factory.mktemp("s") / "state"
    tx_new, ev_new = _late_rows(data)
    if new_customers:  # customers the state has never seen: ids above every existing one
        extra = tx_new.slice(0, 40)
        ids = pc.add(extra.column("customer_id"), pa.scalar(10_000_000, pa.int64()))
        tx_new = pa.concat_tables([tx_new, extra.set_column(0, "customer_id", ids)])
    held = None
    if late:  # rows older than the state's watermark arriving in a later batch
        held = tx0.slice(0, 50)
        tx0 = tx0.slice(50)
    up.init_state(path, out, tx0, events=ev0, attributes=data.customers, buckets=buckets)
    bounds = sorted({int(c * tx_new.num_rows) for c in cuts} | {0, tx_new.num_rows})
    ebounds = sorted({int(c * ev_new.num_rows) for c in cuts} | {0, ev_new.num_rows})
    pieces = [(tx_new.slice(a, b - a), ev_new.slice(c, e - c)) for (a, b), (c, e) in
              zip(zip(bounds, bounds[1:]), zip(ebounds, ebounds[1:]))]  # fmt: skip
    pieces.insert(min(empty_at, len(pieces)), (tx_new.slice(0, 0), ev_new.slice(0, 0)))  # an empty batch
    if held is not None:
        pieces.insert(len(pieces) // 2, (held, ev_new.slice(0, 0)))
    arrived_tx, arrived_ev = [tx0], [ev0]
    for i, (t, e) in enumerate(pieces):
        res = up.update(path, t, events=e, batch_id=f"b{i}")
        if held is not None and t is held:
            assert res.info["late_rows"] == held.num_rows
        arrived_tx.append(t)
        arrived_ev.append(e)
        _assert_equal_to_full(path, pa.concat_tables(arrived_tx), pa.concat_tables(arrived_ev), data.customers)


def test_a_batch_applied_twice_changes_nothing(fitted, data, tmp_path):
    _init(fitted, data, tmp_path / "s")
    tx_new, ev_new = _late_rows(data)
    first = up.update(tmp_path / "s", tx_new.slice(0, 200), events=ev_new.slice(0, 100), out=tmp_path / "o1")
    before = json.load(open(tmp_path / "s" / "manifest.json"))
    again = up.update(tmp_path / "s", tx_new.slice(0, 200), events=ev_new.slice(0, 100), out=tmp_path / "o2")
    assert first.info["applied"] and not again.info["applied"]
    assert again.info["batch_id"] == first.info["batch_id"]  # the id is the content's hash
    assert json.load(open(tmp_path / "s" / "manifest.json")) == before
    assert pa.parquet.read_table(tmp_path / "o2" / "changelog.parquet").num_rows == 0  # the files, empty


def test_outputs_hold_the_changed_customers_and_the_moves(fitted, data, tmp_path):
    _init(fitted, data, tmp_path / "s")
    tx_new, ev_new = _late_rows(data)
    res = up.update(tmp_path / "s", tx_new, events=ev_new, out=tmp_path / "o")
    changes = pa.parquet.read_table(tmp_path / "o" / "assignments.parquet")
    log = pa.parquet.read_table(tmp_path / "o" / "changelog.parquet")
    assert set(tx_new.column("customer_id").to_pylist()) <= set(changes.column("customer_id").to_pylist())
    assert log.column_names == ["customer_id", "from_segment", "to_segment", "at"]
    assert log.num_rows == res.info["customers_moved"] > 0
    assert pc.all(pc.not_equal(log.column("from_segment"), log.column("to_segment"))).as_py()
    info = json.load(open(tmp_path / "o" / "run.json"))
    assert info["format"] == "segone-update" and "feature_psi" in info
    # the changed customers' personas, against the state's base and segments
    pers = pa.parquet.read_table(tmp_path / "o" / "personas.parquet")
    assert pers.column("customer_id").to_pylist() == changes.column("customer_id").to_pylist()
    assert pers.column("segment").to_pylist() == changes.column("segment").to_pylist()
    assert all(isinstance(x, str) and x for x in pers.column("summary").to_pylist())


def test_columns_the_profile_does_not_read_are_ignored_as_by_run(fitted, data, tmp_path):
    out, tx0, ev0 = fitted
    _init(fitted, data, tmp_path / "s")
    tx_new, _ = _late_rows(data)
    extra = tx_new.append_column("coupon", pa.array(["x"] * tx_new.num_rows))
    up.update(tmp_path / "s", extra)
    _assert_equal_to_full(tmp_path / "s", pa.concat_tables([tx0, tx_new]), ev0, data.customers)


def test_as_of_never_moves_back(fitted, data, tmp_path):
    _init(fitted, data, tmp_path / "s")
    tx_new, _ = _late_rows(data)
    with pytest.raises(SegoneError, match="only moves forward"):
        up.update(tmp_path / "s", tx_new.slice(0, 10), as_of="2020-01-01")


@pytest.mark.parametrize("change", ["missing category", "wrong type", "missing amount"])
def test_a_batch_with_another_schema_is_refused_and_nothing_is_applied(fitted, data, tmp_path, change):
    _init(fitted, data, tmp_path / "s")
    before = json.load(open(tmp_path / "s" / "manifest.json"))
    files = sorted(os.listdir(tmp_path / "s" / "data"))
    tx_new, _ = _late_rows(data)
    bad = tx_new.slice(0, 20)
    if change == "missing category":
        bad = bad.drop_columns(["category"])
    elif change == "wrong type":
        bad = bad.set_column(2, "amount", pa.array(["a lot"] * bad.num_rows))
    else:
        bad = bad.drop_columns(["amount"])
    with pytest.raises(SegoneError):
        up.update(tmp_path / "s", bad)
    assert json.load(open(tmp_path / "s" / "manifest.json")) == before
    assert sorted(os.listdir(tmp_path / "s" / "data")) == files


def test_a_kill_before_the_swap_leaves_the_previous_state_and_the_next_update_completes(fitted, data, tmp_path,
                                                                                         monkeypatch):  # fmt: skip
    out, tx0, ev0 = fitted
    _init(fitted, data, tmp_path / "s")
    before = json.load(open(tmp_path / "s" / "manifest.json"))
    tx_new, ev_new = _late_rows(data)

    def killed(obj, path):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(up, "_write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        up.update(tmp_path / "s", tx_new, events=ev_new)
    monkeypatch.undo()
    assert json.load(open(tmp_path / "s" / "manifest.json")) == before  # the previous state, whole
    _assert_equal_to_full(tmp_path / "s", tx0, ev0, data.customers)
    res = up.update(tmp_path / "s", tx_new, events=ev_new)
    assert res.info["orphans_removed"] > 0  # the killed update's files
    _assert_equal_to_full(tmp_path / "s", pa.concat_tables([tx0, tx_new]), pa.concat_tables([ev0, ev_new]),
                          data.customers)  # fmt: skip


def test_a_second_updater_is_refused(fitted, data, tmp_path):
    _init(fitted, data, tmp_path / "s")
    errors = []
    with up.Updater(tmp_path / "s"):
        def other():
            try:
                up.update(tmp_path / "s", _late_rows(data)[0].slice(0, 5))
            except SegoneError as exc:
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert len(errors) == 1 and "being written" in str(errors[0])


def test_updater_changes_and_flush_equal_the_full_run(fitted, data, tmp_path):
    out, tx0, ev0 = fitted
    _init(fitted, data, tmp_path / "s")
    tx_new, ev_new = _late_rows(data)
    n = tx_new.num_rows // 2
    with up.Updater(tmp_path / "s") as u:
        ch1 = u.update(tx_new.slice(0, n), events=ev_new.slice(0, 10))
        ch2 = u.update(tx_new.slice(n), events=ev_new.slice(10))
        assert u.update(tx_new.slice(n), events=ev_new.slice(10)) is None  # applied before
        # the customers a batch touched get the segment a full run at that batch's as_of gives
        as_of = u.as_of_us
        flushed = u.flush()
    assert flushed.info["as_of"] == up._iso(as_of)
    all_tx, all_ev = pa.concat_tables([tx0, tx_new]), pa.concat_tables([ev0, ev_new])
    _assert_equal_to_full(tmp_path / "s", all_tx, all_ev, data.customers)
    ref, asg = _reference(tmp_path / "s", all_tx, all_ev, data.customers)
    seg = dict(zip(asg.column("customer_id").to_pylist(), asg.column("segment").to_pylist()))
    assert all(seg[c] == s for c, s in zip(ch2.column("customer_id").to_pylist(), ch2.column("segment").to_pylist()))
    assert ch1.num_rows > 0 and set(tx_new.slice(n).column("customer_id").to_pylist()) <= set(
        ch2.column("customer_id").to_pylist())  # fmt: skip


def test_update_honours_the_models_privacy(data, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGONE_ID_KEY", "a test key of 16+ bytes")
    tx0 = data.transactions.filter(up._before(data.transactions, CUT))
    segone.run(tx0, tmp_path / "fit", 3, attributes=data.customers, consent="consent_marketing", hash_ids=True,
               value=False)  # fmt: skip
    up.init_state(tmp_path / "s", tmp_path / "fit", tx0, attributes=data.customers, buckets=2)
    tx_new, _ = _late_rows(data)
    up.update(tmp_path / "s", tx_new, out=tmp_path / "o")
    changes = pa.parquet.read_table(tmp_path / "o" / "assignments.parquet")
    raw = set(map(str, data.customers.column("customer_id").to_pylist()))
    got = changes.column("customer_id").to_pylist()
    assert got and not (set(map(str, got)) & raw)  # pseudonyms only
    consenting = data.customers.filter(pc.equal(data.customers.column("consent_marketing"), True)).num_rows
    touched = len(set(tx_new.column("customer_id").to_pylist()))
    assert len(got) < touched or consenting == data.customers.num_rows
    assert not set(changes.column_names) & {"name", "email", "phone", "birth_date"}


def test_bad_state_directories_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegoneError, match="manifest"):
        up.update(tmp_path / "empty", pa.table({"customer_id": [1], "ts": ["2024-01-01"], "amount": [1.0]}))
    with pytest.raises(SegoneError):
        up.update(tmp_path / "missing", pa.table({"customer_id": [1], "ts": ["2024-01-01"], "amount": [1.0]}))


@pytest.mark.slow
def test_dask_update_equals_one_process(fitted, data, tmp_path):
    import distributed

    from segone.dask import DaskEngine

    out, tx0, ev0 = fitted
    tx_new, ev_new = _late_rows(data)
    for name in ("local", "dask"):
        _init(fitted, data, tmp_path / name, buckets=3)
    local = up.update(tmp_path / "local", tx_new, events=ev_new, batch_id="n1")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as c, \
            distributed.Client(c) as client:  # fmt: skip
        dask = up.update(tmp_path / "dask", tx_new, events=ev_new, batch_id="n1", engine=DaskEngine(client))
    a, b = up.read_profiles(tmp_path / "local"), up.read_profiles(tmp_path / "dask")
    assert a.equals(b)
    assert local.info["customers_moved"] == dask.info["customers_moved"]
    assert local.changes.sort_by("customer_id").equals(dask.changes.sort_by("customer_id"))


def test_cli_run_with_state_then_update_and_refit(data, tmp_path):
    from click.testing import CliRunner

    from segone.cli import main

    tx = data.transactions
    pa.parquet.write_table(tx.filter(up._before(tx, CUT)), tmp_path / "old.parquet")
    pa.parquet.write_table(tx.filter(up._before(tx, CUT, after=True)), tmp_path / "new.parquet")
    r = CliRunner().invoke(main, ["run", str(tmp_path / "old.parquet"), "-o", str(tmp_path / "fit"), "-k", "3", "-q",
                                  "--state", str(tmp_path / "state")])  # fmt: skip
    assert r.exit_code == 0, r.output
    n_old = len(set(tx.filter(up._before(tx, CUT)).column("customer_id").to_pylist()))
    assert f"state: {n_old:,} customers" in r.output
    r = CliRunner().invoke(main, ["update", str(tmp_path / "state"), str(tmp_path / "new.parquet"), "--out",
                                  str(tmp_path / "n1"), "--refit-above", "0.1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "profiled again" in r.output and "refit: largest feature PSI" in r.output
    assert (tmp_path / "n1" / "refit" / "model").is_dir()
    # the rebuilt state remembers the batch: applying it again is a no-op
    r = CliRunner().invoke(main, ["update", str(tmp_path / "state"), str(tmp_path / "new.parquet")])
    assert r.exit_code == 0 and "applied before" in r.output
    _assert_equal_to_full(tmp_path / "state", pa.concat_tables([tx.filter(up._before(tx, CUT)),
                                                                tx.filter(up._before(tx, CUT, after=True))]), None, None)
    r = CliRunner().invoke(main, ["update", str(tmp_path / "nowhere"), str(tmp_path / "new.parquet")])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and r.output.startswith("error: ")


def test_apply_profiles_with_the_models_categories_whatever_the_inputs_top_ones(tmp_path):
    """A model records its category, channel and event labels; apply (and so update) profiles new data with
    them: a category of the model that is not among the new data's top ones is not read as 0."""
    rng = np.random.default_rng(0)
    n = 4000
    cats = [f"c{i:02d}" for i in range(25)]  # more than the 20 the profile keeps
    def table(weights, seed):
        r = np.random.default_rng(seed)
        cid = r.integers(0, 400, n)
        return pa.table({"customer_id": cid, "ts": pa.array(r.integers(1.6e15, 1.7e15, n), pa.timestamp("us", "UTC")),
                         "amount": r.gamma(2.0, 20.0, n), "category": r.choice(cats, n, p=weights)})
    w_a = np.linspace(2, 1, 25); w_a /= w_a.sum()   # c00.. most bought
    w_b = np.linspace(1, 2, 25); w_b /= w_b.sum()   # the other end most bought
    a, b = table(w_a, 1), table(w_b, 2)
    res = segone.run(a, tmp_path / "fit", 3, value=False)
    model = load_model(tmp_path / "fit" / "model")
    labels = model.settings["profile"]["labels"]
    assert labels["category"] == [c for c in labels["category"]] and len(labels["category"]) == 20
    ap = segone.model.apply_model(tmp_path / "fit", b, tmp_path / "apply")
    prof = segone.profile.build_profiles_with_summary(b, labels=labels)[0]
    want = model.apply(prof)
    assert ap.assignments.column("segment").to_pylist() == want.column("segment").to_pylist()
    assert ap.summary["features_filled_with_zero"] == []  # every model category was profiled
    del res, rng


def test_string_ids_and_an_attributes_batch(data, tmp_path):
    """Text customer ids; a batch of attribute rows replaces those customers' rows (and adds a new customer's)."""
    def text(t):
        return t.set_column(t.column_names.index("customer_id"), "customer_id",
                            pc.cast(t.column("customer_id"), pa.string()))  # fmt: skip

    tx, ev, at = text(data.transactions), text(data.events), text(data.customers.select(["customer_id", "region"]))
    tx0, ev0 = tx.filter(up._before(tx, CUT)), ev.filter(up._before(ev, CUT))
    segone.run(tx0, tmp_path / "fit", 3, events=ev0, attributes=at, value=False)
    up.init_state(tmp_path / "s", tmp_path / "fit", tx0, events=ev0, attributes=at, buckets=2)
    tx1 = tx.filter(up._before(tx, CUT, after=True))
    new_rows = pa.table({"customer_id": pa.array([at.column("customer_id")[0].as_py(), "newcomer"]),
                         "region": pa.array(["elsewhere", "north"])}).cast(at.schema)  # fmt: skip
    up.update(tmp_path / "s", tx1, attributes=new_rows)
    merged = pa.concat_tables([at.filter(pc.invert(pc.is_in(at.column("customer_id"),
                                                            value_set=new_rows.column("customer_id")))), new_rows])
    _assert_equal_to_full(tmp_path / "s", pa.concat_tables([tx0, tx1]), ev0, merged)
    got = up.read_profiles(tmp_path / "s")
    row = got.filter(pc.equal(got.column("customer_id"), "newcomer"))
    assert row.num_rows == 1 and row.column("region").to_pylist() == ["north"]


def test_share_other_is_exact_whatever_order_the_folded_categories_come_in(tmp_path):
    """More categories than the profile keeps: share_other sums the folded ones. A bucket sees them in another
    order than the whole input (here the batch lists them backwards): the sum is still the same bits."""
    r = np.random.default_rng(5)
    cats = np.array([f"c{i:02d}" for i in range(30)])
    n = 6000
    ids = r.integers(0, 300, n)
    ts = np.sort(r.integers(1.60e15, 1.70e15, n))
    cat = cats[r.integers(0, 30, n)]
    half = n // 2
    cat[half:] = cat[half:][::-1]  # the batch's first appearances in another order
    tx = pa.table({"customer_id": ids, "ts": pa.array(ts, pa.timestamp("us", "UTC")),
                   "amount": r.lognormal(3, 1, n), "category": cat})  # fmt: skip
    old, new = tx.slice(0, half), tx.slice(half)
    segone.run(old, tmp_path / "fit", 3, value=False)
    up.init_state(tmp_path / "s", tmp_path / "fit", old, buckets=3)
    up.update(tmp_path / "s", new)
    _assert_equal_to_full(tmp_path / "s", tx, None, None)
