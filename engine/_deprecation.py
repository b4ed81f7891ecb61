"""Renamed and deprecated names: one helper, one wording, one release of grace.

An old name keeps working for one release and raises a :class:`FutureWarning`
(shown to users by default, as scikit-learn does) that names the new name and
the release that removes the old one.  README.md's "API changes in this
release" lists every such name.
"""

import functools
import warnings

from segone.errors import ParameterError

#: the release that removes the names deprecated in this one
REMOVED_IN = "0.3"


def warn_deprecated(old, new, *, removed_in=REMOVED_IN, stacklevel=3):
    """Warn (FutureWarning) that ``old`` is deprecated in favour of ``new``.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_deprecated("clusters=", "n_clusters=", stacklevel=2)
    >>> str(w[0].message)
    'clusters= is deprecated and will be removed in segone 0.3; use n_clusters= instead.'
    """
    warnings.warn(f"{old} is deprecated and will be removed in segone {removed_in}; use {new} instead.",
                  FutureWarning, stacklevel=stacklevel)  # fmt: skip


def renamed_keywords(where=None, **renames):
    """Decorator: keyword ``old=`` of the function is accepted as ``new=`` with a FutureWarning.

    ``renames`` maps old names to new names; ``where`` is how the warning
    names the function (default ``segone.<name>``).  Giving both the old and
    the new name raises :class:`~segone.errors.ParameterError`.

    Examples
    --------
    >>> import warnings
    >>> @renamed_keywords(clusters="n_clusters")
    ... def f(n_clusters=8):
    ...     return n_clusters
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     f(clusters=3)
    3
    """

    def wrap(fn):
        shown = where or f"segone.{fn.__name__}"

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise ParameterError(
                            f"{shown}() got both {old}= (deprecated) and {new}=; give only {new}=."
                        )
                    warn_deprecated(f"{shown}({old}=...)", f"{new}=")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        inner.__renamed_keywords__ = dict(renames)
        return inner

    return wrap
