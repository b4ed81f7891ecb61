"""Saved models: round trip, validation of every field, apply == the run's assignment."""

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import segone
from segone import synth
from segone.errors import ModelFormatError, ParameterError, SchemaError
from segone.model import (
    MODEL_VERSION,
    Model,
    UnsupportedModelVersion,
    apply_model,
    load_model,
    save_model,
    write_model,
)
from segone.track import FeatureHistogram

K = 4


@pytest.fixture(scope="module")
def data():
    return synth.generate(3000, seed=21)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    res = segone.run(data.transactions, out, K, events=data.events, attributes=data.customers, random_state=3)
    profiles = segone.build_profiles(data.transactions, events=data.events, attributes=data.customers)
    return res, profiles, out


@pytest.fixture
def saved(fitted, tmp_path):
    res, profiles, _ = fitted
    hist = FeatureHistogram.of(profiles, features=res.scorer.feature_names_out_)
    path = save_model(tmp_path / "m", res.segmenter, res.scorer, segment_ids=[12, 3, 7, 0],
                      labels=["a", "b", "c", "d"], settings={"clusters": K, "note": "x"}, next_id=20,
                      histogram=hist)  # fmt: skip
    return path


def test_round_trip_is_exact(fitted, saved):
    res, profiles, _ = fitted
    m = load_model(saved)
    assert isinstance(m, Model) and m.version == MODEL_VERSION
    assert m.centroids.dtype == res.segmenter.cluster_centers_.dtype
    np.testing.assert_array_equal(m.centroids, res.segmenter.cluster_centers_)
    assert m.segment_ids.tolist() == [12, 3, 7, 0] and m.segment_ids.dtype == np.int64
    assert m.labels == ["a", "b", "c", "d"] and m.next_id == 20
    assert m.features == res.scorer.feature_names_out_
    assert m.settings == {"clusters": K, "note": "x"}
    np.testing.assert_array_equal(m.scorer.transform(profiles), res.scorer.transform(profiles))
    assert m.histogram == FeatureHistogram.of(profiles, features=m.features)
    # the files are plain data: JSON and a .npy that loads without pickle
    with open(os.path.join(saved, "model.json")) as f:
        meta = json.load(f)
    assert meta["format"] == "segone-model" and meta["version"] == MODEL_VERSION
    np.load(os.path.join(saved, "centroids.npy"), allow_pickle=False)


def test_pipeline_output_loads_with_default_ids(fitted):
    res, _, out = fitted
    m = load_model(out)  # the output directory (its model/ folder)
    assert m.segment_ids.tolist() == list(range(K)) and m.next_id == K
    assert m.labels == res.segments.column("label").to_pylist()  # the run writes its labels
    np.testing.assert_array_equal(m.centroids, res.segmenter.cluster_centers_)
    assert load_model(out / "model").path == m.path


def test_version_1_directory_still_loads(fitted, tmp_path):
    _, _, out = fitted
    d = tmp_path / "v1"
    shutil.copytree(out / "model", d)
    meta = json.loads((d / "model.json").read_text())
    for key in ("segment_ids", "labels", "next_id", "settings"):
        meta.pop(key)
    meta["version"] = 1
    (d / "model.json").write_text(json.dumps(meta))
    m = load_model(d)
    assert m.version == 1 and m.segment_ids.tolist() == list(range(K)) and m.next_id == K


def _edit_json(path, fn):
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))


