"""Shared fixtures: bundled workspaces, one trained 3L surrogate per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

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
