"""segone on Dask: the same job, partition by partition.

:class:`DaskEngine` is the engine :func:`segone.run` uses on a cluster.  It
holds one *part* per partition on the workers as a pyarrow Table (Arrow end
to end: Parquet files are read by the workers with pyarrow; a Dask DataFrame
partition is converted once, with the null and type rules of
:func:`segone.io.read_table`), and it only

* reads the inputs into parts (a Parquet dataset: one part per file),
* brings each customer's rows into one piece (a hash shuffle of Arrow tables,
  skipped when the inputs are already split by customer; the same hash
  split co-partitions the previous and the new assignments for tracking),
* maps a stage function over the parts, tree-reduces mergeable states
  (``split_every`` at a time), persists parts, gathers small results and
  writes parts.

Every computation is the single-process code of the stage's own module.  The
rest of this module keeps the Dask-collection API (``build_profiles`` ->
Dask DataFrame, ``FeatureScorer`` on Dask DataFrames, ``Segmenter`` and
``assign`` on Dask Arrays) as thin layers over the same stage functions.

Work runs on the given client, the current ``distributed`` client, or Dask's
local threaded scheduler.
"""

import logging
import os
import time

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from dask import delayed

from segone import io as _io
from segone import pipeline as _pipeline
from segone import profile as _profile
from segone import score as _score
from segone import segment as _segment
from segone._deprecation import renamed_keywords, warn_deprecated
from segone._engine import ROLES
from segone._state import merge_all
from segone._validation import (
    check_float,
    check_int,
    check_n_clusters,
    check_random_state,
    check_sample_size,
    default_sample_size,
)
from segone.assignment import Assignment
from segone.assignment import assign as _assign
from segone.errors import EmptyInputError, NotFittedError, ParameterError, StalledError

# seconds without any task finishing, while no worker is running one of them, before a job is declared stalled
DEFAULT_STALL_TIMEOUT = 300.0


# ------------------------------------------------------------------- engine
def _to_arrow(pdf):
    """A pandas partition -> pyarrow Table (ArrowDtype, nullable and NumPy columns alike)."""
    if isinstance(pdf, pa.Table):
        return pdf
    return _io.read_table(pdf, name="partition")


def _fold(*states):
    return merge_all(states, len(states) or 1)


def _split_part(part, role, cid, n_parts):
    """One input part -> ``n_parts`` tables by a hash of the customer id (null ids go to piece 0)."""
    return _split_table(_io.read_table(part, name=role), cid, n_parts)


def _split_table(t, cid, n_parts):
    """A table -> ``n_parts`` tables by a hash of the customer id (null ids go to piece 0).

    The same id lands in the same piece whatever the table (int32 or int64
    ids alike), so tables split so join piece by piece.
    """
    if cid not in t.column_names:
        return tuple([t] * 1 + [t.slice(0, 0)] * (n_parts - 1))  # the profile names the missing column
    ids = t.column(cid)
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    valid = ids.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(ids.type) or pa.types.is_floating(ids.type):
        # the same id hashes the same in every input (int32 or int64); float ids are
        # refused by the profile, which names the column: any bucket will do for them
        vals = np.nan_to_num(ids.to_numpy(zero_copy_only=False).astype(np.float64)) if pa.types.is_floating(
            ids.type) else ids.fill_null(0).to_numpy(zero_copy_only=False)  # fmt: skip
        h = _segment.customer_hash(np.asarray(vals).astype(np.int64))
    else:
        h = _segment.customer_hash(ids.cast(pa.string()))
    bucket = np.where(valid, h % np.uint64(n_parts), 0).astype(np.int64)
    if bucket.size and (bucket == bucket[0]).all():  # already one bucket's customers (e.g. a shuffled part)
        return tuple(t if i == bucket[0] else t.slice(0, 0) for i in range(n_parts))
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(n_parts + 1))
    return tuple(t.take(order[bounds[i] : bounds[i + 1]]) for i in range(n_parts))


def _concat(*tables):
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _piece(n_tx, n_ev, *tables):
    tx = _concat(*tables[:n_tx])
    ev = _concat(*tables[n_tx : n_tx + n_ev]) if n_ev else None
    at = _concat(*tables[n_tx + n_ev :]) if len(tables) > n_tx + n_ev else None
    return tx, ev, at


