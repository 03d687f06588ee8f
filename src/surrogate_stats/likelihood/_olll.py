"""Publishing yield surrogates in the OLLL v0.1 ONNX contract (what SModelS >= 3.2 reads).

The Open Library of Learned Likelihoods (OLLL) v0.1 file is one ONNX model (opset 17):

* input ``features`` float32 ``[batch, n_bins]``: the *total* yields (background + signal) of
  the active bins (the workspace's bins without ``remove_channels``, in ``obs_yields`` order),
  preprocessed as ``(log_w_negatives(total) - features_mean[0]) / features_std[0]``;
* output ``nLLs`` float32 ``[batch, 8]``: columns 0-3 are the preprocessed
  ``Delta = nLL(mu=1) - nLL(mu=0)`` of the data sets ``[exp, obs, expA, obsA]``; a consumer
  recovers ``Delta = ilog_w_negatives(raw * nLLs_std[0] + nLLs_mean[0])`` and
  ``nLL = nLL_<d>_mu0 + Delta``; columns 4-7 are uncertainties of columns 0-3 in the same
  preprocessed space;
* ``metadata_props``: string -> string (JSON for the structured fields), each key once.

with ``log_w_negatives(x) = sign(x) log(1 + |x|)`` and ``ilog_w_negatives(x) = sign(x)
expm1(|x|)``. The OLLL data sets map onto this library's as ``exp`` = ``apriori``, ``obs`` =
``observed``, ``expA`` = ``apriori_asimov``, ``obsA`` = ``observed_asimov``.

:func:`export_olll` writes such a file from a :class:`YieldLikelihoodSurrogate` (needs the
``onnx`` package and, for the workspace numbers, jax: training-time dependencies);
:func:`load_olll` reads any OLLL v0.1 file with numpy and onnxruntime only and returns an
:class:`OLLLSurrogate` with the API of every yield surrogate (``bins``, ``nll``, ``tmu``,
``upper_limit``, ``for_signal``). ``docs/olll.md`` describes the file and the choices made where
the contract is silent.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from surrogate_stats.artifact._format import write_file_atomic
from surrogate_stats.errors import InvalidArtifact, InvalidInput
from surrogate_stats.likelihood._yields_surrogate import (
    CHUNK,
    DATASETS,
    YieldLikelihood,
    YieldLikelihoodSurrogate,
)

__all__ = ["export_olll", "load_olll", "OLLLSurrogate", "OLLLExport", "log_w_negatives",
           "ilog_w_negatives", "classify_channel", "REQUIRED_KEYS", "OLLL_COLUMNS"]

OLLL_VERSION = "0.1"
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "features", "nLLs"
OLLL_COLUMNS = ("exp", "obs", "expA", "obsA")
# the data set of this library behind each OLLL column, and the reverse permutation
OLLL_DATASETS = ("apriori", "observed", "apriori_asimov", "observed_asimov")
TO_OLLL = tuple(DATASETS.index(d) for d in OLLL_DATASETS)  # ours -> OLLL column order
FROM_OLLL = tuple(OLLL_DATASETS.index(d) for d in DATASETS)  # OLLL -> DATASETS order
MU0_KEYS = ("nLL_exp_mu0", "nLL_obs_mu0", "nLLA_exp_mu0", "nLLA_obs_mu0")
MAX_KEYS = ("nLL_exp_max", "nLL_obs_max", "nLLA_exp_max", "nLLA_obs_max")
PIPELINE = ["log_w_negatives", "standardization"]
CHANNEL_KINDS = ("SR", "CR", "VR")
REQUIRED_KEYS = (
    "olll_schema_version", "model_type", "model_name", "model_author", "model_license",
    "source", "input_type", "channels", "obs_yields", "bkg_yields", "bkg_unc", "removeCRsVRs",
    "remove_channels", "x_min", "x_max", "y_min", "y_max", "preprocessing", "standardization",
    *MU0_KEYS, *MAX_KEYS,
)
JSON_KEYS = frozenset({
    "source", "channels", "obs_yields", "bkg_yields", "bkg_unc", "removeCRsVRs",
    "remove_channels", "x_min", "x_max", "y_min", "y_max", "preprocessing", "standardization",
    *MAX_KEYS, "model_parameters", "nLL_max_definition", "sigma_definition",
    "bkg_unc_definition", "surrogate_stats",
})
PREPROCESSING_NOTE = (
    "features: total yields (background + signal) of the active bins, in the order of "
    "obs_yields after dropping remove_channels; x -> (log_w_negatives(x) - features_mean[0]) / "
    "features_std[0]. nLLs: one tensor [batch, 8]; columns 0-3 are the preprocessed "
    "Delta = nLL(mu=1) - nLL(mu=0) for [nLL_exp, nLL_obs, nLLA_exp, nLLA_obs]: Delta = "
    "ilog_w_negatives(out * nLLs_std[0] + nLLs_mean[0]) and nLL(mu=1) = nLL_*_mu0 + Delta; "
    "columns 4-7 are one-sigma uncertainties of columns 0-3 in the preprocessed space. "
    "log_w_negatives(x) = sign(x) * log(1 + |x|); ilog_w_negatives(x) = sign(x) * (exp(|x|) - 1).")
SELF_CHECK_RTOL = 1e-5  # stored float32 outputs vs a fresh run (few-ulp CPU differences pass)
N_SELF_CHECK = 8
N_DOMAIN_SAMPLE = 4096
N_EXPORT_CHECK = 1024
MAX_JSON_DEPTH = 32


def log_w_negatives(x):
    """``sign(x) * log(1 + |x|)``: OLLL's signed log (exactly invertible)."""
    x = np.asarray(x, dtype=float)
    return np.sign(x) * np.log1p(np.abs(x))


def ilog_w_negatives(x):
    """``sign(x) * expm1(|x|)``: the inverse of :func:`log_w_negatives`."""
    x = np.asarray(x, dtype=float)
    return np.sign(x) * np.expm1(np.abs(x))


def classify_channel(name: str) -> str | None:
    """``"SR"``, ``"CR"`` or ``"VR"`` from a channel name (``SR_meff``, ``CRlow_cuts``, ...).

    The name's start decides, else the first ``_``/``-``-separated word that starts with one
    of them; None when nothing fits.
    """
    up = name.upper()
    for kind in CHANNEL_KINDS:
        if up.startswith(kind):
            return kind
    for word in re.split(r"[^A-Z0-9]+", up):
        for kind in CHANNEL_KINDS:
            if word.startswith(kind):
                return kind
    return None


