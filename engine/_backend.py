"""Kernel backend registry: ``backend="auto" | "cython" | "numba"``.

The choice is, in order: the ``backend=`` argument when it is not "auto",
else the ``SEGONE_BACKEND`` environment variable, else the automatic pick:
the backend that measured faster for the kernel family on the benchmarks in
``benchmarks/`` (the Cython kernels for assignment and partial sums), falling
back to Numba when the compiled extension is missing.
"""

import importlib
import os

from segone.errors import BackendError, ParameterError

BACKENDS = ("cython", "numba")
_MODULES = {"cython": "segone.kernels._cy", "numba": "segone.kernels._nb", "reference": "segone.kernels.reference"}
# measured preference per kernel family (see benchmarks/compare.py)
_AUTO_ORDER = {
    "assign": ("cython", "numba"),
    "partial_sums": ("cython", "numba"),
    # profile_pass: 0.78 s (cython) vs 0.82 s (numba) on 20.6M rows / 1M customers,
    # within noise; cython needs no JIT compile on first use
    "group": ("cython", "numba"),
    "score": ("cython", "numba"),
    # top traits, trait strengths, and the sentences (persona_slots, persona_sentences): the same bytes on both;
    # cython needs no JIT compile
    "persona": ("cython", "numba"),
    # the sweep's per-segment sums (sweep_accumulate): the same bits on both; cython needs no JIT compile
    "sweep": ("cython", "numba"),
    # the quantile sketch's one pass per column: bit-identical on both; cython needs no JIT compile
    "sketch": ("cython", "numba"),
    # tracking's radix argsort of the customer ids: cython needs no JIT compile
    "track": ("cython", "numba"),
    # campaign effects' Poisson bootstrap: bit-identical on both; cython needs no JIT compile
    "effects": ("cython", "numba"),
}
_loaded = {}


def _load(name):
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            _loaded[name] = exc
    mod = _loaded[name]
    if isinstance(mod, Exception):
        hint = (
            "the compiled extension is missing: reinstall with `pip install -e .` "
            "(needs a C compiler)"
            if name == "cython"
            else "install numba (`pip install numba`)"
        )
        raise BackendError(f"kernel backend {name!r} is not available ({mod}); {hint}.")
    return mod


def available_backends():
    """Names of the backends that import on this machine."""
    out = []
    for name in BACKENDS:
        try:
            _load(name)
            out.append(name)
        except BackendError:
            pass
    return out


def resolve_backend(backend="auto", family="assign"):
    """Return the backend name to use for a kernel family."""
    if backend is None:
        backend = "auto"
    if not isinstance(backend, str):
        raise ParameterError(f"backend must be a string, got {backend!r}; use 'auto', 'cython' or 'numba'.")
    name = backend.lower()
    if name == "auto":
        env = os.environ.get("SEGONE_BACKEND", "").strip().lower()
        if env and env != "auto":
            if env not in BACKENDS and env != "reference":
                raise ParameterError(
                    f"SEGONE_BACKEND={env!r} is not a known backend; use one of "
                    f"{', '.join(BACKENDS)} or auto, or unset it."
                )
            name = env
        else:
            for cand in _AUTO_ORDER.get(family, BACKENDS):
                try:
                    _load(cand)
                    return cand
                except BackendError:
                    continue
            raise BackendError("no kernel backend is available: neither the Cython extension nor numba imports.")
    if name not in BACKENDS and name != "reference":
        raise ParameterError(f"backend={backend!r} is not known; use 'auto', 'cython' or 'numba'.")
    _load(name)
    return name


def get_kernels(backend="auto", family="assign"):
    """Return the kernel module of the resolved backend."""
    return _load(resolve_backend(backend, family))
