"""Host-side planning: tile shapes, grids and the graph tables the kernels walk.

Tile sizes are compile-time constants of the kernels (shared arrays need static
shapes), so each distinct plan compiles once and is cached by the factories.
"""
import functools
import math
from typing import NamedTuple

import numpy as np

from .. import _checks
from . import _interop

WARP = 32
# Warps per block of the tiled kernels (256 threads).  The simulator runs every
# thread as a Python thread, so it gets 2: the kernels are generic in WARPS.
WARPS = 2 if _interop.SIMULATOR else 8
THREADS = WARP * WARPS
SMEM_BYTES = 48 * 1024          # static shared memory a block may use on every CUDA GPU
TILE_WIDTHS = (8, 16, 32)       # output columns per tile; a warp covers 32 // TW rows of strips
STRIP_ROWS = (1, 2, 4)          # output rows each thread accumulates (register blocking)
BATCH_TILES = (1, 2, 4)         # images per block sharing every index/weight load
BLOCKS_PER_SM = 4               # enough resident blocks to hide latency at 48 KiB each
MIN_ROWS_PER_WARP = 2           # split output channels over blocks only down to this
BARRIER_COST = 64               # a block-wide barrier, in load/store instructions (planner estimate)


class Geometry(NamedTuple):
    """A convolution's taps; flip reads the kernel rotated by 180 degrees (grad_input)."""
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    ph: int
    pw: int
    flip: bool = False


class GatherTile(NamedTuple):
    """A block's work in the tiled gather kernel: nb images x (ry*32/tw rows x tw columns),
    with ch input channels staged in shared memory at a time."""
    nb: int
    ry: int
    tw: int
    ch: int

    @property
    def th(self):
        return self.ry * WARP // self.tw


def halo(geom, th, tw):
    """Rows and columns of input a th x tw output tile reads."""
    return ((th - 1) * geom.sh + (geom.kh - 1) * geom.dh + 1,
            (tw - 1) * geom.sw + (geom.kw - 1) * geom.dw + 1)


def _waste(size, step):
    """Work done over work needed when size is covered in steps (1 for an empty size)."""
    return math.ceil(size / step) * step / size if size > 0 else 1.0


