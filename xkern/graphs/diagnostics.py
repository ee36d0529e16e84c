"""Connectivity of X-Net graphs made measurable (the paper's sections 3.3-3.4).

A graph is an index (n_out, D): output v reads inputs index[v, :], repeats counted
with multiplicity.  Its biadjacency A (n_out, n_in) has A[v, u] = #{i : index[v, i] = u}.
"""
from dataclasses import dataclass
import numbers

import numpy as np

from .arguments import count, generator


def _index(index, name, n_in=None):
    idx = np.asarray(index)
    if idx.dtype == np.bool_ or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {idx.dtype}")
    if idx.ndim != 2 or idx.shape[0] < 1 or idx.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n_out, degree) with both >= 1, got {idx.shape}")
    if idx.min() < 0 or (n_in is not None and idx.max() >= n_in):
        bound = "[0, inf)" if n_in is None else f"[0, {n_in})"
        raise ValueError(f"{name} entries must lie in {bound}, got values in [{idx.min()}, {idx.max()}]")
    return idx.astype(np.int64, copy=False)


def biadjacency(index, n_in):
    """Dense float64 (n_out, n_in) A with A[v, u] = how often output v reads input u."""
    n_in = count(n_in, "n_in")
    idx = _index(index, "index", n_in)
    n_out = idx.shape[0]
    flat = (np.arange(n_out, dtype=np.int64)[:, None] * n_in + idx).ravel()
    return np.bincount(flat, minlength=n_out * n_in).reshape(n_out, n_in).astype(np.float64)


@dataclass(frozen=True)
class SpectralGap:
    """Top singular values of the biadjacency and the bipartite Ramanujan bound.

    bound = sqrt(left_degree - 1) + sqrt(right_degree - 1), the limit of sigma2 for
    random (left_degree, right_degree)-biregular graphs; right_degree is the average
    number of outputs per input (n_out * D / n_in), which is exact only when
    right_regular.  A term with degree below 1 counts as 0.
    """
    sigma1: float
    sigma2: float
    gap: float            # sigma1 - sigma2
    bound: float
    left_degree: int      # D, inputs per output
    right_degree: float   # average outputs per input
    right_regular: bool   # every input read by the same number of outputs


def spectral_gap(index, n_in):
    """SpectralGap of the graph index (n_out, D) over n_in inputs.

    The singular values of A are the square roots of the eigenvalues of the smaller Gram
    matrix (A A^T or A^T A); for a biregular graph sigma1 = sqrt(dL * dR) with constant
    singular vectors, so sigma2 alone measures expansion.  Cost: a dense eigensolve of
    size min(n_in, n_out), milliseconds at 256, seconds at 2048.
    """
    a = biadjacency(index, n_in)
    n_out, degree = a.shape[0], np.shape(index)[1]
    gram = a @ a.T if n_out <= n_in else a.T @ a
    sv = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))
    sigma1, sigma2 = float(sv[0]), float(sv[1]) if sv.size > 1 else 0.0
    in_degree = a.sum(axis=0)
    right = n_out * degree / n_in
    bound = float(np.sqrt(max(degree - 1, 0)) + np.sqrt(max(right - 1.0, 0.0)))
    return SpectralGap(sigma1, sigma2, sigma1 - sigma2, bound, degree, right,
                       bool(np.all(in_degree == in_degree[0])))


def _layers(indices, n_in):
    if isinstance(indices, np.ndarray) and indices.ndim == 2:
        indices = [indices]
    try:
        layers = list(indices)
    except TypeError:
        raise TypeError(f"indices must be a list of index arrays, got {type(indices).__name__}") from None
    if not layers:
        raise ValueError("indices must hold at least one layer")
    first = _index(layers[0], "indices[0]")
    n0 = int(first.max()) + 1 if n_in is None else count(n_in, "n_in")
    out = [_index(first, "indices[0]", n0)]
    for l, idx in enumerate(layers[1:], 1):
        out.append(_index(idx, f"indices[{l}]", out[-1].shape[0]))
    return out, n0


# Bits set in each byte value, for counting reachable pairs in packed rows.
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)
_GATHER_BYTES = 1 << 24


