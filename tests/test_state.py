"""The stage protocol: for every state, the merge of the states of the pieces equals the state of the whole.

Pieces come from random cut points (hypothesis), including empty pieces, and
every state survives ``to_dict`` -> JSON -> ``from_dict``.  Every State
subclass of the segone package has such a test here: each test names the
classes it covers with ``@covers``, and :func:`test_every_state_class_has_a_merge_test`
fails for a State that no test covers.
"""

import importlib
import inspect
import json
import pkgutil

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segone
from segone import profile as P
from segone import actions as ACT
from segone import backtesting as B
from segone import effects as E
from segone import value_segments as VS
from segone._state import State, merge_all
from segone.clv import MonetaryHistogram, OpportunityHistogram, PatternHistogram, SegmentTotals, ValueState
from segone.describe import PersonaModel, PersonaState, RFMGrid, SegmentStats
from segone.errors import ModelFormatError, ParameterError
from segone.propensity import CalibrationState, NewtonState, ScalerState
from segone.privacy import PrivacyCounts, drop_personal_columns, personal_columns
from segone.score import ScorerState
from segone.segment import PartialSums
from segone.tuning import SweepRound, SweepStats, stats_piece, sums_piece
from segone.synth import generate
from segone.track import Contingency, FeatureHistogram, feature_psi, moves_piece

#: "module.Class" of every State subclass that a merge test of this file covers (see :func:`covers`)
COVERED = set()


def covers(*classes):
    """Mark a test as the merge test of ``classes`` (recorded in :data:`COVERED`)."""

    def mark(test):
        COVERED.update(f"{c.__module__}.{c.__qualname__}" for c in classes)
        return test

    return mark


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
splits = st.integers(2, 9)  # the width of merge_all's tree


def _merge(parts, split_every):
    """merge_all of the round-tripped ``parts``; checks that merging changed none of them; round-trips the result."""
    parts = [_roundtrip(p) for p in parts]
    before = [p.to_dict() for p in parts]
    merged = merge_all(parts, split_every=split_every)
    assert [p.to_dict() for p in parts] == before, "merge changed one of its input states"
    return _roundtrip(merged)


@covers(PartialSums)
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


@pytest.fixture(scope="module")
def segment_stats_whole(profiles):
    """(labels, SegmentStats of all the profiles): built once, the same for every drawn example."""
    labels = np.arange(profiles.num_rows) % 4
    labels[::17] = -1  # unassigned rows count in n only
    return labels, SegmentStats.of(profiles, labels, 4)


@covers(SegmentStats)
@given(cut_lists)
def test_segment_stats_merge_equals_whole(profiles, segment_stats_whole, cuts):
    n = profiles.num_rows
    labels, whole = segment_stats_whole
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


@covers(ScorerState)
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


@covers(P.ScanState)
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


@covers(P.ProfileSummary)
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


# -- PREDICT: the customer-value histograms ------------------------------------------------------------------
@pytest.fixture(scope="module")
def value_profiles(profiles):
    """The profiles with T null for every 13th customer (a customer without a purchase: skipped and counted)."""
    none = np.arange(profiles.num_rows) % 13 == 5
    t_age = pa.array(np.where(none, 0.0, profiles.column("T").to_numpy()), mask=none)
    return profiles.set_column(profiles.column_names.index("T"), "T", t_age)


@pytest.fixture(scope="module")
def value_whole(value_profiles):
    """ValueState of all the profiles and its finish (BG/NBD and Gamma-Gamma both fitted)."""
    state = ValueState.of(value_profiles)
    bg, gg, info = state.finish(max_mean_ratio=10.0)
    assert bg is not None and gg is not None, info
    return state, (bg, gg, info)


@covers(PatternHistogram)
@given(cuts=cut_lists, split_every=splits)
def test_pattern_histogram_merge_equals_whole(value_profiles, cuts, split_every):
    t = value_profiles
    whole = PatternHistogram.of(t)
    merged = _merge([PatternHistogram.of(p) for p in _pieces(t, _cuts(t.num_rows, cuts))], split_every)
    assert merged == whole  # exact: the distinct (frequency, recency, T) as read, int64 counts
    for a, b in zip(merged.finish(), whole.finish()):
        np.testing.assert_array_equal(a, b)
    assert merged.n_without_purchase == whole.n_without_purchase == t.column("T").null_count > 0
    assert merged.n_customers == t.num_rows - t.column("T").null_count


