"""Host-side planning: tile shapes, grids and the graph tables the kernels walk.

Tile sizes are compile-time constants of the kernels (shared arrays need static
shapes), so each distinct plan compiles once and is cached by the factories.
"""
import functools
import math
import weakref
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


# --- Kernels with every channel staged in dynamic shared memory (_pointwise, _window) ---

SHARED_OPTIN_SM90 = 227 * 1024   # dynamic shared memory one block may opt in to on sm_90
PIXEL_VECTORS = (2, 1)           # float4 pixel vectors per lane in the 1x1 gather (most first)
ACC_BYTES = 128                  # ... while its g*nv*4 accumulators take at most 32 registers
WGRAD_PIXELS = 128               # pixels per staged tile of the 1x1 grad_weight
WGRAD_EDGES = {1: 32, 4: 8, 8: 8}  # edges per thread of the 1x1 grad_weight, by outputs per row ...
WGRAD_ACC_BYTES = 256            # ... while its g*edges accumulators take at most 64 registers
STAGE_COST = 4                   # a staged word (global load + shared store) in FMAs, planner estimate
GRID_FILL = 2                    # blocks per SM a grid should reach before rows are split


def shared_limit():
    """Dynamic shared memory one block may use on the current device (sm_90's in the simulator)."""
    if _interop.SIMULATOR:
        return SHARED_OPTIN_SM90
    key = _interop.device_id()
    limit = _shared_limits.get(key)
    if limit is None:
        from numba import cuda
        limit = _shared_limits[key] = cuda.get_current_device().MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    return limit


_shared_limits = {}


