"""Exact references for yield surrogates: -2 ln lambda and CLs upper limits from the engine.

For a set of signals (per-bin yields, injected with a normalisation factor only) the engine
computes, with fits continued along each signal's ray in both directions and restarted from
pyhf's init and random points (the profile of a real workspace can have several local minima;
the lowest converged -ln L is kept):

* the bounded best fit (mu_hat >= 0) on the observed data;
* -2 ln lambda(mu) on a mu grid for the observed data and pyhf's post-fit Asimov data;
* asymptotic qtilde CLs upper limits (observed and the five expected), pyhf's conventions.

:func:`compare` puts a surrogate next to these numbers: the largest |Delta(-2 ln lambda)| where
the exact value is at most 9, and the relative differences of the limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from surrogate_stats._asymptotics import EXPECTED_NSIGMA, cls_values, normal_cdf
from surrogate_stats.errors import InvalidInput

__all__ = ["ExactReference", "exact_reference", "compare", "signal_from_patch"]

N_GRID = 24
LEVEL = 0.05


@dataclass
class ExactReference:
    """Exact results for N signals (arrays with a leading axis N)."""

    signals: np.ndarray  # (N, B)
    mu: np.ndarray  # (N, G) grid
    tmu_observed: np.ndarray  # (N, G) -2 ln lambda(mu), also below mu_hat (not q_mu)
    tmu_expected: np.ndarray  # (N, G)  (pyhf's Asimov data)
    mu_hat: np.ndarray  # (N,)
    upper_limit: np.ndarray  # (N,) observed
    expected_limits: np.ndarray  # (N, 5) -2s..+2s
    converged: np.ndarray  # (N,) every fit converged


def signal_from_patch(ops: list, spec: dict, bins: tuple) -> np.ndarray:
    """Per-bin signal yields that a jsonpatch (list of operations) adds to ``spec``.

    The yields of every sample the patch adds to a channel are summed; channels are matched
    by position in ``spec`` (a patch's ``/channels/<i>/samples/...`` paths).
    """
    names = [c["name"] for c in spec["channels"]]
    per_channel: dict[str, np.ndarray] = {}
    for op in ops:
        if op.get("op") != "add":
            continue
        parts = str(op.get("path", "")).split("/")
        if len(parts) >= 4 and parts[1] == "channels" and parts[3] == "samples":
            value = op.get("value") or {}
            data = np.asarray(value.get("data", []), dtype=float)
            ch = names[int(parts[2])]
            per_channel[ch] = per_channel.get(ch, 0.0) + data
    out = []
    for b in bins:
        ch, i = b.rsplit("-", 1)
        vals = per_channel.get(ch)
        out.append(0.0 if vals is None else float(np.asarray(vals).reshape(-1)[int(i)]))
    return np.array(out)


def _z_expected(level: float = LEVEL) -> np.ndarray:
    """sqrt(qA) at which the expected CLs of each band equals ``level`` (pyhf's order)."""
    out = []
    for n in EXPECTED_NSIGMA:
        lo, hi = 0.0, 20.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            cls = float(normal_cdf(-(n + mid)) / normal_cdf(-n))
            lo, hi = (mid, hi) if cls > level else (lo, mid)
        out.append(0.5 * (lo + hi))
    return np.array(out)


def exact_reference(fitter, datasets: dict, signals, *, tmu_cap: float = 40.0,
                    level: float = LEVEL, n_starts: int = 8, seed: int = 0) -> ExactReference:
    """Exact -2 ln lambda on a grid and CLs limits for each signal (vectorised over signals).

    ``datasets``: name -> (main, aux) with at least ``observed`` and ``observed_asimov``.
    The grid of each signal runs from 0 to where both -2 ln lambda exceed ``tmu_cap`` (or
    its limits are bracketed). Every grid fit is continued from both neighbours and started
    from pyhf's init, the :func:`~surrogate_stats.likelihood._vfit.bound_starts` and
    ``n_starts`` random points (Gaussian-constrained parameters within 1.5 sigma, seeded by
    ``seed``); the lowest converged -ln L is kept.
    """
    from surrogate_stats.likelihood._vfit import bound_starts, keep_better, random_starts
    from surrogate_stats.likelihood._yields_labels import _fit_points

    signals = np.atleast_2d(np.asarray(signals, dtype=float))
    n = signals.shape[0]
    if np.any(signals < 0) or not np.all(np.isfinite(signals)):
        raise InvalidInput("reference signals must be finite and non-negative")
    m = fitter.model
    shared = {"datasets": {d: [datasets[d][0], datasets[d][1]] for d in datasets}}
    names = ["observed", "observed_asimov"]
    main_o, aux_o = datasets["observed"]
    theta0 = {d: fitter.fit(np.zeros((1, m.n_bins)), datasets[d][0], datasets[d][1],
                            mu=np.zeros(1)) for d in names}
    nll_zero = np.array([theta0[d].nll[0] for d in names])
    start0 = np.stack([theta0[d].theta[0] for d in names])
    # scale: find mu_top with tmu >= cap on both data sets, doubling from a sensitivity guess
    top = np.ones(n)
    for _ in range(12):
        f, _, _ = _fit_points(fitter, signals * top[:, None], shared, names,
                              np.broadcast_to(start0, (n,) + start0.shape))
        t = 2 * (f - nll_zero[None, :])
        done = t[:, 1] >= tmu_cap
        if done.all():
            break
        top = np.where(done, top, top * 2.0)
    grid = top[:, None] * np.linspace(0.0, 1.0, N_GRID)[None, :] ** 1.5
    nll = np.full((n, N_GRID, 2), np.inf)
    conv = np.zeros((n, N_GRID, 2), dtype=bool)
    theta = np.array(np.broadcast_to(start0[None, None], (n, N_GRID, 2, m.n_pars)))

    def keep(j, new):
        """Keep the new fits at grid column ``j`` (a slice or index) where they are better."""
        keep_better((nll, conv, theta), (slice(None), j), new)

    def sweep(order, step):
        for j in order:
            keep(j, _fit_points(fitter, signals * grid[:, j:j + 1], shared, names,
                                theta[:, j - step]))

    start = np.broadcast_to(start0, (n,) + start0.shape)
    keep(0, _fit_points(fitter, signals * grid[:, :1], shared, names, start))
    sweep(range(1, N_GRID), 1)
    sweep(range(N_GRID - 2, -1, -1), -1)
    # restarts: every grid point at once from pyhf's init and random points, then one more
    # continuation in each direction carries a lower minimum found there to its neighbours
    y_all = (signals[:, None, :] * grid[:, :, None]).reshape(n * N_GRID, -1)
    starts = np.concatenate([np.asarray(m.init, float)[None], bound_starts(m),
                             random_starts(m, n_starts, seed)])
    for s0 in starts:
        f, c, th = _fit_points(fitter, y_all, shared, names,
                               np.broadcast_to(s0, (n * N_GRID, 2, m.n_pars)))
        keep(slice(None), (f.reshape(n, N_GRID, 2), c.reshape(n, N_GRID, 2),
                           th.reshape(n, N_GRID, 2, m.n_pars)))
    sweep(range(1, N_GRID), 1)
    sweep(range(N_GRID - 2, -1, -1), -1)
    # bounded best fit on the observed data, started from the best grid point
    k = np.argmin(nll[..., 0], axis=1)
    rows = np.arange(n)
    free = fitter.fit(signals, main_o, aux_o, mu_bounds=(0.0, top * 1.0),
                      init=theta[rows, k, 0], mu_init=grid[rows, k])
    nll_hat = np.minimum(free.nll, nll[rows, k, 0])
    mu_hat = np.where(free.nll <= nll[rows, k, 0], free.mu, grid[rows, k])
    t_two = np.maximum(2 * (nll[..., 0] - nll_hat[:, None]), 0.0)  # -2 ln lambda(mu)
    t_obs = np.where(grid >= mu_hat[:, None], t_two, 0.0)  # qtilde's q_mu, for CLs
    t_exp = np.maximum(2 * (nll[..., 1] - nll_zero[1]), 0.0)

    def q_at(mu_vals, j_near):
        """(q_obs, q_asimov) at mu (n,), from the bracketing grid points' parameters."""
        y_mu = signals * mu_vals[:, None]
        best = tuple(a.copy() for a in _fit_points(fitter, y_mu, shared, names,
                                                   theta[rows, j_near]))
        for st in (theta[rows, j_near - 1], np.broadcast_to(starts[0], (n, 2, m.n_pars))):
            keep_better(best, ..., _fit_points(fitter, y_mu, shared, names, st))
        f, c, _ = best
        q_o = np.where(mu_vals >= mu_hat, np.maximum(2 * (f[:, 0] - nll_hat), 0.0), 0.0)
        q_a = np.maximum(2 * (f[:, 1] - nll_zero[1]), 0.0)
        return q_o, q_a, c.all(axis=1)

    z = _z_expected(level)
    limits = np.full((n, 6), np.nan)
    ok = conv.all(axis=(1, 2)) & free.converged
    for col in range(6):
        if col == 0:
            vals = cls_values(t_obs, t_exp)[0] - level
        else:
            vals = np.sqrt(t_exp) - z[col - 1]
            vals = -vals  # decreasing like CLs - level
        below = vals < 0
        has = below.any(axis=1)
        j = np.where(has, below.argmax(axis=1), N_GRID - 1)
        j = np.maximum(j, 1)
        a, b = grid[rows, j - 1], grid[rows, j]
        fa, fb = vals[rows, j - 1], vals[rows, j]
        for _ in range(30):
            c_mu = np.where(fb != fa, (a * fb - b * fa) / np.where(fb != fa, fb - fa, 1.0),
                            0.5 * (a + b))
            c_mu = np.clip(c_mu, np.minimum(a, b), np.maximum(a, b))
            q_o, q_a, c_ok = q_at(c_mu, j)
            ok &= c_ok | ~has
            fc = (cls_values(q_o, q_a)[0] - level) if col == 0 else -(np.sqrt(q_a) - z[col - 1])
            left = fc * fb > 0
            a, fa = np.where(left, a, b), np.where(left, fa * 0.5, fb)
            b, fb = c_mu, fc
            if np.all(np.abs(b - a) <= 1e-6 * np.abs(b)):
                break
        limits[:, col] = np.where(has, b, np.nan)
    return ExactReference(signals=signals, mu=grid, tmu_observed=t_two, tmu_expected=t_exp,
                          mu_hat=mu_hat, upper_limit=limits[:, 0],
                          expected_limits=limits[:, 1:], converged=ok)


def compare(surrogate, reference: ExactReference, *, names=None) -> dict:
    """Surrogate vs exact: per signal and summary (max |Delta tmu| where exact <= 9, limits)."""
    rows = []
    for i, s in enumerate(reference.signals):
        name = names[i] if names is not None else f"signal-{i}"
        grid = reference.mu[i]
        in_dom = grid <= surrogate.for_signal(s).domain[1] * (1 + 1e-12)
        row = {"name": name, "converged": bool(reference.converged[i])}
        for key, exact, exp in (("observed", reference.tmu_observed[i], False),
                                ("expected", reference.tmu_expected[i], True)):
            core = (exact <= 9.0) & in_dom
            got = surrogate.tmu(grid[core], signal=s, expected=exp)
            row[f"max_abs_dtmu_{key}"] = float(np.max(np.abs(got - exact[core]))) \
                if core.any() else None
        try:
            obs, exp = surrogate.upper_limit(signal=s)
        except Exception as exc:  # noqa: BLE001 - reported per signal, not raised
            row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            continue
        row["ul_observed"] = [obs, float(reference.upper_limit[i])]
        row["ul_expected"] = [exp, reference.expected_limits[i].tolist()]
        row["ul_observed_rel"] = _rel(obs, reference.upper_limit[i])
        row["ul_median_rel"] = _rel(exp[2], reference.expected_limits[i][2])
        row["ul_band_max_rel"] = float(np.nanmax(np.abs(
            [_rel(a, b) for a, b in zip(exp, reference.expected_limits[i])])))
        rows.append(row)
    good = [r for r in rows if "error" not in r]

    def worst(key):
        vals = [abs(r[key]) for r in good if r.get(key) is not None and math.isfinite(r[key])]
        return float(max(vals)) if vals else None

    summary = {"n_signals": len(rows), "n_errors": len(rows) - len(good),
               "max_abs_dtmu_observed": worst("max_abs_dtmu_observed"),
               "max_abs_dtmu_expected": worst("max_abs_dtmu_expected"),
               "max_ul_observed_rel": worst("ul_observed_rel"),
               "max_ul_median_rel": worst("ul_median_rel"),
               "max_ul_band_rel": worst("ul_band_max_rel")}
    return {"summary": summary, "signals": rows}


def _rel(a, b) -> float:
    return float((a - b) / b) if b and math.isfinite(b) else float("nan")
