/* Plain-C variant of the nearest-centroid kernel (level -1: "scalar").
 *
 * Same signature, layout and semantics as simd_assign_impl.h (blocked
 * centroids c2b, padded cnorm at +inf, strict comparisons in increasing
 * centroid order so ties go to the lowest index), without vector
 * extensions: it is the fallback for compilers that have none (MSVC) and
 * the portable oracle the SIMD variants are tested against.
 * Included twice by simd_assign.h with FT and SUFFIX defined.
 */

static Py_ssize_t SG_CAT(sg_assign_rows_scalar_, SUFFIX)(
    const FT *X, Py_ssize_t n, Py_ssize_t d,
    const FT *c2b, const FT *cnorm, Py_ssize_t kp,
    int *labels, FT *dist, FT *margin, FT *buf)
{
    Py_ssize_t n_invalid = 0;
    (void)buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        const FT *x = X + i * d;
        FT z = 0;
        double s = 0.0;
        for (Py_ssize_t j = 0; j < d; j++) {
            z += x[j] * (FT)0;  /* NaN for NaN / inf */
            s += (double)x[j] * (double)x[j];
        }
        if (!(z == 0)) {
            labels[i] = -1;
            dist[i] = (FT)NAN;
            if (margin) margin[i] = (FT)NAN;
            n_invalid++;
            continue;
        }
        FT best = (FT)INFINITY, second = (FT)INFINITY;
        Py_ssize_t best_k = 0;
        for (Py_ssize_t k0 = 0; k0 < kp; k0 += SG_KC_PAD) {
            const FT *cb = c2b + k0 * d;
            for (Py_ssize_t c = 0; c < SG_KC_PAD; c++) {
                FT sc = cnorm[k0 + c];
                for (Py_ssize_t j = 0; j < d; j++) sc += x[j] * cb[j * SG_KC_PAD + c];
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
        double dd = (double)best + s;
        dist[i] = (FT)(dd > 0.0 ? dd : 0.0);
        if (margin) margin[i] = second - best;
    }
    return n_invalid;
}
