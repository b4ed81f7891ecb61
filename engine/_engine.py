"""Engines: where the stages of :func:`segone.run` execute.

An engine only reads the inputs into *parts*, brings each customer's rows
into one piece (``by_customer`` for the inputs, ``co_partition`` for tables
already read, such as two runs' assignments), maps a function over parts,
tree-reduces mergeable states (:mod:`segone._state`), persists parts, gathers
small results and writes parts.  It computes nothing itself: every
computation is a function of the stage's own module, and
:func:`segone.pipeline.run` is the one sequence of stages over any engine.

Parts are opaque to the pipeline.  The :class:`LocalEngine` runs everything
in this process.  It keeps one part per input (the source itself, which the
kernels stream record batch by record batch), except for large Parquet
datasets already split by customer (file i of every input holds the same
customers): those it profiles file by file, so the stage's memory holds one
file's rows at a time instead of the whole history.  The Dask engine
(:class:`segone.dask.DaskEngine`) holds one part per partition on the workers.
"""

import os
from typing import Protocol, runtime_checkable

from segone._state import merge_all
from segone._threads import effective_n_threads
from segone.io import write_parquet

ROLES = ("transactions", "events", "attributes")
# above this many transaction and event rows (Parquet metadata), split inputs are profiled file by file
STREAM_ROWS = 32_000_000


@runtime_checkable
class Engine(Protocol):
    """What an engine provides to :func:`segone.run` (the stages call nothing else).

    An engine holds *parts* (opaque to the pipeline: tables, file paths,
    futures) and only moves them and the small states computed from them;
    every computation is a function of a stage's own module.
    :class:`LocalEngine` and :class:`segone.dask.DaskEngine` implement it;
    :func:`check_engine` checks an object against it with a message naming
    what is missing.

    Attributes
    ----------
    name : str
        "local", "dask", ...: recorded in run.json; "local" also means the
        parts are in this process (progress line, returned assignments).

    Methods
    -------
    read(sources)
        ``{role: source}`` -> ``{role: [part]}``.
    by_customer(parts, split, npartitions=None, cid="customer_id")
        Pieces ``(transactions, events, attributes)`` whose customers are
        disjoint (``split``: the inputs are already split by customer).
    co_partition(part_lists, cid="customer_id", npartitions=None)
        Pieces with one table per list, a customer's rows of every list in one piece.
    map(fn, *part_lists, **kwargs)
        ``fn(*parts_i, **kwargs)`` for every i: a list of parts.
    reduce(states, split_every=None)
        Merge mergeable states (:mod:`segone._state`) into one, in a tree.
    gather(parts)
        Parts holding small results -> a list of values in this process.
    persist(parts, what=None)
        Keep computed parts (``what`` names them: profiles, features, ...).
    write_parts(parts, path)
        Write parts holding Arrow tables as Parquet at ``path``.
    count(parts)
        The number of parts.
    facts()
        Engine facts for run.json (a dict with at least ``engine``).
    set_stage(what)
        Name the stage that runs next (for progress and error messages).
    cleanup()
        Free what the last job left (spilled files); the engine stays usable.
    close()
        Free everything the engine started (clients, clusters).

    Examples
    --------
    >>> import segone
    >>> isinstance(segone.LocalEngine(), segone.Engine)
    True
    >>> isinstance(object(), segone.Engine)
    False
    """

    name: str

    def read(self, sources): ...

    def by_customer(self, parts, split, npartitions=None, cid="customer_id"): ...

    def co_partition(self, part_lists, cid="customer_id", npartitions=None): ...

    def map(self, fn, *part_lists, **kwargs): ...

    def reduce(self, states, split_every=None): ...

    def gather(self, parts): ...

    def persist(self, parts, what=None): ...

    def write_parts(self, parts, path): ...

    def count(self, parts): ...

    def facts(self): ...

    def set_stage(self, what): ...

    def cleanup(self): ...

    def close(self): ...


#: what :class:`Engine` requires, in the order its docstring lists it
ENGINE_MEMBERS = ("name", "read", "by_customer", "co_partition", "map", "reduce", "gather", "persist", "write_parts",
                  "count", "facts", "set_stage", "cleanup", "close")  # fmt: skip


