"""``surrogate-stats likelihood train-yields | validate-yields``: yield-parametrised surrogates."""

from __future__ import annotations

import json
import sys


def register_likelihood(lsub) -> None:
    """Add the yield commands to the ``likelihood`` command group."""
    from surrogate_stats._executor import add_executor_arguments

    tr = lsub.add_parser(
        "train-yields",
        help="one surrogate for every signal model: exact labels at many per-bin signal "
             "yields -> network -> ONNX artifact")
    tr.add_argument("workspace", help="background-only workspace JSON (BkgOnly.json)")
    tr.add_argument("--out", required=True, help="artifact directory to write")
    tr.add_argument("--patchset", help="the analysis's PatchSet: its signal points are the "
                                       "validation set (never trained on)")
    tr.add_argument("--patch", action="append", default=[],
                    help="a bare jsonpatch signal file (repeatable); like --patchset")
    tr.add_argument("--remove-channels", default=None,
                    help="comma-separated channels to drop (default: those every patch "
                         "removes, e.g. validation regions)")
    tr.add_argument("--validate", default=None,
                    help="comma-separated names of the patches to validate on (default all)")
    tr.add_argument("--n-signals", type=int, default=None,
                    help="random training signal shapes (default 1500)")
    tr.add_argument("--n-mu", type=int, default=None, help="labelled points per signal (10)")
    tr.add_argument("--walkers", type=int, default=None,
                    help="random-walk points in the -2 ln lambda <= 25 region (1200)")
    tr.add_argument("--label-restarts", type=int, default=None,
                    help="starts besides continuation for half of the ray labels: pyhf's "
                         "init and N-1 random ones (default 0: continuation only)")
    tr.add_argument("--no-bound-starts", action="store_true",
                    help="do not refit the middle and last point of each ray from starts at "
                         "the bounds of weakly constrained and free parameters (docs/yields.md)")
    tr.add_argument("--max-steps", type=int, default=None, help="optimiser steps (12000)")
    tr.add_argument("--hidden", default=None, help="hidden layer widths, e.g. 64,64,64")
    tr.add_argument("--ensemble", type=int, default=None,
                    help="networks averaged into the published one (5; N trains N times as "
                         "long as one)")
    tr.add_argument("--gradient-weight", type=float, default=None,
                    help="weight of the exact-gradient term of the loss (0: values only)")
    tr.add_argument("--gradient-direction", choices=("ray", "random"), default=None,
                    help="derivative fitted by the gradient term: along each point's ray, or "
                         "along a random direction per point (docs/yields.md)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--keep-labels", action="store_true",
                    help="keep the label store OUT.labels after success")
    tr.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    add_executor_arguments(tr)
    tr.set_defaults(func=_train_yields)

    va = lsub.add_parser("validate-yields",
                         help="compare a yield surrogate with exact fits on signal patches")
    va.add_argument("artifact", help="artifact directory (kind yield_likelihood)")
    va.add_argument("--workspace", required=True, help="background-only workspace JSON")
    va.add_argument("--patchset", help="PatchSet with the signals to test")
    va.add_argument("--patch", action="append", default=[], help="bare jsonpatch (repeatable)")
    va.add_argument("--record", action="store_true",
                    help="store the result in the artifact's metadata.json (re-hashed)")
    va.add_argument("--quiet", action="store_true")
    va.set_defaults(func=_validate_yields)

    li = lsub.add_parser(
        "limit",
        help="exact asymptotic CLs upper limits of one signal patch (pyhf's qtilde limits "
             "from the vectorised engine, seconds per limit)")
    li.add_argument("workspace", help="background-only workspace JSON (BkgOnly.json)")
    li.add_argument("--patchset", help="pyhf PatchSet JSON; --patch is then a patch name")
    li.add_argument("--patch", required=True,
                    help="patch name (with --patchset) or a bare jsonpatch file")
    li.add_argument("--poi-bounds", default="0,100",
                    help="POI bounds of every fit, 'lo,hi' with lo = 0 (default 0,100)")
    li.add_argument("--level", type=float, default=0.05, help="CLs level (default 0.05)")
    li.add_argument("--normfactor-only", action="store_true",
                    help="inject the patch's nominal signal yields with a normalisation factor "
                         "only (what a yield surrogate sees) instead of the full patch")
    li.set_defaults(func=_limit)


def _log(quiet):
    return (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr))


