"""Yield-parametrised likelihood surrogates: one network for every signal model of an analysis.

The signal enters the HistFactory model through a normalisation factor only, so the profiled
-ln L of each data set is a function of the per-bin signal yields ``y = mu * s`` alone:

    nll_d(mu, s) = nll0_d + base_d(mu s) + r_d(mu s)

``base_d`` (:class:`YieldBaseline`) is a closed-form approximation built from the exact
profiled gradient and Hessian in the yields at zero signal: per bin, an effective Poisson term
with the same first and second derivatives (it grows linearly, like a Poisson likelihood, for
large signals), plus the off-diagonal part of the profiled Hessian. ``r_d`` is a tanh MLP (zero
at y = 0) that learns the rest. Everything here is numpy (and onnxruntime for the
published graph): no jax, pyhf or scipy.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from surrogate_stats._checks import as_mu_array
from surrogate_stats.errors import ExtrapolationError, ExtrapolationWarning, InvalidInput

__all__ = ["YieldBaseline", "YieldNetwork", "YieldLikelihood", "YieldLikelihoodSurrogate",
           "SignalLikelihood", "DATASETS", "EXPECTED_CHOICES"]

DATASETS = ("observed", "apriori", "observed_asimov", "apriori_asimov")
# ``expected=`` -> (data set of the test statistic, data set of its Asimov partner)
EXPECTED_CHOICES = {
    False: ("observed", "observed_asimov"), "observed": ("observed", "observed_asimov"),
    True: ("observed_asimov", "observed_asimov"),
    "aposteriori": ("observed_asimov", "observed_asimov"),
    "observed_asimov": ("observed_asimov", "observed_asimov"),
    "apriori": ("apriori", "apriori_asimov"),
    "apriori_asimov": ("apriori_asimov", "apriori_asimov"),
}
CHUNK = 4096
_GRID = np.concatenate([[0.0], np.geomspace(1e-4, 1.0, 47)])  # ray-minimum search grid


@dataclass(frozen=True)
class YieldBaseline:
    """``base_d(y) = sum_b c [y - n log(1 + y / b)] + lin . y + y^T quad y / 2``, per data set.

    Arrays: ``c``, ``n``, ``b``, ``lin`` (4, B) and ``quad`` (4, B, B); ``b > 0``.
    """

    c: np.ndarray
    n: np.ndarray
    b: np.ndarray
    lin: np.ndarray
    quad: np.ndarray

    def __call__(self, y: np.ndarray) -> np.ndarray:
        ratio = np.maximum(y[:, None, :] / self.b[None], -0.999999)
        pois = np.sum(self.c[None] * (y[:, None, :] - self.n[None] * np.log1p(ratio)), axis=2)
        quad = 0.5 * np.einsum("nb,dbc,nc->nd", y, self.quad, y)
        return pois + y @ self.lin.T + quad

    def radial(self, y: np.ndarray) -> np.ndarray:
        """``y . grad base_d(y)`` (N, 4): the derivative along each point's signal ray."""
        ratio = np.maximum(y[:, None, :] / self.b[None], -0.999999)
        pois = np.sum(self.c[None] * y[:, None, :] * (1.0 - self.n[None] / (self.b[None] * (
            1.0 + ratio))), axis=2)
        return pois + y @ self.lin.T + np.einsum("nb,dbc,nc->nd", y, self.quad, y)

    @classmethod
    def zero(cls, n_datasets: int, n_bins: int) -> YieldBaseline:
        """The baseline that is identically zero."""
        z = np.zeros((n_datasets, n_bins))
        return cls(c=z, n=z.copy(), b=np.ones_like(z), lin=z.copy(),
                   quad=np.zeros((n_datasets, n_bins, n_bins)))

    @classmethod
    def effective_poisson(cls, gradient, information) -> YieldBaseline:
        """Matched to the exact gradient (4, B) and profiled Hessian (4, B, B) at y = 0.

        Per bin: ``c (y - n log(1 + y/b))`` has slope ``1 - n/b`` and curvature ``n/b^2``;
        ``c = 1``, ``n/b = 1 - gradient``, ``n/b^2 = I_bb``. Bins where that is impossible
        (slope >= 1, i.e. data far below background, or no curvature) fall back to the
        quadratic ``gradient y + I_bb y^2 / 2``.
        """
        g = np.asarray(gradient, dtype=float)
        info = np.asarray(information, dtype=float)
        diag = np.einsum("dbb->db", info)
        ratio = 1.0 - g  # n / b
        ok = (ratio > 1e-3) & (diag > 0)
        b = np.where(ok, ratio / np.where(ok, diag, 1.0), 1.0)
        n = np.where(ok, ratio * b, 0.0)
        c = ok.astype(float)
        lin = np.where(ok, 0.0, g)
        quad = info - np.einsum("db,bc->dbc", np.where(ok, diag, 0.0), np.eye(g.shape[1]))
        return cls(c=c, n=n, b=b, lin=lin, quad=quad)


