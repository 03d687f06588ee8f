"""Structural checks of an untrusted ONNX graph, without the ``onnx`` package.

A published artifact is untrusted input. Before its bytes reach onnxruntime, the serialised
``ModelProto`` is walked with a small protobuf wire-format reader (numpy + onnxruntime are
the only runtime dependencies of a loader, so ``onnx`` cannot be assumed) and refused if:

* any tensor anywhere (initializers, sparse initializers, node attributes, sub-graphs) stores
  its data externally (``data_location = EXTERNAL`` or an ``external_data`` entry): the writer
  of this library embeds every tensor, and onnxruntime resolves an external location given
  with a model passed as bytes relative to the *current working directory* (verified with
  onnxruntime 1.32 and graph optimisations off), i.e. outside the artifact;
* an operator, an opset import or a node uses a domain other than the standard ONNX one
  (``""`` or ``"ai.onnx"``): custom and contrib domains (``com.microsoft``, ``ai.onnx.ml``,
  user domains) are never written by this library;
* the model defines local functions (``ModelProto.functions``) or training information, or
  embeds onnxruntime session options (``metadata_props['ort_config']``, honoured by
  onnxruntime when ``ORT_LOAD_CONFIG_FROM_MODEL=1`` is set);
* the protobuf is malformed (truncated, wrong wire types, groups, nesting deeper than
  ``MAX_GRAPH_DEPTH`` sub-graphs).

Every refusal is an :class:`~surrogate_stats.errors.InvalidArtifact` naming the file and the
protobuf field (``graph.node[3](op_type='Foo').domain``).
"""

from __future__ import annotations

import posixpath

from surrogate_stats.errors import InvalidArtifact

__all__ = ["ALLOWED_DOMAINS", "MAX_GRAPH_DEPTH", "check_onnx_bytes", "read_metadata_props"]

ALLOWED_DOMAINS = ("", "ai.onnx")
MAX_GRAPH_DEPTH = 8  # sub-graphs (If/Loop/Scan bodies) nested inside the main graph

# protobuf wire types
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

