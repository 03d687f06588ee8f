"""The unfolding notebook runs at its small size (code cells executed in order)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_unfolding_notebook_runs(tmp_path):
    nb = json.loads((ROOT / "examples" / "unfolding_comparison.ipynb").read_text())
    code = "\n\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    script = tmp_path / "nb.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| omnifold | x |" in out.stdout and "| ibu | zg |" in out.stdout
    assert "| flow | x |" in out.stdout and "per-event 68% intervals" in out.stdout
    assert len(list((tmp_path / "unfold_plots").glob("*.png"))) == 4
    assert (tmp_path / "gaussian_unfolder" / "model.onnx").is_file()
