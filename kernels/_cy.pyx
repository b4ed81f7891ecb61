# Cython kernels for segone (see kernels/reference.py for the oracle).
#
# Conventions (after scikit-learn's _k_means_*.pyx):
#   const floating[...] arguments are inputs  (# IN), read-only buffers such
#   as zero-copy Arrow memory are accepted;
#   caller-allocated outputs are marked # OUT;
#   everything runs without the GIL; threads come from OpenMP (prange,
#   schedule="static") when the extension was built with OpenMP.
#
# The row-block kernels live in C (simd_assign.h: AVX-512 / AVX2 / generic
# vectors / plain C, chosen at run time); this module schedules row blocks
# over OpenMP threads and accumulates the per-centroid partial sums.
# Distances are computed on rows and centroids centred on the fly
# (segone.kernels._common.centering: the rows are transformed inside the C
# kernel while they are transposed, only when the centroids sit far from the
# origin against their spread); the partial sums are of the original rows.

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, ceil, fabs, isfinite, log, log1p, rint, sqrt
from libc.stdlib cimport free, malloc, qsort

import numpy as np

cdef extern from *:
    """
    #ifndef SEGONE_OPENMP
    #define SEGONE_OPENMP 0
    #endif
    """
    int SEGONE_OPENMP

cdef extern from "simd_assign.h" nogil:
    int SG_SIMD_AVAILABLE
    int SG_GROUP_MAX
    ctypedef struct sg_counts:
        Py_ssize_t invalid      # rows holding NaN / inf: label -1, distance NaN
        Py_ssize_t overflow     # finite rows whose distance exceeds the float type: distance +inf
    int sg_cpu_level()
    void sg_prefetch(const void* p)
    sg_counts sg_assign_rows_f32(
        int level, const float* X, Py_ssize_t n, Py_ssize_t d, const float* c2b, const float* cnorm,
        Py_ssize_t kp, const float* xsg, float xg, double oscale, int* labels, float* dist, float* margin,
        float* buf)
    sg_counts sg_assign_rows_f64(
        int level, const double* X, Py_ssize_t n, Py_ssize_t d, const double* c2b, const double* cnorm,
        Py_ssize_t kp, const double* xsg, double xg, double oscale, int* labels, double* dist, double* margin,
        double* buf)

# rows per scheduling block of the assignment loop (a multiple of SG_GROUP_MAX)
cdef Py_ssize_t ASSIGN_BLOCK = 256
# rows ahead that the mini-batch gather prefetches (random rows are latency-bound)
cdef Py_ssize_t PREFETCH_ROWS = 24

_LEVEL_NAMES = {-1: "scalar", 0: "generic", 1: "avx2", 2: "avx512"}
cdef int _CPU_LEVEL = sg_cpu_level()
cdef int _LEVEL = _CPU_LEVEL


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(SEGONE_OPENMP)


def cpu_simd_level():
    """Best SIMD variant this CPU and build support ("avx512", "avx2", "generic" or "scalar")."""
    return _LEVEL_NAMES[_CPU_LEVEL]


def simd_level():
    """The SIMD variant in use."""
    return _LEVEL_NAMES[_LEVEL]


def set_simd_level(name="auto"):
    """Select the kernel variant: "auto" (the best the CPU has), "avx512",
    "avx2", "generic" (portable vectors) or "scalar" (plain loops).
    Asking for more than the CPU supports raises ValueError.  Returns the
    previous setting.  The environment variable SEGONE_SIMD sets the same at
    import."""
    global _LEVEL
    prev = _LEVEL_NAMES[_LEVEL]
    levels = {v: k for k, v in _LEVEL_NAMES.items()}
    if name == "auto":
        _LEVEL = _CPU_LEVEL
        return prev
    if name not in levels:
        raise ValueError(f"unknown SIMD level {name!r}; use one of auto, {', '.join(levels)}")
    if levels[name] > _CPU_LEVEL:
        raise ValueError(f"SIMD level {name!r} is not supported here (best: {_LEVEL_NAMES[_CPU_LEVEL]})")
    _LEVEL = levels[name]
    return prev


cdef inline sg_counts _assign_rows(
    int level, const floating* X, Py_ssize_t n, Py_ssize_t d, const floating* c2b, const floating* cnorm,
    Py_ssize_t kp, const floating* xsg, double xg, double oscale, int* labels, floating* dist,
    floating* margin, floating* buf,
) noexcept nogil:
    """The C row kernel of the float type at hand (simd_assign.h): rows centred on the fly as
    x * xg - xsg when xsg is not NULL; returns the invalid and overflow row counts."""
    if floating is float:
        return sg_assign_rows_f32(level, X, n, d, c2b, cnorm, kp, xsg, <float> xg, oscale, labels, dist, margin,
                                  buf)
    else:
        return sg_assign_rows_f64(level, X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf)


cdef inline floating* _thread_scratch(Py_ssize_t d, const floating* like) noexcept nogil:
    """Per-thread scratch of the row kernel: the group buffer (d * SG_GROUP_MAX values), then,
    a cache line apart, room for the thread's own copy of the transform (_thread_transform);
    ``like`` only selects the float type."""
    return <floating*> malloc((d * (SG_GROUP_MAX + 1) + 32) * sizeof(floating))


cdef inline floating* _thread_transform(floating* buf, Py_ssize_t d, const floating* xsg,
                                        bint use_tf) noexcept nogil:
    """The thread's own copy of the transform in its scratch (no thread then reads a cache line
    another thread writes), or NULL without a transform."""
    cdef floating* tl
    cdef Py_ssize_t j
    if buf == NULL or not use_tf:
        return NULL
    tl = buf + d * SG_GROUP_MAX + 16
    for j in range(d):
        tl[j] = xsg[j]
    return tl


