// The CPU backend's kernels (src/cpu_kernels.h) for the engine: the same code, compiled here
// for float with the same function multiversioning (xk_backend.h).
#include "xk_backend.h"

// the headers define every kernel of the CPU backend, float and double; the engine uses a few
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
extern "C" {
#include "../cpu_kernels.h"
}
#pragma GCC diagnostic pop

namespace xk {
namespace backend {
namespace {

xk_quads_t quads_of(const Quads &q) { return {q.off.data(), nullptr, nullptr, q.degree, q.cout, q.cin, q.shared}; }

void make_quads(Quads &q, int64_t cin, int64_t cout, int64_t degree, const int64_t *index) {
    q = Quads{};
    q.cin = cin; q.cout = cout; q.degree = degree;
    const int64_t W = panel_width(), D = degree, n = quads(q) * D * XK_SHARE;
    q.off.assign(size_t(n), 0);
    q.edges.resize(size_t(n));
    for (int64_t slot = 0; slot < n; ++slot) {  // slot (quad, j, o) holds term j of output 4 quad + o
        const int64_t o = slot % XK_SHARE, j = slot / XK_SHARE % D, v = slot / (XK_SHARE * D) * XK_SHARE + o;
        q.off[size_t(slot)] = v < cout ? int32_t(index[v * D + j] * W) : 0;
        q.edges[size_t(slot)] = v < cout ? v * D + j : cout * D;
    }
    q.shared = cout % XK_SHARE == 0;
    for (int64_t v = 0; v < cout && q.shared; ++v)
        for (int64_t j = 0; j < D && q.shared; ++j) q.shared = index[v * D + j] == index[(v - v % XK_SHARE) * D + j];
}

}  // namespace

int64_t quads(const Quads &q) { return (q.cout + XK_SHARE - 1) / XK_SHARE; }

int64_t panel_width() { return XK_SACC * XK_LANES_F32; }

int64_t panel_lanes() { return XK_LANES_F32; }

int64_t tiles(int m, int64_t ho, int64_t wo) { return ((ho + m - 1) / m) * ((wo + m - 1) / m); }

void prepare(Winograd &c, int64_t cin, int64_t cout, int64_t degree, const int64_t *index, const float *weight) {
    make_quads(c.q, cin, cout, degree, index);
    c.th = (c.ho + c.m - 1) / c.m;
    c.tw = (c.wo + c.m - 1) / c.m;
    c.panels = (c.th * c.tw + panel_width() - 1) / panel_width();
    const int64_t n = int64_t(c.q.edges.size());
    c.ustride = n;
    c.uw.assign(size_t((c.m + 2) * (c.m + 2) * n), 0.f);
    xk_wino_weights_f32(c.uw.data(), weight, c.q.edges.data(), n, cout * degree, 0, c.m, 0, n);
}

int64_t scratch_floats(const Winograd &c) {
    const int64_t nk = (c.m + 2) * (c.m + 2), W = panel_width();
    return nk * (c.q.cin + 2) * W + nk * (c.q.cout + 1) * W;
}

void run_panel(const Winograd &c, const float *src, const float *bias, int64_t p, int64_t q_lo, int64_t q_hi,
               float *scratch, float *dst) {
    const xk_image_t sim{c.q.cin * c.h * c.w, c.h * c.w, c.w, 1, c.h, c.w};
    const xk_image_t dim{c.q.cout * c.ho * c.wo, c.ho * c.wo, c.wo, 1, c.ho, c.wo};
    const xk_quads_t qs = quads_of(c.q);
    const int64_t nk = (c.m + 2) * (c.m + 2), W = panel_width();
    xk_wino_tile_f32(src, &sim, 1, c.th, c.tw, c.ph, c.pw, p * W, &qs, q_lo, q_hi, c.uw.data(), c.ustride, bias,
                     scratch, scratch + nk * (c.q.cin + 2) * W, dst, &dim, c.m);
}

int64_t tile_positions() { return XK_TILE_F32; }

void prepare(Pointwise &c, int64_t cin, int64_t cout, int64_t degree, int64_t hw, const int64_t *index,
             const float *weight) {
    make_quads(c.q, cin, cout, degree, index);
    c.hw = hw;
    c.chan = c.chan ? c.chan : hw;
    c.tiles = (hw + tile_positions() - 1) / tile_positions();
    c.qw.resize(c.q.edges.size());
    for (size_t s = 0; s < c.q.edges.size(); ++s) c.qw[s] = c.q.edges[s] < cout * degree ? weight[c.q.edges[s]] : 0.f;
}

int64_t scratch_floats(const Pointwise &c) { return (c.q.cin + 1 + c.q.cout) * panel_width(); }

void run_tile(const Pointwise &c, const float *src, const float *bias, int64_t t, int64_t q_lo, int64_t q_hi,
              float *scratch, float *dst, const Affine *pre) {
    const xk_quads_t qs = quads_of(c.q);
    const xk_affine_t_f32 aff{pre ? pre->scale : nullptr, pre ? pre->shift : nullptr, pre ? pre->act : 0};
    xk_quad_tile_direct_affine_f32(src, c.q.cin * c.chan, c.chan, c.hw, 1, t * tile_positions(), &qs, q_lo, q_hi,
                                   c.qw.data(), bias, scratch, scratch + (c.q.cin + 1) * panel_width(), dst,
                                   c.q.cout * c.hw, c.hw, pre ? &aff : nullptr);
}

void prepare(Columns &c, int64_t cin, int64_t cout, int64_t degree, const int64_t *index, const float *weight) {
    const int64_t kk = c.kh * c.kw, hw = c.ho * c.wo;
    std::vector<int64_t> rows(static_cast<size_t>(cout * degree * kk));
    for (int64_t v = 0; v < cout; ++v)
        for (int64_t j = 0; j < degree; ++j)
            for (int64_t t = 0; t < kk; ++t) rows[size_t((v * degree + j) * kk + t)] = index[v * degree + j] * kk + t;
    c.quads.chan = (hw + 15) / 16 * 16;  // rows on cache-line boundaries
    prepare(c.quads, cin * kk, cout, degree * kk, hw, rows.data(), weight);
}

int64_t column_floats(const Columns &c) { return c.quads.q.cin * c.quads.chan; }

void fill_columns(const Columns &c, const float *src, float *col, int64_t u0, int64_t u1) {
    const xk_image_t im{(c.quads.q.cin / (c.kh * c.kw)) * c.h * c.w, c.h * c.w, c.w, 1, c.h, c.w};
    xk_im2col_f32(col, c.quads.chan, src, &im, 1, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.ho, c.wo, u0, u1);
}

}  // namespace backend
}  // namespace xk
