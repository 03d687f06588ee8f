"""Shared training loop (optax) used by every kind of surrogate."""

from surrogate_stats.train._loop import TrainConfig, TrainHistory, fit, split_indices

__all__ = ["TrainConfig", "TrainHistory", "fit", "split_indices"]
