"""Exact profiled fits with pyhf (numpy backend, scipy optimiser), with failure detection.

This is the oracle every likelihood surrogate is trained on and validated against.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import FitFailure

__all__ = ["ExactFitter", "FitResult", "numpy_backend"]


FIT_TOLERANCE = 1e-10  # SLSQP's ftol; pyhf's default (1e-6) stops early on real workspaces
RESTART_TOLERANCE = 1e-3  # a restart from the solution may not lower the NLL by more than this
BACKENDS = ("jax", "numpy")


@contextlib.contextmanager
def pyhf_backend(backend: str = "numpy", tolerance: float | None = FIT_TOLERANCE
                 ) -> Iterator[None]:
    """Run pyhf on ``backend`` with scipy's SLSQP at ``tolerance``; restore the caller's after.

    pyhf's default SLSQP tolerance stops after a few iterations on some published workspaces
    (ATLAS-SUSY-2018-06: the free fit returns its starting mu with an NLL 5.7 above the
    minimum), so reference fits use a tight one. The JAX backend gives SLSQP exact gradients
    (numpy's finite differences leave ~1e-3 in the NLL there) but switches JAX to float64
    for the whole process: use it only in worker processes (as :func:`generate_labels` does).
    """
    pyhf = optional_import("pyhf")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    tensorlib, optimizer = pyhf.get_backend()
    pyhf.set_backend(backend, pyhf.optimize.scipy_optimizer(tolerance=tolerance))
    logger = logging.getLogger("pyhf.optimize.mixins")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # failed fits are retried and reported by us
    try:
        yield
    finally:
        logger.setLevel(level)
        if backend != "jax":
            pyhf.set_backend(tensorlib, optimizer)


def numpy_backend(tolerance: float | None = FIT_TOLERANCE):
    """pyhf on numpy + scipy at ``tolerance`` (see :func:`pyhf_backend`)."""
    return pyhf_backend("numpy", tolerance)


@dataclass(frozen=True)
class FitResult:
    """One profiled fit: ``nll`` is pyhf's ``twice_nll / 2`` at the fitted parameters."""

    mu: float
    nll: float
    pars: tuple[float, ...]
    attempts: int


class ExactFitter:
    """Profiled fits of one pyhf model on named data sets, retried from other starts on failure.

    A fit counts as failed when scipy reports no success, raises, returns a non-finite value,
    or when a restart from its solution lowers the NLL by more than ``RESTART_TOLERANCE``
    three times in a row (it had stopped before the minimum). Retries go, in order: the given
    start, pyhf's suggested start, L-BFGS-B from the given start, and three random starts
    inside the bounds (seeded by the POI value).

    Args:
        spec: a pyhf workspace specification (already patched with the signal).
        datasets: data set name -> main + auxiliary data, as pyhf's ``workspace.data(model)``.
        poi_bounds: bounds of the POI to use in every fit (they may be wider than the workspace's).
    """

    def __init__(self, spec: dict, datasets: dict[str, Sequence[float]],
                 poi_bounds: tuple[float, float], *, backend: str = "numpy"):
        pyhf = optional_import("pyhf")
        self._pyhf = pyhf
        self.backend = backend
        with pyhf_backend(backend):
            self.model = pyhf.Workspace(spec).model()
        cfg = self.model.config
        self.poi_index = cfg.poi_index
        self.init = np.asarray(cfg.suggested_init(), dtype=float)
        self.bounds = [tuple(map(float, b)) for b in cfg.suggested_bounds()]
        self.bounds[self.poi_index] = (float(poi_bounds[0]), float(poi_bounds[1]))
        self.fixed = list(cfg.suggested_fixed())
        self.datasets = {k: np.asarray(v, dtype=float) for k, v in datasets.items()}

    def _starts(self, mu: float | None, init: Sequence[float] | None):
        base = self.init if init is None else np.asarray(init, dtype=float)
        yield base, "SLSQP"
        yield self.init, "SLSQP"
        yield base, "L-BFGS-B"
        seed = 0 if mu is None else int(abs(mu) * 1e6) % (2**31)
        rng = np.random.default_rng(seed)
        lo = np.array([b[0] for b in self.bounds])
        hi = np.array([b[1] for b in self.bounds])
        for _ in range(3):
            width = np.minimum(hi - lo, 2.0)
            start = np.clip(self.init + rng.uniform(-0.25, 0.25, size=lo.shape) * width, lo, hi)
            start[np.array(self.fixed)] = self.init[np.array(self.fixed)]
            yield start, "SLSQP"

    def _one_fit(self, d, mu, start, method):
        pyhf = self._pyhf
        if mu is None:
            pars, twice_nll = pyhf.infer.mle.fit(
                d, self.model, init_pars=start.tolist(), par_bounds=self.bounds,
                fixed_params=self.fixed, return_fitted_val=True, method=method)
        else:
            pars, twice_nll = pyhf.infer.mle.fixed_poi_fit(
                float(mu), d, self.model, init_pars=start.tolist(), par_bounds=self.bounds,
                fixed_params=self.fixed, return_fitted_val=True, method=method)
        return np.asarray(pars, dtype=float), 0.5 * float(twice_nll)

    def fit(self, data: str, mu: float | None = None,
            init: Sequence[float] | None = None) -> FitResult:
        """Profiled fit of data set ``data``: POI fixed at ``mu``, or free within the bounds.

        Raises:
            FitFailure: no start converged.
        """
        errors = []
        with pyhf_backend(self.backend):
            d = self._pyhf.tensorlib.astensor(self.datasets[data])
            for attempt, (start, method) in enumerate(self._starts(mu, init), start=1):
                start = np.array(start, dtype=float)
                if mu is not None:
                    start[self.poi_index] = mu
                try:
                    pars, nll = self._one_fit(d, mu, start, method)
                    for _ in range(3):  # converged means: a restart finds nothing lower
                        pars2, nll2 = self._one_fit(d, mu, pars, method)
                        improved = nll - nll2
                        if nll2 < nll:
                            pars, nll = pars2, nll2
                        if improved <= RESTART_TOLERANCE:
                            break
                    else:
                        errors.append(f"{method}: still improving after 3 restarts")
                        continue
                except Exception as exc:  # scipy/pyhf raise several kinds
                    errors.append(f"{method}: {type(exc).__name__}")
                    continue
                if math.isfinite(nll) and np.all(np.isfinite(pars)):
                    return FitResult(mu=float(pars[self.poi_index]), nll=nll,
                                     pars=tuple(pars.tolist()), attempts=attempt)
                errors.append(f"{method}: non-finite result")
        what = "free fit" if mu is None else f"fit at mu={mu:g}"
        raise FitFailure(f"{what} on the {data} data did not converge after {len(errors)} "
                         f"attempts ({'; '.join(errors)})")


def pyhf_upper_limit(spec: dict, *, level: float = 0.05, backend: str = "jax",
                     rtol: float = 1e-4, atol: float = 2e-12) -> tuple[float, list[float]]:
    """pyhf's asymptotic qtilde CLs upper limit, ``(observed, [5 expected])``.

    The algorithm of ``pyhf.infer.intervals.upper_limits.toms748_scan`` (hypotest with the
    expected set, brackets from the workspace's POI bounds, scipy's toms748 per curve with the
    same tolerances), with its cache keyed by float so that it also runs on the JAX backend
    (pyhf's own crashes there: pyhf issue 2466). Run it in a worker process when
    ``backend="jax"`` (see :func:`pyhf_backend`).
    """
    toms748 = optional_import("scipy.optimize").toms748
    with pyhf_backend(backend):
        model, cls_set = _pyhf_cls_set(spec)
        cache: dict[float, np.ndarray] = {}

        def values(mu):
            mu = float(mu)
            if mu not in cache:
                cache[mu] = cls_set(mu)
            return cache[mu]

        lo, hi = (float(b) for b in model.config.suggested_bounds()[model.config.poi_index])
        while np.any(values(lo) < level):
            lo /= 2
        while np.any(values(hi) > level):
            hi *= 2

        def bracket(i):
            pois = np.array(sorted(cache))
            cls = np.array([cache[p][i] for p in pois]) - level
            return float(np.max(pois[cls >= 0])), float(np.min(pois[cls < 0]))

        limits = [toms748(lambda mu, i=i: values(mu)[i] - level, *bracket(i), k=2, xtol=atol,
                          rtol=rtol) for i in range(6)]
    return float(limits[0]), [float(x) for x in limits[1:]]


def pyhf_hypotests(spec: dict, mus, *, backend: str = "jax") -> list[tuple[float, list[float]]]:
    """pyhf's asymptotic qtilde ``hypotest`` at each mu: ``[(CLs_obs, [5 expected]), ...]``.

    Run it in a worker process when ``backend="jax"`` (see :func:`pyhf_backend`).
    """
    with pyhf_backend(backend):
        _, cls_set = _pyhf_cls_set(spec)
        out = []
        for mu in mus:
            values = cls_set(float(mu))
            out.append((float(values[0]), values[1:].tolist()))
    return out


def _pyhf_cls_set(spec: dict):
    """The pyhf model of ``spec`` and mu -> [CLs_obs, 5 expected CLs] from pyhf's hypotest."""
    pyhf = optional_import("pyhf")
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = pyhf.tensorlib.astensor(ws.data(model))

    def cls_set(mu: float) -> np.ndarray:
        obs, exp = pyhf.infer.hypotest(mu, data, model, return_expected_set=True)
        return np.array([float(obs)] + [float(e) for e in exp])

    return model, cls_set
