"""The sweep over k: its columns against scikit-learn, its mergeable state, the automatic choice and bad input."""

import doctest
import json

import numpy as np
import pyarrow as pa
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score, silhouette_score

import segone
from segone import tuning as S
from segone._engine import LocalEngine
from segone._state import merge_all
from segone.errors import DataError, ParameterError, SegoneError

COLUMNS = ["k", "inertia", "silhouette", "silhouette_se", "calinski_harabasz", "davies_bouldin", "stability",
           "stability_std", "gaussian_gap", "min_share", "empty_segments", "chosen"]  # fmt: skip


def _blobs(centers, n=6000, d=8, seed=0):
    X, y = make_blobs(n, n_features=d, centers=centers, cluster_std=1.0, center_box=(-12, 12), random_state=seed)
    return X.astype(np.float32), y


@pytest.fixture(scope="module")
def synth():
    d = segone.synth.generate(20000, seed=0)
    profiles = segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
    X = segone.FeatureScorer().fit_transform(profiles)
    truth = d.truth.sort_by("customer_id")
    assert profiles.column("customer_id").to_pylist() == truth.column("customer_id").to_pylist()
    return X, truth.column("segment").to_numpy()


@pytest.fixture(scope="module")
def synth_sweep(synth):
    return S.sweep(synth[0], random_state=0)


