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
  :func:`dataset` ``(path, column_types={...})``.  The files of a directory
  are read with one schema, the union of theirs: a column some files lack is
  null there (but a column a role requires must be in every file), types
  the files disagree on meet at the wider one or raise naming the files, and
  a file that cannot be read is named.

Outputs are directories written atomically (:func:`atomic_directory`),
checked and locked before any work (:func:`check_output`).

Types are normalised once, here, so that the rest of segone sees one type
per kind (:func:`normalize_schema`): ``string_view`` and ``large_string``
become ``string``, ``binary_view`` and ``large_binary`` become ``binary``,
dictionary (categorical) columns keep their encoding with int32 indices
and normalised values (polars Categorical / Enum, pandas categorical),
``large_list`` / list views become ``list``.  Timestamps, dates, numbers
and time zones are left as they are (the profile converts them).
"""

import atexit
import difflib
import errno
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from segone.errors import DataError, OutputError, ParameterError, SchemaError

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


def to_float64(col):
    """A numeric Arrow column as float64 (integers beyond 2**53 rounded, never refused as a safe cast would)."""
    if col.type == pa.float64():
        return col
    return pc.cast(col, pa.float64(), safe=not pa.types.is_integer(col.type))


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

    def unreadable(exc):
        raise ParameterError(
            f"{name}: cannot list the directory {exc.filename or path!r}: {exc.strerror or exc}; check its "
            "permissions (segone needs to read every directory of the dataset)."
        )

    for root, dirs, files in os.walk(path, onerror=unreadable):
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
    return ds.IpcFileFormat() if fmt == "ipc" else parquet_format()


def parquet_format():
    """The Parquet format segone reads with: page checksums verified where the file has them (a page whose bytes
    were damaged after writing raises, naming the file, instead of being read as data)."""
    return ds.ParquetFileFormat(default_fragment_scan_options=ds.ParquetFragmentScanOptions(
        page_checksum_verification=True))  # fmt: skip


DELIMITERS = (",", ";", "\t", "|")  # the field separators a CSV file is sniffed for


def sniff_delimiter(path, fmt="csv"):
    """The field separator of a CSV / TSV file, from its header line: the format's own ("," or tab) when the
    header holds it, else the one of ``;``, tab, ``|`` and ``,`` it holds most (None when it holds none).

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "tx.csv")
    >>> _ = open(p, "w").write("customer_id;ts;amount\\n1;2024-03-18;9,5\\n")
    >>> sniff_delimiter(p)
    ';'
    """
    import bz2
    import gzip

    path = os.fspath(path)
    low = path.lower()
    opener = gzip.open if low.endswith(".gz") else bz2.open if low.endswith(".bz2") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(65536)
    except (OSError, EOFError, ValueError):
        return None
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    first = re.sub(r'"(?:[^"]|"")*"', "", first)  # separators inside quoted names do not count
    own = "\t" if fmt == "tsv" else ","
    if own in first:
        return None
    counts = {d: first.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


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
        CSV only: the field separator.  None: "," for CSV and tab for TSV,
        unless the header line holds none of it but ``;``, tab or ``|``
        (:func:`sniff_delimiter`): a file of another separator is read as such.

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
    if fmt in ("csv", "tsv") and delimiter is None:  # a ;-, tab- or |-separated file named .csv: its header tells
        delimiter = sniff_delimiter(files[0] if isinstance(files, list) else files, fmt)
    fmt_obj = _format_object(fmt, column_types, delimiter)
    if isinstance(files, list) and len(files) > 1:
        if fmt in ("csv", "tsv"):
            schema = _csv_schema(files, fmt_obj, path, name)
        else:
            schema = _unified_schema(files, fmt_obj, fmt, path, name)
        try:
            return ds.dataset(files, format=fmt_obj, schema=schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
            raise ParameterError(
                f"{name}: cannot read {path!r} as {FORMAT_NAMES[fmt]}: {_msg(exc)} {_fix_hint(fmt)}"
            ) from None
    try:
        return ds.dataset(files, format=fmt_obj)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ParameterError(
            f"{name}: cannot read {path!r} as {FORMAT_NAMES[fmt]}: {_msg(exc)} {_fix_hint(fmt)}"
        ) from None


# schema metadata key of a directory dataset whose files do not all hold every column:
# {column: {"n": files without it, "of": files, "files": the first ones, "columns": what the first one holds}}
PARTIAL_COLUMNS_KEY = b"segone.partial_columns"


def _file_schemas(files, fmt_obj, fmt, path, name):
    """Every file's schema (footers / first blocks only, read by a few threads for many files)."""
    if len(files) <= 8:
        return [_file_schema(f, fmt_obj, fmt, path, name) for f in files]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda f: _file_schema(f, fmt_obj, fmt, path, name), files))


