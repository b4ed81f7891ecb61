"""Keep freed memory in the process, so that the next stage reuses it instead of faulting in fresh pages.

Why.  Every stage of a segone job allocates and frees large arrays (columns,
feature matrices, sketches, string buffers).  By default glibc's ``malloc``
(NumPy's allocator) unmaps every block above its mmap threshold when it is
freed, and Arrow's mimalloc pool purges freed pages after one second.  The
next allocation then touches fresh pages, and on virtual machines that hand
freed guest memory back to the host (free page reporting, memory balloons:
Firecracker, many cloud VMs) each first touch costs a host fault.  Measured
on this project's 2-vCPU Firecracker machine: about 5 us per 4 KiB page for
memory the host had taken back, 0.2-0.4 us for pages freshly unmapped by the
process, 0.01 us for pages it kept.  ``build_profiles`` on 1M customers made
about 90,000 page faults per call with the default settings and under 200
with these (``benchmarks/memory_probe.py``), and its time stopped depending on
what the rest of the machine was doing.

What.  When ``segone`` is imported (unless ``SEGONE_KEEP_MEMORY=0``):

* glibc: ``mallopt(M_MMAP_MAX, 0)`` (large blocks come from the heap and are
  reused) and ``M_TRIM_THRESHOLD`` of 2 GiB (the heap top is not handed back
  after every free);
* mimalloc (Arrow's default pool): ``MIMALLOC_PURGE_DELAY=-1`` (never purge),
  which mimalloc reads when pyarrow is first loaded, so it takes effect only
  when segone is imported before pyarrow.  A value the user set is kept.

The cost: the process keeps its peak memory until it exits instead of
returning it between stages (the README's PIPELINE figures give the peak
either way).  Set ``SEGONE_KEEP_MEMORY=0`` before importing segone for the
allocators' defaults.  :func:`settings` says what was applied; ``run.json``
records it under ``engine.memory``.

Only the standard library is imported here: this module runs before NumPy
and pyarrow are loaded.
"""

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1

_applied = {"keep_freed_memory": False, "glibc": "not applied", "mimalloc": "not applied"}


def _wanted():
    return os.environ.get("SEGONE_KEEP_MEMORY", "1").strip().lower() not in ("0", "false", "no", "off")


def configure():
    """Apply the settings described above once (called when segone is imported); returns :func:`settings`."""
    if _applied["keep_freed_memory"] or not _wanted():
        if not _wanted():
            _applied.update(glibc="off (SEGONE_KEEP_MEMORY=0)", mimalloc="off (SEGONE_KEEP_MEMORY=0)")
        return settings()
    _applied["keep_freed_memory"] = True
    if "MIMALLOC_PURGE_DELAY" in os.environ:
        _applied["mimalloc"] = f"MIMALLOC_PURGE_DELAY={os.environ['MIMALLOC_PURGE_DELAY']} (set by the user)"
    elif "pyarrow" in sys.modules:
        _applied["mimalloc"] = "unchanged: pyarrow was imported before segone"
    else:
        os.environ["MIMALLOC_PURGE_DELAY"] = "-1"
        _applied["mimalloc"] = "MIMALLOC_PURGE_DELAY=-1"
    _applied["glibc"] = _glibc()
    return settings()


def _glibc():
    if not sys.platform.startswith("linux"):
        return "not glibc"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return "not glibc"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "M_MMAP_MAX=0, M_TRIM_THRESHOLD=2GiB" if ok else "mallopt refused"


def release():
    """Hand the memory glibc holds free back to the operating system now (``malloc_trim(0)``).

    For a long-lived process between jobs; returns whether anything was
    released (False where there is no glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False


def settings():
    """What was applied to the allocators (a dict of strings, for run.json)."""
    return dict(_applied)
