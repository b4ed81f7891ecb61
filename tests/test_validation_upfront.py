"""Every argument of run, the CLI and the other commands is checked before any data is read (issue 25, item 3).

One helper per rule in segone._validation; each error is a SegoneError naming the parameter, the value and the fix.
A bad parameter always wins over a missing input: nothing is opened before the parameters are checked.
"""

import copy
import os

import numpy as np
import pytest
from click.testing import CliRunner

import segone
from segone import _validation as V
from segone.errors import ParameterError, SegoneError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("upfront") / "data"
    segone.synth.write_dataset(str(path), 600, seed=2, progress=False)
    return path


@pytest.fixture
def no_read(monkeypatch):
    """Any attempt to resolve or open an input fails the test: the check must come first."""

    def boom(*a, **k):
        raise AssertionError("an input was read before the parameters were checked")

    monkeypatch.setattr(segone.pipeline, "resolve_inputs", boom)
    monkeypatch.setattr(segone.io, "dataset", boom)
    monkeypatch.setattr(segone.io, "read_table", boom)


MISSING = "/nonexistent/segone-input.parquet"


def _run_bad(tmp_path, **kw):
    """run() with a missing input and one bad parameter: the parameter error must win."""
    with pytest.raises(ParameterError) as err:
        segone.run(MISSING, tmp_path / "out", **kw)
    assert "segone-input" not in str(err.value), f"the input was looked at first: {err.value}"
    assert not (tmp_path / "out").exists()
    return str(err.value)


# ------------------------------------------------------------ value model: horizon and rate
def test_a_zero_horizon_gave_silently_empty_values_and_is_now_refused(data, tmp_path):
    # horizon 0 used to run and write every customer's predicted purchases and value as 0
    for bad in (0, -3, 1201, 2.5, True):
        msg = _run_bad(tmp_path, horizon_months=bad)
        assert "horizon_months" in msg and repr(bad) in msg and "12" in msg  # the name, the value, the fix
    for bad in (-0.01, float("nan"), float("inf"), 1.5, "1%"):
        msg = _run_bad(tmp_path, discount_rate=bad)
        assert "discount_rate" in msg and "0.01" in msg
    res = segone.run(data, tmp_path / "ok", n_clusters=2, horizon_months=1)  # the smallest horizon still runs
    clv = res.assignments.column("clv").to_numpy(zero_copy_only=False)
    assert np.nanmax(clv) > 0


def test_the_cli_refuses_a_zero_horizon(data, tmp_path):
    from segone.cli import main

    res = CliRunner().invoke(main, ["run", str(data), "-o", str(tmp_path / "o"), "-k", "2", "--horizon-months", "0"])
    assert res.exit_code == 2 and "horizon-months" in res.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------ the vocabularies
def test_label_rules_unknown_keys_are_named_with_the_valid_ones(tmp_path, no_read):
    rules = copy.deepcopy(segone.DEFAULT_LABEL_RULES)
    rules["regualr_ratio"] = 3.0
    msg = _run_bad(tmp_path, label_rules=rules)
    assert "'regualr_ratio'" in msg and "regular_ratio" in msg and "label_rules" in msg
    nested = copy.deepcopy(segone.DEFAULT_LABEL_RULES)
    nested["nouns"]["regulars"] = "fans"
    msg = _run_bad(tmp_path, label_rules=nested)
    assert "label_rules['nouns']" in msg and "'regulars'" in msg and "one_time, regular, default" in msg
    mix = copy.deepcopy(segone.DEFAULT_LABEL_RULES)
    mix["mix"]["min_shar"] = 0.2
    assert "'min_shar'" in _run_bad(tmp_path, label_rules=mix)
    missing = {k: v for k, v in segone.DEFAULT_LABEL_RULES.items() if k != "nouns"}
    assert "needs 'nouns'" in _run_bad(tmp_path, label_rules=missing)
    typed = dict(segone.DEFAULT_LABEL_RULES, value=[(2.0, 7)])
    assert "label_rules['value']" in _run_bad(tmp_path, label_rules=typed)
    assert "must be a dict" in _run_bad(tmp_path, label_rules=["value"])
    for bad_names in ([("mode", "x", "=", 1, "y")], "browsers"):
        nb = dict(segone.DEFAULT_LABEL_RULES, non_buyers={"names": bad_names})
        assert "non_buyers" in _run_bad(tmp_path, label_rules=nb)
    # the defaults, and rules written before the optional keys existed, pass
    V.check_label_rules(segone.DEFAULT_LABEL_RULES)
    V.check_label_rules({k: v for k, v in segone.DEFAULT_LABEL_RULES.items() if k != "distinguish"})


def test_phrases_keys_and_placeholders_are_checked_up_front(tmp_path, no_read):
    msg = _run_bad(tmp_path, phrases=[{"match": "*", "high": "x", "low": None, "hihg_min": 1}])
    assert "phrases[0]" in msg and "'hihg_min'" in msg and "high_min" in msg
    msg = _run_bad(tmp_path, phrases=[{"match": "*", "high": "top {valeu:.0f}", "low": None}])
    assert "{valeu}" in msg and "value, ratio, pct" in msg
    assert ".0f" in _run_bad(tmp_path, phrases=[{"match": "*", "high": "{value:,}", "low": None}])
    assert "needs 'match'" in _run_bad(tmp_path, phrases=[{"high": "x", "low": None}])
    assert "non-empty list" in _run_bad(tmp_path, phrases=[])
    assert "non-empty list" in _run_bad(tmp_path, phrases={"match": "*", "high": "x", "low": None})
    assert "phrases[1]['low_min']" in _run_bad(tmp_path, phrases=[{"match": "a", "high": None, "low": None},
                                                                   {"match": "*", "high": None, "low": None,
                                                                    "low_min": "one"}])  # fmt: skip
    V.check_phrases(segone.DEFAULT_PHRASES)


