// The engine's inner loops.  Layout NCHW with the pixel axis as the vector axis
// (../shared/DESIGN.md, "CPU kernels"), over "planes": for a conv with stride s the
// zero-padded input is split into s*s phase planes, each of row pitch Wq, so that every
// tap of every output reads one contiguous run of a plane at a fixed offset.  An output
// tile is then T consecutive plane positions q (rows of pitch Wq, the last Wq - Wo
// columns of each row discarded), and one term (input channel, tap) of an output is one
// broadcast weight times one contiguous T-float load:
//
//     res[q] = sum_j w[j] * plane[off[j] + q],   q in [q0, q0 + T)
//
// Two families: "vec" (outputs with their own term lists: random expanders, where eight
// outputs read almost every input, so nothing is shared; two outputs x 32 pixels ("pair")
// where such tiles cover the map exactly, else one output x up to VEC_MAX vectors) and
// "shared4" (four
// outputs with one term list: dense convs, and expanders whose outputs come in blocks
// sharing an index row) where each load feeds four FMAs.  Depthwise convs have a kernel
// of their own with the taps' weights held across the tile loop.
//
// Each kernel exists as AVX2+FMA code (compiled for that target only, chosen at run time
// by cpu_has_avx2) and as portable C++ the compiler vectorises for the baseline ISA.
// No kernel allocates, checks or threads: that is the planner's and driver's job.
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define XK_X86 1
#include <immintrin.h>
#define XK_AVX2 __attribute__((target("avx2,fma")))
#else
#define XK_X86 0
#endif

namespace xk {
namespace kern {

// vectors per vec tile: 12 ran as fast on X-MobileNet's and X-ResNet's layers, 8% slower on
// X-DenseNet's (32x32 maps, 48-240 input channels: a tile's rows over all inputs outgrow L1)
constexpr int VEC_MAX = 8;
constexpr int PAIR_T = 32;     // pixels per pair tile: 2 outputs x 4 vectors = 8 accumulators
constexpr int SHARED_T = 24;   // pixels per shared tile: 4 outputs x 3 vectors = 12 accumulators
constexpr int DW_T = 64;       // pixels per depthwise tile: 8 accumulators

// Where a whole tile's outputs go when they are contiguous (no padding columns, not the
// last tile): the kernel adds bias and residual and applies the activation in registers
// and stores there, instead of handing raw sums to the driver's epilogue.
struct Epilogue {
    const float *bias;        // one per output of the tile
    const float *resid[4];    // nullptr: no residual
    float *out[4];
    int act;                  // 0 none, 1 ReLU, 2 ReLU6
    int n;                    // floats of each output to store (a tile at a row's end: fewer)
};

// ---------------------------------------------------------------- portable
// res[k] = sum_j w[j] * base[off[j] + k] for k < 8 nvec
inline void vec_generic(const float *base, const int32_t *off, const float *w, int n, int nvec, float *res) {
    float a[VEC_MAX * 8] = {0};
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        const float x = w[j];
        for (int k = 0; k < 8 * nvec; ++k) a[k] += x * p[k];
    }
    std::memcpy(res, a, sizeof(float) * 8 * size_t(nvec));
}

inline void pair_generic(const float *base, const int32_t *o0, const float *w0, const int32_t *o1,
                         const float *w1, int n, float *r0, float *r1) {
    float a[PAIR_T] = {0}, b[PAIR_T] = {0};
    for (int j = 0; j < n; ++j) {
        const float *p0 = base + o0[j], *p1 = base + o1[j];
        const float x0 = w0[j], x1 = w1[j];
        for (int k = 0; k < PAIR_T; ++k) { a[k] += x0 * p0[k]; b[k] += x1 * p1[k]; }
    }
    std::memcpy(r0, a, sizeof a);
    std::memcpy(r1, b, sizeof b);
}

inline void shared4_generic(const float *base, const int32_t *off, const float *w4, int n, float *r) {
    float a[4][SHARED_T] = {{0}};
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        for (int m = 0; m < 4; ++m) {
            const float x = w4[4 * j + m];
            for (int k = 0; k < SHARED_T; ++k) a[m][k] += x * p[k];
        }
    }
    std::memcpy(r, a, sizeof a);
}

