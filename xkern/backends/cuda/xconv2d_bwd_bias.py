"""CUDA grad_bias: grad_bias[v] = sum_{b, pixels} grad_out[b, v, pixels], in a fixed order.

One block per channel v: thread t sums elements t, t + BIAS_THREADS, ... of the
(B, pixels) plane into UNROLL running sums (so that many loads are in flight),
adds them in order, then a shared-memory tree halves the partials; no atomics.
"""
import functools

import numba
import numpy as np
from numba import cuda, types

from .. import _checks
from . import _interop

BIAS_THREADS = 32 if _interop.SIMULATOR else 256  # a power of two (tree sum); few in the simulator
UNROLL = 4  # independent partial sums per thread: loads in flight, fixed order


def xconv2d_bwd_bias(grad_out, grad_bias):
    """grad_out (B, Cout, Ho, Wo), grad_bias (Cout,) written in full."""
    gb = _interop.device_view(grad_bias)
    n_img, n_out = grad_out.shape[:2]
    _checks.check_length("grad_bias", gb, n_out, "grad_out's channels")
    _checks.check_dtypes("grad_out", grad_out, grad_bias=gb)
    pixels = int(np.prod(grad_out.shape[2:], dtype=np.int64))
    launch_bias(grad_out.reshape(n_img, n_out, pixels), gb, grad_out.stream)


def launch_bias(g3, grad_bias, stream):
    """g3 (B, Cout, P) -> grad_bias (Cout,)."""
    kernel = bias_kernel(np.dtype(g3.dtype))
    kernel(g3.shape[1], BIAS_THREADS, stream, g3, grad_bias)


def bias_source(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)

    def kernel(g, grad_bias):
        part = cuda.shared.array(BIAS_THREADS, nty)
        sums = cuda.local.array(UNROLL, nty)
        t = cuda.threadIdx.x
        v = cuda.blockIdx.x
        pixels = g.shape[2]
        count = g.shape[0] * pixels
        for u in range(UNROLL):
            sums[u] = zero
        for n0 in range(t, count, BIAS_THREADS * UNROLL):
            for u in range(UNROLL):
                n = n0 + u * BIAS_THREADS
                if n < count:
                    sums[u] += g[n // pixels, v, n % pixels]
        total = zero
        for u in range(UNROLL):
            total += sums[u]
        part[t] = total
        half = BIAS_THREADS // 2
        while half > 0:
            cuda.syncthreads()
            if t < half:
                part[t] += part[t + half]
            half //= 2
        if t == 0:
            grad_bias[v] = part[0]

    return kernel


def bias_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    return (types.Array(nty, 3, "C"), types.Array(nty, 1, "C"))


@functools.lru_cache(maxsize=None)
def bias_kernel(dtype):
    return _interop.Kernel(bias_source(dtype), bias_signature(dtype))