# ------------------------------------------------------------ numbers, sizes, engines, paths
def test_numbers_of_segments_samples_and_penalties_are_named_with_the_fix(tmp_path, no_read):
    for bad in (0, -2, 2.5, "many", None):
        msg = _run_bad(tmp_path, n_clusters=bad)
        assert "n_clusters" in msg and "auto" in msg
    assert "k_min / k_max only apply" in _run_bad(tmp_path, n_clusters=4, k_max=9)
    assert "k_max" in _run_bad(tmp_path, n_clusters="auto", k_min=5, k_max=4)
    for bad in (0, -1, 1.5, "all"):
        msg = _run_bad(tmp_path, sample_size=bad)
        assert "sample_size" in msg and "None" in msg and "131072" in msg
    for bad in (-0.1, float("nan"), "0.1"):
        msg = _run_bad(tmp_path, value_penalizer=bad)
        assert "value_penalizer" in msg and "0.001" in msg
    assert "n_traits" in _run_bad(tmp_path, n_traits=0)
    assert "n_init" in _run_bad(tmp_path, n_init=0)
    assert "freq" in _run_bad(tmp_path, freq="Y")
    assert "min_segment_size" in _run_bad(tmp_path, min_segment_size=0)
    assert "engine='spark'" in _run_bad(tmp_path, engine="spark")


def test_paths_are_checked_before_any_read(data, tmp_path, no_read):
    with pytest.raises(ParameterError, match="events='/nonexistent/ev' does not exist"):
        segone.run(data, tmp_path / "o", events="/nonexistent/ev")
    with pytest.raises(ParameterError, match="id_key_file=.* does not exist"):
        segone.run(data, tmp_path / "o", hash_ids=True, id_key_file=tmp_path / "no-key")
    with pytest.raises(ParameterError, match="previous=.* does not exist"):
        segone.run(data, tmp_path / "o", previous=tmp_path / "no-previous")
    assert not (tmp_path / "o").exists()


def test_the_cli_checks_every_argument_before_it_starts_a_dask_cluster(data, tmp_path, monkeypatch):
    import segone.dask
    from segone.cli import main

    def no_cluster(*a, **k):
        raise AssertionError("a Dask cluster was started before the arguments were checked")

    monkeypatch.setattr(segone.dask, "DaskEngine", no_cluster)
    res = CliRunner().invoke(main, ["run", str(data), "-o", str(tmp_path / "o"), "-k", "auto", "--k-min", "6",
                                    "--k-max", "4", "--workers", "2"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "k_max=4 must be larger than k_min=6" in res.output


def test_segone_dask_run_checks_before_it_reaches_a_cluster(tmp_path, monkeypatch):
    import segone.dask

    def no_cluster(*a, **k):
        raise AssertionError("a Dask cluster was reached before the arguments were checked")

    monkeypatch.setattr(segone.dask, "DaskEngine", no_cluster)
    with pytest.warns(FutureWarning), pytest.raises(ParameterError, match="horizon_months"):
        segone.dask.run(MISSING, tmp_path / "o", 3, horizon_months=0, client="tcp://127.0.0.1:1")


def test_apply_describe_and_sweep_check_their_parameters_before_their_data(tmp_path):
    from segone.model import apply_model

    # apply: a bad parameter wins over a missing model and a missing input
    with pytest.raises(ParameterError, match="min_segment_size"):
        apply_model(tmp_path / "no-model", MISSING, tmp_path / "ap", min_segment_size=0)
    with pytest.raises(ParameterError, match="input=.*does not exist"):
        apply_model(tmp_path / "no-model", MISSING, tmp_path / "ap")
    # describe_segments: the rules before the profiles are read
    with pytest.raises(ParameterError, match="'bogus'"):
        segone.describe_segments(MISSING, np.zeros(3, int), 1, rules={"bogus": 1})
    # personas: the vocabulary before the profiles are read
    with pytest.raises(ParameterError, match="'hihg'"):
        segone.personas(MISSING, phrases=[{"match": "*", "high": None, "low": None, "hihg": 1}])
    # sweep: the range before X
    with pytest.raises(ParameterError, match="k_min must be >= 2"):
        segone.sweep("not a matrix", k_min=1, k_max=4)
    with pytest.raises(ParameterError, match="rule has unknown keys"):
        segone.sweep("not a matrix", k_max=4, rule={"min_stabilty": 0.5})


def test_every_helper_raises_a_segone_error_that_names_the_value():
    cases = [
        (V.check_horizon_months, 0, "horizon_months=0"), (V.check_discount_rate, -1.0, "discount_rate=-1.0"),
        (V.check_penalizer, -1.0, "got -1.0"), (V.check_sample_size, 0, "got 0"),
        (V.check_n_clusters_request, 0, "got 0"), (V.check_label_rules, {"x": 1}, "unknown key 'x'"),
        (V.check_phrases, [{"match": "*", "high": None, "low": None, "x": 1}], "unknown key 'x'"),
        (V.check_n_traits, 0, "got 0"),
    ]  # fmt: skip
    for fn, bad, said in cases:
        with pytest.raises(SegoneError) as err:
            fn(bad)
        assert said in str(err.value), (fn.__name__, str(err.value))
    assert V.check_path(os.getcwd(), "input") == os.getcwd()
    with pytest.raises(ParameterError, match="is a file; give a directory"):
        V.check_path(__file__, "previous", kind="directory")