@dataclass(frozen=True)
class YieldNetwork:
    """Weights of the residual network and its input/output scalings (numpy arrays).

    ``features(y) = ([u, log1p(u)] - mean) / std`` with ``u = y / scale``; hidden layers are
    tanh; the output (one column per data set) is multiplied by ``out_scale`` and its value at
    y = 0 subtracted.
    """

    layers: tuple  # ((W, b), ...), W (n_in, n_out)
    scale: np.ndarray  # (B,)
    mean: np.ndarray  # (2B,)
    std: np.ndarray  # (2B,)
    out_scale: np.ndarray  # (4,)

    def features(self, y: np.ndarray) -> np.ndarray:
        u = y / self.scale
        return (np.concatenate([u, np.log1p(np.maximum(u, -0.999))], axis=-1) - self.mean
                ) / self.std

    def raw(self, z: np.ndarray) -> np.ndarray:
        h = z
        for w, b in self.layers[:-1]:
            h = np.tanh(h @ w + b)
        w, b = self.layers[-1]
        return (h @ w + b) * self.out_scale


class YieldLikelihood:
    """The part of a yield-parametrised likelihood that does not depend on how it is computed.

    Subclasses provide :meth:`delta_nll` (``-ln L(y) - -ln L(0)`` for the four data sets, in
    :data:`DATASETS` order) and call :meth:`_init_common`; the checks, the best fits along a
    signal's ray, ``tmu``, ``nll`` and upper limits are here.
    """

    kind = "yield_likelihood"

    def _init_common(self, *, bins, nll0, y_max, prefit, on_extrapolation, metadata):
        if on_extrapolation not in ("warn", "raise", "ignore"):
            raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                               f"{on_extrapolation!r}")
        self._bins = tuple(bins)
        self._nll0 = np.asarray(nll0, dtype=float)
        self._y_max = np.asarray(y_max, dtype=float)
        self._prefit = np.asarray(prefit, dtype=float)
        self.on_extrapolation = on_extrapolation
        self.metadata = metadata or {}
        self._cache: OrderedDict = OrderedDict()

    def delta_nll(self, y) -> np.ndarray:  # pragma: no cover - provided by subclasses
        raise NotImplementedError

    # -- properties ---------------------------------------------------------------------------
    @property
    def bins(self) -> tuple:
        """Bin names ``<channel>-<i>``, the order of every signal vector."""
        return self._bins

    @property
    def n_bins(self) -> int:
        return len(self._bins)

    @property
    def y_max(self) -> np.ndarray:
        """Largest signal yield per bin in the training data (the domain is 0..y_max)."""
        return self._y_max.copy()

    @property
    def background(self) -> np.ndarray:
        """The background at pyhf's nominal parameters, per bin (OLLL's ``bkg_yields``)."""
        return self._prefit.copy()

    def nll_zero(self, expected=False) -> float:
        """-ln L without signal on the selected data set."""
        return float(self._nll0[DATASETS.index(_dataset(expected)[0])])

    # -- the function -------------------------------------------------------------------------
    def _signal(self, signal) -> np.ndarray:
        if isinstance(signal, dict):
            unknown = sorted(set(signal) - set(self._bins))
            missing = [b for b in self._bins if b not in signal]
            if unknown or missing:
                raise InvalidInput(
                    f"signal yields must name the {self.n_bins} bins ({', '.join(self._bins)})"
                    + (f"; unknown: {unknown}" if unknown else "")
                    + (f"; missing: {missing}" if missing else ""))
            signal = [signal[b] for b in self._bins]
        try:
            arr = np.asarray(signal, dtype=float)
        except (TypeError, ValueError):
            raise InvalidInput(f"signal yields must be numbers for the {self.n_bins} bins "
                               f"({', '.join(self._bins)}); got {type(signal).__name__}") from None
        if arr.ndim != 1 or arr.shape[0] != self.n_bins:
            got = arr.shape[-1] if arr.ndim else "a scalar"
            raise InvalidInput(f"expected signal yields for {self.n_bins} bins "
                               f"({', '.join(self._bins)}); got {got}"
                               + (f" (shape {arr.shape})" if arr.ndim > 1 else ""))
        bad = [self._bins[i] for i in np.flatnonzero(~np.isfinite(arr))]
        if bad:
            raise InvalidInput(f"signal yields must be finite; not in bins {bad}")
        return arr

    def _yields(self, mu, signal):
        """(mu array, y (N, B)) after the checks on total yields and the trained domain."""
        s = self._signal(signal)
        mu_arr = as_mu_array(mu)
        y = mu_arr.reshape(-1, 1) * s[None, :]
        total = self._prefit[None, :] + y
        neg = np.flatnonzero((total < 0).any(axis=0))
        if neg.size:
            names = [self._bins[i] for i in neg]
            raise InvalidInput(f"negative total yields (background + mu * signal) in bins "
                               f"{names}; the likelihood needs non-negative expected yields")
        self._check_domain(y)
        return mu_arr, y

    def _check_domain(self, y: np.ndarray) -> None:
        tol = 1e-9 * np.maximum(self._y_max, 1.0)
        low = np.flatnonzero((y < -tol).any(axis=0))
        high = np.flatnonzero((y > self._y_max + tol).any(axis=0))
        if not (low.size or high.size):
            return
        parts = []
        if low.size:
            parts.append(f"negative signal yields in {[self._bins[i] for i in low]}")
        if high.size:
            parts.append("signal yields above the trained maximum in "
                         + ", ".join(f"{self._bins[i]} (max {self._y_max[i]:.4g})"
                                     for i in high))
        msg = "; ".join(parts) + "; the surrogate is extrapolating"
        if self.on_extrapolation == "raise":
            raise ExtrapolationError(msg + " (on_extrapolation='raise')")
        if self.on_extrapolation == "warn":
            warnings.warn(msg, ExtrapolationWarning, stacklevel=4)

    def nll(self, mu, *, signal, expected=False):
        """-ln L(mu * signal, profiled nuisances) with pyhf's normalisation (twice_nll / 2)."""
        d = DATASETS.index(_dataset(expected)[0])
        mu_arr, y = self._yields(mu, signal)
        out = self._nll0[d] + self.delta_nll(y)[:, d]
        return _shaped(out, mu, mu_arr)

    def best_fit(self, signal, *, expected=False) -> tuple[float, float]:
        """``(mu_hat, nll(mu_hat))`` with mu_hat >= 0 (pyhf's bounded best fit), on the ray."""
        s = self._signal(signal)
        return self._ray_min(s, DATASETS.index(_dataset(expected)[0]))

    def _mu_top(self, s: np.ndarray) -> float:
        pos = s > 0
        if not pos.any():
            return 0.0
        return float(np.min(self._y_max[pos] / s[pos]))

    def _ray_min(self, s: np.ndarray, d: int) -> tuple[float, float]:
        key = (s.tobytes(), d)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        top = self._mu_top(s)
        if top <= 0:
            res = (0.0, float(self._nll0[d]))
        else:
            mus = _GRID * top
            vals = self.delta_nll(mus[:, None] * s[None, :])[:, d]
            i = int(np.argmin(vals))
            lo, hi = mus[max(i - 1, 0)], mus[min(i + 1, mus.size - 1)]
            g = (math.sqrt(5) - 1) / 2
            a, b = lo, hi
            c, e = b - g * (b - a), a + g * (b - a)
            fc, fe = (self.delta_nll(np.array([[c], [e]]) * s[None, :])[:, d])
            for _ in range(40):
                if fc < fe:
                    b, e, fe = e, c, fc
                    c = b - g * (b - a)
                    fc = self.delta_nll((c * s)[None, :])[0, d]
                else:
                    a, c, fc = c, e, fe
                    e = a + g * (b - a)
                    fe = self.delta_nll((e * s)[None, :])[0, d]
                if b - a < 1e-10 * max(top, 1e-300):
                    break
            best_mu, best = (c, fc) if fc < fe else (e, fe)
            if vals[i] <= best:
                best_mu, best = mus[i], vals[i]
            res = (float(best_mu), float(self._nll0[d] + best))
        self._cache[key] = res
        if len(self._cache) > 256:
            self._cache.popitem(last=False)
        return res

    def tmu(self, mu, *, signal, expected=False):
        """-2 ln lambda(mu) = 2 (nll(mu) - nll(mu_hat)) >= 0, mu_hat >= 0 on the same ray."""
        d = DATASETS.index(_dataset(expected)[0])
        mu_arr, y = self._yields(mu, signal)
        _, nll_hat = self._ray_min(self._signal(signal), d)
        out = np.maximum(2.0 * (self._nll0[d] + self.delta_nll(y)[:, d] - nll_hat), 0.0)
        return _shaped(out, mu, mu_arr)

    def for_signal(self, signal, *, expected=False) -> SignalLikelihood:
        """A profiled likelihood in mu for this signal (works with :mod:`surrogate_stats.infer`)."""
        return SignalLikelihood(self, self._signal(signal), expected)

    def upper_limit(self, level: float = 0.05, *, signal, expected=False,
                    test_stat: str = "qtilde"):
        """Asymptotic CLs upper limit on mu: ``(observed, [expected -2s ... +2s])``.

        pyhf's conventions (qtilde, root finding). ``expected=False`` uses the observed data and
        pyhf's post-fit Asimov data; ``expected="apriori"`` the a-priori data and its Asimov.
        """
        from surrogate_stats.infer._hypotest import upper_limit

        obs, exp = upper_limit(self.for_signal(signal, expected=expected), level,
                               test_stat=test_stat)
        return float(obs), [float(x) for x in exp]

    def __repr__(self) -> str:
        name = self.metadata.get("name") or "in-memory"
        return f"{type(self).__name__}({name!r}, bins={list(self._bins)})"


