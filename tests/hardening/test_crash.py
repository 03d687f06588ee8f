"""Crash safety of write_artifact: a writer killed (SIGKILL) at random moments never leaves an
artifact that is missing, incomplete or mixed; stale temporary directories are cleaned."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate_stats.artifact import _format, read_artifact, recover_artifact, write_artifact
from tests.hardening.conftest import PUBLISHED, ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

WRITER = """
import sys, numpy as np
from pathlib import Path
from surrogate_stats.artifact import _format
from surrogate_stats.artifact import write_artifact
target, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "two_renames":  # as on platforms without renameat2(RENAME_EXCHANGE)
    _format._exchange = lambda a, b: False
blob = Path(sys.argv[3]).read_bytes()
gen = int(sys.argv[4])
print("ready", flush=True)
while True:
    gen += 1
    meta = {"kind": "crash_test", "gen": gen,
            "graphs": {"model": {"inputs": [], "outputs": []}}}
    write_artifact(target, meta, {"model": blob},
                   {"data": {"gen": np.full(20000, float(gen))}})
"""


def _check(target: Path, last_gen: int) -> int:
    """``target`` is one complete artifact whose parts belong together."""
    meta, graphs, arrays = read_artifact(target)
    gen = meta["gen"]
    assert np.all(arrays["data"]["gen"] == gen), "metadata and arrays from different writes"
    assert graphs["model"] == (PUBLISHED / "model.onnx").read_bytes()
    assert gen >= last_gen, "an older artifact came back"
    return gen


@pytest.mark.parametrize("mode", ["exchange", "two_renames"])
def test_killed_writer_leaves_old_or_new_artifact(tmp_path, mode):
    rng = random.Random(8)
    target = tmp_path / "art"
    write_artifact(target, {"kind": "crash_test", "gen": 0,
                            "graphs": {"model": {"inputs": [], "outputs": []}}},
                   {"model": (PUBLISHED / "model.onnx").read_bytes()},
                   {"data": {"gen": np.full(20000, 0.0)}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    gen, kills = 0, 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), mode,
                                 str(PUBLISHED / "model.onnx"), str(gen + 1000 * (kills + 1))],
                                stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.01, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if mode == "two_renames":
            # killed between the two renames, NAME is absent and the complete previous
            # artifact waits in .NAME.old-PID-*: recovery (also run by every write) restores it
            recover_artifact(target)
        gen = _check(target, gen)
    assert kills == 6 and gen > 0
    # the next write removes what the killed writers left behind
    write_artifact(target, {"kind": "crash_test", "gen": gen + 1,
                            "graphs": {"model": {"inputs": [], "outputs": []}}},
                   {"model": (PUBLISHED / "model.onnx").read_bytes()},
                   {"data": {"gen": np.full(20000, float(gen + 1))}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    _check(target, gen + 1)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recovery_after_a_kill_between_the_two_renames(tmp_path):
    """The window of the two-rename fallback, reproduced exactly."""
    target = tmp_path / "art"
    graphs = {"model": (PUBLISHED / "model.onnx").read_bytes()}
    spec = {"graphs": {"model": {"inputs": [], "outputs": []}}}
    write_artifact(target, {"kind": "t", "gen": 1, **spec}, graphs)
    tag = f"{_dead_pid()}-{_format._host()}"
    old = tmp_path / f".art.old-{tag}-abcd1234"
    os.rename(target, old)  # the writer renamed the old artifact away ...
    tmp = tmp_path / f".art.tmp-{tag}-xyz"
    tmp.mkdir()  # ... and was killed before renaming its (here: unfinished) new one in
    (tmp / "metadata.json").write_text("{")
    with pytest.raises(Exception, match="recover_artifact"):
        read_artifact(target)
    assert recover_artifact(target) == target
    assert read_artifact(target)[0]["gen"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_live_writers_temporary_directory_is_left_alone(tmp_path):
    target = tmp_path / "art"
    graphs = {"model": (PUBLISHED / "model.onnx").read_bytes()}
    spec = {"graphs": {"model": {"inputs": [], "outputs": []}}}
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = tmp_path / f".art.tmp-{sleeper.pid}-{_format._host()}-busy"
        busy.mkdir()
        write_artifact(target, {"kind": "t", "gen": 1, **spec}, graphs)
        assert busy.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    write_artifact(target, {"kind": "t", "gen": 2, **spec}, graphs)
    assert not busy.exists()


def test_another_hosts_recent_temporary_directory_is_left_alone(tmp_path):
    graphs = {"model": (PUBLISHED / "model.onnx").read_bytes()}
    spec = {"graphs": {"model": {"inputs": [], "outputs": []}}}
    other = "0" * 8 if _format._host() != "0" * 8 else "1" * 8
    remote = tmp_path / f".art.tmp-{_dead_pid()}-{other}-remote"
    remote.mkdir()
    write_artifact(tmp_path / "art", {"kind": "t", **spec}, graphs)
    assert remote.is_dir()
    week_ago = time.time() - _format.FOREIGN_STALE_SECONDS - 60
    os.utime(remote, (week_ago, week_ago))
    write_artifact(tmp_path / "art", {"kind": "t", **spec}, graphs)
    assert not remote.exists()
