"""The stage protocol: for every state, the merge of the states of the pieces equals the state of the whole.

Pieces come from random cut points (hypothesis), including empty pieces, and
every state survives ``to_dict`` -> JSON -> ``from_dict``.
"""

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import segone
from segone import profile as P
from segone._state import State, merge_all
from segone.describe import SegmentStats
from segone.errors import ModelFormatError, ParameterError
from segone.score import ScorerState
from segone.segment import PartialSums
from segone.synth import generate


@pytest.fixture(scope="module")
def data():
    return generate(1500, seed=11)


@pytest.fixture(scope="module")
def profiles(data):
    return segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)


def _cuts(n, draw_cuts):
    """Sorted cut points in [0, n] (repeats make empty pieces)."""
    return [0] + sorted(min(c, n) for c in draw_cuts) + [n]


def _pieces(table_or_array, cuts):
    out = []
    for a, b in zip(cuts, cuts[1:]):
        out.append(table_or_array.slice(a, b - a) if isinstance(table_or_array, pa.Table) else table_or_array[a:b])
    return out


def _roundtrip(state):
    again = type(state).from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    return again


cut_lists = st.lists(st.integers(0, 1600), min_size=0, max_size=5)


@given(cut_lists)
def test_partial_sums_merge_equals_whole(cuts):
    rng = np.random.default_rng(len(cuts))
    X = rng.normal(size=(1000, 5)).astype(np.float32)
    C = X[:7].copy()
    whole = PartialSums.of(X, C, n_threads=1)
    parts = [_roundtrip(PartialSums.of(p, C, n_threads=1)) for p in _pieces(X, _cuts(1000, cuts))]
    merged = merge_all(parts, split_every=2)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12, atol=1e-9)
    assert merged.inertia == pytest.approx(whole.inertia, rel=1e-12)


@given(cut_lists)
def test_segment_stats_merge_equals_whole(profiles, cuts):
    n = profiles.num_rows
    labels = np.arange(n) % 4
    labels[::17] = -1  # unassigned rows count in n only
    whole = SegmentStats.of(profiles, labels, 4)
    c = _cuts(n, cuts)
    parts = [SegmentStats.of(t, lab, 4, columns=whole.columns) for t, lab in zip(_pieces(profiles, c), _pieces(labels, c))]
    merged = _roundtrip(merge_all([_roundtrip(p) for p in parts], split_every=3))
    assert merged.n == whole.n and (merged.size == whole.size).all() and (merged.counts == whole.counts).all()
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-12)
    a, b = merged.finish(), whole.finish()
    assert a.column("label").equals(b.column("label")) and a.column("size").equals(b.column("size"))
    for name in a.column_names:
        if name.startswith("mean_"):
            np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"scaling": "quantile", "clip_quantiles": (0.01, 0.99)}, {"scaling": "robust"}])
@given(cuts=cut_lists)
def test_scorer_state_merge_equals_whole(profiles, kw, cuts):
    sc = segone.FeatureScorer(**kw)
    whole = ScorerState.of(profiles, sc)
    parts = [_roundtrip(ScorerState.of(p, sc)) for p in _pieces(profiles, _cuts(profiles.num_rows, cuts))]
    merged = merge_all(parts)
    assert [s.to_dict() if s else None for s in merged.sketches] == [s.to_dict() if s else None for s in whole.sketches]
    np.testing.assert_array_equal(merged.moments.count, whole.moments.count)
    np.testing.assert_allclose(merged.moments.mean, whole.moments.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(merged.moments.m2, whole.moments.m2, rtol=1e-9, atol=1e-9)
    a, b = segone.FeatureScorer(**kw).fit_state(merged), segone.FeatureScorer(**kw).fit_state(whole)
    np.testing.assert_allclose(a.transform(profiles), b.transform(profiles), rtol=1e-5, atol=1e-6)


@given(cut_lists)
def test_scan_state_merge_gives_the_labels_of_one_pass(data, cuts):
    tx = data.transactions
    c = _cuts(tx.num_rows, [x * 40 for x in cuts])
    parts = [_roundtrip(P.ScanState.of(p, "transactions")) for p in _pieces(tx, c)]
    merged = merge_all(parts, split_every=2)
    one = P.ScanState.of(tx, "transactions")
    for f in ("max_ts", "aware", "has_category", "channels", "events"):
        assert getattr(merged, f) == getattr(one, f), f
    assert list(merged.cat_spend) == list(one.cat_spend)  # first-appearance order
    np.testing.assert_allclose(list(merged.cat_spend.values()), list(one.cat_spend.values()), rtol=1e-12)
    assert len(merged.id_ranges) == len(parts)
    labels, as_of_us = P.global_labels({"transactions": merged}, top_categories=5)
    _, summary = P.build_profiles_with_summary(tx, top_categories=5)
    assert summary["categories"] == labels["category"]
    assert as_of_us == pa.compute.max(tx.column("ts")).cast(pa.int64()).as_py()


@given(st.integers(1, 6), st.integers(0, 10**6))
def test_profile_pieces_add_up_to_the_whole(n_pieces, salt):
    """Customer-disjoint pieces profiled with the global labels: tables and summaries add up."""
    d = generate(600, seed=salt % 7)
    tx, ev, at = d.transactions, d.events, d.customers
    scans = {r: P.ScanState.of(t, r) for r, t in (("transactions", tx), ("events", ev), ("attributes", at))}
    labels, as_of_us = P.global_labels(scans)
    whole, whole_summary = P.build_profiles_with_summary(tx, events=ev, attributes=at)
    piece_of = lambda t: (t.column("customer_id").to_numpy() * 2654435761 + salt) % n_pieces  # noqa: E731
    tables, states = [], []
    for i in range(n_pieces):
        sel = [t.filter(pa.array(piece_of(t) == i)) for t in (tx, ev, at)]
        table, state = P.profile_piece(*sel, labels=labels, as_of_us=as_of_us)
        tables.append(table)
        states.append(_roundtrip(state))
    got = pa.concat_tables(tables).sort_by("customer_id")
    assert got.column_names == whole.column_names
    for name in whole.column_names:
        assert got.column(name).equals(whole.column(name)), name
    summary = merge_all(states).finish()
    for key in ("rows_read", "dropped", "excluded_after_as_of", "returns", "customers", "customers_without_purchase",
                "as_of", "categories"):  # fmt: skip
        assert summary[key] == whole_summary[key], key


def test_merge_is_associative_and_checks_its_inputs(profiles):
    labels = np.arange(profiles.num_rows) % 3
    a, b, c = (SegmentStats.of(p, lab, 3, columns=["orders"]) for p, lab in
               zip(_pieces(profiles, [0, 100, 700, profiles.num_rows]), _pieces(labels, [0, 100, 700, profiles.num_rows])))  # fmt: skip
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    with pytest.raises(ParameterError, match="different k"):
        a.merge(SegmentStats(4, ["orders"]))
    with pytest.raises(ParameterError, match="cannot merge"):
        a.merge(PartialSums.empty(3, 2))
    with pytest.raises(ModelFormatError, match="expected a 'partial_sums' state"):
        PartialSums.from_dict(a.to_dict())
    with pytest.raises(ModelFormatError, match="version"):
        PartialSums.from_dict({**PartialSums.empty(1, 1).to_dict(), "version": 99})
    with pytest.raises(ParameterError, match="nothing to merge"):
        merge_all([])
    assert issubclass(SegmentStats, State)
