"""A spey backend plugin: ``spey.get_backend("surrogate_stats")(path=DIR)``.

Registered through spey's entry-point group ``spey.backend.plugins``. The surrogate already
profiles the nuisance parameters, so the model spey sees has one parameter, mu; every
likelihood spey asks for is answered by the surrogate through spey's fast-path methods.

Expectation types: ``observed`` and ``aposteriori`` use the observed data and pyhf's Asimov
data (mu = 0 fit to the observed data), as spey-pyhf does. ``apriori`` (pre-fit Asimov) is not
in a profile-likelihood artifact and raises an error.
"""

from __future__ import annotations

import numpy as np
from spey import ExpectationType
from spey.base import BackendBase, ModelConfig

from surrogate_stats import __version__, load_surrogate
from surrogate_stats.errors import InvalidInput

__all__ = ["SurrogateStatsBackend"]


class SurrogateStatsBackend(BackendBase):
    """spey statistical model backed by a surrogate_stats profile-likelihood artifact.

    Args:
        path: the artifact directory.
        on_extrapolation: passed to :func:`surrogate_stats.load_surrogate`.
    """

    name: str = "surrogate_stats"
    version: str = __version__
    author: str = "surrogate_stats developers"
    spey_requires: str = ">=0.2.0"

    def __init__(self, path, on_extrapolation: str = "warn"):
        self.surrogate = load_surrogate(path, on_extrapolation=on_extrapolation)

    def _expected(self, expected) -> bool:
        expected = ExpectationType(expected) if not isinstance(expected, ExpectationType) \
            else expected
        if expected == ExpectationType.apriori:
            raise InvalidInput(
                "this surrogate has no pre-fit (apriori) Asimov likelihood; use "
                "expected=ExpectationType.observed or ExpectationType.aposteriori")
        return False

    def config(self, allow_negative_signal: bool = True, poi_upper_bound: float = 10.0
               ) -> ModelConfig:
        lo, hi = self.surrogate.domain
        upper = min(float(poi_upper_bound), hi) if poi_upper_bound else hi
        return ModelConfig(poi_index=0, minimum_poi=lo,
                           suggested_init=[min(max(self.surrogate.mu_hat, lo), upper)],
                           suggested_bounds=[(lo, upper)], parameter_names=["mu"])

    def get_logpdf_func(self, expected=ExpectationType.observed, data=None):
        self._expected(expected)
        if data is not None:
            raise NotImplementedError("a profile-likelihood surrogate cannot be refitted to "
                                      "other data")
        return lambda pars: -float(self.surrogate.nll(float(np.asarray(pars).ravel()[0])))

    def expected_data(self, pars):
        raise NotImplementedError("a profile-likelihood surrogate has no bin-level prediction")

    # spey's fast paths: spey returns these values as they are (likelihood -> nll;
    # maximize_likelihood -> (mu_hat, nll)); data other than the artifact's cannot be used
    def negative_loglikelihood(self, poi_test: float = 1.0, expected=ExpectationType.observed,
                               data=None, return_parameters: bool = False, **kwargs):
        self._expected(expected)
        if data is not None:
            raise NotImplementedError("a profile-likelihood surrogate cannot use other data")
        nll = float(self.surrogate.nll(float(poi_test)))
        return (nll, np.array([float(poi_test)])) if return_parameters else nll

    def minimize_negative_loglikelihood(self, expected=ExpectationType.observed,
                                        allow_negative_signal: bool = True, data=None,
                                        **kwargs):
        self._expected(expected)
        if data is not None:
            raise NotImplementedError("a profile-likelihood surrogate cannot use other data")
        mu = self.surrogate.mu_hat
        return mu, float(self.surrogate.nll(mu))

    def asimov_negative_loglikelihood(self, poi_test: float = 1.0,
                                      expected=ExpectationType.observed,
                                      test_statistics: str = "qtilde", **kwargs):
        self._expected(expected)
        if test_statistics == "q0":
            raise NotImplementedError("the artifact holds the mu = 0 Asimov data only")
        return float(self.surrogate.nll(float(poi_test), expected=True))

    def minimize_asimov_negative_loglikelihood(self, expected=ExpectationType.observed,
                                               test_statistics: str = "qtilde", **kwargs):
        self._expected(expected)
        if test_statistics == "q0":
            raise NotImplementedError("the artifact holds the mu = 0 Asimov data only")
        mu = self.surrogate.mu_hat_expected
        return mu, float(self.surrogate.nll(mu, expected=True))
