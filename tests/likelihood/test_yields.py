"""Yield-parametrised surrogates: labels, training, the artifact, the API and its bad inputs."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from surrogate_stats import (
    ExtrapolationError,
    ExtrapolationWarning,
    InvalidArtifact,
    InvalidInput,
    load_surrogate,
)
from tests.conftest import DATA

pytest.importorskip("jax")
pytest.importorskip("pyhf")

SB = DATA / "sbottom-RegionA"
PATCHES = [SB / "patch.sbottom_1300_850_60.json", SB / "patch.sbottom_1000_131_1.json"]
REMOVE = ("VRtt_meff",)
TINY_LABELS = dict(n_signals=48, n_mu=5, walkers=24, walk_steps=2, rays_per_task=24, chunk=32)


@pytest.fixture(scope="session")
def sbottom_spec():
    return json.loads((SB / "BkgOnly.json").read_text())


@pytest.fixture(scope="session")
def sbottom_model(sbottom_spec):
    from surrogate_stats.likelihood._histfactory import build_model

    return build_model(sbottom_spec, remove_channels=REMOVE)


@pytest.fixture(scope="session")
def tiny_labels(sbottom_spec, sbottom_model, tmp_path_factory):
    from surrogate_stats._executor import ExecutorConfig
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig, generate_yield_labels

    store = tmp_path_factory.mktemp("labels") / "store"
    labels = generate_yield_labels(sbottom_spec, remove_channels=REMOVE,
                                   config=YieldLabelConfig(**TINY_LABELS), store_dir=store,
                                   executor=ExecutorConfig(kind="serial"), progress=False,
                                   model=sbottom_model)
    return labels, store


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """A small surrogate trained by the CLI, validated on the two bundled sbottom patches."""
    from surrogate_stats.cli import main

    out = tmp_path_factory.mktemp("yields") / "sbA"
    args = ["likelihood", "train-yields", str(SB / "BkgOnly.json"), "--out", str(out),
            "--n-signals", "64", "--n-mu", "5", "--walkers", "32", "--max-steps", "1500",
            "--hidden", "32,32", "--executor", "serial", "--quiet"]
    for p in PATCHES:
        args += ["--patch", str(p)]
    assert main(args) == 0
    return out


def test_labels_are_exact_fits(tiny_labels, sbottom_model):
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import DATASETS

    labels, _ = tiny_labels
    assert labels.y.shape[1] == sbottom_model.n_bins
    assert labels.usable.mean() > 0.95
    assert np.all(labels.y >= 0)
    # a-priori Asimov data equal the a-priori data here (inits at the constraints' centres)
    np.testing.assert_allclose(labels.nll[:, 1], labels.nll[:, 3])
    # a label is the profiled -ln L at its yields: refit a few points from pyhf's init
    rng = np.random.default_rng(0)
    idx = rng.choice(np.flatnonzero(labels.usable), 6, replace=False)
    fitter = VectorFitter(sbottom_model, chunk=8)
    for d, name in enumerate(DATASETS[:3]):
        main, aux = labels.datasets[name]
        res = fitter.fit(labels.y[idx], main, aux, mu=np.ones(idx.size))
        assert np.all(labels.nll[idx, d] <= res.nll + 1e-6)  # continuation: never worse
    # the zero-signal values are those of each data set's background-only fit
    assert labels.nll0.shape == (4,)
    assert np.all(labels.tmu_observed[labels.usable & np.isfinite(labels.tmu_observed)] >= 0)


def test_restarts_repair_labels_off_the_lowest_branch(sbottom_model):
    """A run of ray points on a higher branch (as continuation can leave them) is repaired:
    restarted points find the lower minimum and carry it to their neighbours."""
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import _restart, _sweep, reference_datasets

    m = sbottom_model
    fitter = VectorFitter(m, chunk=32)
    datasets, _, thetas = reference_datasets(m, fitter)
    shared = {"datasets": {d: [datasets[d][0], datasets[d][1]] for d in datasets},
              "theta0": {d: thetas[d] for d in datasets}}
    names = ["observed"]
    shapes = np.random.default_rng(4).uniform(0.5, 2.0, size=(2, m.n_bins))
    mus = np.tile(np.linspace(0.5, 3.0, 5), (2, 1))
    good = _sweep(fitter, shapes, mus, shared, names)

    def corrupted():
        nll, conv, theta = (a.copy() for a in good)
        wrong = np.zeros(mus.shape, dtype=bool)
        wrong[0, 2] = True  # restarted itself ((i + j) even)
        wrong[1, 1:4] = True  # (1, 2) is only reached by continuation from (1, 1)
        nll[wrong] += 3.0
        theta[wrong] = np.clip(theta[wrong] + 0.8, m.lower, m.upper)
        return (nll, conv, theta), wrong

    fits, wrong = corrupted()
    nll, _, _ = _restart(fitter, shapes, mus, shared, names, fits, [])
    assert np.all(nll[wrong, 0] > good[0][wrong, 0] + 2.9)  # no starts: nothing repaired
    fits, wrong = corrupted()
    nll, conv, theta = _restart(fitter, shapes, mus, shared, names, fits,
                                [np.asarray(m.init, dtype=float)])
    assert conv.all()
    assert np.all(nll[..., 0] <= good[0][..., 0] + 1e-6)
    # the repaired parameters are a fit of their own point again
    main, aux = datasets["observed"]
    y = shapes[1] * mus[1, 2]
    again = fitter.fit(y[None], main, aux, mu=np.ones(1), init=theta[1, 2])
    assert abs(again.nll[0] - nll[1, 2, 0]) < 1e-6
    # an explicit mask (as the bound starts use): one refitted point repairs its whole run
    fits, wrong = corrupted()
    mask = np.zeros(mus.shape, dtype=bool)
    mask[1, 2] = True
    nll, _, _ = _restart(fitter, shapes, mus, shared, names, fits,
                         [np.asarray(m.init, dtype=float)], mask)
    assert np.all(nll[1, :, 0] <= good[0][1, :, 0] + 1e-6)
    assert nll[0, 2, 0] > good[0][0, 2, 0] + 2.9  # not in the mask, not on a repaired ray


def test_gradient_labels_are_derivatives_of_the_profiled_nll(tiny_labels, sbottom_model):
    """Each label's gradient (envelope theorem) matches central differences of refits."""
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import DATASETS

    labels, _ = tiny_labels
    n_bins = labels.y.shape[1]
    assert labels.gradient.shape == (len(labels.y), 4, n_bins)
    np.testing.assert_allclose(labels.gradient[:, 1], labels.gradient[:, 3])
    rng = np.random.default_rng(1)
    idx = rng.choice(np.flatnonzero(labels.usable & (labels.y.min(axis=1) > 0)), 8,
                     replace=False)
    fitter = VectorFitter(sbottom_model, chunk=16)
    checked = 0
    for d, name in enumerate(DATASETS[:3]):
        main, aux = labels.datasets[name]
        # refit from pyhf's init; where that lands in the labels' minimum (the likelihood can
        # have several), differentiate it by refits started there
        ref = fitter.fit(labels.y[idx], main, aux, mu=np.ones(idx.size))
        same = ref.converged & (np.abs(ref.nll - labels.nll[idx, d]) < 1e-7)
        for i, theta in zip(idx[same][:2], ref.theta[same][:2]):
            h = 1e-3 * labels.scale
            y = labels.y[i][None] + np.concatenate([np.diag(h), -np.diag(h)])
            res = fitter.fit(y, main, aux, mu=np.ones(len(y)),
                             init=np.repeat(theta[None], len(y), axis=0))
            assert res.converged.all()
            fd = (res.nll[:n_bins] - res.nll[n_bins:]) / (2 * h)
            # in -ln L per one-sigma yield
            np.testing.assert_allclose(labels.gradient[i, d] * labels.scale, fd * labels.scale,
                                       rtol=1e-4, atol=1e-5)
            checked += 1
    assert checked >= 4


