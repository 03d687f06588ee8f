"""End-to-end: workspace + patch -> exact labels -> trained surrogate -> artifact; validation."""

from __future__ import annotations

import json
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.likelihood._export import save_surrogate
from surrogate_stats.likelihood._labels import LabelConfig, generate_labels
from surrogate_stats.likelihood._train import SurrogateConfig, fit_surrogate
from surrogate_stats.likelihood._workspace import SignalWorkspace

__all__ = ["train", "validate", "versions"]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("surrogate_stats", "pyhf", "jax", "optax", "onnx", "onnxruntime", "numpy",
                "scipy"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def train(workspace: SignalWorkspace, out: str | Path, *, seed: int = 0,
          labels: LabelConfig = LabelConfig(), config: SurrogateConfig = SurrogateConfig(),
          progress: bool = True, log=None, checkpoint: str | Path | None = "auto") -> tuple:
    """Compute exact labels, fit the surrogate, save the artifact in ``out``.

    Finished fits go to ``checkpoint`` as they complete (``"auto"``: ``<out>.fits.jsonl``;
    None: no checkpoint), so a killed run restarted with the same arguments resumes without
    recomputing them; the file is removed once the artifact is written.

    Returns:
        ``(surrogate, metadata)`` of the saved artifact.
    """
    jax = optional_import("jax")
    if not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer; got {seed!r}")
    t0 = time.perf_counter()
    if checkpoint == "auto":
        checkpoint = Path(f"{Path(out)}.fits.jsonl")
    lab = generate_labels(workspace, config=labels, progress=progress, log=log,
                          checkpoint=checkpoint)
    t1 = time.perf_counter()
    surrogate, metrics = fit_surrogate(jax.random.key(seed), lab, config=config,
                                       progress=progress)
    t2 = time.perf_counter()
    meta = {
        "poi": {"name": lab.poi, "bounds_workspace": list(lab.poi_bounds_workspace),
                "bounds_used": list(lab.poi_bounds_used),
                "bounds_widened": lab.poi_bounds_used[1] > lab.poi_bounds_workspace[1]},
        "provenance": {**workspace.provenance, "seed": seed, "versions": versions(),
                       "label_config": labels.__dict__, "surrogate_config": config.as_dict(),
                       "exact_fits": f"pyhf {labels.backend} backend, scipy SLSQP, "
                                     "tolerance 1e-10, restart-checked"},
        "labels": lab.summary(),
        "training": {"metrics": metrics, "label_seconds": round(t1 - t0, 2),
                     "train_seconds": round(t2 - t1, 2)},
        "validation": {},
    }
    save_surrogate(surrogate, out, metadata=meta)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return surrogate, meta


def _time_call(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def validate(surrogate, workspace: SignalWorkspace, *, n_points: int = 24, seed: int = 12345,
             n_jobs: int = 2, plot: str | Path | None = None, progress: bool = True,
             log=None) -> dict:
    """Compare a surrogate with fresh exact pyhf computations on the same signal point.

    -2 ln lambda is recomputed at ``n_points`` random mu per data set (not label points) with
    the label engine; upper limits with pyhf's hypotest and toms748 root finding
    (:func:`pyhf_upper_limit`: JAX backend, SLSQP at tolerance 1e-10, POI bounds widened as
    in training);
    ``speedup_single`` is one pyhf ``fixed_poi_fit`` over one surrogate ``nll`` call.
    """
    pyhf = optional_import("pyhf")
    from surrogate_stats.likelihood._exact import numpy_backend, pyhf_upper_limit
    from surrogate_stats.likelihood._labels import DATASETS, _Runner

    log = log or (lambda _msg: None)
    tqdm = optional_import("tqdm.auto").tqdm
    lo, hi = surrogate.domain
    meta_poi = surrogate.metadata.get("poi", {})
    bounds_used = tuple(meta_poi.get("bounds_used", (lo, hi)))
    ws = workspace.with_poi_bounds(*bounds_used)
    with numpy_backend():
        model = ws.model()
        obs = ws.observed_data(model)
        asimov = pyhf.infer.calculators.generate_asimov_data(
            0.0, obs, model, model.config.suggested_init(), model.config.suggested_bounds(),
            model.config.suggested_fixed())
    rng = np.random.default_rng(seed)
    mus = np.sort(rng.uniform(lo, hi, n_points))
    bar = tqdm(total=2 * (n_points + 1), desc="pyhf validation fits", unit="fit",
               disable=not progress, leave=False)
    runner = _Runner(ws.spec, {"observed": np.asarray(obs).tolist(),
                               "expected": np.asarray(asimov).tolist()},
                     bounds_used, n_jobs, "jax", bar)
    try:
        free = dict(zip(DATASETS, runner.map([(d, None, None) for d in DATASETS])))
        jobs = [(d, [float(m) for m in mus], free[d].pars) for d in DATASETS]
        res = runner.sweeps(jobs)
        bar.close()
        bar = runner.progress = tqdm(desc="converged CLs fits", unit="fit",
                                     disable=not progress, leave=False)
        converged = _converged_upper_limit(runner, free, mus, res, DATASETS)
    finally:
        runner.close()
        bar.close()
    out: dict = {"n_points": n_points}
    curves = {}
    for j, d in enumerate(DATASETS):
        rs = res[j * n_points:(j + 1) * n_points]
        ok = [(m, r.nll) for m, r in zip(mus, rs) if not isinstance(r, Exception)]
        m_ok = np.array([m for m, _ in ok])
        exact = 2.0 * (np.array([v for _, v in ok]) - min(free[d].nll, min(v for _, v in ok)))
        pred = surrogate.tmu(m_ok, expected=d == "expected")
        core = exact <= 9.0
        key = "obs" if d == "observed" else "exp"
        out[f"max_abs_dtmu_{key}"] = float(np.max(np.abs(pred - exact)[core]))
        curves[d] = (m_ok, exact, pred)
    log("computing pyhf's upper limits (JAX backend, in a worker process)")
    t = time.perf_counter()
    ctx = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        ul_obs, ul_exp = pool.submit(pyhf_upper_limit, ws.spec).result()
    t_ul = time.perf_counter() - t
    with numpy_backend():
        init = model.config.suggested_init()
        fixed_time = _time_call(lambda: pyhf.infer.mle.fixed_poi_fit(
            1.0 if hi > 1 else 0.5 * hi, obs, model, init_pars=init, return_fitted_val=True), 5)
    s_ul_obs, s_ul_exp = surrogate.upper_limit()
    mu1 = 0.5 * (lo + hi)
    surrogate.nll(mu1)
    single = _time_call(lambda: surrogate.nll(mu1), 2001)
    out.update({
        "ul_obs_converged": converged[0], "ul_exp_converged": converged[1],
        "ul_obs": s_ul_obs, "ul_obs_pyhf": float(ul_obs),
        "ul_exp": s_ul_exp, "ul_exp_pyhf": [float(x) for x in ul_exp],
        "ul_obs_rel_diff": s_ul_obs / float(ul_obs) - 1.0,
        "ul_exp_rel_diff": [a / float(b) - 1.0 for a, b in zip(s_ul_exp, ul_exp)],
        "pyhf_upper_limit_seconds": round(t_ul, 2),
        "pyhf_fixed_poi_fit_seconds": fixed_time,
        "surrogate_nll_seconds": single,
        "speedup_single": fixed_time / single,
    })
    if plot is not None:
        _plot(surrogate, curves, out, plot)
    return out


def _converged_upper_limit(runner, free, mus, res, datasets, level=0.05):
    """Upper limits from the label engine's restart-checked, warm-started fits.

    pyhf's hypotest starts every fit cold; on some workspaces that lands above the minimum
    (ATLAS-SUSY-2018-31 region C: 0.16 in NLL at the limit), so validate reports both.
    """
    from surrogate_stats._asymptotics import cls_values

    brentq = optional_import("scipy.optimize").brentq
    n = len(mus)
    pars = {d: [(m, r) for m, r in zip(mus, res[j * n:(j + 1) * n]) if not isinstance(r, Exception)]
            for j, d in enumerate(datasets)}
    cache = {}

    def values(mu):
        if mu not in cache:
            jobs = [(d, float(mu), min(pars[d], key=lambda p: abs(p[0] - mu))[1].pars)
                    for d in datasets]
            r_obs, r_exp = runner.map(jobs)
            q = [0.0 if free[d].mu > mu else 2.0 * (r.nll - free[d].nll)
                 for d, r in zip(datasets, (r_obs, r_exp))]
            cls_obs, _, _, cls_exp = cls_values(max(q[0], 0.0), max(q[1], 0.0))
            cache[mu] = np.concatenate([[float(cls_obs)], np.asarray(cls_exp, float)]) - level
        return cache[mu]

    grid = np.sort(mus)
    limits = []
    for i in range(6):
        lo = hi = None
        for m in grid:  # bracket on the validation points (their fits are cached on demand)
            if values(m)[i] < 0:
                hi = m
                break
            lo = m
        if lo is None or hi is None:
            limits.append(None)
            continue
        limits.append(float(brentq(lambda m, i=i: values(m)[i], lo, hi, xtol=1e-6,
                                   rtol=1e-5)))
    return limits[0], limits[1:]


def _plot(surrogate, curves, metrics, path):
    optional_import("matplotlib").use("Agg")
    plt = optional_import("matplotlib.pyplot")
    fig, axes = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.3]})
    lo, hi = surrogate.domain
    grid = np.linspace(lo, hi, 600)
    for d, color in (("observed", "k"), ("expected", "tab:blue")):
        m, exact, pred = curves[d]
        axes[0].plot(grid, surrogate.tmu(grid, expected=d == "expected"), "-", color=color,
                     lw=1.2, label=f"surrogate ({d})")
        axes[0].plot(m, exact, "o", color=color, ms=4, mfc="none", label=f"pyhf ({d})")
        axes[1].plot(m, pred - exact, "o", color=color, ms=3)
    for ax in axes:
        ax.axvline(metrics["ul_obs_pyhf"], color="tab:red", ls="--", lw=0.8)
    axes[0].axhline(3.84, color="grey", ls=":", lw=1)
    axes[0].axhline(9.0, color="grey", ls=":", lw=1)
    axes[0].set_ylim(0, 25)
    axes[0].set_ylabel(r"$-2\ln\lambda(\mu)$")
    axes[0].legend(fontsize=8, loc="upper left")
    axes[0].set_title(
        f"95% CL UL obs: surrogate {metrics['ul_obs']:.4g}, pyhf {metrics['ul_obs_pyhf']:.4g}"
        f" (dashed); max |d(-2 ln lambda)| (<= 9): obs {metrics['max_abs_dtmu_obs']:.3f}, "
        f"exp {metrics['max_abs_dtmu_exp']:.3f}", fontsize=8)
    axes[1].axhline(0, color="grey", lw=1)
    for y in (-0.05, 0.05):
        axes[1].axhline(y, color="grey", ls=":", lw=0.8)
    axes[1].set_ylabel("surrogate - pyhf")
    axes[1].set_xlabel(r"$\mu$")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def record_validation(directory, metrics: dict) -> None:
    """Store validation metrics in an artifact's metadata (rewritten atomically, re-hashed)."""
    from surrogate_stats.artifact._format import read_artifact, write_artifact

    meta, graphs, arrays = read_artifact(directory)
    meta["validation"] = json.loads(json.dumps(metrics))
    write_artifact(directory, meta, graphs, arrays)
