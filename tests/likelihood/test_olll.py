"""OLLL v0.1 export and loading: the contract SModelS reads, checked from the consumer's side.

Most tests use a *synthetic* yield surrogate: the real :class:`YieldLikelihoodSurrogate` class
(effective-Poisson baseline + tanh network) with random weights on the sbottom workspace's
active bins and its nominal background. What is tested is the file, the decoding and the
agreement of the float32 file with the float64 surrogate, which do not depend on training;
one ``slow`` test repeats the round trip on a surrogate trained on exact labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from surrogate_stats.errors import InvalidArtifact, InvalidInput
from tests.conftest import DATA

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

SBOTTOM_BKG = DATA / "sbottom-RegionA" / "BkgOnly.json"
REMOVE = ("VRtt_meff",)
SOURCE = {"analysis_id": "ATLAS-SUSY-2018-31", "arxiv": "1908.03122", "inspire_id": "1748602",
          "experiment": "ATLAS", "sqrt_s": 13.0, "luminosity": 139.0,
          "reference": "https://www.hepdata.net/record/ins1748602"}
HELDOUT = {"observed": 0.05, "apriori": 0.06, "observed_asimov": 0.07, "apriori_asimov": 0.08}

# Tolerances. U32 is float32's unit roundoff. The file's input (features) and output (nLLs)
# are float32: the decoded Delta carries the rounding of the features (relative U32 on
# |x| <~ 3, amplified by (1 + total) * features_std * |dDelta/dtotal|) and of the output
# (relative U32 on |out|, amplified by nLLs_std * (1 + |Delta|)). Measured on this fixture:
# |Delta_file - Delta_native| <= 1.3e-6 * (1 + |Delta|) (float64 arithmetic inside the graph)
# and 3.2e-5 * (1 + |Delta|) (compute_dtype="float32"); the tolerances leave ~10x.
U32 = 2.0 ** -24
F32_REL = 200 * U32  # 1.2e-5, float64 arithmetic inside the graph (the default)
F32_REL_ALL_FLOAT32 = 4000 * U32  # 2.4e-4, every operation in float32
UL_RTOL = 1e-4  # upper limits from the file vs the native surrogate
DECODE_RTOL = 1e-12  # our decoding vs a consumer's: the same float64 operations


def _synthetic(bins, prefit, seed=0, hidden=(16, 16), metadata=None):
    from surrogate_stats.likelihood._yields_surrogate import (
        YieldBaseline,
        YieldLikelihoodSurrogate,
        YieldNetwork,
    )

    rng = np.random.default_rng(seed)
    n = len(bins)
    b = np.asarray(prefit, dtype=float)
    sig = np.sqrt(b + (0.15 * b) ** 2)
    corr = 0.3 * np.ones((n, n)) + 0.7 * np.eye(n)
    info = np.linalg.inv(corr * np.outer(sig, sig))
    infos = np.stack([info * f for f in (1.0, 1.1, 0.95, 1.1)])
    grad = np.zeros((4, n))
    grad[0] = rng.normal(0.0, 0.2, n)
    grad[1] = rng.normal(0.0, 0.05, n)
    grad[0, 1] = 1.2  # data far below the background: this bin takes the quadratic fallback
    base = YieldBaseline.effective_poisson(grad, infos)
    sizes = [2 * n, *hidden, 4]
    layers = tuple((rng.normal(0.0, 1.0 / np.sqrt(i), (i, o)), rng.normal(0.0, 0.1, o))
                   for i, o in zip(sizes[:-1], sizes[1:]))
    net = YieldNetwork(layers=layers, scale=sig, mean=np.r_[np.full(n, 1.0), np.full(n, 0.6)],
                       std=np.r_[np.full(n, 1.0), np.full(n, 0.5)], out_scale=np.full(4, 0.3))
    meta = {"name": "synthetic-sbottom",
            "training": {"heldout": {d: {"rms_dnll": v} for d, v in HELDOUT.items()}},
            "provenance": {"analysis": "ATLAS-SUSY-2018-31"}}
    if metadata is not None:
        meta = metadata
    return YieldLikelihoodSurrogate(bins=bins, network=net, baseline=base,
                                    nll0=[50.3, 49.2, 48.9, 49.2], y_max=10 * sig, prefit=b,
                                    metadata=meta)


@pytest.fixture(scope="session")
def spec():
    return json.loads(SBOTTOM_BKG.read_text())


@pytest.fixture(scope="session")
def ws(spec):
    from surrogate_stats.likelihood._olll import _workspace_numbers

    return _workspace_numbers(spec)


@pytest.fixture(scope="session")
def native(ws):
    active = np.array([b.rsplit("-", 1)[0] not in REMOVE for b in ws["bins"]])
    bins = [b for b, a in zip(ws["bins"], active) if a]
    return _synthetic(bins, ws["background"][active])


@pytest.fixture(scope="session")
def exported(native, tmp_path_factory):
    from surrogate_stats.likelihood._olll import export_olll

    path = tmp_path_factory.mktemp("olll") / "sbottom.onnx"
    res = export_olll(native, path, workspace=SBOTTOM_BKG, source=SOURCE,
                      model_author="surrogate_stats tests")
    return res


@pytest.fixture(scope="session")
def olll(exported):
    from surrogate_stats.likelihood._olll import load_olll

    return load_olll(exported.path)


def _signals(native, n, seed):
    """Fresh random signal yields inside the trained domain (box and signal-like rays)."""
    rng = np.random.default_rng(seed)
    box = rng.uniform(size=(n // 2, native.n_bins)) * native.y_max
    shape = np.exp(rng.normal(0.0, 2.0, size=(n - n // 2, native.n_bins)))
    shape = shape / np.max(shape, axis=1, keepdims=True) * native.y_max
    return np.concatenate([box, rng.uniform(size=(n - n // 2, 1)) * shape])


def _smodels_decode(path, total_yields):
    """A consumer's decoding, written with onnx + onnxruntime + numpy only."""
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    std = json.loads(meta["standardization"])

    def log_w_negatives(x):
        return np.sign(x) * np.log(1.0 + np.abs(x))

    def ilog_w_negatives(x):
        return np.sign(x) * np.expm1(np.abs(x))

    x = log_w_negatives(np.asarray(total_yields, dtype=float))
    x = (x - np.array(std["features_mean"][0])) / np.array(std["features_std"][0])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"features": x.astype(np.float32)})[0]
    raw = out[:, :4].astype(float)
    delta = ilog_w_negatives(raw * np.array(std["nLLs_std"][0]) + np.array(std["nLLs_mean"][0]))
    mu0 = np.array([float(meta[k]) for k in
                    ("nLL_exp_mu0", "nLL_obs_mu0", "nLLA_exp_mu0", "nLLA_obs_mu0")])
    return mu0 + delta, out  # nLL(mu=1), columns [exp, obs, expA, obsA]


