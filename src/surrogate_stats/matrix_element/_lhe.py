"""A small Les Houches Event file writer (LHEF 3.0) and an array output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = ["write_lhe", "write_arrays"]

_BEAM_IDS = {11: 11, -11: -11, 21: 21}


def _colours(particles):
    """Colour flow (ICOLUP) per particle for the supported processes (leading-colour lines)."""
    n = len(particles)
    cols = [(0, 0)] * n
    if all(p == 21 for p in particles):  # a colour chain through all gluons (one ordering)
        # incoming gluons carry (anti)colour crossing: chain 501 -> 502 -> ... closed
        tags = [501 + i for i in range(n)]
        out = []
        for i in range(n):
            c, a = tags[i], tags[i - 1]
            out.append((a, c) if i < 2 else (c, a))
        return out
    if 2 in particles and -2 in particles and 21 in particles:
        q, qb, g = particles.index(2), particles.index(-2), particles.index(21)
        cols[q], cols[g], cols[qb] = (501, 0), (502, 501), (0, 502)
    return cols


def write_lhe(path: str | Path, result, process, *, strategy: str = "two-stage") -> Path:
    """Write unweighted events as a Les Houches Event file.

    The ``<init>`` block carries the beams, ``IDWTUP = 4`` (the cross section is the mean of
    the event weights), the cross section and its error (pb); a ``<generator>`` comment
    records the weighting strategy. Each event's ``XWGTUP`` is ``sigma * w_i / mean(w)`` with
    ``w_i`` its unweighting weight (1 unless overweight).

    Args:
        path: file to write.
        result: an :class:`~surrogate_stats.matrix_element.UnweightingResult`.
        process: the :class:`~surrogate_stats.matrix_element.Process`.
        strategy: text for the header ("two-stage" surrogate unweighting or "exact").
    """
    p = np.asarray(result.momenta, np.float64)
    w = np.asarray(result.weights, np.float64)
    if p.ndim != 3 or p.shape[1] != len(process.particles) or p.shape[0] != w.shape[0]:
        raise InvalidInput(f"events must be [N, {len(process.particles)}, 4] with one weight "
                           f"each; got {p.shape} and {w.shape}")
    ids = process.particles
    ebeam = 0.5 * process.sqrt_s
    xw = result.sigma * w / w.mean() if w.size else w
    cols = _colours(list(ids))
    lines = ['<LesHouchesEvents version="3.0">', "<header>",
             f"<generator name=\"surrogate_stats\">{process.name} at sqrt(s) = "
             f"{process.sqrt_s:g} GeV; weighting: {strategy} unweighting, overweights kept as "
             "weights max(1,s/s_max)*max(1,x/x_max) (never clipped)</generator>",
             "</header>", "<init>",
             f"{ids[0]} {ids[1]} {ebeam:.10e} {ebeam:.10e} 0 0 0 0 4 1",
             f"{result.sigma:.10e} {result.sigma_err:.10e} {1.0:.10e} 1", "</init>"]
    n = len(ids)
    for i in range(p.shape[0]):
        lines.append("<event>")
        lines.append(f"{n} 1 {xw[i]:.10e} {process.sqrt_s:.10e} {-1.0:.10e} {-1.0:.10e}")
        for j in range(n):
            e, px, py, pz = p[i, j]
            status = -1 if j < 2 else 1
            mothers = "0 0" if j < 2 else "1 2"
            c1, c2 = cols[j]
            lines.append(f"{ids[j]} {status} {mothers} {c1} {c2} {px:.10e} {py:.10e} "
                         f"{pz:.10e} {e:.10e} {0.0:.10e} 0. 9.")
        lines.append("</event>")
    lines.append("</LesHouchesEvents>")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_arrays(path: str | Path, result) -> Path:
    """Write ``momenta``, ``weights``, ``sigma``, ``sigma_err`` to an ``.npz`` (no pickle)."""
    path = Path(path)
    np.savez(path, momenta=result.momenta, weights=result.weights,
             sigma=np.float64(result.sigma), sigma_err=np.float64(result.sigma_err))
    return path
