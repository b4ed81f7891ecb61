"""Reading Arrow-compatible inputs and writing outputs atomically."""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from segone.errors import ParameterError, SchemaError


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


def parquet_files(source, name):
    """The files of a Parquet path (a file, or a directory dataset), in dataset order."""
    dataset = _open_path(source, name)
    return [frag.path for frag in dataset.get_fragments()]


def _open_path(source, name):
    """A file or directory path -> its Parquet dataset; anything else unchanged."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ParameterError(f"{name}: path {path!r} does not exist.")
    try:
        return ds.dataset(path, format="parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        raise ParameterError(f"{name}: cannot open {path!r} as a Parquet dataset: {exc}") from None


def read_table(source, columns=None, *, name="input", optional=()):
    """Read ``source`` into a pyarrow Table holding ``columns``.

    ``source`` may be a pyarrow Table / RecordBatch / RecordBatchReader /
    Dataset, a Parquet file or directory path, or any object exporting the
    Arrow C stream interface (``__arrow_c_stream__``: pandas >= 2.2, polars,
    DuckDB results).  Only the requested columns are read from Parquet.
    Columns listed in ``optional`` are read when present.
    """
    source = _open_path(source, name)
    if isinstance(source, ds.Dataset):
        names = source.schema.names
        cols = _pick_columns(names, columns, optional, name)
        return source.to_table(columns=cols)
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    elif isinstance(source, pa.RecordBatchReader):
        source = source.read_all()
    elif not isinstance(source, pa.Table):
        if hasattr(source, "__arrow_c_stream__"):
            source = pa.table(source)
        elif type(source).__name__ == "DataFrame" and type(source).__module__.startswith("pandas"):
            source = pa.Table.from_pandas(source, preserve_index=False)
        else:
            raise ParameterError(
                f"{name}: expected a pyarrow Table, a Parquet path or dataset, or an object with "
                f"__arrow_c_stream__ (pandas, polars), got {type(source).__name__}."
            )
    cols = _pick_columns(source.column_names, columns, optional, name)
    return source.select(cols)


# read-ahead of the Parquet scans in iter_batches (batches, files)
SCAN_READAHEAD = {"batch_readahead": 4, "fragment_readahead": 2}


def iter_batches(source, columns=None, *, name="input", optional=(), batch_size=1 << 20):
    """Yield the ``columns`` of ``source`` as RecordBatches, without materialising the whole input.

    Accepts what :func:`read_table` accepts.  A Parquet dataset is scanned
    batch by batch (only the requested columns are read); an Arrow C stream
    or RecordBatchReader is consumed as a stream; in-memory tables are
    sliced without copying.  Every batch has the same schema.
    """
    source = _open_path(source, name)
    if isinstance(source, ds.Dataset):
        cols = _pick_columns(source.schema.names, columns, optional, name)
        # modest read-ahead: memory stays a few batches, the scan stays parallel
        yield from source.to_batches(columns=cols, batch_size=batch_size, **SCAN_READAHEAD)
        return
    if isinstance(source, pa.RecordBatchReader) or (
        hasattr(source, "__arrow_c_stream__") and not isinstance(source, (pa.Table, pa.RecordBatch))
        and hasattr(pa.RecordBatchReader, "from_stream")
    ):  # fmt: skip
        reader = source if isinstance(source, pa.RecordBatchReader) else pa.RecordBatchReader.from_stream(source)
        cols = _pick_columns(reader.schema.names, columns, optional, name)
        for batch in reader:
            yield batch.select(cols)
        return
    table = read_table(source, columns, name=name, optional=optional)
    if table.num_rows == 0:  # one empty batch: the schema still reaches the reader
        yield pa.RecordBatch.from_pylist([], schema=table.schema)
        return
    yield from table.to_batches(max_chunksize=batch_size)


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
            f"schema={{'{missing[0]}': 'your_column'}}."
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
