"""CorrectionFlow: spikes, artifact round trip, numpy+onnxruntime loading, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.flows.conftest import ONNX_RTOL

jax = pytest.importorskip("jax")


def test_spike_slabs_roundtrip_exactly():
    from surrogate_stats.flows._ops import NumpyOps
    from surrogate_stats.flows._spikes import detect_spikes, spike_post, spike_pre

    rng = np.random.default_rng(0)
    iso = np.where(rng.random(5000) < 0.6, 0.0, rng.exponential(1, 5000))
    x = np.c_[rng.normal(size=5000), iso, rng.integers(0, 4, 5000).astype(float)]
    sp = detect_spikes(x)
    assert sp["column"].count(1) == 1 and sp["value"][sp["column"].index(1)] == 0.0
    assert sp["column"].count(2) == 4  # a discrete variable: every value is a spike
    assert 0 not in sp["column"]
    t = spike_pre(NumpyOps(), x, rng.random(x.shape), sp, 3)
    assert np.unique(t[:, 1]).size > 4000  # continuous now
    back = spike_post(NumpyOps(), t, sp, 3)
    on_spike = (x[:, 1] == 0.0)
    np.testing.assert_array_equal(back[on_spike, 1], 0.0)  # spikes come back exactly
    np.testing.assert_array_equal(back[:, 2], x[:, 2])  # a discrete variable stays exact
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-12)


def test_correct_keeps_spike_values_and_shapes(tiny_correction, toy_split):
    xm, cm, _, _ = toy_split
    out = tiny_correction.correct(xm[:500], cm[:500])
    assert out.shape == (500, 5) and np.all(np.isfinite(out))
    iso = out[:, 4]
    assert np.any(iso == 0.0) and np.all(iso >= 0.0)
    again = tiny_correction.correct(xm[:500], cm[:500])
    np.testing.assert_array_equal(out, again)  # deterministic for a seed
    assert tiny_correction.flags == {"data": 1.0, "mc": 0.0}


def test_artifact_roundtrip_and_parity(tiny_correction, tiny_artifact, toy_split):
    from surrogate_stats import load_surrogate

    xm, cm, xd, cd = toy_split
    s = load_surrogate(tiny_artifact)
    assert s.metadata["kind"] == "correction_flow"
    assert s.metadata["flag"]["data"] == 1.0 and s.metadata["flag"]["mc"] == 0.0
    rng = np.random.default_rng(7)  # fresh events
    idx = rng.choice(len(xm), 400, replace=False)
    a = tiny_correction.correct(xm[idx], cm[idx], seed=3)
    b = s.correct(xm[idx], cm[idx], seed=3)
    spike_a, spike_b = a[:, 4] == 0, b[:, 4] == 0
    assert np.mean(spike_a != spike_b) < 0.01  # only events on a slab edge may flip
    same = spike_a == spike_b
    rel = np.abs(a[same] - b[same]) / np.maximum(np.abs(a[same]), 1.0)
    assert rel.max() <= ONNX_RTOL
    lp_j = tiny_correction.log_prob(xd[:50], cd[:50])
    lp_o = s.log_prob(xd[:50], cd[:50])
    assert np.max(np.abs(lp_j - lp_o) / np.maximum(np.abs(lp_j), 1)) <= ONNX_RTOL
    smp = s.sample(cd[:200], seed=1)
    assert smp.shape == (200, 5) and np.any(smp[:, 4] == 0.0)


def test_loading_needs_no_jax(tiny_artifact, toy_split):
    xm, cm, _, _ = toy_split
    np.save(tiny_artifact.parent / "x.npy", xm[:20])
    np.save(tiny_artifact.parent / "c.npy", cm[:20])
    heavy = ("jax", "jaxlib", "optax", "equinox", "scipy", "onnx", "torch", "sklearn")
    code = f"""
import builtins, sys
import numpy as np
real = builtins.__import__
def guarded(mod, *a, **k):
    if mod.split('.')[0] in {heavy!r}:
        raise ImportError('blocked: ' + mod)
    return real(mod, *a, **k)
