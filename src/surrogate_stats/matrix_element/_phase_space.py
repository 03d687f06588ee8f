"""Massless RAMBO phase space, kinematic helpers and cuts (numpy, float64).

Momenta are ``[..., n, 4]`` arrays of (E, px, py, pz) in GeV. Events of a process hold the two
incoming momenta first, along +z and -z in the centre-of-mass frame, then the outgoing ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = ["Cuts", "rambo", "phase_space_volume", "beams", "check_momenta", "invariants"]

METRIC = np.array([1.0, -1.0, -1.0, -1.0])


def phase_space_volume(n: int, sqrt_s: float) -> float:
    """Volume of massless n-body phase space, ``int prod d^3p/((2pi)^3 2E) (2pi)^4 delta^4``.

    ``Phi_n = (2pi)^(4-3n) (pi/2)^(n-1) s^(n-2) / ((n-1)! (n-2)!)``; RAMBO's (constant)
    weight. ``Phi_2 = 1/(8 pi)``, ``Phi_3 = s/(256 pi^3)``.
    """
    if n < 2:
        raise InvalidInput(f"phase space needs n >= 2 outgoing particles; got {n}")
    s = float(sqrt_s) ** 2
    return ((2 * math.pi) ** (4 - 3 * n) * (math.pi / 2) ** (n - 1) * s ** (n - 2)
            / (math.factorial(n - 1) * math.factorial(n - 2)))


def beams(n_events: int, sqrt_s: float) -> np.ndarray:
    """The two incoming momenta ``[n_events, 2, 4]``: along +z, then along -z."""
    e = 0.5 * float(sqrt_s)
    b = np.array([[e, 0.0, 0.0, e], [e, 0.0, 0.0, -e]])
    return np.broadcast_to(b, (n_events, 2, 4)).copy()


def rambo(rng: np.random.Generator | int, n_events: int, n_out: int, sqrt_s: float) -> np.ndarray:
    """Massless RAMBO (Kleiss, Stirling, Ellis 1986): flat n-body phase space.

    Every event has the same weight, :func:`phase_space_volume` ``(n_out, sqrt_s)``.

    Args:
        rng: a numpy Generator or an integer seed.
        n_events: number of events.
        n_out: number of outgoing massless particles (>= 2).
        sqrt_s: centre-of-mass energy in GeV.

    Returns:
        Momenta ``[n_events, 2 + n_out, 4]``: the two beams then the outgoing particles.
    """
    if not (isinstance(n_out, (int, np.integer)) and n_out >= 2):
        raise InvalidInput(f"n_out must be an integer >= 2; got {n_out!r}")
    if not (math.isfinite(sqrt_s) and sqrt_s > 0):
        raise InvalidInput(f"sqrt_s must be a positive number of GeV; got {sqrt_s!r}")
    rng = np.random.default_rng(rng)
    r = rng.random((n_events, n_out, 4))
    cos = 2.0 * r[..., 0] - 1.0
    sin = np.sqrt(np.maximum(0.0, 1.0 - cos**2))
    phi = 2.0 * math.pi * r[..., 1]
    q0 = -np.log(r[..., 2] * r[..., 3] + 1e-300)
    q = np.stack([q0, q0 * sin * np.cos(phi), q0 * sin * np.sin(phi), q0 * cos], axis=-1)
    Q = q.sum(axis=1)
    M = np.sqrt(Q[:, 0] ** 2 - np.sum(Q[:, 1:] ** 2, axis=1))
    b = -Q[:, 1:] / M[:, None]
    x = float(sqrt_s) / M
    gamma = Q[:, 0] / M
    a = 1.0 / (1.0 + gamma)
    bq = np.einsum("ei,eki->ek", b, q[..., 1:])
    p0 = x[:, None] * (gamma[:, None] * q[..., 0] + bq)
    pv = x[:, None, None] * (q[..., 1:] + b[:, None, :] * q[..., :1]
                             + a[:, None, None] * bq[..., None] * b[:, None, :])
    out = np.concatenate([p0[..., None], pv], axis=-1)
    return np.concatenate([beams(n_events, sqrt_s), out], axis=1)


def check_momenta(p, n_particles: int, sqrt_s: float | None = None, *, rtol: float = 1e-6,
                  name: str = "momenta") -> np.ndarray:
    """Validate ``p`` as ``[N, n_particles, 4]`` finite float momenta conserving 4-momentum."""
    try:
        arr = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a numeric array [N, {n_particles}, 4]") from None
    if arr.ndim != 3 or arr.shape[1:] != (n_particles, 4):
        raise InvalidInput(f"{name} must have shape [N, {n_particles}, 4] (E, px, py, pz) with "
                           f"the two incoming momenta first; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} contain NaN or infinite entries")
    if arr.shape[0] == 0:
        return arr
    scale = np.max(np.abs(arr[:, :2, 0]), axis=1) + 1e-300
    imbalance = np.abs(arr[:, :2].sum(axis=1) - arr[:, 2:].sum(axis=1)).max(axis=1) / scale
    bad = np.flatnonzero(imbalance > rtol)
    if bad.size:
        raise InvalidInput(
            f"{name}: 4-momentum is not conserved in {bad.size} of {arr.shape[0]} events "
            f"(first: event {bad[0]}, |sum p_in - sum p_out| / E_beam = "
            f"{imbalance[bad[0]]:.3g} > {rtol:g}); pass the incoming momenta first, then the "
            "outgoing ones")
    if sqrt_s is not None:
        s_in = minkowski(arr[:, 0] + arr[:, 1], arr[:, 0] + arr[:, 1])
        off = np.abs(np.sqrt(np.maximum(s_in, 0)) - sqrt_s) / sqrt_s
        if np.any(off > 1e-6):
            i = int(np.argmax(off))
            raise InvalidInput(f"{name}: event {i} has sqrt(s) = {math.sqrt(max(s_in[i], 0)):.6g}"
                               f" GeV but the process was set up for sqrt_s = {sqrt_s:g} GeV")
    return arr


def minkowski(a, b):
    return a[..., 0] * b[..., 0] - np.sum(a[..., 1:] * b[..., 1:], axis=-1)


def invariants(p: np.ndarray) -> np.ndarray:
    """``2 p_i . p_j`` for every pair (physical momenta, all positive energies): ``[N, n, n]``."""
    pm = p * METRIC
    return 2.0 * np.einsum("eia,eja->eij", p, pm)


def _pt(p):
    return np.hypot(p[..., 1], p[..., 2])


def _eta_phi(p):
    pt = _pt(p)
    eta = np.arcsinh(p[..., 3] / np.maximum(pt, 1e-300))
    return eta, np.arctan2(p[..., 2], p[..., 1])


@dataclass(frozen=True)
class Cuts:
    """Cuts on the outgoing particles that regulate soft and collinear regions (all JSON-able).

    Attributes:
        pt_min: minimum transverse momentum (GeV) of every outgoing particle.
        eta_max: maximum |pseudorapidity| of every outgoing particle.
        delta_r_min: minimum sqrt(d_eta^2 + d_phi^2) between outgoing pairs.
        y_min: minimum ``s_ij / s`` over outgoing pairs (Durham-like resolution).
    """

    pt_min: float = 0.0
    eta_max: float = math.inf
    delta_r_min: float = 0.0
    y_min: float = 0.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and v >= 0 and not math.isnan(v)):
                raise InvalidInput(f"Cuts.{k} must be a number >= 0; got {v!r}")

    def to_dict(self) -> dict:
        return {k: (None if math.isinf(v) else float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Cuts:
        return cls(**{k: (math.inf if v is None else float(v)) for k, v in d.items()})

    def passes(self, p: np.ndarray) -> np.ndarray:
        """Boolean mask ``[N]`` of events ``[N, 2 + n_out, 4]`` passing every cut."""
        out = p[:, 2:]
        ok = np.ones(p.shape[0], dtype=bool)
        if self.pt_min > 0:
            ok &= np.all(_pt(out) >= self.pt_min, axis=1)
        if math.isfinite(self.eta_max) or self.delta_r_min > 0:
            eta, phi = _eta_phi(out)
            if math.isfinite(self.eta_max):
                ok &= np.all(np.abs(eta) <= self.eta_max, axis=1)
        n = out.shape[1]
        iu, ju = np.triu_indices(n, 1)
        if self.delta_r_min > 0:
            dphi = np.abs(phi[:, iu] - phi[:, ju])
            dphi = np.minimum(dphi, 2 * math.pi - dphi)
            dr = np.hypot(eta[:, iu] - eta[:, ju], dphi)
            ok &= np.all(dr >= self.delta_r_min, axis=1)
        if self.y_min > 0:
            s = minkowski(p[:, 0] + p[:, 1], p[:, 0] + p[:, 1])
            sij = 2 * minkowski(out[:, iu], out[:, ju])
            ok &= np.all(sij >= self.y_min * s[:, None], axis=1)
        return ok
