"""Event samples for unfolding: particle/detector arrays, weights, selection masks, checks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import ExtrapolationWarning, InvalidInput

__all__ = ["EventSample", "UnfoldingData", "read_events", "check_detector_range"]


def _as_2d(name: str, x, n: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a numeric array; got {type(x).__name__}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InvalidInput(f"{name} must have shape (n_events, n_observables); got shape "
                           f"{arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InvalidInput(f"{name} has {arr.shape[0]} events but the particle-level array has "
                           f"{n}; particle and detector arrays must describe the same events "
                           "(fill missing values with NaN and set the passed_* masks)")
    return arr


def _as_mask(name: str, x, n: int) -> np.ndarray:
    if x is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise InvalidInput(f"{name} must be a boolean array of shape ({n},); got {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isin(arr, (0, 1))):
            raise InvalidInput(f"{name} must hold booleans (or 0/1); got other values")
        arr = arr.astype(bool)
    return arr


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class EventSample:
    """Events with a particle level and a detector level (one row per event).

    Attributes:
        particle: ``(n, d)`` particle-level observables; rows failing ``passed_truth`` may be NaN.
        detector: ``(n, d)`` detector-level observables; rows failing ``passed_reco`` may be NaN.
        weights: ``(n,)`` event weights (non-negative, positive total).
        passed_reco: ``(n,)`` event passes the detector-level selection (is measured).
        passed_truth: ``(n,)`` event passes the particle-level selection (``passed_reco`` and
            not ``passed_truth`` is a *fake*; ``passed_truth`` and not ``passed_reco`` is an
            inefficiency, a *miss*).
        names: observable names, ``d`` of them.
    """

    particle: np.ndarray
    detector: np.ndarray
    weights: np.ndarray
    passed_reco: np.ndarray
    passed_truth: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def from_arrays(cls, particle, detector, *, weights=None, passed_reco=None,
                    passed_truth=None, names=None) -> EventSample:
        """Check and wrap user arrays (see the class attributes for the shapes).

        Raises:
            InvalidInput: mismatched shapes, non-finite values where an event passed the
                selection, negative weights or a non-positive total weight.
        """
        p = _as_2d("particle", particle)
        n, d = p.shape
        det = _as_2d("detector", detector, n)
        if det.shape[1] != d:
            raise InvalidInput(f"particle has {d} observables but detector has {det.shape[1]}; "
                               "give the same observables at both levels, in the same order")
        reco = _as_mask("passed_reco", passed_reco, n)
        truth = _as_mask("passed_truth", passed_truth, n)
        w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
        if w.shape != (n,):
            raise InvalidInput(f"weights must have shape ({n},); got {w.shape}")
        if not np.all(np.isfinite(w)):
            raise InvalidInput("weights must be finite; got NaN or inf")
        if np.any(w < 0):
            raise InvalidInput(f"weights must be non-negative; {int(np.sum(w < 0))} of {n} are "
                               "negative (negative-weight events are not supported here)")
        if not w.sum() > 0:
            raise InvalidInput("the total event weight is zero; give positive weights")
        if not np.any(reco | truth):
            raise InvalidInput("no event passes either selection (passed_reco, passed_truth)")
        for lev, arr, mask in (("particle", p, truth), ("detector", det, reco)):
            bad = ~np.all(np.isfinite(arr[mask]), axis=1)
            if np.any(bad):
                raise InvalidInput(f"{int(bad.sum())} events passing the {lev}-level selection "
                                   f"have NaN/inf {lev}-level values; fix them or set the mask")
        names = tuple(f"x{i}" for i in range(d)) if names is None else tuple(names)
        if len(names) != d:
            raise InvalidInput(f"expected {d} observable names; got {len(names)}")
        return cls(p, det, w, reco, truth, names)

    @classmethod
    def measured_only(cls, detector, *, weights=None, names=None) -> EventSample:
        """Real data: detector-level events only (particle level NaN, ``passed_truth`` False)."""
        det = _as_2d("detector", detector)
        n = det.shape[0]
        return cls.from_arrays(np.full_like(det, np.nan), det, weights=weights,
                               passed_reco=np.ones(n, bool), passed_truth=np.zeros(n, bool),
                               names=names)

    def __len__(self) -> int:
        return self.particle.shape[0]

    @property
    def n_observables(self) -> int:
        return self.particle.shape[1]

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        """Particle-level values and weights of the events passing the particle selection."""
        return self.particle[self.passed_truth], self.weights[self.passed_truth]

    def measured(self) -> tuple[np.ndarray, np.ndarray]:
        """Detector-level values and weights of the events passing the detector selection."""
        return self.detector[self.passed_reco], self.weights[self.passed_reco]


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class UnfoldingData:
    """Simulated pairs, the measured data and (for toys) the data's particle-level truth.

    Attributes:
        sim: simulated events (particle and detector level, both masks).
        data: measured events; only ``data.detector[data.passed_reco]`` is used by the
            unfolding methods, the particle level is the truth the result is compared with
            (NaN for real data, where ``has_truth`` is False).
        name: a label for tables and plots.
        has_truth: whether ``data.particle`` holds the truth.
        ranges: ``(d, 2)`` plotting/binning range per observable.
        discrete: per observable, whether it takes integer values (binning with unit bins).
    """

    sim: EventSample
    data: EventSample
    name: str = "user"
    has_truth: bool = True
    ranges: np.ndarray | None = None
    discrete: tuple[bool, ...] = field(default=())

    def __post_init__(self):
        if self.sim.n_observables != self.data.n_observables:
            raise InvalidInput(f"simulation has {self.sim.n_observables} observables but data "
                               f"has {self.data.n_observables}")
        if not np.any(self.sim.passed_reco & self.sim.passed_truth):
            raise InvalidInput("no simulated event passes both selections; the detector "
                               "response cannot be learned")
        if not np.any(self.data.passed_reco):
            raise InvalidInput("no data event passes the detector-level selection")
        if self.ranges is None:
            x = np.concatenate([self.sim.particle[self.sim.passed_truth],
                                self.sim.detector[self.sim.passed_reco]])
            lo, hi = np.quantile(x, [0.001, 0.999], axis=0)
            object.__setattr__(self, "ranges", np.stack([lo, hi], axis=1))
        if not self.discrete:
            object.__setattr__(self, "discrete", (False,) * self.sim.n_observables)

    @property
    def names(self) -> tuple[str, ...]:
        return self.sim.names


def check_detector_range(sim: EventSample, x: np.ndarray, *, stacklevel: int = 3) -> float:
    """Warn with the fraction of measured events outside the simulated detector-level range.

    Returns:
        The fraction of rows of ``x`` with any observable outside the [min, max] range of the
        simulated detector level (events passing ``passed_reco``).
    """
    ref = sim.detector[sim.passed_reco]
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    out = np.any((x < lo) | (x > hi), axis=1)
    frac = float(out.mean()) if len(x) else 0.0
    if frac > 0:
        worst = np.argmax(np.mean((x < lo) | (x > hi), axis=0))
        warnings.warn(
            f"{frac:.2%} of the measured events ({int(out.sum())} of {len(x)}) lie outside the "
            f"simulated detector-level range (most often in {sim.names[worst]!r}: simulated "
            f"[{lo[worst]:.4g}, {hi[worst]:.4g}]); the unfolding extrapolates there — simulate "
            "a wider phase space or cut the data", ExtrapolationWarning, stacklevel=stacklevel)
    return frac


def read_events(path, columns, *, tree: str | None = None) -> dict[str, np.ndarray]:
    """Read columns of a parquet, CSV or ROOT file into numpy arrays.

    Args:
        path: ``.parquet``/``.pq`` (pandas + pyarrow), ``.csv`` (pandas) or ``.root`` (uproot;
            ``tree`` names the TTree or RNTuple, default: the only one in the file).
        columns: column (branch) names to read.
        tree: TTree name for ROOT files.

    Returns:
        ``{column: 1-d array}``.

    Raises:
        InvalidInput: unknown suffix, missing file or columns (the message lists what exists).
        MissingDependency: pandas/pyarrow/uproot not installed (extra ``io``).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}")
    columns = list(columns)
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq", ".csv"):
        pd = optional_import("pandas")
        if suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            optional_import("pyarrow")
            frame = pd.read_parquet(path)
        available = list(frame.columns)
        missing = [c for c in columns if c not in available]
        if missing:
            raise InvalidInput(f"columns {missing} are not in {path.name}; it has {available}")
        return {c: frame[c].to_numpy() for c in columns}
    if suffix == ".root":
        uproot = optional_import("uproot")
        with uproot.open(path) as f:
            trees = [k.split(";")[0] for k, v in f.items()
                     if v.classname in ("TTree", "ROOT::RNTuple")]
            if tree is None:
                if len(trees) != 1:
                    raise InvalidInput(f"{path.name} has trees {trees}; name one with tree=")
                tree = trees[0]
            if tree not in trees:
                raise InvalidInput(f"no tree {tree!r} in {path.name}; it has {trees}")
            t = f[tree]
            available = list(t.keys())
            missing = [c for c in columns if c not in available]
            if missing:
                raise InvalidInput(f"branches {missing} are not in {path.name}:{tree}; it has "
                                   f"{available}")
            got = t.arrays(columns, library="np")
            return {c: np.asarray(got[c]) for c in columns}
    raise InvalidInput(f"unknown file type {path.suffix!r} for {path.name}; use .parquet, .csv "
                       "or .root")
