"""Engines: where the stages of :func:`segone.run` execute.

An engine only reads the inputs into *parts*, brings each customer's rows
into one piece (``by_customer`` for the inputs, ``co_partition`` for tables
already read, such as two runs' assignments), maps a function over parts,
tree-reduces mergeable states (:mod:`segone._state`), persists parts, gathers
small results and writes parts.  It computes nothing itself: every
computation is a function of the stage's own module, and
:func:`segone.pipeline.run` is the one sequence of stages over any engine.

Parts are opaque to the pipeline.  The :class:`LocalEngine` keeps one part
per input (the source itself, which the kernels stream record batch by record
batch) and runs everything in this process; the Dask engine
(:class:`segone.dask.DaskEngine`) holds one part per partition on the workers.
"""

from segone._state import merge_all
from segone._threads import effective_n_threads
from segone.io import write_parquet

ROLES = ("transactions", "events", "attributes")


class LocalEngine:
    """Run every stage in this process, on the whole input as one part.

    Parameters
    ----------
    n_threads : int or None
        Kernel threads (None: every CPU), recorded in run.json.
    """

    name = "local"

    def __init__(self, n_threads=None):
        self.n_threads = n_threads

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def set_stage(self, what):
        """Name the stage that runs next (the Dask engine puts it in a stall error; nothing to do here)."""

    def facts(self):
        """Engine facts for run.json."""
        return {"engine": self.name, "n_threads": effective_n_threads(self.n_threads)}

    # -- the five verbs -----------------------------------------------------------
    def read(self, sources):
        """{role: [part]}: one part per input, the source itself (streamed later)."""
        return {role: [src] for role, src in sources.items() if src is not None}

    def by_customer(self, parts, split, npartitions=None, cid="customer_id"):
        """Pieces whose customers are disjoint: here one piece holding every input."""
        return [tuple(parts[r][0] if r in parts else None for r in ROLES)]

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
        return parts

    def write_parts(self, parts, path):
        """Write parts holding Arrow tables as one Parquet file at ``path``."""
        import pyarrow as pa

        table = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        write_parquet(table, path)

    def count(self, parts):
        return len(parts)
