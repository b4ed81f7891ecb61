"""Reading any table or file segone accepts, normalised once; writing outputs atomically.

Every public function that takes a table (:func:`segone.build_profiles`,
:class:`segone.FeatureScorer`, :func:`segone.describe_segments`,
:func:`segone.personas`, :func:`segone.rfm_scores`, :func:`segone.run`)
reads it through :func:`read_table` or :func:`iter_batches`, which accept:

* in memory: a pyarrow Table, RecordBatch, RecordBatchReader or Dataset; a
  pandas DataFrame (NumPy, nullable, ArrowDtype or categorical columns; the
  index is never read); a polars DataFrame or LazyFrame; a DuckDB relation;
  anything exporting the Arrow C stream (``__arrow_c_stream__``) or array
  (``__arrow_c_array__``) interface;
* on disk: a file or a directory of files in one format, chosen by the
  extension (``.parquet`` / ``.pq``, ``.csv`` / ``.csv.gz``, ``.tsv`` /
  ``.tsv.gz``, ``.arrow`` / ``.feather`` / ``.ipc``) or, without one, by the
  file's first bytes (Parquet and Arrow IPC magic numbers, else text is
  CSV).  A directory mixing formats is an error.  CSV is streamed with
  ``pyarrow.dataset``: types are inferred (ISO dates and times become dates
  and timestamps, empty fields are nulls) or given with
  :func:`dataset` ``(path, column_types={...})``.

Types are normalised once, here, so that the rest of segone sees one type
per kind (:func:`normalize_schema`): ``string_view`` and ``large_string``
become ``string``, ``binary_view`` and ``large_binary`` become ``binary``,
dictionary (categorical) columns keep their encoding with int32 indices
and normalised values (polars Categorical / Enum, pandas categorical),
``large_list`` / list views become ``list``.  Timestamps, dates, numbers
and time zones are left as they are (the profile converts them).
"""

import difflib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from segone.errors import DataError, ParameterError, SchemaError

def resolve_inputs(path, events=None, attributes=None):
    """EVENTS IN: (transactions, events, attributes) sources from what the user gave.

    A directory written by ``segone synth`` (``transactions/``, ``events/``,
    ``customers/``) gives all three; anything else is the transactions input,
    with ``events`` and ``attributes`` as given.
    """
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(os.path.join(os.fspath(path), "transactions")):
        base = os.fspath(path)
        tx = os.path.join(base, "transactions")
        if events is None and os.path.isdir(os.path.join(base, "events")):
            events = os.path.join(base, "events")
        if attributes is None and os.path.isdir(os.path.join(base, "customers")):
            attributes = os.path.join(base, "customers")
        return tx, events, attributes
    return path, events, attributes



# ------------------------------------------------------------ type normalisation
_is_string_view = getattr(pa.types, "is_string_view", lambda t: False)
_is_binary_view = getattr(pa.types, "is_binary_view", lambda t: False)
_is_list_view = getattr(pa.types, "is_list_view", lambda t: False)
_is_large_list_view = getattr(pa.types, "is_large_list_view", lambda t: False)