# -- the numbers ------------------------------------------------------------------------------
def test_round_trip_values_agree(native, olll, exported):
    assert olll.bins == native.bins
    np.testing.assert_allclose(olll.background, native.background, rtol=0, atol=0)
    np.testing.assert_allclose(olll.y_max, native.y_max, rtol=1e-15, atol=1e-12)
    y = _signals(native, 2000, seed=7)
    want, got = native.delta_nll(y), olll.delta_nll(y)
    worst = np.max(np.abs(got - want) / (1.0 + np.abs(want)))
    assert worst <= F32_REL, worst
    # the export-time check on its own random points says the same
    assert max(exported.agreement["max_rel_delta"]) <= F32_REL
    sig = native.y_max * np.array([0.25, 0.0, 0.25, 0.01, 0.01, 0.01])
    mus = np.linspace(0.0, 2.0, 7)
    for expected in (False, True, "apriori", "apriori_asimov"):
        a = native.nll(mus, signal=sig, expected=expected)
        b = olll.nll(mus, signal=sig, expected=expected)
        np.testing.assert_allclose(b, a, rtol=0, atol=F32_REL * (1 + np.max(np.abs(a - a[0]))))
        np.testing.assert_allclose(olll.tmu(mus, signal=sig, expected=expected),
                                   native.tmu(mus, signal=sig, expected=expected),
                                   rtol=0, atol=1e-3)
    obs_n, exp_n = native.upper_limit(signal=sig)
    obs_o, exp_o = olll.upper_limit(signal=sig)
    np.testing.assert_allclose([obs_o, *exp_o], [obs_n, *exp_n], rtol=UL_RTOL)
    mu_n, _ = native.best_fit(sig)
    mu_o, _ = olll.best_fit(sig)
    assert mu_o == pytest.approx(mu_n, abs=1e-3)


