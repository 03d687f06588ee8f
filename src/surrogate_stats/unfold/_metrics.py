r"""Distances and interval checks between unfolded results and the truth (numpy only).

Conventions (stated once, used everywhere):

* **Wasserstein-1** :math:`W_1(u, v) = \int |F_u(x) - F_v(x)|\,dx` between two weighted 1-d
  samples (weights normalised per sample). Between histograms it is computed on the bin
  centres with the bin contents as weights.
* **Triangular discriminator** on histograms normalised to unit sum,
  :math:`\Delta(p, q) = \tfrac12 \sum_i (p_i - q_i)^2 / (p_i + q_i) \times 10^3` (bins with
  :math:`p_i + q_i = 0` skipped), as in the OmniFold and ML-unfolding literature.
* :math:`\chi^2/\mathrm{ndf} = \frac{1}{N}\sum_i (p_i - q_i)^2/(\sigma_{p,i}^2 +
  \sigma_{q,i}^2)` over the :math:`N` bins with positive variance (no correlations, no
  normalisation constraint subtracted from ndf).
* **Coverage** of per-bin intervals :math:`\hat p_i \pm z_\alpha \hat\sigma_i` (Gaussian
  intervals, :math:`z_{0.68} = 0.994`, :math:`z_{0.95} = 1.960`) is the fraction of
  (bin, pseudo-experiment) pairs whose interval contains the population truth.
"""

from __future__ import annotations

import math

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = [
    "wasserstein1",
    "triangular_discriminator",
    "chi2_ndf",
    "histogram",
    "bin_edges",
    "interval_coverage",
    "bootstrap",
    "z_score",
]


