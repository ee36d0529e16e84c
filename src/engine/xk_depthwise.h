// Depthwise 3x3 convs, stride 1 or 2, on one channel read straight from its unpadded (h, w)
// input: out[y, x] = act(bias + sum w[ky][kx] in[s y - ph + ky, s x - pw + kx] (+ resid)),
// taps outside the input zero.  No padded planes: filling them cost more than the arithmetic.
//
// The AVX2 kernels walk a channel in bands of R output rows, each band left to right in blocks
// of 8 columns, so the band's R s + 2 input rows stay in L1 across the row; each input row's
// taps are loaded once per block and feed every output row of the band that reads them.  Rows
// whose three input rows all lie in the input run without checks; blocks that reach past a
// row's ends load with masks (columns outside read as zero), and a short last block is stored
// in pieces.  Stride 1 with same padding on maps of up to 1024 floats runs each channel as one
// flat run instead (DwFlat below): there rows are short and rarely a multiple of 8 wide, so
// bands would mask or split most of their loads and stores.
#pragma once
#include <algorithm>

#include "xk_kernels.h"

namespace xk {
namespace kern {

inline void dw3_direct_generic(const float *in, int64_t h, int64_t w_in, int stride, int64_t ph, int64_t pw, int64_t ho,
                               int64_t wo, const float *w, float bias, const float *resid, int act, float *out) {
    for (int64_t y = 0; y < ho; ++y)
        for (int64_t x = 0; x < wo; ++x) {
            float s = bias;
            for (int ky = 0; ky < 3; ++ky) {
                const int64_t iy = stride * y - ph + ky;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < 3; ++kx) {
                    const int64_t ix = stride * x - pw + kx;
                    if (ix >= 0 && ix < w_in) s += w[ky * 3 + kx] * in[iy * w_in + ix];
                }
            }
            out[y * wo + x] = act_scalar(s + (resid ? resid[y * wo + x] : 0.f), act);
        }
}

// Stride 1, "same" padding (ph = pw = 1, ho = h, wo = w), maps of 8 to 8 DW_FLAT_VECS floats:
// the channel as one flat run of h w floats, output vectors at 0, 8, 16, ... and the last at
// h w - 8 (overlapping its neighbour instead of storing a short piece).  Output i reads input
// i + (ky - 1) w + kx - 1; the outer rows' kx = 1 taps are shuffled from their kx = 0 and 2
// loads.  At x = 0 the kx = 0 taps and at x = w - 1 the kx = 2 taps land in the neighbouring
// row, so each column's three taps are summed apart and masked once per vector; taps above or
// below the map then land outside the channel (or on a column masked anyway), so the few
// vectors at its top and bottom load under masks of the channel's extent.  The masks depend
// on the shape only: built once per plan (dw_flat_init).
constexpr int DW_FLAT_VECS = 128;
constexpr int DW_FLAT_EDGE = 16;

struct DwFlat {
    alignas(32) int32_t col[DW_FLAT_VECS][2][8];   // per vector: lanes with x > 0, x < w - 1
    alignas(32) int32_t edge[DW_FLAT_EDGE][7][8];  // vectors [0, lo) then [hi, nv): lanes of each load inside the channel
    int64_t h = 0, w = 0;
    int nv = 0, lo = 0, hi = 0;                    // vectors; [lo, hi) load plainly
};

inline int64_t dw_flat_start(const DwFlat &f, int v) { return v == f.nv - 1 ? f.h * f.w - 8 : 8 * int64_t(v); }

// Fills f for an h x w map; false where the flat kernel does not take it.
inline bool dw_flat_init(DwFlat &f, int64_t h, int64_t w) {
    const int64_t hw = h * w;
    if (hw < 8 || hw > 8 * DW_FLAT_VECS) return false;
    f.h = h, f.w = w, f.nv = int((hw + 7) / 8);
    f.lo = 0;
    while (f.lo < f.nv && dw_flat_start(f, f.lo) < w + 1) ++f.lo;
    f.hi = f.nv;
    while (f.hi > f.lo && dw_flat_start(f, f.hi - 1) + 8 + w + 1 > hw) --f.hi;
    if (f.lo + f.nv - f.hi > DW_FLAT_EDGE) return false;
    const int64_t load_at[7] = {-w - 1, -w + 1, -1, 0, 1, w - 1, w + 1};
    for (int v = 0; v < f.nv; ++v) {
        const int e = v < f.lo ? v : v >= f.hi ? f.lo + v - f.hi : -1;
        for (int l = 0; l < 8; ++l) {
            const int64_t i = dw_flat_start(f, v) + l, x = i % w;
            f.col[v][0][l] = x > 0 ? -1 : 0;
            f.col[v][1][l] = x < w - 1 ? -1 : 0;
            for (int k = 0; e >= 0 && k < 7; ++k) f.edge[e][k][l] = i + load_at[k] >= 0 && i + load_at[k] < hw ? -1 : 0;
        }
    }
    return true;
}

#if XK_X86
// lanes l with 0 <= first + l < n
XK_AVX2 inline __m256i dw_cols_in(int64_t first, int64_t n) {
    const __m256i c = _mm256_add_epi32(_mm256_set1_epi32(int(first)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), c), _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), c));
}