def test_consumer_decoding_equals_ours(native, olll, exported):
    """SModelS-style decoding (onnx + onnxruntime + numpy, no surrogate_stats) = OLLLSurrogate."""
    y = _signals(native, 300, seed=11)
    nll_consumer, out = _smodels_decode(exported.path, native.background + y)
    assert out.dtype == np.float32 and out.shape == (300, 8)
    order = [1, 0, 3, 2]  # OLLL [exp, obs, expA, obsA] -> ours [observed, apriori, obsA, expA]
    ours = olll._nll0[None, :] + olll.delta_nll(y)
    np.testing.assert_allclose(nll_consumer[:, order], ours, rtol=DECODE_RTOL)
    want = native._nll0[None, :] + native.delta_nll(y)
    scale = 1.0 + np.abs(want - native._nll0[None, :])
    assert np.max(np.abs(nll_consumer[:, order] - want) / scale) <= F32_REL


def test_sigma_outputs_are_the_heldout_error(olll, native):
    y = _signals(native, 50, seed=3)
    sig = olll.delta_nll_sigma(y)  # DATASETS order
    want = np.array([HELDOUT[d] for d in ("observed", "apriori", "observed_asimov",
                                          "apriori_asimov")])
    np.testing.assert_allclose(sig, np.broadcast_to(want, sig.shape), rtol=1e-5)


def test_all_float32_graph_is_less_precise_but_close(native, tmp_path):
    from surrogate_stats.likelihood._olll import export_olll, load_olll

    res = export_olll(native, tmp_path / "f32.onnx", workspace=SBOTTOM_BKG, source=SOURCE,
                      model_author="tests", compute_dtype="float32")
    s = load_olll(res.path)
    y = _signals(native, 1000, seed=5)
    want = native.delta_nll(y)
    worst = np.max(np.abs(s.delta_nll(y) - want) / (1 + np.abs(want)))
    assert worst <= F32_REL_ALL_FLOAT32, worst


def test_nll_max_definition(olll, native, exported):
    meta = exported.metadata
    nll0 = dict(zip(("observed", "apriori", "observed_asimov", "apriori_asimov"), native._nll0))
    for key, d in (("nLL_obs_max", "observed"), ("nLL_exp_max", "apriori")):
        mu, val = meta[key]
        assert 0.0 <= mu <= 1.0 and val <= nll0[d] + 1e-12
        signal = np.array([v for _, v in meta["nLL_max_definition"]["signals"][key]])
        assert native.best_fit(signal, expected=d) == pytest.approx((mu, val))
    assert meta["nLLA_obs_max"] == [0.0, nll0["observed_asimov"]]
    assert meta["nLLA_exp_max"] == [0.0, nll0["apriori_asimov"]]


def test_load_surrogate_dispatches_onnx_files(exported, tmp_path):
    from surrogate_stats import load_surrogate
    from surrogate_stats.likelihood._olll import OLLLSurrogate

    s = load_surrogate(str(exported.path))
    assert isinstance(s, OLLLSurrogate) and s.metadata["kind"] == "olll"
    assert s.channels == {"SR_meff": "SR", "VRtt_meff": "VR", "CRtt_meff": "CR"}
    assert s.remove_channels == REMOVE
    with pytest.raises(InvalidArtifact, match="missing"):
        load_surrogate(tmp_path / "nothing.onnx")


def test_bad_signals_name_the_bins(olll):
    with pytest.raises(InvalidInput, match="6 bins .*SR_meff-0.*got 3"):
        olll.nll(1.0, signal=[1.0, 2.0, 3.0])
    with pytest.raises(InvalidInput, match="negative total yields.*SR_meff-0"):
        olll.nll(1.0, signal=[-100.0, 0, 0, 0, 0, 0])
    with pytest.raises(InvalidInput, match="finite.*SR_meff-2"):
        olll.nll(1.0, signal=[0, 0, float("nan"), 0, 0, 0])


