"""A report a marketer can read: one self-contained HTML file per output directory.

:func:`write_report` turns the outputs of ``segone run`` into one HTML file
that opens offline (nothing is fetched from the network: styles, the chart
library and the chart data are all inline):

* run facts and data quality (rows read, dropped and why, as-of date, time per stage);
* segments at a glance (customers, share of spend, labels);
* what sets each segment apart (lift of every feature against the base, as a heatmap) and who they are
  (attribute mixes);
* typical customers (persona cards, from the first rows of personas.parquet);
* predicted customer value by segment (when the run predicted it);
* the recency x frequency (RFM) grid (when the outputs hold one: ``rfm.parquet``);
* movement since the previous run (when the run was tracked: ``migration.parquet``, run.json ``tracking``).

Sections whose outputs are absent say so and how to get them.  Privacy: with
run.json ``privacy.min_segment_size`` = k, no figure about fewer than k
customers is shown; customer ids appear as the outputs hold them.

The charts are Vega-Lite specs built with Altair; the Vega runtime (Vega,
Vega-Lite, vega-embed: about 0.9 MB) is inlined once from the
``vl-convert-python`` package.  Both are the optional extra
``pip install segone[report]``.

The report reads the small outputs whole and at most ``max_rows`` rows of the
per-customer files (the first ones, batch by batch), so it takes about the
same time for 10 million customers as for 10 thousand.
"""

import os

from segone.errors import SegoneError
from segone.report._read import MAX_PERSONA_ROWS, MAX_ROWS, ReportData, read_outputs

__all__ = ["MissingDependencyError", "ReportData", "check_dependencies", "read_outputs", "rfm_grid", "write_report"]

INSTALL_HINT = 'pip install "segone[report]"  (or: pip install altair vl-convert-python)'


class MissingDependencyError(SegoneError, ImportError):
    """An optional dependency of the report is not installed."""


def _charting():
    """(altair, vl_convert), or MissingDependencyError saying how to install them."""
    missing = []
    try:
        import altair
    except ImportError:
        altair = None
        missing.append("altair")
    try:
        import vl_convert
    except ImportError:
        vl_convert = None
        missing.append("vl-convert-python")
    if missing:
        raise MissingDependencyError(
            f"segone report needs the optional package(s) {', '.join(missing)} to draw its charts; install them "
            f"with: {INSTALL_HINT}"
        )
    return altair, vl_convert


def check_dependencies():
    """Raise :class:`MissingDependencyError` (how to install) unless the report's chart libraries are installed.

    ``segone run --report`` calls it before the run, so that a missing extra
    is found in a second, not after an hour of work.
    """
    _charting()


