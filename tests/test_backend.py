import pytest

from segone import _backend
from segone._threads import available_cpus, effective_n_threads
from segone.errors import ParameterError


def test_effective_n_threads(monkeypatch):
    monkeypatch.delenv("SEGONE_NUM_THREADS", raising=False)
    cpus = available_cpus()
    assert effective_n_threads(None) == cpus
    assert effective_n_threads(3) == 3
    assert effective_n_threads(-1) == cpus
    assert effective_n_threads(-cpus - 5) == 1
    with pytest.raises(ParameterError):
        effective_n_threads(0)
    with pytest.raises(ParameterError):
        effective_n_threads(1.5)
    with pytest.raises(ParameterError):
        effective_n_threads(True)
    monkeypatch.setenv("SEGONE_NUM_THREADS", "1")
    assert effective_n_threads(None) == 1
    monkeypatch.setenv("SEGONE_NUM_THREADS", "many")
    with pytest.raises(ParameterError, match="SEGONE_NUM_THREADS"):
        effective_n_threads(None)


def test_resolve_backend(monkeypatch):
    monkeypatch.delenv("SEGONE_BACKEND", raising=False)
    assert set(_backend.available_backends()) == {"cython", "numba"}
    assert _backend.resolve_backend("auto") == "cython"
    assert _backend.resolve_backend("numba") == "numba"
    assert _backend.resolve_backend("NUMBA") == "numba"
    monkeypatch.setenv("SEGONE_BACKEND", "numba")
    assert _backend.resolve_backend("auto") == "numba"
    assert _backend.resolve_backend("cython") == "cython"  # explicit argument wins
    monkeypatch.setenv("SEGONE_BACKEND", "fortran")
    with pytest.raises(ParameterError, match="SEGONE_BACKEND"):
        _backend.resolve_backend("auto")
    with pytest.raises(ParameterError):
        _backend.resolve_backend(3)


@pytest.mark.parametrize("value", [100_000, 40_000, 2**31, -100_000])
def test_absurd_thread_counts_are_refused_not_crashed(value, monkeypatch):
    import numpy as np

    import segone
    from segone.errors import ParameterError

    X = np.zeros((10, 2), np.float32)
    with pytest.raises(ParameterError, match="CPUs this process may use"):
        segone.assign(X, X[:2], n_threads=value)
    monkeypatch.setenv("SEGONE_NUM_THREADS", str(abs(value)))
    with pytest.raises(ParameterError, match="SEGONE_NUM_THREADS"):
        segone.assign(X, X[:2])
