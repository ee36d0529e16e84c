// Depthwise 3x3 convs, stride 1 or 2, on one channel read straight from its unpadded (h, w)
// input: out[y, x] = act(bias + sum w[ky][kx] in[s y - ph + ky, s x - pw + kx] (+ resid)),
// taps outside the input zero.  No padded planes: filling them cost more than the arithmetic.
//
// The AVX2 kernels walk a channel in bands of R output rows, each band left to right in blocks
// of 8 columns, so the band's R s + 2 input rows stay in L1 across the row; each input row's
// taps are loaded once per block and feed every output row of the band that reads them.  Rows
// whose three input rows all lie in the input run without checks; blocks that reach past a
// row's ends load with masks (columns outside read as zero), and a short last block is stored
// in pieces.
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

#if XK_X86
// lanes l with 0 <= first + l < n
XK_AVX2 inline __m256i dw_cols_in(int64_t first, int64_t n) {
    const __m256i c = _mm256_add_epi32(_mm256_set1_epi32(int(first)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), c), _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), c));
}

// out[k] = act(v[k] (+ resid[k])) for k < n: a short block stored in 4-, 2- and 1-float pieces
// (a masked store cost ten plain ones on Zen 3).
XK_AVX2 inline void dw_finish(__m256 v, const float *resid, float *out, int act, int n) {
    if (n >= 8) return epi_finish(v, resid, out, act);
    if (resid) v = _mm256_add_ps(v, _mm256_maskload_ps(resid, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))));
    if (act) v = _mm256_max_ps(v, _mm256_setzero_ps());
    if (act == 2) v = _mm256_min_ps(v, _mm256_set1_ps(6.f));
    __m128 part = _mm256_castps256_ps128(v);
    if (n & 4) {
        _mm_storeu_ps(out, part);
        part = _mm256_extractf128_ps(v, 1);
        out += 4;
    }
    if (n & 2) {
        _mm_storel_pi(reinterpret_cast<__m64 *>(out), part);
        part = _mm_movehl_ps(part, part);
        out += 2;
    }
    if (n & 1) _mm_store_ss(out, part);
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
        dw_finish(acc[r], b.resid ? b.resid + r * b.wo + x0 : nullptr, b.out + r * b.wo + x0, b.act, n);
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
        dw_finish(v, b.resid ? b.resid + r * b.wo + x0 : nullptr, b.out + r * b.wo + x0, b.act, n);
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
