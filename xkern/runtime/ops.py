"""The runtime's ops: for each graph op, a builder that turns a Node into a function of
its input arrays (float32, batch first) returning its output array.

Convolutions of every kind run on one kernel, the backend's xconv2d_fwd: a conv with
groups g is the X-Conv whose output v reads the Cin/g channels of its group, so its
torch weight (Cout, Cin/g, kh, kw) already is the compact weight.  Two dense layers are
BLAS products instead (numpy matmul): the 1x1 convolution without stride or padding and
the linear layer.  X-Linear runs on the backend's xlinear_fwd.  Pooling,
activations and joins are numpy.
Builders prepare everything that does not depend on the input once (index arrays,
contiguous weights); `inplace` says the first input is read by nothing else, so an
elementwise op may overwrite it.
"""
import math

import numpy as np

from ..ops.validate import index_array


def _fail(node, message):
    raise ValueError(f"node {node.name!r} ({node.op}): {message}")


def _conv_out(size, k, stride, padding, dilation, ceil_mode=False):
    """torch's output size of a convolution / pooling window along one axis."""
    span = size + 2 * padding - dilation * (k - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # torch drops a last window that would start inside the right padding
    return out


def _xconv(node, kernels, weight, index, bias, n_in, stride, padding, dilation):
    weight = np.ascontiguousarray(weight, np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)
    n_out, degree, kh, kw = weight.shape
    # the cached copy of the graph (xkern.ops): the kernels find the term lists they derive
    # from it by identity on every call, instead of rebuilding or comparing them
    index = index_array(np.ascontiguousarray(index, np.int64), n_out, n_in, degree)
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)

    def run(x):
        if x.ndim != 4 or x.shape[1] != n_in:
            _fail(node, f"expects (B, {n_in}, H, W), got {x.shape}")
        ho = _conv_out(x.shape[2], kh, stride[0], padding[0], dilation[0])
        wo = _conv_out(x.shape[3], kw, stride[1], padding[1], dilation[1])
        if ho < 1 or wo < 1:
            _fail(node, f"input {x.shape[2:]} is too small for kernel {(kh, kw)}")
        out = np.empty((x.shape[0], n_out, ho, wo), np.float32)
        kernels.xconv2d_fwd(np.ascontiguousarray(x), weight, index, bias, out, stride, padding, dilation)
        return out
    return run


def _pointwise(node, weight, bias):
    """A dense 1x1 conv as one BLAS product per image: (Cout, Cin) @ (Cin, H*W)."""
    matrix = np.ascontiguousarray(weight[:, :, 0, 0], np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)[:, None]

    def run(x):
        if x.ndim != 4 or x.shape[1] != matrix.shape[1]:
            _fail(node, f"expects (B, {matrix.shape[1]}, H, W), got {x.shape}")
        out = np.matmul(matrix, x.reshape(x.shape[0], x.shape[1], -1))
        if bias is not None:
            out += bias
        return out.reshape(x.shape[0], matrix.shape[0], *x.shape[2:])
    return run


def build_conv2d(node, kernels, inplace):
    weight, at = node.arrays["weight"], node.attrs
    n_out, per_group = weight.shape[:2]
    if at["groups"] == 1 and weight.shape[2:] == (1, 1) and list(at["stride"]) == [1, 1] \
            and list(at["padding"]) == [0, 0]:
        # BLAS beat the X kernel reading all Cin inputs 2.5-3x on MobileNet's dense 1x1
        # layers at batch 1 (0.34 against 1.0 ms for 64 -> 64 at 56x56, 1 thread).
        return _pointwise(node, weight, node.arrays.get("bias"))
    from ..graphs import grouped  # here, not at import: xkern.graphs' diagnostics add ~5 ms to it
    n_in = per_group * at["groups"]
    return _xconv(node, kernels, weight, grouped(n_in, n_out, at["groups"]), node.arrays.get("bias"),
                  n_in, at["stride"], at["padding"], at["dilation"])


