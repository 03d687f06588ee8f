"""The artifact format: round trip, and every way a damaged artifact is refused."""

import json
import os

import numpy as np
import pytest

from surrogate_stats import InvalidArtifact, load_surrogate
from surrogate_stats.artifact import content_sha256, read_artifact, write_artifact


def _rewrite_metadata(directory, edit, *, resign=True):
    path = directory / "metadata.json"
    meta = json.loads(path.read_text())
    edit(meta)
    if resign:
        meta["content_sha256"] = content_sha256(meta)
    path.write_text(json.dumps(meta))


def test_round_trip_keeps_values(trained_3l, surrogate_3l):
    meta, graphs, arrays = read_artifact(trained_3l[0])
    assert meta["kind"] == "profile_likelihood" and meta["schema_version"] == 1
    assert set(graphs) == {"model"} and set(arrays) == {"weights"}
    prov = meta["provenance"]
    for key in ("workspace_sha256", "patchset_sha256", "patch_name", "seed", "versions"):
        assert key in prov
    assert "SUSY-2018-06" in prov["analysis"]
    for pair in meta["self_check"]:
        assert surrogate_3l.tmu(pair["mu"]) == pytest.approx(pair["tmu"][0], rel=1e-12,
                                                               abs=1e-12)


def test_edited_metadata_is_caught(artifact_copy):
    _rewrite_metadata(artifact_copy, lambda m: m["datasets"]["observed"].update(nll_min=1.0),
                      resign=False)
    with pytest.raises(InvalidArtifact, match="content_sha256"):
        load_surrogate(artifact_copy)


def test_resigned_but_inconsistent_metadata_fails_the_self_check(artifact_copy):
    def edit(m):
        m["self_check"][3]["tmu"][0] += 0.01
    _rewrite_metadata(artifact_copy, edit)
    with pytest.raises(InvalidArtifact, match="self-check failed"):
        load_surrogate(artifact_copy)


def test_resigned_wrong_offset_fails_the_self_check(artifact_copy):
    _rewrite_metadata(artifact_copy, lambda m: m["datasets"]["observed"].update(nll_min=1.0))
    with pytest.raises(InvalidArtifact, match="self-check failed"):
        load_surrogate(artifact_copy)


def test_flipped_byte_in_the_graph_is_caught(artifact_copy):
    path = artifact_copy / "model.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(InvalidArtifact, match="model.onnx.*SHA-256"):
        load_surrogate(artifact_copy)


@pytest.mark.parametrize("name", ["model.onnx", "weights.npz", "metadata.json"])
def test_missing_files(artifact_copy, name):
    os.remove(artifact_copy / name)
    with pytest.raises(InvalidArtifact, match="missing"):
        load_surrogate(artifact_copy)


def test_not_a_directory_and_not_json(tmp_path, artifact_copy):
    with pytest.raises(InvalidArtifact, match="not an artifact directory"):
        load_surrogate(tmp_path / "nothing")
    (artifact_copy / "metadata.json").write_text("{not json")
    with pytest.raises(InvalidArtifact, match="not valid JSON"):
        load_surrogate(artifact_copy)


def test_unknown_schema_version_and_kind(artifact_copy):
    _rewrite_metadata(artifact_copy, lambda m: m.update(schema_version=99))
    with pytest.raises(InvalidArtifact, match="unknown schema_version 99"):
        load_surrogate(artifact_copy)
    _rewrite_metadata(artifact_copy, lambda m: m.update(schema_version=1, kind="warp_drive"))
    with pytest.raises(InvalidArtifact, match="unknown artifact kind 'warp_drive'"):
        load_surrogate(artifact_copy)


@pytest.mark.parametrize("name", ["../model.onnx", "/etc/passwd", "sub/model.onnx", 7])
def test_file_names_must_stay_inside_the_artifact(artifact_copy, name):
    _rewrite_metadata(artifact_copy, lambda m: m["graphs"]["model"].update(file=name))
    with pytest.raises(InvalidArtifact, match="plain file name"):
        load_surrogate(artifact_copy)


def test_graph_io_must_match_metadata(artifact_copy):
    def edit(m):
        m["graphs"]["model"]["outputs"][0]["name"] = "chi2"
    _rewrite_metadata(artifact_copy, edit)
    with pytest.raises(InvalidArtifact, match="outputs"):
        load_surrogate(artifact_copy)


def test_bad_numbers_in_metadata(artifact_copy):
    _rewrite_metadata(artifact_copy, lambda m: m["domain"].update(mu=[5.0, 1.0]))
    with pytest.raises(InvalidArtifact, match="domain.mu"):
        load_surrogate(artifact_copy)
    _rewrite_metadata(artifact_copy, lambda m: (m["domain"].update(mu=[0.0, 14.0]),
                                                m["datasets"]["expected"].update(mu_hat="x")))
    with pytest.raises(InvalidArtifact, match="datasets.expected.mu_hat"):
        load_surrogate(artifact_copy)


@pytest.mark.parametrize("path", ["exchange", "two_renames"])
def test_atomic_write_keeps_the_old_artifact_on_failure(artifact_copy, monkeypatch, path):
    from surrogate_stats.artifact import _format

    before = (artifact_copy / "metadata.json").read_bytes()
    meta, graphs, arrays = read_artifact(artifact_copy)
    real_rename = os.rename

    def failing_exchange(a, b):
        if path == "two_renames":  # as on platforms without renameat2(RENAME_EXCHANGE)
            return False
        raise OSError("disk full")

    def failing_rename(src, dst):
        if ".tmp-" in str(src):  # the new artifact cannot be moved into place
            raise OSError("disk full")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    monkeypatch.setattr(_format, "_exchange", failing_exchange)
    with pytest.raises(OSError):
        write_artifact(artifact_copy, {**meta, "name": "new"}, graphs, arrays)
    monkeypatch.undo()
    leftovers = [p.name for p in artifact_copy.parent.iterdir() if p.name != "copy"]
    assert leftovers == []
    assert (artifact_copy / "metadata.json").read_bytes() == before
    load_surrogate(artifact_copy)


def test_write_then_read_arbitrary_arrays(tmp_path, trained_3l):
    _, graphs, _ = read_artifact(trained_3l[0])
    meta = {"kind": "profile_likelihood", "graphs": {"model": {"inputs": [], "outputs": []}}}
    out = write_artifact(tmp_path / "a", meta, graphs, {"extra": {"x": np.arange(3.0)}})
    m2, _, arrays = read_artifact(out)
    np.testing.assert_array_equal(arrays["extra"]["x"], np.arange(3.0))
    assert m2["arrays"]["extra"]["names"] == ["x"]