def _partial_columns(files, schemas, metadata=None):
    """Schema metadata recording the columns some files lack (see :data:`PARTIAL_COLUMNS_KEY`)."""
    meta = dict(metadata or {})
    meta.pop(b"pandas", None)  # the first file's pandas metadata does not describe the others
    names = {}
    for sch in schemas:
        names.update(dict.fromkeys(sch.names))
    partial = {}
    for col in names:
        lacking = [f for f, sch in zip(files, schemas) if col not in sch.names]
        if lacking:
            partial[col] = {"n": len(lacking), "files": lacking[:3], "of": len(files),
                            "columns": schemas[files.index(lacking[0])].names[:20]}  # fmt: skip
    if partial:
        meta[PARTIAL_COLUMNS_KEY] = json.dumps(partial).encode()
    return meta or None


def _file_schema(f, fmt_obj, fmt, path, name):
    """The schema of one file of a directory (its footer / header only); DataError naming the file."""
    try:
        return ds.dataset(f, format=fmt_obj).schema
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise DataError(
            f"{name}: cannot read {f!r} (in directory {path!r}) as {FORMAT_NAMES[fmt]}: {_msg(exc)} "
            f"{_fix_hint(fmt)} Or move the file out of the directory."
        ) from None


def _loose_type(t, tz=None):
    """The type two files' types may meet at when Arrow's own promotion fails: categorical -> its values,
    a date -> a timestamp (in the zone ``tz`` of the other files' timestamps)."""
    if pa.types.is_dictionary(t):
        return _loose_type(t.value_type, tz)
    if pa.types.is_date(t):
        return pa.timestamp("us", tz=tz)
    return normalize_type(t)


def _unify_column(col, types):
    """One type for a column whose files hold ``types``; None when they cannot meet."""
    tz = next((t.tz for t in types if pa.types.is_timestamp(t)), None)
    for candidates in (types, [_loose_type(t, tz) for t in types]):
        try:
            return pa.unify_schemas([pa.schema([(col, t)]) for t in candidates],
                                    promote_options="permissive").field(col).type  # fmt: skip
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
    return None


def _unified_schema(files, fmt_obj, fmt, path, name):
    """One schema for the files of a directory (Arrow reads the first file's schema only).

    Every column of any file is read (the first file's order, then new
    columns); a file without a column reads it as nulls, which the columns a
    role requires do not accept (see :func:`_pick_columns`).  Types the files
    disagree on meet at the wider type (int32 and int64 -> int64, int and
    float -> float, timestamp units -> the finest, categorical and string ->
    string, date and timestamp -> timestamp); types that cannot meet (a
    number and a string, naive and zone-aware timestamps) raise
    :class:`~segone.errors.SchemaError` naming the files.
    """
    schemas = _file_schemas(files, fmt_obj, fmt, path, name)
    types, where = {}, {}
    for f, sch in zip(files, schemas):
        for field in sch:
            types.setdefault(field.name, {}).setdefault(str(field.type), field.type)
            where.setdefault(field.name, {}).setdefault(str(field.type), []).append(f)
    if len(types) == len(schemas[0]) and all(len(v) == 1 for v in types.values()) and \
            all(len(s) == len(types) for s in schemas):  # fmt: skip
        return schemas[0]  # the usual case: every file has the same schema
    fields = []
    for col, by_type in types.items():
        t = next(iter(by_type.values())) if len(by_type) == 1 else _unify_column(col, list(by_type.values()))
        if t is None:
            found = "; ".join(f"{ty} in {len(fs)} file(s), e.g. {fs[0]!r}" for ty, fs in where[col].items())
            raise SchemaError(
                f"{name}: the files of {path!r} disagree on the type of column {col!r} ({found}); give the column "
                f"one type in every file (rewrite the odd files with the column cast to {next(iter(by_type))}), "
                "or move them out of the directory."
            )
        fields.append(pa.field(col, pa.string() if pa.types.is_null(t) else t))
    return pa.schema(fields, metadata=_partial_columns(files, schemas, schemas[0].metadata))


