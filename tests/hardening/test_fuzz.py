"""hypothesis fuzzing of every loader boundary: metadata.json, ONNX and .npz bytes, workspaces,
patches and the CLI. Whatever comes in, only surrogate_stats' own errors may come out, and each
case finishes within the hypothesis deadline (the whole file takes well under a minute)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from surrogate_stats import load_surrogate
from surrogate_stats.artifact import content_sha256
from surrogate_stats.errors import SurrogateStatsError
from tests.hardening.conftest import PUBLISHED

FUZZ = settings(max_examples=40, deadline=timedelta(seconds=10), derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow], database=None)
META = json.loads((PUBLISHED / "metadata.json").read_text())
FILES = {p.name: p.read_bytes() for p in PUBLISHED.iterdir()}

def _nested(depth: int):
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats() | st.text(max_size=20),  # floats include NaN and inf (json writes NaN)
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12) | st.integers(28, 400).map(_nested)  # deeper: test_untrusted.py


def _paths(obj, prefix=()):
    """Every key path of a JSON tree."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


PATHS = [p for p in _paths(META) if p]


def _write(files: dict[str, bytes]) -> Path:
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    for name, blob in files.items():
        (d / name).write_bytes(blob)
    return d


def _resigned(meta: dict, files: dict[str, bytes]) -> bytes:
    meta = copy.deepcopy(meta)
    for section in ("graphs", "arrays"):
        entries = meta.get(section)
        if isinstance(entries, dict):
            for entry in entries.values():
                if isinstance(entry, dict) and isinstance(entry.get("file"), str) \
                        and entry["file"] in files:
                    entry["sha256"] = hashlib.sha256(files[entry["file"]]).hexdigest()
    try:
        meta["content_sha256"] = content_sha256(meta)
    except (ValueError, TypeError):
        pass
    return json.dumps(meta).encode()


def _only_own_errors(directory: Path) -> None:
    try:
        load_surrogate(directory, on_extrapolation="ignore")
    except SurrogateStatsError:
        pass
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@FUZZ
@given(path=st.sampled_from(PATHS), action=st.sampled_from(["delete", "replace", "extra"]),
       value=json_values, resign=st.booleans())
def test_mutated_metadata(path, action, value, resign):
    meta = copy.deepcopy(META)
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif isinstance(parent, dict):
        parent[f"extra_{last}"] = value
    else:
        parent.append(value)
    files = dict(FILES)
    files["metadata.json"] = _resigned(meta, files) if resign else json.dumps(meta).encode()
    _only_own_errors(_write(files))


@FUZZ
@given(name=st.sampled_from(["model.onnx", "weights.npz", "metadata.json"]),
       how=st.sampled_from(["truncate", "flip", "splice"]), where=st.floats(0, 1),
       bit=st.integers(0, 7), junk=st.binary(max_size=64), resign=st.booleans())
def test_damaged_files(name, how, where, bit, junk, resign):
    files = dict(FILES)
    blob = bytearray(files[name])
    pos = min(int(where * len(blob)), len(blob) - 1)
    if how == "truncate":
        blob = blob[:pos]
    elif how == "flip":
        blob[pos] ^= 1 << bit
    else:
        blob[pos:pos + len(junk)] = junk
    files[name] = bytes(blob)
    if resign and name != "metadata.json":
        files["metadata.json"] = _resigned(META, files)
    _only_own_errors(_write(files))


