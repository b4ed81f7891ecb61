/* One variant of the register-blocked nearest-centroid kernel.
 *
 * Included several times by simd_assign.h with these macros defined:
 *   FT      float type (float or double)
 *   IT      integer type of the same width (int32_t or int64_t)
 *   VW      lanes per vector
 *   RV      row vectors per group (rows per group G = RV * VW)
 *   KC      centroids per register block (centroids are padded to KC_PAD)
 *   SUFFIX  name suffix of the generated function
 *   TARGET  function attribute selecting the instruction set
 *
 * Layout ("vectorise over rows"): a group of G rows is transposed into a
 * scratch buffer buf[j * G + r], so that one vector holds feature j of VW
 * consecutive rows.  For every block of KC centroids, RV * KC accumulators
 * start at ||c||^2 and receive x_j * (-2 c_j) for j = 0..D-1 (one FMA per
 * feature, the centroid value broadcast).  Each lane then keeps its running
 * best / second-best score and index: comparisons are strict and centroids
 * are scanned in increasing order, so ties resolve to the lowest index,
 * exactly as in the NumPy reference.  No horizontal reductions are needed.
 *
 * Centroids come blocked: c2b[(k0 / KC) * D * KC + j * KC + c] = -2 c[k0 + c][j],
 * cnorm[k] = ||c_k||^2, with padded centroids at cnorm = +inf (never chosen).
 *
 * Centring on the fly (xsg != NULL): the rows are transformed while they are
 * transposed, x' = x * xg - xsg = (x - shift) * xg (xg a power of two, so
 * one rounding, the same with or without FMA contraction), and the centroids
 * come transformed the same way (see segone.kernels._common.centering).  The
 * scores and ||x'||^2 are then of the centred data, whose magnitudes are the
 * data's spread, not its offset; distances and margins are scaled back by
 * oscale = 1 / xg^2 (exact) in float64.  xsg == NULL: no transform (oscale 1).
 *
 * Overflow: a finite row whose distance is not finite or beyond the largest
 * FT (or whose transformed values are not finite) gets distance +inf and is
 * counted in .overflow; the caller raises.  Rows holding NaN / inf get label
 * -1, distance and margin NaN and are counted in .invalid.
 */

#define SG_FN SG_CAT(sg_assign_rows_, SUFFIX)

