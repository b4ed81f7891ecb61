import numpy as np
import pyarrow as pa
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from segone import Segmenter
from segone.errors import DataError, NotFittedError, ParameterError


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(
        n_samples=20_000, n_features=16, centers=32, cluster_std=np.linspace(0.5, 2.5, 32),
        center_box=(-10, 10), random_state=0,
    )  # fmt: skip
    return X.astype(np.float32), y


def inertia64(X, C):
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    d = (X64**2).sum(1)[:, None] - 2 * X64 @ C64.T + (C64**2).sum(1)[None]
    return float(np.maximum(d, 0).min(1).sum())


def test_blobs_quality(blobs, backend):
    X, y = blobs
    seg = Segmenter(32, random_state=0, backend=backend).fit(X)
    assert adjusted_rand_score(y, seg.labels_) >= 0.95
    assert seg.cluster_centers_.dtype == np.float32
    assert seg.labels_.dtype == np.int32 and seg.labels_.shape == (X.shape[0],)
    assert seg.inertia_ == pytest.approx(inertia64(X, seg.cluster_centers_), rel=1e-5)
    assert seg.counts_.sum() == pytest.approx(X.shape[0])
    np.testing.assert_array_equal(seg.predict(X), seg.labels_)
    assert seg.score(X) == pytest.approx(-seg.inertia_, rel=1e-6)
    assert seg.n_steps_ == 0 and seg.n_iter_ >= 1  # the sample algorithm: Lloyd iterations, no mini-batch step
    mb = Segmenter(32, algorithm="minibatch", random_state=0, backend=backend).fit(X)
    assert mb.n_steps_ >= 1 and mb.n_iter_ >= 1
    assert adjusted_rand_score(y, mb.labels_) >= 0.95


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_sklearn_lloyd_from_same_init(backend, dtype):
    X, _ = make_blobs(n_samples=3000, n_features=5, centers=6, cluster_std=2.0, random_state=1)
    X = X.astype(dtype)
    init = X[:6].copy()
    ours = Segmenter(6, init=init, max_iter=0, refine=300, backend=backend).fit(X)
    ref = KMeans(6, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=0).fit(X)
    rtol = 1e-4 if dtype == np.float32 else 1e-7
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=rtol)


def test_deterministic_across_threads_and_backends(blobs):
    X, _ = blobs
    fits = [Segmenter(16, random_state=3, backend=b, n_threads=t).fit(X) for b in ("cython", "numba") for t in (1, 2)]
    for f in fits[1:]:
        np.testing.assert_allclose(f.cluster_centers_, fits[0].cluster_centers_, rtol=1e-5, atol=1e-5)
        assert (f.labels_ == fits[0].labels_).mean() > 0.999
    np.testing.assert_array_equal(fits[0].cluster_centers_, fits[1].cluster_centers_)


def test_partial_fit_close_to_fit(blobs):
    X, _ = blobs
    full = Segmenter(32, random_state=0, n_init=5).fit(X)
    inc = Segmenter(32, random_state=0, n_init=5)
    for _epoch in range(2):
        for chunk in np.array_split(X, 5):
            inc.partial_fit(chunk)
    assert inc.n_steps_ == 10
    assert -inc.score(X) <= full.inertia_ * 1.01


def test_partial_fit_decay_follows_drift():
    rng = np.random.default_rng(0)
    old = rng.normal(0, 0.1, size=(2000, 2)) + [0, 0]
    new = rng.normal(0, 0.1, size=(2000, 2)) + [5, 5]
    seg = Segmenter(1, random_state=0, decay=0.5)
    for _ in range(3):
        seg.partial_fit(old)
    for _ in range(6):
        seg.partial_fit(new)
    np.testing.assert_allclose(seg.cluster_centers_[0], [5, 5], atol=0.2)
    keep = Segmenter(1, random_state=0)
    for _ in range(3):
        keep.partial_fit(old)
    for _ in range(6):
        keep.partial_fit(new)
    assert keep.cluster_centers_[0, 0] < 4.0  # without decay the past still weighs


