"""Arithmetic in the finite field GF(q), q = p**k, on numpy integer arrays.

An element is encoded as the integer sum_i c_i * p**i, c_i in [0, p): the polynomial
sum_i c_i t**i reduced modulo a fixed monic irreducible polynomial of degree k (the
smallest one in that same encoding, so every run builds the same field).  For k = 1
this is plain arithmetic mod p.  Only what the explicit expander needs: +, *.
"""
import numpy as np


def prime_power(q):
    """(p, k) with q = p**k and p prime, or None when q is not a prime power."""
    if q < 2:
        return None
    p = 2
    while p * p <= q and q % p:
        p += 1
    if q % p:
        p = q  # no factor up to sqrt(q): q is prime
    k = 0
    while q % p == 0:
        q //= p
        k += 1
    return (p, k) if q == 1 else None


def _poly_mod_is_zero(num, den, p):
    """Whether den divides num; both are coefficient lists, lowest degree first, den monic."""
    num = list(num)
    for top in range(len(num) - 1, len(den) - 2, -1):
        c = num[top]
        if c:
            shift = top - len(den) + 1
            for i, d in enumerate(den):
                num[shift + i] = (num[shift + i] - c * d) % p
    return not any(num)


def _digits(value, p, k):
    return [(value // p ** i) % p for i in range(k)]


def irreducible(p, k):
    """Coefficients (lowest first, k + 1 of them, monic) of the smallest irreducible of degree k.

    A polynomial of degree k is irreducible iff no monic polynomial of degree 1..k//2
    divides it; trial division is cheap for the field sizes used here.
    """
    for low in range(p ** k):
        f = _digits(low, p, k) + [1]
        if f[0] == 0 and k > 1:
            continue  # divisible by t
        if all(not _poly_mod_is_zero(f, _digits(g, p, d) + [1], p)
               for d in range(1, k // 2 + 1) for g in range(p ** d)):
            return f
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")  # cannot happen


class GF:
    """GF(q) for a prime power q; add and mul act elementwise on int64 arrays of encodings."""

    def __init__(self, q):
        pk = prime_power(q)
        if pk is None:
            raise ValueError(f"GF(q) needs a prime power q, got {q}")
        self.q = q
        self.p, self.k = pk
        self.modulus = irreducible(self.p, self.k)
        self._powers = self.p ** np.arange(self.k, dtype=np.int64)

    def _split(self, a):
        return (np.asarray(a, dtype=np.int64)[..., None] // self._powers) % self.p

    def _join(self, digits):
        return (digits * self._powers).sum(axis=-1)

    def add(self, a, b):
        return self._join((self._split(a) + self._split(b)) % self.p)

    def mul(self, a, b):
        p, k = self.p, self.k
        da, db = np.broadcast_arrays(self._split(a), self._split(b))
        prod = np.zeros(da.shape[:-1] + (2 * k - 1,), dtype=np.int64)
        for i in range(k):
            prod[..., i:i + k] += da[..., i:i + 1] * db
        prod %= p
        # t**k = -(modulus[0] + ... + modulus[k-1] t**(k-1)): fold the high terms down.
        for top in range(2 * k - 2, k - 1, -1):
            c = prod[..., top:top + 1]
            prod[..., top - k:top] = (prod[..., top - k:top] - c * np.array(self.modulus[:k])) % p
            prod[..., top] = 0
        return self._join(prod[..., :k])
