"""Argument checks shared by the evaluation and inference code (numpy only)."""

from __future__ import annotations

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = ["as_mu_array"]


def as_mu_array(mu) -> np.ndarray:
    """``mu`` as a float array, or :class:`InvalidInput` for non-numbers, NaN and inf."""
    try:
        arr = np.asarray(mu, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"mu must be a real number or an array of them; got "
                           f"{type(mu).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise InvalidInput("mu must be finite; got NaN or inf at "
                           f"{np.argwhere(~np.isfinite(arr)).ravel().tolist()[:10]}")
    return arr
