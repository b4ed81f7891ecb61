"""Plain NumPy reference kernels: slow, obvious, the oracle for the tests.

Every function has the same signature as its Cython (``_cy``) and Numba
(``_nb``) twins.  Distances are computed directly as ``sum((x - c) ** 2)`` in
float64: the differences ``x - c`` are exact (or rounded once), so the
distances are exact to float64 rounding wherever the data sit (offset by
1e12 or scaled by 1e-20 alike).  The fast kernels use the expanded form
``||x'||^2 - 2 x'.c' + ||c'||^2`` in the input precision on rows and
centroids centred on the fly (``_common.centering``), so they agree with
these distances to the input precision of the data's *spread* and may
differ at near-ties only.

Values that cannot be represented: a finite row whose squared distance to
its nearest centroid exceeds the largest value of X's type (float32: 3.4e38)
raises :class:`segone.errors.DataError` (``_common.overflow_error``), in
every backend.
"""

import numpy as np

from segone.kernels._common import (
    overflow_error, prepare_profile_inputs, prepare_sentence_inputs, prepare_slots_inputs, prepare_sweep_inputs,
    quantile_rank,
)

_BLOCK = 512


def _block_distances(X, centroids, start, stop):
    xb = X[start:stop].astype(np.float64)
    diff = xb[:, None, :] - centroids.astype(np.float64)[None, :, :]
    return np.einsum("nkd,nkd->nk", diff, diff)


def assign(X, centroids, labels, distance, margin=None, n_threads=None):
    """Nearest-centroid assignment.

    Parameters
    ----------
    X : (N, D) float array                       # IN
    centroids : (K, D) array of X's dtype         # IN
    labels : (N,) int32                           # OUT, -1 for invalid rows
    distance : (N,) X.dtype                       # OUT, squared distance, NaN if invalid
    margin : (N,) X.dtype or None                 # OUT, 2nd-best minus best squared distance
    n_threads : ignored

    Returns
    -------
    n_invalid : int
        Rows holding NaN or infinity (left unassigned: label -1).

    Raises
    ------
    DataError
        Finite rows whose squared distance exceeds the largest value of X's type.
    """
    n, k = X.shape[0], centroids.shape[0]
    n_invalid = 0
    too_far = []
    fmax = np.finfo(X.dtype).max
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        valid = np.isfinite(X[start:stop]).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            d = _block_distances(X, centroids, start, stop)
        best = np.argmin(d, axis=1)  # first minimum: ties go to the lowest index
        rows = np.arange(stop - start)
        bestd = d[rows, best]
        labels[start:stop] = np.where(valid, best, -1)
        with np.errstate(over="ignore"):  # beyond X's type: raised below
            distance[start:stop] = np.where(valid, bestd, np.nan)
        if margin is not None:
            if k == 1:
                m = np.full(stop - start, np.inf)
            else:
                d2 = d.copy()
                d2[rows, best] = np.inf
                with np.errstate(invalid="ignore"):
                    m = d2.min(axis=1) - bestd
            with np.errstate(over="ignore"):
                margin[start:stop] = np.where(valid, m, np.nan)
        n_invalid += int((~valid).sum())
        # finite rows whose distance does not fit X's type (raised below, after every block)
        too_far.append(start + np.flatnonzero(valid & ~(bestd <= fmax)))
    if n and sum(map(len, too_far)):
        rows = np.concatenate(too_far)
        raise overflow_error(X, len(rows), rows)
    return n_invalid


def partial_sums(X, sample_weight, centroids, labels, sums, counts, n_threads=None):
    """One Lloyd pass: assign every row and accumulate per-centroid sums.

    Parameters
    ----------
    X : (N, D) float array                         # IN
    sample_weight : (N,) float64 or None           # IN (None: all ones)
    centroids : (K, D) array of X's dtype          # IN
    labels : (N,) int32                            # OUT, -1 for invalid rows
    sums : (K, D) float64                          # OUT, weighted sum of member rows
    counts : (K,) float64                          # OUT, weighted member count
    n_threads : ignored

    Returns
    -------
    (inertia, n_invalid) : (float, int)
        Weighted sum of squared distances to the nearest centroid (float64)
        and the number of rows holding NaN or infinity (skipped).
    """
    n, d = X.shape
    dist = np.empty(n, dtype=X.dtype)
    n_invalid = assign(X, centroids, labels, dist, None)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    ok = labels >= 0
    sums[...] = 0.0
    counts[...] = 0.0
    lab = labels[ok]
    wv = w[ok]
    np.add.at(counts, lab, wv)
    np.add.at(sums, lab, X[ok].astype(np.float64) * wv[:, None])
    inertia = float(np.sum(dist[ok].astype(np.float64) * wv))
    return inertia, n_invalid


