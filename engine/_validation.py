"""Input validation shared by the public entry points."""

import numbers

import numpy as np

from segone.errors import ColumnFormatError as _ColumnFormatError
from segone.errors import (
    DataError,
    EmptyInputError,
    NotFittedError,
    ParameterError,
    SchemaError,
    SegoneError,
    examples,
)

FLOAT_DTYPES = (np.float32, np.float64)


def _arrow_to_matrix(table, name):
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    cols = []
    all_f32 = True
    for col_name, col in zip(table.column_names, table.columns):
        t = col.type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            raise SchemaError(
                f"{name}: column {col_name!r} has type {t}, expected a numeric column; "
                "select the numeric feature columns (or score the profile with "
                "segone.FeatureScorer first)."
            )
        if col.null_count:
            bad = np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))
            raise DataError(
                f"{name}: column {col_name!r} has {col.null_count} null values "
                f"(first rows: {examples(bad)}); fill or drop them before clustering."
            )
        all_f32 &= pa.types.is_float32(t)
        cols.append(col)
    dtype = np.float32 if all_f32 and cols else np.float64
    n = table.num_rows
    out = np.empty((n, len(cols)), dtype=dtype)
    for j, col in enumerate(cols):
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


def is_arrow_tabular(obj):
    mod = type(obj).__module__
    return mod.startswith("pyarrow") and type(obj).__name__ in ("Table", "RecordBatch")


def check_matrix(X, name="X", *, dtype=None, min_rows=0, allow_arrow=True):
    """Return X as a C-contiguous 2-D float32/float64 array.

    float32 and float64 arrays keep their dtype (unless ``dtype`` forces one);
    integers and booleans become float64.  Arrow tables and record batches of
    numeric columns are converted column by column (one copy: columnar to
    row-major).  F-ordered arrays are copied to C order.
    """
    if allow_arrow and is_arrow_tabular(X):
        X = _arrow_to_matrix(X, name)
    elif hasattr(X, "__arrow_c_stream__") and not isinstance(X, np.ndarray) and allow_arrow:
        import pyarrow as pa

        X = _arrow_to_matrix(pa.table(X), name)
    elif not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # noqa: BLE001
            raise ParameterError(f"{name} must be a 2-D numeric array, got {type(X).__name__}: {exc}") from None
    if X.ndim != 2:
        raise ParameterError(
            f"{name} must be 2-D (n_samples, n_features), got an array with shape {X.shape}; "
            "use X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample."
        )
    if X.dtype.kind not in "fiub":
        raise SchemaError(f"{name} must hold numbers, got dtype {X.dtype}.")
    target = dtype
    if target is None:
        target = X.dtype if X.dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float64)
    if X.dtype.kind == "f" and X.dtype.itemsize > 8:
        target = np.dtype(np.float64)
    X = np.ascontiguousarray(X, dtype=target)
    if X.shape[1] == 0:
        raise ParameterError(f"{name} has 0 features (shape {X.shape}); at least one feature column is needed.")
    if X.shape[0] < min_rows:
        raise EmptyInputError(f"{name} has {X.shape[0]} rows; at least {min_rows} needed.")
    return X


