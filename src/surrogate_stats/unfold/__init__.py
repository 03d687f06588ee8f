"""Unfolding: a conditional-flow unfolder, IBU and OmniFold baselines, toys, metrics, reports.

Numpy-only at import; JAX (OmniFold) and matplotlib (plots) are imported when used.
"""

from surrogate_stats.unfold._compare import ComparisonReport, compare, coverage
from surrogate_stats.unfold._data import (
    EventSample,
    UnfoldingData,
    check_detector_range,
    read_events,
)
from surrogate_stats.unfold._flow_unfolder import FlowUnfoldConfig, UnfoldedEvents, Unfolder
from surrogate_stats.unfold._ibu import IBUResult, ibu, response_matrix
from surrogate_stats.unfold._methods import (
    METHODS,
    FlowMethod,
    IBUMethod,
    OmniFoldMethod,
    SimulationPrior,
    UnfoldResult,
    get_method,
)
from surrogate_stats.unfold._metrics import (
    bin_edges,
    bootstrap,
    chi2_ndf,
    histogram,
    interval_coverage,
    triangular_discriminator,
    wasserstein1,
    z_score,
)
from surrogate_stats.unfold._omnifold import OmniFoldConfig, OmniFoldResult, omnifold
from surrogate_stats.unfold._toys import TOYS, Toy, as_generator, get_toy

__all__ = [
    "ComparisonReport",
    "EventSample",
    "FlowUnfoldConfig",
    "FlowMethod",
    "IBUMethod",
    "IBUResult",
    "METHODS",
    "OmniFoldConfig",
    "OmniFoldMethod",
    "OmniFoldResult",
    "SimulationPrior",
    "TOYS",
    "Toy",
    "UnfoldResult",
    "UnfoldedEvents",
    "Unfolder",
    "UnfoldingData",
    "as_generator",
    "bin_edges",
    "bootstrap",
    "check_detector_range",
    "chi2_ndf",
    "compare",
    "coverage",
    "get_method",
    "get_toy",
    "histogram",
    "ibu",
    "interval_coverage",
    "omnifold",
    "read_events",
    "response_matrix",
    "triangular_discriminator",
    "wasserstein1",
    "z_score",
]
