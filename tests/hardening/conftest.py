"""Fixtures for the hardening tests: private copies of a published artifact, and helpers that
rewrite an artifact with *consistent* hashes (as an attacker can), so that the structural
checks themselves are exercised and not only the SHA-256 comparison."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from surrogate_stats.artifact import content_sha256

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "onnx_models" / "3L-eRJR_ERJR_500p0_0p0"


@pytest.fixture()
def published(tmp_path):
    """A private copy of a published likelihood surrogate, at ``tmp_path / "art"``."""
    dst = tmp_path / "art"
    shutil.copytree(PUBLISHED, dst)
    return dst


def resign(directory: Path, *, files: dict[str, bytes] | None = None, edit=None,
           meta: dict | None = None) -> dict:
    """Replace files and/or edit metadata, then recompute every SHA-256 like a writer would."""
    directory = Path(directory)
    if meta is None:
        meta = json.loads((directory / "metadata.json").read_text())
    for name, blob in (files or {}).items():
        (directory / name).write_bytes(blob)
    if edit is not None:
        edit(meta)
    for section in ("graphs", "arrays"):
        for entry in meta.get(section, {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                path = directory / entry["file"]
                if path.is_file() and not path.is_symlink():
                    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta["content_sha256"] = content_sha256(meta)
    (directory / "metadata.json").write_text(json.dumps(meta))
    return meta