# ============================================================================================
# export
# ============================================================================================
@dataclass(frozen=True)
class OLLLExport:
    """What :func:`export_olll` wrote.

    Attributes:
        path: the .onnx file.
        metadata: the metadata_props written, decoded (JSON fields parsed).
        agreement: the export-time comparison of the float32 file (decoded as consumers do)
            with the float64 surrogate on fresh random yields inside the domain:
            ``max_abs_delta`` and ``max_rel_delta`` (``|diff| / (1 + |Delta|)``), per OLLL
            column, and ``n_points``.
        placeholders: ``source`` fields (and ``model_author``) filled with placeholders
            (not given, not known).
    """

    path: Path
    metadata: dict
    agreement: dict
    placeholders: tuple


def export_olll(surrogate: YieldLikelihoodSurrogate, path, *, workspace=None,
                channel_types: dict | None = None, source: dict | None = None,
                model_name: str | None = None, model_author: str | None = None,
                model_license: str = "CC-BY-4.0", bkg_unc=None, sigma=None,
                compute_dtype: str = "float64", seed: int = 0) -> OLLLExport:
    """Write ``surrogate`` as an OLLL v0.1 ONNX file at ``path`` (atomically).

    Args:
        surrogate: a trained (or loaded) :class:`YieldLikelihoodSurrogate`.
        path: the ``.onnx`` file to write; its directory must exist.
        workspace: the background-only pyhf workspace the surrogate was trained on (a path or
            the JSON dict): the observed counts, every channel (the removed ones too) and the
            background of removed channels come from it. Default: the file named in the
            surrogate's ``provenance.workspace_file`` when it exists (and its SHA-256 matches
            ``provenance.workspace_sha256`` if recorded).
        channel_types: ``{channel: "SR" | "CR" | "VR"}`` overriding :func:`classify_channel`.
        source: OLLL ``source`` fields (``analysis_id``, ``arxiv``, ``inspire_id``,
            ``experiment``, ``sqrt_s`` [TeV], ``luminosity`` [fb^-1], ``reference`` (URL or DOI
            of the statistical model), ``filename``, or a full ``statistical_model`` object).
            Unknown fields get placeholders, listed in ``source.placeholders`` (with a warning).
        model_name, model_author, model_license: OLLL model identity (defaults: the artifact's
            name, ``"unknown"`` (a placeholder), ``"CC-BY-4.0"``).
        bkg_unc: one-sigma background uncertainty per bin of the workspace (a sequence over
            all bins, removed channels included, or ``{bin: value}``), overriding the default
            (pre-fit, from the constrained nuisance parameters; ``docs/olll.md``).
        sigma: the surrogate's RMS error in -ln L per data set (``{data set: value}``, our
            names or OLLL's ``exp/obs/expA/obsA``), overriding the held-out RMS read from the
            surrogate's metadata (``training.heldout.<d>.rms_dnll``).
        compute_dtype: ``"float64"`` (default: the graph casts the float32 input to float64,
            computes, and casts the output to float32) or ``"float32"`` (every operation in
            float32; some 100 times less precise, ``docs/olll.md``).
        seed: seed of the domain sample (standardisation, bounds) and of the export check.

    Returns:
        :class:`OLLLExport` with the measured float32-vs-float64 agreement.

    Raises:
        InvalidInput: a bad argument, a workspace that does not match the surrogate's bins or
            background, a channel whose type cannot be told from its name.
        MissingDependency: ``onnx`` or jax is not installed.
    """
    from surrogate_stats._optional import optional_import

    onnx = optional_import("onnx")
    if not isinstance(surrogate, YieldLikelihoodSurrogate):
        raise InvalidInput(f"export_olll needs a YieldLikelihoodSurrogate (a trained yield "
                           f"surrogate or one loaded from its artifact); got "
                           f"{type(surrogate).__name__}")
    if compute_dtype not in ("float64", "float32"):
        raise InvalidInput(f"compute_dtype must be 'float64' or 'float32'; got "
                           f"{compute_dtype!r}")
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise InvalidInput(f"the OLLL file name must end in .onnx; got {str(path)!r}")
    if not path.parent.is_dir():
        raise InvalidInput(f"the directory {str(path.parent)!r} of the output file does not "
                           "exist")
    meta = surrogate.metadata or {}
    spec, ws_file = _workspace_spec(workspace, meta)
    removed = _removed_channels(surrogate, spec, meta)  # cheap checks before any fit setup
    ws = _workspace_numbers(spec)
    active = np.array([b in set(surrogate.bins) for b in ws["bins"]])
    _check_background(surrogate, ws, active)
    channels = _channel_types(ws["channels"], channel_types)
    unc_all, unc_def = _bkg_unc(bkg_unc, ws, meta)

    prefit = surrogate.background
    y_max = surrogate.y_max
    x_min, x_max = prefit, prefit + y_max
    lo, hi = log_w_negatives(x_min), log_w_negatives(x_max)
    f_mean = 0.5 * (lo + hi)
    f_std = np.maximum((hi - lo) / math.sqrt(12.0), 1e-2)
    rng = np.random.default_rng([seed, 41])
    sample = _domain_sample(rng, y_max, N_DOMAIN_SAMPLE)
    d_sample = surrogate.delta_nll(sample)[:, TO_OLLL]
    if not np.all(np.isfinite(d_sample)):
        raise InvalidInput("the surrogate gives non-finite -ln L inside its trained domain; "
                           "it cannot be published")
    l_sample = log_w_negatives(d_sample)
    n_mean = l_sample.mean(axis=0)
    n_std = np.maximum(l_sample.std(axis=0), 1e-3)
    sig_raw, sig_def = _sigma(sigma, meta)
    numbers = dict(f_mean=f_mean, f_std=f_std, n_mean=n_mean, n_std=n_std)

    check_y = _domain_sample(np.random.default_rng([seed, 43]), y_max, N_EXPORT_CHECK)
    want = surrogate.delta_nll(check_y)[:, TO_OLLL]
    if sig_raw is None:  # nothing known about the training error: float32 rounding only
        blob = _graph(onnx, surrogate, numbers, np.zeros(4), compute_dtype)
        got = _run_decode(blob, check_y + prefit, numbers)
        sig_raw = np.maximum(np.sqrt(np.mean((got - want) ** 2, axis=0)), 1e-12)
        sig_def["values_dnll"] = [float(v) for v in sig_raw]
        warnings.warn("the surrogate's metadata has no held-out error (training.heldout.<data "
                      "set>.rms_dnll) and no sigma= was given: the OLLL uncertainties "
                      "(nLLs[:, 4:]) carry only the float32 rounding of this file, not the "
                      "surrogate's training error", UserWarning, stacklevel=2)
    blob = _graph(onnx, surrogate, numbers, sig_raw, compute_dtype)
    got = _run_decode(blob, check_y + prefit, numbers)
    err = np.abs(got - want)
    agreement = {
        "n_points": int(len(check_y)), "compute_dtype": compute_dtype,
        "columns": list(OLLL_COLUMNS),
        "max_abs_delta": [float(v) for v in err.max(axis=0)],
        "max_rel_delta": [float(v) for v in (err / (1.0 + np.abs(want))).max(axis=0)],
    }
    nll0 = surrogate._nll0
    nll_max, max_def = _nll_max(surrogate)
    src, placeholders = _source(source, meta, ws_file)
    if not model_author:
        placeholders = [*placeholders, "model_author"]
    name = model_name or meta.get("name") or path.stem
    self_y = _self_check_points(y_max)
    self_x = ((log_w_negatives(self_y + prefit) - f_mean) / f_std).astype(np.float32)
    self_out = _run(blob, self_x)
    all_bins = ws["bins"]
    props = {
        "olll_schema_version": OLLL_VERSION,
        "model_type": "Regressor",
        "model_name": str(name),
        "model_author": model_author or "unknown",
        "model_license": model_license,
        "model_parameters": {
            "architecture": "effective-Poisson baseline (closed form) + tanh MLP residual",
            "n_inputs": surrogate.n_bins,
            "hidden_layers": [int(w.shape[1]) for w, _ in surrogate._net.layers[:-1]],
            "activation": "TANH", "out_shape": 4, "graph_outputs": 8,
            "compute_dtype": compute_dtype},
        "run_config": _run_config(meta, compute_dtype, seed),
        "source": src,
        "input_type": "total_yields",
        "channels": channels,
        "obs_yields": [[b, float(v)] for b, v in zip(all_bins, ws["observed"])],
        "bkg_yields": [[b, float(v)] for b, v in zip(all_bins, _bkg_all(ws, surrogate,
                                                                          active))],
        "bkg_unc": [[b, float(v)] for b, v in zip(all_bins, unc_all)],
        "bkg_unc_definition": unc_def,
        "removeCRsVRs": bool(removed),
        "remove_channels": list(removed),
        "x_min": [float(v) for v in x_min],
        "x_max": [float(v) for v in x_max],
        "y_min": [float(v) for v in np.minimum(d_sample.min(axis=0), 0.0)],
        "y_max": [float(v) for v in np.maximum(d_sample.max(axis=0), 0.0)],
        "preprocessing": {"features_pipeline": PIPELINE, "nLLs_pipeline": PIPELINE,
                          "note": PREPROCESSING_NOTE},
        "standardization": {"features_mean": [f_mean.tolist()], "features_std": [f_std.tolist()],
                            "nLLs_mean": [n_mean.tolist()], "nLLs_std": [n_std.tolist()]},
        **{k: repr(float(nll0[DATASETS.index(d)])) for k, d in zip(MU0_KEYS, OLLL_DATASETS)},
        **{k: [float(v) for v in nll_max[k]] for k in MAX_KEYS},
        "nLL_max_definition": max_def,
        "sigma_definition": sig_def,
        "surrogate_stats": {
            "version": _version(), "native": _native(meta),
            "bins": list(surrogate.bins), "datasets": dict(zip(OLLL_COLUMNS, OLLL_DATASETS)),
            "export_check": agreement,
            "self_check": [{"features": x.tolist(), "nLLs": o.tolist()}
                           for x, o in zip(self_x.astype(float), self_out.astype(float))]},
    }
    model = onnx.load_from_string(blob)
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, allow_nan=False)
    data = model.SerializeToString()
    write_file_atomic(path, data)
    if placeholders:
        warnings.warn(f"OLLL fields with placeholders (pass them to fill them in): "
                      f"{', '.join(placeholders)}", UserWarning, stacklevel=2)
    decoded = {k: (v if isinstance(v, str) else json.loads(json.dumps(v)))
               for k, v in props.items()}
    return OLLLExport(path=path, metadata=decoded, agreement=agreement,
                      placeholders=tuple(placeholders))


