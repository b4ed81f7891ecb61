"""Packages that present their submodules' public names as their own.

``segone.track``, ``segone.privacy`` and ``segone.io`` are packages whose
submodules each hold one concern; users import every public name from the
package (``from segone.track import Contingency``).  :func:`adopt` records
the package as the home of those names, as they were before the split, so
that their ``repr``, pickles (Dask ships states by name),
``inspect.getmodule`` and ``doctest.testmod(package)`` see them where users
import them.
"""

import inspect


def _functions_of(cls):
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset, value.fdel) if f is not None)
        elif inspect.isfunction(value):
            yield value


def adopt(namespace):
    """Give the public functions and classes of a package's namespace the package as their module.

    Only objects defined in one of the package's own submodules change
    (names imported from elsewhere keep their module), and with a class its
    methods and properties too.

    Examples
    --------
    >>> import segone.track
    >>> segone.track.Contingency.__module__, segone.track.moves_piece.__module__
    ('segone.track', 'segone.track')
    """
    package = namespace["__name__"]
    for key, obj in list(namespace.items()):
        if key.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        home = getattr(obj, "__module__", "") or ""
        if not home.startswith(package + "."):
            continue
        obj.__module__ = package
        if inspect.isclass(obj):
            for f in _functions_of(obj):
                if f.__module__ == home:
                    f.__module__ = package