def _minibatch_state_update(state, s_bi, shift, k, bs):
    """The early-stopping / reassignment bookkeeping shared by every backend (see _common.MB_*)."""
    from segone.kernels import _common as c

    state[c.MB_STEP] += 1
    ewa = state[c.MB_EWA]
    state[c.MB_EWA] = s_bi if np.isnan(ewa) else ewa * (1.0 - state[c.MB_ALPHA]) + s_bi * state[c.MB_ALPHA]
    if state[c.MB_TOL] > 0 and shift <= state[c.MB_TOL]:
        return c.MB_CONVERGED
    if state[c.MB_MAX_NO_IMPROVE] >= 0:
        if state[c.MB_EWA] < state[c.MB_BEST_EWA]:
            state[c.MB_BEST_EWA] = state[c.MB_EWA]
            state[c.MB_NO_IMPROVE] = 0
        else:
            state[c.MB_NO_IMPROVE] += 1
            if state[c.MB_NO_IMPROVE] >= state[c.MB_MAX_NO_IMPROVE]:
                return c.MB_NO_IMPROVEMENT
    return None


def minibatch(X, sample_weight, idx, centers, totals, state, batch_inertia, n_threads=None, centering=None):
    """Mini-batch k-means steps (the NumPy oracle of the compiled twins).

    Parameters
    ----------
    X : (N, D) float array                       # IN
    sample_weight : (N,) float64 or None         # IN
    idx : (S, B) int64                           # IN, rows of each of S batches
    centers : (K, D) float64                     # IN/OUT
    totals : (K,) float64                        # IN/OUT, weighted count seen per centroid
    state : (MB_STATE_SIZE,) float64             # IN/OUT, see segone.kernels._common
    batch_inertia : (S,) float64                 # OUT, mean squared distance of each batch
    centering : ignored (the compiled kernels' fixed ``_common.Centering``; distances here are direct)

    Returns
    -------
    (steps_done, status) : (int, int)
        status is one of _common.MB_DONE, MB_NO_IMPROVEMENT, MB_CONVERGED,
        MB_REASSIGN (low-count centroids found after the last step done) or
        MB_INVALID (a batch holds NaN/inf; that step is not applied).

    Raises
    ------
    DataError
        A batch row's squared distance exceeds the largest value of X's type.
    """
    from segone.kernels import _common as c

    k, d = centers.shape
    bs = idx.shape[1]
    for s in range(idx.shape[0]):
        xb = X[idx[s]].astype(np.float64)
        if not np.isfinite(xb).all():
            return s, c.MB_INVALID
        dd = np.einsum("bkd,bkd->bk", xb[:, None, :] - centers[None], xb[:, None, :] - centers[None])
        lab = dd.argmin(axis=1)
        dist = dd[np.arange(bs), lab]
        if not (dist <= np.finfo(X.dtype).max).all():
            bad = np.unique(idx[s][~(dist <= np.finfo(X.dtype).max)])
            raise overflow_error(X, len(bad), bad)
        w = np.ones(bs) if sample_weight is None else sample_weight[idx[s]]
        counts = np.bincount(lab, weights=w, minlength=k)
        sums = np.zeros((k, d))
        np.add.at(sums, lab, xb * w[:, None])
        upd = counts > 0
        new = centers.copy()
        new[upd] = (centers[upd] * totals[upd, None] + sums[upd]) / (totals[upd] + counts[upd])[:, None]
        shift = float(((new - centers) ** 2).sum())
        centers[...] = new
        totals[upd] += counts[upd]
        batch_inertia[s] = float((dist * w).sum()) / bs
        status = _minibatch_state_update(state, batch_inertia[s], shift, k, bs)
        if status is not None:
            return s + 1, status
        state[c.MB_SINCE] += bs
        if state[c.MB_SINCE] >= state[c.MB_EVERY] and state[c.MB_STEP] > 1 and state[c.MB_RATIO] > 0 and k > 1:
            state[c.MB_SINCE] = 0
            if (totals < state[c.MB_RATIO] * totals.max()).any():
                return s + 1, c.MB_REASSIGN
    return idx.shape[0], c.MB_DONE


def count_distinct_per_group(codes, values, n_groups, n_threads=None):
    """Number of distinct ``values`` among the rows of each group.

    Parameters
    ----------
    codes : (N,) int64 in [0, n_groups)        # IN, group of every row
    values : (N,) int64                        # IN
    n_groups : int

    Returns
    -------
    (n_groups,) int64
    """
    codes = np.asarray(codes, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64)
    out = np.zeros(n_groups, dtype=np.int64)
    if codes.size == 0:
        return out
    pairs = np.unique(np.stack([codes, values]), axis=1)
    np.add.at(out, pairs[0], 1)
    return out


# -------------------------------------------------------------------- profiles
def _wsum(codes, weights, n):
    """Weighted bincount, float64 even when empty; sums in row order."""
    return np.bincount(codes, weights=weights, minlength=n).astype(np.float64, copy=False)


