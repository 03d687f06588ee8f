"""pyhf-shaped hypothesis tests and upper limits on any surrogate (asymptotic calculator).

Signatures and return shapes mirror pyhf 0.7's ``pyhf.infer.hypotest`` and
``pyhf.infer.intervals.upper_limits.upper_limit`` on purpose (including the ``return_*``
flags), so that reinterpretation code switches by changing one import.
"""

from __future__ import annotations

import numbers

import numpy as np

from surrogate_stats._asymptotics import cls_values, upper_limits
from surrogate_stats._checks import as_mu_array
from surrogate_stats.errors import InvalidInput, SurrogateStatsError
from surrogate_stats.infer._protocol import check_surrogate

__all__ = ["hypotest", "upper_limit"]

TEST_STATS = ("qtilde", "q")


def _check_level(level):
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise InvalidInput(f"level must be in (0, 1); got {level!r}")
    return float(level)


def _check_test_stat(test_stat):
    if test_stat not in TEST_STATS:
        raise InvalidInput(f"test_stat must be one of {TEST_STATS}; got {test_stat!r}")


def _q_values(mu, surrogate):
    q_obs = np.where(surrogate.mu_hat > mu, 0.0, surrogate.tmu(mu))
    q_exp = np.where(surrogate.mu_hat_expected > mu, 0.0, surrogate.tmu(mu, expected=True))
    return q_obs, q_exp


def _check_mu(mu) -> np.ndarray:
    arr = as_mu_array(mu)
    if np.any(arr < 0):
        raise InvalidInput(f"the qtilde/q test statistics need mu >= 0; got {arr.min():g}")
    return arr


def hypotest(poi_test, surrogate, *, test_stat: str = "qtilde", return_tail_probs: bool = False,
             return_expected: bool = False, return_expected_set: bool = False):
    """Asymptotic CLs at ``poi_test``, shaped like ``pyhf.infer.hypotest``'s return value.

    Returns ``CLs_obs`` alone, or a tuple of: ``CLs_obs``; ``[CLsb, CLb]`` if
    ``return_tail_probs``; the median expected CLs if ``return_expected``; the five expected
    CLs (n_sigma = 2, 1, 0, -1, -2) if ``return_expected_set`` — in pyhf's order.

    Example:
        >>> from surrogate_stats import infer, load_surrogate            # doctest: +SKIP
        >>> s = load_surrogate("onnx_models/3L-eRJR_ERJR_500p0_0p0")      # doctest: +SKIP
        >>> infer.hypotest(2.0, s, return_expected_set=True)             # doctest: +SKIP
    """
    check_surrogate(surrogate)
    _check_test_stat(test_stat)
    mu = _check_mu(poi_test)
    q_obs, q_exp = _q_values(mu, surrogate)
    cls, clsb, clb, cls_exp = cls_values(q_obs, q_exp, test_stat)
    band = [np.asarray(c) for c in cls_exp]
    out = [np.asarray(cls)]
    if return_tail_probs:
        out.append([np.asarray(clsb), np.asarray(clb)])
    if return_expected:
        out.append(band[2])
    if return_expected_set:
        out.append(band)
    return tuple(out) if len(out) > 1 else out[0]


def upper_limit(surrogate, level: float = 0.05, scan=None, return_results: bool = False, *,
                test_stat: str = "qtilde"):
    """``(observed, [expected -2s, -1s, median, +1s, +2s])`` like pyhf's ``upper_limit``.

    With ``scan=None`` each CLs curve is root-found on the trained domain; with ``scan`` (an
    array of mu) CLs is evaluated there and interpolated linearly, as pyhf's
    ``linear_grid_scan`` does. ``return_results`` adds ``(scan, results)`` with the
    per-point ``(CLs_obs, [5 expected])``.
    """
    check_surrogate(surrogate)
    level = _check_level(level)
    _check_test_stat(test_stat)
    if scan is None:
        lo, hi = max(surrogate.domain[0], 0.0), surrogate.domain[1]

        def curves(mus):
            o, e = hypotest(mus, surrogate, test_stat=test_stat, return_expected_set=True)
            return np.vstack([np.atleast_2d(o), np.stack(e).reshape(5, -1)]) - level

        limits = upper_limits(curves, lo, hi)
        if limits is None:
            raise SurrogateStatsError(
                f"CLs stays above {level} up to mu={hi:g}, the end of the trained domain "
                "(an upper limit outside it would be an extrapolation)")
        obs, exp = np.asarray(limits[0]), [np.asarray(x) for x in limits[1:]]
        if return_results:
            return obs, exp, (None, None)
        return obs, exp
    scan = _check_mu(scan)
    if scan.ndim != 1 or scan.size < 2 or not np.all(np.diff(scan) > 0):
        raise InvalidInput("scan must be an increasing 1-D array of at least 2 mu values")
    o, e = hypotest(scan, surrogate, test_stat=test_stat, return_expected_set=True)
    rows = np.vstack([o[None, :], np.stack(e)])
    limits = [np.asarray(np.interp(level, r[::-1], scan[::-1])) for r in rows]
    if return_results:
        results = [(o[i], [e[k][i] for k in range(5)]) for i in range(scan.size)]
        return limits[0], limits[1:], (scan, results)
    return limits[0], limits[1:]



