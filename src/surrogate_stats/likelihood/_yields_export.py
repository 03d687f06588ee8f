"""Saving and loading yield-parametrised surrogates (artifact kind ``yield_likelihood``).

The artifact is the project's format (``docs/artifact-format.md``): ``model.onnx`` is one
float64 graph ``yields [N, B] -> delta_nll [N, 4], nll [N, 4]`` (columns in
:data:`DATASETS` order), ``weights.npz`` the same numbers for the numpy path, and
``metadata.json`` the bins, the trained domain, the zero-signal -ln L values, provenance,
label and training records, validation, and self-check pairs re-evaluated at every load.
Loading needs numpy and onnxruntime only.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.artifact._format import finite_number, load_arrays, write_artifact
from surrogate_stats.artifact._runtime import make_session
from surrogate_stats.errors import InvalidArtifact
from surrogate_stats.likelihood._yields_surrogate import (
    DATASETS,
    YieldBaseline,
    YieldLikelihoodSurrogate,
    YieldNetwork,
)

__all__ = ["save_yield_surrogate", "from_artifact", "build_onnx", "export_arrays"]

KIND = "yield_likelihood"
OPSET = 17
SELF_CHECK_RTOL = 1e-9
N_SELF_CHECK = 8


def _graph_io(n_bins: int) -> dict:
    return {
        "inputs": [{"name": "yields", "dtype": "float64", "shape": ["N", n_bins],
                    "meaning": "signal yields per bin (metadata bins order), i.e. mu * s"}],
        "outputs": [
            {"name": "delta_nll", "dtype": "float64", "shape": ["N", 4],
             "meaning": "-ln L(yields) - -ln L(0), columns " + ", ".join(DATASETS)},
            {"name": "nll", "dtype": "float64", "shape": ["N", 4],
             "meaning": "profiled -ln L (pyhf's twice_nll / 2), same columns"},
        ],
    }


def export_arrays(surrogate: YieldLikelihoodSurrogate) -> dict:
    """The surrogate's numbers as named float64 arrays (the layout of weights.npz)."""
    net, base = surrogate._net, surrogate._base
    out = {"net.scale": net.scale, "net.mean": net.mean, "net.std": net.std,
           "net.out_scale": net.out_scale, "base.c": base.c, "base.n": base.n,
           "base.b": base.b, "base.lin": base.lin, "base.quad": base.quad,
           "nll0": surrogate._nll0, "y_max": surrogate._y_max, "prefit": surrogate._prefit}
    for i, (w, b) in enumerate(net.layers):
        out[f"net.W{i}"] = np.asarray(w, dtype=float)
        out[f"net.b{i}"] = np.asarray(b, dtype=float)
    return out


def _from_arrays(arrays: dict, n_bins: int):
    names = ["net.scale", "net.mean", "net.std", "net.out_scale", "base.c", "base.n",
             "base.b", "base.lin", "base.quad", "nll0", "y_max", "prefit"]
    n_layers = 0
    while f"net.W{n_layers}" in arrays.get("weights", {}):
        n_layers += 1
    if n_layers < 1:
        raise InvalidArtifact("weights.npz has no network layers (net.W0, ...)")
    names += [f"net.{p}{i}" for i in range(n_layers) for p in "Wb"]
    a = load_arrays(arrays, "weights", names)
    shapes = {"net.scale": (n_bins,), "net.mean": (2 * n_bins,), "net.std": (2 * n_bins,),
              "net.out_scale": (4,), "base.c": (4, n_bins), "base.n": (4, n_bins),
              "base.b": (4, n_bins), "base.lin": (4, n_bins), "base.quad": (4, n_bins, n_bins),
              "nll0": (4,), "y_max": (n_bins,), "prefit": (n_bins,)}
    for k, shape in shapes.items():
        if a[k].shape != shape:
            raise InvalidArtifact(f"weights.npz: {k} has shape {a[k].shape}; expected {shape} "
                                  f"for {n_bins} bins")
    if np.any(a["base.b"] <= 0) or np.any(a["net.scale"] <= 0) or np.any(a["net.std"] <= 0):
        raise InvalidArtifact("weights.npz: base.b, net.scale and net.std must be positive")
    layers, n_in = [], 2 * n_bins
    for i in range(n_layers):
        w, b = a[f"net.W{i}"], a[f"net.b{i}"]
        if w.ndim != 2 or w.shape[0] != n_in or b.shape != (w.shape[1],):
            raise InvalidArtifact(f"weights.npz: layer {i} has shapes {w.shape}, {b.shape}, "
                                  "which do not chain")
        n_in = w.shape[1]
        layers.append((w, b))
    if n_in != 4:
        raise InvalidArtifact("weights.npz: the network must end in 4 outputs")
    net = YieldNetwork(layers=tuple(layers), scale=a["net.scale"], mean=a["net.mean"],
                       std=a["net.std"], out_scale=a["net.out_scale"])
    base = YieldBaseline(c=a["base.c"], n=a["base.n"], b=a["base.b"], lin=a["base.lin"],
                         quad=a["base.quad"])
    return net, base, a