def profile_pass(codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start, day_us, n_threads=None):
    """Per-customer aggregates of transaction rows (the profile kernel).

    Parameters
    ----------
    codes : (N,) int64 in [0, n_groups)      # IN, customer of every row
    ts : (N,) int64                          # IN, timestamps (any unit; ``day_us`` units per day)
    amount : (N,) float64                    # IN, finite
    cat : (N,) int32 or (0,)                 # IN, category code, -1 = null; (0,) = no category column
    channel : (N,) int32 or (0,)             # IN, channel code, -1 = null; (0,) = no channel column
    window_start : (W,) int64                # IN, a row counts in window w when ts > window_start[w]
    day_us : int                             # ts units per day (days are floor(ts / day_us))

    Returns
    -------
    dict of arrays, the names of ``_common.PROFILE_FIELDS`` (n = n_groups):
    orders, purchase_days, n_categories (n,) int64; first, last (n,) int64
    (int64 max / min for a group without rows); spend, gross (positive
    spend), first_day_spend (spend on the first purchase day), null_cat_spend
    (positive spend with a null category) (n,) float64; spend_max (n,)
    float64 (-inf without rows); window_orders (n, W) int64; window_spend
    (n, W) float64; cat_spend (n, n_cat) float64 positive spend per category;
    channel_orders (n, n_channel) int64.  Sums run over a group's rows in
    row order, so every backend gives the same bits.
    """
    codes, ts, amount, cat, channel, window_start, n_cat, n_channel = prepare_profile_inputs(
        codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start
    )
    n = int(n_groups)
    if codes.size and (codes.min() < 0 or codes.max() >= n):
        raise ValueError(f"codes must lie in [0, {n})")
    out = {}
    out["orders"] = np.bincount(codes, minlength=n).astype(np.int64)
    first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, ts)
    last = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, codes, ts)
    out["first"], out["last"] = first, last
    out["spend"] = _wsum(codes, amount, n)
    smax = np.full(n, -np.inf)
    np.maximum.at(smax, codes, amount)
    out["spend_max"] = smax
    pos = np.maximum(amount, 0.0)
    out["gross"] = _wsum(codes, pos, n)
    day = np.floor_divide(ts, day_us)
    has = out["orders"] > 0
    first_day = np.where(has, np.floor_divide(first, day_us), 0)
    on_first = day == first_day[codes]
    out["first_day_spend"] = _wsum(codes[on_first], amount[on_first], n)
    out["purchase_days"] = count_distinct_per_group(codes, day, n)
    ws = np.asarray(window_start, dtype=np.int64)
    out["window_orders"] = np.zeros((n, ws.size), dtype=np.int64)
    out["window_spend"] = np.zeros((n, ws.size))
    for w, start in enumerate(ws):
        m = ts > start
        out["window_orders"][:, w] = np.bincount(codes[m], minlength=n)
        out["window_spend"][:, w] = _wsum(codes[m], amount[m], n)
    if cat.size:
        valid = cat >= 0
        key = codes[valid] * n_cat + cat[valid]
        out["cat_spend"] = _wsum(key, pos[valid], n * n_cat).reshape(n, n_cat)
        out["n_categories"] = (np.bincount(key, minlength=n * n_cat).reshape(n, n_cat) > 0).sum(1).astype(np.int64)
        out["null_cat_spend"] = _wsum(codes[~valid], pos[~valid], n)
    else:
        out["cat_spend"] = np.zeros((n, n_cat))
        out["n_categories"] = np.zeros(n, dtype=np.int64)
        out["null_cat_spend"] = out["gross"].copy()
    if channel.size:
        valid = channel >= 0
        key = codes[valid] * n_channel + channel[valid]
        out["channel_orders"] = np.bincount(key, minlength=n * n_channel).reshape(n, n_channel).astype(np.int64)
    else:
        out["channel_orders"] = np.zeros((n, n_channel), dtype=np.int64)
    return out


def event_pass(codes, n_groups, ts, etype, n_types, n_threads=None):
    """Per-customer counts and latest timestamp of each event type.

    Parameters
    ----------
    codes : (N,) int64 in [0, n_groups)      # IN
    ts : (N,) int64                          # IN
    etype : (N,) int32, -1 = null (ignored)  # IN

    Returns
    -------
    counts : (n_groups, n_types) int64
    last : (n_groups, n_types) int64, int64 min where the count is 0
    """
    codes = np.asarray(codes, dtype=np.int64)
    n = int(n_groups)
    if codes.size and (codes.min() < 0 or codes.max() >= n):
        raise ValueError(f"codes must lie in [0, {n})")
    etype = np.asarray(etype, dtype=np.int32)
    valid = etype >= 0
    key = codes[valid] * n_types + etype[valid]
    counts = np.bincount(key, minlength=n * n_types).reshape(n, n_types).astype(np.int64)
    last = np.full(n * n_types, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, key, np.asarray(ts, dtype=np.int64)[valid])
    return counts, last.reshape(n, n_types)


def session_count(codes, n_groups, ts, gap, n_threads=None):
    """Sessions per group: runs of a group's timestamps, in time order, with no step longer than ``gap``.

    Parameters
    ----------
    codes : (N,) int64 in [0, n_groups)      # IN, group of every row
    ts : (N,) int64                          # IN, any order
    gap : int >= 0                           # a step strictly longer than ``gap`` starts a new session

    Returns
    -------
    (n_groups,) int64: 0 for a group without rows.  Steps are exact at any
    offset (unsigned differences of sorted values: no int64 overflow).
    """
    codes = np.asarray(codes, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.int64)
    n = int(n_groups)
    if codes.size and (codes.min() < 0 or codes.max() >= n):
        raise ValueError(f"codes must lie in [0, {n})")
    order = np.lexsort((ts, codes))
    c, t = codes[order], ts[order].view(np.uint64)
    new = np.ones(c.size, dtype=bool)
    new[1:] = (c[1:] != c[:-1]) | ((t[1:] - t[:-1]) > np.uint64(gap))
    return np.bincount(c[new], minlength=n).astype(np.int64)


