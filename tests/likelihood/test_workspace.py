"""Reading workspaces and patches: every bad input names what to fix."""

import json

import pytest

from surrogate_stats import InvalidWorkspace, UnknownPatch
from surrogate_stats.likelihood import load_signal_workspace
from tests.conftest import SBOTTOM, THREE_L


def test_patchset_and_bare_patch_both_load():
    a = load_signal_workspace(**THREE_L)
    b = load_signal_workspace(**SBOTTOM)
    assert a.poi == b.poi == "mu_SIG"
    assert a.provenance["patch_name"] == "ERJR_500p0_0p0"
    assert len(a.provenance["workspace_sha256"]) == 64
    # the sbottom patch also removes the validation channels
    assert all("VR" not in c["name"] for c in b.spec["channels"])


def test_unknown_patch_lists_available_names():
    with pytest.raises(UnknownPatch, match="ERJR_350p0_150p0") as exc:
        load_signal_workspace(THREE_L["background"], patchset=THREE_L["patchset"],
                              patch="ERJR_999_1")
    assert "available (3)" in str(exc.value)


def test_malformed_json_names_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"channels": [1, 2,,]}')
    with pytest.raises(InvalidWorkspace, match="not valid JSON.*line 1"):
        load_signal_workspace(bad, patch=SBOTTOM["patch"])


def test_schema_error_names_json_path(tmp_path):
    spec = json.loads(THREE_L["background"].read_text())
    spec["channels"][1]["samples"][0]["data"] = "not a list"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(InvalidWorkspace, match=r"channels\[1\]\.samples\[0\]\.data"):
        load_signal_workspace(bad, patchset=THREE_L["patchset"], patch="ERJR_500p0_0p0")


def test_missing_files_and_bad_patches(tmp_path):
    with pytest.raises(InvalidWorkspace, match="does not exist"):
        load_signal_workspace(tmp_path / "nope.json", patch=SBOTTOM["patch"])
    not_a_patch = tmp_path / "p.json"
    not_a_patch.write_text('{"op": "add"}')
    with pytest.raises(InvalidWorkspace, match="RFC-6902"):
        load_signal_workspace(SBOTTOM["background"], patch=not_a_patch)
    wrong_target = tmp_path / "q.json"
    wrong_target.write_text('[{"op": "remove", "path": "/channels/99"}]')
    with pytest.raises(InvalidWorkspace, match="does not apply"):
        load_signal_workspace(SBOTTOM["background"], patch=wrong_target)
    with pytest.raises(InvalidWorkspace, match="signal patch is needed"):
        load_signal_workspace(SBOTTOM["background"])


def test_widening_poi_bounds_edits_the_measurement():
    ws = load_signal_workspace(**THREE_L).with_poi_bounds(0.0, 42.0)
    assert ws.poi_bounds() == (0.0, 42.0)
