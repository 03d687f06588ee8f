"""``surrogate-stats export``: publish artifacts in other tools' formats (OLLL for SModelS)."""

from __future__ import annotations

import json

__all__ = ["register"]


def register(subparsers) -> None:
    ex = subparsers.add_parser("export", help="publish an artifact in another tool's format")
    sub = ex.add_subparsers(dest="action", required=True)
    ol = sub.add_parser("olll", help="a yield surrogate as an OLLL v0.1 ONNX file (SModelS)")
    ol.add_argument("artifact", help="yield-likelihood artifact directory")
    ol.add_argument("--out", required=True, help="the .onnx file to write")
    ol.add_argument("--workspace", help="the background-only workspace it was trained on "
                                        "(default: the one its provenance names, if present)")
    ol.add_argument("--channel-types", default=None,
                    help="SR/CR/VR of channels whose names do not tell, e.g. "
                         "SR_x=SR,CR_y=CR (default: from the name's start)")
    ol.add_argument("--analysis-id", help="e.g. ATLAS-SUSY-2018-31")
    ol.add_argument("--arxiv", help="arXiv identifier, e.g. 1908.03122")
    ol.add_argument("--inspire-id")
    ol.add_argument("--experiment", help="e.g. ATLAS")
    ol.add_argument("--sqrt-s", type=float, help="centre-of-mass energy in TeV")
    ol.add_argument("--luminosity", type=float, help="integrated luminosity in fb^-1")
    ol.add_argument("--reference", help="URL or DOI of the published statistical model")
    ol.add_argument("--filename", help="the workspace's file name in that record")
    ol.add_argument("--model-name")
    ol.add_argument("--author", help="model_author")
    ol.add_argument("--license", default="CC-BY-4.0", help="model_license (default CC-BY-4.0)")
    ol.add_argument("--compute-dtype", default="float64", choices=("float64", "float32"),
                    help="arithmetic inside the graph (I/O is float32 either way)")
    ol.add_argument("--seed", type=int, default=0)
    ol.set_defaults(func=_olll)


def _channel_types(text):
    from surrogate_stats.errors import InvalidInput

    if not text:
        return None
    out = {}
    for item in text.split(","):
        name, sep, kind = item.strip().partition("=")
        if not sep or not name or kind not in ("SR", "CR", "VR"):
            raise InvalidInput(f"--channel-types must be NAME=SR|CR|VR pairs separated by "
                               f"commas; got {item.strip()!r}")
        out[name] = kind
    return out


def _olll(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.likelihood._olll import export_olll
    from surrogate_stats.likelihood._yields_surrogate import YieldLikelihoodSurrogate

    surrogate = load_surrogate(args.artifact)
    if not isinstance(surrogate, YieldLikelihoodSurrogate):
        kind = (getattr(surrogate, "metadata", None) or {}).get("kind") or type(
            surrogate).__name__
        raise InvalidInput(f"{args.artifact!r} is a {kind!r} artifact; the OLLL export needs a "
                           "yield-likelihood artifact ('likelihood train-yields')")
    fields = {"analysis_id": args.analysis_id, "arxiv": args.arxiv,
              "inspire_id": args.inspire_id, "experiment": args.experiment,
              "sqrt_s": args.sqrt_s, "luminosity": args.luminosity,
              "reference": args.reference, "filename": args.filename}
    res = export_olll(surrogate, args.out, workspace=args.workspace,
                      channel_types=_channel_types(args.channel_types),
                      source={k: v for k, v in fields.items() if v is not None},
                      model_name=args.model_name, model_author=args.author,
                      model_license=args.license, compute_dtype=args.compute_dtype,
                      seed=args.seed)
    meta = res.metadata
    print(f"wrote OLLL v0.1 file {res.path}")
    print(json.dumps({"olll": str(res.path), "model_name": meta["model_name"],
                      "bins": list(surrogate.bins), "remove_channels": meta["remove_channels"],
                      "max_abs_delta": res.agreement["max_abs_delta"],
                      "max_rel_delta": res.agreement["max_rel_delta"],
                      "placeholders": list(res.placeholders)}))
    return 0