def build_xconv2d(node, kernels, inplace):
    a, at = node.arrays, node.attrs
    return _xconv(node, kernels, a["weight"], a["index"], a.get("bias"), at["in_channels"],
                  at["stride"], at["padding"], at["dilation"])


def _xlinear(node, kernels, weight, index, bias, n_in):
    weight = np.ascontiguousarray(weight, np.float32)
    index = index_array(np.ascontiguousarray(index, np.int64), weight.shape[0], n_in, weight.shape[1])
    bias = None if bias is None else np.ascontiguousarray(bias, np.float32)

    def run(x):
        if x.ndim != 2 or x.shape[1] != n_in:
            _fail(node, f"expects (B, {n_in}), got {x.shape}")
        out = np.empty((x.shape[0], weight.shape[0]), np.float32)
        kernels.xlinear_fwd(np.ascontiguousarray(x), weight, index, bias, out)
        return out
    return run


def build_linear(node, kernels, inplace):
    # BLAS, not the X kernel: that one vectorises over pixels (here: the batch), so at
    # batch 1 it ran a 1024 -> 1000 layer in 4 ms against numpy's 0.07 ms (1 thread).
    weight_t = np.ascontiguousarray(node.arrays["weight"].T, np.float32)
    bias = node.arrays.get("bias")

    def run(x):
        if x.ndim != 2 or x.shape[1] != weight_t.shape[0]:
            _fail(node, f"expects (B, {weight_t.shape[0]}), got {x.shape}")
        out = x @ weight_t
        return out if bias is None else np.add(out, bias, out=out)
    return run


def build_xlinear(node, kernels, inplace):
    a = node.arrays
    return _xlinear(node, kernels, a["weight"], a["index"], a.get("bias"), node.attrs["in_features"])


def build_affine(node, kernels, inplace):
    scale = node.arrays["scale"].astype(np.float32)[:, None, None]
    shift = node.arrays["shift"].astype(np.float32)[:, None, None]

    def run(x):
        if x.ndim != 4 or x.shape[1] != scale.shape[0]:
            _fail(node, f"expects (B, {scale.shape[0]}, H, W), got {x.shape}")
        out = np.multiply(x, scale, out=x if inplace else None)
        return np.add(out, shift, out=out)
    return run


def build_relu(node, kernels, inplace):
    return lambda x: np.maximum(x, 0, out=x if inplace else None)


def build_relu6(node, kernels, inplace):
    return lambda x: np.clip(x, 0, 6, out=x if inplace else None)


def _window_view(xp, ky, kx, at, out_hw):
    """The input values tap (ky, kx) of every window reads: (B, C, Ho, Wo) strided view."""
    (sh, sw), (dh, dw) = at["stride"], at.get("dilation", (1, 1))
    y0, x0 = ky * dh, kx * dw
    return xp[:, :, y0:y0 + sh * (out_hw[0] - 1) + 1:sh, x0:x0 + sw * (out_hw[1] - 1) + 1:sw]


