"""``load_surrogate``: read, verify and dispatch on the artifact's ``kind``."""

from __future__ import annotations

import importlib
from pathlib import Path

from surrogate_stats.artifact._format import read_artifact
from surrogate_stats.errors import InvalidArtifact, InvalidInput

__all__ = ["load_surrogate"]

# kind -> "module:function(meta, graphs, arrays, **options)"; imported only when used
LOADERS = {
    "profile_likelihood": "surrogate_stats.likelihood._export:from_artifact",
    "correction_flow": "surrogate_stats.flows._artifact:from_artifact",
}


def load_surrogate(path: str | Path, *, on_extrapolation: str = "warn",
                   threads: int | None = None):
    """Load a published surrogate; needs only numpy and onnxruntime.

    Every file's SHA-256 and the metadata's own checksum are verified, the ONNX graph's inputs
    and outputs are checked against the metadata, and the stored self-check pairs are
    re-evaluated (with the ONNX graph and the fast numpy path) before the object is returned.

    Args:
        path: the artifact directory (with ``metadata.json`` and ``model.onnx``).
        on_extrapolation: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` for inputs outside
            the trained domain.
        threads: onnxruntime intra-op threads (None: its default).

    Raises:
        InvalidArtifact: the artifact is missing, corrupt, tampered with or of an unknown
            schema version or kind.
    """
    if on_extrapolation not in ("warn", "raise", "ignore"):
        raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                           f"{on_extrapolation!r}")
    meta, graphs, arrays = read_artifact(path)
    kind = meta["kind"]
    if kind not in LOADERS:
        raise InvalidArtifact(f"unknown artifact kind {kind!r}; this version of "
                              f"surrogate_stats knows {sorted(LOADERS)}")
    module, func = LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(module), func)
    return loader(meta, graphs, arrays, on_extrapolation=on_extrapolation, threads=threads)