def _csv_schema(files, fmt_obj, path=None, name="input"):
    """One schema for CSV files whose types were inferred file by file (pyarrow infers from the first file only).

    Each column gets the type every file agrees on, else the permissive
    promotion of the files' types (null -> any, int -> float), else string
    (ids then compare as strings; timestamp strings are parsed by the
    profile's ISO 8601 rule).  The order is the first file's, then new columns.
    """
    schemas = _file_schemas(files, fmt_obj, "csv", path, name)  # each file's first block
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
    return pa.schema(fields, metadata=_partial_columns(files, schemas))


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


# ------------------------------------------------------------------ outputs
# An output directory ``out`` is written as ``parent/.segone-tmp-<name>.<pid>.<hex>`` and renamed into place; an
# overwrite first renames the previous output to ``parent/.segone-old-<name>.<pid>.<hex>``.  While a run writes
# ``out`` it holds the lock file ``parent/.segone-lock-<name>`` (created exclusively, holding the pid, host, start
# time and command), so a second writer is refused at its start, and whoever holds the lock knows that every
# temporary or previous-output directory of ``out`` was left by an interrupted run: it removes the temporaries and
# puts back a previous output whose replacement never arrived (see :func:`check_output`).
_TMP_PREFIX, _OLD_PREFIX, _LOCK_PREFIX = ".segone-tmp-", ".segone-old-", ".segone-lock-"
_AUX_TAIL = re.compile(r"^\d+\.[0-9a-f]+$")  # "<pid>.<hex>" after "<prefix><name>."
_LEGACY_OLD = re.compile(r"^\.segone-old-[A-Za-z0-9_]{8}$")  # segone <= 0.1: mkdtemp names holding "x"
_LEGACY_TMP = re.compile(r"^\.segone-tmp-[A-Za-z0-9_]{8}$")
KILL_ENV = "SEGONE_TEST_KILL_AT"  # tests: kill this process at a named point of a write (see _kill_point)
_held = {}  # output path -> the OutputLock this process holds for it
_held_mutex = threading.Lock()
_acquire_mutex = threading.Lock()


class OutputRecoveryWarning(UserWarning):
    """An interrupted earlier run left something next to the output; segone cleaned it up or put it back."""


def _kill_point(point):
    """Fault injection for tests: with ``SEGONE_TEST_KILL_AT=<point>`` this process dies here (SIGKILL)."""
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def _output_path(out, name="out"):
    if not isinstance(out, (str, os.PathLike)):
        raise ParameterError(f"{name} must be a directory path (str or os.PathLike), got {type(out).__name__}.")
    path = os.fspath(out)
    if not path:
        raise ParameterError(f"{name} is empty; give the output directory, e.g. {name}='segments-out'.")
    return os.path.abspath(path)


def _aux_key(name):
    """The part of the temporary, previous-output and lock names that stands for the output's name."""
    if len(name) <= 120:
        return name
    return f"{name[:80]}~{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def _aux_entries(parent, prefix, name):
    """Entries of ``parent`` named ``<prefix><name>.<pid>.<hex>`` (this output's temporaries / previous outputs)."""
    head = prefix + _aux_key(name) + "."
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return sorted(os.path.join(parent, e) for e in entries if e.startswith(head) and _AUX_TAIL.match(e[len(head):]))


def _aux_path(parent, prefix, name):
    return os.path.join(parent, f"{prefix}{_aux_key(name)}.{os.getpid()}.{secrets.token_hex(4)}")