def _pool_geometry(node, x):
    """Output size and the padded input extent (torch's ceil_mode windows may run past
    the right padding) of a pooling node on x."""
    at = node.attrs
    if x.ndim != 4:
        _fail(node, f"expects (B, C, H, W), got {x.shape}")
    dil = at.get("dilation", (1, 1))
    out_hw, pads = [], []
    for axis in range(2):
        k, s, p, d = at["kernel"][axis], at["stride"][axis], at["padding"][axis], dil[axis]
        size = x.shape[2 + axis]
        out = _conv_out(size, k, s, p, d, at["ceil_mode"])
        if out < 1:
            _fail(node, f"input {x.shape[2:]} is too small for kernel {tuple(at['kernel'])}")
        extra = max(0, (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        out_hw.append(out)
        pads.append((p, p + extra))
    return tuple(out_hw), pads


def build_maxpool2d(node, kernels, inplace):
    at = node.attrs
    kh, kw = at["kernel"]

    def run(x):
        out_hw, pads = _pool_geometry(node, x)
        xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf) if any(map(any, pads)) else x
        out = np.array(_window_view(xp, 0, 0, at, out_hw))
        for ky in range(kh):
            for kx in range(kw):
                if ky or kx:
                    np.maximum(out, _window_view(xp, ky, kx, at, out_hw), out=out)
        return out
    return run


def _avg_counts(size, out, k, s, p, include_pad):
    """Per-output window sizes along one axis, as torch's avg_pool2d divides by them."""
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def build_avgpool2d(node, kernels, inplace):
    at = node.attrs
    kh, kw = at["kernel"]

    def run(x):
        out_hw, pads = _pool_geometry(node, x)
        xp = np.pad(x, ((0, 0), (0, 0), *pads)) if any(map(any, pads)) else x
        out = np.array(_window_view(xp, 0, 0, at, out_hw))
        for ky in range(kh):
            for kx in range(kw):
                if ky or kx:
                    np.add(out, _window_view(xp, ky, kx, at, out_hw), out=out)
        if at["divisor"] is not None:
            divisor = at["divisor"]
        else:
            counts = [_avg_counts(x.shape[2 + a], out_hw[a], at["kernel"][a], at["stride"][a],
                                  at["padding"][a], at["count_include_pad"]) for a in range(2)]
            divisor = np.outer(*counts).astype(np.float32)
        return np.divide(out, divisor, out=out)
    return run


def build_adaptive_avgpool2d(node, kernels, inplace):
    size = node.attrs["output_size"]

    def run(x):
        if x.ndim != 4:
            _fail(node, f"expects (B, C, H, W), got {x.shape}")
        h, w = x.shape[2:]
        oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
        if (oh, ow) == (1, 1):
            return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
        # torch's bins: [floor(i * H / oh), ceil((i + 1) * H / oh)), possibly overlapping.
        rows = [(i * h // oh, -(-(i + 1) * h // oh)) for i in range(oh)]
        cols = [(j * w // ow, -(-(j + 1) * w // ow)) for j in range(ow)]
        out = np.empty(x.shape[:2] + (oh, ow), np.float32)
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3), dtype=np.float32)
        return out
    return run


def build_add(node, kernels, inplace):
    def run(a, b):
        if a.shape != b.shape:
            _fail(node, f"inputs have shapes {a.shape} and {b.shape}")
        return np.add(a, b, out=a if inplace else None)
    return run


def build_concat(node, kernels, inplace):
    axis = node.attrs["axis"]

    def run(*xs):
        if axis % xs[0].ndim == 0:
            _fail(node, f"axis {axis} of {xs[0].ndim}-D inputs is the batch axis")
        try:
            return np.concatenate(xs, axis=axis)
        except ValueError as exc:  # numpy's AxisError is a ValueError too
            _fail(node, f"cannot join shapes {[x.shape for x in xs]}: {exc}")
    return run


def build_flatten(node, kernels, inplace):
    start, end = node.attrs["start_dim"], node.attrs["end_dim"]

    def run(x):
        stop = x.ndim if end == -1 else end + 1
        if start >= x.ndim or stop > x.ndim:
            _fail(node, f"cannot flatten axes {start}..{end} of shape {x.shape}")
        return x.reshape(x.shape[:start] + (math.prod(x.shape[start:stop]),) + x.shape[stop:])
    return run


def build_reshape(node, kernels, inplace):
    shape = tuple(node.attrs["shape"])

    def run(x):
        try:
            return x.reshape((x.shape[0],) + shape)
        except ValueError:
            _fail(node, f"cannot reshape {x.shape} to (B, {', '.join(map(str, shape))})")
    return run


BUILDERS = {name[len("build_"):]: fn for name, fn in globals().items() if name.startswith("build_")}
# Ops whose builder can write into its first input.
ELEMENTWISE = frozenset({"affine", "relu", "relu6", "add"})