def _zip_piece(tx, ev, at):
    return tx, ev, at


def _co_piece(counts, *tables):
    """The tables of one bucket, grouped per list (``counts`` tables each) and concatenated."""
    out, i = [], 0
    for c in counts:
        out.append(pa.concat_tables(tables[i : i + c], promote_options="permissive"))
        i += c
    return tuple(out)


def _write_part(table, path):
    _io.write_parquet(table, path)
    return table.num_rows


# ---------------------------------------------------------------- spilling
# What a persisted part holds on the workers when the engine spills: per-customer tables and large arrays are
# written once to files under the engine's spill directory (Arrow IPC, uncompressed; .npy), and the workers keep
# only a handle.  A task that receives a handle reads it back memory-mapped (zero-copy, pages the OS can reclaim),
# so a worker's memory holds one task's working set, not every persisted partition: distributed's memory
# manager never has to spill or pause for them.
SPILL_MIN_BYTES = 1 << 16


class Spilled:
    """A handle to a table or array that a persisted part wrote to disk (see :meth:`DaskEngine.persist`)."""

    __slots__ = ("path", "kind")

    def __init__(self, path, kind):
        self.path, self.kind = path, kind

    def __getstate__(self):
        return (self.path, self.kind)

    def __setstate__(self, state):
        self.path, self.kind = state

    def __repr__(self):
        return f"Spilled({self.path!r}, {self.kind!r})"

    def load(self):
        if self.kind == "table":
            return pa.ipc.open_file(pa.memory_map(self.path)).read_all()
        return np.load(self.path, mmap_mode="r")


def _spill(obj, base, counter=None):
    """``obj`` with its tables and large arrays written under ``base`` and replaced by :class:`Spilled` handles."""
    counter = counter if counter is not None else [0]
    if isinstance(obj, tuple):
        return tuple(_spill(o, base, counter) for o in obj)
    if isinstance(obj, list):
        return [_spill(o, base, counter) for o in obj]
    if isinstance(obj, pa.Table) and obj.nbytes >= SPILL_MIN_BYTES:
        path = f"{base}-{counter[0]}.arrow"
        counter[0] += 1
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, obj.schema) as writer:
            writer.write_table(obj)
        return Spilled(path, "table")
    if isinstance(obj, np.ndarray) and obj.dtype != object and obj.nbytes >= SPILL_MIN_BYTES:
        path = f"{base}-{counter[0]}.npy"
        counter[0] += 1
        np.save(path, obj, allow_pickle=False)
        return Spilled(path, "array")
    return obj


def _unspill(obj):
    if isinstance(obj, Spilled):
        return obj.load()
    if isinstance(obj, tuple):
        return tuple(_unspill(o) for o in obj)
    if isinstance(obj, list):
        return [_unspill(o) for o in obj]
    return obj


