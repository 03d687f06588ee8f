"""surrogate_stats: neural surrogates of expensive physics functions, published as ONNX.

Importing the package is light: jax, pyhf and onnxruntime are imported only when used.

    >>> from surrogate_stats import load_surrogate
    >>> s = load_surrogate("onnx_models/3L-eRJR_ERJR_500p0_0p0")  # doctest: +SKIP
    >>> s.nll(1.0), s.tmu(1.0), s.upper_limit()                    # doctest: +SKIP
"""

from surrogate_stats.errors import (
    ExtrapolationError,
    ExtrapolationWarning,
    FitFailure,
    InvalidArtifact,
    InvalidInput,
    InvalidWorkspace,
    MissingChunk,
    MissingDependency,
    SchedulerUnreachable,
    SurrogateStatsError,
    TaskFailure,
    UnknownPatch,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_surrogate",
    "SurrogateStatsError",
    "InvalidInput",
    "InvalidWorkspace",
    "UnknownPatch",
    "InvalidArtifact",
    "FitFailure",
    "MissingDependency",
    "TaskFailure",
    "SchedulerUnreachable",
    "MissingChunk",
    "ExtrapolationWarning",
    "ExtrapolationError",
]


def load_surrogate(path, *, on_extrapolation: str = "warn", threads=None):
    """Load a published surrogate artifact (numpy + onnxruntime only).

    ``path`` is an artifact directory, or an OLLL v0.1 ``.onnx`` file (the format SModelS
    reads; ``docs/olll.md``). See :func:`surrogate_stats.artifact.load_surrogate`.
    """
    from surrogate_stats.artifact._load import load_surrogate as _load

    return _load(path, on_extrapolation=on_extrapolation, threads=threads)
