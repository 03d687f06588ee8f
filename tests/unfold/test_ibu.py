"""IBU against pyunfold, a finite-difference Jacobian and exact closure."""

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.unfold import TOYS, bin_edges, ibu, response_matrix

EXACT_RTOL = 1e-10  # same arithmetic as pyunfold
FD_RTOL = 1e-6  # analytic vs central finite-difference covariance
PYUNFOLD_ERR_RTOL = 0.05  # pyunfold's Adye propagation vs the exact linear propagation


@pytest.fixture()
def problem():
    rng = np.random.default_rng(1)
    nt, nr = 5, 6
    R = rng.random((nr, nt)) + 2 * np.eye(nr, nt)
    R = R / R.sum(0) * rng.uniform(0.5, 0.95, nt)  # efficiencies 0.5..0.95
    d = rng.poisson(200, nr).astype(float)
    return R, d


@pytest.mark.parametrize("n_iterations", [1, 3, 10])
def test_matches_pyunfold(problem, n_iterations):
    pyunfold = pytest.importorskip("pyunfold")
    from pyunfold.priors import uniform_prior

    R, d = problem
    nt = R.shape[1]
    ref = pyunfold.iterative_unfold(
        data=d, data_err=np.sqrt(d), response=R, response_err=np.zeros_like(R),
        efficiencies=R.sum(0), efficiencies_err=np.zeros(nt), prior=uniform_prior(nt),
        ts="ks", ts_stopping=-1, max_iter=n_iterations)
    assert ref["num_iterations"] == n_iterations
    res = ibu(d, R, n_iterations=n_iterations)
    np.testing.assert_allclose(res.unfolded, ref["unfolded"], rtol=EXACT_RTOL)
    np.testing.assert_allclose(res.std, ref["stat_err"], rtol=PYUNFOLD_ERR_RTOL)


def test_covariance_is_the_exact_linear_propagation(problem):
    R, d = problem
    it = 4
    J = np.zeros((R.shape[1], d.size))
    f = np.linspace(0.0, 0.2, d.size)
    for j in range(d.size):
        e = np.zeros(d.size)
        e[j] = 1e-5 * d[j]
        J[:, j] = (ibu(d + e, R, n_iterations=it, fake_fraction=f).unfolded
                   - ibu(d - e, R, n_iterations=it, fake_fraction=f).unfolded) / (2 * e[j])
    res = ibu(d, R, n_iterations=it, fake_fraction=f)
    np.testing.assert_allclose(res.covariance, J @ np.diag(d) @ J.T, rtol=FD_RTOL,
                               atol=FD_RTOL * np.abs(res.covariance).max())


def test_fakes_are_subtracted(problem):
    R, d = problem
    f = np.linspace(0.05, 0.3, d.size)
    a = ibu(d, R, fake_fraction=f, n_iterations=3).unfolded
    b = ibu((1 - f) * d, R, n_iterations=3).unfolded
    np.testing.assert_allclose(a, b, rtol=EXACT_RTOL)


def test_many_iterations_invert_the_matrix():
    R = np.array([[0.7, 0.1, 0.0], [0.15, 0.6, 0.1], [0.0, 0.1, 0.8]])
    truth = np.array([300.0, 500.0, 200.0])
    res = ibu(R @ truth, R, n_iterations=2000)
    np.testing.assert_allclose(res.unfolded, truth, rtol=1e-4)


def test_closure_on_the_simulation_with_efficiency_and_fakes():
    """Unfolding the simulation's own detector level with its own truth as prior is exact."""
    s = TOYS["multidim"].simulate(0, 20000)
    e = bin_edges(-3, 3, 12)
    R, f, prior = response_matrix(s.particle[:, 0], s.detector[:, 0], weights=s.weights,
                                  passed_truth=s.passed_truth, passed_reco=s.passed_reco,
                                  truth_edges=e, reco_edges=e)
    assert np.all(R.sum(0) < 1) and np.all(f > 0)
    x = s.detector[s.passed_reco, 0]
    counts, _ = np.histogram(x, e)
    res = ibu(counts, R, fake_fraction=f, prior=prior, n_iterations=3)
    np.testing.assert_allclose(res.unfolded, prior, rtol=1e-9)


def test_bad_input(problem):
    R, d = problem
    with pytest.raises(InvalidInput, match="shape"):
        ibu(d[:-1], R)
    with pytest.raises(InvalidInput, match="non-negative"):
        ibu(-d, R)
    with pytest.raises(InvalidInput, match="efficiency"):
        ibu(d, 2 * R)
    with pytest.raises(InvalidInput, match="n_iterations"):
        ibu(d, R, n_iterations=0)
    with pytest.raises(InvalidInput, match="prior"):
        ibu(d, R, prior=np.zeros(R.shape[1]))
    with pytest.raises(InvalidInput, match="fake_fraction"):
        ibu(d, R, fake_fraction=np.full(d.size, 1.5))