inline void dw_generic(const float *base, const int32_t *off, const float *w, int n, float *r) {
    float a[DW_T] = {0};
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        const float x = w[j];
        for (int k = 0; k < DW_T; ++k) a[k] += x * p[k];
    }
    std::memcpy(r, a, sizeof a);
}

// "rows3": convs with three kernel rows, stride 1 or 2.  A tile is R output rows x 8 columns
// of one output; each input row segment loaded feeds every output row of the tile that reads
// it.  At stride 1 a term group (input channel, kernel column) costs R + 2 loads and 3
// broadcasts for 3 R FMAs: at R = 8, 13 loads for 24 FMAs, where two outputs of 4 rows took
// 18.  At stride 2 the rows come from two phase planes (fill_planes): the even plane's row j
// feeds output rows j (ky = 0) and j - 1 (ky = 2), the odd plane's row j, `odd` floats on,
// output row j (ky = 1): 2 R + 1 loads for 3 R FMAs, where the vec kernel loads once per FMA.
// R is chosen per map (row blocks covering ho evenly): ROWS_MAX at most for strips of 8
// columns, ROWS2_MAX for strips of 16 (the AVX2 kernel's two vectors a row).  off[g]: the
// group's plane offset (the even plane's at stride 2), w[3 g + ky]: its weights; pitch: the
// planes' row pitch.  res: [R][8].
constexpr int ROWS_MAX = 8;
constexpr int ROWS2_MAX = 6;

inline void rows3_generic(const float *base, int64_t pitch, int64_t odd, int stride, const int32_t *o, const float *w,
                          int ng, int R, float *res) {
    float a[ROWS_MAX][8] = {{0}};
    for (int g = 0; g < ng; ++g)
        for (int r = 0; r < R; ++r)
            for (int ky = 0; ky < 3; ++ky) {
                // the input row that tap ky of output row r reads
                const float *p = base + o[g] + (stride == 1 ? (r + ky) * pitch : (ky & 1) * odd + (r + ky / 2) * pitch);
                for (int k = 0; k < 8; ++k) a[r][k] += w[3 * g + ky] * p[k];
            }
    std::memcpy(res, a, sizeof(float) * 8 * size_t(R));
}

// Where a rows3 tile goes: rows x cols (<= R x 8 NV) of an output plane of row pitch `pitch`.
struct RowsOut {
    float bias;
    const float *resid;   // nullptr: no residual
    float *out;
    int64_t pitch;
    int rows, cols, act;
};

inline float act_scalar(float v, int act) {
    if (act) v = v > 0.f ? v : 0.f;
    if (act == 2) v = v < 6.f ? v : 6.f;
    return v;
}

// dst[k] = src[2 k] for k < n, reading no further than src[2 n - 2]
inline void gather2_generic(const float *src, float *dst, int64_t n) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[2 * k];
}

// d[k] = act(s[k] + bias (+ r[k])) for k < n; act 0 none, 1 ReLU, 2 ReLU6
inline void finish_generic(const float *s, float bias, const float *r, float *d, int64_t n, int act) {
    for (int64_t k = 0; k < n; ++k) {
        float v = s[k] + bias + (r ? r[k] : 0.f);
        if (act) v = v > 0.f ? v : 0.f;
        if (act == 2) v = v < 6.f ? v : 6.f;
        d[k] = v;
    }
}

// d[k] = act(s[k] sc + sh) for k < n: a channel through a batch norm (and ReLU / ReLU6)
inline void affine_generic(const float *s, float *d, int64_t n, float sc, float sh, int act) {
    for (int64_t k = 0; k < n; ++k) {
        float v = s[k] * sc + sh;
        if (act) v = v > 0.f ? v : 0.f;
        if (act == 2) v = v < 6.f ? v : 6.f;
        d[k] = v;
    }
}

