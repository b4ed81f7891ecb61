"""Any table in: in-memory tables and frames, files and datasets read whole (:func:`read_table`) or in batches
(:func:`iter_batches`), and the column mapping of ``--schema``."""

import difflib
import json
import os

import pyarrow as pa
import pyarrow.dataset as ds

from segone.errors import DataError, ParameterError, SchemaError
from segone.io.files import DELIMITERS, PARTIAL_COLUMNS_KEY, _fix_hint, _msg, _open_path, file_format
from segone.io.normalise import _cast_batch, normalize_schema, normalize_table


# ------------------------------------------------------------ in-memory inputs
_ACCEPTED = ("a pyarrow Table / RecordBatch / RecordBatchReader / Dataset, a pandas or polars DataFrame, a DuckDB "
             "relation, an object with __arrow_c_stream__, or a path to Parquet, CSV or Arrow IPC files")  # fmt: skip


def _is_pandas_frame(obj):
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def _from_pandas(df, columns, optional, name):
    names = [str(c) for c in df.columns]
    if columns is not None and all(isinstance(c, str) for c in df.columns):
        df = df.loc[:, _pick_columns(names, columns, optional, name)]
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
        raise SchemaError(
            f"{name}: a pandas column cannot be read as one Arrow type: {exc}. Give every column one type "
            "(e.g. df[col].astype('string') or pd.to_numeric(df[col])), or convert with dtype_backend='pyarrow'."
        ) from None


def _as_arrow(source, name, columns=None, optional=()):
    """An input -> a pyarrow Table, RecordBatchReader or Dataset (types not normalised yet)."""
    source = _open_path(source, name)
    if isinstance(source, (pa.Table, pa.RecordBatchReader, ds.Dataset)):
        return source
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if _is_pandas_frame(source):
        return _from_pandas(source, columns, optional, name)
    mod, kind = type(source).__module__, type(source).__name__
    if mod.startswith("polars") and kind == "LazyFrame":
        source = source.collect()
    if isinstance(source, (pa.Array, pa.ChunkedArray)) or (mod.startswith("polars") and kind == "Series"):
        raise ParameterError(
            f"{name}: expected a table, got a single column ({kind}); wrap it in a table, "
            "e.g. pa.table({'x': col}) or series.to_frame()."
        )
    try:
        if hasattr(source, "__arrow_c_stream__"):
            if not hasattr(pa.RecordBatchReader, "from_stream"):  # pyarrow < 15
                return pa.table(source)
            return pa.RecordBatchReader.from_stream(source)
        if hasattr(source, "__arrow_c_array__"):
            return pa.Table.from_batches([pa.record_batch(source)])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError) as exc:
        raise SchemaError(
            f"{name}: the {kind} could not be read as an Arrow table (named columns): {_msg(exc)}"
        ) from None
    if mod.startswith("duckdb") and hasattr(source, "arrow"):
        return source.arrow()
    raise ParameterError(f"{name}: expected {_ACCEPTED}; got {type(source).__name__}.")


def _read_error(exc, name, source, arrow=None, columns=None):
    """A read that failed midway -> DataError naming the file (found again, on this error path only) and the fix."""
    where, fmt = f"the {type(source).__name__}", None
    if isinstance(source, (str, os.PathLike)):
        where = repr(os.fspath(source))
        files = [os.fspath(source)]
        if isinstance(arrow, ds.FileSystemDataset) and len(arrow.files) > 1:
            files = [_failing_file(arrow, columns) or os.fspath(source)]
            where = f"{files[0]!r} (in {os.fspath(source)!r})" if files[0] != os.fspath(source) else where
        if os.path.isfile(files[0]):
            fmt = file_format(files[0])
    fix = _fix_hint(fmt) if fmt else "Check the input can be read."
    if "checksum" in str(exc).lower():
        fix = ("A page's checksum does not match its bytes: the file was damaged after it was written (storage, "
               "copy or transfer). Restore it from its source, or write it again.")  # fmt: skip
    return DataError(f"{name}: reading {where} failed: {_msg(exc)} {fix}")


def _failing_file(dataset_, columns):
    for frag in dataset_.get_fragments():
        try:
            for _ in frag.to_batches(schema=dataset_.schema, columns=columns):
                pass
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError):
            return frag.path
    return None


def read_table(source, columns=None, *, name="input", optional=()):
    """Read ``source`` into a pyarrow Table holding ``columns``, with normalised types.

    ``source`` is any input listed in this module's docstring.  Only the
    requested columns are read from files.  Columns listed in ``optional``
    are read when present.  A pandas index is never read.
    """
    arrow = _as_arrow(source, name, columns, optional)
    cols = None
    try:
        if isinstance(arrow, ds.Dataset):
            cols = _pick_columns(arrow.schema.names, columns, optional, name, arrow.schema, source)
            table = arrow.to_table(columns=cols)
        else:
            if isinstance(arrow, pa.RecordBatchReader):
                cols = _pick_columns(arrow.schema.names, columns, optional, name, source=source)
                arrow = arrow.read_all()
            else:
                cols = _pick_columns(arrow.column_names, columns, optional, name)
            table = arrow if columns is None else arrow.select(cols)  # all columns: duplicate names too
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise _read_error(exc, name, source, arrow, cols) from None
    return normalize_table(table)


# read-ahead of the Parquet scans in iter_batches (batches, files)
SCAN_READAHEAD = {"batch_readahead": 4, "fragment_readahead": 2}


