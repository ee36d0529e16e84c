// Dense convs (conv2d, groups 1) on the shared-4 term lists (four outputs, one list), a run
// of tiles per call: the accumulators start at the bias, the four outputs' weights stay in
// L1 across the run, and a tile is finished (residual, activation, a short store at a row's
// end) in registers, so a short term list (a 1x1 conv over 16-64 inputs) pays little per tile.
#pragma once
#include "xk_kernels.h"

namespace xk {
namespace kern {

// A run: rows x cols outputs of four output planes of row pitch `pitch`, in tiles of
// SHARED_T columns (the last of a row cut short), read from planes of row pitch wq.
struct DenseOut {
    const float *bias;        // one per output
    const float *resid[4];    // nullptr: no residual
    float *out[4];
    int64_t pitch, wq;
    int rows, cols, act;
};

inline void dense4_generic(const float *base, const int32_t *off, const float *w4, int n, const DenseOut &e) {
    alignas(32) float res[4 * SHARED_T];
    for (int r = 0; r < e.rows; ++r)
        for (int x0 = 0; x0 < e.cols; x0 += SHARED_T) {
            shared4_generic(base + r * e.wq + x0, off, w4, n, res);
            const int m = e.cols - x0 < SHARED_T ? e.cols - x0 : SHARED_T;
            for (int u = 0; u < 4; ++u) {
                const int64_t at = r * e.pitch + x0;
                finish_generic(res + u * SHARED_T, e.bias[u], e.resid[u] ? e.resid[u] + at : nullptr, e.out[u] + at, m, e.act);
            }
        }
}

#if XK_X86
XK_AVX2 inline void dense4_avx2(const float *base, const int32_t *off, const float *w4, int n, const DenseOut &e) {
    const __m256 ba = _mm256_broadcast_ss(e.bias), bb = _mm256_broadcast_ss(e.bias + 1),
                 bc = _mm256_broadcast_ss(e.bias + 2), bd = _mm256_broadcast_ss(e.bias + 3);
    for (int r = 0; r < e.rows; ++r)
        for (int x0 = 0; x0 < e.cols; x0 += SHARED_T) {
            const float *t = base + r * e.wq + x0;
            // twelve named accumulators: gcc keeps an accumulator array on the stack
            __m256 a0 = ba, a1 = ba, a2 = ba, b0 = bb, b1 = bb, b2 = bb, c0 = bc, c1 = bc, c2 = bc, d0 = bd, d1 = bd, d2 = bd;
            const float *w = w4;
            for (int j = 0; j < n; ++j, w += 4) {
                const float *p = t + off[j];
                const __m256 x0v = _mm256_loadu_ps(p), x1v = _mm256_loadu_ps(p + 8), x2v = _mm256_loadu_ps(p + 16);
                __m256 v = _mm256_broadcast_ss(w);
                a0 = _mm256_fmadd_ps(v, x0v, a0); a1 = _mm256_fmadd_ps(v, x1v, a1); a2 = _mm256_fmadd_ps(v, x2v, a2);
                v = _mm256_broadcast_ss(w + 1);
                b0 = _mm256_fmadd_ps(v, x0v, b0); b1 = _mm256_fmadd_ps(v, x1v, b1); b2 = _mm256_fmadd_ps(v, x2v, b2);
                v = _mm256_broadcast_ss(w + 2);
                c0 = _mm256_fmadd_ps(v, x0v, c0); c1 = _mm256_fmadd_ps(v, x1v, c1); c2 = _mm256_fmadd_ps(v, x2v, c2);
                v = _mm256_broadcast_ss(w + 3);
                d0 = _mm256_fmadd_ps(v, x0v, d0); d1 = _mm256_fmadd_ps(v, x1v, d1); d2 = _mm256_fmadd_ps(v, x2v, d2);
            }
            const int m = e.cols - x0;
            const int64_t at = r * e.pitch + x0;
            if (m >= SHARED_T) {  // a whole tile: twelve plain stores, the accumulators as they are
#define XK_DENSE_FINISH(u, k, v) epi_finish(v, e.resid[u] ? e.resid[u] + at + 8 * k : nullptr, e.out[u] + at + 8 * k, e.act)
                XK_DENSE_FINISH(0, 0, a0); XK_DENSE_FINISH(0, 1, a1); XK_DENSE_FINISH(0, 2, a2);
                XK_DENSE_FINISH(1, 0, b0); XK_DENSE_FINISH(1, 1, b1); XK_DENSE_FINISH(1, 2, b2);
                XK_DENSE_FINISH(2, 0, c0); XK_DENSE_FINISH(2, 1, c1); XK_DENSE_FINISH(2, 2, c2);
                XK_DENSE_FINISH(3, 0, d0); XK_DENSE_FINISH(3, 1, d1); XK_DENSE_FINISH(3, 2, d2);
#undef XK_DENSE_FINISH
                continue;
            }
            const __m256 acc[4][3] = {{a0, a1, a2}, {b0, b1, b2}, {c0, c1, c2}, {d0, d1, d2}};
            for (int u = 0; u < 4; ++u)
                for (int k = 0; k < 3; ++k)
                    epi_finish(acc[u][k], e.resid[u] ? e.resid[u] + at + 8 * k : nullptr, e.out[u] + at + 8 * k, e.act, m - 8 * k);
        }
}
#endif

}  // namespace kern
}  // namespace xk
