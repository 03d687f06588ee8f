"""Importing is light, and evaluating a published surrogate needs only numpy + onnxruntime."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "pyhf", "optax", "equinox", "scipy", "onnx", "torch", "matplotlib")


def _run(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_is_light():
    heavy = _run("import sys, surrogate_stats, surrogate_stats.likelihood\n"
                 f"print([m for m in {HEAVY + ('onnxruntime', 'dask', 'distributed')!r} "
                 "if m in sys.modules])")
    assert heavy.strip() == "[]"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "onnx_models").iterdir()
                                        if (p / "metadata.json").exists()))
def test_evaluating_a_published_surrogate_needs_no_jax(name):
    code = f"""
import sys
import builtins
real_import = builtins.__import__
def guarded(mod, *a, **k):
    if mod.split('.')[0] in {HEAVY!r}:
        raise ImportError('blocked: ' + mod)
    return real_import(mod, *a, **k)
builtins.__import__ = guarded
from surrogate_stats import load_surrogate
s = load_surrogate({str(ROOT / 'onnx_models' / name)!r})
print(s.nll(0.5), s.tmu([0.1, 0.2], expected=True), s.upper_limit(), s.cls(0.7))
print([m for m in {HEAVY!r} if m in sys.modules])
"""
    assert _run(code).strip().splitlines()[-1] == "[]"
