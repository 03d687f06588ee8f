"""``surrogate-stats flow ...`` on parquet, csv and ROOT files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("jax")
pd = pytest.importorskip("pandas")


def _frame(x, c, extra=True):
    from surrogate_stats.flows.toys import CONDITIONS, VARIABLES

    df = pd.DataFrame(np.c_[x, c], columns=list(VARIABLES) + list(CONDITIONS))
    if extra:
        df["run"] = np.arange(len(df))
        df["weight"] = 1.0
    return df


def test_train_correct_validate(tmp_path, toy_split, tiny_artifact, capsys):
    pytest.importorskip("uproot")
    pytest.importorskip("sklearn")
    from surrogate_stats.cli import main
    from surrogate_stats.flows._io import read_table, write_table

    xm, cm, xd, cd = toy_split
    write_table(_frame(xm[:1500], cm[:1500]), tmp_path / "mc.parquet")
    write_table(_frame(xd[:1500], cd[:1500]), tmp_path / "data.csv")
    rc = main(["flow", "train-correction", "--mc", str(tmp_path / "mc.parquet"),
               "--data", str(tmp_path / "data.csv"), "--variables", "r9,sieie,eresp,s4,iso",
               "--conditions", "pt,eta,pileup", "--mc-weights", "weight",
               "--out", str(tmp_path / "art"), "--epochs", "1", "--layers", "2",
               "--hidden", "8", "--patience", "3", "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["spikes"]["value"] == [0.0]
    train = json.loads((tmp_path / "art" / "metadata.json").read_text())["config"]["train"]
    assert (train["patience"], train["min_improvement"]) == (3, 0.0)

    write_table(_frame(xm[1500:2000], cm[1500:2000]), tmp_path / "in.root")
    rc = main(["flow", "correct", str(tiny_artifact), "--in", str(tmp_path / "in.root"),
               "--out", str(tmp_path / "out.root")])
    assert rc == 0
    out = read_table(tmp_path / "out.root")
    src = read_table(tmp_path / "in.root")
    assert list(out.columns) == list(src.columns)
    np.testing.assert_array_equal(out["run"], src["run"])  # other columns untouched
    np.testing.assert_array_equal(out["pt"], src["pt"])
    assert not np.allclose(out["r9"], src["r9"])
    capsys.readouterr()

    write_table(_frame(xm[2000:], cm[2000:]), tmp_path / "mc_test.parquet")
    write_table(_frame(xd[2000:], cd[2000:]), tmp_path / "data_test.parquet")
    rc = main(["flow", "validate", str(tiny_artifact), "--mc", str(tmp_path / "mc_test.parquet"),
               "--data", str(tmp_path / "data_test.parquet"), "--plot",
               str(tmp_path / "m.png"), "--quiet"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("auc_before", "auc_after", "wasserstein_before", "wasserstein_after"):
        assert k in rep
    assert 0.5 < rep["auc_before"] <= 1.0
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_cli_errors_are_one_line(tmp_path, tiny_artifact, toy_split, capsys):
    from surrogate_stats.cli import main
    from surrogate_stats.flows._io import write_table

    xm, cm, _, _ = toy_split
    df = _frame(xm[:50], cm[:50]).drop(columns=["iso"])
    write_table(df, tmp_path / "in.parquet")
    rc = main(["flow", "correct", str(tiny_artifact), "--in", str(tmp_path / "in.parquet"),
               "--out", str(tmp_path / "o.parquet")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "lacks the columns ['iso']" in err and len(err.strip().splitlines()) == 1
    rc = main(["flow", "correct", str(tiny_artifact), "--in", str(tmp_path / "in.txt"),
               "--out", str(tmp_path / "o.parquet")])
    assert rc == 2
    capsys.readouterr()
    rc = main(["flow", "train-correction", "--mc", str(tmp_path / "in.parquet"),
               "--data", str(tmp_path / "in.parquet"), "--variables", "r9,sieie",
               "--out", str(tmp_path / "art0"), "--patience", "0", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "patience must be >= 1" in err and len(err.strip().splitlines()) == 1