def _graph(onnx, surrogate, numbers: dict, sigma_raw, compute_dtype: str) -> bytes:
    """The OLLL graph ``features [batch, B] -> nLLs [batch, 8]`` (float32 I/O)."""
    from surrogate_stats.likelihood._yields_export import graph_nodes

    helper, numpy_helper, tp = onnx.helper, onnx.numpy_helper, onnx.TensorProto
    npdt = np.float64 if compute_dtype == "float64" else np.float32
    nodes, inits = [], []

    def const(name, value, kind=None):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=kind or npdt), name))
        return name

    def node(op, inputs, output, **kw):
        nodes.append(helper.make_node(op, inputs, [output], **kw))
        return output

    x = INPUT_NAME
    if npdt is np.float64:
        x = node("Cast", [x], "features_f64", to=tp.DOUBLE)
    one = const("one", [1.0])
    # undo the feature preprocessing: total = ilog_w_negatives(x * std + mean)
    v = node("Add", [node("Mul", [x, const("features_std", numbers["f_std"])], "x_times_std"),
                     const("features_mean", numbers["f_mean"])], "logw_total")
    mag = node("Sub", [node("Exp", [node("Abs", [v], "abs_logw_total")], "exp_abs"), one],
               "expm1_abs")
    total = node("Mul", [node("Sign", [v], "sign_logw_total"), mag], "total_yields")
    signal = node("Sub", [total, const("bkg_yields", surrogate.background)], "signal_yields")
    net_nodes, net_inits = graph_nodes(surrogate, signal, "delta_nll", prefix="yields/",
                                       dtype=compute_dtype)
    nodes += net_nodes
    inits += net_inits
    delta = node("Gather", ["delta_nll", const("olll_columns", list(TO_OLLL), np.int64)],
                 "delta_olll", axis=1)
    one_abs = node("Add", [node("Abs", [delta], "abs_delta"), one], "one_plus_abs_delta")
    logw = node("Mul", [node("Sign", [delta], "sign_delta"),
                        node("Log", [one_abs], "log_one_plus_abs")], "logw_delta")
    n_std = const("nLLs_std", numbers["n_std"])
    pre = node("Div", [node("Sub", [logw, const("nLLs_mean", numbers["n_mean"])], "logw_c"),
                       n_std], "nlls_pre")
    # sigma in the preprocessed space: d(pre)/d(Delta) = 1 / ((1 + |Delta|) nLLs_std)
    sig = node("Div", [const("sigma_dnll", sigma_raw),
                       node("Mul", [one_abs, n_std], "dlogw_scale")], "nlls_sigma")
    if npdt is np.float64:
        node("Cast", [node("Concat", [pre, sig], "nlls_f64", axis=1)], OUTPUT_NAME,
             to=tp.FLOAT)
    else:
        node("Concat", [pre, sig], OUTPUT_NAME, axis=1)
    n_bins = surrogate.n_bins
    graph = helper.make_graph(
        nodes, "olll_yield_surrogate",
        [helper.make_tensor_value_info(INPUT_NAME, tp.FLOAT, ["batch", n_bins])],
        [helper.make_tensor_value_info(OUTPUT_NAME, tp.FLOAT, ["batch", 8])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="surrogate_stats", producer_version=_version(),
                              ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run(blob: bytes, features: np.ndarray) -> np.ndarray:
    from surrogate_stats.artifact._runtime import new_session

    sess = new_session(blob, file="OLLL export")
    return sess.run([OUTPUT_NAME], {INPUT_NAME: features.astype(np.float32)})[0]


def _run_decode(blob: bytes, total: np.ndarray, numbers: dict) -> np.ndarray:
    """Delta (N, 4) in OLLL column order, decoded exactly as consumers do."""
    x = (log_w_negatives(total) - numbers["f_mean"]) / numbers["f_std"]
    raw = _run(blob, x).astype(float)
    return ilog_w_negatives(raw[:, :4] * numbers["n_std"] + numbers["n_mean"])


def _domain_sample(rng, y_max: np.ndarray, n: int) -> np.ndarray:
    """Signal yields inside the box [0, y_max]: half uniform, half along random rays.

    The rays mimic signals (a few bins dominate, spread over orders of magnitude): random
    log-normal shapes scaled to stay inside the box, times a uniform mu.
    """
    n_bins = y_max.size
    n_box = n // 2
    box = rng.uniform(size=(n_box, n_bins)) * y_max
    shape = np.exp(rng.normal(0.0, 2.0, size=(n - n_box, n_bins))) * y_max
    top = np.max(shape / np.where(y_max > 0, y_max, 1.0), axis=1, keepdims=True)
    shape = np.minimum(shape / np.where(top > 0, top, 1.0), y_max)
    rays = rng.uniform(size=(n - n_box, 1)) * shape
    return np.concatenate([box, rays])


def _self_check_points(y_max: np.ndarray) -> np.ndarray:
    fr = np.linspace(0.0, 0.6, N_SELF_CHECK)[:, None]
    tilt = (np.arange(y_max.size)[None, :] % 3 + 1) / 3.0
    return fr * tilt * y_max[None, :]



# -- what the surrogate does not carry: from the workspace ----------------------------------
def _workspace_spec(workspace, meta: dict) -> tuple[dict, str | None]:
    from surrogate_stats.likelihood._workspace import load_json, sha256_file

    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    if workspace is None:
        cand = prov.get("workspace_file")
        if isinstance(cand, str) and Path(cand).is_file():
            want = prov.get("workspace_sha256")
            if want and sha256_file(cand) != want:
                raise InvalidInput(f"the workspace {cand!r} recorded in the surrogate's "
                                   "provenance has changed since training (SHA-256 differs); "
                                   "pass workspace= explicitly")
            workspace = cand
        else:
            raise InvalidInput(
                "export_olll needs the background-only workspace the surrogate was trained on "
                "(the observed counts and every channel, removed ones included, are not in "
                "the surrogate): pass workspace=PATH (CLI: --workspace BkgOnly.json)")
    if isinstance(workspace, dict):
        name = prov.get("workspace_file")
        return workspace, (Path(name).name if isinstance(name, str) and name else None)
    if isinstance(workspace, (str, Path)):
        spec = load_json(workspace, "workspace")
        if not isinstance(spec, dict) or not isinstance(spec.get("channels"), list):
            raise InvalidInput(f"workspace {str(workspace)!r} is not a pyhf workspace (no "
                               "channels list)")
        return spec, Path(workspace).name
    raise InvalidInput(f"workspace must be a path or a pyhf workspace dict; got "
                       f"{type(workspace).__name__}")


_WS_CACHE: dict = {}


def _workspace_numbers(spec: dict) -> dict:
    """Bins, channels, observed counts, nominal background and its pre-fit uncertainty.

    Every bin of the workspace (no channel removed). The uncertainty propagates the
    constraint widths of the constrained, non-fixed nuisance parameters linearly through the
    background at pyhf's initial values (free normalisation factors held fixed).
    """
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    if key in _WS_CACHE:
        _WS_CACHE[key] = _WS_CACHE.pop(key)  # most recent last
        return _WS_CACHE[key]
    from surrogate_stats._optional import optional_import
    from surrogate_stats.likelihood._histfactory import build_model

    jax = optional_import("jax")
    model = build_model(spec, check=False)
    with jax.enable_x64(True):
        jnp = jax.numpy
        theta = jnp.asarray(model.init, dtype=jnp.float64)
        bkg = np.asarray(model.background(theta))
        jac = np.asarray(jax.jacfwd(model.background)(theta))
        _, hess = model.constraint_derivatives()
        prec = np.asarray(hess(jnp.asarray(model.aux_observed, dtype=jnp.float64), theta))
    use = (prec > 0) & ~np.asarray(model.fixed, dtype=bool)
    unc = np.sqrt(np.sum(jac[:, use] ** 2 / prec[use], axis=1))
    channels = [c["name"] for c in spec["channels"]]
    out = {"bins": list(model.bins), "channels": channels,
           "observed": np.asarray(model.observed, dtype=float), "background": bkg,
           "bkg_unc": unc}
    _WS_CACHE[key] = out
    while len(_WS_CACHE) > 4:
        _WS_CACHE.pop(next(iter(_WS_CACHE)))
    return out


def _removed_channels(surrogate, spec: dict, meta: dict) -> list[str]:
    from surrogate_stats.likelihood._histfactory import bin_names_of

    try:
        channels = [c["name"] for c in spec["channels"]]
        all_bins = bin_names_of(spec)
    except (KeyError, TypeError, IndexError):
        raise InvalidInput("the workspace is not a pyhf workspace (channels need a name and "
                           "samples with data)") from None
    active = {b.rsplit("-", 1)[0] for b in surrogate.bins}
    removed = [c for c in channels if c not in active]
    expect = [b for b in all_bins if b.rsplit("-", 1)[0] in active]
    if tuple(expect) != tuple(surrogate.bins):
        missing = sorted(set(surrogate.bins) - set(all_bins))
        raise InvalidInput(
            f"the workspace's bins do not match the surrogate's ({', '.join(surrogate.bins)})"
            + (f"; not in the workspace: {missing}" if missing else "; the order differs")
            + ": pass the workspace the surrogate was trained on")
    for where in (meta.get("remove_channels"), (meta.get("provenance") or {}).get(
            "remove_channels") if isinstance(meta.get("provenance"), dict) else None):
        if isinstance(where, list) and sorted(where) != sorted(removed):
            raise InvalidInput(f"the surrogate's metadata says remove_channels={where}, but "
                               f"its bins leave out {removed}")
    return removed


def _check_background(surrogate, ws: dict, active: np.ndarray) -> None:
    mine = ws["background"][active]
    theirs = surrogate.background
    bad = np.flatnonzero(~np.isclose(mine, theirs, rtol=1e-6, atol=1e-9))
    if bad.size:
        shown = ", ".join(f"{surrogate.bins[i]} ({theirs[i]:.6g} vs {mine[i]:.6g})"
                          for i in bad[:5])
        raise InvalidInput(f"the workspace's nominal background differs from the surrogate's "
                           f"in {shown}: pass the workspace the surrogate was trained on")


def _bkg_all(ws: dict, surrogate, active: np.ndarray) -> np.ndarray:
    out = ws["background"].copy()
    out[active] = surrogate.background
    return out


def _channel_types(channels: list[str], overrides) -> dict:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(channels))
    if unknown:
        raise InvalidInput(f"channel types given for channels not in the workspace: {unknown}; "
                           f"it has {channels}")
    out, undecided = {}, []
    for c in channels:
        kind = overrides.get(c, classify_channel(c))
        if kind is None:
            undecided.append(c)
        elif kind not in CHANNEL_KINDS:
            raise InvalidInput(f"channel type of {c!r} must be SR, CR or VR; got {kind!r}")
        out[c] = kind
    if undecided:
        raise InvalidInput(f"cannot tell SR/CR/VR from the channel names {undecided}: give "
                           "them with channel_types= (CLI: --channel-types NAME=SR,...)")
    return out


def _bkg_unc(given, ws: dict, meta: dict) -> tuple[np.ndarray, dict]:
    bins = ws["bins"]
    if given is None and meta.get("bkg_unc") is not None:
        given, how = meta["bkg_unc"], "from the surrogate's metadata (bkg_unc)"
    else:
        how = "given by the exporter (bkg_unc=)"
    if given is None:
        return ws["bkg_unc"], {
            "definition": "pre-fit one-sigma uncertainty of the background per bin: the "
                          "constraint widths of the constrained, non-fixed nuisance parameters "
                          "propagated linearly through the background at pyhf's initial "
                          "values; free normalisation factors (no constraint) are held at "
                          "their initial values; no Poisson term",
            "source": "workspace"}
    if isinstance(given, dict):
        missing = [b for b in bins if b not in given]
        if missing:
            raise InvalidInput(f"bkg_unc lacks the bins {missing}")
        given = [given[b] for b in bins]
    try:
        arr = np.asarray(given, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput("bkg_unc must be numbers, one per workspace bin") from None
    if arr.shape != (len(bins),) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InvalidInput(f"bkg_unc must be {len(bins)} finite non-negative numbers (every "
                           f"bin of the workspace: {', '.join(bins)}); got shape {arr.shape}")
    return arr, {"definition": "one-sigma background uncertainty per bin", "source": how}


def _sigma(given, meta: dict) -> tuple[np.ndarray | None, dict]:
    note = ("nLLs[:, 4:] = sigma_dnll / ((1 + |Delta|) * nLLs_std[0]), per OLLL column: a "
            "constant RMS error sigma_dnll of the surrogate in -ln L propagated to first order "
            "into the preprocessed space (a consumer recovers sigma_dnll ~ (1 + |Delta|) * "
            "nLLs_std[0] * sigma_pre)")
    if given is not None:
        vals = _per_dataset(given, "sigma")
        return vals, {"definition": note, "source": "given by the exporter (sigma=)",
                      "values_dnll": [float(v) for v in vals]}
    held = _find_heldout(meta)
    if held is not None:
        vals = np.array([held[d] for d in OLLL_DATASETS])
        return vals, {"definition": note,
                      "source": "held-out RMS error of the surrogate vs exact labels "
                                "(training.heldout.<data set>.rms_dnll)",
                      "values_dnll": [float(v) for v in vals]}
    return None, {"definition": note,
                  "source": "float32_rounding_only: RMS difference between this float32 file "
                            "and the float64 surrogate at export (no training error known)"}


def _per_dataset(given, what: str) -> np.ndarray:
    if isinstance(given, dict):
        alias = dict(zip(OLLL_COLUMNS, OLLL_DATASETS))
        norm = {alias.get(k, k): v for k, v in given.items()}
        missing = [d for d in OLLL_DATASETS if d not in norm]
        if missing:
            raise InvalidInput(f"{what} lacks the data sets {missing}")
        given = [norm[d] for d in OLLL_DATASETS]
    else:
        raise InvalidInput(f"{what} must be a dict {{data set: value}} over {DATASETS}")
    try:
        arr = np.asarray(given, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} values must be numbers") from None
    if arr.shape != (4,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InvalidInput(f"{what} values must be 4 finite positive numbers; got {given}")
    return arr


def _find_heldout(meta: dict):
    tr = meta.get("training")
    cands = []
    if isinstance(tr, dict):
        cands += [tr.get("heldout"), (tr.get("metrics") or {}).get("heldout")
                  if isinstance(tr.get("metrics"), dict) else None]
    cands.append(meta.get("heldout"))
    for c in cands:
        if not isinstance(c, dict):
            continue
        try:
            vals = {d: float(c[d]["rms_dnll"]) for d in DATASETS}
        except (KeyError, TypeError, ValueError):
            continue
        if all(math.isfinite(v) and v > 0 for v in vals.values()):
            return vals
    return None


def _nll_max(surrogate) -> tuple[dict, dict]:
    """``[mu_hat, nll(mu_hat)]`` per OLLL data set (definition in ``docs/olll.md``)."""
    y_max = surrogate.y_max
    cands = [np.where(np.arange(y_max.size) == b, y_max, 0.0)
             for b in range(y_max.size) if y_max[b] > 0]
    cands.append(y_max.copy())
    out, chosen = {}, {}
    for key, d in zip(MAX_KEYS, OLLL_DATASETS):
        if d.endswith("asimov"):
            out[key] = [0.0, surrogate.nll_zero(d)]
            continue
        best = None
        for s in cands:
            mu, nll = surrogate.best_fit(s, expected=d)
            if best is None or nll < best[1]:
                best = (mu, nll, s)
        out[key] = [best[0], best[1]]
        chosen[key] = [[b, float(v)] for b, v in zip(surrogate.bins, best[2])]
    definition = {
        "definition": "[mu_hat, nLL(mu_hat)]. nLL_exp_max, nLL_obs_max: the lowest -ln L of "
                      "the surrogate's bounded best fits (0 <= mu <= 1) along B + 1 "
                      "reference signals: each active bin alone at its trained maximum yield, "
                      "and all bins at their trained maxima; mu_hat multiplies the reference "
                      "signal that wins (given in 'signals', yields per active bin). "
                      "nLLA_exp_max, nLLA_obs_max: [0, nLLA_*_mu0], since the Asimov data of "
                      "the background-only fit are best fitted without signal.",
        "signals": chosen}
    return out, definition


def _source(given, meta: dict, ws_file) -> tuple[dict, list[str]]:
    given = dict(given or {})
    known = {"analysis_id", "arxiv", "inspire_id", "experiment", "sqrt_s", "luminosity",
             "reference", "filename", "statistical_model"}
    extra = sorted(set(given) - known)
    if extra:
        raise InvalidInput(f"unknown source fields {extra}; known: {sorted(known)}")
    prov = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    placeholders = []

    def text(key, default=None):
        v = given.get(key, default)
        if v is None or (isinstance(v, str) and not v.strip()):
            placeholders.append(key)
            return "unknown"
        if not isinstance(v, str):
            raise InvalidInput(f"source {key} must be a string; got {v!r}")
        return v

    def number(key):
        v = given.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v <= 0:
            raise InvalidInput(f"source {key} must be a positive number; got {v!r}")
        return float(v)

    src = {"analysis_id": text("analysis_id", prov.get("analysis")),
           "arxiv": text("arxiv"), "experiment": text("experiment")}
    if given.get("inspire_id") is not None:
        src["inspire_id"] = str(given["inspire_id"])
    sqrt_s = number("sqrt_s")
    if sqrt_s is None:
        placeholders.append("sqrt_s")
        sqrt_s = 13.0
    src["sqrt_s"] = sqrt_s
    lumi = number("luminosity")
    if lumi is None:
        placeholders.append("luminosity")
    else:
        src["luminosity"] = lumi
    stat = given.get("statistical_model")
    if stat is not None:
        if not isinstance(stat, dict):
            raise InvalidInput("source statistical_model must be an object")
        stat = dict(stat)
    else:
        stat = {"type": "histfactory", "reference": text("reference"),
                "filename": text("filename", ws_file)}
    src["statistical_model"] = stat
    if placeholders:
        src["placeholders"] = {
            "fields": placeholders,
            "note": "not known at export: strings are 'unknown', sqrt_s is 13.0 (TeV) and "
                    "luminosity is left out"}
    return src, placeholders


def _run_config(meta: dict, compute_dtype: str, seed: int) -> dict:
    out = {"export": {"compute_dtype": compute_dtype, "seed": seed,
                      "domain_sample": N_DOMAIN_SAMPLE, "export_check": N_EXPORT_CHECK}}
    for key in ("labels", "training"):
        if isinstance(meta.get(key), dict):
            out[key] = meta[key]
    return json.loads(json.dumps(out, allow_nan=False, default=str))


def _native(meta: dict) -> dict:
    out = {k: meta[k] for k in ("kind", "name", "schema_version", "content_sha256")
           if isinstance(meta.get(k), (str, int))}
    if isinstance(meta.get("provenance"), dict):
        out["provenance"] = json.loads(json.dumps(meta["provenance"], default=str))
    return out


def _version() -> str:
    from surrogate_stats import __version__

    return __version__


# ============================================================================================
# loading (numpy + onnxruntime only)
# ============================================================================================
class OLLLSurrogate(YieldLikelihood):
    """An OLLL v0.1 file as a yield-parametrised likelihood (numpy + onnxruntime).

    Built by :func:`load_olll` (or ``load_surrogate("x.onnx")``). ``delta_nll`` evaluates the
    graph and decodes it exactly as consumers (SModelS) do: signal yields ``y`` -> total
    yields ``bkg + y`` -> features -> ``nLLs`` -> ``Delta``; ``nll = nLL_<d>_mu0 + Delta``
    (the graph's Delta at zero signal is not subtracted, as consumers do not). The API is
    that of every yield surrogate: ``bins``, ``nll``, ``tmu``, ``best_fit``, ``for_signal``,
    ``upper_limit``; the trained domain is ``0 <= y <= x_max - bkg_yields``.

    Attributes:
        metadata: ``{"kind": "olll", "name", "file", "olll": decoded metadata_props}``.
        channels: ``{channel: "SR" | "CR" | "VR"}``, every channel of the workspace.
        remove_channels: the channels that are not inputs.
        observed: the observed counts of the active bins.
        source: the OLLL ``source`` object.
    """

    def __init__(self, *, session, input_name: str, output_name: str, bins, nll0, y_max,
                 prefit, numbers: dict, channels: dict, remove_channels, observed,
                 on_extrapolation: str = "warn", metadata: dict | None = None):
        self._init_common(bins=bins, nll0=nll0, y_max=y_max, prefit=prefit,
                          on_extrapolation=on_extrapolation, metadata=metadata)
        self._session = session
        self._io = (input_name, output_name)
        self._num = numbers
        self.channels = dict(channels)
        self.remove_channels = tuple(remove_channels)
        self.observed = np.asarray(observed, dtype=float)

    @property
    def source(self) -> dict:
        return self.metadata["olll"]["source"]

    def raw(self, y) -> np.ndarray:
        """The graph's output ``nLLs`` (N, 8) float32 for signal yields y (N, B)."""
        y = np.asarray(y, dtype=float)
        if y.ndim != 2 or y.shape[1] != self.n_bins:
            raise InvalidInput(f"expected signal yields of shape (N, {self.n_bins}) for the bins "
                               f"{', '.join(self.bins)}; got {y.shape}")
        x = ((log_w_negatives(self._prefit[None, :] + y) - self._num["f_mean"])
             / self._num["f_std"]).astype(np.float32)
        out = np.empty((y.shape[0], 8), dtype=np.float32)
        name_in, name_out = self._io
        for start in range(0, y.shape[0], CHUNK):
            out[start:start + CHUNK] = self._session.run(
                [name_out], {name_in: x[start:start + CHUNK]})[0]
        return out

    def delta_nll(self, y) -> np.ndarray:
        """Decoded ``nLL(y) - nLL_mu0`` (N, 4) in :data:`DATASETS` order."""
        raw = self.raw(y).astype(float)
        delta = ilog_w_negatives(raw[:, :4] * self._num["n_std"] + self._num["n_mean"])
        return delta[:, FROM_OLLL]

    def delta_nll_sigma(self, y) -> np.ndarray:
        """The file's uncertainty of :meth:`delta_nll`, (N, 4) in -ln L units (first order).

        ``sigma = (1 + |Delta|) * nLLs_std * raw[:, 4:]``, i.e. the preprocessed-space
        uncertainty mapped back through the derivative of the decoding.
        """
        raw = self.raw(y).astype(float)
        delta = ilog_w_negatives(raw[:, :4] * self._num["n_std"] + self._num["n_mean"])
        sig = (1.0 + np.abs(delta)) * self._num["n_std"] * np.abs(raw[:, 4:])
        return sig[:, FROM_OLLL]


def load_olll(path, *, on_extrapolation: str = "warn", threads: int | None = None
              ) -> OLLLSurrogate:
    """Load an OLLL v0.1 ONNX file (numpy + onnxruntime only).

    The file is untrusted input: it must be a regular file (no symlink) of at most 512 MiB;
    the graph passes the structural checks of every artifact (no external data, standard
    ONNX domains only, no local functions); every required ``metadata_props`` key is present
    once and well formed; the graph has one float32 input ``[batch, n_bins]`` and one float32
    output ``[batch, 8]``; the outputs at zero signal are finite; and the self-check pairs a
    file written by this library carries are re-evaluated.

    Args:
        path: the ``.onnx`` file.
        on_extrapolation: ``"warn"``, ``"raise"`` or ``"ignore"`` outside the trained domain.
        threads: onnxruntime intra-op threads (None: 1; 0: onnxruntime's default).

    Raises:
        InvalidArtifact: naming the file and the key (or graph part) that is missing or wrong.
        InvalidInput: ``on_extrapolation`` or ``threads`` is not valid.
    """
    from surrogate_stats.artifact._format import MAX_FILE_BYTES, _read_regular
    from surrogate_stats.artifact._onnx_check import read_metadata_props
    from surrogate_stats.artifact._runtime import _check_threads, new_session

    if on_extrapolation not in ("warn", "raise", "ignore"):
        raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                           f"{on_extrapolation!r}")
    _check_threads(threads)
    path = Path(path)
    file = path.name
    blob = _read_regular(path, MAX_FILE_BYTES, "OLLL file")
    session = new_session(blob, threads=threads, file=file)  # structural checks first
    meta = decode_olll_metadata(read_metadata_props(blob, file=file), file=file)
    info = _check_metadata(meta, file)
    name_in, name_out = _check_io(session, info["n_active"], file)
    olll_nll0 = [meta[k] for k in MU0_KEYS]
    numbers = info["numbers"]
    surrogate = OLLLSurrogate(
        session=session, input_name=name_in, output_name=name_out, bins=info["bins"],
        nll0=[olll_nll0[i] for i in FROM_OLLL], y_max=info["y_max"], prefit=info["bkg"],
        numbers=numbers, channels=meta["channels"], remove_channels=meta["remove_channels"],
        observed=info["obs"], on_extrapolation=on_extrapolation,
        metadata={"kind": "olll", "name": meta["model_name"], "file": str(path),
                  "olll": meta})
    try:
        zero = surrogate.raw(np.zeros((1, surrogate.n_bins)))
    except Exception as exc:  # onnxruntime's own errors: a graph that cannot take the input
        raise InvalidArtifact(f"{file}: the graph fails on {surrogate.n_bins} total yields: "
                              f"{(str(exc).splitlines() or [''])[0][:200]}") from None
    if zero.shape != (1, 8) or not np.all(np.isfinite(zero)):
        raise InvalidArtifact(f"{file}: the graph's nLLs at zero signal are not finite "
                              f"({zero[0].tolist()})")
    _self_check(surrogate, meta, file)
    return surrogate


def decode_olll_metadata(entries: list[tuple[str, str]], *, file: str = "model.onnx") -> dict:
    """metadata_props pairs -> dict, JSON fields parsed strictly; each key must appear once.

    ``nLL_*_mu0`` become floats; ``run_config`` is parsed as JSON when it is JSON and kept as
    text otherwise (YAML, as some producers write it). Keys unknown to OLLL v0.1 are kept as
    text (or parsed, for this library's own JSON extensions).
    """
    counts = Counter(k for k, _ in entries)
    dups = sorted(k for k, n in counts.items() if n > 1)
    if dups:
        raise InvalidArtifact(f"{file}: metadata_props key {dups[0]!r} appears "
                              f"{counts[dups[0]]} times" + (f" (also {dups[1:]})" if dups[1:]
                                                            else "")
                              + "; every OLLL key must appear once")
    raw = dict(entries)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise InvalidArtifact(f"{file}: metadata_props lacks the required OLLL v0.1 key "
                              f"{missing[0]!r}" + (f" (and {missing[1:]})" if missing[1:]
                                                   else ""))
    out = {}
    for key, value in raw.items():
        if key in JSON_KEYS:
            out[key] = _strict_json(value, key, file)
        elif key in MU0_KEYS:
            try:
                num = float(value)
            except ValueError:
                num = math.nan
            if not math.isfinite(num):
                raise InvalidArtifact(f"{file}: metadata_props[{key!r}] must be a finite number "
                                      f"(as text); got {value[:60]!r}")
            out[key] = num
        elif key == "run_config":
            try:
                out[key] = _strict_json(value, key, file)
            except InvalidArtifact:
                out[key] = value
        else:
            out[key] = value
    return out


def _strict_json(text: str, key: str, file: str):
    from surrogate_stats.artifact._format import (
        _depth,
        _finite_float,
        _no_duplicates,
        _reject_constant,
    )

    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                           object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError, TypeError) as exc:
        raise InvalidArtifact(f"{file}: metadata_props[{key!r}] is not valid JSON: "
                              f"{str(exc)[:200]}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidArtifact(f"{file}: metadata_props[{key!r}] is nested deeper than "
                              f"{MAX_JSON_DEPTH}")
    return value


def _finite(v) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:
        return False


def _check_metadata(meta: dict, file: str) -> dict:
    def bad(key, why):
        return InvalidArtifact(f"{file}: metadata_props[{key!r}] {why}")

    if meta["olll_schema_version"] != OLLL_VERSION:
        raise bad("olll_schema_version", f"must be {OLLL_VERSION!r}; got "
                  f"{meta['olll_schema_version'][:40]!r} (this loader reads OLLL v0.1)")
    for key in ("model_type", "model_name", "model_author", "model_license"):
        if not meta[key].strip():
            raise bad(key, "must be a non-empty string")
    if meta["input_type"] != "total_yields":
        raise bad("input_type", f"must be 'total_yields' (OLLL v0.1); got "
                  f"{meta['input_type'][:40]!r}")
    if not isinstance(meta["source"], dict):
        raise bad("source", "must be a JSON object")
    channels = meta["channels"]
    if not isinstance(channels, dict) or not channels:
        raise bad("channels", "must be a non-empty JSON object {channel: 'SR' | 'CR' | 'VR'}")
    odd = [(c, k) for c, k in channels.items() if not c or k not in CHANNEL_KINDS]
    if odd:
        raise bad("channels", f"classifies {odd[0][0]!r} as {str(odd[0][1])[:20]!r}; each "
                  "channel must be 'SR', 'CR' or 'VR'")
    names = None
    values = {}
    for key in ("obs_yields", "bkg_yields", "bkg_unc"):
        lst = meta[key]
        if not isinstance(lst, list) or not lst or not all(
                isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and e[0]
                and _finite(e[1]) and e[1] >= 0 for e in lst):
            raise bad(key, "must be a non-empty list of [bin name, finite value >= 0]")
        these = [e[0] for e in lst]
        if len(set(these)) != len(these):
            raise bad(key, "has duplicate bin names")
        if names is not None and these != names:
            raise bad(key, "must list the same bins in the same order as obs_yields")
        names = these
        values[key] = np.array([e[1] for e in lst], dtype=float)
    if not isinstance(meta["removeCRsVRs"], bool):
        raise bad("removeCRsVRs", "must be a JSON boolean")
    removed = meta["remove_channels"]
    if not isinstance(removed, list) or not all(isinstance(c, str) and c for c in removed) \
            or len(set(removed)) != len(removed):
        raise bad("remove_channels", "must be a list of distinct channel names")
    unknown = [c for c in removed if c not in channels]
    if unknown:
        raise bad("remove_channels", f"names channels that are not in 'channels': {unknown}")
    active = []
    for b in names:
        owners = [c for c in channels if b == c or b.startswith(c + "-")]
        if not owners:
            raise bad("obs_yields", f"bin {b!r} belongs to no channel of 'channels'")
        active.append(max(owners, key=len) not in removed)
    active = np.array(active)
    n_active = int(active.sum())
    if n_active == 0:
        raise bad("remove_channels", "removes every channel: no input bins are left")
    bins = [b for b, a in zip(names, active) if a]
    bounds = {}
    for key, n in (("x_min", n_active), ("x_max", n_active), ("y_min", 4), ("y_max", 4)):
        v = meta[key]
        if not isinstance(v, list) or len(v) != n or not all(_finite(e) for e in v):
            raise bad(key, f"must be a list of {n} finite numbers"
                      + (" (one per active bin)" if n == n_active else " (one per data set)"))
        bounds[key] = np.array(v, dtype=float)
    for a, b in (("x_min", "x_max"), ("y_min", "y_max")):
        if np.any(bounds[a] > bounds[b]):
            raise bad(a, f"exceeds {b} at {np.flatnonzero(bounds[a] > bounds[b]).tolist()}")
    pre = meta["preprocessing"]
    if not isinstance(pre, dict):
        raise bad("preprocessing", "must be a JSON object")
    for key in ("features_pipeline", "nLLs_pipeline"):
        if pre.get(key) != PIPELINE:
            raise bad("preprocessing", f"{key} must be {PIPELINE} (the only pipeline this "
                      f"loader decodes); got {str(pre.get(key))[:120]}")
    std = meta["standardization"]
    if not isinstance(std, dict):
        raise bad("standardization", "must be a JSON object")
    numbers = {}
    for key, short, n in (("features_mean", "f_mean", n_active), ("features_std", "f_std",
                          n_active), ("nLLs_mean", "n_mean", 4), ("nLLs_std", "n_std", 4)):
        v = std.get(key)
        if not (isinstance(v, list) and len(v) == 1 and isinstance(v[0], list)
                and len(v[0]) == n and all(_finite(e) for e in v[0])):
            raise bad("standardization", f"{key} must be a nested list [[{n} finite "
                      "numbers]]")
        arr = np.array(v[0], dtype=float)
        if key.endswith("_std") and np.any(arr <= 0):
            raise bad("standardization", f"{key} must be positive")
        numbers[short] = arr
    for key in MAX_KEYS:
        v = meta[key]
        if not isinstance(v, list) or len(v) != 2 or not all(_finite(e) for e in v):
            raise bad(key, "must be [mu_hat, nLL(mu_hat)], two finite numbers")
    bkg = values["bkg_yields"][active]
    return {"bins": bins, "n_active": n_active, "numbers": numbers, "bkg": bkg,
            "obs": values["obs_yields"][active],
            "y_max": np.maximum(bounds["x_max"] - bkg, 0.0)}


def _check_io(session, n_bins: int, file: str) -> tuple[str, str]:
    ins, outs = session.get_inputs(), session.get_outputs()

    def shown(values):
        return [(v.name, v.type, v.shape) for v in values]

    if (len(ins) != 1 or ins[0].type != "tensor(float)" or len(ins[0].shape or []) != 2
            or (isinstance(ins[0].shape[1], int) and ins[0].shape[1] != n_bins)
            or isinstance(ins[0].shape[0], int)):
        raise InvalidArtifact(f"{file}: the graph's inputs {shown(ins)} are not OLLL v0.1's one "
                              f"float32 input '{INPUT_NAME}' of shape [batch, {n_bins}] (the "
                              "active bins of obs_yields)")
    if (len(outs) != 1 or outs[0].type != "tensor(float)" or len(outs[0].shape or []) != 2
            or outs[0].shape[1] != 8 or isinstance(outs[0].shape[0], int)):
        raise InvalidArtifact(f"{file}: the graph's outputs {shown(outs)} are not OLLL v0.1's "
                              f"one float32 output '{OUTPUT_NAME}' of shape [batch, 8]")
    return ins[0].name, outs[0].name


def _self_check(surrogate: OLLLSurrogate, meta: dict, file: str) -> None:
    ext = meta.get("surrogate_stats")
    if not isinstance(ext, dict) or "self_check" not in ext:
        return
    pairs = ext["self_check"]
    try:
        x = np.array([p["features"] for p in pairs], dtype=np.float32)
        want = np.array([p["nLLs"] for p in pairs], dtype=float)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise InvalidArtifact(f"{file}: metadata_props['surrogate_stats'].self_check entries "
                              "need 'features' and 'nLLs'") from None
    if x.ndim != 2 or x.shape[1] != surrogate.n_bins or want.shape != (len(x), 8):
        raise InvalidArtifact(f"{file}: metadata_props['surrogate_stats'].self_check entries "
                              f"need 'features' of length {surrogate.n_bins} and 'nLLs' of "
                              "length 8")
    name_in, name_out = surrogate._io
    got = surrogate._session.run([name_out], {name_in: x})[0].astype(float)
    if not np.allclose(got, want, rtol=SELF_CHECK_RTOL, atol=SELF_CHECK_RTOL):
        worst = float(np.max(np.abs(got - want)))
        raise InvalidArtifact(f"{file}: self-check failed: the graph's nLLs differ from the "
                              f"values stored in metadata_props['surrogate_stats'] by up to "
                              f"{worst:.3g}; the graph and its metadata do not belong together")
