"""CUDA grad_input of xconv2d: a gather over the reverse adjacency, no atomics.

    grad_x[b, u, y, x] = sum_{(v, i): index[v, i] = u} sum_{ky, kx} weight[v, i, ky, kx]
                         * grad_out[b, v, (y + p - ky*d) / s, (x + p - kx*d) / s]

(terms whose division is inexact or lands outside grad_out vanish).  At stride 1
this is the staged gather (_staged; _gather where a tile of every channel does not
fit) with the kernel flipped and padding (k-1)*d - p; other strides use a direct
kernel, one thread per element of grad_x.
"""
import functools
import math

import numba
import numpy as np
from numba import cuda, types

from .. import _checks
from . import _interop, _plan, _staged
from ._gather import launch_gather

STRIDED_THREADS = 128


def xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, stride, padding, dilation):
    """grad_out (B, Cout, Ho, Wo), weight (Cout, D, kh, kw), index (Cout, D) and its
    ReverseAdjacency rev (host), grad_x (B, Cin, H, W) written in full."""
    gx = _interop.device_view(grad_x)
    _checks.check_index_array(index)
    _checks.check_conv(gx.shape, weight.shape, index.shape, grad_out.shape, stride, padding, dilation,
                       ("grad_x", "weight", "grad_out"))
    _checks.check_dtypes("grad_out", grad_out, weight=weight, grad_x=gx)
    n_img, n_out, h_out, w_out = grad_out.shape
    _, degree, kh, kw = weight.shape
    w3 = weight.reshape(n_out * degree, kh, kw)
    n_in, height, width = gx.shape[1:]
    if stride == (1, 1):
        geom = _staged.grad_input_geometry(_plan.Geometry(kh, kw, 1, 1, *dilation, *padding))
        if _staged.gather(grad_out, weight.reshape(weight.size), index, rev, None, gx, geom,
                          _plan.graph_key(index), grad_out.stream):
            return
        tile, groups = _plan.plan_gather(geom, n_out, (height, width), n_img, n_in, degree,
                                         np.dtype(grad_out.dtype).itemsize, _interop.sm_count())
        codes, seg = _plan.reverse_tables(index, rev, n_in, n_out, tile.ch)
        launch_gather(grad_out, w3, codes, seg, None, gx, geom, tile, groups, grad_out.stream)
        return
    geom = _plan.Geometry(kh, kw, *stride, *dilation, *padding)
    codes, seg = _plan.reverse_tables(index, rev, n_in, n_out, n_out)
    kernel = strided_kernel(np.dtype(grad_out.dtype), geom)
    grid = (math.ceil(height * width / STRIDED_THREADS), n_in, n_img)
    kernel(grid, STRIDED_THREADS, grad_out.stream, grad_out, w3, codes, seg, gx)


def strided_source(dtype, geom):
    """kernel(g (B, Cout, Ho, Wo), w (E, kh, kw), codes, seg (Cin+1,), grad_x (B, Cin, H, W))."""
    kh, kw, sh, sw, dh, dw, ph, pw, _ = geom
    zero = np.dtype(dtype).type(0)

    def kernel(g, w, codes, seg, grad_x):
        p = cuda.blockIdx.x * STRIDED_THREADS + cuda.threadIdx.x
        u = cuda.blockIdx.y
        b = cuda.blockIdx.z
        height, width = grad_x.shape[2], grad_x.shape[3]
        h_out, w_out = g.shape[2], g.shape[3]
        if p >= height * width:
            return
        y = p // width
        x = p % width
        acc = zero
        for e in range(seg[u], seg[u + 1]):
            code = codes[e]
            v = code >> 32
            f = code & 0xFFFFFFFF
            for ky in range(kh):
                ty = y + ph - ky * dh
                gy = ty // sh
                if ty >= 0 and ty - gy * sh == 0 and gy < h_out:
                    for kx in range(kw):
                        tx = x + pw - kx * dw
                        gx = tx // sw
                        if tx >= 0 and tx - gx * sw == 0 and gx < w_out:
                            acc += w[f, ky, kx] * g[b, v, gy, gx]
        grad_x[b, u, y, x] = acc

    return kernel


def strided_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    i64 = types.Array(types.int64, 1, "C")
    return (types.Array(nty, 4, "C"), types.Array(nty, 3, "C"), i64, i64, types.Array(nty, 4, "C"))


@functools.lru_cache(maxsize=None)
def strided_kernel(dtype, geom):
    return _interop.Kernel(strided_source(dtype, geom), strided_signature(dtype))
