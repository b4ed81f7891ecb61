"""One name, one thing: no module of segone is shadowed by a function or class of the same name, and every
compiled kernel lives in kernels/ (engine/ never imports numba)."""

import importlib
import inspect
import pathlib
import pkgutil
import re
import types

import segone


def _packages():
    """segone and every subpackage (segone.describe, segone.track, segone.kernels, ...), all imported."""
    out = [segone]
    for info in pkgutil.walk_packages(segone.__path__, "segone."):
        mod = importlib.import_module(info.name)
        if info.ispkg:
            out.append(mod)
    return out


def test_no_public_function_or_class_has_the_name_of_a_submodule():
    clashes = []
    for pkg in _packages():
        submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
        for name in dir(pkg):
            obj = getattr(pkg, name)
            if isinstance(obj, types.ModuleType) or not (callable(obj) or inspect.isclass(obj)):
                continue
            if name in submodules:
                clashes.append(f"{pkg.__name__}.{name} is a {type(obj).__name__} and a module")
    assert clashes == []


def test_every_submodule_is_reachable_by_its_dotted_name():
    # the other direction: after importing everything, pkg.leaf is the module pkg/leaf.py itself
    wrong = []
    for pkg in _packages():
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            if getattr(pkg, info.name, None) is not mod:
                wrong.append(f"{pkg.__name__}.{info.name} is {getattr(pkg, info.name, None)!r}")
    assert wrong == []


def test_the_functions_keep_their_public_names():
    from segone.assignment import assign
    from segone.describe._personas import personas

    assert segone.assign is assign and segone.describe.personas is personas and segone.personas is personas
    assert callable(segone.assign) and callable(segone.personas)
    assert isinstance(segone.assignment, types.ModuleType)


def test_every_compiled_kernel_lives_in_kernels():
    engine = pathlib.Path(segone.__file__).parent
    found = [f"{p.relative_to(engine)}:{i}: {line.strip()}" for p in sorted(engine.rglob("*.py"))
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\bnjit\b|^\s*(from numba\b|import numba\b)", line)]  # fmt: skip
    assert found == [], "move these kernels to kernels/ (a reference, a Numba and a Cython twin):\n" + "\n".join(found)
