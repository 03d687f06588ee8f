"""Exact labels for a profiled-likelihood surrogate: NLL(mu) from pyhf on an adaptive mu grid."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import FitFailure, InvalidInput
from surrogate_stats.likelihood._exact import BACKENDS, ExactFitter, FitResult, numpy_backend
from surrogate_stats.likelihood._workspace import SignalWorkspace

__all__ = ["DatasetLabels", "LabelConfig", "LikelihoodLabels", "generate_labels"]

DATASETS = ("observed", "expected")


@dataclass(frozen=True)
class LabelConfig:
    """How exact labels are computed.

    Attributes:
        mu_min: lower end of the mu domain (0: the convention of pyhf's qtilde).
        tmu_target: the scan extends until -2 ln lambda reaches at least this on both data sets.
        n_initial: evenly spaced mu points per data set before adaptive refinement.
        n_points: total fits per data set on the grid (initial + refinement).
        n_jobs: worker processes doing the fits (always separate processes, so that pyhf's
            JAX backend never switches the caller's process to float64).
        backend: pyhf backend of the fits, "jax" (exact gradients; default) or "numpy".
        max_widen: the POI upper bound may be widened up to this factor of the workspace's.
    """

    mu_min: float = 0.0
    tmu_target: float = 30.0
    n_initial: int = 17
    n_points: int = 40
    n_jobs: int = 2
    backend: str = "jax"
    max_widen: float = 1000.0

    def __post_init__(self):
        if not self.tmu_target >= 25.0:
            raise InvalidInput(f"tmu_target must be >= 25 to cover the 95% CL region; got "
                               f"{self.tmu_target}")
        if not 5 <= self.n_initial <= self.n_points:
            raise InvalidInput(f"need 5 <= n_initial <= n_points; got {self.n_initial}, "
                               f"{self.n_points}")
        if self.backend not in BACKENDS:
            raise InvalidInput(f"backend must be one of {BACKENDS}; got {self.backend!r}")
        if self.n_jobs < 1:
            raise InvalidInput(f"n_jobs must be >= 1; got {self.n_jobs}")


@dataclass
class DatasetLabels:
    """Labels on one data set: profiled NLL at each mu, and the unconditional minimum."""

    mu: np.ndarray
    nll: np.ndarray
    mu_hat: float
    nll_min: float

    @property
    def tmu(self) -> np.ndarray:
        """-2 ln lambda(mu) relative to the bounded minimum (mu_hat >= mu_min)."""
        return 2.0 * (self.nll - self.nll_min)


@dataclass
class LikelihoodLabels:
    """Everything the surrogate is trained on, plus what was done to get it."""

    observed: DatasetLabels
    expected: DatasetLabels
    domain: tuple[float, float]
    poi: str
    poi_bounds_workspace: tuple[float, float]
    poi_bounds_used: tuple[float, float]
    n_fits: int
    n_retried: int
    failed_mu: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __getitem__(self, name: str) -> DatasetLabels:
        return {"observed": self.observed, "expected": self.expected}[name]

    def summary(self) -> dict:
        """JSON-able record for the artifact metadata."""
        out = {k: v for k, v in asdict(self).items() if k not in DATASETS}
        out["poi_bounds_widened"] = self.poi_bounds_used[1] > self.poi_bounds_workspace[1]
        for name in DATASETS:
            d = self[name]
            out[name] = {"n_labels": int(d.mu.size), "mu_hat": d.mu_hat, "nll_min": d.nll_min,
                         "tmu_max": float(d.tmu.max())}
        return out


# -- the fitting jobs, run in worker processes or in this one ---------------------------------
_ENGINE: dict = {}  # one ExactFitter per worker process; set by _init_worker


def _init_worker(spec, datasets, bounds, backend):
    # one thread per worker: n_jobs workers share the cores without oversubscribing them
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    # BLAS may already be loaded (fork, or numpy imported while unpickling): limit it now;
    # two workers with a two-thread OpenBLAS each make every fit 5-15x slower on 2 cores
    _ENGINE["blas_limit"] = optional_import("threadpoolctl").threadpool_limits(1)
    _ENGINE["fitter"] = ExactFitter(spec, datasets, bounds, backend=backend)


def _run_sweep(job):
    """Fit ``data`` at each mu in turn, each fit starting from the previous one's solution."""
    data, mus, init, bounds = job
    fitter: ExactFitter = _ENGINE["fitter"]
    fitter.bounds[fitter.poi_index] = bounds
    results = []
    for mu in mus:
        try:
            r = fitter.fit(data, mu, init)
            init = r.pars
        except FitFailure as exc:
            r = exc
        results.append(r)
    return results


class FitCheckpoint:
    """Finished fits of one label run, appended to a JSON-lines file as they complete.

    The first line holds a fingerprint of the run's inputs (workspace, data sets, settings);
    each further line one finished sweep: its job key and results. Label generation is
    deterministic given the fit results, so a rerun after a kill asks for the same jobs in the
    same order and takes the finished ones from here. A torn last line (killed mid-write) is
    ignored; a file of another run is refused.
    """

    def __init__(self, path, fingerprint: str):
        self.path = Path(path)
        self.done: dict[str, list] = {}
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            try:
                head = json.loads(lines[0]) if lines else {}
            except ValueError:
                head = {}
            if head.get("fingerprint") != fingerprint:
                raise InvalidInput(f"{self.path} holds fits of a different run (other "
                                   "workspace, patch or settings); delete it or choose "
                                   "another checkpoint file")
            for line in lines[1:]:
                try:
                    rec = json.loads(line)
                    self.done[rec["key"]] = rec["results"]
                except (ValueError, KeyError, TypeError):
                    break  # torn write: everything after it is recomputed
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"fingerprint": fingerprint})
        self.n_resumed = 0

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def key(job, bounds) -> str:
        d, mus, init = job
        init_hash = None if init is None else hashlib.sha256(
            np.asarray(init, dtype=float).tobytes()).hexdigest()
        return json.dumps([d, [None if m is None else repr(float(m)) for m in mus],
                           [repr(float(b)) for b in bounds], init_hash])

    def get(self, key):
        rs = self.done.get(key)
        if rs is None:
            return None
        self.n_resumed += len(rs)
        return [FitResult(mu=r[0], nll=r[1], pars=tuple(r[2]), attempts=r[3]) for r in rs]

    def put(self, key, results) -> None:
        if all(isinstance(r, FitResult) for r in results):  # failures are recomputed
            rec = [[r.mu, r.nll, list(r.pars), r.attempts] for r in results]
            self.done[key] = rec
            self._append({"key": key, "results": rec})


