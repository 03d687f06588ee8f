"""Saving a :class:`CorrectionFlow` as an artifact, and loading it with numpy + onnxruntime.

:func:`from_artifact` (registered for kind ``"correction_flow"``) imports neither jax nor onnx.
"""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import numpy as np

from surrogate_stats.artifact._format import load_arrays, write_artifact
from surrogate_stats.artifact._runtime import make_session
from surrogate_stats.errors import InvalidArtifact, InvalidInput

__all__ = ["save_correction", "from_artifact", "LoadedCorrection", "KIND"]

KIND = "correction_flow"
N_SELF_CHECK = 64
SELF_CHECK_TOL = 1e-5
PARITY_RTOL = 1e-4


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in ("surrogate_stats", "jax", "onnx", "onnxruntime", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def save_correction(cf, directory, *, name: str | None = None) -> Path:
    """Write ``cf`` (a trained :class:`CorrectionFlow`) to ``directory`` atomically.

    Graphs: ``model`` (``x, conditions, noise -> x_corrected``), ``log_prob`` and ``sample``.
    Self-check events (corrected by JAX and by the graph, which must agree within 1e-4
    relative) are stored and re-evaluated at load.
    """
    import onnxruntime as ort

    from surrogate_stats.flows._correction import correction_graphs

    name = name or Path(directory).name
    blobs, specs = correction_graphs(cf.flow, cf.spikes, cf.flags, name=name)
    rng = np.random.default_rng(12345)
    nc = len(cf.conditions)
    lo, hi = cf.condition_range
    x, c = cf.check_events
    x = np.asarray(x, np.float32).astype(np.float64)[:N_SELF_CHECK]
    c = np.asarray(c, np.float32).astype(np.float64)[:N_SELF_CHECK]
    u = rng.random(x.shape).astype(np.float32)
    sess = ort.InferenceSession(blobs["model"], providers=["CPUExecutionProvider"])
    feed = {"x": x.astype(np.float32), "noise": u}
    if nc:
        feed["conditions"] = c.astype(np.float32)
    onnx_out = sess.run(None, feed)[0].astype(np.float64)
    jax_out = np.asarray(cf._jit()(x.astype(np.float32), c.astype(np.float32), u), np.float64)
    rel = np.abs(onnx_out - jax_out) / np.maximum(np.abs(jax_out), 1.0)
    parity = float(rel.max())
    if parity > PARITY_RTOL:
        raise InvalidArtifact(f"ONNX graph and JAX disagree by {parity:.3g} (relative) on the "
                              "self-check events; refusing to write the artifact")
    meta = {
        "kind": KIND,
        "name": name,
        "graphs": specs,
        "variables": list(cf.variables),
        "conditions": list(cf.conditions),
        "flag": {"data": cf.flags["data"], "mc": cf.flags["mc"],
                 "position": "last column of the flow's conditions",
                 "meaning": "condition value for data and for simulation; correction maps "
                            "x -> z with the mc value and back with the data value"},
        "spikes": {**cf.spikes, "method": "slab dequantisation (see docs/flows.md)"},
        "condition_range": {"lo": [float(v) for v in lo], "hi": [float(v) for v in hi]},
        "flow": cf.flow.structure(),
        "config": cf.config.as_dict(),
        "training": {k: v for k, v in cf.history.items()},
        "record": cf.record,
        "self_check": {"onnx_vs_jax_max_rel": parity, "tolerance": SELF_CHECK_TOL},
        "provenance": {"versions": _versions()},
    }
    arrays = {"weights": cf.flow.arrays(),
              "self_check": {"x": x, "conditions": c, "noise": u.astype(np.float64),
                             "corrected": onnx_out}}
    return write_artifact(directory, meta, blobs, arrays)


class LoadedCorrection:
    """A published correction evaluated with onnxruntime (numpy + onnxruntime only)."""

    def __init__(self, meta, sessions, *, on_extrapolation="warn"):
        self.metadata = meta
        self.variables = tuple(meta["variables"])
        self.conditions = tuple(meta["conditions"])
        self.flags = {"data": float(meta["flag"]["data"]), "mc": float(meta["flag"]["mc"])}
        self.spikes = meta["spikes"]
        self.condition_range = (np.asarray(meta["condition_range"]["lo"], float),
                                np.asarray(meta["condition_range"]["hi"], float))
        self._s = sessions
        self.on_extrapolation = on_extrapolation

    def __repr__(self):
        return (f"LoadedCorrection({self.metadata.get('name')!r}, variables="
                f"{list(self.variables)}, conditions={list(self.conditions)})")

    def _inputs(self, X, C):
        from surrogate_stats.flows._correction import _event_inputs

        return _event_inputs(X, C, self.variables, self.conditions)

    def _run(self, role, feed, batch_size):
        n = len(next(iter(feed.values())))
        outs = []
        for i in range(0, max(n, 1), batch_size):
            outs.append(self._s[role].run(None, {k: np.ascontiguousarray(v[i:i + batch_size],
                                                                         np.float32)
                                                 for k, v in feed.items()})[0])
        return np.concatenate(outs).astype(np.float64)

    def correct(self, X, C=None, *, seed: int = 0, noise=None, batch_size: int = 262144):
        """Corrected copies of simulated events; ``seed``/``noise`` place spike events in
        their slabs (``noise``: U[0,1) draws of shape (N, D))."""
        from surrogate_stats.flows._correction import check_conditions_range

        x, c = self._inputs(X, C)
        check_conditions_range(c, *self.condition_range, self.on_extrapolation,
                               self.conditions)
        u = (np.random.default_rng(seed).random(x.shape) if noise is None
             else np.asarray(noise, np.float64))
        if u.shape != x.shape:
            raise InvalidInput(f"noise must have shape {x.shape}; got {u.shape}")
        feed = {"x": x, "noise": u}
        if self.conditions:
            feed["conditions"] = c
        return self._run("model", feed, batch_size)

    def _cond(self, c, sample):
        if sample not in ("data", "mc"):
            raise InvalidInput(f"sample must be 'data' or 'mc'; got {sample!r}")
        return np.concatenate([c, np.full((len(c), 1), self.flags[sample])], axis=1)

    def log_prob(self, X, C=None, *, sample: str = "data", seed: int = 0,
                 batch_size: int = 262144):
        """Log density of the slab-stretched variables under the data or MC model."""
        x, c = self._inputs(X, C)
        u = np.random.default_rng(seed).random(x.shape)
        return self._run("log_prob", {"x": x, "conditions": self._cond(c, sample), "noise": u},
                         batch_size)

    def sample(self, C=None, *, n: int | None = None, sample: str = "data", noise=None,
               seed: int = 0, batch_size: int = 262144):
        """Events drawn from the data (or MC) model at conditions ``C``; ``noise``: N(0,1)
        draws of shape (N, D) (default: from ``seed``)."""
        d = len(self.variables)
        if self.conditions:
            _, c = self._inputs(np.zeros((len(np.asarray(C)), d)), C)
        else:
            c = np.zeros((n or (len(noise) if noise is not None else 1), 0))
        z = (np.random.default_rng(seed).standard_normal((len(c), d)) if noise is None
             else np.asarray(noise, np.float64))
        if z.shape != (len(c), d):
            raise InvalidInput(f"noise must have shape {(len(c), d)}; got {z.shape}")
        return self._run("sample", {"noise": z, "conditions": self._cond(c, sample)},
                         batch_size)


def from_artifact(meta, graphs, arrays, *, on_extrapolation="warn", threads=None):
    """Loader for kind ``correction_flow`` (numpy + onnxruntime only)."""
    for key in ("variables", "conditions", "flag", "spikes", "condition_range"):
        if key not in meta:
            raise InvalidArtifact(f"metadata.json lacks {key!r}")
    for role in ("model", "log_prob", "sample"):
        if role not in graphs:
            raise InvalidArtifact(f"the artifact has no {role!r} graph")
    sessions = {r: make_session(graphs[r], meta["graphs"][r], threads=threads)
                for r in ("model", "log_prob", "sample")}
    try:
        obj = LoadedCorrection(meta, sessions, on_extrapolation=on_extrapolation)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArtifact(f"metadata.json is malformed: {exc}") from None
    sc = load_arrays(arrays, "self_check", ["x", "conditions", "noise", "corrected"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = obj.correct(sc["x"], sc["conditions"] if obj.conditions else None,
                          noise=sc["noise"])
    if not np.allclose(got, sc["corrected"], rtol=SELF_CHECK_TOL, atol=SELF_CHECK_TOL):
        worst = float(np.max(np.abs(got - sc["corrected"])))
        raise InvalidArtifact(f"self-check failed: the correction graph differs from the "
                              f"stored outputs by up to {worst:.3g}")
    return obj
