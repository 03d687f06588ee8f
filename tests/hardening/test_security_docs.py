"""The hand-verification commands of docs/security.md work: they accept a published artifact
and reject a tampered one."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.hardening.conftest import PUBLISHED, ROOT

DOC = ROOT / "docs" / "security.md"


def _block() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- tested: [^\n]*-->\n```bash\n(.*?)```", text, re.S)
    assert m, "the tested bash block is missing from docs/security.md"
    return m.group(1)


def _run(directory):
    if shutil.which("sha256sum") is None or shutil.which("bash") is None:
        pytest.skip("needs bash and coreutils' sha256sum")
    script = _block().replace("python3 ", f"{sys.executable} ")
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=directory,
                          capture_output=True, text=True, timeout=60)


def test_hand_verification_accepts_a_published_artifact(tmp_path):
    shutil.copytree(PUBLISHED, tmp_path / "a")
    out = _run(tmp_path / "a")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["model.onnx: OK", "weights.npz: OK", "content_sha256 OK"]


def test_hand_verification_rejects_a_changed_file(tmp_path):
    shutil.copytree(PUBLISHED, tmp_path / "a")
    blob = bytearray((tmp_path / "a" / "weights.npz").read_bytes())
    blob[-100] ^= 1
    (tmp_path / "a" / "weights.npz").write_bytes(bytes(blob))
    out = _run(tmp_path / "a")
    assert out.returncode != 0 and "weights.npz: FAILED" in out.stdout


def test_hand_verification_rejects_edited_metadata(tmp_path):
    shutil.copytree(PUBLISHED, tmp_path / "a")
    path = tmp_path / "a" / "metadata.json"
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 1'))
    out = _run(tmp_path / "a")
    assert out.returncode != 0 and "content_sha256 MISMATCH" in out.stdout