@functools.lru_cache(maxsize=1024)
def plan_gather(geom, n_chan, out_hw, batch, n_rows, degree, itemsize, n_sm):
    """(GatherTile, row_groups) for a tiled gather over n_chan staged channels.

    Picks the tile with the fewest estimated load/store instructions over the
    whole grid (the pipe these kernels are bound by): staging the halo once per
    channel chunk and row group, two barriers per chunk, and per output row its
    index, weight and shared-memory loads per edge, plus the read-modify-write of
    the outputs when the channels do not fit in one chunk.  Partial tiles count in
    full; a grid too small to fill the GPU counts as if it did.
    """
    ho, wo = out_hw
    kk = geom.kh * geom.kw
    best = None
    for tw in TILE_WIDTHS:
        for ry in STRIP_ROWS:
            th = ry * WARP // tw
            hh, hw = halo(geom, th, tw)
            rows_in = (ry - 1) * geom.sh + (geom.kh - 1) * geom.dh + 1
            for nb in BATCH_TILES:
                if nb > 1 and nb > batch:
                    continue
                ch = min(n_chan, SMEM_BYTES // (nb * hh * hw * itemsize))
                if ch < 1:
                    continue
                n_chunks = math.ceil(n_chan / ch)
                base = math.ceil(ho / th) * math.ceil(wo / tw) * math.ceil(max(batch, 1) / nb)
                groups = max(1, min(math.ceil(BLOCKS_PER_SM * n_sm / base),
                                    n_rows // (WARPS * MIN_ROWS_PER_WARP)))
                blocks = base * groups
                stage = n_chunks * (2 * math.ceil(nb * ch * hh * hw / WARP) + 2 * BARRIER_COST)
                per_row = (n_chunks * (2 + nb * ry * (2 if n_chunks > 1 else 1))
                           + degree * (1 + kk + nb * geom.kw * rows_in))
                cost = blocks * (stage + math.ceil(n_rows / groups) * per_row)
                cost *= max(1.0, 2 * n_sm / blocks)
                if best is None or cost < best[0]:
                    best = (cost, GatherTile(nb, ry, tw, ch), groups)
    if best is None:
        raise ValueError(f"the kernel footprint {(geom.kh, geom.kw)} with dilation {(geom.dh, geom.dw)} "
                         f"and stride {(geom.sh, geom.sw)} is too large for the CUDA backend's "
                         f"{SMEM_BYTES}-byte shared-memory tile")
    return best[1], best[2]


def gather_grid(tile, out_hw, batch, groups):
    ho, wo = out_hw
    return (math.ceil(ho / tile.th) * math.ceil(wo / tile.tw), math.ceil(batch / tile.nb), groups)


class StripTile(NamedTuple):
    """Output pixels a warp visits per step in the edge-major grad_weight kernel."""
    ry: int
    tw: int

    @property
    def th(self):
        return self.ry * WARP // self.tw


@functools.lru_cache(maxsize=1024)
def plan_strips(out_hw, n_edges, batch, n_sm):
    """(StripTile, batch_slices) for grad_weight: least padding, then most rows per thread."""
    ho, wo = out_hw
    tile = min((StripTile(ry, tw) for tw in TILE_WIDTHS for ry in STRIP_ROWS),
               key=lambda t: (_waste(ho, t.th) * _waste(wo, t.tw), -t.ry))
    edge_blocks = math.ceil(n_edges / WARPS)
    slices = max(1, min(max(batch, 1), math.ceil(BLOCKS_PER_SM * n_sm / edge_blocks)))
    return tile, slices


def _gather_tables(row, chan, weight_row, n_rows, n_chan, ch):
    """codes and seg for edges sorted by (row, chan).

    codes[e] = chan << 32 | weight_row; the edges of row r whose channel lies in
    chunk k (chan // ch == k) are codes[seg[r * n_chunks + k]:seg[r * n_chunks + k + 1]].
    """
    n_chunks = math.ceil(n_chan / ch)
    counts = np.bincount(row * n_chunks + chan // ch, minlength=n_rows * n_chunks)
    seg = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=seg[1:])
    codes = (chan.astype(np.int64) << 32) | weight_row.astype(np.int64)
    return codes, seg


_tables = _interop.DeviceCache()


def forward_tables(index, n_in, ch):
    """Device (codes, seg) over output rows v, channels u = index[v, i], weight rows v*D + i;
    index checked against the n_in input channels when they are built."""
    def build():
        _checks.check_index(index, n_in)
        n_out, degree = index.shape
        order = np.argsort(index, axis=1, kind="stable")
        chan = np.take_along_axis(index, order, axis=1).ravel()
        row = np.repeat(np.arange(n_out, dtype=np.int64), degree)
        weight_row = (np.arange(n_out, dtype=np.int64)[:, None] * degree + order).ravel()
        return _gather_tables(row, chan, weight_row, n_out, n_in, ch)
    key = ("fwd", _interop.device_id(), n_in, ch, _interop.content_key(index))
    return _tables.get(key, build)


def reverse_tables(index, rev, n_in, n_out, ch):
    """Device (codes, seg) over input rows u < n_in, channels v, weight rows e = v*D + i (from
    rev); index and rev checked when they are built (a later call with the same index
    reuses them and does not read rev)."""
    def build():
        _checks.check_index(index, n_in)
        _checks.check_reverse(index, rev, n_in)
        degree = index.shape[1]
        row = np.repeat(np.arange(n_in, dtype=np.int64), np.diff(rev.ptr))
        chan = rev.edge // degree
        return _gather_tables(row, chan, rev.edge, n_in, n_out, ch)
    key = ("rev", _interop.device_id(), n_in, n_out, ch, _interop.content_key(index))
    return _tables.get(key, build)


def weight_edges(index, n_in):
    """Device (E, 3) int64 table of (u, v, v*D + i), grouped by input channel u < n_in
    (index checked when it is built)."""
    def build():
        _checks.check_index(index, n_in)
        degree = index.shape[1]
        flat = index.ravel()
        edge = np.argsort(flat, kind="stable").astype(np.int64)
        return (np.stack([flat[edge], edge // degree, edge], axis=1),)
    key = ("edges", _interop.device_id(), n_in, _interop.content_key(index))
    return _tables.get(key, build)[0]