// out[o] = sum_k W[o, k] x[k] for o in [0, n_out)
inline void matvec_generic(const float *W, const float *x, int64_t n_in, int64_t n_out, float *out) {
    for (int64_t o = 0; o < n_out; ++o) {
        const float *w = W + o * n_in;
        float acc[8] = {0};
        int64_t k = 0;
        for (; k + 8 <= n_in; k += 8)
            for (int l = 0; l < 8; ++l) acc[l] += w[k + l] * x[k + l];
        float s = 0;
        for (; k < n_in; ++k) s += w[k] * x[k];
        out[o] = s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
}

#if XK_X86
// ---------------------------------------------------------------- AVX2 + FMA
// out[k] = act(v[k] (+ resid[k])) for k < n (n >= 8: all eight); a short vector is stored in
// 4-, 2- and 1-float pieces (a masked store cost ten plain ones on Zen 3)
XK_AVX2 inline void epi_finish(__m256 v, const float *resid, float *out, int act, int n = 8) {
    if (n <= 0) return;
    if (n >= 8) {
        if (resid) v = _mm256_add_ps(v, _mm256_loadu_ps(resid));
        if (act) v = _mm256_max_ps(v, _mm256_setzero_ps());
        if (act == 2) v = _mm256_min_ps(v, _mm256_set1_ps(6.f));
        _mm256_storeu_ps(out, v);
        return;
    }
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

// out[k] = act(v[k] + bias (+ resid[k])) for k < n (n >= 8: all eight)
XK_AVX2 inline void epi_store(__m256 v, float bias, const float *resid, float *out, int act, int n = 8) {
    epi_finish(_mm256_add_ps(v, _mm256_set1_ps(bias)), resid, out, act, n);
}

// Where a vec tile goes when its outputs are contiguous: n floats (<= 8 NV) at out.
struct VecOut {
    float bias;
    const float *resid;   // nullptr: no residual
    float *out;
    int n, act;
};

// vec over NV vectors: each term one broadcast and NV loads for NV FMAs.  e: finish the tile
// (bias, residual, activation, a short last vector stored in pieces); else raw sums to res.
template <int NV>
XK_AVX2 void vec_avx2(const float *base, const int32_t *off, const float *w, int n, float *res, const VecOut *e) {
    static_assert(NV >= 1 && NV <= VEC_MAX, "vectors per tile");
    // named accumulators: gcc keeps an array of them on the stack
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        const __m256 x = _mm256_broadcast_ss(w + j);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p), a0);
        if (NV > 1) a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 8), a1);
        if (NV > 2) a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 16), a2);
        if (NV > 3) a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 24), a3);
        if (NV > 4) a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 32), a4);
        if (NV > 5) a5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 40), a5);
        if (NV > 6) a6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 48), a6);
        if (NV > 7) a7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 56), a7);
    }
    alignas(32) float r[VEC_MAX * 8];
    float *d = e ? r : res;
    _mm256_storeu_ps(d, a0);
    if (NV > 1) _mm256_storeu_ps(d + 8, a1);
    if (NV > 2) _mm256_storeu_ps(d + 16, a2);
    if (NV > 3) _mm256_storeu_ps(d + 24, a3);
    if (NV > 4) _mm256_storeu_ps(d + 32, a4);
    if (NV > 5) _mm256_storeu_ps(d + 40, a5);
    if (NV > 6) _mm256_storeu_ps(d + 48, a6);
    if (NV > 7) _mm256_storeu_ps(d + 56, a7);
    if (!e) return;
    for (int k = 0; k < 8 * NV && k < e->n; k += 8)
        epi_store(_mm256_load_ps(r + k), e->bias, e->resid ? e->resid + k : nullptr, e->out + k, e->act, e->n - k);
}

