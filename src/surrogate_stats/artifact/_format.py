"""One artifact format for every kind of surrogate: a directory with metadata.json + files.

``metadata.json`` has a versioned schema. It lists every ONNX graph by role (``graphs``) and
every array file (``arrays``, ``.npz`` read with ``allow_pickle=False``) with its SHA-256, and
carries the SHA-256 of its own canonical content (``content_sha256``, computed without that
field). Loading verifies all of them before anything is evaluated. Saving is atomic: files
are written and fsynced in a temporary sibling directory that is then renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from surrogate_stats.errors import InvalidArtifact

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "canonical_json",
    "content_sha256",
    "read_artifact",
    "write_artifact",
    "load_arrays",
]

SCHEMA = "surrogate_stats.artifact"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)
METADATA = "metadata.json"
MAX_METADATA_BYTES = 8 * 2**20
MAX_FILE_BYTES = 512 * 2**20
MAX_JSON_DEPTH = 32
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REQUIRED = ("schema", "schema_version", "kind", "graphs", "content_sha256")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, no NaN: the bytes the content hash is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False,
                      ensure_ascii=True).encode()


def content_sha256(metadata: dict) -> str:
    return hashlib.sha256(
        canonical_json({k: v for k, v in metadata.items() if k != "content_sha256"})
    ).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_artifact(directory: str | Path, metadata: dict, graphs: dict[str, bytes],
                   arrays: dict[str, dict[str, np.ndarray]] | None = None) -> Path:
    """Write an artifact atomically; returns its path.

    Args:
        directory: target directory; replaced if it exists (the old one stays intact until the
            new one is complete).
        metadata: kind-specific content; ``schema``, ``graphs``, ``arrays`` and the hashes
            are filled in here.
        graphs: role -> serialised ONNX bytes; the ``"model"`` role is written as
            ``model.onnx``, others as ``<role>.onnx``.
        arrays: role -> named float arrays, written as ``<role>.npz``.
    """
    directory = Path(directory)
    meta = dict(metadata)
    meta["schema"] = SCHEMA
    meta["schema_version"] = SCHEMA_VERSION
    files: dict[str, bytes] = {}
    graph_meta = {}
    for role, blob in graphs.items():
        name = "model.onnx" if role == "model" else f"{role}.onnx"
        files[name] = blob
        graph_meta[role] = {**meta.get("graphs", {}).get(role, {}), "file": name,
                            "sha256": _sha256(blob)}
    meta["graphs"] = graph_meta
    array_meta = {}
    for role, named in (arrays or {}).items():
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(v, dtype=np.float64) for k, v in named.items()})
        blob = buf.getvalue()
        name = f"{role}.npz"
        files[name] = blob
        array_meta[role] = {"file": name, "sha256": _sha256(blob), "names": sorted(named)}
    meta["arrays"] = array_meta
    meta.pop("content_sha256", None)
    meta["content_sha256"] = content_sha256(meta)
    files[METADATA] = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False).encode() + b"\n"

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        for name, blob in files.items():
            with open(tmp / name, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if directory.exists():
            old = directory.parent / f".{directory.name}.old-{os.getpid()}"
            os.rename(directory, old)
        try:
            os.rename(tmp, directory)
        except BaseException:
            if old is not None:  # put the previous artifact back
                os.rename(old, directory)
            raise
        _fsync_dir(directory.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _depth(obj: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(obj, dict):
        return max([_depth(v, limit, level + 1) for v in obj.values()] or [level])
    if isinstance(obj, list):
        return max([_depth(v, limit, level + 1) for v in obj] or [level])
    return level


def _read_file(directory: Path, name: Any, what: str) -> bytes:
    if not isinstance(name, str) or not _FILENAME.match(name):
        raise InvalidArtifact(f"{what}: file name {name!r} in {METADATA} is not a plain file "
                              "name inside the artifact directory")
    path = directory / name
    if path.is_symlink() or not path.is_file():
        raise InvalidArtifact(f"{what}: {str(path)!r} is missing (or is not a regular file)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidArtifact(f"{what}: {str(path)!r} is larger than {MAX_FILE_BYTES} bytes")
    return path.read_bytes()


def read_artifact(directory: str | Path) -> tuple[dict, dict[str, bytes], dict[str, dict]]:
    """Read and verify an artifact: schema, content hash, every file's hash.

    Returns:
        ``(metadata, graphs, arrays)``: graphs as role -> ONNX bytes, arrays as role ->
        {name: float64 array}.

    Raises:
        InvalidArtifact: anything is missing, malformed, of an unknown schema version, or
            does not match its recorded SHA-256.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidArtifact(f"{str(directory)!r} is not an artifact directory (expected a "
                              f"directory with {METADATA} and model.onnx)")
    meta_path = directory / METADATA
    if not meta_path.is_file():
        raise InvalidArtifact(f"{str(meta_path)!r} is missing: not a surrogate_stats artifact")
    if meta_path.stat().st_size > MAX_METADATA_BYTES:
        raise InvalidArtifact(f"{str(meta_path)!r} is larger than {MAX_METADATA_BYTES} bytes")
    try:
        meta = json.loads(meta_path.read_bytes(),
                          parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError) as exc:
        raise InvalidArtifact(f"{str(meta_path)!r} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InvalidArtifact(f"{str(meta_path)!r} must hold a JSON object")
    if _depth(meta, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidArtifact(f"{str(meta_path)!r} is nested deeper than {MAX_JSON_DEPTH}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise InvalidArtifact(f"{str(meta_path)!r} lacks the field(s) {missing}")
    if meta["schema"] != SCHEMA:
        raise InvalidArtifact(f"{str(meta_path)!r}: schema is {meta['schema']!r}, expected "
                              f"{SCHEMA!r}")
    if meta["schema_version"] not in SUPPORTED_VERSIONS:
        raise InvalidArtifact(
            f"{str(meta_path)!r}: unknown schema_version {meta['schema_version']!r}; this "
            f"version of surrogate_stats reads {list(SUPPORTED_VERSIONS)} (upgrade it to read "
            "newer artifacts)")
    if content_sha256(meta) != meta["content_sha256"]:
        raise InvalidArtifact(f"{str(meta_path)!r} was modified after it was written: its "
                              "content does not match content_sha256")
    if not isinstance(meta["graphs"], dict) or "model" not in meta["graphs"]:
        raise InvalidArtifact(f"{str(meta_path)!r}: 'graphs' must list the 'model' graph")
    graphs, arrays = {}, {}
    for section, out in (("graphs", graphs), ("arrays", arrays)):
        entries = meta.get(section, {})
        if not isinstance(entries, dict):
            raise InvalidArtifact(f"{str(meta_path)!r}: '{section}' must be an object")
        for role, entry in entries.items():
            if not isinstance(entry, dict) or "file" not in entry or "sha256" not in entry:
                raise InvalidArtifact(f"{str(meta_path)!r}: {section}.{role} needs 'file' and "
                                      "'sha256'")
            blob = _read_file(directory, entry["file"], f"{section}.{role}")
            if _sha256(blob) != entry["sha256"]:
                raise InvalidArtifact(f"{str(directory / entry['file'])!r} does not match its "
                                      f"SHA-256 in {METADATA}: the file is corrupt or was "
                                      "modified")
            if section == "graphs":
                out[role] = blob
            else:
                out[role] = _load_npz(blob, directory / entry["file"])
    return meta, graphs, arrays


def _load_npz(blob: bytes, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            out = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except Exception as exc:
        raise InvalidArtifact(f"{str(path)!r} is not a readable .npz of arrays: {exc}") from None
    for k, v in out.items():
        if not np.all(np.isfinite(v)):
            raise InvalidArtifact(f"{str(path)!r}: array {k!r} holds NaN or inf")
    return out


def load_arrays(arrays: dict, role: str, names: list[str]) -> dict[str, np.ndarray]:
    """Check that array role ``role`` has every name in ``names``."""
    if role not in arrays:
        raise InvalidArtifact(f"the artifact has no {role!r} arrays")
    absent = [n for n in names if n not in arrays[role]]
    if absent:
        raise InvalidArtifact(f"{role}.npz lacks the arrays {absent}")
    return arrays[role]


def finite_number(meta: dict, *path: str) -> float:
    """``meta[path...]`` as a finite float, or :class:`InvalidArtifact` naming the field."""
    obj: Any = meta
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            raise InvalidArtifact(f"metadata.json lacks the field {'.'.join(path)}")
        obj = obj[key]
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not math.isfinite(obj):
        raise InvalidArtifact(f"metadata.json field {'.'.join(path)} must be a finite number; "
                              f"got {obj!r}")
    return float(obj)