# --------------------------------------------------------------------- scoring
SQRT12 = np.sqrt(12.0)


def bucket_coords(v, log_gamma, min_value, min_key):
    """Quantile-sketch bucket coordinate of each value (see ``segone.sketch.QuantileSketch.coords``)."""
    mag = np.abs(v)
    out = np.zeros(v.shape)
    big = mag >= min_value
    out[big] = np.sign(v[big]) * (np.ceil(np.log(mag[big]) / log_gamma) - min_key + 1)
    return out


def score_columns(cols, masks, log1p, fill, lo, hi, quantile, knots, center, scale, weight, clip, bucket, X,
                  n_threads=None):  # fmt: skip
    """Fused feature transform: Arrow-backed columns -> row-major float32 X.

    Parameters
    ----------
    cols : list of D (N,) float64 arrays     # IN, one per feature (zero-copy from Arrow)
    masks : list of D (N,) uint8 or (0,)     # IN, 1 = null (filled), (0,) = no nulls
    log1p : (D,) int8                        # 1: v <- log1p(max(v, 0))
    fill : (D,) float64                      # value of a null, after the log1p step
    lo, hi : (D,) float64                    # winsorising bounds (+-inf for none)
    quantile : (D,) int8, knots : (D, M)     # 1: v <- (rank(coord(v), knots[j]) - 0.5) * sqrt(12)
    center, scale, weight : (D,) float64     # v <- clip((v - center) / scale) * weight
    clip : float                             # +-clip after scaling (inf for none)
    bucket : (log_gamma, min_value, min_key) # the quantile sketch's buckets: values are ranked by
                                             # bucket coordinate, so equal-bucket values tie exactly
    X : (N, D) float32                       # OUT

    Returns
    -------
    int : the first row holding a NaN / infinite (non-null) value, or -1.
    """
    n, d = X.shape
    bad = n
    for j in range(d):
        v = np.array(cols[j], dtype=np.float64)
        nulls = masks[j].astype(bool) if masks[j].size else np.zeros(n, dtype=bool)
        nonfinite = ~np.isfinite(v) & ~nulls
        if nonfinite.any():
            bad = min(bad, int(np.flatnonzero(nonfinite)[0]))
            v[nonfinite] = 0.0
        if log1p[j]:
            v = np.log1p(np.maximum(v, 0.0))
        v[nulls] = fill[j]
        v = np.minimum(np.maximum(v, lo[j]), hi[j])
        if quantile[j]:
            v = (quantile_rank(bucket_coords(v, *bucket), knots[j]) - 0.5) * SQRT12
        v = (v - center[j]) / scale[j]
        v = np.minimum(np.maximum(v, -clip), clip)
        X[:, j] = v * weight[j]
    return -1 if bad == n else bad


# --------------------------------------------------------------------- personas
def top_traits(S, group, n_groups, min_strength, k, idx, val, n_threads=None):
    """The ``k`` strongest traits of every row, at most one per feature group.

    Parameters
    ----------
    S : (N, D) float32                       # IN  signed strengths; NaN = no trait
    group : (D,) int32                       # IN  group of each column, in [0, n_groups)
    n_groups : int
    min_strength : float                     # |S| below this is no trait
    k : int                                  # traits per row
    idx : (N, k) int32                       # OUT column indices, strongest first, -1 past the last trait
    val : (N, k) float32                     # OUT their strengths (NaN past the last trait)

    Per row, each group is represented by its member with the largest |S|
    (ties: the lower column); groups are ranked by that |S| (ties: the lower
    group).  NaN entries and entries weaker than ``min_strength`` are never
    picked.
    """
    n, d = S.shape
    idx[:] = -1
    val[:] = np.nan
    if n == 0 or k == 0 or d == 0:
        return
    a = np.abs(S).astype(np.float32)  # compared in float32, as the compiled kernels do
    a[np.isnan(a) | (a < np.float32(min_strength))] = -1.0
    for i in range(n):
        best = np.full(n_groups, -1.0)
        col = np.full(n_groups, -1)
        for j in range(d):
            g = group[j]
            if a[i, j] >= 0 and a[i, j] > best[g]:
                best[g], col[g] = a[i, j], j
        order = np.argsort(-best, kind="stable")
        m = 0
        for g in order:
            if m == k or best[g] < 0:
                break
            idx[i, m] = col[g]
            val[i, m] = S[i, col[g]]
            m += 1