// One band's rows: the input rows (nullptr: outside the input, CHK only) and where the outputs go.
struct DwBand {
    const float *src[9];   // input row j of the band, at column 0
    float *out;            // output row 0 of the band, at column 0
    const float *resid;    // likewise, or nullptr
    int64_t wo;            // output row pitch
    int act;
};

// Stride 1, R output rows x 8 columns from x0; c0 = x0 - pw.  Row j's three shifts feed output
// rows j - 2 .. j.
template <int R, bool MASK, bool CHK>
XK_AVX2 inline void dw3s1_block(const DwBand &b, int64_t x0, int64_t c0, int64_t w_in, const __m256 *wk, __m256 bias,
                                int n) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    __m256i m0, m1, m2;
    if (MASK) m0 = dw_cols_in(c0, w_in), m1 = dw_cols_in(c0 + 1, w_in), m2 = dw_cols_in(c0 + 2, w_in);
#pragma GCC unroll 8
    for (int j = 0; j < R + 2; ++j) {
        if (CHK && !b.src[j]) continue;
        const float *s = b.src[j] + c0;
        const __m256 x0v = MASK ? _mm256_maskload_ps(s, m0) : _mm256_loadu_ps(s);
        const __m256 x1v = MASK ? _mm256_maskload_ps(s + 1, m1) : _mm256_loadu_ps(s + 1);
        const __m256 x2v = MASK ? _mm256_maskload_ps(s + 2, m2) : _mm256_loadu_ps(s + 2);
#pragma GCC unroll 3
        for (int ky = 0; ky < 3; ++ky) {
            const int r = j - ky;
            if (r < 0 || r >= R) continue;
            acc[r] = _mm256_fmadd_ps(wk[3 * ky], x0v, _mm256_fmadd_ps(wk[3 * ky + 1], x1v, _mm256_fmadd_ps(wk[3 * ky + 2], x2v, acc[r])));
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
        epi_finish(acc[r], b.resid ? b.resid + r * b.wo + x0 : nullptr, b.out + r * b.wo + x0, b.act, n);
}

// Stride 2, R output rows x 8 columns from x0; c0 = 2 x0 - pw.  Row j's taps are the even and
// odd columns of c0 .. c0 + 15 and the odd ones of c0 + 1 .. c0 + 16, all in _mm256_shuffle_ps's
// lane order (0 1 4 5 2 3 6 7), restored by one permute per output; they feed output rows
// (j - 2) / 2 .. j / 2.
template <int R, bool MASK, bool CHK>
XK_AVX2 inline void dw3s2_block(const DwBand &b, int64_t x0, int64_t c0, int64_t w_in, const __m256 *wk, __m256 bias,
                                int n) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = bias;
    __m256i m0, m1, m2, m3;
    if (MASK)
        m0 = dw_cols_in(c0, w_in), m1 = dw_cols_in(c0 + 8, w_in), m2 = dw_cols_in(c0 + 1, w_in),
        m3 = dw_cols_in(c0 + 9, w_in);
#pragma GCC unroll 9
    for (int j = 0; j < 2 * R + 1; ++j) {
        if (CHK && !b.src[j]) continue;
        const float *s = b.src[j] + c0;
        const __m256 v0 = MASK ? _mm256_maskload_ps(s, m0) : _mm256_loadu_ps(s);
        const __m256 v1 = MASK ? _mm256_maskload_ps(s + 8, m1) : _mm256_loadu_ps(s + 8);
        const __m256 u0 = MASK ? _mm256_maskload_ps(s + 1, m2) : _mm256_loadu_ps(s + 1);
        const __m256 u1 = MASK ? _mm256_maskload_ps(s + 9, m3) : _mm256_loadu_ps(s + 9);
        const __m256 e0 = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
        const __m256 o0 = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
        const __m256 e1 = _mm256_shuffle_ps(u0, u1, _MM_SHUFFLE(3, 1, 3, 1));
#pragma GCC unroll 3
        for (int ky = 0; ky < 3; ++ky) {
            if ((j - ky) % 2) continue;
            const int r = (j - ky) / 2;
            if (j < ky || r >= R) continue;
            acc[r] = _mm256_fmadd_ps(wk[3 * ky + 2], e1, _mm256_fmadd_ps(wk[3 * ky + 1], o0, _mm256_fmadd_ps(wk[3 * ky], e0, acc[r])));
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        const __m256 v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc[r]), 0xD8));
        epi_finish(v, b.resid ? b.resid + r * b.wo + x0 : nullptr, b.out + r * b.wo + x0, b.act, n);
    }
}

