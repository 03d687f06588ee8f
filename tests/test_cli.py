"""The command line as a user runs it: train, validate (against pyhf), inspect, and errors."""

import json
import subprocess
import sys

import pytest

from tests.conftest import SBOTTOM, THREE_L, TMU_TOL, UL_RTOL

CLI = [sys.executable, "-m", "surrogate_stats"]


def run(*args, ok=True, timeout=900):
    out = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                         timeout=timeout)
    if ok:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_train_writes_a_loadable_artifact(tmp_path):
    out = tmp_path / "sb"
    res = run("likelihood", "train", SBOTTOM["background"], "--patch", SBOTTOM["patch"],
              "--out", out, "--n-points", 24, "--quiet")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["artifact"] == str(out)
    assert summary["max_abs_dtmu_heldout_obs"] <= TMU_TOL
    assert (out / "model.onnx").is_file() and (out / "metadata.json").is_file()
    insp = run("inspect", out)
    assert "kind=profile_likelihood" in insp.stdout and "sbottom_1300_850_60" in insp.stdout


def test_validate_agrees_with_pyhf(trained_3l, tmp_path):
    """The issue's acceptance numbers, against fresh pyhf fits and pyhf's upper limits."""
    plot = tmp_path / "v.png"
    res = run("likelihood", "validate", trained_3l[0], "--workspace", THREE_L["background"],
              "--patchset", THREE_L["patchset"], "--patch", THREE_L["patch"],
              "--n-points", 6, "--plot", plot, "--quiet")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["max_abs_dtmu_obs"] <= TMU_TOL and m["max_abs_dtmu_exp"] <= TMU_TOL
    assert abs(m["ul_obs"] / m["ul_obs_pyhf"] - 1) <= UL_RTOL
    assert abs(m["ul_exp"][2] / m["ul_exp_pyhf"][2] - 1) <= UL_RTOL
    for a, b in zip(m["ul_exp"], m["ul_exp_pyhf"]):
        assert abs(a / b - 1) <= 2 * UL_RTOL
    assert m["speedup_single"] > 1000
    assert plot.stat().st_size > 10_000


@pytest.mark.parametrize("args,match", [
    (["likelihood", "train", THREE_L["background"], "--patchset", THREE_L["patchset"],
      "--patch", "NOPE", "--out", "x"], "available (3): ERJR_200p0_100p0, ERJR_350p0_150p0"),
    (["likelihood", "train", SBOTTOM["background"], "--patch", THREE_L["patchset"],
      "--out", "x"], "RFC-6902"),
    (["inspect", "/nonexistent/artifact"], "not an artifact directory"),
])
def test_errors_are_one_clear_line(args, match):
    res = run(*args, ok=False, timeout=120)
    assert res.returncode == 2
    assert match in res.stderr
    assert "Traceback" not in res.stderr