def _cache_dir():
    """Where the Vega bundle is cached: $SEGONE_CACHE_DIR, else $XDG_CACHE_HOME/segone, else ~/.cache/segone."""
    d = os.environ.get("SEGONE_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "segone")
    return d


_BUNDLES = {}


def vega_bundle():
    """The Vega + Vega-Lite + vega-embed JavaScript bundle (no imports, no URLs fetched), matching Altair's schema.

    vl-convert builds it in about two seconds; it is kept in this process and
    in a cache file (see :func:`_cache_dir`; set ``SEGONE_CACHE_DIR`` to move
    it, or to an empty directory to rebuild it).  A cache that cannot be
    written is skipped silently.
    """
    alt, vlc = _charting()
    want = ".".join(alt.SCHEMA_VERSION.split(".")[:2])  # "v6.4.1" -> "v6.4"
    try:
        known = [f"v{v}" for v in vlc.get_vegalite_versions()]
    except AttributeError:  # pragma: no cover - older vl-convert
        known = []
    version = want if want in known else None
    key = f"vega-bundle-vlc{getattr(vlc, '__version__', 'x')}-{version or 'latest'}.js"
    if key in _BUNDLES:
        return _BUNDLES[key]
    path = os.path.join(_cache_dir(), key)
    bundle = None
    try:
        with open(path, encoding="utf-8") as f:
            bundle = f.read()
        if "vegaEmbed" not in bundle[-2000:] or len(bundle) < 100_000:
            bundle = None  # truncated or foreign: rebuild
    except OSError:
        pass
    if bundle is None:
        bundle = vlc.javascript_bundle(vl_version=version)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(bundle)
            os.replace(tmp, path)
        except OSError:
            pass
    _BUNDLES[key] = bundle
    return bundle


def _check_report_path(path):
    """The report never replaces a file segone did not write (an input, a model, another document)."""
    from segone.errors import OutputError

    if os.path.isdir(path):
        raise OutputError(f"the report path {path!r} is a directory; give a file name, e.g. {path!r}/report.html.")
    if os.path.lexists(path):
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError as exc:
            raise OutputError(f"the report path {path!r} exists and cannot be read ({exc}); choose another path.")
        if not (head.startswith(b"<!DOCTYPE html>") and (b"segone report</title>" in head or
                                                          b"segone backtest</title>" in head)):  # fmt: skip
            raise OutputError(f"the report path {path!r} exists and is not a report segone wrote; segone never "
                              "replaces other files: choose another path.")  # fmt: skip


def _backtest_info(out_dir):
    """run.json of a `segone backtest` output directory, else None (a run's directory, or not an output)."""
    from segone import outputs
    from segone._validation import load_json
    from segone.errors import ModelFormatError

    path = os.path.join(os.fspath(out_dir), outputs.RUN_JSON)
    if not os.path.exists(os.path.join(os.fspath(out_dir), outputs.BACKTEST)) or not os.path.exists(path):
        return None
    info = load_json(path, "backtest run.json", error=ModelFormatError)
    if not isinstance(info, dict) or info.get("format") != "segone-backtest":
        return None
    missing = [n for n in (outputs.BACKTEST_DECILES,) if not os.path.exists(os.path.join(os.fspath(out_dir), n))]
    if missing:
        raise ModelFormatError(f"{out_dir}: a backtest output without {missing[0]}; run `segone backtest` again.")
    return info


def write_report(out_dir, path=None, *, title=None, max_rows=MAX_ROWS, persona_rows=MAX_PERSONA_ROWS,
                 personas_per_segment=3):  # fmt: skip
    """Write the HTML report of an output directory of ``segone run`` (or ``segone backtest``); return its path.

    Parameters
    ----------
    out_dir : str or path
        The ``--out`` directory of ``segone run`` (run.json and segments.parquet at least).
    path : str or path, optional
        Where to write (default ``OUT/report.html``); written atomically.
    title : str, optional
        The page title (default "Customer segments").
    max_rows : int, default 100,000
        At most this many rows of assignments.parquet are read (the first
        rows, a few columns), for the predicted-value distribution and for
        choosing typical customers.
    persona_rows : int, default 50,000
        At most this many rows of personas.parquet are read.
    personas_per_segment : int, default 3
        Customers shown per segment (0: none).

    Returns
    -------
    str
        The path of the report.

    Raises
    ------
    MissingDependencyError
        Altair or vl-convert-python is not installed (``pip install segone[report]``).
    ModelFormatError
        ``out_dir`` is not a complete output directory.
    """
    from segone._validation import check_int
    from segone.report import _charts
    from segone.report._html import Page

    _charting()
    max_rows = check_int(max_rows, "max_rows", low=0)
    persona_rows = check_int(persona_rows, "persona_rows", low=0)
    personas_per_segment = check_int(personas_per_segment, "personas_per_segment", low=0)
    backtest_info = _backtest_info(out_dir)
    if backtest_info is not None:  # the output of `segone backtest`: its own page
        from segone.report._backtest import backtest_page

        page = backtest_page(os.fspath(out_dir), backtest_info, vega_bundle(), title=title)
    else:
        data = read_outputs(out_dir, max_rows=max_rows, persona_rows=persona_rows,
                            personas_per_segment=personas_per_segment)  # fmt: skip
        page = Page(data, _charts, title=title).render(vega_bundle())
    from segone.outputs import REPORT

    path = os.fspath(path) if path is not None else os.path.join(os.fspath(out_dir), REPORT)
    _check_report_path(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return os.path.abspath(path)


def rfm_grid(scores, spend=None, segments=None):
    """The small ``rfm.parquet`` table the report shows, from per-customer RFM scores.

    Parameters
    ----------
    scores : pyarrow.Table
        With ``r_score`` and ``f_score`` (as :func:`segone.rfm_scores` returns).
    spend : array-like, optional
        Spend per customer, in the same order (e.g. the profiles' ``spend_total``).
    segments : array-like of int, optional
        Segment per customer, same order: one grid per segment (the report sums them).

    Returns
    -------
    pyarrow.Table
        ``[segment,] r, f, customers, spend``: one row per non-empty cell.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = rfm_grid(pa.table({"r_score": [5, 5, 1], "f_score": [1, 1, 2]}), spend=[10.0, 5.0, 1.0])
    >>> t.to_pylist()[0]
    {'r': 1, 'f': 2, 'customers': 1, 'spend': 1.0}
    """
    import numpy as np
    import pyarrow as pa

    r = np.asarray(scores.column("r_score").to_numpy(zero_copy_only=False), dtype=np.int64)
    f = np.asarray(scores.column("f_score").to_numpy(zero_copy_only=False), dtype=np.int64)
    if spend is None:
        s = np.zeros(r.size)
    elif isinstance(spend, np.ndarray):
        s = spend.astype(np.float64)
    else:
        s = np.asarray(pa.array(spend).to_numpy(zero_copy_only=False), dtype=np.float64)
    s = np.nan_to_num(s)
    g = np.zeros(r.size, dtype=np.int64) if segments is None else np.asarray(segments, dtype=np.int64)
    key = (g * 100 + r) * 100 + f
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=s, minlength=uniq.size)
    cols = {}
    if segments is not None:
        cols["segment"] = pa.array((uniq // 10_000).astype(np.int32))
    cols["r"] = pa.array(((uniq // 100) % 100).astype(np.int8))
    cols["f"] = pa.array((uniq % 100).astype(np.int8))
    cols["customers"] = pa.array(counts.astype(np.int64))
    cols["spend"] = pa.array(sums, mask=np.full(uniq.size, spend is None))
    return pa.table(cols)


