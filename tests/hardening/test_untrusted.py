"""A corpus of hostile artifacts (all with consistently recomputed hashes): each is refused
with an InvalidArtifact naming the file and the field, before onnxruntime sees the graph, and
without opening any file outside the artifact directory."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from surrogate_stats import InvalidArtifact, InvalidInput, load_surrogate
from surrogate_stats.artifact import read_artifact
from surrogate_stats.artifact._onnx_check import check_onnx_bytes
from tests.hardening.conftest import PUBLISHED, ROOT, resign

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model():
    return onnx.load_from_string((PUBLISHED / "model.onnx").read_bytes())


def _externalise(tensor, location: str):
    tensor.ClearField("raw_data")
    tensor.ClearField("double_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"),
                       ("length", str(8 * int(np.prod(tensor.dims))))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


class _OpenAudit:
    """Records every path Python opens while active (sys.addaudithook cannot be removed, so
    the hook is installed once and switched on and off)."""

    active: list | None = None

    @classmethod
    def hook(cls, event, args):
        if cls.active is not None and event == "open" and isinstance(args[0], (str, bytes,
                                                                                 os.PathLike)):
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            cls.active.append((os.fsdecode(args[0]), flags))


sys.addaudithook(_OpenAudit.hook)


def _load_refused(directory: Path, monkeypatch, match: str) -> str:
    """load_surrogate must raise InvalidArtifact matching ``match``, never construct an
    onnxruntime session, and open no file outside ``directory``."""
    import onnxruntime

    def no_session(*a, **k):
        raise AssertionError("onnxruntime was given a graph that should have been refused")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    _OpenAudit.active = []
    try:
        with pytest.raises(InvalidArtifact, match=match) as info:
            load_surrogate(directory)
    finally:
        opened, _OpenAudit.active = _OpenAudit.active, None
    inside = str(directory.resolve())
    nofollow = getattr(os, "O_NOFOLLOW", 0)

    def within(path, flags):  # O_NOFOLLOW on a path inside: a symlink there is not followed
        real = os.path.abspath(path) if flags & nofollow else os.path.realpath(path)
        return real.startswith(inside + os.sep)

    outside = [p for p, flags in opened if os.path.isabs(p) and not within(p, flags)
               and not p.startswith(("/proc", "/sys", "/dev"))
               and not p.endswith((".py", ".pyc", ".so")) and "site-packages" not in p]
    assert outside == [], f"opened outside the artifact: {outside}"
    return str(info.value)


def test_published_artifacts_pass_every_check():
    for d in (ROOT / "onnx_models").iterdir():
        if d.is_dir():
            meta, graphs, _ = read_artifact(d)
            check_onnx_bytes(graphs["model"])
            assert load_surrogate(d).nll(1.0) > 0


@pytest.mark.parametrize("where", ["../secret.bin", "ABSOLUTE", "../../etc/passwd",
                                   "sub/../../secret.bin", "C:\\secret.bin"])
def test_external_data_pointing_outside_is_refused(published, tmp_path, monkeypatch, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4096).tobytes())
    location = str(secret) if where == "ABSOLUTE" else where
    model = _model()
    _externalise(model.graph.initializer[3], location)
    resign(published, files={"model.onnx": model.SerializeToString()})
    msg = _load_refused(published, monkeypatch, "outside the artifact directory")
    assert "model.onnx" in msg and "external_data.location" in msg
    assert model.graph.initializer[3].name in msg


def test_external_data_inside_the_directory_is_refused_too(published, monkeypatch):
    model = _model()
    w = model.graph.initializer[3]
    (published / "w.bin").write_bytes(numpy_helper.to_array(w).tobytes())
    _externalise(w, "w.bin")
    resign(published, files={"model.onnx": model.SerializeToString()})
    msg = _load_refused(published, monkeypatch, "stores its data externally")
    assert "model.onnx" in msg and "data_location" in msg


def test_external_data_in_a_constant_node_and_a_subgraph(published, monkeypatch):
    model = _model()
    t = numpy_helper.from_array(np.zeros(2), "c")
    _externalise(t, "../c.bin")
    model.graph.node.append(helper.make_node("Constant", [], ["c_out"], value=t))
    resign(published, files={"model.onnx": model.SerializeToString()})
    msg = _load_refused(published, monkeypatch, "outside the artifact directory")
    assert "graph.node[" in msg and "attribute[0]" in msg
    # the same hidden in the then-branch of an If node
    model = _model()
    t2 = numpy_helper.from_array(np.zeros(2), "c2")
    _externalise(t2, "/etc/shadow")
    branch = helper.make_graph([helper.make_node("Constant", [], ["y"], value=t2)], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    model.graph.node.append(helper.make_node("If", ["cond"], ["if_out"],
                                             then_branch=branch, else_branch=branch))
    resign(published, files={"model.onnx": model.SerializeToString()})
    msg = _load_refused(published, monkeypatch, "outside the artifact directory")
    assert ".g.node[0](op_type='Constant')" in msg


@pytest.mark.parametrize("domain", ["com.microsoft", "ai.onnx.ml", "evil.example"])
def test_custom_domain_operator_is_refused(published, monkeypatch, domain):
    model = _model()
    node = model.graph.node[4]
    node.domain = domain
    model.opset_import.append(helper.make_opsetid(domain, 1))
    resign(published, files={"model.onnx": model.SerializeToString()})
    msg = _load_refused(published, monkeypatch, f"domain '{domain}'")
    assert "model.onnx" in msg and ("opset_import.domain" in msg or ".domain" in msg)


def test_custom_domain_only_in_an_opset_import_is_refused(published, monkeypatch):
    model = _model()
    model.opset_import.append(helper.make_opsetid("my.ops", 1))
    resign(published, files={"model.onnx": model.SerializeToString()})
    assert "opset_import.domain" in _load_refused(published, monkeypatch, "my.ops")


def test_local_functions_are_refused(published, monkeypatch):
    model = _model()
    fn = helper.make_function("my.fn", "Twice", ["x"], ["y"],
                              [helper.make_node("Add", ["x", "x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    model.functions.append(fn)
    resign(published, files={"model.onnx": model.SerializeToString()})
    assert "functions" in _load_refused(published, monkeypatch, "local functions")


def test_embedded_onnxruntime_session_config_is_refused(published, monkeypatch):
    model = _model()
    onnx.helper.set_model_props(model, {"ort_config": '{"session_options": {}}'})
    resign(published, files={"model.onnx": model.SerializeToString()})
    _load_refused(published, monkeypatch, "metadata_props\\['ort_config'\\]")


def test_symlinked_files_are_refused(published, tmp_path, monkeypatch):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((published / "model.onnx").read_bytes())  # same bytes, same hash
    (published / "model.onnx").unlink()
    (published / "model.onnx").symlink_to(outside)
    msg = _load_refused(published, monkeypatch, "symlink")
    assert "graphs.model.file" in msg
    # a symlinked metadata.json, too
    meta = tmp_path / "meta.json"
    meta.write_bytes((PUBLISHED / "metadata.json").read_bytes())
    (published / "model.onnx").unlink()
    (published / "model.onnx").write_bytes(outside.read_bytes())
    (published / "metadata.json").unlink()
    (published / "metadata.json").symlink_to(meta)
    _load_refused(published, monkeypatch, "metadata.json.*symlink")


def test_a_fifo_is_refused_without_blocking(published, monkeypatch):
    (published / "weights.npz").unlink()
    os.mkfifo(published / "weights.npz")
    _load_refused(published, monkeypatch, "not a regular file")


@pytest.mark.parametrize("lie", ["dtype", "shape", "fixed_dim", "name", "order", "extra",
                                 "rank"])
def test_metadata_that_lies_about_the_graph_io_is_refused(published, lie):
    def edit(m):
        io = m["graphs"]["model"]
        if lie == "dtype":
            io["inputs"][0]["dtype"] = "float32"
        elif lie == "shape":
            io["outputs"][0]["shape"] = ["N", 3]
        elif lie == "fixed_dim":
            io["inputs"][0]["shape"] = [1]
        elif lie == "name":
            io["outputs"][1]["name"] = "chi2"
        elif lie == "order":
            io["outputs"].reverse()
        elif lie == "extra":
            io["outputs"].append({"name": "z", "dtype": "float64", "shape": ["N"]})
        elif lie == "rank":
            io["outputs"][0]["shape"] = ["N"]
    resign(published, edit=edit)
    with pytest.raises(InvalidArtifact, match="model.onnx.*do not match metadata.json"):
        load_surrogate(published)


@pytest.mark.parametrize("bad", [None, "N", [["N"]], [-1], [True], [1.5]])
def test_malformed_io_spec_is_refused(published, bad):
    resign(published, edit=lambda m: m["graphs"]["model"]["inputs"][0].update(shape=bad))
    with pytest.raises(InvalidArtifact, match=r"inputs\[0\].shape"):
        load_surrogate(published)


def test_oversized_files_are_refused_before_reading(published):
    with open(published / "model.onnx", "r+b") as f:  # sparse: costs no disk space
        f.truncate(513 * 2**20)
    with pytest.raises(InvalidArtifact, match="model.onnx.*larger than"):
        load_surrogate(published)
    with open(published / "metadata.json", "r+b") as f:
        f.truncate(9 * 2**20)
    with pytest.raises(InvalidArtifact, match="metadata.json.*larger than"):
        load_surrogate(published)


@pytest.mark.parametrize("depth,match", [(33, "nested deeper than 32"),
                                         (200_000, "not valid JSON")])
def test_deep_json_is_refused(published, depth, match):
    meta = json.loads((published / "metadata.json").read_text())
    meta["extra"] = "@"
    text = json.dumps(meta).replace('"@"', "[" * depth + "]" * depth)
    (published / "metadata.json").write_text(text)
    with pytest.raises(InvalidArtifact, match=match):
        load_surrogate(published)


@pytest.mark.parametrize("value,match", [("NaN", "NaN is not allowed"),
                                         ("-Infinity", "Infinity is not allowed"),
                                         ("1e999", "overflows"),
                                         ("9" * 5000, "not valid JSON")])
def test_non_finite_and_huge_numbers_are_refused(published, value, match):
    text = (published / "metadata.json").read_text()
    text = text.replace('"nll_min": 135.7756724822769', f'"nll_min": {value}', 1)
    assert value in text
    (published / "metadata.json").write_text(text)
    with pytest.raises(InvalidArtifact, match=match):
        load_surrogate(published)


def test_huge_integer_in_a_number_field(published):
    resign(published, edit=lambda m: m["datasets"]["observed"].update(nll_min=10**400))
    with pytest.raises(InvalidArtifact, match="datasets.observed.nll_min"):
        load_surrogate(published)


def test_duplicate_json_keys_are_refused(published):
    text = (published / "metadata.json").read_text()
    (published / "metadata.json").write_text(text.replace('"kind":', '"kind": "x", "kind":', 1))
    with pytest.raises(InvalidArtifact, match="duplicate key 'kind'"):
        load_surrogate(published)


def test_pickled_object_array_is_refused(published):
    arrays = dict(np.load(published / "weights.npz"))
    arrays["observed.prior"] = np.array([1, "x", None], dtype=object)
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # allow_pickle defaults to True when saving
    resign(published, files={"weights.npz": buf.getvalue()})
    with pytest.raises(InvalidArtifact, match="weights.npz.*numeric"):
        load_surrogate(published)


def test_npz_member_that_lies_about_its_size_is_refused(published):
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # header says 10^12 doubles, body holds 8 bytes
        header = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': " \
                 b"(1000000000000,), }"
        header += b" " * (127 - len(header)) + b"\n"
        zf.writestr("x.npy", header + b"\x00" * 8)
    resign(published, files={"weights.npz": buf.getvalue()})
    with pytest.raises(InvalidArtifact, match="weights.npz.*'x' is unreadable.*bytes"):
        load_surrogate(published)


def test_npz_names_must_match_the_metadata(published):
    resign(published, edit=lambda m: m["arrays"]["weights"]["names"].append("observed.W9"))
    with pytest.raises(InvalidArtifact, match="weights.npz' holds the arrays"):
        load_surrogate(published)


def test_truncated_protobuf_is_refused_by_the_checker():
    blob = (PUBLISHED / "model.onnx").read_bytes()
    for cut in (1, 7, len(blob) // 3, len(blob) - 1):
        with pytest.raises(InvalidArtifact, match="model.onnx: "):
            check_onnx_bytes(blob[:cut])
    with pytest.raises(InvalidArtifact, match="expected one graph"):
        check_onnx_bytes(b"")


@pytest.mark.parametrize("threads", [-1, 1.5, "2", True])
def test_bad_thread_counts(threads):
    with pytest.raises(InvalidInput, match="threads"):
        load_surrogate(PUBLISHED, threads=threads)


def test_thread_settings_give_identical_results():
    a = load_surrogate(PUBLISHED)
    b = load_surrogate(PUBLISHED, threads=2)
    c = load_surrogate(PUBLISHED, threads=0)
    mus = np.linspace(0.0, 14.0, 257)
    outs = [s._session.run(None, {"mu": mus}) for s in (a, b, c)]
    for o in outs[1:]:
        for x, y in zip(outs[0], o):
            assert x.tobytes() == y.tobytes()


def test_zip_bomb_with_an_understated_size_is_stopped_early(published):
    import io
    import struct
    import tracemalloc
    import zipfile
    member = io.BytesIO()
    np.lib.format.write_array(member, np.zeros(4_000_000))  # 32 MB of zeros -> ~30 kB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("observed.W0.npy", member.getvalue())
    blob = bytearray(buf.getvalue())
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # claim 1000 bytes
        struct.pack_into("<I", blob, blob.index(signature) + offset, 1000)
    resign(published, files={"weights.npz": bytes(blob)})
    tracemalloc.start()
    try:
        with pytest.raises(InvalidArtifact, match="weights.npz.*'observed.W0' is unreadable"):
            read_artifact(published)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # never unpacked the 32 MB


def test_make_session_checks_bytes_that_did_not_come_from_read_artifact():
    """Kinds may build sessions from other blobs: make_session runs the same checks."""
    from surrogate_stats.artifact._runtime import make_session

    model = _model()
    model.graph.node[0].domain = "com.microsoft"
    spec = read_artifact(PUBLISHED)[0]["graphs"]["model"]
    with pytest.raises(InvalidArtifact, match="model.onnx: graph.node\\[0\\].*com.microsoft"):
        make_session(model.SerializeToString(), spec)
    session = make_session((PUBLISHED / "model.onnx").read_bytes(), spec)
    assert [o.name for o in session.get_outputs()] == ["tmu", "nll"]
