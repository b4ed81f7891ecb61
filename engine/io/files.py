"""Files in: formats found by extension or magic bytes, CSV sniffing, datasets read with one unified schema."""

import json
import os
import re

import pyarrow as pa
import pyarrow.dataset as ds

from segone.errors import DataError, ParameterError, SchemaError
from segone.io.normalise import normalize_type


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
