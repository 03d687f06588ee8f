"""Asymptotic CLs with pyhf's qtilde / q conventions, in numpy only (no scipy, no jax).

Follows ``pyhf.infer.calculators.AsymptoticCalculator`` with ``calc_base_dist="normal"``:
the test statistic lives in sqrt space, ``t = sqrt(q) - sqrt(qA)`` (qtilde switches to
``(q - qA) / (2 sqrt(qA))`` where ``sqrt(q) > sqrt(qA)``), CLs+b = Phi(-(t + sqrt(qA))),
CLb = Phi(-t), and the expected band uses t = n_sigma for n_sigma in (2, 1, 0, -1, -2).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normal_cdf", "qtilde_teststat", "cls_values", "EXPECTED_NSIGMA"]

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
    return clsb / clb, clsb, clb, exp