XK_AVX2 inline void pair_avx2(const float *base, const int32_t *o0, const float *w0, const int32_t *o1,
                              const float *w1, int n, float *r0, float *r1, const Epilogue *e = nullptr) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int j = 0; j < n; ++j) {
        const float *p0 = base + o0[j], *p1 = base + o1[j];
        const __m256 x0 = _mm256_broadcast_ss(w0 + j), x1 = _mm256_broadcast_ss(w1 + j);
        a0 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(p0), a0);
        a1 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(p0 + 8), a1);
        a2 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(p0 + 16), a2);
        a3 = _mm256_fmadd_ps(x0, _mm256_loadu_ps(p0 + 24), a3);
        b0 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(p1), b0);
        b1 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(p1 + 8), b1);
        b2 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(p1 + 16), b2);
        b3 = _mm256_fmadd_ps(x1, _mm256_loadu_ps(p1 + 24), b3);
    }
    if (e) {
        const __m256 a[4] = {a0, a1, a2, a3}, b[4] = {b0, b1, b2, b3};
        for (int k = 0; k < 4; ++k) {
            epi_store(a[k], e->bias[0], e->resid[0] ? e->resid[0] + 8 * k : nullptr, e->out[0] + 8 * k, e->act);
            if (e->out[1]) epi_store(b[k], e->bias[1], e->resid[1] ? e->resid[1] + 8 * k : nullptr, e->out[1] + 8 * k, e->act);
        }
        return;
    }
    _mm256_storeu_ps(r0, a0); _mm256_storeu_ps(r0 + 8, a1); _mm256_storeu_ps(r0 + 16, a2); _mm256_storeu_ps(r0 + 24, a3);
    _mm256_storeu_ps(r1, b0); _mm256_storeu_ps(r1 + 8, b1); _mm256_storeu_ps(r1 + 16, b2); _mm256_storeu_ps(r1 + 24, b3);
}

XK_AVX2 inline void shared4_avx2(const float *base, const int32_t *off, const float *w4, int n, float *r,
                                 const Epilogue *e = nullptr) {
    // twelve named accumulators: gcc keeps an accumulator array on the stack
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, b0 = a0, b1 = a0, b2 = a0, c0 = a0, c1 = a0, c2 = a0,
           d0 = a0, d1 = a0, d2 = a0;
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        const __m256 x0 = _mm256_loadu_ps(p), x1 = _mm256_loadu_ps(p + 8), x2 = _mm256_loadu_ps(p + 16);
        __m256 w = _mm256_broadcast_ss(w4 + 4 * j);
        a0 = _mm256_fmadd_ps(w, x0, a0); a1 = _mm256_fmadd_ps(w, x1, a1); a2 = _mm256_fmadd_ps(w, x2, a2);
        w = _mm256_broadcast_ss(w4 + 4 * j + 1);
        b0 = _mm256_fmadd_ps(w, x0, b0); b1 = _mm256_fmadd_ps(w, x1, b1); b2 = _mm256_fmadd_ps(w, x2, b2);
        w = _mm256_broadcast_ss(w4 + 4 * j + 2);
        c0 = _mm256_fmadd_ps(w, x0, c0); c1 = _mm256_fmadd_ps(w, x1, c1); c2 = _mm256_fmadd_ps(w, x2, c2);
        w = _mm256_broadcast_ss(w4 + 4 * j + 3);
        d0 = _mm256_fmadd_ps(w, x0, d0); d1 = _mm256_fmadd_ps(w, x1, d1); d2 = _mm256_fmadd_ps(w, x2, d2);
    }
    if (e) {
        const __m256 acc[4][3] = {{a0, a1, a2}, {b0, b1, b2}, {c0, c1, c2}, {d0, d1, d2}};
        for (int m = 0; m < 4; ++m)
            for (int k = 0; k < 3; ++k)
                epi_store(acc[m][k], e->bias[m], e->resid[m] ? e->resid[m] + 8 * k : nullptr, e->out[m] + 8 * k, e->act,
                          e->n - 8 * k);
        return;
    }
    _mm256_storeu_ps(r, a0); _mm256_storeu_ps(r + 8, a1); _mm256_storeu_ps(r + 16, a2);
    _mm256_storeu_ps(r + SHARED_T, b0); _mm256_storeu_ps(r + SHARED_T + 8, b1); _mm256_storeu_ps(r + SHARED_T + 16, b2);
    _mm256_storeu_ps(r + 2 * SHARED_T, c0); _mm256_storeu_ps(r + 2 * SHARED_T + 8, c1); _mm256_storeu_ps(r + 2 * SHARED_T + 16, c2);
    _mm256_storeu_ps(r + 3 * SHARED_T, d0); _mm256_storeu_ps(r + 3 * SHARED_T + 8, d1); _mm256_storeu_ps(r + 3 * SHARED_T + 16, d2);
}

