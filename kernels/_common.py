"""Helpers shared by the Cython and Numba backends (plain Python/NumPy)."""

import numpy as np

# Smallest number of rows in one partial-sum chunk, and the cap on the memory
# held by all per-chunk partial sums (in float64 values).  The chunk plan
# depends only on (N, K, D), never on the thread count, so that sums merged in
# chunk order are identical whatever the number of threads.
MIN_CHUNK_ROWS = 16384
MAX_PARTIAL_VALUES = 1 << 23  # 8M doubles = 64 MiB


def prepare_centroids(centroids):
    """Return (ct, cnorm): -2 * centroids.T (D, K) and ||c_k||^2 (K,), C-contiguous."""
    c64 = centroids.astype(np.float64, copy=False)
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


def prepare_blocked(centroids, kc=KC_PAD):
    """Centroids for the register-blocked kernels.

    Returns ``(c2b, cnorm, kp)``: ``c2b`` of shape (kp // kc, D, kc) holding
    -2 * centroids in blocks of ``kc`` (feature-major inside a block),
    ``cnorm`` (kp,) with ||c||^2, padded centroids at +inf so they never win,
    and ``kp`` = K rounded up to a multiple of ``kc``.
    """
    k, d = centroids.shape
    kp = -(-k // kc) * kc
    c64 = centroids.astype(np.float64, copy=False)
    pad = np.zeros((kp, d))
    pad[:k] = -2.0 * c64
    c2b = np.ascontiguousarray(pad.reshape(kp // kc, kc, d).transpose(0, 2, 1), dtype=centroids.dtype)
    cnorm = np.full(kp, np.inf)
    cnorm[:k] = np.einsum("kd,kd->k", c64, c64)
    return c2b, np.ascontiguousarray(cnorm, dtype=centroids.dtype), kp


# Layout of the mini-batch state vector shared by the backends (float64):
MB_EWA, MB_BEST_EWA, MB_NO_IMPROVE, MB_ALPHA, MB_TOL, MB_RATIO, MB_MAX_NO_IMPROVE, MB_SINCE, MB_EVERY, MB_STEP = range(10)
MB_STATE_SIZE = 10
# statuses returned by the mini-batch kernels
MB_DONE, MB_NO_IMPROVEMENT, MB_CONVERGED, MB_REASSIGN, MB_INVALID = range(5)


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