# -- workspaces and patches -----------------------------------------------------------------------
SMALL_WS = {
    "channels": [{"name": "SR", "samples": [
        {"name": "bkg", "data": [50.0, 30.0],
         "modifiers": [{"name": "bkg_unc", "type": "shapesys", "data": [5.0, 3.0]}]}]}],
    "observations": [{"name": "SR", "data": [52.0, 29.0]}],
    "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}
SMALL_PATCH = [{"op": "add", "path": "/channels/0/samples/1",
                "value": {"name": "signal", "data": [5.0, 2.0],
                          "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]}}]


def _mutate(obj, path, action, value):
    obj = copy.deepcopy(obj)
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


def _small_patchset():
    import pyhf

    return {
        "metadata": {"description": "fuzz", "digests": {"sha256": pyhf.utils.digest(SMALL_WS)},
                     "labels": ["m"], "references": {"hepdata": "ins1234567"}},
        "patches": [{"metadata": {"name": "sig", "values": [1]}, "patch": SMALL_PATCH}],
        "version": "1.0.0",
    }


@FUZZ
@given(data=st.data(), action=st.sampled_from(["delete", "replace"]), value=json_values,
       name=st.sampled_from(["sig", "nope", ""]))
def test_malformed_patchsets(tmp_path, data, action, value, name):
    pytest.importorskip("pyhf")
    from surrogate_stats.likelihood import load_signal_workspace

    ps = _small_patchset()
    path = data.draw(st.sampled_from(_paths(ps)))
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    (d / "ws.json").write_text(json.dumps(SMALL_WS))
    (d / "ps.json").write_text(json.dumps(_mutate(ps, path, action, value)))
    try:
        load_signal_workspace(d / "ws.json", patchset=d / "ps.json", patch=name)
    except SurrogateStatsError:
        pass


def test_cli_train_reports_a_malformed_workspace(tmp_path, capsys):
    from surrogate_stats.cli import main

    (tmp_path / "ws.json").write_text('{"channels": 3}')
    (tmp_path / "p.json").write_text("[]")
    code = main(["likelihood", "train", str(tmp_path / "ws.json"), "--patch",
                 str(tmp_path / "p.json"), "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert capsys.readouterr().err.startswith("surrogate-stats: error: workspace")
    assert not (tmp_path / "o").exists()


@FUZZ
@given(target=st.sampled_from(["workspace", "patch"]), data=st.data(),
       action=st.sampled_from(["delete", "replace"]), value=json_values,
       raw=st.booleans(), junk=st.binary(max_size=32))
def test_malformed_workspaces_and_patches(tmp_path, target, data, action, value, raw, junk):
    pytest.importorskip("pyhf")
    from surrogate_stats.likelihood import load_signal_workspace

    ws, patch = SMALL_WS, SMALL_PATCH
    obj = ws if target == "workspace" else patch
    path = data.draw(st.sampled_from(_paths(obj)))
    mutated = _mutate(obj, path, action, value)
    text = json.dumps(mutated).encode()
    if raw:
        text = text[: len(text) // 2] + junk
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    (d / "ws.json").write_bytes(text if target == "workspace" else json.dumps(ws).encode())
    (d / "patch.json").write_bytes(text if target == "patch" else json.dumps(patch).encode())
    try:
        load_signal_workspace(d / "ws.json", patch=d / "patch.json")
    except SurrogateStatsError:
        pass


def test_the_unmutated_small_workspace_loads(tmp_path):
    pytest.importorskip("pyhf")
    from surrogate_stats.likelihood import load_signal_workspace

    (tmp_path / "ws.json").write_text(json.dumps(SMALL_WS))
    (tmp_path / "patch.json").write_text(json.dumps(SMALL_PATCH))
    (tmp_path / "ps.json").write_text(json.dumps(_small_patchset()))
    ws = load_signal_workspace(tmp_path / "ws.json", patch=tmp_path / "patch.json")
    assert ws.poi == "mu"
    ws2 = load_signal_workspace(tmp_path / "ws.json", patchset=tmp_path / "ps.json",
                                patch="sig")
    assert ws2.spec == ws.spec


@settings(FUZZ, max_examples=15)
@given(path=st.sampled_from(PATHS), value=json_values)
def test_cli_inspect_reports_hostile_artifacts_as_one_line(capsys, path, value):
    from surrogate_stats.cli import main

    meta = _mutate(META, path, "replace", value)
    files = dict(FILES)
    files["metadata.json"] = _resigned(meta, files)
    d = _write(files)
    try:
        code = main(["inspect", str(d)])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert err.startswith("surrogate-stats: error: ") and err.count("\n") == 1


# -- the wire-format ONNX checker agrees with the onnx package ----------------------------------
def _onnx_reference_verdict(model) -> bool:
    """True if the model is acceptable, judged through the onnx package's own API."""
    from onnx import AttributeProto, TensorProto

    ok_domain = ("", "ai.onnx")

    def tensor_ok(t):
        return t.data_location != TensorProto.EXTERNAL and len(t.external_data) == 0

    def graph_ok(g):
        if not all(tensor_ok(t) for t in g.initializer):
            return False
        if not all(tensor_ok(s.values) and tensor_ok(s.indices) for s in g.sparse_initializer):
            return False
        for n in g.node:
            if n.domain not in ok_domain:
                return False
            for a in n.attribute:
                if a.type == AttributeProto.TENSOR and not tensor_ok(a.t):
                    return False
                if a.type == AttributeProto.GRAPH and not graph_ok(a.g):
                    return False
                if not all(tensor_ok(t) for t in a.tensors):
                    return False
                if not all(graph_ok(sub) for sub in a.graphs):
                    return False
        return True

    return (all(o.domain in ok_domain for o in model.opset_import) and not model.functions
            and not model.training_info and graph_ok(model.graph)
            and not any(p.key == "ort_config" for p in model.metadata_props))


@FUZZ
@given(ops=st.lists(st.tuples(
    st.sampled_from(["external", "domain", "subgraph", "opset", "function", "props"]),
    st.integers(0, 30), st.sampled_from(["", "ai.onnx", "com.microsoft", "x.y"]),
    st.booleans()), max_size=4))
def test_wire_format_checker_agrees_with_the_onnx_package(ops):
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from surrogate_stats.artifact._onnx_check import check_onnx_bytes
    from surrogate_stats.errors import InvalidArtifact

    model = onnx.load_from_string(FILES["model.onnx"])
    for what, i, domain, flag in ops:
        if what == "external":
            t = model.graph.initializer[i % len(model.graph.initializer)]
            if flag:
                t.data_location = TensorProto.EXTERNAL
            else:
                e = t.external_data.add()
                e.key, e.value = "location", "../x.bin"
        elif what == "domain":
            model.graph.node[i % len(model.graph.node)].domain = domain
        elif what == "subgraph":
            c = numpy_helper.from_array(np.zeros(1), "c")
            if flag:
                c.data_location = TensorProto.EXTERNAL
            inner = helper.make_node("Constant", [], ["y"], value=c, domain=domain)
            g = helper.make_graph([inner], "b", [],
                                  [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1])])
            model.graph.node.append(helper.make_node("If", ["c0"], [f"o{i}"],
                                                     then_branch=g, else_branch=g))
        elif what == "opset":
            model.opset_import.append(helper.make_opsetid(domain, 1))
        elif what == "function" and flag:
            model.functions.append(helper.make_function(
                "f.d", "F", ["a"], ["b"], [helper.make_node("Neg", ["a"], ["b"])],
                [helper.make_opsetid("", 17)]))
        elif what == "props":
            helper.set_model_props(model, {"ort_config" if flag else "author": "x"})
    expected = _onnx_reference_verdict(model)
    try:
        check_onnx_bytes(model.SerializeToString())
        got = True
    except InvalidArtifact:
        got = False
    assert got == expected