def check_engine(engine, name="engine"):
    """Return ``engine`` when it provides every member of :class:`Engine`, else raise ParameterError naming them.

    Examples
    --------
    >>> check_engine(LocalEngine()).name
    'local'
    >>> class Half:
    ...     name = "half"
    ...     def map(self, fn, *parts, **kw): ...
    >>> check_engine(Half())
    Traceback (most recent call last):
    ...
    segone.errors.ParameterError: engine=Half is not a segone engine: it lacks read, by_customer, co_partition, reduce, gather, persist, write_parts, count, facts, set_stage, cleanup, close (see segone.Engine); give None (this process), segone.LocalEngine(...) or segone.dask.DaskEngine(...), or add those methods.
    """
    from segone.errors import ParameterError

    missing = [m for m in ENGINE_MEMBERS if not hasattr(engine, m)]
    missing += [m for m in ENGINE_MEMBERS[1:] if m not in missing and not callable(getattr(engine, m))]
    if missing:
        shown = type(engine).__name__ if not isinstance(engine, (str, int, float, type(None))) else repr(engine)
        raise ParameterError(
            f"{name}={shown} is not a segone engine: it lacks {', '.join(missing)} (see segone.Engine); give "
            "None (this process), segone.LocalEngine(...) or segone.dask.DaskEngine(...), or add those methods."
        )
    return engine


def _parquet_rows(src, role):
    """Rows of a Parquet file or dataset from its metadata (None: not a Parquet path)."""
    import pyarrow.dataset as ds

    from segone.io import dataset

    if not isinstance(src, (str, os.PathLike)):
        return None
    try:
        d = dataset(src, name=role)
    except Exception:  # noqa: BLE001 - the profile stage reports unreadable inputs with their own message
        return None
    if not isinstance(d, ds.FileSystemDataset) or not isinstance(d.format, ds.ParquetFileFormat):
        return None
    return d.count_rows()


class LocalEngine:
    """Run every stage in this process, on the whole input as one part.

    Parameters
    ----------
    n_threads : int or None
        Kernel threads (None: every CPU), recorded in run.json.
    stream_rows : int, default STREAM_ROWS (32M)
        Inputs of more transaction and event rows than this (read from the
        Parquet metadata) whose files are split by customer are profiled
        file by file (the outputs are the same; the peak memory of the
        profile stage follows one file instead of the whole input).  0:
        always, when the inputs are split so.
    """

    name = "local"

    def __init__(self, n_threads=None, stream_rows=STREAM_ROWS):
        self.n_threads = n_threads
        self.stream_rows = stream_rows
        self._whole = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Nothing to free: the local engine starts nothing."""

    def cleanup(self):
        """Nothing to free between jobs: the local engine keeps no files."""

    def set_stage(self, what):
        """Name the stage that runs next (the Dask engine puts it in a stall error; nothing to do here)."""

    # -- the five verbs -----------------------------------------------------------
    def read(self, sources):
        """{role: [part]}: one part per input (the source itself, streamed later), or its files when the input is
        a large Parquet dataset that may be split by customer (see ``stream_rows``)."""
        from segone.io import parquet_files

        self._whole = {role: src for role, src in sources.items() if src is not None}
        rows = {role: _parquet_rows(src, role) for role, src in self._whole.items()}
        big = rows.get("transactions") is not None and \
            rows["transactions"] + (rows.get("events") or 0) > self.stream_rows  # fmt: skip
        out = {}
        for role, src in self._whole.items():
            files = parquet_files(src, role) if big and rows[role] is not None else None
            out[role] = files if files and len(files) > 1 else [src]
        return out

    def facts(self):
        """Engine facts for run.json."""
        return {"engine": self.name, "n_threads": effective_n_threads(self.n_threads)}

    def by_customer(self, parts, split, npartitions=None, cid="customer_id"):
        """Pieces whose customers are disjoint: file i of every input when the inputs are split by customer
        file by file, else one piece holding every input."""
        counts = {len(p) for p in parts.values()}
        if split and len(counts) == 1 and counts.pop() > 1:
            n = len(parts["transactions"])
            return [tuple(parts[r][i] if r in parts else None for r in ROLES) for i in range(n)]
        return [tuple(self._whole.get(r) for r in ROLES)]

    def co_partition(self, part_lists, cid="customer_id", npartitions=None):
        """Pieces whose customers are disjoint, one item per list: here one piece, each list concatenated."""
        import pyarrow as pa

        def whole(parts):
            return parts[0] if len(parts) == 1 else pa.concat_tables(parts, promote_options="permissive")

        return [tuple(whole(list(parts)) for parts in part_lists)]

    def map(self, fn, *part_lists, **kwargs):
        """``fn(*parts_i, **kwargs)`` for every i; a list of results (parts)."""
        return [fn(*args, **kwargs) for args in zip(*part_lists)]

    def reduce(self, states, split_every=8):
        """Merge a list of states (parts) into one state."""
        return merge_all(states, split_every)

    def gather(self, parts):
        """Parts holding small results -> a list of values."""
        return list(parts)

    def persist(self, parts, what=None):
        """The parts themselves: they are in this process already."""
        return parts

    def write_parts(self, parts, path):
        """Write parts holding Arrow tables as one Parquet file at ``path``."""
        import pyarrow as pa

        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        write_parquet(table, path)

    def count(self, parts):
        """The number of parts."""
        return len(parts)
