"""``surrogate-stats``: train, validate and inspect surrogates."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from surrogate_stats.errors import SurrogateStatsError

# Further command groups: modules with ``register(subparsers)``; imported when the parser is
# built (they must import nothing heavy at module level).
COMMAND_MODULES: tuple[str, ...] = (
    "surrogate_stats.cli._artifact",
    "surrogate_stats.cli._unfold",
    "surrogate_stats.cli._me",
    "surrogate_stats.cli._flow",
    "surrogate_stats.cli._export",
)


def _add_patch_args(p, *, workspace_flag: bool):
    if workspace_flag:
        p.add_argument("--workspace", required=True, help="background-only workspace JSON")
    else:
        p.add_argument("workspace", help="background-only workspace JSON (BkgOnly.json)")
    p.add_argument("--patchset", help="pyhf PatchSet JSON; --patch is then a patch name")
    p.add_argument("--patch", required=True,
                   help="patch name (with --patchset) or a bare jsonpatch file")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="surrogate-stats",
        description="Train, validate and inspect neural surrogates published as ONNX.")
    sub = parser.add_subparsers(dest="command", required=True)

    lik = sub.add_parser("likelihood", help="profiled-likelihood surrogates of pyhf workspaces")
    lsub = lik.add_subparsers(dest="action", required=True)
    tr = lsub.add_parser("train", help="exact pyhf labels -> MLP -> ONNX artifact")
    _add_patch_args(tr, workspace_flag=False)
    tr.add_argument("--out", required=True, help="artifact directory to write")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--n-points", type=int, default=None,
                    help="exact fits per data set (default 40)")
    tr.add_argument("--jobs", type=int, default=2, help="worker processes for the pyhf fits")
    tr.add_argument("--checkpoint", default="auto",
                    help="file for finished fits (default OUT.fits.jsonl; removed on success): "
                         "rerunning a killed command resumes from it")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    va = lsub.add_parser("validate", help="compare an artifact with fresh pyhf computations")
    va.add_argument("artifact", help="artifact directory")
    _add_patch_args(va, workspace_flag=True)
    va.add_argument("--plot", help="write surrogate vs pyhf -2 ln lambda curves to this PNG")
    va.add_argument("--n-points", type=int, default=24)
    va.add_argument("--jobs", type=int, default=2)
    va.add_argument("--record", action="store_true",
                    help="store the metrics in the artifact's metadata.json (re-hashed)")
    va.add_argument("--quiet", action="store_true")
    va.set_defaults(func=_validate)

    from surrogate_stats.cli._yields import register_likelihood

    register_likelihood(lsub)

    ins = sub.add_parser("inspect", help="print an artifact's metadata summary")
    ins.add_argument("artifact")
    ins.add_argument("--json", action="store_true", help="print the whole metadata as JSON")
    ins.set_defaults(func=_inspect)

    for name in COMMAND_MODULES:  # each adds its sub-commands with set_defaults(func=...)
        importlib.import_module(name).register(sub)
    return parser


def _log(quiet):
    return (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr))


def _train(args) -> int:
    from surrogate_stats.likelihood._labels import LabelConfig
    from surrogate_stats.likelihood._pipeline import train
    from surrogate_stats.likelihood._workspace import load_signal_workspace

    ws = load_signal_workspace(args.workspace, patchset=args.patchset, patch=args.patch)
    labels = LabelConfig(n_jobs=args.jobs, **({} if args.n_points is None
                                               else {"n_points": args.n_points}))
    surrogate, meta = train(ws, args.out, seed=args.seed, labels=labels,
                            progress=not args.quiet, log=_log(args.quiet),
                            checkpoint=args.checkpoint)
    tm = meta["training"]
    summary = {
        "artifact": str(args.out),
        "domain": list(surrogate.domain),
        "mu_hat": surrogate.mu_hat,
        "poi_bounds_widened": meta["poi"]["bounds_widened"],
        "max_abs_dtmu_heldout_obs": tm["metrics"]["observed"]["max_abs_dtmu_heldout"],
        "max_abs_dtmu_heldout_exp": tm["metrics"]["expected"]["max_abs_dtmu_heldout"],
        "label_seconds": tm["label_seconds"],
        "train_seconds": tm["train_seconds"],
        "n_fits": meta["labels"]["n_fits"],
    }
    print(json.dumps(summary))
    return 0


def _validate(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.likelihood._pipeline import record_validation, validate
    from surrogate_stats.likelihood._workspace import load_signal_workspace

    surrogate = load_surrogate(args.artifact, on_extrapolation="raise")
    ws = load_signal_workspace(args.workspace, patchset=args.patchset, patch=args.patch)
    prov = surrogate.metadata.get("provenance", {})
    for key in ("workspace_sha256", "patch_sha256", "patchset_sha256", "patch_name"):
        if key in prov and key in ws.provenance and prov[key] != ws.provenance[key]:
            print(f"warning: {key} differs from the one the artifact was trained on",
                  file=sys.stderr)
    metrics = validate(surrogate, ws, n_points=args.n_points, n_jobs=args.jobs,
                       plot=args.plot, progress=not args.quiet, log=_log(args.quiet))
    if args.record:
        record_validation(args.artifact, metrics)
    print(json.dumps(metrics))
    return 0


def _inspect(args) -> int:
    from surrogate_stats import load_surrogate

    s = load_surrogate(args.artifact)
    meta = s.metadata
    if args.json:
        print(json.dumps(meta, indent=1, sort_keys=True))
        return 0
    prov = meta.get("provenance") or {}
    print(f"{meta.get('name')}: kind={meta['kind']} schema_version={meta['schema_version']}")
    print(f"  workspace: {prov.get('workspace_file')} sha256={prov.get('workspace_sha256')}")
    if meta["kind"] == "yield_likelihood":
        print(f"  bins: {', '.join(s.bins)}  (removed channels: {meta.get('remove_channels')})")
        print(f"  trained signal yields per bin up to: {[round(float(v), 4) for v in s.y_max]}")
        print(f"  -ln L at zero signal: {meta.get('nll0')}")
        if meta.get("validation"):
            print(f"  validation vs exact fits: {json.dumps(meta['validation']['summary'])}")
        print(f"  versions: {prov.get('versions')}")
        return 0
    print(f"  patch: {prov.get('patch_name')}  analysis: {prov.get('analysis')}")
    print(f"  domain mu: {list(s.domain)}  poi: {meta.get('poi')}")
    print(f"  mu_hat: observed {s.mu_hat:.6g}, expected {s.mu_hat_expected:.6g}")
    obs, exp = s.upper_limit()
    print(f"  95% CL upper limit (surrogate): observed {obs:.4g}, expected "
          f"{[round(x, 4) for x in exp]}")
    if meta.get("validation"):
        print(f"  validation vs pyhf: {json.dumps(meta['validation'])}")
    print(f"  versions: {prov.get('versions')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except SurrogateStatsError as exc:
        print(f"surrogate-stats: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