static TARGET sg_counts SG_FN(
    const FT *X, Py_ssize_t n, Py_ssize_t d,
    const FT *c2b, const FT *cnorm, Py_ssize_t kp,
    const FT *xsg, FT xg, double oscale,
    int *labels, FT *dist, FT *margin, FT *buf)
{
    typedef FT vt __attribute__((vector_size(VW * sizeof(FT))));
    typedef IT vi __attribute__((vector_size(VW * sizeof(FT))));
    typedef double vd __attribute__((vector_size(VW * sizeof(double))));
    typedef int vi32 __attribute__((vector_size(VW * sizeof(int))));
    enum { G = RV * VW };
    sg_counts cnt = {0, 0};
    const vt gv = (vt){0} + xg;

    for (Py_ssize_t i0 = 0; i0 < n; i0 += G) {
        Py_ssize_t g = (n - i0 < G) ? n - i0 : G;

        /* Transpose the group (buf[j * G + r] = x'[i0 + r, j], padding rows 0,
         * x' = x * xg - xsg when centring) and, while the columns are in
         * registers, accumulate ||x'||^2 per lane in float64 (NaN / inf when
         * a value is: the distance check below then flags the row). */
        vd xn[RV];
        for (int v = 0; v < RV; v++) {
            Py_ssize_t r0 = (Py_ssize_t)v * VW;
            vd nrm = (vd){0};
#if SG_HAVE_SHUFFLE
            for (Py_ssize_t jb = 0; jb < d; jb += VW) {
                Py_ssize_t w = (d - jb < VW) ? d - jb : VW;
                vt rows[VW];
                if (w == VW && r0 + VW <= g) {
                    /* full block: fixed-size loads (no memcpy calls) */
                    for (int r = 0; r < VW; r++) memcpy(&rows[r], X + (i0 + r0 + r) * d + jb, sizeof(vt));
                } else {
                    for (int r = 0; r < VW; r++) {
                        rows[r] = (vt){0};
                        if (r0 + r < g) memcpy(&rows[r], X + (i0 + r0 + r) * d + jb, (size_t)w * sizeof(FT));
                    }
                }
                SG_CAT(SG_TRANSPOSE_, VW)(rows);
                for (Py_ssize_t c = 0; c < w; c++) {
                    vt col = rows[c];
                    if (xsg) col = col * gv - ((vt){0} + xsg[jb + c]);
                    memcpy(buf + (jb + c) * G + r0, &col, sizeof(vt));
                    vd c64 = __builtin_convertvector(col, vd);
                    nrm += c64 * c64;
                }
            }
#else
            for (int r = 0; r < VW; r++) {
                if (r0 + r < g) {
                    const FT *x = X + (i0 + r0 + r) * d;
                    for (Py_ssize_t j = 0; j < d; j++) buf[j * G + r0 + r] = x[j];
                } else {
                    for (Py_ssize_t j = 0; j < d; j++) buf[j * G + r0 + r] = 0;
                }
            }
            for (Py_ssize_t j = 0; j < d; j++) {
                vt col;
                memcpy(&col, buf + j * G + r0, sizeof(vt));
                if (xsg) {
                    col = col * gv - ((vt){0} + xsg[j]);
                    memcpy(buf + j * G + r0, &col, sizeof(vt));
                }
                vd c64 = __builtin_convertvector(col, vd);
                nrm += c64 * c64;
            }
#endif
            xn[v] = nrm;
        }
        vt best[RV], second[RV];
        vi bidx[RV];
        for (int v = 0; v < RV; v++) {
            best[v] = (vt){0} + (FT)INFINITY;
            second[v] = best[v];
            bidx[v] = (vi){0};
        }

        for (Py_ssize_t k0 = 0; k0 < kp; k0 += KC) {
            const FT *cb = c2b + k0 * d;     /* block k0 / KC: (d, KC) */
            vt acc[RV][KC];
#pragma GCC unroll 16
            for (int c = 0; c < KC; c++) {
#pragma GCC unroll 4
                for (int v = 0; v < RV; v++) acc[v][c] = (vt){0} + cnorm[k0 + c];
            }
            for (Py_ssize_t j = 0; j < d; j++) {
                vt xv[RV];
#pragma GCC unroll 4
                for (int v = 0; v < RV; v++) memcpy(&xv[v], buf + j * G + v * VW, sizeof(vt));
                const FT *cj = cb + j * KC;
#pragma GCC unroll 16
                for (int c = 0; c < KC; c++) {
                    FT cs = cj[c];
#pragma GCC unroll 4
                    for (int v = 0; v < RV; v++) acc[v][c] += xv[v] * cs;
                }
            }
            if (margin) {
#pragma GCC unroll 16
                for (int c = 0; c < KC; c++) {
#pragma GCC unroll 4
                    for (int v = 0; v < RV; v++) {
                        vt a = acc[v][c];
                        vi m = a < best[v];
                        vi ms = a < second[v];
                        vt sec_alt = (vt)(((vi)a & ms) | ((vi)second[v] & ~ms));
                        second[v] = (vt)(((vi)best[v] & m) | ((vi)sec_alt & ~m));
                        best[v] = (vt)(((vi)a & m) | ((vi)best[v] & ~m));
                        bidx[v] = (((vi){0} + (IT)(k0 + c)) & m) | (bidx[v] & ~m);
                    }
                }
            } else {
#pragma GCC unroll 16
                for (int c = 0; c < KC; c++) {
#pragma GCC unroll 4
                    for (int v = 0; v < RV; v++) {
                        vt a = acc[v][c];
                        vi m = a < best[v];
                        best[v] = (vt)(((vi)a & m) | ((vi)best[v] & ~m));
                        bidx[v] = (((vi){0} + (IT)(k0 + c)) & m) | (bidx[v] & ~m);
                    }
                }
            }
        }

        /* outputs: distance = (best + ||x'||^2) * oscale in float64, rounded
         * to FT (+inf beyond its range), clamped at 0; zchk turns NaN when a
         * distance is not finite */
        vt zchk = (vt){0};
        FT dchk[G];  /* the unclamped distances, for the rare path */
        for (int v = 0; v < RV; v++) {
            Py_ssize_t base = i0 + (Py_ssize_t)v * VW;
            if (base >= n) break;
            vd dd = __builtin_convertvector(best[v], vd) + xn[v];
            if (oscale != 1.0) dd *= oscale;
            vt du = __builtin_convertvector(dd, vt);  /* +inf beyond FT's range */
            zchk += du * (FT)0;
            memcpy(dchk + v * VW, &du, sizeof(vt));
            vt dv = (vt)((vi)du & (du > (vt){0}));  /* clamp at 0 */
            vi32 lab = __builtin_convertvector(bidx[v], vi32);
            vt mg = second[v] - best[v];
            if (margin && oscale != 1.0) mg = __builtin_convertvector(__builtin_convertvector(mg, vd) * oscale, vt);
            if (base + VW <= n) {
                memcpy(labels + base, &lab, sizeof(vi32));
                memcpy(dist + base, &dv, sizeof(vt));
                if (margin) memcpy(margin + base, &mg, sizeof(vt));
            } else {
                for (Py_ssize_t l = 0; base + l < n; l++) {
                    labels[base + l] = lab[l];
                    dist[base + l] = dv[l];
                    if (margin) margin[base + l] = mg[l];
                }
            }
        }
        /* one horizontal sum per group: NaN when a distance is not finite
         * (a row holding NaN / inf, or a distance beyond FT's range) */
        FT ztot = 0;
        for (int l = 0; l < VW; l++) ztot += zchk[l];
        if (!(ztot == 0)) {
            /* rare path: rows holding NaN / inf (invalid), finite rows whose
             * distance cannot be represented (overflow) */
            for (Py_ssize_t r = 0; r < g; r++) {
                Py_ssize_t i = i0 + r;
                const FT *x = X + i * d;
                FT z = 0, zt = 0;
                for (Py_ssize_t j = 0; j < d; j++) z += x[j] * (FT)0;
                if (!(z == 0)) {
                    labels[i] = -1;
                    dist[i] = (FT)NAN;
                    if (margin) margin[i] = (FT)NAN;
                    cnt.invalid++;
                    continue;
                }
                for (Py_ssize_t j = 0; j < d; j++) zt += buf[j * G + r] * (FT)0;
                if (!(zt == 0) || !(dchk[r] * (FT)0 == 0)) {
                    dist[i] = (FT)INFINITY;
                    if (margin) margin[i] = (FT)NAN;
                    cnt.overflow++;
                }
            }
        }
    }
    return cnt;
}

#undef SG_FN