def test_baseline_radial_derivative(tiny_labels):
    """``YieldBaseline.radial`` is d/dt base(t y) at t = 1 (central differences)."""
    from surrogate_stats.likelihood._yields_surrogate import YieldBaseline

    labels, _ = tiny_labels
    base = YieldBaseline.effective_poisson(labels.gradient0, labels.information0)
    y = labels.y[labels.usable][:20]
    h = 1e-5
    fd = (base(y * (1 + h)) - base(y * (1 - h))) / (2 * h)
    np.testing.assert_allclose(base.radial(y), fd, rtol=1e-6, atol=1e-8)
    assert np.all(YieldBaseline.zero(4, y.shape[1]).radial(y) == 0)


def test_gradient_term_fits_the_radial_derivative(tiny_labels, sbottom_model):
    """With ``gradient_weight`` the network follows d/dmu nll(mu s) better than without."""
    import jax

    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig, fit_yield_surrogate
    from surrogate_stats.train import TrainConfig

    labels, _ = tiny_labels
    use = labels.usable & (labels.tmu_observed <= 9)
    y = labels.y[use]
    want = np.einsum("nb,ndb->nd", y, labels.gradient[use])
    errors = []
    for gw in (0.0, 1.0):
        cfg = YieldSurrogateConfig(
            hidden=(16, 16), gradient_weight=gw, ensemble=1, train=TrainConfig(
                learning_rate=3e-3, steps=750, chunk=250, patience=3, polish_steps=0))
        sur, _ = fit_yield_surrogate(jax.random.key(0), labels, config=cfg, progress=False,
                                     bins=sbottom_model.bins)
        h = 1e-5
        radial = (sur.delta_nll(y * (1 + h)) - sur.delta_nll(y * (1 - h))) / (2 * h)
        errors.append(np.sqrt(np.mean((radial - want) ** 2)))
    assert errors[1] < 0.7 * errors[0]


