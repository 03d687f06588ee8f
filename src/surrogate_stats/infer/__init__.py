"""pyhf-shaped statistics on any surrogate: hypotest, upper_limit, mle fits, intervals.

Works on anything with the small :class:`Surrogate` protocol (``nll``, ``tmu``, ``domain``,
``mu_hat``, ``mu_hat_expected``): loaded ONNX artifacts and in-memory trained surrogates alike.
numpy only, except :func:`profile_interval` (iminuit).
"""

from surrogate_stats.infer import mle
from surrogate_stats.infer._hypotest import hypotest, upper_limit
from surrogate_stats.infer._intervals import ProfileInterval, profile_interval
from surrogate_stats.infer._protocol import Surrogate

__all__ = ["Surrogate", "hypotest", "upper_limit", "mle", "profile_interval", "ProfileInterval"]
