"""A tiled 2-D transpose, for running X-Linear on the convolution kernels."""
import functools
import math

import numba
import numpy as np
from numba import cuda, types

from ._interop import SIMULATOR, Kernel

TILE = 32
ROWS = 2 if SIMULATOR else 8  # thread rows per tile, each copying TILE / ROWS rows (few in the simulator)


def transpose(a, out, stream):
    """out (N, M) = a (M, N)^T."""
    m, n = a.shape
    if m == 0 or n == 0:
        return
    transpose_kernel(np.dtype(a.dtype))((math.ceil(n / TILE), math.ceil(m / TILE)), (TILE, ROWS), stream, a, out)


def transpose_source(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    padded = TILE + 1  # the extra column keeps the transposed reads free of bank conflicts

    def kernel(a, out):
        # Through shared memory so both the read of a and the write of out are
        # coalesced.
        tile = cuda.shared.array((TILE, padded), nty)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        col = cuda.blockIdx.x * TILE + tx
        for r in range(ty, TILE, ROWS):
            row = cuda.blockIdx.y * TILE + r
            if row < a.shape[0] and col < a.shape[1]:
                tile[r, tx] = a[row, col]
        cuda.syncthreads()
        col = cuda.blockIdx.y * TILE + tx
        for r in range(ty, TILE, ROWS):
            row = cuda.blockIdx.x * TILE + r
            if row < out.shape[0] and col < out.shape[1]:
                out[row, col] = tile[tx, r]

    return kernel


def transpose_signature(dtype):
    nty = numba.from_dtype(np.dtype(dtype))
    return (types.Array(nty, 2, "C"), types.Array(nty, 2, "C"))


@functools.lru_cache(maxsize=None)
def transpose_kernel(dtype):
    return Kernel(transpose_source(dtype), transpose_signature(dtype))
