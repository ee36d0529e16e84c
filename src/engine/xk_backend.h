// The CPU backend's X-conv kernels the engine shares with the training path (src/cpu_kernels.h),
// compiled into the engine by xk_backend.cpp, its one translation unit that includes them:
//   - stride-1 3x3 X-convs by Winograd F(2x2, 3x3) or F(4x4, 3x3) (winograd_impl.h,
//     xk_wino_tile): 1x1 X-convs in quads of outputs on transformed panels of tiles;
//   - stride-1 1x1 X-convs in quads on panels of the map read in place (xk_quad_tile_direct).
// Both run the outputs in quads of four over a panel of tiles or positions copied to L1.
#pragma once
#include <cstdint>
#include <vector>

namespace xk {
namespace backend {

// Tiles or positions per panel, and per vector of it.
int64_t panel_width();
int64_t panel_lanes();

// An X-conv's outputs in quads (xk_quads_t): term j of output v reads panel row index[v][j].
struct Quads {
    int64_t cin = 0, cout = 0, degree = 0;
    bool shared = false;                  // outputs in runs of four with one index row
    std::vector<int32_t> off;             // panel offsets (quads, degree, 4); padding outputs read row 0
    std::vector<int64_t> edges;           // each slot's weight row v * degree + j; cout * degree: none
};

// One stride-1 3x3 X-conv on one image by Winograd: (cin, h, w) -> (cout, ho, wo), padding (ph, pw).
struct Winograd {
    int m = 0;                            // tiles of m x m outputs
    int64_t h = 0, w = 0, ho = 0, wo = 0, ph = 0, pw = 0;
    int64_t th = 0, tw = 0, panels = 0;   // tiles per column and row; panels of panel_width() tiles
    Quads q;
    std::vector<float> uw;                // transformed weights ((m + 2)^2, ustride) in the quads' slot order
    int64_t ustride = 0;
};

// Tiles (m x m outputs each) of an ho x wo map.
int64_t tiles(int m, int64_t ho, int64_t wo);
// Its quads and transformed weights, from index (cout, degree) and weight (cout, degree, 3, 3).
void prepare(Winograd &c, int64_t cin, int64_t cout, int64_t degree, const int64_t *index, const float *weight);
// Floats of scratch one thread needs.
int64_t scratch_floats(const Winograd &c);
// Quads of four outputs.
int64_t quads(const Quads &q);
// dst (cout, ho, wo) = bias + the conv of src (cin, h, w), for the tiles of panel p and the
// outputs of quads [q_lo, q_hi).
void run_panel(const Winograd &c, const float *src, const float *bias, int64_t p, int64_t q_lo, int64_t q_hi,
               float *scratch, float *dst);

// One stride-1 1x1 X-conv on one image: (cin, hw) -> (cout, hw), hw >= panel_width(), the
// input's channels chan >= hw floats apart.
struct Pointwise {
    int64_t hw = 0, chan = 0, tiles = 0;  // tiles of tile_positions() positions
    Quads q;
    std::vector<float> qw;                // weights (quads, degree, 4)
};

// An affine of the input's channels applied as the kernels load it: channel c's x becomes
// act(scale[c] x + shift[c]), act 0 none, 1 ReLU, 2 ReLU6.
struct Affine {
    const float *scale = nullptr, *shift = nullptr;
    int act = 0;
};

// Positions per tile (a few panels).
int64_t tile_positions();
void prepare(Pointwise &c, int64_t cin, int64_t cout, int64_t degree, int64_t hw, const int64_t *index,
             const float *weight);
int64_t scratch_floats(const Pointwise &c);
// dst (cout, hw) = bias + the conv of src (cin, hw), at the positions of tile t, for the
// outputs of quads [q_lo, q_hi); with pre, of src through that affine.
void run_tile(const Pointwise &c, const float *src, const float *bias, int64_t t, int64_t q_lo, int64_t q_hi,
              float *scratch, float *dst, const Affine *pre = nullptr);

// Any other X-conv (strided, other kernel sizes) on one image as a 1x1 X-conv in quads over its
// columns (xk_im2col): row (i, ky, kx) of the columns holds input channel i at tap (ky, kx) of
// every output position, so output v's terms are the rows (index[v][j], ky, kx) and its weights
// weight[v] as they are.
struct Columns {
    int64_t kh = 0, kw = 0, sh = 0, sw = 0, ph = 0, pw = 0, dh = 0, dw = 0, h = 0, w = 0, ho = 0, wo = 0;
    Pointwise quads;                      // over cin kh kw rows of quads.chan floats, degree kh kw terms
};
void prepare(Columns &c, int64_t cin, int64_t cout, int64_t degree, const int64_t *index, const float *weight);
// Floats of the columns.
int64_t column_floats(const Columns &c);
// The columns' rows of input channels u0 <= u < u1 of src (cin, h, w).
void fill_columns(const Columns &c, const float *src, float *col, int64_t u0, int64_t u1);

}  // namespace backend
}  // namespace xk
