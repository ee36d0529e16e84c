"""Compiled CPU kernels: X-Conv and X-Linear, forward and backward (Cython + OpenMP).

Layout NCHW with the pixel axis as the vector axis.  Each kernel packs a group
of images per channel into zero-padded planes, so that every tap is a constant
offset and a tile of pixels is a run of contiguous vector loads with no border
branches (src/cpu_kernels.h), then computes tiles in one OpenMP region per
kernel: prange(schedule='static') over one chunk of work items per thread,
each chunk packing into its own buffer, with no barriers and no shared writes.
Every output element is summed by one thread in an order fixed by the data
alone, so results are bitwise the same at any thread count.

    forward      out[b, v]       = bias[v] + sum_i sum_taps w[v, i, tap] * x[b, index[v, i], shifted]
    grad_input   grad_x[b, u]    = sum over edges e = v*D + i with index[v, i] = u (the reverse
                                   adjacency) of sum_taps w[v, i, tap] * g[b, v, shifted back]
    grad_weight  grad_w[v, i, t] = sum_b sum_pixels g[b, v] * x[b, index[v, i], shifted by tap t]
    grad_bias    grad_b[v]       = sum_b sum_pixels g[b, v]

Strides and dilations: the tap offset k*d = q*s + r along an axis reads the
polyphase plane r (source rows r, r + s, r + 2s, ...) at offset q, so every
strided conv is a stride-1 correlation on planes.  Stride-1 3x3 forwards and
grad_inputs with enough edges per channel and tiles run by Winograd F(4x4, 3x3) or
F(2x2, 3x3): 36 or 16 1x1 correlations in quads on transformed panels (_wino_tiles,
src/winograd_impl.h);
otherwise in tiles of grid rows (xk_corr_rows3), so one load serves three kernel
rows.  Their grad_weight runs by Winograd too (float32, enough edges per channel: 36 or 16
products per 4x4 or 2x2 tile and edge, each panel of tiles summed into one of a fixed number
of partial sums, _wino_wgrads) or keeps rows of grad_out in registers (xk_dot_rows3).  1x1 forwards, and
1x1 grad_inputs with one output phase, run in quads of four destinations that sum all
their terms in registers from a panel of every source channel's positions (xk_quad_tile;
with stride 1 and no padding the maps are read and written in place, no packing, no
scatter).  Block expanders (index rows equal in runs of XK_SHARE) let those outputs
share every load of x: in the forward (a quad is a run; except where stride-1 3x3 row
tiles share loads between kernel rows) and in grad_weight; a 1x1 grad_input keeps each
run's grad_out vectors in registers and spreads them over the inputs the run reads
(_whole_tiles).  Packing buffers are kept per thread
between calls (_scratch; release_scratch frees them).  grad_input is the
transposed conv: output phase r of grad_x (rows y with y + pad = Q*s + r)
gathers the taps of phase r only.  X-Linear is the 1x1 conv of (B, Cin, 1, 1).
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t, int64_t, uintptr_t

import functools
import threading
from collections import OrderedDict

import numpy as np
cimport numpy as cnp

cnp.import_array()

from xkern.backends import _checks, _graphs

from _openmp_helpers cimport XK_OPENMP_ENABLED, xk_omp_max_threads


cdef extern from "cpu_kernels.h" nogil:
    enum:
        XK_NACC
        XK_DOT_ROWS
        XK_TILE_F32
        XK_TILE_F64
        XK_VBLOCK
        XK_SHARE
        XK_SACC
        XK_TAP_ROWS
        XK_TAP_OUTS
        XK_LANES_F32
        XK_LANES_F64

    ctypedef struct xk_image_t:
        int64_t img, chan, row, col, height, width
    ctypedef struct xk_layout_t:
        int64_t hb, wb, len
    ctypedef struct xk_frame_t:
        int64_t step_y, step_x, off_y, off_x
    ctypedef struct xk_scatter_t:
        int64_t origin, img, row, col, r_lo, r_hi, c_lo, c_hi
    ctypedef struct xk_quads_t:
        const int32_t *off
        const int64_t *ptr
        const int64_t *rows
        int64_t degree, n_dst, n_src, shared

    void xk_pack_f32(float *dst, const float *src, int64_t n_img, const xk_image_t *im,
                     const xk_layout_t *lay, const xk_frame_t *fr)
    void xk_pack_f64(double *dst, const double *src, int64_t n_img, const xk_image_t *im,
                     const xk_layout_t *lay, const xk_frame_t *fr)
    void xk_corr_tiles_f32(const float *src, int64_t cstride, int64_t p0, int64_t nvec,
                           const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow,
                           const float *w, int64_t wstride, int64_t shared, const int64_t *toff, int64_t ntap,
                           int64_t rows3, int64_t a3,
                           const float *bias, int64_t nd, float *dst, int64_t dst_stride,
                           int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_corr_tiles_f64(const double *src, int64_t cstride, int64_t p0, int64_t nvec,
                           const int64_t *ptr, int64_t n_cb, const int64_t *chan, const int64_t *wrow,
                           const double *w, int64_t wstride, int64_t shared, const int64_t *toff, int64_t ntap,
                           int64_t rows3, int64_t a3,
                           const double *bias, int64_t nd, double *dst, int64_t dst_stride,
                           int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_dot_taps_f32(float *out, const float *g, const float *x, int64_t cstride, const int64_t *chan,
                         int64_t degree, const float *mk, const int64_t *toff, int64_t ntap, int64_t n)
    void xk_dot_taps_f64(double *out, const double *g, const double *x, int64_t cstride, const int64_t *chan,
                         int64_t degree, const double *mk, const int64_t *toff, int64_t ntap, int64_t n)
    void xk_spread_tile_f32(const float *src, int64_t cstride, int64_t p0, const int64_t *chan, const float *w,
                            int64_t n_runs, int64_t degree, int64_t n_dst, float *part, float *dst,
                            int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_spread_tile_f64(const double *src, int64_t cstride, int64_t p0, const int64_t *chan, const double *w,
                            int64_t n_runs, int64_t degree, int64_t n_dst, double *part, double *dst,
                            int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_quad_tile_f32(const float *src, int64_t cstride, int64_t p0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const float *qw, const float *bias, float *panel, float *part, float *dst,
                          int64_t dst_stride, int64_t n_img, const xk_layout_t *lay, const xk_scatter_t *sc)
    void xk_quad_tile_f64(const double *src, int64_t cstride, int64_t p0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const double *qw, const double *bias, double *panel, double *part,
                          double *dst, int64_t dst_stride, int64_t n_img, const xk_layout_t *lay,
                          const xk_scatter_t *sc)
    void xk_quad_tile_direct_f32(const float *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                 int64_t p0, const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const float *qw,
                                 const float *bias, float *panel, float *part, float *dst, int64_t dst_img,
                                 int64_t dst_chan)
    void xk_quad_tile_direct_f64(const double *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                 int64_t p0, const xk_quads_t *qs, int64_t q_lo, int64_t q_hi, const double *qw,
                                 const double *bias, double *panel, double *part, double *dst, int64_t dst_img,
                                 int64_t dst_chan)
    void xk_im2col_f32(float *col, int64_t p_pad, const float *x, const xk_image_t *im, int64_t n_img, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_im2col_f64(double *col, int64_t p_pad, const double *x, const xk_image_t *im, int64_t n_img,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                       int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_im2col_table_f32(float *col, int64_t p_pad, const float *x, int64_t chan, int64_t img, int64_t n_img,
                             const int64_t *offs, int64_t hw, int64_t kk, int64_t u0, int64_t u1)
    void xk_im2col_table_f64(double *col, int64_t p_pad, const double *x, int64_t chan, int64_t img, int64_t n_img,
                             const int64_t *offs, int64_t hw, int64_t kk, int64_t u0, int64_t u1)
    void xk_col2im_f32(float *gx, const xk_image_t *im, const float *gcol, int64_t p_pad, int64_t n_img, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw,
                       int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_col2im_f64(double *gx, const xk_image_t *im, const double *gcol, int64_t p_pad, int64_t n_img,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                       int64_t dw, int64_t ho, int64_t wo, int64_t u0, int64_t u1)
    void xk_dot_columns_f32(float *gw, const float *g, int64_t gstride, const float *col, int64_t cstride,
                            const int64_t *rows, const int64_t *wpos, const int64_t *ptr, int64_t nb, int64_t n_dst,
                            int64_t v_lo, int64_t v_hi, int64_t p0, int64_t n)
    void xk_dot_columns_f64(double *gw, const double *g, int64_t gstride, const double *col, int64_t cstride,
                            const int64_t *rows, const int64_t *wpos, const int64_t *ptr, int64_t nb, int64_t n_dst,
                            int64_t v_lo, int64_t v_hi, int64_t p0, int64_t n)
    void xk_dot_columns_taps_f32(float *gw, const float *g, int64_t gstride, const float *col, int64_t cstride,
                                 int64_t kk, const int64_t *gptr, const int64_t *sv, const int64_t *sw,
                                 int64_t u_lo, int64_t u_hi, int64_t p0, int64_t n)
    void xk_dot_columns_taps_f64(double *gw, const double *g, int64_t gstride, const double *col, int64_t cstride,
                                 int64_t kk, const int64_t *gptr, const int64_t *sv, const int64_t *sw,
                                 int64_t u_lo, int64_t u_hi, int64_t p0, int64_t n)
    void xk_quad_columns_f32(const float *x, int64_t xstride, int64_t p, const int32_t *off, const float *qw,
                             const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const float *bias,
                             float *panel, float *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
    void xk_quad_columns_f64(const double *x, int64_t xstride, int64_t p, const int32_t *off, const double *qw,
                             const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const double *bias,
                             double *panel, double *y, int64_t ystride, int64_t q_lo, int64_t q_hi)
    void xk_spread_tile_direct_f32(const float *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                   int64_t p0, const int64_t *chan, const float *w, int64_t n_runs, int64_t degree,
                                   int64_t n_dst, float *panel, float *part, float *dst, int64_t dst_img,
                                   int64_t dst_chan)
    void xk_spread_tile_direct_f64(const double *src, int64_t src_img, int64_t src_chan, int64_t hw, int64_t n_img,
                                   int64_t p0, const int64_t *chan, const double *w, int64_t n_runs, int64_t degree,
                                   int64_t n_dst, double *panel, double *part, double *dst, int64_t dst_img,
                                   int64_t dst_chan)
    void xk_dot_taps_shared_f32(float *out, const float *g, int64_t gstride, const float *x, int64_t cstride,
                                const int64_t *chan, int64_t degree, const float *mk, const int64_t *toff,
                                int64_t ntap, int64_t n)
    void xk_dot_taps_shared_f64(double *out, const double *g, int64_t gstride, const double *x, int64_t cstride,
                                const int64_t *chan, int64_t degree, const double *mk, const int64_t *toff,
                                int64_t ntap, int64_t n)
    void xk_dot_rows3_f32(float *out, const float *g, const float *x, int64_t wb, int64_t cols, int64_t n_rows)
    void xk_dot_rows3_f64(double *out, const double *g, const double *x, int64_t wb, int64_t cols,
                          int64_t n_rows)
    void xk_wino_weights_f32(float *uw, const float *w, const int64_t *edges, int64_t n, int64_t n_edges,
                             int flip, int m, int64_t j_lo,
                             int64_t j_hi)
    void xk_wino_weights_f64(double *uw, const double *w, const int64_t *edges, int64_t n, int64_t n_edges,
                             int flip, int m, int64_t j_lo,
                             int64_t j_hi)
    void xk_wino_tile_f32(const float *src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,
                          int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const float *uw, int64_t ustride, const float *bias, float *panel,
                          float *part, float *dst, const xk_image_t *dim, int m)
    void xk_wino_tile_f64(const double *src, const xk_image_t *sim, int64_t n_img, int64_t th, int64_t tw,
                          int64_t pad_y, int64_t pad_x, int64_t q0, const xk_quads_t *qs, int64_t q_lo,
                          int64_t q_hi, const double *uw, int64_t ustride, const double *bias, double *panel,
                          double *part, double *dst, const xk_image_t *dim, int m)
    void xk_wino_wgrad_tile_f32(const float *x, const xk_image_t *xim, const float *g, const xk_image_t *gim,
                                int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                int shared, float *vbuf, float *acc, int m)
    void xk_wino_wgrad_tile_f64(const double *x, const xk_image_t *xim, const double *g, const xk_image_t *gim,
                                int64_t n_img, int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int64_t q0,
                                int64_t n_src, const int64_t *index, int64_t degree, int64_t n_dst,
                                int shared, double *vbuf, double *acc, int m)
    void xk_wino_wgrad_finish_f32(float *grad_w, const float *acc, int64_t n_edges, int m)
    void xk_wino_wgrad_finish_f64(double *grad_w, const double *acc, int64_t n_edges, int m)
    int xk_all_finite_f32(const float *x, int64_t n)
    int xk_all_finite_f64(const double *x, int64_t n)
    void xk_valid_mask_f32(float *mk, int64_t n, int64_t n_img, const xk_layout_t *lay, int64_t rows, int64_t cols)
    void xk_valid_mask_f64(double *mk, int64_t n, int64_t n_img, const xk_layout_t *lay, int64_t rows, int64_t cols)
    void xk_pack_points_f32(float *dst, int64_t cstride, const float *src, int64_t n_chan, int64_t n_img,
                            const xk_image_t *im, int64_t len)
    void xk_pack_points_f64(double *dst, int64_t cstride, const double *src, int64_t n_chan, int64_t n_img,
                            const xk_image_t *im, int64_t len)
    float xk_sum_image_f32(const float *src, int64_t n_img, const xk_image_t *im)
    double xk_sum_image_f64(const double *src, int64_t n_img, const xk_image_t *im)


ctypedef fused floating:
    float
    double


# Packed bytes per group of images (per thread): small enough to stay in L2
# between being packed and being read by the tiles.
PACK_BYTES = 1 << 20
# Bytes of the planes one channel block spans in a tile: the block's planes stay
# in L1 while up to XK_VBLOCK outputs read them.
BLOCK_BYTES = 16 << 10
# Fewest terms per output and block worth the store and reload of its partial sums.
BLOCK_TERMS = 8
# Most bytes of the panel (every source channel's XK_SACC vectors of a tile) with which 1x1
# forwards and grad_inputs take quads (xk_quad_tile): the panel must stay in cache while
# every destination reads it.  Best in L1 (up to ~330 channels), but quads beat the flat
# tiles from L2 too: 1.3-1.6x, one thread, at 512-4096 channels (48-384 KiB panels).
QUAD_PANEL_BYTES = 1 << 20
# The columns path (_columns): strided convs and maps of a few outputs (where the packed
# planes are mostly padding: a 3x3 map fills 9 of its 25 grid positions), as 1x1 quads over the image columns
# (one source row per channel and tap), the rows in blocks of COLUMNS_BLOCK_BYTES of panel
# so that each block stays in L1 while every quad reads it; image columns of at most
# COLUMNS_MAX_BYTES.  COLUMNS: "auto", "always" (where it applies: not Winograd) or "never".
COLUMNS = "auto"
COLUMNS_MAX_HW = 25
COLUMNS_MAX_STRIDED_HW = 784
COLUMNS_BLOCK_BYTES = 24 << 10
COLUMNS_MAX_BYTES = 64 << 20
# grad_weight by the columns path: positions per pass of the 1x1 dot products (their row
# blocks hold COLUMNS_BLOCK_BYTES), and the bytes of grad_out's rows (every output's stretch
# of a tile) that k x k kernels' tiles keep (in L2) while each channel's taps meet them.
COLUMNS_WGRAD_TILE = 256
COLUMNS_WGRAD_G_BYTES = 1 << 20
# Stride-1 1x1 grad_weights on contiguous maps of DOTS_IN_PLACE_HW[0] to DOTS_IN_PLACE_HW[1]
# positions (whole vectors): xk_dot_columns on x and grad_out in place, a whole map per pass
# (_dots_in_place), instead of the packed planes.  One thread, batch 16-32: 12x12 1.16-1.45x,
# 16x16 1.21-1.58x; 8x8 0.93x (passes too short); 32x32 0.85-0.95x (a map's rows 4 KiB apart share
# L1 sets, so a block of them does not stay in L1).
DOTS_IN_PLACE_HW = (128, 256)

# Stride-1 3x3 convs by Winograd F(2x2, 3x3) (xk_wino_tile, _wino_tiles): "auto" takes it
# where it measured faster than the direct row tiles (_winograd), "always" for every
# stride-1 3x3 conv, "never" not at all.
WINOGRAD = "auto"
# The tile of m x m outputs: 0, the rule (_winograd) takes F(4x4, 3x3) where its tiles make
# WINO_MIN_PANELS panels, its scratch fits and it transforms at most WINO_F4_VALUES (by
# itemsize) as many values as F(2x2, 3x3) (_wino_values), else F(2x2, 3x3); 2 or 4: that
# one wherever Winograd runs.  F(4x4) against F(2x2), two threads, batch 32, 128-256
# channels, forward / grad_input: float32 1.28-1.53x at 28x28 (0.56 of the values),
# 0.99-1.22x at 14x14 (0.73: its 4x4 tiles cover 16x16); float64 1.19-1.53x and 0.85-0.96x.
WINO_TILE = 0
WINO_F4_VALUES = {4: 0.75, 8: 0.65}
# "auto": at least this many edges (Cout * D) per source channel and per destination
# channel (the transforms cost per channel, the products per edge: at 8 it measured
# 0.6-0.9x, from 12 1.1-1.9x, two threads) ...
WINO_MIN_TERMS = 12
# ... at least this many panels of tiles (batch 1 at 14x14 has 2 of 2x2 tiles: 0.4x; with
# fewer than 4 per thread, _wino_tiles splits a panel's quads between threads, each
# transforming the panel again).  No rule looks at the thread count: a result's bits must
# not depend on it ...
WINO_MIN_PANELS = 16
# ... and one thread's scratch ((m + 2)^2 transformed panels of the sources and as many of
# the destinations) at most this many bytes.
WINO_SCRATCH_BYTES = 4 << 20

# grad_weight by Winograd (_winograd_wgrad, _wino_wgrads): "auto" takes it for float32 (float64's
# transformed tiles are twice the bytes: 0.8-1.2x), with at least this many edges per source
# and per destination channel (at 8 it measured 0.9-1.06x, at 16-128 1.2-1.6x, float32, batch 32) ...
WINO_WGRAD_TERMS = 12
# ... and at least this many partial sums (one per range of panels, each a thread's work) ...
WINO_WGRAD_MIN_PARTS = 2
# ... of which there are at most this many (so at most this many threads share the work), of
# at most this many bytes in all (never a function of the thread count: the sums add up in
# a fixed order, and the rule must not switch algorithms with it).
WINO_WGRAD_PARTS = 8
WINO_WGRAD_ACC_BYTES = 8 << 20
# "auto" takes F(4x4, 3x3) for grad_weight (the dot products read the transformed tiles from
# L2: 36 values per 4x4 tile) where it reads at most this fraction of F(2x2, 3x3)'s values
# (16 per 2x2 tile): 0.56 at 28x28 measured 1.25-1.49x, 0.73 at 14x14 0.96-1.02x (two
# threads, float32, batch 32, 128-256 channels).
WINO_WGRAD_F4_VALUES = 0.65

FRAME_DTYPE = np.dtype([("step_y", np.int64), ("step_x", np.int64),
                        ("off_y", np.int64), ("off_x", np.int64)])
SCATTER_DTYPE = np.dtype([(name, np.int64) for name in
                          ("origin", "img", "row", "col", "r_lo", "r_hi", "c_lo", "c_hi")])


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(XK_OPENMP_ENABLED)


cdef extern from "simd.h" nogil:
    const char *xk_isa()


def isa():
    """The instruction set the kernels run with on this CPU (e.g. "AVX2 + FMA (x86-64-v3)")."""
    return xk_isa().decode()


def max_threads():
    """OpenMP's default team size for this thread (1 without OpenMP)."""
    return xk_omp_max_threads()


