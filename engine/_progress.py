"""Progress display for long single-process stages (built on tqdm).

Two helpers, both no-ops unless progress can be seen:

* :func:`progress` -- a bar for work with a known (or unknown) amount::

      with progress(total=n_rows, desc="assign", enabled=verbose) as bar:
          for piece in pieces:
              ...
              bar.update(len(piece))

  It can also wrap an iterable: ``for x in progress(items, desc="write"): ...``.
* :func:`stage` -- one line with a spinner and the elapsed time for a stage
  whose amount of work is not known in advance::

      with stage("profiling customers", enabled=verbose) as s:
          ...
          s.set_description("profiling customers (transactions read)")

Progress is shown only when the output stream is a terminal (stderr by
default) and ``enabled`` is not False (``segone ... --quiet`` passes False).
With ``enabled=None`` it follows the terminal alone.  Passing an explicit
``file=`` shows progress on that stream whatever it is (tests, notebooks).
The environment variable ``SEGONE_PROGRESS=0`` turns every bar off, ``=1``
turns them on even off a terminal (e.g. in CI logs).

Bars are transient (``leave=False``): a finished stage leaves no line
behind, so the pipeline's own log lines stay readable.  Nothing here changes
what a stage computes, and a disabled helper costs one attribute lookup per
call.
"""

import contextlib
import itertools
import os
import sys
import threading
import time

__all__ = ["NullProgress", "progress", "progress_enabled", "stage", "stage_line"]

SPINNER = "|/-\\"
SPIN_INTERVAL_S = 0.2


def progress_enabled(enabled=None, file=None):
    """Whether progress would be shown on ``file`` (default: stderr) for this ``enabled`` setting."""
    if enabled is False:
        return False
    env = os.environ.get("SEGONE_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if file is not None or env in ("1", "true", "yes", "on"):
        return True
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed or replaced streams
        return False


class NullProgress:
    """The disabled progress object: the same methods, doing nothing."""

    n = 0
    total = None

    def __init__(self, iterable=None):
        self._iterable = iterable

    def update(self, n=1):
        return None

    def set_description(self, desc=None, refresh=True):
        return None

    def set_postfix_str(self, s="", refresh=True):
        return None

    def close(self):
        return None

    def write(self, msg):
        """Print a log line (stdout), as the stages do without progress."""
        print(msg, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __iter__(self):
        return iter(() if self._iterable is None else self._iterable)


class _Progress:
    """A tqdm bar with the small interface the stages use."""

    def __init__(self, bar):
        self._bar = bar
        self._closed = False

    @property
    def n(self):
        return self._bar.n

    @property
    def total(self):
        return self._bar.total

    def update(self, n=1):
        self._bar.update(n)

    def set_description(self, desc=None, refresh=True):
        self._bar.set_description_str(desc or "", refresh=refresh)

    def set_postfix_str(self, s="", refresh=True):
        self._bar.set_postfix_str(s, refresh=refresh)

    def close(self):
        if not self._closed:
            self._closed = True
            self._bar.close()

    def write(self, msg):
        """Print a log line (stdout) above the bar without breaking it."""
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stdout)
        sys.stdout.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __iter__(self):
        try:
            yield from self._bar
        finally:
            self.close()


def progress(iterable=None, *, total=None, desc="", enabled=None, unit="it", file=None, leave=False, **tqdm_kwargs):
    """A progress bar (tqdm) when progress can be seen, else a :class:`NullProgress`.

    Parameters
    ----------
    iterable : iterable, optional
        Wrap it: iterating the result advances the bar (``total`` defaults to its ``len``).
    total : int, optional
        Amount of work (None: a counter without a bar).
    desc : str
        Text before the bar.
    enabled : bool or None
        False: never show (``--quiet``); None or True: show when ``file`` is a terminal.
    unit : str
        Unit of ``update`` counts (``"rows"``, ``"customers"``).
    file : text stream, optional
        Where to draw (default stderr, shown only when it is a terminal; an
        explicit stream is always drawn on).
    leave : bool, default False
        Keep the finished bar on screen.

    Returns
    -------
    An object with ``update(n)``, ``set_description(text)``, ``close()``;
    usable as a context manager, and iterable when ``iterable`` was given.
    """
    if not progress_enabled(enabled, file):
        return NullProgress(iterable)
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    bar = tqdm(iterable, total=total, desc=desc, unit=unit, file=file or sys.stderr, leave=leave,
               dynamic_ncols=True, unit_scale=True, **tqdm_kwargs)  # fmt: skip
    return _Progress(bar)


class _Stage(_Progress):
    """A single-line stage display: description, spinner, elapsed time (a daemon thread redraws it)."""

    def __init__(self, bar, interval):
        super().__init__(bar)
        self._desc = bar.desc
        self._count = 0
        self._frame = SPINNER[0]
        self._stop = threading.Event()
        self._interval = interval
        self._draw()
        self._thread = threading.Thread(target=self._spin, name="segone-progress", daemon=True)
        self._thread.start()

    def _draw(self):
        count = f" ({self._count:,} done)" if self._count else ""
        self._bar.set_description_str(f"{self._desc}{count} {self._frame}", refresh=True)

    def set_description(self, desc=None, refresh=True):
        self._desc = desc or ""
        self._count = 0  # a new stage counts afresh
        if not self._closed:
            self._draw()

    def update(self, n=1):
        self._count += n

    def _spin(self):
        for frame in itertools.cycle(SPINNER):
            if self._stop.wait(self._interval):
                return
            self._frame = frame
            try:
                self._draw()
            except Exception:  # pragma: no cover - a closed stream must never break the stage
                return

    def close(self):
        if not self._closed:
            self._stop.set()
            self._thread.join(timeout=1.0)
        super().close()


def stage_line(name, enabled=None, *, file=None, interval=SPIN_INTERVAL_S):
    """A started single-line stage display (see :func:`stage`); call ``close()`` when done.

    For a job of several stages: ``set_description(next stage)`` as each one
    starts, ``write(line)`` for log lines, ``close()`` in a ``finally``.
    Returns a :class:`NullProgress` when progress is not shown.
    """
    if not progress_enabled(enabled, file):
        return NullProgress()
    from tqdm.auto import tqdm

    bar = tqdm(total=None, desc=name, file=file or sys.stderr, leave=False, dynamic_ncols=True,
               bar_format="{desc} [{elapsed}]", mininterval=0.0)  # fmt: skip
    return _Stage(bar, interval)


@contextlib.contextmanager
def stage(name, enabled=None, *, file=None, interval=SPIN_INTERVAL_S):
    """Show ``name``, a spinner and the elapsed time while the block runs (no-op when not shown).

    Yields an object with ``set_description(text)`` and ``update(n)`` (a
    count of work done, shown next to the spinner as "N done").

    >>> with stage("profiling customers", enabled=False) as s:
    ...     s.update(10)
    """
    s = stage_line(name, enabled, file=file, interval=interval)
    t0 = time.perf_counter()
    try:
        yield s
    finally:
        s.set_description(f"{name}: done in {time.perf_counter() - t0:.1f}s", refresh=True)
        s.close()