XK_AVX2 inline void dw_avx2(const float *base, const int32_t *off, const float *w, int n, float *r) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (int j = 0; j < n; ++j) {
        const float *p = base + off[j];
        const __m256 x = _mm256_broadcast_ss(w + j);
        a0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 8), a1);
        a2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 16), a2);
        a3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 24), a3);
        a4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 32), a4);
        a5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 40), a5);
        a6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 48), a6);
        a7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + 56), a7);
    }
    _mm256_storeu_ps(r, a0); _mm256_storeu_ps(r + 8, a1); _mm256_storeu_ps(r + 16, a2); _mm256_storeu_ps(r + 24, a3);
    _mm256_storeu_ps(r + 32, a4); _mm256_storeu_ps(r + 40, a5); _mm256_storeu_ps(r + 48, a6); _mm256_storeu_ps(r + 56, a7);
}

// input row j of the tile feeds output rows j (weight wa), j - 1 (wb) and j - 2 (wc); with two
// column vectors (NV = 2) its second vector feeds the same rows' second accumulators (D, E, F)
#define XK_ROWS3_ROW(j, A, B, C, D, E, F)                                                    \
    if (j < R + 2) {                                                                         \
        __m256 x = _mm256_loadu_ps(p + j * pitch);                                           \
        __asm__("" : "+x"(x)); /* one load per row: gcc would fold it into each FMA */       \
        if (j < R) A = _mm256_fmadd_ps(wa, x, A);                                            \
        if (j >= 1 && j - 1 < R) B = _mm256_fmadd_ps(wb, x, B);                              \
        if (j >= 2 && j - 2 < R) C = _mm256_fmadd_ps(wc, x, C);                              \
        if (NV > 1) {                                                                        \
            x = _mm256_loadu_ps(p + j * pitch + 8);                                          \
            __asm__("" : "+x"(x));                                                           \
            if (j < R) D = _mm256_fmadd_ps(wa, x, D);                                        \
            if (j >= 1 && j - 1 < R) E = _mm256_fmadd_ps(wb, x, E);                          \
            if (j >= 2 && j - 2 < R) F = _mm256_fmadd_ps(wc, x, F);                          \
        }                                                                                    \
    }

// At stride 2, row j of the even plane feeds output rows j (weight wa) and j - 1 (wc), row j
// of the odd plane output row j (wb): accumulators A, B and, for the second vector, D, E.
#define XK_ROWS3S2_ROW(j, A, B, D, E)                                                        \
    if (j < R + 1) {                                                                         \
        __m256 x = _mm256_loadu_ps(p + j * pitch);                                           \
        __asm__("" : "+x"(x));                                                               \
        if (j < R) A = _mm256_fmadd_ps(wa, x, A);                                            \
        if (j >= 1) B = _mm256_fmadd_ps(wc, x, B);                                           \
        if (NV > 1) {                                                                        \
            x = _mm256_loadu_ps(p + j * pitch + 8);                                          \
            __asm__("" : "+x"(x));                                                           \
            if (j < R) D = _mm256_fmadd_ps(wa, x, D);                                        \
            if (j >= 1) E = _mm256_fmadd_ps(wc, x, E);                                       \
        }                                                                                    \
        if (j < R) {                                                                         \
            x = _mm256_loadu_ps(p + odd + j * pitch);                                        \
            __asm__("" : "+x"(x));                                                           \
            A = _mm256_fmadd_ps(wb, x, A);                                                   \
            if (NV > 1) {                                                                    \
                x = _mm256_loadu_ps(p + odd + j * pitch + 8);                                \
                __asm__("" : "+x"(x));                                                       \
                D = _mm256_fmadd_ps(wb, x, D);                                               \
            }                                                                                \
        }                                                                                    \
    }

