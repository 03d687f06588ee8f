"""The shared mini-batch loop: the moving average of the parameters (ema_decay)."""

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.train._loop import MinibatchConfig, fit_minibatch


def test_parameter_average_removes_sgd_noise():
    """Oracle: the minimum of mean((m - x)^2) is mean(x); noisy 4-event steps at a high
    learning rate scatter the raw parameter around it, the moving average much less."""
    import jax
    import jax.numpy as jnp

    x = np.random.default_rng(0).normal(1.0, 1.0, 4000)

    def loss(p, b):
        return jnp.mean((p["m"] - b) ** 2)

    err = {}
    for decay in (0.0, 0.99):
        cfg = MinibatchConfig(learning_rate=0.3, batch_size=4, max_epochs=1, ema_decay=decay)
        err[decay] = np.mean([
            abs(float(fit_minibatch(jax.random.key(s), {"m": jnp.array(0.0)}, loss, x,
                                    x[:100], config=cfg, progress=False)[0]["m"]) - x.mean())
            for s in range(5)])
    assert err[0.99] < 0.75 * err[0.0], err


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan")])
def test_bad_ema_decay(bad):
    with pytest.raises(InvalidInput, match="ema_decay"):
        MinibatchConfig(ema_decay=bad)
