"""Many profiled fits at once: bounded, damped Newton on the JAX HistFactory model (jit + vmap).

A fit minimises ``nll(theta, mu; signal, data)`` over the nuisance parameters ``theta`` (pyhf's
bounds and fixed flags) with the signal strength ``mu`` fixed or free within per-fit bounds.

The solver is a projected Levenberg–Marquardt Newton method. Gradient and Hessian are exact and
cheap: every HistFactory rate is a product of one-parameter factors, so the Hessian follows from
per-entry first and second derivatives (:meth:`HistFactoryModel.rate_derivatives`) without
nested autodiff. Parameters at a bound whose gradient points outwards are held (active set);
the damped step on the others is projected into the box and accepted if it lowers -ln L. While
far from the minimum the (positive definite) Fisher information replaces the Hessian, which can
be indefinite there (asymmetric histosys with code 4p); once an accepted step gains less than
0.1 the exact Hessian takes over and convergence is quadratic.

A fit has *converged* when the exact-Hessian Newton decrement (the decrease in -ln L that one
more undamped Newton step predicts) is below ``tol``. Fits still running after a
first pass of ``first_pass`` iterations continue in smaller batches up to ``max_iter``; fits that
never converge are reported (``converged=False``) and, with ``fallback="pyhf"``, refitted with
pyhf (numpy backend, SLSQP at tolerance 1e-10).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.likelihood._histfactory import HistFactoryModel, poisson_nll

__all__ = ["FitBatch", "VectorFitter", "signal_information"]

_LAM0 = 1e-3  # initial Levenberg-Marquardt damping (relative to the Hessian's diagonal)
_UP, _DOWN = 4.0, 10.0  # damping x _UP after a rejected step, / _DOWN after a good one
_SWITCH = 0.1  # Fisher scoring until an accepted step gains less than this in -ln L
FALLBACKS = ("none", "pyhf")


@dataclass(frozen=True)
class FitBatch:
    """Results of a batch of fits (numpy arrays, one row per fit).

    ``nll`` is -ln L at the fitted parameters (pyhf's ``twice_nll / 2``), ``converged`` says
    whether the engine's convergence test passed, ``refitted`` whether pyhf replaced the
    engine's result (``fallback="pyhf"``).
    """

    theta: np.ndarray  # (N, n_pars)
    mu: np.ndarray  # (N,)
    nll: np.ndarray  # (N,)
    converged: np.ndarray  # (N,) bool
    iterations: np.ndarray  # (N,)
    refitted: np.ndarray  # (N,) bool


class VectorFitter:
    """Batched profiled fits of one :class:`HistFactoryModel` (signal through mu only).

    Args:
        model: the background-only model.
        max_iter: iterations per fit at most.
        first_pass: iterations of the first pass over a whole batch; unconverged fits go on in
            batches of ``chunk // 8`` (a vmapped loop runs as long as its slowest member).
        tol: convergence tolerance on the predicted decrease of -ln L.
        chunk: fits per compiled call (batches are padded, so the solver compiles once).
        fallback: ``"pyhf"`` refits unconverged fits with pyhf, ``"none"`` only reports them.
        spec: the background-only workspace ``model`` was built from (needed for the pyhf
            fallback).

    Example:
        >>> m = build_model(spec)                                   # doctest: +SKIP
        >>> VectorFitter(m).fit(signals, m.observed, m.aux_observed, mu=np.ones(len(signals)))
    """

    def __init__(self, model: HistFactoryModel, *, max_iter: int = 60, first_pass: int = 12,
                 tol: float = 1e-9, chunk: int = 256, fallback: str = "none",
                 spec: dict | None = None):
        if fallback not in FALLBACKS:
            raise InvalidInput(f"fallback must be one of {FALLBACKS}; got {fallback!r}")
        if fallback == "pyhf" and spec is None:
            raise InvalidInput("fallback='pyhf' needs the background-only workspace (spec=...)")
        if not 1 <= first_pass <= max_iter:
            raise InvalidInput(f"need 1 <= first_pass <= max_iter; got {first_pass}, {max_iter}")
        self.model = model
        self.max_iter = int(max_iter)
        self.first_pass = int(first_pass)
        self.tol = float(tol)
        self.chunk = int(chunk)
        self.fallback = fallback
        self.spec = spec
        self._solvers: dict = {}

    def _solver(self):
        if "solver" not in self._solvers:
            self._solvers["solver"] = _make_solver(self.model, self.tol)
        return self._solvers["solver"]

    def fit(self, signal, main, aux, *, mu=None, mu_bounds=(0.0, 100.0), init=None,
            mu_init=None) -> FitBatch:
        """Profiled fits, one per row of ``signal``.

        Args:
            signal: (N, n_bins) signal yields at mu = 1, in the model's bin order.
            main: (n_bins,) or (N, n_bins) main data; aux: (n_aux,) or (N, n_aux) auxiliary data.
            mu: (N,) fixed signal strengths, or None for free fits within ``mu_bounds``.
            mu_bounds: (lo, hi), or arrays (N,) of each, for free fits.
            init: (N, n_pars) starting nuisance parameters (default: pyhf's suggested init).
            mu_init: (N,) starting mu of free fits (default: the middle of [lo, min(hi, 1)]).
        """
        jax = optional_import("jax")
        m = self.model
        signal = np.atleast_2d(np.asarray(signal, dtype=float))
        n = signal.shape[0]
        if signal.shape[1] != m.n_bins:
            raise InvalidInput(f"expected signal yields for {m.n_bins} bins ({', '.join(m.bins)})"
                               f"; got {signal.shape[1]}")
        main = np.broadcast_to(np.asarray(main, dtype=float), (n, m.n_bins))
        aux = np.broadcast_to(np.asarray(aux, dtype=float), (n, m.aux_observed.size))
        theta0 = np.broadcast_to(m.init if init is None else np.asarray(init, dtype=float),
                                 (n, m.n_pars))
        free = mu is None
        lo, hi = (np.broadcast_to(np.asarray(b, dtype=float), (n,)) for b in mu_bounds)
        if free:
            if np.any(~(lo < hi)):
                raise InvalidInput("mu_bounds must have lo < hi for every fit")
            mu0 = (np.clip(np.asarray(mu_init, dtype=float), lo, hi) if mu_init is not None
                   else 0.5 * (lo + np.minimum(hi, np.maximum(lo + 1e-3, 1.0))))
            mu0 = np.broadcast_to(mu0, (n,))
        else:
            mu0 = np.broadcast_to(np.asarray(mu, dtype=float), (n,))
            lo, hi = mu0, mu0
        x0 = np.concatenate([theta0, mu0[:, None]], axis=1)
        free_col = np.full(n, free)
        inputs = [x0, signal, main, aux, lo, hi, free_col]
        with jax.enable_x64(True):
            x, f, conv, it = self._run(inputs, self.first_pass, self.chunk)
            todo = np.flatnonzero(~conv)
            if todo.size and self.max_iter > self.first_pass:
                rest = [a[todo] for a in inputs]
                rest[0] = x[todo]
                x2, f2, c2, i2 = self._run(rest, self.max_iter - self.first_pass,
                                           max(1, self.chunk // 8))
                x[todo], f[todo], conv[todo], it[todo] = x2, f2, c2, it[todo] + i2
        refit = np.zeros(n, dtype=bool)
        if self.fallback == "pyhf" and not conv.all():
            for i in np.flatnonzero(~conv):
                res = self._pyhf_fit(signal[i], main[i], aux[i], None if free else mu0[i],
                                     (lo[i], hi[i]))
                if res is not None and res[1] < f[i]:
                    x[i, -1], f[i] = res
                    refit[i] = True
        return FitBatch(theta=x[:, :-1], mu=x[:, -1], nll=f, converged=conv, iterations=it,
                        refitted=refit)

    def _run(self, inputs, max_iter, chunk):
        jnp = optional_import("jax.numpy")
        start, step = self._solver()
        n = inputs[0].shape[0]
        outs = []
        for first in range(0, n, chunk):
            stop = min(first + chunk, n)
            pad = chunk - (stop - first)
            parts = [jnp.asarray(np.pad(a[first:stop], [(0, pad)] + [(0, 0)] * (a.ndim - 1),
                                        mode="edge")) for a in inputs]
            state = start(*parts)
            for _ in range(max_iter):
                state = step(state, *parts[1:])
                if bool(np.all(np.asarray(state[4]))):
                    break
            x, fx, it, _, done, _ = state
            outs.append([np.array(r)[:stop - first] for r in (x, fx, done, it)])
        x, f, conv, it = (np.concatenate([o[i] for o in outs]) for i in range(4))
        return x, f, conv.astype(bool), it.astype(int)

    def _pyhf_fit(self, signal, main, aux, mu, bounds):
        """pyhf's fit of one point (numpy backend, tight tolerance): (mu, nll) or None."""
        pyhf = optional_import("pyhf")
        from surrogate_stats.likelihood._exact import numpy_backend
        from surrogate_stats.likelihood._histfactory import inject_signal

        m = self.model
        spec = inject_signal(self.spec, signal, remove=m.remove_channels)
        with numpy_backend():
            ws = pyhf.Workspace(spec)
            model = ws.model()
            data = np.concatenate([m.pyhf_data_order(main), aux]).tolist()
            pb = model.config.suggested_bounds()
            poi = model.config.poi_index
            pb[poi] = (float(bounds[0]), float(bounds[1])) if mu is None else (-1e4, 1e4)
            try:
                if mu is None:
                    pars, twice = pyhf.infer.mle.fit(data, model, par_bounds=pb,
                                                     return_fitted_val=True)
                else:
                    pars, twice = pyhf.infer.mle.fixed_poi_fit(float(mu), data, model,
                                                               par_bounds=pb,
                                                               return_fitted_val=True)
            except Exception:  # pyhf/scipy raise several kinds on failure
                return None
        nll = 0.5 * float(twice)
        return (float(pars[poi]), nll) if math.isfinite(nll) else None

    # -- data sets -------------------------------------------------------------------------
    def asimov(self, main, aux, *, init=None):
        """pyhf's Asimov data for ``(main, aux)``: the mu = 0 fit's expected main and aux data.

        Returns ``(main_asimov, aux_asimov, fit)`` with ``fit`` the :class:`FitBatch` of the
        background-only fit.
        """
        jax = optional_import("jax")
        m = self.model
        fit = self.fit(np.zeros((1, m.n_bins)), main, aux, mu=np.zeros(1),
                       init=None if init is None else np.atleast_2d(init))
        with jax.enable_x64(True):
            theta = jax.numpy.asarray(fit.theta[0])
            main_a = np.asarray(m.background(theta))
            aux_a = np.asarray(m.expected_aux(theta))
        return main_a, aux_a, fit


def _objective(model: HistFactoryModel):
    """``f(x, signal, main, aux)`` = -ln L and its exact derivatives, all in pyhf's bin order.

    ``x`` is the nuisance parameters followed by mu. ``derivatives`` returns the gradient, the
    exact Hessian and the Fisher information (expected, positive semi-definite).
    """
    jnp = optional_import("jax.numpy")
    n_pars = model.n_pars
    cgrad, chess = model.constraint_derivatives()

    def f(x, signal, main, aux):
        lam = model.sample_rates(x[:n_pars]).sum(axis=0) + x[n_pars] * signal
        return jnp.sum(poisson_nll(main, lam)) - model.constraint_logpdf(aux, x[:n_pars])

    def derivatives(x, signal, main, aux):
        theta = x[:n_pars]
        lam_b = model.sample_rates(theta).sum(axis=0)
        lam = lam_b + x[n_pars] * signal
        d1 = 1.0 - main / lam  # d(-ln Pois)/d lambda
        d2 = main / lam**2
        _, jac_t, h_rates = model.rate_jacobian_hessian(theta, d1)
        jac = jnp.concatenate([jac_t, signal[None, :]])  # (P+1, B)
        hc = chess(aux, theta)
        g = (jac @ d1).at[:n_pars].add(cgrad(aux, theta))
        h = ((jac * d2[None, :]) @ jac.T).at[:n_pars, :n_pars].add(h_rates + jnp.diag(hc))
        fisher = ((jac / lam[None, :]) @ jac.T).at[:n_pars, :n_pars].add(jnp.diag(hc))
        return g, h, fisher

    return f, derivatives


def signal_information(model: HistFactoryModel, theta, main, aux) -> np.ndarray:
    """The profiled Hessian of -ln L in the per-bin signal yields at zero signal, (B, B).

    ``theta`` are the nuisance parameters of the background-only fit to ``(main, aux)``.
    Parameters that are fixed or at a bound are held. On Asimov data its inverse is the
    covariance of the fitted background yields plus their Poisson variance, and
    ``1 / sqrt(I_bb)`` is the signal yield in bin b that one sigma of sensitivity needs.
    """
    jax = optional_import("jax")
    jnp = jax.numpy
    _, derivatives = _objective(model)
    with jax.enable_x64(True):
        x = jnp.concatenate([jnp.asarray(theta, dtype=float), jnp.zeros(1)])
        zero = jnp.zeros(model.n_bins)
        main_p = jnp.asarray(model.pyhf_data_order(np.asarray(main, dtype=float)))
        g, h, _ = derivatives(x, zero, main_p, jnp.asarray(aux, dtype=float))
        lam = model.sample_rates(x[:-1]).sum(axis=0)
        d2 = main_p / lam**2
        _, jac, _ = model.rate_jacobian_hessian(x[:-1], jnp.zeros(model.n_bins))
        h_tt = np.asarray(h[:-1, :-1])
        h_ty = np.asarray(jac * d2[None, :])
    theta = np.asarray(theta, dtype=float)
    free = ~model.fixed & (theta > model.lower) & (theta < model.upper)
    h_yy = np.diag(np.asarray(d2))
    h_ty = h_ty[free]
    info = h_yy - h_ty.T @ np.linalg.solve(h_tt[np.ix_(free, free)], h_ty)
    info = 0.5 * (info + info.T)
    # workspace bin order
    perm = model._perm
    return info[np.ix_(perm, perm)]


def _make_solver(model: HistFactoryModel, tol: float):
    """Jitted, vmapped ``(start, step)``: the initial state and one solver iteration.

    The iteration loop runs on the host (one compiled call per iteration, stopping as soon as
    every fit of the batch has converged, which a vmapped ``lax.while_loop`` cannot do per
    batch member anyway).
    """
    jax = optional_import("jax")
    jnp = jax.numpy

    p_lo, p_hi = model.lower, model.upper
    p_fixed = model.fixed
    unperm = model._unperm
    f, derivatives = _objective(model)

    def bounds(mu_lo, mu_hi, mu_free):
        lo = jnp.concatenate([p_lo, mu_lo[None]])
        hi = jnp.concatenate([p_hi, mu_hi[None]])
        fixed = jnp.concatenate([p_fixed, ~mu_free[None]])
        return lo, hi, fixed

    def start(x0, signal, main, aux, mu_lo, mu_hi, mu_free):
        lo, hi, _ = bounds(mu_lo, mu_hi, mu_free)
        x0 = jnp.clip(x0, lo, hi)
        fx = f(x0, signal[unperm], main[unperm], aux)
        return x0, fx, jnp.asarray(0), jnp.asarray(_LAM0), jnp.asarray(False), jnp.asarray(True)

    def step(state, signal, main, aux, mu_lo, mu_hi, mu_free):
        x, fx, it, lam, done, far = state
        lo, hi, fixed = bounds(mu_lo, mu_hi, mu_free)
        args = (signal[unperm], main[unperm], aux)
        g, h_exact, fisher = derivatives(x, *args)
        h = jnp.where(far, fisher, h_exact)
        held = fixed | ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        free = ~held
        g_free = jnp.where(free, g, 0.0)
        h_free = jnp.where(free[:, None] & free[None, :], h, 0.0) + jnp.diag(
            jnp.where(free, 0.0, 1.0))
        diag = jnp.abs(jnp.diag(h_free))
        floor = jnp.full_like(diag, 1e-12 * jnp.max(diag))
        # the damped step and the undamped Newton step in one LAPACK call: jaxlib 0.10's CPU
        # runtime deadlocks (intermittently) on two independent solves in one executable
        systems = jnp.stack([h_free + jnp.diag(lam * (diag + floor)), h_free + jnp.diag(floor)])
        both = jnp.linalg.solve(systems, jnp.stack([g_free, g_free])[:, :, None])[:, :, 0]
        step_ = both[0]
        gs = jnp.dot(g_free, step_)
        predicted = gs - 0.5 * jnp.dot(step_, h_free @ step_)
        # converged: the undamped exact Newton step would gain less than tol
        newton = jnp.dot(g_free, both[1])
        converged = done | (~far & (newton >= 0) & (0.5 * newton < tol))
        x_new = jnp.clip(x - step_, lo, hi)
        f_new = f(x_new, *args)
        gain = fx - f_new
        accept = ~converged & jnp.isfinite(f_new) & (gain >= 0) & (gs > 0)
        ratio = gain / jnp.where(predicted > 0, predicted, 1.0)
        new_lam = jnp.where(accept & (ratio > 0.75), jnp.maximum(lam / _DOWN, 1e-12),
                            jnp.where(accept & (ratio > 0.25), lam / 2.0,
                                      jnp.where(accept, lam, jnp.minimum(lam * _UP, 1e12))))
        x = jnp.where(accept, x_new, x)
        fx = jnp.where(accept, f_new, fx)
        # Fisher scoring (positive definite) while far from the minimum, exact after
        still_far = far & accept & (gain > _SWITCH)
        new_lam = jnp.where(far & ~still_far, _LAM0, new_lam)
        lam = jnp.where(done, lam, new_lam)
        it = jnp.where(done, it, it + 1)
        return x, fx, it, lam, converged, still_far & ~done

    return jax.jit(jax.vmap(start)), jax.jit(jax.vmap(step))


def random_starts(model, n: int, seed) -> np.ndarray:
    """pyhf's init with the Gaussian-constrained parameters drawn within 1.5 sigma: (n, P).

    ``seed`` is anything :func:`numpy.random.default_rng` takes.
    """
    rng = np.random.default_rng(seed)
    out = np.repeat(model.init[None], n, axis=0)
    par = model._normal_par
    step = np.where(model.fixed[par], 0.0, model._normal_sigma)
    out[:, par] += step * rng.uniform(-1.5, 1.5, size=(n, par.size))
    return np.clip(out, model.lower, model.upper)


WEAK_AUX = 1.0  # Poisson auxiliary counts below this constrain their parameter little


def bound_starts(model) -> np.ndarray:
    """Starts at the bounds of the parameters that the constraints hardly hold: (n, P), n <= 2.

    Continuation and starts near pyhf's init never put a practically unconstrained parameter
    far from 1, and that is where another minimum can lie: on 3L eRJR an MC-stat gamma with
    Poisson auxiliary count 0.06 at its upper bound and a background normfactor at 0 lie up to
    13 lower in -ln L when a signal fills a control region (docs/yields.md). The rule holds for
    any workspace:

    * ``weak``: Poisson-constrained parameters (shapesys, Poisson staterror) whose auxiliary
      count is below ``WEAK_AUX`` (a relative uncertainty above 100%);
    * ``free``: multiplicative parameters with no constraint (normfactor, shapefactor) that
      are not fixed.

    Start 1 is pyhf's init with ``weak`` at their upper bounds (if there are any); start 2 the
    same with ``free`` also at their lower bounds (if there are any). A workspace with neither
    gets no start (shape (0, P)).
    """
    init = np.asarray(model.init, dtype=float)
    lower, upper = np.asarray(model.lower, float), np.asarray(model.upper, float)
    fixed = np.asarray(model.fixed, bool)
    pois = np.asarray(model._pois_par, int)
    aux = np.asarray(model.aux_observed, float)[np.asarray(model._pois_aux, int)]
    weak = pois[(aux < WEAK_AUX) & ~fixed[pois]]
    constrained = np.union1d(np.asarray(model._normal_par, int), pois)
    free = np.setdiff1d(model.mult_index, constrained)
    free = free[~fixed[free]]
    out = []
    first = init.copy()
    first[weak] = upper[weak]
    if weak.size:
        out.append(first)
    if free.size:
        second = first.copy()
        second[free] = lower[free]
        out.append(second)
    return np.array(out, dtype=float).reshape(len(out), init.size)


def better(nll, conv, new_nll, new_conv):
    """Where a new fit should replace the old one: converged and lower, or the first converged."""
    return new_conv & (~conv | (new_nll < nll - 1e-9))


def keep_better(fits, where, new) -> np.ndarray:
    """Replace ``fits[...][where]`` by ``new`` where the new fit is :func:`better`, in place.

    ``fits`` and ``new``: (nll, converged, theta), theta with one more (parameter) axis;
    ``where``: an index into the fit axes (``...``, a column, arrays of points). The
    convergence flags are OR-ed: a point stays converged once any start converged. Returns
    the mask of replaced fits. This is how every multi-start or continued fit keeps the
    lowest minimum it has seen.
    """
    nll, conv, theta = fits
    f, c, th = new
    take = better(nll[where], conv[where], f, c)
    nll[where] = np.where(take, f, nll[where])
    conv[where] = conv[where] | c
    theta[where] = np.where(take[..., None], th, theta[where])
    return take