def _errno_hint(exc):
    code = getattr(exc, "errno", None)
    if code is None:  # Arrow's IO errors carry the errno in their message only
        found = re.search(r"errno[ =:]*(\d+)", str(exc), re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk (or your quota) is full: free some space or write to another disk"
    if code in (errno.EACCES, errno.EPERM):
        return "you have no permission to write there: choose a directory you can write to, or fix its permissions"
    if code == errno.EROFS:
        return "the file system is read-only: choose an output on a writable disk"
    if code == errno.ENAMETOOLONG:
        return "the path is too long: choose a shorter output path"
    return "check the path and the disk"


def _os_message(exc):
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return f"{what}{where}"


def _output_error(exc, path, doing="writing"):
    return OutputError(
        f"{doing} the output {path!r} failed: {_os_message(exc)}; {_errno_hint(exc)}. Nothing was written: the "
        "previous output, if any, is unchanged."
    )


def _nearest_existing(path):
    p = path
    while not os.path.lexists(p):
        up = os.path.dirname(p)
        if up == p:
            break
        p = up
    return p


def _probe_writable(directory, path):
    """Create and remove a file in ``directory`` (where the output's temporary directory will go)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".segone-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"the output {path!r} cannot be written: creating a file in {directory!r} failed: {_os_message(exc)}; "
            f"{_errno_hint(exc)}."
        ) from None


def _within(child, parent):
    """True when ``child`` is ``parent`` or lies inside it (both absolute; symlinks and bind mounts resolved)."""
    child, parent = os.path.realpath(child), os.path.realpath(parent)
    try:
        if os.path.commonpath([child, parent]) == parent:
            return True
    except ValueError:  # different drives
        return False
    try:
        pst = os.stat(parent)
    except OSError:
        return False
    p = child
    while True:
        try:
            if os.path.samestat(os.stat(p), pst):
                return True
        except OSError:
            pass
        up = os.path.dirname(p)
        if up == p:
            return False
        p = up


def _check_overlap(path, inputs, others):
    """Refuse an output that overlaps a protected directory in either direction.

    Every input, and every one of ``others`` (the model read, the previous
    run, the runs compared), is protected: the output may not be it, contain
    it, or lie inside it (with ``overwrite`` a nested output would delete or
    replace part of it; without, a later read of it would find the output's
    files inside).
    """
    for role, src, datasets in [(r, s, True) for r, s in inputs] + [(r, s, False) for r, s in others]:
        if not isinstance(src, (str, os.PathLike)) or not os.path.exists(os.fspath(src)):
            continue
        inp = os.path.abspath(os.fspath(src))
        if _within(inp, path):
            same = _within(path, inp)
            alt = os.path.join(os.path.dirname(os.path.realpath(inp)),
                               os.path.basename(os.path.realpath(inp)) + "-segone-out")  # fmt: skip
            raise OutputError(
                f"the output {path!r} {'is' if same else 'contains'} the {role} {inp!r}: writing it would replace "
                f"(with overwrite, delete) the {role}. Choose an output directory outside it, e.g. {alt!r}."
            )
        if os.path.isdir(inp) and _within(path, inp):
            alt = os.path.join(os.path.dirname(os.path.realpath(inp)), os.path.basename(path) or "segone-out")
            why = (f"a later run reading {inp!r} would read the outputs as {role} data" if datasets else
                   f"writing it would change (with overwrite, delete part of) the {role}")  # fmt: skip
            raise OutputError(
                f"the output {path!r} lies inside the {role} directory {inp!r}: {why}. Choose an output directory "
                f"outside it, e.g. {alt!r}."
            )


def _proc_start(pid):
    """The start time of a process (Linux /proc ticks) as a string, '' when it cannot be told."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def _pid_alive(pid, start=""):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return isinstance(pid, int) and pid > 0
    now = _proc_start(pid)
    return not (start and now and now != start)  # the pid was reused by another process


def _read_lock(lockfile):
    try:
        with open(lockfile, encoding="utf-8") as f:
            info = json.load(f)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _lock_state(lockfile, info):
    """'stale' (its run is gone), 'self' (held by this process) or 'live'."""
    pid, host = info.get("pid"), info.get("host")
    if not info:  # unreadable or empty: a writer killed while creating it, if it is old enough
        try:
            age = time.time() - os.stat(lockfile).st_mtime
        except OSError:
            return "stale"
        return "stale" if age > 60 else "live"
    if host != socket.gethostname() or not isinstance(pid, int):
        return "live"  # another machine: its runs cannot be seen from here
    if pid == os.getpid():
        return "self"
    return "live" if _pid_alive(pid, info.get("pid_start", "")) else "stale"


def _break_stale(lockfile, seen):
    """Remove a stale lock file, unless another process replaced it meanwhile (one breaker at a time)."""
    breaker = lockfile + ".break"
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        try:
            if time.time() - os.stat(breaker).st_mtime > 30:  # its breaker was killed
                os.unlink(breaker)
        except OSError:
            pass
        time.sleep(0.05)
        return
    try:
        if _read_lock(lockfile) == seen:
            os.unlink(lockfile)
    except OSError:
        pass
    finally:
        try:
            os.unlink(breaker)
        except OSError:
            pass


def _create_exclusive(lockfile, text):
    """Create ``lockfile`` holding ``text`` atomically; FileExistsError when it exists."""
    tmp = f"{lockfile}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    try:
        os.link(tmp, lockfile)  # atomic, and the lock never exists half-written
    except FileExistsError:
        raise
    except OSError as exc:  # no hard links on this file system: O_EXCL
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        fd = os.open(lockfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


class OutputLock:
    """The lock of one output directory held by this process (``release()`` removes the lock file)."""

    def __init__(self, out, lockfile, info):
        self.out, self.path, self.info = out, lockfile, info
        self.thread = threading.get_ident()
        self.released = False

    def release(self):
        if self.released:
            return
        self.released = True
        with _held_mutex:
            if _held.get(self.out) is self:
                del _held[self.out]
        if os.getpid() != self.info["pid"]:
            return  # a forked child: the lock is its parent's
        if _read_lock(self.path).get("token") == self.info["token"]:
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def releasing(self, obj):
        """``obj`` (anything with ``close()``) whose ``close()`` also releases this lock."""
        return _ReleaseOnClose(obj, self)


class _ReleaseOnClose:
    def __init__(self, obj, lock):
        self._obj, self._lock = obj, lock

    def __getattr__(self, name):
        return getattr(self._obj, name)

    def close(self):
        try:
            return self._obj.close()
        finally:
            self._lock.release()


def _acquire(path):
    """(lock, owned): this thread's lock of ``path`` if it holds one (not owned), else a new one (owned)."""
    with _acquire_mutex:  # one thread of this process at a time takes a lock: a lock file of this pid that is not
        return _acquire_locked(path)  # registered in _held is then a leftover, never another thread's


def _acquire_locked(path):
    with _held_mutex:
        lk = _held.get(path)
    if lk is not None and not lk.released:
        if lk.thread == threading.get_ident():
            return lk, False
        raise OutputError(
            f"the output {path!r} is being written by another segone run in this process (thread {lk.thread}); "
            "wait for it to finish or choose another output directory."
        )
    parent, name = os.path.split(path)
    lockfile = os.path.join(parent, _LOCK_PREFIX + _aux_key(name))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise _output_error(exc, path, "creating the parent directory of") from None
    info = {"pid": os.getpid(), "pid_start": _proc_start(os.getpid()), "host": socket.gethostname(),
            "token": secrets.token_hex(8), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:300], "output": path}  # fmt: skip
    for _ in range(50):
        try:
            _create_exclusive(lockfile, json.dumps(info))
            break
        except FileExistsError:
            other = _read_lock(lockfile)
            state = _lock_state(lockfile, other)
            if state == "live":
                raise OutputError(
                    f"the output {path!r} is being written by another segone run (pid {other.get('pid', '?')} on "
                    f"{other.get('host', '?')}, started {other.get('started', '?')}: {other.get('command', '?')!r}); "
                    "wait for it to finish or choose another output directory. If no such run is active, delete "
                    f"the lock file {lockfile!r}."
                ) from None
            if state == "stale":
                warnings.warn(
                    f"removed the lock file {lockfile!r} of an earlier segone run that is no longer running "
                    f"(pid {other.get('pid', '?')}, started {other.get('started', '?')}).",
                    OutputRecoveryWarning, stacklevel=4,
                )  # fmt: skip
            # "self": left by an earlier call of this process that never released it
            _break_stale(lockfile, other)
        except OSError as exc:
            raise OutputError(
                f"the output {path!r} cannot be written: creating the lock file {lockfile!r} failed: "
                f"{_os_message(exc)}; {_errno_hint(exc)}."
            ) from None
    else:
        raise OutputError(f"could not take the lock file {lockfile!r} of the output {path!r}; delete it and retry.")
    lk = OutputLock(path, lockfile, info)
    with _held_mutex:
        _held[path] = lk
    return lk, True


@atexit.register
def _release_all():
    for lk in list(_held.values()):
        lk.release()


def _recover(path):
    """With the lock held: remove the temporaries of interrupted writes of ``path``, put back a lost previous output."""
    parent, name = os.path.split(path)
    for tmp in _aux_entries(parent, _TMP_PREFIX, name):
        shutil.rmtree(tmp, ignore_errors=True)
        warnings.warn(f"removed {tmp!r}, the unfinished output of an interrupted segone run.", OutputRecoveryWarning,
                      stacklevel=4)  # fmt: skip
    olds = sorted(_aux_entries(parent, _OLD_PREFIX, name), key=lambda p: os.stat(p).st_mtime)
    if olds and not os.path.lexists(path):
        last = olds.pop()
        try:
            os.replace(last, path)
        except OSError as exc:
            raise OutputError(
                f"the output {path!r} is missing and its previous content is in {last!r} (an overwrite was "
                f"interrupted); putting it back failed: {_os_message(exc)}. Restore it with: "
                f"mv {shlex.quote(last)} {shlex.quote(path)}"
            ) from None
        warnings.warn(
            f"restored the previous output {path!r} from {last!r}: an overwrite of it was interrupted before the new "
            "output was in place.", OutputRecoveryWarning, stacklevel=4,
        )  # fmt: skip
    for old in olds:  # the overwrite had finished: the previous output is garbage
        shutil.rmtree(old, ignore_errors=True)
    for tmp in [os.path.join(parent, e) for e in _listdir(parent) if _LEGACY_TMP.match(e)]:
        warnings.warn(
            f"{tmp!r} is the unfinished output of a run of an older segone that was interrupted; delete it with: "
            f"rm -rf {shlex.quote(tmp)}", OutputRecoveryWarning, stacklevel=4,
        )  # fmt: skip
    if not os.path.lexists(path):
        legacy = [os.path.join(parent, e) for e in _listdir(parent) if _LEGACY_OLD.match(e)
                  and os.path.isdir(os.path.join(parent, e, "x"))]  # fmt: skip
        for old in legacy:
            warnings.warn(
                f"{old!r} holds the previous output of an overwrite that an older segone left unfinished; if it was "
                f"{path!r}, restore it with: mv {shlex.quote(os.path.join(old, 'x'))} {shlex.quote(path)} && "
                f"rmdir {shlex.quote(old)}", OutputRecoveryWarning, stacklevel=4,
            )  # fmt: skip


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def check_output(out, inputs=(), overwrite=False, *, others=(), name="out"):
    """Check before any work that ``out`` can be written, and take its lock; returns the :class:`OutputLock`.

    Raises :class:`~segone.errors.OutputError` (a ParameterError) when:

    * ``out`` exists and is not a directory (segone never replaces a file), or
      exists, is not empty and ``overwrite`` is False, or holds files segone
      did not write (``overwrite`` replaces an empty directory or a segone
      output only: :func:`is_segone_output`);
    * a parent of ``out`` is a file, or the directory that will hold ``out``
      cannot be written (permissions, read-only or full disk);
    * ``out`` overlaps a protected directory in either direction: it is,
      contains or lies inside an input dataset (``inputs``: paths or
      ``(role, path)`` pairs; in-memory inputs are skipped) or one of
      ``others`` (the model read, the previous run, the runs compared), with
      or without ``overwrite``.  Every writer of segone (run, apply, track,
      save_model, synth) calls this function first;
    * another live segone run writes ``out`` (its lock file
      ``.segone-lock-<name>`` next to ``out`` names it).  A lock left by a dead
      run is removed with a warning.

    With the lock held, what interrupted runs left next to ``out`` is cleaned
    up (:class:`OutputRecoveryWarning`): unfinished temporary directories are
    removed, and a previous output that an interrupted overwrite had moved
    aside while ``out`` is missing is put back.

    Release the lock with ``lock.release()`` (or ``with check_output(...)``);
    :func:`atomic_directory` on the same ``out`` in the same thread uses it.
    """
    path = _output_path(out, name)
    inputs = [(p if isinstance(p, tuple) else ("input", p)) for p in inputs if p is not None]
    others = [(p if isinstance(p, tuple) else ("input", p)) for p in others if p is not None]
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(
            f"the output {path!r} exists and is not a directory; segone writes a directory of files and never "
            "replaces a file: choose a directory path."
        )
    anc = _nearest_existing(os.path.dirname(path))
    if not os.path.isdir(anc):
        raise OutputError(
            f"the output {path!r} cannot be created: {anc!r} is a file, not a directory; choose another path."
        )
    _check_overlap(path, inputs, others)
    _probe_writable(anc, path)
    lock, _ = _acquire(path)
    try:
        _recover(path)
        _check_exists(path, overwrite)
        if overwrite:
            _check_replaceable(path)
    except BaseException:
        lock.release()
        raise
    return lock


# the documents that mark a directory as a segone output (run, apply, track, model, synth)
_OUTPUT_MARKERS = ("run.json", "tracking.json", "model.json", "manifest.json",
                   os.path.join("period-0", "manifest.json"))  # fmt: skip


def is_segone_output(path):
    """True when ``path`` is a directory segone wrote: it holds one of :data:`_OUTPUT_MARKERS` of a segone format."""
    for marker in _OUTPUT_MARKERS:
        try:
            with open(os.path.join(path, marker), encoding="utf-8") as f:
                fmt = json.load(f).get("format", "")
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
        if isinstance(fmt, str) and fmt.startswith("segone-"):
            return True
    return False


def _check_replaceable(path):
    """``overwrite`` replaces empty directories and segone's own outputs only: never a directory of other files."""
    if os.path.isdir(path) and _listdir(path) and not is_segone_output(path):
        names = sorted(_listdir(path))
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise OutputError(
            f"the output {path!r} holds files segone did not write ({shown}; no run.json, tracking.json, model.json "
            "or manifest.json of segone); overwrite replaces segone's own outputs only. Choose another output "
            "directory, or empty it yourself."
        )


def _check_exists(path, overwrite):
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(
            f"the output {path!r} exists and is not a directory; segone writes a directory of files and never "
            "replaces a file: choose a directory path."
        )
    if os.path.isdir(path) and not overwrite and _listdir(path):
        raise OutputError(
            f"output {path!r} exists and is not empty; pass overwrite=True (--overwrite) to replace it, or choose "
            "another directory."
        )


@contextmanager
def atomic_directory(path, overwrite=False):
    """Yield a temporary directory that is renamed to ``path`` on success.

    On failure the temporary directory is removed and ``path`` is untouched.
    With ``overwrite=True`` an existing ``path`` (a directory) is replaced: it
    is renamed aside, the new output renamed into place, then the previous one
    removed; an interruption between the two renames is repaired by the next
    writer of ``path`` (see :func:`check_output`).  The write holds the lock of
    ``path`` (the one this thread took with :func:`check_output`, else its
    own).  An OSError while writing (disk full, no permission, read-only)
    raises :class:`~segone.errors.OutputError`.
    """
    path = _output_path(path, "output")
    lock, owned = _acquire(path)
    try:
        if owned:
            _recover(path)
        _check_exists(path, overwrite)
        parent, name = os.path.split(path)
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = _aux_path(parent, _TMP_PREFIX, name)
            os.mkdir(tmp)
            os.chmod(tmp, 0o755)
        except OSError as exc:
            raise _output_error(exc, path) from None
        try:
            yield tmp
            _kill_point("written")
            if os.path.lexists(path):
                old = _aux_path(parent, _OLD_PREFIX, name)
                os.replace(path, old)
                _kill_point("moved-old")
                try:
                    os.replace(tmp, path)
                except BaseException:
                    os.replace(old, path)  # put the previous output back
                    raise
                _kill_point("replaced")
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise _output_error(exc, path) from exc
            raise
    finally:
        if owned:
            lock.release()


def write_parquet(table, path):
    """Write one Parquet file atomically (temporary name, then rename)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    pq.write_table(table, tmp, write_page_checksum=True)  # readers verify them (parquet_format)
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
