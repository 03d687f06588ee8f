"""ONNX export of a :class:`~surrogate_stats.flows.Flow` (hand-built graph, opset 17)."""

from __future__ import annotations

import numpy as np

from surrogate_stats.errors import InvalidInput
from surrogate_stats.flows._flow import Flow, flow_forward, flow_inverse, flow_log_prob, prepared
from surrogate_stats.flows._ops import OnnxOps

__all__ = ["export_onnx", "graph_io", "ROLES"]

ROLES = ("log_prob", "sample", "transform", "inverse")


def _numpy_flow(flow: Flow) -> Flow:
    return Flow(flow.dim, flow.cond_dim, flow.layers,
                tuple({k: np.asarray(v, np.float64) for k, v in p.items()} for p in flow.params),
                {k: np.asarray(v, np.float64) for k, v in flow.buffers.items()})


def graph_io(flow: Flow, role: str, *, dtype: str = "float32") -> dict:
    """The ``inputs``/``outputs`` spec (metadata.json form) of :func:`export_onnx`'s graph."""
    d, c = flow.dim, flow.cond_dim

    def t(name, shape, meaning):
        return {"name": name, "dtype": dtype, "shape": shape, "meaning": meaning}

    cond = [t("condition", ["N", c], "conditioning variables")] if c else []
    if role == "log_prob":
        return {"inputs": [t("x", ["N", d], "event")] + cond,
                "outputs": [t("log_prob", ["N"], "log p(x | condition)")]}
    if role == "sample":
        return {"inputs": [t("noise", ["N", d], "standard-normal base draws")] + cond,
                "outputs": [t("x", ["N", d], "sample = inverse(noise)")]}
    if role == "transform":
        return {"inputs": [t("x", ["N", d], "event")] + cond,
                "outputs": [t("z", ["N", d], "latent"),
                            t("logdet", ["N"], "log|det dz/dx|")]}
    if role == "inverse":
        return {"inputs": [t("z", ["N", d], "latent")] + cond,
                "outputs": [t("x", ["N", d], "event"),
                            t("logdet", ["N"], "log|det dx/dz|")]}
    raise InvalidInput(f"role must be one of {ROLES}; got {role!r}")


def export_onnx(flow: Flow, *, role: str = "log_prob", dtype: str = "float32",
                name: str = "flow") -> bytes:
    """Serialise one of the flow's functions as an ONNX graph with a dynamic batch axis.

    Roles: ``"log_prob"`` (``x[, condition] -> log_prob``), ``"sample"`` (``noise[,
    condition] -> x``: the base draws are an input, nothing random runs in the graph),
    ``"transform"`` (``x -> z, logdet``) and ``"inverse"`` (``z -> x, logdet``). The graph
    is recorded from the same code that evaluates the flow in JAX.
    """
    if dtype not in ("float32", "float64"):
        raise InvalidInput(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    io = graph_io(flow, role, dtype=dtype)
    nf = _numpy_flow(flow)
    ops = OnnxOps(dtype)
    args = [ops.input(s["name"], s["shape"]) for s in io["inputs"]]
    x, cond = args[0], (args[1] if flow.cond_dim else None)
    out_shapes = [s["shape"] for s in io["outputs"]]
    names = [s["name"] for s in io["outputs"]]
    if role == "log_prob":
        outs = [flow_log_prob(ops, nf, prepared(nf, np, inverse=False), x, cond)]
    elif role == "transform":
        outs = list(flow_forward(ops, nf, prepared(nf, np, inverse=False), x, cond))
    else:
        outs = list(flow_inverse(ops, nf, prepared(nf, np, inverse=True), x, cond))
        if role == "sample":
            outs = outs[:1]
    outs = [o if not isinstance(o, (float, np.floating)) else ops.sum_last(x * 0.0) + o
            for o in outs]
    return ops.model({n: (o, s) for n, o, s in zip(names, outs, out_shapes)}, name=name)