def persona_strengths(cols, lut, lut_off, lut_low, lut_len, bucket, S, n_threads=None):
    """Signed trait strengths of the numeric profile columns, by table lookup.

    Parameters
    ----------
    cols : list of D (N,) float64 arrays     # IN  NaN / infinity = no value
    lut : (L,) float32                       # IN  strength of every bucket coordinate, all features end to end
    lut_off, lut_low, lut_len : (D,)         # IN  feature j's table: lut[lut_off[j] : lut_off[j] + lut_len[j]]
                                             #     holds the coordinates lut_low[j], lut_low[j] + 1, ...
    bucket : (log_gamma, min_value, min_key) # the quantile sketch's buckets (see ``bucket_coords``)
    S : (N, D2) float32, D2 >= D             # OUT columns 0..D-1 (the others are left alone)

    A value's strength is its bucket coordinate's table entry; coordinates
    below or above the table take its first or last entry.  A non-finite
    value, or a feature with an empty table, gives NaN (no trait).
    """
    n = S.shape[0]
    for j in range(len(cols)):
        v = np.asarray(cols[j], dtype=np.float64)
        out = np.full(n, np.nan, dtype=np.float32)
        if lut_len[j] > 0:
            fin = np.isfinite(v)
            c = bucket_coords(np.where(fin, v, 0.0), *bucket)
            ci = np.clip(c - lut_low[j], 0, lut_len[j] - 1).astype(np.int64)
            out[fin] = lut[lut_off[j] + ci[fin]]
        S[:, j] = out


# ---------------------------------------------------------------- quantile sketch
def sketch_summary(v, log_gamma, min_key, min_value, pos, neg, n_threads=None):
    """One pass over a column: its moments, maximum and quantile-sketch histogram (``segone.sketch.summarise``).

    Parameters
    ----------
    v : (N,) float64                        # IN  NaN / infinity are skipped
    log_gamma : float                       # the sketch's log(gamma): value x > 0 falls in key ceil(log(x) / log_gamma)
    min_key : int                           # the key stored at index 0 of ``pos`` / ``neg``
    min_value : float                       # magnitudes below it count in the zero bucket
    pos, neg : (W,) int64, zeroed           # OUT counts of the positive / negative values per key - min_key
                                            #     (keys outside [0, W) are clamped to the ends)

    Returns
    -------
    (count, s1, s2, x0, max, zero, plo, phi, nlo, nhi): the finite values'
    count, sum and sum of squares of ``x - x0`` with ``x0`` the first finite
    value (a sequential sum, so all backends give the same bits), their
    maximum (-inf if none), the zero bucket's count and the lowest / highest
    index written in ``pos`` and ``neg`` (``plo = W, phi = -1`` if none).
    The log is the C library's (``math.log``), as in the compiled twins.
    The pass is sequential (callers run columns on their own threads).
    """
    import math

    cnt, x0, s1, s2, mx, zero = 0, 0.0, 0.0, 0.0, -math.inf, 0
    plo, phi, nlo, nhi = pos.size, -1, neg.size, -1
    for x in np.asarray(v, dtype=np.float64).tolist():
        if not math.isfinite(x):
            continue
        if cnt == 0:
            x0 = x
        cnt += 1
        dx = x - x0
        s1 += dx
        s2 += dx * dx
        if x > mx:
            mx = x
        a = abs(x)
        if a < min_value:
            zero += 1
            continue
        k = min(max(math.ceil(math.log(a) / log_gamma) - min_key, 0), pos.size - 1)
        if x > 0:
            pos[k] += 1
            plo, phi = min(plo, k), max(phi, k)
        else:
            neg[k] += 1
            nlo, nhi = min(nlo, k), max(nhi, k)
    return cnt, s1, s2, x0, mx, zero, plo, phi, nlo, nhi


def sketch_keys(mag, log_gamma, out, n_threads=None):
    """Bucket key ``ceil(log(m) / log_gamma)`` of every magnitude (``segone.sketch.QuantileSketch.coords``).

    Parameters
    ----------
    mag : (N,) float64, finite and > 0      # IN
    log_gamma : float
    out : (N,) int64                        # OUT
    """
    import math

    for i, m in enumerate(np.asarray(mag, dtype=np.float64).tolist()):
        out[i] = math.ceil(math.log(m) / log_gamma)


# ---------------------------------------------------------------------- tracking
def radix_argsort(keys, ia, ib, n_threads=None):
    """The int64 keys in increasing order and the stable order that sorts them.

    Parameters
    ----------
    keys : (N,) int64                       # IN  any int64, negative included
    ia, ib : (N,) int32 or int64            # OUT / scratch: the order is written into one of them

    Returns
    -------
    (sorted keys (N,) int64, order): ``order`` is ``ia`` or ``ib`` holding
    ``np.argsort(keys, kind="stable")`` (ties keep their input order); the
    compiled twins are an O(n) LSD radix sort on 11-bit digits.
    """
    order = np.argsort(np.asarray(keys, dtype=np.int64), kind="stable")
    ia[:] = order
    return np.asarray(keys, dtype=np.int64)[order], ia