@pytest.fixture(scope="module")
def opportunities():
    """Discrete-time (frequency, recency, n_periods) of 1500 customers, many ties."""
    rng = np.random.default_rng(7)
    n = rng.integers(1, 8, 1500).astype(float)
    tx = np.floor(rng.random(1500) * (n + 1))
    x = np.where(tx > 0, np.ceil(rng.random(1500) * tx), 0.0)
    return x, tx, n


@covers(OpportunityHistogram)
@given(cuts=cut_lists, split_every=splits)
def test_opportunity_histogram_merge_equals_whole(opportunities, cuts, split_every):
    x, tx, n = opportunities
    whole = OpportunityHistogram.of(x, tx, n)
    c = _cuts(x.size, cuts)
    merged = _merge([OpportunityHistogram.of(a, b, m) for a, b, m in zip(_pieces(x, c), _pieces(tx, c), _pieces(n, c))],
                    split_every)  # fmt: skip
    assert merged == whole
    for a, b in zip(merged.finish(), whole.finish()):
        np.testing.assert_array_equal(a, b)
    assert merged.n_customers == x.size


@covers(MonetaryHistogram)
@given(cuts=cut_lists, split_every=splits)
def test_monetary_histogram_merge_equals_whole(profiles, cuts, split_every):
    t = profiles.select(["frequency", "monetary_value"])  # as ValueState.of reads it
    whole = MonetaryHistogram.of(t)
    merged = _merge([MonetaryHistogram.of(p) for p in _pieces(t, _cuts(t.num_rows, cuts))], split_every)
    assert merged == whole
    for a, b in zip(merged.finish(), whole.finish()):
        np.testing.assert_array_equal(a, b)
    assert merged.n_zero_frequency == whole.n_zero_frequency > 0
    assert merged.n_customers + merged.n_zero_frequency + merged.n_nonpositive_monetary == t.num_rows


@covers(ValueState)
@given(cuts=cut_lists, split_every=splits)
def test_value_state_merge_equals_whole_and_fits_the_same_models(value_profiles, value_whole, cuts, split_every):
    t = value_profiles
    whole, (bg, gg, info) = value_whole
    merged = _merge([ValueState.of(p) for p in _pieces(t, _cuts(t.num_rows, cuts))], split_every)
    assert merged == whole
    bg2, gg2, info2 = merged.finish(max_mean_ratio=10.0)
    for m2, m in ((bg2, bg), (gg2, gg)):  # the same fitted parameters, bit for bit
        assert type(m2) is type(m) and m2.penalizer == m.penalizer and m2.params_ == m.params_
    assert info2 == info  # parameters, standard errors, log-likelihoods, customers, rows without a purchase
    assert info["skipped"]["rows_without_purchase"] == t.column("T").null_count


@covers(SegmentTotals)
@given(cuts=cut_lists, split_every=splits)
@settings(max_examples=15)
def test_segment_totals_merge_equals_whole(value_profiles, value_whole, cuts, split_every):
    t = value_profiles
    _, (bg, gg, _) = value_whole
    seg = np.arange(t.num_rows) % 4 - 1  # -1: no segment
    c = _cuts(t.num_rows, cuts)
    kw = dict(k=3, beta_geo=bg, gamma_gamma=gg, horizon_months=6)
    merged = _merge([SegmentTotals.of(p, seg[a:b], **kw) for p, a, b in zip(_pieces(t, c), c, c[1:])], split_every)
    whole = SegmentTotals.of(t, seg, **kw)
    np.testing.assert_array_equal(merged.customers, whole.customers)
    np.testing.assert_allclose(merged.sums[..., 0], whole.sums[..., 0], rtol=1e-12)
    np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-7, atol=1e-6)  # derivatives: step-1e-5 differences
    a, b = merged.finish(bg, gg), whole.finish(bg, gg)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, err_msg=k)


# -- DESCRIBE: personas and the RFM grid -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def persona_profiles(data, profiles):
    """Profiles as the pipeline's PERSONA stage sees them: the personal attribute columns dropped."""
    return drop_personal_columns(profiles, personal_columns(data.customers))


@pytest.fixture(scope="module")
def persona_whole(persona_profiles):
    """PersonaState of all the profiles and the personas (with RFM scores) of its fitted model."""
    state = PersonaState.of(persona_profiles, PersonaModel(n_threads=1))
    model = PersonaModel(n_threads=1).fit_state(state)
    return state, model.personas(persona_profiles, rfm=True)


