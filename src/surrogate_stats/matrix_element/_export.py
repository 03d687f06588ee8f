"""The |M|^2 surrogate as an artifact (one float64 ONNX graph ``model.onnx``) and its loader.

Loading (:func:`from_artifact`, via ``load_surrogate``) needs numpy and onnxruntime only;
building the graph needs ``onnx``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.artifact._format import write_artifact
from surrogate_stats.artifact._runtime import make_session
from surrogate_stats.errors import InvalidArtifact, InvalidInput
from surrogate_stats.matrix_element._phase_space import Cuts, check_momenta, rambo

__all__ = ["MatrixElementSurrogate", "build_onnx", "save_surrogate", "from_artifact"]

KIND = "matrix_element"
OPSET = 17
SELF_CHECK_RTOL = 1e-9
N_SELF_CHECK = 8


def graph_io(n: int) -> dict:
    return {
        "inputs": [{"name": "momenta", "dtype": "float64", "shape": ["N", n, 4],
                    "meaning": "(E, px, py, pz) in GeV; the two incoming momenta first"}],
        "outputs": [
            {"name": "me2", "dtype": "float64", "shape": ["N"],
             "meaning": "surrogate |M|^2 (summed/averaged over helicities and colours)"},
            {"name": "log_me2", "dtype": "float64", "shape": ["N"], "meaning": "ln of me2"},
        ],
    }


def build_onnx(model, *, name: str = "matrix_element") -> bytes:
    """The float64 graph ``momenta[N, n, 4] -> me2[N], log_me2[N]`` of a trained model.

    Invariants, the singular factor and the network are all computed in the graph, exactly as
    :meth:`MESurrogateModel.log_me_np` does.
    """
    onnx = optional_import("onnx")
    helper, nh = onnx.helper, onnx.numpy_helper
    spec = model.spec
    n = spec.n
    inits = []

    def const(cname, value, dtype=np.float64):
        inits.append(nh.from_array(np.asarray(value, dtype=dtype), cname))
        return cname

    nodes = [
        helper.make_node("Mul", ["momenta", const("metric", [1.0, -1.0, -1.0, -1.0])], ["pm"]),
        helper.make_node("Transpose", ["pm"], ["pmT"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["momenta", "pmT"], ["G"]),
        helper.make_node("Mul", ["G", const("two", 2.0)], ["D"]),
        helper.make_node("Reshape", ["D", const("flat", [-1, n * n], np.int64)], ["Dflat"]),
        helper.make_node("MatMul", ["Dflat", const("select", spec.select)], ["I"]),
        helper.make_node("Gather", ["Dflat", const("s_index", [1], np.int64)], ["s"], axis=1),
        helper.make_node("Div", ["I", "s"], ["R"]),
        helper.make_node("Max", ["R", const("tiny", 1e-300)], ["Rpos"]),
        helper.make_node("Log", ["Rpos"], ["L"]),
        helper.make_node("Sub", ["L", const("x_mean", model.x_mean)], ["Lc"]),
        helper.make_node("Div", ["Lc", const("x_std", model.x_std)], ["h_in"]),
    ]
    h = "h_in"
    for i, (W, b) in enumerate(model.layers):
        nodes.append(helper.make_node("MatMul", [h, const(f"W{i}", W)], [f"z{i}"]))
        nodes.append(helper.make_node("Add", [f"z{i}", const(f"b{i}", b)], [f"a{i}"]))
        h = f"a{i}"
        if i < len(model.layers) - 1:
            nodes.append(helper.make_node("Tanh", [h], [f"t{i}"]))
            h = f"t{i}"
    nodes += [
        helper.make_node("Mul", [h, const("y_std", [model.y_std])], ["ys"]),
        helper.make_node("Add", ["ys", const("y_mean", [model.y_mean])], ["lnr"]),
    ]
    acc = "lnr"
    for j, mat in enumerate((spec.factor_terms, spec.factor_extra)):
        if mat.shape[0]:
            nodes += [
                helper.make_node("MatMul", ["L", const(f"F{j}", mat.T)], [f"Z{j}"]),
                helper.make_node("ReduceLogSumExp", [f"Z{j}"], [f"lse{j}"], axes=[1],
                                 keepdims=1),
                helper.make_node("Add", [acc, f"lse{j}"], [f"acc{j}"]),
            ]
            acc = f"acc{j}"
    nodes += [
        helper.make_node("Reshape", [acc, const("vec", [-1], np.int64)], ["log_me2"]),
        helper.make_node("Exp", ["log_me2"], ["me2"]),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("momenta", onnx.TensorProto.DOUBLE, ["N", n, 4])],
        [helper.make_tensor_value_info("me2", onnx.TensorProto.DOUBLE, ["N"]),
         helper.make_tensor_value_info("log_me2", onnx.TensorProto.DOUBLE, ["N"])],
        initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="surrogate_stats", ir_version=8)
    onnx.checker.check_model(m)
    return m.SerializeToString()


def save_surrogate(model, process, directory: str | Path, *, cuts: Cuts | None = None,
                   metadata: dict | None = None, validation: dict | None = None) -> Path:
    """Write a trained |M|^2 surrogate of ``process`` as an artifact in ``directory``.

    ``metadata`` adds records (training, accuracy, provenance). Self-check pairs (8 fixed
    RAMBO points and the surrogate's values) are stored and re-evaluated at load;
    ``validation`` (arrays, e.g. exact and surrogate |M|^2 on test points) goes to
    ``validation.npz``.
    """
    cuts = process.default_cuts if cuts is None else cuts
    name = (metadata or {}).get("name") or Path(directory).name
    blob = build_onnx(model, name=name)
    p = rambo(12345, N_SELF_CHECK, process.n_out, process.sqrt_s)
    meta = dict(metadata or {})
    meta.update({
        "kind": KIND,
        "name": name,
        "graphs": {"model": graph_io(process.n_particles)},
        "process": {"name": process.name, "sqrt_s": process.sqrt_s, "n_out": process.n_out,
                    "options": dict(process.options), "particles": list(process.particles),
                    "symmetry_factor": process.symmetry_factor},
        "cuts": cuts.to_dict(),
        "features": {"factor": model.spec.factor, "n": model.spec.n},
        "self_check": {"momenta": p.tolist(), "log_me2": model.log_me_np(p).tolist()},
    })
    arrays = {"weights": model.export_arrays()}
    if validation:
        arrays["validation"] = {k: np.asarray(v, np.float64) for k, v in validation.items()}
    return write_artifact(directory, meta, {"model": blob}, arrays)


class MatrixElementSurrogate:
    """A published |M|^2 surrogate: numpy + onnxruntime only.

    Call it on momenta ``[N, 2 + n_out, 4]`` (incoming first) to get ``|M|^2`` ``[N]``.

    Attributes:
        process: the process name (``gg_gggg``, ...); ``sqrt_s``: the energy (GeV);
        cuts: the :class:`Cuts` it was trained inside; metadata: the artifact's metadata.
    """

    def __init__(self, session, metadata: dict):
        self._session = session
        self.metadata = metadata
        proc = metadata["process"]
        self.process = proc["name"]
        self.sqrt_s = float(proc["sqrt_s"])
        self.n_particles = 2 + int(proc["n_out"])
        self.cuts = Cuts.from_dict(metadata["cuts"])

    def log_matrix_element(self, p) -> np.ndarray:
        p = check_momenta(p, self.n_particles)
        if p.shape[0] == 0:
            return np.zeros(0)
        return self._session.run(["log_me2"], {"momenta": p})[0]

    def matrix_element(self, p) -> np.ndarray:
        """Surrogate |M|^2 at ``p`` ``[N, 2 + n_out, 4]``; float64 ``[N]``."""
        p = check_momenta(p, self.n_particles)
        if p.shape[0] == 0:
            return np.zeros(0)
        return self._session.run(["me2"], {"momenta": p})[0]

    def _unchecked(self, p: np.ndarray) -> np.ndarray:
        return self._session.run(["me2"], {"momenta": p})[0]

    __call__ = matrix_element

    def __repr__(self) -> str:
        acc = self.metadata.get("accuracy", {}).get("median_abs_rel_err")
        return (f"MatrixElementSurrogate({self.process!r}, sqrt_s={self.sqrt_s:g}, "
                f"median |rel err|={acc})")


def from_artifact(meta: dict, graphs: dict, arrays: dict, *, on_extrapolation: str = "warn",
                  threads: int | None = None) -> MatrixElementSurrogate:
    """Build a :class:`MatrixElementSurrogate` from a verified artifact; re-run self-checks."""
    del arrays, on_extrapolation  # the graph is self-contained; cuts are the domain
    proc = meta.get("process")
    if (not isinstance(proc, dict) or not isinstance(proc.get("n_out"), int)
            or not isinstance(proc.get("sqrt_s"), (int, float))
            or not math.isfinite(proc["sqrt_s"]) or not isinstance(meta.get("cuts"), dict)):
        raise InvalidArtifact("metadata.json needs process {name, sqrt_s, n_out} and cuts")
    session = make_session(graphs["model"], meta["graphs"]["model"], threads=threads)
    try:
        sur = MatrixElementSurrogate(session, meta)
    except (KeyError, TypeError, ValueError, InvalidInput) as exc:
        raise InvalidArtifact(f"metadata.json process/cuts are malformed: {exc}") from None
    check = meta.get("self_check")
    try:
        p = np.array(check["momenta"], dtype=np.float64)
        want = np.array(check["log_me2"], dtype=np.float64)
        got = sur.log_matrix_element(p)
    except Exception as exc:  # noqa: BLE001 - any failure here means a broken artifact
        raise InvalidArtifact(f"self-check could not run: {exc}") from None
    if got.shape != want.shape or not np.allclose(got, want, rtol=SELF_CHECK_RTOL,
                                                  atol=SELF_CHECK_RTOL):
        raise InvalidArtifact("self-check failed: model.onnx does not reproduce the stored "
                              "log |M|^2 values; graph and metadata do not belong together")
    return sur
