"""Spikes (values many events share exactly, e.g. isolation = 0) as slabs.

A flow needs a continuous density. Each detected spike value ``s`` of a variable is given a
slab of width ``w`` in a stretched copy of the variable's axis: values above ``s`` move
up by ``w``, and events exactly at ``s`` are spread over ``[s, s + w)`` with a triangular
density made from a noise ``u ~ U[0, 1)`` (dequantisation; the triangle's density
vanishes at the slab's edges, which a smooth flow learns far better than a box). The flow
learns the continuous stretched variable, so the probability of landing in a slab (the
spike fraction) is learned jointly with everything else, conditional on the kinematics and
on the other variables. Mapping back, a value in a slab becomes exactly ``s``; a value above
it moves down by ``w``. A spike at the smallest (largest) value of its variable also absorbs
what lands below (above) its slab, so a variable that is never below its spike
(isolation >= 0) stays so after the correction. Several spikes per variable (discrete
variables) stack their slabs. Both maps use only the ops vocabulary, so they are in the
exported ONNX graph too.
"""

from __future__ import annotations

import numpy as np

__all__ = ["detect_spikes", "spike_pre", "spike_post", "SPIKE_MIN_FRACTION"]

SPIKE_MIN_FRACTION = 0.005
SLAB_SCALE = 4.0


def detect_spikes(x: np.ndarray, *, min_fraction: float = SPIKE_MIN_FRACTION,
                  min_count: int = 20) -> dict[str, list]:
    """Values shared exactly by at least ``min_fraction`` of the events (and ``min_count``).

    Returns ``{"column", "value", "width", "offset", "edge"}`` lists sorted by column then
    value, with slab width ``w = fraction * 4 * std(non-spike values)`` (a slab about as
    dense as the variable's continuous part); ``edge`` is -1 (1) for a spike below (above)
    every other value of its variable, else 0.
    """
    out = {"column": [], "value": [], "width": [], "offset": [], "edge": []}
    n = len(x)
    for j in range(x.shape[1]):
        vals, counts = np.unique(x[:, j], return_counts=True)
        keep = (counts >= max(min_count, min_fraction * n))
        if not keep.any():
            continue
        spike_vals = vals[keep]
        rest = x[~np.isin(x[:, j], spike_vals), j]
        scale = rest.std() if rest.size >= 10 and rest.std() > 0 else x[:, j].std()
        scale = float(scale) if scale > 0 else 1.0
        off = 0.0
        for v, c in zip(spike_vals, counts[keep]):
            w = float(c / n * SLAB_SCALE * scale)
            out["column"].append(int(j))
            out["value"].append(float(v))
            out["width"].append(w)
            out["offset"].append(off)
            out["edge"].append(-1 if v == vals[0] else (1 if v == vals[-1] else 0))
            off += w
    return out


def _mats(spikes, dim):
    cols = np.asarray(spikes["column"], int)
    onehot = np.zeros((len(cols), dim))
    onehot[np.arange(len(cols)), cols] = 1.0
    return (cols, np.asarray(spikes["value"], float), np.asarray(spikes["width"], float),
            np.asarray(spikes["offset"], float), onehot)


def spike_pre(ops, x, u, spikes, dim):
    """Stretched variable: ``x`` (with spikes) and uniforms ``u`` (N, dim) -> continuous."""
    if not spikes["column"]:
        return x
    cols, s, w, _, onehot = _mats(spikes, dim)
    xs = ops.take_cols(x, cols)
    above = ops.to_float(ops.gt(xs, s))
    at = ops.to_float(ops.eq(xs, s))
    us = ops.take_cols(u, cols)
    # triangular on [0, 1): inverse CDF of the tent density
    tri = ops.where(ops.lt(us, 0.5), ops.sqrt(us * 0.5), 1.0 - ops.sqrt((1.0 - us) * 0.5))
    return x + ops.matmul(above * w + at * tri * w, onehot)


def spike_post(ops, t, spikes, dim):
    """Inverse of :func:`spike_pre`: slab values become exactly the spike value."""
    if not spikes["column"]:
        return t
    cols, s, w, off, onehot = _mats(spikes, dim)
    edge = np.asarray(spikes.get("edge", [0] * len(cols)), int)
    lower = np.where(edge == -1, -1e30, s + off)
    upper = np.where(edge == 1, 1e30, s + off + w)
    ts = ops.take_cols(t, cols)
    above = ops.to_float(ops.ge(ts, upper))
    inside = ops.to_float(ops.ge(ts, lower)) * (1.0 - above)
    in_any = ops.matmul(inside, onehot)
    value = ops.matmul(inside * s, onehot)
    return ops.where(ops.gt(in_any, 0.5), value, t - ops.matmul(above * w, onehot))
