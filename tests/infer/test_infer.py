"""pyhf-shaped inference on surrogates: structure like pyhf, numbers like pyhf, bad inputs."""

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from surrogate_stats import InvalidInput, infer

CLS_ATOL = 0.005  # the requirement where 0.01 <= CLs <= 0.5


@pytest.fixture(scope="module")
def pyhf_reference(three_l_workspace, trained_3l):
    """pyhf's own hypotest (JAX backend, tight tolerance, in a worker) on the 3L point."""
    from surrogate_stats.likelihood._exact import pyhf_hypotests

    ws = three_l_workspace.with_poi_bounds(*trained_3l[1]["poi"]["bounds_used"])
    mus = [1.5, 2.5, 3.0, 3.5, 4.5]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return mus, pool.submit(pyhf_hypotests, ws.spec, mus).result()


def test_hypotest_return_structure_mirrors_pyhf(surrogate_3l):
    pyhf = pytest.importorskip("pyhf")
    pyhf.set_backend("numpy")
    model = pyhf.simplemodels.uncorrelated_background([5.0], [50.0], [7.0])
    data = [55.0] + model.config.auxdata
    for flags in ({}, {"return_tail_probs": True}, {"return_expected": True},
                  {"return_expected_set": True},
                  {"return_tail_probs": True, "return_expected": True,
                   "return_expected_set": True}):
        ours = infer.hypotest(1.0, surrogate_3l, **flags)
        theirs = pyhf.infer.hypotest(1.0, data, model, **flags)
        assert type(ours) is type(theirs)
        if isinstance(ours, tuple):
            assert len(ours) == len(theirs)
            for a, b in zip(ours, theirs):
                assert np.shape(a) == np.shape(b) and type(a) is type(b)
        else:
            assert np.shape(ours) == np.shape(theirs) == ()


def test_hypotest_agrees_with_pyhf(surrogate_3l, pyhf_reference):
    mus, ref = pyhf_reference
    for mu, (obs, exp) in zip(mus, ref):
        cls_obs, cls_exp = infer.hypotest(mu, surrogate_3l, return_expected_set=True)
        for ours, theirs in [(cls_obs, obs), *zip(cls_exp, exp)]:
            if 0.01 <= theirs <= 0.5:
                assert float(ours) == pytest.approx(theirs, abs=CLS_ATOL)


def test_upper_limit_root_finding_and_scan(surrogate_3l):
    obs, exp = infer.upper_limit(surrogate_3l, level=0.05)
    s_obs, s_exp = surrogate_3l.upper_limit()
    assert float(obs) == pytest.approx(s_obs, rel=1e-12)
    np.testing.assert_allclose([float(e) for e in exp], s_exp, rtol=1e-12)
    scan = np.linspace(0.1, surrogate_3l.domain[1], 300)
    obs_scan, exp_scan, (scan_out, results) = infer.upper_limit(
        surrogate_3l, level=0.05, scan=scan, return_results=True)
    assert float(obs_scan) == pytest.approx(float(obs), rel=2e-3)
    np.testing.assert_allclose(np.array(exp_scan, float), np.array(exp, float), rtol=5e-3)
    assert len(results) == scan.size and len(results[0][1]) == 5


def test_mle_fits(surrogate_3l):
    s = surrogate_3l
    pars, twice_nll = infer.mle.fit(s, return_fitted_val=True)
    assert pars.tolist() == [s.mu_hat] and float(twice_nll) == pytest.approx(2 * s.nll_min,
                                                                              abs=1e-2)
    pars, twice_nll = infer.mle.fixed_poi_fit(2.0, s, return_fitted_val=True)
    assert pars.tolist() == [2.0] and float(twice_nll) == pytest.approx(2 * s.nll(2.0))
    assert infer.mle.fit(s, expected=True).tolist() == [s.mu_hat_expected]


@pytest.mark.parametrize("level", [0.68, 0.95])
def test_profile_interval_with_minos(surrogate_3l, level):
    chi2 = pytest.importorskip("scipy.stats").chi2
    iv = infer.profile_interval(surrogate_3l, level=level)
    target = chi2.ppf(level, 1)
    assert surrogate_3l.tmu(iv.upper) == pytest.approx(target, abs=1e-2)
    if not iv.lower_at_bound:
        assert surrogate_3l.tmu(iv.lower) == pytest.approx(target, abs=1e-2)
    assert iv.lower < iv.mu_hat < iv.upper
    assert "profile-likelihood interval" in iv._repr_html_() and "CL" in repr(iv)


def test_bad_inputs(surrogate_3l):
    for mu in (-0.1, np.nan, "x"):
        with pytest.raises(InvalidInput, match="mu"):
            infer.hypotest(mu, surrogate_3l)
    for level in (0.0, 1.5, np.nan):
        with pytest.raises(InvalidInput, match="level"):
            infer.upper_limit(surrogate_3l, level=level)
        with pytest.raises(InvalidInput, match="level"):
            infer.profile_interval(surrogate_3l, level=level)
    with pytest.raises(InvalidInput, match="test_stat"):
        infer.hypotest(1.0, surrogate_3l, test_stat="q0")
    with pytest.raises(InvalidInput, match="increasing"):
        infer.upper_limit(surrogate_3l, scan=[2.0, 1.0])

    class NoExpected:
        domain, mu_hat = (0.0, 5.0), 0.0

        def nll(self, mu, *, expected=False):
            return 0.0

        def tmu(self, mu, *, expected=False):
            return 0.0

    with pytest.raises(InvalidInput, match="expected"):
        infer.hypotest(1.0, NoExpected())
    assert infer.mle.fixed_poi_fit(1.0, NoExpected()).tolist() == [1.0]


def test_upper_limit_beyond_the_domain_warns(surrogate_3l):
    from surrogate_stats import ExtrapolationWarning

    scan = np.linspace(0.1, 2 * surrogate_3l.domain[1], 50)
    with pytest.warns(ExtrapolationWarning):
        infer.upper_limit(surrogate_3l, scan=scan)
