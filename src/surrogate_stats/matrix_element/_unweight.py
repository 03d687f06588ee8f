"""Two-stage unweighting with a surrogate: unbiased whatever the surrogate's quality.

Stage 1 accepts a phase-space point with probability ``min(1, s/s_max)`` using the cheap
surrogate weight ``s``; stage 2 evaluates the exact weight ``w`` only for survivors and
accepts with ``min(1, x/x_max)``, ``x = w/s``. Accepted events carry the weight
``max(1, s/s_max) * max(1, x/x_max)`` (never clipped), so the expected weight of a trial is
``w / (s_max x_max)`` exactly: the event sample is distributed as the exact ``w`` for any
positive surrogate. The maxima are reduced maxima fixed on an independent calibration sample.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element._phase_space import Cuts, minkowski, rambo

__all__ = ["UnweightingConfig", "UnweightingResult", "TwoStageUnweighter", "unweight_exact",
           "reduced_maximum", "observables", "weighted_chi2", "f_eff"]


@dataclass(frozen=True)
class UnweightingConfig:
    """Settings of the unweighting (JSON-able).

    Attributes:
        overweight_fraction: share of the cross section allowed above each reduced maximum.
        n_calibration: RAMBO points of the independent calibration sample.
        min_calibration: fewest calibration points with non-zero weight accepted (fewer:
            an error; fewer than ten times this: a warning).
        batch_size: RAMBO points per batch; also the batch of the timing measurement.
        exact_batch: stage-1 survivors collected before one call of the exact |M|^2.
        surrogate_floor: surrogate weights below this fraction of the calibration median are
            raised to it (and counted), keeping ``s > 0`` where the exact weight may be. The
            result stays unbiased for any floor; a tiny floor makes such points rare but very
            heavy overweight events (slow convergence), a large one costs efficiency.
    """

    overweight_fraction: float = 1e-3
    n_calibration: int = 20000
    min_calibration: int = 100
    batch_size: int = 1024
    exact_batch: int = 256
    surrogate_floor: float = 1e-3

    def __post_init__(self):
        if not 0 <= self.overweight_fraction < 1:
            raise InvalidInput(f"overweight_fraction must be in [0, 1); got "
                               f"{self.overweight_fraction}")
        for k in ("n_calibration", "min_calibration", "batch_size", "exact_batch"):
            if int(getattr(self, k)) < 1:
                raise InvalidInput(f"UnweightingConfig.{k} must be >= 1")
        if not self.surrogate_floor > 0:
            raise InvalidInput("surrogate_floor must be > 0")


def f_eff(t_surrogate: float, t_exact: float, eps_full: float, eps_1: float,
          eps_2: float) -> float:
    """Effective gain ``[(t_surr/t_full) eps_full/(eps_1 eps_2) + eps_full/eps_2]^-1``."""
    return 1.0 / ((t_surrogate / t_exact) * eps_full / (eps_1 * eps_2) + eps_full / eps_2)


def reduced_maximum(values, weights=None, *, fraction: float = 1e-3) -> float:
    """Reduced maximum: the smallest sample value ``m`` such that the points above it carry at
    most ``fraction`` of the cross section, ``sum_{v_i > m} w_i v_i <= fraction sum w_i v_i``.

    ``weights`` (default 1) weight each point's contribution (stage 2 uses the stage-1
    acceptance ``min(1, s/s_max)``). ``fraction = 0`` gives the plain maximum.
    """
    v = np.asarray(values, np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, np.float64)
    keep = (v > 0) & (w > 0)
    v, w = v[keep], w[keep]
    if v.size == 0:
        raise InvalidInput("no positive values to take a maximum of")
    order = np.argsort(v)[::-1]
    v, w = v[order], w[order]
    contrib = w * v
    above = np.concatenate([[0.0], np.cumsum(contrib)[:-1]])  # carried by points above v[k]
    ok = np.flatnonzero(above <= fraction * contrib.sum())
    return float(v[ok[-1]])


def _checked_me(fn, p, what):
    try:
        out = np.asarray(fn(p), dtype=np.float64).reshape(-1)
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - report the user's callable failing clearly
        raise InvalidInput(f"the {what} |M|^2 callable failed on {p.shape[0]} points: "
                           f"{type(exc).__name__}: {exc}") from None
    if out.shape != (p.shape[0],):
        raise InvalidInput(f"the {what} |M|^2 callable must return one value per point, "
                           f"shape ({p.shape[0]},); got {out.shape}")
    return out


def _check_exact(w, p):
    bad = ~np.isfinite(w) | (w < 0)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"the exact |M|^2 callable returned {int(bad.sum())} negative or "
                           f"non-finite values (first: {w[i]!r} at point {i}, momenta "
                           f"{p[i].tolist()}); |M|^2 must be finite and >= 0")


@dataclass
class UnweightingResult:
    """Unweighted events and the run's statistics.

    ``momenta`` ``[n, 2 + n_out, 4]`` and ``weights`` ``[n]`` (1 except for overweight
    events); ``sigma``/``sigma_err`` in pb.
    """

    momenta: np.ndarray
    weights: np.ndarray
    sigma: float
    sigma_err: float
    stats: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"sigma": self.sigma, "sigma_err": self.sigma_err, **self.stats}


class TwoStageUnweighter:
    """Unbiased two-stage unweighting of a process with a surrogate |M|^2.

    Args:
        process: the :class:`~surrogate_stats.matrix_element.Process` (its kinematics; its
            exact |M|^2 unless ``exact`` is given).
        surrogate: any callable ``p[N, n, 4] -> |M|^2[N]`` (a loaded artifact works).
        exact: any callable ``p -> |M|^2`` (numpy, JAX, a C++ wrapper); default the process's.
        cuts: cuts defining the phase space (default: the process's).
        config: :class:`UnweightingConfig`.

    Example:
        >>> uw = TwoStageUnweighter(proc, surrogate)          # doctest: +SKIP
        >>> uw.calibrate(1); result = uw.run(2, 1000)
    """

    def __init__(self, process, surrogate: Callable, *, exact: Callable | None = None,
                 cuts: Cuts | None = None, config: UnweightingConfig = UnweightingConfig()):
        if not callable(surrogate):
            raise InvalidInput("surrogate must be a callable p -> |M|^2")
        self.process = process
        self.surrogate = surrogate
        self.exact = exact if exact is not None else process.matrix_element
        if not callable(self.exact):
            raise InvalidInput("exact must be a callable p -> |M|^2")
        self.cuts = process.default_cuts if cuts is None else cuts
        self.config = config
        from surrogate_stats.matrix_element._surrogate import cross_section_weight

        self.unit = cross_section_weight(process)
        self.calibration: dict | None = None

    # --- calibration -------------------------------------------------------------------
    def calibrate(self, seed, *, progress: bool = False) -> dict:
        """Fix ``s_max``, ``x_max`` and ``eps_full`` on an independent calibration sample."""
        cfg = self.config
        rng = np.random.default_rng(seed)
        p = rambo(rng, cfg.n_calibration, self.process.n_out, self.process.sqrt_s)
        p = p[self.cuts.passes(p)]
        if p.shape[0] == 0:
            raise InvalidInput(f"no calibration point passes the cuts {self.cuts}")
        s = self._surrogate(p)
        w = _checked_me(self.exact, p, "exact")
        _check_exact(w, p)
        n_pos = int(np.sum(w > 0))
        if n_pos < cfg.min_calibration:
            raise InvalidInput(f"the calibration sample has only {n_pos} points with non-zero "
                               f"|M|^2 inside the cuts (need >= {cfg.min_calibration}); raise "
                               "UnweightingConfig.n_calibration")
        if n_pos < 10 * cfg.min_calibration:
            warnings.warn(f"small calibration sample ({n_pos} points with |M|^2 > 0): the "
                          "reduced maxima are uncertain and overweights more frequent",
                          UserWarning, stacklevel=2)
        pos = s[s > 0]
        floor = cfg.surrogate_floor * float(np.median(pos)) if pos.size else 1e-300
        s = np.maximum(s, floor)
        s_max = reduced_maximum(s, fraction=cfg.overweight_fraction)
        x = np.where(s > 0, w / s, 0.0)
        x_max = reduced_maximum(x, np.minimum(1.0, s / s_max), fraction=cfg.overweight_fraction)
        w_max = reduced_maximum(w, fraction=cfg.overweight_fraction)
        self.calibration = {
            "n_points": int(p.shape[0]), "s_max": s_max, "x_max": x_max, "w_max": w_max,
            "floor": floor, "eps_full": float(np.mean(np.minimum(1.0, w / w_max))),
            "eps_1_calibration": float(np.mean(np.minimum(1.0, s / s_max))),
        }
        self._timing_points = p
        return dict(self.calibration)

    def _surrogate(self, p):
        s = _checked_me(self.surrogate, p, "surrogate")
        if not np.all(np.isfinite(s)):
            raise InvalidInput(f"the surrogate returned {int((~np.isfinite(s)).sum())} NaN or "
                               "infinite values; "
                               "it must return finite |M|^2 (values <= 0 are floored)")
        return s

    def measure_times(self, *, repeats: int = 3) -> dict:
        """Seconds per point of the surrogate and the exact |M|^2 at the batch sizes the
        unweighting calls them with (``config.batch_size`` RAMBO points for the surrogate,
        ``config.exact_batch`` stage-1 survivors for the exact), on inside-cut points.

        Each is called once first (compilation, caches excluded) and then timed; best of
        ``repeats`` for the surrogate, of ``max(1, repeats // 3)`` for the exact.
        """
        if self.calibration is None:
            raise InvalidInput("call calibrate() before measure_times()")
        out = {}
        for name, fn, rep, b in (
                ("t_surrogate", self.surrogate, repeats, self.config.batch_size),
                ("t_exact", self.exact, max(1, repeats // 3), self.config.exact_batch)):
            p = self._timing_points
            if p.shape[0] < b:
                p = np.concatenate([p] * (b // p.shape[0] + 1))
            p = p[:b]
            fn(p)
            best = math.inf
            for _ in range(rep):
                t0 = time.perf_counter()
                fn(p)
                best = min(best, time.perf_counter() - t0)
            out[name] = best / b
            out[f"{name}_batch"] = b
        return out

    # --- generation ----------------------------------------------------------------------
    def run(self, seed, n_events: int, *, progress: bool = True, max_trials: int | None = None,
            times: dict | None = None) -> UnweightingResult:
        """Generate ``n_events`` unweighted events (stops early at ``max_trials`` RAMBO points).

        Returns:
            :class:`UnweightingResult` with ``sigma``, ``sigma_err`` (pb), ``eps_full``,
            ``eps_1``, ``eps_2``, trial and call counts, floored surrogate values, the
            overweight share and, with ``times``, ``t_exact``, ``t_surrogate`` and ``f_eff``.
        """
        if self.calibration is None:
            raise InvalidInput("call calibrate() (with an independent seed) before run()")
        if int(n_events) < 1:
            raise InvalidInput(f"n_events must be >= 1; got {n_events}")
        from surrogate_stats._optional import optional_import

        tqdm = optional_import("tqdm.auto").tqdm
        cal, cfg = self.calibration, self.config
        s_max, x_max, floor = cal["s_max"], cal["x_max"], cal["floor"]
        rng = np.random.default_rng(seed)
        events, weights = [], []
        n_trials = n_in_cuts = n_stage1 = n_floored = 0
        sum_p1 = sum_p2 = 0.0
        buf_p, buf_s, buf_f = [], [], []
        n_accepted = 0

        def flush(final=False):
            nonlocal n_accepted, sum_p2
            if not buf_p:
                return
            pp, ss, f1 = np.concatenate(buf_p), np.concatenate(buf_s), np.concatenate(buf_f)
            buf_p.clear(), buf_s.clear(), buf_f.clear()
            k = pp.shape[0] if final else (pp.shape[0] // cfg.exact_batch) * cfg.exact_batch
            if k < pp.shape[0]:  # keep the remainder for the next call: batches of exact_batch
                buf_p.append(pp[k:]), buf_s.append(ss[k:]), buf_f.append(f1[k:])
                pp, ss, f1 = pp[:k], ss[:k], f1[:k]
            if k == 0:
                return
            w = np.concatenate([_checked_me(self.exact, pp[i:i + cfg.exact_batch], "exact")
                                for i in range(0, k, cfg.exact_batch)])
            _check_exact(w, pp)
            x = w / ss
            prob2 = np.minimum(1.0, x / x_max)
            sum_p2 += float(prob2.sum())
            acc = rng.random(x.size) < prob2
            wt = f1[acc] * np.maximum(1.0, x[acc] / x_max)
            events.append(pp[acc])
            weights.append(wt)
            n_accepted += int(acc.sum())

        with tqdm(total=int(n_events), desc=f"unweighting {self.process.name}", unit="ev",
                  disable=not progress, leave=False) as bar:
            while n_accepted < n_events and (max_trials is None or n_trials < max_trials):
                p = rambo(rng, cfg.batch_size, self.process.n_out, self.process.sqrt_s)
                n_trials += p.shape[0]
                p = p[self.cuts.passes(p)]
                n_in_cuts += p.shape[0]
                if p.shape[0] == 0:
                    continue
                s = self._surrogate(p)
                low = s < floor
                n_floored += int(low.sum())
                s = np.where(low, floor, s)
                prob1 = np.minimum(1.0, s / s_max)
                sum_p1 += float(prob1.sum())
                acc = rng.random(s.size) < prob1
                n_stage1 += int(acc.sum())
                buf_p.append(p[acc])
                buf_s.append(s[acc])
                buf_f.append(np.maximum(1.0, s[acc] / s_max))
                before = n_accepted
                if sum(len(b) for b in buf_s) >= cfg.exact_batch:
                    flush()
                bar.update(n_accepted - before)
            before = n_accepted
            flush(final=True)  # every stage-1 survivor's trial counts in sigma: evaluate all
            bar.update(n_accepted - before)

        mom = np.concatenate(events) if events else np.zeros((0, self.process.n_particles, 4))
        wts = np.concatenate(weights) if weights else np.zeros(0)
        scale = s_max * x_max * self.unit
        sigma = scale * float(wts.sum()) / n_trials  # sigma and its error use every trial
        second = scale**2 * float(np.sum(wts**2)) / n_trials
        # the first n_events accepted events (of an i.i.d. sequence) are returned
        mom, wts = mom[: int(n_events)], wts[: int(n_events)]
        sigma_err = math.sqrt(max(second - sigma**2, 0.0) / n_trials)
        if n_floored:
            warnings.warn(f"the surrogate returned values <= {floor:.3g} at {n_floored} "
                          "points; they were floored there (the events stay unbiased, but "
                          "such points can become overweight)", UserWarning, stacklevel=2)
        eps_1 = n_stage1 / max(n_in_cuts, 1)
        eps_2 = n_accepted / max(n_stage1, 1)
        stats = {
            "n_events": int(mom.shape[0]), "n_trials": int(n_trials),
            "n_in_cuts": int(n_in_cuts), "n_surrogate_calls": int(n_in_cuts),
            "n_exact_calls": int(n_stage1), "n_floored": int(n_floored),
            "eps_full": cal["eps_full"], "eps_1": eps_1, "eps_2": eps_2,
            "eps_1_expected": sum_p1 / max(n_in_cuts, 1),
            "eps_2_expected": sum_p2 / max(n_stage1, 1),
            "overweight_events": int(np.sum(wts > 1.0)),
            "max_weight": float(wts.max()) if wts.size else 0.0,
            "s_max": s_max, "x_max": x_max,
        }
        if times is not None:
            stats.update(times)
            stats["f_eff"] = f_eff(times["t_surrogate"], times["t_exact"], cal["eps_full"],
                                   max(eps_1, 1e-300), max(eps_2, 1e-300))
        return UnweightingResult(mom, wts, sigma, sigma_err, stats)


def unweight_exact(seed, process, n_events: int, *, exact: Callable | None = None,
                   cuts: Cuts | None = None, w_max: float | None = None,
                   config: UnweightingConfig = UnweightingConfig(), calibration_seed=None,
                   max_trials: int | None = None) -> UnweightingResult:
    """Plain one-stage hit-or-miss unweighting with the exact |M|^2 (the reference).

    ``w_max`` is the reduced maximum of the exact weight; if None it is fixed on a calibration
    sample drawn from ``calibration_seed``. Overweights are kept as weights ``max(1, w/w_max)``.
    """
    from surrogate_stats.matrix_element._surrogate import cross_section_weight

    exact = exact if exact is not None else process.matrix_element
    cuts = process.default_cuts if cuts is None else cuts
    if w_max is None:
        rng = np.random.default_rng(calibration_seed)
        p = rambo(rng, config.n_calibration, process.n_out, process.sqrt_s)
        p = p[cuts.passes(p)]
        w = _checked_me(exact, p, "exact")
        _check_exact(w, p)
        w_max = reduced_maximum(w, fraction=config.overweight_fraction)
    rng = np.random.default_rng(seed)
    events, weights = [], []
    n_trials = n_in = 0
    n_acc = 0
    while n_acc < n_events and (max_trials is None or n_trials < max_trials):
        p = rambo(rng, config.batch_size, process.n_out, process.sqrt_s)
        n_trials += p.shape[0]
        p = p[cuts.passes(p)]
        n_in += p.shape[0]
        if p.shape[0] == 0:
            continue
        w = _checked_me(exact, p, "exact")
        _check_exact(w, p)
        acc = rng.random(w.size) < np.minimum(1.0, w / w_max)
        events.append(p[acc])
        weights.append(np.maximum(1.0, w[acc] / w_max))
        n_acc += int(acc.sum())
    mom = np.concatenate(events)
    wts = np.concatenate(weights)
    scale = w_max * cross_section_weight(process)
    sigma = scale * float(wts.sum()) / n_trials
    second = scale**2 * float(np.sum(wts**2)) / n_trials
    err = math.sqrt(max(second - sigma**2, 0.0) / n_trials)
    mom, wts = mom[: int(n_events)], wts[: int(n_events)]
    return UnweightingResult(mom, wts, sigma, err,
                             {"n_events": int(mom.shape[0]), "n_trials": n_trials,
                              "n_in_cuts": n_in, "eps": n_acc / max(n_in, 1), "w_max": w_max})


def observables(p: np.ndarray) -> dict:
    """Observables of events ``[N, 2 + n_out, 4]`` used to compare unweighted samples."""
    out = p[:, 2:]
    s = minkowski(p[:, 0] + p[:, 1], p[:, 0] + p[:, 1])
    e = out[..., 0]
    cos1 = out[:, 0, 3] / np.linalg.norm(out[:, 0, 1:], axis=1)
    pt = np.hypot(out[..., 1], out[..., 2])
    n = out.shape[1]
    iu, ju = np.triu_indices(n, 1)
    sij = 2 * minkowski(out[:, iu], out[:, ju]) / s[:, None]
    obs = {"cos_theta_1": cos1, "pt_max_over_sqrt_s": pt.max(axis=1) / np.sqrt(s)}
    if n > 2:  # for two bodies these are constant
        obs["x_max"] = 2 * e.max(axis=1) / np.sqrt(s)
        obs["y_min"] = sij.min(axis=1)
        obs["x_min"] = 2 * e.min(axis=1) / np.sqrt(s)
    return obs


def weighted_chi2(a, wa, b, wb, *, bins: int = 10) -> dict:
    """Two-sample chi^2 of the normalised, weighted histograms of ``a`` and ``b``.

    Bins are equal-population quantiles of the pooled sample; returns chi2, ndof and the
    p-value (scipy).
    """
    from surrogate_stats._optional import optional_import

    stats = optional_import("scipy.stats")
    a, b = np.asarray(a), np.asarray(b)
    wa, wb = np.asarray(wa, float), np.asarray(wb, float)
    edges = np.unique(np.quantile(np.concatenate([a, b]), np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    ha, _ = np.histogram(a, edges, weights=wa)
    hb, _ = np.histogram(b, edges, weights=wb)
    va, _ = np.histogram(a, edges, weights=wa**2)
    vb, _ = np.histogram(b, edges, weights=wb**2)
    Wa, Wb = wa.sum(), wb.sum()
    var = va / Wa**2 + vb / Wb**2
    keep = var > 0
    chi2 = float(np.sum((ha / Wa - hb / Wb)[keep] ** 2 / var[keep]))
    ndof = int(keep.sum()) - 1
    return {"chi2": chi2, "ndof": ndof, "p_value": float(stats.chi2.sf(chi2, ndof))}


