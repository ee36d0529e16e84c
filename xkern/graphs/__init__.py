"""Expander graphs for X-Nets and the diagnostics of the paper's sections 3.3-3.4 (numpy only).

Constructions return an int64 index (n_out, degree), usable directly as the `index`
of xkern.xconv2d / xkern.xlinear:
  expander(n_in, n_out, degree, *, method="random", seed=None, block=1)
  grouped(n_in, n_out, groups)      the grouped convolution's pattern, for comparisons
Diagnostics:
  spectral_gap(index, n_in)         sigma1, sigma2, gap and the bipartite Ramanujan bound
  sensitivity_depth(indices)        layers until every output depends on every input
  connectivity(indices)             fraction of connected input-output pairs per depth
  mixing(index, n_in)               largest relative deviation of e(S, T) from D|S||T|/n
"""
from .constructions import METHODS, expander, grouped
from .diagnostics import SpectralGap, biadjacency, connectivity, mixing, sensitivity_depth, spectral_gap

__all__ = ["METHODS", "expander", "grouped", "SpectralGap", "biadjacency", "spectral_gap",
           "connectivity", "sensitivity_depth", "mixing"]