builtins.__import__ = guarded
from surrogate_stats import load_surrogate
s = load_surrogate({str(tiny_artifact)!r})
d = {str(tiny_artifact.parent)!r}
out = s.correct(np.load(d + '/x.npy'), np.load(d + '/c.npy'))
print(out.shape, [m for m in {heavy!r} if m in sys.modules])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "(20, 5) []"


def test_tampered_artifact_is_refused(tiny_artifact, tmp_path):
    import shutil

    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import InvalidArtifact

    dst = tmp_path / "bad"
    shutil.copytree(tiny_artifact, dst)
    blob = bytearray((dst / "model.onnx").read_bytes())
    blob[-20] ^= 1
    (dst / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(InvalidArtifact):
        load_surrogate(dst)


def test_conditions_outside_training_range(tiny_correction, tiny_artifact, toy_split):
    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import ExtrapolationError, ExtrapolationWarning

    xm, cm, _, _ = toy_split
    c = cm[:100].copy()
    c[:10, 1] = 5.0  # eta far outside [-2.4, 2.4]
    with pytest.warns(ExtrapolationWarning, match=r"10\.00% of the events"):
        tiny_correction.correct(xm[:100], c)
    s = load_surrogate(tiny_artifact, on_extrapolation="raise")
    with pytest.raises(ExtrapolationError, match="eta"):
        s.correct(xm[:100], c)


def test_bad_inputs(toy_split, tiny_correction):
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.flows import CorrectionFlow

    xm, cm, xd, cd = toy_split
    key = jax.random.key(0)
    with pytest.raises(InvalidInput, match="mc has 5 columns but data has 4"):
        CorrectionFlow.fit(key, mc=xm, data=xd[:, :4], mc_conditions=cm, data_conditions=cd)
    with pytest.raises(InvalidInput, match="mc_conditions has 3 columns but data_conditions"):
        CorrectionFlow.fit(key, mc=xm, data=xd, mc_conditions=cm, data_conditions=cd[:, :2])
    bad = xm.copy()
    bad[3, 2] = np.nan
    bad[5, 2] = np.inf
    with pytest.raises(InvalidInput, match=r"2 NaN/inf values \(columns \['eresp'\]\)"):
        CorrectionFlow.fit(key, mc=bad, data=xd, mc_conditions=cm, data_conditions=cd,
                           variables=["r9", "sieie", "eresp", "s4", "iso"])
    flagged_m = np.c_[cm, np.zeros(len(cm))]
    flagged_d = np.c_[cd, np.ones(len(cd))]
    with pytest.raises(InvalidInput, match="looks like a data/MC flag"):
        CorrectionFlow.fit(key, mc=xm, data=xd, mc_conditions=flagged_m,
                           data_conditions=flagged_d)
    with pytest.raises(InvalidInput, match="looks like a data/MC flag"):
        CorrectionFlow.fit(key, mc=xm, data=xd, mc_conditions=cm, data_conditions=cd,
                           conditions=["pt", "eta", "is_data"])
    with pytest.raises(InvalidInput, match="positive sum"):
        CorrectionFlow.fit(key, mc=xm, data=xd, mc_conditions=cm, data_conditions=cd,
                           mc_weights=-np.ones(len(xm)))
    with pytest.raises(InvalidInput, match="must have 5 columns"):
        tiny_correction.correct(xm[:, :3], cm)
    with pytest.raises(InvalidInput, match="NaN"):
        tiny_correction.correct(bad, cm)
    with pytest.raises(InvalidInput, match="X has 10 events but C has 9"):
        tiny_correction.correct(xm[:10], cm[:9])


def test_toy_differences():
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.flows.toys import photon_toy

    xm, cm = photon_toy(20000, sample="mc", seed=0)
    xd, cd = photon_toy(20000, sample="data", seed=0)
    assert abs((xm[:, 4] == 0).mean() - (xd[:, 4] == 0).mean()) > 0.05
    assert abs(np.corrcoef(xm[:, 0], xm[:, 3])[0, 1] - np.corrcoef(xd[:, 0], xd[:, 3])[0, 1]) \
        > 0.05
    # same kinematics for data and MC (the differences are in the variables)
    for j, tol in enumerate((1.0, 0.05, 0.2)):
        assert abs(cm[:, j].mean() - cd[:, j].mean()) < tol
    with pytest.raises(InvalidInput):
        photon_toy(10, sample="both")
