"""Shared training loop (optax) used by every kind of surrogate."""

from surrogate_stats.train._loop import (
    MinibatchConfig,
    TrainConfig,
    TrainHistory,
    fit,
    fit_minibatch,
    member_keys,
    split_indices,
)

__all__ = ["MinibatchConfig", "TrainConfig", "TrainHistory", "fit", "fit_minibatch",
           "member_keys", "split_indices"]
