"""Errors raised by segone.

Every error says what was wrong, where (column, parameter or row numbers),
and how to fix it.  All derive from :class:`SegoneError`, so
``except segone.errors.SegoneError`` catches everything segone raises on
purpose.  They also derive from the matching built-in (``ValueError`` or
``TypeError``) so that generic handlers keep working.
"""


from sklearn.exceptions import NotFittedError as _SkNotFittedError


class SegoneError(Exception):
    """Base class of every error segone raises on purpose."""


class ValidationError(SegoneError, ValueError):
    """An argument or a piece of input data is not acceptable."""


class ParameterError(ValidationError):
    """A parameter (constructor argument, keyword, CLI option) is invalid."""


class SchemaError(ValidationError, TypeError):
    """A required column is missing or has the wrong type."""


class DataError(ValidationError):
    """Values in the data are invalid (NaN, infinity, nulls, out of range)."""


class EmptyInputError(DataError):
    """The input holds no usable rows."""


class ColumnFormatError(SchemaError, DataError):
    """No value of a column has the expected format: a schema error that is a data error too.

    E.g. a timestamp column of strings none of which is a date: the column as
    a whole is not what its role needs (``except SchemaError``), and its values
    are invalid (``except DataError``).
    """


class NotFittedError(SegoneError, _SkNotFittedError):
    """An estimator was used before ``fit``.

    It is also scikit-learn's ``NotFittedError`` (an ``AttributeError`` and a
    ``ValueError``), which scikit-learn's meta-estimators and checks rely on.
    """


class BackendError(SegoneError, RuntimeError):
    """A kernel backend was requested that is unknown or unavailable."""


class OutputError(ParameterError):
    """The output location cannot be written: it is a file, overlaps an input, is locked by another run,
    is not writable, or the disk failed or filled up while writing (the previous output is then kept)."""


class StalledError(SegoneError, RuntimeError):
    """A Dask job made no progress for longer than its ``stall_timeout`` (paused or lost workers).

    The message names the stage and every worker's state (status, memory
    against its limit, tasks waiting); the job's tasks are cancelled and
    nothing is written.
    """


class ModelFormatError(SegoneError, ValueError):
    """A saved model or output directory cannot be read."""


def examples(values, limit=5):
    """Format up to ``limit`` example values for an error message."""
    vals = list(values[:limit]) if hasattr(values, "__getitem__") else list(values)[:limit]
    return ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in vals)