def check_finite(X, name="X"):
    """Raise DataError naming the rows that hold NaN or infinity.

    One float64 reduction first (NaN / inf propagate into the sum); the
    row-wise check only runs when that sum is not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(X, axis=None, dtype=np.float64)):
            return
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(
            f"{name} has {rows.size} rows with NaN or infinite values "
            f"(first rows: {examples(rows)}); drop or impute them first."
        )


def check_finite_column(values, where, fix):
    """Raise DataError naming the rows (and values) of a 1-D column that are NaN or infinite."""
    bad = ~np.isfinite(values)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(
            f"{where}: {rows.size} NaN or infinite values (first rows: {examples(rows)}, "
            f"values: {examples(values[rows])}); {fix}"
        )


def check_int(value, name, *, low=None, high=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r} ({type(value).__name__}).")
    value = int(value)
    if low is not None and value < low:
        raise ParameterError(f"{name} must be >= {low}, got {value}.")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be <= {high}, got {value}.")
    return value


def check_float(value, name, *, low=None, high=None, low_inclusive=True, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ParameterError(f"{name} must be a finite number, got {value!r}.")
    value = float(value)
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise ParameterError(f"{name} must be {op} {low}, got {value}.")
    if high is not None and value > high:
        raise ParameterError(f"{name} must be <= {high}, got {value}.")
    return value


def check_choice(value, name, choices):
    if value not in choices:
        raise ParameterError(f"{name}={value!r} is not valid; use one of {', '.join(map(repr, choices))}.")
    return value


def random_seed(random_state, name="random_state"):
    """The integer seed of a fit's random stream, from any ``random_state`` scikit-learn accepts.

    The rule, deterministic for every kind:

    * a non-negative int is the seed itself (``numpy.random.default_rng(seed)``);
    * None draws the seed from NumPy's global RandomState (as scikit-learn
      does: ``np.random.seed`` makes it reproducible);
    * a ``numpy.random.RandomState`` or ``numpy.random.Generator`` draws the
      seed from that stream (advancing it, as every consumer of a shared
      stream does).

    Estimators record the seed (``seed_``): ``random_state=est.seed_``
    reproduces the fit on the same data.
    """
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**63 - 1))
    if random_state is None or isinstance(random_state, np.random.RandomState):
        from sklearn.utils import check_random_state as _sk_check_random_state

        return int(_sk_check_random_state(random_state).randint(0, 2**63 - 1, dtype=np.int64))
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) or random_state < 0:
        raise ParameterError(
            f"{name} must be None, a non-negative int, a numpy RandomState or a numpy Generator, "
            f"got {random_state!r}; e.g. {name}=0 for reproducible results."
        )
    return int(random_state)


def check_random_state(seed):
    """Turn None / int / RandomState / Generator into a numpy Generator.

    A Generator is returned as it is (the caller's stream is shared); every
    other kind goes through :func:`random_seed`.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(random_seed(seed))


def check_n_clusters(k, n, name="n_clusters", rows="samples"):
    """``k`` segments for ``n`` rows: an int in 1..n (one wording for the estimator, the job and Dask)."""
    k = check_int(k, name, low=1, high=2**31 - 1)  # segment numbers are int32
    if k > n:
        raise ParameterError(
            f"{name}={k} is larger than the number of {rows} (n_{rows}={n}); use at most {n} segments "
            "or provide more customers."
        )
    return k


# ------------------------------------------------------- scikit-learn estimators
EstimatorNotFittedError = NotFittedError  # segone's NotFittedError is scikit-learn's too
ColumnFormatError = _ColumnFormatError


def check_fitted(estimator, attribute, how):
    """Raise :class:`EstimatorNotFittedError` unless ``estimator`` has ``attribute``; ``how`` says what to call."""
    if not hasattr(estimator, attribute):
        raise EstimatorNotFittedError(f"this {type(estimator).__name__} is not fitted yet; call {how} first.")


def is_table_like(X):
    """True for the tables segone reads through Arrow (not NumPy arrays, not pandas).

    pyarrow Tables, RecordBatches and readers, polars and DuckDB frames, and
    anything exporting the Arrow C stream or array interface.  pandas
    DataFrames go through scikit-learn's validation instead (their index is
    never a feature there).
    """
    if isinstance(X, np.ndarray) or _is_pandas(X):
        return False
    mod = type(X).__module__
    return (
        mod.startswith("pyarrow")
        or mod.startswith("polars")
        or mod.startswith("duckdb")
        or hasattr(X, "__arrow_c_stream__")
        or hasattr(X, "__arrow_c_array__")
    )


def _is_pandas(X):
    return type(X).__module__.startswith("pandas") and type(X).__name__ in ("DataFrame", "Series")


# what to do about each kind of input problem scikit-learn's validation reports
_HINTS = (
    ("is expecting", ParameterError, "Use the same feature columns as in fit."),
    ("feature names", SchemaError,
     "Pass the columns seen in fit, in the same order (e.g. X[est.feature_names_in_])."),
    ("sparse", SchemaError, "segone clusters dense rows: densify with X.toarray() (or reduce the features first)."),
    ("complex", SchemaError, "Use the real part (X.real) or the magnitude (abs(X))."),
    ("sample(s)", EmptyInputError, "Give at least one row."),
    ("feature(s)", ParameterError, "Select at least one numeric feature column."),
    ("expected 2d array", ParameterError, ""),
    ("nan", DataError, "Impute or drop those rows."),
    ("infinity", DataError, "Impute or drop those rows."),
)  # fmt: skip


def _translate_sklearn_error(exc, name):
    """A ValueError / TypeError from scikit-learn's validation -> the matching SegoneError (message kept)."""
    msg = str(exc).strip()
    if msg and msg[-1] not in ".!?":
        msg += "."
    low = msg.lower()
    for key, cls, hint in _HINTS:
        if key in low:
            return cls(f"{name}: {msg} {hint}".rstrip())
    if isinstance(exc, TypeError) or "convert" in low or "dtype" in low:
        return SchemaError(
            f"{name}: {msg} {name} must hold numbers only: select the numeric feature columns "
            "(score a profile table with segone.FeatureScorer first)."
        )
    return DataError(f"{name}: {msg}")


def _sklearn_call(fn, name, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except SegoneError:
        raise
    except (ValueError, TypeError) as exc:
        raise _translate_sklearn_error(exc, name) from None


def check_estimator_input(estimator, X, *, reset, name="X", min_rows=1):
    """The input rule of segone's scikit-learn estimators: X -> C-contiguous float32 / float64 rows.

    Sets (``reset=True``) or checks (``reset=False``) ``n_features_in_`` and
    ``feature_names_in_`` through scikit-learn's ``validate_data``: the pandas
    index is never a feature, and columns in another order than in fit raise.

    * NumPy arrays, pandas DataFrames, lists, memmaps: scikit-learn's
      validation (float32 and float64 kept, other numbers become float64, a
      copy only for another dtype or a non C-contiguous layout);
    * Arrow tables (pyarrow, polars, DuckDB, ``__arrow_c_stream__``):
      normalised by :func:`segone.io.read_table`, column names are the
      feature names, float32 columns stay float32 (one columnar-to-row copy).

    No finiteness pass: the kernels flag NaN / infinite rows as they read
    them (scikit-learn's ``ensure_all_finite=False``).  Every problem raises a
    :class:`~segone.errors.SegoneError` that keeps scikit-learn's wording.
    """
    from sklearn.utils import check_array
    from sklearn.utils.validation import validate_data

    if is_table_like(X):
        from segone.io import read_table

        table = read_table(X, name=name)
        _sklearn_call(validate_data, name, estimator, table, skip_check_array=True, reset=reset)
        X = _arrow_to_matrix(table, name)
        return _sklearn_call(check_array, name, X, dtype=list(FLOAT_DTYPES[::-1]), order="C", ensure_all_finite=False,
                             ensure_min_samples=min_rows, estimator=estimator, input_name=name)  # fmt: skip
    return _sklearn_call(
        validate_data, name, estimator, X, reset=reset, accept_sparse=False, dtype=[np.float64, np.float32],
        order="C", ensure_all_finite=False, ensure_min_samples=min_rows,
    )  # fmt: skip


def check_sample_weight(sample_weight, n, name="sample_weight"):
    """None, or a float64 C-contiguous vector of ``n`` finite non-negative weights with a positive sum."""
    if sample_weight is None:
        return None
    try:
        w = np.ascontiguousarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{name} must be numbers, one per row: {exc}") from None
    if w.shape != (n,):
        raise ParameterError(f"{name} has shape {w.shape}, expected ({n},) (one weight per row).")
    if not np.isfinite(w).all() or (w < 0).any():
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        raise DataError(
            f"{name} has {bad.size} negative, NaN or infinite values (rows {examples(bad)}); "
            "weights must be finite and >= 0."
        )
    with np.errstate(over="ignore"):
        total = w.sum()
    if total <= 0:
        raise DataError(f"{name} sums to zero: every weight is 0; at least one row needs a positive weight.")
    if not np.isfinite(total):
        raise DataError(
            f"{name} sums beyond the float64 range (the largest weight is {w.max():.3g}); rescale the weights "
            "(only their ratios matter), e.g. sample_weight / sample_weight.max()."
        )
    return w


# ------------------------------------------------ saved documents (models, scorers, states)
def _stored_error(where, field, what):
    from segone.errors import ModelFormatError

    return ModelFormatError(
        f"{where}: field {field!r} {what}; the document is corrupt or was edited: write it again (refit, or re-run "
        "segone run)."
    )


def check_stored_number(value, field, where, *, low=None, high=None, low_inclusive=True, integer=False,
                        allow_none=False):  # fmt: skip
    """A number read from a saved document: the right kind, finite, in range (ModelFormatError naming the field)."""
    if value is None and allow_none:
        return None
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise _stored_error(where, field, f"must be {'an integer' if integer else 'a number'}, got {value!r:.60}")
    if not integer and not np.isfinite(value):
        raise _stored_error(where, field, f"must be finite, got {value!r}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        raise _stored_error(where, field, f"must be {'>=' if low_inclusive else '>'} {low}, got {value!r}")
    if high is not None and value > high:
        raise _stored_error(where, field, f"must be <= {high}, got {value!r}")
    return int(value) if integer else float(value)


def check_stored_array(value, field, where, *, length=None, low=None, integer=False, allow_neg_inf=None):
    """A list of numbers read from a saved document -> float64 (int64 with ``integer``) array.

    Raises ModelFormatError naming the document and the field when it is not a
    flat list of numbers (booleans refused), has another ``length``, holds NaN
    or infinity (``allow_neg_inf``: a boolean mask of the entries where -inf is
    allowed) or values below ``low``.
    """
    if not isinstance(value, (list, tuple)):
        raise _stored_error(where, field, f"must be a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _stored_error(where, field, f"has {len(value)} entries, expected {length} (one per feature)")
    kinds = numbers.Integral if integer else numbers.Real
    bad = [i for i, v in enumerate(value) if isinstance(v, bool) or not isinstance(v, kinds)]
    if bad:
        raise _stored_error(where, field, f"must hold {'integers' if integer else 'numbers'} only; entry {bad[0]} is "
                                          f"{value[bad[0]]!r:.60}")  # fmt: skip
    try:
        a = np.asarray(value, dtype=np.int64 if integer else np.float64)
    except (OverflowError, ValueError):
        raise _stored_error(where, field, "holds integers beyond the int64 range") from None
    if not integer:
        ok = np.isfinite(a)
        if allow_neg_inf is not None:
            ok |= np.asarray(allow_neg_inf, dtype=bool) & (a == -np.inf)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise _stored_error(where, field, f"holds NaN or infinite values (entry {i}: {a[i]!r})")
    if low is not None and a.size and (a < low).any():
        i = int(np.flatnonzero(a < low)[0])
        raise _stored_error(where, field, f"holds values below {low} (entry {i}: {a[i]!r}); it cannot be negative")
    return a


# ------------------------------------------------ bounded reads of saved files (JSON, .npy)
MAX_JSON_DEPTH = 100  # segone's documents nest a few levels; Python's json recurses once per level
_JSON_STRING = None


def json_depth(text):
    """The deepest nesting of arrays and objects in JSON ``text`` (str or bytes), found without recursion."""
    import re

    global _JSON_STRING
    if _JSON_STRING is None:
        _JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    raw = _JSON_STRING.sub(b'""', raw)  # brackets inside strings do not nest
    b = np.frombuffer(raw, dtype=np.uint8)
    step = (np.isin(b, (ord("["), ord("{"))).astype(np.int32) - np.isin(b, (ord("]"), ord("}"))).astype(np.int32))
    if not step.any():
        return 0
    return int(np.cumsum(step).max())


def load_json(path, what, *, max_depth=MAX_JSON_DEPTH, error=None, fix="write it again"):
    """Read a JSON file whose nesting is at most ``max_depth`` (never a RecursionError).

    Raises ``error`` (default :class:`~segone.errors.ModelFormatError`) naming
    the file when it cannot be read, is not JSON or nests too deeply.

    Examples
    --------
    >>> import json, os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "doc.json")
    >>> _ = open(p, "w").write(json.dumps({"a": [1, 2]}))
    >>> load_json(p, "doc.json")
    {'a': [1, 2]}
    """
    from segone.errors import ModelFormatError

    error = error or ModelFormatError
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise error(f"{path}: {what} cannot be read ({exc.strerror or exc}); {fix}.") from None
    return loads_json(raw, f"{path}: {what}", max_depth=max_depth, error=error, fix=fix)


def loads_json(text, where, *, max_depth=MAX_JSON_DEPTH, error=None, fix="write it again"):
    """``json.loads`` of ``text`` after checking its nesting depth (see :func:`load_json`)."""
    import json

    from segone.errors import ModelFormatError

    error = error or ModelFormatError
    depth = json_depth(text)
    if depth > max_depth:
        raise error(
            f"{where} nests arrays or objects {depth} levels deep; segone's documents nest at most {max_depth} "
            f"levels, so the file is corrupt or not what it should be; {fix}."
        )
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{where} is not valid JSON ({exc}); the file is truncated or corrupt; {fix}.") from None


def check_npy_header(path, what, *, shape=None, dtypes=(np.float32, np.float64), error=None, fix="write it again"):
    """Read the header of a ``.npy`` file and check it against its byte size before anything is allocated.

    The declared dtype must be one of ``dtypes`` (never an object array: no
    pickle), the declared shape must be ``shape`` (None entries: any) and the
    file must hold exactly the bytes the header declares.  Returns
    ``(shape, dtype, fortran_order, offset)``; raises ``error`` (default
    :class:`~segone.errors.ModelFormatError`) naming the file otherwise.

    Examples
    --------
    >>> import numpy as np, os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "c.npy")
    >>> np.save(p, np.zeros((2, 3), np.float32))
    >>> check_npy_header(p, "c.npy", shape=(2, 3))[:2]
    ((2, 3), dtype('float32'))
    """
    import os

    from numpy.lib import format as npf

    from segone.errors import ModelFormatError

    error = error or ModelFormatError
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            major, minor = npf.read_magic(f)
            if (major, minor) == (1, 0):
                shp, fortran, dtype = npf.read_array_header_1_0(f)
            elif (major, minor) in ((2, 0), (3, 0)):
                shp, fortran, dtype = npf.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy format version {major}.{minor}")
            offset = f.tell()
    except (OSError, ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise error(f"{path}: {what} is not a readable NumPy .npy file ({exc}); the file is truncated or corrupt; "
                    f"{fix}.") from None  # fmt: skip
    if dtype.hasobject or dtype not in [np.dtype(d) for d in dtypes]:
        raise error(f"{path}: {what} declares dtype {dtype}, expected {' or '.join(np.dtype(d).name for d in dtypes)}"
                    f" (never Python objects); {fix}.")  # fmt: skip
    if shape is not None and (len(shp) != len(shape) or any(w is not None and w != s for w, s in zip(shape, shp))):
        want = "(" + ", ".join("any" if w is None else str(w) for w in shape) + ")"
        raise error(f"{path}: {what} declares shape {tuple(shp)}, expected {want}; {fix}.")
    need = int(np.prod(shp, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    if size - offset != need:
        raise error(
            f"{path}: {what} declares shape {tuple(shp)} of {dtype} ({need:,} bytes of data) but holds "
            f"{size - offset:,} bytes after its header; the file is truncated or corrupt; {fix}."
        )
    return tuple(shp), dtype, fortran, offset


# ------------------------------------------------ the numeric parameters of run / apply / track (before any work)
MAX_HORIZON_MONTHS = 1200  # 100 years: the value model sums one term per month of the horizon
MAX_DISCOUNT_RATE = 1.0  # per month: 100% a month already makes every month after the first worthless
MAX_N_INIT = 1000
MAX_REFINE = 1000


def check_discount_rate(value, name="discount_rate"):
    """The monthly discount rate of the customer value: a finite number in [0, 1] (e.g. 0.01 for 1% a month).

    A negative rate inflates every value (it compounds the future up), NaN or
    infinity makes every value undefined.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ParameterError(f"{name} must be a finite number (a monthly rate such as 0.01 for 1% a month), got "
                             f"{value!r}.")  # fmt: skip
    if not 0.0 <= value <= MAX_DISCOUNT_RATE:
        raise ParameterError(
            f"{name}={value!r} is out of range: it is a monthly rate in [0, {MAX_DISCOUNT_RATE:g}] (0.01 is 1% a "
            "month); a negative rate would inflate every customer value instead of discounting it."
        )
    return float(value)


def check_horizon_months(value, name="horizon_months"):
    """The horizon of the predicted purchases and value: an integer number of months in 1..1200 (100 years).

    0 would predict no purchase and no value for every customer; a negative
    horizon has no meaning.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer number of months, got {value!r} ({type(value).__name__}); "
                             "e.g. 12 for a year.")  # fmt: skip
    if not 1 <= value <= MAX_HORIZON_MONTHS:
        raise ParameterError(
            f"{name}={value} is out of range: give 1..{MAX_HORIZON_MONTHS} months ({MAX_HORIZON_MONTHS // 12} "
            "years; 12 is usual); the value model predicts purchases and value over that many months ahead."
        )
    return int(value)


MAX_HORIZON_DAYS = 3650  # 10 years: the propensity horizon of the next-best-action stage
MAX_OFFERS = 50


def check_horizon_days(value, name="horizon_days"):
    """The horizon of the category propensities (next best action): an integer number of days in 1..3650.

    Examples
    --------
    >>> check_horizon_days(30)
    30
    >>> check_horizon_days(0)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: horizon_days=0 is out of range: give 1..3650 days (30 is usual); the next best action predicts who buys each category in that many days ahead.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer number of days, got {value!r} ({type(value).__name__}); "
                             "e.g. 30.")  # fmt: skip
    if not 1 <= value <= MAX_HORIZON_DAYS:
        raise ParameterError(f"{name}={value} is out of range: give 1..{MAX_HORIZON_DAYS} days (30 is usual); the "
                             "next best action predicts who buys each category in that many days ahead.")  # fmt: skip
    return int(value)


def check_offers(value, name="offers"):
    """Offers per customer in actions.parquet: an integer in 1..50.

    Examples
    --------
    >>> check_offers(3)
    3
    >>> check_offers(51)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: offers=51 is out of range: give 1..50 offers per customer (3 is usual).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name} must be an integer number of offers per customer, got {value!r} "
                             f"({type(value).__name__}); e.g. 3.")  # fmt: skip
    if not 1 <= value <= MAX_OFFERS:
        raise ParameterError(f"{name}={value} is out of range: give 1..{MAX_OFFERS} offers per customer (3 is "
                             "usual).")  # fmt: skip
    return int(value)


def check_n_init(value, name="n_init"):
    """Seedings tried by the segmenter: an integer in 1..1000."""
    return check_int(value, name, low=1, high=MAX_N_INIT)


def check_refine(value, name="refine"):
    """Full-data refine passes of the segmenter: an integer in 0..1000."""
    return check_int(value, name, low=0, high=MAX_REFINE)


def check_n_traits(value, name="n_traits"):
    """Traits per customer persona: an integer in 1..64."""
    return check_int(value, name, low=1, high=64)


def check_min_segment_size(value, name="min_segment_size"):
    """None, or the smallest number of customers an exported segment or cell may stand for (an integer >= 1)."""
    return check_int(value, name, low=1, allow_none=True)


def check_freq(value, name="freq"):
    """The period of the value model's BTYD columns: "D" (days), "W" (weeks) or "M" (months)."""
    return check_choice(value, name, ("D", "W", "M"))


def check_penalizer(value, name="value_penalizer"):
    """The L2 penalty of the value models (lifetimes' ``penalizer_coef``): a finite number >= 0.

    Examples
    --------
    >>> check_penalizer(0.01)
    0.01
    >>> check_penalizer(-1)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: value_penalizer must be a finite number >= 0 (0: no penalty; 0.001 to 0.1 steadies fits on data with extreme customers), got -1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ParameterError(f"{name} must be a finite number >= 0 (0: no penalty; 0.001 to 0.1 steadies fits on "
                             f"data with extreme customers), got {value!r}.")  # fmt: skip
    return float(value)


#: one default for every ``sample_size`` (run, sweep, Segmenter on NumPy and on Dask): the fits learn on at most
#: ``max(DEFAULT_SAMPLE_SIZE, 128 * n_clusters)`` rows (all of them when there are fewer)
DEFAULT_SAMPLE_SIZE = 131_072
SAMPLE_ROWS_PER_CLUSTER = 128


def default_sample_size(n_clusters):
    """The rows the fits of ``n_clusters`` segments learn on by default: ``max(131072, 128 * n_clusters)``.

    Examples
    --------
    >>> default_sample_size(8), default_sample_size(2000)
    (131072, 256000)
    """
    return max(DEFAULT_SAMPLE_SIZE, SAMPLE_ROWS_PER_CLUSTER * int(n_clusters))


def check_sample_size(value, name="sample_size"):
    """None (the default rule, :func:`default_sample_size`) or the number of rows the fits learn on (an int >= 1).

    Examples
    --------
    >>> check_sample_size(None), check_sample_size(50_000)
    (None, 50000)
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(
            f"{name} must be None (the default: max({DEFAULT_SAMPLE_SIZE}, {SAMPLE_ROWS_PER_CLUSTER} * n_clusters) "
            f"rows) or a number of rows >= 1, got {value!r}."
        )
    return int(value)


def check_n_clusters_request(value, name="n_clusters", *, k_min=None, k_max=None):
    """The number of segments asked for before any data is read: an int >= 1, or "auto" (a sweep over k_min..k_max).

    Returns the int, or "auto"; the range of "auto" is checked too
    (:func:`segone.tuning.resolve_ks`); ``k_min`` / ``k_max`` with a fixed
    number are refused.  Against the number of customers:
    :func:`check_n_clusters`, once they are known.

    Examples
    --------
    >>> check_n_clusters_request(6), check_n_clusters_request(" Auto ", k_max=12)
    (6, 'auto')
    >>> check_n_clusters_request(6, k_max=12)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: k_min / k_max only apply to n_clusters='auto', not n_clusters=6; drop them or give n_clusters='auto'.
    """
    if isinstance(value, str):
        if value.strip().lower() != "auto":
            raise ParameterError(f"{name}={value!r} is not valid; give a number of segments (an integer >= 1) or "
                                 "'auto' (a sweep over k_min..k_max chooses it).")  # fmt: skip
        from segone.tuning import resolve_ks

        resolve_ks(None, k_min, k_max)
        return "auto"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ParameterError(f"{name} must be a number of segments (an integer >= 1) or 'auto', got {value!r}; "
                             "e.g. 8.")  # fmt: skip
    if k_min is not None or k_max is not None:
        raise ParameterError(f"k_min / k_max only apply to {name}='auto', not {name}={value}; drop them or give "
                             f"{name}='auto'.")  # fmt: skip
    return check_int(value, name, low=1, high=2**31 - 1)


def check_path(value, name, *, kind="file or directory", must_exist=True):
    """A path parameter: a str or os.PathLike; with ``must_exist`` it exists (``kind``: "file", "directory" or both).

    Non-paths (tables, frames) are returned as they are: the readers check them.

    Examples
    --------
    >>> check_path("/nonexistent/tx.parquet", "input")
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: input='/nonexistent/tx.parquet' does not exist; give an existing file or directory (check the spelling and the working directory).
    """
    import os

    if value is None or not isinstance(value, (str, os.PathLike)):
        return value
    path = os.fspath(value)
    if isinstance(path, bytes) or not path:
        raise ParameterError(f"{name}={value!r} is not a path; give a non-empty str or pathlib.Path.")
    if not must_exist:
        return value
    if not os.path.exists(path):
        raise ParameterError(f"{name}={path!r} does not exist; give an existing {kind} (check the spelling and the "
                             "working directory).")  # fmt: skip
    if kind == "directory" and not os.path.isdir(path):
        raise ParameterError(f"{name}={path!r} is a file; give a directory.")
    if kind == "file" and os.path.isdir(path):
        raise ParameterError(f"{name}={path!r} is a directory; give a file.")
    return value


# -- the vocabularies: label rules and persona phrases (data a user replaces; checked before any work)
_DEFAULTS = {"label_rules": "segone.DEFAULT_LABEL_RULES", "phrases": "segone.DEFAULT_PHRASES"}


def _keys_error(name, bad, valid, where=""):
    bad = sorted(map(str, bad))
    return ParameterError(
        f"{name}{where}: unknown key{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad))}; valid keys: "
        f"{', '.join(valid)}. Start from a copy of {_DEFAULTS.get(name, 'the default')} and change what you need."
    )


def _check_keys(value, name, valid, where="", required=()):
    if not isinstance(value, dict):
        raise ParameterError(f"{name}{where} must be a dict with keys {', '.join(valid)}, got {type(value).__name__} "
                             f"{value!r:.80}.")  # fmt: skip
    bad = [k for k in value if k not in valid]
    if bad:
        raise _keys_error(name, bad, valid, where)
    missing = [k for k in required if k not in value]
    if missing:
        raise ParameterError(f"{name}{where} needs {', '.join(map(repr, missing))}; valid keys: {', '.join(valid)}. "
                             f"Start from a copy of {_DEFAULTS.get(name, 'the default')}.")  # fmt: skip


def _is_number(v):
    return not isinstance(v, bool) and isinstance(v, numbers.Real) and not (isinstance(v, float) and np.isnan(v))


def _check_levels(value, name, where):
    ok = isinstance(value, (list, tuple)) and len(value) > 0
    for entry in value if ok else ():
        ok = ok and isinstance(entry, (list, tuple)) and len(entry) == 2 and _is_number(entry[0]) and \
            isinstance(entry[1], str)  # fmt: skip
    if not ok:
        raise ParameterError(f"{name}{where} must be a non-empty list of (threshold, word) pairs, e.g. [(2.0, "
                             f"'big-spending'), (0.0, 'low-spending')], got {value!r:.120}.")  # fmt: skip


def _check_type(value, name, where, kind, what):
    if kind == "number":
        ok = _is_number(value)
    elif kind == "str":
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ParameterError(f"{name}{where} must be {what}, got {value!r:.80}.")


LABEL_RULE_KEYS = ("value_column", "value", "recency", "new_tenure", "frequency_column", "regular_ratio", "nouns",
                   "alive_check", "non_buyers", "mix", "channel", "distinguish")  # fmt: skip
#: keys a rule set may leave out: rules written before these existed still work (the defaults apply)
LABEL_RULE_OPTIONAL = ("distinguish", "alive_check", "non_buyers")
_NOUN_KEYS = ("one_time", "regular", "default")
_MIX_KEYS = ("prefix", "min_share", "min_lift", "phrase", "tie", "max_labels", "many_phrase")
_ALIVE_KEYS = ("column", "max_p_alive", "words", "tail")
_NON_BUYER_KEYS = ("max_orders", "names", "default")
_DISTINGUISH_KEYS = ("min_difference", "columns")


def check_label_rules(rules, name="label_rules"):
    """None (:data:`segone.DEFAULT_LABEL_RULES`) or a dict of segment label rules: every key known, every value of
    its kind.

    A misspelt key (``"regualr_ratio"``) would otherwise be ignored in
    silence; the message names it and the valid keys.

    Examples
    --------
    >>> import segone
    >>> check_label_rules(dict(segone.DEFAULT_LABEL_RULES, regualr_ratio=3))
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: label_rules: unknown key 'regualr_ratio'; valid keys: value_column, value, recency, new_tenure, frequency_column, regular_ratio, nouns, alive_check, non_buyers, mix, channel, distinguish. Start from a copy of segone.DEFAULT_LABEL_RULES and change what you need.
    """
    if rules is None:
        return None
    required = [k for k in LABEL_RULE_KEYS if k not in LABEL_RULE_OPTIONAL]
    _check_keys(rules, name, LABEL_RULE_KEYS, required=required)
    for key in ("value_column", "frequency_column"):
        if key in rules:
            _check_type(rules[key], name, f"[{key!r}]", "str", "a profile column name (a str)")
    _check_levels(rules["value"], name, "['value']")
    _check_levels(rules["recency"], name, "['recency']")
    for key in ("new_tenure", "regular_ratio"):
        _check_type(rules[key], name, f"[{key!r}]", "number", "a number")
    _check_keys(rules["nouns"], name, _NOUN_KEYS, "['nouns']", required=_NOUN_KEYS)
    for k, v in rules["nouns"].items():
        _check_type(v, name, f"['nouns'][{k!r}]", "str", "a noun (a str)")
    for key in ("mix", "channel"):
        r = rules.get(key)
        if r:
            _check_keys(r, name, _MIX_KEYS, f"[{key!r}]", required=("prefix", "min_share", "min_lift", "phrase"))
            for k in ("prefix", "phrase", "many_phrase"):
                if k in r:
                    _check_type(r[k], name, f"[{key!r}][{k!r}]", "str", "a str")
            for k in ("min_share", "min_lift", "tie", "max_labels"):
                if k in r:
                    _check_type(r[k], name, f"[{key!r}][{k!r}]", "number", "a number")
    chk = rules.get("alive_check")
    if chk is not None:
        _check_keys(chk, name, _ALIVE_KEYS, "['alive_check']", required=("column", "max_p_alive"))
        _check_type(chk["column"], name, "['alive_check']['column']", "str", "a column name (a str)")
        _check_type(chk["max_p_alive"], name, "['alive_check']['max_p_alive']", "number", "a number in [0, 1]")
        _check_type(chk.get("words", {}), name, "['alive_check']['words']", dict, "a dict {word: replacement}")
    nb = rules.get("non_buyers")
    if nb is not None:
        _check_keys(nb, name, _NON_BUYER_KEYS, "['non_buyers']")
        names = nb.get("names", ())
        ok = isinstance(names, (list, tuple))
        for entry in names if ok else ():
            ok = ok and isinstance(entry, (list, tuple)) and len(entry) == 5 and entry[0] in ("mean", "median") and \
                isinstance(entry[1], str) and entry[2] in (">=", ">", "<=", "<") and _is_number(entry[3]) and \
                isinstance(entry[4], str)  # fmt: skip
        if not ok:
            raise ParameterError(
                f"{name}['non_buyers']['names'] must be a list of (\"mean\" or \"median\", column, op (>=, >, <=, <), "
                f"threshold, noun), got {names!r:.200}; see segone.DEFAULT_LABEL_RULES['non_buyers']."
            )
    dist = rules.get("distinguish")
    if dist is not None:
        _check_keys(dist, name, _DISTINGUISH_KEYS, "['distinguish']")
        if "min_difference" in dist:
            _check_type(dist["min_difference"], name, "['distinguish']['min_difference']", "number", "a number")
        ok = isinstance(dist.get("columns", ()), (list, tuple))
        for entry in dist.get("columns", ()) if ok else ():
            ok = ok and isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str) and \
                isinstance(entry[1], str) and "{value}" in entry[1]  # fmt: skip
        if not ok:
            raise ParameterError(
                f"{name}['distinguish']['columns'] must be a list of (column, phrase with {{value}}), got "
                f"{dist.get('columns')!r:.200}; see segone.DEFAULT_LABEL_RULES['distinguish']."
            )
    return rules


PHRASE_KEYS = ("match", "group", "high", "low", "high_far", "high_one", "high_zero", "low_far", "low_one", "low_zero",
               "high_min", "low_min", "low_max", "low_base_min", "far_ratio")  # fmt: skip
_PHRASE_TEMPLATES = ("high", "low", "high_far", "high_one", "high_zero", "low_far", "low_one", "low_zero")
_PHRASE_NUMBERS = ("high_min", "low_min", "low_max", "low_base_min", "far_ratio")
#: the placeholders a persona phrase may hold
PHRASE_PLACEHOLDERS = ("value", "ratio", "pct", "top", "bottom", "label", "name")


def check_phrases(phrases, name="phrases"):
    """None (:data:`segone.DEFAULT_PHRASES`) or a non-empty list of persona phrase rules, each with known keys,
    a ``match`` glob, ``high`` and ``low`` phrases (or None) whose placeholders are known.

    Examples
    --------
    >>> check_phrases([{"match": "*", "high": "high {name}", "low": None, "hihg_min": 1}])
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: phrases[0]: unknown key 'hihg_min'; valid keys: match, group, high, low, high_far, high_one, high_zero, low_far, low_one, low_zero, high_min, low_min, low_max, low_base_min, far_ratio. Start from a copy of segone.DEFAULT_PHRASES and change what you need.
    """
    import string

    if phrases is None:
        return None
    if isinstance(phrases, (str, bytes, dict)) or not isinstance(phrases, (list, tuple)) or not phrases:
        raise ParameterError(f"{name} must be a non-empty list of phrase rules (dicts, see segone.DEFAULT_PHRASES), "
                             f"got {phrases!r:.80}.")  # fmt: skip
    for i, rule in enumerate(phrases):
        where = f"[{i}]"
        _check_keys(rule, name, PHRASE_KEYS, where, required=("match", "high", "low"))
        _check_type(rule["match"], name, f"{where}['match']", "str", "a feature name or glob such as 'share_*'")
        if rule.get("group") is not None:
            _check_type(rule["group"], name, f"{where}['group']", "str", "a str or None")
        for key in _PHRASE_NUMBERS:
            if rule.get(key) is not None:
                _check_type(rule[key], name, f"{where}[{key!r}]", "number", "a number or None")
        for key in _PHRASE_TEMPLATES:
            t = rule.get(key)
            if t is None:
                continue
            _check_type(t, name, f"{where}[{key!r}]", "str", "a phrase (a str) or None")
            try:
                fields = [(f, spec) for _, f, spec, _ in string.Formatter().parse(t) if f is not None]
            except ValueError as exc:
                raise ParameterError(f"{name}{where}[{key!r}]: {t!r} is not a valid phrase ({exc}); write "
                                     "placeholders as {value:.0f} and literal braces as {{ }}.") from None  # fmt: skip
            for f, spec in fields:
                if f not in PHRASE_PLACEHOLDERS:
                    raise ParameterError(f"{name}{where}[{key!r}]: {t!r} names {{{f}}}; known placeholders: "
                                         f"{', '.join(PHRASE_PLACEHOLDERS)}.")  # fmt: skip
                if spec and not (spec.startswith(".") and spec.endswith("f") and spec[1:-1].isdigit()):
                    raise ParameterError(f"{name}{where}[{key!r}]: format {spec!r} in {t!r}; use .0f, .1f, ...")
    return phrases


def check_run_parameters(*, n_clusters=8, k_min=None, k_max=None, n_init=5, refine=2, sample_size=None, n_traits=3,
                         horizon_months=12, discount_rate=0.01, value_penalizer=0.0, freq="D", min_segment_size=None,
                         label_rules=None, phrases=None, n_threads=None, previous=None,
                         hash_ids=False):  # fmt: skip
    """Every parameter of :func:`segone.run` (and of ``segone run``) checked before any data is read.

    One helper per rule (:func:`check_n_clusters_request`,
    :func:`check_sample_size`, :func:`check_horizon_months`,
    :func:`check_discount_rate`, :func:`check_penalizer`,
    :func:`check_label_rules`, :func:`check_phrases`, ...); each raises a
    ParameterError naming the parameter, the value and the fix.  With
    ``previous``, the previous output must be a directory of the same kind
    as this run (pseudonymised with ``hash_ids``, plain without):
    :func:`segone.track.check_previous` (also: no withheld customers).
    Returns the number of segments (an int or "auto").

    Examples
    --------
    >>> check_run_parameters(discount_rate=-0.5)
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: discount_rate=-0.5 is out of range: it is a monthly rate in [0, 1] (0.01 is 1% a month); a negative rate would inflate every customer value instead of discounting it.
    """
    from segone._threads import effective_n_threads

    n_clusters = check_n_clusters_request(n_clusters, k_min=k_min, k_max=k_max)
    if not (isinstance(n_init, str) and n_init == "auto"):
        check_n_init(n_init)
    if not (isinstance(refine, str) and refine == "auto"):
        check_refine(refine)
    check_sample_size(sample_size)
    check_n_traits(n_traits)
    check_horizon_months(horizon_months)
    check_discount_rate(discount_rate)
    check_penalizer(value_penalizer)
    check_freq(freq)
    check_min_segment_size(min_segment_size)
    check_label_rules(label_rules)
    check_phrases(phrases)
    effective_n_threads(n_threads)  # an absurd thread count is refused before any work
    if previous is not None:
        check_previous_output(previous, hash_ids=hash_ids)
    return n_clusters


def check_previous_output(previous, *, hash_ids=False, name="previous"):
    """The output directory of an earlier run to track against: an existing directory of the same kind as this run
    (pseudonymised with ``hash_ids``, plain without; :func:`segone.track.check_previous`)."""
    check_path(previous, name, kind="directory")
    if not isinstance(previous, (str, __import__("os").PathLike)):
        raise ParameterError(f"{name} must be the path of an earlier run's output directory, got "
                             f"{type(previous).__name__}.")  # fmt: skip
    from segone.track import check_previous

    check_previous(previous, pseudonymised=bool(hash_ids))
    return previous


# ------------------------------------------------ timestamps far beyond the data (damaged bytes read as data)
US_PER_DAY = 86_400_000_000
BULK_MIN_ROWS = 100  # fewer rows: no bulk to speak of
BULK_SAMPLE = 1 << 20  # the quantiles come from an evenly strided sample of at most this many rows


def check_timestamp_bulk(ts_us, where):
    """Refuse timestamps far beyond the bulk of the data, which would move a default ``as_of`` (the latest one).

    The bulk is the range between the 1st and the 99th percentile of the
    timestamps (microseconds since the epoch); a timestamp later than the
    99th percentile by more than the bulk's span (and by more than a year)
    is far beyond it.  Damaged bytes read as data typically do this (a year
    2032 among purchases of 2023-2024).  Raises DataError naming the rows,
    the values and what to do; fewer than 100 rows are not checked.

    Examples
    --------
    >>> import numpy as np
    >>> ts = np.arange(1000, dtype=np.int64) * 86_400_000_000 + 1_700_000_000_000_000
    >>> check_timestamp_bulk(ts, "transactions.ts")
    >>> ts[7] = 1_960_000_000_000_000  # 2032
    >>> check_timestamp_bulk(ts, "transactions.ts")
    Traceback (most recent call last):
    ...
    segone.errors.DataError: transactions.ts: 1 timestamps lie far beyond the bulk of the data ...
    """
    import datetime as _dt

    ts = np.asarray(ts_us)
    n = ts.size
    if n < BULK_MIN_ROWS:
        return
    latest = int(ts.max())
    sample = ts[:: max(1, n // BULK_SAMPLE)]
    m = sample.size
    lo_k, hi_k = int(0.01 * (m - 1)), int(0.99 * (m - 1))
    part = np.partition(sample, (lo_k, hi_k))
    lo, hi = int(part[lo_k]), int(part[hi_k])
    limit = hi + max(hi - lo, 365 * US_PER_DAY)
    if latest <= limit:
        return
    rows = np.flatnonzero(ts > limit)

    def day(us):
        return (_dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=int(us))).date().isoformat()

    raise DataError(
        f"{where}: {rows.size} timestamps lie far beyond the bulk of the data (98% of the rows fall between "
        f"{day(lo)} and {day(hi)}; rows {examples(rows)} hold {', '.join(day(v) for v in ts[rows[:5]])}), so "
        f"the default as_of (the latest timestamp) would jump to {day(latest)}. Damaged file bytes read as data "
        "do this: check those rows and the file they come from, drop them, or pass as_of (--as-of) explicitly "
        "(rows after it are then excluded and counted)."
    )