def test_random_direction_gradient_fits_derivatives_across_rays(tiny_labels, sbottom_model):
    """``gradient_direction="random"`` fits the exact gradient off the rays too: the
    network's derivative along fresh random directions is closer to the labels' than with
    values alone or with the derivative along the ray."""
    import jax

    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig, fit_yield_surrogate
    from surrogate_stats.train import TrainConfig

    labels, _ = tiny_labels
    use = labels.usable & (labels.tmu_observed <= 9)
    y = labels.y[use]
    rng = np.random.default_rng(5)  # not the training's directions
    xi = rng.normal(size=y.shape)
    d = (xi / np.linalg.norm(xi, axis=1, keepdims=True)
         * np.linalg.norm(y / labels.scale, axis=1, keepdims=True) * labels.scale)
    want = np.einsum("nb,ndb->nd", d, labels.gradient[use])
    errors = {}
    for gw, direction in ((0.0, "ray"), (1.0, "ray"), (1.0, "random")):
        cfg = YieldSurrogateConfig(
            hidden=(16, 16), gradient_weight=gw, gradient_direction=direction, ensemble=1,
            train=TrainConfig(learning_rate=3e-3, steps=750, chunk=250, patience=3,
                              polish_steps=0))
        sur, _ = fit_yield_surrogate(jax.random.key(0), labels, config=cfg, progress=False,
                                     bins=sbottom_model.bins)
        h = 1e-5
        # central differences where y +- h d stays non-negative (yields must be >= 0)
        ok = np.all(y - h * np.abs(d) >= 0, axis=1)
        got = (sur.delta_nll(y[ok] + h * d[ok]) - sur.delta_nll(y[ok] - h * d[ok])) / (2 * h)
        errors[(gw, direction)] = np.sqrt(np.mean((got - want[ok]) ** 2))
    assert errors[(1.0, "random")] < 0.7 * errors[(0.0, "ray")]
    assert errors[(1.0, "random")] < 0.7 * errors[(1.0, "ray")]


def test_merged_ensemble_is_the_mean_of_its_members():
    from surrogate_stats.likelihood._yields_surrogate import YieldNetwork
    from surrogate_stats.likelihood._yields_train import merge_ensemble

    rng = np.random.default_rng(3)
    sizes = [6, 5, 7, 4]
    members = [[(rng.normal(size=(a, b)), rng.normal(size=b)) for a, b in
                zip(sizes[:-1], sizes[1:])] for _ in range(3)]

    def net(layers):
        return YieldNetwork(layers=tuple(layers), scale=np.ones(3), mean=np.zeros(6),
                            std=np.ones(6), out_scale=np.full(4, 2.0))

    z = rng.normal(size=(10, 6))
    want = np.mean([net(m).raw(z) for m in members], axis=0)
    merged = merge_ensemble(members)
    assert merged[1][0].shape == (15, 21)
    np.testing.assert_allclose(net(merged).raw(z), want, rtol=1e-12, atol=1e-12)
    with pytest.raises(InvalidInput, match="same number of layers"):
        merge_ensemble([members[0], members[1][:2]])


