"""k x k convolutions on image tiles: every input channel of a tile's halo staged once.

A block owns one image and a (ty*ry) x (tx*rx) tile of outputs.  It stages the tile's
halo of every staged channel in dynamic shared memory, zero outside the image, so the
inner loops have no bounds checks:

    stage[c*plane + hy*hw + hx] = src[b, c, ty0*sh - ph + hy, tx0*sw - pw + hx]

Thread t is pixel thread p = t % (ty*tx) (an ry x rx register tile) of row slot
t // (ty*tx).

gather (forward; grad_input at stride 1 with the taps flipped and padding (k-1)*d - p):

    out[b, r*g + k, y, x] = bias + sum_{e in edges(r)} sum_{ky, kx}
                            w[(wrow[e] + k*wstep)*kh*kw + tap] * stage[offs[e] + window(y, x, ky, kx)]

Per edge a thread loads its input window ((ry-1)*sh + (kh-1)*dh + 1 rows, likewise
columns) into registers once, and each of the g*kh*kw weights once: a 4x4 tile of a
3x3 conv reads 36 staged words and 9 weights for 144 FMAs, and g outputs sharing
the index row (block expanders) multiply that reuse by g.

wgrad (grad_weight partials): thread t owns edge (r, i) and its g outputs; for every
ry x rx sub-tile of every tile in its slice it loads g*ry*rx values of grad_out and
the input window, and adds into g*kh*kw sums:

    partial[s, ((r*g + k)*D + i)*kh*kw + tap] = sum over slice s of grad_out * x (shifted by tap)

A slice is a fixed range of (image, tile) pairs; slices are summed later in a fixed
order (no atomics).
"""
import functools

import numba
import numpy as np
from numba import cuda

from ._intrinsics import device_function
from ._launch import I32, IPTR, PTR, RawKernel
from ._plan import THREADS, halo


def _constants(geom, tile):
    kh, kw, sh, sw, dh, dw, ph, pw, flip = geom
    hh, hw = halo(geom, tile.ty * tile.ry, tile.tx * tile.rx)
    rows_in = (tile.ry - 1) * sh + (kh - 1) * dh + 1
    cols_in = (tile.rx - 1) * sw + (kw - 1) * dw + 1
    return hh, hw, rows_in, cols_in


def stage_halo(stage, src, b, n_chan, height, width, iy0, ix0, hh, hw, tid, zero):
    """stage[c, hy, hx] = src[b, c, iy0 + hy, ix0 + hx], zero outside the image."""
    plane = hh * hw
    for t in range(tid, n_chan * plane, THREADS):
        c = t // plane
        s = t - c * plane
        hy = s // hw
        iy = iy0 + hy
        ix = ix0 + s - hy * hw
        value = zero
        if 0 <= iy < height and 0 <= ix < width:
            value = src[((b * n_chan + c) * height + iy) * width + ix]
        stage[t] = value


