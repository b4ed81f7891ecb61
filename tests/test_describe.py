"""DESCRIBE: personas (kernel parity, traits, sentences, vocabulary) and the segment table and labels."""

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import segone
from segone.describe import DEFAULT_LABEL_RULES, DEFAULT_PHRASES, PersonaModel, PersonaState, SegmentStats
from segone.describe._personas import NOTHING
from segone.errors import NotFittedError, ParameterError, SchemaError
from segone.kernels import reference as ref
from segone.synth import generate


def _kern(backend):
    from segone._backend import get_kernels

    return get_kernels(backend, "persona")


def _run_top(mod, S, k, group=None, min_strength=0.0):
    d = S.shape[1]
    group = np.arange(d, dtype=np.int32) if group is None else np.asarray(group, dtype=np.int32)
    idx = np.empty((S.shape[0], k), dtype=np.int32)
    val = np.empty((S.shape[0], k), dtype=np.float32)
    mod.top_traits(np.ascontiguousarray(S, dtype=np.float32), group, int(group.max()) + 1 if d else 0,
                   min_strength, k, idx, val, 2)  # fmt: skip
    return idx, val


ADVERSARIAL = {
    "ties": np.tile(np.array([0.5, -0.5, 0.5, 0.25, -0.5], np.float32), (7, 1)),
    "nan_rows": np.array([[np.nan, np.nan, np.nan], [np.nan, 0.1, np.nan], [0.0, -0.0, np.nan]], np.float32),
    "constant": np.zeros((5, 4), np.float32),
    "one_row": np.array([[0.3, -0.9, 0.9, 0.1]], np.float32),
    "empty": np.empty((0, 6), np.float32),
    "no_features": np.empty((4, 0), np.float32),
    "huge": np.array([[3e38, -3e38, np.inf, -np.inf, 1.0]], np.float32),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("grouped", [False, True])
def test_top_traits_backends_equal_reference_on_adversarial_inputs(backend, case, k, grouped):
    S = ADVERSARIAL[case]
    group = (np.arange(S.shape[1]) // 2) if grouped else None
    for ms in (0.0, 0.5):
        want = _run_top(ref, S, k, group, ms)
        got = _run_top(_kern(backend), S, k, group, ms)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40),
                  elements=st.one_of(st.floats(-1, 1, width=32), st.just(np.nan), st.sampled_from([0.5, -0.5]))),
       st.integers(1, 6), st.integers(1, 4), st.sampled_from([0.0, 0.3, 0.5]))  # fmt: skip
def test_top_traits_property(S, k, n_groups, min_strength):
    group = np.arange(S.shape[1]) % n_groups
    idx, val = _run_top(ref, S, k, group, min_strength)
    for backend in ("cython", "numba"):
        got = _run_top(_kern(backend), S, k, group, min_strength)
        np.testing.assert_array_equal(got[0], idx)
        np.testing.assert_array_equal(got[1], val)
    # strongest first, one per group, NaN and weak entries never picked
    a = np.abs(val)
    assert (np.nan_to_num(a[:, :-1], nan=-1) >= np.nan_to_num(a[:, 1:], nan=-1)).all()
    for i in range(S.shape[0]):
        picked = [j for j in idx[i] if j >= 0]
        ok = np.isfinite(S[i]) & (np.abs(S[i]) >= np.float32(min_strength))
        assert len(picked) == min(k, len({group[j] for j in np.flatnonzero(ok)}))
        assert len({group[j] for j in picked}) == len(picked)
        assert all(ok[j] for j in picked)


@pytest.fixture(scope="module")
def prof():
    d = generate(4000, seed=2)
    return segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)


def test_personas_every_customer_once_with_ranked_traits(prof):
    p = segone.personas(prof, np.zeros(prof.num_rows, dtype=np.int32), n_traits=4)
    assert p.column_names == ["customer_id", "segment", "traits", "summary"]
    assert p.column("customer_id").equals(prof.column("customer_id"))
    for row in p.slice(0, 300).to_pylist():
        s = [abs(t["strength"]) for t in row["traits"]]
        assert s == sorted(s, reverse=True) and len(s) <= 4
        assert all(0.5 <= x <= 1.0 for x in s)
        assert row["summary"] and not row["summary"][0].islower()
        for t in row["traits"]:
            if t["percentile"] is not None:  # numeric trait: strength = 2 p - 1
                assert t["strength"] == pytest.approx(2 * t["percentile"] - 1)
        groups = [t["feature"].split("_")[0] for t in row["traits"] if t["feature"].startswith("share_")]
        assert len(groups) <= 1  # category mix is one group