def test_k_equals_n_and_k_equals_one(backend):
    X = np.random.default_rng(0).normal(size=(12, 3))
    seg = Segmenter(12, random_state=0, backend=backend).fit(X)
    assert seg.inertia_ == pytest.approx(0.0, abs=1e-9)
    assert sorted(seg.labels_.tolist()) == list(range(12))
    one = Segmenter(1, random_state=0, backend=backend).fit(X)
    np.testing.assert_allclose(one.cluster_centers_[0], X.mean(0), atol=1e-12)


def test_duplicates_fewer_distinct_points_than_clusters():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 50, axis=0)
    with pytest.warns(UserWarning, match="3 distinct points"):
        seg = Segmenter(5, random_state=0).fit(X)
    assert (seg.counts_ > 0).sum() == 3
    assert seg.inertia_ == pytest.approx(0.0)


def test_constant_feature_and_zero_weights():
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(size=400), np.full(400, 3.0)])
    X[:200, 0] += 10
    w = np.ones(400)
    w[:200] = 0.0
    w[0] = 1.0  # one weighted row in the first group
    seg = Segmenter(2, random_state=0).fit(X, sample_weight=w)
    assert np.isfinite(seg.cluster_centers_).all()
    np.testing.assert_allclose(seg.cluster_centers_[:, 1], 3.0)
    assert seg.counts_.sum() == pytest.approx(w.sum())


def test_one_cluster_empty_after_init_is_relocated():
    X = np.vstack([np.zeros((100, 2)), np.full((100, 2), 10.0)])
    init = np.array([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])  # third centre attracts nothing
    seg = Segmenter(3, init=init, max_iter=0, refine=5).fit(X + np.random.default_rng(0).normal(0, 0.1, X.shape))
    assert (seg.counts_ > 0).all()


def test_arrow_input_and_predict_transform():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    t = pa.table({f"f{i}": X[:, i] for i in range(3)})
    seg = Segmenter(4, random_state=0).fit(t)
    np.testing.assert_array_equal(seg.predict(X), seg.labels_)
    D = seg.transform(X)
    assert D.shape == (500, 4)
    np.testing.assert_array_equal(D.argmin(1), seg.labels_)


def test_params_api():
    seg = Segmenter(5, batch_size=128)
    p = seg.get_params()
    assert p["n_clusters"] == 5 and p["batch_size"] == 128 and "refine" in p
    seg.set_params(n_clusters=3)
    assert seg.n_clusters == 3
    assert "n_clusters=3" in repr(seg)
    with pytest.raises(ParameterError, match="no parameter 'k'"):
        seg.set_params(k=3)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_clusters": 0}, "n_clusters must be >= 1"),
        ({"n_clusters": 11}, "larger than the number of samples"),
        ({"batch_size": 0}, "batch_size"),
        ({"init": "kmeans"}, "init="),
        ({"init": np.zeros((2, 2))}, "init array has shape"),
        ({"reassignment_ratio": 2.0}, "reassignment_ratio"),
        ({"decay": 0.0}, "decay"),
        ({"refine": -1}, "refine"),
        ({"n_init": 0}, "n_init"),
        ({"backend": "gpu"}, "backend"),
        ({"random_state": "x"}, "random_state"),
    ],
)
def test_parameter_validation(params, match):
    X = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ParameterError, match=match):
        Segmenter(**{"n_clusters": 2, **params}).fit(X)


def test_data_validation():
    X = np.random.default_rng(0).normal(size=(10, 3))
    X[4, 1] = np.nan
    with pytest.raises(DataError, match="first rows: 4"):
        Segmenter(2).fit(X)
    with pytest.raises(DataError, match="sample_weight"):
        Segmenter(2).fit(np.ones((3, 2)), sample_weight=[1, -1, 1])
    with pytest.raises(ParameterError, match="sample_weight has shape"):
        Segmenter(2).fit(np.ones((3, 2)), sample_weight=[1, 1])
    with pytest.raises(NotFittedError):
        Segmenter(2).predict(np.ones((3, 2)))
    seg = Segmenter(2, random_state=0).fit(np.random.default_rng(1).normal(size=(20, 3)))
    with pytest.raises(ParameterError, match="3"):
        seg.predict(np.ones((2, 4)))


