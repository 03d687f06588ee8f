"""Importing the unfolding package (and its CLI module) stays light."""

import subprocess
import sys

HEAVY = ("jax", "jaxlib", "optax", "scipy", "matplotlib", "pandas", "pyarrow", "uproot",
         "onnxruntime", "pyunfold", "torch")


def test_import_unfold_is_light():
    code = ("import sys, surrogate_stats.unfold, surrogate_stats.cli._unfold\n"
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
