"""Profiled-likelihood surrogates of pyhf workspaces: exact labels, training, export, checks.

Only :class:`ProfileLikelihoodSurrogate` is light; the training and validation functions
import pyhf, jax and optax when called.
"""

from surrogate_stats.likelihood._surrogate import ProfileLikelihoodSurrogate

__all__ = [
    "ProfileLikelihoodSurrogate",
    "LabelConfig",
    "SurrogateConfig",
    "generate_labels",
    "fit_surrogate",
    "load_signal_workspace",
    "save_surrogate",
    "train",
    "validate",
    "export_olll",
    "load_olll",
    "workspace_upper_limit",
]

_LAZY = {
    "LabelConfig": "surrogate_stats.likelihood._labels",
    "generate_labels": "surrogate_stats.likelihood._labels",
    "SurrogateConfig": "surrogate_stats.likelihood._train",
    "fit_surrogate": "surrogate_stats.likelihood._train",
    "load_signal_workspace": "surrogate_stats.likelihood._workspace",
    "save_surrogate": "surrogate_stats.likelihood._export",
    "train": "surrogate_stats.likelihood._pipeline",
    "validate": "surrogate_stats.likelihood._pipeline",
    "export_olll": "surrogate_stats.likelihood._olll",
    "load_olll": "surrogate_stats.likelihood._olll",
    "workspace_upper_limit": "surrogate_stats.likelihood._workspace_limits",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'surrogate_stats.likelihood' has no attribute {name!r}")