def test_percentiles_match_the_empirical_rank(prof):
    pm = PersonaModel(n_traits=40, min_strength=0.0).fit(prof)
    p = pm.personas(prof)
    spend = prof.column("spend_total").to_numpy()
    for row in p.slice(0, 200).to_pylist():
        for t in row["traits"]:
            if t["feature"] == "spend_total":
                emp = ((spend < t["value"]).mean() + (spend <= t["value"]).mean()) / 2
                assert abs(emp - t["percentile"]) < 0.02


def test_a_typical_customer_and_missing_values():
    n = 101
    t = pa.table({"customer_id": np.arange(n), "orders": np.arange(n, dtype=float),
                  "spend_total": np.where(np.arange(n) == 50, np.nan, np.arange(n) * 2.0),
                  "constant": np.ones(n)})  # fmt: skip
    p = segone.personas(t)
    row = p.slice(50, 1).to_pylist()[0]  # the median customer, with a NaN spend
    assert row["traits"] == [] and row["summary"] == NOTHING
    top = p.slice(n - 1, 1).to_pylist()[0]
    assert [t["feature"] for t in top["traits"]][:1] == ["orders"]
    assert all(t["feature"] != "constant" for r in p.to_pylist() for t in r["traits"])


def test_vocabulary_is_data_and_checked(prof):
    rules = [{"match": "spend_total", "group": "spend", "high": "VIP: {value:.0f} spent ({ratio:.1f}x)", "low": None},
             {"match": "*", "high": None, "low": None}]  # fmt: skip
    p = segone.personas(prof, phrases=rules, min_strength=0.9)
    sums = p.column("summary").to_pylist()
    assert any(s.startswith("VIP: ") and "x)" in s for s in sums)
    assert all(s.startswith("VIP: ") or s == NOTHING for s in sums)
    with pytest.raises(ParameterError, match="known placeholders"):
        segone.personas(prof, phrases=[{"match": "*", "high": "{bogus}", "low": None}])
    with pytest.raises(ParameterError, match="needs 'match'"):
        segone.personas(prof, phrases=[{"high": "x"}])
    with pytest.raises(ParameterError, match="format"):
        segone.personas(prof, phrases=[{"match": "*", "high": "{value:,}", "low": None}])
    with pytest.raises(NotFittedError):
        PersonaModel().personas(prof)
    with pytest.raises(SchemaError, match="no 'nobody' column"):
        PersonaModel().fit(prof).personas(prof, id_column="nobody")
    assert DEFAULT_PHRASES[-1]["match"] == "*"  # every feature has a phrase


def test_rare_categorical_values_are_traits():
    n = 200
    region = np.array(["north"] * 190 + ["island"] * 10)
    t = pa.table({"customer_id": np.arange(n), "orders": np.full(n, 3.0), "region": region})
    p = segone.personas(t)
    rows = p.to_pylist()
    assert all(r["summary"] == "Region: island" for r in rows[190:])
    assert all(r["summary"] == NOTHING for r in rows[:190])


def test_persona_state_merges_to_the_whole(prof):
    pm = PersonaModel()
    whole = pm.partial_state(prof)
    parts = [pm.partial_state(prof.slice(a, b - a)) for a, b in ((0, 0), (0, 1000), (1000, 4000))]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    again = PersonaState.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert again.categories == whole.categories and again.n == whole.n
    a = PersonaModel().fit_state(again).personas(prof)
    b = PersonaModel().fit_state(whole).personas(prof)
    assert a.column("summary").equals(b.column("summary"))


