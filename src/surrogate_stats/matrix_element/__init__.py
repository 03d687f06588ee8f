"""Exact matrix elements, phase space, |M|^2 surrogates and unbiased two-stage unweighting.

Importing this package is light; JAX is imported when a matrix element is evaluated or a
surrogate trained. Loading a published surrogate needs numpy and onnxruntime only.
"""

from surrogate_stats.matrix_element._export import (
    MatrixElementSurrogate,
    build_onnx,
    save_surrogate,
)
from surrogate_stats.matrix_element._lhe import write_arrays, write_lhe
from surrogate_stats.matrix_element._phase_space import (
    Cuts,
    check_momenta,
    phase_space_volume,
    rambo,
)
from surrogate_stats.matrix_element._pipeline import train
from surrogate_stats.matrix_element._processes import COUPLINGS, PROCESSES, Process, get_process
from surrogate_stats.matrix_element._surrogate import (
    MESurrogateModel,
    SurrogateConfig,
    accuracy,
    fit_surrogate,
    sample_points,
)
from surrogate_stats.matrix_element._unweight import (
    TwoStageUnweighter,
    UnweightingConfig,
    UnweightingResult,
    f_eff,
    observables,
    reduced_maximum,
    unweight_exact,
    weighted_chi2,
)

__all__ = [
    "COUPLINGS",
    "PROCESSES",
    "Cuts",
    "MESurrogateModel",
    "MatrixElementSurrogate",
    "Process",
    "SurrogateConfig",
    "TwoStageUnweighter",
    "UnweightingConfig",
    "UnweightingResult",
    "accuracy",
    "build_onnx",
    "check_momenta",
    "f_eff",
    "fit_surrogate",
    "get_process",
    "observables",
    "phase_space_volume",
    "rambo",
    "reduced_maximum",
    "sample_points",
    "save_surrogate",
    "train",
    "unweight_exact",
    "weighted_chi2",
    "write_arrays",
    "write_lhe",
]
