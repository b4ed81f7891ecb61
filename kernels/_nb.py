"""Numba kernels for segone (see kernels/reference.py for the oracle).

Module-level ``@njit(nogil=True, parallel=True, cache=True)`` functions, one
shared fastmath flag set that keeps NaN/inf semantics (so the finiteness
checks are not optimised away), the same centroid layout as the Cython
backend (``ct = -2 * centroids.T``, inner loop over centroids) and the same
centring on the fly (``_common.centering``: rows are transformed as
``x * xg - xsg`` while they are read, centroids before the pass).
"""

import numba
import numpy as np
from numba import njit, prange

from segone.kernels._common import (
    MB_OVERFLOW, centering, chunk_plan, kernel_transform, merge_partials, overflow_error, owner_ranges,
    partial_buffers, prepare_centroids, prepare_persona_inputs, prepare_profile_inputs, prepare_score_inputs,
    prepare_sentence_inputs, prepare_slots_inputs, prepare_sweep_inputs, profile_outputs,
)

# reassociation and contraction allowed; nnan / ninf NOT set: NaN checks work
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
ASSIGN_BLOCK = 256

_jit = dict(nogil=True, cache=True, fastmath=FASTMATH)


@njit(**_jit)
def _row_finite(X, i):
    s = 0.0  # float64 accumulator
    for j in range(X.shape[1]):
        s += X[i, j] * 0.0
    return s == 0.0


@njit(**_jit)
def _row_sqnorm(X, i):
    s = 0.0
    for j in range(X.shape[1]):
        v = np.float64(X[i, j])
        s += v * v
    return s


ROWS = 4  # rows sharing each centroid load (register blocking as far as Numba allows)


@njit(**_jit)
def _block_scores(X, i0, rr, ct, cnorm, sc):
    """sc[r, k] = ||c_k||^2 - 2 x_{i0+r}.c_k for r < rr (inner loop over centroids vectorises)."""
    n_features, n_clusters = ct.shape
    for r in range(rr):
        for k in range(n_clusters):
            sc[r, k] = cnorm[k]
    for j in range(n_features):
        row = ct[j]
        for r in range(rr):
            xv = X[i0 + r, j]
            s = sc[r]
            for k in range(n_clusters):
                s[k] += xv * row[k]


@njit(**_jit)
def _transform_rows(X, i0, rr, xsg, xg, xt):
    """xt[r] = X[i0 + r] * xg - xsg for r < rr: the rows centred on the fly (see _common.centering)."""
    for r in range(rr):
        for j in range(X.shape[1]):
            xt[r, j] = X[i0 + r, j] * xg - xsg[j]


@njit(**_jit)
def _argmin_first(s):
    """(index of the first minimum, minimum): a vectorisable min, then a scan for its first position."""
    m = s[0]
    for k in range(1, s.shape[0]):
        m = min(m, s[k])
    for k in range(s.shape[0]):
        if s[k] == m:
            return k, m
    return 0, m


@njit(**_jit)
def _second_min(s, skip):
    m2 = np.inf
    for k in range(s.shape[0]):
        v = s[k] if k != skip else np.inf
        m2 = min(m2, v)
    return m2


@njit(**_jit)
def _assign_rows(X, start, stop, ct, cnorm, xsg, xg, oscale, use_tf, dmax, labels, distance, margin, want_margin,
                 sc, xt):  # fmt: skip
    """Serial assignment of rows [start, stop): the row kernel every Numba kernel shares.

    With ``use_tf`` each block of ROWS rows is first centred into the scratch
    ``xt`` (x * xg - xsg) and scored from there.  Writes labels (-1 for NaN /
    inf rows), squared distances and margins (of the centred rows, scaled
    back by ``oscale``); a finite row whose distance is not finite or beyond
    ``dmax`` (the largest value of X's type) gets distance +inf.  Returns
    (invalid count, overflow count)."""
    n_invalid = 0
    n_overflow = 0
    for i0 in range(start, stop, ROWS):
        rr = min(ROWS, stop - i0)
        if use_tf:
            _transform_rows(X, i0, rr, xsg, xg, xt)
            _block_scores(xt, 0, rr, ct, cnorm, sc)
        else:
            _block_scores(X, i0, rr, ct, cnorm, sc)
        for r in range(rr):
            i = i0 + r
            if not _row_finite(X, i):
                labels[i] = -1
                distance[i] = np.nan
                if want_margin:
                    margin[i] = np.nan
                n_invalid += 1
                continue
            s = sc[r]
            best_k, best = _argmin_first(s)
            labels[i] = best_k
            xn = _row_sqnorm(xt, r) if use_tf else _row_sqnorm(X, i)
            d = (np.float64(best) + xn) * oscale
            if not (d <= dmax and d >= -dmax):  # finite row, distance not representable
                distance[i] = np.inf
                if want_margin:
                    margin[i] = np.nan
                n_overflow += 1
                continue
            if want_margin:
                margin[i] = np.float64(_second_min(s, best_k) - best) * oscale
            distance[i] = d if d > 0.0 else 0.0
    return n_invalid, n_overflow


