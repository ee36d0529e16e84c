"""Argument checks of the backends' raw functions, in Python.

xkern.ops validates every argument before it calls a backend; these checks are the
last line for direct callers of a backend.  The CUDA backend runs all of them: a
kernel launched on arrays that do not fit together, or on an index entry past the
input channels, would read or write out of bounds on the device (an illegal address
error that leaves the CUDA context unusable).  There, shapes are checked on every
call (a few integer comparisons), index entries and the reverse adjacency once per
graph, where the kernels' tables are built (cuda/_plan.py).  The compiled CPU backend
has its own checks in C with the same wording (src/cpu/terms.pxi) and uses
check_geometry from here.  Each failure is a ValueError naming the argument.
"""
import numpy as np


def check_geometry(stride, padding, dilation):
    """The three pairs as ints: stride and dilation >= 1, padding >= 0."""
    pairs = []
    for name, value, least in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        try:
            a, b = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a pair of ints, got {value!r}") from None
        if a < least or b < least:
            raise ValueError(f"{name} must be >= {least}, got {value!r}")
        pairs.append((a, b))
    return pairs


def check_conv(image, kernel, index, result, stride, padding, dilation, names):
    """image (B, Cin, H, W), kernel (Cout, D, kh, kw), index (Cout, D) and result
    (B, Cout, Ho, Wo) must fit the geometry; names: the arguments holding image,
    kernel and result in the calling function's signature."""
    (sh, sw), (ph, pw), (dh, dw) = check_geometry(stride, padding, dilation)
    im, ke, re = names
    for name, shape, ndim in ((im, image, 4), (ke, kernel, 4), (re, result, 4), ("index", index, 2)):
        if len(shape) != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(shape)}")
    if min(kernel) < 1:
        raise ValueError(f"{ke} must have shape (Cout, D, kh, kw) with every size >= 1, got {tuple(kernel)}")
    if tuple(index) != tuple(kernel[:2]):
        raise ValueError(f"index has shape {tuple(index)}, {ke} has (Cout, D) = {tuple(kernel[:2])}")
    ho = (image[2] + 2 * ph - dh * (kernel[2] - 1) - 1) // sh + 1
    wo = (image[3] + 2 * pw - dw * (kernel[3] - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"{ke}'s {kernel[2]}x{kernel[3]} kernel does not fit {im}'s {image[2]}x{image[3]} "
                         "image with this padding and dilation")
    expected = (image[0], kernel[0], ho, wo)
    if tuple(result) != expected:
        raise ValueError(f"{re} has shape {tuple(result)}, expected (B, Cout, Ho, Wo) = {expected}")


def check_linear(x, weight, index, result, names):
    """x (B, Cin), weight (Cout, D), index (Cout, D) and result (B, Cout) must fit;
    names: the arguments holding x, weight and result."""
    xn, wn, rn = names
    for name, shape in ((xn, x), (wn, weight), (rn, result), ("index", index)):
        if len(shape) != 2:
            raise ValueError(f"{name} must have 2 dimensions, got shape {tuple(shape)}")
    if tuple(index) != tuple(weight):
        raise ValueError(f"index has shape {tuple(index)}, {wn} has (Cout, D) = {tuple(weight)}")
    if tuple(result) != (x[0], weight[0]):
        raise ValueError(f"{rn} has shape {tuple(result)}, expected (B, Cout) = {(x[0], weight[0])}")


def check_length(name, array, n, what):
    """array is 1-D of length n (what says what n counts)."""
    if array is not None and tuple(array.shape) != (n,):
        raise ValueError(f"{name} has shape {tuple(array.shape)}, expected ({n},) ({what})")


def check_dtypes(ref_name, ref, **arrays):
    """Every array given (None skipped) has the element type of the array ref, named
    ref_name (the kernels are compiled for one)."""
    dtype = np.dtype(ref.dtype)
    for name, a in arrays.items():
        if a is not None and np.dtype(a.dtype) != dtype:
            raise ValueError(f"{name} has dtype {np.dtype(a.dtype)}, expected {dtype} ({ref_name}'s)")


def check_index_array(index):
    """index is what the tables are built from: a 2-D int64 host (numpy) array."""
    if not isinstance(index, np.ndarray) or index.dtype != np.int64 or index.ndim != 2:
        raise ValueError("index must be a 2-D int64 numpy array on the host (xkern.backends.cuda.host_index), "
                         f"got {type(index).__name__} {getattr(index, 'dtype', '')}")


def check_index(index, n_in):
    """Every index entry lies in [0, n_in)."""
    flat = index.reshape(-1)
    bad = np.flatnonzero((flat < 0) | (flat >= n_in))
    if bad.size:
        raise ValueError(f"index entries must lie in [0, {n_in}) (the input channels); "
                         f"entry {bad[0]} is {flat[bad[0]]}")


def check_reverse(index, rev, n_in):
    """rev (ptr, edge) is the reverse adjacency of index over n_in input channels: ptr
    (n_in + 1,) from 0 to the number of edges, edge the edge ids listed under the
    channel each reads."""
    flat = index.reshape(-1)
    n = flat.size
    ptr, edge = np.asarray(rev.ptr), np.asarray(rev.edge)
    if ptr.shape != (n_in + 1,) or edge.shape != (n,):
        raise ValueError(f"rev must hold ptr of length {n_in + 1} and edge of length {n} (the edges of index); "
                         f"got {ptr.size} and {edge.size}")
    counts = np.diff(ptr)
    fits = ptr[0] == 0 and ptr[-1] == n and (counts >= 0).all()
    fits = fits and np.array_equal(np.sort(edge), np.arange(n))
    fits = fits and np.array_equal(flat[edge], np.repeat(np.arange(n_in), counts))
    if not fits:
        raise ValueError("rev is not the reverse adjacency of index (xkern.ops.adjacency.reverse_adjacency)")
