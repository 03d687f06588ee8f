"""The shared training loop: optax, full-batch or mini-batch, validation split, early stopping."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput

__all__ = ["MinibatchConfig", "TrainConfig", "TrainHistory", "fit", "fit_minibatch",
           "member_keys", "split_indices"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`fit` (all JSON-able).

    Attributes:
        learning_rate: peak Adam learning rate (warm-up, then cosine decay to 1e-3 of it).
        steps: maximum number of optimiser steps.
        chunk: steps per validation check (and progress-bar update).
        patience: stop after this many checks without a better validation loss.
        polish_steps: L-BFGS steps after Adam, kept only if they lower the validation loss.
        batch_size: None for full-batch steps; otherwise each Adam step uses a random
            mini-batch of this many rows (every leaf of ``train_data`` indexed on axis 0).
    """

    learning_rate: float = 5e-3
    steps: int = 20000
    chunk: int = 250
    patience: int = 40
    polish_steps: int = 400
    batch_size: int | None = None

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInput(f"TrainConfig.batch_size must be >= 1 or None; got "
                               f"{self.batch_size}")
        for name in ("steps", "chunk", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"TrainConfig.{name} must be >= 1; got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InvalidInput(f"learning_rate must be positive; got {self.learning_rate}")


@dataclass
class TrainHistory:
    """Losses per validation check; ``best_step`` is where the returned parameters come from."""

    train_loss: list
    val_loss: list
    best_step: int
    stopped_early: bool
    polished: bool = False

    def as_dict(self) -> dict:
        return {"best_step": self.best_step, "stopped_early": self.stopped_early,
                "polished": self.polished,
                "final_train_loss": self.train_loss[-1] if self.train_loss else None,
                "best_val_loss": min(self.val_loss) if self.val_loss else None}


def split_indices(key, n: int, val_fraction: float, *, keep_train=()) -> tuple[np.ndarray, ...]:
    """Random train/validation index split; indices in ``keep_train`` always go to training."""
    jax = optional_import("jax")
    perm = np.asarray(jax.random.permutation(key, n))
    keep = set(int(i) for i in keep_train)
    candidates = [int(i) for i in perm if int(i) not in keep]
    n_val = int(round(val_fraction * n))
    val = np.sort(np.array(candidates[:n_val], dtype=int))
    train = np.sort(np.array([i for i in range(n) if i not in set(val.tolist())], dtype=int))
    return train, val


def member_keys(key, n: int) -> list:
    """Keys of ``n`` ensemble members: ``[key]`` itself for one (so a single model trains
    exactly as without an ensemble), else ``n`` keys split from it."""
    if n == 1:
        return [key]
    return list(optional_import("jax").random.split(key, n))


def fit(
    key,
    params: Any,
    loss_fn: Callable[[Any, Any], Any],
    train_data: Any,
    val_data: Any,
    *,
    config: TrainConfig = TrainConfig(),
    progress: bool = True,
    desc: str = "training",
) -> tuple[Any, TrainHistory]:
    """Minimise ``loss_fn(params, data)`` with Adam, keeping the parameters best on validation.

    Full-batch: ``train_data`` and ``val_data`` are pytrees of arrays passed whole to
    ``loss_fn``; with ``config.batch_size`` each step draws a random mini-batch (from ``key``)
    of the rows of ``train_data`` instead. Steps run in jitted chunks of ``config.chunk``;
    after each the validation loss is checked and training stops after ``config.patience``
    checks without improvement. An optional L-BFGS polish follows. Deterministic for a given
    key and data on one machine.

    Returns:
        The best parameters and a :class:`TrainHistory`.
    """
    jax = optional_import("jax")
    optax = optional_import("optax")
    tqdm = optional_import("tqdm.auto").tqdm
    n_rows = None
    if config.batch_size is not None:
        n_rows = int(jax.tree_util.tree_leaves(train_data)[0].shape[0])

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(500, config.steps // 10 + 1), config.steps,
        config.learning_rate * 1e-3)
    opt = optax.adam(schedule)
    state = opt.init(params)

    @jax.jit
    def run_chunk(params, state, chunk_key):
        def step(carry, step_key):
            p, s = carry
            data = train_data
            if n_rows is not None:
                idx = jax.random.randint(step_key, (min(config.batch_size, n_rows),), 0, n_rows)
                data = jax.tree_util.tree_map(lambda a: a[idx], train_data)
            loss, grads = jax.value_and_grad(loss_fn)(p, data)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), loss
        keys = jax.random.split(chunk_key, config.chunk)
        (params, state), losses = jax.lax.scan(step, (params, state), keys)
        return params, state, losses[-1], loss_fn(params, val_data)

    history = TrainHistory([], [], 0, False)
    best, best_val, since = params, math.inf, 0
    n_chunks = math.ceil(config.steps / config.chunk)
    with tqdm(total=n_chunks, desc=desc, unit="chunk", disable=not progress, leave=False) as bar:
        for i in range(n_chunks):
            params, state, tl, vl = run_chunk(params, state, jax.random.fold_in(key, i))
            tl, vl = float(tl), float(vl)
            history.train_loss.append(tl)
            history.val_loss.append(vl)
            bar.update(1)
            bar.set_postfix(train=f"{tl:.3g}", val=f"{vl:.3g}")
            if not math.isfinite(tl):
                break
            if vl < best_val * (1 - 1e-4):
                best, best_val, since = params, vl, 0
                history.best_step = (i + 1) * config.chunk
            else:
                since += 1
                if since >= config.patience:
                    history.stopped_early = True
                    break

    if config.polish_steps > 0:
        polished = _lbfgs(best, loss_fn, train_data, config.polish_steps)
        if float(loss_fn(polished, val_data)) < best_val:
            best, history.polished = polished, True
            history.val_loss.append(float(loss_fn(polished, val_data)))
            history.train_loss.append(float(loss_fn(polished, train_data)))
    return best, history


