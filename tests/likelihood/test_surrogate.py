"""The surrogate against pyhf, its evaluation paths against each other, and bad inputs."""

import math
import warnings

import numpy as np
import pytest

from surrogate_stats import ExtrapolationError, ExtrapolationWarning, InvalidInput
from tests.conftest import PARITY_RTOL, TMU_TOL


def test_heldout_label_accuracy(trained_3l):
    metrics = trained_3l[1]["training"]["metrics"]
    for d in ("observed", "expected"):
        assert metrics[d]["max_abs_dtmu_heldout"] <= TMU_TOL


def test_api_shapes_and_normalisation(surrogate_3l):
    s = surrogate_3l
    lo, hi = s.domain
    assert lo == 0.0 and hi > 10
    assert isinstance(s.nll(1.0), float) and isinstance(s.tmu(1.0), float)
    mus = np.linspace(lo, hi, 12).reshape(3, 4)
    assert s.nll(mus).shape == (3, 4)
    np.testing.assert_allclose(s.nll(mus), s.nll_min + 0.5 * s.tmu(mus), rtol=1e-14)
    assert s.tmu(s.mu_hat) == pytest.approx(0.0, abs=1e-3)
    assert np.all(s.tmu(mus) >= 0) and np.all(s.tmu(mus, expected=True) >= 0)
    assert s.tmu(0.0, expected=True) == pytest.approx(0.0, abs=1e-3)


def test_numpy_paths_equal_the_onnx_graph_on_fresh_inputs(surrogate_3l):
    s = surrogate_3l
    rng = np.random.default_rng(2024)
    mus = rng.uniform(*s.domain, size=257)
    onnx_tmu, onnx_nll = s._session.run(["tmu", "nll"], {"mu": mus})
    for j, expected in enumerate((False, True)):
        np.testing.assert_allclose(s.tmu(mus, expected=expected), onnx_tmu[:, j],
                                   rtol=PARITY_RTOL, atol=1e-12)
        np.testing.assert_allclose(s.nll(mus, expected=expected), onnx_nll[:, j],
                                   rtol=PARITY_RTOL)
        scalars = np.array([s.tmu(float(m), expected=expected) for m in mus[:40]])
        np.testing.assert_allclose(scalars, onnx_tmu[:40, j], rtol=PARITY_RTOL, atol=1e-12)


def test_big_batches_are_evaluated_in_chunks_identically(surrogate_3l):
    s = surrogate_3l
    mus = np.random.default_rng(3).uniform(*s.domain, size=5000)
    whole = s.tmu(mus)
    np.testing.assert_array_equal(whole[:100], s.tmu(mus[:100]))


def test_extrapolation_warns_raises_or_is_silent(trained_3l):
    from surrogate_stats import load_surrogate

    s = load_surrogate(trained_3l[0])
    hi = s.domain[1]
    with pytest.warns(ExtrapolationWarning, match="outside the trained domain"):
        s.nll(hi * 1.5)
    with pytest.warns(ExtrapolationWarning):
        s.tmu(np.array([1.0, -0.5]))
    strict = load_surrogate(trained_3l[0], on_extrapolation="raise")
    with pytest.raises(ExtrapolationError, match=r"\[0, "):
        strict.nll(-0.1)
    quiet = load_surrogate(trained_3l[0], on_extrapolation="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.nll(hi * 1.1)
    with pytest.raises(InvalidInput, match="on_extrapolation"):
        load_surrogate(trained_3l[0], on_extrapolation="maybe")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.array([1.0, np.nan]),
                                 "one", [1.0, "x"], None])
def test_non_finite_or_non_numeric_mu(surrogate_3l, bad):
    with pytest.raises(InvalidInput, match="mu must be"):
        surrogate_3l.nll(bad)


def test_upper_limit_arguments(surrogate_3l):
    for level in (0.0, 1.0, -0.1, math.nan, "0.05"):
        with pytest.raises(InvalidInput, match="level"):
            surrogate_3l.upper_limit(level=level)
    with pytest.raises(InvalidInput, match="test_stat"):
        surrogate_3l.upper_limit(test_stat="q0")
    with pytest.raises(InvalidInput, match="mu >= 0"):
        surrogate_3l.cls(-1.0)


def test_upper_limit_is_where_cls_crosses_the_level(surrogate_3l):
    s = surrogate_3l
    obs, exp = s.upper_limit(level=0.05)
    assert exp == sorted(exp)
    assert s.cls(obs)[0] == pytest.approx(0.05, abs=1e-7)
    for i, ul in enumerate(exp):
        assert s.cls(ul)[1][i] == pytest.approx(0.05, abs=1e-7)
    assert s.upper_limit(level=0.1)[0] < obs


def test_training_is_reproducible(three_l_workspace, tmp_path):
    """Same labels and seed give the same weights (short training to keep the test quick)."""
    from surrogate_stats.likelihood._labels import DatasetLabels, LikelihoodLabels
    from surrogate_stats.likelihood._train import SurrogateConfig, fit_surrogate
    from surrogate_stats.train import TrainConfig

    jax = pytest.importorskip("jax")
    mu = np.linspace(0, 6, 30)
    nll = 100 + 0.5 * ((mu - 1.0) / 0.8) ** 2 + 0.01 * (mu - 1.0) ** 3
    lab = DatasetLabels(mu=mu, nll=nll, mu_hat=1.0, nll_min=100.0)
    labels = LikelihoodLabels(lab, lab, (0.0, 6.0), "mu", (0.0, 10.0), (0.0, 10.0), 0, 0)
    config = SurrogateConfig(train=TrainConfig(steps=1000, polish_steps=50))
    a, _ = fit_surrogate(jax.random.key(3), labels, config=config, progress=False)
    b, _ = fit_surrogate(jax.random.key(3), labels, config=config, progress=False)
    for k, v in a.export_arrays().items():
        np.testing.assert_array_equal(v, b.export_arrays()[k])
    np.testing.assert_array_equal(a.tmu(mu), b.tmu(mu))
    np.testing.assert_array_equal(a.tmu(mu, expected=True), b.tmu(mu, expected=True))
    assert np.max(np.abs(a.tmu(mu) - 2 * (nll - 100.0))) < TMU_TOL
