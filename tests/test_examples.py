"""The example a reinterpretation author copies runs on every published artifact."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = sorted(p for p in (ROOT / "onnx_models").iterdir() if (p / "metadata.json").exists())


@pytest.mark.parametrize("artifact", MODELS, ids=[p.name for p in MODELS])
def test_reinterpretation_example(artifact):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "reinterpretation.py"),
                          str(artifact)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "95% CL upper limit on mu" in out.stdout and "excluded" in out.stdout


@pytest.mark.parametrize("artifact", MODELS, ids=[p.name for p in MODELS])
def test_published_artifacts_carry_their_validation(artifact):
    """Each published artifact meets the issue's thresholds in its recorded pyhf validation."""
    from surrogate_stats import load_surrogate

    v = load_surrogate(artifact).metadata["validation"]
    assert v["max_abs_dtmu_obs"] <= 0.05 and v["max_abs_dtmu_exp"] <= 0.05
    assert abs(v["ul_obs_rel_diff"]) <= 0.02 and abs(v["ul_exp_rel_diff"][2]) <= 0.02


def test_notebook_runs_and_agrees_with_pyhf(tmp_path):
    """Execute the notebook's code cells in order (no Jupyter needed) on this machine."""
    import json
    import os

    nb = json.loads((ROOT / "examples" / "replace_pyhf_in_reinterpretation.ipynb").read_text())
    code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    script = tmp_path / "nb.py"
    script.write_text(code)
    # a checkout-like folder, so that the figure the notebook saves does not land in this one
    work = tmp_path / "checkout"
    (work / "docs" / "img").mkdir(parents=True)
    for name in ("onnx_models", "data"):
        (work / name).symlink_to(ROOT / name, target_is_directory=True)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=work, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr[-3000:]
    worst = float(out.stdout.split("on the 8 points:")[1].split()[0])
    assert worst < 0.005
    assert (work / "docs" / "img" / "cls_agreement_sbottom.png").stat().st_size > 10_000