def _lbfgs(params, loss_fn, data, steps):
    jax = optional_import("jax")
    optax = optional_import("optax")
    opt = optax.lbfgs()
    value_fn = lambda p: loss_fn(p, data)  # noqa: E731
    value_and_grad = optax.value_and_grad_from_state(value_fn)

    @jax.jit
    def run(params):
        def step(carry, _):
            p, s = carry
            value, grad = value_and_grad(p, state=s)
            updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=value_fn)
            return (optax.apply_updates(p, updates), s), value
        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
        return params

    out = run(params)
    ok = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(out))
    return out if ok else params


@dataclass(frozen=True)
class MinibatchConfig:
    """Hyperparameters of :func:`fit_minibatch` (all JSON-able).

    Attributes:
        learning_rate: peak Adam learning rate (linear warm-up over the first epoch, then
            cosine decay to 1e-2 of it at ``max_epochs``).
        batch_size: events per optimiser step.
        max_epochs: maximum passes over the training data.
        patience: stop after this many epochs without a better validation loss.
        clip_norm: global gradient-norm clipping.
        weight_decay: AdamW decoupled weight decay.
        ema_decay: 0 to validate and return the raw parameters; otherwise the decay per step
            of an exponential moving average of the parameters (Polyak averaging), which is
            what is validated, early-stopped on and returned (e.g. 0.999: an average over
            about the last thousand steps).
        min_improvement: a validation loss counts as better (for keeping the parameters and
            for the patience) when it is below the best so far by more than this fraction of
            ``max(1, |best|)``; 0 keeps any lower value.
    """

    learning_rate: float = 1e-3
    batch_size: int = 512
    max_epochs: int = 40
    patience: int = 6
    clip_norm: float = 5.0
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    min_improvement: float = 1e-4

    def __post_init__(self):
        for name in ("batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"MinibatchConfig.{name} must be >= 1; "
                                   f"got {getattr(self, name)}")
        for name in ("learning_rate", "clip_norm"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise InvalidInput(f"MinibatchConfig.{name} must be positive; got {v}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise InvalidInput(f"weight_decay must be >= 0; got {self.weight_decay}")
        if not 0 <= self.ema_decay < 1:
            raise InvalidInput(f"ema_decay must be in [0, 1); got {self.ema_decay}")
        if not (0 <= self.min_improvement < 1):
            raise InvalidInput(f"min_improvement must be in [0, 1); got {self.min_improvement}")


def fit_minibatch(
    key,
    params: Any,
    loss_fn: Callable[[Any, Any], Any],
    train_data: Any,
    val_data: Any,
    *,
    config: MinibatchConfig = MinibatchConfig(),
    progress: bool = True,
    desc: str = "training",
    val_batch: int = 65536,
) -> tuple[Any, TrainHistory]:
    """Minimise the mean of ``loss_fn(params, batch)`` over mini-batches, with early stopping.

    ``train_data``/``val_data`` are pytrees of arrays with events on axis 0; ``loss_fn``
    returns the mean loss of a batch. Each epoch shuffles with a key split from ``key`` and
    runs its steps in one jitted ``lax.scan`` (the last partial batch is dropped); the
    validation loss (event-weighted mean over chunks of ``val_batch``) is checked after every
    epoch and the parameters with the best one are returned. Deterministic for a given key.
    """
    jax = optional_import("jax")
    optax = optional_import("optax")
    tqdm = optional_import("tqdm.auto").tqdm
    jnp = jax.numpy
    n = len(jax.tree_util.tree_leaves(train_data)[0])
    bs = min(config.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total = steps_per_epoch * config.max_epochs
    warmup = min(steps_per_epoch, total // 2)
    schedule = optax.warmup_cosine_decay_schedule(
        config.learning_rate * 0.1, config.learning_rate, warmup, max(total, warmup + 1),
        config.learning_rate * 1e-2)
    opt = optax.chain(optax.clip_by_global_norm(config.clip_norm),
                      optax.adamw(schedule, weight_decay=config.weight_decay))
    state = opt.init(params)
    train_data = jax.tree_util.tree_map(jnp.asarray, train_data)

    decay = config.ema_decay

    @jax.jit
    def epoch(params, state, avg, key):
        perm = jax.random.permutation(key, n)[: steps_per_epoch * bs].reshape(
            steps_per_epoch, bs)

        def step(carry, idx):
            p, s, a = carry
            batch = jax.tree_util.tree_map(lambda a: a[idx], train_data)
            loss, grads = jax.value_and_grad(loss_fn)(p, batch)
            updates, s = opt.update(grads, s, p)
            p = optax.apply_updates(p, updates)
            # without averaging the "average" is the current parameters
            a = jax.tree_util.tree_map(lambda m, q: decay * m + (1 - decay) * q, a, p) \
                if decay > 0 else p
            return (p, s, a), loss
        (params, state, avg), losses = jax.lax.scan(step, (params, state, avg), perm)
        return params, state, avg, jnp.mean(losses)

    val_loss_jit = jax.jit(loss_fn)
    n_val = len(jax.tree_util.tree_leaves(val_data)[0])

    def val_loss(p):
        tot = 0.0
        for i in range(0, n_val, val_batch):
            chunk = jax.tree_util.tree_map(lambda a, i=i: a[i:i + val_batch], val_data)
            m = len(jax.tree_util.tree_leaves(chunk)[0])
            tot += float(val_loss_jit(p, chunk)) * m
        return tot / max(n_val, 1)

    history = TrainHistory([], [], 0, False)
    best, best_val, since = params, math.inf, 0
    avg = params
    with tqdm(total=config.max_epochs, desc=desc, unit="epoch", disable=not progress,
              leave=False) as bar:
        for i in range(config.max_epochs):
            key, sub = jax.random.split(key)
            params, state, avg, tl = epoch(params, state, avg, sub)
            tl = float(tl)
            vl = val_loss(avg)
            history.train_loss.append(tl)
            history.val_loss.append(vl)
            bar.update(1)
            bar.set_postfix(train=f"{tl:.4g}", val=f"{vl:.4g}")
            if not (math.isfinite(tl) and math.isfinite(vl)):
                break
            margin = config.min_improvement * max(1.0, abs(best_val))
            if not math.isfinite(best_val) or vl < best_val - margin:
                best, best_val, since = avg, vl, 0
                history.best_step = (i + 1) * steps_per_epoch
            else:
                since += 1
                if since >= config.patience:
                    history.stopped_early = True
                    break
    return best, history
