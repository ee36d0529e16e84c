// Stride-1 3x3 X-convs by Winograd F(2x2, 3x3) or F(4x4, 3x3), on the training path's kernels
// (src/winograd_impl.h, xk_wino_tile: 1x1 X-convs in quads of outputs on transformed panels
// of tiles).  xk_wino.cpp is the one translation unit that compiles them into the engine.
#pragma once
#include <cstdint>
#include <vector>

namespace xk {
namespace wino {

// One conv on one image: (cin, h, w) -> (cout, ho, wo), padding (ph, pw), in m x m tiles.
struct Conv {
    int m = 0;
    int64_t cin = 0, cout = 0, degree = 0, h = 0, w = 0, ho = 0, wo = 0, ph = 0, pw = 0;
    int64_t th = 0, tw = 0, panels = 0;   // tiles per column and row; panels of panel_width() tiles
    bool shared = false;                  // outputs in runs of four with one index row
    std::vector<int32_t> off;             // the quads' panel offsets (quads, degree, 4)
    std::vector<float> uw;                // transformed weights ((m + 2)^2, ustride) in the quads' term order
    int64_t ustride = 0;
};

// Tiles per panel.
int64_t panel_width();
// Tiles (m x m outputs each) of an ho x wo map.
int64_t tiles(int m, int64_t ho, int64_t wo);
// The term lists and transformed weights of index (cout, degree) and weight (cout, degree, 3, 3).
void prepare(Conv &c, const int64_t *index, const float *weight);
// Floats of scratch one thread needs for run_panel.
int64_t scratch_floats(const Conv &c);
// dst (cout, ho, wo) = bias + the conv of src (cin, h, w), for the tiles of panel p.
void run_panel(const Conv &c, const float *src, const float *bias, int64_t p, float *scratch, float *dst);

}  // namespace wino
}  // namespace xk
