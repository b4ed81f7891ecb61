"""Helpers shared by the Cython and Numba backends (plain Python/NumPy)."""

from typing import NamedTuple

import numpy as np

# Smallest number of rows in one partial-sum chunk, and the cap on the memory
# held by all per-chunk partial sums (in float64 values).  The chunk plan
# depends only on (N, K, D), never on the thread count, so that sums merged in
# chunk order are identical whatever the number of threads.
MIN_CHUNK_ROWS = 16384
MAX_PARTIAL_VALUES = 1 << 23  # 8M doubles = 64 MiB


def prepare_centroids(centroids, tf=None):
    """Return (ct, cnorm): -2 * centroids.T (D, K) and ||c_k||^2 (K,), C-contiguous.

    With a :class:`Centering` ``tf`` the centroids are first transformed as the
    kernels transform the rows (``c' = c * scale - shift * scale``)."""
    c64 = _transformed(centroids, tf)
    ct = np.ascontiguousarray((-2.0 * c64).T, dtype=centroids.dtype)
    cnorm = np.ascontiguousarray(np.einsum("kd,kd->k", c64, c64), dtype=centroids.dtype)
    return ct, cnorm


def chunk_plan(n_samples, n_clusters, n_features):
    """Rows per partial-sum chunk and the number of chunks for an (N, K, D) pass."""
    if n_samples == 0:
        return MIN_CHUNK_ROWS, 0
    max_chunks = max(64, MAX_PARTIAL_VALUES // max(1, n_clusters * (n_features + 2)))
    n_chunks = min(-(-n_samples // MIN_CHUNK_ROWS), max_chunks)
    chunk_rows = -(-n_samples // n_chunks)
    n_chunks = -(-n_samples // chunk_rows)
    return chunk_rows, n_chunks


def partial_buffers(n_chunks, n_clusters, n_features):
    return (
        np.zeros((n_chunks, n_clusters, n_features), dtype=np.float64),
        np.zeros((n_chunks, n_clusters), dtype=np.float64),
        np.zeros(n_chunks, dtype=np.float64),
    )


def merge_partials(psums, pcounts, pinertia, sums, counts):
    """Merge per-chunk partials in chunk order (deterministic) into sums/counts."""
    if psums.shape[0] == 0:
        sums[...] = 0.0
        counts[...] = 0.0
        return 0.0
    np.sum(psums, axis=0, out=sums)
    np.sum(pcounts, axis=0, out=counts)
    return float(np.sum(pinertia))


KC_PAD = 8  # centroids per register block in the SIMD kernels (simd_assign.h)


def prepare_blocked(centroids, kc=KC_PAD, tf=None):
    """Centroids for the register-blocked kernels.

    Returns ``(c2b, cnorm, kp)``: ``c2b`` of shape (kp // kc, D, kc) holding
    -2 * centroids in blocks of ``kc`` (feature-major inside a block),
    ``cnorm`` (kp,) with ||c||^2, padded centroids at +inf so they never win,
    and ``kp`` = K rounded up to a multiple of ``kc``.  With a
    :class:`Centering` ``tf`` the centroids are transformed first, as the
    kernels transform the rows.
    """
    k, d = centroids.shape
    kp = -(-k // kc) * kc
    c64 = _transformed(centroids, tf)
    pad = np.zeros((kp, d))
    pad[:k] = -2.0 * c64
    c2b = np.ascontiguousarray(pad.reshape(kp // kc, kc, d).transpose(0, 2, 1), dtype=centroids.dtype)
    cnorm = np.full(kp, np.inf)
    cnorm[:k] = np.einsum("kd,kd->k", c64, c64)
    return c2b, np.ascontiguousarray(cnorm, dtype=centroids.dtype), kp


# ------------------------------------------------------- centring on the fly
# The distance kernels use the expanded form ||c||^2 - 2 x.c + ||x||^2, whose
# rounding error grows with the squared magnitude of the values, not with
# their spread: float32 data at 1e4 + N(0, 1) lose every bit of the
# within-cluster distances.  The kernels therefore compute on transformed
# rows and centroids, x' = (x - shift) * scale, with a per-feature shift near
# the centroids (a value of the data's type) and a power-of-two scale (1
# unless the spread is extreme): distances are translation-invariant and the
# scale is exact, so distances, margins and inertia are those of the data,
# exact to float rounding of the data's *spread*.  The transform is applied
# to the rows inside the kernels (while they are read), never as an extra
# pass, and only when it matters: data near the origin pay nothing.
#
# Unscaled kernels are used while the centroids' spread lies in
# [2**-SPREAD_EXP, 2**SPREAD_EXP]; the scale exponent is clipped to
# +-SCALE_EXP_MAX so that the scale and 1 / scale**2 stay finite.
SPREAD_EXP = {np.dtype(np.float32): 40, np.dtype(np.float64): 300}
SCALE_EXP_MAX = {np.dtype(np.float32): 120, np.dtype(np.float64): 510}


class Centering(NamedTuple):
    """The transform the distance kernels apply: ``x' = (x - shift) * scale``.

    ``shift`` (D,) float64 holds values of the data's float type (zeros: no
    shift); ``scale`` is a power of two (1.0: no scaling).
    """

    shift: np.ndarray
    scale: float

    @property
    def active(self):
        return self.scale != 1.0 or bool(np.any(self.shift))

    def scaled_shift(self, dtype):
        """``shift * scale`` in the data's type (exact: the scale is a power of two)."""
        return (self.shift * self.scale).astype(dtype)


def _max_sqnorm(A):
    """max_k ||A_k||^2 in float64; computed on rescaled rows when the squares overflow or underflow."""
    r2 = float(np.einsum("kd,kd->k", A, A).max())
    if np.isfinite(r2) and r2 > 1e-280:
        return r2
    a = float(np.abs(A).max())
    if a == 0.0 or not np.isfinite(a):
        return r2
    B = A / a
    return float(np.einsum("kd,kd->k", B, B).max()) * a * a  # may be inf: the radius is then inf


def centering(centroids, dtype=None):
    """The :class:`Centering` of the kernels for these centroids (rows of type ``dtype``).

    The shift is the midrange of the centroids per feature, rounded to a
    multiple of a power of two near the feature's half range (so that values
    near it subtract exactly), kept only on features that sit away from the
    origin (``|shift| > half range``), and only when the whole shift is
    longer than the centroids' radius around it (otherwise the expanded form
    loses at most 2 bits and the kernels run untransformed).  The scale
    brings a radius outside ``2**+-SPREAD_EXP`` back to about 1.
    Deterministic: the same centroids give the same transform, in every
    backend and every partition.  O(K * D), about 30 us.
    """
    dtype = np.dtype(centroids.dtype if dtype is None else dtype)
    C = np.asarray(centroids, dtype=np.float64)
    k, d = C.shape
    none = Centering(np.zeros(d), 1.0)
    if k == 0 or d == 0:
        return none
    with np.errstate(all="ignore"):
        lo, hi = C.min(axis=0), C.max(axis=0)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            return none
        mid = lo * 0.5 + hi * 0.5  # no overflow, unlike (lo + hi) / 2 or the mean
        half = hi * 0.5 - lo * 0.5
        q = np.exp2(np.floor(np.log2(half)))  # 0 where the feature is constant
        s = np.round(mid / q) * q
        s = np.where(np.isfinite(s), s, mid)
        s[np.abs(s) <= half] = 0.0  # features near the origin keep their values
        s = s.astype(dtype).astype(np.float64)  # a value of the data's type
        r2 = _max_sqnorm(C - s)
        if not _max_sqnorm(s[None, :]) > r2:
            s = np.zeros(d)
            r2 = _max_sqnorm(C)
    scale = 1.0
    if 0.0 < r2 < np.inf:
        e = int(np.frexp(np.sqrt(r2))[1])
        if abs(e) > SPREAD_EXP.get(dtype, 40):
            emax = SCALE_EXP_MAX.get(dtype, 120)
            scale = float(np.ldexp(1.0, -min(max(e, -emax), emax)))
    elif r2 == np.inf:
        emax = SCALE_EXP_MAX.get(dtype, 120)
        scale = float(np.ldexp(1.0, -emax))
    return Centering(s, scale)


def kernel_transform(tf, dtype, n_features):
    """Arguments of the compiled row kernels for a :class:`Centering` (or None):
    ``(xsg, xg, oscale, active)`` with rows transformed as ``x * xg - xsg``
    (xsg of the data's type) and distances scaled back by ``oscale``."""
    dtype = np.dtype(dtype)
    if tf is None or not tf.active:
        return np.zeros(max(1, n_features), dtype=dtype), 1.0, 1.0, False
    return np.ascontiguousarray(tf.scaled_shift(dtype)), float(tf.scale), float(tf.scale) ** -2, True


def _transformed(centroids, tf):
    """Centroids in float64, transformed exactly as the kernels transform rows."""
    c64 = centroids.astype(np.float64, copy=False)
    if tf is None or not tf.active:
        return c64
    return c64 * tf.scale - tf.scaled_shift(centroids.dtype).astype(np.float64)


def overflow_error(X, n_rows, rows=None):
    """The DataError for finite rows whose squared distance to the centroids exceeds X's float type."""
    from segone.errors import DataError, examples

    dt = np.dtype(X.dtype)
    fin = np.isfinite(X)
    lo = float(np.min(X, initial=np.inf, where=fin))
    hi = float(np.max(X, initial=-np.inf, where=fin))
    where = f" (first rows: {examples(rows)})" if rows is not None and len(rows) else ""
    fix = "rescale the features (e.g. standardise them)"
    if dt == np.float32:
        fix += " or convert X to float64"
    return DataError(
        f"{n_rows} rows of X{where} lie so far from the centroids that their squared distances exceed the "
        f"largest {dt} value ({np.finfo(dt).max:.4g}): X's values range from {lo:.6g} to {hi:.6g}. "
        f"To fix: {fix}."
    )


# Layout of the mini-batch state vector shared by the backends (float64):
MB_EWA, MB_BEST_EWA, MB_NO_IMPROVE, MB_ALPHA, MB_TOL, MB_RATIO, MB_MAX_NO_IMPROVE, MB_SINCE, MB_EVERY, MB_STEP = range(10)
MB_STATE_SIZE = 10
# statuses returned by the mini-batch kernels
MB_DONE, MB_NO_IMPROVEMENT, MB_CONVERGED, MB_REASSIGN, MB_INVALID = range(5)
# internal: a batch row's squared distance exceeds the data's float type (the
# kernel wrappers raise DataError; callers never see this status)
MB_OVERFLOW = 5


def minibatch_state(alpha, tol, reassignment_ratio, max_no_improvement, reassign_every):
    """A fresh state vector for the mini-batch kernels."""
    st = np.zeros(MB_STATE_SIZE)
    st[MB_EWA] = np.nan
    st[MB_BEST_EWA] = np.inf
    st[MB_ALPHA] = alpha
    st[MB_TOL] = tol
    st[MB_RATIO] = reassignment_ratio
    st[MB_MAX_NO_IMPROVE] = -1 if max_no_improvement is None else max_no_improvement
    st[MB_EVERY] = reassign_every
    return st


def minibatch_scratch(X, bs, k, kc=KC_PAD, block=256):
    d = X.shape[1]
    n_blocks = -(-bs // block)
    kp = -(-k // kc) * kc
    return dict(
        xb=np.empty((bs, d), dtype=X.dtype),
        c2b=np.zeros((kp // kc, d, kc), dtype=X.dtype),
        cnorm=np.empty(kp, dtype=X.dtype),
        dist=np.empty(bs, dtype=X.dtype),
        lab=np.empty(bs, dtype=np.int32),
        sums=np.empty((k, d)),
        counts=np.empty(k),
        psum=np.empty((n_blocks, k, d)),
        pcount=np.empty((n_blocks, k)),
        pinert=np.empty(n_blocks),
        pbad=np.empty(n_blocks, dtype=np.int32),
    )


# ---------------------------------------------------------- profile kernels
PROFILE_FIELDS = (
    "orders", "first", "last", "spend", "spend_max", "gross", "first_day_spend", "purchase_days",
    "window_orders", "window_spend", "cat_spend", "null_cat_spend", "n_categories", "channel_orders",
)  # fmt: skip


def prepare_profile_inputs(codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start):
    """Contiguous, typed inputs of the compiled profile kernels, with shape and code-range checks.

    Returns ``(codes, ts, amount, cat, channel, window_start, n_cat, n_channel)``;
    a category / channel array of length 0 means "no such column" (width 0).
    """
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    amount = np.ascontiguousarray(amount, dtype=np.float64)
    cat = np.ascontiguousarray(cat, dtype=np.int32)
    channel = np.ascontiguousarray(channel, dtype=np.int32)
    window_start = np.ascontiguousarray(window_start, dtype=np.int64)
    n = codes.shape[0]
    if n_groups < 0:
        raise ValueError("n_groups must be >= 0")
    if ts.shape[0] != n or amount.shape[0] != n:
        raise ValueError("codes, ts and amount must have the same length")
    widths = []
    for name, a, width in (("cat", cat, n_cat), ("channel", channel, n_channel)):
        if a.shape[0] not in (0, n):
            raise ValueError(f"{name} must have length 0 (no column) or {n}")
        # no column (length 0 while there are rows): width 0; no rows: the width asked for
        width = int(width) if (a.size or n == 0) else 0
        if a.size and (a.min() < -1 or a.max() >= width):
            raise ValueError(f"{name} codes must lie in [-1, {width})")
        widths.append(width)
    return codes, ts, amount, cat, channel, window_start, widths[0], widths[1]


def profile_outputs(n_groups, n_windows, n_cat, n_channel):
    """Zeroed output arrays of the profile kernel (see reference.profile_pass)."""
    n = n_groups
    return dict(
        orders=np.zeros(n, dtype=np.int64),
        first=np.full(n, np.iinfo(np.int64).max, dtype=np.int64),
        last=np.full(n, np.iinfo(np.int64).min, dtype=np.int64),
        spend=np.zeros(n),
        spend_max=np.full(n, -np.inf),
        gross=np.zeros(n),
        first_day_spend=np.zeros(n),
        purchase_days=np.zeros(n, dtype=np.int64),
        window_orders=np.zeros((n, n_windows), dtype=np.int64),
        window_spend=np.zeros((n, n_windows)),
        cat_spend=np.zeros((n, n_cat)),
        null_cat_spend=np.zeros(n),
        n_categories=np.zeros(n, dtype=np.int64),
        channel_orders=np.zeros((n, n_channel), dtype=np.int64),
    )


def owner_ranges(n_groups, n_parts):
    """Split [0, n_groups) into n_parts contiguous group ranges (bounds array)."""
    return np.linspace(0, n_groups, max(1, n_parts) + 1).astype(np.int64)


# ------------------------------------------------------------- scoring kernel
def quantile_rank(v, knots):
    """Rank in [0, 1] of each value of ``v`` on a sorted quantile grid ``knots`` (M >= 2).

    Linear interpolation between knots; a value equal to a run of equal knots
    (a tie in the data) gets the middle of the run, so tied values share one
    score; values outside the grid get 0 or 1.
    """
    m = knots.shape[0]
    lo = np.searchsorted(knots, v, side="left")
    hi = np.searchsorted(knots, v, side="right")
    r = np.empty(v.shape)
    tie = hi > lo
    r[tie] = (lo[tie] + hi[tie] - 1) * 0.5
    below, above = ~tie & (lo == 0), ~tie & (lo == m)
    r[below], r[above] = 0.0, m - 1
    mid = ~tie & ~below & ~above
    a = lo[mid] - 1
    r[mid] = a + (v[mid] - knots[a]) / (knots[a + 1] - knots[a])
    return r / (m - 1)


MAX_RANK_TABLE = 1 << 22


def rank_tables(quantile, knots):
    """Lookup tables for the compiled scoring kernels: ``(lut, offset, low, length)``.

    The kernels rank a value by its integer bucket coordinate, so for each
    quantile feature ``j`` the rank of every integer between ``floor(knots[j,
    0])`` and ``ceil(knots[j, -1])`` is tabulated once (``quantile_rank``,
    exactly); a coordinate below the table ranks 0, above it 1.  This replaces
    two binary searches per value with one load.
    """
    d = len(quantile)
    offset, low, length = np.zeros(d, dtype=np.int64), np.zeros(d), np.zeros(d, dtype=np.int64)
    parts, pos = [], 0
    for j in np.flatnonzero(quantile):
        a, b = np.floor(knots[j, 0]), np.ceil(knots[j, -1])
        n = int(b - a) + 1
        if not np.isfinite(a + b) or n > MAX_RANK_TABLE:
            raise ValueError(f"knots[{j}] span {n} integer coordinates; at most {MAX_RANK_TABLE} are supported")
        parts.append(quantile_rank(np.arange(n) + a, knots[j]))
        offset[j], low[j], length[j] = pos, a, n
        pos += n
    lut = np.concatenate(parts) if parts else np.zeros(1)
    return lut, offset, low, length


def prepare_score_inputs(cols, masks, X, log1p, fill, lo, hi, quantile, knots, center, scale, weight):
    """Checked, typed inputs of the compiled scoring kernels.

    Returns ``(cols, masks, params)``: float64 contiguous columns, uint8
    masks (length 0 = no nulls) and the per-feature parameters in kernel order.
    """
    n, d = X.shape
    if X.dtype != np.float32 or not X.flags.c_contiguous:
        raise ValueError("X must be a C-contiguous float32 array")
    if len(cols) != d or len(masks) != d:
        raise ValueError(f"expected {d} columns and {d} masks")
    cols = [np.ascontiguousarray(c, dtype=np.float64) for c in cols]
    masks = [np.ascontiguousarray(mk, dtype=np.uint8) for mk in masks]
    for c, mk in zip(cols, masks):
        if c.shape != (n,) or mk.shape[0] not in (0, n):
            raise ValueError(f"every column must have shape ({n},) and every mask length 0 or {n}")
    knots = np.ascontiguousarray(knots, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[0] != d or knots.shape[1] < 2:
        raise ValueError(f"knots must have shape ({d}, M) with M >= 2")
    per_feature = [
        np.ascontiguousarray(log1p, dtype=np.int8),
        *(np.ascontiguousarray(a, dtype=np.float64) for a in (fill, lo, hi)),
        np.ascontiguousarray(quantile, dtype=np.int8),
        *(np.ascontiguousarray(a, dtype=np.float64) for a in (center, scale, weight)),
    ]
    for p in per_feature:
        if p.shape[0] != d:
            raise ValueError(f"per-feature parameters must have length {d}")
    lut, lut_off, lut_low, lut_len = rank_tables(per_feature[4], knots)
    # kernel order: log1p, fill, lo, hi, quantile, lut, lut_off, lut_low, lut_len, center, scale, weight
    return cols, masks, per_feature[:5] + [lut, lut_off, lut_low, lut_len] + per_feature[5:]


def prepare_persona_inputs(cols, lut, lut_off, lut_low, lut_len, S):
    """Checked, typed inputs of the compiled persona strength kernels: ``(cols, (lut, off, low, len))``."""
    n, d2 = S.shape
    if S.dtype != np.float32 or not S.flags.c_contiguous:
        raise ValueError("S must be a C-contiguous float32 array")
    if len(cols) > d2:
        raise ValueError(f"{len(cols)} columns do not fit in S with {d2} columns")
    cols = [np.ascontiguousarray(c, dtype=np.float64) for c in cols]
    if any(c.shape != (n,) for c in cols):
        raise ValueError(f"every column must have shape ({n},)")
    d = len(cols)
    lut = np.ascontiguousarray(lut, dtype=np.float32)
    lut_off, lut_len = (np.ascontiguousarray(a, dtype=np.int64) for a in (lut_off, lut_len))
    lut_low = np.ascontiguousarray(lut_low, dtype=np.float64)
    if any(a.shape != (d,) for a in (lut_off, lut_low, lut_len)):
        raise ValueError(f"lut_off, lut_low and lut_len must have length {d}")
    if ((lut_len > 0) & ((lut_off < 0) | (lut_off + lut_len > lut.size))).any():
        raise ValueError("a feature's table lies outside lut")
    if lut.size == 0:
        lut = np.zeros(1, dtype=np.float32)
    return cols, (lut, lut_off, lut_low, lut_len)


# ------------------------------------------------------------- sweep statistics
def prepare_sweep_inputs(X, labels, shift, means, counts, sums, sumsq, dist):
    """Checked, typed inputs of the compiled sweep accumulation: ``(X, labels, shift, means)``.

    ``X`` stays in its float type (C-contiguous); labels become int64 and
    must lie in ``[0, k)`` (k = ``counts.shape[0]``); ``shift`` (D,) and
    ``means`` (k, D) float64; the outputs must be float64 of shapes (k,),
    (k, D), (k,) and (k,).
    """
    X = np.ascontiguousarray(X)
    if X.ndim != 2 or X.dtype not in (np.float32, np.float64):
        raise ValueError("X must be a 2-d float32 or float64 array")
    n, d = X.shape
    k = counts.shape[0]
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    shift = np.ascontiguousarray(shift, dtype=np.float64)
    means = np.ascontiguousarray(means, dtype=np.float64)
    if labels.shape != (n,) or shift.shape != (d,) or means.shape != (k, d):
        raise ValueError(f"labels, shift and means must have shapes ({n},), ({d},) and ({k}, {d})")
    for name, a, shape in (("counts", counts, (k,)), ("sums", sums, (k, d)), ("sumsq", sumsq, (k,)),
                           ("dist", dist, (k,))):  # fmt: skip
        if a.shape != shape or a.dtype != np.float64 or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{name} must be a writeable C-contiguous float64 array of shape {shape}")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values from {labels.min()} to {labels.max()}")
    return X, labels, shift, means


# ------------------------------------------------------------ persona sentences
#: most decimals of a number in a persona phrase ({value:.Nf}): 10**N stays exact in int64 and float64
MAX_DECIMALS = 9


def prepare_slots_inputs(feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry,
                         nums, pct):  # fmt: skip
    """Checked, typed inputs of the compiled persona slot kernels.

    Returns ``(feat, val, values, med, row_med, kind, swap, far_ratio, vdec)``:
    ``feat`` (N, k) int64, ``val`` (N, k) float32, ``values`` (N, k)
    float64, ``med`` float64 (length >= 1), ``row_med`` (N,) or (0,)
    float64, ``kind`` (M, W) int64 with W >= 1, ``swap`` (M or 0, 3) int64,
    ``far_ratio`` float64 and ``vdec`` int64.  Every entry code the kernels
    can form (``entry_base + 2 j + 1`` and the swaps) must lie in ``[0, M)``;
    the outputs ``entry`` (N, k) int64, ``nums`` (N, k, W' <= W) float64
    and ``pct`` (N, k) float64 must be writeable and C-contiguous.
    """
    feat = np.ascontiguousarray(feat, dtype=np.int64)
    n, k = feat.shape
    val = np.ascontiguousarray(val, dtype=np.float32)
    values = np.ascontiguousarray(values, dtype=np.float64)
    if val.shape != (n, k) or values.shape != (n, k):
        raise ValueError(f"feat, val and values must have the same shape ({n}, {k})")
    med = np.ascontiguousarray(medians, dtype=np.float64) if len(medians) else np.zeros(1)
    row_med = np.empty(0) if row_medians is None else np.ascontiguousarray(row_medians, dtype=np.float64)
    if row_med.shape not in ((0,), (n,)):
        raise ValueError(f"row_medians must have length {n}")
    kind = np.ascontiguousarray(kind, dtype=np.int64)
    if kind.ndim != 2:
        raise ValueError("kind must be 2-d (entries x placeholders)")
    if kind.shape[1] == 0:
        kind = np.zeros((kind.shape[0], 1), np.int64)
    m = kind.shape[0]
    swap = np.ascontiguousarray(swap, dtype=np.int64).reshape(-1, 3)
    far_ratio = np.ascontiguousarray(far_ratio, dtype=np.float64)
    vdec = np.ascontiguousarray(vdec, dtype=np.int64)
    if swap.shape[0] not in (0, m) or far_ratio.shape != (swap.shape[0],) or vdec.shape != (swap.shape[0],):
        raise ValueError(f"swap, far_ratio and vdec must have {m} rows (or 0: no variants)")
    for name, a, dt in (("entry", entry, np.int64), ("nums", nums, np.float64), ("pct", pct, np.float64)):
        if a.shape[:2] != (n, k) or a.dtype != dt or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"{name} must be a writeable C-contiguous {np.dtype(dt)} array of shape ({n}, {k}, ...)")
    if nums.ndim != 3 or nums.shape[2] > kind.shape[1]:
        raise ValueError(f"nums must have shape ({n}, {k}, W) with W <= {kind.shape[1]}")
    if feat.size and feat.max() >= 0 and (entry_base < 0 or entry_base + 2 * int(feat.max()) + 1 >= m):
        raise ValueError(f"entry codes up to {entry_base + 2 * int(feat.max()) + 1} do not fit {m} entries")
    if swap.size and (swap.max() >= m or (vdec.size and (vdec.min() < 0 or vdec.max() > MAX_DECIMALS))):
        raise ValueError(f"swap entries must lie below {m} and vdec in [0, {MAX_DECIMALS}]")
    return feat, val, values, med, row_med, kind, swap, far_ratio, vdec


def sentence_row_cap(lit_len, kind, dec, cat_off, k, nothing_len):
    """An upper bound of the bytes of one sentence: per slot every literal, 21 + decimals bytes a number (a sign,
    18 digits, a point, a leading zero), the longest category value a category, and the separator; at least the
    "nothing" sentence."""
    lit_len, kind, dec = (np.asarray(a, dtype=np.int64) for a in (lit_len, kind, dec))
    cat_off = np.asarray(cat_off, dtype=np.int64)
    longest = int((cat_off[1:] - cat_off[:-1]).max(initial=0))
    place = np.where(kind == 6, longest, np.where(kind > 0, 21 + dec, 0))
    per_entry = lit_len.sum(axis=1) + (place.sum(axis=1) if place.size else 0)
    return max((int(per_entry.max(initial=0)) + 2) * int(k), int(nothing_len))


def prepare_sentence_inputs(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing,
                            out, offsets, n_chunks, row_cap):  # fmt: skip
    """Checked, typed inputs of the compiled sentence writers (see ``reference.persona_sentences``).

    Every index the kernels follow is checked here (entry codes, literal and
    category ranges, decimals, the room in ``out``), so that the compiled
    loops, which check no bounds, never write outside their arrays.
    """
    entry = np.ascontiguousarray(entry, dtype=np.int64)
    n, k = entry.shape
    nums = np.ascontiguousarray(nums, dtype=np.float64)
    if nums.ndim != 3 or nums.shape[:2] != (n, k):
        raise ValueError(f"nums must have shape ({n}, {k}, W)")
    if nums.shape[2] == 0:
        nums = np.zeros((n, k, 1))
    cat = np.ascontiguousarray(cat, dtype=np.int64)
    lit_off, lit_len = (np.ascontiguousarray(a, dtype=np.int64) for a in (lit_off, lit_len))
    m, w1 = lit_off.shape
    kind = np.ascontiguousarray(kind, dtype=np.int64).reshape(m, -1)
    dec = np.ascontiguousarray(dec, dtype=np.int64).reshape(m, -1)
    width = w1 - 1
    if cat.shape != (n, k) or lit_len.shape != (m, w1) or kind.shape != (m, width) or dec.shape != (m, width):
        raise ValueError("entry / cat, lit_off / lit_len and kind / dec must have matching shapes")
    if width > nums.shape[2]:
        raise ValueError(f"nums holds {nums.shape[2]} numbers per slot, the entries up to {width}")
    if kind.shape[1] == 0:  # no placeholders: one unused column keeps the compiled signatures simple
        kind, dec = np.zeros((m, 1), np.int64), np.zeros((m, 1), np.int64)
    lit_bytes = np.ascontiguousarray(lit_bytes, dtype=np.uint8)
    cat_off = np.ascontiguousarray(cat_off, dtype=np.int64)
    cat_bytes = np.ascontiguousarray(cat_bytes, dtype=np.uint8)
    nothing = np.ascontiguousarray(nothing, dtype=np.uint8)
    if entry.size and entry.max() >= m:
        raise ValueError(f"entry codes must lie below {m}")
    if lit_len.size and ((lit_len < 0) | (lit_off < 0) | (lit_off + lit_len > lit_bytes.size)).any():
        raise ValueError("a literal lies outside lit_bytes")
    if dec.size and (dec.min() < 0 or dec.max() > MAX_DECIMALS):
        raise ValueError(f"decimals must lie in [0, {MAX_DECIMALS}]")
    if cat_off.ndim != 1 or cat_off.size < 1 or cat_off[0] < 0 or (np.diff(cat_off) < 0).any() or \
            cat_off[-1] > cat_bytes.size:  # fmt: skip
        raise ValueError("cat_off must be non-decreasing offsets into cat_bytes")
    if cat.size and cat.max() >= cat_off.size - 1:
        raise ValueError(f"category codes must lie below {cat_off.size - 1}")
    n_chunks, row_cap = max(1, int(n_chunks)), int(row_cap)
    if row_cap < sentence_row_cap(lit_len, kind, dec, cat_off, k, nothing.size) or out.dtype != np.uint8 or \
            out.ndim != 1 or out.size < n * row_cap + 1 or not out.flags.writeable:  # fmt: skip
        raise ValueError("out must be a writeable uint8 array of at least n * row_cap + 1 bytes, row_cap a bound "
                         "of one sentence (see sentence_row_cap)")
    if offsets.shape != (n + 1,) or offsets.dtype not in (np.int32, np.int64) or not offsets.flags.c_contiguous:
        raise ValueError(f"offsets must be a C-contiguous int32 or int64 array of length {n + 1}")
    if offsets.dtype == np.int32 and n * row_cap + 1 >= 2**31:
        raise ValueError("int32 offsets cannot address this many bytes; use int64")
    return (entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out, offsets,
            n_chunks, row_cap)  # fmt: skip
