"""Asymptotic CLs with pyhf's qtilde / q conventions, in numpy only (no scipy, no jax).

Follows ``pyhf.infer.calculators.AsymptoticCalculator`` with ``calc_base_dist="normal"``:
the test statistic lives in sqrt space, ``t = sqrt(q) - sqrt(qA)`` (qtilde switches to
``(q - qA) / (2 sqrt(qA))`` where ``sqrt(q) > sqrt(qA)``), CLs+b = Phi(-(t + sqrt(qA))),
CLb = Phi(-t), and the expected band uses t = n_sigma for n_sigma in (2, 1, 0, -1, -2).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normal_cdf", "qtilde_teststat", "cls_values", "upper_limits", "EXPECTED_NSIGMA"]

EXPECTED_NSIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def normal_cdf(x):
    """Standard normal CDF, accurate in the far tails (via erfc)."""
    x = np.asarray(x, dtype=float)
    return np.asarray(0.5 * _erfc(-x / math.sqrt(2.0)), dtype=float)


def qtilde_teststat(sqrt_q, sqrt_qa, test_stat: str = "qtilde"):
    """The asymptotic test statistic in sqrt space (pyhf's ``teststatistic``)."""
    sqrt_q = np.asarray(sqrt_q, dtype=float)
    sqrt_qa = np.asarray(sqrt_qa, dtype=float)
    if test_stat == "q":
        return sqrt_q - sqrt_qa
    with np.errstate(divide="ignore", invalid="ignore"):
        alt = (sqrt_q**2 - sqrt_qa**2) / (2.0 * sqrt_qa)
    return np.where(sqrt_q <= sqrt_qa, sqrt_q - sqrt_qa, alt)


def cls_values(q_obs, q_asimov, test_stat: str = "qtilde"):
    """Observed (CLs, CLs+b, CLb) and the five expected CLs from q on observed and Asimov data.

    Returns:
        ``(cls_obs, clsb_obs, clb_obs, cls_exp)`` where ``cls_exp`` has a leading axis of 5
        in pyhf's order (-2 sigma ... +2 sigma of the limit, i.e. n_sigma = 2, 1, 0, -1, -2).
    """
    sqrt_q = np.sqrt(np.maximum(np.asarray(q_obs, dtype=float), 0.0))
    sqrt_qa = np.sqrt(np.maximum(np.asarray(q_asimov, dtype=float), 0.0))
    t = qtilde_teststat(sqrt_q, sqrt_qa, test_stat)
    clsb = normal_cdf(-(t + sqrt_qa))
    clb = normal_cdf(-t)
    exp = np.stack([normal_cdf(-(n + sqrt_qa)) / normal_cdf(-n) for n in EXPECTED_NSIGMA])
    # the ratio in log space: far in the tail both tails underflow to 0
    # (without sensitivity, sqrt(qA) = 0, the two hypotheses coincide: CLs = 1)
    with np.errstate(invalid="ignore"):
        cls = np.where(sqrt_qa > 0, np.exp(log_normal_sf(t + sqrt_qa) - log_normal_sf(t)), 1.0)
    return cls, clsb, clb, exp


_vlog_sf_small = np.frompyfunc(lambda x: math.log(0.5 * math.erfc(x / math.sqrt(2.0))), 1, 1)


def log_normal_sf(x):
    """log(1 - Phi(x)), finite far into the tail (asymptotic series above x = 20)."""
    x = np.asarray(x, dtype=float)
    small = np.minimum(x, 20.0)
    out = np.asarray(_vlog_sf_small(small), dtype=float)
    big = np.maximum(x, 20.0)
    inv2 = 1.0 / big**2
    tail = (-0.5 * big**2 - np.log(big) - 0.5 * math.log(2 * math.pi)
            + np.log1p(-inv2 + 3 * inv2**2 - 15 * inv2**3))
    return np.where(x > 20.0, tail, out)


def upper_limits(curves, lo: float, hi: float, n_grid: int = 200):
    """Where each of several decreasing curves crosses zero in (lo, hi], or None if one never does.

    ``curves(mus)`` returns an array (k, len(mus)): curve i at each mu. A scan of ``n_grid``
    points brackets each crossing; Illinois regula falsi (superlinear, keeps the bracket)
    refines all k at once to a relative width of 1e-9.
    """
    grid = np.linspace(lo, hi, n_grid + 1)[1:]
    values = curves(grid)
    k = values.shape[0]
    below = values < 0
    if not below.any(axis=1).all():
        return None
    first = below.argmax(axis=1)
    rows = np.arange(k)
    a = np.where(first > 0, grid[np.maximum(first - 1, 0)], lo)
    b = grid[first]
    fa = np.where(first > 0, values[rows, np.maximum(first - 1, 0)], np.abs(values[:, 0]) + 1.0)
    fb = values[rows, first]
    side = np.zeros(k)
    for _ in range(60):
        done = (np.abs(b - a) <= 1e-9 * np.abs(b)) | (fb == 0)
        if np.all(done):
            break
        denom = np.where(fb != fa, fb - fa, 1.0)
        c = np.where(fb != fa, (a * fb - b * fa) / denom, 0.5 * (a + b))
        c = np.where(done, b, np.clip(c, np.minimum(a, b), np.maximum(a, b)))
        fc = curves(c)[rows, rows]  # curve i at c[i]
        left = fc * fb > 0  # c replaces b; a stays (its value halved the second time)
        a_new = np.where(left, a, b)
        fa_new = np.where(left, fa * np.where(side == 1, 0.5, 1.0), fb)
        side = np.where(left, 1, -1)
        a, fa, b, fb = a_new, fa_new, c, fc
    return b
