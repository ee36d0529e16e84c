"""The explicit expander: lines against points of the affine plane over GF(q).

Inputs are D columns of q points each, n_in = D * q: input j * q + y is the point
(x_j, y), x_j the j-th element of GF(q) (D <= q distinct ones).  Output r is the
line y = a * x + b with slope a = r // q and intercept b = r % q, so rows come in
slope classes of q lines, each class a partition of the points.  Output r reads the
D points of its line, one per column.

The full graph (all q**2 lines) has A^T A = q I + J - I_D (x) J_q: a point lies on
one line of each slope, two points of one column share no line, two points of
different columns share exactly one (the slope (y' - y) / (x' - x) is unique).  Its
singular values are therefore exactly sqrt(D q) once, sqrt(q) D(q - 1) times and 0
D - 1 times.  Keeping only the first rows cannot raise any singular value (Cauchy
interlacing for deleted rows), which gives the guarantees stated in `lines`.
"""
import numpy as np

from .finite_field import GF, prime_power


def check_shape(n_in, n_rows, degree):
    """The field size q = n_in / degree, or ValueError naming the argument that rules it out."""
    if n_in % degree:
        raise ValueError(f"degree must divide n_in for method='explicit' (n_in = degree * q), "
                         f"got n_in={n_in}, degree={degree}")
    q = n_in // degree
    if prime_power(q) is None:
        raise ValueError(f"n_in / degree must be a prime power q for method='explicit', "
                         f"got n_in={n_in}, degree={degree}, q={q}")
    if q < degree:
        raise ValueError(f"degree must be at most q = n_in / degree for method='explicit' "
                         f"(degree**2 <= n_in), got n_in={n_in}, degree={degree}")
    if n_rows > q * q:
        raise ValueError(f"n_out / block must be at most q**2 = {q * q} for method='explicit' "
                         f"with n_in={n_in}, degree={degree}, got {n_rows}")
    if degree * n_rows <= q * q:
        raise ValueError(f"method='explicit' guarantees a spectral gap only when degree * n_out / block > q**2, "
                         f"q = n_in / degree; got degree={degree}, n_out / block={n_rows}, q={q} "
                         f"(for n_out = n_in: degree**3 > n_in); use a larger degree or method='biregular'")
    return q


def lines(n_in, n_rows, degree):
    """int64 (n_rows, degree), rows ascending: the first n_rows lines of the affine plane.

    Needs n_in = degree * q with q a prime power, degree <= q, and q**2 / degree < n_rows <= q**2
    (the lower limit is where the gap below turns positive; for n_rows = n_in it reads
    n_in**(1/3) < degree <= n_in**(1/2)).  Below it nothing is guaranteed and the graph can
    fall apart: for n_in = n_rows = 256, degree 4 (q = 64) it splits into 8 components,
    since 4 slopes times 4 columns only move y within an 8-element subgroup of GF(64).
    Guarantees, with A the (n_rows, n_in) biadjacency:
    - sigma_2(A) <= sqrt(q) and sigma_1(A) >= sqrt(degree * n_rows / q) (the average degree
      product), so sigma_1 - sigma_2 >= sqrt(degree * n_rows / q) - sqrt(q) > 0;
    - two outputs share at most one input, and two inputs at most one output;
    - every input is read by floor(n_rows / q) or ceil(n_rows / q) outputs.
    """
    q = check_shape(n_in, n_rows, degree)
    field = GF(q)
    rows = np.arange(n_rows, dtype=np.int64)
    slope, intercept = rows // q, rows % q
    x = np.arange(degree, dtype=np.int64)
    y = field.add(field.mul(slope[:, None], x[None, :]), intercept[:, None])
    return x * q + y