@covers(PersonaState)
@settings(max_examples=15)  # ~0.25 s an example: 55 columns sketched per piece, then personas of 1500 customers
@given(cuts=cut_lists, split_every=splits)
def test_persona_state_merge_equals_whole_and_gives_the_same_personas(persona_profiles, persona_whole, cuts,
                                                                      split_every):  # fmt: skip
    t = persona_profiles
    whole, personas = persona_whole
    model = PersonaModel(n_threads=1)
    merged = _merge([PersonaState.of(p, model) for p in _pieces(t, _cuts(t.num_rows, cuts))], split_every)
    assert merged.n == whole.n == t.num_rows
    assert merged.to_dict()["categories"] == whole.to_dict()["categories"]  # counts, in first-appearance order
    a, b = merged.scorer, whole.scorer
    assert a.features == b.features
    assert [s.to_dict() for s in a.sketches] == [s.to_dict() for s in b.sketches]  # exact: integer buckets
    np.testing.assert_array_equal(a.moments.count, b.moments.count)
    np.testing.assert_array_equal(a.moments.max, b.moments.max)
    # the moments merge by Chan's pairwise update (not a plain sum): the same bounds as the scorer's test
    np.testing.assert_allclose(a.moments.mean, b.moments.mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.moments.m2, b.moments.m2, rtol=1e-9, atol=1e-9)
    got = model.fit_state(merged).personas(t, rfm=True)
    assert got.equals(personas)


@pytest.fixture(scope="module")
def rfm_scores(persona_profiles, persona_whole):
    """(r_score / f_score table, spend per row) as the pipeline gives RFMGrid.of (its _rfm_grid)."""
    _, personas = persona_whole
    return personas.select(["r_score", "f_score"]), persona_profiles.column("spend_total").to_numpy()


@covers(RFMGrid)
@pytest.mark.parametrize("empty_pieces", [False, True])  # True: the first piece is empty (its spend grid was int64)
@given(cuts=cut_lists, split_every=splits)
def test_rfm_grid_merge_equals_whole(rfm_scores, empty_pieces, cuts, split_every):
    rfm, spend = rfm_scores
    whole = RFMGrid.of(rfm, spend)
    c = _cuts(rfm.num_rows, cuts)
    # empty_pieces: the first piece is always empty; else no piece is empty
    c = [0] + c if empty_pieces else sorted(set(c))
    merged = _merge([RFMGrid.of(t, s) for t, s in zip(_pieces(rfm, c), _pieces(spend, c))], split_every)
    assert merged.bins == whole.bins == 5
    np.testing.assert_array_equal(merged.customers, whole.customers)
    assert whole.customers.sum() == rfm.num_rows
    # spend is positive, so a sum in any order is within (n - 1) * eps (< 1e-12 for 1500 rows) of the whole's
    np.testing.assert_allclose(merged.spend, whole.spend, rtol=1e-12)
    a, b = merged.finish(), whole.finish()
    assert a.column_names == b.column_names
    for name in ("r_score", "f_score", "customers"):
        assert a.column(name).equals(b.column(name)), name
    np.testing.assert_allclose(a.column("spend").to_numpy(), b.column("spend").to_numpy(), rtol=1e-12)


# -- EXPORT: consent counts ------------------------------------------------------------------------------------------
@covers(PrivacyCounts)
@given(cuts=cut_lists, split_every=splits, scope=st.sampled_from(["export", "processing"]), default=st.booleans())
def test_privacy_counts_merge_equals_whole(profiles, cuts, split_every, scope, default):
    rules = ["consent_marketing", "consent_purposes=analytics"]
    whole = PrivacyCounts.of(profiles, rules=rules, default=default, scope=scope)
    parts = [PrivacyCounts.of(p, rules=rules, default=default, scope=scope)
             for p in _pieces(profiles, _cuts(profiles.num_rows, cuts))]  # fmt: skip
    merged = _merge(parts, split_every)
    assert merged == whole
    got = merged.finish()
    assert got == whole.finish()
    assert got["customers"] == profiles.num_rows == got["consented"] + got["refused"] + got["unknown"]
    assert got["refused"] > 0 and got["unknown"] > 0
    assert got["dropped"] == (got["excluded"] if scope == "processing" else 0)


