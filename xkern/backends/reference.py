"""Reference backend: plain numpy, written for obviousness, not speed.

It follows the definition literally, one (tap, neighbour) pair at a time:
    out[b, v, y, x] = bias[v] + sum_{i, ky, kx} weight[v, i, ky, kx]
                      * x_pad[b, index[v, i], y*sh + ky*dh, x*sw + kx*dw]
"""
import numpy as np


def _taps(weight, stride, dilation, out_hw):
    """Yield (ky, kx, row slice, col slice) of the padded input read by each tap."""
    kh, kw = weight.shape[2:]
    h_out, w_out = out_hw
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation[0], kx * dilation[1]
            yield (ky, kx, slice(y0, y0 + stride[0] * (h_out - 1) + 1, stride[0]),
                   slice(x0, x0 + stride[1] * (w_out - 1) + 1, stride[1]))


def _pad(x, padding):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def xconv2d_fwd(x, weight, index, bias, out, stride, padding, dilation):
    xp = _pad(x, padding)
    acc = np.zeros(out.shape, dtype=x.dtype)
    for ky, kx, rows, cols in _taps(weight, stride, dilation, out.shape[2:]):
        tap = xp[:, :, rows, cols]
        for i in range(index.shape[1]):
            acc += weight[None, :, i, ky, kx, None, None] * tap[:, index[:, i]]
    if bias is not None:
        acc += bias[None, :, None, None]
    out[...] = acc


def xconv2d_bwd_input(grad_out, weight, index, rev, grad_x, stride, padding, dilation):
    ph, pw = padding
    height, width = grad_x.shape[2:]
    gp = np.zeros((grad_x.shape[0], grad_x.shape[1], height + 2 * ph, width + 2 * pw), grad_x.dtype)
    for ky, kx, rows, cols in _taps(weight, stride, dilation, grad_out.shape[2:]):
        view = gp[:, :, rows, cols]
        for i in range(index.shape[1]):
            # np.add.at accumulates repeated channels in index[:, i] instead of overwriting.
            np.add.at(view, (slice(None), index[:, i]),
                      weight[None, :, i, ky, kx, None, None] * grad_out)
    grad_x[...] = gp[:, :, ph:ph + height, pw:pw + width]


def xconv2d_bwd_weight(grad_out, x, index, grad_weight, stride, padding, dilation):
    xp = _pad(x, padding)
    for ky, kx, rows, cols in _taps(grad_weight, stride, dilation, grad_out.shape[2:]):
        tap = xp[:, :, rows, cols]
        for i in range(index.shape[1]):
            grad_weight[:, i, ky, kx] = np.einsum("bvyx,bvyx->v", grad_out, tap[:, index[:, i]])


def xconv2d_bwd_bias(grad_out, grad_bias):
    grad_bias[...] = grad_out.sum(axis=(0, 2, 3))


def _as_conv(a):
    return a.reshape(a.shape + (1, 1))


def xlinear_fwd(x, weight, index, bias, out):
    xconv2d_fwd(_as_conv(x), _as_conv(weight), index, bias, _as_conv(out), (1, 1), (0, 0), (1, 1))


def xlinear_bwd_input(grad_out, weight, index, rev, grad_x):
    xconv2d_bwd_input(_as_conv(grad_out), _as_conv(weight), index, rev, _as_conv(grad_x),
                      (1, 1), (0, 0), (1, 1))


def xlinear_bwd_weight(grad_out, x, index, grad_weight):
    xconv2d_bwd_weight(_as_conv(grad_out), _as_conv(x), index, _as_conv(grad_weight),
                       (1, 1), (0, 0), (1, 1))


def xlinear_bwd_bias(grad_out, grad_bias):
    grad_bias[...] = grad_out.sum(axis=0)
