"""HistFactory expected rates and -ln L in JAX, with a signal injected through one normfactor.

:class:`HistFactoryModel` is built from a background-only pyhf workspace specification and
reproduces pyhf 0.7's ``model.logpdf`` (numpy backend) for it: the same parameters in pyhf's
order and with pyhf's suggested inits, bounds and fixed flags, normsys with interpolation code 4,
histosys with code 4p, lumi / normfactor / shapefactor / shapesys / staterror factors, Gaussian
and Poisson constraint terms with pyhf's auxiliary data. Every model is checked against pyhf on
random parameter points when it is built (:meth:`HistFactoryModel.check_against_pyhf`), so a
workspace using something this evaluation does not reproduce is refused instead of fitted wrong.

A signal enters as per-bin yields ``s`` scaled by a strength ``mu`` and nothing else (no signal
systematics): ``lambda_b(theta, mu) = B_b(theta) + mu * s_b``. The profiled NLL then depends on
``mu * s`` only.

Bins are named ``<channel>-<i>`` (``i`` 0-based), channels in the order of the workspace JSON
(``workspace order``); pyhf's own order (sorted channel names) is used internally and
:attr:`HistFactoryModel.to_pyhf_bins` maps between them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidWorkspace

__all__ = ["HistFactoryModel", "build_model", "bin_names_of"]

SUPPORTED = ("normfactor", "lumi", "normsys", "histosys", "shapesys", "staterror", "shapefactor")
_CHECK_POI = "mu_surrogate_stats_check"
CHECK_RTOL = 1e-9  # relative agreement with pyhf's logpdf required when a model is built


def _log_factorial_rest(n):
    """``lgamma(n + 1) - n log n + n`` (0 at n = 0), accurate for every n >= 0."""
    jnp = optional_import("jax.numpy")
    gammaln = optional_import("jax.scipy.special").gammaln
    big = jnp.maximum(n, 1e3)
    inv = 1.0 / big
    stirling = (0.5 * jnp.log(2 * math.pi * big)
                + inv * (1 / 12 - inv**2 * (1 / 360 - inv**2 * (1 / 1260 - inv**2 / 1680))))
    small = jnp.minimum(n, 1e3)
    direct = gammaln(small + 1.0) - optional_import("jax.scipy.special").xlogy(small, small) + small
    return jnp.where(n > 1e3, stirling, direct)


def poisson_nll(n, lam):
    """``-log Pois(n | lam)`` with the continuous factorial, as pyhf, but exact near lam = n.

    Written as ``n (r - 1 - log r) + lgamma(n + 1) - n log n + n`` with ``r = lam / n``; near
    ``r = 1`` the bracket is ``d - log1p(d)``, ``d = r - 1``, which keeps full precision where
    pyhf's direct sum cancels (``lam`` for n = 0).
    """
    jnp = optional_import("jax.numpy")
    positive = n > 0
    safe_n = jnp.where(positive, n, 1.0)
    safe_lam = jnp.where(positive, lam, 1.0)
    d = safe_lam / safe_n - 1.0
    near = jnp.abs(d) < 0.5
    log_r = jnp.log(safe_lam) - jnp.log(safe_n)
    bracket = jnp.where(near, d - jnp.log1p(jnp.where(near, d, 0.0)), d - log_r)
    dev = jnp.where(positive, safe_n * bracket, lam)
    return dev + _log_factorial_rest(n)


def _code4_coefficients(up: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """pyhf's code-4 polynomial coefficients a_1..a_6 (alpha_0 = 1) for ratios up, dn."""
    a_inv = np.array([
        [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
        [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
        [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
        [3.0 / -2, 3.0 / -2, -7.0 / -8, 7.0 / -8, -1.0 / 8, -1.0 / 8],
        [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
        [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
    ])
    lu, ld = np.log(up), np.log(dn)
    b = np.stack([up - 1.0, dn - 1.0, lu * up, -ld * dn, lu**2 * up, ld**2 * dn])
    return np.einsum("rc,c...->r...", a_inv, b)


def bin_names_of(spec: dict, remove_channels=()) -> list[str]:
    """``<channel>-<i>`` for every bin of ``spec``'s channels in workspace order."""
    out = []
    for ch in spec["channels"]:
        if ch["name"] in remove_channels:
            continue
        n = len(ch["samples"][0]["data"]) if ch["samples"] else 0
        out += [f"{ch['name']}-{i}" for i in range(n)]
    return out


@dataclass(frozen=True, eq=False)
class HistFactoryModel:
    """A background-only HistFactory model as arrays; evaluation is pure JAX (float64).

    Attributes:
        bins: bin names ``<channel>-<i>`` in workspace order (the order of every signal vector).
        par_names: one name per parameter component (``name`` or ``name[i]``), pyhf's order.
        init, lower, upper, fixed: pyhf's suggested inits, bounds and fixed flags.
        observed, aux_observed: the workspace's main data (workspace bin order) and pyhf's
            nominal auxiliary data.
        remove_channels: channels dropped from the workspace before building.
    """

    bins: tuple
    par_names: tuple
    init: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fixed: np.ndarray
    observed: np.ndarray
    aux_observed: np.ndarray
    remove_channels: tuple
    # internals (pyhf bin order)
    _perm: np.ndarray  # workspace bin i sits at pyhf position _perm[i]
    _nominal: np.ndarray  # (S, B)
    _ns_idx: np.ndarray  # (K1,)
    _ns_coef: np.ndarray  # (6, K1, S, B)
    _ns_up: np.ndarray  # (K1, S, B)  ratios
    _ns_dn: np.ndarray
    _hs_idx: np.ndarray  # (K2,)
    _hs_up: np.ndarray  # (K2, S, B)  deltas
    _hs_dn: np.ndarray
    _mult_idx: np.ndarray  # (M, S, B) parameter index, n_pars = factor 1
    _normal_par: np.ndarray
    _normal_aux: np.ndarray
    _normal_sigma: np.ndarray
    _pois_par: np.ndarray
    _pois_aux: np.ndarray
    _pois_factor: np.ndarray

    @property
    def n_bins(self) -> int:
        return len(self.bins)

    @property
    def n_pars(self) -> int:
        return len(self.par_names)

    # -- JAX functions (call inside jax.enable_x64(True)) --------------------------------------
    def _histosys(self, a):
        """Code-4p deltas (K2, S, B) for the histosys parameters ``a`` (K2,)."""
        jnp = optional_import("jax.numpy")
        a = a[:, None, None]
        a2 = a * a
        poly = a2 * (a2 * (a2 * 3.0 - 10.0) + 15.0)
        s = 0.5 * (self._hs_up + self._hs_dn)
        asym = 0.0625 * (self._hs_up - self._hs_dn)
        return jnp.where(a > 1, a * self._hs_up,
                         jnp.where(a < -1, a * self._hs_dn, poly * asym + a * s))

    def _normsys(self, a):
        """Code-4 factors (K1, S, B) for the normsys parameters ``a`` (K1,)."""
        jnp = optional_import("jax.numpy")
        a = a[:, None, None]
        inside = jnp.clip(a, -1.0, 1.0)
        powers = jnp.stack([inside ** k for k in range(1, 7)])
        poly = 1.0 + jnp.sum(self._ns_coef * powers, axis=0)
        hi = jnp.exp(a * jnp.log(self._ns_up))
        lo = jnp.exp(-a * jnp.log(self._ns_dn))
        return jnp.where(a >= 1, hi, jnp.where(a <= -1, lo, poly))

    def sample_rates(self, theta):
        """Expected yield of every sample in every bin, (S, B) in pyhf's bin order."""
        jnp = optional_import("jax.numpy")
        additive = jnp.asarray(self._nominal)
        if self._hs_idx.size:
            additive = additive + self._histosys(theta[self._hs_idx]).sum(axis=0)
        factor = 1.0
        if self._ns_idx.size:
            factor = factor * jnp.prod(self._normsys(theta[self._ns_idx]), axis=0)
        if self._mult_idx.size:
            theta_ext = jnp.concatenate([theta, jnp.ones((1,), theta.dtype)])
            factor = factor * jnp.prod(theta_ext[self._mult_idx], axis=0)
        return additive * factor

    def background(self, theta):
        """Expected background per bin (workspace order) at parameters ``theta``."""
        return self.sample_rates(theta).sum(axis=0)[self._perm]

    def rate_derivatives(self, theta):
        """Exact first and second derivatives of the sample rates, without nested autodiff.

        Every rate is ``R = A(alpha) F(alpha) P(theta)``: ``A`` the nominal plus histosys
        deltas and ``F`` the product of normsys factors (each term depends on one alpha), ``P``
        the product of the M multiplicative parameters of that sample and bin (normfactor,
        lumi, staterror, shapesys, shapefactor). With ``U[p] = d log(A F) / d alpha_p``,
        ``V[p] = (dA / d alpha_p) / A`` and ``C[p]`` the diagonal terms,

        * ``d2 R / d alpha_p d alpha_q = R (U_p U_q - V_p V_q + delta_pq C_p)``;
        * the derivative in the parameter of slot k is ``W[k] = A F prod_{k' != k} P_k'``,
          its mixed derivative with alpha_p is ``U_p W[k]``, and with the parameter of another
          slot k' it is ``W2[k, k'] = A F prod_{k'' != k, k'} P_k''`` (these are products,
          never quotients, so a normfactor at 0 is fine).

        Returns ``(R, U, V, C, W, W2)``: R (S, B); U, V, C (A, S, B) for the A parameters in
        :attr:`alpha_index` (the normsys and histosys ones); W (M, S, B); W2 (M, M, S, B)
        (zero on the diagonal). The parameter of slot k in sample s, bin b is
        ``_mult_idx[k, s, b]`` (``n_pars`` where the slot is empty).
        """
        jax = optional_import("jax")
        jnp = jax.numpy
        n_s, n_b = self._nominal.shape
        alphas = self.alpha_index
        # row a of U takes normsys row ns_row[a] and histosys row hs_row[a] (the last, a zero
        # row, where the parameter has none): gathers, which XLA runs much faster than scatters
        ns_row = np.full(alphas.size, self._ns_idx.size)
        ns_row[np.searchsorted(alphas, self._ns_idx)] = np.arange(self._ns_idx.size)
        hs_row = np.full(alphas.size, self._hs_idx.size)
        hs_row[np.searchsorted(alphas, self._hs_idx)] = np.arange(self._hs_idx.size)
        zero = jnp.zeros((1, n_s, n_b), theta.dtype)
        additive = jnp.asarray(self._nominal)
        U = V = C = jnp.zeros((alphas.size, n_s, n_b), theta.dtype)
        if self._hs_idx.size:
            a = theta[self._hs_idx]
            one = jnp.ones_like(a)

            def d1(z):
                return jax.jvp(self._histosys, (z,), (one,))

            (delta, d_delta), (_, dd_delta) = jax.jvp(d1, (a,), (one,))
            additive = additive + delta.sum(axis=0)
        factor = jnp.ones((n_s, n_b), theta.dtype)
        if self._ns_idx.size:
            a = theta[self._ns_idx]
            one = jnp.ones_like(a)

            def e1(z):
                return jax.jvp(self._normsys, (z,), (one,))

            (f, df), (_, ddf) = jax.jvp(e1, (a,), (one,))
            factor = factor * jnp.prod(f, axis=0)
            dlog = df / f
            U = jnp.concatenate([dlog, zero])[ns_row]
            C = jnp.concatenate([ddf / f - dlog * dlog, zero])[ns_row]
        if self._hs_idx.size:
            safe = jnp.where(additive != 0, additive, 1.0)
            v = jnp.concatenate([d_delta / safe, zero])[hs_row]
            U = U + v
            V = v
            C = C + jnp.concatenate([dd_delta / safe, zero])[hs_row]
        base = additive * factor
        m = self._mult_idx.shape[0]
        if m:
            theta_ext = jnp.concatenate([theta, jnp.ones((1,), theta.dtype)])
            vals = theta_ext[self._mult_idx]  # (M, S, B)
            eye = np.eye(m, dtype=bool)[:, :, None, None]
            W = base * jnp.prod(jnp.where(eye, 1.0, vals[None]), axis=1)
            pair = eye[:, None] | eye[None, :]  # (M, M, M, 1, 1): slot in {k, k'}
            W2 = base * jnp.prod(jnp.where(pair, 1.0, vals[None, None]), axis=2)
            W2 = jnp.where(np.eye(m, dtype=bool)[:, :, None, None], 0.0, W2)
            R = base * jnp.prod(vals, axis=0)
        else:
            W = jnp.zeros((0, n_s, n_b), theta.dtype)
            W2 = jnp.zeros((0, 0, n_s, n_b), theta.dtype)
            R = base
        return R, U, V, C, W, W2

    @property
    def alpha_index(self) -> np.ndarray:
        """Indices of the parameters with normsys or histosys modifiers (sorted)."""
        return np.union1d(self._ns_idx, self._hs_idx).astype(int)

    @property
    def mult_index(self) -> np.ndarray:
        """Indices of the parameters that multiply rates (normfactor, lumi, gammas), sorted."""
        idx = np.unique(self._mult_idx)
        return idx[idx < self.n_pars].astype(int)

    def _blocks(self):
        """Static pieces of :meth:`rate_jacobian_hessian`: one-hot slot maps and the order."""
        n = self.n_pars
        alphas, mults = self.alpha_index, self.mult_index
        n_s, n_b = self._nominal.shape
        col = {p: i for i, p in enumerate(mults)}
        onehot = np.zeros(self._mult_idx.shape + (mults.size,))
        for pos, p in np.ndenumerate(self._mult_idx):
            if p < n:
                onehot[pos + (col[int(p)],)] = 1.0
        rest = np.setdiff1d(np.arange(n), np.union1d(alphas, mults))
        order = np.concatenate([alphas, mults, rest]).astype(int)
        if np.intersect1d(alphas, mults).size:
            raise InvalidWorkspace("a parameter both interpolates (normsys/histosys) and "
                                   "multiplies rates; the JAX engine does not support that")
        return onehot.reshape(self._mult_idx.shape[0], n_s * n_b, mults.size), \
            np.argsort(order), rest.size

    def rate_jacobian_hessian(self, theta, weights):
        """``d lambda_b / d theta_p`` (P, B) and ``sum_b w_b d2 lambda_b / d theta^2`` (P, P).

        Built block by block (interpolating parameters, multiplicative ones) with dense
        products over the modifier entries and one static reordering: no scatter operations.
        """
        jnp = optional_import("jax.numpy")
        onehot, inverse, n_rest = self._blocks()
        R, U, V, C, W, W2 = self.rate_derivatives(theta)
        n_s, n_b = R.shape
        n_a = U.shape[0]
        uf, vf = U.reshape(n_a, -1), V.reshape(n_a, -1)
        w = (R * weights[None, :]).reshape(-1)
        b_w = jnp.tile(weights, n_s)  # weight of flattened (s, b)
        h_aa = (uf * w) @ uf.T - (vf * w) @ vf.T + jnp.diag((C.reshape(n_a, -1) * w).sum(1))
        jac_a = jnp.einsum("asb,sb->ab", U, R)
        n_m, m = onehot.shape[2], onehot.shape[0]
        h_am = jnp.zeros((n_a, n_m), theta.dtype)
        h_mm = jnp.zeros((n_m, n_m), theta.dtype)
        jac_m = jnp.zeros((n_m, n_b), theta.dtype)
        for k in range(m):
            wk = W[k].reshape(-1)
            jac_m = jac_m + jnp.einsum("nq,n->qn", onehot[k], wk).reshape(n_m, n_s, n_b).sum(1)
            h_am = h_am + (uf * (wk * b_w)[None, :]) @ onehot[k]
            for j in range(m):
                if j != k:
                    h_mm = h_mm + (onehot[k].T * (W2[k, j].reshape(-1) * b_w)[None, :]) \
                        @ onehot[j]
        z_r = jnp.zeros((n_rest, n_b), theta.dtype)
        jac = jnp.concatenate([jac_a, jac_m, z_r])[inverse]
        top = jnp.concatenate([h_aa, h_am, jnp.zeros((n_a, n_rest))], axis=1)
        mid = jnp.concatenate([h_am.T, h_mm, jnp.zeros((n_m, n_rest))], axis=1)
        low = jnp.zeros((n_rest, n_a + n_m + n_rest), theta.dtype)
        h = jnp.concatenate([top, mid, low])[inverse][:, inverse]
        return R.sum(axis=0), jac, h

    def constraint_logpdf(self, aux, theta):
        """pyhf's constraint term: Gaussian and Poisson auxiliary measurements.

        The Poisson terms are written as ``-(n r - 1 - log r) - c(n)`` with ``r = lambda / n``
        (see :func:`poisson_nll`), which is exact in floating point near ``r = 1``; pyhf's
        ``n log(lambda) - lambda - lgamma(n + 1)`` loses ~1e-3 there when ``n`` ~ 1e11
        (tiny shapesys uncertainties).
        """
        jnp = optional_import("jax.numpy")
        out = 0.0
        if self._normal_par.size:
            x = aux[self._normal_aux]
            z = (x - theta[self._normal_par]) / self._normal_sigma
            out = out + jnp.sum(-0.5 * z * z - jnp.log(self._normal_sigma * math.sqrt(2 * math.pi)))
        if self._pois_par.size:
            n = aux[self._pois_aux]
            lam = theta[self._pois_par] * self._pois_factor
            out = out - jnp.sum(poisson_nll(n, lam))
        return out

    def nll(self, theta, mu, signal, main, aux):
        """-ln L: Poisson main terms on ``B(theta) + mu * signal`` plus the constraints.

        Equals pyhf's ``-model.logpdf(pars, data)`` (its ``twice_nll / 2``) for the same model.
        """
        jnp = optional_import("jax.numpy")
        lam = self.background(theta) + mu * signal
        return jnp.sum(poisson_nll(main, lam)) - self.constraint_logpdf(aux, theta)

    def constraint_derivatives(self):
        """Functions ``(aux, theta) -> gradient`` and ``-> diagonal Hessian`` of -constraints."""
        jnp = optional_import("jax.numpy")
        n = self.n_pars

        def grad(aux, theta):
            g = jnp.zeros(n, dtype=theta.dtype)
            if self._normal_par.size:
                z = (theta[self._normal_par] - aux[self._normal_aux]) / self._normal_sigma**2
                g = g.at[self._normal_par].add(z)
            if self._pois_par.size:
                t = theta[self._pois_par]
                g = g.at[self._pois_par].add(self._pois_factor - aux[self._pois_aux] / t)
            return g

        def hess(aux, theta):
            h = jnp.zeros(n, dtype=theta.dtype)
            if self._normal_par.size:
                h = h.at[self._normal_par].add(1.0 / self._normal_sigma**2)
            if self._pois_par.size:
                t = theta[self._pois_par]
                h = h.at[self._pois_par].add(aux[self._pois_aux] / t**2)
            return h

        return grad, hess

    def expected_aux(self, theta):
        """Auxiliary data that the parameters ``theta`` predict (Asimov auxiliary data)."""
        jnp = optional_import("jax.numpy")
        aux = jnp.zeros(self.aux_observed.shape, dtype=theta.dtype)
        if self._normal_par.size:
            aux = aux.at[self._normal_aux].set(theta[self._normal_par])
        if self._pois_par.size:
            aux = aux.at[self._pois_aux].set(theta[self._pois_par] * self._pois_factor)
        return aux

    # -- checks ----------------------------------------------------------------------------------
    def check_against_pyhf(self, spec: dict, *, n_points: int = 4, seed: int = 0) -> float:
        """Largest relative difference from pyhf's logpdf over random points; raises above 1e-9.

        Differences within pyhf's own rounding error (estimated from the size of its Poisson
        terms) are not counted.

        ``spec`` is the background-only workspace this model was built from. A signal is
        injected through a normfactor so that the signal term is checked too.
        """
        jax = optional_import("jax")
        pyhf = optional_import("pyhf")
        from surrogate_stats.likelihood._exact import numpy_backend

        rng = np.random.default_rng(seed)
        signal = rng.uniform(0.0, 3.0, self.n_bins)
        # names of its own, so that a workspace with an injected signal can be checked too
        patched = inject_signal(spec, signal, remove=self.remove_channels, poi=_CHECK_POI,
                                sample="surrogate_stats_check_signal")
        with numpy_backend():
            ws = pyhf.Workspace(patched)
            model = ws.model(poi_name=_CHECK_POI)
            data = np.asarray(ws.data(model), dtype=float)
            order = [model.config.par_slice(n) for n in model.config.par_order]
            worst = 0.0
            nll = jax.jit(lambda *a: self.nll(*a))
            for _ in range(n_points):
                theta = self.init + rng.uniform(-1.5, 1.5, self.n_pars) * np.where(
                    self.fixed, 0.0, np.minimum(self.upper - self.lower, 2.0) * 0.4)
                theta = np.clip(theta, self.lower, self.upper)
                mu = float(rng.uniform(0.0, 2.0))
                pars = self._to_pyhf_pars(model, theta, mu, order)
                want = -float(model.logpdf(pars, data)[0])
                # pyhf sums n log(lambda) - lambda - lgamma(n + 1) directly: its rounding
                # error grows with those terms' size (1e-3 for n ~ 1e11 shapesys aux data)
                lam = np.concatenate([model.expected_actualdata(pars),
                                      _poisson_rates(model, pars)])
                n_all = np.concatenate([data[:self.n_bins], _poisson_aux(model, data)])
                size = float(np.sum(np.abs(n_all * np.log(np.maximum(lam, 1e-300))) + lam
                                    + np.abs(np.vectorize(math.lgamma)(n_all + 1.0))))
                with jax.enable_x64(True):
                    got = float(nll(jax.numpy.asarray(theta), mu, jax.numpy.asarray(signal),
                                         jax.numpy.asarray(data[:self.n_bins][self._perm]),
                                         jax.numpy.asarray(data[self.n_bins:])))
                rounding = 8 * np.finfo(float).eps * size
                worst = max(worst, max(abs(got - want) - rounding, 0.0) / max(1.0, abs(want)))
        if not worst <= CHECK_RTOL:
            raise InvalidWorkspace(
                f"the JAX HistFactory evaluation differs from pyhf's logpdf by {worst:.3g} "
                "(relative) on this workspace: it uses a feature the vectorised engine does not "
                "reproduce; use the pyhf fitter (engine='pyhf') instead")
        return worst

    @property
    def _unperm(self) -> np.ndarray:
        """pyhf bin position j holds workspace bin _unperm[j]."""
        return np.argsort(self._perm)

    def _to_pyhf_pars(self, model, theta, mu, order):
        names = list(model.config.par_order)
        pars = np.array(model.config.suggested_init(), dtype=float)
        own = self._par_groups()
        for name, sl in zip(names, order):
            if name == _CHECK_POI:
                pars[sl] = mu
            else:
                start, stop = own[name]
                pars[sl] = theta[start:stop]
        return pars

    def _par_groups(self) -> dict:
        """Parameter name -> (start, stop) of its components in ``theta``."""
        groups: dict = {}
        for i, n in enumerate(self.par_names):
            start, _ = groups.get(n.split("[")[0], (i, i))
            groups[n.split("[")[0]] = (start, i + 1)
        return groups

    def pyhf_data_order(self, main_ws_order: np.ndarray) -> np.ndarray:
        """Main data in workspace bin order -> pyhf's bin order."""
        return np.asarray(main_ws_order)[..., self._unperm]


def _poisson_rates(model, pars) -> np.ndarray:
    """The rates of pyhf's Poisson-constrained auxiliary measurements at ``pars``."""
    out = []
    for name in model.config.auxdata_order:
        ps = model.config.param_set(name)
        if ps.pdf_type == "poisson":
            sl = model.config.par_slice(name)
            out.append(np.asarray(pars[sl]) * np.asarray(ps.factors))
    return np.concatenate(out) if out else np.zeros(0)


def _poisson_aux(model, data) -> np.ndarray:
    """pyhf's auxiliary data of its Poisson constraint terms."""
    out, pos = [], model.config.nmaindata
    for name in model.config.auxdata_order:
        ps = model.config.param_set(name)
        if ps.pdf_type == "poisson":
            out.append(np.asarray(data[pos:pos + ps.n_parameters]))
        pos += ps.n_parameters
    return np.concatenate(out) if out else np.zeros(0)


def inject_signal(spec: dict, signal, *, remove=(), poi: str = "mu_surrogate_stats",
                  sample: str = "surrogate_stats_signal") -> dict:
    """A copy of ``spec`` with a sample of per-bin ``signal`` yields and only a normfactor.

    ``signal`` is in the model's bin order (workspace order, channels in ``remove`` dropped).
    """
    signal = np.asarray(signal, dtype=float)
    out = copy.deepcopy(spec)
    out["channels"] = [c for c in out["channels"] if c["name"] not in remove]
    out["observations"] = [o for o in out["observations"] if o["name"] not in remove]
    k = 0
    for ch in out["channels"]:
        n = len(ch["samples"][0]["data"])
        ch["samples"].append({"name": sample,
                              "data": signal[k:k + n].tolist(),
                              "modifiers": [{"name": poi, "type": "normfactor", "data": None}]})
        k += n
    return set_poi_bounds(out, (-1e4, 1e4), poi=poi)


def set_poi_bounds(spec: dict, bounds, *, poi: str | None = None) -> dict:
    """Set (in place) every measurement's POI (default: its own) with ``bounds`` and init 1."""
    for meas in spec["measurements"]:
        name = meas["config"]["poi"] = poi or meas["config"]["poi"]
        params = [p for p in meas["config"].get("parameters", []) if p["name"] != name]
        params.append({"name": name, "bounds": [list(bounds)], "inits": [1.0]})
        meas["config"]["parameters"] = params
    return spec


def build_model(spec: dict, *, remove_channels=(), measurement: str | None = None,
                check: bool = True) -> HistFactoryModel:
    """Build the JAX HistFactory model of a background-only workspace specification.

    Args:
        spec: the background-only pyhf workspace (a dict).
        remove_channels: channels to drop first (e.g. validation regions that the analysis's
            signal patches remove).
        measurement: name of the measurement (default: the workspace's first).
        check: compare with pyhf's logpdf on random points (raises if they differ).

    Raises:
        InvalidWorkspace: the workspace is invalid, a removed channel does not exist, or it
            uses a modifier this evaluation does not reproduce.
    """
    pyhf = optional_import("pyhf")
    from surrogate_stats.likelihood._exact import numpy_backend

    names = [c["name"] for c in spec.get("channels", [])]
    unknown = [c for c in remove_channels if c not in names]
    if unknown:
        raise InvalidWorkspace(f"channels to remove {unknown} are not in the workspace; it has "
                               f"{names}")
    if len(remove_channels) == len(names):
        raise InvalidWorkspace("removing every channel leaves nothing to fit")
    kept = copy.deepcopy(spec)
    kept["channels"] = [c for c in kept["channels"] if c["name"] not in remove_channels]
    kept["observations"] = [o for o in kept["observations"] if o["name"] not in remove_channels]
    types = {m["type"] for c in kept["channels"] for s in c["samples"] for m in s["modifiers"]}
    bad = sorted(types - set(SUPPORTED))
    if bad:
        raise InvalidWorkspace(f"modifier types {bad} are not supported by the JAX engine")
    with numpy_backend():
        try:
            ws = pyhf.Workspace(kept)
            model = ws.model(measurement_name=measurement, poi_name=None)
            data = np.asarray(ws.data(model), dtype=float)
        except Exception as exc:
            raise InvalidWorkspace(f"the background-only workspace does not build a pyhf "
                                   f"model: {type(exc).__name__}: {str(exc)[:200]}") from None
        cfg = model.config
        channels = list(cfg.channels)
        nbins = dict(cfg.channel_nbins)
        samples = list(cfg.samples)
        offsets, b = {}, 0
        for c in channels:
            offsets[c] = b
            b += nbins[c]
        n_bins = b
        par_index, par_names = {}, []
        for name in cfg.par_order:
            sl = cfg.par_slice(name)
            par_index[name] = sl
            n = sl.stop - sl.start
            par_names += [name] if n == 1 else [f"{name}[{i}]" for i in range(n)]
        n_pars = cfg.npars
        init = np.array(cfg.suggested_init(), dtype=float)
        bounds = np.array(cfg.suggested_bounds(), dtype=float)
        fixed = np.array(cfg.suggested_fixed(), dtype=bool)

        nominal = np.zeros((len(samples), n_bins))
        ns, hs = {}, {}
        by_name = {c["name"]: c for c in kept["channels"]}
        mult_slots: dict = {}
        for c in channels:
            for s_i, s in enumerate(samples):
                smp = next((x for x in by_name[c]["samples"] if x["name"] == s), None)
                if smp is None:
                    continue
                o = offsets[c]
                sl_bins = slice(o, o + nbins[c])
                nom = np.asarray(smp["data"], dtype=float)
                nominal[s_i, sl_bins] = nom
                for m in smp["modifiers"]:
                    t, name = m["type"], m["name"]
                    sl = par_index[name]
                    if t == "normsys":
                        up, dn = ns.setdefault(sl.start, (np.ones((len(samples), n_bins)),
                                                          np.ones((len(samples), n_bins))))
                        up[s_i, sl_bins] = float(m["data"]["hi"])
                        dn[s_i, sl_bins] = float(m["data"]["lo"])
                    elif t == "histosys":
                        up, dn = hs.setdefault(sl.start, (np.zeros((len(samples), n_bins)),
                                                          np.zeros((len(samples), n_bins))))
                        up[s_i, sl_bins] = np.asarray(m["data"]["hi_data"], dtype=float) - nom
                        dn[s_i, sl_bins] = nom - np.asarray(m["data"]["lo_data"], dtype=float)
                    else:  # a parameter value multiplies the rate: scalar or one per bin
                        idx = np.full(n_bins, -1)
                        if sl.stop - sl.start == 1 and t in ("normfactor", "lumi"):
                            idx[sl_bins] = sl.start
                        else:
                            if sl.stop - sl.start != nbins[c]:
                                raise InvalidWorkspace(
                                    f"{t} modifier {name!r} of sample {s!r} in channel {c!r} has "
                                    f"{sl.stop - sl.start} parameters for {nbins[c]} bins")
                            idx[sl_bins] = np.arange(sl.start, sl.stop)
                        slot = mult_slots.setdefault((s_i, c), [])
                        slot.append(idx)
        n_slots = max((len(v) for v in mult_slots.values()), default=0)
        mult_idx = np.full((n_slots, len(samples), n_bins), n_pars)
        for (s_i, _c), lst in mult_slots.items():
            for k, idx in enumerate(lst):
                sel = idx >= 0
                mult_idx[k, s_i, sel] = idx[sel]
        ns_idx = np.array(sorted(ns), dtype=int)
        ns_up = np.array([ns[i][0] for i in ns_idx]).reshape(-1, len(samples), n_bins)
        ns_dn = np.array([ns[i][1] for i in ns_idx]).reshape(-1, len(samples), n_bins)
        hs_idx = np.array(sorted(hs), dtype=int)
        hs_up = np.array([hs[i][0] for i in hs_idx]).reshape(-1, len(samples), n_bins)
        hs_dn = np.array([hs[i][1] for i in hs_idx]).reshape(-1, len(samples), n_bins)
        if np.any(ns_up <= 0) or np.any(ns_dn <= 0):
            raise InvalidWorkspace("a normsys modifier has a non-positive hi or lo factor")
        coef = _code4_coefficients(ns_up, ns_dn) if ns_idx.size else np.zeros((6, 0, 1, 1))

        normal_par, normal_aux, normal_sigma = [], [], []
        pois_par, pois_aux, pois_factor = [], [], []
        pos = 0
        for name in cfg.auxdata_order:
            ps = cfg.param_set(name)
            sl = par_index[name]
            n = ps.n_parameters
            pars = list(range(sl.start, sl.stop))
            auxs = list(range(pos, pos + n))
            if ps.pdf_type == "normal":
                sig = list(getattr(ps, "sigmas", None) or [1.0] * n)
                normal_par += pars
                normal_aux += auxs
                normal_sigma += sig
            elif ps.pdf_type == "poisson":
                pois_par += pars
                pois_aux += auxs
                pois_factor += list(ps.factors)
            else:
                raise InvalidWorkspace(f"constraint type {ps.pdf_type!r} of {name!r} is not "
                                       "supported by the JAX engine")
            pos += n
        aux = np.asarray(cfg.auxdata, dtype=float)
        if pos != aux.size:
            raise InvalidWorkspace("auxiliary data and constraint terms do not line up")

    # workspace order of bins
    ws_channels = [c["name"] for c in kept["channels"]]
    bins, perm = [], []
    for c in ws_channels:
        for i in range(nbins[c]):
            bins.append(f"{c}-{i}")
            perm.append(offsets[c] + i)
    perm = np.array(perm, dtype=int)
    main = data[:n_bins]
    observed_ws = np.empty(n_bins)
    observed_ws[np.arange(n_bins)] = main[perm]
    hf = HistFactoryModel(
        bins=tuple(bins), par_names=tuple(par_names), init=init, lower=bounds[:, 0],
        upper=bounds[:, 1], fixed=fixed, observed=observed_ws, aux_observed=aux,
        remove_channels=tuple(remove_channels), _perm=perm, _nominal=nominal,
        _ns_idx=ns_idx, _ns_coef=coef, _ns_up=ns_up, _ns_dn=ns_dn,
        _hs_idx=hs_idx, _hs_up=hs_up, _hs_dn=hs_dn, _mult_idx=mult_idx,
        _normal_par=np.array(normal_par, dtype=int), _normal_aux=np.array(normal_aux, dtype=int),
        _normal_sigma=np.array(normal_sigma, dtype=float),
        _pois_par=np.array(pois_par, dtype=int), _pois_aux=np.array(pois_aux, dtype=int),
        _pois_factor=np.array(pois_factor, dtype=float))
    if check:
        hf.check_against_pyhf(spec)
    return hf
