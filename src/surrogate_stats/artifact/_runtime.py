"""onnxruntime sessions for artifacts, with checked graphs, inputs and outputs.

Session options (the same for every kind of artifact):

* ``intra_op_num_threads``: ``threads`` (default **1**). One thread per session keeps many
  Python threads or processes that each evaluate a surrogate from oversubscribing the cores of
  a shared machine, and gives results independent of the core count. ``threads=0`` selects
  onnxruntime's own default (one thread per physical core); with more than one thread the
  pool does not spin while idle.
* ``inter_op_num_threads = 1`` with sequential execution: graphs here are chains of small
  operators, parallel branches gain nothing.
* The model is given to onnxruntime as bytes after :func:`check_onnx_bytes` (no external
  data, standard domains only, no functions) and with ``session.load_model_format = ONNX``;
  no custom-operator library is ever registered.

A session is immutable once built and ``InferenceSession.run`` may be called from several
threads at once (onnxruntime documents ``Run`` as thread-safe).
"""

from __future__ import annotations

from surrogate_stats._optional import optional_import
from surrogate_stats.artifact._onnx_check import check_onnx_bytes
from surrogate_stats.errors import InvalidArtifact, InvalidInput

__all__ = ["make_session", "new_session", "DEFAULT_THREADS"]

DEFAULT_THREADS = 1
_DTYPES = {"float64": "tensor(double)", "float32": "tensor(float)"}


def _check_threads(threads) -> int:
    if threads is None:
        return DEFAULT_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1024:
        raise InvalidInput(f"threads must be None, 0 (onnxruntime's default) or a positive "
                           f"number of intra-op threads; got {threads!r}")
    return threads


def _io_spec(spec: dict, kind: str, file: str) -> list[tuple[str, str, list]]:
    entries = spec.get(kind)
    field = f"metadata.json graphs[{file}].{kind}"
    if not isinstance(entries, list):
        raise InvalidArtifact(f"{field} must be a list of {{name, dtype, shape}}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise InvalidArtifact(f"{field}[{i}] must be an object with name, dtype, shape")
        name, dtype, shape = e.get("name"), e.get("dtype"), e.get("shape")
        if not isinstance(name, str):
            raise InvalidArtifact(f"{field}[{i}].name must be a string; got {name!r}")
        if dtype not in _DTYPES:
            raise InvalidArtifact(f"{field}[{i}].dtype must be one of {sorted(_DTYPES)}; got "
                                  f"{str(dtype)[:40]!r}")
        if not isinstance(shape, list) or not all(
                (isinstance(d, int) and not isinstance(d, bool) and d >= 0)
                or isinstance(d, str) for d in shape):
            raise InvalidArtifact(f"{field}[{i}].shape must be a list of sizes (int >= 0) or "
                                  f"symbolic names (str); got {str(shape)[:80]}")
        out.append((name, dtype, shape))
    return out


def _dims_match(graph_shape, meta_shape) -> bool:
    if graph_shape is None or len(graph_shape) != len(meta_shape):
        return False
    for g, m in zip(graph_shape, meta_shape):
        if isinstance(m, int):
            if g != m:
                return False
        elif isinstance(g, int):  # metadata says dynamic, the graph fixes the size
            return False
    return True


def make_session(blob: bytes, spec: dict, *, threads: int | None = None):
    """An onnxruntime CPU session for ``blob``, checked against ``spec`` (from metadata.json).

    ``spec`` lists ``inputs`` and ``outputs`` as ``{"name", "dtype", "shape"}``; names, order,
    dtypes and shapes (an int must match exactly, a string stands for a dynamic dimension)
    must agree with the graph before anything is evaluated. ``threads``: onnxruntime intra-op
    threads (None: 1; 0: onnxruntime's default, one per physical core).

    Raises:
        InvalidArtifact: the graph is refused by :func:`check_onnx_bytes`, onnxruntime cannot
            load it, or its inputs/outputs differ from ``spec``; the message names the file.
        InvalidInput: ``threads`` is not a valid thread count.
    """
    n_threads = _check_threads(threads)
    if not isinstance(spec, dict):
        raise InvalidArtifact("metadata.json: a graph's entry must be an object with "
                              "file, sha256, inputs and outputs")
    file = spec.get("file") if isinstance(spec.get("file"), str) else "model.onnx"
    wanted = {kind: _io_spec(spec, kind, file) for kind in ("inputs", "outputs")}
    session = new_session(blob, threads=n_threads, file=file)
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        got = [(a.name, a.type, a.shape) for a in actual]
        want = wanted[kind]
        ok = len(got) == len(want) and all(
            g[0] == w[0] and g[1] == _DTYPES[w[1]] and _dims_match(g[2], w[2])
            for g, w in zip(got, want))
        if not ok:
            shown = [(n, t, s) for n, t, s in got]
            raise InvalidArtifact(
                f"{file}: the graph's {kind} {shown} do not match metadata.json "
                f"graphs[{file}].{kind} {[(n, _DTYPES[d], s) for n, d, s in want]} (name, "
                "type, shape; a string in the metadata is a dynamic dimension)")
    return session


def new_session(blob: bytes, *, threads: int | None = None, file: str = "model.onnx"):
    """An onnxruntime CPU session for ``blob`` with this module's options, no I/O checks.

    ``blob`` goes through :func:`check_onnx_bytes` first. Callers check the graph's inputs and
    outputs themselves (:func:`make_session` against metadata.json; the OLLL loader against
    the OLLL contract).

    Raises:
        InvalidArtifact: the graph is refused by :func:`check_onnx_bytes` or onnxruntime
            cannot load it; the message names ``file``.
        InvalidInput: ``threads`` is not a valid thread count.
    """
    n_threads = _check_threads(threads)
    check_onnx_bytes(blob, file=file)
    ort = optional_import("onnxruntime")
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = n_threads
    if n_threads != 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.load_model_format", "ONNX")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(bytes(blob), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InvalidArtifact(f"{file} could not be loaded by onnxruntime: "
                              f"{(str(exc).splitlines() or [''])[0][:300]}") from None
