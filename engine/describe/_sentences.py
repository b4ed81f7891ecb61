"""Persona sentences written straight into an Arrow string buffer.

The phrases of the vocabulary are compiled to byte literals; per row and
trait slot the compiled kernel (``persona_slots`` and ``persona_sentences``
of the "persona" kernel family: Cython and Numba twins of
``segone.kernels.reference``) copies the literals, formats the numbers
(round half to even, as NumPy's ``round``, then ``%.Nf``) and the category
values, joins the slots with "; " and upper-cases an ASCII first letter.
One pass, no Python object per row.  :func:`build_reference` is the obvious
Python twin the tests compare it with.
"""

import numpy as np
import pyarrow as pa

from segone._backend import get_kernels
from segone._threads import effective_n_threads
from segone.kernels._common import sentence_row_cap


def _gather(feat, cols):
    """values[i, s] = cols[feat[i, s]][i] (NaN where feat is -1 or past the columns), grouped by column."""
    n, k = feat.shape
    values = np.full((n, k), np.nan)
    if not cols or feat.size == 0:
        return values
    flat = feat.ravel()
    key = np.where((flat >= 0) & (flat < len(cols)), flat, len(cols)).astype(np.int16 if len(cols) < 32000 else np.int64)
    order = np.argsort(key, kind="stable")  # a radix sort for 16-bit keys
    bounds = np.searchsorted(key[order], np.arange(len(cols) + 1))
    out = values.reshape(-1)
    for j, col in enumerate(cols):
        pos = order[bounds[j] : bounds[j + 1]]
        if pos.size:
            out[pos] = col[pos // k]
    return values


def slots(feat, val, cols, medians, kind, row_medians=None, entry_base=0, variants=None, backend="auto",
          n_threads=None):  # fmt: skip
    """Per trait slot: (phrase entry code, placeholder numbers, value, percentile).

    ``feat`` / ``val`` are the ``top_traits`` outputs (column index, -1 for
    none, and signed strength); ``cols`` the numeric value columns (the
    indices past them are categorical); ``kind`` the compiled entries' kind
    codes.  The entry of column ``j`` is ``2 j`` when low, ``2 j + 1`` when
    high; numbers: value, ratio to the median, value x 100, "top N%",
    "bottom N%".  Values and percentiles of categorical slots are NaN.
    ``row_medians`` (one per row) replace the per-column medians of the
    ratio, and ``entry_base`` is added to every entry code (the segment
    contrast uses both).  ``variants`` = (swap, far_ratio, vdec), one row per
    entry: the entries to use instead when the value reads 1, when it reads
    0 (at ``vdec`` decimals) and when the ratio reaches ``far_ratio`` (-1:
    none).  ``backend`` / ``n_threads``: the kernel backend and threads.
    """
    n, k = feat.shape
    width = kind.shape[1]
    entry = np.empty((n, k), np.int64)
    nums = np.empty((n, k, max(width, 1)))
    pct = np.empty((n, k))
    feat = np.ascontiguousarray(feat, np.int64)
    values = _gather(feat, cols)
    if variants is None:
        swap, far, vdec = np.full((0, 3), -1, np.int64), np.zeros(0), np.zeros(0, np.int64)
    else:
        swap, far, vdec = variants
    get_kernels(backend, "persona").persona_slots(feat, val, values, medians, row_medians, kind, int(entry_base),
                                                  swap, far, vdec, entry, nums, pct,
                                                  effective_n_threads(n_threads))  # fmt: skip
    return entry, nums[:, :, :width], values, pct


def compile_entries(entries):
    """entries: list of (literals, kinds, decimals) or None -> arrays for :func:`build`."""
    from segone.describe._personas import _KINDS

    width = max((len(e[1]) for e in entries if e), default=0)
    m = len(entries)
    lit_off = np.zeros((m, width + 1), np.int64)
    lit_len = np.zeros((m, width + 1), np.int64)
    kind = np.zeros((m, max(width, 1)), np.int64)
    dec = np.zeros((m, max(width, 1)), np.int64)
    blob = bytearray()
    for i, e in enumerate(entries):
        if not e:
            continue
        lits, kinds, decs = e
        for p, lit in enumerate(lits):
            b = lit.encode("utf-8")
            lit_off[i, p], lit_len[i, p] = len(blob), len(b)
            blob += b
        for p, (kd, d) in enumerate(zip(kinds, decs)):
            kind[i, p], dec[i, p] = _KINDS.index(kd), d
    return lit_off, lit_len, np.frombuffer(bytes(blob) or b"\0", np.uint8), kind[:, :width], dec[:, :width]


def build(entry, nums, cat, compiled, cat_values, nothing, n_threads=None, n_chunks=None, backend="auto"):
    """The sentences as a pyarrow StringArray (entry -1: no trait in that slot).

    Rows are written in ``n_chunks`` parallel chunks (default: one per
    thread for large inputs), then moved together; ``backend``: the kernel
    backend.
    """
    lit_off, lit_len, lit_bytes, kind, dec = compiled
    n, k = entry.shape
    cat_b = [v.encode("utf-8") for v in cat_values]
    cat_off = np.zeros(len(cat_b) + 1, np.int64)
    np.cumsum([len(b) for b in cat_b], out=cat_off[1:])
    cat_bytes = np.frombuffer(b"".join(cat_b) or b"\0", np.uint8)
    nothing_b = np.frombuffer(nothing.encode("utf-8"), np.uint8)
    row_cap = sentence_row_cap(lit_len, kind, dec, cat_off, k, len(nothing_b))  # a bound of one row's bytes
    cap = n * row_cap + 1
    out = np.empty(cap, np.uint8)
    offsets = np.empty(n + 1, np.int32 if cap < 2**31 else np.int64)
    nt = effective_n_threads(n_threads)
    end = get_kernels(backend, "persona").persona_sentences(
        entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing_b, out, offsets,
        n_chunks or max(1, min(nt, n // 4096)), row_cap, nt)  # fmt: skip
    typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    arr = pa.Array.from_buffers(typ, n, [None, pa.py_buffer(offsets), pa.py_buffer(out[:end].copy())])
    return arr.cast(pa.string()) if typ != pa.string() else arr


def build_reference(entry, nums, cat, entries, cat_values, nothing):
    """The obvious Python twin of :func:`build` (slow; for the tests)."""
    out = []
    for i in range(entry.shape[0]):
        parts = []
        for s in range(entry.shape[1]):
            e = entry[i, s]
            if e < 0:
                continue
            lits, kinds, decs = entries[e]
            txt = lits[0]
            for p, (kd, d) in enumerate(zip(kinds, decs)):
                if kd == "category":
                    txt += cat_values[cat[i, s]] if cat[i, s] >= 0 else ""
                elif kd != "none":
                    x = float(np.round(nums[i, s, p], d)) + 0.0  # no "-0"
                    txt += f"{x:.{d}f}"
                txt += lits[p + 1]
            parts.append(txt)
        sent = "; ".join(parts)
        if not sent:
            sent = nothing
        elif "a" <= sent[0] <= "z":
            sent = sent[0].upper() + sent[1:]
        out.append(sent)
    return pa.array(out, pa.string())