template <int S, int R, bool MASK, bool CHK>
XK_AVX2 inline void dw3_block(const DwBand &b, int64_t x0, int64_t w_in, int64_t pw, const __m256 *wk, __m256 bias) {
    const int n = int(b.wo - x0 < 8 ? b.wo - x0 : 8);
    if (S == 1) dw3s1_block<R, MASK, CHK>(b, x0, x0 - pw, w_in, wk, bias, n);
    else dw3s2_block<R, MASK, CHK>(b, x0, S * x0 - pw, w_in, wk, bias, n);
}

// One band across the row: masked blocks at the left while they start left of the input, plain
// ones while their reads (span floats from column S x0 - pw) stay inside it, masked ones after.
template <int S, int R, bool CHK>
XK_AVX2 inline void dw3_band(const DwBand &b, int64_t w_in, int64_t pw, const __m256 *wk, __m256 bias) {
    constexpr int64_t span = S == 1 ? 10 : 17;
    int64_t x0 = 0;
    for (; x0 < b.wo && S * x0 < pw; x0 += 8) dw3_block<S, R, true, CHK>(b, x0, w_in, pw, wk, bias);
    for (; x0 < b.wo && S * x0 - pw + span <= w_in; x0 += 8) dw3_block<S, R, false, CHK>(b, x0, w_in, pw, wk, bias);
    for (; x0 < b.wo; x0 += 8) dw3_block<S, R, true, CHK>(b, x0, w_in, pw, wk, bias);
}

// Output rows [y0, y0 + R) as one band.
template <int S, int R, bool CHK>
XK_AVX2 inline void dw3_rows(const float *in, int64_t h, int64_t w_in, int64_t ph, int64_t pw, int64_t wo, int64_t y0,
                             const __m256 *wk, __m256 bias, const float *resid, int act, float *out) {
    DwBand b;
    for (int j = 0; j < (R - 1) * S + 3; ++j) {
        const int64_t iy = S * y0 - ph + j;
        b.src[j] = CHK && (iy < 0 || iy >= h) ? nullptr : in + iy * w_in;
    }
    b.out = out + y0 * wo;
    b.resid = resid ? resid + y0 * wo : nullptr;
    b.wo = wo;
    b.act = act;
    dw3_band<S, R, CHK>(b, w_in, pw, wk, bias);
}

