"""Saving a profiled-likelihood surrogate as an artifact (ONNX graph + metadata), and loading it.

Loading (:func:`from_artifact`) needs numpy and onnxruntime only; building the graph needs the
``onnx`` package (a training-time dependency).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.artifact._format import finite_number, load_arrays, write_artifact
from surrogate_stats.artifact._runtime import make_session
from surrogate_stats.errors import InvalidArtifact
from surrogate_stats.likelihood._surrogate import DATASETS, MLPWeights, ProfileLikelihoodSurrogate

__all__ = ["save_surrogate", "from_artifact", "build_onnx"]

KIND = "profile_likelihood"
OPSET = 17
SELF_CHECK_FRACTIONS = (0.0, 0.013, 0.07, 0.21, 0.38, 0.55, 0.77, 1.0)
SELF_CHECK_RTOL = 1e-9
GRAPH_IO = {
    "inputs": [{"name": "mu", "dtype": "float64", "shape": ["N"],
                "meaning": "signal strength (the workspace's POI)"}],
    "outputs": [
        {"name": "tmu", "dtype": "float64", "shape": ["N", 2],
         "meaning": "-2 ln lambda(mu); column 0 observed data, column 1 Asimov (expected)"},
        {"name": "nll", "dtype": "float64", "shape": ["N", 2],
         "meaning": "profiled -ln L(mu) with pyhf's normalisation (twice_nll / 2); same columns"},
    ],
}


def _block_diag(blocks):
    rows = sum(b.shape[0] for b in blocks)
    cols = sum(b.shape[1] for b in blocks)
    out = np.zeros((rows, cols))
    r = c = 0
    for b in blocks:
        out[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    return out


def build_onnx(surrogate: ProfileLikelihoodSurrogate, *, name: str = "surrogate") -> bytes:
    """The float64 ONNX graph ``mu[N] -> tmu[N, 2], nll[N, 2]`` of both data sets' networks.

    The two networks are packed block-diagonally, so one graph evaluates both exactly as the
    numpy path does. Deterministic: the same weights give the same bytes.
    """
    onnx = optional_import("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    w = {d: surrogate._weights[d] for d in DATASETS}
    n_layers = len(w["observed"].layers)
    inits = []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float64), name))
        return name

    lo, hi = surrogate.domain
    nodes = [
        helper.make_node("Unsqueeze", ["mu", "axes"], ["mu_col"]),
        helper.make_node("Sub", ["mu_col", const("center", [0.5 * (lo + hi)])], ["mu_c"]),
        helper.make_node("Mul", ["mu_c", const("inv_half", [2.0 / (hi - lo)])], ["x"]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"))
    h = "x"
    for i in range(n_layers):
        if i == 0:
            W = np.concatenate([w[d].layers[0][0] for d in DATASETS], axis=1)
        else:
            W = _block_diag([w[d].layers[i][0] for d in DATASETS])
        b = np.concatenate([w[d].layers[i][1] for d in DATASETS])
        nodes.append(helper.make_node("MatMul", [h, const(f"W{i}", W)], [f"z{i}"]))
        nodes.append(helper.make_node("Add", [f"z{i}", const(f"b{i}", b)], [f"a{i}"]))
        if i < n_layers - 1:
            nodes.append(helper.make_node("Tanh", [f"a{i}"], [f"h{i}"]))
            h = f"h{i}"
    out = f"a{n_layers - 1}"
    nodes += [
        helper.make_node("Sub", ["mu_col", const("m", [w[d].m for d in DATASETS])], ["dm"]),
        helper.make_node("Mul", ["dm", "dm"], ["dm2"]),
        helper.make_node("Mul", ["dm2", const("a", [w[d].a for d in DATASETS])], ["quad"]),
        helper.make_node("Mul", [out, const("scale", [w[d].scale for d in DATASETS])], ["res"]),
        helper.make_node("Add", ["quad", "res"], ["F"]),
        helper.make_node("Sub", ["F", const("f_hat", [surrogate._f_hat[d] for d in DATASETS])],
                         ["tmu_raw"]),
        helper.make_node("Max", ["tmu_raw", const("zero", [0.0])], ["tmu"]),
        helper.make_node("Mul", ["tmu", const("half", [0.5])], ["half_tmu"]),
        helper.make_node("Add", ["half_tmu", const("nll_min",
                                                  [surrogate._nll_min[d] for d in DATASETS])],
                         ["nll"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("mu", onnx.TensorProto.DOUBLE, ["N"])],
        [helper.make_tensor_value_info("tmu", onnx.TensorProto.DOUBLE, ["N", 2]),
         helper.make_tensor_value_info("nll", onnx.TensorProto.DOUBLE, ["N", 2])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="surrogate_stats", ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _self_check_points(domain):
    lo, hi = domain
    return [lo + f * (hi - lo) for f in SELF_CHECK_FRACTIONS]


def save_surrogate(surrogate: ProfileLikelihoodSurrogate, directory: str | Path, *,
                   metadata: dict | None = None) -> Path:
    """Write ``surrogate`` as an artifact in ``directory`` (atomically).

    ``metadata`` adds kind-specific records (provenance, labels, metrics, validation).
    """
    name = (metadata or {}).get("name") or Path(directory).name
    blob = build_onnx(surrogate, name=name)
    mus = np.array(_self_check_points(surrogate.domain))
    tmu = np.stack([surrogate.tmu(mus), surrogate.tmu(mus, expected=True)], axis=1)
    nll = np.stack([surrogate.nll(mus), surrogate.nll(mus, expected=True)], axis=1)
    meta = dict(metadata or {})
    meta.update({
        "kind": KIND,
        "name": name,
        "graphs": {"model": dict(GRAPH_IO)},
        "domain": {"mu": list(surrogate.domain)},
        "datasets": {
            d: {"mu_hat": surrogate._mu_hat[d], "nll_min": surrogate._nll_min[d],
                "f_hat": surrogate._f_hat[d]}
            for d in DATASETS},
        "self_check": [{"mu": float(m), "tmu": t.tolist(), "nll": n.tolist()}
                       for m, t, n in zip(mus, tmu, nll)],
    })
    meta["datasets"]["definition"] = (
        "observed: the workspace's data; expected: pyhf's Asimov data for expected limits "
        "(fit of mu=0 to the observed data, main and auxiliary data at those parameters)")
    return write_artifact(directory, meta, {"model": blob},
                          {"weights": surrogate.export_arrays()})


def _weights_from_arrays(arrays: dict) -> dict:
    out = {}
    for d in DATASETS:
        n = 0
        while f"{d}.W{n}" in arrays.get("weights", {}):
            n += 1
        names = [f"{d}.prior"] + [f"{d}.{p}{i}" for i in range(n) for p in "Wb"]
        if n < 2:
            raise InvalidArtifact(f"weights.npz has no network for the {d} data")
        arr = load_arrays(arrays, "weights", names)
        layers = [(arr[f"{d}.W{i}"], arr[f"{d}.b{i}"]) for i in range(n)]
        n_in = 1
        for i, (W, b) in enumerate(layers):
            if W.ndim != 2 or W.shape[0] != n_in or b.shape != (W.shape[1],):
                raise InvalidArtifact(f"weights.npz: layer {i} of the {d} network has shapes "
                                      f"{W.shape}, {b.shape}, which do not chain")
            n_in = W.shape[1]
        if n_in != 1:
            raise InvalidArtifact(f"weights.npz: the {d} network must end in one output")
        prior = arr[f"{d}.prior"]
        if prior.shape != (3,) or prior[0] <= 0 or prior[2] <= 0:
            raise InvalidArtifact(f"weights.npz: {d}.prior must be (a > 0, m, scale > 0)")
        out[d] = MLPWeights(layers=layers, a=float(prior[0]), m=float(prior[1]),
                            scale=float(prior[2]))
    return out


def from_artifact(meta: dict, graphs: dict, arrays: dict, *, on_extrapolation: str = "warn",
                  threads: int | None = None) -> ProfileLikelihoodSurrogate:
    """Build the surrogate from a verified artifact and re-run its self-check pairs."""
    dom = meta.get("domain", {}).get("mu") if isinstance(meta.get("domain"), dict) else None
    if (not isinstance(dom, list) or len(dom) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in dom)
            or not dom[0] < dom[1]):
        raise InvalidArtifact(f"metadata.json domain.mu must be [lo, hi] with lo < hi; got {dom!r}")
    mu_hat = {d: finite_number(meta, "datasets", d, "mu_hat") for d in DATASETS}
    nll_min = {d: finite_number(meta, "datasets", d, "nll_min") for d in DATASETS}
    # artifacts written before f_hat was stored recompute it (last bits may then vary by CPU)
    f_hat = ({d: finite_number(meta, "datasets", d, "f_hat") for d in DATASETS}
             if all(isinstance(meta["datasets"].get(d), dict) and "f_hat" in meta["datasets"][d]
                    for d in DATASETS) else None)
    session = make_session(graphs["model"], meta["graphs"]["model"], threads=threads)
    surrogate = ProfileLikelihoodSurrogate(
        _weights_from_arrays(arrays), domain=tuple(dom), mu_hat=mu_hat, nll_min=nll_min,
        f_hat=f_hat, on_extrapolation=on_extrapolation, session=session, metadata=meta)
    _self_check(surrogate, session, meta)
    return surrogate


def _self_check(surrogate, session, meta):
    pairs = meta.get("self_check")
    if not isinstance(pairs, list) or not pairs:
        raise InvalidArtifact("metadata.json has no self_check pairs")
    try:
        mus = np.array([p["mu"] for p in pairs], dtype=float)
        want_tmu = np.array([p["tmu"] for p in pairs], dtype=float)
        want_nll = np.array([p["nll"] for p in pairs], dtype=float)
    except (KeyError, TypeError, ValueError):
        raise InvalidArtifact("metadata.json self_check entries need 'mu', 'tmu' [2] and "
                              "'nll' [2]") from None
    if want_tmu.shape != (mus.size, 2) or want_nll.shape != (mus.size, 2):
        raise InvalidArtifact("metadata.json self_check entries need 'tmu' and 'nll' of "
                              "length 2")
    try:
        got_tmu, got_nll = session.run(["tmu", "nll"], {"mu": mus})
    except Exception as exc:
        raise InvalidArtifact(f"model.onnx failed on the self-check inputs: {exc}") from None
    fast = np.array([[surrogate._raw_scalar(m, d) for d in DATASETS] for m in mus])
    fast = np.maximum(fast, 0.0)
    fast_nll = np.array([surrogate._nll_min[d] for d in DATASETS]) + 0.5 * fast
    for label, got, want in (("ONNX tmu", got_tmu, want_tmu), ("ONNX nll", got_nll, want_nll),
                             ("numpy tmu", fast, want_tmu), ("numpy nll", fast_nll, want_nll)):
        if not np.allclose(got, want, rtol=SELF_CHECK_RTOL, atol=SELF_CHECK_RTOL):
            worst = float(np.max(np.abs(got - want)))
            raise InvalidArtifact(f"self-check failed: {label} differs from the values stored "
                                  f"in metadata.json by up to {worst:.3g}; the graph, the "
                                  "weights and the metadata do not belong together")