# -- SEGMENT: the sweep over k ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep_data():
    """(X, centroid sets for k = 3 and 6, their member means, shift) as sweep_parts passes them to its rounds."""
    rng = np.random.default_rng(5)
    X = (rng.normal(size=(1000, 5)) + 4.0 * (np.arange(1000) % 3)[:, None]).astype(np.float32)
    centers = [X[:3].copy(), X[3:9].copy()]
    means = []
    for C in centers:
        ps = PartialSums.of(X, C, n_threads=1)
        mu = C.astype(np.float64)
        nz = ps.counts > 0
        mu[nz] = ps.sums[nz] / ps.counts[nz, None]
        means.append(mu)
    return X, centers, means, X.mean(0, dtype=np.float64)


def _assert_sweep_stats_close(a, b, X, shift):
    """SweepStats ``a`` equals ``b`` up to the float64 rounding of sums taken in another order."""
    assert type(a) is SweepStats and type(b) is SweepStats
    np.testing.assert_array_equal(a.shift, b.shift)
    assert (a.means is None) == (b.means is None)
    if a.means is not None:
        np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.counts, b.counts)  # whole numbers in float64: exact
    # sums of x - shift have both signs: a sum of n terms in any order is within (n - 1) * eps * sum |terms|
    # of the whole's, and (n - 1) * eps < 1e-12 for the 1000 rows here
    np.testing.assert_allclose(a.sums, b.sums, rtol=0, atol=1e-12 * np.abs(X - shift).sum())
    np.testing.assert_allclose(a.sumsq, b.sumsq, rtol=1e-12)  # positive terms
    if a.dist is not None:
        np.testing.assert_allclose(a.dist, b.dist, rtol=1e-12)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-12)
    fa, fb = a.finish(), b.finish()
    assert fa["n"] == fb["n"] == X.shape[0] and fa["k"] == fb["k"]
    np.testing.assert_array_equal(fa["counts"], fb["counts"])
    # within = sumsq - |sums|^2 / count cancels: its rounding grows by sumsq / within (small for these segments)
    for key in ("inertia", "within", "between", "calinski_harabasz", "davies_bouldin"):
        assert fa[key] == pytest.approx(fb[key], rel=1e-10, nan_ok=True), key


@covers(SweepStats)
@given(cuts=cut_lists, split_every=splits, with_means=st.booleans())
def test_sweep_stats_merge_equals_whole(sweep_data, cuts, split_every, with_means):
    X, centers, means, shift = sweep_data
    C, M = centers[1], (means[1] if with_means else None)
    whole = SweepStats.of(X, C, means=M, shift=shift, n_threads=1)
    parts = [SweepStats.of(p, C, means=M, shift=shift, n_threads=1) for p in _pieces(X, _cuts(X.shape[0], cuts))]
    _assert_sweep_stats_close(_merge(parts, split_every), whole, X, shift)
    assert np.isfinite(whole.finish()["davies_bouldin"]) == with_means


@covers(SweepRound)
@given(cuts=cut_lists, split_every=splits)
def test_sweep_rounds_merge_equal_the_whole(sweep_data, cuts, split_every):
    X, centers, means, shift = sweep_data
    pieces = _pieces(X, _cuts(X.shape[0], cuts))
    # round 1: the PartialSums of every k
    whole = sums_piece(X, centers=centers, n_threads=1)
    merged = _merge([sums_piece(p, centers=centers, n_threads=1) for p in pieces], split_every)
    assert len(merged.finish()) == len(whole.finish()) == len(centers)
    for a, b in zip(merged.finish(), whole.finish()):
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_allclose(a.sums, b.sums, rtol=0, atol=1e-12 * np.abs(X).sum())
        assert a.inertia == pytest.approx(b.inertia, rel=1e-12)
    # round 2: the SweepStats of every k
    kw = dict(centers=centers, means=means, shift=shift, n_threads=1)
    whole = stats_piece(X, **kw)
    merged = _merge([stats_piece(p, **kw) for p in pieces], split_every)
    assert len(merged.finish()) == len(whole.finish()) == len(centers)
    for a, b in zip(merged.finish(), whole.finish()):
        _assert_sweep_stats_close(a, b, X, shift)