def normalize_type(t):
    """The one type segone uses for values of type ``t`` (``t`` itself when it is already normal)."""
    if pa.types.is_large_string(t) or _is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or _is_binary_view(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        value = normalize_type(t.value_type)
        index = t.index_type if pa.types.is_signed_integer(t.index_type) else pa.int32()
        if value.equals(t.value_type) and index.equals(t.index_type):
            return t
        return pa.dictionary(index, value, t.ordered)
    if pa.types.is_large_list(t) or pa.types.is_list(t) or _is_list_view(t) or _is_large_list_view(t):
        field = _normalize_field(t.value_field)
        if pa.types.is_list(t) and field.equals(t.value_field):
            return t
        return pa.list_(field)
    if pa.types.is_struct(t):
        fields = [_normalize_field(t.field(i)) for i in range(t.num_fields)]
        if all(f.equals(t.field(i)) for i, f in enumerate(fields)):
            return t
        return pa.struct(fields)
    return t


def _normalize_field(field):
    t = normalize_type(field.type)
    return field if t is field.type or t.equals(field.type) else field.with_type(t)


def normalize_schema(schema):
    """``schema`` with every field's type normalised (:func:`normalize_type`); the same object when nothing changes."""
    fields, changed = [], False
    for field in schema:
        t = normalize_type(field.type)
        changed |= t is not field.type and not t.equals(field.type)
        fields.append(field.with_type(t))
    return pa.schema(fields, metadata=schema.metadata) if changed else schema


def normalize_table(table):
    """A pyarrow Table (or RecordBatch) with its column types normalised (zero-copy when they already are)."""
    schema = normalize_schema(table.schema)
    if schema is table.schema:
        return table
    if isinstance(table, pa.RecordBatch):
        return _cast_batch(table, schema)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        # a chunk too large for 32-bit offsets: cast it in smaller slices
        return pa.Table.from_batches(table.to_batches(max_chunksize=1 << 16), schema=table.schema).cast(schema)


def _cast_batch(batch, schema):
    if schema is batch.schema:
        return batch
    arrays = [c if f.type.equals(c.type) else c.cast(f.type) for c, f in zip(batch.columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# ------------------------------------------------------------------- file formats
# extension -> format; the longest extensions first
EXTENSIONS = (
    (".csv.gz", "csv"), (".tsv.gz", "tsv"), (".csv.bz2", "csv"), (".tsv.bz2", "tsv"),
    (".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"), (".pq", "parquet"),
    (".arrow", "ipc"), (".feather", "ipc"), (".ipc", "ipc"), (".arrows", "ipc-stream"),
)  # fmt: skip
FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV", "tsv": "TSV (tab-separated CSV)", "ipc": "Arrow IPC (Feather)",
                "ipc-stream": "Arrow IPC stream"}  # fmt: skip
_READABLE = "Parquet (.parquet, .pq), CSV (.csv, .csv.gz, .tsv) or Arrow IPC / Feather (.arrow, .feather, .ipc)"
_IGNORED_PREFIXES = (".", "_")  # pyarrow's default: hidden files, _SUCCESS, _metadata
_IGNORED_SUFFIXES = (".crc",)  # Hadoop checksums


def file_format(path):
    """The format of one file: "parquet", "csv", "tsv", "ipc" or "ipc-stream"; None when it cannot be told.

    The extension decides (:data:`EXTENSIONS`); without a known extension the
    first bytes do: Parquet's ``PAR1``, Arrow IPC's ``ARROW1`` (file) or
    ``0xFFFFFFFF`` (stream), and UTF-8 text is CSV (TSV when its first line
    holds more tabs than commas).  An Arrow file written in the stream format
    is told apart from the file format by its first bytes too.
    """
    path = os.fspath(path)
    low = path.lower()
    by_ext = next((fmt for ext, fmt in EXTENSIONS if low.endswith(ext)), None)
    if by_ext not in (None, "ipc"):
        return by_ext
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as exc:
        raise ParameterError(
            f"cannot open {path!r}: {exc.strerror or exc}; check the path and its permissions."
        ) from None
    if head[:6] == b"ARROW1":
        return "ipc"
    if head[:4] == b"\xff\xff\xff\xff":
        return "ipc-stream"
    if by_ext is not None:
        return by_ext
    if head[:4] == b"PAR1":
        return "parquet"
    if not head or head[:2] == b"\x1f\x8b" or b"\x00" in head:
        return None  # empty, compressed without its extension, or binary
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end of the sniffed bytes
            return None
        text = head[: exc.start].decode("utf-8")
    first = text.split("\n", 1)[0]
    return "tsv" if first.count("\t") > first.count(",") else "csv"


def data_files(path, name="input"):
    """The data files of a directory, recursively and sorted.

    Hidden files, ``_SUCCESS``, ``_metadata`` and ``.crc`` checksums are left out.
    """
    path = os.fspath(path)
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(_IGNORED_PREFIXES))
        out += [os.path.join(root, f) for f in sorted(files)
                if not f.startswith(_IGNORED_PREFIXES) and not f.lower().endswith(_IGNORED_SUFFIXES)]  # fmt: skip
    if not out:
        raise ParameterError(f"{name}: directory {path!r} holds no data files; segone reads {_READABLE}.")
    return out


def _directory_format(files, path, name):
    kinds = {}
    for f in files:
        fmt = file_format(f)
        if fmt is None:
            raise ParameterError(
                f"{name}: cannot tell the format of {f!r} (in directory {path!r}) from its extension or its first "
                f"bytes; segone reads {_READABLE}. Remove the file from the directory or give it its extension."
            )
        kinds.setdefault(fmt, []).append(f)
    if len(kinds) > 1:
        found = "; ".join(f"{FORMAT_NAMES[k]}: {len(v)} file(s), e.g. {v[0]!r}" for k, v in sorted(kinds.items()))
        raise ParameterError(
            f"{name}: directory {path!r} mixes file formats ({found}); keep one format per directory "
            "(move the others out, or convert them)."
        )
    fmt = next(iter(kinds))
    if fmt == "ipc-stream":
        raise ParameterError(
            f"{name}: directory {path!r} holds Arrow IPC stream files, which are read one file at a time; "
            "write them in the IPC file format (pyarrow.feather.write_feather) or pass one file."
        )
    return fmt


def _format_object(fmt, column_types=None, delimiter=None):
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pacsv

        return ds.CsvFileFormat(
            parse_options=pacsv.ParseOptions(delimiter=delimiter or ("\t" if fmt == "tsv" else ",")),
            convert_options=pacsv.ConvertOptions(column_types=column_types or {}, strings_can_be_null=True),
        )
    if column_types:
        raise ParameterError(f"column_types applies to CSV files only; {FORMAT_NAMES[fmt]} files carry their types.")
    return ds.IpcFileFormat() if fmt == "ipc" else ds.ParquetFileFormat()


def dataset(path, *, format=None, column_types=None, delimiter=None, name="input"):
    """A file or directory -> a ``pyarrow.dataset.Dataset`` (streamed by :func:`iter_batches`).

    Parameters
    ----------
    path : str or path
        A file, or a directory whose data files (recursively) share one format.
    format : {"parquet", "csv", "tsv", "ipc"} or None
        None: from the extension, else from the first bytes (:func:`file_format`).
    column_types : dict or None
        CSV only: ``{column: pyarrow type}`` for columns whose inferred type is
        not wanted (e.g. ``{"customer_id": pa.string()}`` to keep leading zeros).
    delimiter : str or None
        CSV only: the field separator (default "," for CSV, tab for TSV).

    Examples
    --------
    >>> import pyarrow as pa, segone, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "tx.csv")
    >>> _ = open(p, "w").write("customer_id,ts,amount\\n007,2024-03-18,9.5\\n")
    >>> segone.io.dataset(p, column_types={"customer_id": pa.string()}).to_table().column("customer_id").to_pylist()
    ['007']
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ParameterError(f"{name}: path {path!r} does not exist.")
    if format is not None and format not in ("parquet", "csv", "tsv", "ipc"):
        raise ParameterError(
            f"format={format!r} is not known; use 'parquet', 'csv', 'tsv' or 'ipc' (or None to detect)."
        )
    if os.path.isdir(path):
        files = data_files(path, name)
        fmt = format or _directory_format(files, path, name)
    else:
        files = path
        fmt = format or file_format(path)
        if fmt is None:
            raise ParameterError(
                f"{name}: cannot tell the format of {path!r} from its extension or its first bytes (it is empty, "
                f"binary or compressed without its extension); segone reads {_READABLE}. Rename it with its "
                "extension, or pass format=..."
            )
        if fmt == "ipc-stream":
            raise ParameterError(
                f"{name}: {path!r} is an Arrow IPC stream, which is not a dataset; pass the path itself (segone "
                "streams it) or pyarrow.ipc.open_stream(path), or write it in the IPC file format "
                "(pyarrow.feather.write_feather)."
            )
    try:
        fmt_obj = _format_object(fmt, column_types, delimiter)
        if fmt in ("csv", "tsv") and isinstance(files, list) and len(files) > 1:
            return ds.dataset(files, format=fmt_obj, schema=_csv_schema(files, fmt_obj))
        return ds.dataset(files, format=fmt_obj)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ParameterError(
            f"{name}: cannot read {path!r} as {FORMAT_NAMES[fmt]}: {_msg(exc)} {_fix_hint(fmt)}"
        ) from None


def _csv_schema(files, fmt_obj):
    """One schema for CSV files whose types were inferred file by file (pyarrow infers from the first file only).

    Each column gets the type every file agrees on, else the permissive
    promotion of the files' types (null -> any, int -> float), else string
    (ids then compare as strings; timestamp strings are parsed by the
    profile's ISO 8601 rule).  The order is the first file's, then new columns.
    """
    schemas = [ds.dataset(f, format=fmt_obj).schema for f in files]  # each file's first block
    types = {}
    for sch in schemas:
        for field in sch:
            types.setdefault(field.name, []).append(field.type)
    fields = []
    for col, ts in types.items():
        try:
            t = pa.unify_schemas([pa.schema([(col, t)]) for t in ts], promote_options="permissive").field(col).type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            t = pa.string()
        fields.append(pa.field(col, pa.string() if pa.types.is_null(t) else t))
    return pa.schema(fields)


def _fix_hint(fmt):
    if fmt in ("csv", "tsv"):
        return (
            "Check the file is text with a header row; for a column read with the wrong type give it, e.g. "
            "segone.io.dataset(path, column_types={'customer_id': pa.string()}), and pass that dataset."
        )
    if fmt == "ipc":
        return "Check the file is complete; write Arrow files with pyarrow.feather.write_feather (Feather v2)."
    return "Check the file is a complete Parquet file (a partial copy or another format with a .parquet name fails)."


def parquet_files(source, name):
    """The data files of a path (a file, or a directory dataset), in dataset order (any readable format)."""
    dataset_ = _open_path(source, name)
    if isinstance(dataset_, ds.FileSystemDataset):
        return list(dataset_.files)
    return [frag.path for frag in dataset_.get_fragments()]


def _open_path(source, name):
    """A file or directory path -> its dataset (an Arrow IPC stream file: a reader); anything else unchanged."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = os.fspath(source)
    if os.path.isfile(path) and file_format(path) == "ipc-stream":
        try:
            return pa.ipc.open_stream(pa.memory_map(path))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ParameterError(
                f"{name}: cannot read {path!r} as an Arrow IPC stream: {_msg(exc)} {_fix_hint('ipc')}"
            ) from None
    return dataset(path, name=name)


def _msg(exc):
    """An Arrow error message as one sentence."""
    return str(exc).strip().rstrip(".") + "."


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
    return DataError(f"{name}: reading {where} failed: {_msg(exc)} {fix}")


def _failing_file(dataset_, columns):
    for frag in dataset_.get_fragments():
        try:
            for _ in frag.to_batches(schema=dataset_.schema, columns=columns):
                pass
        except (pa.ArrowInvalid, OSError):
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
            cols = _pick_columns(arrow.schema.names, columns, optional, name)
            table = arrow.to_table(columns=cols)
        else:
            if isinstance(arrow, pa.RecordBatchReader):
                cols = _pick_columns(arrow.schema.names, columns, optional, name)
                arrow = arrow.read_all()
            else:
                cols = _pick_columns(arrow.column_names, columns, optional, name)
            table = arrow.select(cols)
    except (pa.ArrowInvalid, OSError) as exc:
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
        cols = _pick_columns(arrow.schema.names, columns, optional, name)
        # modest read-ahead: memory stays a few batches, the scan stays parallel
        batches = arrow.to_batches(columns=cols, batch_size=batch_size, **SCAN_READAHEAD)
    elif isinstance(arrow, pa.RecordBatchReader):
        cols = _pick_columns(arrow.schema.names, columns, optional, name)
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
    except (pa.ArrowInvalid, OSError) as exc:
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
    """Hand memory that Arrow's allocator holds but no longer uses back to the OS."""
    pa.default_memory_pool().release_unused()


def _pick_columns(names, columns, optional, name):
    if columns is None:
        return list(names)
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(
            f"{name}: required column(s) {', '.join(map(repr, missing))} not found; the input has "
            f"columns {list(names)[:20]}. Rename them, or map roles to your names with "
            f"schema={{'{missing[0]}': 'your_column'}} (command line: --schema {missing[0]}=your_column)."
        )
    return list(columns) + [c for c in optional if c in names and c not in columns]


@contextmanager
def atomic_directory(path, overwrite=False):
    """Yield a temporary directory that is renamed to ``path`` on success.

    On failure the temporary directory is removed and ``path`` is untouched.
    With ``overwrite=True`` an existing ``path`` is replaced.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        if not (os.path.isdir(path) and not os.listdir(path)):
            raise ParameterError(f"output {path!r} exists and is not empty; pass overwrite=True (--overwrite).")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".segone-tmp-", dir=parent)
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".segone-old-", dir=parent)
            moved = os.path.join(old, "x")
            os.replace(path, moved)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(moved, path)  # put the previous output back
                shutil.rmtree(old, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_parquet(table, path):
    """Write one Parquet file atomically (temporary name, then rename)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_json(obj, path):
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
