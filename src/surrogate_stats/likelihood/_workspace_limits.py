"""Asymptotic CLs upper limits of any signal workspace with the vectorised engine.

The yield surrogates inject a signal through one normalisation factor; an analysis's own signal
patch also carries signal systematics (normsys, histosys, staterror shared with the
background, ...). :func:`workspace_upper_limit` computes the exact limits of a complete
workspace - background, signal sample with all its modifiers, the measurement's POI - the way
pyhf's ``upper_limit`` does (qtilde test statistic, asymptotic formulae, Asimov data from the
POI = 0 fit), but with the POI as one parameter of the JAX HistFactory model
(:func:`~surrogate_stats.likelihood._histfactory.build_model`, checked against pyhf's logpdf)
and every fit of a mu scan in one vectorised batch (:class:`VectorFitter`). One limit then
takes seconds where pyhf's root search over hypotests takes minutes.

The scan: fixed-POI fits on a grid from 0 to where -2 ln lambda on the Asimov data exceeds
``tmu_cap`` (doubling from mu = 1), each grid fit continued from both neighbours' solutions
(the lower converged -ln L is kept), the bounded best fit from the best grid point, then the
crossings of CLs = level (observed) and of the five expected bands, refined by Illinois regula
falsi. Every fit starts from several points - the neighbours' or bracketing grid points'
solutions, pyhf's init, and ``n_starts`` random points - and keeps the lowest converged -ln L:
the profile of a real workspace can have several local minima (seen on sbottom region C).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from surrogate_stats._asymptotics import cls_values
from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput, InvalidWorkspace
from surrogate_stats.likelihood._vfit import keep_better, random_starts

__all__ = ["WorkspaceLimits", "workspace_upper_limit"]


@dataclass(frozen=True)
class WorkspaceLimits:
    """CLs upper limits on the POI of one workspace (asymptotic, qtilde).

    ``expected`` is in pyhf's order (-2 sigma ... +2 sigma); ``mu``, ``tmu_observed`` (-2 ln
    lambda, also below ``mu_hat``) and ``tmu_expected`` (on the Asimov data) are the scan.
    ``converged`` says whether every fit the limits rest on passed the engine's test. A limit
    above the POI's upper bound is NaN.
    """

    poi: str
    observed: float
    expected: np.ndarray
    mu_hat: float
    mu: np.ndarray
    tmu_observed: np.ndarray
    tmu_expected: np.ndarray
    converged: bool


class _PoiFits:
    """Fixed-POI and free fits of a model whose POI is one of its parameters."""

    def __init__(self, model, poi_index, chunk):
        from surrogate_stats.likelihood._vfit import VectorFitter

        fixed = model.fixed.copy()
        fixed[poi_index] = True
        self.model = model
        self.p = poi_index
        self.fixed_fitter = VectorFitter(dataclasses.replace(model, fixed=fixed), chunk=chunk)
        self.free_fitter = VectorFitter(model, chunk=chunk)

    def _call(self, fitter, mus, main, aux, starts):
        init = np.array(starts, dtype=float, copy=True)
        n = init.shape[0]
        if mus is not None:
            init[:, self.p] = mus
        zero = np.zeros((n, self.model.n_bins))
        return fitter.fit(zero, main, aux, mu=np.zeros(n), init=init)

    def fixed(self, mus, data, starts):
        """Fits at POI = mus[i] on each of the data sets: (nll (n, k), conv, theta (n, k, P))."""
        mus = np.asarray(mus, dtype=float)
        n, k = len(mus), len(data)
        main = np.tile(np.stack([d[0] for d in data]), (n, 1))
        aux = np.tile(np.stack([d[1] for d in data]), (n, 1))
        res = self._call(self.fixed_fitter, np.repeat(mus, k), main, aux,
                         np.asarray(starts).reshape(n * k, -1))
        return (res.nll.reshape(n, k), res.converged.reshape(n, k),
                res.theta.reshape(n, k, -1))

    def free(self, main, aux, start):
        res = self._call(self.free_fitter, None, main[None], aux[None], start[None])
        return float(res.nll[0]), float(res.theta[0, self.p]), bool(res.converged[0])


def _best(fits, mus, data, start_sets):
    """Fixed-POI fits from each set of starts (n, k, P) in one batch; the best one per fit."""
    mus = np.asarray(mus, dtype=float)
    n_sets = len(start_sets)
    f, c, th = fits.fixed(np.tile(mus, n_sets), data, np.concatenate(start_sets))
    shape = (n_sets, len(mus))
    f, c, th = f.reshape(shape + f.shape[1:]), c.reshape(shape + c.shape[1:]), th.reshape(
        shape + th.shape[1:])
    best = (f[0].copy(), c[0].copy(), th[0].copy())
    for i in range(1, n_sets):
        keep_better(best, ..., (f[i], c[i], th[i]))
    return best


def workspace_upper_limit(spec: dict, *, poi_bounds=(0.0, 100.0), level: float = 0.05,
                          measurement: str | None = None, n_grid: int = 24,
                          tmu_cap: float = 40.0, n_starts: int = 4, seed: int = 0,
                          chunk: int = 64) -> WorkspaceLimits:
    """Observed and expected CLs upper limits on the POI of a signal workspace.

    Args:
        spec: a complete pyhf workspace (e.g. the background-only workspace with a signal
            patch applied); its measurement names the POI.
        poi_bounds: the POI's bounds in every fit (pyhf's qtilde needs a lower bound of 0);
            they replace the workspace's own, like ``par_bounds`` in pyhf.
        level: the CLs level (0.05 for 95% CL).
        measurement: the measurement to use (default: the first).
        n_grid: points of the mu scan.
        tmu_cap: the scan runs to where -2 ln lambda on the Asimov data exceeds this.
        n_starts: random starts per fit of the scan besides pyhf's init and the POI = 0 fit
            (Gaussian-constrained parameters within 1.5 sigma of their centres, seeded by
            ``seed``): the profile of a real workspace can have several local minima.
        chunk: fits per compiled call.

    Raises:
        InvalidWorkspace: the POI is not a normfactor, or the workspace uses a modifier the
            engine does not reproduce.
        InvalidInput: bad bounds or level.

    A curve that does not cross the level below the POI's upper bound gives a NaN limit
    (raise the upper bound).
    """
    from surrogate_stats.likelihood._histfactory import build_model, set_poi_bounds
    from surrogate_stats.likelihood._yields_validate import _z_expected

    lo, hi = (float(b) for b in poi_bounds)
    if not (lo == 0.0 and hi > 0.0):
        raise InvalidInput(f"poi_bounds must be (0, hi) with hi > 0 for qtilde; got "
                           f"{tuple(poi_bounds)}")
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"level must be in (0, 1); got {level}")
    spec = copy.deepcopy(spec)
    meas = spec.get("measurements") or []
    chosen = next((m for m in meas if measurement is None or m.get("name") == measurement), None)
    if chosen is None:
        raise InvalidWorkspace(f"measurement {measurement!r} is not in the workspace; it has "
                               f"{[m.get('name') for m in meas]}")
    poi = chosen.get("config", {}).get("poi")
    if not poi:
        raise InvalidWorkspace("the workspace's measurement names no POI (config.poi)")
    normfactors = {m.get("name") for c in spec.get("channels", []) for smp in c.get("samples", [])
                   for m in smp.get("modifiers", []) if m.get("type") == "normfactor"}
    if poi not in normfactors:
        raise InvalidWorkspace(f"the POI {poi!r} is not a normfactor of any sample (the "
                               f"workspace's normfactors: {sorted(map(str, normfactors))}); "
                               "apply the signal patch first")
    set_poi_bounds(spec, (lo, hi))
    model = build_model(spec, measurement=chosen.get("name"))
    fits = _PoiFits(model, model.par_names.index(poi), chunk)
    n = model.n_pars
    rand = random_starts(model, n_starts, seed)

    def start_sets(count, k, own=()):
        """Start sets (count, k, P) for fits on k data sets: own ones, init, the random ones."""
        return [*own] + [np.broadcast_to(r, (count, k, n)) for r in (model.init, *rand)]

    # the Asimov data: expected data of the POI = 0 fit to the observed data
    obs = (model.observed, model.aux_observed)
    f0, c0, th0 = _best(fits, [0.0], [obs], start_sets(1, 1))
    jax = optional_import("jax")
    with jax.enable_x64(True):
        theta_a = jax.numpy.asarray(th0[0, 0])
        asimov = (np.asarray(model.background(theta_a)), np.asarray(model.expected_aux(theta_a)))
    data = [obs, asimov]
    fa0, ca0, tha0 = _best(fits, [0.0], [asimov], start_sets(1, 1, [th0]))
    start0 = np.stack([th0[0, 0], tha0[0, 0]])
    nll0 = np.array([f0[0, 0], fa0[0, 0]])
    ok = bool(c0.all() and ca0.all())

    top = min(1.0, hi)
    for _ in range(40):
        f, c, _ = fits.fixed([top], data, start0[None])
        t = 2 * (f[0] - nll0)
        if (t >= tmu_cap).all() or top >= hi:
            break
        top = min(2.0 * top, hi)
    grid = np.linspace(0.0, top, n_grid)
    nll, conv, theta = _best(fits, grid, data,
                             start_sets(n_grid, 2, [np.broadcast_to(start0, (n_grid, 2, n))]))
    for _ in range(2):  # continue each grid fit from both neighbours' solutions
        keep_better((nll, conv, theta), ..., _best(fits, grid, data, [
            np.roll(theta, 1, axis=0), np.roll(theta, -1, axis=0)]))
    k = int(np.argmin(nll[:, 0]))
    nll_hat, mu_hat, c_hat = fits.free(obs[0], obs[1], theta[k, 0])
    if not c_hat or nll_hat > nll[k, 0]:
        nll_hat, mu_hat = float(nll[k, 0]), float(grid[k])
    t_two = np.maximum(2 * (nll[:, 0] - nll_hat), 0.0)
    t_obs = np.where(grid >= mu_hat, t_two, 0.0)
    t_exp = np.maximum(2 * (nll[:, 1] - nll0[1]), 0.0)
    z = _z_expected(level)

    def curves(q_o, q_a):
        """CLs - level and z - sqrt(qA) for the 5 bands: (6, n), each decreasing in mu."""
        return np.vstack([cls_values(q_o, q_a)[0] - level, z[:, None] - np.sqrt(q_a)[None]])

    vals = curves(t_obs, t_exp)
    below = vals < 0
    crosses = below.any(axis=1)
    j = np.where(crosses, np.maximum(below.argmax(axis=1), 1), n_grid - 1)
    # the limits rest on the grid fits up to the last bracket and on the refinement fits
    ok &= bool(conv[:j.max() + 1].all() and (c_hat or nll_hat <= nll[k, 0]))
    rows = np.arange(6)
    a, b = grid[j - 1], grid[j]
    fa, fb = vals[rows, j - 1], vals[rows, j]
    for _ in range(40):
        if np.all(np.abs(b - a) <= 1e-7 * np.abs(b)):
            break
        cm = np.where(fb != fa, (a * fb - b * fa) / np.where(fb != fa, fb - fa, 1.0),
                      0.5 * (a + b))
        cm = np.clip(cm, np.minimum(a, b), np.maximum(a, b))
        # from both ends of the bracket, init and the random starts: the profile can have
        # several local minima
        f, c, _ = _best(fits, cm, data, start_sets(6, 2, [theta[j - 1], theta[j]]))
        ok &= bool(c[crosses].all())
        q_o = np.where(cm >= mu_hat, np.maximum(2 * (f[:, 0] - nll_hat), 0.0), 0.0)
        q_a = np.maximum(2 * (f[:, 1] - nll0[1]), 0.0)
        fc = curves(q_o, q_a)[rows, rows]
        left = fc * fb > 0
        a, fa = np.where(left, a, b), np.where(left, fa * 0.5, fb)
        b, fb = cm, fc
    b = np.where(crosses, b, np.nan)
    return WorkspaceLimits(poi=poi, observed=float(b[0]), expected=b[1:].copy(),
                           mu_hat=float(mu_hat), mu=grid, tmu_observed=t_two,
                           tmu_expected=t_exp, converged=ok)