@njit(parallel=True, **_jit)
def _assign_kernel(X, ct, cnorm, xsg, xg, oscale, use_tf, dmax, labels, distance, margin, want_margin):
    n_samples = X.shape[0]
    n_blocks = (n_samples + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK
    invalid = np.zeros(n_blocks, dtype=np.int64)
    overflow = np.zeros(n_blocks, dtype=np.int64)
    for b in prange(n_blocks):
        sc = np.empty((ROWS, ct.shape[1]), dtype=X.dtype)
        xt = np.empty((ROWS, X.shape[1]), dtype=X.dtype)
        start = b * ASSIGN_BLOCK
        stop = min(start + ASSIGN_BLOCK, n_samples)
        invalid[b], overflow[b] = _assign_rows(X, start, stop, ct, cnorm, xsg, xg, oscale, use_tf, dmax, labels,
                                               distance, margin, want_margin, sc, xt)  # fmt: skip
    return invalid.sum(), overflow.sum()


@njit(parallel=True, **_jit)
def _partial_sums_kernel(X, weights, use_weights, ct, cnorm, xsg, xg, oscale, use_tf, dmax, labels, psums, pcounts,
                         pinertia, chunk_rows):  # fmt: skip
    n_samples, n_features = X.shape
    n_chunks = psums.shape[0]
    invalid = np.zeros(n_chunks, dtype=np.int64)
    overflow = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        sc = np.empty((ROWS, ct.shape[1]), dtype=X.dtype)
        xt = np.empty((ROWS, n_features), dtype=X.dtype)
        dist = np.empty(chunk_rows, dtype=np.float64)
        start = c * chunk_rows
        stop = min(start + chunk_rows, n_samples)
        # rows are assigned in place, distances go to a chunk-local buffer
        # (offset by start); then the chunk accumulates its members (the
        # sums are of the original rows, the distances of the centred ones)
        invalid[c], overflow[c] = _assign_rows(X[start:stop], 0, stop - start, ct, cnorm, xsg, xg, oscale, use_tf,
                                               dmax, labels[start:stop], dist, dist, False, sc, xt)  # fmt: skip
        inert = 0.0
        for i in range(start, stop):
            best_k = labels[i]
            if best_k < 0:
                continue
            w = weights[i] if use_weights else 1.0
            inert += w * dist[i - start]
            pcounts[c, best_k] += w
            for j in range(n_features):
                psums[c, best_k, j] += w * np.float64(X[i, j])
        pinertia[c] = inert
    return invalid.sum(), overflow.sum()


@njit(**_jit)
def _minibatch_kernel(X, weights, use_weights, idx, centers, totals, state, batch_inertia, ct, cnorm, xsg, xg,
                      oscale, use_tf, dmax):  # fmt: skip
    n_steps, bs = idx.shape
    k, d = centers.shape
    xb = np.empty((bs, d), dtype=X.dtype)
    sc = np.empty((ROWS, k), dtype=X.dtype)
    xt = np.empty((ROWS, d), dtype=X.dtype)
    lab = np.empty(bs, dtype=np.int32)
    dist = np.empty(bs, dtype=np.float64)
    sums = np.empty((k, d))
    counts = np.empty(k)
    ewa, best_ewa, no_improve = state[0], state[1], state[2]
    alpha, tol, ratio, max_no_improve = state[3], state[4], state[5], state[6]
    since, every, gstep = state[7], state[8], state[9]
    done = 0
    status = 0
    for s in range(n_steps):
        for c in range(k):
            cn = 0.0
            for j in range(d):
                v = centers[c, j]
                if use_tf:  # exactly as _common.prepare_centroids transforms centroids
                    v = v * np.float64(xg) - np.float64(xsg[j])
                cn += v * v
                ct[j, c] = -2.0 * v
            cnorm[c] = cn
        for r in range(bs):
            row = idx[s, r]
            for j in range(d):
                xb[r, j] = X[row, j]
        n_bad, n_over = _assign_rows(xb, 0, bs, ct, cnorm, xsg, xg, oscale, use_tf, dmax, lab, dist, dist, False, sc,
                                     xt)  # fmt: skip
        if n_bad > 0:
            status = 4
            break
        if n_over > 0:
            status = 5
            break
        sums[:, :] = 0.0
        counts[:] = 0.0
        inert = 0.0
        for r in range(bs):
            w = weights[idx[s, r]] if use_weights else 1.0
            l = lab[r]
            counts[l] += w
            inert += w * dist[r]
            for j in range(d):
                sums[l, j] += w * np.float64(xb[r, j])
        shift = 0.0
        for c in range(k):
            if counts[c] > 0:
                ntk = totals[c] + counts[c]
                for j in range(d):
                    v = (centers[c, j] * totals[c] + sums[c, j]) / ntk
                    shift += (v - centers[c, j]) * (v - centers[c, j])
                    centers[c, j] = v
                totals[c] = ntk
        bi = inert / bs
        batch_inertia[s] = bi
        done = s + 1
        gstep += 1
        if np.isnan(ewa):
            ewa = bi
        else:
            ewa = ewa * (1.0 - alpha) + bi * alpha
        if tol > 0 and shift <= tol:
            status = 2
            break
        if max_no_improve >= 0:
            if ewa < best_ewa:
                best_ewa = ewa
                no_improve = 0.0
            else:
                no_improve += 1
                if no_improve >= max_no_improve:
                    status = 1
                    break
        since += bs
        if since >= every and gstep > 1 and ratio > 0 and k > 1:
            since = 0.0
            maxt = totals.max()
            low = False
            for c in range(k):
                if totals[c] < ratio * maxt:
                    low = True
            if low:
                status = 3
                break
    state[0], state[1], state[2], state[7], state[9] = ewa, best_ewa, no_improve, since, gstep
    return done, status


def _transform_for(centroids, dtype, n_features, tf=None):
    """(Centering, kernel arguments, largest value of dtype): see _common.centering."""
    dtype = np.dtype(dtype)
    if tf is None:
        tf = centering(centroids, dtype)
    xsg, xg, oscale, use_tf = kernel_transform(tf, dtype, n_features)
    # xg in the data's type, so that the transformed rows stay in it
    return tf, (xsg, dtype.type(xg), float(oscale), bool(use_tf)), float(np.finfo(dtype).max)


def _overflow_rows(X, centroids, n_threads):
    """Error path: the rows of X whose squared distance exceeds X's float type."""
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=X.dtype)
    tf, targs, dmax = _transform_for(centroids, X.dtype, X.shape[1])
    ct, cnorm = prepare_centroids(centroids, tf)
    prev = _set_threads(n_threads)
    try:
        _assign_kernel(X, ct, cnorm, *targs, dmax, labels, dist, np.empty(0, dtype=X.dtype), False)
    finally:
        numba.set_num_threads(prev)
    return np.flatnonzero(np.isposinf(dist))