class YieldLikelihoodSurrogate(YieldLikelihood):
    """Profiled -ln L of one analysis as a function of the per-bin signal yields.

    Args (built by training or :func:`load_surrogate`):
        bins: bin names ``<channel>-<i>`` in the order signal vectors use.
        network: the residual :class:`YieldNetwork`.
        baseline: the closed-form :class:`YieldBaseline`.
        nll0: (4,) -ln L at zero signal.
        y_max: (B,) the largest signal yield per bin seen in training (the trained domain is
            ``0 <= y <= y_max``).
        prefit: (B,) the background at pyhf's nominal parameters (for the total-yield check).

    Evaluation (``signal``: per-bin yields as an array in :attr:`bins` order or a dict
    ``{bin: yield}``; ``mu``: a number or an array):

        >>> s = load_surrogate("onnx_models/sbottom-RegionA_yields")        # doctest: +SKIP
        >>> s.bins                                                           # doctest: +SKIP
        >>> s.nll(1.0, signal=yields), s.tmu([0.5, 1, 2], signal=yields)     # doctest: +SKIP
        >>> s.upper_limit(signal=yields)                                     # doctest: +SKIP

    ``expected`` selects the data set: ``False`` the observed data, ``True`` (or
    ``"aposteriori"``) pyhf's Asimov data from the background-only fit to the observed data,
    ``"apriori"`` the background prediction at nominal nuisance parameters, and
    ``"apriori_asimov"`` the Asimov data built from that.
    """

    def __init__(self, *, bins, network: YieldNetwork, baseline: YieldBaseline, nll0, y_max,
                 prefit, on_extrapolation: str = "warn", session=None,
                 metadata: dict | None = None):
        self._init_common(bins=bins, nll0=nll0, y_max=y_max, prefit=prefit,
                          on_extrapolation=on_extrapolation, metadata=metadata)
        self._net = network
        self._base = baseline
        self._session = session
        self._z0 = network.raw(network.features(np.zeros((1, len(self._bins)))))[0]

    def delta_nll(self, y) -> np.ndarray:
        """-ln L(y) - -ln L(0) of all four data sets, (N, 4), for signal yields y (N, B)."""
        y = np.asarray(y, dtype=float)
        out = np.empty((y.shape[0], len(DATASETS)))
        for start in range(0, y.shape[0], CHUNK):
            block = y[start:start + CHUNK]
            res = self._net.raw(self._net.features(block)) - self._z0
            out[start:start + CHUNK] = self._base(block) + res
        return out


