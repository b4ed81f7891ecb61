"""One helper that turns ``n_threads`` into a thread count for both backends."""

import numbers
import os
import sys

from segone.errors import ParameterError


MAX_THREADS_PER_CPU = 4  # more kernel threads than this per CPU only adds overhead


def available_cpus():
    """CPUs this process may run on (affinity-aware, cgroup-unaware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def effective_n_threads(n_threads=None):
    """Resolve ``n_threads`` to a positive thread count.

    ``None`` means every available CPU (or ``SEGONE_NUM_THREADS`` when set),
    except inside a Dask worker task, where it means one thread: the workers'
    own threads supply the parallelism.  The count is resolved where the
    kernel runs (on the worker), never on the client and shipped;
    a positive int is used as is; a negative int counts back from the number
    of CPUs as in joblib (``-1`` = all, ``-2`` = all but one).  ``0`` is an
    error, and so is a count above 4 threads per CPU (a typo such as 100000
    would otherwise crash the OpenMP runtime).
    """
    cpus = available_cpus()
    source = "n_threads"
    if n_threads is None:
        env = os.environ.get("SEGONE_NUM_THREADS")
        if env:
            source = "SEGONE_NUM_THREADS"
            try:
                n_threads = int(env)
            except ValueError:
                raise ParameterError(
                    f"SEGONE_NUM_THREADS={env!r} is not an integer; set it to a "
                    "positive thread count or unset it."
                ) from None
        else:
            return 1 if _in_dask_worker() else cpus
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise ParameterError(
            f"n_threads must be None or an integer, got {n_threads!r} "
            f"({type(n_threads).__name__}); use None for all {cpus} CPUs."
        )
    n_threads = int(n_threads)
    limit = MAX_THREADS_PER_CPU * cpus
    if abs(n_threads) > limit:  # OpenMP runtimes crash (or abort) on absurd thread counts: refuse them
        raise ParameterError(
            f"{source}={n_threads} is more than {MAX_THREADS_PER_CPU}x the {cpus} CPUs this process may use; "
            f"use at most {limit}, or None (or -1) for all CPUs."
        )
    if n_threads == 0:
        raise ParameterError(
            "n_threads=0 is not allowed; use None or -1 for all CPUs, or a positive count."
        )
    if n_threads < 0:
        return max(1, cpus + 1 + n_threads)
    return int(n_threads)


def threads_for_work(work, small, n_threads=None):
    """Kernel threads for a pass of size ``work``: one below ``small`` (a thread team costs more than it
    saves, and on a busy VM waiting for a descheduled second thread costs more than the pass), else
    :func:`effective_n_threads`."""
    return 1 if work < small else effective_n_threads(n_threads)


def _in_dask_worker():
    """True inside a task running on a ``distributed`` worker."""
    dist = sys.modules.get("distributed")  # never import it just to ask
    if dist is None:
        return False
    try:
        dist.get_worker()
        return True
    except (ValueError, AttributeError):
        return False
