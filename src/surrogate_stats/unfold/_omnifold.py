r"""OmniFold (Andreassen, Komiske, Metodiev, Nachman, Thaler, PRL 124 (2020) 182001) in JAX.

Two-step iterative classifier reweighting of the simulation. With simulated pairs
:math:`(t_k, r_k)`, simulation weights :math:`w^0_k`, push weights :math:`\nu_0 = 1`, and
:math:`L[(w_A, X), (w_B, X)](x)` the likelihood ratio a classifier learns between two weighted
samples, iteration :math:`n` is

1. *pull* (detector level): :math:`\omega_n(r) = \nu_{n-1}\, L[(1, \text{data}),
   (w^0\nu_{n-1}, \text{sim})](r)` for simulated events passing the detector selection;
   1b. events that fail it (inefficiency) get :math:`\omega_n = \nu_{n-1}\, L[(w^0\omega_n,
   T), (w^0\nu_{n-1}, T)](t)` from a particle-level classifier trained on the events that
   pass both selections (the paper's treatment of acceptance effects);
2. *push* (particle level): :math:`\nu_n = L[(w^0\omega_n, T), (w^0, T)](t)` for events
   passing the particle selection (a function of the particle level, learned against the
   unweighted simulation as in the paper's code, so classifier noise does not compound
   over iterations); fakes (detector-only events) keep their pulled weight
   :math:`\nu_n = \omega_n` so that their detector-level contribution is fitted in step 1.

The result is the per-event weight :math:`w^0 \nu_n` of the simulated particle level.
Classifiers are small MLPs (optax Adam, mini-batches, early stopping on a validation split,
optionally warm-started from the previous iteration); ratios are :math:`e^{\text{logit}}` clipped to
:math:`[e^{-c}, e^{c}]`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.unfold._data import UnfoldingData, check_detector_range

__all__ = ["OmniFoldConfig", "OmniFoldResult", "omnifold"]


@dataclass(frozen=True)
class OmniFoldConfig:
    """Hyperparameters of :func:`omnifold` (all JSON-able).

    Attributes:
        n_iterations: OmniFold iterations.
        hidden: hidden-layer widths of each classifier MLP.
        learning_rate: Adam learning rate.
        batch_size: mini-batch size.
        max_epochs: maximum epochs per classifier fit.
        patience: stop after this many epochs without a better validation loss.
        val_fraction: fraction of each classifier's events held out for early stopping.
        clip_logit: ratios are ``exp(clip(logit, -clip_logit, clip_logit))``.
        warm_start: start each iteration's classifiers from the previous iteration's.
    """

    n_iterations: int = 4
    hidden: tuple[int, ...] = (32, 32)
    learning_rate: float = 2e-3
    batch_size: int = 1024
    max_epochs: int = 30
    patience: int = 3
    val_fraction: float = 0.2
    clip_logit: float = 5.0
    warm_start: bool = False

    def __post_init__(self):
        for name in ("n_iterations", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"OmniFoldConfig.{name} must be >= 1; got "
                                   f"{getattr(self, name)}")
        if not 0 < self.val_fraction < 0.9:
            raise InvalidInput(f"val_fraction must be in (0, 0.9); got {self.val_fraction}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class OmniFoldResult:
    """Per-event weights of the simulated particle level after each iteration.

    Attributes:
        weights: ``(n_sim,)`` final weights :math:`w^0 \\nu_n` (use the events with
            ``sim.passed_truth``).
        history: ``(n_iterations, n_sim)`` push weights :math:`\\nu_n` after each iteration.
        config: the configuration used.
    """

    weights: np.ndarray
    history: np.ndarray
    config: OmniFoldConfig


def omnifold(key, data: UnfoldingData, *, config: OmniFoldConfig = OmniFoldConfig(),
             data_weights=None, sim_weights=None, progress: bool = False) -> OmniFoldResult:
    """Run OmniFold on ``data`` (simulated pairs + measured detector-level events).

    Args:
        key: JAX PRNG key (classifier initialisation, shuffling, splits).
        data: :class:`UnfoldingData`; only ``data.data.detector[passed_reco]`` and its
            weights are used from the data side.
        config: :class:`OmniFoldConfig`.
        data_weights: optional ``(n_data,)`` weights replacing ``data.data.weights``
            (bootstrap replicas use Poisson(1) weights).
        sim_weights: optional ``(n_sim,)`` weights replacing ``data.sim.weights``.
        progress: show a tqdm bar over iterations.

    Returns:
        :class:`OmniFoldResult`.
    """
    jax = optional_import("jax")
    tqdm = optional_import("tqdm.auto").tqdm
    sim, dat = data.sim, data.data
    w0 = sim.weights if sim_weights is None else np.asarray(sim_weights, dtype=float)
    if w0.shape != sim.weights.shape:
        raise InvalidInput(f"sim_weights must have shape {sim.weights.shape}; got {w0.shape}")
    reco, truth = sim.passed_reco, sim.passed_truth
    both, missed, fake = reco & truth, truth & ~reco, reco & ~truth
    x_data = dat.detector[dat.passed_reco]
    w_data = (dat.weights if data_weights is None
              else np.asarray(data_weights, dtype=float))[dat.passed_reco]
    if not w_data.sum() > 0:
        raise InvalidInput("the measured events' total weight is zero")
    check_detector_range(sim, x_data, stacklevel=3)
    r_sim, t_sim = sim.detector, sim.particle
    nu = np.ones(len(sim))
    models: dict[str, list] = {}
    hist = []
    keys = jax.random.split(key, 3 * config.n_iterations)
    for it in tqdm(range(config.n_iterations), desc="omnifold", disable=not progress,
                   leave=False):
        k1, k1b, k2 = keys[3 * it:3 * it + 3]
        # step 1: pull, detector level
        ratio, models["pull"] = _ratio(
            k1, x_data, w_data, r_sim[reco], w0[reco] * nu[reco], r_sim[reco],
            config, models.get("pull"))
        omega = nu.copy()
        omega[reco] = nu[reco] * ratio
        # step 1b: events without a detector-level measurement
        if missed.any():
            ratio_b, models["missed"] = _ratio(
                k1b, t_sim[both], w0[both] * omega[both], t_sim[both], w0[both] * nu[both],
                t_sim[missed], config, models.get("missed"))
            omega[missed] = nu[missed] * ratio_b
        # step 2: push, particle level
        ratio2, models["push"] = _ratio(
            k2, t_sim[truth], w0[truth] * omega[truth], t_sim[truth], w0[truth],
            t_sim[truth], config, models.get("push"))
        new = nu.copy()
        new[truth] = ratio2
        new[fake] = omega[fake]
        nu = new
        hist.append(nu.copy())
    return OmniFoldResult(w0 * nu, np.array(hist), config)


# ------------------------------------------------------------------------------ classifier
def _init_mlp(key, sizes):
    jax = optional_import("jax")
    jnp = jax.numpy
    params = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append((jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), jnp.zeros(b)))
    return params


def _logit(params, x):
    jax = optional_import("jax")
    h = x
    for w, b in params[:-1]:
        h = jax.nn.gelu(h @ w + b, approximate=True)
    w, b = params[-1]
    return (h @ w + b)[:, 0]


@cache
def _compiled(learning_rate: float, batch_size: int):
    """Jitted epoch and loss functions; cached so iterations reuse the compilation."""
    jax = optional_import("jax")
    optax = optional_import("optax")
    jnp = jax.numpy
    opt = optax.adam(learning_rate)

    def loss_fn(params, x, y, w):
        z = _logit(params, x)
        ll = y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z)
        return -jnp.sum(w * ll) / jnp.maximum(jnp.sum(w), 1e-30)

    @jax.jit
    def epoch(params, state, key, x, y, w):
        n = x.shape[0]
        perm = jax.random.permutation(key, n).reshape(n // batch_size, batch_size)

        def step(carry, idx):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, x[idx], y[idx], w[idx])
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss
        (params, state), _ = jax.lax.scan(step, (params, state), perm)
        return params, state

    return opt, epoch, jax.jit(loss_fn), jax.jit(_logit)


def _bucket(n: int, batch: int) -> int:
    """Round ``n`` up to a multiple of ``batch`` on a coarse grid (few distinct shapes)."""
    grain = max(batch, 2 ** max(int(math.log2(max(n, 1))) - 3, 0))
    grain = int(math.ceil(grain / batch) * batch)
    return int(math.ceil(n / grain) * grain)


def _pad(x, n):
    out = np.zeros((n,) + x.shape[1:], dtype=np.float32)
    out[:len(x)] = x
    return out


def _ratio(key, xa, wa, xb, wb, x_eval, config: OmniFoldConfig, warm):
    """Fit a classifier A (label 1) vs B (label 0), return exp(logit) at ``x_eval``."""
    jax = optional_import("jax")
    jnp = jax.numpy
    x = np.concatenate([xa, xb]).astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x = (x - mean) / std
    y = np.concatenate([np.ones(len(xa)), np.zeros(len(xb))])
    # equal total weight per class, mean weight one: f/(1-f) is then the density ratio
    w = np.concatenate([wa / wa.sum(), wb / wb.sum()]) * (len(x) / 2)
    k_init, k_split, k_fit = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(k_split, len(x)))
    n_val = max(1, int(config.val_fraction * len(x)))
    val, tr = perm[:n_val], perm[n_val:]
    opt, epoch, loss_fn, logit = _compiled(float(config.learning_rate), int(config.batch_size))
    params = warm if (warm is not None and config.warm_start) else _init_mlp(
        k_init, (x.shape[1], *config.hidden, 1))
    n_pad = _bucket(len(tr), config.batch_size)
    xt, yt, wt = _pad(x[tr], n_pad), _pad(y[tr], n_pad), _pad(w[tr], n_pad)  # zero weights pad
    xv, yv, wv = (jnp.asarray(a, dtype=jnp.float32) for a in (x[val], y[val], w[val]))
    state = opt.init(params)
    best, best_loss, since = params, float(loss_fn(params, xv, yv, wv)), 0
    for k in jax.random.split(k_fit, config.max_epochs):
        params, state = epoch(params, state, k, xt, yt, wt)
        vl = float(loss_fn(params, xv, yv, wv))
        if vl < best_loss - 1e-5:
            best, best_loss, since = params, vl, 0
        else:
            since += 1
            if since >= config.patience:
                break
    xe = jnp.asarray((x_eval - mean) / std, dtype=jnp.float32)
    z = np.asarray(logit(best, xe), dtype=np.float64)
    return np.exp(np.clip(z, -config.clip_logit, config.clip_logit)), best