class _Runner:
    """Runs fit jobs serially or on a process pool, with one progress bar."""

    def __init__(self, spec, datasets, bounds, n_jobs, backend, progress, checkpoint=None):
        self.bounds = bounds
        self.n_fits = 0
        self.n_retried = 0
        self.checkpoint = checkpoint
        # fork is quick, but forking a process that already runs JAX threads can deadlock:
        # then spawn (which needs the usual `if __name__ == "__main__":` guard in scripts)
        method = "spawn" if "jax" in sys.modules else "fork"
        self._pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context(method),
                                         initializer=_init_worker,
                                         initargs=(spec, datasets, bounds, backend))
        self.progress = progress

    def map(self, jobs: Sequence[tuple]) -> list[FitResult | FitFailure]:
        """Run single fits ``(data, mu or None, init)`` spread over the workers."""
        return self.sweeps([(d, [mu], init) for d, mu, init in jobs])

    def sweeps(self, jobs: Sequence[tuple]) -> list[FitResult | FitFailure]:
        """Run sweeps ``(data, [mu, ...], init)``; results flattened in job order."""
        results = []
        cp = self.checkpoint
        keys = [cp.key(job, self.bounds) if cp else None for job in jobs]
        cached = [cp.get(k) if cp else None for k in keys]
        todo = [(d, mus, init, self.bounds) for (d, mus, init), c in zip(jobs, cached)
                if c is None]
        fresh = iter(self._pool.map(_run_sweep, todo))
        for key, c in zip(keys, cached):
            rs = c if c is not None else next(fresh)
            if c is None and cp is not None:
                cp.put(key, rs)
            results.extend(rs)
            self.progress.update(len(rs))
        self.n_fits += len(results)
        self.n_retried += sum(isinstance(r, FitResult) and r.attempts > 1 for r in results)
        return results

    def close(self):
        self._pool.shutdown(cancel_futures=True)


