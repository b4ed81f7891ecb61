"""Input validation shared by the public entry points."""

import numbers

import numpy as np

from segone.errors import DataError, EmptyInputError, ParameterError, SchemaError, examples

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


def check_random_state(seed):
    """Turn None / int / Generator into a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ParameterError(f"random_state must be None, a non-negative int or a numpy Generator, got {seed!r}.")
    return np.random.default_rng(int(seed))


def check_n_clusters(k, n, name="n_clusters", rows="samples"):
    """``k`` segments for ``n`` rows: an int in 1..n (one wording for the estimator, the job and Dask)."""
    k = check_int(k, name, low=1)
    if k > n:
        raise ParameterError(
            f"{name}={k} is larger than the number of {rows} ({n}); use at most {n} segments "
            "or provide more customers."
        )
    return k
