// The training path's Winograd kernels (src/cpu_kernels.h, winograd_impl.h) for the engine:
// the same code, compiled here for float with the same function multiversioning.
#include "xk_wino.h"

// the headers define every kernel of the CPU backend, float and double; the engine uses a few
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
extern "C" {
#include "../cpu_kernels.h"
}
#pragma GCC diagnostic pop

namespace xk {
namespace wino {

int64_t panel_width() { return XK_SACC * XK_LANES_F32; }

int64_t tiles(int m, int64_t ho, int64_t wo) { return ((ho + m - 1) / m) * ((wo + m - 1) / m); }

void prepare(Conv &c, const int64_t *index, const float *weight) {
    const int64_t W = panel_width(), D = c.degree, quads = (c.cout + XK_SHARE - 1) / XK_SHARE;
    const int64_t n = quads * D * XK_SHARE;
    c.th = (c.ho + c.m - 1) / c.m;
    c.tw = (c.wo + c.m - 1) / c.m;
    c.panels = (c.th * c.tw + W - 1) / W;
    c.off.assign(size_t(n), 0);
    std::vector<int64_t> edges(static_cast<size_t>(n));
    for (int64_t q = 0; q < quads; ++q)
        for (int64_t j = 0; j < D; ++j)
            for (int64_t o = 0; o < XK_SHARE; ++o) {
                const int64_t v = q * XK_SHARE + o, slot = (q * D + j) * XK_SHARE + o;
                // a padding output's slots: channel 0 with weight 0, never stored
                c.off[size_t(slot)] = v < c.cout ? int32_t(index[v * D + j] * W) : 0;
                edges[size_t(slot)] = v < c.cout ? v * D + j : c.cout * D;
            }
    c.shared = c.cout % XK_SHARE == 0;
    for (int64_t v = 0; v < c.cout && c.shared; ++v)
        for (int64_t j = 0; j < D && c.shared; ++j) c.shared = index[v * D + j] == index[(v - v % XK_SHARE) * D + j];
    c.ustride = n;
    c.uw.assign(size_t((c.m + 2) * (c.m + 2) * n), 0.f);
    xk_wino_weights_f32(c.uw.data(), weight, edges.data(), n, c.cout * D, 0, c.m, 0, n);
}

int64_t scratch_floats(const Conv &c) {
    const int64_t nk = (c.m + 2) * (c.m + 2), W = panel_width();
    return nk * (c.cin + 2) * W + nk * (c.cout + 1) * W;
}

void run_panel(const Conv &c, const float *src, const float *bias, int64_t p, float *scratch, float *dst) {
    const xk_image_t sim{c.cin * c.h * c.w, c.h * c.w, c.w, 1, c.h, c.w};
    const xk_image_t dim{c.cout * c.ho * c.wo, c.ho * c.wo, c.wo, 1, c.ho, c.wo};
    const xk_quads_t qs{c.off.data(), nullptr, nullptr, c.degree, c.cout, c.cin, c.shared};
    const int64_t nk = (c.m + 2) * (c.m + 2), W = panel_width(), quads = (c.cout + XK_SHARE - 1) / XK_SHARE;
    xk_wino_tile_f32(src, &sim, 1, c.th, c.tw, c.ph, c.pw, p * W, &qs, 0, quads, c.uw.data(), c.ustride, bias, scratch,
                     scratch + nk * (c.cin + 2) * W, dst, &dim, c.m);
}

}  // namespace wino
}  // namespace xk