// R rows x 8 NV columns at stride S; R * NV <= 12 accumulators, so that with the three weights
// and the row loaded they fit the 16 registers.  Twelve independent sums (where eight were)
// keep both FMA pipes busy through the three-FMA chain each gets per group.
template <int R, int NV, int S>
XK_AVX2 void rows3_avx2(const float *base, int64_t pitch, int64_t odd, const int32_t *o, const float *w, int ng,
                        const RowsOut &e) {
    static_assert(NV >= 1 && NV <= 2 && R >= 1 && R <= (NV == 1 ? ROWS_MAX : ROWS2_MAX), "rows per tile");
    static_assert(S == 1 || S == 2, "stride");
    // named accumulators: gcc keeps an array of them on the stack
    __m256 a0 = _mm256_set1_ps(e.bias), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0, b4 = a0, b5 = a0;
    for (int g = 0; g < ng; ++g) {
        const float *p = base + o[g];
        const __m256 wa = _mm256_broadcast_ss(w + 3 * g), wb = _mm256_broadcast_ss(w + 3 * g + 1),
                     wc = _mm256_broadcast_ss(w + 3 * g + 2);
        if (S == 2) {
            XK_ROWS3S2_ROW(0, a0, a0, b0, b0)
            XK_ROWS3S2_ROW(1, a1, a0, b1, b0)
            XK_ROWS3S2_ROW(2, a2, a1, b2, b1)
            XK_ROWS3S2_ROW(3, a3, a2, b3, b2)
            XK_ROWS3S2_ROW(4, a4, a3, b4, b3)
            XK_ROWS3S2_ROW(5, a5, a4, b5, b4)
            XK_ROWS3S2_ROW(6, a6, a5, b5, b5)  // b5 stands in where NV = 2 tiles (R <= 6) have no row
            XK_ROWS3S2_ROW(7, a7, a6, b5, b5)
            XK_ROWS3S2_ROW(8, a7, a7, b5, b5)
            continue;
        }
        XK_ROWS3_ROW(0, a0, a0, a0, b0, b0, b0)
        XK_ROWS3_ROW(1, a1, a0, a0, b1, b0, b0)
        XK_ROWS3_ROW(2, a2, a1, a0, b2, b1, b0)
        XK_ROWS3_ROW(3, a3, a2, a1, b3, b2, b1)
        XK_ROWS3_ROW(4, a4, a3, a2, b4, b3, b2)
        XK_ROWS3_ROW(5, a5, a4, a3, b5, b4, b3)
        XK_ROWS3_ROW(6, a6, a5, a4, b5, b5, b4)  // b5 stands in where NV = 2 tiles (R <= 6) have no row
        XK_ROWS3_ROW(7, a7, a6, a5, b5, b5, b5)
        XK_ROWS3_ROW(8, a7, a7, a6, b5, b5, b5)
        XK_ROWS3_ROW(9, a7, a7, a7, b5, b5, b5)
    }
    const __m256 acc[2][ROWS_MAX] = {{a0, a1, a2, a3, a4, a5, a6, a7}, {b0, b1, b2, b3, b4, b5, b5, b5}};
    for (int c = 0; c < NV && 8 * c < e.cols; ++c)
        for (int r = 0; r < e.rows; ++r) {
            const int64_t at = r * e.pitch + 8 * c;
            epi_finish(acc[c][r], e.resid ? e.resid + at : nullptr, e.out + at, e.act, e.cols - 8 * c);
        }
}
#undef XK_ROWS3_ROW
#undef XK_ROWS3S2_ROW