def _reach(layers, n0):
    """Yield, after each layer, the packed boolean (n_l, ceil(n0 / 8)) 'output depends on input'.

    One layer maps reach R (n_{l-1} x n0) to R'[v] = OR_i R[index[v, i]]: the boolean
    product A_l R, capped at 1, computed on bits.  Rows are gathered in chunks so the
    temporary stays near _GATHER_BYTES.
    """
    reach = np.packbits(np.eye(n0, dtype=bool), axis=1)
    for idx in layers:
        nxt = np.empty((idx.shape[0], reach.shape[1]), dtype=np.uint8)
        chunk = max(1, _GATHER_BYTES // (idx.shape[1] * reach.shape[1]))
        for s in range(0, idx.shape[0], chunk):
            nxt[s:s + chunk] = np.bitwise_or.reduce(reach[idx[s:s + chunk]], axis=1)
        reach = nxt
        yield reach


def connectivity(indices, n_in=None):
    """float64 (len(indices),): fraction of (layer-0 input, layer-l output) pairs joined by a path.

    indices: a list of index arrays, layer l (n_l, D_l) reading the n_{l-1} outputs of
    layer l - 1.  n_in: inputs of layer 0 (default: 1 + its largest entry).
    """
    layers, n0 = _layers(indices, n_in)
    return np.array([_POPCOUNT[r].sum() / (r.shape[0] * n0) for r in _reach(layers, n0)])


def sensitivity_depth(indices, n_in=None):
    """Smallest t such that after the first t layers every output depends on every input; None if none.

    Theorem 1 of the paper: O(log n) for expanders.  A grouped pattern with more than one
    group never gets there.  Arguments as for `connectivity`.
    """
    layers, n0 = _layers(indices, n_in)
    for depth, r in enumerate(_reach(layers, n0), 1):
        if _POPCOUNT[r].sum() == r.shape[0] * n0:
            return depth
    return None


def mixing(index, n_in, *, samples=16, fraction=0.5, steps=4, seed=None):
    """Largest relative deviation |e(S, T) - mu| / mu found over sampled subset pairs (Theorem 2).

    S: round(fraction * n_in) inputs, T: round(fraction * n_out) outputs, e(S, T) the edges
    between them (with multiplicity), mu = D |S| |T| / n_in their expected number.  Each of
    `samples` draws starts from random S, T and then climbs `steps` times towards the
    densest pair (S = the |S| inputs with most edges into T, then T likewise from S) and,
    separately, towards the sparsest; every pair visited counts.  Random pairs alone would
    miss structured defects such as a grouped convolution's blocks, which the climb finds.
    For a biregular graph the expander mixing lemma bounds the result by
    sigma2 * sqrt(|S| (1 - |S|/n_in) |T| (1 - |T|/n_out)) / mu.
    """
    idx = _index(index, "index", count(n_in, "n_in"))
    samples = count(samples, "samples")
    steps = count(steps, "steps", minimum=0)
    if not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    rng = generator(seed)
    n_out, degree = idx.shape
    s_size, t_size = max(1, round(fraction * n_in)), max(1, round(fraction * n_out))
    mu = degree * s_size * t_size / n_in
    rows = np.repeat(np.arange(n_out), degree)

    def into(t_mask):  # edges from each input into T
        return np.bincount(idx.ravel(), weights=t_mask[rows], minlength=n_in)

    def top(score, size, sign):  # stable sort: ties broken by channel number, reproducibly
        mask = np.zeros(score.size)
        mask[np.argsort(-sign * score, kind="stable")[:size]] = 1.0
        return mask

    worst = 0.0
    for _ in range(samples):
        s0 = top(rng.random(n_in), s_size, 1)
        t0 = top(rng.random(n_out), t_size, 1)
        worst = max(worst, abs(into(t0) @ s0 - mu))
        for sign in (1, -1):
            t = t0
            for _ in range(steps):
                s = top(into(t), s_size, sign)
                t = top(s[idx].sum(axis=1), t_size, sign)
                worst = max(worst, abs(into(t) @ s - mu))
    return float(worst / mu)