def test_ensemble_artifact_has_onnx_parity(tiny_labels, sbottom_model, tmp_path):
    """An ensemble is published as one network: the ONNX graph equals the numpy path."""
    import jax

    from surrogate_stats.likelihood._yields_export import save_yield_surrogate
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig, fit_yield_surrogate
    from surrogate_stats.train import TrainConfig

    labels, _ = tiny_labels
    cfg = YieldSurrogateConfig(hidden=(8, 8), ensemble=2, train=TrainConfig(
        steps=250, chunk=250, patience=1, polish_steps=0))
    sur, metrics = fit_yield_surrogate(jax.random.key(0), labels, config=cfg, progress=False,
                                       bins=sbottom_model.bins)
    assert len(metrics["history"]["members"]) == 2
    assert [w.shape for w, _ in sur._net.layers] == [(12, 16), (16, 16), (16, 4)]
    save_yield_surrogate(sur, tmp_path / "ens", metadata={"training": metrics})
    s = load_surrogate(tmp_path / "ens")
    y = np.random.default_rng(11).uniform(0, 1, (100, s.n_bins)) * s.y_max
    got = s._session.run(["delta_nll"], {"yields": y})[0]
    np.testing.assert_allclose(got, sur.delta_nll(y), rtol=1e-9, atol=1e-9)


def test_ray_minima_are_observed_best_fits(tiny_labels, sbottom_model):
    """The extra training points at each ray's best fit carry that fit's exact -ln L."""
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import DATASETS
    from surrogate_stats.likelihood._yields_train import _ray_minima

    labels, _ = tiny_labels
    y_hat, g_hat = _ray_minima(labels)
    assert len(y_hat) and y_hat.shape[1] == sbottom_model.n_bins
    assert np.all(y_hat >= 0) and np.all(y_hat <= labels.y.max(axis=0) + 1e-9)
    main, aux = labels.datasets["observed"]
    nll = labels.nll0[DATASETS.index("observed")] + g_hat
    res = VectorFitter(sbottom_model, chunk=8).fit(y_hat[:6], main, aux, mu=np.ones(len(y_hat[:6])))
    np.testing.assert_allclose(nll[:6], res.nll, atol=1e-6)


@pytest.mark.parametrize("bad", [{"baseline": "poisson"}, {"hidden": ()}, {"hidden": (8, 0)},
                                 {"val_fraction": 0.7}, {"gradient_weight": -1.0},
                                 {"gradient_weight": float("nan")}, {"ensemble": 0},
                                 {"ensemble": 1.5}, {"gradient_direction": "across"},
                                 {"gradient_direction": "random", "baseline":
                                  "effective_poisson"}])
def test_bad_yield_surrogate_config_is_refused(bad):
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig

    field = next(iter(bad))
    with pytest.raises(InvalidInput, match=field):
        YieldSurrogateConfig(**bad)


@pytest.mark.parametrize("bad,match", [({"restarts": -1}, "restarts must be >= 0"),
                                       ({"n_signals": 5}, "n_signals must be at least 10"),
                                       ({"tmu_max": 9.0}, "tmu_max must be >= 25"),
                                       ({"bound_starts": "no"},
                                        "bound_starts must be True or False")])
def test_bad_yield_label_config_is_refused(bad, match):
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig

    with pytest.raises(InvalidInput, match=match):
        YieldLabelConfig(**bad)


def test_rerun_resumes_from_the_store(tiny_labels, sbottom_spec, sbottom_model):
    from surrogate_stats._executor import ExecutorConfig
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig, generate_yield_labels

    labels, store = tiny_labels
    chunks = sorted(p for p in store.iterdir() if p.suffix == ".npz")
    assert len(chunks) >= 3
    stamps = {p.name: p.stat().st_mtime_ns for p in chunks}
    again = generate_yield_labels(sbottom_spec, remove_channels=REMOVE,
                                  config=YieldLabelConfig(**TINY_LABELS), store_dir=store,
                                  executor=ExecutorConfig(kind="serial"), progress=False,
                                  model=sbottom_model)
    assert {p.name: p.stat().st_mtime_ns for p in store.iterdir() if p.suffix == ".npz"} == \
        stamps  # nothing recomputed
    np.testing.assert_array_equal(again.nll, labels.nll)


