"""pyhf-shaped maximum-likelihood fits on a surrogate (``pyhf.infer.mle``)."""

from __future__ import annotations

import numpy as np

from surrogate_stats.infer._protocol import check_surrogate

__all__ = ["fit", "fixed_poi_fit"]


def fit(surrogate, *, expected: bool = False, return_fitted_val: bool = False):
    """Best fit: ``pars`` (``[mu_hat]``), or ``(pars, twice_nll)`` with ``return_fitted_val``.

    mu_hat is bounded below by the domain's lower end, as with pyhf's default POI bounds.
    """
    check_surrogate(surrogate, need_expected=expected)
    mu = surrogate.mu_hat_expected if expected else surrogate.mu_hat
    pars = np.array([mu])
    if return_fitted_val:
        return pars, np.asarray(2.0 * surrogate.nll(float(mu), expected=expected))
    return pars


def fixed_poi_fit(poi_val, surrogate, *, expected: bool = False,
                  return_fitted_val: bool = False):
    """Profiled fit at ``poi_val``: ``[mu]``, or ``([mu], twice_nll)``."""
    check_surrogate(surrogate, need_expected=expected)
    twice_nll = 2.0 * surrogate.nll(poi_val, expected=expected)
    pars = np.array([float(poi_val)])
    if return_fitted_val:
        return pars, np.asarray(twice_nll)
    return pars
