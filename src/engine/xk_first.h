// Dense convs (conv2d, groups 1) over few input channels: a network's first layer, on the
// image's 1-4 channels, kernels up to 7x7, stride 1 or 2.  Their term lists are short
// (27 terms for a 3x3 stem, 147 for a 7x7), so filling whole zero-padded phase planes and
// the shared-4 tiles' overheads (offset lists, tiles across padding columns) cost much of
// what the arithmetic did.
//
// Each input row a thread needs is copied once, zero-padded and split into its sw column
// phases, into a ring of kh row slots in L1 (stride 2: even and odd columns apart), so that
// every tap (ci, ky, kx) of 8 consecutive outputs is one contiguous load of a phase row.  An
// output row is then done in tiles of four output channels x 1-3 vectors of 8 columns, the
// accumulators starting at the bias and finished (residual, activation) in registers; each
// load feeds four FMAs.  Phase rows run to the last vector's end, zeros past the input, so no
// load checks a bound; a row's last short vector is stored in pieces.
#pragma once
#include <algorithm>
#include <cstring>

#include "xk_kernels.h"

namespace xk {
namespace kern {

constexpr int FIRST_CIN_MAX = 4, FIRST_K_MAX = 7, FIRST_NV = 3;
constexpr int FIRST_TERMS_MAX = FIRST_CIN_MAX * FIRST_K_MAX * FIRST_K_MAX;

// The conv's geometry, and its ring: per slot, per input channel, sw phase rows of len floats.
struct FirstGeom {
    int64_t cin, h, w, cout, ho, wo, kh, kw, sh, sw, ph, pw;   // kh <= FIRST_K_MAX, sw 1 or 2
    int64_t len;      // floats per phase row: 8 ceil(wo / 8) + (kw - 1) / sw, rounded up to 8
    int64_t ring;     // floats of one thread's ring: kh cin sw len
    const float *pre_scale = nullptr, *pre_shift = nullptr;   // an affine on the input, or none
    int pre_act = 0;
};

inline int64_t first_len(int64_t wo, int64_t kw, int64_t sw) { return ((wo + 7) / 8 * 8 + (kw - 1) / sw + 7) / 8 * 8; }

// Where a tile goes: output u's row at the tile's first column is out + u plane (resid
// likewise); cols of them valid (at most 8 NV are stored), m of the four outputs real.
struct FirstOut {
    const float *bias;     // four
    const float *resid;    // nullptr: no residual
    float *out;
    int64_t plane;
    int m, cols;
};

#if XK_X86
// even[k] = in[2 k], odd[k] = in[2 k + 1] for k < m, m the largest multiple of 8 <= n (reads
// in[0 .. 2 m - 1]); returns m.
XK_AVX2 inline int64_t deinterleave_avx2(const float *in, float *even, float *odd, int64_t n) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 a = _mm256_loadu_ps(in + 2 * k), b = _mm256_loadu_ps(in + 2 * k + 8);
        // lanes in _mm256_shuffle_ps's order (0 1 4 5 2 3 6 7): one permute restores each
        const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm256_storeu_ps(even + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
        _mm256_storeu_ps(odd + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
    }
    return k;
}
#endif

// Input row iy of channel c (zeros where iy is outside) into dst's sw phase rows:
// dst[b len + j] = padded[sw j + b], padded[q] = act(x[q - pw] scale + shift) on the input, 0 off it.
// At stride 2 the input's even and odd columns, one pass over the row, are each one phase row
// shifted by a fixed count (pw even: even columns to phase 0; odd: to phase 1).
inline void first_fill(const FirstGeom &g, const float *x, int64_t c, int64_t iy, float *dst, bool avx2) {
    if (iy < 0 || iy >= g.h) { std::memset(dst, 0, sizeof(float) * size_t(g.sw * g.len)); return; }
    const float *in = x + (c * g.h + iy) * g.w;
    int64_t at[2], n[2];   // per input column parity: the first phase column it fills, and how many
    float *row[2];
    const int shift = int(g.sw - 1);   // sw is 1 or 2: shifts and masks, not divisions
    for (int64_t q = 0; q < g.sw; ++q) {
        // input columns sw m + q go to phase b = (q + pw) mod sw, column m + (q + pw) / sw
        const int64_t b = (q + g.pw) & shift;
        row[q] = dst + b * g.len;
        at[q] = std::min((q + g.pw) >> shift, g.len);
        n[q] = std::min((g.w - q + shift) >> shift, g.len - at[q]);
    }
    int64_t m = 0;
    if (g.sw == 1) std::memcpy(row[0] + at[0], in, sizeof(float) * size_t(n[0]));
#if XK_X86
    else if (avx2) m = deinterleave_avx2(in, row[0] + at[0], row[1] + at[1], std::min(n[0], n[1]));
#endif
    for (int64_t q = 0; q < g.sw && g.sw == 2; ++q)
        for (int64_t k = m; k < n[q]; ++k) row[q][at[q] + k] = in[2 * k + q];
    for (int64_t q = 0; q < g.sw; ++q) {
        for (int64_t k = 0; k < at[q]; ++k) row[q][k] = 0.f;
        for (int64_t k = at[q] + n[q]; k < g.len; ++k) row[q][k] = 0.f;
        if (g.pre_scale) {
            const float sc = g.pre_scale[c], sh = g.pre_shift[c];
            for (int64_t k = at[q]; k < at[q] + n[q]; ++k) row[q][k] = act_scalar(row[q][k] * sc + sh, g.pre_act);
        }
    }
    (void)avx2;
}

// Tile of four outputs x nv vectors from column x0: src[j] is term j's phase row at column 0,
// w4[4 j + u] its weight for output u.
inline void first4_generic(const float *const *src, int64_t x0, const float *w4, int n, int nv, int act,
                           const FirstOut &e) {
    float a[4][8 * FIRST_NV];
    for (int u = 0; u < 4; ++u)
        for (int k = 0; k < 8 * nv; ++k) a[u][k] = e.bias[u];
    for (int j = 0; j < n; ++j) {
        const float *p = src[j] + x0;
        for (int u = 0; u < 4; ++u)
            for (int k = 0; k < 8 * nv; ++k) a[u][k] += w4[4 * j + u] * p[k];
    }
    const int cols = std::min(e.cols, 8 * nv);
    for (int u = 0; u < e.m; ++u)
        for (int k = 0; k < cols; ++k)
            e.out[u * e.plane + k] = act_scalar(a[u][k] + (e.resid ? e.resid[u * e.plane + k] : 0.f), act);
}

#if XK_X86
// out[k] = act(v + r[k]) for a whole vector, r nullptr for none
template <int ACT>
XK_AVX2 inline void first_put(__m256 v, const float *r, float *out) {
    if (r) v = _mm256_add_ps(v, _mm256_loadu_ps(r));
    if (ACT) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (ACT == 2) v = _mm256_min_ps(v, _mm256_set1_ps(6.f));
    _mm256_storeu_ps(out, v);
}

// The AVX2 tile, ACT the activation: the usual tile (four outputs, 8 NV columns) finished
// straight from the accumulators; one cut short through a copy of them.
template <int NV, int ACT>
XK_AVX2 void first4_avx2(const float *const *src, int64_t x0, const float *w4, int n, const FirstOut &e) {
    static_assert(NV >= 1 && NV <= FIRST_NV, "vectors per tile");
    const __m256 ba = _mm256_broadcast_ss(e.bias), bb = _mm256_broadcast_ss(e.bias + 1),
                 bc = _mm256_broadcast_ss(e.bias + 2), bd = _mm256_broadcast_ss(e.bias + 3);
    // twelve named accumulators: gcc keeps an accumulator array on the stack
    __m256 a0 = ba, a1 = ba, a2 = ba, b0 = bb, b1 = bb, b2 = bb, c0 = bc, c1 = bc, c2 = bc, d0 = bd, d1 = bd, d2 = bd;
    // two terms an iteration: half the loop's counter and branch work (a 27-term tile ran 6% faster)
#pragma GCC unroll 2
    for (int j = 0; j < n; ++j, w4 += 4) {
        const float *p = src[j] + x0;
        const __m256 x0v = _mm256_loadu_ps(p);
        const __m256 x1v = NV > 1 ? _mm256_loadu_ps(p + 8) : x0v, x2v = NV > 2 ? _mm256_loadu_ps(p + 16) : x0v;
        __m256 v = _mm256_broadcast_ss(w4);
        a0 = _mm256_fmadd_ps(v, x0v, a0);
        if (NV > 1) a1 = _mm256_fmadd_ps(v, x1v, a1);
        if (NV > 2) a2 = _mm256_fmadd_ps(v, x2v, a2);
        v = _mm256_broadcast_ss(w4 + 1);
        b0 = _mm256_fmadd_ps(v, x0v, b0);
        if (NV > 1) b1 = _mm256_fmadd_ps(v, x1v, b1);
        if (NV > 2) b2 = _mm256_fmadd_ps(v, x2v, b2);
        v = _mm256_broadcast_ss(w4 + 2);
        c0 = _mm256_fmadd_ps(v, x0v, c0);
        if (NV > 1) c1 = _mm256_fmadd_ps(v, x1v, c1);
        if (NV > 2) c2 = _mm256_fmadd_ps(v, x2v, c2);
        v = _mm256_broadcast_ss(w4 + 3);
        d0 = _mm256_fmadd_ps(v, x0v, d0);
        if (NV > 1) d1 = _mm256_fmadd_ps(v, x1v, d1);
        if (NV > 2) d2 = _mm256_fmadd_ps(v, x2v, d2);
    }
    const int64_t pl = e.plane;
    const float *r = e.resid;
    if (e.m == 4 && e.cols >= 8 * NV) {
#define XK_FIRST_PUT(u, A, B, C)                                                           \
    first_put<ACT>(A, r ? r + u * pl : nullptr, e.out + u * pl);                           \
    if (NV > 1) first_put<ACT>(B, r ? r + u * pl + 8 : nullptr, e.out + u * pl + 8);       \
    if (NV > 2) first_put<ACT>(C, r ? r + u * pl + 16 : nullptr, e.out + u * pl + 16);
        XK_FIRST_PUT(0, a0, a1, a2)
        XK_FIRST_PUT(1, b0, b1, b2)
        XK_FIRST_PUT(2, c0, c1, c2)
        XK_FIRST_PUT(3, d0, d1, d2)
#undef XK_FIRST_PUT
        return;
    }
    alignas(32) float acc[4][8 * FIRST_NV];
    _mm256_store_ps(acc[0], a0); _mm256_store_ps(acc[0] + 8, a1); _mm256_store_ps(acc[0] + 16, a2);
    _mm256_store_ps(acc[1], b0); _mm256_store_ps(acc[1] + 8, b1); _mm256_store_ps(acc[1] + 16, b2);
    _mm256_store_ps(acc[2], c0); _mm256_store_ps(acc[2] + 8, c1); _mm256_store_ps(acc[2] + 16, c2);
    _mm256_store_ps(acc[3], d0); _mm256_store_ps(acc[3] + 8, d1); _mm256_store_ps(acc[3] + 16, d2);
    for (int u = 0; u < e.m; ++u)
        for (int k = 0; k < NV && 8 * k < e.cols; ++k)
            epi_finish(_mm256_load_ps(acc[u] + 8 * k), r ? r + u * pl + 8 * k : nullptr, e.out + u * pl + 8 * k, ACT,
                        e.cols - 8 * k);
}
#endif

// Output rows [y0, y1) of image x into out (cout, ho, wo); w4: per block of four outputs,
// [term][4] weights (zeros past cout), terms (ci, ky, kx); bias: cout rounded up to four;
// ring: g.ring floats of this thread's.  Rows are walked down, so each input row is filled
// once into slot iy mod kh.
inline void first_rows(const FirstGeom &g, const float *x, const float *w4, const float *bias, const float *resid,
                       float *out, int act, float *ring, int64_t y0, int64_t y1, bool avx2) {
    const int n = int(g.cin * g.kh * g.kw);
    const int64_t slot_size = g.cin * g.sw * g.len, plane = g.ho * g.wo;
    int64_t tag[FIRST_K_MAX], off[FIRST_CIN_MAX * FIRST_K_MAX];
    for (auto &t : tag) t = INT64_MIN;
    for (int64_t c = 0; c < g.cin; ++c)   // tap (c, kx)'s phase row in a slot, and its column
        for (int64_t kx = 0; kx < g.kw; ++kx) off[c * g.kw + kx] = (c * g.sw + kx % g.sw) * g.len + kx / g.sw;
    const float *src[FIRST_TERMS_MAX];
    // a row's vectors in tiles of at most FIRST_NV, as even as they come: the first r of q + 1
    const int64_t nvec = (g.wo + 7) / 8, tiles = (nvec + FIRST_NV - 1) / FIRST_NV, q = nvec / tiles, r = nvec % tiles;
#if XK_X86
    using Kernel = void (*)(const float *const *, int64_t, const float *, int, const FirstOut &);
#define XK_FIRST_ACTS(NV) {first4_avx2<NV, 0>, first4_avx2<NV, 1>, first4_avx2<NV, 2>}
    static const Kernel by_nv[FIRST_NV][3] = {XK_FIRST_ACTS(1), XK_FIRST_ACTS(2), XK_FIRST_ACTS(3)};
#undef XK_FIRST_ACTS
#endif
    for (int64_t y = y0; y < y1; ++y) {
        const int64_t top = g.sh * y - g.ph, s0 = (top % g.kh + g.kh) % g.kh;
        for (int64_t ky = 0; ky < g.kh; ++ky) {
            const int64_t iy = top + ky, s = s0 + ky < g.kh ? s0 + ky : s0 + ky - g.kh;
            float *slot = ring + s * slot_size;
            if (tag[s] != iy) {
                for (int64_t c = 0; c < g.cin; ++c) first_fill(g, x, c, iy, slot + c * g.sw * g.len, avx2);
                tag[s] = iy;
            }
            for (int64_t c = 0; c < g.cin; ++c)
                for (int64_t kx = 0; kx < g.kw; ++kx) src[(c * g.kh + ky) * g.kw + kx] = slot + off[c * g.kw + kx];
        }
        for (int64_t v = 0; v < g.cout; v += 4) {
            FirstOut e{bias + v, nullptr, nullptr, plane, int(std::min<int64_t>(4, g.cout - v)), 0};
            const float *wb = w4 + v * n;
            for (int64_t t = 0, x0 = 0; t < tiles; ++t) {
                const int64_t nv = q + (t < r), at = v * plane + y * g.wo + x0;
                e.cols = int(g.wo - x0);
                e.out = out + at;
                e.resid = resid ? resid + at : nullptr;
#if XK_X86
                if (avx2) by_nv[nv - 1][act](src, x0, wb, n, e); else
#endif
                first4_generic(src, x0, wb, n, int(nv), act, e);
                x0 += 8 * nv;
            }
        }
    }
}

}  // namespace kern
}  // namespace xk
