"""Conditional normalising flows in plain JAX, exportable to ONNX; simulation-to-data correction.

Importing this package is light: JAX, optax and onnx are imported when a function needs them.

* :func:`coupling_flow`, :func:`masked_autoregressive_flow`: conditional RQ-spline flows
  (:class:`Flow`), :func:`fit_flow` (weighted maximum likelihood, :class:`FlowTrainConfig`),
  :func:`export_onnx` (``log_prob``, ``sample`` with noise in, ``transform``, ``inverse``).
* :class:`CorrectionFlow` (:class:`CorrectionConfig`): one flow with a data/MC flag condition;
  ``.fit``, ``.correct``, ``.save``; ``load_surrogate(DIR).correct(X, C)`` needs only numpy and
  onnxruntime.
* :func:`from_nflows`: a trained nflows RQ-spline flow (MAF or coupling) as a :class:`Flow`
  (needs the ``nflows`` extra; the converted flow does not).
* :func:`validate_correction`: classifier AUC, Wasserstein distances, correlations, plots.
* :mod:`surrogate_stats.flows.toys`: a photon-like toy with data/MC differences.
"""

__all__ = [
    "Flow",
    "coupling_flow",
    "masked_autoregressive_flow",
    "rq_spline",
    "FlowTrainConfig",
    "fit_flow",
    "export_onnx",
    "from_nflows",
    "CorrectionConfig",
    "CorrectionFlow",
    "correction_train_config",
    "validate_correction",
    "detect_spikes",
]

_LAZY = {
    "Flow": "surrogate_stats.flows._flow",
    "coupling_flow": "surrogate_stats.flows._flow",
    "masked_autoregressive_flow": "surrogate_stats.flows._flow",
    "rq_spline": "surrogate_stats.flows._flow",
    "FlowTrainConfig": "surrogate_stats.flows._train",
    "fit_flow": "surrogate_stats.flows._train",
    "export_onnx": "surrogate_stats.flows._onnx",
    "from_nflows": "surrogate_stats.flows._nflows",
    "CorrectionConfig": "surrogate_stats.flows._correction",
    "CorrectionFlow": "surrogate_stats.flows._correction",
    "correction_train_config": "surrogate_stats.flows._correction",
    "validate_correction": "surrogate_stats.flows._validate",
    "detect_spikes": "surrogate_stats.flows._spikes",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'surrogate_stats.flows' has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + ["toys"])