# ------------------------------------------------------------------ segment labels
def _profiles(gap_days, recency, spend, n=300, seed=0):
    """Customers with a typical gap between purchases and given recency / yearly spend per group."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("customer_id", "recency_days", "tenure_days", "orders", "purchase_days", "spend_total",
                            "spend_mean", "orders_365d", "spend_365d", "frequency", "recency")}  # fmt: skip
    cid = 0
    for rec, sp in zip(recency, spend):
        for _ in range(n):
            f = 20 + rng.integers(0, 5)
            rows["customer_id"].append(cid)
            cid += 1
            rows["recency_days"].append(rec * rng.uniform(0.9, 1.1))
            rows["tenure_days"].append(f * gap_days + rec)
            rows["orders"].append(f + 1)
            rows["purchase_days"].append(f + 1)
            rows["spend_total"].append(sp * 2)
            rows["spend_mean"].append(sp * 2 / (f + 1))
            rows["orders_365d"].append(f / 2)
            rows["spend_365d"].append(sp * rng.uniform(0.9, 1.1))
            rows["frequency"].append(float(f))
            rows["recency"].append(f * gap_days * rng.uniform(0.95, 1.05))
    return pa.table(rows), np.repeat(np.arange(len(recency)), n)


def test_recency_words_follow_the_typical_gap():
    # a grocery (gap 7 days): 10 days since the last trip is active, 60 is lapsed
    t, lab = _profiles(7, [10, 60], [500, 500])
    labels = segone.describe_segments(t, lab, 2).column("label").to_pylist()
    assert labels[0].startswith("Active") and labels[1].startswith("Lapsed"), labels
    # a record shop (gap 100 days): 200 days is cooling, not lapsed; 30 days is active
    t, lab = _profiles(100, [30, 200], [80, 80])
    labels = segone.describe_segments(t, lab, 2).column("label").to_pylist()
    assert labels[0].startswith("Active") and labels[1].startswith("Cooling"), labels


def test_value_is_spend_per_customer_over_the_window():
    t, lab = _profiles(7, [10, 10, 10], [4000, 1000, 100])
    seg = segone.describe_segments(t, lab, 3)
    labels = seg.column("label").to_pylist()
    assert "big-spending" in labels[0] and "low-spending" in labels[2], labels
    assert sum(seg.column("value_share").to_pylist()) == pytest.approx(1.0)
    assert len(set(labels)) == 3


def test_labels_are_unique_and_lifts_are_means_over_the_base():
    t, lab = _profiles(7, [10, 10, 10, 10], [500, 500, 500, 500])  # four identical segments
    seg = segone.describe_segments(t, lab, 4)
    labels = seg.column("label").to_pylist()
    assert len(set(labels)) == 4, labels
    orders = t.column("orders").to_numpy()
    lift0 = orders[lab == 0].mean() / orders.mean()
    assert seg.column("lift_orders")[0].as_py() == pytest.approx(lift0)
    with pytest.raises(ParameterError, match="DEFAULT_LABEL_RULES"):
        SegmentStats.of(t, lab, 4).finish({"value": []})
    assert set(DEFAULT_LABEL_RULES) >= {"value", "recency", "mix"}


def test_empty_segment_and_unassigned_rows():
    t, lab = _profiles(7, [10, 60], [500, 500], n=50)
    lab = lab.copy()
    lab[:5] = -1
    seg = segone.describe_segments(t, lab, 3)
    assert seg.column("size").to_pylist() == [45, 50, 0]
    assert seg.column("label")[2].as_py() == "empty segment"


def test_run_writes_personas_and_the_richer_segment_table(tmp_path):
    import pyarrow.parquet as pq

    d = generate(3000, seed=4)
    res = segone.run(d.transactions, tmp_path / "o", 4, events=d.events, attributes=d.customers)
    per = pq.read_table(tmp_path / "o" / "personas.parquet")
    assert per.num_rows == 3000 and per.column("customer_id").equals(res.assignments.column("customer_id"))
    assert per.column("segment").equals(res.assignments.column("segment"))
    seg = res.segments
    for c in ("value_share", "median_recency_days", "lift_share_apparel", "lift_channel_web", "region=north",
              "traits", "label"):  # fmt: skip
        assert c in seg.column_names, c
    assert len(set(seg.column("label").to_pylist())) == 4


def test_rfm_of_personas_equals_rfm_scores(prof):
    from segone.describe import RFMGrid

    pm = PersonaModel().fit(prof)
    t = pm.personas(prof, rfm=True)
    exact = segone.rfm_scores(prof)
    for c in ("r_score", "f_score", "m_score", "rfm_code", "rfm_segment"):
        assert t.column(c).equals(exact.column(c)), c
    grid = RFMGrid.of(t).merge(RFMGrid.of(t.slice(0, 0))).finish()
    assert sum(grid.column("customers").to_pylist()) == prof.num_rows and grid.num_rows == 25


@given(st.lists(st.tuples(st.integers(-1, 3), st.floats(-1e6, 1e6), st.integers(-1, 2)), min_size=0, max_size=30),
       st.integers(1, 3))  # fmt: skip
def test_sentence_kernel_equals_the_python_reference(rows, k):
    from segone.describe import _sentences

    entries = [(["spent ", " (x", ") ok"], ["value", "ratio"], [0, 1]), (["région: ", ""], ["category"], [0]),
               None, (["plain"], [], []), (["up ", "%"], ["pct"], [2])]  # fmt: skip
    n = len(rows)
    entry = np.full((n, k), -1, np.int64)
    nums = np.zeros((n, k, 2))
    cat = np.full((n, k), -1, np.int64)
    for i, (e, x, c) in enumerate(rows):
        for s in range(k):
            ee = (e + s) % 5 if e >= 0 else -1
            entry[i, s] = -1 if ee == 2 else ee
            nums[i, s] = (x, x / 7.0)
            cat[i, s] = c
    values = ["nörth", "south", ""]
    got = _sentences.build(entry, nums, cat, _sentences.compile_entries(entries), values, "Nothing.")
    want = _sentences.build_reference(entry, nums, cat, entries, values, "Nothing.")
    assert got.to_pylist() == want.to_pylist()


# ------------------------------------------------------------------ labels: what real data taught
def test_typical_gap_is_in_days_whatever_the_btyd_period():
    # the BTYD columns follow freq (weeks, months); the gap the recency words use must stay in days
    d = generate(3000, seed=5)
    tables = {f: segone.build_profiles(d.transactions, freq=f) for f in ("D", "W", "M")}
    lab = np.asarray(tables["D"].column("customer_id").to_numpy()) % 3
    segs = {f: segone.describe_segments(t, lab, 3) for f, t in tables.items()}
    for f in ("W", "M"):
        assert segs[f].column("label").to_pylist() == segs["D"].column("label").to_pylist()
    gap = segs["D"].column("typical_gap_days")[0].as_py()
    rec = tables["D"].column("recency").to_numpy()
    frq = tables["D"].column("frequency").to_numpy()
    assert gap == pytest.approx(np.median(rec[frq > 0] / frq[frq > 0]), rel=0.01)
    for f in ("W", "M"):
        assert segs[f].column("typical_gap_days")[0].as_py() == pytest.approx(gap)


def test_mostly_names_every_category_that_holds_the_share_on_its_own():
    t, lab = _profiles(7, [10, 10, 10], [500, 500, 500], n=100)
    n = t.num_rows
    shares = {"share_baby_food": np.zeros(n), "share_diapers": np.zeros(n), "share_milk": np.full(n, 0.73),
              "share_candy___packaged": np.full(n, 0.27)}  # fmt: skip
    shares["share_baby_food"][lab == 0], shares["share_diapers"][lab == 0] = 0.32, 0.31
    shares["share_milk"][lab == 0], shares["share_candy___packaged"][lab == 0] = 0.32, 0.05
    shares["share_candy___packaged"][lab == 1], shares["share_milk"][lab == 1] = 0.55, 0.45
    for c, v in shares.items():
        t = t.append_column(c, pa.array(v))
    labels = segone.describe_segments(t, lab, 3).column("label").to_pylist()
    assert labels[0].endswith(", mostly baby food and diapers"), labels  # both, not only the larger one
    assert labels[1].endswith(", mostly candy packaged"), labels  # "CANDY - PACKAGED" normalised: one space
    assert "mostly" not in labels[2], labels  # milk is the base's staple, not over-represented


def test_segments_sharing_a_label_are_told_apart_by_a_median():
    # two segments with the same words (spend 0.83x and 1.17x the base: neither high nor low)
    t, lab = _profiles(7, [10, 10], [500, 700])
    seg = segone.describe_segments(t, lab, 2)
    labels = seg.column("label").to_pylist()
    med = seg.column("median_spend_365d").to_pylist()
    assert labels == [f"Active customers (spends {m:,.0f} a year)" for m in med], labels
    assert 450 < med[0] < 550 and 630 < med[1] < 770
    # rules written before "distinguish" existed still work, with its defaults
    old = {k: v for k, v in DEFAULT_LABEL_RULES.items() if k != "distinguish"}
    assert segone.describe_segments(t, lab, 2, rules=old).column("label").to_pylist() == labels
    # a distinguishing rule of one's own, and a number when no listed median tells them apart
    own = dict(DEFAULT_LABEL_RULES, distinguish={"columns": [("orders", "{value} orders")]})
    t2, lab2 = _profiles(7, [10, 10], [500, 500])
    labels2 = segone.describe_segments(t2.drop(["orders", "tenure_days"]), lab2, 2, rules=own).column("label")
    assert len(set(labels2.to_pylist())) == 2


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 7])
def test_sentence_kernel_in_parallel_chunks_equals_the_reference(n_chunks):
    from segone.describe import _sentences

    rng = np.random.default_rng(n_chunks)
    entries = [(["spent ", " (x", ") ok"], ["value", "ratio"], [0, 1]), (["région: ", ""], ["category"], [0]),
               None, (["plain"], [], [])]  # fmt: skip
    n, k = 50, 3
    entry = rng.integers(-1, 4, (n, k))
    entry[entry == 2] = -1
    entry[:5] = -1  # rows with nothing to say
    nums = rng.normal(0, 1e4, (n, k, 2))
    cat = rng.integers(-1, 2, (n, k))
    values = ["nörth", "south"]
    got = _sentences.build(entry, nums, cat, _sentences.compile_entries(entries), values, "Nothing.", n_chunks=n_chunks)
    want = _sentences.build_reference(entry, nums, cat, entries, values, "Nothing.")
    assert got.to_pylist() == want.to_pylist()


def _strength_inputs(cols, alpha=0.005):
    from segone.describe._personas import _strength_tables
    from segone.sketch import QuantileSketch, summarise

    sk = [summarise(c, alpha)[4] for c in cols]
    tables = _strength_tables(sk, [False] * len(cols), [j % 3 == 2 for j in range(len(cols))])
    ref_sk = QuantileSketch(alpha)
    return tables, (ref_sk.log_gamma, ref_sk.min_value, float(ref_sk.min_key))


STRENGTH_CASES = {
    "random": lambda rng: [rng.lognormal(2, 2, 300), rng.normal(0, 5, 300), rng.integers(0, 9, 300).astype(float)],
    "nan_inf_null": lambda rng: [np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, 2.0] * 10)],
    "constant": lambda rng: [np.full(50, 7.0), np.zeros(50)],
    "all_missing": lambda rng: [np.full(20, np.nan)],
    "one_row": lambda rng: [np.array([3.5]), np.array([-1.0])],
    "empty": lambda rng: [np.empty(0), np.empty(0)],
    "huge_and_tiny": lambda rng: [np.array([1e300, -1e300, 1e-300, 5e-10, -3e-12, 1.0, 1e10] * 5)],
    "large_offset": lambda rng: [1e9 + rng.normal(0, 1, 200), 1.7e9 + np.arange(200.0)],
    "ties": lambda rng: [np.repeat([1.0, 2.0, 3.0], 40)],
}


@pytest.mark.parametrize("case", sorted(STRENGTH_CASES))
def test_persona_strengths_backends_equal_reference(backend, case):
    rng = np.random.default_rng(0)
    cols = STRENGTH_CASES[case](rng)
    (lut, off, low, length), bucket = _strength_inputs(cols)
    n = cols[0].size
    want = np.full((n, len(cols) + 1), 5.0, np.float32)  # one extra column the kernel must leave alone
    got = want.copy()
    ref.persona_strengths(cols, lut, off, low, length, bucket, want)
    _kern(backend).persona_strengths(cols, lut, off, low, length, bucket, got, 2)
    np.testing.assert_array_equal(got, want)
    assert (got[:, -1] == 5.0).all()
    for j, c in enumerate(cols):  # no value, no trait; every strength in [-1, 1]
        assert np.isnan(got[~np.isfinite(c), j]).all()
        s = got[np.isfinite(c), j]
        assert (np.isnan(s) | ((s >= -1) & (s <= 1))).all()


@given(hnp.arrays(np.float64, st.integers(1, 60),
                  elements=st.one_of(st.floats(-1e12, 1e12), st.just(np.nan), st.sampled_from([0.0, 1.0, -2.5]))))
def test_persona_strengths_are_mid_ranks(v):
    # each finite value's strength is 2 p - 1 with p its mid-rank among the finite values (to the sketch's buckets)
    (lut, off, low, length), bucket = _strength_inputs([v])
    S = np.empty((v.size, 1), np.float32)
    ref.persona_strengths([v], lut, off, low, length, bucket, S)
    fin = np.isfinite(v)
    w = v[fin]
    coord = ref.bucket_coords(w, *bucket)
    below = (coord[:, None] > coord[None, :]).sum(1)
    same = (coord[:, None] == coord[None, :]).sum(1)
    want = 2 * (below + 0.5 * same) / w.size - 1
    np.testing.assert_allclose(S[fin, 0], want, atol=1e-6)
    for backend in ("cython", "numba"):
        got = np.empty_like(S)
        _kern(backend).persona_strengths([v], lut, off, low, length, bucket, got, 1)
        np.testing.assert_array_equal(got, S)


@given(hnp.arrays(np.float64, st.integers(0, 80),
                  elements=st.one_of(st.floats(-1e15, 1e15), st.just(np.nan), st.just(np.inf), st.just(0.0))))
def test_summarise_equals_numpy(v):
    from segone.sketch import summarise

    cnt, mean, m2, mx, sk = summarise(v)
    w = v[np.isfinite(v)]
    assert cnt == w.size == sk.count
    if w.size:
        assert mean == pytest.approx(w.mean(), rel=1e-9, abs=1e-6 * (np.abs(w).max() + 1))
        assert m2 == pytest.approx(((w - w.mean()) ** 2).sum(), rel=1e-6, abs=1e-6 * (np.abs(w).max() + 1) ** 2)
        assert mx == w.max()
        for q in (0.0, 0.1, 0.5, 0.9, 1.0):  # within the sketch's relative accuracy of the exact quantile
            exact = np.sort(w)[int(np.floor(q * (w.size - 1)))]
            assert abs(sk.quantile(q) - exact) <= 0.005 * abs(exact) + 1e-9


def test_slot_values_are_gathered_by_column():
    from segone.describe import _sentences

    rng = np.random.default_rng(3)
    cols = [rng.normal(size=40) for _ in range(5)]
    feat = rng.integers(-1, 7, (40, 3))  # 5 and 6: categorical columns (no value)
    got = _sentences._gather(feat, cols)
    for i in range(40):
        for s in range(3):
            j = feat[i, s]
            if 0 <= j < 5:
                assert got[i, s] == cols[j][i]
            else:
                assert np.isnan(got[i, s])


def test_a_malformed_distinguishing_rule_is_a_parameter_error():
    t, lab = _profiles(7, [10, 10], [500, 700], n=50)
    for bad in ({"columns": [("spend_365d", "spends {amount}")]}, {"columns": [("spend_365d",)]},
                {"columns": "spend_365d"}, [], {"min_difference": "x", "columns": []}):  # fmt: skip
        with pytest.raises(ParameterError, match="distinguish"):
            segone.describe_segments(t, lab, 2, rules=dict(DEFAULT_LABEL_RULES, distinguish=bad))


def test_segment_contrast_says_what_sets_a_customer_apart_from_their_segment():
    # two segments of spenders: the low one's biggest spender is typical for the base but top of their segment
    rng = np.random.default_rng(0)
    n = 4000
    seg = np.repeat([0, 1], n // 2)
    spend = np.where(seg == 0, rng.uniform(10, 100, n), rng.uniform(1000, 2000, n))
    spend[0] = 99.9  # segment 0's top spender
    orders = rng.integers(1, 20, n).astype(np.int64)
    t = pa.table({"customer_id": np.arange(n), "spend_total": spend, "orders": orders})
    stats = SegmentStats.of(t, seg, 2)
    pm = PersonaModel(min_strength=0.95).fit(t)
    plain = pm.personas(t, seg)
    assert all(tr["against"] == "base" for row in plain.column("traits").to_pylist() for tr in row)
    out = pm.set_segments(stats.segment_sketches()).personas(t, seg)
    rows = out.column("traits").to_pylist()
    mine = [tr for tr in rows[0] if tr["against"] == "segment"]
    assert [tr["feature"] for tr in mine] == ["spend_total"] and mine[0]["percentile"] > 0.99
    assert out.column("summary")[0].as_py() == "For their segment, spends 1.8x the typical customer"
    groups = dict(zip(pm.features_, pm.groups_))
    for row in rows:  # at most one segment trait, never of a group the base traits already name
        segt = [tr for tr in row if tr["against"] == "segment"]
        assert len(segt) <= 1
        if segt:
            assert abs(segt[0]["strength"]) >= 0.8
            assert groups[segt[0]["feature"]] not in {groups[tr["feature"]] for tr in row if tr["against"] == "base"}
    # customers without a segment (-1) get no contrast
    none = pm.personas(t, np.full(n, -1))
    assert all(tr["against"] == "base" for row in none.column("traits").to_pylist() for tr in row)
