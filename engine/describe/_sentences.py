"""Persona sentences written straight into an Arrow string buffer.

The phrases of the vocabulary are compiled to byte literals; per row and
trait slot the kernel copies the literals, formats the numbers (round half
to even, as NumPy's ``round``, then ``%.Nf``) and the category values, joins
the slots with "; " and upper-cases an ASCII first letter.  One pass, no
Python object per row.  :func:`build_reference` is the obvious Python twin
the tests compare it with.
"""

import numpy as np
import pyarrow as pa
from numba import njit, prange

from segone._threads import effective_n_threads

SEP = np.frombuffer(b"; ", dtype=np.uint8)


@njit(cache=True, nogil=True)
def _digits(v, out, pos):
    """Write the non-negative integer v; return the new position."""
    if v == 0:
        out[pos] = 48
        return pos + 1
    start = pos
    while v > 0:
        out[pos] = 48 + v % 10
        v //= 10
        pos += 1
    i, j = start, pos - 1
    while i < j:
        out[i], out[j] = out[j], out[i]
        i += 1
        j -= 1
    return pos


@njit(cache=True, nogil=True)
def _number(x, d, out, pos):
    if not np.isfinite(x) or abs(x) >= 9e17 / 10.0**d:
        out[pos] = 63  # "?": not representable (never expected: numbers are checked upstream)
        return pos + 1
    scaled = np.rint(x * 10.0**d)
    if scaled < 0:
        out[pos] = 45  # "-"
        pos += 1
        scaled = -scaled
    iv = np.int64(scaled)
    p10 = np.int64(10) ** d
    pos = _digits(iv // p10, out, pos)
    if d > 0:
        out[pos] = 46  # "."
        pos += 1
        frac = iv % p10
        for q in range(d - 1, -1, -1):
            out[pos + q] = 48 + frac % 10
            frac //= 10
        pos += d
    return pos


@njit(cache=True, nogil=True)
def _build_rows(r0, r1, pos, entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing,
                out, offsets):  # fmt: skip
    """Rows r0..r1-1 written from out[pos]; returns the end."""
    k = entry.shape[1]
    width = kind.shape[1]
    for i in range(r0, r1):
        offsets[i] = pos
        start = pos
        for s in range(k):
            e = entry[i, s]
            if e < 0:
                continue
            if pos > start:
                out[pos] = SEP_0
                out[pos + 1] = SEP_1
                pos += 2
            for p in range(width + 1):
                o, ln = lit_off[e, p], lit_len[e, p]
                for b in range(ln):
                    out[pos + b] = lit_bytes[o + b]
                pos += ln
                if p == width:
                    break
                kd = kind[e, p]
                if kd == 6:  # the category value
                    c = cat[i, s]
                    if c >= 0:
                        o2, o3 = cat_off[c], cat_off[c + 1]
                        for b in range(o3 - o2):
                            out[pos + b] = cat_bytes[o2 + b]
                        pos += o3 - o2
                elif kd > 0:
                    pos = _number(nums[i, s, p], dec[e, p], out, pos)
        if pos == start:
            for b in range(nothing.shape[0]):
                out[pos + b] = nothing[b]
            pos += nothing.shape[0]
        elif 97 <= out[start] <= 122:  # an ASCII lower-case first letter
            out[start] -= 32
    return pos


@njit(cache=True, nogil=True, parallel=True)
def _build(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out, offsets,
           n_chunks, row_cap):  # fmt: skip
    """Chunks of rows written in parallel, each from its own region of out, then moved together."""
    n = entry.shape[0]
    per = (n + n_chunks - 1) // n_chunks
    ends = np.zeros(n_chunks, np.int64)
    for t in prange(n_chunks):
        r0 = min(t * per, n)
        r1 = min(r0 + per, n)
        ends[t] = _build_rows(r0, r1, r0 * row_cap, entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec,
                              cat_off, cat_bytes, nothing, out, offsets)  # fmt: skip
    pos = 0
    for t in range(n_chunks):  # left moves only: a forward copy is safe
        r0 = min(t * per, n)
        r1 = min(r0 + per, n)
        src = r0 * row_cap
        shift = src - pos
        if shift:
            for b in range(src, ends[t]):
                out[b - shift] = out[b]
            for i in range(r0, r1):
                offsets[i] -= shift
        pos = ends[t] - shift
    offsets[n] = pos
    return pos


SEP_0, SEP_1 = 59, 32


@njit(nogil=True, cache=True, error_model="numpy")
def _pct_rank(q):
    """A share of the base as a whole percentage for "top N%": at least 1, never 0."""
    return min(max(np.ceil(100.0 * q - 1e-9), 1.0), 100.0)


@njit(nogil=True, cache=True, error_model="numpy")
def _slots_kernel(feat, val, values, n_num, med, row_med, kind, base, entry, nums, pct, swap, far_ratio, vdec):
    n, k = feat.shape
    width = nums.shape[2]
    for i in range(n):
        for s in range(k):
            j = feat[i, s]
            pct[i, s] = np.nan
            for q in range(width):
                nums[i, s, q] = 0.0
            if j < 0:
                entry[i, s] = -1
                continue
            st = np.float64(val[i, s])
            e = base + 2 * j + (1 if st > 0 else 0)
            if j < n_num and swap.shape[0]:  # the variants: far above typical, a value that reads 1 or 0
                v = values[i, s]
                m = row_med[i] if row_med.shape[0] else med[j]
                if swap[e, 2] >= 0 and m > 0 and v / m >= far_ratio[e]:
                    e = swap[e, 2]
                else:
                    scale = 10.0 ** vdec[e]
                    r = np.rint(v * scale)
                    if swap[e, 0] >= 0 and r == scale:
                        e = swap[e, 0]
                    elif swap[e, 1] >= 0 and r == 0.0:
                        e = swap[e, 1]
            entry[i, s] = e
            if j >= n_num:
                continue
            v = values[i, s]
            p = (st + 1.0) / 2.0
            pct[i, s] = p
            for q in range(width):
                kd = kind[e, q]
                if kd == 1:
                    nums[i, s, q] = v
                elif kd == 2:
                    nums[i, s, q] = v / (row_med[i] if row_med.shape[0] else med[j])
                elif kd == 3:
                    nums[i, s, q] = v * 100.0
                elif kd == 4:
                    nums[i, s, q] = _pct_rank(1.0 - p)
                elif kd == 5:
                    nums[i, s, q] = _pct_rank(p)


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


def slots(feat, val, cols, medians, kind, row_medians=None, entry_base=0, variants=None):
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
    none).
    """
    n, k = feat.shape
    width = kind.shape[1]
    entry = np.empty((n, k), np.int64)
    nums = np.empty((n, k, max(width, 1)))
    pct = np.empty((n, k))
    kind = np.ascontiguousarray(kind, np.int64) if width else np.zeros((kind.shape[0], 1), np.int64)
    med = np.ascontiguousarray(medians, np.float64) if len(medians) else np.zeros(1)
    feat = np.ascontiguousarray(feat, np.int64)
    values = _gather(feat, cols)
    row_med = np.empty(0) if row_medians is None else np.ascontiguousarray(row_medians, np.float64)
    if variants is None:
        swap, far, vdec = np.full((0, 3), -1, np.int64), np.zeros(0), np.zeros(0, np.int64)
    else:
        swap, far, vdec = (np.ascontiguousarray(a) for a in variants)
    _slots_kernel(feat, val, values, len(medians), med, row_med, kind, int(entry_base), entry, nums, pct,
                  swap.astype(np.int64), far.astype(np.float64), vdec.astype(np.int64))  # fmt: skip
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


def build(entry, nums, cat, compiled, cat_values, nothing, n_threads=None, n_chunks=None):
    """The sentences as a pyarrow StringArray (entry -1: no trait in that slot).

    Rows are written in ``n_chunks`` parallel chunks (default: one per
    thread for large inputs), then moved together.
    """
    lit_off, lit_len, lit_bytes, kind, dec = compiled
    n, k = entry.shape
    cat_b = [v.encode("utf-8") for v in cat_values]
    cat_off = np.zeros(len(cat_b) + 1, np.int64)
    np.cumsum([len(b) for b in cat_b], out=cat_off[1:])
    cat_bytes = np.frombuffer(b"".join(cat_b) or b"\0", np.uint8)
    nothing_b = np.frombuffer(nothing.encode("utf-8"), np.uint8)
    # an upper bound of the bytes: every literal, 24 bytes a number, the longest category, separators
    per_entry = lit_len.sum(axis=1) + 24 * (kind > 0).sum(axis=1) + (cat_off[1:] - cat_off[:-1]).max(initial=0)
    bound = int(per_entry.max(initial=0)) + 2
    row_cap = max(bound * k, len(nothing_b))
    cap = n * row_cap + 1
    out = np.empty(cap, np.uint8)
    offsets = np.empty(n + 1, np.int32 if cap < 2**31 else np.int64)
    if nums.shape[2] == 0:  # a vocabulary without numbers: one unused column keeps the shapes simple
        nums = np.zeros((n, k, 1))
    end = _build(np.ascontiguousarray(entry, np.int64), np.ascontiguousarray(nums, np.float64),
                 np.ascontiguousarray(cat, np.int64), lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes,
                 nothing_b, out, offsets, n_chunks or max(1, min(effective_n_threads(n_threads), n // 4096)), row_cap)  # fmt: skip
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