def _corrupt(kind, d):
    mj = d / "model.json"
    cen = d / "centroids.npy"
    C = np.load(cen)
    if kind == "version":
        _edit_json(mj, lambda m: m.update(version=99))
    elif kind == "version_type":
        _edit_json(mj, lambda m: m.update(version="2"))
    elif kind == "format":
        _edit_json(mj, lambda m: m.update(format="something-else"))
    elif kind == "shape":
        np.save(cen, np.vstack([C, C[:1]]))
    elif kind == "nan":
        C[1, 2] = np.nan
        np.save(cen, C)
    elif kind == "inf":
        C[0, 0] = np.inf
        np.save(cen, C)
    elif kind == "dtype":
        np.save(cen, C.astype(np.int64))
    elif kind == "pickled":
        np.save(cen, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "duplicate_ids":
        _edit_json(mj, lambda m: m.update(segment_ids=[1, 1, 2, 3]))
    elif kind == "negative_ids":
        _edit_json(mj, lambda m: m.update(segment_ids=[-1, 1, 2, 3]))
    elif kind == "float_ids":
        _edit_json(mj, lambda m: m.update(segment_ids=[0.5, 1, 2, 3]))
    elif kind == "ids_length":
        _edit_json(mj, lambda m: m.update(segment_ids=[0, 1, 2]))
    elif kind == "labels_length":
        _edit_json(mj, lambda m: m.update(labels=["a"]))
    elif kind == "labels_type":
        _edit_json(mj, lambda m: m.update(labels=[1, 2, 3, 4]))
    elif kind == "next_id":
        _edit_json(mj, lambda m: m.update(next_id=5))
    elif kind == "n_clusters":
        _edit_json(mj, lambda m: m.update(n_clusters=0))
    elif kind == "features":
        _edit_json(mj, lambda m: m.update(features="orders"))
    elif kind == "settings":
        _edit_json(mj, lambda m: m.update(settings=[1, 2]))
    elif kind == "width":  # centroids and model.json agree with each other, not with the scorer
        np.save(cen, C[:, :-1])
        _edit_json(mj, lambda m: m.update(features=m["features"][:-1]))
    elif kind == "truncated_npy":
        raw = cen.read_bytes()
        cen.write_bytes(raw[: len(raw) // 2])
    elif kind == "garbage_npy":
        cen.write_bytes(b"not a numpy file at all")
    elif kind == "missing_model_json":
        mj.unlink()
    elif kind == "missing_centroids":
        cen.unlink()
    elif kind == "missing_scorer":
        (d / "scorer.json").unlink()
    elif kind == "truncated_model_json":
        mj.write_text(mj.read_text()[:40])
    elif kind == "truncated_scorer":
        s = (d / "scorer.json").read_text()
        (d / "scorer.json").write_text(s[: len(s) // 2])
    elif kind == "scorer_version":
        s = json.loads((d / "scorer.json").read_text())
        s["version"] = 1
        (d / "scorer.json").write_text(json.dumps(s))
    elif kind == "histogram":
        (d / "feature_histogram.json").write_text('{"kind": "feature_histogram", "version": 7}')
    else:  # pragma: no cover
        raise AssertionError(kind)


CORRUPTIONS = {
    "version": "'version' is 99", "version_type": "'version'", "format": "'format'", "shape": "'centroids'.*shape",
    "nan": "'centroids'.*NaN", "inf": "'centroids'.*NaN or infinite", "dtype": "'centroids'.*float",
    "pickled": "'centroids'", "duplicate_ids": "'segment_ids'.*duplicate", "negative_ids": "'segment_ids'.*negative",
    "float_ids": "'segment_ids'.*integers", "ids_length": "'segment_ids'.*entries", "labels_length": "'labels'",
    "labels_type": "'labels'.*strings", "next_id": "'next_id'", "n_clusters": "'n_clusters'",
    "features": "'features'", "settings": "'settings'", "width": "scorer.json.*'features'",
    "truncated_npy": "centroids.npy.*truncated", "garbage_npy": "'centroids'.*truncated",
    "missing_model_json": "model.json is missing", "missing_centroids": "centroids.npy is missing",
    "missing_scorer": "scorer.json is missing", "truncated_model_json": "model.json.*not valid JSON",
    "truncated_scorer": "scorer.json.*'scorer'", "scorer_version": "scorer.json.*'scorer'",
    "histogram": "feature_histogram.json",
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_every_corruption_is_a_clear_model_format_error(saved, kind, tmp_path):
    from pathlib import Path

    d = tmp_path / "bad"
    shutil.copytree(saved, d)
    _corrupt(kind, Path(d))
    with pytest.raises(ModelFormatError, match=CORRUPTIONS[kind]) as err:
        load_model(d)
    msg = str(err.value)
    assert str(d) in msg  # names the file
    assert "segone" in msg  # says what to do
    if kind.startswith("version"):
        assert isinstance(err.value, UnsupportedModelVersion)


def test_missing_or_half_written_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="model.json is missing"):
        load_model(tmp_path / "empty")


def test_save_model_parameters(fitted, tmp_path):
    res, _, _ = fitted
    seg, sc = res.segmenter, res.scorer
    with pytest.raises(ParameterError, match="one id per centroid"):
        save_model(tmp_path / "a", seg, sc, segment_ids=[1, 2])
    with pytest.raises(ParameterError, match="unique"):
        save_model(tmp_path / "a", seg, sc, segment_ids=[1, 1, 2, 3])
    with pytest.raises(ParameterError, match="next_id"):
        save_model(tmp_path / "a", seg, sc, segment_ids=[1, 2, 3, 9], next_id=4)
    with pytest.raises(ParameterError, match="labels"):
        save_model(tmp_path / "a", seg, sc, labels=["x"])
    with pytest.raises(ParameterError, match="JSON-safe"):
        save_model(tmp_path / "a", seg, sc, settings={"f": object()})
    assert not (tmp_path / "a").exists()
    save_model(tmp_path / "a", seg.cluster_centers_, sc)  # centroids alone work too
    with pytest.raises(ParameterError, match="exists"):
        save_model(tmp_path / "a", seg, sc)
    save_model(tmp_path / "a", seg, sc, segment_ids=[4, 5, 6, 7], overwrite=True)
    assert load_model(tmp_path / "a").segment_ids.tolist() == [4, 5, 6, 7]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".segone")]


def test_write_model_keeps_working(fitted, tmp_path):
    res, _, _ = fitted
    write_model(tmp_path / "w", res.segmenter, res.scorer)
    assert load_model(tmp_path / "w").segment_ids.tolist() == list(range(K))
    write_model(tmp_path / "w2", res.segmenter, res.scorer, segment_ids=[9, 8, 7, 6], labels=list("abcd"),
                next_id=11, settings={"previous": "x"})  # fmt: skip
    m = load_model(tmp_path / "w2")
    assert (m.segment_ids.tolist(), m.next_id, m.settings) == ([9, 8, 7, 6], 11, {"previous": "x"})


def test_apply_equals_the_runs_assignment(fitted):
    res, profiles, out = fitted
    m = load_model(out)
    got = m.apply(profiles)
    assert got.column_names == ["customer_id", "segment", "distance", "margin"]
    assert got.equals(res.assignments.select(got.column_names))  # the run adds value and RFM columns
    # stable ids: the segment column maps through the ids
    m.segment_ids = np.array([40, 41, 42, 43])
    got = m.apply(profiles)
    np.testing.assert_array_equal(got.column("segment").to_numpy(), 40 + res.assignments.column("segment").to_numpy())
    np.testing.assert_array_equal(m.predict(res.scorer.transform(profiles)), got.column("segment").to_numpy())


def test_apply_fills_absent_group_columns_and_refuses_others(fitted):
    res, profiles, out = fitted
    m = load_model(out)
    share = next(f for f in m.features if f.startswith("share_"))
    col = profiles.column(share).to_numpy()
    zeroed = profiles.set_column(profiles.column_names.index(share), share, pa.array(np.zeros_like(col)))
    np.testing.assert_array_equal(m.apply(profiles.drop_columns([share])).column("segment").to_numpy(),
                                  m.apply(zeroed).column("segment").to_numpy())  # fmt: skip
    with pytest.raises(SchemaError, match="orders"):
        m.apply(profiles.drop_columns(["orders"]))
    with pytest.raises(SchemaError, match="id column"):
        m.apply(profiles, id_column="user")


def test_apply_model_writes_outputs_atomically(fitted, data, saved, tmp_path):
    res, _, out = fitted
    ap = apply_model(out, data.transactions, tmp_path / "ap", events=data.events, attributes=data.customers)
    written = pq.read_table(tmp_path / "ap" / "assignments.parquet")
    base = res.assignments.select(written.column_names)  # the run adds value and RFM columns
    assert written.equals(base) and ap.assignments.equals(base)
    run = json.loads((tmp_path / "ap" / "run.json").read_text())
    assert run["customers"] == 3000 and run["model"] == str(out / "model")
    assert sum(s["customers"] for s in run["segments"].values()) == 3000
    with pytest.raises(ParameterError, match="exists"):
        apply_model(out, data.transactions, tmp_path / "ap", events=data.events, attributes=data.customers)
    # a model with a feature histogram reports the drift of every feature (none here: the same data)
    ap2 = apply_model(saved, data.transactions, tmp_path / "ap2", events=data.events, attributes=data.customers)
    assert set(ap2.summary["feature_psi"]) == set(load_model(saved).features)
    assert max(ap2.summary["feature_psi"].values()) < 1e-9
    with pytest.raises(ModelFormatError):
        apply_model(tmp_path / "nothing", data.transactions, tmp_path / "ap3")
    assert not (tmp_path / "ap3").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".segone")]
