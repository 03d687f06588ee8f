"""Training an MLP surrogate of ln|M|^2 (after dividing by a known singular factor)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element._features import DEFAULT_FACTOR, feature_spec
from surrogate_stats.matrix_element._phase_space import Cuts, phase_space_volume, rambo
from surrogate_stats.matrix_element._processes import Process
from surrogate_stats.train import TrainConfig, fit

__all__ = ["SurrogateConfig", "MESurrogateModel", "fit_surrogate", "accuracy", "sample_points"]


@dataclass(frozen=True)
class SurrogateConfig:
    """Hyperparameters of the |M|^2 surrogate (JSON-able).

    Attributes:
        hidden: widths of the tanh hidden layers.
        factor: singular factor divided out ("auto": the process's default, see
            :func:`~surrogate_stats.matrix_element._features.feature_spec`).
        val_fraction: share of the points held out for early stopping and accuracy.
        train: the optimiser settings (mini-batch Adam).
    """

    hidden: tuple = (64, 64, 64)
    factor: str = "auto"
    val_fraction: float = 0.2
    train: TrainConfig = TrainConfig(learning_rate=3e-3, steps=20000, chunk=500, patience=8,
                                     polish_steps=0, batch_size=512)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


class MESurrogateModel:
    """The trained network and its normalisation (numpy arrays), evaluable in JAX and numpy.

    ``ln|M|^2 = ln F(p) + y_mean + y_std * MLP((ln(I/s) - x_mean) / x_std)``.
    """

    def __init__(self, spec, layers, x_mean, x_std, y_mean, y_std):
        self.spec = spec
        self.layers = [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in layers]
        self.x_mean = np.asarray(x_mean, np.float64)
        self.x_std = np.asarray(x_std, np.float64)
        self.y_mean = float(y_mean)
        self.y_std = float(y_std)

    def log_me_np(self, p: np.ndarray) -> np.ndarray:
        logi = self.spec.invariants_np(p)
        h = (logi - self.x_mean) / self.x_std
        for i, (W, b) in enumerate(self.layers):
            h = h @ W + b
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        return self.spec.log_factor_np(logi) + self.y_mean + self.y_std * h[:, 0]

    def log_me_jax(self, p):
        """The same in JAX (dtype of ``p``); used for the parity tests with ONNX."""
        jnp = optional_import("jax.numpy")
        logi = self.spec.invariants_jax(p)
        h = (logi - jnp.asarray(self.x_mean, p.dtype)) / jnp.asarray(self.x_std, p.dtype)
        for i, (W, b) in enumerate(self.layers):
            h = h @ jnp.asarray(W, p.dtype) + jnp.asarray(b, p.dtype)
            if i < len(self.layers) - 1:
                h = jnp.tanh(h)
        return self.spec.log_factor_jax(logi) + self.y_mean + self.y_std * h[:, 0]

    def __call__(self, p) -> np.ndarray:
        return np.exp(self.log_me_np(np.asarray(p, np.float64)))

    def export_arrays(self) -> dict:
        out = {"x_mean": self.x_mean, "x_std": self.x_std,
               "y": np.array([self.y_mean, self.y_std])}
        for i, (W, b) in enumerate(self.layers):
            out[f"W{i}"], out[f"b{i}"] = W, b
        return out


def sample_points(seed, process: Process, n: int, cuts: Cuts | None = None,
                  *, max_tries: int = 200) -> np.ndarray:
    """``n`` RAMBO points passing ``cuts`` (default: the process's), ``[n, 2 + n_out, 4]``."""
    cuts = process.default_cuts if cuts is None else cuts
    rng = np.random.default_rng(seed)
    got, total = [], 0
    for _ in range(max_tries):
        p = rambo(rng, max(2 * (n - total), 1024), process.n_out, process.sqrt_s)
        p = p[cuts.passes(p)]
        got.append(p[: n - total])
        total += got[-1].shape[0]
        if total >= n:
            return np.concatenate(got)
    raise InvalidInput(f"the cuts {cuts} let too few RAMBO points through ({total} of {n} "
                       "wanted); loosen them")


def fit_surrogate(key, process: Process, momenta: np.ndarray, me2: np.ndarray, *,
                  config: SurrogateConfig = SurrogateConfig(), progress: bool = True):
    """Fit the surrogate to exact ``me2`` at ``momenta`` (points inside the cuts).

    Returns:
        ``(model, record)``: the :class:`MESurrogateModel` and a JSON-able record with the
        training history, the validation indices' accuracy (:func:`accuracy`) and timings.
    """
    jax = optional_import("jax")
    jnp = jax.numpy
    me2 = np.asarray(me2, np.float64)
    if momenta.shape[0] != me2.shape[0] or momenta.shape[0] < 20:
        raise InvalidInput(f"need >= 20 points with one |M|^2 each; got {momenta.shape[0]} "
                           f"momenta and {me2.shape[0]} values")
    if not np.all(np.isfinite(me2)) or np.any(me2 <= 0):
        raise InvalidInput("training |M|^2 must be finite and > 0 (train inside the cuts)")
    factor = DEFAULT_FACTOR[process.name] if config.factor == "auto" else config.factor
    spec = feature_spec(process.name, process.n_particles, factor)
    logi = spec.invariants_np(momenta)
    target = np.log(me2) - spec.log_factor_np(logi)
    k_split, k_init, k_fit = jax.random.split(key, 3)
    perm = np.asarray(jax.random.permutation(k_split, me2.shape[0]))
    n_val = max(int(round(config.val_fraction * me2.shape[0])), 10)
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x_mean, x_std = logi[tr].mean(0), logi[tr].std(0)
    x_std = np.where(x_std < 1e-6, 1.0, x_std)  # constant invariants (e.g. s_34 = s)
    y_mean, y_std = float(target[tr].mean()), float(target[tr].std() + 1e-12)
    x = ((logi - x_mean) / x_std).astype(np.float32)
    y = ((target - y_mean) / y_std).astype(np.float32)

    sizes = [x.shape[1], *config.hidden, 1]
    keys = jax.random.split(k_init, len(sizes) - 1)
    params = []
    for kk, (a, b) in zip(keys, zip(sizes[:-1], sizes[1:])):
        W = jax.random.normal(kk, (a, b), jnp.float32) * math.sqrt(1.0 / a)
        params.append((W, jnp.zeros(b, jnp.float32)))
    params[-1] = (params[-1][0] * 0.1, params[-1][1])

    def forward(params, xx):
        h = xx
        for i, (W, b) in enumerate(params):
            h = h @ W + b
            if i < len(params) - 1:
                h = jnp.tanh(h)
        return h[:, 0]

    def loss_fn(params, data):
        xx, yy = data
        return jnp.mean((forward(params, xx) - yy) ** 2)

    t0 = time.perf_counter()
    best, history = fit(k_fit, params, loss_fn, (jnp.asarray(x[tr]), jnp.asarray(y[tr])),
                        (jnp.asarray(x[val]), jnp.asarray(y[val])), config=config.train,
                        progress=progress, desc=f"training {process.name} surrogate")
    train_seconds = time.perf_counter() - t0
    layers = [(np.asarray(W, np.float64), np.asarray(b, np.float64)) for W, b in best]
    model = MESurrogateModel(spec, layers, x_mean, x_std, y_mean, y_std)
    pred = model(momenta[val])
    record = {"history": history.as_dict(), "train_seconds": train_seconds,
              "n_train": int(tr.size), "n_val": int(val.size), "factor": factor,
              "validation": accuracy(pred, me2[val])}
    return model, record


def accuracy(surrogate_me2, exact_me2, *, top_fraction: float = 0.01) -> dict:
    """Accuracy of a surrogate: the ln(surrogate/exact) distribution and relative errors.

    Returns:
        ``median_abs_rel_err``, ``p90_abs_rel_err``, ``max_abs_rel_err``, the same median
        restricted to the top ``top_fraction`` of exact |M|^2 (``top_median_abs_rel_err``),
        the mean and standard deviation of ``ln r`` and its 1/50/99 percentiles.
    """
    s = np.asarray(surrogate_me2, np.float64)
    e = np.asarray(exact_me2, np.float64)
    r = s / e
    lr = np.log(np.maximum(r, 1e-300))
    rel = np.abs(r - 1.0)
    top = e >= np.quantile(e, 1.0 - top_fraction)
    return {"n": int(e.size), "median_abs_rel_err": float(np.median(rel)),
            "p90_abs_rel_err": float(np.quantile(rel, 0.9)),
            "max_abs_rel_err": float(rel.max()),
            "top_median_abs_rel_err": float(np.median(rel[top])),
            "top_fraction": top_fraction,
            "ln_ratio_mean": float(lr.mean()), "ln_ratio_std": float(lr.std()),
            "ln_ratio_percentiles": {str(q): float(np.percentile(lr, q)) for q in (1, 50, 99)}}


def cross_section_weight(process: Process) -> float:
    """Constant factor turning |M|^2 at a RAMBO point into a weight in pb."""
    from surrogate_stats.matrix_element._processes import GEV2_TO_PB

    return (process.flux * phase_space_volume(process.n_out, process.sqrt_s)
            * process.symmetry_factor * GEV2_TO_PB)