def _weights(name, x, w):
    x = np.asarray(x, dtype=float).ravel()
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float).ravel()
    if w.shape != x.shape:
        raise InvalidInput(f"{name}: values and weights differ in length ({x.size} vs {w.size})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise InvalidInput(f"{name}: values and weights must be finite")
    if np.any(w < 0) or not w.sum() > 0:
        raise InvalidInput(f"{name}: weights must be non-negative with a positive total; got "
                           f"total {w.sum():.4g} and {int(np.sum(w < 0))} negative weights")
    return x, w / w.sum()


def wasserstein1(u, v, *, u_weights=None, v_weights=None) -> float:
    """Wasserstein-1 (earth mover's) distance between two weighted 1-d samples.

    Equal to ``scipy.stats.wasserstein_distance(u, v, u_weights, v_weights)``.
    """
    u, uw = _weights("u", u, u_weights)
    v, vw = _weights("v", v, v_weights)
    allv = np.concatenate([u, v])
    order = np.argsort(allv, kind="mergesort")
    allv = allv[order]
    du = np.concatenate([uw, np.zeros_like(vw)])[order]
    dv = np.concatenate([np.zeros_like(uw), vw])[order]
    cdf = np.cumsum(du - dv)[:-1]
    return float(np.sum(np.abs(cdf) * np.diff(allv)))


def _norm_hist(name, p):
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or np.any(p < 0) or not p.sum() > 0:
        raise InvalidInput(f"{name} must be a 1-d histogram of non-negative finite contents "
                           "with a positive sum")
    return p / p.sum()


def triangular_discriminator(p, q) -> float:
    """½ Σ (p−q)²/(p+q) × 1000 between two histograms, each normalised to unit sum."""
    p, q = _norm_hist("p", p), _norm_hist("q", q)
    if p.shape != q.shape:
        raise InvalidInput(f"histograms differ in binning: {p.size} vs {q.size} bins")
    s = p + q
    ok = s > 0
    return float(0.5 * np.sum((p[ok] - q[ok]) ** 2 / s[ok]) * 1000.0)


def chi2_ndf(p, q, *, p_err, q_err) -> float:
    """Σ (p−q)² / (σ_p² + σ_q²) / N over the N bins with positive variance."""
    p, q, pe, qe = (np.asarray(a, dtype=float) for a in (p, q, p_err, q_err))
    if not p.shape == q.shape == pe.shape == qe.shape:
        raise InvalidInput(f"shapes differ: {p.shape}, {q.shape}, {pe.shape}, {qe.shape}")
    var = pe**2 + qe**2
    ok = var > 0
    if not ok.any():
        raise InvalidInput("chi2_ndf needs at least one bin with positive variance")
    return float(np.sum((p[ok] - q[ok]) ** 2 / var[ok]) / ok.sum())


def bin_edges(lo: float, hi: float, n_bins: int, *, discrete: bool = False) -> np.ndarray:
    """``n_bins`` uniform bins on [lo, hi]; for integer observables, edges at half-integers."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InvalidInput(f"n_bins must be a positive integer; got {n_bins!r}")
    if not hi > lo:
        raise InvalidInput(f"the binning range must have hi > lo; got [{lo}, {hi}]")
    if discrete:
        width = max(1, math.ceil((hi - lo) / n_bins))
        start = math.floor(lo) - 0.5
        n = math.ceil((hi + 0.5 - start) / width)
        return start + width * np.arange(n + 1, dtype=float)
    return np.linspace(lo, hi, n_bins + 1)


def histogram(x, edges, *, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities per bin (unit sum over the bins) and their statistical errors.

    Values outside ``edges`` are dropped. The error is ``sqrt(Σw²)/Σw`` per bin (the
    normalisation's own fluctuation neglected).
    """
    x = np.asarray(x, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    counts, _ = np.histogram(x, edges, weights=w)
    sumw2, _ = np.histogram(x, edges, weights=w**2)
    tot = counts.sum()
    if not tot > 0:
        raise InvalidInput(f"no weight inside the binning range [{edges[0]:.4g}, "
                           f"{edges[-1]:.4g}]")
    return counts / tot, np.sqrt(sumw2) / tot


def z_score(level: float) -> float:
    """Two-sided Gaussian quantile: 0.68 -> 0.994, 0.95 -> 1.960."""
    if not 0 < level < 1:
        raise InvalidInput(f"confidence level must be in (0, 1); got {level}")
    return math.sqrt(2.0) * _erfinv(level)


def _erfinv(y: float) -> float:
    # Newton on math.erf from a good start (no scipy needed)
    x = 0.0
    for _ in range(60):
        err = math.erf(x) - y
        x -= err / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


def interval_coverage(estimates, errors, truth, *, levels=(0.68, 0.95)) -> dict[float, float]:
    """Fraction of intervals ``estimate ± z(level)·error`` that contain ``truth``.

    Args:
        estimates, errors: arrays of the same shape ``(n_pseudo, n_bins)`` (or flat).
        truth: broadcastable to ``estimates`` (e.g. ``(n_bins,)``).
        levels: confidence levels.

    Returns:
        ``{level: coverage}``.
    """
    est, err = np.asarray(estimates, dtype=float), np.asarray(errors, dtype=float)
    if est.shape != err.shape:
        raise InvalidInput(f"estimates and errors differ in shape: {est.shape} vs {err.shape}")
    t = np.broadcast_to(np.asarray(truth, dtype=float), est.shape)
    return {lv: float(np.mean(np.abs(est - t) <= z_score(lv) * err)) for lv in levels}


def bootstrap(key, statistic, n_events: int, *, n_replicas: int = 20,
              progress: bool = False) -> np.ndarray:
    """Poisson bootstrap: ``statistic(weights)`` for replicas with Poisson(1) event weights.

    Args:
        key: seed for the replica weights (int, numpy Generator or JAX key).
        statistic: ``f(weights) -> array`` evaluated on each replica's ``(n_events,)`` weights.
        n_events: number of events.
        n_replicas: number of replicas (>= 2).

    Returns:
        ``(n_replicas, ...)`` stacked statistics; ``.std(axis=0, ddof=1)`` is the bootstrap
        uncertainty.
    """
    from surrogate_stats.unfold._toys import as_generator

    if n_replicas < 2:
        raise InvalidInput(f"n_replicas must be >= 2; got {n_replicas}")
    rng = as_generator(key)
    tqdm = _tqdm()
    out = [np.asarray(statistic(rng.poisson(1.0, n_events).astype(float)))
           for _ in tqdm(range(n_replicas), desc="bootstrap", disable=not progress,
                         leave=False)]
    return np.stack(out)


def _tqdm():
    from surrogate_stats._optional import optional_import

    return optional_import("tqdm.auto").tqdm
