"""The JAX HistFactory model and the vectorised fit engine, checked against pyhf."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from surrogate_stats import InvalidInput, InvalidWorkspace
from tests.conftest import DATA

pytest.importorskip("jax")
pytest.importorskip("pyhf")

NLL_TOL = 5e-4  # |Delta(-ln L)| engine vs converged pyhf fits (twice: the 1e-3)
SBOTTOM_REMOVE = ("VRtt_meff",)  # the validation region every sbottom signal patch removes


def _spec(name):
    return json.loads((DATA / name / "BkgOnly.json").read_text())


def _patch_signal(ops, spec, remove=()):
    """Per-bin signal yields (workspace order) that a bare jsonpatch adds."""
    names = [c["name"] for c in spec["channels"]]
    added = {}
    for op in ops:
        if op["op"] == "add" and "/samples/" in op["path"]:
            added[names[int(op["path"].split("/")[2])]] = op["value"]["data"]
    return np.concatenate([added.get(c["name"], [0.0] * len(c["samples"][0]["data"]))
                           for c in spec["channels"] if c["name"] not in remove])


def _all_modifiers_spec():
    """A small workspace with every modifier type, shared names, zero-uncertainty bins."""
    bkg1 = {"name": "bkg1", "data": [20.0, 10.0, 5.0],
            "modifiers": [
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "mu_b", "type": "normfactor", "data": None},
                {"name": "jes", "type": "normsys", "data": {"hi": 1.1, "lo": 0.85}},
                {"name": "jes", "type": "histosys",
                 "data": {"hi_data": [22.0, 10.5, 5.5], "lo_data": [19.0, 9.0, 4.9]}},
                {"name": "stat_sr", "type": "staterror", "data": [1.0, 0.5, 0.0]},
                {"name": "shape_b1", "type": "shapesys", "data": [2.0, 0.0, 1.0]}]}
    bkg2 = {"name": "bkg2", "data": [5.0, 8.0, 0.0],
            "modifiers": [
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "jes", "type": "normsys", "data": {"hi": 0.95, "lo": 1.07}},
                {"name": "stat_sr", "type": "staterror", "data": [0.5, 1.0, 0.0]},
                {"name": "sf", "type": "shapefactor", "data": None}]}
    cr = {"name": "bkg1", "data": [200.0],
          "modifiers": [{"name": "mu_b", "type": "normfactor", "data": None},
                        {"name": "lumi", "type": "lumi", "data": None},
                        {"name": "jes", "type": "histosys",
                         "data": {"hi_data": [230.0], "lo_data": [180.0]}}]}
    return {
        "channels": [{"name": "SR", "samples": [bkg1, bkg2]},
                     {"name": "CR", "samples": [cr]}],
        "observations": [{"name": "SR", "data": [27.0, 15.0, 7.0]},
                         {"name": "CR", "data": [210.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu_SIG", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]],
             "inits": [1.0]},
            {"name": "sf", "bounds": [[0.0, 5.0], [0.0, 5.0], [0.0, 5.0]]}]}}],
        "version": "1.0.0",
    }


@pytest.mark.parametrize("case", ["3L", "sbottom", "all_modifiers"])
def test_logpdf_equals_pyhf(case):
    from surrogate_stats.likelihood._histfactory import build_model

    spec, remove = {"3L": (_spec("3L-eRJR"), ()),
                    "sbottom": (_spec("sbottom-RegionA"), SBOTTOM_REMOVE),
                    "all_modifiers": (_all_modifiers_spec(), ())}[case]
    model = build_model(spec, remove_channels=remove, check=False)
    assert model.check_against_pyhf(spec, n_points=6, seed=3) < 1e-9
    # bins in workspace order, channels named as in the JSON
    first = spec["channels"][0]["name"]
    assert model.bins[0] == f"{first}-0"
    assert all(not b.startswith(remove) for b in model.bins) if remove else True


@pytest.mark.parametrize("case", ["all_modifiers", "3L"])
def test_structured_derivatives_equal_autodiff(case):
    """The engine's gradient and Hessian equal jax.grad / jax.hessian, also at a bound of 0."""
    import jax
    import jax.numpy as jnp

    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import _objective

    spec = _all_modifiers_spec() if case == "all_modifiers" else _spec("3L-eRJR")
    m = build_model(spec, check=False)
    f, derivatives = _objective(m)
    derivatives = jax.jit(derivatives)
    grad, hess = jax.jit(jax.grad(f)), jax.jit(jax.hessian(f))
    rng = np.random.default_rng(1)
    normfactors = [i for i, n in enumerate(m.par_names) if n.startswith("mu_")]
    with jax.enable_x64(True):
        for trial in range(3):
            theta = np.clip(m.init + rng.uniform(-1.4, 1.4, m.n_pars)
                            * np.where(m.fixed, 0, 0.8), m.lower + 1e-3, m.upper)
            if trial == 2:
                theta[normfactors[0]] = 0.0  # a normfactor at its lower bound
            x = jnp.asarray(np.concatenate([theta, [0.7]]))
            signal = jnp.asarray(rng.uniform(0.5, 3.0, m.n_bins))
            main = jnp.asarray(m.pyhf_data_order(m.observed))
            aux = jnp.asarray(m.aux_observed)
            g, h, _ = derivatives(x, signal, main, aux)
            want_g = grad(x, signal, main, aux)
            want_h = hess(x, signal, main, aux)
            assert np.all(np.isfinite(np.asarray(h)))
            np.testing.assert_allclose(np.asarray(g), np.asarray(want_g), rtol=1e-9,
                                       atol=1e-9 * float(jnp.max(jnp.abs(want_g))))
            np.testing.assert_allclose(np.asarray(h), np.asarray(want_h), rtol=1e-8,
                                       atol=1e-9 * float(jnp.max(jnp.abs(want_h))))


