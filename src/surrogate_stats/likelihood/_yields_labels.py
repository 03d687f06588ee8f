"""Exact labels for yield-parametrised surrogates: profiled -ln L at many per-bin signal yields.

A signal enters with a normalisation factor only (no signal systematics), so the profiled
-ln L of every data set depends on the signal yields ``y = mu * s`` alone. Labels are
``NLL_d(y)`` for the four data sets of OLLL / spey:

* ``observed``: the workspace's data;
* ``apriori``: the background prediction at pyhf's nominal parameters (main data), with the
  nominal auxiliary data;
* ``observed_asimov``: pyhf's Asimov data for expected limits, built from the background-only
  (mu = 0) fit to the observed data (``expected=True`` of the per-point surrogates);
* ``apriori_asimov``: the same built from the a-priori data (identical to ``apriori`` unless
  the workspace's initial values are not its constraints' centres).

Training points come from two samplers:

* **rays**: random signal shapes ``s`` (random subsets of active channels, log-normal
  magnitudes correlated along each channel's bins, small leakage elsewhere, normalised to unit
  Fisher sensitivity), each followed from mu = 0 to where -2 ln lambda reaches ``tmu_max`` on
  the observed or the a-priori data, ``n_mu`` points per ray (stratified in mu);
* **random walk**: walkers started on ray points with observed -2 ln lambda <= ``walk_tmu``
  take multiplicative steps in the yields and keep those that stay in that region.

Labels are computed through :func:`surrogate_stats._executor.run_chunks` (local processes, Dask
or serial) and stored per chunk, so an interrupted run resumes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.likelihood._vfit import better, bound_starts, keep_better

__all__ = ["DATASETS", "YieldLabelConfig", "YieldLabels", "generate_yield_labels",
           "reference_datasets"]

DATASETS = ("observed", "apriori", "observed_asimov", "apriori_asimov")
LABEL_VERSION = 5  # bump when the labelling changes what a stored chunk means


def _bound_columns(n_mu: int) -> list[int]:
    """Ray points refitted from :func:`~surrogate_stats.likelihood._vfit.bound_starts`."""
    return [n_mu // 2, n_mu - 1]


@dataclass(frozen=True)
class YieldLabelConfig:
    """How the training signals are drawn and labelled.

    Attributes:
        n_signals: random signal shapes (rays).
        n_mu: labelled points per ray.
        tmu_max: each ray is followed until -2 ln lambda reaches this on the observed or the
            a-priori data.
        walkers: random walkers (0: none); each takes ``walk_steps`` steps.
        walk_steps: steps per walker.
        walk_tmu: the walk stays where the observed -2 ln lambda is at most this.
        restarts: besides continuation along each ray, half of its points (a checkerboard)
            are refitted from pyhf's init and ``restarts - 1`` random starts, and lower
            minima found are continued along the ray (0: none, the default; 3 roughly
            doubles the label time on sbottom, see docs/yields.md).
        bound_starts: refit the middle and the last point of each ray from
            :func:`~surrogate_stats.likelihood._vfit.bound_starts` (weakly constrained
            Poisson parameters at their upper bound, free normfactors at their lower bound)
            and continue lower minima along the ray (a no-op on workspaces that have neither
            kind of parameter).
        rays_per_task: rays per executor chunk (and walkers per chunk).
        chunk: fits per compiled engine call.
        seed: seed of the signal sampling.
    """

    n_signals: int = 1500
    n_mu: int = 10
    tmu_max: float = 36.0
    walkers: int = 1200
    walk_steps: int = 3
    walk_tmu: float = 25.0
    restarts: int = 0
    bound_starts: bool = True
    rays_per_task: int = 128
    chunk: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.n_signals < 10:
            raise InvalidInput(f"n_signals must be at least 10; got {self.n_signals}")
        if self.n_mu < 3:
            raise InvalidInput(f"n_mu must be at least 3; got {self.n_mu}")
        if not self.tmu_max >= 25.0:
            raise InvalidInput(f"tmu_max must be >= 25 to cover the 95% CL region; got "
                               f"{self.tmu_max}")
        if self.walkers < 0 or self.walk_steps < 1:
            raise InvalidInput("walkers must be >= 0 and walk_steps >= 1")
        if not 0 < self.walk_tmu <= self.tmu_max:
            raise InvalidInput(f"walk_tmu must be in (0, tmu_max]; got {self.walk_tmu}")
        if self.restarts < 0:
            raise InvalidInput(f"restarts must be >= 0; got {self.restarts}")
        if not isinstance(self.bound_starts, bool):
            raise InvalidInput(f"bound_starts must be True or False; got {self.bound_starts!r}")
        if self.rays_per_task < 1 or self.chunk < 1:
            raise InvalidInput("rays_per_task and chunk must be >= 1")


@dataclass
class YieldLabels:
    """Exact profiled -ln L at signal yields ``y`` (workspace bin order), four data sets.

    Attributes:
        y: (N, B) signal yields of every labelled point.
        nll: (N, 4) -ln L in the order of :data:`DATASETS`.
        converged: (N, 4) whether the engine's fit converged (unconverged points are not used).
        source: (N,) 0 for ray points, 1 for random-walk points.
        ray: (N,) index of each ray point's ray (into ``ray_shapes``); -1 for walk points.
        nll0: (4,) -ln L at zero signal.
        tmu_observed: (N,) -2 ln lambda(mu = 1) of each point's own signal on the observed
            data (ray points: relative to the ray's bounded best fit).
        scale: (B,) signal yield per bin worth one sigma of sensitivity (Asimov, zero signal).
        information: (B, B) profiled Fisher information in the signal yields (Asimov).
        datasets: name -> (main, aux) data of each data set.
        ray_shapes, ray_mu_hat, ray_nll_hat: per ray, its shape, bounded best fit on the
            observed data and that -ln L.
        gradient0, information0: (4, B) and (4, B, B) exact gradient and profiled Hessian of
            each data set's -ln L in the signal yields at zero signal.
        info: counts, timings, config.
        gradient: (N, 4, B) exact gradient of each point's profiled -ln L in the signal
            yields, ``1 - n / lambda`` at the fitted parameters (envelope theorem), or None
            for labels made without it.
    """

    y: np.ndarray
    nll: np.ndarray
    converged: np.ndarray
    source: np.ndarray
    ray: np.ndarray
    nll0: np.ndarray
    tmu_observed: np.ndarray
    scale: np.ndarray
    information: np.ndarray
    datasets: dict
    ray_shapes: np.ndarray
    ray_mu_hat: np.ndarray
    ray_nll_hat: np.ndarray
    gradient0: np.ndarray
    information0: np.ndarray
    info: dict = field(default_factory=dict)
    gradient: np.ndarray | None = None

    @property
    def usable(self) -> np.ndarray:
        """Points whose four fits all converged."""
        return self.converged.all(axis=1)


# -- reference data sets ------------------------------------------------------------------------
def reference_datasets(model, fitter) -> tuple[dict, np.ndarray, dict]:
    """The four data sets, -ln L at zero signal for each, and the background-only fits.

    Returns ``(datasets, nll0, thetas)``: name -> (main, aux); (4,) -ln L at y = 0; name ->
    nuisance parameters of the zero-signal fit.
    """
    jax = optional_import("jax")
    obs = (np.asarray(model.observed, dtype=float), np.asarray(model.aux_observed, dtype=float))
    with jax.enable_x64(True):
        prefit = np.asarray(model.background(jax.numpy.asarray(model.init)))
    apriori = (prefit, obs[1].copy())
    obs_a = fitter.asimov(*obs)
    apr_a = fitter.asimov(*apriori)
    datasets = {"observed": obs, "apriori": apriori,
                "observed_asimov": obs_a[:2], "apriori_asimov": apr_a[:2]}
    zero = np.zeros((len(DATASETS), model.n_bins))
    fits = fitter.fit(zero, np.stack([datasets[d][0] for d in DATASETS]),
                      np.stack([datasets[d][1] for d in DATASETS]), mu=np.zeros(len(DATASETS)))
    if not fits.converged.all():
        bad = [d for d, c in zip(DATASETS, fits.converged) if not c]
        raise InvalidInput(f"the background-only fits did not converge on {bad}; this "
                           "workspace cannot be labelled with the vectorised engine")
    thetas = {d: fits.theta[i] for i, d in enumerate(DATASETS)}
    return datasets, fits.nll, thetas


# -- signal shapes ------------------------------------------------------------------------------
def sample_shapes(rng: np.random.Generator, n: int, channel_of_bin: np.ndarray,
                  information: np.ndarray) -> np.ndarray:
    """``n`` random non-negative signal shapes normalised to unit Fisher sensitivity.

    Each shape activates a random subset of channels (each with probability 0.6, at least
    one); in an active channel, log-magnitudes (in units of the bin's one-sigma yield) follow a
    Gaussian random walk along the bins (correlated, spread over orders of magnitude);
    inactive channels get a leakage of 1e-4 to 1e-1 of the largest active bin. One shape in
    ten has a single non-zero bin. ``s^T I s = 1`` for every shape.
    """
    n_bins = channel_of_bin.size
    sigma = 1.0 / np.sqrt(np.maximum(np.diag(information), 1e-300))
    channels = np.unique(channel_of_bin)
    out = np.zeros((n, n_bins))
    for i in range(n):
        if rng.uniform() < 0.1:
            b = rng.integers(n_bins)
            out[i, b] = sigma[b]
        else:
            active = rng.uniform(size=channels.size) < 0.6
            if not active.any():
                active[rng.integers(channels.size)] = True
            level = rng.normal(0.0, 1.5, size=channels.size)
            logs = np.empty(n_bins)
            for c, ch in enumerate(channels):
                idx = np.flatnonzero(channel_of_bin == ch)
                walk = np.cumsum(rng.normal(0.0, 0.7, size=idx.size))
                logs[idx] = level[c] + walk - walk.mean()
            mag = np.exp(logs)
            on = active[np.searchsorted(channels, channel_of_bin)]
            top = mag[on].max()
            mag[~on] = top * 10.0 ** rng.uniform(-4.0, -1.0, size=(~on).sum())
            out[i] = mag * sigma
        norm = np.sqrt(out[i] @ information @ out[i])
        out[i] /= norm
    return out


# -- workers ------------------------------------------------------------------------------------
def _setup(shared: dict):
    from surrogate_stats._executor import worker_cache

    def build():
        from surrogate_stats.likelihood._histfactory import build_model
        from surrogate_stats.likelihood._vfit import VectorFitter

        model = build_model(shared["spec"], remove_channels=tuple(shared["remove"]),
                            check=False)
        return model, VectorFitter(model, chunk=int(shared["chunk"]))

    return worker_cache("yield-labels", build)


def _data(shared, names):
    main = np.stack([np.asarray(shared["datasets"][d][0], dtype=float) for d in names])
    aux = np.stack([np.asarray(shared["datasets"][d][1], dtype=float) for d in names])
    return main, aux


def _names(shared) -> list[str]:
    """The data sets that need fits (the a-priori Asimov set is skipped when it is a-priori)."""
    return list(DATASETS[:3]) if shared["same_apriori_asimov"] else list(DATASETS)


def _complete(nll, conv, shared):
    """(…, 3) results -> (…, 4) when the a-priori Asimov set equals the a-priori one."""
    if not shared["same_apriori_asimov"]:
        return nll, conv
    return (np.concatenate([nll, nll[..., 1:2]], axis=-1),
            np.concatenate([conv, conv[..., 1:2]], axis=-1))


def _complete_gradient(grad, shared):
    """(…, 3, B) gradients -> (…, 4, B), as :func:`_complete` does for -ln L."""
    if not shared["same_apriori_asimov"]:
        return grad
    return np.concatenate([grad, grad[..., 1:2, :]], axis=-2)


def _gradients(model, y, theta, shared, names):
    """Exact gradient of the profiled -ln L in the signal yields at fitted parameters.

    The signal enters the Poisson means only, ``lambda = b(theta) + y``, so by the envelope
    theorem ``d min_theta(-ln L) / dy = 1 - n / lambda`` at the fit (bounds active or not).
    ``y`` (n, B), ``theta`` (n, k, P) for the ``k`` named data sets; returns (n, k, B).
    """
    jax = optional_import("jax")
    n, k, p = theta.shape
    main, _ = _data(shared, names)
    with jax.enable_x64(True):
        b = np.asarray(jax.vmap(model.background)(jax.numpy.asarray(theta.reshape(n * k, p))))
    lam = b.reshape(n, k, -1) + y[:, None, :]
    return 1.0 - main[None] / np.maximum(lam, 1e-300)


def _fit_points(fitter, y, shared, names, start):
    """Fixed mu = 1 fits of yields y (n, B) on each named data set, from ``start`` (n, k, P).

    Returns (nll (n, k), converged (n, k), theta (n, k, P)).
    """
    n, k, p = y.shape[0], len(names), start.shape[-1]
    main, aux = _data(shared, names)
    res = fitter.fit(np.repeat(y, k, axis=0), np.tile(main, (n, 1)), np.tile(aux, (n, 1)),
                     mu=np.ones(n * k), init=start.reshape(n * k, p))
    return res.nll.reshape(n, k), res.converged.reshape(n, k), res.theta.reshape(n, k, p)


def _sweep(fitter, shapes, mus, shared, names):
    """Fits at ``y = mus[:, j] * shapes`` (mus increasing in j) on each named data set.

    The likelihood can have several local minima (a normfactor at its bound, histosys
    interpolation), so fits are continued along each ray: forward from the zero-signal fit,
    then backward from the neighbour's solution; the lower converged -ln L is kept.
    Returns (nll (n, K, k), converged (n, K, k), theta (n, K, k, P)).
    """
    n, big_k = mus.shape
    theta0 = np.stack([np.asarray(shared["theta0"][d], dtype=float) for d in names])
    nll = np.full((n, big_k, len(names)), np.inf)
    conv = np.zeros((n, big_k, len(names)), dtype=bool)
    theta = np.empty((n, big_k, len(names), theta0.shape[1]))
    start = np.broadcast_to(theta0[None], (n,) + theta0.shape)
    for j in range(big_k):
        nll[:, j], conv[:, j], theta[:, j] = _fit_points(fitter, shapes * mus[:, j:j + 1],
                                                         shared, names, start)
        start = theta[:, j]
    for j in range(big_k - 2, -1, -1):
        keep_better((nll, conv, theta), (slice(None), j),
                    _fit_points(fitter, shapes * mus[:, j:j + 1], shared, names, theta[:, j + 1]))
    return nll, conv, theta


def _restart(fitter, shapes, mus, shared, names, fits, starts, mask=None):
    """Refits some ray points from other starts; carries gains along the rays.

    Continuation follows one branch of minima; where another branch is lower (seen on the
    sbottom workspaces for about 2% of points, up to 0.6 in -2 ln L), a fit started
    elsewhere finds it. Points ``(i, j)`` (ray i, point j) where ``mask`` (n, K) is true
    (default: a checkerboard, even ``i + j``) are refitted from each of ``starts`` (P,); every
    improvement is then continued to the neighbouring points forward and backward along its
    ray until it no longer improves them.
    ``fits``: (nll, conv, theta) of :func:`_sweep`, updated in place.
    """
    nll, conv, theta = fits
    n, big_k = mus.shape
    k = len(names)
    if mask is None:
        mask = (np.arange(n)[:, None] + np.arange(big_k)[None, :]) % 2 == 0
    rows, cols = np.nonzero(mask)
    changed = np.zeros((n, big_k), dtype=bool)
    y = shapes[rows] * mus[rows, cols][:, None]

    def keep(r, c, new):
        changed[r, c] |= keep_better(fits, (r, c), new).any(axis=-1)

    for s0 in starts:
        keep(rows, cols, _fit_points(fitter, y, shared, names,
                                     np.broadcast_to(s0, (len(rows), k, s0.shape[-1]))))
    for order, step in ((range(1, big_k), 1), (range(big_k - 2, -1, -1), -1)):
        for j in order:
            r = np.flatnonzero(changed[:, j - step])
            if r.size:
                keep(r, j, _fit_points(fitter, shapes[r] * mus[r, j:j + 1], shared, names,
                                       theta[r, j - step]))
    return nll, conv, theta


def _free_fit(fitter, shapes, shared, mu_hi, starts):
    """Bounded best fit (0 <= mu <= mu_hi) on the observed data, from several starts.

    ``starts``: list of (theta (n, P) or None, mu (n,) or None); the lowest converged fit wins.
    """
    main, aux = _data(shared, ["observed"])
    best = None
    for theta, mu0 in starts:
        res = fitter.fit(shapes, main[0], aux[0], mu_bounds=(0.0, mu_hi), init=theta,
                         mu_init=mu0)
        if best is None:
            best = res
            continue
        take = better(best.nll, best.converged, res.nll, res.converged)
        best = type(res)(**{f: np.where(take[(...,) + (None,) * (getattr(res, f).ndim - 1)],
                                        getattr(res, f), getattr(best, f))
                            for f in ("theta", "mu", "nll", "converged", "iterations",
                                      "refitted")})
    return best


def label_rays(shared: dict, task: dict) -> dict:
    """Worker: sample ``task["n"]`` rays (seeded by ``task["seed"], task["start"]``), label them."""
    from surrogate_stats.likelihood._vfit import random_starts

    model, fitter = _setup(shared)
    rng = np.random.default_rng([int(task["seed"]), int(task["start"]), 17])
    info = np.asarray(shared["information"], dtype=float)
    shapes = sample_shapes(rng, int(task["n"]), np.asarray(shared["channel_of_bin"]), info)
    n, n_mu, tmu_max = shapes.shape[0], int(shared["n_mu"]), float(shared["tmu_max"])
    nll0 = np.asarray(shared["nll0"], dtype=float)
    # a coarse scan (observed and a-priori data) finds where each ray ends
    reach = np.sqrt(tmu_max) * np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    nll_g, conv_g, theta_g = _sweep(fitter, shapes, np.tile(reach, (n, 1)), shared,
                                    ["observed", "apriori"])
    free = _free_fit(fitter, shapes, shared, float(reach[-1]),
                     [(None, None), (theta_g[:, 0, 0], np.full(n, reach[0]))])
    t_obs = 2.0 * (nll_g[..., 0] - free.nll[:, None])
    t_exp = 2.0 * (nll_g[..., 1] - nll0[1])
    t = np.maximum(np.maximum(t_obs, t_exp), 0.0)
    # a scan point whose fit did not converge only says "far": it cannot end the ray early
    t = np.where(conv_g.all(axis=2), t, np.inf)
    mu_max = np.empty(n)
    for i in range(n):
        root_t = np.sqrt(np.concatenate([[0.0], t[i]]))
        mus = np.concatenate([[0.0], reach])
        above = np.flatnonzero(root_t >= np.sqrt(tmu_max))
        if above.size == 0:
            mu_max[i] = reach[-1]  # an insensitive direction: label as far as scanned
        else:
            j = above[0]
            mu_max[i] = (np.interp(np.sqrt(tmu_max), root_t[j - 1:j + 1], mus[j - 1:j + 1])
                         if np.isfinite(root_t[j]) else mus[j])
    u = (np.arange(n_mu)[None, :] + rng.uniform(size=(n, n_mu))) / n_mu
    mus = mu_max[:, None] * u
    names = _names(shared)
    nll, conv, theta = _sweep(fitter, shapes, mus, shared, names)
    if int(shared.get("restarts", 0)):
        model_init = np.asarray(model.init, dtype=float)
        starts = [model_init] + list(random_starts(model, int(shared["restarts"]) - 1,
                                                   [int(task["seed"]), int(task["start"]), 31]))
        _restart(fitter, shapes, mus, shared, names, (nll, conv, theta), starts)
    bound = np.asarray(shared.get("bound_starts", []), dtype=float).reshape(-1, model.n_pars)
    if bound.size:
        # the middle and the far end of each ray from the bound starts, continued both ways
        mask = np.zeros(mus.shape, dtype=bool)
        mask[:, _bound_columns(n_mu)] = True
        _restart(fitter, shapes, mus, shared, names, (nll, conv, theta), list(bound), mask)
    # the best labelled point of each ray is one more start for its best fit
    k_best = np.argmin(np.where(conv[..., 0], nll[..., 0], np.inf), axis=1)
    rows = np.arange(n)
    free = _free_fit(fitter, shapes, shared, float(reach[-1]),
                     [(free.theta, free.mu), (theta[rows, k_best, 0], mus[rows, k_best])])
    nll4, conv4 = _complete(nll, conv, shared)
    ray = np.repeat(np.arange(n), n_mu)
    mu_hat = free.mu[ray]
    nll4, conv4 = nll4.reshape(n * n_mu, 4), conv4.reshape(n * n_mu, 4)
    t_obs_pts = np.where(mus.reshape(-1) > mu_hat, 2.0 * (nll4[:, 0] - free.nll[ray]), 0.0)
    t_obs_pts = np.where(free.converged[ray], np.maximum(t_obs_pts, 0.0), np.nan)
    y = (shapes[:, None, :] * mus[:, :, None]).reshape(-1, model.n_bins)
    theta_pts = theta.reshape(n * n_mu, len(names), -1)
    grad = _complete_gradient(_gradients(model, y, theta_pts, shared, names), shared)
    return {"y": y, "nll": nll4, "converged": conv4, "ray": ray + int(task["start"]),
            "gradient": grad,
            "tmu_observed": t_obs_pts, "shapes": shapes, "mu_hat": free.mu,
            "nll_hat": free.nll, "mu_max": mu_max,
            "theta": theta_pts}


def label_walk(shared: dict, task: dict) -> dict:
    """Worker: random walk from ``task["points"]`` inside observed tmu <= walk_tmu.

    Each walker carries its fits' parameters (``task["theta"]``, one set per data set) and
    starts every fit from them (continuation), as the rays do.
    """
    model, fitter = _setup(shared)
    rng = np.random.default_rng([int(task["seed"]), int(task["index"]), 29])
    y = np.asarray(task["points"], dtype=float)
    theta = np.asarray(task["theta"], dtype=float)  # (n, k, P)
    scale = np.asarray(shared["scale"], dtype=float)
    limit = float(shared["walk_tmu"])
    names = _names(shared)
    out_y, out_nll, out_conv, out_t, out_g = [], [], [], [], []
    for _ in range(int(shared["walk_steps"])):
        prop = y * np.exp(rng.normal(0.0, 0.35, size=y.shape))
        kick = rng.uniform(size=y.shape) < 0.15
        prop = prop + kick * scale * np.abs(rng.normal(0.0, 0.3, size=y.shape))
        nll, conv, th = _fit_points(fitter, prop, shared, names, theta)
        best = _free_fit(fitter, prop, shared, 1.0, [(th[:, 0], np.full(len(prop), 0.5))])
        t = np.where(best.mu < 1.0, 2.0 * (nll[:, 0] - best.nll), 0.0)
        ok = conv.all(axis=1) & best.converged & (t <= limit)
        if ok.any():
            n4, c4 = _complete(nll[ok], conv[ok], shared)
            out_y.append(prop[ok])
            out_nll.append(n4)
            out_conv.append(c4)
            out_t.append(np.maximum(t[ok], 0.0))
            out_g.append(_complete_gradient(_gradients(model, prop[ok], th[ok], shared, names),
                                            shared))
        y = np.where(ok[:, None], prop, y)
        theta = np.where(ok[:, None, None], th, theta)
    if not out_y:
        b = model.n_bins
        return {"y": np.zeros((0, b)), "nll": np.zeros((0, 4)),
                "converged": np.zeros((0, 4), bool), "tmu_observed": np.zeros(0),
                "gradient": np.zeros((0, 4, b))}
    return {"y": np.concatenate(out_y), "nll": np.concatenate(out_nll),
            "converged": np.concatenate(out_conv), "tmu_observed": np.concatenate(out_t),
            "gradient": np.concatenate(out_g)}


# -- driver -------------------------------------------------------------------------------------
def generate_yield_labels(spec: dict, *, remove_channels=(), config: YieldLabelConfig | None = None,
                          store_dir=None, executor=None, progress: bool = True,
                          model=None) -> YieldLabels:
    """Label signal yields of a background-only workspace with the vectorised engine.

    Args:
        spec: the background-only pyhf workspace (dict).
        remove_channels: channels dropped before building the model.
        config: :class:`YieldLabelConfig`.
        store_dir: directory of the resumable chunk store (None: a temporary one).
        executor: :class:`surrogate_stats._executor.ExecutorConfig` (default: local processes).
        progress: show progress bars.
        model: an already built :class:`HistFactoryModel` of ``spec`` (optional).
    """
    import tempfile

    from surrogate_stats._executor import ChunkStore, ExecutorConfig, fingerprint, run_chunks
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter, signal_information

    config = config or YieldLabelConfig()
    executor = executor or ExecutorConfig()
    t0 = time.perf_counter()
    if model is None:
        model = build_model(spec, remove_channels=tuple(remove_channels))
    fitter = VectorFitter(model, chunk=min(config.chunk, 64))
    datasets, nll0, thetas = reference_datasets(model, fitter)
    information = signal_information(model, thetas["observed_asimov"],
                                     *datasets["observed_asimov"])
    scale = 1.0 / np.sqrt(np.diag(information))
    info0 = np.stack([signal_information(model, thetas[d], *datasets[d]) for d in DATASETS])
    with optional_import("jax").enable_x64(True):
        jnp = optional_import("jax.numpy")
        grad0 = np.stack([1.0 - datasets[d][0] / np.asarray(model.background(
            jnp.asarray(thetas[d]))) for d in DATASETS])
    same = bool(np.allclose(datasets["apriori"][0], datasets["apriori_asimov"][0], rtol=1e-9,
                            atol=1e-9)
                and np.allclose(datasets["apriori"][1], datasets["apriori_asimov"][1],
                                rtol=1e-9, atol=1e-9))
    channels = [b.rsplit("-", 1)[0] for b in model.bins]
    names = list(dict.fromkeys(channels))
    shared = {
        "spec": spec, "remove": list(model.remove_channels), "chunk": config.chunk,
        "datasets": {d: [datasets[d][0].tolist(), datasets[d][1].tolist()] for d in DATASETS},
        "nll0": nll0.tolist(), "information": information.tolist(), "scale": scale.tolist(),
        "channel_of_bin": [names.index(c) for c in channels], "n_mu": config.n_mu,
        "tmu_max": config.tmu_max, "walk_tmu": config.walk_tmu,
        "walk_steps": config.walk_steps, "same_apriori_asimov": same,
        "restarts": config.restarts,
        "bound_starts": (bound_starts(model).tolist() if config.bound_starts else []),
        "theta0": {d: thetas[d].tolist() for d in DATASETS},
        "version": LABEL_VERSION,
    }
    t_setup = time.perf_counter() - t0
    tmp = None
    if store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="surrogate_stats-labels-")
        store_dir = tmp.name
    store = ChunkStore(store_dir, fingerprint([shared, asdict(config)]))
    try:
        tasks = {}
        for start in range(0, config.n_signals, config.rays_per_task):
            tasks[f"rays-{start:07d}"] = {"seed": config.seed, "start": start,
                                          "n": min(config.rays_per_task,
                                                   config.n_signals - start)}
        t1 = time.perf_counter()
        rays = run_chunks("surrogate_stats.likelihood._yields_labels:label_rays", tasks,
                          shared=shared, store=store, config=executor, progress=progress,
                          desc="labels: signal rays")
        parts = [rays[k] for k in sorted(rays)]
        t_rays = time.perf_counter() - t1
        cat = {k: np.concatenate([p[k] for p in parts]) for k in
               ("y", "nll", "converged", "ray", "tmu_observed", "shapes", "mu_hat", "nll_hat",
                "theta", "gradient")}
        walk_parts = []
        t_walk = 0.0
        if config.walkers:
            rng = np.random.default_rng([config.seed, 5])
            inside = np.flatnonzero(cat["converged"].all(1)
                                    & (cat["tmu_observed"] <= config.walk_tmu))
            if inside.size:
                pick = rng.choice(inside, size=config.walkers, replace=True)
                starts, start_theta = cat["y"][pick], cat["theta"][pick]
                wtasks = {}
                for i, a in enumerate(range(0, config.walkers, config.rays_per_task)):
                    sl = slice(a, a + config.rays_per_task)
                    wtasks[f"walk-{i:05d}"] = {"seed": config.seed, "index": i,
                                               "points": starts[sl], "theta": start_theta[sl]}
                t2 = time.perf_counter()
                walk = run_chunks("surrogate_stats.likelihood._yields_labels:label_walk",
                                  wtasks, shared=shared, store=store, config=executor,
                                  progress=progress, desc="labels: random walk")
                walk_parts = [walk[k] for k in sorted(walk)]
                t_walk = time.perf_counter() - t2
    finally:
        if tmp is not None:
            tmp.cleanup()
    y = [cat["y"]] + [p["y"] for p in walk_parts]
    nll = [cat["nll"]] + [p["nll"] for p in walk_parts]
    conv = [cat["converged"]] + [p["converged"] for p in walk_parts]
    tmu = [cat["tmu_observed"]] + [p["tmu_observed"] for p in walk_parts]
    source = [np.zeros(len(cat["y"]), int)] + [np.ones(len(p["y"]), int) for p in walk_parts]
    labels = YieldLabels(
        y=np.concatenate(y), nll=np.concatenate(nll), converged=np.concatenate(conv),
        source=np.concatenate(source),
        ray=np.concatenate([cat["ray"]] + [np.full(len(p["y"]), -1) for p in walk_parts]),
        nll0=np.asarray(nll0), tmu_observed=np.concatenate(tmu),
        scale=scale, information=information, datasets=datasets, ray_shapes=cat["shapes"],
        ray_mu_hat=cat["mu_hat"], ray_nll_hat=cat["nll_hat"], gradient0=grad0,
        information0=info0,
        gradient=np.concatenate([cat["gradient"]] + [p["gradient"] for p in walk_parts]))
    n = len(labels.y)
    labels.info = {
        "config": asdict(config), "n_points": int(n), "n_rays": int(len(cat["shapes"])),
        "n_walk_points": int(sum(len(p["y"]) for p in walk_parts)),
        "n_unconverged_points": int((~labels.usable).sum()),
        "same_apriori_asimov": same,
        "fits": int(_count_fits(config, n, same, len(shared["bound_starts"]))),
        "bound_starts": len(shared["bound_starts"]),
        "seconds": {"setup": round(t_setup, 2), "rays": round(t_rays, 2),
                    "walk": round(t_walk, 2), "total": round(time.perf_counter() - t0, 2)},
        "executor": {"kind": executor.kind, "workers": executor.workers
                     if executor.kind == "local" else None},
    }
    return labels


def _count_fits(config: YieldLabelConfig, n_points: int, same: bool, n_bound: int = 0) -> int:
    """Fits a run needs (approximately, for the throughput record; continuations of lower
    minima found by restarts are not counted)."""
    per_point = 3 if same else 4
    rays = config.n_signals * (1 + 5 * 2)
    walk = config.walkers * config.walk_steps * 2
    bound = config.n_signals * len(_bound_columns(config.n_mu)) * n_bound * per_point
    return rays + walk + n_points * per_point + bound
