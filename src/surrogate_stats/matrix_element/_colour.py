"""SU(3) structure constants and the colour matrix of the Del Duca-Dixon-Maltoni basis (numpy)."""

from __future__ import annotations

import functools
import itertools

import numpy as np

__all__ = ["structure_constants", "ddm_orderings", "ddm_colour_matrix"]


@functools.cache
def structure_constants() -> np.ndarray:
    """Totally antisymmetric ``f^{abc}`` of SU(3) (Gell-Mann normalisation), shape [8, 8, 8]."""
    f = np.zeros((8, 8, 8))
    h = np.sqrt(3.0) / 2.0
    for (a, b, c), v in {(1, 2, 3): 1.0, (1, 4, 7): 0.5, (1, 5, 6): -0.5, (2, 4, 6): 0.5,
                         (2, 5, 7): 0.5, (3, 4, 5): 0.5, (3, 6, 7): -0.5, (4, 5, 8): h,
                         (6, 7, 8): h}.items():
        for (i, j, k), sign in (((a, b, c), 1), ((b, c, a), 1), ((c, a, b), 1),
                                ((b, a, c), -1), ((a, c, b), -1), ((c, b, a), -1)):
            f[i - 1, j - 1, k - 1] = sign * v
    return f


def ddm_orderings(n: int) -> list[tuple[int, ...]]:
    """Orderings ``(0, sigma..., n-1)`` with legs 0 and n-1 fixed at the ends: (n-2)! of them."""
    return [(0, *perm, n - 1) for perm in itertools.permutations(range(1, n - 1))]


@functools.cache
def ddm_colour_matrix(n: int) -> np.ndarray:
    """``C[s, s'] = sum_colours c_s c_s'^*`` for the DDM basis of n gluons, shape [(n-2)!]^2.

    The full-colour amplitude is ``M = g^(n-2) sum_s c_s A(0, s, n-1)`` with
    ``c_s = (F^{a_s1} ... F^{a_s(n-2)})_{a_0 a_(n-1)}`` and ``(F^a)_{bc} = i sqrt(2) f^{bac}``
    (generators normalised to ``Tr(T^a T^b) = delta^ab``, as for the Parke-Taylor formula).
    """
    f = structure_constants()
    F = 1j * np.sqrt(2.0) * np.transpose(f, (1, 0, 2))  # F[a, b, c] = i sqrt2 f[b, a, c]
    m = n - 2
    # chain[x_1..x_m, a0, an] = (F^{x1} ... F^{xm})_{a0 an}
    chain = F  # [x1, a0, b]
    for _ in range(1, m):
        chain = np.einsum("...ab,xbc->...xac", chain, F)
        # move the new x axis before (a0, c)
    # chain axes now: x1, x2, ..., xm, a0, an (einsum kept order ... then x)
    orderings = ddm_orderings(n)
    vecs = []
    for order in orderings:
        # position k in the chain holds leg order[k+1]; we want axes indexed by leg 1..n-2
        legs = order[1:-1]
        perm = np.argsort(legs)  # axis for leg l is the chain position where legs == l
        vecs.append(np.transpose(chain, (*perm, m, m + 1)).reshape(-1))
    V = np.stack(vecs)
    C = V @ V.conj().T
    return np.real_if_close(C, tol=1e6).real.copy()