# ----------------------------------------------------------------------------- the automatic choice
def test_synth_choice_is_six_and_recovers_the_truth(synth, synth_sweep):
    X, truth = synth
    res = synth_sweep
    assert res.table.column_names == COLUMNS
    assert res.table.column("k").to_pylist() == list(range(2, 21))
    assert res.best_k == 6, res.reason
    assert res.structure and "k=6" in res.reason
    assert res.table.column("chosen").to_pylist() == [k == 6 for k in range(2, 21)]
    assert adjusted_rand_score(truth, res.labels(X)) >= 0.95
    row = res.table.filter(pa.compute.equal(res.table.column("k"), 6)).to_pylist()[0]
    assert row["stability"] >= 0.95 and row["gaussian_gap"] > 0.5 and row["empty_segments"] == 0
    assert res.n_rows == res.sample_rows == 20000
    # the full-data columns are those of scikit-learn for the same labels
    lab = res.labels(X, 6)
    assert row["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, lab), rel=1e-6)
    assert row["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, lab), rel=1e-4)
    C = res.centers[6].astype(np.float64)
    assert row["inertia"] == pytest.approx(((X.astype(np.float64) - C[lab]) ** 2).sum(), rel=1e-6)  # float32 kernel
    rec = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert rec["best_k"] == 6 and len(rec["table"]) == 19


@pytest.mark.parametrize("centers", [4, 9])
def test_blobs_choice_is_the_number_of_centres(centers):
    X, y = _blobs(centers, seed=centers)
    res = S.sweep(X, k_max=12, random_state=1)
    assert res.best_k == centers, res.reason
    assert adjusted_rand_score(y, res.labels(X)) > 0.99


@pytest.mark.parametrize("scales", [np.ones(8), np.array([6.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.1])],
                         ids=["isotropic", "elongated"])  # fmt: skip
def test_single_gaussian_has_no_structure(scales):
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((6000, 8)) * scales + 5.0).astype(np.float32)
    res = S.sweep(X, k_max=10, random_state=0)
    assert res.best_k is None and not res.structure
    assert res.reason.startswith("no cluster structure")
    assert not any(res.table.column("chosen").to_pylist())
    # the elongated Gaussian splits stably along its long axis: only the Gaussian null rejects it
    assert np.nanmax(res.table.column("gaussian_gap").to_numpy()) < S.RULE["min_gaussian_gap"]
    k, rec = S.auto_clusters(res)
    assert k == S.DEFAULT_FALLBACK_K and rec["fallback"] and "no cluster structure" in rec["note"]


def test_choose_k_rule_on_a_handmade_table():
    def table(sil, stab, gap, empty=None):
        n = len(sil)
        return pa.table({"k": list(range(2, 2 + n)), "silhouette": sil, "stability": stab, "gaussian_gap": gap,
                         "empty_segments": empty or [0] * n})  # fmt: skip

    # smallest k within the tolerance of the best stable silhouette
    assert S.choose_k(table([0.50, 0.59, 0.60, 0.40], [0.9, 0.9, 0.9, 0.9], [1, 1, 1, 1]))[0] == 3
    # the best silhouette is unstable: the next stable one wins
    assert S.choose_k(table([0.50, 0.70, 0.40], [0.9, 0.5, 0.9], [1, 1, 1]))[0] == 2
    # not better than a Gaussian / low silhouette / empty segments -> no structure, and why
    k, why = S.choose_k(table([0.5, 0.5], [0.9, 0.9], [0.01, 0.02]))
    assert k is None and "single Gaussian" in why
    k, why = S.choose_k(table([0.2, 0.1], [0.9, 0.9], [1, 1]))
    assert k is None and "silhouette" in why
    k, why = S.choose_k(table([0.9, 0.9], [0.9, 0.9], [1, 1], [1, 2]))
    assert k is None and "empty" in why
    assert S.choose_k(table([0.5, 0.59, 0.60], [0.9] * 3, [1] * 3), tolerance=0.0)[0] == 4


# ----------------------------------------------------------------------------- the statistics
def _member_means(X, lab, k):
    return np.stack([X[lab == j].astype(np.float64).mean(0) for j in range(k)])


@pytest.mark.parametrize("kind", ["kmeans", "random"])
def test_sweep_stats_equal_sklearn(kind):
    rng = np.random.default_rng(5)
    X, _ = make_blobs(3000, n_features=5, centers=4, cluster_std=2.0, random_state=2)
    X = X + 50.0  # far from the origin: the shift keeps the sums of squares well conditioned
    k = 6
    if kind == "kmeans":
        C = X[rng.choice(len(X), k, replace=False)]
        lab = segone.assign(X, C).labels
    else:
        lab = rng.integers(0, k, len(X))
    M = _member_means(X, lab, k)
    fin = S.SweepStats.of_labels(X, lab, k, means=M, shift=X.mean(0)).finish()
    assert fin["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, lab), rel=1e-10)
    assert fin["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, lab), rel=1e-10)
    if kind == "kmeans":  # labels by the kernel: the same numbers
        fin2 = S.SweepStats.of(X, C, means=M, shift=X.mean(0)).finish()
        assert fin2["calinski_harabasz"] == pytest.approx(fin["calinski_harabasz"], rel=1e-10)
        assert fin2["davies_bouldin"] == pytest.approx(fin["davies_bouldin"], rel=1e-10)
        assert fin2["inertia"] == pytest.approx(((X - C[lab]) ** 2).sum(), rel=1e-9)
    # float32 rows: scikit-learn averages in float32, so agreement is to float32 precision
    X32 = X.astype(np.float32)
    fin32 = S.SweepStats.of_labels(X32, lab, k, means=_member_means(X32, lab, k), shift=X.mean(0)).finish()
    assert fin32["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X32, lab), rel=1e-4)
    assert fin32["davies_bouldin"] == pytest.approx(davies_bouldin_score(X32, lab), rel=1e-4)


def test_sweep_stats_empty_segments_are_left_out_as_in_sklearn():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    lab = rng.integers(0, 3, 500) * 2  # segments 1, 3 empty
    fin = S.SweepStats.of_labels(X, lab, 6, means=np.nan_to_num(np.stack(
        [X[lab == j].mean(0) if (lab == j).any() else np.zeros(3) for j in range(6)]))).finish()  # fmt: skip
    assert fin["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, lab), rel=1e-10)
    assert fin["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, lab), rel=1e-10)


def test_sweep_stats_merge_of_random_splits_equals_the_whole():
    rng = np.random.default_rng(11)
    X = (rng.normal(size=(4000, 6)) * 3 + 10).astype(np.float32)
    C = X[:7].copy()
    lab = segone.assign(X, C).labels
    M = _member_means(X, lab, 7)
    shift = X.mean(0, dtype=np.float64)
    whole = S.SweepStats.of(X, C, means=M, shift=shift)
    for trial in range(5):
        cuts = np.sort(rng.integers(0, len(X) + 1, size=trial + 1))
        if trial == 4:
            cuts = np.array([0, 0, 1000, 1000])  # empty pieces
        bounds = [0, *cuts.tolist(), len(X)]
        parts = [S.SweepStats.of(X[a:b], C, means=M, shift=shift) for a, b in zip(bounds, bounds[1:])]
        merged = merge_all(parts, split_every=2)
        for name in ("counts", "sums", "sumsq", "dist"):
            np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-9)
        assert merged.inertia == pytest.approx(whole.inertia, rel=1e-12)
        a, b = merged.finish(), whole.finish()
        assert a["calinski_harabasz"] == pytest.approx(b["calinski_harabasz"], rel=1e-12)
        assert a["davies_bouldin"] == pytest.approx(b["davies_bouldin"], rel=1e-12)
    again = S.SweepStats.from_dict(json.loads(json.dumps(whole.to_dict())))
    assert again == whole
    # the round state of several k merges k by k and survives plain data
    rounds = [S.stats_piece(X[a:b], centers=[C, C[:3]], means=[M, _member_means(X, segone.assign(X, C[:3]).labels, 3)],
                            shift=shift) for a, b in ((0, 1500), (1500, 1500), (1500, 4000))]  # fmt: skip
    merged = merge_all(rounds)
    np.testing.assert_allclose(merged.states[0].sums, whole.sums, rtol=1e-12, atol=1e-9)
    assert S.SweepRound.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged
    with pytest.raises(ParameterError, match="different reference means"):
        whole.merge(S.SweepStats.of(X, C, means=M + 1, shift=shift))
    with pytest.raises(ParameterError, match="shift"):
        whole.merge(S.SweepStats.of(X, C, means=M, shift=shift + 1))


def test_silhouette_equals_sklearn_on_its_rows_and_its_error_is_honest():
    X, y = make_blobs(5000, n_features=6, centers=5, cluster_std=2.5, random_state=1)
    rng = np.random.default_rng(0)
    idx = rng.choice(5000, 800, replace=False)
    (v,), (se,) = S.silhouette_multi(X[idx], [(y[idx], 5)])
    assert v == pytest.approx(silhouette_score(X[idx], y[idx]), abs=1e-6)
    # the estimate on a uniform sample vs the silhouette of all 5000 rows, over 12 independent samples
    full = silhouette_score(X, y)
    z = []
    for seed in range(12):
        idx = np.random.default_rng(100 + seed).choice(5000, 1000, replace=False)
        (v,), (se,) = S.silhouette_multi(X[idx], [(y[idx], 5)])
        z.append((v - full) / se)
    z = np.abs(np.array(z))
    assert z.max() < 3.0 and np.mean(z < 1.0) >= 0.5 and np.mean(z < 2.0) >= 0.8, z


def test_sweep_columns_against_sklearn_for_the_same_labels():
    X, y = _blobs(5, n=5000, d=6, seed=7)
    res = S.sweep(X, k_max=7, random_state=0, silhouette_sample=2000)
    for row in res.table.to_pylist():
        lab = res.labels(X, row["k"])
        assert row["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, lab), rel=1e-5)
        assert row["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, lab), rel=1e-4)
        full = silhouette_score(X, lab)
        assert abs(row["silhouette"] - full) <= 3 * row["silhouette_se"] + 1e-9, (row["k"], row["silhouette"], full)
    assert res.best_k == 5


# ----------------------------------------------------------------------------- engines
def test_sweep_parts_is_the_same_over_parts_and_on_dask():
    X, _ = _blobs(3, n=3000, d=4, seed=3)
    kw = {"k_max": 5, "random_state": 2, "silhouette_sample": 600, "n_resamples": 2}
    one = S.sweep_parts(LocalEngine(), [X], X, **kw)
    parts = [X[:1000], X[1000:1000], X[1000:]]
    many = S.sweep_parts(LocalEngine(), parts, X, **kw)
    from segone.dask import DaskEngine

    with DaskEngine() as eng:  # the threaded scheduler
        dask = S.sweep_parts(eng, parts, X, **kw)
    for other in (many, dask):
        assert other.best_k == one.best_k == 3
        for name in ("k", "silhouette", "silhouette_se", "stability", "gaussian_gap", "empty_segments"):
            assert other.table.column(name).to_pylist() == one.table.column(name).to_pylist()
        for name in ("inertia", "calinski_harabasz", "davies_bouldin", "min_share"):
            np.testing.assert_allclose(other.table.column(name).to_numpy(), one.table.column(name).to_numpy(),
                                       rtol=1e-10)  # fmt: skip
    # the same seed gives the same table
    assert S.sweep_parts(LocalEngine(), [X], X, **kw).table.equals(one.table)


def test_docstring_examples():
    result = doctest.testmod(S, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- bad input
def test_bad_ranges_raise_clear_errors():
    X, _ = _blobs(3, n=30, d=3)
    with pytest.raises(ParameterError, match=r"k_max=40 is larger than the number of rows \(n_rows=30\)"):
        S.sweep(X, k_min=2, k_max=40)
    with pytest.raises(ParameterError, match="k_min must be >= 2"):
        S.sweep(X, k_min=1, k_max=5)
    with pytest.raises(ParameterError, match="at least two values of k"):
        S.sweep(X, k_min=4, k_max=4)
    with pytest.raises(ParameterError, match="holds one value"):
        S.sweep(X, ks=[5])
    with pytest.raises(ParameterError, match="every k must be >= 2"):
        S.sweep(X, ks=[1, 2, 3])
    with pytest.raises(ParameterError, match="either ks or k_min"):
        S.sweep(X, ks=[2, 3], k_max=5)
    with pytest.raises(ParameterError, match="two halves"):
        S.sweep(X, k_min=2, k_max=20)  # 30 rows cannot be split into halves of 20
    with pytest.raises(ParameterError, match="rule has unknown keys"):
        S.sweep(X, k_max=3, rule={"min_stabilty": 0.5})
    Xn = X.copy()
    Xn[7, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        S.sweep(Xn, k_max=3)
    assert issubclass(ParameterError, SegoneError) and issubclass(DataError, SegoneError)


def test_constant_and_degenerate_data_give_documented_results():
    # every feature constant: nothing to segment
    res = S.sweep(np.full((500, 4), 3.0, dtype=np.float32), k_max=6)
    assert res.best_k is None and res.constant and "constant" in res.reason
    assert S.auto_clusters(res)[0] == 1
    # one constant feature among informative ones changes nothing
    X, y = _blobs(4, n=3000, d=5, seed=4)
    Xc = np.hstack([X, np.full((len(X), 1), 7.0, dtype=np.float32)])
    res = S.sweep(Xc, k_max=8, random_state=0)
    assert res.best_k == 4 and adjusted_rand_score(y, res.labels(Xc)) > 0.99
    assert S.auto_clusters(res)[0] == 4
    # three distinct points: every k above 3 leaves segments empty and is never chosen
    pts = np.array([[0, 0], [10, 0], [0, 10]], dtype=np.float32)
    X3 = pts[np.random.default_rng(0).integers(0, 3, 600)]
    res = S.sweep(X3, k_max=6, random_state=0)
    empty = dict(zip(res.table.column("k").to_pylist(), res.table.column("empty_segments").to_pylist()))
    assert empty[3] == 0 and all(empty[k] > 0 for k in (4, 5, 6))
    assert res.best_k == 3
