"""Opt-in allocator settings: keep freed memory in this process, or hand it back.

Importing segone changes nothing here: no allocator setting, no environment
variable.  Like ``pa.set_memory_pool`` or ``pa.jemalloc_set_decay`` in
pyarrow, what this module does happens only when the user calls it.

Why one might call :func:`keep_freed_memory`.  By default glibc's ``malloc``
(NumPy's allocator) unmaps every block above its mmap threshold when it is
freed, so the next large allocation touches fresh pages.  On virtual machines
that hand freed guest memory back to the host (free page reporting, memory
balloons), each first touch of such a page can cost a host fault (measured
on this project's 2-vCPU Firecracker machine: about 5 us per 4 KiB page,
against 0.01 us for a page the process kept).  :func:`keep_freed_memory`
sets ``mallopt(M_MMAP_MAX, 0)`` and a 2 GiB ``M_TRIM_THRESHOLD`` so that
freed blocks stay in the heap and are reused.

The cost: the process keeps its peak memory until it exits.  On the whole
1M-customer job it was not faster and peaked about 0.7 GiB higher, so segone
never applies it by itself, and never inside Dask workers: a worker whose
freed memory is not returned shows it as unmanaged memory that distributed's
memory manager cannot spill, and pauses.

Examples
--------
>>> import segone
>>> segone.memory_settings()["keep_freed_memory"]   # nothing applied on import
False

Only the standard library is imported here.
"""

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 2**31 - 1
_DEFAULT_MMAP_MAX = 65536  # glibc's default number of mmap'd chunks
_DEFAULT_TRIM = 128 * 1024  # glibc's default trim threshold

_applied = {"keep_freed_memory": False, "glibc": "defaults"}


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):  # musl and others have no mallopt
        return None


def keep_freed_memory(enable=True):
    """Keep (or stop keeping) freed memory in this process's heap for reuse.

    An explicit, process-wide choice for a long job in one process on a
    machine where page faults are expensive; it is never applied by segone
    itself nor sent to Dask workers.  ``enable=False`` restores glibc's
    defaults (dynamic mmap threshold, 128 KiB trim threshold) and hands the
    free memory back.

    Parameters
    ----------
    enable : bool, default True

    Returns
    -------
    dict
        :func:`settings` after the call.

    Examples
    --------
    >>> import segone
    >>> s = segone.keep_freed_memory()
    >>> s = segone.keep_freed_memory(False)
    >>> s["keep_freed_memory"]
    False
    """
    libc = _libc()
    if libc is None:
        _applied.update(keep_freed_memory=False, glibc="not glibc")
        return settings()
    if enable:
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        _applied.update(keep_freed_memory=ok, glibc="M_MMAP_MAX=0, M_TRIM_THRESHOLD=2GiB" if ok else "mallopt refused")
    else:
        libc.mallopt(M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        release()
        _applied.update(keep_freed_memory=False, glibc="defaults")
    return settings()


def release():
    """Hand the memory glibc holds free back to the operating system now (``malloc_trim(0)``).

    Returns whether anything was released (False where there is no glibc).
    """
    libc = _libc()
    if libc is None:
        return False
    try:
        return bool(libc.malloc_trim(0))
    except AttributeError:
        return False


def settings():
    """What this process's allocators were told by segone (a dict, for run.json)."""
    return dict(_applied)
