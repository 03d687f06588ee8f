"""One loaded surrogate used from 8 threads and from several processes gives results
bit-identical to sequential calls, through the numpy fast path (scalar and array) and through
the ONNX graph; calls do not change the surrogate's state."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from surrogate_stats import load_surrogate
from tests.hardening.conftest import PUBLISHED

N_THREADS = 8
MUS = np.random.default_rng(20261126).uniform(0.0, 14.0, 300)


def _evaluate(s, mus=MUS) -> dict[str, bytes]:
    """Every evaluation path, as raw bytes (bit-identity, not closeness)."""
    out = {
        "nll_scalar": np.array([s.nll(float(m)) for m in mus]),
        "tmu_scalar_exp": np.array([s.tmu(float(m), expected=True) for m in mus]),
        "nll_array": s.nll(mus),
        "tmu_array_exp": s.tmu(mus.reshape(10, 30), expected=True),
    }
    tmu, nll = s._session.run(["tmu", "nll"], {"mu": mus})
    out["onnx_tmu"], out["onnx_nll"] = tmu, nll
    return {k: np.ascontiguousarray(v).tobytes() for k, v in out.items()}


def _state(s) -> str:
    """A digest of every array and number the surrogate holds."""
    h = hashlib.sha256()

    def visit(obj):
        if isinstance(obj, np.ndarray):
            h.update(obj.tobytes())
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                visit(x)
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                visit(obj[k])
        elif isinstance(obj, (int, float, str, bool)) or obj is None:
            h.update(repr(obj).encode())
        elif hasattr(obj, "__dict__"):
            visit(vars(obj))
    visit({k: v for k, v in vars(s).items() if k not in ("_session", "metadata")})
    return h.hexdigest()


def test_eight_threads_are_bit_identical_to_sequential():
    s = load_surrogate(PUBLISHED)
    before = _state(s)
    reference = _evaluate(s)
    barrier = threading.Barrier(N_THREADS)

    def work(_):
        barrier.wait()  # all threads call at the same time
        return [_evaluate(s) for _ in range(3)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        results = [r for rs in pool.map(work, range(N_THREADS)) for r in rs]
    assert len(results) == 3 * N_THREADS
    for r in results:
        assert r == reference
    assert _state(s) == before


def test_threads_with_different_options_do_not_interfere():
    """Two surrogates of the same artifact with different settings, used at once: no shared
    (global) state leaks between them."""
    import warnings

    strict = load_surrogate(PUBLISHED, on_extrapolation="raise", threads=1)
    lax = load_surrogate(PUBLISHED, on_extrapolation="ignore", threads=2)
    barrier = threading.Barrier(2)

    def use_strict():
        barrier.wait()
        errors = 0
        for _ in range(200):
            try:
                strict.nll(20.0)
            except ValueError:
                errors += 1
        return errors

    def use_lax():
        barrier.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return sum(np.isfinite(lax.nll(20.0)) for _ in range(200))

    with ThreadPoolExecutor(2) as pool:
        f1, f2 = pool.submit(use_strict), pool.submit(use_lax)
        assert f1.result() == 200 and f2.result() == 200


def _in_child(path: str) -> dict[str, bytes]:
    return _evaluate(load_surrogate(path))


def test_processes_are_bit_identical_to_sequential():
    reference = _evaluate(load_surrogate(PUBLISHED))
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, nothing inherited
    with ctx.Pool(3) as pool:
        results = pool.map(_in_child, [str(PUBLISHED)] * 3)
    for r in results:
        assert r == reference
