"""Graphs for X-Conv / X-Linear layers: expanders and the grouped-convolution pattern.

A graph is an int64 index of shape (n_out, degree): output v reads inputs
index[v, :], each row sorted ascending (gathers then walk memory forward).  It is
usable directly as the `index` argument of xkern.xconv2d and xkern.xlinear.
"""
import numpy as np

from .arguments import count, generator
from .explicit import lines

METHODS = ("random", "random-replace", "biregular", "explicit")

# Row chunk for drawing random keys: bounds the temporary to about 8 MB whatever
# n_out is; the generator's stream, and so the graph, does not depend on it.
_KEYS_PER_CHUNK = 1 << 20


def _random_distinct(rng, n_in, n_rows, degree):
    """Each row: the degree inputs with the smallest of n_in uniform keys, a uniform degree-subset."""
    out = np.empty((n_rows, degree), dtype=np.int64)
    chunk = max(1, _KEYS_PER_CHUNK // n_in)
    for start in range(0, n_rows, chunk):
        keys = rng.random((min(chunk, n_rows - start), n_in))
        if degree < n_in:
            out[start:start + len(keys)] = np.argpartition(keys, degree - 1, axis=1)[:, :degree]
        else:
            out[start:start + len(keys)] = np.arange(n_in)
    return out


def _random_with_replacement(rng, n_in, n_rows, degree):
    return rng.integers(0, n_in, size=(n_rows, degree), dtype=np.int64)


def _biregular(rng, n_in, n_rows, degree):
    """Rows read off consecutive random permutations of the inputs, repaired at the seams.

    The n_rows * degree slots are filled by c = ceil(slots / n_in) permutations laid end
    to end, so every input appears c - 1 or c times (balanced to +-1).  A row that lies
    inside one permutation has distinct entries; a row straddling the seam between
    permutations k - 1 and k may repeat an input.  Each repeat in the head of
    permutation k is swapped with a random later position of the same permutation
    holding an input not in the row's tail: swaps inside a permutation keep it one,
    so the balance survives.  Enough such positions always exist: of the n_in - head
    positions after the head, at most tail - repeats hold tail inputs, and
    n_in - head - (tail - repeats) = n_in - degree + repeats >= repeats.
    """
    slots = n_rows * degree
    n_perm = -(-slots // n_in)
    perms = np.argsort(rng.random((n_perm, n_in)), axis=1, kind="stable")
    for k in range(1, n_perm):
        seam = k * n_in
        tail_len = seam % degree
        if tail_len == 0 or seam >= slots:
            continue
        head_len = degree - tail_len
        tail = perms[k - 1, n_in - tail_len:]
        perm = perms[k]
        repeats = np.flatnonzero(np.isin(perm[:head_len], tail))
        if repeats.size == 0:
            continue
        later = head_len + np.flatnonzero(~np.isin(perm[head_len:], tail))
        chosen = later[np.argsort(rng.random(later.size), kind="stable")[:repeats.size]]
        perm[repeats], perm[chosen] = perm[chosen], perm[repeats].copy()
    return perms.ravel()[:slots].reshape(n_rows, degree)


_DRAW = {"random": _random_distinct, "random-replace": _random_with_replacement,
         "biregular": _biregular}


def expander(n_in, n_out, degree, *, method="random", seed=None, block=1):
    """An expander graph as an int64 index (n_out, degree), rows ascending.

    method:
      "random"          every output reads `degree` distinct inputs drawn uniformly (the paper's X-Conv).
      "random-replace"  `degree` inputs drawn uniformly with replacement (the paper's Fig. 2);
                        repeated entries are legal X-Conv indices (their weights add up).
      "biregular"       distinct inputs per output, and every input read by the same number of
                        outputs, +-1 where n_out * degree / n_in is not an integer (balanced reverse
                        adjacency for the kernels; with block > 1 this holds for the block-level
                        graph).  Built from random permutations, see _biregular.
      "explicit"        no randomness (seed is ignored): lines of the affine plane over GF(q),
                        q = n_in / degree a prime power >= degree, q**2 < degree * n_out / block <= degree * q**2
                        (for n_out = n_in: n_in**(1/3) < degree <= n_in**(1/2)).  Guarantee:
                        sigma_2 <= sqrt(block * q) < sigma_1, and two outputs of different blocks
                        share at most one input; see xkern.graphs.explicit.lines.
    block: outputs come in n_out / block groups of `block` consecutive outputs that share one
      row (a block expander); the block-level graph (n_out / block rows) is drawn with `method`.
    seed: None (fresh randomness), an int, a numpy SeedSequence or Generator.  The same int gives
      the same graph on every run and machine (numpy's PCG64 stream is platform independent).
    Raises TypeError / ValueError naming the offending argument.
    """
    n_in = count(n_in, "n_in")
    n_out = count(n_out, "n_out")
    degree = count(degree, "degree")
    block = count(block, "block")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_out % block:
        raise ValueError(f"block must divide n_out, got block={block}, n_out={n_out}")
    if method != "random-replace" and degree > n_in:
        raise ValueError(f"degree must be <= n_in for method={method!r} (distinct inputs), "
                         f"got degree={degree}, n_in={n_in}")
    n_rows = n_out // block
    if method == "explicit":
        rows = lines(n_in, n_rows, degree)
    else:
        rows = _DRAW[method](generator(seed), n_in, n_rows, degree)
    rows = np.sort(rows, axis=1)
    return np.ascontiguousarray(np.repeat(rows, block, axis=0))


def grouped(n_in, n_out, groups):
    """The grouped convolution's graph as an int64 index (n_out, n_in / groups).

    Output v belongs to group g = v // (n_out / groups) and reads the contiguous inputs
    g * n_in / groups ... (g + 1) * n_in / groups - 1, exactly as torch's conv2d(groups=...).
    """
    n_in = count(n_in, "n_in")
    n_out = count(n_out, "n_out")
    groups = count(groups, "groups")
    if n_in % groups or n_out % groups:
        raise ValueError(f"groups must divide n_in and n_out, got groups={groups}, "
                         f"n_in={n_in}, n_out={n_out}")
    width = n_in // groups
    group = np.arange(n_out, dtype=np.int64) // (n_out // groups)
    return np.ascontiguousarray(group[:, None] * width + np.arange(width, dtype=np.int64))