# -- TRACK: migration and feature drift ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moves(profiles):
    """A moves table of two runs over the profiles' customers (some only in one run), with spend."""
    ids = profiles.column("customer_id").to_numpy()
    spend = profiles.column("spend_total").to_numpy()
    was, now = ids % 7 != 3, ids % 5 != 1
    # CLV in both runs, some customers without one (null): their cells count only the customers with a CLV
    clv = np.round(np.where(ids % 11 == 0, np.nan, spend * 1.5), 2)
    clv_was = np.round(np.where(ids % 13 == 0, np.nan, spend * 0.75), 2)
    prev = pa.table({"customer_id": ids[was], "segment": (ids[was] % 4).astype(np.int32), "spend": spend[was],
                     "clv": pa.array(clv_was[was], mask=np.isnan(clv_was[was]))})  # fmt: skip
    new = pa.table({"customer_id": ids[now], "segment": ((ids[now] // 7) % 5).astype(np.int32), "spend": spend[now],
                    "clv": pa.array(clv[now], mask=np.isnan(clv[now]))})  # fmt: skip
    return moves_piece(prev, new, spend="spend", clv="clv")


@covers(Contingency)
@given(cuts=cut_lists, split_every=splits)
def test_contingency_merge_equals_whole_and_gives_the_same_migration(moves, cuts, split_every):
    whole = Contingency.of(moves)
    merged = _merge([Contingency.of(p) for p in _pieces(moves, _cuts(moves.num_rows, cuts))], split_every)
    np.testing.assert_array_equal(merged.prev_ids, whole.prev_ids)
    np.testing.assert_array_equal(merged.new_ids, whole.new_ids)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_allclose(merged.spend, whole.spend, rtol=1e-12)  # positive spend: (n - 1) * eps
    # the CLV counts merge exactly, the sums up to float64 rounding
    for name in ("clv_n", "clv_before_n"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
    for name in ("clv", "clv_before"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12)
    assert merged.figures() == whole.figures()  # customers, shares, stability, ARI, PSI: from the counts
    c = whole.customers()
    assert c["new"] > 0 and c["gone"] > 0 and c["moved"] > 0 and c["previous"] + c["new"] == moves.num_rows
    assert 0 < whole.clv_n.sum() < moves.num_rows and 0 < whole.clv_before_n.sum() < c["previous"]
    a, b = merged.finish(), whole.finish()
    assert a.column_names == b.column_names
    assert b.column("clv").null_count == 0 and b.column("clv_before").null_count > 0  # the new customers' row
    for name in a.column_names:
        if name not in ("spend", "clv", "clv_before"):
            assert a.column(name).equals(b.column(name)), name
    for name in ("spend", "clv", "clv_before"):
        assert a.column(name).is_null().equals(b.column(name).is_null()), name
        np.testing.assert_allclose(a.column(name).to_numpy(zero_copy_only=False),
                                   b.column(name).to_numpy(zero_copy_only=False), rtol=1e-12)  # fmt: skip
    assert Contingency.from_dict(merged.to_dict()) == merged  # the CLV sums travel as plain data


@pytest.fixture(scope="module")
def drift_features(profiles):
    """The scorer's features (what the pipeline bins), one with nulls and one these profiles lack."""
    return segone.FeatureScorer().fit(profiles).feature_names_out_ + ["days_since_cart", "share_not_in_these_profiles"]


@covers(FeatureHistogram)
@given(cuts=cut_lists, split_every=splits)
def test_feature_histogram_merge_equals_whole(profiles, drift_features, cuts, split_every):
    whole = FeatureHistogram.of(profiles, features=drift_features)
    parts = [FeatureHistogram.of(p, features=drift_features) for p in _pieces(profiles, _cuts(profiles.num_rows, cuts))]
    merged = _merge(parts, split_every)
    assert merged == whole  # exact: fixed buckets, integer counts, missing counts
    assert merged.finish() == whole.finish()
    assert merged.count() == profiles.num_rows
    assert whole.missing[drift_features.index("days_since_cart")] == profiles.column("days_since_cart").null_count > 0
    assert set(feature_psi(whole, merged.finish()).values()) == {0.0}


# -- merge refuses what it cannot combine ---------------------------------------------------------------------------
def _persona_state(columns):
    return PersonaState.of(pa.table({c: [1.0, 2.0, 3.0] for c in columns}), PersonaModel(n_threads=1))


def _feature_histogram(features, **kw):
    return FeatureHistogram.of(pa.table({"x": [1.0, 2.0], "y": [3.0, 4.0]}), features=features, **kw)


REFUSALS = {
    "PatternHistogram-other-class": lambda: (PatternHistogram.empty(), MonetaryHistogram.empty(), "cannot merge a"),
    "MonetaryHistogram-other-class": lambda: (MonetaryHistogram.empty(), PatternHistogram.empty(), "cannot merge a"),
    "OpportunityHistogram-other-class": lambda: (OpportunityHistogram.empty(), PatternHistogram.empty(),
                                                 "cannot merge a"),
    "ValueState-other-class": lambda: (ValueState(PatternHistogram.empty(), MonetaryHistogram.empty()),
                                       PatternHistogram.empty(), "cannot merge a"),
    "PersonaState-other-class": lambda: (_persona_state(["x"]), PrivacyCounts(), "cannot merge a"),
    "PersonaState-other-features": lambda: (_persona_state(["x"]), _persona_state(["y"]), "different feature lists"),
    "RFMGrid-other-class": lambda: (RFMGrid(), PrivacyCounts(), "cannot merge a"),
    "RFMGrid-other-bins": lambda: (RFMGrid(), RFMGrid(bins=4), "different bins"),
    "PrivacyCounts-other-class": lambda: (PrivacyCounts(), RFMGrid(), "cannot merge a"),
    "SweepStats-other-class": lambda: (SweepStats.empty(2, 3), PartialSums.empty(2, 3), "cannot merge a"),
    "SweepStats-other-shift": lambda: (SweepStats.empty(2, 3), SweepStats.empty(2, 3, shift=np.ones(3)),
                                       "different shift"),
    "SweepStats-other-k": lambda: (SweepStats.empty(2, 3), SweepStats.empty(4, 3), "shapes"),
    "SweepStats-other-d": lambda: (SweepStats.empty(2, 3), SweepStats.empty(2, 4), "different shift"),
    "SweepStats-other-means": lambda: (SweepStats.empty(2, 3, means=np.zeros((2, 3))), SweepStats.empty(2, 3),
                                       "reference means"),
    "SweepRound-other-class": lambda: (SweepRound([PartialSums.empty(2, 3)]), PartialSums.empty(2, 3),
                                       "different numbers of k"),
    "SweepRound-other-number-of-k": lambda: (SweepRound([PartialSums.empty(2, 3)]),
                                             SweepRound([PartialSums.empty(2, 3)] * 2), "different numbers of k"),
    "SweepRound-other-round": lambda: (SweepRound([PartialSums.empty(2, 3)]), SweepRound([SweepStats.empty(2, 3)]),
                                       "cannot merge a"),
    "Contingency-other-class": lambda: (Contingency.empty(), RFMGrid(), "cannot merge a"),
    "FeatureHistogram-other-class": lambda: (_feature_histogram(["x"]), Contingency.empty(), "cannot merge a"),
    "FeatureHistogram-other-features": lambda: (_feature_histogram(["x"]), _feature_histogram(["y"]),
                                                "different features"),
    "FeatureHistogram-other-alpha": lambda: (_feature_histogram(["x"]), _feature_histogram(["x"], alpha=0.02),
                                             "different alpha"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_merge_refuses_another_class_or_shape(case):
    a, b, match = REFUSALS[case]()
    before = (a.to_dict(), b.to_dict())
    with pytest.raises(ParameterError, match=match):
        a.merge(b)
    assert (a.to_dict(), b.to_dict()) == before


# -- every State has its test ----------------------------------------------------------------------------------------
def _segone_state_classes():
    """"module.Class" of every State subclass defined in the segone package (every module imported first)."""
    import segone.kernels

    for pkg in (segone, segone.kernels):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)
    found, todo = set(), [State]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__ == "segone" or sub.__module__.startswith("segone."):
                assert inspect.getmodule(sub).__name__ == sub.__module__
                found.add(f"{sub.__module__}.{sub.__qualname__}")
    return found


# -- the backtest's states ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def backtest_predictions():
    """A table of holdout figures and two predictors' forecasts, as segone.backtesting's prediction pieces are."""
    rng = np.random.default_rng(5)
    n = 900
    act = rng.poisson(1.0, n).astype(float)
    return pa.table({"actual_purchases": act, "actual_spend": act * rng.gamma(2, 30, n),
                     "m:purchases": rng.gamma(1, 1.2, n), "m:spend": rng.gamma(2, 28, n), "m:p_alive": rng.random(n),
                     "naive:purchases": rng.poisson(1.2, n).astype(float), "naive:spend": rng.gamma(2, 28, n),
                     "segment": rng.integers(0, 4, n)})  # fmt: skip


@covers(B.SketchState, B.BacktestState, B.SegmentNaive)
@given(cut_lists, splits)
@settings(max_examples=25, deadline=None)
def test_backtest_states_merge_equal_whole(backtest_predictions, cuts, split_every):
    t = backtest_predictions
    names = ["m", "naive"]
    pieces = _pieces(t, _cuts(t.num_rows, cuts))
    sk = _merge([B.SketchState.of(p, names=names) for p in pieces], split_every)
    assert sk == B.SketchState.of(t, names=names)
    merged = _merge([B.BacktestState.of(p, names=names, sketches=sk) for p in pieces], split_every)
    whole = B.BacktestState.of(t, names=names, sketches=sk)
    for f in B.BacktestState._FIELDS:  # co-moments merge by Chan's formula: equal to rounding
        np.testing.assert_allclose(getattr(merged, f), getattr(whole, f), rtol=1e-9, atol=1e-8, err_msg=f)
    seg = _merge([B.SegmentNaive.of(p, k=4) for p in pieces], split_every)
    np.testing.assert_allclose(seg.sums, B.SegmentNaive.of(t, k=4).sums, rtol=1e-12)


@covers(B.TimeRange)
@given(cut_lists, splits)
@settings(max_examples=25, deadline=None)
def test_time_range_merge_equals_whole(data, cuts, split_every):
    tx = data.transactions
    merged = _merge([B.TimeRange.of(p) for p in _pieces(tx, _cuts(tx.num_rows, cuts))], split_every)
    assert merged == B.TimeRange.of(tx)


@covers(E.EffectState)
@given(cut_lists, splits)
@settings(max_examples=20, deadline=None)
def test_effect_state_merge_equals_whole(cuts, split_every):
    rng = np.random.default_rng(8)
    n = 1200
    ids = np.arange(n, dtype=np.int64) * 7 + 3
    prev = rng.integers(0, 3, n)
    new = np.where(rng.random(n) < 0.8, prev, rng.integers(0, 3, n))
    moves = pa.table({"customer_id": ids, "previous_segment": prev, "segment": new,
                      "status": np.where(prev == new, "stayed", "moved")})  # fmt: skip
    treat = E.read_treatment(pa.table({"customer_id": ids[::2], "group": np.where(rng.random(600) < .5, "treatment",
                                                                                   "control")}))  # fmt: skip
    camps, groups, _ = E.plan_groups(treat)
    vals = pa.table({"customer_id": ids, "spend_change": rng.normal(0, 5, n), "clv_change": rng.normal(0, 9, n)})
    rows = E.effect_rows(moves, treatment=treat, campaigns=camps, groups=groups, segments=[0, 1, 2], values=vals)
    ctx = {"campaigns": camps, "groups": groups, "segments": [0, 1, 2], "n_boot": 25, "seed": 1}
    merged = _merge([E.EffectState.of(p, **ctx) for p in _pieces(rows, _cuts(rows.num_rows, cuts))], split_every)
    whole = E.EffectState.of(rows, **ctx)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    for f in ("boot", "values", "boot_values"):
        np.testing.assert_allclose(getattr(merged, f), getattr(whole, f), rtol=1e-12, atol=1e-9, err_msg=f)


@covers(VS.SegmentValueState)
@given(cut_lists, splits)
@settings(max_examples=15, deadline=None)
def test_segment_value_state_merge_equals_whole(value_profiles, cuts, split_every):
    t = value_profiles
    seg = np.arange(t.num_rows) % 3
    c = _cuts(t.num_rows, cuts)
    merged = _merge([VS.SegmentValueState.of(p, seg[a:b], k=3) for p, a, b in zip(_pieces(t, c), c, c[1:])],
                    split_every)  # fmt: skip
    assert merged == VS.SegmentValueState.of(t, seg, k=3)


# -- the propensity fit's states ------------------------------------------------------------------------------
@covers(ScalerState, NewtonState, CalibrationState)
@given(cut_lists, splits)
@settings(max_examples=25, deadline=None)
def test_propensity_states_merge_equal_whole(cuts, split_every):
    rng = np.random.default_rng(9)
    n = 1600
    X = rng.normal(size=(n, 3)) * [1.0, 50.0, 0.01] + [0.0, 1e3, 0.0]
    y = (rng.random(n) < 0.3).astype(float)
    g = rng.integers(0, 2, n)

    def blocks(a, b):
        return [(k, X[a:b][g[a:b] == k], y[a:b][g[a:b] == k]) for k in range(2)]

    c = _cuts(n, cuts)
    sc = _merge([ScalerState.of(blocks(a, b), n_groups=2, n_features=3) for a, b in zip(c, c[1:])], split_every)
    whole = ScalerState.of(blocks(0, n), n_groups=2, n_features=3)
    for f in ("n", "mean", "m2"):
        np.testing.assert_allclose(getattr(sc, f), getattr(whole, f), rtol=1e-9, atol=1e-9, err_msg=f)
    mean, scale = whole.finish()
    beta = rng.normal(size=(2, 4)) * 0.3
    nt = _merge([NewtonState.of(blocks(a, b), beta=beta, mean=mean, scale=scale) for a, b in zip(c, c[1:])],
                split_every)  # fmt: skip
    nw = NewtonState.of(blocks(0, n), beta=beta, mean=mean, scale=scale)
    for f in NewtonState._FIELDS:
        np.testing.assert_allclose(getattr(nt, f), getattr(nw, f), rtol=1e-9, atol=1e-8, err_msg=f)
    p = rng.random(n)
    cal = _merge([CalibrationState.of([(k, p[a:b][g[a:b] == k], y[a:b][g[a:b] == k]) for k in range(2)], n_groups=2)
                  for a, b in zip(c, c[1:])], split_every)  # fmt: skip
    cw = CalibrationState.of([(k, p[g == k], y[g == k]) for k in range(2)], n_groups=2)
    np.testing.assert_allclose(cal.sums, cw.sums, rtol=1e-12, atol=1e-9)


@pytest.fixture(scope="module")
def action_parts(data, profiles):
    """The category_piece table of every customer (three segments), for the actions' states."""
    seg = pa.table({"segment": (np.arange(profiles.num_rows) % 4 - 1).astype(np.int64)})  # -1: no segment
    cats = ["apparel", "toys", "garden", "no_such"]
    as_of = int(data.transactions.column("ts").cast(pa.int64()).to_numpy().max())
    return ACT.category_piece((data.transactions, None, None), profiles, seg, categories=cats, as_of_us=as_of,
                              horizon_days=30)  # fmt: skip


@covers(ACT.CategoryStats, ACT.ActionCounts)
@given(cut_lists, splits)
@settings(max_examples=25, deadline=None)
def test_actions_states_merge_equal_whole(action_parts, cuts, split_every):
    t = action_parts
    pieces = _pieces(t, _cuts(t.num_rows, cuts))
    merged = _merge([ACT.CategoryStats.of(p, n_segments=3, n_categories=4) for p in pieces], split_every)
    whole = ACT.CategoryStats.of(t, n_segments=3, n_categories=4)
    assert merged.customers == whole.customers and merged.history_days == whole.history_days
    for f in ACT.CategoryStats._FIELDS:
        np.testing.assert_allclose(getattr(merged, f), getattr(whole, f), rtol=1e-9, err_msg=f)
    assert _merge([ACT.ActionCounts.of(p) for p in pieces], split_every).finish() == t.num_rows


@covers(ACT.OfferSummary)
@given(cut_lists, splits)
@settings(max_examples=20, deadline=None)
def test_offer_summary_merge_equals_whole(cuts, split_every):
    rng = np.random.default_rng(12)
    n = 600
    cats = ["toys", "garden", "books", "food"]
    k = rng.integers(0, 4, n)  # offers per customer, 0 included
    t = pa.table({"segment": pa.array([None if i % 37 == 0 else int(i % 5) for i in range(n)], pa.int64()),
                  "category": [list(rng.choice(cats, m, replace=False)) for m in k],
                  "propensity": [list(np.sort(rng.random(m))[::-1]) for m in k],
                  "expected_spend": [list(rng.gamma(2, 10, m)) for m in k]})  # fmt: skip
    merged = _merge([ACT.OfferSummary.of(p) for p in _pieces(t, _cuts(t.num_rows, cuts))], split_every)
    whole = ACT.OfferSummary.of(t)
    assert merged.cells.keys() == whole.cells.keys()
    for key, v in whole.cells.items():
        assert merged.cells[key][0] == v[0]
        np.testing.assert_allclose(merged.cells[key][1:], v[1:], rtol=1e-12)


def test_every_state_class_has_a_merge_test():
    found = _segone_state_classes()
    assert {"segone.segment.PartialSums", "segone.track.Contingency", "segone.privacy.PrivacyCounts"} <= found
    missing = sorted(found - COVERED)
    assert not missing, (
        f"State subclass(es) {missing} have no merge test in tests/test_state.py: add a property test that the merge "
        "of the states of random pieces equals the state of the whole, and mark it @covers(TheClass)."
    )
    assert not COVERED - found, f"@covers names classes that are not State subclasses of segone: {COVERED - found}"