def minibatch(X, sample_weight, idx, centers, totals, state, batch_inertia, n_threads=1, centering=None):
    """Mini-batch steps; see ``segone.kernels.reference.minibatch`` (serial: batches are small).

    ``centering``: the ``_common.Centering`` of the fit (take it once from the
    initial centres and pass it to every call); None computes it from
    ``centers`` at this call."""
    k, d = centers.shape
    use_w = sample_weight is not None
    w = sample_weight if use_w else np.empty(0, dtype=np.float64)
    ct = np.empty((d, k), dtype=X.dtype)
    cnorm = np.empty(k, dtype=X.dtype)
    tf, targs, dmax = _transform_for(centers, X.dtype, d, centering)
    done, status = _minibatch_kernel(X, w, use_w, idx, centers, totals, state, batch_inertia, ct, cnorm, *targs, dmax)
    if status == MB_OVERFLOW:
        rows = idx[done]
        bad = np.unique(rows[_overflow_rows(np.ascontiguousarray(X[rows]), np.asarray(centers, dtype=X.dtype),
                                            n_threads)])  # fmt: skip
        raise overflow_error(X, len(bad), bad)
    return int(done), int(status)


def _set_threads(n_threads):
    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n_threads), numba.config.NUMBA_NUM_THREADS)))
    return prev


def assign(X, centroids, labels, distance, margin=None, n_threads=1):
    """Nearest-centroid assignment; see ``segone.kernels.reference.assign``.

    Rows and centroids are centred on the fly (``_common.centering``); finite
    rows whose squared distance exceeds X's float type raise DataError."""
    tf, targs, dmax = _transform_for(centroids, X.dtype, X.shape[1])
    ct, cnorm = prepare_centroids(centroids, tf)
    want = margin is not None
    m = margin if want else np.empty(0, dtype=X.dtype)
    prev = _set_threads(n_threads)
    try:
        n_invalid, n_overflow = _assign_kernel(X, ct, cnorm, *targs, dmax, labels, distance, m, want)
    finally:
        numba.set_num_threads(prev)
    if n_overflow:
        raise overflow_error(X, int(n_overflow), np.flatnonzero(np.isposinf(distance)))
    return int(n_invalid)


def partial_sums(X, sample_weight, centroids, labels, sums, counts, n_threads=1):
    """One Lloyd pass; see ``segone.kernels.reference.partial_sums``."""
    n, d = X.shape
    k = centroids.shape[0]
    tf, targs, dmax = _transform_for(centroids, X.dtype, d)
    ct, cnorm = prepare_centroids(centroids, tf)
    chunk_rows, n_chunks = chunk_plan(n, k, d)
    psums, pcounts, pinertia = partial_buffers(n_chunks, k, d)
    use_w = sample_weight is not None
    w = sample_weight if use_w else np.empty(0, dtype=np.float64)
    prev = _set_threads(n_threads)
    try:
        n_invalid, n_overflow = _partial_sums_kernel(X, w, use_w, ct, cnorm, *targs, dmax, labels, psums, pcounts,
                                                     pinertia, chunk_rows)  # fmt: skip
    finally:
        numba.set_num_threads(prev)
    if n_overflow:
        raise overflow_error(X, int(n_overflow), _overflow_rows(X, centroids, n_threads))
    inertia = merge_partials(psums, pcounts, pinertia, sums, counts)
    return inertia, int(n_invalid)


# ---------------------------------------------------------------------------
# Customer profiles (see the Cython twin): CSR grouping, then every aggregate
# per group.  No fastmath here: the sums must match the reference bit for bit.
_jit_exact = dict(nogil=True, cache=True)


@njit(**_jit_exact)
def _floordiv(a, b):
    q = a // b  # numba follows Python: floor division
    return q


