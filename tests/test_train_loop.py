"""The shared mini-batch loop: the moving average of the parameters (ema_decay) and what
counts as a better validation loss (min_improvement, patience)."""

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


def _creep(min_improvement):
    """Adam at a tiny learning rate on mean((m - 1)^2): the validation loss falls by
    ~1e-5 per epoch, below the default relative threshold of 1e-4."""
    import jax
    import jax.numpy as jnp

    x = np.ones(40)

    def loss(p, b):
        return jnp.mean((p["m"] - b) ** 2)

    cfg = MinibatchConfig(learning_rate=1e-6, batch_size=4, max_epochs=8, patience=2,
                          min_improvement=min_improvement)
    p, hist = fit_minibatch(jax.random.key(0), {"m": jnp.array(0.0)}, loss, x, x[:8],
                            config=cfg, progress=False)
    return float(p["m"]), hist


def test_min_improvement_decides_what_counts_as_better():
    """Oracle: every epoch lowers the validation loss a little. With the default threshold
    none of these gains counts, so the loop stops after `patience` epochs and returns the
    first epoch's parameters; with 0 every lower loss counts and the last epoch is kept."""
    m_default, h_default = _creep(1e-4)
    m_any, h_any = _creep(0.0)
    assert all(b < a for a, b in zip(h_any.val_loss, h_any.val_loss[1:]))
    assert h_default.stopped_early and len(h_default.val_loss) == 3
    assert h_default.best_step == 10  # 40 events / batch 4: ten steps per epoch
    assert not h_any.stopped_early and h_any.best_step == 80
    assert m_any > m_default > 0


@pytest.mark.parametrize("bad", [-1e-4, 1.0, float("nan")])
def test_bad_min_improvement(bad):
    with pytest.raises(InvalidInput, match="min_improvement"):
        MinibatchConfig(min_improvement=bad)


def test_flow_patience_none_runs_the_whole_schedule():
    from surrogate_stats.flows import CorrectionConfig, FlowTrainConfig, correction_train_config

    assert FlowTrainConfig(max_epochs=17, patience=None).minibatch().patience == 17
    assert FlowTrainConfig().minibatch().patience == 6
    cfg = correction_train_config(max_epochs=30)
    assert (cfg.patience, cfg.min_improvement, cfg.max_epochs) == (None, 0.0, 30)
    assert CorrectionConfig().train == correction_train_config()
    with pytest.raises(InvalidInput, match="patience"):
        FlowTrainConfig(patience=0)
