"""Training a :class:`~surrogate_stats.flows.Flow` by weighted maximum likelihood."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.flows._flow import Flow, flow_log_prob, prepared
from surrogate_stats.flows._ops import JaxOps
from surrogate_stats.train._loop import MinibatchConfig, TrainHistory, fit_minibatch

__all__ = ["FlowTrainConfig", "fit_flow", "check_finite"]


@dataclass(frozen=True)
class FlowTrainConfig:
    """Hyperparameters of :func:`fit_flow` (all JSON-able).

    Attributes:
        learning_rate: peak AdamW learning rate (warm-up one epoch, cosine decay).
        batch_size: events per step.
        max_epochs: maximum epochs.
        patience: early-stopping patience in epochs (on the validation loss); None for no
            early stopping (the whole warm-up + cosine schedule runs).
        val_fraction: share of the events held out for validation.
        clip_norm: gradient-norm clipping.
        weight_decay: AdamW weight decay.
        ema_decay: per-step decay of the moving average of the parameters that is validated
            and returned (0: the raw parameters); see :class:`MinibatchConfig`.
        min_improvement: relative validation-loss improvement that counts as better; see
            :class:`MinibatchConfig`.
    """

    learning_rate: float = 1e-3
    batch_size: int = 512
    max_epochs: int = 50
    patience: int | None = 6
    val_fraction: float = 0.1
    clip_norm: float = 5.0
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    min_improvement: float = 1e-4

    def __post_init__(self):
        if not 0 < self.val_fraction < 0.9:
            raise InvalidInput(f"val_fraction must be in (0, 0.9); got {self.val_fraction}")
        self.minibatch()  # validates the rest

    def minibatch(self) -> MinibatchConfig:
        d = asdict(self)
        d.pop("val_fraction")
        if d["patience"] is None:
            d["patience"] = d["max_epochs"]
        return MinibatchConfig(**d)


def check_finite(name: str, a: np.ndarray, columns=None) -> None:
    """InvalidInput naming the columns with NaN or inf."""
    bad = ~np.isfinite(a)
    if bad.any():
        cols = np.flatnonzero(bad.reshape(len(a), -1).any(axis=0))
        names = [columns[i] if columns else int(i) for i in cols]
        raise InvalidInput(f"{name} holds {int(bad.sum())} NaN/inf values (columns {names}); "
                           "drop or fix those events first")


def fit_flow(key, flow: Flow, x, *, condition=None, weights=None,
             config: FlowTrainConfig = FlowTrainConfig(), progress: bool = True,
             desc: str = "flow", standardise: bool = True) -> tuple[Flow, TrainHistory]:
    """Fit ``flow`` to events ``x`` (given ``condition``) by weighted maximum likelihood.

    The loss is ``-sum_i w_i log p(x_i | c_i) / sum_i w_i``; weights may be negative (signed
    MC weights) as long as their sum is positive. The flow's standardisation is set from the
    training events first (``standardise=False`` keeps the flow's own, to fine-tune a
    trained flow on reweighted events). A random ``config.val_fraction`` of the events is
    held out; the parameters with the best validation loss are returned.

    Args:
        key: JAX random key (split, validation and batches).
        flow: from :func:`coupling_flow` or :func:`masked_autoregressive_flow`.
        x: events, shape ``(N, flow.dim)``.
        condition: shape ``(N, flow.cond_dim)`` (required when ``cond_dim > 0``).
        weights: per-event weights, shape ``(N,)``.
        config: :class:`FlowTrainConfig`.

    Returns:
        ``(trained_flow, history)``.
    """
    jax = optional_import("jax")
    jnp = jax.numpy
    x = np.asarray(x, np.float64)
    n = len(x)
    if x.ndim != 2 or x.shape[1] != flow.dim:
        raise InvalidInput(f"x must have shape (N, {flow.dim}); got {x.shape}")
    check_finite("x", x)
    if flow.cond_dim:
        if condition is None:
            raise InvalidInput(f"this flow needs condition= of shape (N, {flow.cond_dim})")
        condition = np.asarray(condition, np.float64)
        if condition.shape != (n, flow.cond_dim):
            raise InvalidInput(f"condition must have shape ({n}, {flow.cond_dim}); got "
                               f"{condition.shape}")
        check_finite("condition", condition)
    elif condition is not None:
        raise InvalidInput("the flow is unconditional (cond_dim=0) but a condition was given")
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise InvalidInput(f"weights must have shape ({n},); got {w.shape}")
    check_finite("weights", w)
    if not w.sum() > 0:
        raise InvalidInput(f"the weights must have a positive sum; got {w.sum():.4g}")
    if n < 10:
        raise InvalidInput(f"need at least 10 events to fit a flow; got {n}")

    k_split, k_fit = jax.random.split(key)
    perm = np.asarray(jax.random.permutation(k_split, n))
    n_val = max(1, int(round(config.val_fraction * n)))
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if standardise:
        flow = flow.with_standardisation(x[tr], None if condition is None else condition[tr],
                                         w[tr])
    dtype = np.asarray(next(iter(flow.params[0].values()))).dtype if flow.params[0] else \
        np.float32
    w = w / w[tr].mean()

    def part(idx):
        d = {"x": jnp.asarray(x[idx], dtype), "w": jnp.asarray(w[idx], dtype)}
        if condition is not None:
            d["c"] = jnp.asarray(condition[idx], dtype)
        return d

    ops = JaxOps(dtype)

    def loss_fn(params, batch):
        f = flow.with_params(params)
        lp = flow_log_prob(ops, f, prepared(f, jnp, inverse=False), batch["x"], batch.get("c"))
        return -jnp.mean(batch["w"] * lp)

    params, history = fit_minibatch(k_fit, list(flow.params), loss_fn, part(tr), part(val),
                                    config=config.minibatch(), progress=progress, desc=desc)
    if not history.val_loss or not math.isfinite(min(history.val_loss)):
        from surrogate_stats.errors import FitFailure
        raise FitFailure("flow training diverged (non-finite loss); lower the learning rate")
    return flow.with_params(params), history
