"""Physics-aware inputs and singular factors of the |M|^2 surrogate, written once as a spec.

The same spec drives the JAX forward pass and the ONNX graph: Lorentz invariants
``2 p_i . p_j`` of the chosen pairs (and sums of them for 3-particle invariants of outgoing
triples) divided by ``s``, logged and standardised; a singular factor ``F`` whose log is
``logsumexp`` of linear combinations of the logged invariants. The network learns
``ln(|M|^2 / F)``.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

__all__ = ["FeatureSpec", "feature_spec", "FACTORS"]

FACTORS = ("none", "eikonal", "antenna", "mhv")


class FeatureSpec:
    """Selection matrices of one process (pure numpy; JSON-able through :meth:`to_dict`).

    Attributes:
        n: number of particles (2 + n_out).
        select: ``[n*n, K]`` 0/1 matrix, invariants ``I = D_flat @ select`` (``D = 2 p.p``).
        factor_terms: ``[T, K]`` coefficients; ``ln F = ln sum_t exp(c_t . ln(I/s))``
            (empty T means ``F = 1``).
        factor_extra: ``[U, K]`` coefficients of a second log-sum-exp added to ``ln F``
            (the MHV numerator ``sum s_ab^4``); empty means none.
    """

    def __init__(self, n, select, factor_terms, factor_extra, factor):
        self.n = int(n)
        self.select = np.asarray(select, dtype=np.float64)
        self.factor_terms = np.asarray(factor_terms, dtype=np.float64).reshape(-1, self.k)
        self.factor_extra = np.asarray(factor_extra, dtype=np.float64).reshape(-1, self.k)
        self.factor = factor

    @property
    def k(self) -> int:
        return self.select.shape[1]

    def invariants_np(self, p: np.ndarray) -> np.ndarray:
        """``ln(I / s)`` ``[N, K]`` in numpy (float64)."""
        pm = p * np.array([1.0, -1.0, -1.0, -1.0])
        d = 2.0 * np.einsum("eia,eja->eij", p, pm).reshape(p.shape[0], -1)
        s = d[:, 1:2]
        return np.log(np.maximum((d @ self.select) / s, 1e-300))

    def log_factor_np(self, logi: np.ndarray) -> np.ndarray:
        out = np.zeros(logi.shape[0])
        for mat in (self.factor_terms, self.factor_extra):
            if mat.shape[0]:
                z = logi @ mat.T
                zmax = z.max(axis=1, keepdims=True)
                out += (zmax + np.log(np.exp(z - zmax).sum(axis=1, keepdims=True)))[:, 0]
        return out

    def invariants_jax(self, p):
        jnp = __import__("jax.numpy", fromlist=["numpy"])
        pm = p * jnp.array([1.0, -1.0, -1.0, -1.0], dtype=p.dtype)
        d = 2.0 * jnp.einsum("eia,eja->eij", p, pm).reshape(p.shape[0], -1)
        s = d[:, 1:2]
        return jnp.log(jnp.maximum((d @ jnp.asarray(self.select, p.dtype)) / s, 1e-300))

    def log_factor_jax(self, logi):
        jax = __import__("jax")
        out = 0.0
        for mat in (self.factor_terms, self.factor_extra):
            if mat.shape[0]:
                z = logi @ jax.numpy.asarray(mat.T, logi.dtype)
                out = out + jax.nn.logsumexp(z, axis=1)
        return out + jax.numpy.zeros(logi.shape[0], logi.dtype)

    def to_dict(self) -> dict:
        return {"n": self.n, "factor": self.factor}


@functools.cache
def _pairs(n: int, n_in: int = 2):
    return [(i, j) for i in range(n) for j in range(i + 1, n) if (i, j) != (0, 1)]


def feature_spec(process_name: str, n: int, factor: str) -> FeatureSpec:
    """The :class:`FeatureSpec` of a process with ``n`` particles and singular ``factor``.

    Factors: ``none`` (F = 1); ``eikonal`` (``s^2 / (s_qg s_qbar g)`` with the gluon last and
    the quarks at 2, 3); ``antenna`` (``sum_sigma prod_k s / s_(sigma_k sigma_k+1)`` over the
    (n-1)! colour orderings); ``mhv`` (``antenna`` times ``sum_(a<b) (s_ab/s)^4``, the
    Parke-Taylor helicity sum, exact for n <= 5).
    """
    if factor not in FACTORS:
        from surrogate_stats.errors import InvalidInput

        raise InvalidInput(f"factor must be one of {FACTORS}; got {factor!r}")
    pairs = _pairs(n)
    cols = []
    for i, j in pairs:
        c = np.zeros(n * n)
        c[i * n + j] = 1.0
        cols.append(c)
    for tri in itertools.combinations(range(2, n), 3) if n - 2 >= 4 else ():
        c = np.zeros(n * n)
        for i, j in itertools.combinations(tri, 2):
            c[i * n + j] = 1.0
        cols.append(c)
    select = np.stack(cols, axis=1)
    k = select.shape[1]
    index = {pr: m for m, pr in enumerate(pairs)}

    def col(i, j):
        i, j = min(i, j), max(i, j)
        return index.get((i, j))  # (0, 1) -> None: ln(s/s) = 0

    terms, extra = [], []
    if factor == "eikonal":
        t = np.zeros(k)
        t[col(2, n - 1)] -= 1.0
        t[col(3, n - 1)] -= 1.0
        terms.append(t)
    elif factor in ("antenna", "mhv"):
        for perm in itertools.permutations(range(1, n)):
            order = (0, *perm)
            t = np.zeros(k)
            for a in range(n):
                c = col(order[a], order[(a + 1) % n])
                if c is not None:
                    t[c] -= 1.0
            terms.append(t)
        if factor == "mhv":
            for i, j in itertools.combinations(range(n), 2):
                t = np.zeros(k)
                c = col(i, j)
                if c is not None:
                    t[c] = 4.0
                extra.append(t)
    return FeatureSpec(n, select, np.array(terms).reshape(-1, k), np.array(extra).reshape(-1, k),
                       factor)


DEFAULT_FACTOR = {"ee_mumu": "none", "ee_qqg": "eikonal", "gg_gg": "antenna",
                  "gg_ggg": "antenna", "gg_gggg": "mhv"}
