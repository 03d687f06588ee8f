"""The artifact format shared by every kind of surrogate (ONNX graphs + metadata.json)."""

from surrogate_stats.artifact._diff import diff_artifacts
from surrogate_stats.artifact._format import (
    SCHEMA,
    SCHEMA_VERSION,
    canonical_json,
    content_sha256,
    read_artifact,
    recover_artifact,
    write_artifact,
)
from surrogate_stats.artifact._load import load_surrogate

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "canonical_json",
    "content_sha256",
    "diff_artifacts",
    "load_surrogate",
    "read_artifact",
    "recover_artifact",
    "write_artifact",
]
