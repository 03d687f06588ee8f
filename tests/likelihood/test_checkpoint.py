"""Label generation checkpoints: a killed `likelihood train` resumes without refitting."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from surrogate_stats import load_surrogate
from surrogate_stats.errors import InvalidInput
from tests.conftest import THREE_L


def test_checkpoint_file_roundtrip_torn_line_and_foreign_run(tmp_path):
    from surrogate_stats.likelihood._exact import FitResult
    from surrogate_stats.likelihood._labels import FitCheckpoint

    path = tmp_path / "fits.jsonl"
    cp = FitCheckpoint(path, "run-a")
    job = ("observed", [0.5, 1.0], None)
    key = cp.key(job, (0.0, 10.0))
    results = [FitResult(0.5, 70.25, (0.5, 1.1), 1), FitResult(1.0, 71.0, (1.0, 0.9), 2)]
    cp.put(key, results)
    with open(path, "a") as f:
        f.write('{"key": "torn')  # a write cut by a kill
    again = FitCheckpoint(path, "run-a")
    assert again.get(key) == results and again.n_resumed == 2
    assert again.get(cp.key(("observed", [0.5, 1.0], [0.1]), (0.0, 10.0))) is None
    with pytest.raises(InvalidInput, match="different run"):
        FitCheckpoint(path, "run-b")


def test_killed_train_resumes_and_gives_the_same_surrogate(tmp_path, trained_3l):
    out = tmp_path / "3l"
    fits = tmp_path / "3l.fits.jsonl"
    cmd = [sys.executable, "-m", "surrogate_stats", "likelihood", "train",
           str(THREE_L["background"]), "--patchset", str(THREE_L["patchset"]),
           "--patch", THREE_L["patch"], "--out", str(out), "--quiet"]
    kill_after = random.randint(3, 20)  # sweeps finished before the kill: a random moment
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if fits.exists() and len(fits.read_text().splitlines()) > kill_after:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "train finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "metadata.json").exists()
    n_done = len(fits.read_text().splitlines()) - 1

    res = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=600)  # logs on
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming from" in res.stderr
    assert not fits.exists()  # removed once the artifact is written
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n_fits"] == trained_3l[1]["labels"]["n_fits"]
    assert n_done > 0
    # the same labels, hence (training is deterministic) the same surrogate
    mus = np.linspace(*load_surrogate(out).domain, 17)
    a, b = load_surrogate(out), load_surrogate(trained_3l[0])
    np.testing.assert_allclose(a.tmu(mus), b.tmu(mus), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.tmu(mus, expected=True), b.tmu(mus, expected=True),
                               rtol=1e-12, atol=1e-12)
