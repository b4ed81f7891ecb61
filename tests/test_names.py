"""One name per idea (issue 25, item 4): new names work, old names warn (FutureWarning naming the new one) and still
work for one release, segone.sweep is the function whatever was imported first, the Engine protocol."""

import subprocess
import sys
import warnings

import numpy as np
import pyarrow as pa
import pytest

import segone
from segone.errors import ParameterError


@pytest.fixture(scope="module")
def tx():
    return segone.synth.generate(500, seed=4).transactions


def _quiet(fn, *a, **k):
    """fn(*a, **k) with no warning raised (a warning becomes an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*a, **k)


# ------------------------------------------------------------ the number of segments
def test_n_clusters_is_the_name_in_run_and_clusters_warns(tx, tmp_path):
    res = _quiet(segone.run, tx, tmp_path / "new", n_clusters=3, value=False)
    assert res.summary["segments"] == 3
    with pytest.warns(FutureWarning, match=r"segone.run\(clusters=...\) is deprecated .* use n_clusters="):
        old = segone.run(tx, tmp_path / "old", clusters=3, value=False)
    assert old.assignments.column("segment").equals(res.assignments.column("segment"))
    with pytest.raises(ParameterError, match="both clusters= .* and n_clusters="):
        segone.run(tx, tmp_path / "both", clusters=3, n_clusters=3)


def test_describe_segments_takes_n_clusters_and_personas_take_labels(tx):
    prof = segone.build_profiles(tx)
    lab = np.arange(prof.num_rows) % 2
    new = _quiet(segone.describe_segments, prof, labels=lab, n_clusters=2)
    with pytest.warns(FutureWarning, match="use n_clusters="):
        old = segone.describe_segments(prof, lab, k=2)
    for col in ("segment", "size", "label"):
        assert new.column(col).equals(old.column(col))
    p_new = _quiet(segone.personas, prof, labels=lab)
    with pytest.warns(FutureWarning, match=r"segone.personas\(segments=...\) .* use labels="):
        p_old = segone.personas(prof, segments=lab)
    assert p_new.column("segment").to_pylist() == p_old.column("segment").to_pylist() == lab.tolist()
    pm = segone.PersonaModel().fit(prof)
    with pytest.warns(FutureWarning, match="use labels="):
        pm.personas(prof, segments=lab)


def test_the_cli_says_k_or_n_clusters_and_clusters_is_a_hidden_deprecated_alias(tmp_path):
    from click.testing import CliRunner

    from segone.cli import main

    data = tmp_path / "data"
    segone.synth.write_dataset(str(data), 400, seed=1, progress=False)
    runner = CliRunner()
    for flag in ("-k", "--n-clusters"):
        res = runner.invoke(main, ["run", str(data), "-o", str(tmp_path / flag), flag, "2", "-q", "--no-value"])
        assert res.exit_code == 0, res.output
        assert "-> 2 segments" in res.output and "deprecated" not in res.output
    res = runner.invoke(main, ["run", str(data), "-o", str(tmp_path / "old"), "--clusters", "2", "-q", "--no-value"])
    assert res.exit_code == 0, res.output
    assert "--clusters is deprecated" in res.output and "-k/--n-clusters" in res.output
    assert "-> 2 segments" in res.output
    both = runner.invoke(main, ["run", str(data), "-o", str(tmp_path / "b"), "--clusters", "2", "-k", "3"])
    assert both.exit_code == 2 and "not both" in both.output
    helps = runner.invoke(main, ["run", "--help"]).output + runner.invoke(main, ["demo", "--help"]).output
    assert "-k, --n-clusters" in helps and "--clusters" not in helps


# ------------------------------------------------------------ segone.sweep is the function
def test_sweep_is_callable_whatever_was_imported_first_and_no_module_is_shadowed():
    # a fresh interpreter: import every module of segone, one by one, checking segone.sweep after each
    code = """
import importlib, pkgutil, types
import segone
names = sorted(m.name for m in pkgutil.walk_packages(segone.__path__, "segone.") if ".kernels." not in m.name)
for name in names:
    importlib.import_module(name)
    assert callable(segone.sweep) and not isinstance(segone.sweep, types.ModuleType), (name, segone.sweep)
    assert segone.sweep.__module__ == "segone.tuning", name
# no module of the package has the name of one of its functions or classes (tests/test_module_names.py
# checks every subpackage too)
modules = {m.name.rsplit(".", 1)[-1] for m in pkgutil.iter_modules(segone.__path__)}
clash = [n for n in modules if not isinstance(getattr(segone, n, None), (types.ModuleType, type(None)))]
assert clash == [], clash
print(len(names))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 10