def _assign_kernel(
    const floating[:, ::1] X,        # IN (N, D)
    const floating[:, :, ::1] c2b,   # IN (Kp / 8, D, 8): blocked -2 * centroids (transformed)
    const floating[::1] cnorm,       # IN (Kp,): ||c||^2, +inf for padding
    const floating[::1] xsg,         # IN (D,): rows are centred as x * xg - xsg (when use_tf)
    double xg,                       # IN power-of-two scale of the transform
    double oscale,                   # IN 1 / xg**2: distances and margins are scaled back by it
    bint use_tf,
    int[::1] labels,                 # OUT (N,)
    floating[::1] distance,          # OUT (N,)
    floating[::1] margin,            # OUT (N,) or (0,) when not wanted
    bint want_margin,
    int n_threads,
):
    cdef Py_ssize_t n_samples = X.shape[0]
    cdef Py_ssize_t n_features = X.shape[1]
    cdef Py_ssize_t kp = cnorm.shape[0]
    cdef Py_ssize_t n_blocks = (n_samples + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK
    cdef Py_ssize_t b, start, stop
    cdef floating* buf
    cdef floating* mp
    cdef const floating* tp = &xsg[0]
    cdef floating* tl
    cdef sg_counts cnt
    cdef Py_ssize_t n_invalid = 0
    cdef Py_ssize_t n_overflow = 0
    cdef int level = _LEVEL

    if n_samples == 0:
        return 0, 0
    oom_arr = np.zeros(1, dtype=np.int32)
    cdef int[::1] oom = oom_arr
    with nogil, parallel(num_threads=n_threads):
        buf = _thread_scratch(n_features, tp)
        tl = _thread_transform(buf, n_features, tp, use_tf)
        for b in prange(n_blocks, schedule="static"):
            if buf == NULL:  # out of memory: flagged, raised after the parallel region
                oom[0] = 1
                continue
            start = b * ASSIGN_BLOCK
            stop = start + ASSIGN_BLOCK
            if stop > n_samples:
                stop = n_samples
            mp = &margin[start] if want_margin else NULL
            cnt = _assign_rows(level, &X[start, 0], stop - start, n_features, &c2b[0, 0, 0], &cnorm[0], kp,
                               tl, xg, oscale, &labels[start], &distance[start], mp, buf)
            n_invalid += cnt.invalid
            n_overflow += cnt.overflow
        free(buf)
    if oom[0]:
        raise MemoryError("segone kernel: could not allocate per-thread scratch memory")
    return n_invalid, n_overflow


def _partial_sums_kernel(
    const floating[:, ::1] X,        # IN (N, D)
    const double[::1] weights,       # IN (N,) or (0,) when unweighted
    bint use_weights,
    const floating[:, :, ::1] c2b,   # IN (Kp / 8, D, 8)
    const floating[::1] cnorm,       # IN (Kp,)
    const floating[::1] xsg,         # IN (D,) the transform, as in _assign_kernel
    double xg,
    double oscale,
    bint use_tf,
    int[::1] labels,                 # OUT (N,)
    double[:, :, ::1] psums,         # OUT (n_chunks, K, D) per-chunk sums of the original rows
    double[:, ::1] pcounts,          # OUT (n_chunks, K)
    double[::1] pinertia,            # OUT (n_chunks,)
    Py_ssize_t chunk_rows,
    int n_threads,
):
    cdef Py_ssize_t n_samples = X.shape[0]
    cdef Py_ssize_t n_features = X.shape[1]
    cdef Py_ssize_t kp = cnorm.shape[0]
    cdef Py_ssize_t n_chunks = psums.shape[0]
    cdef Py_ssize_t c, i, j, s0, s1, start, stop, lab
    cdef double w, inert
    cdef floating* buf
    cdef floating* dst
    cdef const floating* tp = &xsg[0]
    cdef floating* tl
    cdef sg_counts cnt
    cdef Py_ssize_t n_invalid = 0
    cdef Py_ssize_t n_overflow = 0
    cdef int level = _LEVEL

    if n_samples == 0:
        return 0, 0
    oom_arr = np.zeros(1, dtype=np.int32)
    cdef int[::1] oom = oom_arr
    with nogil, parallel(num_threads=n_threads):
        buf = _thread_scratch(n_features, tp)
        tl = _thread_transform(buf, n_features, tp, use_tf)
        dst = <floating*> malloc(ASSIGN_BLOCK * sizeof(floating))
        for c in prange(n_chunks, schedule="static"):
            if buf == NULL or dst == NULL:  # out of memory: flagged, raised after the parallel region
                oom[0] = 1
                continue
            start = c * chunk_rows
            stop = start + chunk_rows
            if stop > n_samples:
                stop = n_samples
            inert = 0.0
            s0 = start
            while s0 < stop:
                s1 = s0 + ASSIGN_BLOCK
                if s1 > stop:
                    s1 = stop
                cnt = _assign_rows(level, &X[s0, 0], s1 - s0, n_features, &c2b[0, 0, 0], &cnorm[0], kp,
                                   tl, xg, oscale, &labels[s0], dst, NULL, buf)
                n_invalid += cnt.invalid
                n_overflow += cnt.overflow
                for i in range(s0, s1):
                    lab = labels[i]
                    if lab < 0:
                        continue
                    w = weights[i] if use_weights else 1.0
                    inert = inert + w * <double> dst[i - s0]
                    pcounts[c, lab] += w
                    for j in range(n_features):
                        psums[c, lab, j] += w * <double> X[i, j]
                s0 = s1
            pinertia[c] = inert
        free(dst)
        free(buf)
    if oom[0]:
        raise MemoryError("segone kernel: could not allocate per-thread scratch memory")
    return n_invalid, n_overflow


def _minibatch_kernel(
    const floating[:, ::1] X,        # IN (N, D)
    const double[::1] weights,       # IN (N,) or (0,) when unweighted
    bint use_weights,
    const long long[:, ::1] idx,     # IN (S, B) row indices of S mini-batches
    double[:, ::1] centers,          # IN/OUT (K, D) float64 master copy of the centroids
    double[::1] totals,              # IN/OUT (K,) weighted count seen by each centroid
    double[::1] state,               # IN/OUT see segone.kernels._common.MB_* (ewa, counters, ...)
    double[::1] batch_inertia,       # OUT (S,) mean squared distance of each batch
    floating[:, ::1] xb,             # scratch (B, D)
    floating[:, :, ::1] c2b,         # scratch (Kp / 8, D, 8)
    floating[::1] cnorm,             # scratch (Kp,)
    floating[::1] dist,              # scratch (B,)
    int[::1] lab,                    # scratch (B,)
    double[:, ::1] sums,             # scratch (K, D)
    double[::1] counts,              # scratch (K,)
    double[:, :, ::1] psum,          # scratch (n_blocks, K, D)
    double[:, ::1] pcount,           # scratch (n_blocks, K)
    double[::1] pinert,              # scratch (n_blocks,)
    int[::1] pbad,                   # scratch (n_blocks,)
    const floating[::1] xsg,         # IN (D,) the transform, fixed for the whole fit (see _assign_kernel)
    double xg,
    double oscale,
    bint use_tf,
    int n_threads,
):
    """Run up to S mini-batch steps without returning to Python.

    Each step gathers its batch, assigns it with the SIMD kernel (threads over
    blocks of rows), accumulates float64 sums and counts serially (the same
    order for any thread count), and moves every centroid with its own
    count-based learning rate: c <- (c * n_old + sum_batch) / (n_old + n_batch).
    Returns (steps done, status): 0 all done, 1 no improvement of the smoothed
    batch inertia for max_no_improvement steps, 2 centre shift below tol,
    3 a reassignment check found low-count centroids (Python re-seeds them
    from the last batch and calls again), 4 a batch row holds NaN/inf,
    5 a batch row's squared distance exceeds the float type (the step is not
    applied).  Rows and centroids are centred with the transform given
    (x * xg - xsg), the sums are of the original rows.
    """
    cdef Py_ssize_t n_steps = idx.shape[0]
    cdef Py_ssize_t bs = idx.shape[1]
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t k = centers.shape[0]
    cdef Py_ssize_t kp = cnorm.shape[0]
    cdef Py_ssize_t n_blocks = (bs + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK
    cdef Py_ssize_t s, b, r, r0, r1, j, c, row, l
    cdef floating* buf
    cdef double w, inert, nt_k, v, shift, cn, maxt
    cdef double ewa = state[0], best_ewa = state[1], no_improve = state[2]
    cdef double alpha = state[3], tol = state[4], ratio = state[5], max_no_improve = state[6]
    cdef double since = state[7], reassign_every = state[8], global_step = state[9]
    cdef int level = _LEVEL
    cdef int status = 0
    cdef Py_ssize_t done = 0
    cdef int bad
    cdef const floating* tp = &xsg[0]
    cdef floating* tl
    cdef sg_counts cnt

    oom_arr = np.zeros(1, dtype=np.int32)
    cdef int[::1] oom = oom_arr
    with nogil:
        for c in range(k, kp):
            cnorm[c] = INFINITY
            for j in range(d):
                c2b[c // 8, j, c % 8] = 0
        for s in range(n_steps):
            # centroids for this step, blocked for the SIMD kernel
            for c in range(k):
                cn = 0.0
                for j in range(d):
                    v = centers[c, j]
                    if use_tf:  # exactly as _common.prepare_blocked transforms centroids
                        v = v * xg - <double> xsg[j]
                    cn = cn + v * v
                    c2b[c // 8, j, c % 8] = <floating> (-2.0 * v)
                cnorm[c] = <floating> cn
            # gather + assign, threads over blocks of rows
            with parallel(num_threads=n_threads):
                buf = _thread_scratch(d, tp)
                tl = _thread_transform(buf, d, tp, use_tf)
                for b in prange(n_blocks, schedule="static"):
                    if buf == NULL:  # out of memory: flagged, raised after the parallel region
                        oom[0] = 1
                        continue
                    r0 = b * ASSIGN_BLOCK
                    r1 = r0 + ASSIGN_BLOCK
                    if r1 > bs:
                        r1 = bs
                    for r in range(r0, min(r0 + PREFETCH_ROWS, r1)):
                        sg_prefetch(&X[idx[s, r], 0])
                    for r in range(r0, r1):
                        if r + PREFETCH_ROWS < r1:
                            sg_prefetch(&X[idx[s, r + PREFETCH_ROWS], 0])
                        row = idx[s, r]
                        for j in range(d):
                            xb[r, j] = X[row, j]
                    # software pipelining: fetch this block's rows of the next step
                    # while this step computes (the same thread takes the same block)
                    if s + 1 < n_steps:
                        for r in range(r0, r1):
                            sg_prefetch(&X[idx[s + 1, r], 0])
                    cnt = _assign_rows(level, &xb[r0, 0], r1 - r0, d, &c2b[0, 0, 0], &cnorm[0], kp,
                                       tl, xg, oscale, &lab[r0], &dist[r0], NULL, buf)
                    # per-block partial sums (merged below in block order: the
                    # result does not depend on the number of threads)
                    for c in range(k):
                        pcount[b, c] = 0.0
                        for j in range(d):
                            psum[b, c, j] = 0.0
                    pinert[b] = 0.0
                    pbad[b] = 2 if cnt.overflow else 0
                    for r in range(r0, r1):
                        l = lab[r]
                        if l < 0:
                            pbad[b] = 1
                            continue
                        w = weights[idx[s, r]] if use_weights else 1.0
                        pcount[b, l] += w
                        pinert[b] += w * <double> dist[r]
                        for j in range(d):
                            psum[b, l, j] += w * <double> xb[r, j]
                free(buf)
            if oom[0]:
                break
            for c in range(k):
                counts[c] = 0.0
                for j in range(d):
                    sums[c, j] = 0.0
            inert = 0.0
            bad = 0
            for b in range(n_blocks):
                bad = bad | pbad[b]
                inert = inert + pinert[b]
                for c in range(k):
                    counts[c] += pcount[b, c]
                    for j in range(d):
                        sums[c, j] += psum[b, c, j]
            if bad:
                status = 4 if bad & 1 else 5
                break
            # count-based learning rate
            shift = 0.0
            for c in range(k):
                if counts[c] > 0:
                    nt_k = totals[c] + counts[c]
                    for j in range(d):
                        v = (centers[c, j] * totals[c] + sums[c, j]) / nt_k
                        shift = shift + (v - centers[c, j]) * (v - centers[c, j])
                        centers[c, j] = v
                    totals[c] = nt_k
            batch_inertia[s] = inert / bs
            done = s + 1
            global_step = global_step + 1
            if ewa != ewa:  # NaN: first step
                ewa = inert / bs
            else:
                ewa = ewa * (1.0 - alpha) + (inert / bs) * alpha
            if tol > 0 and shift <= tol:
                status = 2
                break
            if max_no_improve >= 0:
                if ewa < best_ewa:
                    best_ewa = ewa
                    no_improve = 0
                else:
                    no_improve = no_improve + 1
                    if no_improve >= max_no_improve:
                        status = 1
                        break
            since = since + bs
            if since >= reassign_every and global_step > 1 and ratio > 0 and k > 1:
                since = 0
                maxt = 0.0
                for c in range(k):
                    if totals[c] > maxt:
                        maxt = totals[c]
                for c in range(k):
                    if totals[c] < ratio * maxt:
                        status = 3
                        break
                if status == 3:
                    break
    if oom[0]:
        raise MemoryError("segone kernel: could not allocate per-thread scratch memory")
    state[0] = ewa
    state[1] = best_ewa
    state[2] = no_improve
    state[7] = since
    state[9] = global_step
    return done, status


cdef int _cmp_i64(const void* a, const void* b) noexcept nogil:
    cdef long long x = (<const long long*> a)[0]
    cdef long long y = (<const long long*> b)[0]
    return (x > y) - (x < y)


# ---------------------------------------------------------------------------
# Customer profiles: CSR grouping, then every aggregate per group in one pass

cdef struct TxRow:
    long long ts
    double amount
    int cat
    int ch


cdef inline long long _floordiv(long long a, long long b) noexcept nogil:
    # floor(a / b) for b > 0, whatever the cdivision setting
    cdef long long q = a // b
    if q * b > a:
        q -= 1
    return q


cdef void _sort_i64(long long* v, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t q, p
    cdef long long x
    if m <= 32:  # insertion sort: most customers have a few rows
        for q in range(1, m):
            x = v[q]
            p = q - 1
            while p >= 0 and v[p] > x:
                v[p + 1] = v[p]
                p = p - 1
            v[p + 1] = x
    else:
        qsort(v, m, sizeof(long long), _cmp_i64)


cdef inline Py_ssize_t _block_rows(Py_ssize_t maxm, Py_ssize_t n, Py_ssize_t cap) noexcept nogil:
    """Rows grouped at a time by the group kernels: ``cap`` (0: max(2M, N / 8)), at most N, at least the largest
    group (``maxm``), so that a block holds whole groups."""
    cdef Py_ssize_t b = cap if cap > 0 else (n // 8 if n // 8 > (1 << 21) else (1 << 21))
    if b > n:
        b = n
    return b if b > maxm else maxm


cdef inline Py_ssize_t _block_end(const long long[::1] off, Py_ssize_t gb, Py_ssize_t n_groups,
                                  Py_ssize_t block_rows) noexcept nogil:
    """The end of the block of consecutive groups that starts at ``gb`` (CSR offsets ``off``): as many groups as
    fit in ``block_rows`` rows, at least one."""
    cdef Py_ssize_t ge = gb + 1
    while ge < n_groups and off[ge + 1] - off[gb] <= block_rows:
        ge = ge + 1
    return ge


def _profile_kernel(
    const long long[::1] codes,      # IN (N,) group of every row, in [0, n_groups)
    const long long[::1] ts,         # IN (N,)
    const double[::1] amount,        # IN (N,)
    const int[::1] cat,              # IN (N,) or (0,)
    const int[::1] ch,               # IN (N,) or (0,)
    const long long[::1] wstart,     # IN (W,)
    long long day_us,
    const long long[::1] bounds,     # IN (T + 1,) its length sets the scatter's T thread shares
    long long[::1] off,              # OUT (G + 1,) CSR offsets
    long long[::1] o_orders, long long[::1] o_first, long long[::1] o_last,
    double[::1] o_spend, double[::1] o_smax, double[::1] o_gross, double[::1] o_fds,
    long long[::1] o_pdays, long long[:, ::1] o_word, double[:, ::1] o_wsp,
    double[:, ::1] o_cat, double[::1] o_nullcat, long long[::1] o_ncat, long long[:, ::1] o_ch,
    int n_threads,
    Py_ssize_t block_rows_cap=0,     # rows per block of the grouped copy (0: automatic; tests set it small)
):
    cdef Py_ssize_t n = codes.shape[0]
    cdef Py_ssize_t n_groups = o_orders.shape[0]
    cdef Py_ssize_t n_cat = o_cat.shape[1]
    cdef Py_ssize_t n_w = wstart.shape[0]
    cdef Py_ssize_t n_parts = bounds.shape[0] - 1
    cdef bint has_cat = cat.shape[0] > 0
    cdef bint has_ch = ch.shape[0] > 0
    cdef Py_ssize_t i, g, t, a, e, m, q, w, u, maxm = 0
    cdef long long g0, g1, c, day, fday, prev, first, last, nd, ncats
    cdef double amt, pos_amt, sp, smax, gross, fds, nullc
    cdef TxRow* rows
    cdef TxRow* r
    cdef long long* days
    cdef long long* mark
    for i in range(n):
        g = codes[i]
        if g < 0 or g >= n_groups:
            raise ValueError(f"codes[{i}] = {g} is outside [0, {n_groups})")
        off[g + 1] += 1
    for g in range(n_groups):
        if off[g + 1] > maxm:
            maxm = off[g + 1]
        off[g + 1] += off[g]
    # The rows are grouped one block of consecutive customers at a time: a block holds at most block_rows rows
    # (and at least one customer), so the grouped copy costs block_rows * sizeof(TxRow) bytes, not N times that
    # (at 20M rows, 60 MB instead of 480 MB).  Each block re-reads the codes, which is cheap next to the rows.
    # The grouped rows live in a NumPy buffer: NumPy asks the OS for huge pages on large allocations.
    cdef Py_ssize_t block_rows = _block_rows(maxm, n, block_rows_cap)
    rows_arr = np.empty(max(block_rows, 1) * sizeof(TxRow), dtype=np.uint8)
    cdef unsigned char[::1] rows_mem = rows_arr
    rows = <TxRow*> &rows_mem[0]
    pos_arr = np.asarray(off[:n_groups]).copy()
    cdef long long[::1] pos = pos_arr
    oom_arr = np.zeros(1, dtype=np.int32)
    cdef int[::1] oom = oom_arr
    cdef Py_ssize_t gb = 0, ge
    cdef long long base
    while gb < n_groups:
        ge = _block_end(off, gb, n_groups, block_rows)
        base = off[gb]
        with nogil:
            # scatter the block's rows into group order; thread t owns a contiguous share of the block's
            # groups, so no two threads write the same slot and row order is kept in a group
            for t in prange(n_parts, schedule="static", chunksize=1, num_threads=n_threads):
                g0 = gb + (ge - gb) * t // n_parts
                g1 = gb + (ge - gb) * (t + 1) // n_parts
                for i in range(n):
                    c = codes[i]
                    if c >= g0 and c < g1:
                        r = &rows[pos[c] - base]
                        r.ts = ts[i]
                        r.amount = amount[i]
                        r.cat = cat[i] if has_cat else -1
                        r.ch = ch[i] if has_ch else -1
                        pos[c] += 1
            with parallel(num_threads=n_threads):
                days = <long long*> malloc(max(maxm, 1) * sizeof(long long))
                mark = <long long*> malloc(max(n_cat, 1) * sizeof(long long))
                if mark != NULL:
                    for u in range(n_cat):
                        mark[u] = -1
                for g in prange(gb, ge, schedule="dynamic", chunksize=4096):
                    if days == NULL or mark == NULL:
                        oom[0] = 1
                        continue
                    a = off[g] - base
                    e = off[g + 1] - base
                    m = e - a
                    if m == 0:
                        continue
                    first = rows[a].ts
                    last = rows[a].ts
                    sp = 0.0
                    smax = -INFINITY
                    gross = 0.0
                    nullc = 0.0
                    ncats = 0
                    for q in range(a, e):
                        r = &rows[q]
                        amt = r.amount
                        if r.ts < first:
                            first = r.ts
                        if r.ts > last:
                            last = r.ts
                        sp = sp + amt
                        if amt > smax:
                            smax = amt
                        pos_amt = amt if amt > 0.0 else 0.0
                        gross = gross + pos_amt
                        days[q - a] = _floordiv(r.ts, day_us)
                        for w in range(n_w):
                            if r.ts > wstart[w]:
                                o_word[g, w] += 1
                                o_wsp[g, w] += amt
                        if r.cat >= 0:
                            o_cat[g, r.cat] += pos_amt
                            if mark[r.cat] != g:
                                mark[r.cat] = g
                                ncats = ncats + 1
                        else:
                            nullc = nullc + pos_amt
                        if r.ch >= 0:
                            o_ch[g, r.ch] += 1
                    # spend on the first purchase day (row order, like the reference)
                    fday = _floordiv(first, day_us)
                    fds = 0.0
                    for q in range(a, e):
                        if days[q - a] == fday:
                            fds = fds + rows[q].amount
                    _sort_i64(days, m)
                    nd = 1
                    for q in range(1, m):
                        if days[q] != days[q - 1]:
                            nd = nd + 1
                    o_orders[g] = m
                    o_first[g] = first
                    o_last[g] = last
                    o_spend[g] = sp
                    o_smax[g] = smax
                    o_gross[g] = gross
                    o_fds[g] = fds
                    o_pdays[g] = nd
                    o_nullcat[g] = nullc
                    o_ncat[g] = ncats
                free(days)
                free(mark)
        gb = ge
    if oom[0]:
        raise MemoryError("segone profile kernel: could not allocate per-thread scratch memory")


def _event_kernel(
    const long long[::1] codes,      # IN (N,)
    const long long[::1] ts,         # IN (N,)
    const int[::1] etype,            # IN (N,), -1 = null
    long long[:, ::1] counts,        # OUT (G, E) zeroed
    long long[:, ::1] last,          # OUT (G, E) filled with int64 min
    const long long[::1] bounds,     # IN (T + 1,) owner group ranges
    int n_threads,
):
    cdef Py_ssize_t n = codes.shape[0]
    cdef Py_ssize_t n_groups = counts.shape[0]
    cdef Py_ssize_t n_parts = bounds.shape[0] - 1
    cdef Py_ssize_t i, t
    cdef long long c, g0, g1
    cdef int e
    for i in range(n):
        if codes[i] < 0 or codes[i] >= n_groups:
            raise ValueError(f"codes[{i}] = {codes[i]} is outside [0, {n_groups})")
    with nogil:
        for t in prange(n_parts, schedule="static", chunksize=1, num_threads=n_threads):
            g0 = bounds[t]
            g1 = bounds[t + 1]
            for i in range(n):
                c = codes[i]
                e = etype[i]
                if c >= g0 and c < g1 and e >= 0:
                    counts[c, e] += 1
                    if ts[i] > last[c, e]:
                        last[c, e] = ts[i]


# ---------------------------------------------------------------------------
# Feature scoring: every column of a row block transformed into row-major X

cdef double SQRT12 = 3.4641016151377544


cdef inline double _bucket_coord(double v, double lg, double min_value, double min_key) noexcept nogil:
    cdef double mag = fabs(v)
    if mag < min_value:
        return 0.0
    cdef double c = ceil(log(mag) / lg) - min_key + 1.0
    return c if v > 0 else -c


def _score_kernel(
    const unsigned long long[::1] col_ptrs,   # IN (D,) addresses of (N,) float64 columns
    const unsigned long long[::1] mask_ptrs,  # IN (D,) addresses of (N,) uint8 null masks, 0 = none
    const signed char[::1] log1p_flag, const double[::1] fill, const double[::1] lo, const double[::1] hi,
    const signed char[::1] quantile,
    const double[::1] lut, const long long[::1] lut_off, const double[::1] lut_low, const long long[::1] lut_len,
    const double[::1] center,
    const double[::1] scale, const double[::1] weight, double clip,
    double log_gamma, double min_value, double min_key,
    float[:, ::1] X,                          # OUT (N, D)
    long long[::1] block_bad,                 # OUT (n_blocks,) first bad row per block, or N
    int n_threads,
):
    cdef Py_ssize_t n = X.shape[0]
    cdef Py_ssize_t d = X.shape[1]
    cdef long long ci
    cdef Py_ssize_t n_blocks = block_bad.shape[0]
    cdef Py_ssize_t b, i, j, r0, r1
    cdef const double* col
    cdef const unsigned char* msk
    cdef double v
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            r0 = b * ASSIGN_BLOCK
            r1 = min(r0 + ASSIGN_BLOCK, n)
            block_bad[b] = n
            for j in range(d):
                col = <const double*> col_ptrs[j]
                msk = <const unsigned char*> mask_ptrs[j]
                for i in range(r0, r1):
                    if msk != NULL and msk[i]:
                        v = fill[j]
                    else:
                        v = col[i]
                        if not (v - v == 0.0):  # NaN or +-inf
                            if i < block_bad[b]:
                                block_bad[b] = i
                            v = 0.0
                        if log1p_flag[j]:
                            v = log1p(v if v > 0.0 else 0.0)
                    if v < lo[j]:
                        v = lo[j]
                    if v > hi[j]:
                        v = hi[j]
                    if quantile[j]:
                        # rank of the bucket coordinate: one table load (see _common.rank_tables)
                        ci = <long long> (_bucket_coord(v, log_gamma, min_value, min_key) - lut_low[j])
                        if ci < 0:
                            v = -0.5 * SQRT12
                        elif ci >= lut_len[j]:
                            v = 0.5 * SQRT12
                        else:
                            v = (lut[lut_off[j] + ci] - 0.5) * SQRT12
                    v = (v - center[j]) / scale[j]
                    if v < -clip:
                        v = -clip
                    if v > clip:
                        v = clip
                    X[i, j] = <float> (v * weight[j])


# ---------------------------------------------------------------------------
# Personas: the k strongest traits of every row, one per feature group

def _top_traits_kernel(
    const float[:, ::1] S,    # IN  (N, D) signed strengths, NaN = no trait
    const int[::1] group,     # IN  (D,) group of each column
    int n_groups,
    float min_strength,
    int[:, ::1] idx,          # OUT (N, k) column indices, strongest first, -1 past the last
    float[:, ::1] val,        # OUT (N, k) strengths, NaN past the last
    int n_threads,
):
    cdef Py_ssize_t n = S.shape[0]
    cdef Py_ssize_t d = S.shape[1]
    cdef Py_ssize_t k = idx.shape[1]
    cdef Py_ssize_t i, j, m, p, g
    cdef float a, v
    cdef float NAN_F = <float> (INFINITY - INFINITY)
    cdef float* best
    cdef int* col
    oom_arr = np.zeros(1, dtype=np.int32)
    cdef int[::1] oom = oom_arr
    with nogil, parallel(num_threads=n_threads):
        best = <float*> malloc(max(n_groups, 1) * sizeof(float))
        col = <int*> malloc(max(n_groups, 1) * sizeof(int))
        for i in prange(n, schedule="static"):
            if best == NULL or col == NULL:
                oom[0] = 1
                continue
            for g in range(n_groups):
                best[g] = -1.0
                col[g] = -1
            for j in range(d):  # each group's strongest member (ties: the lower column)
                v = S[i, j]
                if v != v:
                    continue
                a = fabs(v)
                if a >= min_strength and a > best[group[j]]:
                    best[group[j]] = a
                    col[group[j]] = <int> j
            m = 0  # insertion of the groups into the k slots (ties: the lower group)
            for g in range(n_groups):
                if col[g] < 0:
                    continue
                a = best[g]
                if m == k and not (a > fabs(val[i, k - 1])):
                    continue
                p = m if m < k else k - 1
                while p > 0 and a > fabs(val[i, p - 1]):
                    if p < k:
                        idx[i, p] = idx[i, p - 1]
                        val[i, p] = val[i, p - 1]
                    p = p - 1
                idx[i, p] = col[g]
                val[i, p] = S[i, col[g]]
                if m < k:
                    m = m + 1
            for p in range(m, k):
                idx[i, p] = -1
                val[i, p] = NAN_F
        free(best)
        free(col)
    if oom[0]:
        raise MemoryError("top_traits: could not allocate per-thread scratch")


# ---------------------------------------------------------------------------
# Python-level entry points (same signature as kernels/reference.py)

from segone.kernels._common import (
    MB_OVERFLOW, centering, chunk_plan, kernel_transform, merge_partials, minibatch_scratch, overflow_error,
    owner_ranges, partial_buffers, prepare_blocked, prepare_persona_inputs, prepare_profile_inputs,
    prepare_score_inputs, prepare_sentence_inputs, prepare_slots_inputs, prepare_sweep_inputs,
    profile_outputs,
)

import os as _os

if _os.environ.get("SEGONE_SIMD"):
    set_simd_level(_os.environ["SEGONE_SIMD"])


def _transform_for(centroids, dtype, n_features, tf=None):
    """(Centering, kernel arguments) for these centroids: see _common.centering."""
    if tf is None:
        tf = centering(centroids, dtype)
    return tf, kernel_transform(tf, dtype, n_features)


def _overflow_rows(X, centroids, n_threads):
    """Error path: the rows of X whose squared distance exceeds X's float type."""
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int32)
    dist = np.empty(n, dtype=X.dtype)
    tf, (xsg, xg, oscale, use_tf) = _transform_for(centroids, X.dtype, X.shape[1])
    c2b, cnorm, _ = prepare_blocked(centroids, tf=tf)
    _assign_kernel(X, c2b, cnorm, xsg, xg, oscale, use_tf, labels, dist, np.empty(0, dtype=X.dtype), False,
                   int(n_threads))
    return np.flatnonzero(np.isposinf(dist))


def assign(X, centroids, labels, distance, margin=None, n_threads=1):
    """Nearest-centroid assignment; see ``segone.kernels.reference.assign``.

    Rows and centroids are centred on the fly (``_common.centering``); finite
    rows whose squared distance exceeds X's float type raise DataError."""
    want = margin is not None
    m = margin if want else np.empty(0, dtype=X.dtype)
    tf, (xsg, xg, oscale, use_tf) = _transform_for(centroids, X.dtype, X.shape[1])
    c2b, cnorm, _ = prepare_blocked(centroids, tf=tf)
    n_invalid, n_overflow = _assign_kernel(X, c2b, cnorm, xsg, xg, oscale, use_tf, labels, distance, m, want,
                                           int(n_threads))
    if n_overflow:
        raise overflow_error(X, n_overflow, np.flatnonzero(np.isposinf(distance)))
    return int(n_invalid)


def partial_sums(X, sample_weight, centroids, labels, sums, counts, n_threads=1):
    """One Lloyd pass; see ``segone.kernels.reference.partial_sums``."""
    n, d = X.shape
    k = centroids.shape[0]
    chunk_rows, n_chunks = chunk_plan(n, k, d)
    psums, pcounts, pinertia = partial_buffers(n_chunks, k, d)
    use_w = sample_weight is not None
    w = sample_weight if use_w else np.empty(0, dtype=np.float64)
    tf, (xsg, xg, oscale, use_tf) = _transform_for(centroids, X.dtype, d)
    c2b, cnorm, _ = prepare_blocked(centroids, tf=tf)
    n_invalid, n_overflow = _partial_sums_kernel(
        X, w, use_w, c2b, cnorm, xsg, xg, oscale, use_tf, labels, psums, pcounts, pinertia, chunk_rows,
        int(n_threads)
    )
    if n_overflow:
        raise overflow_error(X, n_overflow, _overflow_rows(X, centroids, n_threads))
    inertia = merge_partials(psums, pcounts, pinertia, sums, counts)
    return inertia, int(n_invalid)


def minibatch(X, sample_weight, idx, centers, totals, state, batch_inertia, n_threads=1, centering=None):
    """Run the mini-batch steps of ``idx`` (S, B); see ``segone.kernels.reference.minibatch``.

    ``centering``: the ``_common.Centering`` of the fit (take it once from the
    initial centres, ``_common.centering(centers, X.dtype)``, and pass it to
    every call); None computes it from ``centers`` at this call."""
    use_w = sample_weight is not None
    w = sample_weight if use_w else np.empty(0, dtype=np.float64)
    sc = minibatch_scratch(X, idx.shape[1], centers.shape[0])
    tf, (xsg, xg, oscale, use_tf) = _transform_for(centers, X.dtype, X.shape[1], centering)
    done, status = _minibatch_kernel(
        X, w, use_w, idx, centers, totals, state, batch_inertia,
        sc["xb"], sc["c2b"], sc["cnorm"], sc["dist"], sc["lab"], sc["sums"], sc["counts"],
        sc["psum"], sc["pcount"], sc["pinert"], sc["pbad"], xsg, xg, oscale, use_tf, int(n_threads),
    )
    if status == MB_OVERFLOW:
        raise _minibatch_overflow_error(X, idx[done], centers, n_threads)
    return int(done), int(status)


def _minibatch_overflow_error(X, rows, centers, n_threads):
    """Error path of the mini-batch kernel: the DataError naming the batch rows that overflow."""
    Xb = np.ascontiguousarray(X[rows])
    C = np.ascontiguousarray(centers, dtype=X.dtype)
    bad = rows[_overflow_rows(Xb, C, n_threads)]
    return overflow_error(X, len(np.unique(bad)), np.unique(bad))


def profile_pass(codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start, day_us, n_threads=1,
                 block_rows=0):
    """Per-customer aggregates; see ``segone.kernels.reference.profile_pass``.

    ``block_rows`` caps the rows grouped at a time (0: max(2M, N / 8)); the results do not depend on it.
    """
    codes, ts, amount, cat, channel, window_start, n_cat, n_channel = prepare_profile_inputs(
        codes, n_groups, ts, amount, cat, n_cat, channel, n_channel, window_start
    )
    nt = max(1, int(n_threads))
    out = profile_outputs(int(n_groups), window_start.shape[0], n_cat, n_channel)
    off = np.zeros(int(n_groups) + 1, dtype=np.int64)
    _profile_kernel(
        codes, ts, amount, cat, channel, window_start, int(day_us), owner_ranges(int(n_groups), nt), off,
        out["orders"], out["first"], out["last"], out["spend"], out["spend_max"], out["gross"],
        out["first_day_spend"], out["purchase_days"], out["window_orders"], out["window_spend"],
        out["cat_spend"], out["null_cat_spend"], out["n_categories"], out["channel_orders"], nt, int(block_rows),
    )
    return out


def _session_kernel(
    const long long[::1] codes,      # IN (N,) group of every row, in [0, n_groups)
    const long long[::1] ts,         # IN (N,)
    unsigned long long gap,
    long long[::1] off,              # OUT (G + 1,) CSR offsets (zeroed)
    long long[::1] out,              # OUT (G,) sessions (zeroed)
    int n_threads,
    Py_ssize_t block_rows_cap,
):
    cdef Py_ssize_t n = codes.shape[0]
    cdef Py_ssize_t n_groups = out.shape[0]
    cdef Py_ssize_t i, g, t, a, e, m, q, maxm = 0
    cdef long long c, g0, g1, s
    cdef long long* b
    for i in range(n):
        g = codes[i]
        if g < 0 or g >= n_groups:
            raise ValueError(f"codes[{i}] = {g} is outside [0, {n_groups})")
        off[g + 1] += 1
    for g in range(n_groups):
        if off[g + 1] > maxm:
            maxm = off[g + 1]
        off[g + 1] += off[g]
    # grouped one block of consecutive groups at a time, as in the profile kernel (bounded scratch)
    cdef Py_ssize_t block_rows = _block_rows(maxm, n, block_rows_cap)
    buf_arr = np.empty(max(block_rows, 1), dtype=np.int64)
    cdef long long[::1] buf = buf_arr
    b = &buf[0]
    pos_arr = np.asarray(off[:n_groups]).copy()
    cdef long long[::1] pos = pos_arr
    cdef Py_ssize_t gb = 0, ge
    cdef long long base
    while gb < n_groups:
        ge = _block_end(off, gb, n_groups, block_rows)
        base = off[gb]
        with nogil:
            for t in prange(n_threads, schedule="static", chunksize=1, num_threads=n_threads):
                g0 = gb + (ge - gb) * t // n_threads
                g1 = gb + (ge - gb) * (t + 1) // n_threads
                for i in range(n):
                    c = codes[i]
                    if c >= g0 and c < g1:
                        b[pos[c] - base] = ts[i]
                        pos[c] += 1
            for g in prange(gb, ge, schedule="dynamic", chunksize=4096, num_threads=n_threads):
                a = off[g] - base
                e = off[g + 1] - base
                m = e - a
                if m == 0:
                    continue
                _sort_i64(&b[a], m)
                s = 1
                for q in range(a + 1, e):
                    # unsigned difference of sorted values: exact at any offset
                    if <unsigned long long> b[q] - <unsigned long long> b[q - 1] > gap:
                        s = s + 1
                out[g] = s
        gb = ge


def session_count(codes, n_groups, ts, gap, n_threads=1, block_rows=0):
    """Sessions per group; see ``segone.kernels.reference.session_count`` (``block_rows`` as in profile_pass)."""
    codes = np.ascontiguousarray(codes, dtype=np.int64)
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    if ts.shape[0] != codes.shape[0]:
        raise ValueError("codes and ts must have the same length")
    out = np.zeros(int(n_groups), dtype=np.int64)
    off = np.zeros(int(n_groups) + 1, dtype=np.int64)
    _session_kernel(codes, ts, max(0, int(gap)), off, out, max(1, int(n_threads)), int(block_rows))
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
    nt = max(1, int(n_threads))
    counts = np.zeros((int(n_groups), int(n_types)), dtype=np.int64)
    last = np.full((int(n_groups), int(n_types)), np.iinfo(np.int64).min, dtype=np.int64)
    _event_kernel(codes, ts, etype, counts, last, owner_ranges(int(n_groups), nt), nt)
    return counts, last


def score_columns(cols, masks, log1p, fill, lo, hi, quantile, knots, center, scale, weight, clip, bucket, X,
                  n_threads=1):
    """Fused feature transform; see ``segone.kernels.reference.score_columns``."""
    cols, masks, params = prepare_score_inputs(cols, masks, X, log1p, fill, lo, hi, quantile, knots, center, scale,
                                               weight)  # fmt: skip
    col_ptrs = np.array([c.ctypes.data for c in cols], dtype=np.uint64)
    mask_ptrs = np.array([mk.ctypes.data if mk.size else 0 for mk in masks], dtype=np.uint64)
    n = X.shape[0]
    block_bad = np.empty(-(-n // ASSIGN_BLOCK), dtype=np.int64)
    lg, mv, mk = (float(b) for b in bucket)
    _score_kernel(col_ptrs, mask_ptrs, *params, float(clip), lg, mv, mk, X, block_bad, max(1, int(n_threads)))
    bad = int(block_bad.min()) if block_bad.size else n
    return -1 if bad >= n else bad


def top_traits(S, group, n_groups, min_strength, k, idx, val, n_threads=1):
    """The k strongest traits per row, one per group; see ``segone.kernels.reference.top_traits``."""
    if idx.shape[1] == 0 or S.shape[0] == 0:
        return
    _top_traits_kernel(S, np.ascontiguousarray(group, dtype=np.int32), int(n_groups), float(min_strength), idx,
                       val, max(1, int(n_threads)))



# ---------------------------------------------------------------------------
# Personas: trait strengths of the numeric columns by table lookup (see the Numba twin)
def _persona_kernel(
    const unsigned long long[::1] col_ptrs,   # IN (D,) addresses of (N,) float64 columns
    const float[::1] lut, const long long[::1] lut_off, const double[::1] lut_low, const long long[::1] lut_len,
    double log_gamma, double min_value, double min_key,
    float[:, ::1] S,                          # OUT (N, D2) columns 0..D-1
    int n_threads,
):
    cdef Py_ssize_t n = S.shape[0]
    cdef Py_ssize_t d = col_ptrs.shape[0]
    cdef Py_ssize_t n_blocks = (n + ASSIGN_BLOCK - 1) // ASSIGN_BLOCK
    cdef Py_ssize_t b, i, j, r0, r1
    cdef long long ci, ln, off
    cdef double v, low
    cdef const double* col
    cdef float NAN_F = <float> (INFINITY - INFINITY)
    with nogil:
        for b in prange(n_blocks, schedule="static", num_threads=n_threads):
            r0 = b * ASSIGN_BLOCK
            r1 = min(r0 + ASSIGN_BLOCK, n)
            for j in range(d):
                col = <const double*> col_ptrs[j]
                ln = lut_len[j]
                off = lut_off[j]
                low = lut_low[j]
                for i in range(r0, r1):
                    v = col[i]
                    if ln == 0 or not (v - v == 0):  # NaN or infinity: no trait
                        S[i, j] = NAN_F
                        continue
                    ci = <long long> (_bucket_coord(v, log_gamma, min_value, min_key) - low)
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
    col_ptrs = np.array([c.ctypes.data for c in cols], dtype=np.uint64)
    lg, mv, mk = (float(b) for b in bucket)
    _persona_kernel(col_ptrs, *tables, lg, mv, mk, S, max(1, int(n_threads)))


# ---------------------------------------------------------------------------
# Quantile sketch: one sequential pass per column, without the GIL (callers
# run columns on their own threads); the moments are a sequential sum and the
# keys use the C library's log, as the Numba twin and the reference.

def sketch_summary(const double[::1] v, double log_gamma, long long min_key, double min_value,
                   long long[::1] pos, long long[::1] neg, n_threads=1):
    """A column's moments and sketch histogram; see ``segone.kernels.reference.sketch_summary``."""
    cdef Py_ssize_t i, n = v.shape[0]
    cdef long long width = pos.shape[0]
    cdef long long cnt = 0, zero = 0, k
    cdef long long plo = pos.shape[0], phi = -1, nlo = neg.shape[0], nhi = -1
    cdef double x, a, dx, x0 = 0.0, s1 = 0.0, s2 = 0.0, mx = -INFINITY
    with nogil:
        for i in range(n):
            x = v[i]
            if not isfinite(x):
                continue
            if cnt == 0:
                x0 = x
            cnt += 1
            dx = x - x0
            s1 += dx
            s2 += dx * dx
            if x > mx:
                mx = x
            a = fabs(x)
            if a < min_value:
                zero += 1
                continue
            k = <long long> ceil(log(a) / log_gamma) - min_key
            if k < 0:
                k = 0
            elif k > width - 1:
                k = width - 1
            if x > 0:
                pos[k] += 1
                if k < plo:
                    plo = k
                if k > phi:
                    phi = k
            else:
                neg[k] += 1
                if k < nlo:
                    nlo = k
                if k > nhi:
                    nhi = k
    return cnt, s1, s2, x0, mx, zero, plo, phi, nlo, nhi


def sketch_keys(const double[::1] mag, double log_gamma, long long[::1] out, n_threads=1):
    """Bucket keys of magnitudes; see ``segone.kernels.reference.sketch_keys``."""
    cdef Py_ssize_t i, n = mag.shape[0]
    with nogil:
        for i in range(n):
            out[i] = <long long> ceil(log(mag[i]) / log_gamma)


# ---------------------------------------------------------------------------
# Tracking: the LSD radix argsort of int64 ids (11-bit digits of the key with
# its sign bit flipped, so negative ids sort first; digits the same for every
# key are skipped), sequential passes without the GIL.

ctypedef fused order_t:
    int
    long long


def _radix_argsort_kernel(const long long[::1] keys, order_t[::1] ia, order_t[::1] ib, long long[::1] out):
    """Sorted keys into ``out``, the order into ``ia`` (returns 0) or ``ib`` (returns 1)."""
    cdef Py_ssize_t n = keys.shape[0], i, p, s
    cdef int bits = 11, d, first = 1, which = 0
    cdef Py_ssize_t R = 2048, D = 6, b
    cdef unsigned long long sign = (<unsigned long long> 1) << 63, mask = 2047, v, shift
    if n == 0:
        return 0
    hist_arr = np.zeros((D, R), dtype=np.int64)
    cdef long long[:, ::1] hist = hist_arr
    ka_arr = np.empty(n, dtype=np.uint64)
    kb_arr = np.empty(n, dtype=np.uint64)
    cdef unsigned long long[::1] ka_v = ka_arr
    cdef unsigned long long[::1] kb_v = kb_arr
    off_arr = np.empty(R, dtype=np.int64)
    cdef long long[::1] off = off_arr
    cdef unsigned long long* ka = &ka_v[0]
    cdef unsigned long long* kb = &kb_v[0]
    cdef unsigned long long* tk
    cdef order_t* oa = &ia[0]
    cdef order_t* ob = &ib[0]
    cdef order_t* to
    with nogil:
        for i in range(n):
            v = (<unsigned long long> keys[i]) ^ sign
            ka[i] = v
            for d in range(D):
                hist[d, <Py_ssize_t> ((v >> (d * bits)) & mask)] += 1
        for d in range(D):
            shift = d * bits
            if hist[d, <Py_ssize_t> ((ka[0] >> shift) & mask)] == n:
                continue
            s = 0
            for b in range(R):
                off[b] = s
                s = s + hist[d, b]
            for i in range(n):
                v = ka[i]
                b = <Py_ssize_t> ((v >> shift) & mask)
                p = off[b]
                kb[p] = v
                if first:
                    ob[p] = <order_t> i
                else:
                    ob[p] = oa[i]
                off[b] = p + 1
            first = 0
            tk = ka
            ka = kb
            kb = tk
            to = oa
            oa = ob
            ob = to
            which = 1 - which
        if first:
            for i in range(n):
                oa[i] = <order_t> i
        for i in range(n):
            out[i] = <long long> (ka[i] ^ sign)
    return which


def radix_argsort(keys, ia, ib, n_threads=1):
    """(keys in increasing order, the stable order); see ``segone.kernels.reference.radix_argsort``."""
    out = np.empty(keys.shape[0], dtype=np.int64)
    which = _radix_argsort_kernel(keys, ia, ib, out)
    return out, (ib if which else ia)


ctypedef fused prev_order_t:
    int
    long long


ctypedef fused new_order_t:
    int
    long long


def _merge_moves_kernel(const long long[::1] P, const long long[::1] N, const prev_order_t[::1] op,
                        const new_order_t[::1] on, const long long[::1] ps, const long long[::1] ns,
                        const double[::1] sp, const double[::1] sn, const long long[::1] lp, const long long[::1] ln,
                        long long[::1] ids, int[::1] prev, int[::1] new, signed char[::1] status, double[::1] spend,
                        long long[:, ::1] counts, double[:, ::1] csum):
    cdef Py_ssize_t nP = P.shape[0], nN = N.shape[0], i = 0, j = 0, u = 0, ri, rj, r, c
    cdef bint use_op = op.shape[0] == nP and nP > 0
    cdef bint use_on = on.shape[0] == nN and nN > 0
    cdef bint use_sp = sp.shape[0] == nP and nP > 0
    cdef bint use_sn = sn.shape[0] == nN and nN > 0
    cdef bint has_spend = spend.shape[0] > 0
    cdef Py_ssize_t pa_ = counts.shape[0] - 1, na_ = counts.shape[1] - 1
    cdef long long a, b
    cdef double v, nan = INFINITY - INFINITY
    cdef Py_ssize_t bad = 0
    with nogil:
        for i in range(1, nP):
            if P[i] <= P[i - 1]:
                bad = -1
                break
        if bad == 0:
            for j in range(1, nN):
                if N[j] <= N[j - 1]:
                    bad = -2
                    break
        i = 0
        j = 0
        while bad == 0 and (i < nP or j < nN):
            if j >= nN or (i < nP and P[i] < N[j]):
                ri = op[i] if use_op else i
                a = ps[ri]
                ids[u] = P[i]
                prev[u] = <int> a
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
                new[u] = <int> b
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
                prev[u] = <int> a
                new[u] = <int> b
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
    return bad if bad else u


def merge_moves(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts, csum, n_threads=1):
    """The moves of two runs joined by integer id; see ``segone.kernels.reference.merge_moves``."""
    return int(_merge_moves_kernel(P, N, op, on, ps, ns, sp, sn, lp, ln, ids, prev, new, status, spend, counts,
                                   csum))


# --------------------------------------------------------------- bootstrap (campaign effects)
cdef void _bootstrap_kernel(const unsigned long long[::1] hashes, const long long[::1] cell,
                            const long long[::1] vcell, const double[:, ::1] vals,
                            const unsigned long long[::1] keys, const double[::1] cdf, double[:, ::1] boot,
                            double[:, :, ::1] boot_values, int n_threads) noexcept nogil:
    # replicates are shared out over the threads: each owns its rows of boot and boot_values and adds the rows in
    # row order, so the sums have the reference's bits whatever the thread count
    cdef Py_ssize_t n = vals.shape[0], q = vals.shape[1], nb = keys.shape[0], nc = cdf.shape[0]
    cdef Py_ssize_t i, b, j, k
    cdef unsigned long long x, key
    cdef long long c, v
    cdef double u, w
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        key = keys[b]
        for i in range(n):
            x = hashes[i] ^ key
            x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
            x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
            x = x ^ (x >> 31)
            u = <double> (x >> 11) * (1.0 / 9007199254740992.0)
            k = 0
            while k < nc and cdf[k] <= u:
                k = k + 1
            w = <double> k
            c = cell[i]
            v = vcell[i]
            boot[b, c] += w
            for j in range(q):
                boot_values[b, v, j] += w * vals[i, j]


def bootstrap_sums(hashes, cell, vcell, vals, seed, n_boot, n_cells, n_vcells, n_threads=1):
    """Poisson-bootstrap replicate sums; see ``segone.kernels.reference.bootstrap_sums``."""
    from segone.kernels import reference as _ref

    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    cell = np.ascontiguousarray(cell, dtype=np.int64)
    vcell = np.ascontiguousarray(vcell, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    vals = np.ascontiguousarray(vals[:, None] if vals.ndim == 1 else vals)
    n = hashes.shape[0]
    if cell.shape[0] != n or vcell.shape[0] != n:
        raise ValueError("hashes, cell, vcell and vals must have the same length")
    if n and (cell.min() < 0 or cell.max() >= n_cells or vcell.min() < 0 or vcell.max() >= n_vcells):
        raise ValueError("cell and vcell must lie in [0, n_cells) and [0, n_vcells)")
    keys = np.array([_ref.replicate_key(seed, b) for b in range(int(n_boot))], dtype=np.uint64)
    boot = np.zeros((int(n_boot), int(n_cells)))
    boot_values = np.zeros((int(n_boot), int(n_vcells), vals.shape[1]))
    cdf = np.ascontiguousarray(_ref.POISSON1_CDF, dtype=np.float64)
    _bootstrap_kernel(hashes, cell, vcell, vals, keys, cdf, boot, boot_values, max(1, int(n_threads)))
    return boot, boot_values


# --------------------------------------------------------------- sweep statistics (see the Numba twin)
# One sequential pass without the GIL: rows in order, features in order, float64 sums (the reference's bits).

def _sweep_accumulate_kernel(
    const floating[:, ::1] X,         # IN  (N, D)
    const long long[::1] labels,      # IN  (N,) in [0, k)
    const double[::1] shift,          # IN  (D,)
    const double[:, ::1] Ms,          # IN  (k, D) the shifted segment means
    bint want_dist, bint want_sums,
    double[::1] counts,               # OUT (+=) (k,)
    double[:, ::1] sums,              # OUT (+=) (k, D)
    double[::1] sumsq,                # OUT (+=) (k,)
    double[::1] dist,                 # OUT (+=) (k,)
):
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, f
    cdef long long lab
    cdef double tot = 0.0, s2, t2, v, w
    with nogil:
        for i in range(n):
            lab = labels[i]
            s2 = 0.0
            t2 = 0.0
            for f in range(d):
                v = <double> X[i, f] - shift[f]
                s2 = s2 + v * v
                if want_sums:
                    sums[lab, f] += v
                if want_dist:
                    w = v - Ms[lab, f]
                    t2 = t2 + w * w
            sumsq[lab] += s2
            if want_sums:
                counts[lab] += 1.0
            if want_dist:
                dist[lab] += sqrt(t2)
                tot = tot + t2
    return tot


def sweep_accumulate(X, labels, shift, means, want_dist, want_sums, counts, sums, sumsq, dist, n_threads=1):
    """Per-segment counts, sums, sums of squares and distances; see ``segone.kernels.reference.sweep_accumulate``."""
    X, labels, shift, means = prepare_sweep_inputs(X, labels, shift, means, counts, sums, sumsq, dist)
    return float(_sweep_accumulate_kernel(X, labels, shift, means, bool(want_dist), bool(want_sums), counts, sums,
                                          sumsq, dist))


# --------------------------------------------------------------- persona sentences (see the Numba twin)
# The slots' entries and numbers (sequential), then the sentences written in chunks of rows on OpenMP threads,
# each chunk from its own region of the buffer, then moved together: the same bytes whatever the chunks.

cdef inline double _pct_rank(double q) noexcept nogil:
    # Python's min / max rule (the first argument unless the second is strictly beyond it): NaN stays NaN
    cdef double r = ceil(100.0 * q - 1e-9)
    if 1.0 > r:
        r = 1.0
    if 100.0 < r:
        r = 100.0
    return r


def _slots_kernel(
    const long long[:, ::1] feat,      # IN  (N, k) column per slot, -1: none
    const float[:, ::1] val,           # IN  (N, k) signed strengths
    const double[:, ::1] values,       # IN  (N, k) the slots' values
    long long n_num,                   # columns below this are numeric
    const double[::1] med,             # IN  per-column medians
    const double[::1] row_med,         # IN  (N,) per-row medians, or (0,)
    const long long[:, ::1] kind,      # IN  (E, W) placeholder kinds
    long long base,
    long long[:, ::1] entry,           # OUT (N, k)
    double[:, :, ::1] nums,            # OUT (N, k, W' <= W)
    double[:, ::1] pct,                # OUT (N, k)
    const long long[:, ::1] swap,      # IN  (E, 3) or (0, 3)
    const double[::1] far_ratio,       # IN  (E,) or (0,)
    const long long[::1] vdec,         # IN  (E,) or (0,)
):
    cdef Py_ssize_t n = feat.shape[0], k = feat.shape[1], width = nums.shape[2], i, s, q
    cdef long long j, e, kd
    cdef bint has_rows = row_med.shape[0] > 0, has_swap = swap.shape[0] > 0
    cdef double st, v, m, p, scale, r, NAN_D = INFINITY - INFINITY
    with nogil:
        for i in range(n):
            for s in range(k):
                j = feat[i, s]
                pct[i, s] = NAN_D
                for q in range(width):
                    nums[i, s, q] = 0.0
                if j < 0:
                    entry[i, s] = -1
                    continue
                st = <double> val[i, s]
                e = base + 2 * j + (1 if st > 0 else 0)
                if j < n_num and has_swap:  # the variants: far above typical, a value that reads 1 or 0
                    v = values[i, s]
                    m = row_med[i] if has_rows else med[j]
                    if swap[e, 2] >= 0 and m > 0 and v / m >= far_ratio[e]:
                        e = swap[e, 2]
                    else:
                        scale = 10.0 ** <double> vdec[e]
                        r = rint(v * scale)
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
                        nums[i, s, q] = v / (row_med[i] if has_rows else med[j])
                    elif kd == 3:
                        nums[i, s, q] = v * 100.0
                    elif kd == 4:
                        nums[i, s, q] = _pct_rank(1.0 - p)
                    elif kd == 5:
                        nums[i, s, q] = _pct_rank(p)


def persona_slots(feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct,
                  n_threads=1):
    """Phrase entries and numbers of every trait slot; see ``segone.kernels.reference.persona_slots``."""
    feat, val, values, med, row_med, kind, swap, far_ratio, vdec = prepare_slots_inputs(
        feat, val, values, medians, row_medians, kind, entry_base, swap, far_ratio, vdec, entry, nums, pct)
    _slots_kernel(feat, val, values, len(medians), med, row_med, kind, int(entry_base), entry, nums, pct, swap,
                  far_ratio, vdec)


cdef inline Py_ssize_t _digits(long long v, unsigned char[::1] out, Py_ssize_t pos) noexcept nogil:
    """Write the non-negative integer v; return the new position."""
    cdef Py_ssize_t start = pos, i, j
    cdef unsigned char t
    if v == 0:
        out[pos] = 48
        return pos + 1
    while v > 0:
        out[pos] = <unsigned char> (48 + v % 10)
        v = v // 10
        pos += 1
    i = start
    j = pos - 1
    while i < j:
        t = out[i]
        out[i] = out[j]
        out[j] = t
        i += 1
        j -= 1
    return pos


cdef inline Py_ssize_t _number(double x, long long d, unsigned char[::1] out, Py_ssize_t pos) noexcept nogil:
    cdef double scaled, p10d = 10.0 ** <double> d
    cdef long long iv, p10 = 1, frac, q
    if not isfinite(x) or fabs(x) >= 9e17 / p10d:
        out[pos] = 63  # "?": not representable (never expected: numbers are checked upstream)
        return pos + 1
    scaled = rint(x * p10d)
    if scaled < 0:
        out[pos] = 45  # "-"
        pos += 1
        scaled = -scaled
    iv = <long long> scaled
    for q in range(d):
        p10 = p10 * 10
    pos = _digits(iv // p10, out, pos)
    if d > 0:
        out[pos] = 46  # "."
        pos += 1
        frac = iv % p10
        q = d - 1
        while q >= 0:
            out[pos + q] = <unsigned char> (48 + frac % 10)
            frac = frac // 10
            q -= 1
        pos += d
    return pos


ctypedef fused offset_t:
    int
    long long


cdef Py_ssize_t _sentence_rows(
    Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t pos, const long long[:, ::1] entry, const double[:, :, ::1] nums,
    const long long[:, ::1] cat, const long long[:, ::1] lit_off, const long long[:, ::1] lit_len,
    const unsigned char[::1] lit_bytes, const long long[:, ::1] kind, const long long[:, ::1] dec,
    const long long[::1] cat_off, const unsigned char[::1] cat_bytes, const unsigned char[::1] nothing,
    unsigned char[::1] out, offset_t[::1] offsets,
) noexcept nogil:
    """Rows r0..r1-1 written from out[pos]; returns the end."""
    cdef Py_ssize_t k = entry.shape[1], width = lit_off.shape[1] - 1, i, s, p, b, start
    cdef long long e, o, ln, kd, c, o2, o3
    for i in range(r0, r1):
        offsets[i] = <offset_t> pos
        start = pos
        for s in range(k):
            e = entry[i, s]
            if e < 0:
                continue
            if pos > start:
                out[pos] = 59  # "; "
                out[pos + 1] = 32
                pos += 2
            for p in range(width + 1):
                o = lit_off[e, p]
                ln = lit_len[e, p]
                for b in range(ln):
                    out[pos + b] = lit_bytes[o + b]
                pos += ln
                if p == width:
                    break
                kd = kind[e, p]
                if kd == 6:  # the category value
                    c = cat[i, s]
                    if c >= 0:
                        o2 = cat_off[c]
                        o3 = cat_off[c + 1]
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


def _sentences_kernel(
    const long long[:, ::1] entry, const double[:, :, ::1] nums, const long long[:, ::1] cat,
    const long long[:, ::1] lit_off, const long long[:, ::1] lit_len, const unsigned char[::1] lit_bytes,
    const long long[:, ::1] kind, const long long[:, ::1] dec, const long long[::1] cat_off,
    const unsigned char[::1] cat_bytes, const unsigned char[::1] nothing,
    unsigned char[::1] out,            # OUT the sentences end to end
    offset_t[::1] offsets,             # OUT (N + 1,)
    Py_ssize_t n_chunks, Py_ssize_t row_cap, int n_threads,
):
    cdef Py_ssize_t n = entry.shape[0], per = (n + n_chunks - 1) // n_chunks, t, r0, r1, src, shift, b, i, pos = 0
    ends_arr = np.zeros(n_chunks, dtype=np.int64)
    cdef long long[::1] ends = ends_arr
    with nogil:
        for t in prange(n_chunks, schedule="static", num_threads=n_threads):
            r0 = min(t * per, n)
            r1 = min(r0 + per, n)
            ends[t] = _sentence_rows(r0, r1, r0 * row_cap, entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec,
                                     cat_off, cat_bytes, nothing, out, offsets)
        for t in range(n_chunks):  # left moves only: a forward copy is safe
            r0 = min(t * per, n)
            r1 = min(r0 + per, n)
            src = r0 * row_cap
            shift = src - pos
            if shift:
                for b in range(src, ends[t]):
                    out[b - shift] = out[b]
                for i in range(r0, r1):
                    offsets[i] = <offset_t> (offsets[i] - shift)
            pos = ends[t] - shift
        offsets[n] = <offset_t> pos
    return pos


def persona_sentences(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes, nothing, out,
                      offsets, n_chunks, row_cap, n_threads=1):
    """The persona sentences as an Arrow string buffer; see ``segone.kernels.reference.persona_sentences``."""
    args = prepare_sentence_inputs(entry, nums, cat, lit_off, lit_len, lit_bytes, kind, dec, cat_off, cat_bytes,
                                   nothing, out, offsets, n_chunks, row_cap)
    return int(_sentences_kernel(*args, max(1, int(n_threads))))