def gather_source(dtype, geom, tile, has_bias):
    """kernel(src, w, offs, wrow, seg, rows, bias, out, n_chan, height, width, h_out, w_out,
    n_rows, wstep, tiles_x)."""
    kh, kw, sh, sw, dh, dw, ph, pw, flip = geom
    g, ry_, rx_, ty_, tx_ = tile
    hh, hw, rows_in, cols_in = _constants(geom, tile)
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    kk = kh * kw
    n_pix = ty_ * tx_
    slots = THREADS // n_pix
    n_acc, n_win, n_w = g * ry_ * rx_, rows_in * cols_in, g * kk
    stage_halo_d = device_function(stage_halo)

    def kernel(src, w, offs, wrow, seg, rows, bias, out, n_chan, height, width, h_out, w_out,
               n_rows, wstep, tiles_x):
        stage = cuda.shared.array(0, nty)
        acc = cuda.local.array(n_acc, nty)
        win = cuda.local.array(n_win, nty)
        wl = cuda.local.array(n_w, nty)
        tid = cuda.threadIdx.x
        b = cuda.blockIdx.y
        oy0 = (cuda.blockIdx.x // tiles_x) * (ty_ * ry_)
        ox0 = (cuda.blockIdx.x % tiles_x) * (tx_ * rx_)
        stage_halo_d(stage, src, b, n_chan, height, width, oy0 * sh - ph, ox0 * sw - pw, hh, hw, tid, zero)
        cuda.syncthreads()
        slot = tid // n_pix
        if slot >= slots:
            return
        p = tid - slot * n_pix
        sy = p // tx_
        sx = p - sy * tx_
        corner = sy * ry_ * sh * hw + sx * rx_ * sw
        groups = cuda.gridDim.z
        for jr in range(cuda.blockIdx.z + groups * slot, n_rows, groups * slots):
            r = rows[jr]
            for k in range(g):
                for a in range(ry_ * rx_):
                    acc[k * ry_ * rx_ + a] = bias[r * g + k] if has_bias else zero
            e_lo, e_hi = seg[r], seg[r + 1]
            # the next edge's table entries load while this edge's FMAs run: its weight
            # loads need wrow, and they should not wait on a global load of their own
            next_off = offs[e_lo] if e_lo < e_hi else 0
            next_f = wrow[e_lo] if e_lo < e_hi else 0
            for e in range(e_lo, e_hi):
                base = next_off + corner
                f = next_f
                if e + 1 < e_hi:
                    next_off = offs[e + 1]
                    next_f = wrow[e + 1]
                for j in range(rows_in):
                    for c in range(cols_in):
                        win[j * cols_in + c] = stage[base + j * hw + c]
                for k in range(g):
                    for t in range(kk):
                        wl[k * kk + t] = w[(f + k * wstep) * kk + (kk - 1 - t if flip else t)]
                for k in range(g):
                    for ky in range(kh):
                        for kx in range(kw):
                            weight = wl[k * kk + ky * kw + kx]
                            for y in range(ry_):
                                for x in range(rx_):
                                    acc[(k * ry_ + y) * rx_ + x] += weight * win[
                                        (y * sh + ky * dh) * cols_in + x * sw + kx * dw]
            for y in range(ry_):
                oy = oy0 + sy * ry_ + y
                for x in range(rx_):
                    ox = ox0 + sx * rx_ + x
                    if oy < h_out and ox < w_out:
                        for k in range(g):
                            out[((b * n_rows * g + r * g + k) * h_out + oy) * w_out + ox] = \
                                acc[(k * ry_ + y) * rx_ + x]

    return kernel


GATHER_KINDS = (PTR, PTR, IPTR, IPTR, IPTR, IPTR, PTR, PTR) + (I32,) * 8


@functools.lru_cache(maxsize=None)
def gather_kernel(dtype, geom, tile, has_bias):
    return RawKernel(gather_source(dtype, geom, tile, has_bias), GATHER_KINDS, dtype)


def wgrad_source(dtype, geom, tile):
    """kernel(x, gout, offs, partial, n_img, n_chan, height, width, h_out, w_out, n_rows, degree,
    tiles_x, n_tiles, units_per_slice)."""
    kh, kw, sh, sw, dh, dw, ph, pw, _ = geom
    g, ry_, rx_, ty_, tx_ = tile
    hh, hw, rows_in, cols_in = _constants(geom, tile)
    nty = numba.from_dtype(np.dtype(dtype))
    zero = np.dtype(dtype).type(0)
    kk = kh * kw
    n_acc, n_win, n_go, n_sub = g * kk, rows_in * cols_in, ry_ * rx_, ty_ * tx_
    stage_halo_d = device_function(stage_halo)

    def kernel(x, gout, offs, partial, n_img, n_chan, height, width, h_out, w_out, n_rows, degree,
               tiles_x, n_tiles, units_per_slice):
        stage = cuda.shared.array(0, nty)
        acc = cuda.local.array(n_acc, nty)
        win = cuda.local.array(n_win, nty)
        go = cuda.local.array(n_go, nty)
        tid = cuda.threadIdx.x
        e = cuda.blockIdx.x * THREADS + tid
        r = e // degree
        active = r < n_rows
        off = offs[e] if active else 0
        for a in range(n_acc):
            acc[a] = zero
        u_lo = cuda.blockIdx.y * units_per_slice
        for unit in range(u_lo, min(u_lo + units_per_slice, n_img * n_tiles)):
            b = unit // n_tiles
            t = unit - b * n_tiles
            oy0 = (t // tiles_x) * (ty_ * ry_)
            ox0 = (t % tiles_x) * (tx_ * rx_)
            cuda.syncthreads()  # the previous tile's readers are done
            stage_halo_d(stage, x, b, n_chan, height, width, oy0 * sh - ph, ox0 * sw - pw, hh, hw, tid, zero)
            cuda.syncthreads()
            if active:
                for p in range(n_sub):
                    sy = p // tx_
                    sx = p - sy * tx_
                    base = off + sy * ry_ * sh * hw + sx * rx_ * sw
                    for j in range(rows_in):
                        for c in range(cols_in):
                            win[j * cols_in + c] = stage[base + j * hw + c]
                    for k in range(g):
                        for y in range(ry_):
                            oy = oy0 + sy * ry_ + y
                            for xx in range(rx_):
                                ox = ox0 + sx * rx_ + xx
                                go[y * rx_ + xx] = gout[((b * n_rows * g + r * g + k) * h_out + oy) * w_out + ox] \
                                    if oy < h_out and ox < w_out else zero
                        for ky in range(kh):
                            for kx in range(kw):
                                a = k * kk + ky * kw + kx
                                for y in range(ry_):
                                    for xx in range(rx_):
                                        acc[a] += go[y * rx_ + xx] * win[
                                            (y * sh + ky * dh) * cols_in + xx * sw + kx * dw]
        if active:
            i = e - r * degree
            base = cuda.blockIdx.y * n_rows * g * degree * kk
            for k in range(g):
                for t in range(kk):
                    partial[base + ((r * g + k) * degree + i) * kk + t] = acc[k * kk + t]

    return kernel


WGRAD_KINDS = (PTR, PTR, IPTR, PTR) + (I32,) * 11


@functools.lru_cache(maxsize=None)
def wgrad_kernel(dtype, geom, tile):
    return RawKernel(wgrad_source(dtype, geom, tile), WGRAD_KINDS, dtype)
