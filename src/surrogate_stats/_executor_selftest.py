"""Task functions for testing :mod:`surrogate_stats._executor` (and smoke-testing a cluster).

They live in the package so that spawned local workers and Dask workers, which import task
functions by name, find them wherever surrogate_stats is installed::

    run_chunks("surrogate_stats._executor_selftest:square", {"a": {"x": [1, 2]}},
               shared={"offset": 0.5}, store=..., config=ExecutorConfig(kind="dask", ...))
"""

from __future__ import annotations

import os
import time

import numpy as np

from surrogate_stats._executor import worker_cache

__all__ = ["Probe", "square"]


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:  # one short write per line: safe with several writers
        f.write(line + "\n")


def _setup(shared: dict) -> float:
    if shared.get("build_log"):
        _append(shared["build_log"], str(os.getpid()))
    return float(shared.get("offset", 0.0))


def square(shared: dict | None, task: dict) -> dict[str, np.ndarray]:
    """``{"y": x**2 + offset, "n": len(x), "positive": x > 0}`` for ``task["x"]``.

    Task options: ``name`` and ``log`` (append ``name pid`` to the file ``log``), ``sleep``
    (seconds), ``mode`` = ``"fail"`` (raise ValueError), ``"interrupt"`` (raise
    KeyboardInterrupt), ``"bad"`` (return strings); ``report_threads`` (add the worker's
    ``OMP_NUM_THREADS`` and whether XLA runs single-threaded). ``shared`` may hold ``offset`` and
    ``build_log`` (the setup, memoised with :func:`worker_cache`, appends the pid there).
    """
    offset = worker_cache("setup", lambda: _setup(shared)) if shared else 0.0
    name = task.get("name", "?")
    if task.get("log"):
        _append(task["log"], f"{name} {os.getpid()}")
    if task.get("sleep"):
        time.sleep(task["sleep"])
    mode = task.get("mode")
    if mode == "fail":
        raise ValueError(f"failing on purpose in {name}")
    if mode == "interrupt":
        raise KeyboardInterrupt
    if mode == "bad":
        return {"y": np.array(["not", "numbers"])}
    x = np.asarray(task["x"], dtype=np.float64)
    out = {"y": x**2 + offset, "n": np.int64(x.size), "positive": x > 0}
    if task.get("report_threads"):  # what the executor set up for this worker
        out["omp_threads"] = np.int64(os.environ.get("OMP_NUM_THREADS", -1))
        out["xla_single_thread"] = np.bool_(
            "--xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", ""))
    return out


def _loaded(path: str) -> Probe:
    _append(path, str(os.getpid()))
    return Probe(path)


class Probe(str):
    """A string (a log file path) that appends the pid to that file each time it is unpickled.

    Put one in a shared payload to count how often the payload reaches each process.
    """

    def __reduce__(self):
        return (_loaded, (str(self),))