def _nearest_init(points: dict[float, FitResult], mu: float):
    if not points:
        return None
    best = min(points, key=lambda m: abs(m - mu))
    return points[best].pars


def _bend_scores(mu: np.ndarray, tmu: np.ndarray) -> np.ndarray:
    """For each interval, how far a cubic spline bends away from the straight chord at its middle.

    Intervals where -2 ln lambda is small (the region that sets limits) count four times more.
    """
    interpolate = optional_import("scipy.interpolate")
    spline = interpolate.CubicSpline(mu, tmu)
    mid = 0.5 * (mu[1:] + mu[:-1])
    chord = 0.5 * (tmu[1:] + tmu[:-1])
    bend = np.abs(spline(mid) - chord)
    weight = np.where(np.minimum(tmu[1:], tmu[:-1]) <= 12.0, 1.0, 0.25)
    return bend * weight


def _bumps(mu: np.ndarray, nll: np.ndarray, tol: float = 0.005) -> list[int]:
    """Indices whose NLL lies more than ``tol`` above a spline through all the other points."""
    interpolate = optional_import("scipy.interpolate")
    out = []
    for i in range(mu.size):
        keep = np.arange(mu.size) != i
        if keep.sum() < 4:
            continue
        predicted = interpolate.CubicSpline(mu[keep], nll[keep])(mu[i])
        if nll[i] > predicted + tol:
            out.append(i)
    return out


