"""Reading pyhf workspaces and signal patches, with errors that say what to fix."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidWorkspace, UnknownPatch

__all__ = ["SignalWorkspace", "load_json", "load_signal_workspace", "sha256_file"]


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_json(path: str | Path, what: str) -> Any:
    """Load a JSON file, turning I/O and syntax problems into :class:`InvalidWorkspace`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidWorkspace(f"{what} file {str(path)!r} does not exist or is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise InvalidWorkspace(
            f"{what} file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise InvalidWorkspace(f"{what} file {str(path)!r} could not be read: {exc}") from None
    except (ValueError, RecursionError) as exc:  # numbers too long, nesting too deep
        raise InvalidWorkspace(f"{what} file {str(path)!r} is not usable JSON: "
                               f"{str(exc)[:200]}") from None


def _workspace(pyhf, spec: Any, what: str, path: str | Path):
    """``pyhf.Workspace(spec)``, with every failure an :class:`InvalidWorkspace`."""
    if not isinstance(spec, dict):
        raise InvalidWorkspace(f"{what} {str(path)!r} must be a JSON object (a pyhf workspace); "
                               f"got {type(spec).__name__}")
    try:
        return pyhf.Workspace(spec)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(exc, what, path) from None
    except Exception as exc:  # pyhf raises bare exceptions for some malformed specs
        raise InvalidWorkspace(f"{what} {str(path)!r} is not a valid pyhf workspace: "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _schema_error(exc: Exception, what: str, path: str | Path) -> InvalidWorkspace:
    json_path = getattr(exc, "path", "") or "<root>"
    parent = getattr(exc, "parent", None)
    reason = getattr(parent, "message", None) or str(exc).splitlines()[0]
    return InvalidWorkspace(
        f"{what} {str(path)!r} fails pyhf's schema at JSON path '{json_path}': {reason}"
    )


@dataclass(frozen=True)
class SignalWorkspace:
    """A background-only workspace with one signal patch applied.

    Attributes:
        spec: the patched pyhf workspace specification (a JSON-able dict).
        poi: name of the parameter of interest.
        provenance: SHA-256 of the inputs, the patch name and the analysis name if present.
    """

    spec: dict
    poi: str
    provenance: dict = field(default_factory=dict)

    def poi_bounds(self) -> tuple[float, float]:
        """POI bounds as the workspace's measurement sets them (pyhf's defaults otherwise)."""
        model = self.model()
        lo, hi = model.config.suggested_bounds()[model.config.poi_index]
        return float(lo), float(hi)

    def with_poi_bounds(self, lo: float, hi: float) -> SignalWorkspace:
        """A copy whose measurement sets the POI bounds to ``(lo, hi)``."""
        spec = copy.deepcopy(self.spec)
        for meas in spec["measurements"]:
            params = meas["config"].setdefault("parameters", [])
            for p in params:
                if p["name"] == self.poi:
                    p["bounds"] = [[float(lo), float(hi)]]
                    break
            else:
                params.append({"name": self.poi, "bounds": [[float(lo), float(hi)]]})
        return SignalWorkspace(spec=spec, poi=self.poi, provenance=self.provenance)

    def model(self):
        """The pyhf model (numpy backend must be active; see :func:`use_numpy_backend`)."""
        pyhf = optional_import("pyhf")
        ws = pyhf.Workspace(self.spec)
        return ws.model()

    def observed_data(self, model=None):
        pyhf = optional_import("pyhf")
        model = model or self.model()
        return pyhf.Workspace(self.spec).data(model)


def _apply_patchset(spec: dict, patchset_path: Path, patch_name: str) -> tuple[dict, dict]:
    pyhf = optional_import("pyhf")
    raw = load_json(patchset_path, "patchset")
    try:
        patchset = pyhf.PatchSet(raw)
    except pyhf.exceptions.InvalidSpecification as exc:
        raise _schema_error(exc, "patchset", patchset_path) from None
    except Exception as exc:  # pyhf raises bare exceptions for some malformed sets
        raise InvalidWorkspace(f"patchset {str(patchset_path)!r} is invalid: {exc}") from None
    names = [p.name for p in patchset.patches]
    if patch_name not in names:
        shown = ", ".join(names[:200]) + (" ..." if len(names) > 200 else "")
        raise UnknownPatch(
            f"patch {patch_name!r} is not in patchset {str(patchset_path)!r}; "
            f"available ({len(names)}): {shown}"
        )
    try:
        patched = patchset[patch_name].apply(spec)
    except Exception as exc:
        raise InvalidWorkspace(
            f"patch {patch_name!r} of {str(patchset_path)!r} does not apply to the workspace: {exc}"
        ) from None
    analysis = (raw.get("metadata") or {}).get("analysis_id")
    digests = patchset[patch_name].metadata.get("digests", {})
    return patched, {"patchset_sha256": sha256_file(patchset_path), "patch_name": patch_name,
                     "analysis": analysis, "patchset_digests": digests}


def _apply_bare_patch(spec: dict, patch_path: Path) -> tuple[dict, dict]:
    jsonpatch = optional_import("jsonpatch")
    ops = load_json(patch_path, "patch")
    if not isinstance(ops, list) or not all(isinstance(o, dict) and "op" in o and "path" in o
                                             for o in ops):
        raise InvalidWorkspace(
            f"patch {str(patch_path)!r} must be an RFC-6902 jsonpatch: a JSON list of objects "
            "with 'op' and 'path' (for a pyhf PatchSet file use --patchset FILE --patch NAME)"
        )
    try:
        patched = jsonpatch.JsonPatch(ops).apply(spec)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError,
            ValueError, KeyError, IndexError, AttributeError) as exc:
        raise InvalidWorkspace(
            f"patch {str(patch_path)!r} does not apply to the workspace: {exc}"
        ) from None
    return patched, {"patch_sha256": sha256_file(patch_path), "patch_name": patch_path.stem}


def load_signal_workspace(
    background: str | Path,
    *,
    patchset: str | Path | None = None,
    patch: str | Path | None = None,
) -> SignalWorkspace:
    """Load a background-only workspace and apply one signal patch.

    Args:
        background: path of the background-only workspace JSON (``BkgOnly.json``).
        patchset: path of a pyhf PatchSet file; ``patch`` is then the patch *name*.
        patch: with ``patchset``, the patch name; without it, the path of a bare jsonpatch file.

    Raises:
        InvalidWorkspace: a file is missing, is not JSON, or fails pyhf's schema (the message
            names the JSON path).
        UnknownPatch: the patch name is not in the patchset (the message lists the names).
    """
    pyhf = optional_import("pyhf")
    background = Path(background)
    spec = load_json(background, "background-only workspace")
    _workspace(pyhf, spec, "workspace", background)
    prov: dict[str, Any] = {"workspace_sha256": sha256_file(background),
                            "workspace_file": background.name}
    if patch is None:
        raise InvalidWorkspace("a signal patch is needed: give --patch PATCH.json, or "
                               "--patchset PATCHSET.json --patch NAME")
    if patchset is not None:
        patched, extra = _apply_patchset(spec, Path(patchset), str(patch))
    else:
        patched, extra = _apply_bare_patch(spec, Path(patch))
    prov.update(extra)
    ws = _workspace(pyhf, patched, "patched workspace", background)
    try:
        poi = ws.get_measurement()["config"]["poi"]
        ws.model()
    except Exception as exc:
        raise InvalidWorkspace(f"patched workspace does not build a pyhf model: {exc}") from None
    return SignalWorkspace(spec=patched, poi=poi, provenance=prov)
