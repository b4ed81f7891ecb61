/* In-register transposes of VW x VW blocks (generated; see the comment in
 * simd_assign_impl.h).  Stage b swaps the off-diagonal b x b blocks of every
 * 2b x 2b block: log2(VW) stages of VW two-source shuffles each. */
#ifndef SEGONE_SIMD_TRANSPOSE_H
#define SEGONE_SIMD_TRANSPOSE_H

#define SG_TRANSPOSE_2(R) do { \
    { __typeof__(R[0]) a_ = R[0], b_ = R[1]; R[0] = __builtin_shufflevector(a_, b_, 0, 2); R[1] = __builtin_shufflevector(a_, b_, 1, 3); } \
} while (0)

#define SG_TRANSPOSE_4(R) do { \
    { __typeof__(R[0]) a_ = R[0], b_ = R[1]; R[0] = __builtin_shufflevector(a_, b_, 0, 4, 2, 6); R[1] = __builtin_shufflevector(a_, b_, 1, 5, 3, 7); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[3]; R[2] = __builtin_shufflevector(a_, b_, 0, 4, 2, 6); R[3] = __builtin_shufflevector(a_, b_, 1, 5, 3, 7); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[2]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 4, 5); R[2] = __builtin_shufflevector(a_, b_, 2, 3, 6, 7); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[3]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 4, 5); R[3] = __builtin_shufflevector(a_, b_, 2, 3, 6, 7); } \
} while (0)

#define SG_TRANSPOSE_8(R) do { \
    { __typeof__(R[0]) a_ = R[0], b_ = R[1]; R[0] = __builtin_shufflevector(a_, b_, 0, 8, 2, 10, 4, 12, 6, 14); R[1] = __builtin_shufflevector(a_, b_, 1, 9, 3, 11, 5, 13, 7, 15); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[3]; R[2] = __builtin_shufflevector(a_, b_, 0, 8, 2, 10, 4, 12, 6, 14); R[3] = __builtin_shufflevector(a_, b_, 1, 9, 3, 11, 5, 13, 7, 15); } \
    { __typeof__(R[0]) a_ = R[4], b_ = R[5]; R[4] = __builtin_shufflevector(a_, b_, 0, 8, 2, 10, 4, 12, 6, 14); R[5] = __builtin_shufflevector(a_, b_, 1, 9, 3, 11, 5, 13, 7, 15); } \
    { __typeof__(R[0]) a_ = R[6], b_ = R[7]; R[6] = __builtin_shufflevector(a_, b_, 0, 8, 2, 10, 4, 12, 6, 14); R[7] = __builtin_shufflevector(a_, b_, 1, 9, 3, 11, 5, 13, 7, 15); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[2]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 8, 9, 4, 5, 12, 13); R[2] = __builtin_shufflevector(a_, b_, 2, 3, 10, 11, 6, 7, 14, 15); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[3]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 8, 9, 4, 5, 12, 13); R[3] = __builtin_shufflevector(a_, b_, 2, 3, 10, 11, 6, 7, 14, 15); } \
    { __typeof__(R[0]) a_ = R[4], b_ = R[6]; R[4] = __builtin_shufflevector(a_, b_, 0, 1, 8, 9, 4, 5, 12, 13); R[6] = __builtin_shufflevector(a_, b_, 2, 3, 10, 11, 6, 7, 14, 15); } \
    { __typeof__(R[0]) a_ = R[5], b_ = R[7]; R[5] = __builtin_shufflevector(a_, b_, 0, 1, 8, 9, 4, 5, 12, 13); R[7] = __builtin_shufflevector(a_, b_, 2, 3, 10, 11, 6, 7, 14, 15); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[4]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 8, 9, 10, 11); R[4] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 12, 13, 14, 15); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[5]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 8, 9, 10, 11); R[5] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 12, 13, 14, 15); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[6]; R[2] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 8, 9, 10, 11); R[6] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 12, 13, 14, 15); } \
    { __typeof__(R[0]) a_ = R[3], b_ = R[7]; R[3] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 8, 9, 10, 11); R[7] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 12, 13, 14, 15); } \
} while (0)

#define SG_TRANSPOSE_16(R) do { \
    { __typeof__(R[0]) a_ = R[0], b_ = R[1]; R[0] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[1] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[3]; R[2] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[3] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[4], b_ = R[5]; R[4] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[5] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[6], b_ = R[7]; R[6] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[7] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[8], b_ = R[9]; R[8] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[9] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[10], b_ = R[11]; R[10] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[11] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[12], b_ = R[13]; R[12] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[13] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[14], b_ = R[15]; R[14] = __builtin_shufflevector(a_, b_, 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30); R[15] = __builtin_shufflevector(a_, b_, 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[2]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[2] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[3]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[3] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[4], b_ = R[6]; R[4] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[6] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[5], b_ = R[7]; R[5] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[7] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[8], b_ = R[10]; R[8] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[10] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[9], b_ = R[11]; R[9] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[11] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[12], b_ = R[14]; R[12] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[14] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[13], b_ = R[15]; R[13] = __builtin_shufflevector(a_, b_, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29); R[15] = __builtin_shufflevector(a_, b_, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[4]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[4] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[5]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[5] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[6]; R[2] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[6] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[3], b_ = R[7]; R[3] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[7] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[8], b_ = R[12]; R[8] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[12] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[9], b_ = R[13]; R[9] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[13] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[10], b_ = R[14]; R[10] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[14] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[11], b_ = R[15]; R[11] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27); R[15] = __builtin_shufflevector(a_, b_, 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[0], b_ = R[8]; R[0] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[8] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[1], b_ = R[9]; R[1] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[9] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[2], b_ = R[10]; R[2] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[10] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[3], b_ = R[11]; R[3] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[11] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[4], b_ = R[12]; R[4] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[12] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[5], b_ = R[13]; R[5] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[13] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[6], b_ = R[14]; R[6] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[14] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
    { __typeof__(R[0]) a_ = R[7], b_ = R[15]; R[7] = __builtin_shufflevector(a_, b_, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23); R[15] = __builtin_shufflevector(a_, b_, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31); } \
} while (0)

#endif
