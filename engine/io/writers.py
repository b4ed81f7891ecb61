"""Outputs out: directories checked, locked and written atomically (:func:`check_output`,
:func:`atomic_directory`, :func:`write_parquet`, :func:`write_json`)."""

import atexit
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

import pyarrow.parquet as pq

from segone.errors import OutputError, ParameterError


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