def outputs_per_row(index):
    """g in (8, 4, 1): the largest with every run of g outputs reading one index row."""
    n_out = index.shape[0]
    for g in (8, 4):
        if n_out % g == 0 and n_out > g:
            rows = index.reshape(n_out // g, g, -1)
            if (rows == rows[:, :1]).all():
                return g
    return 1


class PointwiseTile(NamedTuple):
    """The 1x1 gather's block: g outputs per index row, nv float4 pixel vectors per lane."""
    g: int
    nv: int

    @property
    def pixels(self):
        return WARP * 4 * self.nv


@functools.lru_cache(maxsize=1024)
def plan_pointwise(n_chan, n_pix, n_rows, g, itemsize, n_sm, limit):
    """(PointwiseTile, row_groups, shared_bytes) of a 1x1 gather over n_rows index rows, or
    None when one tile of every channel does not fit in limit bytes.  The most pixel vectors
    per lane that fit, keep the accumulators within ACC_BYTES and still give each SM a
    block; rows split over blocks until the grid reaches GRID_FILL blocks per SM (each
    split stages the tile again)."""
    for nv in PIXEL_VECTORS:
        if g * nv * 4 * itemsize > ACC_BYTES and nv > 1:
            continue
        tile = PointwiseTile(g, nv)
        shared = n_chan * tile.pixels * itemsize
        tiles = math.ceil(n_pix / tile.pixels)
        if shared <= limit and (tiles >= n_sm or nv == PIXEL_VECTORS[-1]):
            groups = max(1, min(math.ceil(GRID_FILL * n_sm / tiles), n_rows // WARPS))
            return tile, groups, shared
    return None


class WindowTile(NamedTuple):
    """The k x k kernels' block: g outputs per index row, an ry x rx register tile per
    thread, ty x tx pixel threads."""
    g: int
    ry: int
    rx: int
    ty: int
    tx: int


WINDOW_OUTPUTS = 4  # outputs per row the k x k kernels keep in registers (a g-block graph is a 4-block one)


def window_outputs(g):
    """Outputs per kernel row of the k x k kernels for a graph with g outputs per index row:
    at most WINDOW_OUTPUTS, so that the per-edge loop nest (g*ry*rx*kh*kw FMAs) stays
    small enough for the compiler to unroll into registers."""
    return min(g, WINDOW_OUTPUTS)


def register_tile(g):
    """(ry, rx): 4x4 for one output per row, else 2x4 (g*ry*rx*9 <= 288 FMAs per edge)."""
    return (4, 4) if g == 1 else (2, 4)


@functools.lru_cache(maxsize=1024)
def plan_window(geom, n_chan, out_hw, batch, n_rows, degree, g, itemsize, n_sm, limit):
    """(WindowTile, row_groups, shared_bytes) of a k x k gather, or None when no tile fits.

    Estimated cost in FMA slots: the FMAs of the padded tiles (threads without a full
    set of row slots idle), plus STAGE_COST per staged word, times how short the grid
    falls of filling the GPU."""
    ho, wo = out_hw
    ry, rx = register_tile(g)
    kk = geom.kh * geom.kw
    best = None
    for ty in range(1, 9):
        for tx in range(1, 9):
            n_pix = ty * tx
            if n_pix > THREADS or (ty > 1 and (ty - 1) * ry >= ho) or (tx > 1 and (tx - 1) * rx >= wo):
                continue
            hh, hw = halo(geom, ty * ry, tx * rx)
            shared = n_chan * hh * hw * itemsize
            if shared > limit:
                continue
            slots = THREADS // n_pix
            tiles = math.ceil(ho / (ty * ry)) * math.ceil(wo / (tx * rx))
            base = tiles * batch
            groups = max(1, min(math.ceil(GRID_FILL * n_sm / base), n_rows // slots))
            padded = tiles * ty * ry * tx * rx
            busy = math.ceil(n_rows / (slots * groups)) * slots * groups / n_rows
            cost = (batch * padded * n_rows * g * degree * kk * busy * THREADS / (n_pix * slots)
                    + STAGE_COST * base * groups * shared / itemsize)
            cost *= max(1.0, n_sm / (base * groups))
            if best is None or cost < best[0]:
                best = (cost, WindowTile(g, ry, rx, ty, tx), groups, shared)
    return None if best is None else best[1:]


@functools.lru_cache(maxsize=1024)
def plan_window_wgrad(geom, n_chan, out_hw, batch, n_edges, g, itemsize, n_sm, limit):
    """(WindowTile, units_per_slice, slices, shared_bytes) of the k x k grad_weight: the
    largest tile with the least padding that fits (each tile costs two barriers and a
    staging pass), and (image, tile) units split into slices until the grid reaches
    GRID_FILL blocks per SM."""
    ho, wo = out_hw
    ry, rx = register_tile(g)
    best = None
    for ty in range(1, 9):
        for tx in range(1, 9):
            if (ty > 1 and (ty - 1) * ry >= ho) or (tx > 1 and (tx - 1) * rx >= wo):
                continue
            hh, hw = halo(geom, ty * ry, tx * rx)
            shared = n_chan * hh * hw * itemsize
            if shared > limit:
                continue
            tiles = math.ceil(ho / (ty * ry)) * math.ceil(wo / (tx * rx))
            key = (tiles * ty * ry * tx * rx / max(1, ho * wo), tiles)
            if best is None or key < best[0]:
                best = (key, WindowTile(g, ry, rx, ty, tx), tiles, shared)
    if best is None:
        return None
    _, tile, tiles, shared = best
    blocks = math.ceil(n_edges / THREADS)
    units = batch * tiles
    slices = max(1, min(units, math.ceil(GRID_FILL * n_sm / blocks)))
    per_slice = math.ceil(units / slices)
    return tile, per_slice, math.ceil(units / per_slice), shared


def wgrad_pointwise_plan(n_chan, n_pix, n_edge_groups, itemsize, n_sm, limit):
    """(tiles_per_slice, slices, shared_bytes) of the 1x1 grad_weight, or None when a tile of
    every channel does not fit."""
    shared = n_chan * (WGRAD_PIXELS + 4) * itemsize
    if shared > limit:
        return None
    tiles = math.ceil(n_pix / WGRAD_PIXELS)
    slices = max(1, min(tiles, math.ceil(GRID_FILL * n_sm / math.ceil(n_edge_groups / THREADS))))
    per_slice = math.ceil(tiles / slices)
    return per_slice, math.ceil(tiles / per_slice), shared


_graph_keys = {}


def graph_key(index):
    """A content key of index.  Read-only arrays (the backend's host copies of torch indices,
    remade whenever the tensor changes) are hashed once per object, not on every call."""
    if index.flags.writeable:
        return _interop.content_key(index)
    hit = _graph_keys.get(id(index))
    if hit is not None and hit[0]() is index:
        return hit[1]
    key = _interop.content_key(index)
    with _interop._lock:
        for k in [k for k, v in _graph_keys.items() if v[0]() is None]:
            del _graph_keys[k]
        _graph_keys[id(index)] = (weakref.ref(index), key)
    return key


_int32 = functools.partial(np.ascontiguousarray, dtype=np.int32)


def staged_forward_tables(index, n_in, g, cstride, key):
    """Device (offs, wrow, seg, rows) int32 of the gather over index rows r (outputs r*g..r*g+g-1):
    edge e = r*D + i reads staged channel index[r*g, i] at offs[e] = channel * cstride with
    weight w[wrow[e] + k*D] for output r*g + k."""
    def build():
        _checks.check_index(index, n_in)
        n_out, degree = index.shape
        n_rows = n_out // g
        rows = np.arange(n_rows)
        offs = index[::g].ravel() * cstride
        wrow = (rows[:, None] * g * degree + np.arange(degree)).ravel()
        return _int32(offs), _int32(wrow), _int32(np.arange(n_rows + 1) * degree), _int32(rows)
    return _tables.get(("sfwd", _interop.device_id(), n_in, g, cstride, key), build)


def staged_reverse_tables(index, rev, n_in, cstride, key):
    """Device (offs, wrow, seg, rows) int32 of the gather over input channels u (grad_input):
    edge e of u reads staged grad_out channel v at offs = v * cstride with weight w[v*D + i]
    for rev's (v, i); rows lists the channels longest first (in-degrees are uneven, and
    row slots take rows in this order)."""
    def build():
        _checks.check_index(index, n_in)
        _checks.check_reverse(index, rev, n_in)
        degree = index.shape[1]
        counts = np.diff(rev.ptr)
        rows = np.argsort(-counts, kind="stable")
        return (_int32(rev.edge // degree * cstride), _int32(rev.edge), _int32(rev.ptr), _int32(rows))
    return _tables.get(("srev", _interop.device_id(), n_in, cstride, key), build)