def _pyhf_fixed(spec, model, signal, mus, free=False):
    import pyhf

    from surrogate_stats.likelihood._exact import numpy_backend
    from surrogate_stats.likelihood._histfactory import inject_signal

    patched = inject_signal(spec, signal, remove=model.remove_channels)
    out = []
    with numpy_backend():
        ws = pyhf.Workspace(patched)
        pm = ws.model()
        data = ws.data(pm)
        bounds = pm.config.suggested_bounds()
        bounds[pm.config.poi_index] = (0.0, 20.0)
        if free:
            pars, twice = pyhf.infer.mle.fit(data, pm, par_bounds=bounds, return_fitted_val=True)
            return float(pars[pm.config.poi_index]), 0.5 * float(twice)
        for mu in mus:
            _, twice = pyhf.infer.mle.fixed_poi_fit(mu, data, pm, par_bounds=bounds,
                                                    return_fitted_val=True)
            out.append(0.5 * float(twice))
    return np.array(out)


def test_fixed_and_free_fits_match_pyhf_on_sbottom():
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter

    spec = _spec("sbottom-RegionA")
    ops = json.loads((DATA / "sbottom-RegionA" / "patch.sbottom_1300_850_60.json").read_text())
    signal = _patch_signal(ops, spec, SBOTTOM_REMOVE)
    model = build_model(spec, remove_channels=SBOTTOM_REMOVE)
    fitter = VectorFitter(model, chunk=8)
    mus = np.array([0.0, 0.4, 1.5])
    res = fitter.fit(np.tile(signal, (3, 1)), model.observed, model.aux_observed, mu=mus)
    assert res.converged.all()
    np.testing.assert_allclose(res.nll, _pyhf_fixed(spec, model, signal, mus), atol=NLL_TOL)
    free = fitter.fit(signal[None], model.observed, model.aux_observed, mu_bounds=(0.0, 20.0))
    mu_hat, nll_hat = _pyhf_fixed(spec, model, signal, None, free=True)
    assert free.converged.all()
    assert free.nll[0] <= nll_hat + NLL_TOL
    assert free.mu[0] == pytest.approx(mu_hat, abs=0.02)