def merge_moves(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts, csum, n_threads=None):
    """The moves of two runs joined by integer id, with their migration counts, in one pass.

    Parameters
    ----------
    P, N : (nP,), (nN,) int64               # IN  the previous / new run's ids, strictly increasing
    op, on : (nP,), (nN,) int32 or int64    # IN  the row of each sorted id in ps / sp and ns / sn
                                            #     (an empty array: the same row)
    ps, ns : int64                          # IN  the segment of each row
    sp, sn : float64 (or empty: none)       # IN  the spend of each row
    lp, ln : int64                          # IN  the counts' row of a previous segment / column of a new one
    ids : (nP + nN,) int64                  # OUT the union of the ids, increasing
    prev, new : (nP + nN,) int32            # OUT the previous / new segment (-1: absent)
    status : (nP + nN,) int8                # OUT 0 stayed, 1 moved, 2 new, 3 gone
    spend : (nP + nN,) float64 or (0,)      # OUT the new run's spend (the previous run's for the gone)
    counts : (kp + 1, kn + 1) int64         # OUT (zeroed) customers per (previous, new) cell; the last row /
                                            #     column: absent from that run
    csum : (kp + 1, kn + 1) float64         # OUT (zeroed) the spend per cell (NaN spend is left out), summed in
                                            #     id order

    Returns
    -------
    The number of union ids written, or -1 (-2) when P (N) is not strictly
    increasing (a duplicated id).
    """
    nP, nN = P.shape[0], N.shape[0]
    if (P[1:] <= P[:-1]).any():  # (np.diff would overflow at the int64 extremes)
        return -1
    if (N[1:] <= N[:-1]).any():
        return -2
    rp = op if (op.shape[0] == nP and nP > 0) else np.arange(nP)
    rn = on if (on.shape[0] == nN and nN > 0) else np.arange(nN)
    U = np.union1d(P, N).astype(np.int64)
    u = U.size
    ip = np.minimum(np.searchsorted(P, U), max(nP - 1, 0))
    jn = np.minimum(np.searchsorted(N, U), max(nN - 1, 0))
    in_p = (P[ip] == U) if nP else np.zeros(u, bool)
    in_n = (N[jn] == U) if nN else np.zeros(u, bool)
    a = np.where(in_p, ps[rp[ip]] if nP else -1, -1)
    b = np.where(in_n, ns[rn[jn]] if nN else -1, -1)
    ids[:u] = U
    prev[:u] = a
    new[:u] = b
    status[:u] = np.where(in_p & in_n, np.where(a == b, 0, 1), np.where(in_p, 3, 2))
    r = np.where(in_p, lp[np.maximum(a, 0)], counts.shape[0] - 1)
    c = np.where(in_n, ln[np.maximum(b, 0)], counts.shape[1] - 1)
    np.add.at(counts, (r, c), 1)
    if spend.shape[0] > 0:
        v_n = sn[rn[jn]] if (sn.shape[0] == nN and nN > 0) else np.full(u, np.nan)
        v_p = sp[rp[ip]] if (sp.shape[0] == nP and nP > 0) else np.full(u, np.nan)
        v = np.where(in_n, v_n, v_p)
        spend[:u] = v
        ok = ~np.isnan(v)
        with np.errstate(over="ignore"):  # a sum beyond float64 is inf, as in the compiled loop
            np.add.at(csum, (r[ok], c[ok]), v[ok])  # in id order, as the compiled loop
    return u


# --------------------------------------------------------------- bootstrap (campaign effects)
#: Poisson(1) cumulative probabilities P(W <= k), k = 0..24: the inverse CDF of the bootstrap weights
POISSON1_CDF = np.cumsum([np.exp(-1.0) / float(np.prod(np.arange(1, k + 1, dtype=np.float64))) for k in range(25)])
_GOLDEN = 0x9E3779B97F4A7C15
_STEP = 0xD1B54A32D192ED03


def replicate_key(seed, replicate):
    """The 64-bit key of one bootstrap replicate: ``seed * golden + (replicate + 1) * step`` modulo 2**64."""
    return np.uint64((int(seed) * _GOLDEN + (int(replicate) + 1) * _STEP) & 0xFFFFFFFFFFFFFFFF)


