/* Register-blocked nearest-centroid kernels with run-time CPU dispatch.
 *
 * No -march=native: every variant is compiled with its own target attribute
 * and the best one the CPU supports is chosen at run time
 * (__builtin_cpu_supports).  Variants:
 *
 *   level 2  AVX-512F  (16 float / 8 double lanes, 2 x 8 register block)
 *   level 1  AVX2+FMA  ( 8 float / 4 double lanes, 1 x 8 register block)
 *   level 0  generic   (16-byte vectors: SSE2 on x86-64, NEON on arm64)
 *
 * level -1 plain C (scalar_assign_impl.h), every compiler
 *
 * Compilers without GCC/Clang vector extensions and __builtin_convertvector
 * (MSVC, GCC < 9) get SG_SIMD_AVAILABLE 0 and run the plain-C variant.  The in-register transpose needs __builtin_shufflevector
 * (GCC >= 12, Clang); otherwise the group is transposed with scalar copies.
 */
#ifndef SEGONE_SIMD_ASSIGN_H
#define SEGONE_SIMD_ASSIGN_H

#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SG_CAT_(a, b) a##b
#define SG_CAT(a, b) SG_CAT_(a, b)

/* rows per group never exceed this (scratch buffer = d * SG_GROUP_MAX values) */
#define SG_GROUP_MAX 32
/* centroids are padded to a multiple of this */
#define SG_KC_PAD 8

/* What a row kernel call found besides the labels: rows holding NaN / inf
 * (label -1, distance NaN) and finite rows whose squared distance cannot be
 * represented in the data's float type (distance +inf; the caller raises). */
typedef struct {
    Py_ssize_t invalid;
    Py_ssize_t overflow;
} sg_counts;

/* ---- plain C (level -1), every compiler ---- */
#define FT float
#define SUFFIX f32
#include "scalar_assign_impl.h"
#undef FT
#undef SUFFIX
#define FT double
#define SUFFIX f64
#include "scalar_assign_impl.h"
#undef FT
#undef SUFFIX

#if defined(__GNUC__) && defined(__has_builtin) && !defined(SEGONE_NO_SIMD)
#if __has_builtin(__builtin_convertvector)
#define SG_VEXT 1
#endif
#endif

#ifdef SG_VEXT
#define SG_SIMD_AVAILABLE 1

#if defined(__x86_64__) || defined(__i386__)
#define SG_X86 1
#define SG_T_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define SG_T_AVX2 __attribute__((target("avx2,fma")))
#else
#define SG_X86 0
#endif
#define SG_T_GENERIC

#if __has_builtin(__builtin_shufflevector)
#define SG_HAVE_SHUFFLE 1
#endif
#ifndef SG_HAVE_SHUFFLE
#define SG_HAVE_SHUFFLE 0
#endif
#include "simd_transpose.h"

/* ---- generic (16-byte vectors) ---- */
#define TARGET SG_T_GENERIC
#define KC 8
#define RV 1
#define FT float
#define IT int32_t
#define VW 4
#define SUFFIX f32_generic
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#define FT double
#define IT int64_t
#define VW 2
#define SUFFIX f64_generic
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#undef RV
#undef TARGET

#if SG_X86
/* ---- AVX2 + FMA ---- */
#define TARGET SG_T_AVX2
#define RV 1
#define FT float
#define IT int32_t
#define VW 8
#define SUFFIX f32_avx2
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#define FT double
#define IT int64_t
#define VW 4
#define SUFFIX f64_avx2
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#undef RV
#undef TARGET

/* ---- AVX-512 ---- */
#define TARGET SG_T_AVX512
#define RV 2
#define FT float
#define IT int32_t
#define VW 16
#define SUFFIX f32_avx512
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#define FT double
#define IT int64_t
#define VW 8
#define SUFFIX f64_avx512
#include "simd_assign_impl.h"
#undef FT
#undef IT
#undef VW
#undef SUFFIX
#undef RV
#undef TARGET
#endif /* SG_X86 */
#undef KC

static int sg_cpu_level(void)
{
#if SG_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static sg_counts sg_assign_rows_f32(int level, const float *X, Py_ssize_t n, Py_ssize_t d,
                                     const float *c2b, const float *cnorm, Py_ssize_t kp,
                                     const float *xsg, float xg, double oscale,
                                     int *labels, float *dist, float *margin, float *buf)
{
    if (level < 0) return sg_assign_rows_scalar_f32(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
#if SG_X86
    if (level >= 2) return sg_assign_rows_f32_avx512(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
    if (level == 1) return sg_assign_rows_f32_avx2(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
#endif
    return sg_assign_rows_f32_generic(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
}

static sg_counts sg_assign_rows_f64(int level, const double *X, Py_ssize_t n, Py_ssize_t d,
                                     const double *c2b, const double *cnorm, Py_ssize_t kp,
                                     const double *xsg, double xg, double oscale,
                                     int *labels, double *dist, double *margin, double *buf)
{
    if (level < 0) return sg_assign_rows_scalar_f64(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
#if SG_X86
    if (level >= 2) return sg_assign_rows_f64_avx512(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
    if (level == 1) return sg_assign_rows_f64_avx2(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
#endif
    return sg_assign_rows_f64_generic(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
}

#else /* no vector extensions: every level runs the plain-C variant */
#define SG_SIMD_AVAILABLE 0
static int sg_cpu_level(void) { return -1; }
static sg_counts sg_assign_rows_f32(int level, const float *X, Py_ssize_t n, Py_ssize_t d,
                                     const float *c2b, const float *cnorm, Py_ssize_t kp,
                                     const float *xsg, float xg, double oscale,
                                     int *labels, float *dist, float *margin, float *buf)
{
    (void)level;
    return sg_assign_rows_scalar_f32(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
}
static sg_counts sg_assign_rows_f64(int level, const double *X, Py_ssize_t n, Py_ssize_t d,
                                     const double *c2b, const double *cnorm, Py_ssize_t kp,
                                     const double *xsg, double xg, double oscale,
                                     int *labels, double *dist, double *margin, double *buf)
{
    (void)level;
    return sg_assign_rows_scalar_f64(X, n, d, c2b, cnorm, kp, xsg, xg, oscale, labels, dist, margin, buf);
}
#endif

/* software prefetch for the latency-bound row gathers of the mini-batch kernel */
static inline void sg_prefetch(const void *p)
{
#if defined(__GNUC__)
    __builtin_prefetch(p, 0, 1);
#else
    (void)p;
#endif
}

#endif /* SEGONE_SIMD_ASSIGN_H */