def build_onnx(surrogate: YieldLikelihoodSurrogate, *, name: str = "yield_surrogate",
               dtype: str = "float64") -> bytes:
    """The graph ``yields [N, B] -> delta_nll [N, 4], nll [N, 4]`` (deterministic bytes)."""
    onnx = optional_import("onnx")
    blob = _model(surrogate, name=name, dtype=dtype)
    model = onnx.helper.make_model(
        blob, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="surrogate_stats", ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def graph_nodes(surrogate: YieldLikelihoodSurrogate, y: str, out: str, *, prefix: str = "",
                dtype: str = "float64"):
    """ONNX nodes and initializers computing delta_nll [N, 4] (named ``out``) from ``y``.

    Shared by this artifact's graph and the OLLL export (which feeds it ``y`` from the total
    yields). ``dtype`` is the graph's float type.
    """
    onnx = optional_import("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    npdt = np.float64 if dtype == "float64" else np.float32
    net, base = surrogate._net, surrogate._base
    n_bins = surrogate.n_bins
    inits, nodes = [], []

    def const(nm, value, kind=None):
        arr = np.asarray(value, dtype=kind or npdt)
        inits.append(numpy_helper.from_array(arr, prefix + nm))
        return prefix + nm

    def node(op, inputs, output, **kw):
        nodes.append(helper.make_node(op, inputs, [prefix + output], **kw))
        return prefix + output

    u = node("Div", [y, const("scale", net.scale)], "u")
    uc = node("Max", [u, const("u_floor", [-0.999])], "u_clip")
    lg = node("Log", [node("Add", [uc, const("one", [1.0])], "u1")], "log_u")
    feats = node("Concat", [u, lg], "features", axis=1)
    h = node("Div", [node("Sub", [feats, const("mean", net.mean)], "fc"),
                     const("std", net.std)], "z")
    n_layers = len(net.layers)
    for i, (w, b) in enumerate(net.layers):
        a = node("Add", [node("MatMul", [h, const(f"W{i}", w)], f"mm{i}"),
                         const(f"b{i}", b)], f"a{i}")
        h = node("Tanh", [a], f"h{i}") if i < n_layers - 1 else a
    res = node("Sub", [node("Mul", [h, const("out_scale", net.out_scale)], "res_raw"),
                       const("z0", surrogate._z0)], "res")
    # baseline: sum_b c (y - n log(1 + y/b)) + lin.y + y^T quad y / 2
    y3 = node("Unsqueeze", [y, const("ax1", [1], np.int64)], "y3")  # (N, 1, B)
    ratio = node("Max", [node("Div", [y3, const("bb", base.b)], "ratio0"),
                         const("r_floor", [-0.999999])], "ratio")
    l1p = node("Log", [node("Add", [ratio, const("one_b", [1.0])], "r1")], "log_r")
    pois = node("Mul", [const("cc", base.c),
                        node("Sub", [y3, node("Mul", [const("nn", base.n), l1p], "nlog")],
                             "pois_in")], "pois_terms")
    axes2 = const("ax2", [2], np.int64)
    pois_sum = node("ReduceSum", [pois, axes2], "pois", keepdims=0)
    lin = node("MatMul", [y, const("lin_t", base.lin.T)], "lin")
    qstack = np.transpose(base.quad, (1, 0, 2)).reshape(n_bins, 4 * n_bins)  # [b, d*B + c]
    qy = node("Reshape", [node("MatMul", [y, const("quad", qstack)], "qy_flat"),
                          const("shape_n4b", [-1, 4, n_bins], np.int64)], "qy")
    quad = node("Mul", [node("ReduceSum", [node("Mul", [qy, y3], "qyy"), axes2], "qsum",
                             keepdims=0), const("half", [0.5])], "quad_term")
    base_sum = node("Add", [node("Add", [pois_sum, lin], "pl"), quad], "base")
    nodes.append(helper.make_node("Add", [base_sum, res], [out]))
    return nodes, inits


def _model(surrogate: YieldLikelihoodSurrogate, *, name: str, dtype: str):
    onnx = optional_import("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    nodes, inits = graph_nodes(surrogate, "yields", "delta_nll", dtype=dtype)
    inits.append(numpy_helper.from_array(np.asarray(surrogate._nll0, dtype=np.float64), "nll0"))
    nodes.append(helper.make_node("Add", ["delta_nll", "nll0"], ["nll"]))
    n_bins = surrogate.n_bins
    t = onnx.TensorProto.DOUBLE
    return helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("yields", t, ["N", n_bins])],
        [helper.make_tensor_value_info("delta_nll", t, ["N", 4]),
         helper.make_tensor_value_info("nll", t, ["N", 4])], initializer=inits)


def _self_check_points(surrogate: YieldLikelihoodSurrogate) -> np.ndarray:
    """Fixed fractions of the trained maximum per bin (deterministic, inside the domain)."""
    fr = np.linspace(0.0, 0.6, N_SELF_CHECK)[:, None]
    tilt = (np.arange(surrogate.n_bins)[None, :] % 3 + 1) / 3.0
    return fr * tilt * surrogate._y_max[None, :]


def save_yield_surrogate(surrogate: YieldLikelihoodSurrogate, directory: str | Path, *,
                         metadata: dict | None = None) -> Path:
    """Write ``surrogate`` as an artifact in ``directory`` (atomically, deterministically)."""
    name = (metadata or {}).get("name") or Path(directory).name
    blob = build_onnx(surrogate, name=name)
    pts = _self_check_points(surrogate)
    dn = surrogate.delta_nll(pts)
    meta = dict(metadata or {})
    meta.update({
        "kind": KIND,
        "name": name,
        "graphs": {"model": _graph_io(surrogate.n_bins)},
        "bins": list(surrogate.bins),
        "datasets": list(DATASETS),
        "nll0": {d: float(v) for d, v in zip(DATASETS, surrogate._nll0)},
        "domain": {"y_min": [0.0] * surrogate.n_bins,
                   "y_max": [float(v) for v in surrogate._y_max]},
        "self_check": [{"yields": p.tolist(), "delta_nll": d.tolist()} for p, d in zip(pts, dn)],
    })
    meta["datasets_definition"] = (
        "observed: the workspace's data; apriori: background at pyhf's nominal parameters with "
        "nominal auxiliary data; observed_asimov: pyhf's Asimov data from the mu=0 fit to the "
        "observed data (expected=True); apriori_asimov: the Asimov data from the mu=0 fit to "
        "the apriori data. The signal enters through one normalisation factor (no signal "
        "systematics).")
    return write_artifact(directory, meta, {"model": blob}, {"weights": export_arrays(surrogate)})


def from_artifact(meta: dict, graphs: dict, arrays: dict, *, on_extrapolation: str = "warn",
                  threads: int | None = None) -> YieldLikelihoodSurrogate:
    """Build the surrogate from a verified artifact and re-run its self-check pairs."""
    bins = meta.get("bins")
    if (not isinstance(bins, list) or not bins or not all(isinstance(b, str) and b for b in bins)
            or len(set(bins)) != len(bins)):
        raise InvalidArtifact("metadata.json bins must be a non-empty list of distinct names")
    n_bins = len(bins)
    nll0 = [finite_number(meta, "nll0", d) for d in DATASETS]
    net, base, a = _from_arrays(arrays, n_bins)
    if not np.allclose(a["nll0"], nll0, rtol=0, atol=0):
        raise InvalidArtifact("metadata.json nll0 and weights.npz nll0 differ")
    session = make_session(graphs["model"], meta["graphs"]["model"], threads=threads)
    surrogate = YieldLikelihoodSurrogate(
        bins=bins, network=net, baseline=base, nll0=a["nll0"], y_max=a["y_max"],
        prefit=a["prefit"], on_extrapolation=on_extrapolation, session=session, metadata=meta)
    _self_check(surrogate, session, meta, n_bins)
    return surrogate


def _self_check(surrogate, session, meta, n_bins):
    pairs = meta.get("self_check")
    if not isinstance(pairs, list) or not pairs:
        raise InvalidArtifact("metadata.json has no self_check pairs")
    try:
        pts = np.array([p["yields"] for p in pairs], dtype=float)
        want = np.array([p["delta_nll"] for p in pairs], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise InvalidArtifact("metadata.json self_check entries need 'yields' [B] and "
                              "'delta_nll' [4]") from None
    if pts.shape != (len(pairs), n_bins) or want.shape != (len(pairs), 4):
        raise InvalidArtifact(f"metadata.json self_check entries need 'yields' of length "
                              f"{n_bins} and 'delta_nll' of length 4")
    try:
        got_onnx = session.run(["delta_nll"], {"yields": pts})[0]
    except Exception as exc:
        raise InvalidArtifact(f"model.onnx failed on the self-check inputs: {exc}") from None
    got_np = surrogate.delta_nll(pts)
    for label, got in (("ONNX", got_onnx), ("numpy", got_np)):
        if not np.allclose(got, want, rtol=SELF_CHECK_RTOL, atol=SELF_CHECK_RTOL):
            worst = float(np.max(np.abs(got - want)))
            raise InvalidArtifact(f"self-check failed: the {label} delta_nll differs from the "
                                  f"values stored in metadata.json by up to {worst:.3g}; the "
                                  "graph, the weights and the metadata do not belong together")
    if not all(math.isfinite(v) for v in surrogate._y_max) or np.any(surrogate._y_max < 0):
        raise InvalidArtifact("weights.npz y_max must be finite and >= 0")