def _csv(text):
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def _train_yields(args) -> int:
    from dataclasses import replace

    from surrogate_stats._executor import ExecutorConfig
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig
    from surrogate_stats.likelihood._yields_pipeline import train_yields
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig

    labels = YieldLabelConfig(seed=args.seed)
    for flag, field in (("n_signals", "n_signals"), ("n_mu", "n_mu"), ("walkers", "walkers"),
                        ("label_restarts", "restarts")):
        if getattr(args, flag) is not None:
            labels = replace(labels, **{field: getattr(args, flag)})
    if args.no_bound_starts:
        labels = replace(labels, bound_starts=False)
    surrogate = YieldSurrogateConfig()
    if args.max_steps is not None:
        surrogate = replace(surrogate, train=replace(surrogate.train, steps=args.max_steps))
    if args.ensemble is not None:
        surrogate = replace(surrogate, ensemble=args.ensemble)
    if args.gradient_weight is not None:
        surrogate = replace(surrogate, gradient_weight=args.gradient_weight)
    if args.gradient_direction is not None:
        surrogate = replace(surrogate, gradient_direction=args.gradient_direction)
    if args.hidden:
        try:
            surrogate = replace(surrogate, hidden=tuple(int(h) for h in _csv(args.hidden)))
        except ValueError:
            raise InvalidInput(f"--hidden must be comma-separated integers; got "
                               f"{args.hidden!r}") from None
    remove = _csv(args.remove_channels) if args.remove_channels is not None else None
    sur, meta = train_yields(
        args.workspace, args.out, patchset=args.patchset, patches=args.patch,
        remove_channels=remove, labels=labels, surrogate=surrogate,
        executor=ExecutorConfig.from_args(args), seed=args.seed, progress=not args.quiet,
        log=_log(args.quiet), keep_labels=args.keep_labels,
        validation_signals=_csv(args.validate))
    summary = {"artifact": str(args.out), "bins": list(sur.bins),
               "remove_channels": meta["remove_channels"],
               "n_points": meta["labels"]["n_points"],
               "label_seconds": meta["labels"]["seconds"]["total"],
               "train_seconds": meta["training"]["seconds"],
               "seconds_total": meta["seconds_total"],
               "heldout_rms_dnll": {d: v["rms_dnll"]
                                    for d, v in meta["training"]["heldout"].items()},
               "validation": (meta["validation"] or {}).get("summary")}
    print(json.dumps(summary))
    return 0


def _validate_yields(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.likelihood._yields_pipeline import (
        analysis_signals,
        load_background,
        validate_yields,
    )

    sur = load_surrogate(args.artifact)
    if getattr(sur, "kind", None) != "yield_likelihood":
        raise InvalidInput(f"{args.artifact!r} is a {getattr(sur, 'kind', '?')!r} artifact; "
                           "validate-yields needs one made by train-yields")
    spec = load_background(args.workspace)
    names, ops, _ = analysis_signals(spec, patchset=args.patchset, patches=args.patch)
    if not ops:
        raise InvalidInput("give the signals to validate on: --patchset P.json or --patch F")
    result = validate_yields(sur, spec, names, ops, progress=not args.quiet)
    if args.record:
        from surrogate_stats.artifact import read_artifact, write_artifact

        meta, graphs, arrays = read_artifact(args.artifact)
        meta["validation"] = result
        meta.pop("content_sha256", None)
        write_artifact(args.artifact, meta, graphs, arrays)
    print(json.dumps(result["summary"]))
    return 0


def _limit(args) -> int:
    import time

    import jsonpatch

    from surrogate_stats.errors import InvalidInput, UnknownPatch
    from surrogate_stats.likelihood._histfactory import build_model, inject_signal
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit
    from surrogate_stats.likelihood._yields_pipeline import (
        analysis_signals,
        load_background,
        removed_channels,
    )
    from surrogate_stats.likelihood._yields_validate import signal_from_patch

    try:
        bounds = tuple(float(x) for x in args.poi_bounds.split(","))
    except ValueError:
        bounds = ()
    if len(bounds) != 2:
        raise InvalidInput(f"--poi-bounds must be 'lo,hi', e.g. 0,100; got {args.poi_bounds!r}")
    spec = load_background(args.workspace)
    names, ops, _ = analysis_signals(spec, patchset=args.patchset,
                                     patches=[] if args.patchset else [args.patch])
    if args.patchset and args.patch not in names:
        raise UnknownPatch(f"patch {args.patch!r} is not in {args.patchset!r}; it has "
                           f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
    i = names.index(args.patch) if args.patchset else 0
    removed = removed_channels(spec, [ops[i]])
    t = time.perf_counter()
    if args.normfactor_only:
        model = build_model(spec, remove_channels=removed, check=False)
        ws = inject_signal(spec, signal_from_patch(ops[i], spec, model.bins), remove=removed)
    else:
        ws = jsonpatch.apply_patch(spec, ops[i])
    r = workspace_upper_limit(ws, poi_bounds=bounds, level=args.level)
    print(json.dumps({"patch": names[i], "poi": r.poi, "normfactor_only": args.normfactor_only,
                      "poi_bounds": list(bounds), "level": args.level,
                      "observed": r.observed, "expected": r.expected.tolist(),
                      "mu_hat": r.mu_hat, "converged": r.converged,
                      "seconds": round(time.perf_counter() - t, 2)}))
    return 0