// Bands of RMAX rows (the last one shorter), checked for rows outside the input only where
// they reach past its top or bottom.
template <int S, int RMAX>
XK_AVX2 inline void dw3_avx2(const float *in, int64_t h, int64_t w_in, int64_t ph, int64_t pw, int64_t ho, int64_t wo,
                             const float *w, float bias, const float *resid, int act, float *out) {
    static_assert(RMAX >= 1 && RMAX <= 4 && (RMAX - 1) * S + 3 <= 9, "band rows");
    __m256 wk[9];
    for (int k = 0; k < 9; ++k) wk[k] = _mm256_set1_ps(w[k]);
    const __m256 b = _mm256_set1_ps(bias);
    for (int64_t y = 0; y < ho; y += RMAX) {
        const int r = int(ho - y < RMAX ? ho - y : RMAX);
        const bool chk = S * y - ph < 0 || S * (y + r - 1) - ph + 2 >= h;
#define XK_DW3_ROWS(R) \
    chk ? dw3_rows<S, R, true>(in, h, w_in, ph, pw, wo, y, wk, b, resid, act, out) \
        : dw3_rows<S, R, false>(in, h, w_in, ph, pw, wo, y, wk, b, resid, act, out)
        switch (r) {
        case 4: XK_DW3_ROWS(RMAX >= 4 ? 4 : 1); break;
        case 3: XK_DW3_ROWS(RMAX >= 3 ? 3 : 1); break;
        case 2: XK_DW3_ROWS(RMAX >= 2 ? 2 : 1); break;
        default: XK_DW3_ROWS(1); break;
        }
#undef XK_DW3_ROWS
    }
}

// The flat stride-1 kernel (DwFlat above).
template <bool PLAIN>
XK_AVX2 inline __m256 dw_flat_ld(const float *q, const int32_t *m) {
    return PLAIN ? _mm256_loadu_ps(q) : _mm256_maskload_ps(q, _mm256_load_si256(reinterpret_cast<const __m256i *>(m)));
}

// act(bias + the taps at p (+ resid)); cm: the vector's column masks, em (!PLAIN): its loads' masks
template <bool PLAIN, int ACT>
XK_AVX2 inline __m256 dw_flat_vec(const float *p, int64_t w, const __m256 *wk, __m256 bias, const int32_t *cm,
                                  const int32_t *em, const float *resid) {
    // (x0, x2) -> x1: lanes 1 2 of x0 and 1 2 of x2 in each half
    __m256 x0 = dw_flat_ld<PLAIN>(p - w - 1, em), x2 = dw_flat_ld<PLAIN>(p - w + 1, em + 8);
    __m256 mid = _mm256_fmadd_ps(wk[1], _mm256_shuffle_ps(x0, x2, _MM_SHUFFLE(2, 1, 2, 1)), bias);
    __m256 l = _mm256_mul_ps(wk[0], x0), r = _mm256_mul_ps(wk[2], x2);
    mid = _mm256_fmadd_ps(wk[4], dw_flat_ld<PLAIN>(p, em + 24), mid);
    l = _mm256_fmadd_ps(wk[3], dw_flat_ld<PLAIN>(p - 1, em + 16), l);
    r = _mm256_fmadd_ps(wk[5], dw_flat_ld<PLAIN>(p + 1, em + 32), r);
    x0 = dw_flat_ld<PLAIN>(p + w - 1, em + 40), x2 = dw_flat_ld<PLAIN>(p + w + 1, em + 48);
    mid = _mm256_fmadd_ps(wk[7], _mm256_shuffle_ps(x0, x2, _MM_SHUFFLE(2, 1, 2, 1)), mid);
    l = _mm256_fmadd_ps(wk[6], x0, l);
    r = _mm256_fmadd_ps(wk[8], x2, r);
    l = _mm256_and_ps(l, _mm256_load_ps(reinterpret_cast<const float *>(cm)));
    r = _mm256_and_ps(r, _mm256_load_ps(reinterpret_cast<const float *>(cm + 8)));
    __m256 v = _mm256_add_ps(_mm256_add_ps(mid, l), r);
    if (resid) v = _mm256_add_ps(v, _mm256_loadu_ps(resid));
    if (ACT) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (ACT == 2) v = _mm256_min_ps(v, _mm256_set1_ps(6.f));
    return v;
}

