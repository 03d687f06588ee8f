"""The numpy CLs formulas against pyhf's own asymptotic distributions (the oracle)."""

import numpy as np
import pytest

from surrogate_stats._asymptotics import EXPECTED_NSIGMA, cls_values, normal_cdf


def test_normal_cdf_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    x = np.linspace(-12, 12, 97)
    np.testing.assert_allclose(normal_cdf(x), stats.norm.cdf(x), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
def test_cls_matches_pyhf_distributions(test_stat):
    pyhf = pytest.importorskip("pyhf")
    from pyhf.infer.calculators import AsymptoticTestStatDistribution

    pyhf.set_backend("numpy")
    rng = np.random.default_rng(7)
    for _ in range(50):
        q_obs, q_a = rng.uniform(0, 12, 2)
        sq, sqa = np.sqrt(q_obs), np.sqrt(q_a)
        if test_stat == "q" or sq <= sqa:
            t = sq - sqa
        else:
            t = (q_obs - q_a) / (2 * sqa)
        sb, b = AsymptoticTestStatDistribution(-sqa), AsymptoticTestStatDistribution(0.0)
        want_obs = sb.pvalue(t) / b.pvalue(t)
        want_exp = [sb.pvalue(b.expected_value(n)) / b.pvalue(b.expected_value(n))
                    for n in EXPECTED_NSIGMA]
        got_obs, _, _, got_exp = cls_values(q_obs, q_a, test_stat)
        np.testing.assert_allclose(got_obs, want_obs, rtol=1e-12)
        np.testing.assert_allclose(got_exp, want_exp, rtol=1e-12)


def test_log_normal_sf_is_continuous_and_finite_in_the_tail():
    from surrogate_stats._asymptotics import log_normal_sf

    stats = pytest.importorskip("scipy.special")
    x = np.array([-5.0, 0.0, 5.0, 19.999, 20.001, 40.0, 300.0])
    np.testing.assert_allclose(log_normal_sf(x), stats.log_ndtr(-x), rtol=1e-9)


def test_cls_in_the_far_tail_is_a_number():
    special = pytest.importorskip("scipy.special")
    # t = (1 - 1e-4) / 0.02 ~ 50: CLb = Phi(-50) underflows, the ratio does not
    cls, _, clb, _ = cls_values(1.0, 1e-4)
    assert clb == 0.0
    t = (1.0 - 1e-4) / 0.02
    assert cls == pytest.approx(np.exp(special.log_ndtr(-(t + 0.01)) - special.log_ndtr(-t)),
                                rel=1e-9)
    assert cls_values(4000.0, 30.0)[0] < 1e-300
    assert cls_values(5.0, 0.0)[0] == 1.0  # no sensitivity