// lane k of a load at column c is valid if 0 <= c + k < w
XK_AVX2 inline __m256i pool_valid(int64_t c, int64_t w) {
    const __m256i col = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(c)));
    return _mm256_and_si256(_mm256_cmpgt_epi32(col, _mm256_set1_epi32(-1)), _mm256_cmpgt_epi32(_mm256_set1_epi32(int(w)), col));
}

// one strip of maxpool3s2_avx2: its input columns c0 .. c0 + 17 and their load masks
struct PoolRow {
    const float *in;
    int64_t h, w, c0;
    bool inside;
    __m256i m0, m8, m2, m10;
};

// the max over input row iy's three taps of each output column of the strip (-inf outside
// the input), and in bad whether any tap is NaN
XK_AVX2 inline __m256 pool_row(const PoolRow &r, int64_t iy, __m256 &bad) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    bad = _mm256_setzero_ps();
    if (iy < 0 || iy >= r.h) return ninf;
    const float *src = r.in + iy * r.w + r.c0;
    __m256 v0, v1, u0, u1;
    if (r.inside) {
        v0 = _mm256_loadu_ps(src); v1 = _mm256_loadu_ps(src + 8);
        u0 = _mm256_loadu_ps(src + 2); u1 = _mm256_loadu_ps(src + 10);
    } else {
        v0 = _mm256_blendv_ps(ninf, _mm256_maskload_ps(src, r.m0), _mm256_castsi256_ps(r.m0));
        v1 = _mm256_blendv_ps(ninf, _mm256_maskload_ps(src + 8, r.m8), _mm256_castsi256_ps(r.m8));
        u0 = _mm256_blendv_ps(ninf, _mm256_maskload_ps(src + 2, r.m2), _mm256_castsi256_ps(r.m2));
        u1 = _mm256_blendv_ps(ninf, _mm256_maskload_ps(src + 10, r.m10), _mm256_castsi256_ps(r.m10));
    }
    const __m256 a = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)), b = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)),
                 c = _mm256_shuffle_ps(u0, u1, _MM_SHUFFLE(2, 0, 2, 0));
    bad = _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q), _mm256_cmp_ps(c, c, _CMP_UNORD_Q));
    return _mm256_max_ps(_mm256_max_ps(a, b), c);
}

// 3x3 max pool, stride 2, on one channel, in strips of 8 outputs walked down the map: per
// input row, 4 loads and three even/odd shuffles give the three taps in _mm256_shuffle_ps's
// lane order (0 1 4 5 2 3 6 7), restored by one permute per output block, and the row's max
// over them; an output row takes the max of three such rows, the last of which is the next
// output row's first, so each input row is read once.  Columns outside the input read as
// -inf (masked loads at a strip's edges), rows outside are -inf, and a NaN in a window makes
// its output NaN (as torch's does: maxps alone would drop it).
XK_AVX2 inline void maxpool3s2_avx2(const float *in, int64_t h, int64_t w_in, int64_t ph, int64_t pw, int64_t ho,
                                    int64_t wo, float *out) {
    const __m256 nan = _mm256_set1_ps(NAN);
    for (int64_t x0 = 0; x0 < wo; x0 += 8) {
        const int64_t c0 = 2 * x0 - pw, cols = wo - x0 < 8 ? wo - x0 : 8;
        // the strip reads columns c0 .. c0 + 17: inside the row, or masked loads of the part that is
        const bool inside = c0 >= 0 && c0 + 18 <= w_in;
        const __m256i m0 = pool_valid(c0, w_in), m8 = pool_valid(c0 + 8, w_in), m2 = pool_valid(c0 + 2, w_in),
                      m10 = pool_valid(c0 + 10, w_in);
        const PoolRow r{in, h, w_in, c0, inside, m0, m8, m2, m10};
        __m256 bad_top, top = pool_row(r, -ph, bad_top);
        for (int64_t y = 0; y < ho; ++y) {
            __m256 bad_mid, bad_bot;
            const __m256 mid = pool_row(r, 2 * y - ph + 1, bad_mid), bot = pool_row(r, 2 * y - ph + 2, bad_bot);
            __m256 m = _mm256_max_ps(_mm256_max_ps(top, mid), bot);
            m = _mm256_blendv_ps(m, nan, _mm256_or_ps(_mm256_or_ps(bad_top, bad_mid), bad_bot));
            m = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
            epi_finish(m, nullptr, out + y * wo + x0, 0, int(cols));
            top = bot; bad_top = bad_bot;
        }
    }
}