def test_labels_through_a_local_dask_cluster(sbottom_spec, tmp_path):
    """The label workers run on Dask workers (a local cluster) and give the serial result."""
    distributed = pytest.importorskip("distributed")
    from surrogate_stats._executor import ExecutorConfig
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig, generate_yield_labels

    cfg = YieldLabelConfig(n_signals=10, n_mu=3, walkers=0, rays_per_task=5, chunk=16)
    serial = generate_yield_labels(sbottom_spec, remove_channels=REMOVE, config=cfg,
                                   executor=ExecutorConfig(kind="serial"), progress=False,
                                   store_dir=tmp_path / "serial")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        dask = generate_yield_labels(sbottom_spec, remove_channels=REMOVE, config=cfg,
                                     executor=ExecutorConfig(kind="dask",
                                                             scheduler=cluster.scheduler_address),
                                     progress=False, store_dir=tmp_path / "dask")
    np.testing.assert_allclose(dask.nll, serial.nll, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(dask.y, serial.y)


def test_artifact_loads_with_onnx_parity_and_validation(tiny_artifact):
    s = load_surrogate(tiny_artifact)
    meta = s.metadata
    assert s.kind == "yield_likelihood"
    assert s.bins == ("SR_meff-0", "SR_meff-1", "SR_meff-2", "CRtt_meff-0", "CRtt_meff-1",
                      "CRtt_meff-2")
    assert meta["remove_channels"] == ["VRtt_meff"]
    assert meta["signal_injection"].startswith("normalisation factor only")
    # the default label run refits from the bound starts (here one: mu_ttbar at 0)
    assert meta["labels"]["config"]["bound_starts"] is True
    assert meta["labels"]["bound_starts"] == 1
    # numpy path = ONNX graph on fresh random yields inside the domain
    rng = np.random.default_rng(7)
    y = rng.uniform(0, 1, (200, s.n_bins)) * s.y_max
    got = s._session.run(["delta_nll"], {"yields": y})[0]
    np.testing.assert_allclose(got, s.delta_nll(y), rtol=1e-9, atol=1e-9)
    v = meta["validation"]["summary"]
    assert v["n_signals"] == 2 and v["n_errors"] == 0 and v["signals_converged"] == 2
    # even this small network is close to the exact fits on the analysis's own signals
    assert v["max_abs_dtmu_observed"] < 1.0 and v["max_abs_dtmu_expected"] < 1.0
    assert v["max_ul_observed_rel"] < 0.05


def test_api_and_consistency(tiny_artifact):
    s = load_surrogate(tiny_artifact)
    sig = s.y_max * 0.1
    nll = s.nll([0.0, 0.5, 1.0], signal=sig)
    assert nll.shape == (3,)
    assert s.nll(0.0, signal=sig) == pytest.approx(s.nll_zero())
    mu_hat, nll_hat = s.best_fit(sig)
    assert mu_hat >= 0 and nll_hat <= s.nll(mu_hat + 0.1, signal=sig) + 1e-12
    tmu = s.tmu([0.3, 1.0], signal=sig)
    np.testing.assert_allclose(tmu, 2 * (s.nll([0.3, 1.0], signal=sig) - nll_hat), atol=1e-12)
    # dict signals by bin name; expected variants
    as_dict = dict(zip(s.bins, sig))
    assert s.nll(1.0, signal=as_dict) == s.nll(1.0, signal=sig)
    for exp in (True, "apriori", "apriori_asimov", "aposteriori"):
        assert s.tmu(1.0, signal=sig, expected=exp) >= 0
    obs, band = s.upper_limit(signal=sig)
    assert obs > 0 and len(band) == 5 and band == sorted(band)
    # the signal view works with the pyhf-shaped inference
    from surrogate_stats import infer

    cls = infer.hypotest(band[2], s.for_signal(sig))
    assert 0 < float(cls) < 1


def test_bad_inputs(tiny_artifact):
    s = load_surrogate(tiny_artifact)
    sig = s.y_max * 0.1
    with pytest.raises(InvalidInput, match=r"expected signal yields for 6 bins \(SR_meff-0, "):
        s.nll(1.0, signal=sig[:5])
    with pytest.raises(InvalidInput, match="finite; not in bins \\['SR_meff-1'\\]"):
        s.nll(1.0, signal=np.where(np.arange(6) == 1, np.nan, sig))
    with pytest.raises(InvalidInput, match="negative total yields .* in bins"):
        s.nll(-1e4, signal=sig)
    with pytest.raises(InvalidInput, match="missing: \\['CRtt_meff-2'\\]"):
        s.nll(1.0, signal={b: 1.0 for b in s.bins[:-1]})
    with pytest.raises(InvalidInput, match="unknown: \\['SR_x'\\]"):
        s.nll(1.0, signal={**{b: 1.0 for b in s.bins}, "SR_x": 1.0})
    with pytest.raises(InvalidInput, match="expected must be"):
        s.nll(1.0, signal=sig, expected="sometimes")
    with pytest.raises(InvalidInput, match="mu must be finite"):
        s.nll(np.inf, signal=sig)
    with pytest.warns(ExtrapolationWarning, match="above the trained maximum in"):
        s.nll(20.0, signal=sig)
    strict = load_surrogate(tiny_artifact, on_extrapolation="raise")
    with pytest.raises(ExtrapolationError, match="above the trained maximum"):
        strict.tmu(20.0, signal=sig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.nll(1.0, signal=sig)  # inside: silent


def test_tampered_artifact_is_refused(tiny_artifact, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_artifact, bad)
    meta = json.loads((bad / "metadata.json").read_text())
    meta["nll0"]["observed"] += 1.0
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidArtifact):
        load_surrogate(bad)
    from tests.hardening.conftest import resign

    resign(bad)  # a consistent hash, but the numbers no longer belong together
    with pytest.raises(InvalidArtifact, match="nll0"):
        load_surrogate(bad)


def test_exact_reference_matches_pyhf(sbottom_spec, sbottom_model):
    """The engine's CLs at mu equals pyhf's hypotest on the normfactor-only workspace."""
    import pyhf

    from surrogate_stats._asymptotics import cls_values
    from surrogate_stats.likelihood._exact import numpy_backend
    from surrogate_stats.likelihood._histfactory import inject_signal
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import reference_datasets
    from surrogate_stats.likelihood._yields_validate import exact_reference, signal_from_patch

    ops = json.loads(PATCHES[0].read_text())
    signal = signal_from_patch(ops, sbottom_spec, sbottom_model.bins)
    fitter = VectorFitter(sbottom_model, chunk=16)
    datasets, _, _ = reference_datasets(sbottom_model, fitter)
    ref = exact_reference(fitter, datasets, signal[None])
    assert ref.converged.all()
    mu = float(ref.upper_limit[0])
    j = int(np.argmin(np.abs(ref.mu[0] - mu)))
    mu_grid = float(ref.mu[0, j])
    got = float(cls_values(ref.tmu_observed[0, j], ref.tmu_expected[0, j])[0])
    patched = inject_signal(sbottom_spec, signal, remove=REMOVE)
    with numpy_backend():
        ws = pyhf.Workspace(patched)
        model = ws.model()
        bounds = model.config.suggested_bounds()
        bounds[model.config.poi_index] = (0.0, 50.0)
        want = float(pyhf.infer.hypotest(mu_grid, ws.data(model), model, par_bounds=bounds))
    assert got == pytest.approx(want, abs=2e-3)
    assert 0.02 < got < 0.2  # near the 95% CL limit, where it matters


def test_exact_reference_restarts_only_lower_the_profile(sbottom_spec, sbottom_model):
    """Restarting every grid fit keeps the lowest -ln L: never above continuation alone."""
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import reference_datasets
    from surrogate_stats.likelihood._yields_validate import exact_reference, signal_from_patch

    signals = np.stack([signal_from_patch(json.loads(p.read_text()), sbottom_spec,
                                          sbottom_model.bins) for p in PATCHES])
    fitter = VectorFitter(sbottom_model, chunk=32)
    datasets, _, _ = reference_datasets(sbottom_model, fitter)
    plain = exact_reference(fitter, datasets, signals, n_starts=0)
    multi = exact_reference(fitter, datasets, signals, n_starts=3, seed=1)
    np.testing.assert_array_equal(plain.mu, multi.mu)
    assert multi.converged.all()
    # the Asimov -2 ln lambda is measured from the same mu = 0 fit: lower grid -ln L only
    assert np.all(multi.tmu_expected <= plain.tmu_expected + 1e-6)
    np.testing.assert_allclose(multi.upper_limit, plain.upper_limit, rtol=1e-3)


def test_analysis_signals_and_removed_channels(sbottom_spec):
    from surrogate_stats.likelihood._yields_pipeline import analysis_signals

    names, ops, removed = analysis_signals(sbottom_spec, patches=PATCHES)
    assert names == ["sbottom_1300_850_60", "sbottom_1000_131_1"]
    assert removed == ("VRtt_meff",)
    ps_names, _, ps_removed = analysis_signals(
        json.loads((DATA / "3L-eRJR" / "BkgOnly.json").read_text()),
        patchset=DATA / "3L-eRJR" / "patchset.json")
    assert "ERJR_500p0_0p0" in ps_names and ps_removed == ()
