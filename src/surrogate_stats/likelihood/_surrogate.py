"""The profiled-likelihood surrogate: evaluation with numpy (+ onnxruntime for big batches).

Nothing here imports jax, pyhf or scipy: a published surrogate needs numpy and onnxruntime.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from surrogate_stats._checks import as_mu_array
from surrogate_stats.errors import ExtrapolationError, ExtrapolationWarning, InvalidInput

__all__ = ["MLPWeights", "ProfileLikelihoodSurrogate", "DATASETS"]

DATASETS = ("observed", "expected")
CHUNK = 2048  # points per numpy block: keeps the hidden activations in cache (~2x faster)


@dataclass(frozen=True)
class MLPWeights:
    """One data set's network: -2 ln lambda ~ a (mu - m)^2 + scale * MLP(x) - F(mu_hat).

    ``layers`` are (W, b) pairs with W of shape (n_in, n_out); hidden layers use tanh.
    """

    layers: list
    a: float
    m: float
    scale: float


class ProfileLikelihoodSurrogate:
    """Profiled likelihood of one signal point, as learnt from pyhf, for mu in ``domain``.

    ``nll`` uses pyhf's normalisation (``twice_nll / 2``); ``tmu`` is -2 ln lambda(mu) =
    2 (nll(mu) - nll(mu_hat)) with mu_hat bounded below by the domain's lower end (pyhf's
    qtilde convention). ``expected=True`` selects pyhf's Asimov data for expected limits
    (background-only fit to the observed data, mu = 0).

    A scalar mu returns a float, an array an array of the same shape. Outside ``domain`` an
    :class:`ExtrapolationWarning` is issued (``on_extrapolation="warn"``), or an
    :class:`ExtrapolationError` raised (``"raise"``), or nothing (``"ignore"``).

    Example:
        >>> s = load_surrogate("onnx_models/3L-eRJR_ERJR_500p0_0p0")   # doctest: +SKIP
        >>> s.tmu(1.0), s.upper_limit()                                # doctest: +SKIP
    """

    kind = "profile_likelihood"

    def __init__(self, weights: dict, *, domain, mu_hat: dict, nll_min: dict,
                 f_hat: dict | None = None, on_extrapolation: str = "warn", session=None,
                 metadata: dict | None = None):
        if on_extrapolation not in ("warn", "raise", "ignore"):
            raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                               f"{on_extrapolation!r}")
        self._weights = weights
        self._domain = (float(domain[0]), float(domain[1]))
        self._center = 0.5 * (self._domain[0] + self._domain[1])
        self._inv_half = 2.0 / (self._domain[1] - self._domain[0])
        self._mu_hat = {d: float(mu_hat[d]) for d in DATASETS}
        self._nll_min = {d: float(nll_min[d]) for d in DATASETS}
        self.on_extrapolation = on_extrapolation
        self._session = session
        self.metadata = metadata or {}
        # fast path: biases folded into the matrices (homogeneous coordinates: a constant unit
        # tanh(40) == 1.0 rides along each layer), so one call is few numpy operations
        self._fast = {d: _augment(weights[d]) for d in DATASETS}
        # the network's value at mu_hat, subtracted so that tmu(mu_hat) = 0; stored in the
        # artifact, because numpy's SIMD tanh differs in the last bits between CPUs and a
        # rebuilt graph must carry the published constant
        self._f_hat = {d: 0.0 for d in DATASETS}
        if f_hat is None:
            f_hat = {d: self._raw_scalar(self._mu_hat[d], d) for d in DATASETS}
        self._f_hat = {d: float(f_hat[d]) for d in DATASETS}

    @classmethod
    def from_parts(cls, weights, *, domain, mu_hat, nll_min, **kwargs):
        return cls(weights, domain=domain, mu_hat=mu_hat, nll_min=nll_min, **kwargs)

    # -- properties -------------------------------------------------------------------------
    @property
    def domain(self) -> tuple[float, float]:
        """(mu_min, mu_max) the surrogate was trained on."""
        return self._domain

    @property
    def mu_hat(self) -> float:
        """Best-fit mu on the observed data (bounded below by ``domain[0]``)."""
        return self._mu_hat["observed"]

    @property
    def mu_hat_expected(self) -> float:
        """Best-fit mu on the Asimov data (0 up to fit precision)."""
        return self._mu_hat["expected"]

    @property
    def nll_min(self) -> float:
        """Unconditional minimum of the NLL on the observed data (pyhf's twice_nll / 2)."""
        return self._nll_min["observed"]

    @property
    def parameter_domain(self) -> dict:
        return {"mu": self._domain}

    def export_arrays(self) -> dict:
        """Both networks as named float64 arrays, the layout of an artifact's weights.npz.

        Per data set: ``<data>.prior`` = (a, m, scale), ``<data>.W<i>``, ``<data>.b<i>``.
        """
        out = {}
        for d in DATASETS:
            w = self._weights[d]
            out[f"{d}.prior"] = np.array([w.a, w.m, w.scale])
            for i, (a, b) in enumerate(w.layers):
                out[f"{d}.W{i}"] = np.asarray(a, dtype=float)
                out[f"{d}.b{i}"] = np.asarray(b, dtype=float)
        return out

    # -- evaluation -------------------------------------------------------------------------
    def _raw_scalar(self, mu: float, d: str) -> float:
        first, hidden, last, a, m, scale = self._fast[d]
        # ndarray.dot is about twice as fast as @ on vectors this small
        h = np.tanh(first[0] * ((mu - self._center) * self._inv_half) + first[1])
        for w in hidden:
            h = np.tanh(h.dot(w))
        return a * (mu - m) ** 2 + scale * float(h.dot(last)) - self._f_hat[d]

    def _raw_array(self, mu: np.ndarray, d: str) -> np.ndarray:
        # numpy in cache-sized blocks beats onnxruntime's float64 Tanh here (benchmarks/)
        first, hidden, last, a, m, scale = self._fast[d]
        flat = mu.reshape(-1)
        out = np.empty_like(flat)
        for start in range(0, flat.size, CHUNK):
            x = flat[start:start + CHUNK]
            xs = np.stack(((x - self._center) * self._inv_half, np.ones_like(x)), axis=1)
            h = np.tanh(xs @ first)
            for w in hidden:
                h = np.tanh(h @ w)
            out[start:start + CHUNK] = a * (x - m) ** 2 + scale * (h @ last)
        out -= self._f_hat[d]
        return np.maximum(out, 0.0).reshape(mu.shape)

    def _check_domain(self, lo: float, hi: float) -> None:
        if lo < self._domain[0] or hi > self._domain[1]:
            msg = (f"mu in [{lo:g}, {hi:g}] is outside the trained domain "
                   f"[{self._domain[0]:g}, {self._domain[1]:g}]; the surrogate is extrapolating")
            if self.on_extrapolation == "raise":
                raise ExtrapolationError(msg + " (on_extrapolation='raise')")
            if self.on_extrapolation == "warn":
                warnings.warn(msg, ExtrapolationWarning, stacklevel=4)

    def _tmu(self, mu, d: str):
        if type(mu) is float or (isinstance(mu, numbers.Real) and not isinstance(mu, bool)):
            mu = float(mu)
            if not math.isfinite(mu):
                raise InvalidInput(f"mu must be finite; got {mu}")
            if not self._domain[0] <= mu <= self._domain[1]:
                self._check_domain(mu, mu)
            return max(self._raw_scalar(mu, d), 0.0)
        arr = as_mu_array(mu)
        if arr.size:
            self._check_domain(float(arr.min()), float(arr.max()))
        return self._raw_array(arr, d)

    def tmu(self, mu, *, expected: bool = False):
        """-2 ln lambda(mu) = 2 (nll(mu) - nll(mu_hat)), >= 0."""
        return self._tmu(mu, "expected" if expected else "observed")

    def nll(self, mu, *, expected: bool = False):
        """-ln L(mu, profiled nuisances), with pyhf's normalisation (twice_nll / 2)."""
        d = "expected" if expected else "observed"
        return self._nll_min[d] + 0.5 * self._tmu(mu, d)

    def cls(self, mu, *, test_stat: str = "qtilde"):
        """Asymptotic CLs at ``mu``: (observed, [5 expected]) as pyhf's hypotest gives them.

        Floats for a scalar mu, arrays for an array (see :func:`surrogate_stats.infer.hypotest`
        for pyhf's exact return shapes).
        """
        from surrogate_stats.infer._hypotest import hypotest

        obs, exp = hypotest(mu, self, test_stat=test_stat, return_expected_set=True)
        if np.ndim(mu) == 0:
            return float(obs), [float(c) for c in exp]
        return obs, np.stack(exp)

    def upper_limit(self, level: float = 0.05, *, test_stat: str = "qtilde"):
        """Asymptotic CLs upper limits: ``(observed, [expected -2s, -1s, median, +1s, +2s])``.

        Same conventions as ``pyhf.infer.intervals.upper_limits.upper_limit`` (qtilde, root
        finding); see :func:`surrogate_stats.infer.upper_limit`.
        """
        from surrogate_stats.infer._hypotest import upper_limit

        obs, exp = upper_limit(self, level, test_stat=test_stat)
        return float(obs), [float(x) for x in exp]

    def __repr__(self) -> str:
        name = self.metadata.get("name") or "in-memory"
        return (f"ProfileLikelihoodSurrogate({name!r}, domain={self._domain}, "
                f"mu_hat={self.mu_hat:.4g})")


def _augment(w: MLPWeights):
    """(first [2, H+1], hidden [(H+1, H+1)...], last [H+1], a, m, scale) with folded biases."""
    big = 40.0  # tanh(40.0) == 1.0 exactly in float64
    w0, b0 = w.layers[0]
    h = w0.shape[1]
    first = np.zeros((2, h + 1))  # rows: weight of x, bias (contiguous rows)
    first[0, :h], first[1, :h], first[1, h] = w0[0], b0, big
    hidden = []
    for wk, bk in w.layers[1:-1]:
        n_in, n_out = wk.shape
        aug = np.zeros((n_in + 1, n_out + 1))
        aug[:n_in, :n_out], aug[n_in, :n_out], aug[n_in, n_out] = wk, bk, big
        hidden.append(aug)
    wl, bl = w.layers[-1]
    last = np.concatenate([wl[:, 0], bl])
    return first, hidden, last, w.a, w.m, w.scale
