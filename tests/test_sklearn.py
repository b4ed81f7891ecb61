"""segone's estimators as scikit-learn drop-ins: the check suite, Pipeline, clone, search, routing, set_output."""

import inspect
import warnings

import numpy as np
import pyarrow as pa
import pytest

import sklearn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.cluster import MiniBatchKMeans  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator, parametrize_with_checks  # noqa: E402

import segone  # noqa: E402
from segone import FeatureScorer, Segmenter  # noqa: E402
from segone.errors import DataError, NotFittedError, ParameterError, SchemaError, SegoneError  # noqa: E402

import pandas as pd  # noqa: E402

# The checks Segmenter fails, each one failed by MiniBatchKMeans too (test below):
# fitting with integer weights is not the same as repeating rows, because the
# seeding and the mini-batches are random draws over the rows.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "stochastic: weights and repeated rows give different random draws (MiniBatchKMeans fails it too)"
    ),
}


@pytest.fixture(scope="module")
def X():
    X, _ = make_blobs(n_samples=600, n_features=4, centers=3, random_state=0)
    return X


def _failed(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None, on_skip=None)
    return {r["check_name"] for r in results if r["status"] == "failed"}, {r["check_name"] for r in results}


def test_check_suite_fails_only_where_minibatchkmeans_fails():
    """Every check MiniBatchKMeans passes, Segmenter passes (the failures are a subset, listed above)."""
    from threadpoolctl import threadpool_limits

    # the reference's verdicts do not depend on its thread count; on one OpenMP thread its checks stop spinning
    # idle threads between their many small parallel regions (~1 s of CPU instead of ~8-17 s on 2 shared cores)
    with threadpool_limits(1):
        mbk_failed, mbk_run = _failed(MiniBatchKMeans(n_init=1))
    seg_failed, seg_run = _failed(Segmenter())
    assert seg_failed <= mbk_failed, f"Segmenter fails checks MiniBatchKMeans passes: {seg_failed - mbk_failed}"
    assert seg_failed == set(EXPECTED_FAILED_CHECKS)
    # the sparse-input checks that MiniBatchKMeans runs are run for Segmenter too (it refuses sparse input clearly)
    assert {"check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_estimator_sparse_tag"} <= seg_run
    assert len(seg_run) >= len(mbk_run) - 2  # minus the sparse weight-equivalence check and the skipped array API one


_STRICT = {"xfail_strict": True} if "xfail_strict" in inspect.signature(parametrize_with_checks).parameters else {}


@parametrize_with_checks([Segmenter()], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS, **_STRICT)
def test_sklearn_check(estimator, check):
    check(estimator)


