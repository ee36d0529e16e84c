"""Argument checks for every xkern op, run once before any kernel.

Each check raises ValueError or TypeError naming the argument, what was expected
and what was given.  Kernels trust what comes out of here: contiguous arrays of
one float dtype and an int64 index whose entries lie in [0, Cin).
"""
import numbers

import numpy as np

from ..backends import _graphs

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def pair(value, name, minimum):
    """An int or an (h, w) pair of ints >= minimum, as torch accepts for conv2d."""
    # Fast path for what callers almost always pass (plain ints, a tuple or list of two);
    # exact type tests, so bool (a subclass of int) and everything else take the full checks.
    if type(value) is int:
        if value >= minimum:
            return (value, value)
    elif type(value) in (tuple, list) and len(value) == 2:
        h, w = value
        if type(h) is int and type(w) is int and h >= minimum and w >= minimum:
            return (h, w)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    else:
        try:
            value = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
        if len(value) != 2 or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in value):
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
        value = (int(value[0]), int(value[1]))
    if min(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def as_ndarray(a, name):
    """np.asarray(a), with numpy's refusals (ragged nested lists, ...) named after the argument."""
    try:
        return np.asarray(a)
    except (ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: torch tensors requiring grad
        raise TypeError(f"{name} must be an array or a nested sequence of numbers, "
                        f"got a {type(a).__name__} numpy cannot convert ({exc})") from None


def host_array(a, name):
    """Adopt a host array-like as a C-contiguous ndarray (copies only when needed)."""
    # ascontiguousarray would return a as it is; skipping it saves two calls per argument.
    # (It also turns 0-d arrays into 1-d ones, hence ndim: those keep that path.)
    if type(a) is np.ndarray and a.ndim and a.flags.c_contiguous:
        return a
    return np.ascontiguousarray(as_ndarray(a, name))


def host_index(index):
    """The index as a host ndarray, for validation."""
    return as_ndarray(index, "index")


def float_array(a, name, ndim, dtype=None, adopt=host_array):
    """A C-contiguous float32/float64 array of the given ndim (and dtype, if given).

    adopt turns the argument into the backend's array type (numpy here, numba
    device arrays for CUDA) and must leave it C-contiguous.
    """
    if a is None:
        raise TypeError(f"{name} must be an array, got None")
    arr = adopt(a, name)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} must have the dtype of x ({dtype}), got {arr.dtype}")
    return arr


def index_array(index, n_out, n_in, degree):
    """The graph as a C-contiguous, read-only int64 (Cout, D) array with entries in [0, Cin):
    the one cached copy of that graph (xkern.backends._graphs), checked when first seen."""
    if index is None:
        raise TypeError("index must be an integer array of shape (Cout, D), got None")
    idx = as_ndarray(index, "index")
    if idx.dtype.kind not in "iu":  # the integer kinds; bool is kind "b"
        raise TypeError(f"index must have an integer dtype, got {idx.dtype}")
    if idx.shape != (n_out, degree):
        raise ValueError(f"index must have shape (Cout, D) = ({n_out}, {degree}) to match weight, "
                         f"got {idx.shape}")
    cached = _graphs.lookup(idx, n_in)
    if cached is not None:
        return cached
    if idx.size and not _all_below(idx, n_in):
        raise ValueError(f"index entries must lie in [0, Cin) = [0, {n_in}), "
                         f"got values in [{idx.min()}, {idx.max()}]")
    return _graphs.insert(idx, n_in)


def _all_below(idx, bound):
    """True when every entry of the integer array idx lies in [0, bound), in one reduction.

    Read as unsigned, a signed b-bit integer's negatives become >= 2**(b-1) while its
    non-negatives keep their values, so "all in [0, bound)" is "unsigned max <
    min(bound, 2**(b-1))".
    """
    if idx.dtype.kind == "u":
        return int(idx.max()) < bound
    unsigned = idx.view(idx.dtype.str.replace("i", "u"))  # same width and byte order
    return int(unsigned.max()) < min(bound, 1 << (8 * idx.dtype.itemsize - 1))


def bias_array(bias, n_out, dtype, adopt=host_array):
    if bias is None:
        return None
    b = float_array(bias, "bias", 1, dtype, adopt)
    if b.shape != (n_out,):
        raise ValueError(f"bias must have shape (Cout,) = ({n_out},), got {b.shape}")
    return b


def grad_names(grads, allowed):
    """The set of gradient names in grads, a tuple of names drawn from allowed."""
    expected = f"grads must be a tuple of names from {allowed}"
    if grads is None or isinstance(grads, str):
        raise TypeError(f"{expected}, got {grads!r}")
    try:
        names = set(grads)
    except TypeError:
        raise TypeError(f"{expected}, got {grads!r}") from None
    unknown = names - set(allowed)
    if unknown:
        raise ValueError(f"{expected}, got unknown names {sorted(unknown, key=repr)}")
    return names


def conv_output_size(size, k, stride, padding, dilation):
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


class Conv2dArgs:
    """Validated arguments of an X-Conv: arrays plus the derived sizes."""
    __slots__ = ("x", "weight", "index", "bias", "stride", "padding", "dilation", "out_shape")

    def __init__(self, x, weight, index, bias, stride, padding, dilation, adopt=host_array):
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.x = float_array(x, "x", 4, None, adopt)
        dtype = self.x.dtype
        self.weight = float_array(weight, "weight", 4, dtype, adopt)
        batch, n_in, height, width = self.x.shape
        n_out, degree, kh, kw = self.weight.shape
        if n_in < 1:
            raise ValueError(f"x must have at least one channel, got shape {self.x.shape}")
        if n_out < 1 or degree < 1 or kh < 1 or kw < 1:
            raise ValueError(f"weight must have shape (Cout, D, kh, kw) with every size >= 1, "
                             f"got {self.weight.shape}")
        self.index = index_array(index, n_out, n_in, degree)
        self.bias = bias_array(bias, n_out, dtype, adopt)
        h_out = conv_output_size(height, kh, self.stride[0], self.padding[0], self.dilation[0])
        w_out = conv_output_size(width, kw, self.stride[1], self.padding[1], self.dilation[1])
        if h_out < 1 or w_out < 1:
            raise ValueError(
                f"output would be empty: x spatial size {(height, width)} with kernel {(kh, kw)}, "
                f"stride {self.stride}, padding {self.padding}, dilation {self.dilation} "
                f"gives {(h_out, w_out)}")
        self.out_shape = (batch, n_out, h_out, w_out)


def grad_out_array(grad_out, out_shape, dtype, adopt=host_array):
    g = float_array(grad_out, "grad_out", len(out_shape), dtype, adopt)
    if g.shape != tuple(out_shape):
        raise ValueError(f"grad_out must have the output's shape {tuple(out_shape)}, got {g.shape}")
    return g


class LinearArgs:
    """Validated arguments of an X-Linear."""
    __slots__ = ("x", "weight", "index", "bias", "out_shape")

    def __init__(self, x, weight, index, bias, adopt=host_array):
        self.x = float_array(x, "x", 2, None, adopt)
        dtype = self.x.dtype
        self.weight = float_array(weight, "weight", 2, dtype, adopt)
        batch, n_in = self.x.shape
        n_out, degree = self.weight.shape
        if n_in < 1:
            raise ValueError(f"x must have at least one feature, got shape {self.x.shape}")
        if n_out < 1 or degree < 1:
            raise ValueError(f"weight must have shape (Cout, D) with both sizes >= 1, got {self.weight.shape}")
        self.index = index_array(index, n_out, n_in, degree)
        self.bias = bias_array(bias, n_out, dtype, adopt)
        self.out_shape = (batch, n_out)
