"""The tiled gather convolution behind forward and (stride-1) grad_input.

Each output row r (an output channel in forward, an input channel in grad_input)
is a sum over its edges (c, f): a tile channel c convolved with weight row f:

    out[b, r, y, x] = bias[r] + sum_{(c, f) in edges(r)} sum_{ky, kx}
                      w[f, ky', kx'] * src[b, c, y*sh + ky*dh - ph, x*sw + kx*dw - pw]

with (ky', kx') = (ky, kx), or (kh-1-ky, kw-1-kx) when flipped.  grad_input at
stride 1 is this sum over grad_out with the flipped kernel and padding
(k-1)*d - p: every output pixel gathers, so no two threads write one element.

A block owns nb images x a th x tw output tile x a range of rows.  It stages all
tile channels (ch at a time) of the input halo in shared memory once, zero
outside the image, so the inner loop has no bounds checks.  Warp w handles rows
w, w + WARPS, ...; lane l the column l % tw and ry rows starting at (l // tw)*ry,
so a warp's shared-memory reads are consecutive (no bank conflicts) and each
loaded index and weight feeds nb*ry multiply-adds.
"""
import functools

import numba
import numpy as np
from numba import cuda, types

from ._interop import Kernel, dummy
from ._plan import THREADS, WARP, WARPS, gather_grid, halo

STAGE_BATCH = 4  # global loads each thread keeps in flight while staging
EDGE_BATCH = 4   # at most this many edges' index and weights are loaded together
EDGE_WORK = 64   # ... while their multiply-adds per thread stay below this (loops stay unrolled)


def gather_source(dtype, geom, tile, has_bias):
    """The kernel as a Python function, specialised on dtype, geometry and tile.

    kernel(src (B, C, H, W), w (E, kh, kw), codes (E,) int64, seg (R*n_chunks+1,) int64,
           bias (R,) or a 1-element dummy, out (B, R, Ho, Wo))
    """
    kh, kw, sh, sw, dh, dw, ph, pw, flip = geom
    nb_, ry_, tw_, ch_ = tile
    th_ = tile.th
    hh_, hw_ = halo(geom, th_, tw_)
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    plane_size = hh_ * hw_
    image_size = ch_ * plane_size
    n_stage = nb_ * image_size
    n_acc = nb_ * ry_
    kk = kh * kw
    eb = max(1, min(EDGE_BATCH, EDGE_WORK // (n_acc * kk)))
    n_weights = eb * kk

    def kernel(src, w, codes, seg, bias, out):
        stage = cuda.shared.array(n_stage, nty)  # [nb, ch, hh, hw] flattened
        held = cuda.local.array(STAGE_BATCH, nty)
        acc = cuda.local.array(n_acc, nty)
        wl = cuda.local.array(n_weights, nty)
        planes = cuda.local.array(eb, types.int64)
        tid = cuda.threadIdx.x
        lane = tid % WARP
        warp = tid // WARP
        n_img, n_chan, height, width = src.shape
        n_rows, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
        tiles_x = (w_out + tw_ - 1) // tw_
        ty0 = (cuda.blockIdx.x // tiles_x) * th_
        tx0 = (cuda.blockIdx.x % tiles_x) * tw_
        b0 = cuda.blockIdx.y * nb_
        per_block = (n_rows + cuda.gridDim.z - 1) // cuda.gridDim.z
        r_lo = cuda.blockIdx.z * per_block
        r_hi = min(n_rows, r_lo + per_block)
        n_chunks = (n_chan + ch_ - 1) // ch_
        col = lane % tw_
        srow = lane // tw_
        oy0 = ty0 + srow * ry_
        ox = tx0 + col
        for k in range(n_chunks):
            c0 = k * ch_
            # The previous chunk's readers must finish before the tile is overwritten.
            cuda.syncthreads()
            # STAGE_BATCH loads in flight per thread before their stores: the copy is
            # bound by global-memory latency, not bandwidth.
            for t0 in range(tid, n_stage, THREADS * STAGE_BATCH):
                for u in range(STAGE_BATCH):
                    t = t0 + u * THREADS
                    hx = t % hw_
                    q = t // hw_
                    hy = q % hh_
                    q = q // hh_
                    c = c0 + q % ch_
                    b = b0 + q // ch_
                    iy = ty0 * sh - ph + hy
                    ix = tx0 * sw - pw + hx
                    held[u] = zero
                    if t < n_stage and b < n_img and c < n_chan and 0 <= iy < height and 0 <= ix < width:
                        held[u] = src[b, c, iy, ix]
                for u in range(STAGE_BATCH):
                    t = t0 + u * THREADS
                    if t < n_stage:
                        stage[t] = held[u]
            cuda.syncthreads()
            for r in range(r_lo + warp, r_hi, WARPS):
                for nb in range(nb_):
                    for ry in range(ry_):
                        a = nb * ry_ + ry
                        if k > 0:
                            # Channels come in chunks: continue this thread's own partial sum.
                            b = b0 + nb
                            oy = oy0 + ry
                            acc[a] = out[b, r, oy, ox] if b < n_img and oy < h_out and ox < w_out else zero
                        elif has_bias:
                            acc[a] = bias[r]
                        else:
                            acc[a] = zero
                e_hi = seg[r * n_chunks + k + 1]
                # eb edges per step: their index and weight loads are in flight together
                # instead of each edge waiting on its own (uniform) loads; past the end
                # the weights are zero.
                for e0 in range(seg[r * n_chunks + k], e_hi, eb):
                    for u in range(eb):
                        code = codes[e0 + u] if e0 + u < e_hi else codes[e0]
                        planes[u] = ((code >> 32) - c0) * plane_size
                        f = code & 0xFFFFFFFF
                        for ky in range(kh):
                            for kx in range(kw):
                                weight = w[f, kh - 1 - ky, kw - 1 - kx] if flip else w[f, ky, kx]
                                wl[u * kk + ky * kw + kx] = weight if e0 + u < e_hi else zero
                    for u in range(eb):
                        for nb in range(nb_):
                            for ry in range(ry_):
                                for ky in range(kh):
                                    for kx in range(kw):
                                        acc[nb * ry_ + ry] += wl[u * kk + ky * kw + kx] * stage[
                                            nb * image_size + planes[u]
                                            + ((srow * ry_ + ry) * sh + ky * dh) * hw_ + col * sw + kx * dw]
                for nb in range(nb_):
                    b = b0 + nb
                    for ry in range(ry_):
                        oy = oy0 + ry
                        if b < n_img and oy < h_out and ox < w_out:
                            out[b, r, oy, ox] = acc[nb * ry_ + ry]

    return kernel


def gather_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    i64 = types.Array(types.int64, 1, "C")
    return (types.Array(nty, 4, "C"), types.Array(nty, 3, "C"), i64, i64,
            types.Array(nty, 1, "C"), types.Array(nty, 4, "C"))


@functools.lru_cache(maxsize=None)
def gather_kernel(dtype, geom, tile, has_bias):
    return Kernel(gather_source(dtype, geom, tile, has_bias), gather_signature(dtype))


def launch_gather(src, w3, codes, seg, bias, out, geom, tile, groups, stream):
    """Run the gather kernel on the grid the plan implies; bias None allowed."""
    b, _, ho, wo = out.shape
    kernel = gather_kernel(np.dtype(src.dtype), geom, tile, bias is not None)
    grid = gather_grid(tile, (ho, wo), b, groups)
    kernel(grid, THREADS, stream, src, w3, codes, seg, dummy(src.dtype) if bias is None else bias, out)