def test_pipeline_fit_predict_and_y_is_not_a_weight(X):
    y = np.arange(len(X)) % 3 + 10  # labels a Pipeline passes on as the second argument
    pipe = make_pipeline(StandardScaler(), Segmenter(3, random_state=0)).fit(X, y)
    Xs = StandardScaler().fit_transform(X)
    ref = Segmenter(3, random_state=0).fit(Xs)
    np.testing.assert_array_equal(pipe.predict(X), ref.labels_)
    assert pipe.score(X) == pytest.approx(ref.score(Xs))
    np.testing.assert_allclose(pipe.transform(X), ref.transform(Xs), rtol=1e-6)
    np.testing.assert_array_equal(Segmenter(3, random_state=0).fit(Xs, y).cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(Segmenter(3, random_state=0).fit_predict(Xs, y), ref.labels_)


def test_clone_params_and_repr(X):
    seg = Segmenter(4, batch_size=128, random_state=np.random.RandomState(3), init="random").fit(X)
    c = clone(seg)
    assert c.get_params()["n_clusters"] == 4 and not hasattr(c, "cluster_centers_")
    assert repr(Segmenter(3, refine=0)) == "Segmenter(n_clusters=3, refine=0)"
    assert "Segmenter" in Segmenter()._repr_html_()  # the notebook display
    with pytest.raises(ParameterError, match="Segmenter has no parameter 'k'; valid parameters: algorithm, backend, batch_size"):
        Segmenter().set_params(k=3)
    sc = FeatureScorer(["orders", ("spend_total", "log1p", "robust")], weights={"orders": 2.0}, clip=3.0)
    c = clone(sc)
    assert c.get_params() == sc.get_params() and c.get_params()["features"] is not sc.features
    assert repr(FeatureScorer(scaling="robust")) == "FeatureScorer(scaling='robust')"
    with pytest.raises(ParameterError, match="FeatureScorer has no parameter 'scale'"):
        FeatureScorer().set_params(scale="robust")


def test_grid_search_and_cross_val_score(X):
    gs = GridSearchCV(Segmenter(random_state=0), {"n_clusters": [2, 3]}, cv=3).fit(X)
    assert gs.best_params_ == {"n_clusters": 3}  # score = -inertia: more segments, lower inertia
    scores = cross_val_score(make_pipeline(StandardScaler(), Segmenter(3, random_state=0)), X, cv=3)
    assert scores.shape == (3,) and (scores < 0).all()


def test_metadata_routing_of_sample_weight(X):
    w = np.ones(len(X))
    w[: len(X) // 2] = 0.0
    w[0] = 1.0
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = make_pipeline(
            StandardScaler().set_fit_request(sample_weight=False),
            Segmenter(3, random_state=0).set_fit_request(sample_weight=True).set_score_request(sample_weight=True),
        )
        pipe.fit(X, sample_weight=w)
        ref = Segmenter(3, random_state=0).fit(StandardScaler().fit_transform(X), sample_weight=w)
        np.testing.assert_array_equal(pipe[-1].cluster_centers_, ref.cluster_centers_)
        assert pipe[-1].counts_.sum() == pytest.approx(w.sum())
        Xs = StandardScaler().fit_transform(X)
        assert pipe.score(X, sample_weight=w) == pytest.approx(ref.score(Xs, sample_weight=w))


def test_set_output(X):
    seg = Segmenter(3, random_state=0).set_output(transform="pandas")
    D = seg.fit_transform(pd.DataFrame(X, index=np.arange(len(X)) + 7))
    assert isinstance(D, pd.DataFrame) and list(D.columns) == ["segmenter0", "segmenter1", "segmenter2"]
    assert D.index[0] == 7  # the input's index comes back on the output, never into the features
    assert list(seg.get_feature_names_out()) == ["segmenter0", "segmenter1", "segmenter2"]
    import polars as pl
    out = Segmenter(3, random_state=0).set_output(transform="polars").fit(X).transform(X)
    assert isinstance(out, pl.DataFrame) and out.columns == ["segmenter0", "segmenter1", "segmenter2"]


def test_pandas_index_is_never_a_feature_and_feature_names(X):
    df = pd.DataFrame(X, columns=list("abcd"), index=np.arange(len(X)) * 3 + 1000)
    seg = Segmenter(3, random_state=0).fit(df)
    assert seg.n_features_in_ == 4 and list(seg.feature_names_in_) == list("abcd")
    ref = Segmenter(3, random_state=0).fit(X)
    np.testing.assert_array_equal(seg.cluster_centers_, ref.cluster_centers_)
    assert not hasattr(ref, "feature_names_in_")  # NumPy input: no names
    t = pa.Table.from_pandas(df)  # the index is a column of this table: a feature named "__index_level_0__"
    assert "__index_level_0__" in t.column_names


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_reordered_or_renamed_columns_raise(X):
    df = pd.DataFrame(X, columns=list("abcd"))
    seg = Segmenter(3, random_state=0).fit(df)
    with pytest.raises(SchemaError, match="Feature names must be in the same order as they were in fit.*names_in_"):
        seg.predict(df[list("dcba")])
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):  # SegoneErrors are ValueErrors too
        seg.transform(df.rename(columns={"a": "z"}))
    t = pa.table({c: df[c].to_numpy() for c in "badc"})
    with pytest.raises(SchemaError, match="same order"):
        seg.score(t)
    with pytest.raises(ParameterError, match="X has 3 features, but Segmenter is expecting 4 features as input"):
        seg.predict(X[:, :3])
    with pytest.raises(ParameterError, match="X has 3 features"):
        seg.partial_fit(X[:, :3])
    np.testing.assert_array_equal(seg.predict(df[list("abcd")]), seg.labels_)


@pytest.mark.parametrize("kind", ["none", "int", "numpy_int", "random_state", "generator"])
def test_random_state_kinds_are_recorded_reproducibly(X, kind):
    make = {"none": lambda: None, "int": lambda: 5, "numpy_int": lambda: np.int64(5),
            "random_state": lambda: np.random.RandomState(5),
            "generator": lambda: np.random.default_rng(5)}[kind]  # fmt: skip
    a = Segmenter(3, random_state=make()).fit(X)
    assert isinstance(a.seed_, int)
    again = Segmenter(3, random_state=a.seed_).fit(X)  # the recorded seed reproduces the fit
    np.testing.assert_array_equal(again.cluster_centers_, a.cluster_centers_)
    if kind != "none":  # the same seed, RandomState or Generator state gives the same fit
        np.testing.assert_array_equal(Segmenter(3, random_state=make()).fit(X).cluster_centers_, a.cluster_centers_)
    if kind in ("int", "numpy_int"):
        assert a.seed_ == 5
    # the parameter itself is never changed (clone and get_params see what the user gave)
    assert type(a.get_params()["random_state"]) is type(make())
    np.random.seed(11)  # None follows NumPy's global seeding, as in scikit-learn
    b = Segmenter(3).fit(X)
    np.random.seed(11)
    np.testing.assert_array_equal(Segmenter(3).fit(X).cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("bad", [-1, 1.5, "x", True])
def test_invalid_random_state(X, bad):
    with pytest.raises(ParameterError, match="random_state must be None, a non-negative int, a numpy RandomState"):
        Segmenter(3, random_state=bad).fit(X)


def test_fitted_attributes_mean_what_they_mean_in_minibatchkmeans(X):
    X32 = X.astype(np.float32)
    seg = Segmenter(3, algorithm="minibatch", batch_size=100, max_iter=2, max_no_improvement=None, refine=3,
                    random_state=0).fit(X32)  # fmt: skip
    assert seg.n_steps_ == 2 * len(X) // 100
    # iterations over the full data: 2 mini-batch epochs + the Lloyd refine iterations run
    assert seg.n_iter_ == 2 + (seg.n_passes_ - 1) and 1 <= seg.n_passes_ <= 4
    # one epoch, no refine: as MiniBatchKMeans
    assert Segmenter(3, algorithm="minibatch", refine=0, random_state=0).fit(X).n_iter_ == 1
    # the default (sample) algorithm takes no mini-batch step; its Lloyd iterations count in the sample's share
    # of the data (all of it here: 600 rows) plus the refine passes
    seg = Segmenter(3, refine=0, random_state=0).fit(X32)
    assert seg.n_steps_ == 0 and seg.n_passes_ == 1 and seg.n_iter_ >= 1
    inc = Segmenter(3, random_state=0)
    for chunk in np.array_split(X32, 3):
        inc.partial_fit(chunk)
        assert inc.labels_.shape == (len(chunk),)  # labels_ and inertia_ of the last batch
        np.testing.assert_array_equal(inc.labels_, inc.predict(chunk))
        assert inc.inertia_ == pytest.approx(-inc.score(chunk), rel=1e-6)
    assert inc.n_steps_ == 3 and not hasattr(inc, "n_iter_")  # partial_fit makes no pass over the full data
    assert inc.n_features_in_ == 4 and inc.cluster_centers_.dtype == np.float32


def test_float32_kept_and_copies_only_when_needed(X):
    from segone._validation import check_estimator_input

    X32 = np.ascontiguousarray(X, dtype=np.float32)
    est = Segmenter()
    assert check_estimator_input(est, X32, reset=True) is X32  # no copy, no upcast
    F = np.asfortranarray(X32)
    C = check_estimator_input(est, F, reset=True)
    assert C.flags.c_contiguous and C.dtype == np.float32
    assert check_estimator_input(est, X.astype(np.int32), reset=True).dtype == np.float64
    seg = Segmenter(3, random_state=0).fit(X32)
    assert seg.cluster_centers_.dtype == np.float32 and seg.transform(X32).dtype == np.float32


def test_errors_are_segone_errors_with_sklearn_meaning(X):
    import scipy.sparse as scipy_sparse
    with pytest.raises(SchemaError, match="[Ss]parse data was passed.*X.toarray"):
        Segmenter(3).fit(scipy_sparse.csr_matrix(X))
    with pytest.raises(NotFittedError) as info:
        Segmenter().predict(X)
    assert isinstance(info.value, sklearn.exceptions.NotFittedError)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        FeatureScorer().transform(pa.table({"orders": [1]}))
    with pytest.raises(DataError, match="zero"):
        Segmenter(3).fit(X, sample_weight=np.zeros(len(X)))
    Xn = X.copy()
    Xn[5, 1] = np.nan
    seg = Segmenter(3, random_state=0).fit(X)
    for method in (seg.predict, seg.transform, seg.score, Segmenter(3).fit):
        with pytest.raises(DataError, match=r"NaN or infinite.*\b5\b"):
            method(Xn)
    with pytest.raises(ParameterError, match="Reshape your data"):
        seg.predict(X[0])
    with pytest.raises(SegoneError, match=r"n_samples=1"):
        Segmenter(3).fit(X[:1])
    with pytest.raises(SchemaError, match="could not convert"):
        Segmenter(3).fit(np.array([["a", "b"]] * 5))


def test_feature_scorer_in_a_pipeline_over_tables():
    from segone.synth import generate

    d = generate(500, seed=3)
    prof = segone.build_profiles(d.transactions, events=d.events, attributes=d.customers)
    pipe = make_pipeline(FeatureScorer(), Segmenter(4, random_state=0)).fit(prof)
    ref = Segmenter(4, random_state=0).fit(FeatureScorer().fit_transform(prof)).labels_
    np.testing.assert_array_equal(pipe.predict(prof), ref)
    kinds = [prof.to_pandas().set_index("customer_id", drop=False), prof.select(prof.column_names[::-1])]
    import polars as pl
    kinds.append(pl.from_arrow(prof))
    for src in kinds:  # any table kind, any column order, any index
        np.testing.assert_array_equal(pipe.predict(src), ref)
    sc = pipe[0]
    assert list(sc.feature_names_in_) == prof.column_names and sc.n_features_in_ == prof.num_columns
    assert list(sc.get_feature_names_out()) == sc.feature_names_out_
    assert list(pipe[:-1].get_feature_names_out()) == sc.feature_names_out_
    with pytest.raises(SchemaError, match="input_features lack the feature column"):
        sc.get_feature_names_out(["orders"])
    out = FeatureScorer().set_output(transform="pandas").fit_transform(prof)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == sc.feature_names_out_
    grid = {"featurescorer__scaling": ["standard", "quantile"], "segmenter__n_clusters": [3]}
    gs = GridSearchCV(make_pipeline(FeatureScorer(), Segmenter(random_state=0)), grid, cv=2)
    gs.fit(prof.to_pandas())
    assert gs.best_params_["segmenter__n_clusters"] == 3
    # fitted from a merged state (the pipeline's way), the scorer reads its feature columns
    st = FeatureScorer().fit_state(FeatureScorer().partial_state(prof))
    assert list(st.feature_names_in_) == st.feature_names_out_
