"""Why do two artifacts differ? Field-by-field comparison of two verified artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from surrogate_stats.artifact._format import read_artifact

__all__ = ["diff_artifacts"]

# metadata fields that record *how* an artifact was made rather than what it computes
_TIMING = ("seconds", "label_seconds", "train_seconds")
_DERIVED = ("content_sha256",)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(obj, list) and obj and all(isinstance(v, (dict, list)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _cause(path: str) -> str:
    last = path.rsplit(".", 1)[-1]
    if last in _TIMING:
        return "timing"
    if path.startswith("provenance.versions"):
        return "library versions"
    if path in ("provenance.seed",) or last == "seed":
        return "seed"
    if path.startswith("provenance.") and ("sha256" in last or last in ("patch_name",
                                                                         "workspace_file")):
        return "inputs"
    if "config" in path:
        return "configuration"
    if path.endswith(".sha256") or path.startswith("arrays.") or path in _DERIVED:
        return "file hashes"
    return "results"


def diff_artifacts(a: str | Path, b: str | Path) -> dict:
    """Compare two artifacts (both verified with :func:`read_artifact` first).

    Returns:
        ``{"identical", "files", "metadata", "causes"}``: ``files`` maps each file whose
        bytes differ to both SHA-256; ``metadata`` maps each differing field (dotted path)
        to ``{"a", "b"}``; ``causes`` groups the differing fields: ``inputs`` (workspace /
        patch hashes), ``seed``, ``configuration``, ``library versions``, ``timing``,
        ``results`` (numbers the artifact computes or reports), ``file hashes``. Timing-only
        differences mean the same inputs were reproduced.
    """
    meta_a, graphs_a, arrays_a = read_artifact(a)
    meta_b, graphs_b, arrays_b = read_artifact(b)
    files = {}
    for section in ("graphs", "arrays"):
        ea, eb = meta_a.get(section, {}), meta_b.get(section, {})
        for role in sorted(set(ea) | set(eb)):
            sa = ea.get(role, {}).get("sha256")
            sb = eb.get(role, {}).get("sha256")
            if sa != sb:
                name = (ea.get(role) or eb.get(role))["file"]
                files[name] = {"a": sa, "b": sb}
    fa, fb = _flatten(meta_a), _flatten(meta_b)
    missing = object()
    fields = {}
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va != vb:
            fields[key] = {"a": None if va is missing else va,
                           "b": None if vb is missing else vb}
    causes: dict[str, list[str]] = {}
    for key in fields:
        causes.setdefault(_cause(key), []).append(key)
    return {"identical": not files and not fields, "files": files, "metadata": fields,
            "causes": causes}
