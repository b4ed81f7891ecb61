"""Stable segment ids, moves, the migration contingency and comparing outputs."""

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

import segone
from segone import synth
from segone._state import merge_all
from segone.assignment import assign_piece
from segone.errors import DataError, ModelFormatError, ParameterError, SchemaError
from segone.track import (
    Contingency,
    FeatureHistogram,
    compare_outputs,
    feature_psi,
    match_centroids,
    match_counts,
    match_segments,
    migration_table,
    moves_and_contingency,
    moves_piece,
    read_previous,
    relabel_piece,
    track_assignments,
)


# ------------------------------------------------------------------ matching
def test_hungarian_recovers_a_permutation_exactly(rng):
    k = 9
    prev_ids = np.array([40, 3, 17, 8, 21, 5, 30, 11, 2])
    prev_lab = rng.integers(0, k, 50_000)
    perm = rng.permutation(k)  # new cluster j = old segment perm^-1[j]
    new = perm[prev_lab]
    noise = rng.random(new.size) < 0.05
    new[noise] = rng.integers(0, k, int(noise.sum()))
    m = match_segments(prev_ids, prev_ids[prev_lab], new)
    expect = np.empty(k, dtype=np.int64)
    expect[perm] = prev_ids
    np.testing.assert_array_equal(m.ids, expect)
    assert m.kept.all() and m.vanished == [] and m.next_id == 41 and m.method == "customers"
    assert m.common_customers == 50_000 and m.matched_customers == int((new == perm[prev_lab]).sum())