# field numbers of onnx.proto (IR version 10)
_MODEL_OPSET, _MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 8, 7, 20, 25
_MODEL_METADATA_PROPS = 14
_GRAPH_NODE, _GRAPH_NAME, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 2, 5, 15
_NODE_OP_TYPE, _NODE_ATTR, _NODE_DOMAIN = 4, 5, 7
_ATTR_NAME, _ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 1, 5, 6, 10, 11
_ATTR_SPARSE, _ATTR_SPARSES = 22, 23
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_OPSET_DOMAIN = 1
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview):
    """Yield ``(field_number, wire_type, value)``; value is an int or a memoryview."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise _Malformed(f"field {number} runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if pos + size > len(buf):
                raise _Malformed(f"field {number} runs past the end of its message")
            value, pos = None, pos + size
        else:
            raise _Malformed(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def _string(value, wire: int, field: str) -> str:
    if wire != _LEN:
        raise _Malformed(f"{field} is not a string")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{field} is not UTF-8") from None


def _message(value, wire: int, field: str) -> memoryview:
    if wire != _LEN:
        raise _Malformed(f"{field} is not a message")
    return value


class _Checker:
    def __init__(self, file: str):
        self.file = file

    def refuse(self, field: str, why: str) -> InvalidArtifact:
        return InvalidArtifact(f"{self.file}: {field}: {why}")

    def domain(self, domain: str, field: str) -> None:
        if domain not in ALLOWED_DOMAINS:
            raise self.refuse(field, f"domain {domain!r} is not a standard ONNX domain "
                              f"{list(ALLOWED_DOMAINS)}; custom or contrib operators are "
                              "refused (this library never writes them)")

    def model(self, buf: memoryview) -> None:
        n_graphs = 0
        for number, wire, value in _fields(buf):
            if number == _MODEL_OPSET:
                self.opset(_message(value, wire, "opset_import"), "opset_import")
            elif number == _MODEL_GRAPH:
                n_graphs += 1
                self.graph(_message(value, wire, "graph"), "graph", 0)
            elif number == _MODEL_FUNCTIONS:
                raise self.refuse("functions", "the model defines local functions; this "
                                  "library writes flat graphs of standard operators only")
            elif number == _MODEL_METADATA_PROPS:
                for n2, w2, v2 in _fields(_message(value, wire, "metadata_props")):
                    if n2 == _ENTRY_KEY and _string(v2, w2, "metadata_props.key") == "ort_config":
                        raise self.refuse("metadata_props['ort_config']", "session options "
                                          "embedded for onnxruntime are refused (this library "
                                          "sets them itself)")
            elif number == _MODEL_TRAINING:
                raise self.refuse("training_info", "the model carries training graphs; a "
                                  "published surrogate needs none")
        if n_graphs != 1:
            raise self.refuse("graph", f"expected one graph, found {n_graphs}")

    def opset(self, buf: memoryview, field: str) -> None:
        for number, wire, value in _fields(buf):
            if number == _OPSET_DOMAIN:
                self.domain(_string(value, wire, field + ".domain"), field + ".domain")

    def graph(self, buf: memoryview, field: str, depth: int) -> None:
        if depth > MAX_GRAPH_DEPTH:
            raise self.refuse(field, f"sub-graphs nested deeper than {MAX_GRAPH_DEPTH}")
        i_node = i_init = 0
        for number, wire, value in _fields(buf):
            if number == _GRAPH_NODE:
                self.node(_message(value, wire, "node"), f"{field}.node[{i_node}]", depth)
                i_node += 1
            elif number == _GRAPH_INIT:
                self.tensor(_message(value, wire, "initializer"),
                            f"{field}.initializer[{i_init}]")
                i_init += 1
            elif number == _GRAPH_SPARSE_INIT:
                self.sparse(_message(value, wire, "sparse_initializer"),
                            f"{field}.sparse_initializer")

    def node(self, buf: memoryview, field: str, depth: int) -> None:
        op_type, domain, attrs = "?", "", []
        for number, wire, value in _fields(buf):
            if number == _NODE_OP_TYPE:
                op_type = _string(value, wire, field + ".op_type")
            elif number == _NODE_DOMAIN:
                domain = _string(value, wire, field + ".domain")
            elif number == _NODE_ATTR:
                attrs.append(_message(value, wire, field + ".attribute"))
        field = f"{field}(op_type={op_type!r})"
        self.domain(domain, field + ".domain")
        for k, attr in enumerate(attrs):
            self.attribute(attr, f"{field}.attribute[{k}]", depth)

    def attribute(self, buf: memoryview, field: str, depth: int) -> None:
        for number, wire, value in _fields(buf):
            if number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(_message(value, wire, field), field + ".t")
            elif number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(_message(value, wire, field), field + ".g", depth + 1)
            elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                self.sparse(_message(value, wire, field), field + ".sparse_tensor")

    def sparse(self, buf: memoryview, field: str) -> None:
        for number, wire, value in _fields(buf):
            if number == _SPARSE_VALUES:
                self.tensor(_message(value, wire, field), field + ".values")
            elif number == _SPARSE_INDICES:
                self.tensor(_message(value, wire, field), field + ".indices")

    def tensor(self, buf: memoryview, field: str) -> None:
        name, external, locations = "", False, []
        for number, wire, value in _fields(buf):
            if number == _TENSOR_NAME:
                name = _string(value, wire, field + ".name")
            elif number == _TENSOR_LOCATION:
                if wire != _VARINT:
                    raise _Malformed(f"{field}.data_location is not an enum")
                external = external or value != 0
            elif number == _TENSOR_EXTERNAL:
                external = True
                key = val = ""
                for n2, w2, v2 in _fields(_message(value, wire, field + ".external_data")):
                    if n2 == _ENTRY_KEY:
                        key = _string(v2, w2, field + ".external_data.key")
                    elif n2 == _ENTRY_VALUE:
                        val = _string(v2, w2, field + ".external_data.value")
                if key == "location":
                    locations.append(val)
        if not external:
            return
        field = f"{field}(name={name!r})"
        for loc in locations:
            if _escapes(loc):
                raise self.refuse(field + ".external_data.location",
                                  f"external tensor data at {loc!r} points outside the "
                                  "artifact directory")
        raise self.refuse(field + ".data_location",
                          f"the tensor stores its data externally ({locations or 'no location'})"
                          "; artifacts embed every tensor in the graph, external data is "
                          "refused")


def _escapes(location: str) -> bool:
    """Whether an external-data location could resolve outside the artifact directory."""
    if not location or "\x00" in location or "\\" in location or ":" in location:
        return True
    if location.startswith("/") or location.startswith("~"):
        return True
    norm = posixpath.normpath(location)
    return norm == ".." or norm.startswith("../") or ".." in location.split("/")


def check_onnx_bytes(blob: bytes, *, file: str = "model.onnx") -> None:
    """Refuse an ONNX ``ModelProto`` with external data, non-standard domains or functions.

    Args:
        blob: the serialised model.
        file: the file name to put into error messages.

    Raises:
        InvalidArtifact: naming ``file`` and the offending protobuf field.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise InvalidArtifact(f"{file}: expected the serialised ONNX model as bytes; got "
                              f"{type(blob).__name__}")
    checker = _Checker(file)
    try:
        checker.model(memoryview(bytes(blob)))
    except _Malformed as exc:
        raise InvalidArtifact(f"{file}: not a well-formed ONNX protobuf: {exc}") from None


def read_metadata_props(blob: bytes, *, file: str = "model.onnx") -> list[tuple[str, str]]:
    """``ModelProto.metadata_props`` as ``(key, value)`` pairs, in file order, duplicates kept.

    Reads the wire format directly (no ``onnx`` package). An entry without a key or a value
    reads as ``""`` for it (protobuf's default), as ``onnx`` would give it.

    Raises:
        InvalidArtifact: the protobuf is malformed or a key/value is not UTF-8 text.
    """
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise InvalidArtifact(f"{file}: expected the serialised ONNX model as bytes; got "
                              f"{type(blob).__name__}")
    out = []
    try:
        for number, wire, value in _fields(memoryview(bytes(blob))):
            if number != _MODEL_METADATA_PROPS:
                continue
            key = val = ""
            for n2, w2, v2 in _fields(_message(value, wire, "metadata_props")):
                if n2 == _ENTRY_KEY:
                    key = _string(v2, w2, "metadata_props.key")
                elif n2 == _ENTRY_VALUE:
                    val = _string(v2, w2, f"metadata_props[{key!r}].value")
            out.append((key, val))
    except _Malformed as exc:
        raise InvalidArtifact(f"{file}: not a well-formed ONNX protobuf: {exc}") from None
    return out
