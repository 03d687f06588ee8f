"""Surrogate training, accuracy records, ONNX export parity and the numpy+onnxruntime loader."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from surrogate_stats import load_surrogate
from surrogate_stats.errors import InvalidArtifact, InvalidInput
from surrogate_stats.matrix_element import (
    SurrogateConfig,
    accuracy,
    get_process,
    rambo,
    sample_points,
    train,
)
from surrogate_stats.matrix_element._features import feature_spec
from surrogate_stats.train import TrainConfig
from tests.matrix_element.conftest import PARITY_RTOL

SMALL = SurrogateConfig(hidden=(32, 32), train=TrainConfig(
    learning_rate=3e-3, steps=1500, chunk=250, patience=4, polish_steps=0, batch_size=256))


@pytest.fixture(scope="module")
def gg_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("me") / "gg_gg"
    proc = get_process("gg_gg", 1000.0)
    sur, meta = train(proc, out, seed=0, n_train=3000, n_test=1000, config=SMALL,
                      progress=False)
    return out, proc, sur, meta


def test_training_records_accuracy(gg_artifact):
    out, proc, sur, meta = gg_artifact
    acc = meta["accuracy"]
    assert acc["n_test"] == 1000
    # the antenna factor makes gg -> gg easy: a small network is well below 1 %
    assert acc["median_abs_rel_err"] < 0.01
    # the record is the truth: recompute it on the stored test seed
    pt = sample_points(acc["seed"], proc, 1000)
    again = accuracy(sur(pt), proc.matrix_element(pt))
    assert again["median_abs_rel_err"] == pytest.approx(acc["median_abs_rel_err"], rel=1e-6)
    assert json.loads((out / "metadata.json").read_text())["kind"] == "matrix_element"


@pytest.mark.parametrize("factor", ["none", "eikonal", "antenna", "mhv"])
def test_features_numpy_equal_jax(factor):
    import jax

    spec = feature_spec("gg_ggg", 5, factor)
    p = rambo(1, 64, 3, 1000.0)
    with jax.enable_x64(True):
        li = np.asarray(spec.invariants_jax(jax.numpy.asarray(p)))
        lf = np.asarray(spec.log_factor_jax(jax.numpy.asarray(li)))
    np.testing.assert_allclose(li, spec.invariants_np(p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lf, spec.log_factor_np(li), rtol=1e-12, atol=1e-12)


def test_mhv_factor_is_parke_taylor_for_five_gluons():
    """For 5 gluons the MHV factor is exact up to a constant: ln(|M|^2 / F) is flat."""
    spec = feature_spec("gg_ggg", 5, "mhv")
    proc = get_process("gg_ggg", 1000.0)
    p = rambo(2, 200, 3, 1000.0)
    r = np.log(proc.matrix_element(p)) - spec.log_factor_np(spec.invariants_np(p))
    assert np.ptp(r) < 1e-9


def test_onnx_parity_on_fresh_random_inputs(gg_artifact):
    """The ONNX graph equals the JAX and numpy forward passes (float64) on new points."""
    import jax

    from surrogate_stats.artifact import read_artifact
    from surrogate_stats.matrix_element._features import feature_spec as fs
    from surrogate_stats.matrix_element._surrogate import MESurrogateModel

    out, proc, sur, meta = gg_artifact
    _, _, arrays = read_artifact(out)
    w = arrays["weights"]
    n_layers = sum(1 for k in w if k.startswith("W"))
    model = MESurrogateModel(fs("gg_gg", 4, meta["features"]["factor"]),
                             [(w[f"W{i}"], w[f"b{i}"]) for i in range(n_layers)],
                             w["x_mean"], w["x_std"], *w["y"])
    p = rambo(np.random.default_rng(), 777, 2, 1000.0)  # fresh, unseeded, odd batch size
    onnx_log = sur.log_matrix_element(p)
    with jax.enable_x64(True):
        jax_log = np.asarray(model.log_me_jax(jax.numpy.asarray(p)))
    np.testing.assert_allclose(onnx_log, jax_log, rtol=PARITY_RTOL, atol=PARITY_RTOL)
    np.testing.assert_allclose(onnx_log, model.log_me_np(p), rtol=PARITY_RTOL, atol=PARITY_RTOL)
    np.testing.assert_allclose(sur(p), np.exp(onnx_log), rtol=PARITY_RTOL)
    assert sur(p[:1]).shape == (1,)


def test_loader_needs_no_jax(gg_artifact):
    out = gg_artifact[0]
    code = f"""
import builtins, sys
real = builtins.__import__
def guard(m, *a, **k):
    if m.split('.')[0] in ('jax', 'jaxlib', 'optax', 'onnx', 'scipy', 'torch'):
        raise ImportError('blocked ' + m)
    return real(m, *a, **k)
builtins.__import__ = guard
from surrogate_stats import load_surrogate
from surrogate_stats.matrix_element import rambo
s = load_surrogate({str(out)!r})
print(s(rambo(1, 5, 2, 1000.0)).shape)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "(5,)"


def test_tampered_artifact_is_rejected(gg_artifact, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(gg_artifact[0], dst)
    meta = json.loads((dst / "metadata.json").read_text())
    meta["self_check"]["log_me2"][0] += 1.0
    from surrogate_stats.artifact import content_sha256

    meta["content_sha256"] = content_sha256(meta)
    (dst / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidArtifact, match="self-check"):
        load_surrogate(dst)


def test_surrogate_rejects_bad_momenta(gg_artifact):
    sur = gg_artifact[2]
    with pytest.raises(InvalidInput, match="shape"):
        sur(np.zeros((3, 5, 4)))
    p = rambo(0, 3, 2, 1000.0)
    p[0, 2, 1] += 1.0
    with pytest.raises(InvalidInput, match="not conserved"):
        sur(p)


def test_training_bad_input():
    from surrogate_stats.matrix_element import fit_surrogate

    proc = get_process("gg_gg", 1000.0)
    p = sample_points(0, proc, 50)
    me = proc.matrix_element(p)
    me[3] = -1.0
    import jax

    with pytest.raises(InvalidInput, match="> 0"):
        fit_surrogate(jax.random.key(0), proc, p, me, config=SMALL, progress=False)
    with pytest.raises(InvalidInput, match="n_train"):
        train(proc, "/nonexistent/x", n_train=10)
    with pytest.raises(InvalidInput, match="factor"):
        feature_spec("gg_gg", 4, "dipole")


def test_train_config_batch_size_is_checked():
    with pytest.raises(InvalidInput, match="batch_size"):
        TrainConfig(batch_size=0)
    assert TrainConfig().batch_size is None  # full batch stays the default