@given(st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_matching_recovers_any_permutation(k, seed):
    rng = np.random.default_rng(seed)
    prev_ids = rng.choice(1000, size=k, replace=False)
    lab = np.concatenate([np.arange(k), rng.integers(0, k, 200)])
    perm = rng.permutation(k)
    m = match_segments(prev_ids, prev_ids[lab], perm[lab], next_id=2000)
    np.testing.assert_array_equal(m.ids[perm], prev_ids)
    assert m.next_id == 2000


def test_new_and_vanished_segments_and_ids_never_reused():
    # 3 previous segments (ids 4, 6, 9; next id 12 because 10 and 11 vanished earlier) -> 4 new clusters
    prev = np.array([4] * 50 + [6] * 50 + [9] * 50)
    new = np.array([0] * 50 + [2] * 45 + [3] * 5 + [1] * 50)
    m = match_segments([4, 6, 9], prev, new, next_id=12)
    assert m.ids.tolist() == [4, 9, 6, 12] and m.vanished == [] and m.next_id == 13
    assert m.to_dict()["new"] == [12] and m.to_dict()["overlap_kept"] == {"4": 50, "9": 50, "6": 45}
    # fewer new clusters: the id left without customers vanishes
    m = match_segments([4, 6, 9], prev, np.array([0] * 100 + [1] * 50), next_id=12)
    assert m.ids.tolist() == [4, 9] and m.vanished == [6] and m.next_id == 12
    # a pair below min_overlap does not keep the id
    m = match_segments([4, 6, 9], prev, new, next_id=12, min_overlap=10)
    assert m.ids.tolist() == [4, 9, 6, 12]
    m = match_counts([4, 6], [[3, 0], [0, 50]], min_overlap=5)
    assert m.ids.tolist() == [7, 6] and m.vanished == [4]
    with pytest.raises(ParameterError, match="next_id"):
        match_counts([4, 6], [[1, 0], [0, 1]], next_id=3)
    with pytest.raises(ParameterError, match="unique"):
        match_counts([4, 4], [[1, 0], [0, 1]])


def test_no_common_customers_falls_back_to_centroids():
    A = np.array([[0.0, 0.0], [10.0, 10.0], [-5.0, 5.0]])
    B = np.array([[10.2, 9.9], [0.1, -0.1], [50.0, 50.0]])
    prev = pa.table({"customer_id": [1, 2], "segment": [7, 8]})
    new = pa.table({"customer_id": [3, 4], "segment": [0, 1]})
    m = match_segments([7, 8, 2], prev, new, prev_centroids=A, new_centroids=B)
    assert m.method == "centroids" and m.ids.tolist() == [8, 7, 2]
    m = match_centroids([7, 8, 2], A, B, max_distance=1.0)
    assert m.ids.tolist() == [8, 7, 9] and m.vanished == [2]
    # without centroids: every new segment gets a new id
    m = match_segments([7, 8], prev, new)
    assert m.ids.tolist() == [9, 10] and sorted(m.vanished) == [7, 8]


def test_match_segments_joins_tables_by_customer():
    prev = pa.table({"customer_id": ["a", "b", "c", "d"], "segment": [5, 5, 6, 6]})
    new = pa.table({"customer_id": ["d", "c", "b", "e"], "segment": [0, 0, 1, 1]})
    m = match_segments([5, 6], prev, new)
    assert m.ids.tolist() == [6, 5] and m.common_customers == 3


# ------------------------------------------------------------------- moves
def _reference_moves(prev, new):
    """Pure-Python moves: {id: (previous segment, segment, status)}."""
    p = dict(zip(prev["customer_id"], prev["segment"]))
    n = dict(zip(new["customer_id"], new["segment"]))
    out = {}
    for c in set(p) | set(n):
        a, b = p.get(c), n.get(c)
        status = "new" if a is None else "gone" if b is None else "stayed" if a == b else "moved"
        out[c] = (a, b, status)
    return out


def _random_runs(rng, n, kind):
    universe = np.arange(int(n * 1.2))
    if kind == "sparse":
        universe = np.sort(rng.choice(10**12, size=universe.size, replace=False))
    prev_ids = rng.choice(universe, size=n, replace=False)
    new_ids = rng.choice(universe, size=n, replace=False)
    if kind in ("sorted", "sparse"):
        prev_ids, new_ids = np.sort(prev_ids), np.sort(new_ids)
    if kind == "string":
        prev_ids, new_ids = [f"c{v}" for v in prev_ids], [f"c{v}" for v in new_ids]
    prev = {"customer_id": list(prev_ids), "segment": rng.integers(0, 5, n).tolist(), "spend": rng.random(n).tolist()}
    new = {"customer_id": list(new_ids), "segment": rng.integers(0, 6, n).tolist(), "spend": rng.random(n).tolist()}
    return prev, new


@pytest.mark.parametrize("kind", ["sorted", "dense", "sparse", "shuffled_sparse", "string"])
def test_moves_table_has_every_customer_once(rng, kind):
    prev, new = _random_runs(rng, 5000, kind)
    if kind == "shuffled_sparse":
        prev["customer_id"] = list(rng.choice(10**12, 5000, replace=False))
        new["customer_id"] = prev["customer_id"][:4000] + list(rng.choice(10**12, 1000, replace=False) + 10**12)
    pt, nt = pa.table(prev), pa.table(new)
    moves = moves_piece(pt, nt, spend="spend")
    ref = _reference_moves(prev, new)
    ids = moves.column("customer_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(ref)
    got = dict(zip(ids, zip(moves.column("previous_segment").to_pylist(), moves.column("segment").to_pylist(),
                            moves.column("status").to_pylist())))  # fmt: skip
    assert got == ref
    if kind != "string":
        assert ids == sorted(ids)
    # spend: the new run's where present, else the previous run's
    sp = dict(zip(moves.column("customer_id").to_pylist(), moves.column("spend").to_pylist()))
    pn, pp = dict(zip(new["customer_id"], new["spend"])), dict(zip(prev["customer_id"], prev["spend"]))
    assert all(sp[c] == (pn[c] if c in pn else pp[c]) for c in ref)
    # the contingency of the fused path equals the one built from the moves table
    m2, cont = moves_and_contingency(pt, nt, spend="spend")
    assert m2.equals(moves)
    c2 = Contingency.of(moves)
    assert np.array_equal(cont.counts, c2.counts) and np.allclose(cont.spend, c2.spend)
    assert cont.customers()["previous"] == 5000 == cont.customers()["now"]


def _sorted_reference(prev, new, spend="spend"):
    """The moves of two tables through the existing sorted path: both sides sorted by id first."""
    return moves_and_contingency(prev.sort_by("customer_id"), new.sort_by("customer_id"), spend=spend)


@pytest.mark.parametrize("ids", ["random", "negative", "huge", "full_range", "dense_shuffled", "tiny", "string"])
def test_unsorted_integer_ids_take_the_fast_path_with_the_same_result(rng, ids):
    """Unsorted ids (radix-sorted in the kernel) give exactly the moves and contingency of the sorted path."""
    n = 20_000
    if ids == "random":
        u = rng.choice(10**12, int(n * 1.2), replace=False).astype(np.int64)
    elif ids == "negative":
        u = rng.choice(10**12, int(n * 1.2), replace=False).astype(np.int64) - 5 * 10**11
    elif ids == "huge":  # near both ends of int64
        half = int(n * 0.6)
        u = np.concatenate([np.iinfo(np.int64).max - rng.choice(10**9, half, replace=False),
                            np.iinfo(np.int64).min + rng.choice(10**9, half, replace=False)]).astype(np.int64)
    elif ids == "full_range":
        u = np.unique(rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, int(n * 1.25), dtype=np.int64))
        u = u[: int(n * 1.2)]
    elif ids == "dense_shuffled":  # the counting-sort path
        u = np.arange(int(n * 1.2), dtype=np.int64) + 77
    else:
        u = np.array([3, -7, 2**62, -(2**62), 0], dtype=np.int64)
    u = rng.permutation(u)
    m = u.size * 5 // 6
    p_ids, n_ids = u[:m], u[u.size - m :]  # overlapping, each side unsorted
    if ids == "string":
        p_ids, n_ids = (pa.array([f"c{v}" for v in a]) for a in (p_ids, n_ids))
    prev = pa.table({"customer_id": p_ids, "segment": pa.array(rng.integers(0, 7, m), pa.int32()),
                     "spend": rng.random(m)})  # fmt: skip
    new = pa.table({"customer_id": n_ids, "segment": pa.array(rng.integers(0, 8, m), pa.int32()),
                    "spend": rng.random(m)})  # fmt: skip
    moves, cont = moves_and_contingency(prev, new, spend="spend")
    ref, ref_cont = _sorted_reference(prev, new)
    if ids == "string":  # strings: the new run's order, then the gone ones; the same rows
        moves, ref = moves.sort_by("customer_id"), ref.sort_by("customer_id")
    assert moves.equals(ref)
    assert cont == ref_cont
    # and the plain NumPy join (the path without Numba) agrees on every customer
    if ids != "string":
        from segone.track import _join_ids

        j = _join_ids(prev.column("customer_id"), new.column("customer_id"))
        assert np.array_equal(j.ids, moves.column("customer_id").to_numpy())
    # duplicates in an unsorted side are still found
    dup = pa.concat_tables([prev, prev.slice(1, 2)])
    with pytest.raises(DataError, match="more than once"):
        moves_piece(dup, new)


@pytest.mark.parametrize("string_ids", [False, True])
def test_moves_by_hash_buckets_equal_the_whole(rng, string_ids):
    """The per-part tracking: both runs split by the customer hash (as on Dask), joined per bucket, then renamed:
    the union of the buckets' moves is the whole moves table, the merged contingency the whole one."""
    from segone.dask import _split_table
    from segone.track import moves_bucket, relabel_moves_piece

    prev, new = _random_runs(rng, 3000, "string" if string_ids else "shuffled_sparse")
    if not string_ids:
        prev["customer_id"] = list(rng.choice(10**12, 3000, replace=False))
        new["customer_id"] = prev["customer_id"][:2500] + list(rng.choice(10**12, 500, replace=False) + 10**12)
    new["segment"] = rng.integers(0, 4, 3000).tolist()  # cluster indices
    pt, nt = pa.table(prev), pa.table(new)
    ids = [9, 2, 4, 0]  # stable id of cluster 0..3
    whole = moves_piece(pt, nt, segment_ids=ids, spend="spend")
    n = 5
    ps, ns = _split_table(pt, "customer_id", n), _split_table(nt, "customer_id", n)
    parts = [moves_bucket(ps[i], ns[i], spend="spend") for i in range(n)]
    assert sum(p[0].num_rows for p in parts) == whole.num_rows
    assert all(p[0].num_rows for p in parts)  # every bucket holds customers
    raw = merge_all([p[1] for p in parts])
    got = pa.concat_tables([relabel_moves_piece(p[0], segment_ids=ids) for p in parts]).sort_by("customer_id")
    assert got.equals(whole.sort_by("customer_id"))
    c = raw.relabel(ids)
    ref = Contingency.of(whole)
    assert np.array_equal(c.counts, ref.counts) and np.allclose(c.spend, ref.spend)
    assert c.prev_ids.tolist() == ref.prev_ids.tolist() and c.new_ids.tolist() == ref.new_ids.tolist()


def test_moves_errors():
    ok = pa.table({"customer_id": [1, 2], "segment": [0, 1]})
    with pytest.raises(DataError, match="more than once.*2"):
        moves_piece(pa.table({"customer_id": [1, 2, 2], "segment": [0, 1, 1]}), ok)
    with pytest.raises(DataError, match="new assignments.*more than once"):
        moves_piece(ok, pa.table({"customer_id": [5, 1, 5], "segment": [0, 1, 1]}))
    with pytest.raises(DataError, match="more than once.*'x'"):
        moves_piece(pa.table({"customer_id": ["x", "x"], "segment": [0, 1]}), pa.table({"customer_id": ["y"],
                                                                                        "segment": [0]}))
    with pytest.raises(DataError, match="null customer ids"):
        moves_piece(pa.table({"customer_id": pa.array([1, None]), "segment": [0, 1]}), ok)
    with pytest.raises(SchemaError, match="integer.*string"):
        moves_piece(ok, pa.table({"customer_id": ["1", "2"], "segment": [0, 1]}))
    with pytest.raises(DataError, match="negative"):
        moves_piece(ok, pa.table({"customer_id": [1, 2], "segment": [0, -1]}))
    with pytest.raises(SchemaError, match="'segment'"):
        moves_piece(ok, pa.table({"customer_id": [1, 2]}))


# ------------------------------------------------------------- contingency
@st.composite
def _joined(draw):
    n = draw(st.integers(1, 300))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    prev = rng.integers(-1, 6, n)
    new = rng.integers(-1, 7, n)
    new[(prev < 0) & (new < 0)] = 3  # every row is in at least one run
    spend = np.round(rng.random(n) * 100, 2)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return prev, new, spend, cuts


@given(_joined())
def test_contingency_merge_of_random_splits_equals_the_whole(case):
    prev, new, spend, cuts = case
    whole = Contingency.of_arrays(prev, new, spend)
    bounds = [0, *cuts, prev.size]
    parts = [Contingency.of_arrays(prev[a:b], new[a:b], spend[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    merged = merge_all(parts, split_every=2)
    np.testing.assert_array_equal(merged.prev_ids, whole.prev_ids)
    np.testing.assert_array_equal(merged.new_ids, whole.new_ids)
    np.testing.assert_array_equal(merged.counts, whole.counts)  # counts: exact
    np.testing.assert_allclose(merged.spend, whole.spend, rtol=1e-12, atol=1e-9)
    # associativity and the identity
    if len(parts) >= 3:
        a, b, c = parts[:3]
        left, right = a.merge(b).merge(c), a.merge(b.merge(c))
        np.testing.assert_array_equal(left.counts, right.counts)
        np.testing.assert_allclose(left.spend, right.spend, rtol=1e-12, atol=1e-9)
    assert Contingency.empty().merge(whole).counts.tolist() == whole.counts.tolist()
    # plain data round trip
    back = Contingency.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert back == whole and whole.to_dict()["kind"] == "migration"


@given(_joined())
def test_ari_from_contingency_equals_sklearn(case):
    prev, new, _, _ = case
    c = Contingency.of_arrays(prev, new)
    both = (prev >= 0) & (new >= 0)
    if not both.any():
        assert c.adjusted_rand() is None
        return
    assert c.adjusted_rand() == pytest.approx(adjusted_rand_score(prev[both], new[both]), abs=1e-12)
    stayed = (prev[both] == new[both]).mean()
    assert c.stayed_share() == pytest.approx(stayed)


def test_migration_table_and_figures():
    prev = pa.table({"customer_id": [1, 2, 3, 4, 5, 6], "segment": [0, 0, 0, 1, 1, 2], "spend": [1.0] * 6})
    new = pa.table({"customer_id": [2, 3, 4, 5, 6, 7, 8], "segment": [0, 1, 1, 1, 3, 3, 0],
                    "spend": [10.0, 20, 30, 40, 50, 60, 70]})  # fmt: skip
    moves, cont = moves_and_contingency(prev, new, spend="spend")
    mig = migration_table(cont)
    rows = {(r["from_segment"], r["to_segment"]): r for r in mig.to_pylist()}
    assert rows[(0, 0)]["customers"] == 1 and rows[(0, 0)]["share"] == pytest.approx(1 / 3)
    assert rows[(0, None)]["status"] == "gone" and rows[(0, None)]["spend"] == 1.0  # the previous spend
    assert rows[(0, 1)]["spend"] == 20.0 and rows[(0, 1)]["status"] == "moved"
    assert rows[(None, 3)]["customers"] == 1 and rows[(None, 0)]["share"] == 0.5
    assert mig.column("customers").to_numpy().sum() == moves.num_rows == 8
    assert mig.column("from_segment").to_pylist()[-2:] == [None, None]
    f = cont.figures()
    assert f["customers"] == {"previous": 6, "now": 7, "common": 5, "new": 2, "gone": 1, "stayed": 3, "moved": 2}
    assert f["stayed_share"] == 0.6 and f["segment_psi"] > 0
    assert set(f["segment_shares"]) == {"0", "1", "2", "3"}
    json.dumps(f)
    # relabel the new ids (one to one) and back
    r = cont.relabel(np.array([10, 11, 12, 13]))
    assert r.new_ids.tolist() == [10, 11, 13] and r.counts.sum() == cont.counts.sum()
    with pytest.raises(ParameterError, match="different ids"):
        cont.relabel(np.array([1, 1, 1, 1]))
    assert relabel_piece(new, segment_ids=[5, 6, 7, 8]).column("segment").to_pylist()[:2] == [5, 6]


def test_feature_histogram_and_psi(rng):
    t = pa.table({"a": rng.lognormal(0, 1, 20_000), "b": np.where(rng.random(20_000) < 0.7, 0.0, 1.0),
                  "c": pa.array(np.where(rng.random(20_000) < 0.1, None, rng.normal(size=20_000)))})  # fmt: skip
    feats = ["a", "b", "c"]
    whole = FeatureHistogram.of(t, features=feats)
    parts = [FeatureHistogram.of(t.slice(i, 5000), features=feats) for i in range(0, 20_000, 5000)]
    assert merge_all(parts) == whole
    assert whole.missing.tolist() == [0, 0, int(t.column("c").null_count)]
    assert FeatureHistogram.from_dict(json.loads(json.dumps(whole.to_dict()))) == whole
    same = feature_psi(whole, whole)
    assert same == {"a": 0.0, "b": 0.0, "c": 0.0}
    # a small shift gives a small PSI, a large one a large PSI
    half = FeatureHistogram.of(t.slice(0, 10_000), features=feats)
    assert max(feature_psi(whole, half).values()) < 0.01
    shifted = t.set_column(0, "a", pa.array(t.column("a").to_numpy() * 3))
    assert feature_psi(whole, FeatureHistogram.of(shifted, features=feats))["a"] > 1.0
    with pytest.raises(ParameterError, match="different features"):
        whole.merge(FeatureHistogram.of(t, features=["a", "b"]))


# ------------------------------------------------------------- real runs
K = 6


@pytest.fixture(scope="module")
def periods():
    return synth.generate_periods(20_000, periods=2, switch_share=0.1, seed=4, redraw=True)


@pytest.fixture(scope="module")
def runs(periods, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    p0, p1 = periods
    r0 = segone.run(p0.transactions, base / "r0", K, events=p0.events, attributes=p0.customers, random_state=0)
    r0b = segone.run(p0.transactions, base / "r0b", K, events=p0.events, attributes=p0.customers, random_state=7)
    r1 = segone.run(p1.transactions, base / "r1", K, events=p1.events, attributes=p1.customers, random_state=1)
    return base, r0, r0b, r1


def test_refit_with_another_seed_keeps_ids(runs):
    base, r0, r0b, _ = runs
    prev = read_previous(base / "r0")
    t = track_assignments(prev, r0b.assignments, centroids=r0b.segmenter.cluster_centers_)
    assert t.match.kept.all() and sorted(t.segment_ids.tolist()) == list(range(K)) and t.next_id == K
    assert t.figures["stayed_share"] >= 0.99
    assert t.figures["customers"]["common"] == 20_000 and t.figures["adjusted_rand_common"] >= 0.98
    status = t.moves.column("status").to_pylist()
    assert status.count("stayed") >= 0.99 * 20_000 and t.moves.num_rows == 20_000


def test_synthetic_truth_moved_precision_and_recall(runs, periods):
    base, _, _, r1 = runs
    p0, p1 = periods
    prev = read_previous(base / "r0")
    t = track_assignments(prev, r1.assignments, centroids=r1.segmenter.cluster_centers_)
    moves = t.moves
    truth = p0.truth.join(p1.truth, "customer_id", right_suffix="_1", join_type="inner").sort_by("customer_id")
    assert moves.column("customer_id").equals(truth.column("customer_id"))
    moved = np.array(moves.column("status").to_pylist()) == "moved"
    true_moved = truth.column("segment").to_numpy() != truth.column("segment_1").to_numpy()
    assert true_moved.mean() == pytest.approx(0.1)
    tp = int((moved & true_moved).sum())
    precision, recall = tp / max(moved.sum(), 1), tp / true_moved.sum()
    print(f"moved: precision {precision:.3f}, recall {recall:.3f} ({int(true_moved.sum())} true switchers)")
    assert precision >= 0.95 and recall >= 0.95
    # the migration matrix agrees with the true one: map every stable id to its majority latent segment
    prev_seg = moves.column("previous_segment").to_numpy()
    new_seg = moves.column("segment").to_numpy()
    s0, s1 = truth.column("segment").to_numpy(), truth.column("segment_1").to_numpy()
    to_latent = {int(i): int(np.bincount(s0[prev_seg == i]).argmax()) for i in np.unique(prev_seg)}
    to_latent.update({int(i): int(np.bincount(s1[new_seg == i]).argmax()) for i in np.unique(new_seg)
                      if int(i) not in to_latent})  # fmt: skip
    L = len(synth.SEGMENTS)
    true_m = np.zeros((L, L))
    np.add.at(true_m, (s0, s1), 1)
    found = np.zeros((L, L))
    mig = t.migration.filter(pa.compute.is_valid(t.migration.column("to_segment")))
    for r in mig.to_pylist():
        if r["from_segment"] is not None:
            found[to_latent[r["from_segment"]], to_latent[r["to_segment"]]] += r["customers"]
    tv = np.abs(found - true_m).sum() / 2 / true_m.sum()
    print(f"migration matrix: total variation distance to the truth {tv:.4f}")
    assert tv <= 0.02
    assert t.figures["stayed_share"] == pytest.approx(0.9, abs=0.02)


def test_warm_start_from_the_previous_model(runs, periods):
    base, r0, _, _ = runs
    _, p1 = periods
    prev = read_previous(base / "r0")
    prof = segone.build_profiles(p1.transactions, events=p1.events, attributes=p1.customers)
    scorer = segone.FeatureScorer().fit(prof)
    X = scorer.transform(prof)
    init = prev.warm_start(scorer, K)
    assert init is not None and init.shape == (K, len(scorer.feature_names_out_))
    # the previous centroids, moved to the new scorer's space, sit near the new data's segments
    seg = segone.Segmenter(K, init=init, random_state=1).fit(X)
    t = track_assignments(prev, assign_piece(prof, X, seg.cluster_centers_), centroids=seg.cluster_centers_)
    assert t.match.kept.all() and t.segment_ids.tolist() == list(range(K))  # warm start keeps the order too
    assert prev.warm_start(scorer, K + 1) is None and any("segments" in n for n in prev.notes)


def test_compare_outputs(runs, tmp_path):
    base, r0, r0b, r1 = runs
    c = compare_outputs(base / "r0", base / "r1", tmp_path / "cmp")
    assert sorted(os.listdir(tmp_path / "cmp")) == ["migration.parquet", "moves.parquet", "tracking.json"]
    summary = json.loads((tmp_path / "cmp" / "tracking.json").read_text())
    assert summary["customers"]["common"] == 20_000 and summary["stayed_share"] == pytest.approx(0.9, abs=0.02)
    assert summary["format"] == "segone-tracking" and set(summary["id_map"]) == {str(i) for i in range(K)}
    assert pq.read_table(tmp_path / "cmp" / "moves.parquet").equals(c.moves)
    mig = pq.read_table(tmp_path / "cmp" / "migration.parquet")
    assert mig.column("customers").to_numpy().sum() == 20_000
    # the same comparison on the tracked ids: matching is the identity
    prev = read_previous(base / "r0")
    t = track_assignments(prev, r1.assignments)
    assert c.moves.column("segment").equals(t.moves.column("segment"))
    # without matching, independent runs' raw ids are compared as they are
    raw = compare_outputs(base / "r0", base / "r0b", tmp_path / "raw", match=False)
    assert raw.summary["id_map"] is None
    with pytest.raises(ParameterError, match="exists"):
        compare_outputs(base / "r0", base / "r1", tmp_path / "cmp")


# ----------------------------------------------------- previous outputs
def _copy(base, tmp_path, name="prev"):
    d = tmp_path / name
    shutil.copytree(base / "r0", d)
    return d


def test_read_previous_errors(runs, tmp_path):
    base, _, r0b, _ = runs
    with pytest.raises(ParameterError, match="does not exist"):
        read_previous(tmp_path / "nope")
    d = _copy(base, tmp_path, "no_assign")
    os.remove(d / "assignments.parquet")
    with pytest.raises(ModelFormatError, match="assignments.parquet is missing"):
        read_previous(d)
    d = _copy(base, tmp_path, "no_model")
    shutil.rmtree(d / "model")
    with pytest.raises(ModelFormatError, match="model/ is missing"):
        read_previous(d)
    d = _copy(base, tmp_path, "truncated")
    raw = (d / "assignments.parquet").read_bytes()
    (d / "assignments.parquet").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        read_previous(d)
    d = _copy(base, tmp_path, "dups")
    a = pq.read_table(d / "assignments.parquet")
    pq.write_table(pa.concat_tables([a, a.slice(10, 3)]), d / "assignments.parquet")
    with pytest.raises(DataError, match="more than once"):
        read_previous(d)
    d = _copy(base, tmp_path, "foreign_segments")
    a = pq.read_table(d / "assignments.parquet")
    seg = a.column("segment").to_numpy().copy()
    seg[0] = 99
    pq.write_table(a.set_column(1, "segment", pa.array(seg)), d / "assignments.parquet")
    with pytest.raises(ModelFormatError, match="different runs"):
        read_previous(d)
    d = _copy(base, tmp_path, "string_ids")
    a = pq.read_table(d / "assignments.parquet")
    pq.write_table(a.set_column(0, "customer_id", a.column("customer_id").cast(pa.string())),
                   d / "assignments.parquet")  # fmt: skip
    with pytest.raises(SchemaError, match="integer.*string"):
        track_assignments(read_previous(d), r0b.assignments)


def test_read_previous_lazily_from_part_files(runs, tmp_path):
    """A previous output written in parts (as on Dask), read lazily: the same tracking; bad parts are named."""
    base, _, r0b, r1 = runs
    d = _copy(base, tmp_path, "parts")
    a = pq.read_table(d / "assignments.parquet")
    os.remove(d / "assignments.parquet")
    (d / "assignments.parquet").mkdir()
    for i, (lo, hi) in enumerate(((0, 7000), (7000, 7000), (7000, 20_000))):  # one part empty
        pq.write_table(a.slice(lo, hi - lo), d / "assignments.parquet" / f"part-{i:05d}.parquet")
    lazy = read_previous(d, lazy=True)
    assert lazy.assignments is None and len(lazy.sources()) == 3 and lazy.segment_ids.tolist() == list(range(K))
    eager = track_assignments(read_previous(base / "r0"), r1.assignments, centroids=r1.segmenter.cluster_centers_)
    t = track_assignments(lazy, r1.assignments, centroids=r1.segmenter.cluster_centers_)
    assert t.moves.equals(eager.moves) and t.migration.equals(eager.migration)
    assert t.figures["customers"] == eager.figures["customers"]
    # a model of another version: the segment ids come from the contingency
    meta = json.loads((d / "model" / "model.json").read_text())
    meta["version"] = 9
    (d / "model" / "model.json").write_text(json.dumps(meta))
    lazy = read_previous(d, lazy=True)
    assert lazy.segment_ids is None
    t = track_assignments(lazy, r1.assignments)
    assert lazy.segment_ids.tolist() == list(range(K)) and lazy.next_id == K and t.moves.equals(eager.moves)
    # duplicates across part files, foreign segments and null ids: found while tracking, naming the output
    d = _copy(base, tmp_path, "bad")
    os.remove(d / "assignments.parquet")
    (d / "assignments.parquet").mkdir()
    pq.write_table(a, d / "assignments.parquet" / "part-00000.parquet")
    pq.write_table(a.slice(100, 2), d / "assignments.parquet" / "part-00001.parquet")
    with pytest.raises(DataError, match="bad/assignments.parquet.*more than once"):
        track_assignments(read_previous(d, lazy=True), r0b.assignments)
    seg = a.column("segment").to_numpy().copy()
    seg[3] = 99
    pq.write_table(a.set_column(1, "segment", pa.array(seg)), d / "assignments.parquet" / "part-00001.parquet")
    with pytest.raises(ModelFormatError, match="different runs"):
        track_assignments(read_previous(d, lazy=True), r0b.assignments)
    ids = pa.array([None] + a.column("customer_id").to_pylist()[1:], pa.int64())
    pq.write_table(a.set_column(0, "customer_id", ids), d / "assignments.parquet" / "part-00001.parquet")
    with pytest.raises(DataError, match="null customer ids"):
        track_assignments(read_previous(d, lazy=True), r0b.assignments)
    (d / "assignments.parquet" / "part-00001.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        read_previous(d, lazy=True)


def test_read_previous_other_version_and_features(runs, tmp_path):
    base, _, r0b, _ = runs
    d = _copy(base, tmp_path, "v9")
    meta = json.loads((d / "model" / "model.json").read_text())
    meta["version"] = 9
    (d / "model" / "model.json").write_text(json.dumps(meta))
    prev = read_previous(d)
    assert prev.model is None and any("customers only" in n for n in prev.notes)
    assert prev.segment_ids.tolist() == list(range(K)) and prev.next_id == K
    t = track_assignments(prev, r0b.assignments)
    assert t.figures["stayed_share"] >= 0.99 and t.figures["notes"]
    # another feature list: recorded, matched on customers only, no warm start
    prev = read_previous(base / "r0", features=r0b.scorer.feature_names_out_[:-2] + ["x"])
    assert prev.feature_mismatch["added"] == ["x"] and len(prev.feature_mismatch["removed"]) == 2
    assert prev.warm_start(r0b.scorer, K) is None
    t = track_assignments(prev, r0b.assignments)
    assert t.figures["feature_mismatch"] == prev.feature_mismatch and t.figures["stayed_share"] >= 0.99
    # the same features in another order are not a mismatch
    prev = read_previous(base / "r0", features=list(reversed(r0b.scorer.feature_names_out_)))
    assert prev.feature_mismatch is None
