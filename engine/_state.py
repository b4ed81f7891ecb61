"""The stage protocol: per-piece work plus a mergeable state.

Every stage of segone that needs to see all the data (the profile scan, the
feature scorer, the segmenter's full passes, the segment statistics, the
customer-value histogram, ...) is written as a :class:`State`:

* ``State.of(piece, **context)`` builds the state of one piece of data (a
  table, a record batch, a partition);
* ``a.merge(b)`` combines two states **exactly and associatively**: it
  returns a new state and leaves both inputs unchanged, and the merge of the
  states of two pieces equals the state of the two pieces together;
* ``s.finish()`` turns the merged state into the stage's result;
* ``s.to_dict()`` / ``State.from_dict(d)`` move a state as plain JSON-safe
  data (dicts, lists, str, int, float, bool, None): no pickle, ever.

This is the chunk / combine / aggregate shape of ``dask.array.reductions``:
the chunk and aggregate steps are functions of the stage's own module, and an
engine (:mod:`segone._engine`, :mod:`segone.dask`) is the only driver.  It
maps ``of`` over the pieces and folds ``merge`` in a tree; it computes nothing
itself.

A state that starts empty (``State.empty(**context)``) is the identity of its
merge, so an empty partition contributes nothing.
"""

import numpy as np

from segone.errors import ModelFormatError, ParameterError


class State:
    """Base class of every mergeable stage state.

    Subclasses set ``kind`` (the name written by :meth:`to_dict`) and
    implement :meth:`of`, :meth:`merge`, :meth:`finish`, :meth:`_data` and
    :meth:`_from_data`.
    """

    kind = "state"
    version = 1

    @classmethod
    def of(cls, piece, **context):  # pragma: no cover - abstract
        raise NotImplementedError

    def merge(self, other):  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- plain data -----------------------------------------------------------
    def _data(self):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _from_data(cls, data):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self):
        """The state as JSON-safe plain data (``kind``, ``version`` and the fields)."""
        return {"kind": self.kind, "version": self.version, **self._data()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild a state from :meth:`to_dict`'s output; checks kind and version."""
        if not isinstance(d, dict):
            raise ModelFormatError(f"{cls.kind}: expected a dict, got {type(d).__name__}.")
        if d.get("kind") != cls.kind:
            raise ModelFormatError(f"expected a {cls.kind!r} state, got kind {d.get('kind')!r}.")
        if d.get("version") != cls.version:
            raise ModelFormatError(
                f"{cls.kind} state has version {d.get('version')!r}; this segone reads version {cls.version}."
            )
        data = {k: v for k, v in d.items() if k not in ("kind", "version")}
        try:
            return cls._from_data(data)
        except ModelFormatError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ModelFormatError(f"{cls.kind} state is malformed: {exc}") from None

    def _check_same(self, other, *fields):
        """Raise when ``other`` is not a state of the same kind and the same ``fields``."""
        if type(other) is not type(self):
            raise ParameterError(f"cannot merge a {type(self).__name__} with a {type(other).__name__}.")
        for f in fields:
            a, b = getattr(self, f), getattr(other, f)
            same = np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
            if not same:
                raise ParameterError(f"cannot merge {self.kind} states with different {f}: {a!r} vs {b!r}.")

    def __eq__(self, other):
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None


def merge_all(states, split_every=8):
    """Fold ``merge`` over ``states`` in a tree of width ``split_every``.

    The same tree shape as the Dask engine's reduction, so that the local and
    distributed results agree bit for bit when the pieces are the same.
    """
    items = list(states)
    if not items:
        raise ParameterError("nothing to merge: no state was given.")
    while len(items) > 1:
        items = [_fold(items[i : i + split_every]) for i in range(0, len(items), split_every)]
    return items[0]


def _fold(group):
    out = group[0]
    for s in group[1:]:
        out = out.merge(s)
    return out


# -- JSON-safe arrays -----------------------------------------------------------
def array_to_data(a):
    """NumPy array -> {"dtype", "shape", "data"} with exact values (floats as Python floats)."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ParameterError(f"cannot store an array of dtype {a.dtype} as plain data.")
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.ravel().tolist()}


def array_from_data(d, name="array"):
    """Inverse of :func:`array_to_data`; validates dtype and shape."""
    try:
        dtype = np.dtype(d["dtype"])
        shape = tuple(int(s) for s in d["shape"])
    except (KeyError, TypeError) as exc:
        raise ModelFormatError(f"{name}: malformed array ({exc}).") from None
    if dtype.kind not in "biuf":
        raise ModelFormatError(f"{name}: dtype {dtype} is not numeric.")
    a = np.asarray(d.get("data", []), dtype=dtype)
    if a.size != int(np.prod(shape)):
        raise ModelFormatError(f"{name}: {a.size} values for shape {shape}.")
    return a.reshape(shape)
