"""Host side of the staged kernels (_pointwise, _window): plans, tables, launches.

A plan depends on shapes only (benchmarks/cuda_static.py compiles the same plans
without a GPU); plans and device tables are cached per (graph, shape), so a launch
after the first looks up the index's key (hashed once per read-only index object,
see _plan.graph_key), the planners' caches and the table cache, and fills the
kernel's pre-packed arguments.  Where no tile of every channel fits in the device's
shared memory the plan is None and the callers run the channel-chunked kernels
(_gather, and xconv2d_bwd_weight's edge-major kernel).
"""
import functools
import math
from typing import NamedTuple, Optional

import numpy as np

from . import _interop, _plan, _pointwise, _window
from ._plan import THREADS, Geometry


class Launch(NamedTuple):
    """One staged kernel launch: which kernel (kind, its factory's arguments after dtype),
    grid, dynamic shared bytes, the channel stride of the staged tile (for the tables),
    and the kernel's trailing int32 arguments."""
    kind: str                    # "pointwise" | "window" (gather) or "pointwise_wgrad" | "window_wgrad"
    params: tuple
    grid: tuple
    shared: int
    cstride: int
    scalars: tuple
    g: int                        # outputs per kernel row (the tables' g)
    slices: Optional[int] = None  # grad_weight: rows of the partial sums

    def kernel(self, dtype):
        factory = {"pointwise": _pointwise.gather_kernel, "window": _window.gather_kernel,
                   "pointwise_wgrad": _pointwise.wgrad_kernel, "window_wgrad": _window.wgrad_kernel}
        return factory[self.kind](np.dtype(dtype), *self.params)

    def source(self, dtype):
        """(python function, argument kinds) of the kernel, for compiling without a GPU."""
        module, name = {"pointwise": (_pointwise, "gather"), "window": (_window, "gather"),
                        "pointwise_wgrad": (_pointwise, "wgrad"), "window_wgrad": (_window, "wgrad")}[self.kind]
        return (getattr(module, name + "_source")(np.dtype(dtype), *self.params),
                getattr(module, name.upper() + "_KINDS"))


def is_pointwise(geom):
    return geom.kh == geom.kw == geom.sh == geom.sw == 1 and geom.ph == geom.pw == 0


@functools.lru_cache(maxsize=1024)
def gather_plan(geom, src_shape, out_shape, g, degree, row_edges, has_bias, itemsize, n_sm, limit):
    """The Launch of a gather of out (B, R*g, Ho, Wo) from src (B, n_chan, H, W): R rows of
    row_edges edges on average, g outputs per row, weight rows degree apart; or None."""
    n_img, n_chan, height, width = src_shape
    h_out, w_out = out_shape[2:]
    if is_pointwise(geom):
        n_pix = n_img * height * width
        n_rows = out_shape[1] // g
        plan = _plan.plan_pointwise(n_chan, n_pix, n_rows, g, itemsize, n_sm, limit)
        if plan is not None:
            tile, groups, shared = plan
            return Launch("pointwise", (g, tile.nv, has_bias), (math.ceil(n_pix / tile.pixels), groups),
                          shared, tile.pixels, (n_pix, height * width, n_chan, n_rows, degree), g)
    g = _plan.window_outputs(g)
    n_rows = out_shape[1] // g
    plan = _plan.plan_window(geom, n_chan, (h_out, w_out), n_img, n_rows, row_edges, g, itemsize, n_sm, limit)
    if plan is None:
        return None
    tile, groups, shared = plan
    hh, hw = _plan.halo(geom, tile.ty * tile.ry, tile.tx * tile.rx)
    tiles_x = math.ceil(w_out / (tile.tx * tile.rx))
    tiles = math.ceil(h_out / (tile.ty * tile.ry)) * tiles_x
    return Launch("window", (geom, tile, has_bias), (tiles, n_img, groups), shared, hh * hw,
                  (n_chan, height, width, h_out, w_out, n_rows, degree, tiles_x), g)


