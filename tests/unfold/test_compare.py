"""compare(): one call, every method on the same pseudo-experiments; the CLI's JSON line."""

import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.unfold import METHODS, UnfoldResult, compare, coverage, histogram

SMALL = dict(n_pseudo=3, n_sim=6000, n_data=3000, n_bins=10, progress=False)


@dataclass(frozen=True)
class DetectorAsTruth:
    """A deliberately naive method: the measured histogram taken as the answer (plug-in demo)."""

    name: str = "naive"

    def __call__(self, key, data, *, edges, progress=False):
        x, w = data.data.measured()
        hs = [histogram(x[:, k], e, weights=w) for k, e in enumerate(edges)]
        return UnfoldResult(self.name, tuple(h[0] for h in hs), tuple(h[1] for h in hs))


def test_ibu_beats_the_prior_and_a_plugged_in_method_runs(tmp_path):
    rep = compare("gaussian", ["ibu", DetectorAsTruth()], **SMALL)
    out = rep.to_dict()
    assert out["toy"] == "gaussian" and set(out["methods"]) == {"ibu", "naive"}
    ibu = out["methods"]["ibu"]
    for key in ("wasserstein", "triangular", "coverage68", "coverage95", "chi2_ndf"):
        assert key in ibu
    # unfolding is much closer to the truth than the simulation's prior (issue: <= 0.3)
    assert max(ibu["wasserstein_over_prior"]) <= 0.3
    assert ibu["wasserstein"][0] < out["methods"]["naive"]["wasserstein"][0]
    assert 0 <= ibu["coverage68"] <= ibu["coverage95"] <= 1
    assert rep.metrics["ibu"]["wasserstein"].shape == (3, 1)
    assert "| ibu | x |" in rep.table()
    paths = rep.plot(tmp_path)
    assert [p.name for p in paths] == ["unfold_gaussian_ibu.png", "unfold_gaussian_naive.png"]
    assert all(p.stat().st_size > 10000 for p in paths)
    json.loads(rep.to_json())


def test_multidim_and_substructure_ibu():
    for toy in ("multidim", "substructure"):
        out = compare(toy, ["ibu"], **SMALL).to_dict()
        ratio = np.array(out["methods"]["ibu"]["wasserstein_over_prior"])
        assert np.all(ratio < 0.6), (toy, ratio)  # small samples: a loose bound here


def test_registry_and_bad_method():
    assert {"ibu", "omnifold"} <= set(METHODS)
    with pytest.raises(InvalidInput, match="unknown unfolding method"):
        compare("gaussian", ["nope"], **SMALL)
    with pytest.raises(InvalidInput, match="unknown toy"):
        compare("nope", ["ibu"], **SMALL)
    with pytest.raises(InvalidInput, match="too few events"):
        compare("gaussian", ["ibu"], n_pseudo=1, n_sim=2000, n_data=30, n_bins=20,
                progress=False)


def test_cli_prints_the_issue_json_last():
    res = subprocess.run(
        [sys.executable, "-m", "surrogate_stats", "unfold", "compare", "--toy", "gaussian",
         "--methods", "ibu,omnifold", "--n-pseudo", "1", "--n-sim", "6000",
         "--n-data", "3000", "--n-bins", "10", "--quiet"],
        capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["toy"] == "gaussian" and set(out["methods"]) == {"ibu", "omnifold"}
    assert out["settings"]["n_sim"] == 6000 and out["settings"]["n_bins"] == 10
    for m in out["methods"].values():
        assert len(m["wasserstein"]) == len(m["triangular"]) == 1
        assert 0 <= m["coverage68"] <= 1 and 0 <= m["coverage95"] <= 1
    # OmniFold on the Gaussian example: far closer to the truth than the prior
    assert out["methods"]["omnifold"]["wasserstein_over_prior"][0] < 0.5


def test_cli_bad_toy_exits_2():
    res = subprocess.run([sys.executable, "-m", "surrogate_stats", "unfold", "compare",
                          "--toy", "nope"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_coverage_takes_any_method_callable():
    cov = coverage("gaussian", DetectorAsTruth(), levels=(0.5, 0.9), **SMALL)
    assert set(cov) == {0.5, 0.9} and 0 <= cov[0.5] <= cov[0.9] <= 1
    # the detector level is not the truth: its stat-only intervals under-cover badly
    assert cov[0.9] < 0.6

    @dataclass(frozen=True)
    class NoErrors(DetectorAsTruth):
        def __call__(self, key, data, *, edges, progress=False):
            return UnfoldResult("none", super().__call__(key, data, edges=edges).probs)

    with pytest.raises(InvalidInput, match="no per-bin errors"):
        coverage("gaussian", NoErrors(), **SMALL)


def test_cli_unknown_method_is_one_line_exit_2():
    res = subprocess.run([sys.executable, "-m", "surrogate_stats", "unfold", "compare",
                          "--toy", "gaussian", "--methods", "ibu,nope", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        "surrogate-stats: error: unknown unfolding method 'nope'")
