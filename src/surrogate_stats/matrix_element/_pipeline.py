"""Training pipeline: exact |M|^2 at RAMBO points -> MLP -> ONNX artifact, with its records."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element._phase_space import Cuts
from surrogate_stats.matrix_element._surrogate import (
    SurrogateConfig,
    accuracy,
    fit_surrogate,
    sample_points,
)

__all__ = ["train"]


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("jax", "optax", "onnx", "onnxruntime"):
        try:
            out[mod] = optional_import(mod).__version__
        except Exception:  # noqa: BLE001 - versions are informational
            out[mod] = None
    return out


def _label(process, p, progress, desc):
    """Exact |M|^2 at ``p`` in blocks, with a progress bar."""
    tqdm = optional_import("tqdm.auto").tqdm
    block = 2048
    out = np.empty(p.shape[0])
    with tqdm(total=p.shape[0], desc=desc, unit="pt", disable=not progress, leave=False) as bar:
        for i in range(0, p.shape[0], block):
            out[i:i + block] = process.matrix_element(p[i:i + block])
            bar.update(min(block, p.shape[0] - i))
    return out


def train(process, out: str | Path, *, seed: int = 0, n_train: int = 20000,
          n_test: int = 5000, cuts: Cuts | None = None,
          config: SurrogateConfig = SurrogateConfig(), progress: bool = True,
          log=lambda _m: None):
    """Train a surrogate of ``process`` inside ``cuts`` and write it as an artifact to ``out``.

    Points: ``n_train`` RAMBO points inside the cuts (seed ``seed``) for training and early
    stopping, ``n_test`` fresh ones (seed ``seed + 1``) for the accuracy recorded in the
    metadata (``accuracy``: ln-ratio distribution, median |rel err|, top-1% median); the test
    values themselves are stored in ``validation.npz`` (``exact_me2``, ``surrogate_me2``).

    Returns:
        ``(surrogate, metadata)``: the loaded :class:`MatrixElementSurrogate` and its metadata.
    """
    jax = optional_import("jax")
    from surrogate_stats import load_surrogate
    from surrogate_stats.matrix_element._export import save_surrogate

    if int(n_train) < 100:
        raise InvalidInput(f"n_train must be >= 100; got {n_train}")
    cuts = process.default_cuts if cuts is None else cuts
    t0 = time.perf_counter()
    p = sample_points(seed, process, int(n_train), cuts)
    log(f"exact |M|^2 at {p.shape[0]} training points ...")
    me2 = _label(process, p, progress, f"exact {process.name}")
    label_seconds = time.perf_counter() - t0
    model, record = fit_surrogate(jax.random.key(seed), process, p, me2, config=config,
                                  progress=progress)
    pt = sample_points(seed + 1, process, int(n_test), cuts)
    t1 = time.perf_counter()
    exact_test = _label(process, pt, progress, f"exact {process.name} (test)")
    test_seconds = time.perf_counter() - t1
    sur_test = model(pt)
    acc = accuracy(sur_test, exact_test)
    log(f"test accuracy: median |rel err| {acc['median_abs_rel_err']:.3g}, top 1% "
        f"{acc['top_median_abs_rel_err']:.3g}")
    meta = {
        "name": Path(out).name,
        "provenance": {"seed": int(seed), "versions": _versions(),
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "training": {"config": config.to_dict(), "n_train_points": int(p.shape[0]),
                     "label_seconds": label_seconds, **record},
        "accuracy": {**acc, "n_test": int(pt.shape[0]), "seed": int(seed) + 1,
                     "exact_seconds": test_seconds},
    }
    meta["training"]["config"]["train"] = dict(meta["training"]["config"]["train"])
    save_surrogate(model, process, out, cuts=cuts, metadata=meta,
                   validation={"exact_me2": exact_test, "surrogate_me2": sur_test})
    sur = load_surrogate(out)
    return sur, sur.metadata