def iter_batches(source, columns=None, *, name="input", optional=(), batch_size=1 << 20):
    """Yield the ``columns`` of ``source`` as RecordBatches with normalised types, without materialising the input.

    Accepts what :func:`read_table` accepts.  A file dataset is scanned batch
    by batch (only the requested columns are read); an Arrow C stream or
    RecordBatchReader is consumed as a stream; in-memory tables are sliced
    without copying.  Every batch has the same schema.
    """
    arrow = _as_arrow(source, name, columns, optional)
    cols = None
    if isinstance(arrow, ds.Dataset):
        cols = _pick_columns(arrow.schema.names, columns, optional, name, arrow.schema, source)
        # modest read-ahead: memory stays a few batches, the scan stays parallel
        batches = arrow.to_batches(columns=cols, batch_size=batch_size, **SCAN_READAHEAD)
    elif isinstance(arrow, pa.RecordBatchReader):
        cols = _pick_columns(arrow.schema.names, columns, optional, name, source=source)
        batches = (batch.select(cols) for batch in arrow)
    else:
        table = normalize_table(arrow.select(_pick_columns(arrow.column_names, columns, optional, name)))
        if table.num_rows == 0:  # one empty batch: the schema still reaches the reader
            yield pa.RecordBatch.from_pylist([], schema=table.schema)
            return
        yield from table.to_batches(max_chunksize=batch_size)
        return
    schema = None
    try:
        for batch in batches:
            if schema is None:
                schema = normalize_schema(batch.schema)
            yield _cast_batch(batch, schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise _read_error(exc, name, source, arrow, cols) from None


# ------------------------------------------------------------- column mapping
def parse_schema_options(items, name="--schema"):
    """``["customer_id=user", "ts=time"]`` -> ``{"customer_id": "user", "ts": "time"}`` (the CLI's column mapping).

    Each item maps one role to a column as ``ROLE=COLUMN`` (the column name
    may itself hold "="; spaces around the role and the column are
    ignored).  Roles are those of :data:`segone.profile.DEFAULT_SCHEMA`.  An
    item without "=", an empty role or column, an unknown role or a role
    given twice with different columns raises
    :class:`~segone.errors.ParameterError`.

    Examples
    --------
    >>> parse_schema_options(["customer_id=user", "ts = time"])
    {'customer_id': 'user', 'ts': 'time'}
    """
    from segone.profile import DEFAULT_SCHEMA

    roles = list(DEFAULT_SCHEMA)
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items or ():
        if not isinstance(item, str):
            raise ParameterError(f"{name}: expected ROLE=COLUMN strings, got {item!r} ({type(item).__name__}).")
        role, sep, column = item.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ParameterError(
                f"{name} {item!r} is not ROLE=COLUMN; write e.g. {name} customer_id=user_id "
                f"(roles: {', '.join(roles)})."
            )
        if role not in DEFAULT_SCHEMA:
            close = difflib.get_close_matches(role, roles, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ParameterError(f"{name} {item!r}: unknown role {role!r}; roles are {', '.join(roles)}.{hint}")
        if role in out and out[role] != column:
            raise ParameterError(
                f"{name} maps role {role!r} twice ({out[role]!r} and {column!r}); give each role once."
            )
        out[role] = column
    return out


def release_arrow_memory():
    """Hand memory that Arrow's allocator holds but no longer uses back to the OS, unless the user chose to keep
    freed memory for reuse (:func:`segone.keep_freed_memory`)."""
    from segone import _memory

    if not _memory.settings()["keep_freed_memory"]:
        pa.default_memory_pool().release_unused()


def _pick_columns(names, columns, optional, name, schema=None, source=None):
    if columns is None:
        return list(names)
    missing = [c for c in columns if c not in names]
    where = f" ({os.fspath(source)!r})" if isinstance(source, (str, os.PathLike)) else ""
    if missing:
        names_ = list(names)
        seps = [d for d in DELIMITERS if len(names_) == 1 and d in str(names_[0])]
        if seps:  # one column whose name holds separators: the file was split on the wrong character
            shown = {"\t": "tab"}.get(seps[0], seps[0])
            raise SchemaError(
                f"{name}{where}: required column(s) {', '.join(map(repr, missing))} not found; the input has one "
                f"column {names_[0][:80]!r}: the file looks {shown}-separated, not split on its separator. Read it "
                f"with segone.io.dataset(path, delimiter={seps[0]!r}) and pass that dataset, or write it "
                "comma-separated."
            )
        raise SchemaError(
            f"{name}{where}: required column(s) {', '.join(map(repr, missing))} not found; the input has "
            f"columns {list(names)[:20]}. Rename them, or map roles to your names with "
            f"schema={{'{missing[0]}': 'your_column'}} (command line: --schema {missing[0]}=your_column)."
        )
    names = list(names)
    twice = [c for c in list(columns) + [c for c in optional if c in names] if names.count(c) > 1]
    if twice:
        raise SchemaError(
            f"{name}{where}: column {twice[0]!r} appears {names.count(twice[0])} times; give every column its own "
            "name (rename or drop the copies)."
        )
    partial = (schema.metadata or {}).get(PARTIAL_COLUMNS_KEY) if schema is not None else None
    if partial:  # a directory whose files do not all hold the required columns
        partial = json.loads(partial)
        lacking = [c for c in columns if c in partial]
        if lacking:
            p = partial[lacking[0]]
            raise SchemaError(
                f"{name}{where}: required column {lacking[0]!r} is missing from {p['n']} of the {p['of']} files "
                f"(e.g. {p['files'][0]!r}, whose columns are {p['columns']}); every file must hold the columns "
                f"{', '.join(map(repr, lacking))}: rename the column in those files (files that name it "
                "differently), or move them out of the directory."
            )
    return list(columns) + [c for c in optional if c in names and c not in columns]
