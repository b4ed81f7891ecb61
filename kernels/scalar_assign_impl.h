/* Plain-C variant of the nearest-centroid kernel (level -1: "scalar").
 *
 * Same signature, layout and semantics as simd_assign_impl.h (blocked
 * centroids c2b, padded cnorm at +inf, strict comparisons in increasing
 * centroid order so ties go to the lowest index, rows centred on the fly as
 * x' = x * xg - xsg when xsg != NULL, distances scaled back by oscale,
 * overflow rows at distance +inf counted in .overflow), without vector
 * extensions: it is the fallback for compilers that have none (MSVC) and
 * the portable oracle the SIMD variants are tested against.
 * Included twice by simd_assign.h with FT and SUFFIX defined.
 */

static sg_counts SG_CAT(sg_assign_rows_scalar_, SUFFIX)(
    const FT *X, Py_ssize_t n, Py_ssize_t d,
    const FT *c2b, const FT *cnorm, Py_ssize_t kp,
    const FT *xsg, FT xg, double oscale,
    int *labels, FT *dist, FT *margin, FT *buf)
{
    sg_counts cnt = {0, 0};
    const double ftmax = (sizeof(FT) == sizeof(float)) ? (double)FLT_MAX : DBL_MAX;
    for (Py_ssize_t i = 0; i < n; i++) {
        const FT *x = X + i * d;
        FT z = 0, zt = 0;
        double s = 0.0;
        for (Py_ssize_t j = 0; j < d; j++) {
            z += x[j] * (FT)0;  /* NaN for NaN / inf */
            FT v = xsg ? x[j] * xg - xsg[j] : x[j];
            buf[j] = v;
            zt += v * (FT)0;
            s += (double)v * (double)v;
        }
        if (!(z == 0)) {
            labels[i] = -1;
            dist[i] = (FT)NAN;
            if (margin) margin[i] = (FT)NAN;
            cnt.invalid++;
            continue;
        }
        const FT *xp = buf;
        FT best = (FT)INFINITY, second = (FT)INFINITY;
        Py_ssize_t best_k = 0;
        for (Py_ssize_t k0 = 0; k0 < kp; k0 += SG_KC_PAD) {
            const FT *cb = c2b + k0 * d;
            for (Py_ssize_t c = 0; c < SG_KC_PAD; c++) {
                FT sc = cnorm[k0 + c];
                for (Py_ssize_t j = 0; j < d; j++) sc += xp[j] * cb[j * SG_KC_PAD + c];
                if (sc < best) {
                    second = best;
                    best = sc;
                    best_k = k0 + c;
                } else if (sc < second) {
                    second = sc;
                }
            }
        }
        labels[i] = (int)best_k;
        double dd = ((double)best + s) * oscale;
        if (!(dd <= ftmax && dd >= -ftmax) || !(zt == 0)) {  /* finite row, distance not representable */
            dist[i] = (FT)INFINITY;
            if (margin) margin[i] = (FT)NAN;
            cnt.overflow++;
            continue;
        }
        dist[i] = (FT)(dd > 0.0 ? dd : 0.0);
        if (margin) margin[i] = (FT)((double)(second - best) * oscale);
    }
    return cnt;
}