@njit(parallel=True, **_jit_exact)
def _profile_scatter(codes, ts, amount, cat, ch, off, bounds, g_ts, g_amt, g_cat, g_ch):
    has_cat = cat.shape[0] > 0
    has_ch = ch.shape[0] > 0
    pos = off[:-1].copy()
    for t in prange(bounds.shape[0] - 1):
        g0, g1 = bounds[t], bounds[t + 1]
        for i in range(codes.shape[0]):
            c = codes[i]
            if c >= g0 and c < g1:
                p = pos[c]
                g_ts[p] = ts[i]
                g_amt[p] = amount[i]
                g_cat[p] = cat[i] if has_cat else -1
                g_ch[p] = ch[i] if has_ch else -1
                pos[c] = p + 1


@njit(parallel=True, **_jit_exact)
def _profile_groups(off, g_ts, g_amt, g_cat, g_ch, wstart, day_us, o_orders, o_first, o_last, o_spend, o_smax,
                    o_gross, o_fds, o_pdays, o_word, o_wsp, o_cat, o_nullcat, o_ncat, o_ch):  # fmt: skip
    n_groups = o_orders.shape[0]
    n_cat = o_cat.shape[1]
    for g in prange(n_groups):
        a, e = off[g], off[g + 1]
        m = e - a
        if m == 0:
            continue
        first = g_ts[a]
        last = g_ts[a]
        sp = 0.0
        smax = -np.inf
        gross = 0.0
        nullc = 0.0
        seen = np.zeros(n_cat, dtype=np.bool_)
        days = np.empty(m, dtype=np.int64)
        for q in range(a, e):
            t = g_ts[q]
            amt = g_amt[q]
            first = min(first, t)
            last = max(last, t)
            sp += amt
            if amt > smax:
                smax = amt
            pos_amt = amt if amt > 0.0 else 0.0
            gross += pos_amt
            days[q - a] = _floordiv(t, day_us)
            for w in range(wstart.shape[0]):
                if t > wstart[w]:
                    o_word[g, w] += 1
                    o_wsp[g, w] += amt
            c = g_cat[q]
            if c >= 0:
                o_cat[g, c] += pos_amt
                seen[c] = True
            else:
                nullc += pos_amt
            if g_ch[q] >= 0:
                o_ch[g, g_ch[q]] += 1
        fday = _floordiv(first, day_us)
        fds = 0.0
        for q in range(a, e):
            if days[q - a] == fday:
                fds += g_amt[q]
        days.sort()
        nd = 1
        for q in range(1, m):
            if days[q] != days[q - 1]:
                nd += 1
        o_orders[g] = m
        o_first[g] = first
        o_last[g] = last
        o_spend[g] = sp
        o_smax[g] = smax
        o_gross[g] = gross
        o_fds[g] = fds
        o_pdays[g] = nd
        o_nullcat[g] = nullc
        o_ncat[g] = seen.sum()


@njit(**_jit_exact)
def _group_offsets(codes, n_groups):
    off = np.zeros(n_groups + 1, dtype=np.int64)
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < 0 or c >= n_groups:
            return off, i
        off[c + 1] += 1
    for g in range(n_groups):
        off[g + 1] += off[g]
    return off, -1


def _offsets_or_raise(codes, n_groups):
    off, bad = _group_offsets(codes, n_groups)
    if bad >= 0:
        raise ValueError(f"codes[{bad}] = {codes[bad]} is outside [0, {n_groups})")
    return off


def profile_pass(codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start, day_us, n_threads=1):
    """Per-customer aggregates; see ``segone.kernels.reference.profile_pass``."""
    codes, ts, amount, cat, channel, window_start, n_cat, n_channel = prepare_profile_inputs(
        codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start
    )
    n_groups = int(n_groups)
    out = profile_outputs(n_groups, window_start.shape[0], n_cat, n_channel)
    off = _offsets_or_raise(codes, n_groups)
    n = codes.shape[0]
    g_ts, g_amt = np.empty(n, dtype=np.int64), np.empty(n)
    g_cat, g_ch = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
    prev = _set_threads(n_threads)
    try:
        nt = numba.get_num_threads()
        _profile_scatter(codes, ts, amount, cat, channel, off, owner_ranges(n_groups, nt), g_ts, g_amt, g_cat, g_ch)
        _profile_groups(
            off, g_ts, g_amt, g_cat, g_ch, window_start, int(day_us), out["orders"], out["first"], out["last"],
            out["spend"], out["spend_max"], out["gross"], out["first_day_spend"], out["purchase_days"],
            out["window_orders"], out["window_spend"], out["cat_spend"], out["null_cat_spend"],
            out["n_categories"], out["channel_orders"],
        )
    finally:
        numba.set_num_threads(prev)
    return out


@njit(parallel=True, **_jit_exact)
def _event_kernel(codes, ts, etype, counts, last, bounds):
    for t in prange(bounds.shape[0] - 1):
        g0, g1 = bounds[t], bounds[t + 1]
        for i in range(codes.shape[0]):
            c = codes[i]
            e = etype[i]
            if c >= g0 and c < g1 and e >= 0:
                counts[c, e] += 1
                if ts[i] > last[c, e]:
                    last[c, e] = ts[i]


@njit(parallel=True, **_jit_exact)
def _session_scatter(codes, ts, off, bounds, g_ts):
    for t in prange(bounds.shape[0] - 1):
        g0, g1 = bounds[t], bounds[t + 1]
        pos = off[g0:g1].copy()
        for i in range(codes.shape[0]):
            c = codes[i]
            if c >= g0 and c < g1:
                g_ts[pos[c - g0]] = ts[i]
                pos[c - g0] += 1


