"""Metrics against scipy and closed forms."""

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.unfold import (
    bin_edges,
    bootstrap,
    chi2_ndf,
    histogram,
    interval_coverage,
    triangular_discriminator,
    wasserstein1,
    z_score,
)

RTOL = 1e-10
COVERAGE_TOL = 0.015  # binomial error on 20000 intervals is ~0.003


def test_wasserstein_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(5):
        u, v = rng.normal(0, 1, 300), rng.normal(0.3, 1.4, 200)
        uw, vw = rng.random(300), rng.random(200)
        assert wasserstein1(u, v, u_weights=uw, v_weights=vw) == pytest.approx(
            stats.wasserstein_distance(u, v, uw, vw), rel=RTOL)
    assert wasserstein1([0.0], [2.5]) == pytest.approx(2.5)


def test_triangular_discriminator_convention():
    p = np.array([1.0, 2.0, 3.0])
    assert triangular_discriminator(p, 10 * p) == 0.0  # normalised first
    assert triangular_discriminator([1, 0], [0, 1]) == pytest.approx(1000.0)  # disjoint
    q = np.array([3.0, 2.0, 1.0])
    pn, qn = p / 6, q / 6
    assert triangular_discriminator(p, q) == pytest.approx(
        0.5 * np.sum((pn - qn) ** 2 / (pn + qn)) * 1000, rel=RTOL)
    with pytest.raises(InvalidInput, match="binning"):
        triangular_discriminator([1, 2], [1, 2, 3])


def test_chi2_ndf_and_z():
    assert chi2_ndf([1.0, 2.0], [2.0, 2.0], p_err=[1.0, 0.0], q_err=[0.0, 0.0]) == 1.0
    stats = pytest.importorskip("scipy.stats")
    for lv in (0.68, 0.95):
        assert z_score(lv) == pytest.approx(stats.norm.ppf(0.5 + lv / 2), rel=1e-12)


def test_interval_coverage_of_correct_gaussian_errors_is_nominal():
    rng = np.random.default_rng(1)
    truth = rng.random(20)
    sig = 0.1 * rng.random(20) + 0.01
    est = truth + sig * rng.normal(size=(1000, 20))
    cov = interval_coverage(est, np.broadcast_to(sig, est.shape), truth)
    assert cov[0.68] == pytest.approx(0.68, abs=COVERAGE_TOL)
    assert cov[0.95] == pytest.approx(0.95, abs=COVERAGE_TOL)


def test_bootstrap_std_of_the_mean():
    x = np.random.default_rng(2).normal(0, 2, 4000)
    reps = bootstrap(3, lambda w: np.average(x, weights=w), x.size, n_replicas=200)
    assert reps.std(ddof=1) == pytest.approx(2 / np.sqrt(x.size), rel=0.15)  # 200 replicas


def test_histogram_and_edges():
    e = bin_edges(0, 60, 16, discrete=True)
    assert e[0] == -0.5 and np.all(np.diff(e) == 4) and e[-1] >= 60
    p, pe = histogram([0.5, 1.5, 1.6, 9.0], [0, 1, 2], weights=[1, 1, 2, 5])
    np.testing.assert_allclose(p, [0.25, 0.75])
    np.testing.assert_allclose(pe, [0.25, np.sqrt(5) / 4])
    with pytest.raises(InvalidInput, match="n_bins"):
        bin_edges(0, 1, 0)
    with pytest.raises(InvalidInput, match="no weight"):
        histogram([5.0], [0, 1])
    with pytest.raises(InvalidInput, match="non-negative"):
        wasserstein1([0, 1], [0, 1], u_weights=[-1, 1])
    with pytest.raises(InvalidInput, match="positive total"):
        wasserstein1([0, 1], [0, 1], v_weights=[0, 0])
