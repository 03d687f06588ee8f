"""Training a profiled-likelihood surrogate on exact labels (JAX + optax)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.likelihood._labels import DATASETS, LikelihoodLabels
from surrogate_stats.likelihood._surrogate import MLPWeights, ProfileLikelihoodSurrogate
from surrogate_stats.train import TrainConfig, fit, split_indices

__all__ = ["SurrogateConfig", "fit_surrogate"]

TMU_CORE = 12.0  # -2 ln lambda below which errors count fully in the loss
ANCHOR_WEIGHT = 0.25  # loss weight of the label at the minimum, per label point


@dataclass(frozen=True)
class SurrogateConfig:
    """Architecture and training of a profiled-likelihood surrogate.

    Each data set (observed, expected) gets its own tanh MLP ``1 -> hidden x depth -> 1`` that
    learns the residual of -2 ln lambda from a quadratic in mu (the asymptotic form), on mu
    scaled to [-1, 1]. The loss is the squared error of -2 ln lambda, down-weighted by
    ``(12 / tmu)^2`` where tmu > 12 so that the region that sets limits dominates.
    """

    hidden: int = 32
    depth: int = 2
    val_fraction: float = 0.2
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.hidden < 1 or self.depth < 1:
            raise InvalidInput(f"hidden and depth must be >= 1; got {self.hidden}, {self.depth}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise InvalidInput(f"val_fraction must be in [0, 0.5); got {self.val_fraction}")

    def as_dict(self) -> dict:
        return asdict(self)


def quadratic_prior(mu: np.ndarray, tmu: np.ndarray) -> tuple[float, float]:
    """Least-squares ``tmu ~ a (mu - m)^2 + c`` on the points with tmu <= 12; returns (a, m).

    ``m`` may lie below the domain (a minimum at the boundary); ``a > 0`` is enforced by
    falling back to the chord from the lowest point when the fit is not convex.
    """
    core = tmu <= TMU_CORE
    if core.sum() < 4:
        core = np.argsort(tmu)[:4]
    c2, c1, _ = np.polyfit(mu[core], tmu[core], 2)
    if c2 > 0:
        return float(c2), float(-c1 / (2 * c2))
    i0 = int(np.argmin(tmu))
    far = int(np.argmax(np.abs(mu - mu[i0])))
    a = max((tmu[far] - tmu[i0]) / max((mu[far] - mu[i0]) ** 2, 1e-12), 1e-12)
    return float(a), float(mu[i0])


def _init_mlp(key, hidden, depth):
    jax = optional_import("jax")
    jnp = jax.numpy
    sizes = [1] + [hidden] * depth + [1]
    layers = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        w = jax.random.normal(k, (n_in, n_out), dtype=jnp.float64) * jnp.sqrt(1.0 / n_in)
        layers.append((w, jnp.zeros(n_out, dtype=jnp.float64)))
    # start as exactly the quadratic prior: zero last layer
    layers[-1] = (jnp.zeros_like(layers[-1][0]), layers[-1][1])
    return layers


def _apply_mlp(layers, x):
    jnp = optional_import("jax.numpy")
    h = x[:, None]
    for w, b in layers[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = layers[-1]
    return (h @ w + b)[:, 0]


def fit_surrogate(
    key,
    labels: LikelihoodLabels,
    *,
    config: SurrogateConfig = SurrogateConfig(),
    progress: bool = True,
) -> tuple[ProfileLikelihoodSurrogate, dict]:
    """Fit one MLP per data set to the labels; return the surrogate and held-out metrics.

    Training runs in float64 inside ``jax.enable_x64`` (JAX's global setting is untouched).
    The metrics are on label points held out from training (``val_fraction``): the largest
    |Delta(-2 ln lambda)| where the exact value is <= 9, per data set.
    """
    jax = optional_import("jax")
    lo, hi = labels.domain
    center, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    weights = {}
    metrics: dict = {}
    heldout = {}
    with jax.enable_x64(True):
        jnp = jax.numpy
        keys = jax.random.split(key, 2 * len(DATASETS))
        for j, name in enumerate(DATASETS):
            lab = labels[name]
            mu, tmu = lab.mu, lab.tmu
            a, m = quadratic_prior(mu, tmu)
            resid = tmu - a * (mu - m) ** 2
            scale = float(max(np.std(resid), 1e-3))
            keep = [int(np.argmin(tmu)), 0, mu.size - 1]
            tr, va = split_indices(keys[2 * j], mu.size, config.val_fraction, keep_train=keep)
            heldout[name] = va
            x = (mu - center) / half
            w = np.where(tmu <= TMU_CORE, 1.0, (TMU_CORE / np.maximum(tmu, 1e-12)) ** 2)
            # the surrogate is tmu(mu) = F(mu) - F(mu_hat): an error at mu_hat would shift the
            # whole curve, so the label at the minimum weighs as much as a quarter of the rest
            w[int(np.argmin(tmu))] = ANCHOR_WEIGHT * mu.size

            def loss_fn(layers, data):
                xx, yy, ww = data
                return jnp.mean(ww * (_apply_mlp(layers, xx) - yy) ** 2)

            def part(idx, x=x, y=resid / scale, w=w):
                return (jnp.asarray(x[idx]), jnp.asarray(y[idx]), jnp.asarray(w[idx]))

            layers = _init_mlp(keys[2 * j + 1], config.hidden, config.depth)
            layers, history = fit(keys[2 * j], layers, loss_fn, part(tr),
                                  part(va if va.size else tr), config=config.train,
                                  progress=progress, desc=f"training ({name})")
            layers = [(np.asarray(w_), np.asarray(b_)) for w_, b_ in layers]
            weights[name] = MLPWeights(layers=layers, a=a, m=m, scale=scale)
            metrics[name] = {"history": history.as_dict(), "n_train": int(tr.size),
                             "n_val": int(va.size)}
    surrogate = ProfileLikelihoodSurrogate.from_parts(
        weights, domain=(lo, hi),
        mu_hat={d: labels[d].mu_hat for d in DATASETS},
        nll_min={d: labels[d].nll_min for d in DATASETS})
    for name in DATASETS:
        lab, va = labels[name], heldout[name]
        pred = surrogate.tmu(lab.mu, expected=name == "expected")
        err = np.abs(pred - lab.tmu)
        core = lab.tmu <= 9.0
        metrics[name]["max_abs_dtmu_all_labels"] = float(np.max(err[core]))
        held = va[core[va]] if va.size else np.array([], dtype=int)
        metrics[name]["max_abs_dtmu_heldout"] = float(np.max(err[held])) if held.size else None
    return surrogate, metrics