# ---------------------------------------------------------------- geometry

def _round_up(n, m):
    return -(-n // m) * m


def _tap_split(k, d, s):
    """Taps 0..k-1 of one axis (dilation d, stride s): t*d = q*s + r, as lists (r, q)."""
    return [t * d % s for t in range(k)], [t * d // s for t in range(k)]


def _odd_lines(n, itemsize):
    """n elements rounded up to an odd number of 64-byte cache lines.  Channel planes
    that far apart fall into different cache sets; at a multiple of 4 KiB every
    channel's tile would compete for the same few sets of L1."""
    per_line = 64 // itemsize
    lines = -(-n // per_line)
    return (lines + 1 - lines % 2) * per_line


def _aligned_empty(n, dtype):
    """Uninitialised (n,) array starting on a 64-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + 64 // itemsize, dtype)
    start = (-raw.ctypes.data % 64) // itemsize
    return raw[start:start + n]


# Scratch buffers are kept per thread and slot for the next call (allocating them
# afresh costs a page fault per 4 KiB page on every call), up to this many bytes each.
SCRATCH_KEEP_BYTES = 256 << 20
_scratch_local = threading.local()
_DTYPE_KEYS = {t: np.dtype(t).str for t in (np.float32, np.float64, np.dtype(np.float32), np.dtype(np.float64))}


def _scratch(slot, n, dtype):
    """Uninitialised 64-byte-aligned (n,) scratch array of this thread's slot `slot`;
    the next call for the slot may return the same memory."""
    buffers = getattr(_scratch_local, "buffers", None)
    if buffers is None:
        buffers = _scratch_local.buffers = {}
    key = (slot, _DTYPE_KEYS.get(dtype) or np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < n:
        buf = _aligned_empty(n, dtype)
        if buf.nbytes <= SCRATCH_KEEP_BYTES:
            buffers[key] = buf
    return buf[:n]


def release_scratch():
    """Drop the calling thread's cached scratch buffers (the next kernel call allocates
    them again)."""
    _scratch_local.buffers = {}


def _group(batch, bytes_per_image):
    """Images per packed group."""
    return max(1, min(batch, PACK_BYTES // max(1, bytes_per_image)))


def _blocked_terms(const int64_t[::1] ptr, const int64_t[::1] chan, const int64_t[::1] wrow,
                   int64_t n_chan, int64_t window_bytes):
    """Term lists (CSR ptr over destinations; chan, wrow) regrouped by channel block.

    Returns (ptr over (destination, block), chan, wrow, number of blocks); within a
    destination and block, terms keep their order (a counting sort).  A block is as
    many channels as fit BLOCK_BYTES at window_bytes each, but holds BLOCK_TERMS
    terms of a destination on average: partial sums are stored and reloaded
    between blocks.
    """
    cdef int64_t n_dst = ptr.shape[0] - 1, n_terms = chan.shape[0]
    cdef int64_t by_bytes = max(1, BLOCK_BYTES // window_bytes)
    cdef int64_t n_cb = max(1, min((n_chan + by_bytes - 1) // by_bytes, n_terms // (n_dst * BLOCK_TERMS)))
    cdef int64_t block = (n_chan + n_cb - 1) // n_cb
    n_cb = (n_chan + block - 1) // block
    if n_cb == 1:
        return ptr, chan, wrow, 1
    blocked_ptr = np.zeros(n_dst * n_cb + 1, np.int64)
    blocked_chan = np.empty(n_terms, np.int64)
    blocked_wrow = np.empty(n_terms, np.int64)
    cdef int64_t[::1] bp = blocked_ptr, bc = blocked_chan, bw = blocked_wrow
    cdef int64_t d, j, slot
    with nogil:
        for d in range(n_dst):
            for j in range(ptr[d], ptr[d + 1]):
                bp[d * n_cb + chan[j] // block + 1] += 1
        for j in range(n_dst * n_cb):
            bp[j + 1] += bp[j]
        for d in range(n_dst):  # bp[slot] is the next free place of slot while filling
            for j in range(ptr[d], ptr[d + 1]):
                slot = d * n_cb + chan[j] // block
                bc[bp[slot]] = chan[j]
                bw[bp[slot]] = wrow[j]
                bp[slot] += 1
        for j in range(n_dst * n_cb, 0, -1):  # shift back: bp[slot] was advanced to the next slot's start
            bp[j] = bp[j - 1]
        bp[0] = 0
    return blocked_ptr, blocked_chan, blocked_wrow, n_cb


# ---------------------------------------------------------------- argument checks
#
# xkern.ops validates every argument before it calls a kernel; these checks are the last
# line for direct callers of the backend: what the kernels index with must fit together,
# so that a mistake is a ValueError naming the argument, never an out-of-bounds access.
# Shapes are checked on every call (a few C comparisons); index entries and the reverse
# adjacency once per graph (through the term cache, or each call for small graphs).

cdef int _check_conv(const Py_ssize_t *image, const Py_ssize_t *kernel, const Py_ssize_t *index,
                     const Py_ssize_t *result, stride, padding, dilation, tuple names) except -1:
    """ValueError naming the argument unless image (B, Cin, H, W), kernel (Cout, D, kh, kw),
    index (Cout, D) and result (B, Cout, Ho, Wo) fit the geometry; names: the arguments
    that hold image, kernel and result in this kernel's signature.  C comparisons on every
    call; a failure is raised, with its message, by the backends' shared check_conv."""
    cdef Py_ssize_t sh, sw, ph, pw, dh, dw, ho, wo
    try:
        sh, sw = stride
        ph, pw = padding
        dh, dw = dilation
    except (TypeError, ValueError, OverflowError):
        _checks.check_geometry(stride, padding, dilation)  # raises, naming the argument
        raise
    ho = (image[2] + 2 * ph - dh * (kernel[2] - 1) - 1) // sh + 1 if sh >= 1 else 0
    wo = (image[3] + 2 * pw - dw * (kernel[3] - 1) - 1) // sw + 1 if sw >= 1 else 0
    if (sh < 1 or sw < 1 or ph < 0 or pw < 0 or dh < 1 or dw < 1
            or kernel[0] < 1 or kernel[1] < 1 or kernel[2] < 1 or kernel[3] < 1
            or index[0] != kernel[0] or index[1] != kernel[1] or ho < 1 or wo < 1
            or result[0] != image[0] or result[1] != kernel[0] or result[2] != ho or result[3] != wo):
        _checks.check_conv(tuple(image[k] for k in range(4)), tuple(kernel[k] for k in range(4)),
                           (index[0], index[1]), tuple(result[k] for k in range(4)),
                           stride, padding, dilation, names)  # raises
        raise AssertionError("_check_conv and _checks.check_conv disagree")
    return 0


def _check_index(const int64_t[::1] flat, int64_t n_in):
    """ValueError unless every entry of the (flattened) index is in [0, n_in)."""
    cdef int64_t j, bad = -1
    with nogil:
        for j in range(flat.shape[0]):
            if flat[j] < 0 or flat[j] >= n_in:
                bad = j
                break
    if bad >= 0:
        raise ValueError(f"index entries must lie in [0, {n_in}) (the input channels); entry {bad} is {flat[bad]}")


def _check_reverse(const int64_t[::1] flat, const int64_t[::1] ptr, const int64_t[::1] edge, int64_t n_in):
    """ValueError unless (ptr, edge) is the reverse adjacency of the flattened index: ptr
    (n_in + 1,) from 0 to len(flat), edge a permutation of the edge ids that lists under
    u the edges whose index entry is u."""
    cdef int64_t u, k, e, n = flat.shape[0], bad = 0
    if ptr.shape[0] != n_in + 1 or edge.shape[0] != n:
        raise ValueError(f"rev must hold ptr of length {n_in + 1} and edge of length {n} (the edges of index); "
                         f"got {ptr.shape[0]} and {edge.shape[0]}")
    seen = np.zeros(n, np.uint8)
    cdef unsigned char[::1] hit = seen
    with nogil:
        if ptr[0] != 0 or ptr[n_in] != n:
            bad = 1
        for u in range(n_in):
            if bad:
                break
            if ptr[u + 1] < ptr[u] or ptr[u + 1] > n:
                bad = 1
                break
            for k in range(ptr[u], ptr[u + 1]):
                e = edge[k]
                if e < 0 or e >= n or hit[e] or flat[e] != u:
                    bad = 1
                    break
                hit[e] = 1
    if bad:
        raise ValueError("rev is not the reverse adjacency of index (xkern.ops.adjacency.reverse_adjacency)")


# Term lists of the graphs seen last, memoised on the index's contents: building them
# costs 0.05-0.5 ms per call at the reference layers (Cout * D = 8K-74K terms), and a
# net's graphs do not change while it trains.
# At most this many entries (two per X layer: forward and grad_input) and bytes (an entry
# of a graph of n edges holds about 32 n bytes: 4 MiB for 512 x 256).
TERMS_CACHE_SIZE = 512
TERMS_CACHE_BYTES = 256 << 20
# Graphs with at most this many edges are rebuilt each call: cheaper than the look-up (~4 us).
TERMS_CACHE_MIN = 1024
_terms_cache = OrderedDict()
_terms_bytes = 0
_terms_lock = threading.Lock()


def _entry_bytes(entry):
    return entry[0].nbytes + sum(a.nbytes for a in entry[1] if isinstance(a, np.ndarray))


def clear_term_cache():
    """Forget the memoised term lists (the next call of each graph builds them again)."""
    global _terms_bytes
    with _terms_lock:
        _terms_cache.clear()
        _terms_bytes = 0


def _frozen_arrays(made):
    """The tuple made with its arrays copied and read-only: they are shared between calls, and
    a list may be a view of the caller's index, which may change after this call."""
    made = tuple(np.array(a) if isinstance(a, np.ndarray) else a for a in made)
    for a in made:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return made


def _cached_terms(kind, index, extra, make):
    """make() for the (Cout, D) graph `index` (and the hashable `extra` it depends on), from the cache
    when an equal index was seen: the key holds evenly spaced entries of the index, and a
    hit is confirmed against a private copy of the whole index.  The arrays made are
    copied and made read-only: they are shared between calls."""
    # xkern.ops' cached copy of the graph: its tables are found by identity
    hit = _graphs.table(index if isinstance(index, np.ndarray) else index.base, (kind, extra),
                        lambda: _frozen_arrays(make()))
    if hit is not None:
        return hit
    if index.shape[0] * index.shape[1] <= TERMS_CACHE_MIN:
        return make()
    flat = np.asarray(index).ravel()
    key = (kind, np.shape(index), extra, flat[::max(1, flat.size // 64)].tobytes())
    with _terms_lock:
        hit = _terms_cache.get(key)
        if hit is not None:
            _terms_cache.move_to_end(key)
    if hit is not None and np.array_equal(hit[0], flat):
        return hit[1]
    made = _frozen_arrays(make())
    entry = (flat.copy(), made)
    global _terms_bytes
    with _terms_lock:
        old = _terms_cache.pop(key, None)
        if old is not None:
            _terms_bytes -= _entry_bytes(old)
        _terms_cache[key] = entry
        _terms_bytes += _entry_bytes(entry)
        while len(_terms_cache) > 1 and (len(_terms_cache) > TERMS_CACHE_SIZE or _terms_bytes > TERMS_CACHE_BYTES):
            _terms_bytes -= _entry_bytes(_terms_cache.popitem(last=False)[1])
    return made


def _forward_terms(index, int64_t n_in, int64_t window, int64_t share):
    """The forward's term lists (output v reads index[v, :]), blocked; index (an array) checked.
    Term (v, d)'s weight row is v * D + d, or with share > 1 (the shared-load path, whose
    weights _shared_weights interleaves by output) (v // share) * D + d."""
    flat = index.ravel()
    _check_index(flat, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    rows = np.arange(n_out * degree, dtype=np.int64)
    if share > 1:
        rows = rows // (share * degree) * degree + rows % degree
    return _blocked_terms(np.arange(0, n_out * degree + 1, degree, dtype=np.int64), flat, rows, n_in, window)


def _run_rows(index, int64_t n_in):
    """(The first index row of each run of XK_SHARE outputs, flat,); index checked."""
    _check_index(index.ravel(), n_in)
    return (np.ascontiguousarray(index[::XK_SHARE]).reshape(-1),)


def _shared_weights(weight):
    """weight (Cout, D, kh, kw), a C-contiguous float32 / float64 array (or a buffer over one),
    as (ceil(Cout / XK_SHARE), D, kh * kw, XK_SHARE), flat: the XK_SHARE outputs of a run next
    to each other for every term and tap (xk_corr_shared, xk_spread_shared, xk_quad_panel), the
    padding outputs' weights zero: this thread's scratch slot 3, valid until its next call.
    (Made on every call, in one nogil pass: a fresh array of a few hundred KiB costs a page
    fault per 4 KiB here, and a numpy transpose of an axis of 4 took 20x the time of this
    loop: 170 us for 512 x 128.)"""
    w = weight if cnp.PyArray_Check(weight) else np.asarray(weight)
    if cnp.PyArray_NDIM(w) != 4 or not cnp.PyArray_IS_C_CONTIGUOUS(w):
        raise ValueError(f"weight must be a C-contiguous (Cout, D, kh, kw) array, got shape {w.shape}")
    cdef Py_ssize_t *shape = <Py_ssize_t *>cnp.PyArray_DIMS(w)
    cdef int64_t n_out = shape[0], per = shape[1] * shape[2] * shape[3]
    cdef int64_t n = (n_out + XK_SHARE - 1) // XK_SHARE * per * XK_SHARE
    if cnp.PyArray_TYPE(w) == cnp.NPY_FLOAT:
        out = _scratch(3, n, np.float32)
        _interleave(<const float *>cnp.PyArray_DATA(w), n_out, per, <float *>cnp.PyArray_DATA(out))
    elif cnp.PyArray_TYPE(w) == cnp.NPY_DOUBLE:
        out = _scratch(3, n, np.float64)
        _interleave(<const double *>cnp.PyArray_DATA(w), n_out, per, <double *>cnp.PyArray_DATA(out))
    else:
        raise ValueError(f"weight must be float32 or float64, got {w.dtype}")
    return out


cdef void _interleave(const floating *w, int64_t n_out, int64_t per, floating *o) noexcept nogil:
    """o = _shared_weights' layout of the (n_out, per) weights w."""
    cdef int64_t e, v, base
    for v in range((n_out + XK_SHARE - 1) // XK_SHARE * XK_SHARE):
        base = v // XK_SHARE * per * XK_SHARE + v % XK_SHARE
        if v < n_out:
            for e in range(per):
                o[base + e * XK_SHARE] = w[v * per + e]
        else:
            for e in range(per):
                o[base + e * XK_SHARE] = 0


def _quad_terms(index, int64_t n_in, int64_t width):
    """(xk_quad_panel's panel offsets, flat int32,): index (Cout, D), checked, times the
    panel's channel width, its rows padded with zeros to whole quads of XK_SHARE, as
    (quads, D, XK_SHARE)."""
    flat = index.ravel()
    _check_index(flat, n_in)
    if n_in * width > np.iinfo(np.int32).max:
        raise ValueError(f"{n_in} input channels are too many for 32-bit panel offsets")
    rows = np.zeros((_round_up(index.shape[0], XK_SHARE), index.shape[1]), np.int32)
    rows[:index.shape[0]] = index * width
    return (np.ascontiguousarray(rows.reshape(-1, XK_SHARE, index.shape[1]).transpose(0, 2, 1)).reshape(-1),)


def _quad_weights(weight):
    """1x1 weight (Cout, D, 1, 1) as the forward quads' (quads, D, XK_SHARE), flat
    (_shared_weights)."""
    return _shared_weights(weight)


def _input_quads(index, rev, int64_t n_in, int64_t width):
    """grad_input's quads (xk_quads_t) over the reverse adjacency rev of index (Cout, D), both
    checked: (panel offsets int32, quad ptr, rows, edges), the last two per slot and per
    term.  Inputs go in order of in-degree, most first (stable), so that a quad's four
    lists differ little in length; shorter lists are padded to the quad's longest with
    terms that read the panel's zero row (offset Cout * width) through edge Cout * D, whose
    weight _edge_weights makes 0.  Each input's edges keep rev's order."""
    flat = index.ravel()
    _check_index(flat, n_in)
    _check_reverse(flat, rev.ptr, rev.edge, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    ptr, edge = np.asarray(rev.ptr, np.int64), np.asarray(rev.edge, np.int64)
    count = np.diff(ptr)
    rows = np.argsort(-count, kind="stable")
    n_slots = _round_up(n_in, XK_SHARE)
    per_slot = np.zeros(n_slots, np.int64)
    per_slot[:n_in] = count[rows]
    qptr = np.zeros(n_slots // XK_SHARE + 1, np.int64)
    np.cumsum(per_slot.reshape(-1, XK_SHARE).max(axis=1), out=qptr[1:])
    n_terms = int(qptr[n_slots // XK_SHARE])  # (no negative index: this module is compiled without wraparound)
    off = np.full((n_terms, XK_SHARE), n_out * width, np.int32)
    edges = np.full((n_terms, XK_SHARE), n_out * degree, np.int64)
    slot = np.repeat(np.arange(n_in), per_slot[:n_in])                      # each term's slot
    within = np.arange(slot.shape[0]) - np.repeat(np.cumsum(per_slot[:n_in]) - per_slot[:n_in], per_slot[:n_in])
    e = edge[ptr[rows[slot]] + within]
    term = qptr[slot // XK_SHARE] + within
    off[term, slot % XK_SHARE] = e // degree * width
    edges[term, slot % XK_SHARE] = e
    return off.reshape(-1), qptr, rows, edges.reshape(-1)


def _edge_weights(const floating[:, :, :, ::1] weight, const int64_t[::1] edges):
    """weight (Cout, D, 1, 1) at the flat edges (Cout * D: a padding term's 0), in one nogil pass,
    in this thread's scratch slot 4 (valid until its next call)."""
    cdef int64_t n = weight.shape[0] * weight.shape[1], j, e
    out = _scratch(4, edges.shape[0], np.float32 if floating is float else np.float64)
    cdef floating[::1] o = out
    cdef const floating *flat = &weight[0, 0, 0, 0]
    with nogil:
        for j in range(edges.shape[0]):
            e = edges[j]
            o[j] = flat[e] if e < n else 0
    return out


@functools.lru_cache(maxsize=16)
def _quad_edges(int64_t n_out, int64_t degree):
    """The forward quads' term slots (quads, D, XK_SHARE), flat, as edges v * D + d of the weight;
    n_out * D (no edge: weight 0) for the slots of the last quad's padding outputs.  Read-only,
    kept for the next call of that shape."""
    v = np.arange(_round_up(n_out, XK_SHARE), dtype=np.int64).reshape(-1, 1, XK_SHARE)
    e = np.where(v < n_out, v * degree + np.arange(degree, dtype=np.int64).reshape(1, -1, 1), n_out * degree)
    e = e.reshape(-1)
    e.flags.writeable = False
    return e


def _wino_weights(const floating[:, :, :, ::1] weight, const int64_t[::1] edges, bint flip, int m,
                  int n_chunks):
    """The (m + 2)^2 Winograd-transformed weights (G w G^T, xk_wino_weights) for tiles of m x m
    outputs of the 3x3 weight's flat edges in term-slot order, ((m + 2)^2, len(edges)) flat,
    rotated by 180 degrees when flip (grad_input); a slot past the edges gets 0.  n_chunks
    threads share the slots.  This thread's scratch slot 6, valid until its next call."""
    cdef int64_t n = edges.shape[0], n_edges = weight.shape[0] * weight.shape[1], chunk
    out = _scratch(6, (m + 2) * (m + 2) * n, np.float32 if floating is float else np.float64)
    cdef floating[::1] u = out
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        if floating is float:
            xk_wino_weights_f32(&u[0], &weight[0, 0, 0, 0], &edges[0], n, n_edges, flip, m, n * chunk // n_chunks,
                                n * (chunk + 1) // n_chunks)
        else:
            xk_wino_weights_f64(&u[0], &weight[0, 0, 0, 0], &edges[0], n, n_edges, flip, m, n * chunk // n_chunks,
                                n * (chunk + 1) // n_chunks)
    return out


def _input_terms(index, rev, int64_t n_in, int64_t window):
    """grad_input's term lists (input u gathers the edges rev lists under it), blocked;
    index (an array) and rev checked."""
    flat = index.ravel()
    _check_index(flat, n_in)
    _check_reverse(flat, rev.ptr, rev.edge, n_in)
    degree = index.shape[1]
    return _blocked_terms(rev.ptr, rev.edge // degree, rev.edge, index.shape[0], window)


@functools.lru_cache(maxsize=16)
def _iota(n):
    """0, 1, ..., n - 1 (int64, read-only), kept for the next call of that length."""
    a = np.arange(n, dtype=np.int64)
    a.flags.writeable = False
    return a


def _gather_rows(const floating[:, ::1] src, const int64_t[::1] rows, const int64_t[::1] cols):
    """src[rows][:, cols] as a C-contiguous array, in one pass: this thread's scratch slot 5,
    valid until its next call (a fresh array costs a page fault per 4 KiB)."""
    out = _scratch(5, rows.shape[0] * cols.shape[0], np.float32 if floating is float else np.float64)
    out = out.reshape(rows.shape[0], cols.shape[0])
    cdef floating[:, ::1] dst = out
    cdef int64_t j, t, n_cols = cols.shape[0]
    with nogil:
        for j in range(rows.shape[0]):
            for t in range(n_cols):
                dst[j, t] = src[rows[j], cols[t]]
    return out


def _row_width(width, kernel, stride, dilation, lanes):
    """Grid width for a plane `width` positions wide (the output width plus kernel - 1):
    for stride-1 undilated 3x3 kernels at least the output width rounded up to whole
    vectors of `lanes`, so the vectors that cover a row's outputs stay in that row
    (xk_dot_rows3); otherwise, and with lanes 0, unchanged."""
    if lanes and kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1):
        return max(width, _round_up(width - 2, lanes))
    return width


def _stacked_rows(r_out, reach, off, h_src):
    """Grid rows per image for planes of consecutive source rows (row step 1) stacked
    image after image: r_out output rows whose taps read up to `reach` rows further,
    plane row a holding source row a + off of h_src rows.  The rows that the last outputs
    read past the image may be the next image's leading zero rows (its top padding,
    -off of them) instead of rows of their own, as long as every source row that is read
    stays in its image: 3x3 'same' convs stack H + 1 rows per image, not H + 2."""
    top = max(0, -off)
    return max(r_out, r_out + reach - top, min(r_out + reach, top + h_src))


def _rows3(shift, wb, lanes):
    """For xk_corr_rows3: (wb, perm) when the taps' offsets are base + r*wb + c for r, c < 3
    (tap perm[r*3 + c] at r, c) and lanes is given; else (0, None)."""
    shift = np.asarray(shift, np.int64)
    if len(shift) != 9 or not lanes:
        return 0, None
    r, c = np.divmod(shift - shift.min(), wb)
    if r.max() > 2 or c.max() > 2 or len(set(zip(r.tolist(), c.tolist()))) != 9:
        return 0, None
    perm = np.empty(9, np.int64)
    perm[r * 3 + c] = np.arange(9)
    return wb, perm


# How fast xk_corr_rows3 runs with tiles of 4, 2 and 1 vector per row (12, 6 and 3
# rows high: wider tiles share each load between fewer kernel rows but pay the row
# overhead less often), relative to 4.  Measured here, one thread, 3x3 forward on a
# 32-wide grid: 36.4, 38.5 and 42.6 ms.
ROWS3_SPEED = {4: 1.0, 2: 0.945, 1: 0.855}


def _rows3_vectors(out_w, lanes):
    """(vectors per tile row, tiles per grid row) for rows3 tiles over out_w output
    columns: the width that does the most useful work per unit of time, counting the
    columns past out_w that the last tile of a row computes for nothing."""
    def score(a):
        tiles = -(-out_w // (a * lanes))
        return ROWS3_SPEED[a] * out_w / (tiles * a * lanes)
    a = max(ROWS3_SPEED, key=score)
    return a, -(-out_w // (a * lanes))


def _rows_shared(index):
    """True when index's rows come in runs of XK_SHARE equal rows (block expanders with
    block a multiple of XK_SHARE): then those outputs read every input vector together."""
    rows = np.asarray(index)
    if rows.shape[0] % XK_SHARE or rows.shape[0] == 0:
        return False
    runs = rows.reshape(-1, XK_SHARE, rows.shape[1])
    return bool((runs == runs[:, :1]).all())


def _runs_shared(index):
    """_rows_shared(index), memoised with the graph's term lists."""
    return _cached_terms("runs", index, None, lambda: (_rows_shared(index),))[0]


class _ForwardPlanes:
    """Where the forward taps read x.

    Output (y, x) and tap (ky, kx) read x_pad[y*sh + ky*dh, x*sw + kx*dw]; with
    ky*dh = qy*sh + ry that is row y + qy of polyphase plane ry.  One hb x wb
    plane per used phase (frame) holds all of it, grid (r, c) = output (r, c)
    for r < Ho, c < Wo, and tap t is the flat offset slot[t] * len + shift[t].
    Given the vector lanes, stride-1 3x3 grids take xk_corr_rows3 (rows3 = wb, see
    _row_width); rows3 = 0 otherwise.
    """

    def __init__(self, k_hw, stride, padding, dilation, out_hw, lanes=0):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k_hw, stride, padding, dilation
        ry, qy = _tap_split(kh, dh, sh)
        rx, qx = _tap_split(kw, dw, sw)
        taps = [(ky, kx) for ky in range(kh) for kx in range(kw)]
        phases = sorted({(ry[ky], rx[kx]) for ky, kx in taps})
        slot = {phase: k for k, phase in enumerate(phases)}
        self.hb = out_hw[0] + max(qy)
        if sh == 1:  # x's height is then out_h + (kh - 1) * dh - 2 * ph
            self.hb = _stacked_rows(out_hw[0], max(qy), -ph, out_hw[0] + (kh - 1) * dh - 2 * ph)
        self.wb = _row_width(out_hw[1] + max(qx), (kh, kw), (sh, sw), (dh, dw), lanes)
        self.out_w = out_hw[1]
        self.frames = np.array([(sh, sw, r - ph, c - pw) for r, c in phases], FRAME_DTYPE)
        self.slot = [slot[(ry[ky], rx[kx])] for ky, kx in taps]
        self.shift = [qy[ky] * self.wb + qx[kx] for ky, kx in taps]
        wb3, perm = _rows3(self.shift, self.wb, lanes)
        # rows3 also needs the vectors holding a row's outputs to stay in that row (xk_dot_rows3)
        self.rows3 = wb3 if (len(phases) == 1 and perm is not None and (perm == np.arange(9)).all()
                             and self.wb >= _round_up(self.out_w, lanes)) else 0

    def layout(self, group, tile, itemsize, slack=0):
        """(len, cstride, toff) for `group` images: plane length per frame (positions
        rounded up to `tile`, plus the taps' reach and `slack`), channel stride (the
        frames of a channel end to end, padded), tap offsets."""
        length = _round_up(group * self.hb * self.wb, tile) + max(self.shift) + slack
        toff = np.array([s * length + d for s, d in zip(self.slot, self.shift)], np.int64)
        return length, _odd_lines(len(self.frames) * length, itemsize), toff


class _InputGradPlanes:
    """Where grad_input's taps read grad_out, per output phase of grad_x.

    grad_x row y receives g[Y] * w[ky] when y + ph = Y*sh + ky*dh.  Write
    y + ph = Q*sh + ry and ky*dh = qy*sh + ry (same residue ry): Y = Q - qy.
    Grid row r stands for Q = r + Q0 in each phase ry; the one packed plane of
    grad_out is shifted by max(qy) so every tap offset is >= 0.
    """

    def __init__(self, x_hw, k_hw, stride, padding, dilation, x_img, lanes=0):
        (h, w), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = x_hw, k_hw, stride, padding, dilation
        ry, qy = _tap_split(kh, dh, sh)
        rx, qx = _tap_split(kw, dw, sw)
        q0y, q0x = ph // sh, pw // sw
        rows = (ph + h - 1) // sh - q0y + 1
        cols = (pw + w - 1) // sw - q0x + 1
        self.hb = rows + max(qy)
        if sh == 1:  # grad_out's height is then h + 2 * ph - (kh - 1) * dh
            self.hb = _stacked_rows(rows, max(qy), q0y - max(qy), h + 2 * ph - (kh - 1) * dh)
        self.wb = _row_width(cols + max(qx), (kh, kw), (sh, sw), (dh, dw), lanes)
        self.out_w = cols
        self.frame = np.array([(1, 1, q0y - max(qy), q0x - max(qx))], FRAME_DTYPE)
        order, tap_ptr, scatter = [], [0], []
        for r in range(sh):
            for c in range(sw):
                order += [ky * kw + kx for ky in range(kh) for kx in range(kw)
                          if ry[ky] == r and rx[kx] == c]
                tap_ptr.append(len(order))
                # grid (g, a, b) of phase (r, c) is grad_x[g, (a + q0y)*sh + r - ph, (b + q0x)*sw + c - pw]
                y0, x0 = q0y * sh + r - ph, q0x * sw + c - pw
                scatter.append((y0 * x_img["row"] + x0 * x_img["col"], x_img["img"],
                                sh * x_img["row"], sw * x_img["col"],
                                max(0, -(y0 // sh)), min(rows, (h - 1 - y0) // sh + 1),
                                max(0, -(x0 // sw)), min(cols, (w - 1 - x0) // sw + 1)))
        self.order = np.array(order, np.int64)
        self.tap_ptr = np.array(tap_ptr, np.int64)
        self.scatter = np.array(scatter, SCATTER_DTYPE)
        self.shift = np.array([(max(qy) - qy[t // kw]) * self.wb + (max(qx) - qx[t % kw])
                               for t in order], np.int64)
        self.rows3, perm = _rows3(self.shift, self.wb, lanes) if sh * sw == 1 else (0, None)
        if perm is not None:  # xk_corr_rows3 wants the taps by offset
            self.order, self.shift = self.order[perm], self.shift[perm]

    def layout(self, group, tile, itemsize, slack=0):
        """(len, cstride, toff) of the packed grad_out for `group` images (see _ForwardPlanes.layout)."""
        length = _round_up(group * self.hb * self.wb, tile) + int(self.shift.max(initial=0)) + slack
        return length, _odd_lines(length, itemsize), self.shift


def _frozen(planes):
    """planes with its arrays made read-only (instances are shared through the caches below)."""
    for value in vars(planes).values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False
    return planes


def _pair(v):
    return tuple(int(a) for a in v)


@functools.lru_cache(maxsize=256)
def _forward_planes_cached(k_hw, stride, padding, dilation, out_hw, lanes):
    return _frozen(_ForwardPlanes(k_hw, stride, padding, dilation, out_hw, lanes))


def _forward_planes(k_hw, stride, padding, dilation, out_hw, lanes):
    """_ForwardPlanes(...), built once per geometry: building one costs up to ~40 us,
    which is most of a small layer's call."""
    return _forward_planes_cached(_pair(k_hw), _pair(stride), _pair(padding), _pair(dilation), _pair(out_hw),
                                  int(lanes))


@functools.lru_cache(maxsize=256)
def _input_grad_planes_cached(x_hw, k_hw, stride, padding, dilation, img_row_col, lanes):
    img, row, col = img_row_col
    return _frozen(_InputGradPlanes(x_hw, k_hw, stride, padding, dilation, dict(img=img, row=row, col=col), lanes))


def _input_grad_planes(x_hw, k_hw, stride, padding, dilation, x_img, lanes):
    """_InputGradPlanes(...), built once per geometry and grad_x strides."""
    return _input_grad_planes_cached(_pair(x_hw), _pair(k_hw), _pair(stride), _pair(padding), _pair(dilation),
                                     (int(x_img["img"]), int(x_img["row"]), int(x_img["col"])), int(lanes))


def _tiling(planes, rows3, group, tile, itemsize, lanes):
    """(a3, col_tiles, len, cstride, toff) for _correlate over planes: with rows3, tiles of
    XK_NACC / a3 grid rows of a3 vectors (_rows3_vectors) and planes long enough for a
    row's last tile reaching past it; else a3 = 0 and flat tiles of `tile` positions."""
    if not rows3:
        return (0, 0) + tuple(planes.layout(group, tile, itemsize))
    a3, col_tiles = _rows3_vectors(planes.out_w, lanes)
    return (a3, col_tiles) + tuple(planes.layout(group, XK_NACC // a3 * rows3, itemsize, 4 * lanes))


# ---------------------------------------------------------------- engines
#
# One parallel region per kernel: prange over n_chunks chunks (one per thread),
# each a contiguous share of the work with its own packing buffer, so there is
# no barrier and no shared write.  A chunk packs a group of images when it
# first needs it; a group split between two chunks is packed by both (packing
# costs ~1/(Cout*D*kh*kw/Cin) of the products).

cdef void _pack_group(floating *buf, int64_t cstride, const floating *src, const xk_image_t *im,
                      int64_t first, int64_t n_chan, const xk_frame_t *frames, int64_t n_frames,
                      const xk_layout_t *lay, int64_t n_img) noexcept nogil:
    """buf[c*cstride + k*len ...] <- channel first + c of n_img images through frame k."""
    cdef int64_t c, k
    if (lay.hb == 1 and lay.wb == 1 and n_frames == 1 and im.height == 1 and im.width == 1
            and frames[0].off_y == 0 and frames[0].off_x == 0):
        if floating is float:
            xk_pack_points_f32(buf, cstride, src + first * im.chan, n_chan, n_img, im, lay.len)
        else:
            xk_pack_points_f64(buf, cstride, src + first * im.chan, n_chan, n_img, im, lay.len)
        return
    for c in range(n_chan):
        for k in range(n_frames):
            if floating is float:
                xk_pack_f32(buf + c * cstride + k * lay.len, src + (first + c) * im.chan, n_img, im, lay,
                            &frames[k])
            else:
                xk_pack_f64(buf + c * cstride + k * lay.len, src + (first + c) * im.chan, n_img, im, lay,
                            &frames[k])


cdef void _correlate(
        const floating *src, const xk_image_t *src_im, int64_t n_src,  # IN: (B, n_src, H, W)
        const xk_frame_t *frames, int64_t n_frames, const xk_layout_t *lay, int64_t cstride,
        int64_t batch, int64_t group,
        floating *packed,                                              # scratch: n_chunks * n_src * cstride
        const int64_t *ptr, int64_t n_cb,                              # IN: term lists, CSR over (n_dst, n_cb)
        const int64_t *chan, const int64_t *wrow, int64_t n_dst,
        const floating *w, int64_t wstride, int64_t shared,            # IN: tap weights per term row
        const int64_t *tap_ptr, const int64_t *toff, int64_t n_phases, # IN: taps of each output phase
        int64_t rows3, int64_t a3, int64_t col_tiles,                  # IN: 0 or _rows3's wb (one phase); tile shape
        const floating *bias,                                          # IN: (n_dst,) or NULL
        floating *dst, const xk_image_t *dst_im,                       # OUT: (B, n_dst, ...)
        const xk_scatter_t *scatter,                                   # IN: per output phase
        int n_chunks) noexcept nogil:
    """dst[b, d] = bias[d] + sum over terms j of d and taps t of each output phase of
    w[wrow[j] * wstride + tap] * plane(chan[j])[toff[t] + position].
    shared: destinations come in runs of XK_SHARE with equal channel lists, the
    weights interleaved by output (xk_corr_shared, _shared_weights), n_dst a
    multiple of XK_SHARE.

    Work items (group, phase, tile, block of XK_VBLOCK outputs), tile-major within
    a group so that consecutive items read the same planes; every item writes its
    own outputs, summing in list order whichever chunk runs it.  A tile is XK_TILE
    consecutive positions, or with rows3 (and not shared) XK_NACC / a3 grid rows of a3
    vectors: the grid rows of a group in blocks of XK_NACC / a3, each cut into
    col_tiles columns of a3 vectors from column 0 (the last may reach past the row:
    positions computed for nothing and not scattered).
    """
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t plane = lay.hb * lay.wb
    cdef int64_t n_vb = (n_dst + XK_VBLOCK - 1) // XK_VBLOCK
    cdef int64_t tiles_per_group = (group * plane + tile - 1) // tile
    cdef int64_t rows_per_tile = 0, p0
    if rows3 > 0 and not shared:
        rows_per_tile = XK_NACC // a3
        tiles_per_group = (group * lay.hb + rows_per_tile - 1) // rows_per_tile * col_tiles
    cdef int64_t per_group = n_phases * tiles_per_group * n_vb
    cdef int64_t total = (batch + group - 1) // group * per_group
    cdef int64_t chunk, item, packed_group, grp, g0, ng, t, d0, k, nvec
    cdef floating *buf
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        buf = packed + chunk * n_src * cstride
        packed_group = -1
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            grp = item // per_group
            g0 = grp * group
            ng = min(group, batch - g0)
            t = item // n_vb % tiles_per_group
            if rows_per_tile > 0:
                if t // col_tiles * rows_per_tile >= ng * lay.hb:  # past the end of a shorter group
                    continue
                p0 = t // col_tiles * rows_per_tile * lay.wb + t % col_tiles * a3 * lanes
            else:
                if t * tile >= ng * plane:
                    continue
                p0 = t * tile
            if grp != packed_group:
                _pack_group(buf, cstride, src + g0 * src_im.img, src_im, 0, n_src, frames, n_frames, lay, ng)
                packed_group = grp
            d0 = item % n_vb * XK_VBLOCK
            k = item % per_group // (tiles_per_group * n_vb)
            nvec = XK_NACC
            if rows3 == 0 and tap_ptr[k + 1] - tap_ptr[k] == 1:  # one tap: a narrower last tile
                nvec = min(XK_NACC, (ng * plane - p0 + 4 * lanes - 1) // (4 * lanes) * 4)
            if floating is float:
                xk_corr_tiles_f32(buf, cstride, p0, nvec, ptr + d0 * n_cb, n_cb, chan, wrow,
                                  w + tap_ptr[k], wstride, shared, toff + tap_ptr[k], tap_ptr[k + 1] - tap_ptr[k], rows3, a3,
                                  bias + d0 if bias != NULL else NULL, min(XK_VBLOCK, n_dst - d0),
                                  dst + g0 * dst_im.img + d0 * dst_im.chan, dst_im.chan, ng, lay, &scatter[k])
            else:
                xk_corr_tiles_f64(buf, cstride, p0, nvec, ptr + d0 * n_cb, n_cb, chan, wrow,
                                  w + tap_ptr[k], wstride, shared, toff + tap_ptr[k], tap_ptr[k + 1] - tap_ptr[k], rows3, a3,
                                  bias + d0 if bias != NULL else NULL, min(XK_VBLOCK, n_dst - d0),
                                  dst + g0 * dst_im.img + d0 * dst_im.chan, dst_im.chan, ng, lay, &scatter[k])


cdef inline int64_t _quad_blocks(int64_t n_quads, int64_t n_tiles, int n_chunks) noexcept nogil:
    """Blocks into which a tile's quads are split, each block a work item of its own: 1, or
    with fewer tiles than 4 per thread (small batches and maps) enough for 4 items per
    thread (each block copies or transforms its tile's panels again)."""
    if n_chunks > 1 and n_tiles < 4 * n_chunks:
        return min(n_quads, (4 * n_chunks + n_tiles - 1) // n_tiles)
    return 1


cdef void _whole_tiles(
        const floating *src, const xk_image_t *src_im, int64_t n_src,  # IN: (B, n_src, H, W)
        const xk_frame_t *frame, const xk_layout_t *lay, int64_t cstride, int64_t toff0,
        int64_t batch, int64_t group,
        floating *packed, floating *parts, floating *panels,           # scratch per chunk: n_src * cstride,
                                                                       #   n_dst * tile, quads: (n_src + 1) * panel
        const int64_t *chan, const xk_quads_t *qs,                     # IN: spread: the runs' index rows; or quads
        const floating *w, int64_t degree, const floating *bias,       # IN: weights (_shared_weights, quads' order)
        floating *dst, const xk_image_t *dst_im, int64_t n_dst,        # OUT: (B, n_dst, H, W)
        const xk_scatter_t *scatter, bint direct, int n_chunks) noexcept nogil:
    """1x1 kernels whose work items (group, tile) compute every destination of their tile,
    so a thread's items write their own positions and every element is summed in one
    order at any thread count.  qs NULL: grad_input of a block expander with one output
    phase (index rows equal in runs of XK_SHARE; xk_spread_tile, in order runs, terms,
    outputs).  Otherwise quads of destinations with their own channel lists (xk_quad_tile,
    the forward or grad_input of random expanders; terms in list order); with direct
    (stride 1, no padding, rows of src and dst contiguous, images of at least a panel)
    read and written in place, tiles over the whole batch (xk_quad_tile_direct).  With
    fewer tiles than 4 per thread, items are (tile, block of quads)."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t plane = lay.hb * lay.wb
    cdef int64_t tiles_per_group = (group * plane + tile - 1) // tile
    cdef int64_t total = (batch + group - 1) // group * tiles_per_group
    cdef int64_t chunk, item, packed_group, grp, g0, ng, t
    cdef floating *buf
    cdef floating *part
    cdef floating *panel
    cdef int64_t hw = src_im.height * src_im.width
    # quads: items are (tile, block of quads), _quad_blocks
    cdef int64_t n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE if qs != NULL else 1
    cdef int64_t n_tiles = (batch * hw + tile - 1) // tile if direct else total
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks) if qs != NULL else 1
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob, q_lo, q_hi
    total = n_tiles * n_ob
    if direct:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            part = parts + chunk * n_dst * XK_SACC * lanes
            panel = panels + chunk * (n_src + 1) * XK_SACC * lanes
            for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
                t = item // n_ob
                q_lo = item % n_ob * per_ob
                q_hi = min(n_quads, q_lo + per_ob)
                if qs != NULL:
                    if floating is float:
                        xk_quad_tile_direct_f32(src, src_im.img, src_im.chan, hw, batch, t * tile, qs, q_lo, q_hi, w,
                                                bias, panel, part, dst, dst_im.img, dst_im.chan)
                    else:
                        xk_quad_tile_direct_f64(src, src_im.img, src_im.chan, hw, batch, t * tile, qs, q_lo, q_hi, w,
                                                bias, panel, part, dst, dst_im.img, dst_im.chan)
                elif floating is float:
                    xk_spread_tile_direct_f32(src, src_im.img, src_im.chan, hw, batch, t * tile, chan, w,
                                              n_src // XK_SHARE, degree, n_dst, panel, part, dst, dst_im.img,
                                              dst_im.chan)
                else:
                    xk_spread_tile_direct_f64(src, src_im.img, src_im.chan, hw, batch, t * tile, chan, w,
                                              n_src // XK_SHARE, degree, n_dst, panel, part, dst, dst_im.img,
                                              dst_im.chan)
        return
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        buf = packed + chunk * n_src * cstride
        part = parts + chunk * n_dst * tile
        panel = panels + chunk * (n_src + 1) * XK_SACC * lanes
        packed_group = -1
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            grp = item // (tiles_per_group * n_ob)
            g0 = grp * group
            ng = min(group, batch - g0)
            t = item // n_ob % tiles_per_group
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if t * tile >= ng * plane:
                continue
            if grp != packed_group:
                _pack_group(buf, cstride, src + g0 * src_im.img, src_im, 0, n_src, frame, 1, lay, ng)
                packed_group = grp
            if qs != NULL:
                if floating is float:
                    xk_quad_tile_f32(buf + toff0, cstride, t * tile, qs, q_lo, q_hi, w, bias, panel, part,
                                     dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
                else:
                    xk_quad_tile_f64(buf + toff0, cstride, t * tile, qs, q_lo, q_hi, w, bias, panel, part,
                                     dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
            elif floating is float:
                xk_spread_tile_f32(buf + toff0, cstride, t * tile, chan, w, n_src // XK_SHARE, degree, n_dst, part,
                                   dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)
            else:
                xk_spread_tile_f64(buf + toff0, cstride, t * tile, chan, w, n_src // XK_SHARE, degree, n_dst, part,
                                   dst + g0 * dst_im.img, dst_im.chan, ng, lay, scatter)


cdef void _wino_tiles(
        const floating *src, const xk_image_t *src_im, int64_t batch,  # IN: (B, n_src, H, W)
        int64_t th, int64_t tw, int64_t pad_y, int64_t pad_x, int m,   # the m x m tiles: th x tw per image
        const xk_quads_t *qs, const floating *uw, int64_t ustride,     # IN: quads, transformed weights
        const floating *bias, floating *panels, floating *parts,       # scratch per chunk: nk * (n_src + 2)
                                                                       #   * width, nk * (n_dst + 1) * width
        floating *dst, const xk_image_t *dst_im,                       # OUT: (B, n_dst, Ho, Wo)
        int n_chunks) noexcept nogil:
    """A stride-1 3x3 correlation by Winograd F(m x m, 3x3) (xk_wino_tile; nk = (m + 2)^2
    transformed entries): work items are panels of width tiles over the whole batch, each
    computing every destination of its tiles; with fewer panels than 4 per thread, items are
    (panel, block of quads)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    cdef int64_t n_tiles = (batch * th * tw + width - 1) // width
    cdef int64_t n_quads = (qs.n_dst + XK_SHARE - 1) // XK_SHARE
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks)
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob, q_lo, q_hi, total, chunk, item, t
    cdef floating *panel
    cdef floating *part
    total = n_tiles * n_ob
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        panel = panels + chunk * nk * (qs.n_src + 2) * width
        part = parts + chunk * nk * (qs.n_dst + 1) * width
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            t = item // n_ob
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if floating is float:
                xk_wino_tile_f32(src, src_im, batch, th, tw, pad_y, pad_x, t * width, qs, q_lo, q_hi, uw, ustride,
                                 bias, panel, part, dst, dst_im, m)
            else:
                xk_wino_tile_f64(src, src_im, batch, th, tw, pad_y, pad_x, t * width, qs, q_lo, q_hi, uw, ustride,
                                 bias, panel, part, dst, dst_im, m)


cdef void _wino_run(const floating *src, const xk_image_t *src_im, floating *dst, const xk_image_t *dst_im,
                    int64_t batch, int64_t pad_y, int64_t pad_x, int m, const xk_quads_t *qs,
                    const floating[::1] qw, const floating *bias, int n_chunks) except *:
    """_wino_tiles over the whole batch in m x m tiles, into dst's maps, with this thread's
    scratch; qw from _wino_weights(..., m)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] panels = _scratch(2, n_chunks * nk * (qs.n_src + 2) * width, dtype)
    cdef floating[::1] parts = _scratch(1, n_chunks * nk * (qs.n_dst + 1) * width, dtype)
    with nogil:
        _wino_tiles(src, src_im, batch, (dst_im.height + m - 1) // m, (dst_im.width + m - 1) // m, pad_y, pad_x,
                    m, qs, &qw[0], qw.shape[0] // nk, bias, &panels[0], &parts[0], dst, dst_im, n_chunks)


cdef void _wino_wgrads(
        const floating *x, const xk_image_t *x_im, int64_t n_in,      # IN: (B, Cin, H, W)
        const floating *g, const xk_image_t *g_im, int64_t n_out,     # IN: (B, Cout, Ho, Wo)
        int64_t batch, int64_t pad_y, int64_t pad_x, int m,           # tiles of m x m outputs
        const int64_t *index, int64_t degree, bint shared,            # IN: (Cout, D); rows in runs
        int64_t n_parts, floating *vbufs, floating *accs,             # scratch: n_in * width * nk per
                                                                      #   thread, n_parts * Cout * D * nk
        floating *grad_w,                                             # OUT: (Cout, D, 3, 3)
        int n_chunks) noexcept nogil:
    """grad_weight of a stride-1 3x3 correlation by Winograd F(m x m, 3x3) (xk_wino_wgrad_tile,
    nk = (m + 2)^2 transformed entries; shared: index rows equal in runs of XK_SHARE,
    _rows_shared).  The panels of tiles are cut into n_parts contiguous ranges, each summed
    into its own partial sums by one thread, which add up in part order: grad_w depends on
    n_parts, not on the number of threads."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t nk = (m + 2) * (m + 2)
    cdef int64_t th = (g_im.height + m - 1) // m, tw = (g_im.width + m - 1) // m
    cdef int64_t n_panels = (batch * th * tw + width - 1) // width
    cdef int64_t n_sums = n_out * degree * nk
    cdef int64_t part, t, e, chunk, lo, hi, p
    cdef floating *vbuf
    cdef floating *acc
    for part in prange(n_parts, schedule="dynamic", chunksize=1, num_threads=n_chunks):
        vbuf = vbufs + threadid() * n_in * width * nk
        acc = accs + part * n_sums
        for e in range(n_sums):
            acc[e] = 0
        for t in range(n_panels * part // n_parts, n_panels * (part + 1) // n_parts):
            if floating is float:
                xk_wino_wgrad_tile_f32(x, x_im, g, g_im, batch, th, tw, pad_y, pad_x, t * width, n_in, index,
                                       degree, n_out, shared, vbuf, acc, m)
            else:
                xk_wino_wgrad_tile_f64(x, x_im, g, g_im, batch, th, tw, pad_y, pad_x, t * width, n_in, index,
                                       degree, n_out, shared, vbuf, acc, m)
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        lo = n_out * degree * chunk // n_chunks
        hi = n_out * degree * (chunk + 1) // n_chunks
        for p in range(1, n_parts):
            for e in range(lo * nk, hi * nk):
                accs[e] = accs[e] + accs[p * n_sums + e]
        if floating is float:
            xk_wino_wgrad_finish_f32(grad_w + lo * 9, accs + lo * nk, hi - lo, m)
        else:
            xk_wino_wgrad_finish_f64(grad_w + lo * 9, accs + lo * nk, hi - lo, m)


def _wgrad_parts(int64_t n_panels, int64_t edges, int64_t itemsize, int64_t nk=16):
    """The number of partial sums of a Winograd grad_weight (_wino_wgrads) with nk transformed
    entries per edge: at most WINO_WGRAD_PARTS, one per panel, and WINO_WGRAD_ACC_BYTES in
    all; never a function of the number of threads."""
    return int(max(1, min(WINO_WGRAD_PARTS, n_panels, WINO_WGRAD_ACC_BYTES // (edges * nk * itemsize))))


cdef bint _all_finite(const floating *planes, int64_t cstride, int64_t n_chan, int64_t n) noexcept nogil:
    """No Inf or NaN in planes[c * cstride + k] for c < n_chan, k < n."""
    cdef int64_t c
    for c in range(n_chan):
        if floating is float:
            if not xk_all_finite_f32(planes + c * cstride, n):
                return False
        else:
            if not xk_all_finite_f64(planes + c * cstride, n):
                return False
    return True


cdef void _weight_grads(
        const floating *x, const xk_image_t *x_im, int64_t n_in,       # IN: (B, Cin, H, W)
        const xk_frame_t *frames, int64_t n_frames, const xk_layout_t *x_lay, int64_t cstride,
        const floating *g, const xk_image_t *g_im, int64_t n_out,      # IN: (B, Cout, Ho, Wo)
        const xk_frame_t *g_frame, const xk_layout_t *g_lay,
        int64_t batch, int64_t group,
        floating *x_packed, floating *g_packed, floating *masks,       # scratch per chunk
        const int64_t *index, int64_t degree,                          # IN: (Cout, D)
        const int64_t *toff, int64_t ntap,
        int64_t rows3, int64_t unit, bint shared,                      # IN: see below
        floating *grad_w,                                              # OUT: (Cout, D, ntap)
        int n_chunks) noexcept nogil:
    """grad_w[v, i, t] = sum_b sum_positions g_plane(v)[p] * x_plane(index[v, i])[toff[t] + p].

    g's planes are zero outside real outputs and x is masked there (x may hold Inf
    or NaN at pixels no output reads), so the extra grid positions add nothing.  Chunks own contiguous ranges of v and sum every group in batch
    order, so grad_w does not depend on the number of chunks.  A group's positions are
    rounded up to a multiple of unit.  rows3 = wb > 0: the taps are 3x3 at r * wb + c
    (stride 1), and unmasked groups take xk_dot_rows3 over the columns that hold outputs
    (unit a multiple of XK_DOT_ROWS * wb).  shared: index rows are equal in runs of
    XK_SHARE (block expanders; Cout a multiple of it), so every group takes
    xk_dot_taps_shared, a run at a time (faster than xk_dot_rows3 too: 1.1-1.2x on
    3x3 at D 32-128); chunks then own whole runs.
    """
    cdef int64_t plane = x_lay.hb * x_lay.wb
    cdef int64_t chunk, v_lo, v_hi, g0, ng, npos, e, v
    cdef floating *xbuf
    cdef floating *gbuf
    cdef floating *mk
    cdef bint use_mask
    # Every grid position of an image is an output: only the zeroed tail is not.
    # Otherwise the mask is needed only for groups whose x holds Inf or NaN
    # (finite x at those positions meets g = 0 and adds exact zeros).
    cdef bint masked = x_lay.hb != g_im.height or x_lay.wb != g_im.width
    cdef int64_t lanes = XK_LANES_F32 if floating is float else XK_LANES_F64
    cdef int64_t cols3 = (g_im.width + lanes - 1) // lanes * lanes  # xk_dot_rows3: the vectors holding outputs
    cdef int64_t share = XK_SHARE if shared else 1
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        v_lo = n_out // share * chunk // n_chunks * share
        v_hi = n_out // share * (chunk + 1) // n_chunks * share
        xbuf = x_packed + chunk * n_in * cstride
        gbuf = g_packed + chunk * ((n_out // share + n_chunks - 1) // n_chunks * share) * g_lay.len
        mk = masks + chunk * g_lay.len
        for e in range(v_lo * degree * ntap, v_hi * degree * ntap):
            grad_w[e] = 0
        g0 = 0
        while g0 < batch and v_lo < v_hi:
            ng = min(group, batch - g0)
            _pack_group(xbuf, cstride, x + g0 * x_im.img, x_im, 0, n_in, frames, n_frames, x_lay, ng)
            _pack_group(gbuf, g_lay.len, g + g0 * g_im.img, g_im, v_lo, v_hi - v_lo, g_frame, 1, g_lay, ng)
            npos = (ng * plane + unit - 1) // unit * unit
            use_mask = masked and not _all_finite(xbuf, cstride, n_in, n_frames * x_lay.len)
            if use_mask:
                if floating is float:
                    xk_valid_mask_f32(mk, npos, ng, x_lay, g_im.height, g_im.width)
                else:
                    xk_valid_mask_f64(mk, npos, ng, x_lay, g_im.height, g_im.width)
            if rows3 > 0 and not use_mask and not shared:
                for e in range(v_lo * degree, v_hi * degree):
                    if floating is float:
                        xk_dot_rows3_f32(grad_w + e * 9, gbuf + (e // degree - v_lo) * g_lay.len,
                                         xbuf + index[e] * cstride + toff[0], rows3, cols3, npos // rows3)
                    else:
                        xk_dot_rows3_f64(grad_w + e * 9, gbuf + (e // degree - v_lo) * g_lay.len,
                                         xbuf + index[e] * cstride + toff[0], rows3, cols3, npos // rows3)
                g0 = g0 + group
                continue
            if shared:
                v = v_lo
                while v < v_hi:
                    if floating is float:
                        xk_dot_taps_shared_f32(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, g_lay.len,
                                               xbuf, cstride, index + v * degree, degree, mk if use_mask else NULL,
                                               toff, ntap, npos)
                    else:
                        xk_dot_taps_shared_f64(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, g_lay.len,
                                               xbuf, cstride, index + v * degree, degree, mk if use_mask else NULL,
                                               toff, ntap, npos)
                    v = v + share
                g0 = g0 + group
                continue
            for v in range(v_lo, v_hi):
                if floating is float:
                    xk_dot_taps_f32(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, xbuf, cstride,
                                    index + v * degree, degree, mk if use_mask else NULL, toff, ntap, npos)
                else:
                    xk_dot_taps_f64(grad_w + v * degree * ntap, gbuf + (v - v_lo) * g_lay.len, xbuf, cstride,
                                    index + v * degree, degree, mk if use_mask else NULL, toff, ntap, npos)
            g0 = g0 + group


cdef int _threads(int num_threads) noexcept nogil:
    return num_threads if num_threads > 0 else xk_omp_max_threads()


cdef xk_image_t _image(Py_ssize_t *shape, Py_ssize_t *strides, Py_ssize_t itemsize) noexcept:
    """The xk_image_t of a strided 4-D memoryview."""
    cdef xk_image_t im
    im.img, im.chan = strides[0] // itemsize, strides[1] // itemsize
    im.row, im.col = strides[2] // itemsize, strides[3] // itemsize
    im.height, im.width = shape[2], shape[3]
    return im


def _winograd(kernel, stride, dilation, int64_t n_src, int64_t n_dst, int64_t edges, out_hw, int64_t batch,
              int64_t itemsize):
    """The tile side m (2 or 4) with which a correlation of n_src -> n_dst channels along `edges`
    edges, into maps of out_hw, runs by Winograd F(m x m, 3x3), or 0: it runs direct
    (WINOGRAD, WINO_TILE and the WINO_* limits; never the thread count).  "auto" takes
    F(4x4, 3x3) where its tiles make WINO_MIN_PANELS panels, its scratch fits and it
    transforms at most WINO_F4_VALUES as many values as F(2x2, 3x3), else F(2x2, 3x3) on
    the same terms."""
    if WINOGRAD == "never" or tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return 0
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)

    def panels(m):
        return batch * _wino_tile_count(m, out_hw) / width

    def fits(m):
        return (m + 2) ** 2 * (n_src + n_dst + 3) * width * itemsize <= WINO_SCRATCH_BYTES
    if WINOGRAD == "always":
        return WINO_TILE or (4 if fits(4) else 2)
    if edges < WINO_MIN_TERMS * max(n_src, n_dst):
        return 0
    f4_values = _wino_values(4, out_hw) / _wino_values(2, out_hw)
    for m in ((WINO_TILE,) if WINO_TILE else (4, 2)):
        if panels(m) >= WINO_MIN_PANELS and fits(m) and (m == 2 or WINO_TILE or f4_values <= WINO_F4_VALUES[itemsize]):
            return m
    return 0


def _wino_tile_count(int m, out_hw):
    """The m x m tiles that cover one map of out_hw."""
    return ((out_hw[0] + m - 1) // m) * ((out_hw[1] + m - 1) // m)


def _wino_values(int m, out_hw):
    """The transformed values per channel of maps of out_hw in m x m tiles: (m + 2)^2 per tile."""
    return (m + 2) ** 2 * _wino_tile_count(m, out_hw)


def _winograd_wgrad(kernel, stride, dilation, int64_t n_src, int64_t n_dst, int64_t edges, out_hw, int64_t batch,
                    int64_t itemsize):
    """(m, n_parts): grad_weight of a correlation of n_src -> n_dst channels along `edges`
    edges, from maps of out_hw, sums by Winograd F(m x m, 3x3) in n_parts partial sums
    (_wgrad_parts); (0, 0): it runs direct (WINOGRAD, WINO_TILE and the WINO_* limits; never
    the thread count).  "auto" takes F(4x4, 3x3) where it makes WINO_WGRAD_MIN_PARTS partial
    sums, its scratch fits and it reads at most WINO_WGRAD_F4_VALUES as many transformed values
    as F(2x2, 3x3), else F(2x2, 3x3) on the same terms."""
    if WINOGRAD == "never" or tuple(kernel) != (3, 3) or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1):
        return 0, 0
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)

    def parts(m):
        return _wgrad_parts((batch * _wino_tile_count(m, out_hw) + width - 1) // width, edges, itemsize,
                            (m + 2) ** 2)

    def fits(m):
        return (m + 2) ** 2 * n_src * width * itemsize <= WINO_SCRATCH_BYTES
    if WINOGRAD == "always":
        m = WINO_TILE or (4 if fits(4) else 2)
        return m, parts(m)
    if itemsize != 4 or edges < WINO_WGRAD_TERMS * max(n_src, n_dst):
        return 0, 0
    f4_values = _wino_values(4, out_hw) / _wino_values(2, out_hw)
    for m in ((WINO_TILE,) if WINO_TILE else (4, 2)):
        if (parts(m) >= WINO_WGRAD_MIN_PARTS and fits(m)
                and (m == 2 or WINO_TILE or f4_values <= WINO_WGRAD_F4_VALUES)):
            return m, parts(m)
    return 0, 0


cdef bint _in_place(stride, padding, const xk_image_t *src, const xk_image_t *dst, int64_t width):
    """A 1x1 correlation xk_quad_tile_direct can read and write in place: stride 1, no
    padding, every image row of src and dst contiguous, and images of at least a panel
    of width positions (so that a panel spans at most two)."""
    return (tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and src.col == 1 and dst.col == 1
            and src.row == src.width and dst.row == dst.width and dst.height * dst.width >= width)


# ---------------------------------------------------------------- X-Conv

def _columns(kernel, stride, int64_t n_in, out_hw, int64_t batch, int64_t itemsize, bint forward):
    """True when a forward (or a grad_input) runs by the columns path (COLUMNS; Winograd was
    not taken): the grad_input of strided convs; the forward of strided k x k convs into maps
    of at most COLUMNS_MAX_STRIDED_HW outputs (a strided 1x1's polyphase plane is its
    columns already; with the image columns by offsets, one thread, 3x3 stride 2 into 12x12
    to 28x28 maps measured 1.06-1.51x over the planes); both directions of k x k convs on
    maps of at most COLUMNS_MAX_HW outputs (a stride-1 1x1 conv on a small map gains
    nothing: measured 0.56-1.44x; 3x3 on 6x6-7x7 maps 0.62-0.95x)."""
    if COLUMNS == "never":
        return False
    width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)
    cdef int64_t kk = kernel[0] * kernel[1]
    if n_in * kk * _round_up(batch * out_hw[0] * out_hw[1], width) * itemsize > COLUMNS_MAX_BYTES:
        return False
    if COLUMNS == "always":
        return True
    hw = out_hw[0] * out_hw[1]
    if tuple(stride) != (1, 1):
        return not forward or (kk > 1 and hw <= COLUMNS_MAX_STRIDED_HW)
    return kk > 1 and hw <= COLUMNS_MAX_HW


def _columns_wgrad(kernel, stride, int64_t n_in, out_hw, int64_t batch, int64_t itemsize):
    """True when a grad_weight runs by the columns path (COLUMNS; a strided conv's planes are
    its polyphase planes, and small maps' are mostly padding): strided convs and maps of at
    most COLUMNS_MAX_HW outputs, 1x1 or k x k.  One-thread A/B at X-ResNet's and
    X-MobileNet's layers (batch 16): 512->512 3x3 on 3x3 maps 3.4x, 3x3 stride 2 1.4-3.1x, 1x1
    stride 2 1.1-1.6x, 512->512 1x1 on 3x3 maps 1.4x; 6x6 maps 0.7-0.9x (not taken)."""
    if COLUMNS == "never":
        return False
    cdef int64_t kk = kernel[0] * kernel[1]
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    if n_in * kk * _round_up(batch * out_hw[0] * out_hw[1], lanes) * itemsize > COLUMNS_MAX_BYTES:
        return False
    return COLUMNS == "always" or tuple(stride) != (1, 1) or out_hw[0] * out_hw[1] <= COLUMNS_MAX_HW


def _edge_rows(index, int64_t n_in, int64_t kk):
    """(rows, outs, wpos) of the columns path's terms for index (Cout, D), checked, with kk taps,
    in weight order: term (v, i, t) reads source row index[v, i] * kk + t of the image columns
    for output v with weight entry (v * D + i) * kk + t."""
    _check_index(index.ravel(), n_in)
    n_out, degree = index.shape[0], index.shape[1]
    rows = (np.asarray(index, np.int64)[:, :, None] * kk + np.arange(kk)).reshape(-1)
    outs = np.repeat(np.arange(n_out, dtype=np.int64), degree * kk)
    return rows, outs, np.arange(n_out * degree * kk, dtype=np.int64)


def _column_terms(index, int64_t n_in, int64_t kk, int64_t width, int64_t block_rows, bint reverse=False):
    """The columns path's term lists for index (Cout, D), checked, with kk taps: source row
    u * kk + t of the image columns holds channel u's tap t, so output v's terms are rows
    index[v, i] * kk + t, of weight entry (v * D + i) * kk + t.  reverse: grad_input's
    lists instead, destination rows u * kk + t reading grad_out's rows v (the same edges
    and weight entries).  See _block_quads for what is returned."""
    rows, outs, wpos = _edge_rows(index, n_in, kk)
    n_out = index.shape[0]
    if reverse:
        return _block_quads(rows, outs, wpos, n_in * kk, n_out, width, block_rows)
    return _block_quads(outs, rows, wpos, n_out, n_in * kk, width, block_rows)


def _block_quads(dst, src, wpos, int64_t n_dst, int64_t n_src, int64_t width, int64_t block_rows):
    """Term lists of xk_quad_columns for the terms (dst[j] += w[wpos[j]] * source row src[j]):
    (off int32, wsrc, ptr, row0).  The n_src source rows come in blocks [row0[b], row0[b + 1])
    of block_rows; in block b, quad q's terms are [ptr[b, q], ptr[b, q + 1]) of (term,
    XK_SHARE) slots, each destination's in source-row order, the quad's shorter lists
    padded with the block's zero row (offset rows * width) and weight entry -1 (wsrc: where
    each slot's weight comes from)."""
    nb = max(1, (n_src + block_rows - 1) // block_rows)
    row0 = np.minimum(np.arange(nb + 1, dtype=np.int64) * block_rows, n_src)
    blk = src // block_rows
    order = np.lexsort((src, dst, blk))          # by block, destination, source row
    dst, src, wpos, blk = dst[order], src[order], wpos[order], blk[order]
    n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE
    n_slots = n_quads * XK_SHARE
    count = np.bincount(blk * n_slots + dst, minlength=nb * n_slots)
    per_quad = count.reshape(nb, n_quads, XK_SHARE).max(axis=2)   # (nb, n_quads) terms
    ptr = np.zeros((nb, n_quads + 1), np.int64)
    ptr[:, 1:] = np.cumsum(per_quad, axis=1)
    ptr += np.concatenate(([0], np.cumsum(per_quad.sum(axis=1))[:-1]))[:, None]
    total = int(per_quad.sum())
    if total * XK_SHARE > np.iinfo(np.int32).max or (block_rows + 1) * width > np.iinfo(np.int32).max:
        raise ValueError("too many terms for the columns path's 32-bit offsets")
    first = np.concatenate(([0], np.cumsum(count)[:-1]))
    k = np.arange(dst.shape[0], dtype=np.int64) - first[blk * n_slots + dst]   # position in its list
    slot = (ptr[blk, dst // XK_SHARE] + k) * XK_SHARE + dst % XK_SHARE
    block_slots = np.diff(np.concatenate((ptr[:, 0], [total]))) * XK_SHARE
    off = np.repeat(np.diff(row0) * width, block_slots).astype(np.int32)
    off[slot] = (src - row0[blk]) * width
    wsrc = np.full(total * XK_SHARE, -1, np.int32)
    wsrc[slot] = wpos
    return off, wsrc, ptr.reshape(-1), row0


def _column_weights(const floating[::1] wflat, const int32_t[::1] wsrc, int n_chunks):
    """The columns path's weights in slot order: wflat[wsrc[j]], 0 where wsrc[j] < 0: a gather
    over the whole weight on every call (a third of the kernel's time on a stride-2 3x3 layer
    at batch 1), so split between threads, its indices int32, into scratch (slot 7)."""
    out = _scratch(7, wsrc.shape[0], np.float32 if floating is float else np.float64)
    cdef floating[::1] o = out
    cdef int64_t j, e
    for j in prange(wsrc.shape[0], nogil=True, schedule="static", num_threads=n_chunks):
        e = wsrc[j]
        o[j] = wflat[e] if e >= 0 else 0
    return out


# Image rows of at most this many outputs take xk_im2col_table (one offset per position) instead
# of xk_im2col (bounds worked out per row): 3x3 maps 2.6 -> 0.5 ms at 512 channels, batch 16.
IM2COL_TABLE_MAX_WO = 16


@functools.lru_cache(maxsize=64)
def _im2col_offsets(row, col, height, width, kernel, stride, padding, dilation, out_hw):
    """(kh * kw, Ho * Wo) int64, read-only: the offset in an image's channel (rows row apart,
    columns col apart) that output position (y, c) of tap (ky, kx) reads, or -1 outside it."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = kernel, stride, padding, dilation, out_hw
    iy = np.arange(ho)[None, :] * sh + np.arange(kh)[:, None] * dh - ph          # (kh, ho)
    ix = np.arange(wo)[None, :] * sw + np.arange(kw)[:, None] * dw - pw          # (kw, wo)
    oy = np.where((iy >= 0) & (iy < height), iy * row, -1)[:, None, :, None]
    ox = np.where((ix >= 0) & (ix < width), ix * col, -1)[None, :, None, :]
    off = np.where((oy < 0) | (ox < 0), -1, oy + ox)                             # (kh, kw, ho, wo)
    off = np.ascontiguousarray(off.reshape(kh * kw, ho * wo), np.int64)
    off.flags.writeable = False
    return off


def _im2col(const floating[:, :, :, :] x, kernel, stride, padding, dilation, out_hw, int64_t p_pad,
            floating[:, ::1] col, int n_chunks):
    """col (Cin * kh * kw, p_pad) <- the image columns of x (B, Cin, H, W) (xk_im2col, or for
    short rows xk_im2col_table), channels split between threads."""
    cdef xk_image_t im = _image(x.shape, x.strides, sizeof(floating))
    cdef int64_t n_in = x.shape[1], batch = x.shape[0], chunk
    cdef int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef int64_t dh = dilation[0], dw = dilation[1], ho = out_hw[0], wo = out_hw[1]
    cdef const int64_t[:, ::1] offs
    if wo <= IM2COL_TABLE_MAX_WO and batch * ho * wo > 0:
        offs = _im2col_offsets(im.row, im.col, im.height, im.width, (kh, kw), (sh, sw), (ph, pw), (dh, dw),
                               (ho, wo))
        for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
            if floating is float:
                xk_im2col_table_f32(&col[0, 0], p_pad, &x[0, 0, 0, 0], im.chan, im.img, batch, &offs[0, 0],
                                    ho * wo, kh * kw, n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
            else:
                xk_im2col_table_f64(&col[0, 0], p_pad, &x[0, 0, 0, 0], im.chan, im.img, batch, &offs[0, 0],
                                    ho * wo, kh * kw, n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        return
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        if floating is float:
            xk_im2col_f32(&col[0, 0], p_pad, &x[0, 0, 0, 0], &im, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        else:
            xk_im2col_f64(&col[0, 0], p_pad, &x[0, 0, 0, 0], &im, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)


def _col2im(const floating[:, ::1] gcol, floating[:, :, :, :] grad_x, kernel, stride, padding, dilation, out_hw,
            int n_chunks):
    """grad_x (B, Cin, H, W) <- the image columns' gradient gcol summed back (xk_col2im),
    channels split between threads."""
    cdef xk_image_t im = _image(grad_x.shape, grad_x.strides, sizeof(floating))
    cdef int64_t n_in = grad_x.shape[1], batch = grad_x.shape[0], chunk, p_pad = gcol.shape[1]
    cdef int64_t kh = kernel[0], kw = kernel[1], sh = stride[0], sw = stride[1], ph = padding[0], pw = padding[1]
    cdef int64_t dh = dilation[0], dw = dilation[1], ho = out_hw[0], wo = out_hw[1]
    for chunk in prange(n_chunks, nogil=True, schedule="static", chunksize=1, num_threads=n_chunks):
        if floating is float:
            xk_col2im_f32(&grad_x[0, 0, 0, 0], &im, &gcol[0, 0], p_pad, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)
        else:
            xk_col2im_f64(&grad_x[0, 0, 0, 0], &im, &gcol[0, 0], p_pad, batch, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
                          n_in * chunk // n_chunks, n_in * (chunk + 1) // n_chunks)


cdef void _columns_run(const floating *col, int64_t p_pad, const int32_t *off, const floating *qw,
                       const int64_t *ptr, const int64_t *row0, int64_t nb, int64_t n_dst, const floating *bias,
                       floating *panels, int64_t panel_stride, floating *y, int n_chunks) noexcept nogil:
    """y (n_dst, p_pad) = the columns path's sums (xk_quad_columns) over col (rows, p_pad): work
    items (tile of XK_SACC vectors, block of quads), each computing its own positions of its
    own outputs in one order at any thread count."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t n_tiles = p_pad // width
    cdef int64_t n_quads = (n_dst + XK_SHARE - 1) // XK_SHARE
    cdef int64_t n_ob = _quad_blocks(n_quads, n_tiles, n_chunks)
    cdef int64_t per_ob = (n_quads + n_ob - 1) // n_ob
    cdef int64_t total = n_tiles * n_ob, chunk, item, t, q_lo, q_hi
    for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
        for item in range(total * chunk // n_chunks, total * (chunk + 1) // n_chunks):
            t = item // n_ob
            q_lo = item % n_ob * per_ob
            q_hi = min(n_quads, q_lo + per_ob)
            if floating is float:
                xk_quad_columns_f32(col, p_pad, t * width, off, qw, ptr, row0, nb, n_dst, bias,
                                    panels + chunk * panel_stride, y, p_pad, q_lo, q_hi)
            else:
                xk_quad_columns_f64(col, p_pad, t * width, off, qw, ptr, row0, nb, n_dst, bias,
                                    panels + chunk * panel_stride, y, p_pad, q_lo, q_hi)


def _column_sums(src, int64_t p_pad, terms, weight, int64_t n_dst, bias, int n_chunks):
    """y (n_dst, p_pad), scratch: the columns path's sums (xk_quad_columns, terms from
    _column_terms) over the source rows src (rows, p_pad), with weight's entries."""
    off, wsrc, ptr, row0 = terms
    dtype = src.dtype
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if dtype.itemsize == 4 else XK_LANES_F64)
    qw = _column_weights(np.asarray(weight).reshape(-1), wsrc, n_chunks)
    y = _scratch(4, n_dst * p_pad, dtype).reshape(n_dst, p_pad)
    cdef int64_t panel = (int(np.diff(row0).max()) + 1) * width
    panels = _scratch(5, n_chunks * panel, dtype)
    if dtype.itemsize == 4:
        _columns_call[float](src, p_pad, off, qw, ptr, row0, n_dst, bias, panels, panel, y, n_chunks)
    else:
        _columns_call[double](src, p_pad, off, qw, ptr, row0, n_dst, bias, panels, panel, y, n_chunks)
    return y


def _column_geometry(int64_t batch, out_hw, int64_t itemsize):
    """(positions B * Ho * Wo, p_pad: rounded up to whole panels, panel width, source rows per block)."""
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if itemsize == 4 else XK_LANES_F64)
    n = batch * out_hw[0] * out_hw[1]
    return n, _round_up(n, width), width, max(1, COLUMNS_BLOCK_BYTES // (width * itemsize) - 1)


def _columns_fwd(x, weight, index, bias, out, stride, padding, dilation, int n_chunks):
    """out = X-Conv of x by the columns path: the image columns (_im2col), then 1x1 quads over
    blocks of their rows, then out from the (Cout, B * Ho * Wo) sums."""
    xa, wa, oa = np.asarray(x), np.asarray(weight), np.asarray(out)
    batch, n_in, n_out, (kh, kw), (ho, wo) = xa.shape[0], xa.shape[1], wa.shape[0], wa.shape[2:], oa.shape[2:]
    n, p_pad, width, block_rows = _column_geometry(batch, (ho, wo), wa.itemsize)
    terms = _cached_terms("columns", index, (n_in, kh * kw, width, block_rows),
                          lambda: _column_terms(np.asarray(index), n_in, kh * kw, width, block_rows))
    col = _scratch(3, n_in * kh * kw * p_pad, wa.dtype).reshape(n_in * kh * kw, p_pad)
    _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo), p_pad, col, n_chunks)
    y = _column_sums(col, p_pad, terms, wa, n_out, bias, n_chunks)
    oa[...] = y[:, :n].reshape(n_out, batch, ho, wo).transpose(1, 0, 2, 3)


def _columns_bwd_input(grad_out, weight, index, grad_x, stride, padding, dilation, int n_chunks):
    """grad_x of an X-Conv by the columns path: grad_out as (Cout, B * Ho * Wo) rows, 1x1
    quads into the image columns' gradient (each (channel, tap) row gathering the outputs
    that read it, the same edges reversed), then summed back into grad_x (_col2im)."""
    ga, wa, gx = np.asarray(grad_out), np.asarray(weight), np.asarray(grad_x)
    batch, n_in, n_out, (kh, kw), (ho, wo) = ga.shape[0], gx.shape[1], wa.shape[0], wa.shape[2:], ga.shape[2:]
    n, p_pad, width, block_rows = _column_geometry(batch, (ho, wo), wa.itemsize)
    terms = _cached_terms("columns input", index, (n_in, kh * kw, width, block_rows),
                          lambda: _column_terms(np.asarray(index), n_in, kh * kw, width, block_rows, True))
    g = _scratch(3, n_out * p_pad, wa.dtype).reshape(n_out, p_pad)
    g[:, :n].reshape(n_out, batch, ho, wo)[...] = ga.transpose(1, 0, 2, 3)
    g[:, n:] = 0
    gcol = _column_sums(g, p_pad, terms, wa, n_in * kh * kw, None, n_chunks)
    _col2im(gcol, grad_x, (kh, kw), stride, padding, dilation, (ho, wo), n_chunks)


def _dot_terms(index, int64_t n_in, int64_t kk, int64_t block_rows):
    """The columns path's grad_weight term lists for index (Cout, D), checked: (rows, wpos, ptr).
    Output v's terms in block b (source rows [b * block_rows, (b + 1) * block_rows) of the image
    columns, row u * kk + t for channel u's tap t) are [ptr[b * (Cout + 1) + v], ptr[b * (Cout + 1)
    + v + 1]) of rows (their source rows, in order) and wpos (their weight entries (v * D + i) *
    kk + t)."""
    rows, outs, wpos = _edge_rows(index, n_in, kk)
    n_out = index.shape[0]
    nb = max(1, (n_in * kk + block_rows - 1) // block_rows)
    blk = rows // block_rows
    order = np.lexsort((rows, outs, blk))
    starts = np.zeros(nb * n_out + 1, np.int64)
    np.cumsum(np.bincount(blk * n_out + outs, minlength=nb * n_out), out=starts[1:])
    ptr = np.empty((nb, n_out + 1), np.int64)
    ptr[:, :n_out] = starts[:-1].reshape(nb, n_out)
    ptr[:, n_out] = starts[n_out::n_out]
    return rows[order], wpos[order], ptr.reshape(-1)


def _tap_terms(index, int64_t n_in, int64_t kk):
    """The columns path's grad_weight groups for index (Cout, D), checked, over kernels of kk
    taps: (gptr, sv, sw).  The outputs that read channel u come in groups of XK_TAP_OUTS,
    groups [gptr[u], gptr[u + 1]); slot j of the groups is output sv[j] with weight entries
    sw[j] + t, sw[j] = (v * D + i) * kk for the edge index[v, i] = u; unused slots have sv =
    Cout (a zero row) and sw = -1."""
    flat = index.ravel()
    _check_index(flat, n_in)
    n_out, degree = index.shape[0], index.shape[1]
    edges = np.argsort(flat, kind="stable")               # by channel, then output
    count = np.bincount(flat, minlength=n_in)
    groups = (count + XK_TAP_OUTS - 1) // XK_TAP_OUTS
    gptr = np.zeros(n_in + 1, np.int64)
    np.cumsum(groups, out=gptr[1:])
    first = np.zeros(n_in, np.int64)
    np.cumsum(count[:-1], out=first[1:])
    u = flat[edges]
    slot = gptr[u] * XK_TAP_OUTS + np.arange(flat.shape[0], dtype=np.int64) - first[u]
    sv = np.full(int(gptr[-1]) * XK_TAP_OUTS, n_out, np.int64)
    sw = np.full(int(gptr[-1]) * XK_TAP_OUTS, -1, np.int64)
    sv[slot] = edges // degree
    sw[slot] = edges * kk
    return gptr, sv, sw


def _columns_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation, int n_chunks):
    """grad_weight of an X-Conv by the columns path: the image columns of x (_im2col) and
    grad_out as (Cout, B * Ho * Wo) rows, then one dot product per weight entry over tiles of
    positions.  k x k kernels: a channel's taps against XK_TAP_OUTS outputs that read it at a
    time (xk_dot_columns_taps), threads owning ranges of channels; 1x1: blocks of source rows
    that stay in L1 while every output reads them (xk_dot_columns), threads owning ranges of
    outputs.  Every entry sums its tiles in order: the result does not depend on the thread
    count."""
    ga, xa, gwa = np.asarray(grad_out), np.asarray(x), np.asarray(grad_weight)
    batch, n_in, n_out, degree = xa.shape[0], xa.shape[1], gwa.shape[0], gwa.shape[1]
    (kh, kw), (ho, wo) = gwa.shape[2:], ga.shape[2:]
    cdef int64_t kk = kh * kw
    cdef int64_t itemsize = gwa.itemsize
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    cdef int64_t n = batch * ho * wo
    cdef int64_t p_pad = _round_up(n, lanes)
    cdef int64_t tile, block_rows
    col = _scratch(3, n_in * kk * p_pad, gwa.dtype).reshape(n_in * kk, p_pad)
    _im2col(x, (kh, kw), stride, padding, dilation, (ho, wo), p_pad, col, n_chunks)
    g = _scratch(4, (n_out + 1) * p_pad, gwa.dtype).reshape(n_out + 1, p_pad)
    g[:n_out, :n].reshape(n_out, batch, ho, wo)[...] = ga.transpose(1, 0, 2, 3)
    g[:n_out, n:] = 0
    g[n_out] = 0
    gwa[...] = 0
    if kk >= XK_TAP_ROWS:
        # positions per tile: grad_out's stretch of every output stays in L2
        tile = max(4 * lanes, COLUMNS_WGRAD_G_BYTES // ((n_out + 1) * itemsize) // lanes * lanes)
        terms = _cached_terms("columns weight taps", index, (n_in, kk),
                              lambda: _tap_terms(np.asarray(index), n_in, kk))
        if itemsize == 4:
            _dot_taps_call[float](grad_weight, g, col, terms, kk, n_in, p_pad, min(tile, p_pad), n_chunks)
        else:
            _dot_taps_call[double](grad_weight, g, col, terms, kk, n_in, p_pad, min(tile, p_pad), n_chunks)
        return
    tile = min(p_pad, _round_up(COLUMNS_WGRAD_TILE, lanes))
    block_rows = max(1, COLUMNS_BLOCK_BYTES // (tile * itemsize))
    rows, wpos, ptr = _cached_terms("columns weight", index, (n_in, kk, block_rows),
                                    lambda: _dot_terms(np.asarray(index), n_in, kk, block_rows))
    if itemsize == 4:
        _dot_columns_call[float](grad_weight, g[None, :, None, :], col[None, :, None, :], rows, wpos, ptr, tile,
                                 n_chunks)
    else:
        _dot_columns_call[double](grad_weight, g[None, :, None, :], col[None, :, None, :], rows, wpos, ptr, tile,
                                  n_chunks)


def _dots_in_place_rule(int64_t hw, int64_t itemsize):
    """True when a stride-1 1x1 grad_weight over maps of hw positions takes _dots_in_place."""
    lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    return COLUMNS != "never" and DOTS_IN_PLACE_HW[0] <= hw <= DOTS_IN_PLACE_HW[1] and hw % lanes == 0


def _dots_in_place(grad_out, x, index, grad_weight, int n_chunks):
    """grad_weight of a stride-1 1x1 X-Conv whose images are contiguous maps of a whole number of
    vectors: xk_dot_columns reading x's and grad_out's channels in place, image by image (the
    columns of a 1x1 conv are x itself), COLUMNS_WGRAD_TILE positions (or a whole map) a pass."""
    ga, xa, gwa = np.asarray(grad_out), np.asarray(x), np.asarray(grad_weight)
    batch, n_in, n_out = xa.shape[0], xa.shape[1], gwa.shape[0]
    cdef int64_t hw = xa.shape[2] * xa.shape[3], itemsize = gwa.itemsize
    cdef int64_t lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
    cdef int64_t tile = hw if hw <= DOTS_IN_PLACE_HW[1] else _round_up(COLUMNS_WGRAD_TILE, lanes)
    cdef int64_t block_rows = max(1, COLUMNS_BLOCK_BYTES // (tile * itemsize))
    rows, wpos, ptr = _cached_terms("columns weight", index, (n_in, 1, block_rows),
                                    lambda: _dot_terms(np.asarray(index), n_in, 1, block_rows))
    gwa[...] = 0
    if itemsize == 4:
        _dot_columns_call[float](grad_weight, grad_out, x, rows, wpos, ptr, tile, n_chunks)
    else:
        _dot_columns_call[double](grad_weight, grad_out, x, rows, wpos, ptr, tile, n_chunks)


cdef void _dot_columns_call(floating[:, :, :, ::1] gw, const floating[:, :, :, :] g, const floating[:, :, :, :] x,
                            const int64_t[::1] rows, const int64_t[::1] wpos, const int64_t[::1] ptr,
                            int64_t tile, int n_chunks):
    """xk_dot_columns over images of contiguous rows: g (B, >= Cout, H, W) and x (B, rows, H, W)
    (the image columns as (1, rows, 1, p_pad)), tile positions a pass, threads owning ranges of
    outputs and summing images and tiles in order."""
    cdef int64_t n_out = gw.shape[0], hw = x.shape[2] * x.shape[3], batch = x.shape[0]
    cdef int64_t nb = ptr.shape[0] // (n_out + 1), chunk, b, p0, v_lo, v_hi
    cdef int64_t gchan = g.strides[1] // sizeof(floating), xchan = x.strides[1] // sizeof(floating)
    with nogil:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            v_lo = n_out * chunk // n_chunks
            v_hi = n_out * (chunk + 1) // n_chunks
            for b in range(batch):
                p0 = 0
                while p0 < hw:
                    if floating is float:
                        xk_dot_columns_f32(&gw[0, 0, 0, 0], &g[b, 0, 0, 0], gchan, &x[b, 0, 0, 0], xchan, &rows[0],
                                           &wpos[0], &ptr[0], nb, n_out, v_lo, v_hi, p0, min(tile, hw - p0))
                    else:
                        xk_dot_columns_f64(&gw[0, 0, 0, 0], &g[b, 0, 0, 0], gchan, &x[b, 0, 0, 0], xchan, &rows[0],
                                           &wpos[0], &ptr[0], nb, n_out, v_lo, v_hi, p0, min(tile, hw - p0))
                    p0 = p0 + tile


cdef void _dot_taps_call(floating[:, :, :, ::1] gw, const floating[:, ::1] g, const floating[:, ::1] col, terms,
                         int64_t kk, int64_t n_in, int64_t p_pad, int64_t tile, int n_chunks):
    cdef const int64_t[::1] gptr = terms[0]
    cdef const int64_t[::1] sv = terms[1]
    cdef const int64_t[::1] sw = terms[2]
    cdef int64_t chunk, p0, u_lo, u_hi
    if sv.shape[0] == 0:
        return
    with nogil:
        for chunk in prange(n_chunks, schedule="static", chunksize=1, num_threads=n_chunks):
            u_lo = n_in * chunk // n_chunks
            u_hi = n_in * (chunk + 1) // n_chunks
            p0 = 0
            while p0 < p_pad:
                if floating is float:
                    xk_dot_columns_taps_f32(&gw[0, 0, 0, 0], &g[0, 0], p_pad, &col[0, 0], p_pad, kk, &gptr[0],
                                            &sv[0], &sw[0], u_lo, u_hi, p0, min(tile, p_pad - p0))
                else:
                    xk_dot_columns_taps_f64(&gw[0, 0, 0, 0], &g[0, 0], p_pad, &col[0, 0], p_pad, kk, &gptr[0],
                                            &sv[0], &sw[0], u_lo, u_hi, p0, min(tile, p_pad - p0))
                p0 = p0 + tile


cdef void _columns_call(floating[:, ::1] col, int64_t p_pad, const int32_t[::1] off, const floating[::1] qw,
                        const int64_t[::1] ptr, const int64_t[::1] row0, int64_t n_dst, bias, floating[::1] panels,
                        int64_t panel_stride, floating[:, ::1] y, int n_chunks):
    cdef const floating[::1] b
    cdef const floating *bias_ptr = NULL
    if bias is not None:
        b = bias
        bias_ptr = &b[0]
    with nogil:
        _columns_run(&col[0, 0], p_pad, &off[0], &qw[0], &ptr[0], &row0[0], row0.shape[0] - 1, n_dst, bias_ptr,
                     &panels[0], panel_stride, &y[0, 0], n_chunks)


cdef enum:
    PATH_WINOGRAD = 1
    PATH_COLUMNS = 2
    PATH_QUADS = 3
    PATH_CORRELATE = 4


def _settings():
    """The module settings a plan's choices depend on, as a key (tests and tuning change them
    between calls)."""
    return (PACK_BYTES, BLOCK_BYTES, BLOCK_TERMS, QUAD_PANEL_BYTES, COLUMNS, COLUMNS_MAX_HW,
            COLUMNS_MAX_STRIDED_HW, COLUMNS_BLOCK_BYTES, COLUMNS_MAX_BYTES, WINOGRAD, WINO_TILE,
            tuple(WINO_F4_VALUES.items()), WINO_MIN_TERMS, WINO_MIN_PANELS, WINO_SCRATCH_BYTES,
            tuple(ROWS3_SPEED.items()))


cdef uintptr_t _address(a) except 0:
    """The first element of the C-contiguous array (or memoryview) a, which the caller keeps alive."""
    arr = np.asarray(a)
    if not arr.flags.c_contiguous:
        raise AssertionError("a plan's arrays are C-contiguous")
    return <uintptr_t>cnp.PyArray_DATA(arr)


cdef class _ForwardPlan:
    """What an X-Conv forward decides from its geometry alone, never from data: the path
    (Winograd, image columns, 1x1 quads or correlation tiles), its planes and tiling, and the
    term lists, held with raw pointers into them.  xconv2d_fwd keeps one beside the cached
    graph per geometry and settings (_forward_plan), so a repeated call goes straight to its
    kernels: the choices cost tens of microseconds, a small layer's kernel as much."""
    cdef int path, m
    cdef bint shared, direct
    cdef int64_t group, cstride, n_frames, rows3, a3, col_tiles, n_cb, wstride, tile, width, toff0
    cdef xk_layout_t lay
    cdef xk_quads_t qs
    cdef const xk_frame_t *frames
    cdef const xk_scatter_t *scatter
    cdef const int64_t *toff
    cdef const int64_t *ptr
    cdef const int64_t *chan
    cdef const int64_t *wrow
    cdef const int64_t *tap_ptr
    cdef object edges        # Winograd: the quads' edges (_wino_weights)
    cdef object keep         # the arrays the pointers point into

    def __init__(self, index, tuple geometry):
        (batch, n_in, height, width), x_strides, out_shape, out_strides, (n_out, degree, kh, kw), stride, padding, \
            dilation, itemsize = geometry
        cdef xk_image_t x_im, out_im
        x_im.img, x_im.chan, x_im.row, x_im.col = x_strides
        x_im.height, x_im.width = height, width
        out_im.img, out_im.chan, out_im.row, out_im.col = out_strides
        out_im.height, out_im.width = out_shape[2], out_shape[3]
        out_hw = (out_shape[2], out_shape[3])
        lanes = XK_LANES_F32 if itemsize == 4 else XK_LANES_F64
        self.tile = XK_TILE_F32 if itemsize == 4 else XK_TILE_F64
        self.width = XK_SACC * lanes
        self.m = _winograd((kh, kw), stride, dilation, n_in, n_out, n_out * degree, out_hw, batch, itemsize)
        if self.m:
            # stride-1 3x3: (m + 2)^2 1x1 correlations on Winograd-transformed panels, in quads
            qoff = _cached_terms("quads", index, (n_in, self.width),
                                 lambda: _quad_terms(np.asarray(index), n_in, self.width))[0]
            self._quads(qoff, degree, n_out, n_in, _runs_shared(index))
            self.edges = _quad_edges(n_out, degree)
            self.path = PATH_WINOGRAD
            return
        if _columns((kh, kw), stride, n_in, out_hw, batch, itemsize, True):
            self.path = PATH_COLUMNS
            return
        planes = _forward_planes((kh, kw), stride, padding, dilation, out_hw, lanes)
        self.n_frames = len(planes.frames)
        self.group = _group(batch, n_in * self.n_frames * planes.hb * planes.wb * itemsize)
        # block expanders (index rows equal in runs of XK_SHARE): those outputs share every
        # vector load, except on stride-1 3x3, whose row tiles share loads between kernel rows
        self.shared = _runs_shared(index) and not planes.rows3
        # stride-1 3x3: tiles of XK_NACC / a3 grid rows (the shared-row path keeps flat tiles)
        self.rows3 = planes.rows3 if not self.shared else 0
        self.a3, self.col_tiles, length, self.cstride, toff = _tiling(planes, self.rows3, self.group, self.tile,
                                                                     itemsize, lanes)
        self.lay.hb, self.lay.wb, self.lay.len = planes.hb, planes.wb, length
        scatter = np.array([(0, out_im.img, out_im.row, out_im.col, 0, out_hw[0], 0, out_hw[1])], SCATTER_DTYPE)
        self.frames, self.toff = <const xk_frame_t *>_address(planes.frames), <const int64_t *>_address(toff)
        self.toff0 = toff[0]
        self.scatter = <const xk_scatter_t *>_address(scatter)
        self.keep = [planes, toff, scatter]
        if kh * kw == 1 and self.n_frames == 1 and (n_in + 1) * self.width * itemsize <= QUAD_PANEL_BYTES:
            # 1x1: quads of outputs read a panel of every channel, kept in cache (block
            # expanders: each quad is a run, its four outputs share every load)
            qoff = _cached_terms("quads", index, (n_in, self.width),
                                 lambda: _quad_terms(np.asarray(index), n_in, self.width))[0]
            self._quads(qoff, degree, n_out, n_in, self.shared)
            self.direct = _in_place(stride, padding, &x_im, &out_im, self.width)
            self.path = PATH_QUADS
            return
        # the channels one channel block reads per tile (or, shared, per XK_SACC vectors of it)
        window = self.n_frames * ((XK_SACC * self.tile // XK_NACC if self.shared else self.tile)
                                  + max(planes.shift)) * itemsize
        share = XK_SHARE if self.shared else 1
        blocked = _cached_terms("forward", index, (n_in, window, share),
                                lambda: _forward_terms(np.asarray(index), n_in, window, share))
        tap_ptr = np.array([0, kh * kw], np.int64)
        self.ptr, self.chan = <const int64_t *>_address(blocked[0]), <const int64_t *>_address(blocked[1])
        self.wrow, self.n_cb = <const int64_t *>_address(blocked[2]), blocked[3]
        self.tap_ptr, self.wstride = <const int64_t *>_address(tap_ptr), kh * kw * share
        self.keep += [blocked, tap_ptr]
        self.path = PATH_CORRELATE

    def _quads(self, qoff, int64_t degree, int64_t n_dst, int64_t n_src, bint shared):
        self.qs.off, self.qs.ptr, self.qs.rows = <const int32_t *>_address(qoff), NULL, NULL
        self.qs.degree, self.qs.n_dst, self.qs.n_src, self.qs.shared = degree, n_dst, n_src, shared
        self.keep = (self.keep or []) + [qoff]


cdef _ForwardPlan _forward_plan(index, tuple geometry):
    """The _ForwardPlan of index (Cout, D) and geometry: kept beside xkern.ops' cached copy of the
    graph (xkern.backends._graphs), or made afresh for an index that is not one."""
    plan = _graphs.table(index, ("forward plan", geometry, _settings()), lambda: _ForwardPlan(index, geometry))
    return plan if plan is not None else _ForwardPlan(index, geometry)


cdef int _host(a, str name, int ndim, int typenum, bint contiguous, bint writeable) except -1:
    """TypeError or ValueError naming the argument unless a is an aligned native-order ndarray
    of ndim dimensions and dtype typenum, C-contiguous and writeable where asked: what a typed
    memoryview checks, without exporting a buffer (numpy formats one for every fresh view)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
    if cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a):
        raise ValueError(f"{name} has dtype {a.dtype}, expected {cnp.PyArray_DescrFromType(typenum)}")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} is not aligned to its dtype")
    if contiguous and not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} is read-only")
    return 0


def xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation, int num_threads):
    """out (B, Cout, Ho, Wo) = X-Conv of x (B, Cin, H, W); weight (Cout, D, kh, kw), C-contiguous;
    index (Cout, D) int64, C-contiguous; bias (Cout,) or None; float32 or float64 ndarrays, x and
    out strided.  Stride-1 3x3 (_winograd) by Winograd, 1x1 in quads (xk_quad_tile), the rest
    in flat or row tiles (_ForwardPlan)."""
    cdef int typenum = cnp.NPY_DOUBLE if cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE \
        else cnp.NPY_FLOAT
    _host(x, "x", 4, typenum, False, False)
    _host(weight, "weight", 4, typenum, True, False)
    _host(index, "index", 2, cnp.NPY_INT64, True, False)
    if bias is not None:
        _host(bias, "bias", 1, typenum, True, False)
    _host(out, "out", 4, typenum, False, True)
    if typenum == cnp.NPY_FLOAT:
        _forward[float](x, weight, index, bias, out, stride, padding, dilation, _threads(num_threads), NULL)
    else:
        _forward[double](x, weight, index, bias, out, stride, padding, dilation, _threads(num_threads), NULL)


cdef int _forward(x, weight, index, bias, out, stride, padding, dilation, int n_chunks,
                  const floating *kind) except -1:
    """xconv2d_fwd on arrays _host checked, with floating their dtype (kind: NULL, names it)."""
    cdef Py_ssize_t *x_shape = <Py_ssize_t *>cnp.PyArray_DIMS(x)
    cdef Py_ssize_t *w_shape = <Py_ssize_t *>cnp.PyArray_DIMS(weight)
    cdef Py_ssize_t *out_shape = <Py_ssize_t *>cnp.PyArray_DIMS(out)
    cdef int64_t batch = x_shape[0], n_in = x_shape[1], n_out = w_shape[0], degree = w_shape[1]
    cdef xk_image_t x_im = _image(x_shape, <Py_ssize_t *>cnp.PyArray_STRIDES(x), sizeof(floating))
    cdef xk_image_t out_im = _image(out_shape, <Py_ssize_t *>cnp.PyArray_STRIDES(out), sizeof(floating))
    cdef const floating *bias_ptr = NULL
    _check_conv(x_shape, w_shape, <Py_ssize_t *>cnp.PyArray_DIMS(index), out_shape, stride, padding, dilation,
                ("x", "weight", "out"))
    if bias is not None and cnp.PyArray_DIMS(bias)[0] != n_out:
        raise ValueError(f"bias has length {cnp.PyArray_DIMS(bias)[0]}, weight has Cout = {n_out}")
    if batch == 0:
        return 0
    if bias is not None:
        bias_ptr = <const floating *>cnp.PyArray_DATA(bias)
    cdef const floating *x_ptr = <const floating *>cnp.PyArray_DATA(x)
    cdef floating *out_ptr = <floating *>cnp.PyArray_DATA(out)
    cdef _ForwardPlan plan = _forward_plan(index, (
        (batch, n_in, x_im.height, x_im.width), (x_im.img, x_im.chan, x_im.row, x_im.col),
        (batch, n_out, out_im.height, out_im.width), (out_im.img, out_im.chan, out_im.row, out_im.col),
        (n_out, degree, w_shape[2], w_shape[3]), tuple(stride), tuple(padding), tuple(dilation),
        sizeof(floating)))
    cdef const floating[::1] qw
    if plan.path == PATH_WINOGRAD:
        qw = _wino_weights(weight, plan.edges, False, plan.m, n_chunks)
        _wino_run(x_ptr, &x_im, out_ptr, &out_im, batch, <int64_t>padding[0], <int64_t>padding[1], plan.m,
                  &plan.qs, qw, bias_ptr, n_chunks)
        return 0
    if plan.path == PATH_COLUMNS:
        _columns_fwd(x, weight, index, bias, out, stride, padding, dilation, n_chunks)
        return 0
    dtype = np.float32 if floating is float else np.float64
    cdef floating *packed = <floating *>cnp.PyArray_DATA(_scratch(0, n_chunks * n_in * plan.cstride, dtype))
    cdef floating *parts
    cdef floating *panels
    cdef const floating *w_ptr = <const floating *>cnp.PyArray_DATA(weight)
    if plan.path == PATH_QUADS:
        w_ptr = <const floating *>cnp.PyArray_DATA(_quad_weights(weight))
        parts = <floating *>cnp.PyArray_DATA(_scratch(1, n_chunks * n_out * (plan.width if plan.direct else plan.tile),
                                                      dtype))
        panels = <floating *>cnp.PyArray_DATA(_scratch(2, n_chunks * (n_in + 1) * plan.width, dtype))
        with nogil:
            _whole_tiles(x_ptr, &x_im, n_in, plan.frames, &plan.lay, plan.cstride, plan.toff0, batch,
                         plan.group, packed, parts, panels, NULL, &plan.qs, w_ptr, degree, bias_ptr,
                         out_ptr, &out_im, n_out, plan.scatter, plan.direct, n_chunks)
        return 0
    if plan.shared:  # the weights interleaved by output
        w_ptr = <const floating *>cnp.PyArray_DATA(_shared_weights(weight))
    with nogil:
        _correlate(x_ptr, &x_im, n_in, plan.frames, plan.n_frames, &plan.lay, plan.cstride, batch,
                   plan.group, packed, plan.ptr, plan.n_cb, plan.chan, plan.wrow, n_out, w_ptr, plan.wstride,
                   plan.shared, plan.tap_ptr, plan.toff, 1, plan.rows3, plan.a3, plan.col_tiles, bias_ptr,
                   out_ptr, &out_im, plan.scatter, n_chunks)
    return 0


def xconv2d_bwd_input(const floating[:, :, :, :] grad_out, const floating[:, :, :, ::1] weight,
                      const int64_t[:, ::1] index, rev, floating[:, :, :, :] grad_x,
                      stride, padding, dilation, int num_threads):
    """grad_x (B, Cin, H, W) from grad_out (B, Cout, Ho, Wo), gathered over rev (ptr, edge): for
    1x1 convs with one phase in quads of inputs (xk_quad_tile), except block expanders,
    spread from each run of outputs instead (_whole_tiles: rev is not read); stride-1 3x3
    (_winograd) in quads of inputs on Winograd-transformed panels."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t batch = grad_x.shape[0], n_in = grad_x.shape[1]
    cdef int64_t n_out = weight.shape[0], degree = weight.shape[1]
    cdef int64_t kk = weight.shape[2] * weight.shape[3]
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    cdef xk_image_t x_im = _image(grad_x.shape, grad_x.strides, sizeof(floating))
    cdef xk_layout_t lay
    _check_conv(grad_x.shape, weight.shape, index.shape, grad_out.shape, stride, padding, dilation,
                ("grad_x", "weight", "grad_out"))
    if batch == 0:
        return
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const int32_t[::1] qoff
    cdef const int64_t[::1] qptr
    cdef const int64_t[::1] qrows
    cdef const floating[::1] qw
    cdef xk_quads_t qs
    cdef int n_chunks = _threads(num_threads)
    cdef int m = _winograd((weight.shape[2], weight.shape[3]), stride, dilation, n_out, n_in, n_out * degree,
                           (grad_x.shape[2], grad_x.shape[3]), batch, sizeof(floating))
    if m:
        # stride-1 3x3: the correlation of grad_out with the kernel rotated by 180 degrees
        # (padding 2 - pad) by Winograd, in quads of inputs over the reverse adjacency
        quads = _cached_terms("input quads", index, (n_in, width),
                              lambda: _input_quads(np.asarray(index), rev, n_in, width))
        qoff, qptr, qrows = quads[0], quads[1], quads[2]
        qw = _wino_weights(weight, quads[3], True, m, n_chunks)
        qs.off, qs.ptr, qs.rows = &qoff[0], &qptr[0], &qrows[0]
        qs.degree, qs.n_dst, qs.n_src, qs.shared = 0, n_in, n_out, False
        _wino_run(&grad_out[0, 0, 0, 0], &g_im, &grad_x[0, 0, 0, 0], &x_im, batch, 2 - <int64_t>padding[0],
                  2 - <int64_t>padding[1], m, &qs, qw, <const floating *>NULL, n_chunks)
        return
    if _columns((weight.shape[2], weight.shape[3]), stride, n_in, (grad_out.shape[2], grad_out.shape[3]), batch,
                sizeof(floating), False):
        _columns_bwd_input(grad_out, weight, index, grad_x, stride, padding, dilation, n_chunks)
        return
    planes = _input_grad_planes((grad_x.shape[2], grad_x.shape[3]), (weight.shape[2], weight.shape[3]),
                                stride, padding, dilation, x_im, XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const xk_frame_t[::1] frame = planes.frame
    cdef int64_t group = _group(batch, n_out * planes.hb * planes.wb * sizeof(floating))
    cdef int64_t rows3 = planes.rows3
    tiling = _tiling(planes, rows3, group, tile, sizeof(floating), XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t a3 = tiling[0], col_tiles = tiling[1]
    length, channel_stride, toff_arr = tiling[2:]
    cdef int64_t cstride = channel_stride
    lay.hb, lay.wb, lay.len = planes.hb, planes.wb, length
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] packed = _scratch(0, n_chunks * n_out * cstride, dtype)
    cdef const int64_t[::1] toff = toff_arr
    cdef const int64_t[::1] tap_ptr = planes.tap_ptr
    cdef const xk_scatter_t[::1] scatter = planes.scatter
    cdef const int64_t[::1] run_rows
    cdef const floating[::1] w_runs
    cdef floating[::1] parts
    cdef floating[::1] panels
    cdef bint direct
    if kk == 1 and tap_ptr.shape[0] == 2 and rows3 == 0 and _runs_shared(index):
        # 1x1 block expanders: each run of outputs spreads its grad_out vectors, held in
        # registers, over the inputs it reads (xk_spread_shared); rev is not read
        run_rows = _cached_terms("spread", index, n_in, lambda: _run_rows(np.asarray(index), n_in))[0]
        w_runs = _shared_weights(weight.base)
        direct = _in_place(stride, padding, &g_im, &x_im, width)
        parts = _scratch(1, n_chunks * n_in * (width if direct else tile), dtype)
        panels = _scratch(2, n_chunks * (n_out + 1) * width, dtype)
        with nogil:
            _whole_tiles(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], &lay, cstride, toff[0], batch, group,
                         &packed[0], &parts[0], &panels[0], &run_rows[0], NULL, &w_runs[0], degree, NULL,
                         &grad_x[0, 0, 0, 0], &x_im, n_in, &scatter[0], direct, n_chunks)
        return
    if (kk == 1 and tap_ptr.shape[0] == 2 and rows3 == 0
            and (n_out + 1) * width * sizeof(floating) <= QUAD_PANEL_BYTES):
        # 1x1, one phase: quads of inputs, each gathering its edges from an L1 panel of grad_out
        quads = _cached_terms("input quads", index, (n_in, width),
                              lambda: _input_quads(np.asarray(index), rev, n_in, width))
        qoff, qptr, qrows = quads[0], quads[1], quads[2]
        qw = _edge_weights(weight, quads[3])
        direct = _in_place(stride, padding, &g_im, &x_im, width)
        parts = _scratch(1, n_chunks * n_in * (width if direct else tile), dtype)
        panels = _scratch(2, n_chunks * (n_out + 1) * width, dtype)
        qs.off, qs.ptr, qs.rows = &qoff[0], &qptr[0], &qrows[0]
        qs.degree, qs.n_dst, qs.n_src, qs.shared = 0, n_in, n_out, False
        with nogil:
            _whole_tiles(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], &lay, cstride, toff[0], batch, group,
                         &packed[0], &parts[0], &panels[0], NULL, &qs, &qw[0], 0, NULL,
                         &grad_x[0, 0, 0, 0], &x_im, n_in, &scatter[0], direct, n_chunks)
        return
    window = (tile + int(planes.shift.max(initial=0))) * sizeof(floating)
    # keyed on index: rev is its reverse adjacency over n_in inputs (checked when the lists are made)
    blocked = _cached_terms("input", index, (n_in, window), lambda: _input_terms(np.asarray(index), rev, n_in, window))
    cdef const int64_t[::1] ptr = blocked[0]
    cdef const int64_t[::1] chan = blocked[1]
    cdef int64_t n_cb = blocked[3]
    # Tap weights in the order of the phases' tap lists (each phase's taps contiguous),
    # rows in term order: read one after another, not gathered from the whole weight
    # (terms of one input come from scattered outputs).
    cdef const floating[:, ::1] w_phased = _gather_rows(np.asarray(weight).reshape(n_out * degree, kk),
                                                        blocked[2], planes.order)
    cdef const int64_t[::1] wrow = _iota(len(blocked[2]))
    with nogil:
        _correlate(&grad_out[0, 0, 0, 0], &g_im, n_out, &frame[0], 1, &lay, cstride, batch, group, &packed[0],
                   &ptr[0], n_cb, &chan[0], &wrow[0], n_in, &w_phased[0, 0], kk, 0,
                   &tap_ptr[0], &toff[0], tap_ptr.shape[0] - 1, rows3, a3, col_tiles, NULL,
                   &grad_x[0, 0, 0, 0], &x_im, &scatter[0], n_chunks)


def xconv2d_bwd_weight(const floating[:, :, :, :] grad_out, const floating[:, :, :, :] x,
                       const int64_t[:, ::1] index, floating[:, :, :, ::1] grad_weight,
                       stride, padding, dilation, int num_threads):
    """grad_weight (Cout, D, kh, kw) from grad_out (B, Cout, Ho, Wo) and x (B, Cin, H, W)."""
    cdef int64_t tile = XK_TILE_F32 if floating is float else XK_TILE_F64
    cdef int64_t batch = x.shape[0], n_in = x.shape[1]
    cdef int64_t n_out = grad_weight.shape[0], degree = grad_weight.shape[1]
    cdef int64_t kk = grad_weight.shape[2] * grad_weight.shape[3]
    cdef xk_image_t x_im = _image(x.shape, x.strides, sizeof(floating))
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    cdef xk_layout_t x_lay, g_lay
    _check_conv(x.shape, grad_weight.shape, index.shape, grad_out.shape, stride, padding, dilation,
                ("x", "grad_weight", "grad_out"))
    _check_index(np.asarray(index).ravel(), n_in)  # (one pass over Cout * D entries: ~1 ns each)
    if batch == 0:
        np.asarray(grad_weight)[...] = 0
        return
    cdef int n_chunks = _threads(num_threads)
    dtype = np.float32 if floating is float else np.float64
    cdef int64_t width = XK_SACC * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef floating[::1] vbufs
    cdef floating[::1] accs
    cdef int64_t pad_y, pad_x
    cdef bint shared = _runs_shared(index)
    wino = _winograd_wgrad((grad_weight.shape[2], grad_weight.shape[3]), stride, dilation, n_in, n_out,
                           n_out * degree, (grad_out.shape[2], grad_out.shape[3]), batch, sizeof(floating))
    cdef int m = wino[0]
    if not m and _columns_wgrad((grad_weight.shape[2], grad_weight.shape[3]), stride, n_in,
                                (grad_out.shape[2], grad_out.shape[3]), batch, sizeof(floating)):
        _columns_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation, n_chunks)
        return
    if kk == 1 and _dots_in_place_rule(grad_out.shape[2] * grad_out.shape[3], sizeof(floating)) \
            and _in_place(stride, padding, &x_im, &g_im, 0):
        _dots_in_place(grad_out, x, index, grad_weight, n_chunks)
        return
    cdef int64_t n_parts = wino[1], nk = (m + 2) * (m + 2)
    if m:
        # stride-1 3x3: dot products of Winograd-transformed tiles, nk per tile and edge
        vbufs = _scratch(0, n_chunks * n_in * width * nk, dtype)
        accs = _scratch(1, n_parts * n_out * degree * nk, dtype)
        pad_y, pad_x = padding
        with nogil:
            _wino_wgrads(&x[0, 0, 0, 0], &x_im, n_in, &grad_out[0, 0, 0, 0], &g_im, n_out, batch,
                         pad_y, pad_x, m, &index[0, 0], degree, shared, n_parts, &vbufs[0], &accs[0],
                         &grad_weight[0, 0, 0, 0], n_chunks)
        return
    planes = _forward_planes((grad_weight.shape[2], grad_weight.shape[3]), stride, padding, dilation,
                             (grad_out.shape[2], grad_out.shape[3]), XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef const xk_frame_t[::1] frames = planes.frames
    cdef const xk_frame_t[::1] g_frame = np.array([(1, 1, 0, 0)], FRAME_DTYPE)
    cdef int64_t n_frames = len(planes.frames)
    cdef int64_t rows3 = planes.rows3
    # positions per group rounded up to XK_DOT_ROWS grid rows (xk_dot_rows3) or to the
    # 2 vectors of xk_dot_taps
    cdef int64_t unit = XK_DOT_ROWS * rows3 if rows3 else 2 * (XK_LANES_F32 if floating is float else XK_LANES_F64)
    cdef int64_t group = _group(batch, n_in * n_frames * planes.hb * planes.wb * sizeof(floating))
    length, channel_stride, toff_arr = planes.layout(group, unit, sizeof(floating))
    cdef int64_t cstride = channel_stride
    x_lay.hb, x_lay.wb, x_lay.len = planes.hb, planes.wb, length
    g_lay.hb, g_lay.wb = planes.hb, planes.wb
    g_lay.len = _odd_lines(_round_up(group * planes.hb * planes.wb, unit), sizeof(floating))
    cdef floating[::1] x_packed = _scratch(0, n_chunks * n_in * cstride, dtype)
    cdef int64_t share = XK_SHARE if shared else 1  # chunks own whole runs of share outputs
    cdef floating[::1] g_packed = _scratch(1, n_chunks * ((n_out // share + n_chunks - 1) // n_chunks * share)
                                           * g_lay.len, dtype)
    cdef floating[::1] masks = _scratch(2, n_chunks * g_lay.len, dtype)
    cdef const int64_t[::1] toff = toff_arr
    with nogil:
        _weight_grads(&x[0, 0, 0, 0], &x_im, n_in, &frames[0], n_frames, &x_lay, cstride,
                      &grad_out[0, 0, 0, 0], &g_im, n_out, &g_frame[0], &g_lay,
                      batch, group, &x_packed[0], &g_packed[0], &masks[0], &index[0, 0], degree,
                      &toff[0], kk, rows3, unit, shared, &grad_weight[0, 0, 0, 0], n_chunks)


def xconv2d_bwd_bias(const floating[:, :, :, :] grad_out, floating[::1] grad_bias, int num_threads):
    """grad_bias (Cout,) = grad_out (B, Cout, Ho, Wo) summed over B, Ho, Wo."""
    cdef int64_t batch = grad_out.shape[0], v
    cdef xk_image_t g_im = _image(grad_out.shape, grad_out.strides, sizeof(floating))
    if grad_bias.shape[0] != grad_out.shape[1]:
        raise ValueError(f"grad_bias has length {grad_bias.shape[0]}, grad_out has Cout = {grad_out.shape[1]}")
    if batch == 0:
        grad_bias[:] = 0
        return
    with nogil, parallel(num_threads=_threads(num_threads)):
        for v in prange(grad_out.shape[1], schedule="static"):
            if floating is float:
                grad_bias[v] = xk_sum_image_f32(&grad_out[0, v, 0, 0], batch, &g_im)
            else:
                grad_bias[v] = xk_sum_image_f64(&grad_out[0, v, 0, 0], batch, &g_im)


# ---------------------------------------------------------------- X-Linear: the 1x1 conv of (B, C, 1, 1)

def _as_map(a):
    """(B, C) -> (B, C, 1, 1) view; the conv kernels take the strides as they are."""
    return a[:, :, None, None]


def _as_kernel(weight):
    """(Cout, D) -> C-contiguous (Cout, D, 1, 1)."""
    return np.ascontiguousarray(weight).reshape(weight.shape + (1, 1))


def xlinear_fwd(x, weight, index, bias, out, int num_threads):
    """out (B, Cout) = X-Linear of x (B, Cin); weight (Cout, D)."""
    xconv2d_fwd(_as_map(x), _as_kernel(weight), index, bias, _as_map(out), (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_input(grad_out, weight, index, rev, grad_x, int num_threads):
    """grad_x (B, Cin) from grad_out (B, Cout)."""
    xconv2d_bwd_input(_as_map(grad_out), _as_kernel(weight), index, rev, _as_map(grad_x),
                      (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_weight(grad_out, x, index, grad_weight, int num_threads):
    """grad_weight (Cout, D) from grad_out (B, Cout) and x (B, Cin)."""
    xconv2d_bwd_weight(_as_map(grad_out), _as_map(x), index, grad_weight.reshape(grad_weight.shape + (1, 1)),
                       (1, 1), (0, 0), (1, 1), num_threads)


def xlinear_bwd_bias(grad_out, grad_bias, int num_threads):
    """grad_bias (Cout,) = grad_out (B, Cout) summed over B."""
    xconv2d_bwd_bias(_as_map(grad_out), grad_bias, num_threads)
