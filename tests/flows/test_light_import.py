"""Importing the flows package (and its CLI module and toy) imports nothing heavy."""

import subprocess
import sys


def test_flows_import_is_light():
    heavy = ("jax", "jaxlib", "optax", "equinox", "onnx", "onnxruntime", "scipy", "sklearn",
             "pandas", "uproot", "torch", "matplotlib")
    code = ("import sys, surrogate_stats.flows, surrogate_stats.flows.toys, "
            "surrogate_stats.cli._flow, surrogate_stats.cli._main\n"
            "surrogate_stats.cli._main._parser()\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