def test_fixed_fits_match_pyhf_on_3l_and_beat_its_default_fit():
    """On 3L pyhf's default fit stops early; tight pyhf agrees with the engine."""
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter

    spec = _spec("3L-eRJR")
    model = build_model(spec)
    signal = np.array([1.655, 0.1805, 7.512, 0.6631])  # ERJR_500p0_0p0's yields
    res = VectorFitter(model, chunk=8).fit(signal[None], model.observed, model.aux_observed,
                                           mu=np.array([1.0]))
    assert res.converged.all()
    # pyhf's lgamma(n + 1) for its n ~ 1e11 shapesys auxiliary data loses ~3e-4 in -ln L:
    # compare at the engine's tolerance of that size
    np.testing.assert_allclose(res.nll, _pyhf_fixed(spec, model, signal, [1.0]), atol=NLL_TOL)


def test_asimov_data_is_pyhfs():
    import pyhf

    from surrogate_stats.likelihood._exact import numpy_backend
    from surrogate_stats.likelihood._histfactory import build_model, inject_signal
    from surrogate_stats.likelihood._vfit import VectorFitter

    spec = _all_modifiers_spec()
    model = build_model(spec)
    main, aux, _ = VectorFitter(model, chunk=4).asimov(model.observed, model.aux_observed)
    patched = inject_signal(spec, np.ones(model.n_bins))
    with numpy_backend():
        ws = pyhf.Workspace(patched)
        pm = ws.model()
        want = pyhf.infer.calculators.generate_asimov_data(
            0.0, ws.data(pm), pm, pm.config.suggested_init(), pm.config.suggested_bounds(),
            pm.config.suggested_fixed())
    want = np.asarray(want)
    # pyhf's numpy backend fits with finite-difference gradients: parameters to ~1e-5
    np.testing.assert_allclose(model.pyhf_data_order(main), want[:model.n_bins], rtol=1e-5)
    np.testing.assert_allclose(aux, want[model.n_bins:], rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter

    spec = _all_modifiers_spec()
    with pytest.raises(InvalidWorkspace, match="not in the workspace"):
        build_model(spec, remove_channels=("VR",))
    with pytest.raises(InvalidWorkspace, match="nothing to fit"):
        build_model(spec, remove_channels=("SR", "CR"))
    odd = copy.deepcopy(spec)
    odd["channels"][0]["samples"][0]["modifiers"].append(
        {"name": "x", "type": "custom_thing", "data": None})
    with pytest.raises(InvalidWorkspace):
        build_model(odd)
    model = build_model(spec, check=False)
    fitter = VectorFitter(model, chunk=4)
    with pytest.raises(InvalidInput, match=r"4 bins \(SR-0, SR-1, SR-2, CR-0\); got 3"):
        fitter.fit(np.ones((1, 3)), model.observed, model.aux_observed, mu=np.ones(1))
    with pytest.raises(InvalidInput, match="fallback"):
        VectorFitter(model, fallback="scipy")


def test_keep_better_takes_lower_converged_fits_only():
    from surrogate_stats.likelihood._vfit import keep_better

    nll = np.array([[5.0, 5.0, 5.0, 5.0]])
    conv = np.array([[True, True, False, True]])
    theta = np.zeros((1, 4, 2))
    new = (np.array([4.0, 6.0, 7.0, 1.0]), np.array([True, True, True, False]),
           np.ones((4, 2)))
    take = keep_better((nll, conv, theta), (0, slice(None)), new)
    # lower and converged: taken; higher: kept; first converged: taken even if higher;
    # lower but not converged: never taken
    np.testing.assert_array_equal(take, [True, False, True, False])
    np.testing.assert_array_equal(nll[0], [4.0, 5.0, 7.0, 5.0])
    np.testing.assert_array_equal(conv[0], [True, True, True, True])
    np.testing.assert_array_equal(theta[0, :, 0], [1.0, 0.0, 1.0, 0.0])


def test_bound_starts_follow_a_workspace_independent_rule():
    """Weak Poisson constraints (auxiliary count < 1) start at their upper bound, free
    multiplicative parameters at their lower bound; constrained and fixed ones stay."""
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import bound_starts

    spec = {"channels": [{"name": "SR", "samples": [{"name": "bkg", "data": [10.0, 5.0],
                                                      "modifiers": [
        {"name": "mu_b", "type": "normfactor", "data": None},
        {"name": "unc", "type": "shapesys", "data": [20.0, 0.5]},  # tau = 0.25 and 100
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "sys", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]}]}],
        "observations": [{"name": "SR", "data": [12.0, 6.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu_sig", "parameters": [
            {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.9, 1.1]],
             "inits": [1.0]}]}}],
        "version": "1.0.0"}
    m = build_model(spec)
    starts = bound_starts(m)
    assert starts.shape == (2, m.n_pars)
    names = list(m.par_names)
    want = np.array(m.init, dtype=float)
    want[names.index("unc[0]")] = m.upper[names.index("unc[0]")]
    np.testing.assert_array_equal(starts[0], want)
    want[names.index("mu_b")] = m.lower[names.index("mu_b")]
    np.testing.assert_array_equal(starts[1], want)
    # fixed normfactor: nothing free is left, the weak gamma still gets its start
    spec["measurements"][0]["config"]["parameters"].append({"name": "mu_b", "fixed": True})
    assert bound_starts(build_model(spec)).shape == (1, m.n_pars)
    # no weak constraint, no free parameter: no start
    assert bound_starts(build_model(_spec("sbottom-RegionA"), remove_channels=SBOTTOM_REMOVE)
                        ).shape[0] == 1  # mu_ttbar
    plain = copy.deepcopy(spec)
    plain["channels"][0]["samples"][0]["modifiers"] = [
        {"name": "sys", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}]
    plain["measurements"][0]["config"]["parameters"] = []
    assert bound_starts(build_model(plain)).shape == (0, 1)


