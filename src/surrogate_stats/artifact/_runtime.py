"""onnxruntime sessions for artifacts, with checked inputs and outputs."""

from __future__ import annotations

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidArtifact

__all__ = ["make_session"]

_DTYPES = {"float64": "tensor(double)", "float32": "tensor(float)"}


def make_session(blob: bytes, spec: dict, *, threads: int | None = None):
    """An onnxruntime CPU session for ``blob``, checked against ``spec`` (from metadata.json).

    ``spec`` lists ``inputs`` and ``outputs`` as ``{"name", "dtype", "shape"}``. ``threads``
    sets onnxruntime's intra-op threads (None: onnxruntime's default, one per core); inter-op
    parallelism is off, so calls from several Python threads do not oversubscribe the cores.
    """
    ort = optional_import("onnxruntime")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidArtifact(f"model.onnx could not be loaded by onnxruntime: "
                              f"{str(exc).splitlines()[0][:300]}") from None
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        expected = spec.get(kind)
        if not isinstance(expected, list):
            raise InvalidArtifact(f"metadata.json graphs.model.{kind} must be a list")
        got = [(a.name, a.type) for a in actual]
        want = [(e.get("name"), _DTYPES.get(e.get("dtype"))) for e in expected
                if isinstance(e, dict)]
        if got != want:
            raise InvalidArtifact(f"model.onnx {kind} {got} do not match metadata.json {want}")
    return session
