"""The Examples sections of the public docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "segone.assignment", "segone.segment", "segone.pipeline", "segone.describe.segments", "segone.describe._personas",
    "segone.dask", "segone.profile", "segone.score", "segone.sketch", "segone.rfm", "segone.clv", "segone.model",
    "segone.track", "segone.synth", "segone.privacy", "segone.report", "segone.io", "segone.tuning",
    "segone._validation", "segone._engine", "segone._deprecation", "segone.update",
]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
