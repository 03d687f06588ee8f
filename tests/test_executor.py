"""The chunk executor: serial, local processes and Dask agree; runs resume; bad input is refused."""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate_stats._executor import (
    ChunkStore,
    ExecutorConfig,
    _cpu_count,
    _LocalBackend,
    fingerprint,
    run_chunks,
    worker_cache,
)
from surrogate_stats._executor_selftest import Probe, square
from surrogate_stats.errors import (
    InvalidInput,
    MissingChunk,
    MissingDependency,
    SchedulerUnreachable,
    TaskFailure,
)

FUNC = "surrogate_stats._executor_selftest:square"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _tasks(n: int, log: Path | None = None, **per_id) -> dict[str, dict]:
    """``n`` small tasks c0..c{n-1}; ``per_id`` adds options to single tasks (``c3={...}``)."""
    out = {}
    for i in range(n):
        name = f"c{i}"
        out[name] = {"name": name, "x": [float(i), -0.5 * i, 3.0], **per_id.get(name, {})}
        if log is not None:
            out[name]["log"] = str(log)
    return out


def _expected(tasks: dict, offset: float = 0.0) -> dict:
    return {i: square({"offset": offset} if offset else None, {"x": t["x"]})
            for i, t in tasks.items()}


def _assert_same(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for i in want:
        assert sorted(got[i]) == sorted(want[i]), i
        for name, arr in want[i].items():
            assert got[i][name].dtype == np.asarray(arr).dtype, (i, name)
            assert got[i][name].shape == np.shape(arr), (i, name)
            np.testing.assert_array_equal(got[i][name], arr)


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


def _counts(log: Path) -> collections.Counter:
    return collections.Counter(line.split()[0] for line in _lines(log))


@pytest.fixture(scope="module")
def dask_scheduler():
    """Address of a local Dask cluster: two worker processes, one thread each."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=None, silence_logs=logging.ERROR)
    yield cluster.scheduler_address
    cluster.close()


def _config(kind: str, request) -> ExecutorConfig:
    if kind == "dask":
        return ExecutorConfig(kind="dask", scheduler=request.getfixturevalue("dask_scheduler"))
    return ExecutorConfig(kind=kind, n_workers=2)


# -- the three executors ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["serial", "local", "dask"])
def test_executors_give_identical_results_and_deliver_shared_once_per_worker(
        kind, tmp_path, request):
    config = _config(kind, request)
    log, probe, builds = tmp_path / "tasks.log", tmp_path / "probe.log", tmp_path / "build.log"
    tasks = _tasks(8, log=log)
    shared = {"offset": 0.25, "probe": Probe(str(probe)), "build_log": str(builds),
              "big": list(range(10_000))}
    store = ChunkStore(tmp_path / "store", fingerprint("selftest"))

    got = run_chunks(FUNC, tasks, shared=shared, store=store, config=config, progress=False)
    _assert_same(got, _expected(tasks, offset=0.25))
    assert store.done() == set(tasks)
    assert sorted(_counts(log).values()) == [1] * 8

    # the shared payload is unpickled once per worker process (never per task), and the
    # worker_cache'd setup is built once per worker
    deliveries = _lines(probe)
    assert len(deliveries) == len(set(deliveries)), deliveries
    if kind == "serial":
        assert deliveries == [] and _lines(builds) == [str(os.getpid())]
    else:
        assert 1 <= len(deliveries) <= 2 and str(os.getpid()) not in deliveries
        assert len(_lines(builds)) == len(set(_lines(builds))) <= 2
        assert set(_lines(builds)) <= set(deliveries)

    # a second call finds everything stored: same arrays (dtypes, shapes), nothing recomputed
    reopened = ChunkStore(store.directory, fingerprint("selftest"))
    again = run_chunks(FUNC, tasks, shared=shared, store=reopened, config=config, progress=False)
    _assert_same(again, got)
    assert sorted(_counts(log).values()) == [1] * 8


def test_local_workers_are_spawned_with_limited_threads(tmp_path, monkeypatch):
    backend = _LocalBackend(FUNC, None, fingerprint(None), 2)
    try:
        assert backend.pool._mp_context.get_start_method() == "spawn"
    finally:
        backend.close(abort=False)
    for var in ("OMP_NUM_THREADS", "XLA_FLAGS"):
        monkeypatch.delenv(var, raising=False)
    tasks = {"a": {"x": [1.0], "report_threads": True}, "b": {"x": [2.0], "report_threads": True}}
    got = run_chunks(FUNC, tasks, store=ChunkStore(tmp_path, "t"),
                     config=ExecutorConfig(n_workers=2), progress=False)
    per_worker = max(1, _cpu_count() // 2)
    for r in got.values():
        assert int(r["omp_threads"]) == per_worker
        assert bool(r["xla_single_thread"]) == (per_worker == 1)


# -- interruptions and resuming ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["serial", "local"])
def test_a_failing_chunk_keeps_the_finished_ones_and_a_rerun_computes_only_the_rest(
        kind, tmp_path, request):
    log = tmp_path / "tasks.log"
    store = ChunkStore(tmp_path / "store", "fp")
    config = _config(kind, request)
    failing = _tasks(6, log=log, c3={"mode": "fail"})
    with pytest.raises(TaskFailure, match="chunk 'c3' failed.*ValueError: failing on purpose "
                                          "in c3") as info:
        run_chunks(FUNC, failing, store=store, config=config, progress=False)
    assert info.value.chunk_id == "c3"
    notes = "\n".join(info.value.__notes__)
    assert "rerunning resumes" in notes and str(store.directory) in notes
    if kind == "serial":
        assert store.done() == {"c0", "c1", "c2"}
        assert isinstance(info.value.__cause__, ValueError)
    else:
        assert "ValueError: failing on purpose in c3" in info.value.worker_traceback
        assert "worker traceback" in notes
    assert "c3" not in store.done() and store.done() >= {"c0"}
    finished = store.done()

    fixed = _tasks(6, log=log)
    got = run_chunks(FUNC, fixed, store=ChunkStore(tmp_path / "store", "fp"), config=config,
                     progress=False)
    _assert_same(got, _expected(fixed))
    counts = _counts(log)
    assert counts["c3"] == 2  # the failing attempt and the rerun
    assert all(counts[i] == 1 for i in fixed if i != "c3"), counts  # nothing done twice
    assert finished <= set(fixed)


def test_keyboard_interrupt_keeps_the_finished_chunks(tmp_path):
    store = ChunkStore(tmp_path, "fp")
    with pytest.raises(KeyboardInterrupt):
        run_chunks(FUNC, _tasks(5, c2={"mode": "interrupt"}), store=store,
                   config=ExecutorConfig(kind="serial"), progress=False)
    assert store.done() == {"c0", "c1"}


_DRIVER = """
import sys
from surrogate_stats._executor import ChunkStore, ExecutorConfig, run_chunks
if __name__ == "__main__":
    tasks, store = {tasks!r}, ChunkStore({store!r}, "fp")
    run_chunks({func!r}, tasks, store=store, config=ExecutorConfig(n_workers=1), progress=False)
"""


def _start_driver(tmp_path: Path, tasks: dict) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER.format(tasks=tasks, store=str(tmp_path / "store"), func=FUNC))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_chunks(store: Path, n: int, proc: subprocess.Popen, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.is_dir() and len(list(store.glob("*.npz"))) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the driver ended early: {proc.communicate()}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"no {n} chunks stored within {timeout} s")


def test_sigkilled_run_resumes_without_recomputing_finished_chunks(tmp_path):
    log = tmp_path / "tasks.log"
    tasks = _tasks(8, log=log)
    for t in tasks.values():
        t["sleep"] = 0.4
    proc = _start_driver(tmp_path, tasks)
    _wait_for_chunks(tmp_path / "store", 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker, mid-run
    proc.wait(timeout=30)
    store = ChunkStore(tmp_path / "store", "fp")
    finished = store.done()
    assert 2 <= len(finished) < 8
    before = _counts(log)

    got = run_chunks(FUNC, tasks, store=store, config=ExecutorConfig(kind="serial"),
                     progress=False)  # another executor may finish the run
    _assert_same(got, _expected(tasks))
    after = _counts(log)
    assert all(after[i] == before[i] == 1 for i in finished), (finished, after)
    assert all(after[i] == before[i] + 1 for i in tasks if i not in finished)


def test_ctrl_c_stops_local_workers_promptly(tmp_path):
    log = tmp_path / "tasks.log"
    tasks = _tasks(8, log=log)
    for t in tasks.values():
        t["sleep"] = 1.0
    proc = _start_driver(tmp_path, tasks)
    _wait_for_chunks(tmp_path / "store", 1, proc)
    os.kill(proc.pid, signal.SIGINT)  # the driver only, as a terminal's Ctrl-C reaches it first
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    time.sleep(0.5)
    for pid in {int(line.split()[1]) for line in _lines(log)}:  # the workers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert 1 <= len(ChunkStore(tmp_path / "store", "fp").done()) < 8


# -- the store --------------------------------------------------------------------------------
def test_store_refuses_another_runs_directory(tmp_path):
    ChunkStore(tmp_path / "s", "a" * 64)
    ChunkStore(tmp_path / "s", "a" * 64)  # the same run reopens it
    with pytest.raises(InvalidInput, match=f"{'a' * 64}.*{'b' * 64}.*delete"):
        ChunkStore(tmp_path / "s", "b" * 64)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not a chunk store"):
        ChunkStore(tmp_path / "other", "a")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="not a chunk-store manifest"):
        ChunkStore(tmp_path / "bad", "a")
    with pytest.raises(InvalidInput, match="fingerprint"):
        ChunkStore(tmp_path / "s", "")
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["fingerprint"] == "a" * 64


def test_store_round_trip_dtypes_and_bad_arrays(tmp_path):
    store = ChunkStore(tmp_path, "fp")
    store.put("p-1.x_2", {"f": np.arange(3, dtype=np.float32), "i": np.arange(2, dtype=np.int32),
                          "b": np.array([True, False]), "s": 2.5, "m": np.ones((2, 3))})
    got = store.get("p-1.x_2")
    assert got["f"].dtype == np.float64 and got["i"].dtype == np.int32
    assert got["b"].dtype == bool and got["s"].shape == () and got["m"].shape == (2, 3)
    with np.load(tmp_path / "p-1.x_2.npz", allow_pickle=False) as npz:  # plain numpy reads it
        np.testing.assert_array_equal(npz["m"], np.ones((2, 3)))
    for bad in ({"o": np.array([{}, 1], dtype=object)}, {"c": np.ones(2, complex)},
                {"s": np.array(["a"])}, {"": np.ones(1)}, {"__x": np.ones(1)}, [1, 2]):
        with pytest.raises(InvalidInput):
            store.put("q", bad)
    for bad_id in ("", ".hidden", "../up", "a/b", "x" * 129, 3):
        with pytest.raises(InvalidInput, match="chunk ids"):
            store.put(bad_id, {"a": np.ones(1)})
    with pytest.raises(MissingChunk, match="'nope' is not in"):
        store.get("nope")
    assert isinstance(MissingChunk("x"), KeyError)
    store.clear()
    assert store.done() == set() and (tmp_path / "manifest.json").exists()


def test_torn_or_corrupt_chunks_count_as_not_done(tmp_path):
    log = tmp_path / "tasks.log"
    tasks = _tasks(4, log=log)
    store = ChunkStore(tmp_path / "store", "fp")
    serial = ExecutorConfig(kind="serial")
    first = run_chunks(FUNC, tasks, store=store, config=serial, progress=False)
    d = store.directory
    blob = (d / "c1.npz").read_bytes()
    (d / "c1.npz").write_bytes(blob[: len(blob) // 2])  # torn
    (d / "c2.npz").write_bytes(b"\x00garbage")  # corrupt
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    from surrogate_stats.artifact._format import _host

    stale = d / f".c3.npz.tmp-{dead}-{_host()}-00ff"
    stale.write_bytes(b"half a chunk")

    store = ChunkStore(d, "fp")
    assert not stale.exists()  # a killed writer's temporary file is cleaned up
    with pytest.warns(RuntimeWarning, match="c1.npz.*torn or corrupt"):
        with pytest.raises(MissingChunk):
            store.get("c1")
    assert "c1" not in store.done()
    with pytest.warns(RuntimeWarning, match="c2.npz"):
        got = run_chunks(FUNC, tasks, store=store, config=serial, progress=False)
    _assert_same(got, first)
    assert _counts(log) == {"c0": 1, "c1": 2, "c2": 2, "c3": 1}


def test_chunks_of_other_inputs_are_not_reused(tmp_path):
    store = ChunkStore(tmp_path, "fp")
    serial = ExecutorConfig(kind="serial")
    run_chunks(FUNC, {"c0": {"x": [1.0]}}, store=store, config=serial, progress=False)
    with pytest.raises(InvalidInput, match="chunk 'c0'.*other inputs"):
        run_chunks(FUNC, {"c0": {"x": [2.0]}}, store=store, config=serial, progress=False)
    with pytest.raises(InvalidInput, match="chunk 'c0'.*other inputs"):
        run_chunks(FUNC, {"c0": {"x": [1.0]}}, shared={"offset": 1.0}, store=store,
                   config=serial, progress=False)


def test_a_finished_run_starts_no_executor(tmp_path):
    store = ChunkStore(tmp_path, "fp")
    tasks = _tasks(3)
    first = run_chunks(FUNC, tasks, store=store, config=ExecutorConfig(kind="serial"),
                       progress=False)
    nowhere = ExecutorConfig(kind="dask", scheduler="tcp://127.0.0.1:9", connect_timeout=0.1)
    _assert_same(run_chunks(FUNC, tasks, store=store, config=nowhere, progress=False), first)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="gpu"), "kind must be one of"),
    (dict(kind="dask"), "--scheduler tcp://HOST:PORT"),
    (dict(kind="dask", scheduler="tcp://a b:1"), "address like"),
    (dict(kind="dask", scheduler=8786), "address like"),
    (dict(scheduler="tcp://h:1"), "--executor dask"),
    (dict(n_workers=0), "n_workers must be"),
    (dict(n_workers=-2), "n_workers must be"),
    (dict(n_workers=True), "n_workers must be"),
    (dict(n_workers=1.5), "n_workers must be"),
    (dict(kind="dask", scheduler="tcp://h:1", connect_timeout=0), "connect_timeout"),
])
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(InvalidInput, match=match):
        ExecutorConfig(**kwargs)


def test_config_defaults_and_cli_flags():
    import argparse

    from surrogate_stats._executor import add_executor_arguments

    assert ExecutorConfig().workers == max(1, _cpu_count() // 2)
    assert ExecutorConfig(n_workers=3).workers == 3
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    args = parser.parse_args(["--executor", "dask", "--scheduler", "tcp://10.0.0.1:8786"])
    assert ExecutorConfig.from_args(args) == ExecutorConfig(kind="dask",
                                                            scheduler="tcp://10.0.0.1:8786")
    assert ExecutorConfig.from_args(parser.parse_args([])) == ExecutorConfig()


def test_bad_run_arguments_are_refused(tmp_path):
    store = ChunkStore(tmp_path, "fp")
    serial = ExecutorConfig(kind="serial")
    for func, match in (("square", "package.module:function"),
                        ("no_such_module_xyz:f", "cannot be imported"),
                        (lambda s, t: {}, "module-level function")):
        with pytest.raises(InvalidInput, match=match):
            run_chunks(func, _tasks(1), store=store, config=serial, progress=False)
    with pytest.raises(InvalidInput, match="differ only in case"):
        run_chunks(FUNC, {"A": {"x": [1]}, "a": {"x": [1]}}, store=store, config=serial)
    with pytest.raises(InvalidInput, match="tasks must be a dict"):
        run_chunks(FUNC, [{"x": [1]}], store=store, config=serial)
    with pytest.raises(InvalidInput, match="JSON-like"):
        run_chunks(FUNC, {"a": {"x": {1, 2}}}, store=store, config=serial)
    with pytest.raises(TaskFailure, match="chunk 'a'.*dtype <U7"):
        run_chunks(FUNC, {"a": {"mode": "bad"}}, store=store, config=serial, progress=False)
    # a module-level function is accepted as well as its name
    got = run_chunks(square, {"b": {"x": [2.0]}}, store=store, config=serial, progress=False)
    assert got["b"]["y"].tolist() == [4.0]


def test_unreachable_scheduler_fails_fast_with_the_address(tmp_path):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(SchedulerUnreachable, match=f"scheduler at {address} within 1 s"):
        run_chunks(FUNC, _tasks(1), store=ChunkStore(tmp_path, "fp"), progress=False,
                   config=ExecutorConfig(kind="dask", scheduler=address, connect_timeout=1.0))
    assert time.monotonic() - start < 15


def test_missing_dask_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'surrogate_stats\[dask\]'"):
        run_chunks(FUNC, _tasks(1), store=ChunkStore(tmp_path, "fp"), progress=False,
                   config=ExecutorConfig(kind="dask", scheduler="tcp://127.0.0.1:8786"))


# -- small pieces -----------------------------------------------------------------------------
def test_fingerprint_and_worker_cache_outside_a_task():
    a = {"b": [1, 2.5, None, True], "a": np.arange(3.0), "s": "x"}
    assert fingerprint(a) == fingerprint(dict(reversed(list(a.items()))))
    assert fingerprint(a) != fingerprint({**a, "a": np.arange(3.0) + 1e-12})
    assert fingerprint(np.zeros(1)) != fingerprint(np.zeros(())) != fingerprint(np.zeros(1, int))
    with pytest.raises(InvalidInput, match="JSON-like"):
        fingerprint({"f": object()})
    calls = []
    assert worker_cache("k", lambda: calls.append(1) or 5) == 5
    assert worker_cache("k", lambda: calls.append(1) or 5) == 5
    assert len(calls) == 2  # outside a task nothing is memoised


def test_importing_the_executor_is_light():
    code = textwrap.dedent("""
        import sys, surrogate_stats._executor, surrogate_stats._executor_selftest
        print([m for m in ("dask", "distributed", "jax", "tqdm", "onnxruntime")
               if m in sys.modules])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": SRC})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