@functools.lru_cache(maxsize=1024)
def wgrad_plan(geom, x_shape, gout_shape, g, degree, itemsize, n_sm, limit):
    """The Launch of the grad_weight partial sums, or None."""
    n_img, n_chan, height, width = x_shape
    h_out, w_out = gout_shape[2:]
    if is_pointwise(geom):
        n_rows = gout_shape[1] // g
        n_pix = n_img * height * width
        k_ = min(_plan.WGRAD_EDGES[g], degree, max(1, _plan.WGRAD_ACC_BYTES // (g * itemsize)))
        n_groups = n_rows * math.ceil(degree / k_)
        plan = _plan.wgrad_pointwise_plan(n_chan, n_pix, n_groups, itemsize, n_sm, limit)
        if plan is not None:
            per_slice, slices, shared = plan
            return Launch("pointwise_wgrad", (g, k_, _plan.WGRAD_PIXELS), (math.ceil(n_groups / THREADS), slices),
                          shared, _plan.WGRAD_PIXELS + 4,
                          (n_pix, height * width, n_chan, n_rows, degree, per_slice), g, slices)
    g = _plan.window_outputs(g)
    n_rows = gout_shape[1] // g
    plan = _plan.plan_window_wgrad(geom, n_chan, (h_out, w_out), n_img, n_rows * degree, g, itemsize, n_sm, limit)
    if plan is None:
        return None
    tile, per_slice, slices, shared = plan
    hh, hw = _plan.halo(geom, tile.ty * tile.ry, tile.tx * tile.rx)
    tiles_x = math.ceil(w_out / (tile.tx * tile.rx))
    n_tiles = math.ceil(h_out / (tile.ty * tile.ry)) * tiles_x
    return Launch("window_wgrad", (geom, tile), (math.ceil(n_rows * degree / THREADS), slices), shared, hh * hw,
                  (n_img, n_chan, height, width, h_out, w_out, n_rows, degree, tiles_x, n_tiles, per_slice), g, slices)


def grad_input_geometry(geom):
    """grad_input at stride 1 as a gather: the taps flipped, padding (k-1)*d - p."""
    return Geometry(geom.kh, geom.kw, 1, 1, geom.dh, geom.dw, (geom.kh - 1) * geom.dh - geom.ph,
                    (geom.kw - 1) * geom.dw - geom.pw, True)


_rows_per_index = {}


def outputs_per_row(index, key):
    """g of _plan.outputs_per_row, cached per graph."""
    g = _rows_per_index.get(key)
    if g is None:
        g = _rows_per_index[key] = _plan.outputs_per_row(index)
    return g


def gather(src, w, index, rev, bias, out, geom, key, stream):
    """out (B, R, Ho, Wo) = the gather over index's rows (rev None: forward, R = Cout) or over
    rev's input channels (grad_input at stride 1, geom already flipped, R = Cin).  False
    when no plan fits (nothing launched)."""
    if out.size == 0:
        return True
    n_out, degree = index.shape
    if src.shape[1] == 0 or degree == 0:
        return False
    if rev is None:
        g, row_edges = outputs_per_row(index, key), degree
    else:
        g, row_edges = 1, math.ceil(n_out * degree / out.shape[1])
    dtype = np.dtype(src.dtype)
    launch = gather_plan(geom, tuple(src.shape), tuple(out.shape), g, degree, row_edges, bias is not None,
                         dtype.itemsize, _interop.sm_count(), _plan.shared_limit())
    if launch is None:
        return False
    if rev is None:
        tables = _plan.staged_forward_tables(index, src.shape[1], launch.g, launch.cstride, key)
    else:
        tables = _plan.staged_reverse_tables(index, rev, out.shape[1], launch.cstride, key)
    launch.kernel(dtype).launch(launch.grid, THREADS, launch.shared, stream, src, w, *tables,
                                _interop.dummy(dtype) if bias is None else bias, out, *launch.scalars)
    return True


def wgrad_partials(gout, x, index, geom, key, stream):
    """partial (S, Cout*D*kh*kw) of grad_weight, one row per slice of the pixels, or None when
    no plan fits (nothing launched)."""
    n_out, degree = index.shape
    if gout.size == 0 or x.shape[1] == 0 or degree == 0:
        return None
    g = outputs_per_row(index, key)
    dtype = np.dtype(x.dtype)
    launch = wgrad_plan(geom, tuple(x.shape), tuple(gout.shape), g, degree, dtype.itemsize,
                        _interop.sm_count(), _plan.shared_limit())
    if launch is None:
        return None
    offs = _plan.staged_forward_tables(index, x.shape[1], launch.g, launch.cstride, key)[0]
    size = n_out * degree * geom.kh * geom.kw
    (partial,) = _interop.workspace.take(stream, "grad_weight", [((launch.slices, size), dtype)])
    launch.kernel(dtype).launch(launch.grid, THREADS, launch.shared, stream, x, gout, offs, partial,
                                *launch.scalars)
    return partial
