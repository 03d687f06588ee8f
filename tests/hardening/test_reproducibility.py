"""The same inputs give byte-identical artifacts; ``artifact diff`` says why two differ."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from surrogate_stats import load_surrogate
from surrogate_stats.artifact import diff_artifacts, read_artifact, write_artifact
from tests.hardening.conftest import PUBLISHED, resign

GENERATED = ("graphs", "arrays", "content_sha256", "schema", "schema_version", "self_check",
             "kind", "datasets", "domain")


def _files(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_write_artifact_is_byte_identical_and_ignores_the_clock(tmp_path, monkeypatch):
    meta, graphs, arrays = read_artifact(PUBLISHED)
    write_artifact(tmp_path / "a", meta, graphs, arrays)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3.0e7)  # a year later
    write_artifact(tmp_path / "b", meta, graphs, arrays)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert diff_artifacts(tmp_path / "a", tmp_path / "b")["identical"]


def test_rebuilding_a_published_surrogate_reproduces_graph_and_numbers(tmp_path):
    pytest.importorskip("onnx")
    from surrogate_stats.likelihood._export import save_surrogate

    s = load_surrogate(PUBLISHED)
    extra = {k: v for k, v in s.metadata.items() if k not in GENERATED}
    save_surrogate(s, tmp_path / "again", metadata=extra)
    assert (tmp_path / "again" / "model.onnx").read_bytes() == \
        (PUBLISHED / "model.onnx").read_bytes()
    # the published artifacts store every derived constant (f_hat included), so a rebuild on
    # any CPU reproduces every file byte for byte
    assert _files(tmp_path / "again") == _files(PUBLISHED)
    assert diff_artifacts(PUBLISHED, tmp_path / "again")["identical"]
    save_surrogate(s, tmp_path / "third", metadata=extra)
    assert _files(tmp_path / "again") == _files(tmp_path / "third")


def test_diff_names_the_cause(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(PUBLISHED, a)
    shutil.copytree(PUBLISHED, b)

    def edit(m):
        m["provenance"]["seed"] = 7
        m["provenance"]["versions"]["numpy"] = "0.0"
        m["provenance"]["workspace_sha256"] = "0" * 64
        m["training"]["train_seconds"] = 1.0
        m["datasets"]["observed"]["nll_min"] += 1.0

    resign(b, edit=edit)
    causes = diff_artifacts(a, b)["causes"]
    assert causes["seed"] == ["provenance.seed"]
    assert causes["library versions"] == ["provenance.versions.numpy"]
    assert causes["inputs"] == ["provenance.workspace_sha256"]
    assert causes["timing"] == ["training.train_seconds"]
    assert "datasets.observed.nll_min" in causes["results"]


def test_cli_artifact_commands(tmp_path, capsys):
    from surrogate_stats.cli import main

    shutil.copytree(PUBLISHED, tmp_path / "a")
    assert main(["artifact", "verify", str(tmp_path / "a")]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["ok"] and out["files"]["model.onnx"] == \
        read_artifact(PUBLISHED)[0]["graphs"]["model"]["sha256"]
    assert main(["artifact", "diff", str(PUBLISHED), str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["identical"]
    resign(tmp_path / "a", edit=lambda m: m["provenance"].update(seed=3))
    assert main(["artifact", "diff", str(PUBLISHED), str(tmp_path / "a")]) == 1
    assert capsys.readouterr().out.startswith("file hashes: content_sha256\nseed: ")
    (tmp_path / "a" / "model.onnx").write_bytes(b"\x08\x08")
    assert main(["artifact", "verify", str(tmp_path / "a")]) == 2
    assert "SHA-256" in capsys.readouterr().err
    assert main(["artifact", "recover", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out) == {"artifact": str(tmp_path / "a"),
                                                   "restored": False}


@pytest.mark.slow
def test_training_twice_with_one_seed_gives_the_same_artifact(tmp_path, three_l_workspace):
    """Same workspace, patch, seed and library versions: same numbers, same graph bytes."""
    from surrogate_stats.likelihood import train

    a, b = tmp_path / "1" / "art", tmp_path / "2" / "art"  # the name goes into the graph
    train(three_l_workspace, a, seed=3, progress=False)
    train(three_l_workspace, b, seed=3, progress=False)
    result = diff_artifacts(a, b)
    assert result["files"] == {}, result["causes"]
    assert set(result["causes"]) <= {"timing", "file hashes"}, result["causes"]
    np.testing.assert_array_equal(load_surrogate(a).nll(np.linspace(0, 1, 9)),
                                  load_surrogate(b).nll(np.linspace(0, 1, 9)))