def test_nan_rows_outside_the_init_sample_are_named():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50_000, 3)).astype(np.float32)
    X[[123, 40_000]] = np.nan
    with pytest.raises(DataError, match="2 rows.*123, 40000"):
        Segmenter(4, random_state=0, init_size=100, batch_size=64).fit(X)
    with pytest.raises(DataError, match="123, 40000"):
        Segmenter(4, random_state=0, init=X[1:5], max_iter=0).fit(X)


def test_half_life_equals_decay_and_validation():
    rng = np.random.default_rng(1)
    chunks = [rng.normal(loc=i, size=(500, 2)) for i in range(4)]
    a = Segmenter(2, random_state=0, half_life=2.0)
    b = Segmenter(2, random_state=0, decay=0.5**0.5)
    for c in chunks:
        a.partial_fit(c)
        b.partial_fit(c)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_allclose(a.counts_, b.counts_)
    with pytest.raises(ParameterError, match="either decay or half_life"):
        Segmenter(2, decay=0.5, half_life=3).partial_fit(chunks[0])
    with pytest.raises(ParameterError, match="half_life"):
        Segmenter(2, half_life=0).fit(chunks[0])


def test_partial_fit_after_fit_and_backends_agree():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3000, 4)).astype(np.float32)
    fits = []
    for backend in ("cython", "numba"):
        seg = Segmenter(5, random_state=0, backend=backend).fit(X)
        seg.partial_fit(X[:1000])
        fits.append(seg)
    np.testing.assert_allclose(fits[0].cluster_centers_, fits[1].cluster_centers_, rtol=1e-5, atol=1e-5)


def test_reorder_clusters_keeps_the_model_consistent():
    rng = np.random.default_rng(3)
    X = np.vstack([rng.normal(c, 0.1, size=(n, 2)) for c, n in ((0, 50), (5, 200), (10, 100))])
    seg = Segmenter(3, random_state=0).fit(X)
    before = seg.predict(X)
    order = np.argsort(-seg.counts_)
    counts, totals = seg.counts_.copy(), seg._totals.copy()
    seg.reorder_clusters(order)
    np.testing.assert_array_equal(seg.counts_, counts[order])
    np.testing.assert_array_equal(seg._totals, totals[order])
    np.testing.assert_array_equal(seg.predict(X), seg.labels_)
    np.testing.assert_array_equal(order[seg.labels_], before)
    assert (np.diff(np.bincount(seg.labels_)) <= 0).all()
    with pytest.raises(ParameterError, match="permutation"):
        seg.reorder_clusters([0, 0, 1])


def test_sample_algorithm_reaches_full_kmeans_quality():
    # the default fit (seeding + Lloyd on a sample, then the labelling pass) against scikit-learn's full k-means,
    # best of 3
    X = make_blobs(60_000, n_features=8, centers=12, cluster_std=np.linspace(0.5, 2.5, 12), random_state=4)[0]
    X = X.astype(np.float32)
    best = min(KMeans(16, n_init=1, random_state=s).fit(X).inertia_ for s in range(3))
    got = [Segmenter(16, sample_size=8192, random_state=s).fit(X) for s in range(3)]
    assert np.median([g.inertia_ for g in got]) <= 1.01 * best
    for g in got:
        assert g.n_passes_ == 1 and g.n_steps_ == 0  # no refine pass by default: the labelling pass only
        assert g.inertia_ == pytest.approx(inertia64(X, g.cluster_centers_), rel=1e-5)


@pytest.mark.parametrize("bad", [{"algorithm": "elkan"}, {"sample_size": 0}, {"refine": "some"}, {"refine": -1}])
def test_bad_algorithm_settings_are_refused(bad):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ParameterError):
        Segmenter(2, **bad).fit(X)
