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
src/kernels/winograd_impl.h);
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

The module is one extension built from the files included at the bottom, by what they hold:
declarations (the C kernels), settings (every tunable), geometry (scratch, term blocking),
terms (argument checks, term lists and their caches, weight layouts), planes (where taps
read, tiling), drivers (the OpenMP regions), columns (the columns path), then the entry
points by op: xconv2d_fwd (its plans), xconv2d_bwd (grad_input, grad_weight, grad_bias),
xlinear.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int32_t, int64_t, uintptr_t

import functools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
cimport numpy as cnp

cnp.import_array()

from xkern.backends import _checks, _graphs

from _openmp_helpers cimport XK_OPENMP_ENABLED, xk_omp_max_threads

include "cpu/declarations.pxi"
include "cpu/settings.pxi"
include "cpu/geometry.pxi"
include "cpu/terms.pxi"
include "cpu/planes.pxi"
include "cpu/drivers.pxi"
include "cpu/columns.pxi"
include "cpu/xconv2d_fwd.pxi"
include "cpu/xconv2d_bwd.pxi"
include "cpu/xlinear.pxi"
