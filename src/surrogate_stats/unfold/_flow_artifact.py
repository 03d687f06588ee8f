"""Loading a saved :class:`~surrogate_stats.unfold.Unfolder` with numpy + onnxruntime only.

:func:`from_artifact` is registered for kind ``"flow_unfolder"`` in
:mod:`surrogate_stats.artifact._load`; it imports neither jax nor onnx.
"""

from __future__ import annotations

import numpy as np

from surrogate_stats.artifact._format import load_arrays
from surrogate_stats.artifact._runtime import make_session
from surrogate_stats.errors import InvalidArtifact, InvalidInput
from surrogate_stats.unfold._flow_unfolder import (
    SELF_CHECK_TOL,
    UnfoldedEvents,
    _check_finite,
    _check_weights,
    _matrix,
    _posterior_weights,
    _range_check,
    _resample,
)

__all__ = ["LoadedUnfolder", "from_artifact"]

OUTPUTS = ("particle", "efficiency", "purity", "prior_ratio")


class LoadedUnfolder:
    """A published flow unfolder evaluated with onnxruntime (no JAX).

    It samples with the prior the saved unfolder had: the simulation's as trained, or the
    adapted prior of an unfolder saved after :meth:`~surrogate_stats.unfold.Unfolder.unfold`'s
    iterations — absorbed into the flow (the default: one graph pass per draw, metadata
    ``prior_absorbed``) or kept as a classifier (``absorb_prior=False``, metadata
    ``has_prior_ratio``: the draws are resampled from ``max(4 n_samples, n_proposals)``
    proposals per event in proportion to the graph's ``prior_ratio``, as in JAX). Running
    new iterations needs JAX (:meth:`surrogate_stats.unfold.Unfolder.load`).
    """

    def __init__(self, meta, session, *, on_extrapolation="warn"):
        self.metadata = meta
        self.particle_names = tuple(meta["particle"])
        self.detector_names = tuple(meta["detector"])
        self.detector_range = (np.asarray(meta["detector_range"]["lo"], float),
                               np.asarray(meta["detector_range"]["hi"], float))
        if not (len(self.detector_range[0]) == len(self.detector_range[1])
                == len(self.detector_names)):
            raise InvalidArtifact("detector_range does not match the detector columns")
        self._s = session
        self.on_extrapolation = on_extrapolation

    def __repr__(self):
        return (f"LoadedUnfolder({self.metadata.get('name')!r}, particle="
                f"{list(self.particle_names)}, detector={list(self.detector_names)})")

    def sample(self, detector, noise, *, batch_size: int = 262144):
        """``(particle, efficiency, purity, prior_ratio)`` for rows of ``detector`` and base
        draws ``noise`` (standard normal, shape ``(N, d_particle)``)."""
        r = _matrix("detector", detector, d=len(self.detector_names),
                    names=self.detector_names)
        z = _matrix("noise", noise, len(r), len(self.particle_names))
        outs = [[] for _ in OUTPUTS]
        for i in range(0, max(len(r), 1), batch_size):
            res = self._s.run(None, {"detector": np.ascontiguousarray(r[i:i + batch_size],
                                                                      np.float32),
                                     "noise": np.ascontiguousarray(z[i:i + batch_size],
                                                                   np.float32)})
            for o, v in zip(outs, res):
                o.append(v)
        return tuple(np.concatenate(o).astype(np.float64) for o in outs)

    def unfold(self, data_detector, *, n_samples: int = 1, seed: int = 0, noise=None,
               data_weights=None) -> UnfoldedEvents:
        """Posterior draws per measured event (no iterations; see the class docstring).

        Args:
            data_detector: ``(N, d_detector)`` measured events.
            n_samples: draws per event.
            seed: seed of the base draws (ignored when ``noise`` is given).
            noise: ``(N, M, d_particle)`` standard-normal base draws, ``M = n_samples``
                (``max(4 n_samples, n_proposals)`` for an adapted unfolder).
            data_weights: ``(N,)`` event weights.
        """
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise InvalidInput(f"n_samples must be a positive integer; got {n_samples!r}")
        r = _matrix("data_detector", data_detector, d=len(self.detector_names),
                    names=self.detector_names)
        _check_finite("data_detector", r, self.detector_names)
        v = _check_weights("data_weights", data_weights, len(r))
        frac = _range_check(r, *self.detector_range, self.detector_names,
                            self.on_extrapolation)
        dp = len(self.particle_names)
        adapted = bool(self.metadata.get("has_prior_ratio"))
        m = max(4 * n_samples, int(self.metadata["n_proposals"])) if adapted else n_samples
        rng = np.random.default_rng(seed)
        if noise is None:
            z = rng.standard_normal((len(r), m, dp))
        else:
            z = np.asarray(noise, np.float64)
            if z.shape != (len(r), m, dp):
                raise InvalidInput(f"noise must have shape {(len(r), m, dp)}; got {z.shape}")
        t, eff, pur, g = (a.reshape(len(r), m, *a.shape[1:]) for a in
                          self.sample(np.repeat(r, m, axis=0), z.reshape(-1, dp)))
        if adapted:
            _, prob, purity = _posterior_weights(eff, pur, g, v)
            t, w = _resample(rng, t, eff, prob, purity, v, n_samples)
        else:
            w = v[:, None] * pur / eff
        return UnfoldedEvents(t, w, self.particle_names, [], None, frac)


def from_artifact(meta, graphs, arrays, *, on_extrapolation="warn", threads=None):
    """Loader for kind ``flow_unfolder`` (numpy + onnxruntime only)."""
    for key in ("particle", "detector", "detector_range", "n_proposals"):
        if key not in meta:
            raise InvalidArtifact(f"metadata.json lacks {key!r}")
    if "model" not in graphs:
        raise InvalidArtifact("the artifact has no 'model' graph")
    session = make_session(graphs["model"], meta["graphs"]["model"], threads=threads)
    try:
        obj = LoadedUnfolder(meta, session, on_extrapolation=on_extrapolation)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArtifact(f"metadata.json is malformed: {exc}") from None
    sc = load_arrays(arrays, "self_check", ["detector", "noise", *OUTPUTS])
    got = obj.sample(sc["detector"], sc["noise"])
    for name, g in zip(OUTPUTS, got):
        if not np.allclose(g, sc[name], rtol=SELF_CHECK_TOL, atol=SELF_CHECK_TOL):
            worst = float(np.max(np.abs(g - sc[name])))
            raise InvalidArtifact(f"self-check failed: the graph's {name!r} differs from the "
                                  f"stored outputs by up to {worst:.3g}")
    return obj