def test_bound_starts_reach_the_lower_minimum_that_pyhf_init_misses_on_3l():
    """A 3L signal that fills CRlow: from pyhf's init (and from the background-only fit) the
    fit stops on a branch about 1.8 higher in -ln L than the one where the weak top MC-stat
    gamma of SRlow sits at its upper bound and mu_WZLow near 0; pyhf's logpdf agrees there."""
    import pyhf

    from surrogate_stats.likelihood._exact import numpy_backend
    from surrogate_stats.likelihood._histfactory import _CHECK_POI, build_model, inject_signal
    from surrogate_stats.likelihood._vfit import VectorFitter, bound_starts

    spec = _spec("3L-eRJR")
    m = build_model(spec)
    y = np.array([[208.65539412234116, 65.93859642822974, 8.755554523512401,
                   0.006378522802976383]])  # one of the default labels' signals
    fitter = VectorFitter(m, chunk=8)
    main, aux = m.observed, m.aux_observed
    plain = fitter.fit(y, main, aux, mu=np.ones(1))
    bkg_only = fitter.fit(np.zeros_like(y), main, aux, mu=np.zeros(1))
    cont = fitter.fit(y, main, aux, mu=np.ones(1), init=bkg_only.theta)
    fits = [fitter.fit(y, main, aux, mu=np.ones(1), init=s[None]) for s in bound_starts(m)]
    best = min(fits, key=lambda r: r.nll[0])
    assert best.converged.all()
    assert best.nll[0] < min(plain.nll[0], cont.nll[0]) - 1.0
    gamma = list(m.par_names).index("shape_mcstat_top_SRlow_obs_cuts")
    assert best.theta[0, gamma] > 5.0
    # the lower minimum is pyhf's -ln L too
    patched = inject_signal(spec, y[0], poi=_CHECK_POI)
    with numpy_backend():
        ws = pyhf.Workspace(patched)
        pm = ws.model(poi_name=_CHECK_POI)
        order = [pm.config.par_slice(n) for n in pm.config.par_order]
        pars = m._to_pyhf_pars(pm, best.theta[0], 1.0, order)
        data = np.concatenate([m.pyhf_data_order(main), aux])
        assert -float(pm.logpdf(pars, data)[0]) == pytest.approx(best.nll[0], abs=NLL_TOL)