def test_segone_sweep_runs_and_the_tuning_module_holds_the_rest():
    X = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    X[:150] += 6
    res = segone.sweep(X, k_max=4, silhouette_sample=200, stability_sample=200, n_resamples=1)
    assert res.table.num_rows == 3 and res.best_k == 2
    assert segone.tuning.sweep is segone.sweep and segone.tuning.choose_k is not None


# ------------------------------------------------------------ one default sample size
def test_sample_size_has_one_default_everywhere(tx, tmp_path):
    import inspect

    import segone.dask
    from segone._validation import DEFAULT_SAMPLE_SIZE, default_sample_size

    for fn in (segone.run, segone.sweep, segone.Segmenter, segone.dask.Segmenter):
        assert inspect.signature(fn).parameters["sample_size"].default is None, fn
    assert default_sample_size(8) == DEFAULT_SAMPLE_SIZE and default_sample_size(4096) == 128 * 4096
    res = segone.run(tx, tmp_path / "o", n_clusters=2, value=False)
    assert res.summary["sample_size"] == DEFAULT_SAMPLE_SIZE  # what the run learnt on is recorded
    assert segone.tuning.check_sweep_parameters(k_max=20)[1] == DEFAULT_SAMPLE_SIZE


# ------------------------------------------------------------ one way to run on Dask
def test_one_way_to_run_on_dask_and_the_others_warn(tx, tmp_path):
    import segone.dask

    with segone.dask.DaskEngine(npartitions=2) as eng:  # the one way (threaded scheduler here)
        one = _quiet(segone.run, tx, tmp_path / "engine", n_clusters=2, value=False, engine=eng)
    assert one.summary["engine"]["engine"] == "dask"
    with pytest.warns(FutureWarning, match=r"segone.run\(engine='dask'\) .* use engine=segone.dask.DaskEngine"):
        a = segone.run(tx, tmp_path / "a", n_clusters=2, value=False, engine="dask")
    with pytest.warns(FutureWarning, match=r"segone.run\(npartitions=...\) .*DaskEngine\(npartitions=...\)"):
        b = segone.run(tx, tmp_path / "b", n_clusters=2, value=False, engine="dask", npartitions=2)
    with pytest.warns(FutureWarning, match=r"segone.dask.run\(...\) is deprecated"):
        c = segone.dask.run(tx, tmp_path / "c", 2, value=False, npartitions=2)
    for res in (a, b, c):
        assert res.summary["engine"]["engine"] == "dask" and res.summary["customers"] == one.summary["customers"]
        assert res.segments.column("size").equals(one.segments.column("size"))
    with pytest.raises(ParameterError, match="options of segone.dask.DaskEngine"):
        with segone.dask.DaskEngine() as eng:
            segone.run(tx, tmp_path / "d", 2, engine=eng, npartitions=3)


# ------------------------------------------------------------ the Engine protocol
def test_engines_provide_the_protocol_and_run_names_what_is_missing(tx, tmp_path):
    import segone.dask
    from segone._engine import ENGINE_MEMBERS

    assert isinstance(segone.LocalEngine(), segone.Engine)
    with segone.dask.DaskEngine() as eng:
        assert isinstance(eng, segone.Engine)
    for cls in (segone.LocalEngine, segone.dask.DaskEngine):
        assert all(hasattr(cls, m) for m in ENGINE_MEMBERS if m != "name"), cls

    class Half:
        name = "half"

        def map(self, fn, *parts, **kwargs):
            raise AssertionError("never called")

        def reduce(self, states, split_every=None):
            raise AssertionError("never called")

        def write_parts(self, parts, path):
            raise AssertionError("never called")

    assert not isinstance(Half(), segone.Engine)
    with pytest.raises(ParameterError) as err:
        segone.run(tx, tmp_path / "o", 2, engine=Half())
    msg = str(err.value)
    assert "engine=Half is not a segone engine" in msg
    assert "read, by_customer, co_partition, gather, persist, count, facts, set_stage, cleanup, close" in msg
    assert not (tmp_path / "o").exists()

    class Local(segone.LocalEngine):  # a user's engine: every member, run uses it (and never closes it)
        closed = cleaned = 0

        def close(self):
            Local.closed += 1

        def cleanup(self):
            Local.cleaned += 1

    res = _quiet(segone.run, pa.table(tx), tmp_path / "own", n_clusters=2, value=False, engine=Local())
    assert res.summary["customers"] == 500 and (Local.closed, Local.cleaned) == (0, 1)
