"""CLs limits of complete signal workspaces (POI inside the model) with the engine, vs pyhf."""

from __future__ import annotations

import json

import numpy as np
import pytest

from surrogate_stats import InvalidInput, InvalidWorkspace
from tests.conftest import DATA
from tests.likelihood.test_vfit import _all_modifiers_spec

pytest.importorskip("jax")
pytest.importorskip("pyhf")


def _with_signal(excess: bool):
    """The all-modifier workspace plus a signal with its own systematics, in SR and CR."""
    spec = _all_modifiers_spec()
    sig = {"name": "signal", "data": [4.0, 6.0, 3.0],
           "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None},
                         {"name": "lumi", "type": "lumi", "data": None},
                         {"name": "sig_xsec", "type": "normsys", "data": {"hi": 1.15, "lo": 0.8}},
                         {"name": "jes", "type": "histosys",
                          "data": {"hi_data": [4.6, 6.3, 3.0], "lo_data": [3.5, 5.9, 2.7]}},
                         {"name": "stat_sr", "type": "staterror", "data": [0.4, 0.6, 0.3]}]}
    spec["channels"][0]["samples"].append(sig)
    spec["channels"][1]["samples"].append(
        {"name": "signal", "data": [3.0],
         "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None}]})
    spec["observations"][0]["data"] = [33.0, 22.0, 9.0] if excess else [22.0, 12.0, 4.0]
    return spec


def _pyhf_cls_at(spec, mus, bounds):
    from surrogate_stats.likelihood._exact import pyhf_hypotests
    from surrogate_stats.likelihood._histfactory import set_poi_bounds

    return pyhf_hypotests(set_poi_bounds(json.loads(json.dumps(spec)), bounds), mus,
                          backend="numpy")


@pytest.mark.parametrize("excess", [False, True], ids=["deficit", "excess"])
def test_limits_equal_pyhfs_with_signal_systematics(excess):
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    spec = _with_signal(excess)
    r = workspace_upper_limit(spec, poi_bounds=(0.0, 20.0))
    assert r.poi == "mu_SIG" and r.converged
    assert r.mu_hat > 0.5 if excess else r.mu_hat == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(r.expected) > 0) and r.expected[0] > 0
    # pyhf's hypotest at each limit: CLs (observed, or that expected band) = 0.05
    res = _pyhf_cls_at(spec, [r.observed, *r.expected], (0.0, 20.0))
    cls = [res[0][0]] + [res[k + 1][1][k] for k in range(5)]
    np.testing.assert_allclose(cls, 0.05, atol=2e-4)
    # the scan: -2 ln lambda is smallest next to mu_hat, 0 on the Asimov data at mu = 0
    assert abs(r.mu[np.argmin(r.tmu_observed)] - r.mu_hat) <= r.mu[1]
    assert (r.tmu_observed[0] > 0.5) == excess
    assert r.tmu_expected[0] == pytest.approx(0.0, abs=1e-6)


def test_limits_of_a_real_signal_patch_are_pyhfs():
    """sbottom region A, patch 1300_850_60 (signal systematics): pyhf's CLs at the limits."""
    import jsonpatch

    from surrogate_stats.likelihood import workspace_upper_limit  # the public name

    folder = DATA / "sbottom-RegionA"
    spec = jsonpatch.apply_patch(json.loads((folder / "BkgOnly.json").read_text()),
                                 json.loads((folder / "patch.sbottom_1300_850_60.json")
                                            .read_text()))
    r = workspace_upper_limit(spec)
    assert r.converged
    (cls_obs, _), (_, cls_exp) = _pyhf_cls_at(spec, [r.observed, r.expected[2]], (0.0, 100.0))
    assert cls_obs == pytest.approx(0.05, abs=2e-4)
    assert cls_exp[2] == pytest.approx(0.05, abs=2e-4)


def test_limit_above_the_poi_bound_is_nan():
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    r = workspace_upper_limit(_with_signal(False), poi_bounds=(0.0, 0.5))
    assert np.isnan(r.observed) and np.isnan(r.expected[-1])


@pytest.mark.parametrize("bounds, match", [((-1.0, 10.0), "poi_bounds"),
                                           ((0.0, 0.0), "poi_bounds")])
def test_bad_bounds_and_level(bounds, match):
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    with pytest.raises(InvalidInput, match=match):
        workspace_upper_limit(_with_signal(False), poi_bounds=bounds)
    with pytest.raises(InvalidInput, match="level"):
        workspace_upper_limit(_with_signal(False), level=1.5)


def test_bad_workspaces():
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    spec = _with_signal(False)
    with pytest.raises(InvalidWorkspace, match="measurement 'nope'"):
        workspace_upper_limit(spec, measurement="nope")
    for poi in ("sf", "mu_nothing"):  # a shapefactor (three parameters); no modifier at all
        spec["measurements"][0]["config"]["poi"] = poi
        with pytest.raises(InvalidWorkspace, match=f"POI '{poi}' is not a normfactor"):
            workspace_upper_limit(spec)
    bkg_only = _all_modifiers_spec()  # names mu_SIG, which no sample carries yet
    with pytest.raises(InvalidWorkspace, match="apply the signal patch"):
        workspace_upper_limit(bkg_only)


def test_normfactor_injection_agrees_with_the_yield_engines_reference():
    """Two implementations: the POI as a model parameter vs the yield engine's mu * s."""
    from surrogate_stats.likelihood._histfactory import build_model, inject_signal
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit
    from surrogate_stats.likelihood._yields_labels import reference_datasets
    from surrogate_stats.likelihood._yields_validate import exact_reference

    spec = _all_modifiers_spec()
    model = build_model(spec)
    signal = np.array([4.0, 6.0, 3.0, 1.0])
    fitter = VectorFitter(model, chunk=8)
    datasets, _, _ = reference_datasets(model, fitter)
    ref = exact_reference(fitter, datasets, signal[None])
    r = workspace_upper_limit(inject_signal(spec, signal), poi_bounds=(0.0, 50.0))
    np.testing.assert_allclose(r.observed, ref.upper_limit[0], rtol=1e-4)
    np.testing.assert_allclose(r.expected, ref.expected_limits[0], rtol=1e-4)


def test_cli_limit_full_patch_and_normfactor_only(tmp_path):
    """``surrogate-stats likelihood limit`` on a bare patch, and its bad input."""
    import subprocess
    import sys

    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    full = _with_signal(False)
    bkg = {**_all_modifiers_spec(), "observations": full["observations"]}
    ops = [{"op": "add", "path": f"/channels/{i}/samples/-", "value": ch["samples"][-1]}
           for i, ch in enumerate(full["channels"])]
    (tmp_path / "bkg.json").write_text(json.dumps(bkg))
    (tmp_path / "patch.sig.json").write_text(json.dumps(ops))

    def cli(*extra, ok=True):
        out = subprocess.run([sys.executable, "-m", "surrogate_stats", "likelihood", "limit",
                              str(tmp_path / "bkg.json"), "--patch",
                              str(tmp_path / "patch.sig.json"), *extra],
                             capture_output=True, text=True, timeout=600)
        assert (out.returncode == 0) == ok, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1]) if ok else out.stderr

    got = cli("--poi-bounds", "0,20")
    want = workspace_upper_limit(full, poi_bounds=(0.0, 20.0))
    assert got["patch"] == "sig" and got["poi"] == "mu_SIG" and got["converged"]
    np.testing.assert_allclose([got["observed"], *got["expected"]],
                               [want.observed, *want.expected], rtol=1e-6)
    nf = cli("--poi-bounds", "0,20", "--normfactor-only")
    assert nf["normfactor_only"] and nf["observed"] != pytest.approx(got["observed"], rel=1e-3)
    assert "--poi-bounds must be 'lo,hi'" in cli("--poi-bounds", "zero", ok=False)
    assert "poi_bounds must be (0, hi)" in cli("--poi-bounds", "1,20", ok=False)