@njit(parallel=True, **_jit_exact)
def _session_groups(off, g_ts, gap, out):
    for g in prange(off.shape[0] - 1):
        a, e = off[g], off[g + 1]
        if e == a:
            continue
        v = np.sort(g_ts[a:e]).view(np.uint64)
        s = 1
        for q in range(1, e - a):
            if v[q] - v[q - 1] > gap:
                s += 1
        out[g] = s


def session_count(codes, n_groups, ts, gap, n_threads=1):
    """Sessions per group; see ``segone.kernels.reference.session_count``."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    if ts.shape[0] != codes.shape[0]:
        raise ValueError("codes and ts must have the same length")
    n_groups = int(n_groups)
    off = _offsets_or_raise(codes, n_groups)
    out = np.zeros(n_groups, dtype=np.int64)
    g_ts = np.empty(codes.shape[0], dtype=np.int64)
    prev = _set_threads(n_threads)
    try:
        _session_scatter(codes, ts, off, owner_ranges(n_groups, numba.get_num_threads()), g_ts)
        _session_groups(off, g_ts, np.uint64(max(0, int(gap))), out)
    finally:
        numba.set_num_threads(prev)
    return out


def event_pass(codes, n_groups, ts, etype, n_types, n_threads=1):
    """Per-customer event counts and latest times; see ``segone.kernels.reference.event_pass``."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    etype = np.ascontiguousarray(etype, dtype=np.int32)
    if ts.shape[0] != codes.shape[0] or etype.shape[0] != codes.shape[0]:
        raise ValueError("codes, ts and etype must have the same length")
    if etype.size and (etype >= n_types).any():
        raise ValueError(f"event type codes must lie in [-1, {n_types})")
    _offsets_or_raise(codes, int(n_groups))
    counts = np.zeros((int(n_groups), int(n_types)), dtype=np.int64)
    last = np.full((int(n_groups), int(n_types)), np.iinfo(np.int64).min, dtype=np.int64)
    prev = _set_threads(n_threads)
    try:
        _event_kernel(codes, ts, etype, counts, last, owner_ranges(int(n_groups), numba.get_num_threads()))
    finally:
        numba.set_num_threads(prev)
    return counts, last


# ---------------------------------------------------------------------------
# Feature scoring (see the Cython twin): row blocks over threads, every column
# of a block written into row-major X.
SQRT12 = np.sqrt(12.0)


@njit(**_jit_exact)
def _bucket_coord(v, lg, min_value, min_key):
    mag = abs(v)
    if mag < min_value:
        return 0.0
    c = np.ceil(np.log(mag) / lg) - min_key + 1.0
    return c if v > 0 else -c


@njit(parallel=True, **_jit_exact)
def _score_kernel(cols, masks, log1p_flag, fill, lo, hi, quantile, lut, lut_off, lut_low, lut_len, center, scale,
                  weight, clip, lg, min_value, min_key, X, block_bad):  # fmt: skip
    n, d = X.shape
    for b in prange(block_bad.shape[0]):
        r0 = b * ASSIGN_BLOCK
        r1 = min(r0 + ASSIGN_BLOCK, n)
        first_bad = n
        for j in range(d):
            col = cols[j]
            msk = masks[j]
            has_mask = msk.shape[0] > 0
            for i in range(r0, r1):
                if has_mask and msk[i]:
                    v = fill[j]
                else:
                    v = col[i]
                    if not np.isfinite(v):
                        first_bad = min(first_bad, i)
                        v = 0.0
                    if log1p_flag[j]:
                        v = np.log1p(max(v, 0.0))
                v = min(max(v, lo[j]), hi[j])
                if quantile[j]:
                    ci = np.int64(_bucket_coord(v, lg, min_value, min_key) - lut_low[j])
                    if ci < 0:
                        r = 0.0
                    elif ci >= lut_len[j]:
                        r = 1.0
                    else:
                        r = lut[lut_off[j] + ci]
                    v = (r - 0.5) * SQRT12
                v = (v - center[j]) / scale[j]
                v = min(max(v, -clip), clip)
                X[i, j] = v * weight[j]
        block_bad[b] = first_bad


