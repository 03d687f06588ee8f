"""Shared fixtures: bundled workspaces, one trained 3L surrogate per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One persistent XLA compilation cache per test session, shared by this process and every
# process it starts (CLI subprocesses, executor and Dask workers, notebooks): they compile the
# same programs again and again, and on 2 cores compiling is a large part of the run. The cache
# starts empty in every session and is removed at its end, so no result can come from a stale
# build; set JAX_COMPILATION_CACHE_DIR yourself to keep (or to avoid) it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="surrogate-stats-test-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
else:
    _JAX_CACHE = None


def pytest_sessionfinish(session, exitstatus):
    if _JAX_CACHE is not None:  # None in xdist workers too: they inherit the variable
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "workspaces"
THREE_L = dict(background=DATA / "3L-eRJR" / "BkgOnly.json",
               patchset=DATA / "3L-eRJR" / "patchset.json", patch="ERJR_500p0_0p0")
SBOTTOM = dict(background=DATA / "sbottom-RegionA" / "BkgOnly.json",
               patch=DATA / "sbottom-RegionA" / "patch.sbottom_1300_850_60.json")

# tolerances, named once
TMU_TOL = 0.05  # |Delta(-2 ln lambda)| where the exact value is <= 9 (the requirement)
UL_RTOL = 0.02  # upper limits relative to pyhf
PARITY_RTOL = 1e-9  # numpy fast path vs ONNX graph, both float64


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def three_l_workspace():
    from surrogate_stats.likelihood import load_signal_workspace

    return load_signal_workspace(**THREE_L)


@pytest.fixture(scope="session")
def trained_3l(tmp_path_factory, three_l_workspace):
    """Train the default surrogate on the 3L point once; returns (artifact_dir, metadata)."""
    from surrogate_stats.likelihood import train

    out = tmp_path_factory.mktemp("artifacts") / "3l"
    _, meta = train(three_l_workspace, out, seed=0, progress=False)
    return out, meta


@pytest.fixture()
def surrogate_3l(trained_3l):
    from surrogate_stats import load_surrogate

    return load_surrogate(trained_3l[0])


@pytest.fixture()
def artifact_copy(trained_3l, tmp_path):
    """A private copy of the trained artifact that a test may damage."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(trained_3l[0], dst)
    return dst
