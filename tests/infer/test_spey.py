"""The spey plugin against spey-pyhf on the same workspace and signal point."""

import atexit
import json
import warnings
from pathlib import Path

import pytest

from surrogate_stats import InvalidInput

spey = pytest.importorskip("spey")
if hasattr(spey, "_print_thanks"):  # spey prints a banner at exit, after pytest's summary line
    atexit.unregister(spey._print_thanks)
ROOT = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT / "onnx_models" / "sbottom-RegionA_1300_850_60"
DATA = ROOT / "data" / "workspaces" / "sbottom-RegionA"


@pytest.fixture(scope="module")
def models():
    ours = spey.get_backend("surrogate_stats")(path=str(ARTIFACT))
    pytest.importorskip("spey_pyhf")
    bkg = json.loads((DATA / "BkgOnly.json").read_text())
    patch = json.loads((DATA / "patch.sbottom_1300_850_60.json").read_text())
    theirs = spey.get_backend("pyhf")(signal_patch=patch, background_only_model=bkg)
    return ours, theirs


def test_plugin_is_registered():
    assert "surrogate_stats" in spey.AvailableBackends()


def test_agrees_with_spey_pyhf(models):
    ours, theirs = models
    aposteriori = spey.ExpectationType.aposteriori
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mu in (0.3, 0.5, 0.7):
            assert float(ours.likelihood(poi_test=mu)) == pytest.approx(
                float(theirs.likelihood(poi_test=mu)), abs=5e-3)
            a = [float(x) for x in ours.exclusion_confidence_level(poi_test=mu)]
            b = [float(x) for x in theirs.exclusion_confidence_level(poi_test=mu)]
            assert a[0] == pytest.approx(b[0], abs=0.005)
            for x, y in zip(ours.exclusion_confidence_level(poi_test=mu, expected=aposteriori),
                            theirs.exclusion_confidence_level(poi_test=mu, expected=aposteriori)):
                assert float(x) == pytest.approx(float(y), abs=0.005)
        assert float(ours.poi_upper_limit()) == pytest.approx(float(theirs.poi_upper_limit()),
                                                              rel=0.01)


def test_apriori_is_refused():
    ours = spey.get_backend("surrogate_stats")(path=str(ARTIFACT))
    with pytest.raises(InvalidInput, match="apriori"):
        ours.backend.negative_loglikelihood(1.0, expected=spey.ExpectationType.apriori)
