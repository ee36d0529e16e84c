/* Inner loops of the CPU backend (called from cpu_kernels.pyx).
 *
 * Every X-Conv kernel is one correlation on packed planes.  A group of images
 * of one channel is packed into a zero-padded plane of hb x wb "grid
 * positions" per image, images end to end, so that every tap of the kernel is
 * a constant offset in that flat array and a tile of XK_TILE consecutive grid
 * positions is a tile of contiguous vector loads with no border branches:
 *
 *     tile[p] = bias + sum_j sum_t w_j[t] * plane(chan[j])[toff[t] + p0 + p]
 *
 * Positions that are not real outputs (grid columns >= the output width, the
 * rows between images, the tail of the last tile) are computed and dropped by
 * the scatter.  cpu_kernels.pyx builds the planes, tap offsets and term lists:
 * forward terms are index[v, :], grad_input terms are the edges reading input
 * u (the reverse adjacency), so neither needs atomics.  Terms come grouped by
 * channel block, and XK_VBLOCK outputs of a tile run block by block, so the
 * planes they read stay in L1.
 *
 * XK_NACC (here) and XK_VEC_BYTES (simd.h) may be set with -D to try other
 * tile shapes; cpu_kernels.pyx reads the resulting tile sizes from here.
 *
 * Stride-1 3x3 forwards and grad_inputs may instead run by Winograd F(2x2, 3x3) or
 * F(4x4, 3x3) (kernels/winograd_impl.h): 1x1 correlations in quads on transformed panels
 * of 2x2 or 4x4 tiles.
 *
 * The kernels live in src/kernels/ by family: pack_impl.h (planes and scatter), corr_impl.h
 * (correlation tiles), panel_impl.h (panels read in place), quads_impl.h (1x1 quads),
 * columns_impl.h (the columns path), dots_impl.h (grad_weight), reduce_impl.h (checks and
 * sums), winograd_impl.h.  The element type is a template parameter: cpu_kernels_impl.h
 * (the families in order) and winograd_impl.h are included once for float (suffix _f32) and
 * once for double (_f64).
 */
#ifndef XKERN_CPU_KERNELS_H
#define XKERN_CPU_KERNELS_H

#include "simd.h"

/* Vector accumulators per output tile: at least 8 independent FMA chains cover
 * the FMA latency x throughput product of current x86 cores; 12 leave 4 of
 * AVX2's 16 registers for the weight and the loads, and make the 3x3 tiles 3, 6 or
 * 12 rows high (xk_corr_rows3), sharing more loads between rows: 5-12% faster
 * than 8 on this machine's 3x3 and 1x1 forward and grad_input. */
#ifndef XK_NACC
#define XK_NACC 12
#endif
#if XK_NACC < 8 || XK_NACC % 4
#error "XK_NACC: a multiple of 4, at least 8 (the narrower last tiles are 4 and 8 vectors)"
#endif
/* Outputs per call of xk_corr_tiles: they share the L1-resident channel block. */
#define XK_VBLOCK 32
/* Outputs that share each vector load in xk_corr_tiles' block-expander path, and
 * vectors per output there: XK_SHARE * XK_SACC = 12 accumulators, the XK_SACC loads
 * and one weight fill AVX2's 16 registers (XK_NACC a multiple of XK_SACC). */
#define XK_SHARE 4
#define XK_SACC 3
#if XK_NACC % XK_SACC
#error "XK_NACC: a multiple of XK_SACC"
#endif
#define XK_TILE_F32 (XK_NACC * XK_LANES_F32)
#define XK_TILE_F64 (XK_NACC * XK_LANES_F64)
/* Taps per pass of xk_dot_taps: each grad_out load feeds this many FMAs. */
#define XK_DOT_TAPS 4

/* A strided (B, C, H, W) array; strides in elements. */
typedef struct {
    int64_t img, chan, row, col, height, width;
} xk_image_t;

/* Packed planes of one channel: n images of hb x wb grid positions end to
 * end, zeros up to len (the slack that the last tile and the taps read). */
typedef struct {
    int64_t hb, wb, len;
} xk_layout_t;

/* What a plane holds: plane[g, a, b] = src[g, a*step_y + off_y, b*step_x + off_x],
 * 0 outside the source.  Strided convs read polyphase planes (step = stride). */
typedef struct {
    int64_t step_y, step_x, off_y, off_x;
} xk_frame_t;

/* Where grid position (g, r, c) of a result goes:
 * dst[origin + g*img + r*row + c*col] for r in [r_lo, r_hi), c in [c_lo, c_hi);
 * other positions are dropped. */
typedef struct {
    int64_t origin, img, row, col, r_lo, r_hi, c_lo, c_hi;
} xk_scatter_t;

/* Term lists of xk_quad_panel: destinations in quads of XK_SHARE, quad q's terms
 * [ptr[q], ptr[q + 1]) (or [q * degree, (q + 1) * degree) when ptr is NULL), term j
 * of its destination o reading the panel row at element offset off[j * XK_SHARE + o];
 * slot q * XK_SHARE + o is destination rows[slot] (the slot itself when rows is NULL);
 * n_dst slots are real, the rest of the last quad padding.  A panel has n_src rows
 * and a row of zeros after them, which padding terms read.  shared: the four
 * destinations of every quad read the same rows (block expanders; off[j * XK_SHARE]). */
typedef struct {
    const int32_t *off;
    const int64_t *ptr, *rows;
    int64_t degree, n_dst, n_src, shared;
} xk_quads_t;

/* The destination of slot s of the quads. */
XK_INLINE int64_t xk_quad_row(const xk_quads_t *qs, int64_t s)
{
    return qs->rows ? qs->rows[s] : s;
}

#define XK_CAT_(a, b) a##b
#define XK_CAT(a, b) XK_CAT_(a, b)

#define XK_T float
#define XK_V xk_vec_f32
#define XK_IV xk_ivec_f32
#define XK_VL XK_LANES_F32
#define XK_TILE XK_TILE_F32
#define XK_FN(name) XK_CAT(name, _f32)
#include "cpu_kernels_impl.h"
#include "kernels/winograd_impl.h"
#undef XK_T
#undef XK_V
#undef XK_IV
#undef XK_VL
#undef XK_TILE
#undef XK_FN

#define XK_T double
#define XK_V xk_vec_f64
#define XK_IV xk_ivec_f64
#define XK_VL XK_LANES_F64
#define XK_TILE XK_TILE_F64
#define XK_FN(name) XK_CAT(name, _f64)
#include "cpu_kernels_impl.h"
#include "kernels/winograd_impl.h"
#undef XK_T
#undef XK_V
#undef XK_IV
#undef XK_VL
#undef XK_TILE
#undef XK_FN

#endif /* XKERN_CPU_KERNELS_H */