// 2x2 average pool, stride 2, of one output row from input rows r0, r1: out[k] = ((r0[2k] +
// r0[2k + 1]) + r1[2k]) + r1[2k + 1]) / div for k < n (the scalar loop's order of sums).
XK_AVX2 inline void avgpool2s2_row_avx2(const float *r0, const float *r1, float *out, int64_t n, float div) {
    const __m256 d = _mm256_set1_ps(div);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {  // reads r[2k .. 2k + 15], within r[2 n - 1]
        const __m256 a0 = _mm256_loadu_ps(r0 + 2 * k), a1 = _mm256_loadu_ps(r0 + 2 * k + 8);
        const __m256 b0 = _mm256_loadu_ps(r1 + 2 * k), b1 = _mm256_loadu_ps(r1 + 2 * k + 8);
        const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(_mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                                                                   _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1))),
                                                     _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0))),
                                       _mm256_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)));
        // lanes in _mm256_shuffle_ps's order (0 1 4 5 2 3 6 7): one permute restores it
        _mm256_storeu_ps(out + k, _mm256_div_ps(_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(s), 0xD8)), d));
    }
    for (; k < n; ++k) out[k] = (((r0[2 * k] + r0[2 * k + 1]) + r1[2 * k]) + r1[2 * k + 1]) / div;
}

XK_AVX2 inline void gather2_avx2(const float *src, float *dst, int64_t n) {
    int64_t k = 0;
    for (; k + 8 < n; k += 8) {  // reads src[2k .. 2k + 15], within src[2 n - 2]
        const __m256 a = _mm256_loadu_ps(src + 2 * k), b = _mm256_loadu_ps(src + 2 * k + 8);
        const __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a2 b0 b2 | a4 a6 b4 b6
        _mm256_storeu_ps(dst + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8)));
    }
    gather2_generic(src + 2 * k, dst + k, n - k);
}

XK_AVX2 inline void finish_avx2(const float *s, float bias, const float *r, float *d, int64_t n, int act) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) epi_store(_mm256_loadu_ps(s + k), bias, r ? r + k : nullptr, d + k, act);
    finish_generic(s + k, bias, r ? r + k : nullptr, d + k, n - k, act);
}

XK_AVX2 inline void affine_avx2(const float *s, float *d, int64_t n, float sc, float sh, int act) {
    const __m256 a = _mm256_set1_ps(sc), b = _mm256_set1_ps(sh);
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) epi_finish(_mm256_fmadd_ps(_mm256_loadu_ps(s + k), a, b), nullptr, d + k, act);
    affine_generic(s + k, d + k, n - k, sc, sh, act);
}

XK_AVX2 inline void matvec_avx2(const float *W, const float *x, int64_t n_in, int64_t n_out, float *out) {
    for (int64_t o = 0; o < n_out; ++o) {
        const float *w = W + o * n_in;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        int64_t k = 0;
        for (; k + 16 <= n_in; k += 16) {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(x + k), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(x + k + 8), a1);
        }
        float s = 0;
        for (; k < n_in; ++k) s += w[k] * x[k];
        float t[8];
        _mm256_storeu_ps(t, _mm256_add_ps(a0, a1));
        out[o] = s + ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]));
    }
}
#endif

}  // namespace kern
}  // namespace xk