def test_evaluating_the_file_needs_only_numpy_and_onnxruntime(exported):
    heavy = ("jax", "jaxlib", "pyhf", "optax", "equinox", "scipy", "onnx", "torch")
    code = f"""
import builtins, sys
real = builtins.__import__
def guarded(mod, *a, **k):
    if mod.split('.')[0] in {heavy!r}:
        raise ImportError('blocked: ' + mod)
    return real(mod, *a, **k)
builtins.__import__ = guarded
from surrogate_stats import load_surrogate
s = load_surrogate({str(exported.path)!r})
sig = s.y_max * 0.1
print(s.nll(0.5, signal=sig), s.tmu([0.1, 0.2], signal=sig, expected=True))
print(s.upper_limit(signal=s.y_max * [0.25, 0.0, 0.25, 0.01, 0.01, 0.01]))
print([m for m in {heavy!r} if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- the file, as a validator sees it ---------------------------------------------------------
def test_file_meets_the_olll_contract(exported, native, spec):
    from surrogate_stats.likelihood._olll import REQUIRED_KEYS

    model = onnx.load(str(exported.path))
    onnx.checker.check_model(model)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    # graph I/O: one float32 input [batch, n_bins], one float32 output [batch, 8]
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    assert [i.name for i in inputs] == ["features"]
    assert [o.name for o in model.graph.output] == ["nLLs"]
    for value, last in ((inputs[0], native.n_bins), (model.graph.output[0], 8)):
        t = value.type.tensor_type
        assert t.elem_type == onnx.TensorProto.FLOAT
        dims = t.shape.dim
        assert len(dims) == 2 and dims[0].dim_param and not dims[0].HasField("dim_value")
        assert dims[1].dim_value == last
    assert not any(n.domain not in ("", "ai.onnx") for n in model.graph.node)
    # metadata: every key once, every required key, the formats
    keys = [p.key for p in model.metadata_props]
    assert len(keys) == len(set(keys))
    raw = {p.key: p.value for p in model.metadata_props}
    assert set(REQUIRED_KEYS) | {"run_config"} <= set(raw)
    js = {k: json.loads(raw[k]) for k in (
        "source", "channels", "obs_yields", "bkg_yields", "bkg_unc", "removeCRsVRs",
        "remove_channels", "x_min", "x_max", "y_min", "y_max", "preprocessing",
        "standardization", "nLL_exp_max", "nLL_obs_max", "nLLA_exp_max", "nLLA_obs_max",
        "run_config")}
    assert raw["olll_schema_version"] == "0.1" and raw["input_type"] == "total_yields"
    for k in ("model_type", "model_name", "model_author", "model_license"):
        assert raw[k].strip()
    src = js["source"]
    for k in ("analysis_id", "arxiv", "experiment"):
        assert isinstance(src[k], str) and src[k].strip() and src[k] != "unknown"
    assert src["sqrt_s"] == 13.0 and src["luminosity"] == 139.0
    assert src["statistical_model"] == {"type": "histfactory", "reference": SOURCE["reference"],
                                        "filename": "BkgOnly.json"}
    assert "placeholders" not in src
    channels = [c["name"] for c in spec["channels"]]
    assert js["channels"] == {"SR_meff": "SR", "VRtt_meff": "VR", "CRtt_meff": "CR"}
    assert list(js["channels"]) == channels
    all_bins = [f"{c['name']}-{i}" for c in spec["channels"]
                for i in range(len(c["samples"][0]["data"]))]
    observed = {o["name"]: o["data"] for o in spec["observations"]}
    for key in ("obs_yields", "bkg_yields", "bkg_unc"):
        lst = js[key]
        assert [e[0] for e in lst] == all_bins
        assert all(isinstance(e[1], float) and np.isfinite(e[1]) and e[1] >= 0 for e in lst)
    assert [e[1] for e in js["obs_yields"]] == [v for c in channels for v in observed[c]]
    active = [i for i, b in enumerate(all_bins) if b.rsplit("-", 1)[0] not in REMOVE]
    assert [all_bins[i] for i in active] == list(native.bins)
    np.testing.assert_array_equal([js["bkg_yields"][i][1] for i in active], native.background)
    assert js["removeCRsVRs"] is True and js["remove_channels"] == list(REMOVE)
    assert js["x_min"] == native.background.tolist()
    np.testing.assert_allclose(js["x_max"], native.background + native.y_max, rtol=1e-15)
    assert len(js["y_min"]) == len(js["y_max"]) == 4
    assert all(a <= 0 <= b for a, b in zip(js["y_min"], js["y_max"]))
    assert js["preprocessing"]["features_pipeline"] == ["log_w_negatives", "standardization"]
    assert js["preprocessing"]["nLLs_pipeline"] == ["log_w_negatives", "standardization"]
    std = js["standardization"]
    for key, n in (("features_mean", native.n_bins), ("features_std", native.n_bins),
                   ("nLLs_mean", 4), ("nLLs_std", 4)):
        assert len(std[key]) == 1 and len(std[key][0]) == n
        assert all(np.isfinite(std[key][0])) and (not key.endswith("std") or min(std[key][0]) > 0)
    mu0 = {k: float(raw[k]) for k in ("nLL_exp_mu0", "nLL_obs_mu0", "nLLA_exp_mu0",
                                      "nLLA_obs_mu0")}
    assert mu0 == {"nLL_exp_mu0": native._nll0[1], "nLL_obs_mu0": native._nll0[0],
                   "nLLA_exp_mu0": native._nll0[3], "nLLA_obs_mu0": native._nll0[2]}
    for key in ("nLL_exp_max", "nLL_obs_max", "nLLA_exp_max", "nLLA_obs_max"):
        assert len(js[key]) == 2 and all(np.isfinite(js[key]))
    assert isinstance(js["run_config"], dict) and "training" in js["run_config"]
    assert "float32" not in json.loads(raw["sigma_definition"])["source"]


def test_missing_provenance_fields_become_listed_placeholders(native, tmp_path):
    from surrogate_stats.likelihood._olll import export_olll

    with pytest.warns(UserWarning, match="placeholders.*arxiv.*experiment.*sqrt_s"):
        res = export_olll(native, tmp_path / "p.onnx", workspace=SBOTTOM_BKG)
    src = res.metadata["source"]
    assert src["arxiv"] == "unknown" and src["sqrt_s"] == 13.0 and "luminosity" not in src
    assert src["analysis_id"] == "ATLAS-SUSY-2018-31"  # from the artifact's provenance
    assert set(src["placeholders"]["fields"]) == {"arxiv", "experiment", "sqrt_s",
                                                  "luminosity", "reference"}
    assert set(res.placeholders) == set(src["placeholders"]["fields"]) | {"model_author"}
    assert res.metadata["model_author"] == "unknown"


def test_without_a_heldout_error_the_sigma_is_float32_rounding_and_says_so(ws, tmp_path):
    from surrogate_stats.likelihood._olll import export_olll, load_olll

    active = np.array([b.rsplit("-", 1)[0] not in REMOVE for b in ws["bins"]])
    s = _synthetic([b for b, a in zip(ws["bins"], active) if a], ws["background"][active],
                   metadata={"name": "bare"})
    with pytest.warns(UserWarning, match="only the float32 rounding"):
        res = export_olll(s, tmp_path / "bare.onnx", workspace=SBOTTOM_BKG, source=SOURCE,
                          model_author="tests")
    assert res.metadata["sigma_definition"]["source"].startswith("float32_rounding_only")
    sig = load_olll(res.path).delta_nll_sigma(np.zeros((1, s.n_bins)))
    assert np.all((sig > 0) & (sig < 1e-4))


# -- bad files --------------------------------------------------------------------------------
def _rewrite(path, out, *, drop=(), set_=None, add=()):
    model = onnx.load(str(path))
    props = [(p.key, p.value) for p in model.metadata_props if p.key not in drop]
    props = [(k, (set_ or {}).get(k, v)) for k, v in props] + list(add)
    del model.metadata_props[:]
    for k, v in props:
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("key", __import__("surrogate_stats.likelihood._olll",
                                           fromlist=["REQUIRED_KEYS"]).REQUIRED_KEYS)
def test_missing_key_is_named(exported, tmp_path, key):
    from surrogate_stats.likelihood._olll import load_olll

    bad = _rewrite(exported.path, tmp_path / "m.onnx", drop=(key,))
    with pytest.raises(InvalidArtifact, match=f"lacks the required OLLL v0.1 key '{key}'"):
        load_olll(bad)


def test_duplicate_key_is_named(exported, tmp_path):
    from surrogate_stats import load_surrogate

    bad = _rewrite(exported.path, tmp_path / "d.onnx", add=[("x_max", "[1, 2]")])
    with pytest.raises(InvalidArtifact, match="key 'x_max' appears 2 times"):
        load_surrogate(bad)


MALFORMED = [
    ("x_max", "[1, 2", "'x_max'.* not valid JSON"),
    ("x_max", "[1, 2]", r"'x_max'.* list of 6 finite numbers"),
    ("y_min", "[0, 0, 0]", r"'y_min'.* list of 4 finite"),
    ("standardization", '{"features_mean": [[NaN]]}', "'standardization'.* not valid JSON"),
    ("standardization", json.dumps({"features_mean": [0] * 6, "features_std": [1] * 6,
                                    "nLLs_mean": [[0] * 4], "nLLs_std": [[1] * 4]}),
     r"features_mean must be a nested list \[\[6"),
    ("nLL_obs_mu0", "nan", "'nLL_obs_mu0'.* finite number"),
    ("nLLA_exp_max", "[0]", r"'nLLA_exp_max'.*two finite numbers"),
    ("olll_schema_version", "0.2", "'olll_schema_version'.* must be '0.1'"),
    ("input_type", "signal_yields", "'input_type'.*'total_yields'"),
    ("channels", json.dumps({"SR_meff": "SR", "VRtt_meff": "XR", "CRtt_meff": "CR"}),
     "'channels'.*'VRtt_meff' as 'XR'"),
    ("remove_channels", json.dumps(["VRxx"]), "'remove_channels'.*not in 'channels'.*VRxx"),
    ("removeCRsVRs", '"yes"', "'removeCRsVRs'.* boolean"),
    ("preprocessing", json.dumps({"features_pipeline": ["log"],
                                  "nLLs_pipeline": ["log_w_negatives", "standardization"]}),
     "'preprocessing'.* features_pipeline"),
    ("source", "[]", "'source'.* object"),
    ("model_author", " ", "'model_author'.* non-empty"),
]


@pytest.mark.parametrize("key, value, match", MALFORMED, ids=[f"{k}:{v[:20]}" for k, v, _ in
                                                               MALFORMED])
def test_malformed_key_is_named(exported, tmp_path, key, value, match):
    from surrogate_stats.likelihood._olll import load_olll

    bad = _rewrite(exported.path, tmp_path / "b.onnx", set_={key: value})
    with pytest.raises(InvalidArtifact, match=match):
        load_olll(bad)


def test_yield_lists_must_agree(exported, tmp_path):
    from surrogate_stats.likelihood._olll import load_olll

    lst = exported.metadata["bkg_unc"]
    swapped = [lst[1], lst[0], *lst[2:]]
    bad = _rewrite(exported.path, tmp_path / "y.onnx", set_={"bkg_unc": json.dumps(swapped)})
    with pytest.raises(InvalidArtifact, match="'bkg_unc'.* same bins in the same order"):
        load_olll(bad)
    neg = [[lst[0][0], -1.0], *lst[1:]]
    bad = _rewrite(exported.path, tmp_path / "n.onnx", set_={"bkg_unc": json.dumps(neg)})
    with pytest.raises(InvalidArtifact, match="'bkg_unc'.* >= 0"):
        load_olll(bad)


def test_tampered_weights_fail_the_self_check(exported, tmp_path):
    from surrogate_stats.likelihood._olll import load_olll

    model = onnx.load(str(exported.path))
    init = next(i for i in model.graph.initializer if i.name == "yields/W0")
    w = onnx.numpy_helper.to_array(init).copy()
    w[0, 0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(w, "yields/W0"))
    onnx.save(model, str(tmp_path / "t.onnx"))
    with pytest.raises(InvalidArtifact, match="self-check failed"):
        load_olll(tmp_path / "t.onnx")


def test_truncated_and_foreign_graphs_are_refused(exported, tmp_path):
    from surrogate_stats.likelihood._olll import load_olll

    blob = exported.path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InvalidArtifact, match="cut.onnx"):
        load_olll(tmp_path / "cut.onnx")
    model = onnx.load(str(exported.path))
    model.graph.node[0].domain = "com.microsoft"
    onnx.save(model, str(tmp_path / "dom.onnx"))
    with pytest.raises(InvalidArtifact, match="domain 'com.microsoft'"):
        load_olll(tmp_path / "dom.onnx")
    (tmp_path / "link.onnx").symlink_to(exported.path)
    with pytest.raises(InvalidArtifact, match="symlink"):
        load_olll(tmp_path / "link.onnx")


@pytest.mark.parametrize("what", ["output_4_columns", "input_float64", "two_inputs",
                                  "non_finite"])
def test_wrong_graph_io_is_refused(exported, tmp_path, what):
    from surrogate_stats.likelihood._olll import load_olll

    h, tp = onnx.helper, onnx.TensorProto
    n = 6
    if what == "output_4_columns":
        nodes = [h.make_node("Slice", ["features", "s", "e", "a"], ["nLLs"])]
        inits = [onnx.numpy_helper.from_array(np.array([v], np.int64), k)
                 for k, v in (("s", 0), ("e", 4), ("a", 1))]
        ins = [h.make_tensor_value_info("features", tp.FLOAT, ["batch", n])]
        outs = [h.make_tensor_value_info("nLLs", tp.FLOAT, ["batch", 4])]
    elif what == "input_float64":
        nodes = [h.make_node("Cast", ["features"], ["c"], to=tp.FLOAT),
                 h.make_node("Concat", ["c", "c"], ["cc"], axis=1),
                 h.make_node("Slice", ["cc", "s", "e", "a"], ["nLLs"])]
        inits = [onnx.numpy_helper.from_array(np.array([v], np.int64), k)
                 for k, v in (("s", 0), ("e", 8), ("a", 1))]
        ins = [h.make_tensor_value_info("features", tp.DOUBLE, ["batch", n])]
        outs = [h.make_tensor_value_info("nLLs", tp.FLOAT, ["batch", 8])]
    elif what == "non_finite":  # log(0) = -inf
        nodes = [h.make_node("Sub", ["features", "features"], ["z"]),
                 h.make_node("Concat", ["z", "z"], ["cc"], axis=1),
                 h.make_node("Slice", ["cc", "s", "e", "a"], ["zz"]),
                 h.make_node("Log", ["zz"], ["nLLs"])]
        inits = [onnx.numpy_helper.from_array(np.array([v], np.int64), k)
                 for k, v in (("s", 0), ("e", 8), ("a", 1))]
        ins = [h.make_tensor_value_info("features", tp.FLOAT, ["batch", n])]
        outs = [h.make_tensor_value_info("nLLs", tp.FLOAT, ["batch", 8])]
    else:
        nodes = [h.make_node("Concat", ["features", "other"], ["cc"], axis=1),
                 h.make_node("Slice", ["cc", "s", "e", "a"], ["nLLs"])]
        inits = [onnx.numpy_helper.from_array(np.array([v], np.int64), k)
                 for k, v in (("s", 0), ("e", 8), ("a", 1))]
        ins = [h.make_tensor_value_info("features", tp.FLOAT, ["batch", n]),
               h.make_tensor_value_info("other", tp.FLOAT, ["batch", n])]
        outs = [h.make_tensor_value_info("nLLs", tp.FLOAT, ["batch", 8])]
    model = h.make_model(h.make_graph(nodes, "g", ins, outs, initializer=inits),
                         opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    for p in onnx.load(str(exported.path)).metadata_props:
        e = model.metadata_props.add()
        e.key, e.value = p.key, p.value
    onnx.save(model, str(tmp_path / "io.onnx"))
    match = {"output_4_columns": "graph's outputs", "non_finite": "not finite"}.get(
        what, "graph's inputs")
    with pytest.raises(InvalidArtifact, match=match):
        load_olll(tmp_path / "io.onnx")


# -- export: bad input, CLI -------------------------------------------------------------------
def test_export_refuses_bad_input(native, tmp_path, spec):
    from surrogate_stats.likelihood._olll import export_olll

    with pytest.raises(InvalidInput, match="workspace's bins do not match"):
        export_olll(native, tmp_path / "x.onnx", workspace=DATA / "3L-eRJR" / "BkgOnly.json")
    with pytest.raises(InvalidInput, match="needs the background-only workspace"):
        export_olll(native, tmp_path / "x.onnx")
    with pytest.raises(InvalidInput, match=r"end in \.onnx"):
        export_olll(native, tmp_path / "x.json", workspace=SBOTTOM_BKG)
    with pytest.raises(InvalidInput, match="channels not in the workspace"):
        export_olll(native, tmp_path / "x.onnx", workspace=SBOTTOM_BKG,
                    channel_types={"SRnope": "SR"})
    odd = json.loads(json.dumps(spec))
    odd["channels"][1]["name"] = "ttbar_meff"
    odd["observations"][1]["name"] = "ttbar_meff"
    with pytest.raises(InvalidInput, match="cannot tell SR/CR/VR.*ttbar_meff"):
        export_olll(native, tmp_path / "x.onnx", workspace=odd)
    shifted = _synthetic(native.bins, native.background * 1.01)
    with pytest.raises(InvalidInput, match="nominal background differs.*SR_meff-0"):
        export_olll(shifted, tmp_path / "x.onnx", workspace=SBOTTOM_BKG)
    with pytest.raises(InvalidInput, match="YieldLikelihoodSurrogate"):
        export_olll(object(), tmp_path / "x.onnx", workspace=SBOTTOM_BKG)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_export(native, tmp_path, capsys):
    from surrogate_stats.cli._main import main
    from surrogate_stats.likelihood._olll import load_olll
    from surrogate_stats.likelihood._yields_export import save_yield_surrogate

    art = tmp_path / "native"
    save_yield_surrogate(native, art, metadata=native.metadata)
    out = tmp_path / "sb.onnx"
    argv = ["export", "olll", str(art), "--out", str(out), "--workspace", str(SBOTTOM_BKG),
            "--channel-types", "VRtt_meff=VR", "--analysis-id", SOURCE["analysis_id"],
            "--arxiv", SOURCE["arxiv"], "--experiment", "ATLAS", "--sqrt-s", "13",
            "--luminosity", "139", "--reference", SOURCE["reference"], "--author", "me"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left as a placeholder
        assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"wrote OLLL v0.1 file {out}"
    summary = json.loads(lines[-1])
    assert summary["olll"] == str(out) and summary["placeholders"] == []
    assert summary["bins"] == list(native.bins)
    assert max(summary["max_rel_delta"]) <= F32_REL
    s = load_olll(out)
    y = native.y_max * 0.2
    assert s.nll(1.0, signal=y) == pytest.approx(native.nll(1.0, signal=y), rel=F32_REL)
    # bad input: one line on stderr, exit code 2
    assert main([*argv[:3], "--out", str(tmp_path / "b.onnx"), "--workspace",
                 str(DATA / "3L-eRJR" / "BkgOnly.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("surrogate-stats: error: the workspace's bins")
    assert main([*argv, "--channel-types", "VRtt_meff"]) == 2
    assert "NAME=SR|CR|VR" in capsys.readouterr().err


# -- a surrogate trained on exact labels ------------------------------------------------------
@pytest.mark.slow
def test_round_trip_of_a_trained_surrogate(tmp_path, spec):
    """The same round trip on a (small) surrogate trained on exact labels (~1 minute)."""
    import jax

    from surrogate_stats._executor import ExecutorConfig
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._olll import export_olll, load_olll
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig, generate_yield_labels
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig, fit_yield_surrogate
    from surrogate_stats.train import TrainConfig

    model = build_model(spec, remove_channels=REMOVE)
    labels = generate_yield_labels(
        spec, remove_channels=REMOVE, model=model, progress=False,
        config=YieldLabelConfig(n_signals=20, n_mu=4, walkers=0, rays_per_task=32, chunk=32),
        executor=ExecutorConfig(kind="serial"))
    cfg = YieldSurrogateConfig(hidden=(16, 16), ensemble=1, train=TrainConfig(
        steps=500, chunk=250, patience=2, polish_steps=0))
    surrogate, metrics = fit_yield_surrogate(jax.random.key(0), labels, config=cfg,
                                             bins=model.bins, progress=False,
                                             prefit=labels.datasets["apriori"][0])
    surrogate.metadata = {"name": "trained", "training": metrics}
    res = export_olll(surrogate, tmp_path / "t.onnx", workspace=SBOTTOM_BKG, source=SOURCE)
    s = load_olll(res.path)
    y = labels.y[labels.usable]
    want = surrogate.delta_nll(y)
    assert np.max(np.abs(s.delta_nll(y) - want) / (1 + np.abs(want))) <= F32_REL
    sig = res.metadata["sigma_definition"]["values_dnll"]
    assert sig == pytest.approx([metrics["heldout"][d]["rms_dnll"] for d in
                                 ("apriori", "observed", "apriori_asimov", "observed_asimov")])


# -- fuzzing the loader -----------------------------------------------------------------------
def _fuzz_settings():
    from datetime import timedelta

    from hypothesis import HealthCheck, settings

    return settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow], database=None)


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=10)


@_fuzz_settings()
@hypothesis.given(data=st.data())
def test_fuzzed_metadata_values_give_only_our_errors(exported, tmp_path_factory, data):
    """Any JSON (or text) in any metadata key: the file loads or InvalidArtifact, nothing else."""
    from surrogate_stats.errors import SurrogateStatsError
    from surrogate_stats.likelihood._olll import load_olll

    model = onnx.load(str(exported.path))
    keys = [p.key for p in model.metadata_props]
    key = data.draw(st.sampled_from(keys))
    value = data.draw(_json_values.map(lambda v: json.dumps(v)) | st.text(max_size=30))
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    out = tmp_path_factory.mktemp("fuzz") / "f.onnx"
    onnx.save(model, str(out))
    try:
        load_olll(out, on_extrapolation="ignore")
    except SurrogateStatsError:
        pass


@_fuzz_settings()
@hypothesis.given(data=st.data())
def test_fuzzed_bytes_give_only_our_errors(exported, tmp_path_factory, data):
    from surrogate_stats.errors import SurrogateStatsError
    from surrogate_stats.likelihood._olll import load_olll

    blob = bytearray(exported.path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    out = tmp_path_factory.mktemp("fuzzb") / "f.onnx"
    out.write_bytes(bytes(blob))
    try:
        load_olll(out, on_extrapolation="ignore")
    except SurrogateStatsError:
        pass
