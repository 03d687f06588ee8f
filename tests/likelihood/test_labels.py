"""Exact labels against direct pyhf fits, and the checks that keep bad fits out."""

import numpy as np
import pytest

from surrogate_stats import InvalidInput
from surrogate_stats.likelihood import LabelConfig
from surrogate_stats.likelihood._labels import _bumps


def test_labels_cover_the_95cl_region_and_record_widening(trained_3l):
    _, meta = trained_3l
    labels = meta["labels"]
    assert labels["observed"]["tmu_max"] >= 25 and labels["expected"]["tmu_max"] >= 25
    # the 3L limit needs mu beyond the workspace's bound of 10: widened and recorded
    assert meta["poi"]["bounds_workspace"] == [0.0, 10.0]
    assert meta["poi"]["bounds_used"][1] > 10.0 and meta["poi"]["bounds_widened"]
    assert labels["failed_mu"] == {}


def test_labels_agree_with_pyhf_numpy_backend(three_l_workspace, trained_3l):
    """Label NLLs equal pyhf's numpy backend (SLSQP, tight tolerance, restart-checked).

    numpy's finite-difference gradients leave ~1e-2 in the NLL on this model at worst, and a
    fit can only end too high: the surrogate must be below pyhf + 2e-3 and within 3e-2.
    """
    from surrogate_stats import load_surrogate
    from surrogate_stats.likelihood._exact import ExactFitter, numpy_backend

    s = load_surrogate(trained_3l[0])
    ws = three_l_workspace.with_poi_bounds(*trained_3l[1]["poi"]["bounds_used"])
    with numpy_backend():
        data = ws.observed_data()
    fitter = ExactFitter(ws.spec, {"observed": data}, tuple(trained_3l[1]["poi"]["bounds_used"]),
                         backend="numpy")
    free = fitter.fit("observed")
    for mu in (2.1, 4.7):
        exact = fitter.fit("observed", mu, free.pars).nll
        assert s.nll(mu) <= exact + 2e-3
        assert s.nll(mu) == pytest.approx(exact, abs=3e-2)


def test_bumps_flags_a_fit_stuck_above_the_curve():
    mu = np.linspace(0, 5, 21)
    nll = 0.5 * (mu - 1.3) ** 2 + 100.0
    assert _bumps(mu, nll) == []
    nll[7] += 0.05
    bumps = _bumps(mu, nll)
    assert 7 in bumps and set(bumps) <= {5, 6, 7, 8, 9}  # neighbours are refitted too


@pytest.mark.parametrize("kwargs,match", [
    ({"tmu_target": 9.0}, "tmu_target"), ({"n_initial": 50, "n_points": 40}, "n_initial"),
    ({"n_jobs": 0}, "n_jobs"), ({"backend": "torch"}, "backend"),
])
def test_label_config_rejects_bad_values(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        LabelConfig(**kwargs)