class SignalLikelihood:
    """One signal's profiled likelihood in mu, viewed through a yield surrogate.

    Has what :mod:`surrogate_stats.infer` needs (``nll``, ``tmu``, ``domain``, ``mu_hat``,
    ``mu_hat_expected``), so ``infer.hypotest(mu, s.for_signal(yields))`` works.
    """

    def __init__(self, surrogate: YieldLikelihood, signal: np.ndarray, expected):
        self._s = surrogate
        self._signal = signal
        self._data, self._asimov = _dataset(expected)
        top = surrogate._mu_top(signal)
        if top <= 0:
            raise InvalidInput("the signal has no positive yield in any bin: there is no mu to "
                               "test")
        self._domain = (0.0, top)

    @property
    def domain(self) -> tuple[float, float]:
        """mu from 0 to where a bin's yield reaches the trained maximum."""
        return self._domain

    @property
    def mu_hat(self) -> float:
        return self._s._ray_min(self._signal, DATASETS.index(self._data))[0]

    @property
    def mu_hat_expected(self) -> float:
        return self._s._ray_min(self._signal, DATASETS.index(self._asimov))[0]

    def nll(self, mu, *, expected: bool = False):
        return self._s.nll(mu, signal=self._signal,
                           expected=self._asimov if expected else self._data)

    def tmu(self, mu, *, expected: bool = False):
        return self._s.tmu(mu, signal=self._signal,
                           expected=self._asimov if expected else self._data)


def _dataset(expected) -> tuple[str, str]:
    key = expected
    if isinstance(expected, (bool, np.bool_)):
        key = bool(expected)
    try:
        return EXPECTED_CHOICES[key]
    except (KeyError, TypeError):
        raise InvalidInput(f"expected must be False, True, 'observed', 'aposteriori', 'apriori' "
                           f"or 'apriori_asimov'; got {expected!r}") from None


def _shaped(out: np.ndarray, mu, mu_arr: np.ndarray):
    if isinstance(mu, numbers.Real) and not isinstance(mu, bool):
        return float(out[0])
    return out.reshape(mu_arr.shape)
