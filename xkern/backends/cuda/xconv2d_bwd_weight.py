"""CUDA grad_weight of xconv2d, deterministic: per-block partials, then a fixed-order sum.

The partials come from the staged kernels (_staged.wgrad_partials) where a tile of every
input channel fits in shared memory, else from the edge-major kernel below.

    grad_w[v, i, ky, kx] = sum_{b, y, x} grad_out[b, v, y, x]
                           * x[b, index[v, i], y*s + ky*d - p, x*s + kx*d - p]

Edge-major: warp w of block (j, s) owns edge e = j*WARPS + w of the reverse
adjacency (edges grouped by input channel, so a block's warps mostly read the
same x planes and share them in L1) and batch slice s.  Its lanes walk the
output image in strips (coalesced along x), each accumulating kh*kw tap sums
for ry rows; the block then sums its lanes in shared memory in lane order and
writes partial[s, v*D + i, :].  A second kernel adds the slices in order
s = 0, 1, ...  No atomics: the result is bitwise reproducible.
"""
import functools
import math

import numba
import numpy as np
from numba import cuda, types

from .. import _checks
from . import _interop, _plan, _staged
from ._plan import THREADS, WARP, WARPS

REDUCE_THREADS = 256


def xconv2d_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation):
    """grad_out (B, Cout, Ho, Wo), x (B, Cin, H, W), index (Cout, D) host int64,
    grad_weight (Cout, D, kh, kw) written in full (zeros for an empty batch)."""
    gw = _interop.device_view(grad_weight)
    _checks.check_index_array(index)
    _checks.check_conv(x.shape, gw.shape, index.shape, grad_out.shape, stride, padding, dilation,
                       ("x", "grad_weight", "grad_out"))
    _checks.check_dtypes("x", x, grad_out=grad_out, grad_weight=gw)
    n_out, degree, kh, kw = gw.shape
    n_img, n_in = x.shape[:2]
    n_edges = n_out * degree
    geom = _plan.Geometry(kh, kw, *stride, *dilation, *padding)
    stream = x.stream
    dtype = np.dtype(x.dtype)
    partial = None
    if n_img > 0:
        partial = _staged.wgrad_partials(grad_out, x, index, geom, _plan.graph_key(index), stream)
    if partial is None:
        edges = _plan.weight_edges(index, n_in)
        tile, slices = _plan.plan_strips(tuple(grad_out.shape[2:]), n_edges, n_img, _interop.sm_count())
        (partial,) = _interop.workspace.take(stream, "grad_weight", [((slices, n_edges, kh * kw), dtype)])
        kernel = partial_kernel(dtype, geom, tile)
        kernel((math.ceil(n_edges / WARPS), slices), THREADS, stream, grad_out, x, edges, partial)
    slices = partial.shape[0]
    flat = gw.reshape(n_edges * kh * kw)
    sum_slices = sum_kernel(dtype)
    sum_slices(math.ceil(flat.shape[0] / REDUCE_THREADS), REDUCE_THREADS, stream,
               partial.reshape(slices, n_edges * kh * kw), flat)


def partial_source(dtype, geom, tile):
    """kernel(g (B, Cout, Ho, Wo), x (B, Cin, H, W), edges (E, 3) int64 rows (u, v, f),
    partial (S, E, kh*kw))."""
    kh, kw, sh, sw, dh, dw, ph, pw, _ = geom
    ry_, tw_ = tile
    th_ = tile.th
    kk = kh * kw
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    rows_in = (ry_ - 1) * sh + (kh - 1) * dh + 1
    lanes_padded = WARP + 1  # conflict-free sums down the lane axis

    def kernel(g, x, edges, partial):
        lanes = cuda.shared.array((WARPS, kk, lanes_padded), nty)
        acc = cuda.local.array(kk, nty)
        gv = cuda.local.array(ry_, nty)
        tid = cuda.threadIdx.x
        lane = tid % WARP
        warp = tid // WARP
        n_edges = edges.shape[0]
        n_img, h_out, w_out = g.shape[0], g.shape[2], g.shape[3]
        height, width = x.shape[2], x.shape[3]
        s = cuda.blockIdx.y
        per_slice = (n_img + cuda.gridDim.y - 1) // cuda.gridDim.y
        b_lo = s * per_slice
        b_hi = min(n_img, b_lo + per_slice)
        e = cuda.blockIdx.x * WARPS + warp
        for a in range(kk):
            acc[a] = zero
        if e < n_edges:
            u = edges[e, 0]
            v = edges[e, 1]
            col = lane % tw_
            srow = lane // tw_
            for b in range(b_lo, b_hi):
                for ty0 in range(0, h_out, th_):
                    oy0 = ty0 + srow * ry_
                    for tx0 in range(0, w_out, tw_):
                        ox = tx0 + col
                        for ry in range(ry_):
                            oy = oy0 + ry
                            gv[ry] = g[b, v, oy, ox] if oy < h_out and ox < w_out else zero
                        for kx in range(kw):
                            ix = ox * sw + kx * dw - pw
                            inside = 0 <= ix < width
                            # Input row oy0*sh - ph + j feeds every (ry, ky) with
                            # ry*sh + ky*dh == j: load it once for all of them.
                            for j in range(rows_in):
                                iy = oy0 * sh - ph + j
                                value = x[b, u, iy, ix] if inside and 0 <= iy < height else zero
                                for ry in range(ry_):
                                    for ky in range(kh):
                                        if ry * sh + ky * dh == j:
                                            acc[ky * kw + kx] += gv[ry] * value
        for a in range(kk):
            lanes[warp, a, lane] = acc[a]
        cuda.syncthreads()
        if tid < WARPS * kk:
            w = tid // kk
            a = tid % kk
            e = cuda.blockIdx.x * WARPS + w
            if e < n_edges:
                total = zero
                for i in range(WARP):
                    total += lanes[w, a, i]
                partial[s, edges[e, 2], a] = total

    return kernel


def partial_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    return (types.Array(nty, 4, "C"), types.Array(nty, 4, "C"), types.Array(types.int64, 2, "C"),
            types.Array(nty, 3, "C"))


@functools.lru_cache(maxsize=None)
def partial_kernel(dtype, geom, tile):
    return _interop.Kernel(partial_source(dtype, geom, tile), partial_signature(dtype))


def sum_source(dtype):
    """kernel(partial (S, N), out (N,)): out[n] = sum_s partial[s, n], s ascending."""
    zero = np.dtype(dtype).type(0)

    def kernel(partial, out):
        n = cuda.blockIdx.x * REDUCE_THREADS + cuda.threadIdx.x
        if n < out.shape[0]:
            total = zero
            for s in range(partial.shape[0]):
                total += partial[s, n]
            out[n] = total

    return kernel


def sum_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    return (types.Array(nty, 2, "C"), types.Array(nty, 1, "C"))


@functools.lru_cache(maxsize=None)
def sum_kernel(dtype):
    return _interop.Kernel(sum_source(dtype), sum_signature(dtype))