template <int ACT>
XK_AVX2 inline void dw3s1_flat_act(const DwFlat &f, const float *in, const float *w, float bias, const float *resid,
                                   float *out) {
    __m256 wk[9];
    for (int k = 0; k < 9; ++k) wk[k] = _mm256_set1_ps(w[k]);
    const __m256 b = _mm256_set1_ps(bias);
    const int64_t hw = f.h * f.w, wd = f.w;
    const int full = int(hw / 8);   // vectors at 8 v; an overlapping last one at hw - 8 if hw % 8
    // the overlapping vector reads its residual before its neighbour is stored: out may be resid
    __m256 tail = b;
    if (full < f.nv)
        tail = dw_flat_vec<false, ACT>(in + hw - 8, wd, wk, b, f.col[f.nv - 1][0], f.edge[f.lo + f.nv - 1 - f.hi][0],
                                       resid ? resid + hw - 8 : nullptr);
    const int lo = std::min(f.lo, full), hi = std::min(f.hi, full);
    int v = 0;
    for (; v < lo; ++v)
        _mm256_storeu_ps(out + 8 * v, dw_flat_vec<false, ACT>(in + 8 * v, wd, wk, b, f.col[v][0], f.edge[v][0],
                                                              resid ? resid + 8 * v : nullptr));
    if (resid)
        for (; v < hi; ++v)
            _mm256_storeu_ps(out + 8 * v, dw_flat_vec<true, ACT>(in + 8 * v, wd, wk, b, f.col[v][0], nullptr, resid + 8 * v));
    else
        for (; v < hi; ++v)
            _mm256_storeu_ps(out + 8 * v, dw_flat_vec<true, ACT>(in + 8 * v, wd, wk, b, f.col[v][0], nullptr, nullptr));
    for (; v < full; ++v)
        _mm256_storeu_ps(out + 8 * v, dw_flat_vec<false, ACT>(in + 8 * v, wd, wk, b, f.col[v][0], f.edge[f.lo + v - f.hi][0],
                                                              resid ? resid + 8 * v : nullptr));
    if (full < f.nv) _mm256_storeu_ps(out + hw - 8, tail);
}

XK_AVX2 inline void dw3s1_flat(const DwFlat &f, const float *in, const float *w, float bias, const float *resid,
                               int act, float *out) {
    if (act == 2) dw3s1_flat_act<2>(f, in, w, bias, resid, out);
    else if (act) dw3s1_flat_act<1>(f, in, w, bias, resid, out);
    else dw3s1_flat_act<0>(f, in, w, bias, resid, out);
}

XK_AVX2 inline void dw3s1_avx2(const float *in, int64_t h, int64_t w_in, int64_t ph, int64_t pw, int64_t ho,
                               int64_t wo, const float *w, float bias, const float *resid, int act, float *out) {
    dw3_avx2<1, 4>(in, h, w_in, ph, pw, ho, wo, w, bias, resid, act, out);
}

XK_AVX2 inline void dw3s2_avx2(const float *in, int64_t h, int64_t w_in, int64_t ph, int64_t pw, int64_t ho,
                               int64_t wo, const float *w, float bias, const float *resid, int act, float *out) {
    dw3_avx2<2, 2>(in, h, w_in, ph, pw, ho, wo, w, bias, resid, act, out);
}
#endif

}  // namespace kern
}  // namespace xk