def score_columns(cols, masks, log1p, fill, lo, hi, quantile, knots, center, scale, weight, clip, bucket, X,
                  n_threads=1):
    """Fused feature transform; see ``segone.kernels.reference.score_columns``."""
    cols, masks, params = prepare_score_inputs(cols, masks, X, log1p, fill, lo, hi, quantile, knots, center, scale,
                                               weight)  # fmt: skip
    n = X.shape[0]
    block_bad = np.empty(-(-n // ASSIGN_BLOCK), dtype=np.int64)
    tcols, tmasks = numba.typed.List(cols), numba.typed.List(masks)
    prev = _set_threads(n_threads)
    try:
        lg, mv, mk = (float(b) for b in bucket)
        _score_kernel(tcols, tmasks, *params, float(clip), lg, mv, mk, X, block_bad)
    finally:
        numba.set_num_threads(prev)
    bad = int(block_bad.min()) if block_bad.size else n
    return -1 if bad >= n else bad


# ---------------------------------------------------------------------------
# Personas (see the Cython twin): each group's strongest member, then insertion into k slots
@njit(parallel=True, **_jit_exact)
def _top_traits_kernel(S, group, n_groups, min_strength, idx, val):
    n, d = S.shape
    k = idx.shape[1]
    n_blocks = (n + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK
    for b in prange(n_blocks):
        best = np.empty(max(n_groups, 1), dtype=np.float32)  # scratch per block, not per row
        col = np.empty(max(n_groups, 1), dtype=np.int64)
        for i in range(b * ASSIGN_BLOCK, min((b + 1) * ASSIGN_BLOCK, n)):
            best[:] = -1.0
            col[:] = -1
            for j in range(d):
                v = S[i, j]
                if v != v:
                    continue
                a = abs(v)
                if a >= min_strength and a > best[group[j]]:
                    best[group[j]] = a
                    col[group[j]] = j
            m = 0
            for g in range(n_groups):
                if col[g] < 0:
                    continue
                a = best[g]
                if m == k and not (a > abs(val[i, k - 1])):
                    continue
                p = m if m < k else k - 1
                while p > 0 and a > abs(val[i, p - 1]):
                    if p < k:
                        idx[i, p] = idx[i, p - 1]
                        val[i, p] = val[i, p - 1]
                    p -= 1
                idx[i, p] = col[g]
                val[i, p] = S[i, col[g]]
                if m < k:
                    m += 1
            for p in range(m, k):
                idx[i, p] = -1
                val[i, p] = np.nan


def top_traits(S, group, n_groups, min_strength, k, idx, val, n_threads=1):
    """The k strongest traits per row, one per group; see ``segone.kernels.reference.top_traits``."""
    if idx.shape[1] == 0 or S.shape[0] == 0:
        return
    prev = _set_threads(n_threads)
    try:
        _top_traits_kernel(S, np.ascontiguousarray(group, dtype=np.int32), int(n_groups), np.float32(min_strength),
                           idx, val)
    finally:
        numba.set_num_threads(prev)


@njit(parallel=True, **_jit_exact)
def _persona_kernel(cols, lut, lut_off, lut_low, lut_len, lg, min_value, min_key, S, n_blocks):
    n = S.shape[0]
    d = len(cols)
    for b in prange(n_blocks):
        r0 = b * ASSIGN_BLOCK
        r1 = min(r0 + ASSIGN_BLOCK, n)
        for j in range(d):
            col = cols[j]
            ln = lut_len[j]
            off = lut_off[j]
            low = lut_low[j]
            for i in range(r0, r1):
                v = col[i]
                if ln == 0 or not np.isfinite(v):
                    S[i, j] = np.nan
                    continue
                ci = np.int64(_bucket_coord(v, lg, min_value, min_key) - low)
                if ci < 0:
                    ci = 0
                elif ci >= ln:
                    ci = ln - 1
                S[i, j] = lut[off + ci]


def persona_strengths(cols, lut, lut_off, lut_low, lut_len, bucket, S, n_threads=1):
    """Trait strengths by table lookup; see ``segone.kernels.reference.persona_strengths``."""
    cols, tables = prepare_persona_inputs(cols, lut, lut_off, lut_low, lut_len, S)
    if not cols or S.shape[0] == 0:
        return
    prev = _set_threads(n_threads)
    try:
        lg, mv, mk = (float(b) for b in bucket)
        _persona_kernel(numba.typed.List(cols), *tables, lg, mv, mk, S, -(-S.shape[0] // ASSIGN_BLOCK))
    finally:
        numba.set_num_threads(prev)


# ---------------------------------------------------------------------------
# Quantile sketch (see the Cython twin): one sequential pass per column, the
# GIL released; callers run columns on their own threads.  No fastmath: the
# moments are a sequential sum and the keys use the C library's log.
@njit(**_jit_exact)
def _sketch_summary_kernel(v, lg, min_key, min_value, pos, neg):
    cnt = 0
    x0 = 0.0
    s1 = 0.0
    s2 = 0.0
    mx = -np.inf
    zero = 0
    plo, phi, nlo, nhi = pos.size, -1, neg.size, -1
    for i in range(v.size):
        x = v[i]
        if not np.isfinite(x):
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
        k = np.int64(np.ceil(np.log(a) / lg)) - min_key
        k = min(max(k, 0), pos.size - 1)
        if x > 0:
            pos[k] += 1
            plo = min(plo, k)
            phi = max(phi, k)
        else:
            neg[k] += 1
            nlo = min(nlo, k)
            nhi = max(nhi, k)
    return cnt, s1, s2, x0, mx, zero, plo, phi, nlo, nhi


@njit(**_jit_exact)
def _sketch_keys_kernel(mag, lg, out):
    for i in range(mag.size):
        out[i] = np.int64(np.ceil(np.log(mag[i]) / lg))


def sketch_summary(v, log_gamma, min_key, min_value, pos, neg, n_threads=1):
    """A column's moments and sketch histogram; see ``segone.kernels.reference.sketch_summary``."""
    cnt, s1, s2, x0, mx, zero, plo, phi, nlo, nhi = _sketch_summary_kernel(
        v, float(log_gamma), np.int64(min_key), float(min_value), pos, neg)  # fmt: skip
    return int(cnt), float(s1), float(s2), float(x0), float(mx), int(zero), int(plo), int(phi), int(nlo), int(nhi)


def sketch_keys(mag, log_gamma, out, n_threads=1):
    """Bucket keys of magnitudes; see ``segone.kernels.reference.sketch_keys``."""
    _sketch_keys_kernel(mag, float(log_gamma), out)


# ---------------------------------------------------------------------------
# Tracking (see the Cython twin): the LSD radix argsort of int64 ids, one
# sequential pass per digit without the GIL.
@njit(**_jit_exact)
def _radix_argsort_kernel(keys, ia, ib):
    # 11-bit digits of the key with its sign bit flipped (so negative ids sort first); one pass
    # builds every digit's histogram, digits that are the same for every key are skipped
    n = keys.shape[0]
    bits = 11
    R = 1 << bits
    D = 6  # 66 bits >= 64
    sign = np.uint64(1) << np.uint64(63)
    mask = np.uint64(R - 1)
    hist = np.zeros((D, R), dtype=np.int64)
    ka = np.empty(n, dtype=np.uint64)
    for i in range(n):
        v = np.uint64(keys[i]) ^ sign
        ka[i] = v
        for d in range(D):
            hist[d, np.int64((v >> np.uint64(d * bits)) & mask)] += 1
    kb = np.empty(n, dtype=np.uint64)
    off = np.empty(R, dtype=np.int64)
    first = True
    for d in range(D):
        shift = np.uint64(d * bits)
        if n == 0 or hist[d, np.int64((ka[0] >> shift) & mask)] == n:
            continue
        s = 0
        for b in range(R):
            off[b] = s
            s += hist[d, b]
        if first:
            for i in range(n):
                v = ka[i]
                b = np.int64((v >> shift) & mask)
                p = off[b]
                kb[p] = v
                ib[p] = i
                off[b] = p + 1
            first = False
        else:
            for i in range(n):
                v = ka[i]
                b = np.int64((v >> shift) & mask)
                p = off[b]
                kb[p] = v
                ib[p] = ia[i]
                off[b] = p + 1
        ka, kb = kb, ka
        ia, ib = ib, ia
    if first:
        for i in range(n):
            ia[i] = i
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = np.int64(ka[i] ^ sign)
    return out, ia


def radix_argsort(keys, ia, ib, n_threads=1):
    """(keys in increasing order, the stable order); see ``segone.kernels.reference.radix_argsort``."""
    return _radix_argsort_kernel(keys, ia, ib)


@njit(**_jit_exact)
def _merge_moves_kernel(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts, csum):
    # P, N: the sorted ids; op, on: the row of each sorted id in ps / sp and ns / sn (empty: the same row)
    nP, nN = P.shape[0], N.shape[0]
    use_op = op.shape[0] == nP and nP > 0
    use_on = on.shape[0] == nN and nN > 0
    for i in range(1, nP):
        if P[i] <= P[i - 1]:
            return -1
    for j in range(1, nN):
        if N[j] <= N[j - 1]:
            return -2
    use_sp = sp.shape[0] == nP and nP > 0
    use_sn = sn.shape[0] == nN and nN > 0
    has_spend = spend.shape[0] > 0
    pa_, na_ = counts.shape[0] - 1, counts.shape[1] - 1
    i = 0
    j = 0
    u = 0
    nan = np.nan
    while i < nP or j < nN:
        if j >= nN or (i < nP and P[i] < N[j]):
            ri = op[i] if use_op else i
            a = ps[ri]
            ids[u] = P[i]
            prev[u] = a
            new[u] = -1
            status[u] = 3
            r = lp[a]
            c = na_
            v = sp[ri] if use_sp else nan
            i += 1
        elif i >= nP or N[j] < P[i]:
            rj = on[j] if use_on else j
            b = ns[rj]
            ids[u] = N[j]
            prev[u] = -1
            new[u] = b
            status[u] = 2
            r = pa_
            c = ln[b]
            v = sn[rj] if use_sn else nan
            j += 1
        else:
            ri = op[i] if use_op else i
            rj = on[j] if use_on else j
            a = ps[ri]
            b = ns[rj]
            ids[u] = P[i]
            prev[u] = a
            new[u] = b
            status[u] = 0 if a == b else 1
            r = lp[a]
            c = ln[b]
            v = sn[rj] if use_sn else nan
            i += 1
            j += 1
        counts[r, c] += 1
        if has_spend:
            spend[u] = v
            if v == v:
                csum[r, c] += v
        u += 1
    return u


def merge_moves(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts, csum, n_threads=1):
    """The moves of two runs joined by integer id; see ``segone.kernels.reference.merge_moves``."""
    return int(_merge_moves_kernel(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts, csum))


# --------------------------------------------------------------- bootstrap (campaign effects)
@numba.njit(cache=True, nogil=True, parallel=True)
def _bootstrap_kernel(hashes, cell, vcell, vals, keys, cdf, boot, boot_values):
    # replicates over the threads, rows in order within each: the reference's bits whatever the thread count
    n, q = vals.shape
    nb = keys.shape[0]
    nc = cdf.shape[0]
    for b in numba.prange(nb):
        key = keys[b]
        for i in range(n):
            x = hashes[i] ^ key
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            x = x ^ (x >> np.uint64(31))
            u = np.float64(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)
            k = 0
            while k < nc and cdf[k] <= u:
                k += 1
            w = np.float64(k)
            boot[b, cell[i]] += w
            for j in range(q):
                boot_values[b, vcell[i], j] += w * vals[i, j]


def bootstrap_sums(hashes, cell, vcell, vals, seed, n_boot, n_cells, n_vcells, n_threads=1):
    """Poisson-bootstrap replicate sums; see ``segone.kernels.reference.bootstrap_sums``."""
    from segone.kernels import reference as _ref

    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    cell = np.ascontiguousarray(cell, dtype=np.int64)
    vcell = np.ascontiguousarray(vcell, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    vals = np.ascontiguousarray(vals[:, None] if vals.ndim == 1 else vals)
    _check_bootstrap_cells(cell, vcell, n_cells, n_vcells, hashes.shape[0])
    keys = np.array([_ref.replicate_key(seed, b) for b in range(int(n_boot))], dtype=np.uint64)
    boot = np.zeros((int(n_boot), int(n_cells)))
    boot_values = np.zeros((int(n_boot), int(n_vcells), vals.shape[1]))
    prev = _set_threads(n_threads)
    try:
        _bootstrap_kernel(hashes, cell, vcell, vals, keys, _ref.POISSON1_CDF, boot, boot_values)
    finally:
        numba.set_num_threads(prev)
    return boot, boot_values


def _check_bootstrap_cells(cell, vcell, n_cells, n_vcells, n):
    if cell.shape[0] != n or vcell.shape[0] != n:
        raise ValueError("hashes, cell, vcell and vals must have the same length")
    if n and (cell.min() < 0 or cell.max() >= n_cells or vcell.min() < 0 or vcell.max() >= n_vcells):
        raise ValueError("cell and vcell must lie in [0, n_cells) and [0, n_vcells)")


# --------------------------------------------------------------- sweep statistics (see the Cython twin)
# One sequential pass without the GIL (rows in order, features in order, float64 sums): the reference's
# bits; the sweep runs it once per k and piece, after the parallel assign kernel.
@njit(**_jit_exact)
def _sweep_accumulate_kernel(X, labels, shift, Ms, want_dist, want_sums, counts, sums, sumsq, dist):
    n, d = X.shape
    tot = 0.0
    for i in range(n):
        lab = labels[i]
        s2 = 0.0
        t2 = 0.0
        for f in range(d):
            v = X[i, f] - shift[f]
            s2 += v * v
            if want_sums:
                sums[lab, f] += v
            if want_dist:
                w = v - Ms[lab, f]
                t2 += w * w
        sumsq[lab] += s2
        if want_sums:
            counts[lab] += 1.0
        if want_dist:
            dist[lab] += np.sqrt(t2)
            tot += t2
    return tot


def sweep_accumulate(X, labels, shift, means, want_dist, want_sums, counts, sums, sumsq, dist, n_threads=1):
    """Per-segment counts, sums, sums of squares and distances; see ``segone.kernels.reference.sweep_accumulate``."""
    X, labels, shift, means = prepare_sweep_inputs(X, labels, shift, means, counts, sums, sumsq, dist)
    return float(_sweep_accumulate_kernel(X, labels, shift, means, bool(want_dist), bool(want_sums), counts, sums,
                                          sumsq, dist))  # fmt: skip


# --------------------------------------------------------------- persona sentences (see the Cython twin)
# No fastmath: the numbers are rounded as the reference rounds them.
_jit_numpy = dict(nogil=True, cache=True, error_model="numpy")


@njit(**_jit_numpy)
def _pct_rank(q):
    """A share of the base as a whole percentage for "top N%": at least 1, never 0."""
    return min(max(np.ceil(100.0 * q - 1e-9), 1.0), 100.0)


@njit(**_jit_numpy)
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


def persona_slots(feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct,
                  n_threads=1):  # fmt: skip
    """Phrase entries and numbers of every trait slot; see ``segone.kernels.reference.persona_slots``."""
    feat, val, values, med, row_med, kind, swap, far_ratio, vdec = prepare_slots_inputs(
        feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct)  # fmt: skip
    _slots_kernel(feat, val, values, len(medians), med, row_med, kind, int(entry_base), entry, nums, pct, swap,
                  far_ratio, vdec)  # fmt: skip


@njit(**_jit_exact)
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


@njit(**_jit_exact)
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


SEP_0, SEP_1 = 59, 32  # "; "


@njit(**_jit_exact)
def _sentence_rows(r0, r1, pos, entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing,
                   out, offsets):  # fmt: skip
    """Rows r0..r1-1 written from out[pos]; returns the end."""
    k = entry.shape[1]
    width = lit_off.shape[1] - 1
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


@njit(parallel=True, **_jit_exact)
def _sentences_kernel(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out,
                      offsets, n_chunks, row_cap):  # fmt: skip
    """Chunks of rows written in parallel, each from its own region of out, then moved together."""
    n = entry.shape[0]
    per = (n + n_chunks - 1) // n_chunks
    ends = np.zeros(n_chunks, np.int64)
    for t in prange(n_chunks):
        r0 = min(t * per, n)
        r1 = min(r0 + per, n)
        ends[t] = _sentence_rows(r0, r1, r0 * row_cap, entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec,
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


def persona_sentences(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out,
                      offsets, n_chunks, row_cap, n_threads=1):  # fmt: skip
    """The persona sentences as an Arrow string buffer; see ``segone.kernels.reference.persona_sentences``."""
    args = prepare_sentence_inputs(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes,
                                   nothing, out, offsets, n_chunks, row_cap)  # fmt: skip
    prev = _set_threads(n_threads)
    try:
        return int(_sentences_kernel(*args))
    finally:
        numba.set_num_threads(prev)
