"""1x1, stride-1, unpadded convolutions (and X-Linear) with pixels as one flat axis.

The pixels of all images form one axis p = b*HW + q.  A block stages a tile of
PIX = 128*nv consecutive pixels of every input channel in dynamic shared memory,
stage[c*stride + j] = src[b, c, q] for p = p0 + j, zeros past the end, once.

gather (forward, and grad_input over the reverse graph):

    out[b, r*g + k, q] = bias[r*g + k] + sum_{e in edges(r)} w[wrow[e] + k*wstep] * stage[offs[e] + j]

Warp w takes rows r = rows[z + Z*(w + W*n)] (z the row group, longest rows first when
`rows` sorts them so); lane l the pixels j = 4l + 128m, m < nv, read as float4.  The
warp loads 32 edges' offsets and weights at once, one per lane, and broadcasts them
by shuffles: the hot loop per edge is one `ld.shared.v4` per pixel vector and 4*g*nv
FMAs, so 1/g words per FMA (g outputs share each index row: block expanders).

wgrad (grad_weight partials): thread t owns k_ edges of one row, (r, i0..i0+k_-1),
and the g outputs r*g..r*g+g-1 sharing them; for each staged pixel quad it loads
g*4 values of grad_out and, per edge, one float4 of x:

    partial[s, (r*g + k)*D + i] = sum over slice s's pixels of grad_out[b, r*g + k, q] * x[b, index[r*g, i], q]

(4g + 4k_) words per 4*g*k_ FMAs.  Slices are fixed ranges of tiles; their sum is
taken later in a fixed order (no atomics).
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._intrinsics import broadcast, device_function, load4
from ._launch import I32, IPTR, PTR, RawKernel
from ._plan import THREADS, WARP, WARPS

def stage_tile(stage, src, p0, n_pix, hw, n_chan, pix, stride, tid, zero):
    """stage[c*stride + j] = src[b, c, q] of pixel p0 + j (zero past n_pix)."""
    for t in range(tid, n_chan * pix, THREADS):
        c = t // pix
        j = t - c * pix
        p = p0 + j
        value = zero
        if p < n_pix:
            b = p // hw
            value = src[(b * n_chan + c) * hw + p - b * hw]
        stage[c * stride + j] = value


def gather_source(dtype, g, nv, has_bias):
    """kernel(src, w, offs, wrow, seg, rows, bias, out, n_pix, hw, n_chan, n_rows, wstep)."""
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    pix = WARP * 4 * nv
    n_acc = g * nv * 4
    stage_tile_d = device_function(stage_tile)

    def kernel(src, w, offs, wrow, seg, rows, bias, out, n_pix, hw, n_chan, n_rows, wstep):
        stage = cuda.shared.array(0, nty)
        acc = cuda.local.array(n_acc, nty)
        wk = cuda.local.array(g, nty)
        mine = cuda.local.array(g, nty)
        tid = cuda.threadIdx.x
        lane = tid % WARP
        warp = tid // WARP
        p0 = cuda.blockIdx.x * pix
        stage_tile_d(stage, src, p0, n_pix, hw, n_chan, pix, pix, tid, zero)
        cuda.syncthreads()
        groups = cuda.gridDim.y
        for jr in range(cuda.blockIdx.y + groups * warp, n_rows, groups * WARPS):
            r = rows[jr]
            for k in range(g):
                for a in range(nv * 4):
                    acc[k * nv * 4 + a] = bias[r * g + k] if has_bias else zero
            e_hi = seg[r + 1]
            for e0 in range(seg[r], e_hi, WARP):
                # one edge per lane, then broadcast: no load waits on another per edge
                # (lanes past the last edge load it again; nobody reads theirs)
                e = min(e0 + lane, e_hi - 1)
                my_off = offs[e]  # int32: one shuffle each
                base = wrow[e]
                for k in range(g):
                    mine[k] = w[base + k * wstep]
                for u in range(min(WARP, e_hi - e0)):
                    off = broadcast(my_off, u, offs, e0 + u) + lane * 4
                    for k in range(g):
                        wk[k] = broadcast(mine[k], u, w, wrow[e0 + u] + k * wstep)
                    for m in range(nv):
                        x0, x1, x2, x3 = load4(stage, off + m * WARP * 4)
                        for k in range(g):
                            a = (k * nv + m) * 4
                            acc[a] += wk[k] * x0
                            acc[a + 1] += wk[k] * x1
                            acc[a + 2] += wk[k] * x2
                            acc[a + 3] += wk[k] * x3
            for m in range(nv):
                for c in range(4):
                    p = p0 + m * WARP * 4 + lane * 4 + c
                    if p < n_pix:
                        b = p // hw
                        q = p - b * hw
                        for k in range(g):
                            out[(b * n_rows * g + r * g + k) * hw + q] = acc[(k * nv + m) * 4 + c]

    return kernel


GATHER_KINDS = (PTR, PTR, IPTR, IPTR, IPTR, IPTR, PTR, PTR, I32, I32, I32, I32, I32)


@functools.lru_cache(maxsize=None)
def gather_kernel(dtype, g, nv, has_bias):
    return RawKernel(gather_source(dtype, g, nv, has_bias), GATHER_KINDS, dtype)


def wgrad_source(dtype, g, k_, pix):
    """kernel(x, gout, offs, partial, n_pix, hw, n_chan, n_rows, degree, tiles_per_slice)."""
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    stride = pix + 4  # channel stride in words: threads read different channels, spread the banks
    n_acc, n_go = g * k_, g * 4
    stage_tile_d = device_function(stage_tile)

    def kernel(x, gout, offs, partial, n_pix, hw, n_chan, n_rows, degree, tiles_per_slice):
        stage = cuda.shared.array(0, nty)
        acc = cuda.local.array(n_acc, nty)
        go = cuda.local.array(n_go, nty)
        off = cuda.local.array(k_, numba.int32)
        tid = cuda.threadIdx.x
        per_row = (degree + k_ - 1) // k_
        eg = cuda.blockIdx.x * THREADS + tid
        r = eg // per_row
        i0 = (eg - r * per_row) * k_
        active = r < n_rows
        for a in range(n_acc):
            acc[a] = zero
        for k in range(k_):
            off[k] = offs[r * degree + i0 + k] if active and i0 + k < degree else 0
        t_lo = cuda.blockIdx.y * tiles_per_slice
        for tile in range(t_lo, t_lo + tiles_per_slice):
            p0 = tile * pix
            cuda.syncthreads()  # the previous tile's readers are done
            stage_tile_d(stage, x, p0, n_pix, hw, n_chan, pix, stride, tid, zero)
            cuda.syncthreads()
            if active:
                for j in range(0, pix, 4):
                    for c in range(4):
                        p = p0 + j + c
                        b = p // hw
                        for k in range(g):
                            go[k * 4 + c] = gout[(b * n_rows * g + r * g + k) * hw + p - b * hw] \
                                if p < n_pix else zero
                    for kk in range(k_):
                        x0, x1, x2, x3 = load4(stage, off[kk] + j)
                        for k in range(g):
                            a = k * k_ + kk
                            acc[a] += go[k * 4] * x0
                            acc[a] += go[k * 4 + 1] * x1
                            acc[a] += go[k * 4 + 2] * x2
                            acc[a] += go[k * 4 + 3] * x3
        if active:
            base = cuda.blockIdx.y * n_rows * g * degree
            for k in range(g):
                for kk in range(k_):
                    if i0 + kk < degree:
                        partial[base + (r * g + k) * degree + i0 + kk] = acc[k * k_ + kk]

    return kernel


WGRAD_KINDS = (PTR, PTR, IPTR, PTR, I32, I32, I32, I32, I32, I32)


@functools.lru_cache(maxsize=None)
def wgrad_kernel(dtype, g, k_, pix):
    return RawKernel(wgrad_source(dtype, g, k_, pix), WGRAD_KINDS, dtype)