class _Task:
    """``fn`` called with every :class:`Spilled` argument read back (what every engine task runs)."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __getstate__(self):
        return self.fn

    def __setstate__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*(_unspill(a) for a in args), **{k: _unspill(v) for k, v in kwargs.items()})

    @property
    def __name__(self):  # the task keys keep the stage function's name
        return getattr(self.fn, "__name__", "task")


def _task(fn, **kw):
    return delayed(_Task(fn), pure=False, **kw)


def _split_part_spilled(part, role, cid, n_parts, base):
    """:func:`_split_part` whose pieces go to files (a disk-backed shuffle): only handles stay in memory."""
    return _spill(_split_part(part, role, cid, n_parts), base)


class DaskEngine:
    """Run the stages of :func:`segone.run` on Dask, one part per partition.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client, a scheduler address (a client is opened and closed by the
        engine), or None: the current client when there is one, else Dask's
        threaded scheduler.
    n_workers : int or None
        Start a ``LocalCluster`` with this many single-threaded worker
        processes (owned and closed by the engine); only without ``client``.
    memory_limit : str, default "auto"
        Memory per worker of the started LocalCluster.
    npartitions : int or None
        Customer partitions after a shuffle (default: the parts of the
        transactions).  In-memory tables are split into this many parts.
    n_threads : int or None
        Kernel threads per task (None: one; resolved on the worker).
    split_every : int, default 8
        Width of the reduction tree.
    verbose : bool
        Show distributed's progress bar while parts are persisted.
    stall_timeout : float, default 300
        Seconds the job may go without any task finishing on the cluster
        while no running worker holds one (every worker with work paused,
        workers lost, tasks that cannot be placed).  Past it, the job's tasks
        are cancelled and :class:`segone.errors.StalledError` names the stage
        and each worker's status, memory and waiting tasks.  A long task on
        a running worker is progress, however long.  ``None`` waits forever.
    spill : bool, default True
        On a distributed cluster, persisted per-customer parts (profiles,
        features, assignments, personas) and the shuffle's pieces are
        written to files under ``spill_dir`` and read back memory-mapped by
        the tasks that need them, so a worker holds one task's working set
        instead of every partition it persisted (the default keeps a
        10M-customer job on 2 workers x 6 GiB under half their limit).
        ``False`` keeps them in worker memory.
    spill_dir : path, optional
        Where the spilled parts go (a folder ``segone-spill-*`` is made in
        it and removed by :meth:`close`); default the system's temporary
        directory when every worker runs on this machine.  On a cluster of
        several machines give storage that every worker sees, like the
        output; without it, parts stay in worker memory there.

    Examples
    --------
    >>> import segone, segone.dask, tempfile, os
    >>> from segone.synth import generate
    >>> d = generate(1000, seed=0)
    >>> with segone.dask.DaskEngine(npartitions=2) as eng:   # threaded scheduler
    ...     res = segone.run(d.transactions, os.path.join(tempfile.mkdtemp(), "o"), 3, engine=eng)
    >>> res.summary["engine"]["engine"], res.summary["customers"]
    ('dask', 1000)
    """

    name = "dask"

    def __init__(self, client=None, *, n_workers=None, memory_limit="auto", npartitions=None, n_threads=None,
                 split_every=8, verbose=False, stall_timeout=DEFAULT_STALL_TIMEOUT, spill=True,
                 spill_dir=None):  # fmt: skip
        self.npartitions = check_int(npartitions, "npartitions", low=1, allow_none=True)
        self.stall_timeout = check_float(stall_timeout, "stall_timeout", low=0, low_inclusive=False,
                                         allow_none=True)  # fmt: skip
        self.stage = "starting"
        self.spill = bool(spill)
        self.spill_dir = None if spill_dir is None else os.fspath(spill_dir)
        self._spill_root = None
        self._local_workers = None
        self.split_every = check_int(split_every, "split_every", low=2)
        self.n_threads = n_threads
        self.verbose = verbose
        self._owned = []
        if client is not None and n_workers is not None:
            raise ParameterError("give a client or n_workers (a local cluster), not both.")
        if isinstance(client, str):
            from distributed import Client

            client = Client(client)
            self._owned.append(client)
        elif client is None and n_workers is not None:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(n_workers=check_int(n_workers, "n_workers", low=1), threads_per_worker=1,
                                   dashboard_address=":0", memory_limit=memory_limit,
                                   silence_logs=logging.CRITICAL)  # fmt: skip  # a failed task raises in the client
            client = Client(cluster)
            self._owned += [client, cluster]
        elif client is None:
            client = _current_client()
        self.client = client

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Remove the spilled parts; close the client and cluster this engine started (never one it was given)."""
        self.cleanup()
        while self._owned:
            self._owned.pop(0).close()

    def cleanup(self):
        """Remove the files of the parts this engine spilled (after a job: nothing refers to them any more)."""
        import shutil

        if self._spill_root is not None:
            shutil.rmtree(self._spill_root, ignore_errors=True)
            self._spill_root = None

    def _spill_base(self, what):
        import tempfile
        import uuid

        if self._spill_root is None:
            if self.spill_dir is not None:
                os.makedirs(self.spill_dir, exist_ok=True)
            self._spill_root = tempfile.mkdtemp(prefix="segone-spill-", dir=self.spill_dir)
        return os.path.join(self._spill_root, f"{what or 'part'}-{uuid.uuid4().hex[:8]}")

    def _spilling(self):
        """Whether persisted parts go to files: asked for, on a distributed cluster, and to a folder every worker
        sees (``spill_dir``, or the default temporary folder when every worker runs on this machine)."""
        if not self.spill or self.client is None:
            return False
        if self.spill_dir is None:
            if self._local_workers is None:
                self._local_workers = _workers_on_this_machine(self.client)
            return self._local_workers
        return True

    def facts(self):
        workers = len(self.client.scheduler_info()["workers"]) if self.client is not None else None
        return {"engine": self.name, "scheduler": "distributed" if self.client is not None else "threads",
                "workers": workers, "spill": self._spilling()}  # fmt: skip

    def set_stage(self, what):
        """Name the stage that runs next (for the progress bar and a :class:`StalledError`)."""
        self.stage = what

    def _compute(self, *objs):
        if self.client is not None:
            futures = self.client.compute(list(objs))
            self._wait(futures)
            return tuple(self.client.gather(futures))
        return dask.compute(*objs)

    def _wait(self, futures):
        """Wait for ``futures``; raise :class:`StalledError` when the cluster stops making progress.

        Progress is any task finishing anywhere on the cluster (the
        scheduler's transition counter moves) or a running (not paused)
        worker holding tasks to execute.  The clock starts when neither happens: every worker with
        work paused, workers gone, tasks nobody can run.
        """
        from distributed import wait

        if self.stall_timeout is None:
            wait(futures)
            return
        poll = min(2.0, max(0.05, self.stall_timeout / 10))
        idle_since, last = None, None
        while True:
            try:
                wait(futures, timeout=poll)
                return
            except TimeoutError:
                pass
            state = self.client.run_on_scheduler(_cluster_state)
            busy = any(w["status"] == "running" and (w["executing"] or w["processing"])
                       for w in state["workers"].values())  # fmt: skip
            if state["transitions"] != last or busy:
                last, idle_since = state["transitions"], None
                continue
            now = time.monotonic()
            idle_since = idle_since or now
            if now - idle_since >= self.stall_timeout:
                self.client.cancel(futures)
                raise StalledError(_stall_message(self.stage, self.stall_timeout, state))

    # -- the verbs ------------------------------------------------------------------
    def read(self, sources):
        return {role: self._parts(src, role) for role, src in sources.items() if src is not None}

    def _parts(self, src, role):
        if isinstance(src, (str, os.PathLike)):
            return _io.parquet_files(src, role)  # read by the workers, only the columns a stage needs
        if isinstance(src, dd.DataFrame):
            return [delayed(_to_arrow, pure=False)(p) for p in src.to_delayed()]
        table = _io.read_table(src, name=role)
        n = self.npartitions or 1
        step = -(-table.num_rows // n) if table.num_rows else 1
        slices = [table.slice(i * step, step) for i in range(n)]
        if self.client is not None:  # hash=False: dask tokenizes every slice of a table alike (one key for all)
            return self.client.scatter(slices, hash=False)
        return slices

    def by_customer(self, parts, split, npartitions=None, cid="customer_id"):
        tx = parts["transactions"]
        others = [r for r in ROLES[1:] if r in parts]
        if split:
            bad = {r: len(parts[r]) for r in others if len(parts[r]) != len(tx)}
            if bad:
                raise ParameterError(
                    "partitioned_by_customer=True needs the same number of partitions in every input "
                    f"(transactions {len(tx)}, {', '.join(f'{r} {n}' for r, n in bad.items())}); "
                    "leave it to None to shuffle."
                )
            cols = [parts.get(r, [None] * len(tx)) for r in ROLES]
            return [_task(_zip_piece)(*p) for p in zip(*cols)]
        n = check_int(npartitions or self.npartitions or len(tx), "npartitions", low=1)
        buckets = {}
        for r in ROLES:
            if r in parts:
                if self._spilling():  # a disk-backed shuffle: each split piece goes to a file
                    buckets[r] = [_task(_split_part_spilled, nout=n)(p, r, cid, n, self._spill_base(f"shuffle-{r}"))
                                  for p in parts[r]]  # fmt: skip
                else:
                    buckets[r] = [_task(_split_part, nout=n)(p, r, cid, n) for p in parts[r]]
        counts = [len(buckets.get(r, [])) for r in ROLES]
        pieces = []
        for i in range(n):
            tables = [b[i] for r in ROLES for b in buckets.get(r, [])]
            pieces.append(_task(_piece)(counts[0], counts[1], *tables))
        return pieces

    def co_partition(self, part_lists, cid="customer_id", npartitions=None):
        """Pieces whose customers are disjoint: every part of every list split by a hash of ``cid``.

        Piece i is a tuple with one table per list: the rows of that list
        whose customer id hashes to bucket i (as in :meth:`by_customer`), so
        a customer's rows of every list meet in one piece.  Parts that are
        already one bucket's customers move whole.
        """
        n = check_int(npartitions or self.npartitions or max(len(p) for p in part_lists), "npartitions", low=1)
        splits = [[_task(_split_table, nout=n)(p, cid, n) for p in parts] for parts in part_lists]
        counts = [len(parts) for parts in part_lists]
        return [_task(_co_piece)(counts, *[s[i] for parts in splits for s in parts]) for i in range(n)]

    def map(self, fn, *part_lists, **kwargs):
        f = _task(fn)
        return [f(*args, **kwargs) for args in zip(*part_lists)]

    def reduce(self, states, split_every=None):
        items = list(states)
        if not items:
            raise EmptyInputError("nothing to reduce: the input has no partitions.")
        width = split_every or self.split_every
        while len(items) > 1:
            items = [_task(_fold)(*items[i : i + width]) for i in range(0, len(items), width)]
        (out,) = self._compute(items[0])
        return out

    def gather(self, parts):
        return [_unspill(v) for v in self._compute(*parts)]

    def persist(self, parts, what=None):
        if self.client is None:  # threaded scheduler: the parts live in this process anyway
            return list(self._compute(*parts))
        from distributed import progress

        if self._spilling():
            base = self._spill_base(what)
            parts = [_task(_spill)(p, f"{base}-{i:05d}") for i, p in enumerate(parts)]
        parts = self.client.persist(list(parts))
        if self.verbose:
            progress(parts)
        self._wait(parts)  # a stage ends when its parts exist: stage timings mean what they say
        return parts

    def write_parts(self, parts, path):
        os.makedirs(path)
        tasks = [_task(_write_part)(p, os.path.join(path, f"part-{i:05d}.parquet"))
                 for i, p in enumerate(parts)]  # fmt: skip
        self._compute(*tasks)

    def count(self, parts):
        return len(parts)


def _workers_on_this_machine(client):
    """True when every worker of ``client`` runs on this machine (so this machine's temporary folder is theirs)."""
    import socket

    names = {"127.0.0.1", "localhost", "::1", socket.gethostname()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    hosts = {w.get("host") for w in client.scheduler_info()["workers"].values()}
    return bool(hosts) and hosts <= names


def _cluster_state(dask_scheduler):
    """On the scheduler: its transition counter and, per worker, status, memory and tasks (plain data)."""
    workers = {}
    for addr, ws in dask_scheduler.workers.items():
        workers[addr] = {"status": getattr(ws.status, "name", str(ws.status)), "memory": int(ws.memory.process),
                         "limit": int(ws.memory_limit or 0), "processing": len(ws.processing),
                         "executing": len(ws.executing)}  # fmt: skip
    unrunnable = len(getattr(dask_scheduler, "unrunnable", ()))
    return {"transitions": int(dask_scheduler.transition_counter), "workers": workers, "unrunnable": unrunnable}


def _stall_message(stage, timeout, state):
    gib = 2**30
    parts = []
    for addr, w in sorted(state["workers"].items()):
        mem = f"{w['memory'] / gib:.2f} GiB"
        if w["limit"]:
            mem += f" of {w['limit'] / gib:.2f} GiB limit ({w['memory'] / w['limit']:.0%})"
        parts.append(f"{addr}: {w['status']}, {mem}, {w['processing']} tasks waiting")
    workers = "; ".join(parts) if parts else "no workers are connected"
    extra = f"; {state['unrunnable']} tasks cannot run on any worker" if state.get("unrunnable") else ""
    paused = any(w["status"] == "paused" for w in state["workers"].values())
    fix = ("give the workers more memory (memory_limit), use more partitions (npartitions=) so each task holds "
           "less, or more workers" if paused else "check that the workers are alive and can reach the inputs")
    return (f"the Dask job stalled while {stage}: no task finished for {timeout:g} s and no running worker held "
            f"one (workers: {workers}{extra}); its tasks were cancelled and nothing was written. "
            f"Fix: {fix}; stall_timeout= sets how long to wait.")


def _current_client():
    """The current distributed client, unless dask's config asks for another scheduler."""
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


# ------------------------------------------------------------------ profiles
def _to_pandas(table):
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def build_profiles(transactions, *, events=None, attributes=None, as_of=None, schema=None,
                   windows=(30, 90, 365), top_categories=20, drop_returns=False, npartitions=None,
                   client=None, n_threads=None, backend="auto", partitioned_by_customer=None,
                   _with_summary=False):  # fmt: skip
    """:func:`segone.build_profiles` on Dask; returns a Dask DataFrame (Arrow-backed columns).

    Inputs are Dask DataFrames, Parquet paths (read by the workers) or
    in-memory tables.  Runs the PROFILE stage of :func:`segone.run` on a
    :class:`DaskEngine`; the parameters are those of
    :func:`segone.build_profiles`, plus ``npartitions``, ``client`` and
    ``partitioned_by_customer`` (see :class:`DaskEngine` and :func:`segone.run`).

    Every customer of any input lands in exactly one partition and appears
    exactly once; columns (and their order) are the same in every partition.
    Inside a partition rows are sorted by customer id; partitions are not.

    Examples
    --------
    >>> import segone.dask
    >>> from segone.synth import generate
    >>> d = generate(1000, seed=0)
    >>> prof = segone.dask.build_profiles(d.transactions, npartitions=3)
    >>> int(prof.shape[0].compute())
    1000
    """
    for name, x in (("transactions", transactions), ("events", events), ("attributes", attributes)):
        if x is not None and not isinstance(x, (str, os.PathLike, dd.DataFrame, pd.DataFrame, pa.Table)) \
                and not hasattr(x, "__arrow_c_stream__"):  # fmt: skip
            raise ParameterError(
                f"{name}: expected a Dask DataFrame, a Parquet path, a pandas DataFrame or a pyarrow Table, "
                f"got {type(x).__name__}."
            )
    # the profiles stay in worker memory: the returned DataFrame refers to them after this call
    eng = DaskEngine(client, npartitions=npartitions, n_threads=n_threads, spill=False)
    sources = {"transactions": transactions, "events": events, "attributes": attributes}
    parts, summary, facts = _pipeline.profile_stage(
        eng, sources, as_of=as_of, schema=schema, backend=backend, n_threads=n_threads,
        partitioned_by_customer=partitioned_by_customer, npartitions=npartitions,
        windows=windows, top_categories=top_categories, drop_returns=drop_returns,
    )  # fmt: skip
    frames = [delayed(_to_pandas, pure=False)(p) for p in parts]
    (head,) = eng._compute(frames[0])
    out = dd.from_delayed(frames, meta=head.iloc[:0], verify_meta=False)
    return (out, summary | facts) if _with_summary else out


# ------------------------------------------------------------------- scoring
def _table(pdf):
    return _to_arrow(pdf)


def _transform_part(pdf, scorer):
    return _score.FeatureScorer.transform(scorer, _table(pdf))


class FeatureScorer(_score.FeatureScorer):
    """:class:`segone.FeatureScorer` that also fits and transforms Dask DataFrames.

    ``fit`` computes one mergeable :class:`~segone.score.ScorerState` per
    partition and tree-reduces them (``split_every`` at a time);
    ``transform`` returns a Dask Array (float32, one chunk per partition).
    NumPy / Arrow inputs behave as in the parent.
    """

    split_every = 8

    def fit(self, profiles, y=None, client=None):
        if not isinstance(profiles, dd.DataFrame):
            return super().fit(profiles)
        self._check_params()
        eng = DaskEngine(client, split_every=self.split_every)
        parts = [delayed(_table, pure=False)(p) for p in profiles.to_delayed()]
        return self.fit_state(eng.reduce(eng.map(_score.ScorerState.of, parts, scorer=self)))

    def transform(self, profiles):
        if not isinstance(profiles, dd.DataFrame):
            return super().transform(profiles)
        if not hasattr(self, "state_"):
            raise NotFittedError("this FeatureScorer is not fitted yet; call fit(profiles) first.")
        d = len(self.feature_names_out_)
        # one float32 block per partition (row counts unknown until computed)
        return profiles.map_partitions(_transform_part, self, meta=np.empty((0, d), dtype=np.float32))

    def fit_transform(self, profiles, y=None, client=None):
        if not isinstance(profiles, dd.DataFrame):
            return super().fit_transform(profiles)
        return self.fit(profiles, client=client).transform(profiles)


# ---------------------------------------------------------------- clustering
def _take_rows(X, idx):
    return np.ascontiguousarray(X[idx])


def _block(X):
    return np.ascontiguousarray(X)


class Segmenter(_segment.Segmenter):
    """:class:`segone.Segmenter` that also fits Dask Arrays.

    On a Dask Array, ``fit`` draws a uniform sample of ``sample_size`` rows
    across the chunks (None: segone's one default,
    ``max(131072, 128 * n_clusters)``; at most all rows) and runs the shared driver
    (:meth:`segone.Segmenter.fit_passes`): seeding and mini-batch steps on the
    sample, then ``refine`` full-data Lloyd passes, each one
    :class:`~segone.segment.PartialSums` per chunk, tree-reduced.
    ``labels_`` is a lazy Dask Array; ``predict`` maps the kernels over the
    chunks.
    """

    split_every = 8

    def fit(self, X, y=None, sample_weight=None, client=None, order_key=None):
        """Fit on a NumPy array or Arrow table (as the parent) or a Dask Array.

        ``order_key`` (a Dask Array with one value per row, e.g. the customer
        ids) puts the sample in key order before the local fit, so the result
        does not depend on how the rows are partitioned.
        """
        if not isinstance(X, da.Array):
            return super().fit(X, y, sample_weight=sample_weight)
        if sample_weight is not None:
            raise ParameterError("sample_weight is not supported for Dask inputs yet; fit without it.")
        if X.ndim != 2:
            raise ParameterError(f"X must be 2-D, got shape {X.shape}.")
        if np.isnan(X.shape[0]):
            X = X.compute_chunk_sizes()
        n = X.shape[0]
        k = check_n_clusters(self.n_clusters, n)
        eng = DaskEngine(client, split_every=self.split_every)
        rng = check_random_state(self.random_state)
        m = min(check_sample_size(self.sample_size) or default_sample_size(k), n)
        rows = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
        bounds = np.cumsum((0,) + X.chunks[0])
        blocks = list(X.to_delayed().ravel())
        key_blocks = None
        if order_key is not None:
            if order_key.shape[0] != n and not np.isnan(order_key.shape[0]):
                raise ParameterError(f"order_key has {order_key.shape[0]} values for {n} rows.")
            key_blocks = list(order_key.rechunk((X.chunks[0],)).to_delayed().ravel())
        sels = [rows[(rows >= bounds[i]) & (rows < bounds[i + 1])] - bounds[i] for i in range(len(blocks))]
        takes = [delayed(_take_rows)(b, s) for b, s in zip(blocks, sels) if s.size]
        sample = np.concatenate(eng.gather(takes))
        if key_blocks is not None:
            keys = eng.gather([delayed(_take_rows)(b, s) for b, s in zip(key_blocks, sels) if s.size])
            sample = np.ascontiguousarray(sample[np.argsort(np.concatenate(keys), kind="stable")])
        parts = [delayed(_block)(b) for b in blocks]

        def full_pass(centers):
            return eng.reduce(eng.map(_segment.PartialSums.of, parts, centers=centers, backend=self.backend,
                                      n_threads=self.n_threads))  # fmt: skip

        saved = self.random_state
        self.random_state = rng  # the sample draw and the fit share one stream
        try:
            self.fit_passes(sample, full_pass)
        finally:
            self.random_state = saved
        self.labels_ = self.predict(X)
        return self

    def predict(self, X):
        if not isinstance(X, da.Array):
            return super().predict(X)
        return assign(X, self.cluster_centers_, backend=self.backend, n_threads=self.n_threads).labels

    def reorder_clusters(self, order):
        labels = getattr(self, "labels_", None)
        if isinstance(labels, da.Array):
            del self.labels_
            super().reorder_clusters(order)
            new_id = np.empty(len(order), dtype=np.int32)
            new_id[np.asarray(order)] = np.arange(len(order), dtype=np.int32)
            self.labels_ = labels.map_blocks(lambda b: np.where(b >= 0, new_id[np.maximum(b, 0)], -1),
                                             dtype=np.int32)  # fmt: skip
            return self
        return super().reorder_clusters(order)


def _assign_block(X, centroids, margin, backend, n_threads):
    res = _assign(np.ascontiguousarray(X), centroids, margin=margin, backend=backend, n_threads=n_threads)
    cols = [res.labels.astype(np.float64), res.distance.astype(np.float64)]
    if margin:
        cols.append(res.margin.astype(np.float64))
    return np.column_stack(cols)


def assign(X, centroids, *, margin=False, backend="auto", n_threads=None):
    """:func:`segone.assign` over the chunks of a Dask Array (centroids broadcast once).

    Returns an :class:`~segone.Assignment` of lazy Dask Arrays (``n_invalid``
    is None: NaN rows raise when the chunk is computed).
    """
    if not isinstance(X, da.Array):
        return _assign(X, centroids, margin=margin, backend=backend, n_threads=n_threads)
    centroids = np.ascontiguousarray(centroids, dtype=X.dtype)
    c = delayed(centroids)  # one copy in the graph, shared by every chunk
    if X.chunks[1] != (X.shape[1],):
        X = X.rechunk({1: -1})
    width = 3 if margin else 2
    out = X.map_blocks(_assign_block, c, margin, backend, n_threads, dtype=np.float64,
                       chunks=(X.chunks[0], (width,)))  # fmt: skip
    labels = out[:, 0].astype(np.int32)
    dist = out[:, 1].astype(X.dtype)
    marg = out[:, 2].astype(X.dtype) if margin else None
    return Assignment(labels, dist, marg, None)


# ------------------------------------------------------------------ the job
@renamed_keywords(where="segone.dask.run", clusters="n_clusters")
def run(input, out, n_clusters=8, *, client=None, npartitions=None, stall_timeout=DEFAULT_STALL_TIMEOUT, spill=True,
        spill_dir=None, **kwargs):
    """Deprecated: :func:`segone.run` with ``engine=DaskEngine(...)`` is the one way to run on Dask.

    ``segone.dask.run(input, out, k, client=c, npartitions=p)`` still runs
    ``segone.run(input, out, k, engine=DaskEngine(c, npartitions=p))`` (and
    closes the engine), with a FutureWarning; it goes away in segone 0.3.
    ``client``, ``npartitions``, ``stall_timeout``, ``spill`` and
    ``spill_dir`` are those of :class:`DaskEngine`; every other parameter is
    that of :func:`segone.run`.

    Examples
    --------
    >>> import segone, segone.dask, tempfile, os
    >>> from segone.synth import generate
    >>> d = generate(1000, seed=0)
    >>> with segone.dask.DaskEngine(npartitions=2) as eng:   # instead of segone.dask.run(..., npartitions=2)
    ...     res = segone.run(d.transactions, os.path.join(tempfile.mkdtemp(), "o"), n_clusters=3, engine=eng)
    >>> res.summary["customers"]
    1000
    """
    warn_deprecated("segone.dask.run(...)", "segone.run(..., engine=segone.dask.DaskEngine(client, npartitions=...))")
    for name in ("engine", "client", "npartitions"):
        if name in kwargs:
            raise ParameterError(f"segone.dask.run() got {name}= twice; give segone.run(..., "
                                 "engine=segone.dask.DaskEngine(...)) instead.")  # fmt: skip
    _pipeline.check_run_arguments(input, out, n_clusters, **kwargs)  # before a cluster is reached
    eng = DaskEngine(client, npartitions=npartitions, n_threads=kwargs.get("n_threads"),
                     verbose=kwargs.get("verbose", False), stall_timeout=stall_timeout, spill=spill,
                     spill_dir=spill_dir)  # fmt: skip
    try:
        return _pipeline.run(input, out, n_clusters, engine=eng, **kwargs)
    finally:
        eng.close()