def generate_labels(
    workspace: SignalWorkspace,
    *,
    config: LabelConfig = LabelConfig(),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    checkpoint: str | Path | None = None,
) -> LikelihoodLabels:
    """Compute exact profiled-NLL labels with pyhf on observed and Asimov data.

    The Asimov data is pyhf's for expected limits: the background-only (mu=0) fit to the
    observed data, expected main and auxiliary data at those parameters. For each data set
    the unconditional (bounded, mu >= ``mu_min``) minimum is found, the mu range is extended
    (widening the workspace's POI bound if needed) until -2 ln lambda >= ``tmu_target`` on
    both, and the grid is refined where the curve bends most. Fits that fail are retried
    from other starts; points that still fail are left out and listed in ``failed_mu``. A
    conditional fit below the free minimum triggers a new free fit from its parameters, and
    a point above its neighbours' interpolation is refitted from their parameters.

    With ``checkpoint`` (a file path), every finished fit is appended to that file at once
    (:class:`FitCheckpoint`); rerunning after an interruption takes those fits from it instead
    of recomputing them and gives the same labels.

    Raises:
        FitFailure: a free fit, or more than 10% of the grid, failed.
    """
    pyhf = optional_import("pyhf")
    tqdm = optional_import("tqdm.auto").tqdm
    log = log or (lambda _msg: None)
    start_time = time.perf_counter()
    with numpy_backend():
        model = workspace.model()
        obs = workspace.observed_data(model)
        lo_ws, hi_ws = (float(b) for b in model.config.suggested_bounds()[model.config.poi_index])
        lo = float(config.mu_min)
        hi = max(hi_ws, lo + 1.0)
        if lo_ws > lo:
            raise InvalidInput(f"the workspace's POI lower bound {lo_ws} is above mu_min={lo}; "
                               "set mu_min to at least that")
        asimov = pyhf.infer.calculators.generate_asimov_data(
            0.0, obs, model, model.config.suggested_init(),
            [(lo, hi) if i == model.config.poi_index else b
             for i, b in enumerate(model.config.suggested_bounds())],
            model.config.suggested_fixed())
    datasets = {"observed": np.asarray(obs).tolist(), "expected": np.asarray(asimov).tolist()}

    bar = tqdm(total=2 * (config.n_points + 4), desc="pyhf labels", unit="fit",
               disable=not progress, leave=False)
    cp = None
    if checkpoint is not None:
        run = {k: v for k, v in asdict(config).items() if k != "n_jobs"}
        fingerprint = hashlib.sha256(json.dumps(
            [workspace.spec, datasets, run], sort_keys=True, default=str).encode()).hexdigest()
        cp = FitCheckpoint(checkpoint, fingerprint)
        if cp.done:
            log(f"resuming from {checkpoint}: {sum(map(len, cp.done.values()))} finished fits")
    runner = _Runner(workspace.spec, datasets, (lo, hi), config.n_jobs, config.backend, bar,
                     checkpoint=cp)
    try:
        # 1. unconditional minima (mu bounded to [lo, hi])
        free = dict(zip(DATASETS, runner.map([(d, None, None) for d in DATASETS])))
        for r in free.values():
            if isinstance(r, FitFailure):
                raise r
        points: dict[str, dict[float, FitResult]] = {d: {} for d in DATASETS}

        def tmu_of(d, r):
            return 2.0 * (r.nll - free[d].nll)

        # 2. extend mu until tmu >= target on both data sets, widening the POI bound if needed
        target_r = math.sqrt(config.tmu_target)
        mu_try = {d: max(free[d].mu, lo) + 0.1 * (hi - lo) for d in DATASETS}
        reached: dict[str, float] = {}
        for _ in range(40):
            todo = [d for d in DATASETS if d not in reached]
            if not todo:
                break
            for d in todo:
                if mu_try[d] > hi:
                    if mu_try[d] > config.max_widen * hi_ws:
                        raise FitFailure(
                            f"-2 ln lambda on the {d} data stays below {config.tmu_target} up "
                            f"to mu={hi:g} ({config.max_widen:g}x the workspace's POI bound): "
                            "the signal is too small to be constrained")
                    hi = 1.5 * mu_try[d]
                    runner.bounds = (lo, hi)
                    log(f"widening the POI upper bound to {hi:.4g} (workspace: {hi_ws:g})")
            results = runner.map([(d, mu_try[d], _nearest_init(points[d], mu_try[d]))
                                  for d in todo])
            for d, r in zip(todo, results):
                if isinstance(r, FitFailure):
                    mu_try[d] *= 1.1
                    continue
                points[d][mu_try[d]] = r
                t = tmu_of(d, r)
                below = [m for m in points[d] if max(free[d].mu, lo) <= m < mu_try[d]
                         and tmu_of(d, points[d][m]) < config.tmu_target]
                if t >= config.tmu_target and (t <= 1.5 * config.tmu_target or not below):
                    reached[d] = mu_try[d]
                elif t >= config.tmu_target:  # overshot: interpolate in sqrt(tmu) back to it
                    ma = max(below)
                    ra = math.sqrt(max(tmu_of(d, points[d][ma]), 0.0))
                    mu_try[d] = ma + (mu_try[d] - ma) * (1.1 * target_r - ra) / (math.sqrt(t) - ra)
                else:
                    step = mu_try[d] - max(free[d].mu, lo)
                    grow = min(10.0, 1.05 * target_r / max(math.sqrt(max(t, 0.0)), 0.1))
                    mu_try[d] = max(free[d].mu, lo) + step * max(grow, 1.1)
        if len(reached) < 2:
            raise FitFailure("could not find a mu where -2 ln lambda reaches "
                             f"{config.tmu_target} on both data sets")
        mu_max = max(reached.values())

        # 3. initial grid (dense up to each data set's own tmu_target crossing, a few points
        #    beyond it), then refine where the curve bends most
        def initial_grid(d):
            if reached[d] >= mu_max:
                return np.linspace(lo, mu_max, config.n_initial)
            return np.concatenate([np.linspace(lo, reached[d], config.n_initial - 3),
                                   np.linspace(reached[d], mu_max, 4)[1:]])

        failed: dict[str, list[float]] = {d: [] for d in DATASETS}

        def absorb(jobs, results):
            for (d, mu, _), r in zip(jobs, results):
                if isinstance(r, FitFailure):
                    failed[d].append(mu)
                    log(f"dropped mu={mu:g} on the {d} data: {r}")
                else:
                    points[d][mu] = r

        # one warm-started sweep per data set, upwards from mu_hat and downwards from it
        sweeps, flat = [], []
        for d in DATASETS:
            new = [float(mu) for mu in initial_grid(d)
                   if not any(abs(mu - m) < 1e-9 * (mu_max - lo) for m in points[d])]
            up = [mu for mu in new if mu >= free[d].mu]
            down = [mu for mu in new if mu < free[d].mu][::-1]
            for part in (up, down):
                if part:
                    sweeps.append((d, part, free[d].pars))
                    flat += [(d, mu, None) for mu in part]
        absorb(flat, runner.sweeps(sweeps))
        batch = max(2, 2 * config.n_jobs)
        while True:
            jobs = []
            for d in DATASETS:
                have = len(points[d]) + len(failed[d])
                room = config.n_points - have
                if room <= 0:
                    continue
                mus = np.array(sorted(m for m in points[d] if m <= mu_max))
                tm = np.array([tmu_of(d, points[d][m]) for m in mus])
                scores = _bend_scores(mus, tm)
                for i in np.argsort(-scores)[: min(batch, room)]:
                    mu = 0.5 * (mus[i] + mus[i + 1])
                    jobs.append((d, float(mu), _nearest_init(points[d], mu)))
            if not jobs:
                break
            absorb(jobs, runner.map(jobs))

        # 4. consistency: nothing below the free minimum, no point above its neighbours
        for d in DATASETS:
            lowest = min(points[d].values(), key=lambda r: r.nll)
            if lowest.nll < free[d].nll - 1e-4:
                log(f"free fit on the {d} data was not the minimum; refitting")
                (refit,) = runner.map([(d, None, lowest.pars)])
                if isinstance(refit, FitFailure) or refit.nll > lowest.nll:
                    free[d] = FitResult(mu=lowest.mu, nll=lowest.nll, pars=lowest.pars,
                                        attempts=0)
                else:
                    free[d] = refit
            mus = np.array(sorted(points[d]))
            nll = np.array([points[d][m].nll for m in mus])
            redo = []
            for i in _bumps(mus, nll):  # a fit stuck above the minimum sticks out of the curve
                for j in (i - 1, i + 1):
                    if 0 <= j < mus.size:
                        redo.append((d, float(mus[i]), points[d][mus[j]].pars))
            if redo:
                log(f"refitting {len({mu for _, mu, _ in redo})} points on the {d} data from "
                    "their neighbours")
                for (_, mu, _), r in zip(redo, runner.map(redo)):
                    if isinstance(r, FitResult) and r.nll < points[d][mu].nll:
                        points[d][mu] = r
    finally:
        runner.close()
        bar.close()

    n_grid = sum(len(p) for p in points.values())
    n_failed = sum(len(f) for f in failed.values())
    if n_failed > 0.1 * (n_grid + n_failed):
        raise FitFailure(f"{n_failed} of {n_grid + n_failed} fits failed after retries: "
                         f"{failed}")
    if n_failed:
        warnings.warn(f"{n_failed} label fits failed after retries and were left out: {failed}",
                      stacklevel=2)

    def pack(d):  # the overshooting points of step 2 lie beyond the domain: not labels
        mus = np.array(sorted(m for m in points[d] if m <= mu_max * (1 + 1e-12)))
        nll = np.array([points[d][m].nll for m in mus])
        return DatasetLabels(mu=mus, nll=nll, mu_hat=max(free[d].mu, lo),
                             nll_min=min(free[d].nll, float(nll.min())))

    return LikelihoodLabels(
        observed=pack("observed"), expected=pack("expected"), domain=(lo, float(mu_max)),
        poi=workspace.poi, poi_bounds_workspace=(lo_ws, hi_ws), poi_bounds_used=(lo, hi),
        n_fits=runner.n_fits, n_retried=runner.n_retried,
        failed_mu={d: f for d, f in failed.items() if f},
        seconds=time.perf_counter() - start_time)