def mix64(x):
    """splitmix64's finaliser on uint64 values."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def poisson1_weights(hashes, seed, replicate):
    """Poisson(1) weights of the rows (by their 64-bit id hash) in one replicate: the inverse CDF of a uniform
    taken from the top 53 bits of ``mix64(hash ^ key)``."""
    u = (mix64(np.asarray(hashes, dtype=np.uint64) ^ replicate_key(seed, replicate)) >> np.uint64(11)).astype(
        np.float64) * (1.0 / 9007199254740992.0)  # fmt: skip
    return np.searchsorted(POISSON1_CDF, u, side="right").astype(np.float64)


def bootstrap_sums(hashes, cell, vcell, vals, seed, n_boot, n_cells, n_vcells, n_threads=None):
    """Poisson-bootstrap replicate sums of the rows, by cell.

    Parameters
    ----------
    hashes : (N,) uint64                 # a stable hash of each row's customer id
    cell : (N,) int64 in [0, n_cells)    # the row's count cell
    vcell : (N,) int64 in [0, n_vcells)  # the row's value cell
    vals : (N, Q) float64                # values summed per value cell (finite)
    seed, n_boot : int

    Returns
    -------
    boot : (n_boot, n_cells) float64         sum of the weights of the rows of each cell
    boot_values : (n_boot, n_vcells, Q)      sum of weight * vals of the rows of each value cell

    Every sum adds its rows in row order, so a compiled twin that loops rows
    in order gives the same bits.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    cell = np.asarray(cell, dtype=np.int64)
    vcell = np.asarray(vcell, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    vals = vals[:, None] if vals.ndim == 1 else vals
    q = vals.shape[1]
    boot = np.zeros((int(n_boot), int(n_cells)))
    boot_values = np.zeros((int(n_boot), int(n_vcells), q))
    for b in range(int(n_boot)):
        w = poisson1_weights(hashes, seed, b)
        boot[b] = np.bincount(cell, weights=w, minlength=int(n_cells))
        for j in range(q):
            boot_values[b, :, j] = np.bincount(vcell, weights=w * vals[:, j], minlength=int(n_vcells))
    return boot, boot_values


# ------------------------------------------------------------------ sweep statistics
def sweep_accumulate(X, labels, shift, means, want_dist, want_sums, counts, sums, sumsq, dist, n_threads=None):
    """Per-segment sums of the rows of one labelling (the sweep's Calinski-Harabasz and Davies-Bouldin).

    Parameters
    ----------
    X : (N, D) float32 or float64            # IN  rows
    labels : (N,) int64 in [0, k)            # IN  the segment of every row
    shift : (D,) float64                     # IN  subtracted from every row first: v = x - shift
    means : (k, D) float64                   # IN  the segment means, shifted (used with ``want_dist``)
    want_dist, want_sums : bool
    counts : (k,) float64                    # OUT (+=) rows per segment (``want_sums``)
    sums : (k, D) float64                    # OUT (+=) sum of v per segment (``want_sums``)
    sumsq : (k,) float64                     # OUT (+=) sum of ||v||^2 per segment
    dist : (k,) float64                      # OUT (+=) sum of ||v - means[label]|| per segment (``want_dist``)

    Returns
    -------
    float
        The sum of ||v - means[label]||^2 over the rows (0.0 without ``want_dist``).

    Every sum adds its terms in row order, and a row's squared norms add
    its features in order, all in float64: a compiled twin that loops rows
    and features in order gives the same bits.
    """
    X, labels, shift, means = prepare_sweep_inputs(X, labels, shift, means, counts, sums, sumsq, dist)
    with np.errstate(over="ignore", invalid="ignore"):  # huge values overflow to inf, as in the compiled loops
        return _sweep_accumulate(X, labels, shift, means, want_dist, want_sums, counts, sums, sumsq, dist)


def _sweep_accumulate(X, labels, shift, means, want_dist, want_sums, counts, sums, sumsq, dist):
    n, d = X.shape
    V = X.astype(np.float64) - shift  # exact conversion, then one rounding per value, as the compiled loops
    s2 = np.zeros(n)
    t2 = np.zeros(n)
    for f in range(d):  # features in order: the same additions as the compiled loops
        s2 += V[:, f] * V[:, f]
        if want_sums:
            np.add.at(sums[:, f], labels, V[:, f])  # rows in order
        if want_dist:
            w = V[:, f] - means[labels, f]
            t2 += w * w
    np.add.at(sumsq, labels, s2)
    if want_sums:
        np.add.at(counts, labels, 1.0)
    if not want_dist or n == 0:
        return 0.0
    np.add.at(dist, labels, np.sqrt(t2))
    return float(np.cumsum(t2)[-1])  # a sequential sum, not numpy's pairwise one


# ------------------------------------------------------------------ persona sentences
def _pct_rank(q):
    """A share of the base as a whole percentage for "top N%": at least 1, never 0 (NaN stays NaN)."""
    return min(max(float(np.ceil(100.0 * q - 1e-9)), 1.0), 100.0)


def persona_slots(feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct,
                  n_threads=None):  # fmt: skip
    """Per trait slot: the phrase entry and the numbers its placeholders show.

    Parameters
    ----------
    feat : (N, k) int64                  # IN  the slot's column (-1: no trait); columns >= len(medians) are
                                         #     categorical (no numbers)
    val : (N, k) float32                 # IN  the slot's signed strength (> 0: high)
    values : (N, k) float64              # IN  the slot's value
    medians : (M,) float64               # IN  each numeric column's median (for {ratio})
    row_medians : (N,) float64 or None   # IN  a median per row instead (the segment contrast)
    kind : (E, W) int64                  # IN  each entry's placeholder kinds: 1 value, 2 ratio, 3 pct, 4 top,
                                         #     5 bottom (others: no number)
    entry_base : int                     # added to every entry code
    swap : (E, 3) int64 or (0, 3)        # IN  the entry to use instead when the value reads 1, reads 0 (at
                                         #     ``vdec`` decimals) and when value / median >= ``far_ratio`` (-1: none)
    far_ratio : (E,) float64, vdec : (E,) int64
    entry : (N, k) int64                 # OUT entry_base + 2 j (low) or 2 j + 1 (high), after the swaps; -1: none
    nums : (N, k, W') float64, W' >= W   # OUT the numbers (0 where the kind shows none)
    pct : (N, k) float64                 # OUT the percentile (strength + 1) / 2; NaN for categorical slots

    ``min`` / ``max`` follow Python's rule (the first argument wins unless
    the second is strictly smaller / larger), so a NaN percentile stays NaN.
    """
    feat, val, values, med, row_med, kind, swap, far_ratio, vdec = prepare_slots_inputs(
        feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct)  # fmt: skip
    n_num = len(medians)
    n, k = feat.shape
    width = nums.shape[2]
    for i in range(n):
        for s in range(k):
            j = int(feat[i, s])
            pct[i, s] = np.nan
            nums[i, s, :] = 0.0
            if j < 0:
                entry[i, s] = -1
                continue
            st = float(val[i, s])
            e = entry_base + 2 * j + (1 if st > 0 else 0)
            if j < n_num and swap.shape[0]:
                v = float(values[i, s])
                m = float(row_med[i] if row_med.shape[0] else med[j])
                if swap[e, 2] >= 0 and m > 0 and v / m >= far_ratio[e]:
                    e = int(swap[e, 2])
                else:
                    scale = 10.0 ** int(vdec[e])
                    r = float(np.rint(v * scale))
                    if swap[e, 0] >= 0 and r == scale:
                        e = int(swap[e, 0])
                    elif swap[e, 1] >= 0 and r == 0.0:
                        e = int(swap[e, 1])
            entry[i, s] = e
            if j >= n_num:
                continue
            v = float(values[i, s])
            p = (st + 1.0) / 2.0
            pct[i, s] = p
            m = float(row_med[i] if row_med.shape[0] else med[j])
            for q in range(width):
                kd = kind[e, q]
                if kd == 1:
                    nums[i, s, q] = v
                elif kd == 2:
                    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                        nums[i, s, q] = np.float64(v) / np.float64(m)
                elif kd == 3:
                    nums[i, s, q] = v * 100.0
                elif kd == 4:
                    nums[i, s, q] = _pct_rank(1.0 - p)
                elif kd == 5:
                    nums[i, s, q] = _pct_rank(p)


def format_number(x, d):
    """The bytes of ``x`` at ``d`` decimals as the compiled writers print it: ``x * 10**d`` rounded half to even,
    then its digits; "?" when not finite or when ``|x| * 10**d`` reaches 9e17."""
    x = float(x)
    if not np.isfinite(x) or abs(x) >= 9e17 / 10.0**d:
        return b"?"
    scaled = float(np.rint(x * 10.0**d))
    sign = b""
    if scaled < 0:
        sign, scaled = b"-", -scaled
    iv = int(scaled)
    whole, frac = divmod(iv, 10**d)
    txt = sign + str(whole).encode()
    return txt + b"." + str(frac).zfill(d).encode() if d > 0 else txt


def persona_sentences(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out,
                      offsets, n_chunks, row_cap, n_threads=None):  # fmt: skip
    """The persona sentences of every row, written as an Arrow string buffer.

    Parameters
    ----------
    entry : (N, k) int64                 # IN  the phrase entry of every slot (-1: no trait)
    nums : (N, k, W) float64             # IN  the numbers of the slot's placeholders
    cat : (N, k) int64                   # IN  the slot's category value code (-1: none)
    lit_off, lit_len : (E, W + 1) int64  # IN  entry e's literals: lit_bytes[lit_off[e, p]:][:lit_len[e, p]]
    lit_bytes : uint8                    # IN  every literal, UTF-8, end to end
    kind, dec : (E, W) int64             # IN  each placeholder's kind (6: the category value, > 0: a number,
                                         #     0: nothing) and decimals (at most ``_common.MAX_DECIMALS``)
    cat_off : (C + 1,) int64, cat_bytes : uint8   # IN  the category values, UTF-8, end to end
    nothing : uint8                      # IN  the sentence of a row without any trait
    out : uint8, >= N * row_cap + 1      # OUT the sentences end to end (the string buffer)
    offsets : (N + 1,) int32 or int64    # OUT the Arrow offsets of every sentence
    n_chunks, row_cap : int              # how the compiled writers share out rows (any value: the same bytes);
                                         # row_cap: at least ``_common.sentence_row_cap``

    Returns
    -------
    int
        The bytes written (``offsets[N]``).

    A sentence is its slots' phrases (literals and placeholders, in order)
    joined by "; ", with an ASCII lower-case first letter upper-cased, or
    ``nothing`` when no slot holds a trait.
    """
    (entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out, offsets, _,
     _) = prepare_sentence_inputs(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes,
                                  nothing, out, offsets, n_chunks, row_cap)  # fmt: skip
    width = lit_off.shape[1] - 1
    lits, cats = lit_bytes.tobytes(), cat_bytes.tobytes()
    pos = 0
    for i in range(entry.shape[0]):
        offsets[i] = pos
        row = b""
        for s in range(entry.shape[1]):
            e = entry[i, s]
            if e < 0:
                continue
            txt = b""
            for p in range(width + 1):
                txt += lits[lit_off[e, p] : lit_off[e, p] + lit_len[e, p]]
                if p == width:
                    break
                if kind[e, p] == 6:
                    c = cat[i, s]
                    txt += cats[cat_off[c] : cat_off[c + 1]] if c >= 0 else b""
                elif kind[e, p] > 0:
                    txt += format_number(nums[i, s, p], int(dec[e, p]))
            row += (b"; " if row else b"") + txt  # a separator once something is written
        if not row:
            row = nothing.tobytes()
        elif 97 <= row[0] <= 122:
            row = bytes([row[0] - 32]) + row[1:]
        out[pos : pos + len(row)] = np.frombuffer(row, np.uint8)
        pos += len(row)
    offsets[entry.shape[0]] = pos
    return pos
