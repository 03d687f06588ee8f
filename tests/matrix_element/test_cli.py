"""``surrogate-stats me train`` and ``me unweight`` end to end (small sizes)."""

import json

import numpy as np
import pytest

from surrogate_stats.cli import main


def test_me_train_and_unweight(tmp_path, capsys):
    art = tmp_path / "ee"
    rc = main(["me", "train", "ee_mumu", "--sqrt-s", "91", "--n-train", "2000", "--n-test",
               "500", "--steps", "500", "--hidden", "16,16", "--out", str(art), "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["process"] == "ee_mumu" and summary["median_abs_rel_err"] < 0.05
    out = tmp_path / "ev.lhe"
    rc = main(["me", "unweight", str(art), "--n-events", "200", "--out", str(out),
               "--n-calibration", "3000", "--quiet"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("sigma", "sigma_err", "eps_full", "eps_1", "eps_2", "t_exact", "t_surrogate",
                "f_eff"):
        assert np.isfinite(res[key]), key
    assert res["n_events"] == 200
    assert out.read_text().count("<event>") == 200
    # sigma near the peak: about 2 nb (photon + Z), in pb
    assert res["sigma"] == pytest.approx(1.99e3, rel=0.1)
    rc = main(["me", "unweight", str(art), "--n-events", "20", "--out",
               str(tmp_path / "ev.npz"), "--n-calibration", "3000", "--quiet"])
    assert rc == 0 and np.load(tmp_path / "ev.npz")["momenta"].shape == (20, 4, 4)


def test_me_bad_input(tmp_path, capsys):
    assert main(["me", "train", "gg_ttbar", "--sqrt-s", "91", "--n-train", "200", "--out",
                 str(tmp_path / "x"), "--quiet"]) == 2
    assert "unknown process" in capsys.readouterr().err
    assert main(["me", "unweight", str(tmp_path / "missing"), "--n-events", "5", "--out",
                 str(tmp_path / "e.lhe")]) == 2
    assert main(["me", "train", "gg_gg", "--sqrt-s", "91", "--n-train", "200", "--hidden",
                 "a,b", "--out", str(tmp_path / "y"), "--quiet"]) == 2
