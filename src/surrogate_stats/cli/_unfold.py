"""``surrogate-stats unfold``: ``train``/``apply`` a flow unfolder; ``compare`` methods on a toy."""

from __future__ import annotations

import json
import sys

# run sizes: the default is small (about two minutes per toy on two shared cores); --full is
# the full size (hours there)
SIZES = {
    "small": dict(n_sim=10000, n_data=5000, n_pseudo=4, n_bins=12,
                  method_options={"omnifold": {"n_bootstrap": 3}}),
    "full": dict(n_sim=100000, n_data=50000, n_pseudo=20, n_bins=20,
                 method_options={"omnifold": {"n_bootstrap": 10},
                                 "ibu": {"n_sim_bootstrap": 50}}),
}


def register(subparsers) -> None:
    from surrogate_stats.unfold._methods import METHODS
    from surrogate_stats.unfold._toys import TOYS

    unf = subparsers.add_parser("unfold", help="unfolding: train/apply a flow unfolder, "
                                               "compare methods on toy data sets")
    usub = unf.add_subparsers(dest="action", required=True)
    tr = usub.add_parser("train", help="train a conditional-flow unfolder on simulated pairs "
                                       "(parquet, csv or ROOT) and save it as an artifact")
    tr.add_argument("--sim", required=True, help="simulated events (.parquet, .csv, .root)")
    tr.add_argument("--particle", required=True, help="comma-separated particle-level columns")
    tr.add_argument("--detector", required=True, help="comma-separated detector-level columns")
    tr.add_argument("--weights", help="event-weight column")
    tr.add_argument("--passed-reco", help="boolean column: the event passes the detector "
                                          "selection (default: all)")
    tr.add_argument("--passed-truth", help="boolean column: the event passes the particle "
                                           "selection (default: all)")
    tr.add_argument("--tree", help="TTree name for ROOT files")
    tr.add_argument("--out", required=True, help="artifact directory to write")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--max-epochs", type=int, help="flow training epochs, and the most "
                                                   "epochs of the fine-tuning that absorbs "
                                                   "the adapted prior (default from "
                                                   "FlowUnfoldConfig)")
    tr.add_argument("--no-simulation", action="store_true",
                    help="do not store the simulated pairs in the artifact (then `apply` "
                         "cannot run the prior-reweighting iterations)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)
    ap = usub.add_parser("apply", help="unfold measured events with a trained unfolder "
                                       "(iterating on the data by default)")
    ap.add_argument("artifact", help="directory written by `unfold train`")
    ap.add_argument("--in", dest="inp", required=True, help="measured events (detector-level "
                                                            "columns named as in training)")
    ap.add_argument("--out", required=True, help="output file (.parquet or .csv)")
    ap.add_argument("--n-samples", type=int, default=1, help="posterior draws per event; "
                                                             "with K > 1 a column `sample`")
    ap.add_argument("--weights", help="event-weight column of the input")
    ap.add_argument("--tree", help="TTree name for ROOT files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-iterate", action="store_true",
                    help="skip the prior-reweighting iterations: sample the published ONNX "
                         "graph with numpy + onnxruntime only")
    ap.add_argument("--iterations", type=int, help="maximum prior-reweighting iterations "
                                                   "(default: the trained configuration's)")
    ap.add_argument("--no-absorb", action="store_true",
                    help="keep the adapted prior as a reweighting classifier and resample each "
                         "draw from several flow proposals, instead of fine-tuning the flow on "
                         "the reweighted simulation (slower sampling)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.set_defaults(func=_apply)
    cmp_ = usub.add_parser("compare", help="run every method on pseudo-experiments of a toy; "
                                           "prints a table and one JSON line last")
    cmp_.add_argument("--toy", required=True, choices=sorted(TOYS))
    cmp_.add_argument("--methods", default=",".join(METHODS),
                      help=f"comma-separated, from {sorted(METHODS)} (default: all)")
    cmp_.add_argument("--full", action="store_true",
                      help=f"full size {SIZES['full']} instead of {SIZES['small']}")
    cmp_.add_argument("--n-pseudo", type=int, help="override the number of pseudo-experiments")
    cmp_.add_argument("--n-sim", type=int, help="override the number of simulated events")
    cmp_.add_argument("--n-data", type=int, help="override the events per pseudo-experiment")
    cmp_.add_argument("--n-bins", type=int, help="override the bins per observable")
    cmp_.add_argument("--seed", type=int, default=0)
    cmp_.add_argument("--plots", help="directory for one PNG per method")
    cmp_.add_argument("--report", help="write the markdown table here")
    cmp_.add_argument("--quiet", action="store_true", help="no progress bars, no table")
    cmp_.set_defaults(func=_compare)


def _compare(args) -> int:
    from surrogate_stats.unfold._compare import compare

    size = dict(SIZES["full" if args.full else "small"])
    for name in ("n_pseudo", "n_sim", "n_data", "n_bins"):
        if getattr(args, name) is not None:
            size[name] = getattr(args, name)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    report = compare(args.toy, methods, seed=args.seed, progress=not args.quiet, **size)
    table = report.table()
    if not args.quiet:
        print(table, file=sys.stderr)
    if args.report:
        with open(args.report, "w") as fh:
            fh.write(table + "\n")
    summary = report.to_dict()
    if args.plots:
        summary["plots"] = [str(p) for p in report.plot(args.plots)]
    print(json.dumps(summary))
    return 0


def _columns(text: str, what: str) -> list[str]:
    from surrogate_stats.errors import InvalidInput

    cols = [c.strip() for c in text.split(",") if c.strip()]
    if not cols:
        raise InvalidInput(f"--{what} needs at least one column name")
    if len(set(cols)) != len(cols):
        raise InvalidInput(f"--{what} names a column twice: {text}")
    return cols


def _bool_column(values, name):
    import numpy as np

    from surrogate_stats.errors import InvalidInput

    v = np.asarray(values)
    if v.dtype == bool:
        return v
    try:
        f = v.astype(float)
    except (TypeError, ValueError):
        raise InvalidInput(f"column {name!r} must be boolean or 0/1") from None
    if not np.all(np.isin(f, (0.0, 1.0))):
        raise InvalidInput(f"column {name!r} must be boolean or 0/1; got other values")
    return f.astype(bool)


def _train(args) -> int:
    import numpy as np

    from surrogate_stats._optional import optional_import
    from surrogate_stats.unfold._data import read_events
    from surrogate_stats.unfold._flow_unfolder import FlowUnfoldConfig, Unfolder

    particle = _columns(args.particle, "particle")
    detector = _columns(args.detector, "detector")
    extra = [c for c in (args.weights, args.passed_reco, args.passed_truth) if c]
    cols = list(dict.fromkeys(particle + detector + extra))
    ev = read_events(args.sim, cols, tree=args.tree)
    t = np.column_stack([np.asarray(ev[c], float) for c in particle])
    r = np.column_stack([np.asarray(ev[c], float) for c in detector])
    cfg = FlowUnfoldConfig() if args.max_epochs is None else FlowUnfoldConfig(
        max_epochs=args.max_epochs, finetune_epochs=args.max_epochs)
    jax = optional_import("jax")
    u = Unfolder.fit(
        jax.random.key(args.seed), sim_particle=t, sim_detector=r,
        sim_weights=None if args.weights is None else np.asarray(ev[args.weights], float),
        passed_reco=None if args.passed_reco is None else _bool_column(ev[args.passed_reco],
                                                                       args.passed_reco),
        passed_truth=None if args.passed_truth is None else _bool_column(
            ev[args.passed_truth], args.passed_truth),
        particle_names=particle, detector_names=detector, config=cfg,
        progress=not args.quiet)
    path = u.save(args.out, include_simulation=not args.no_simulation)
    print(json.dumps({"artifact": str(path), "particle": particle, "detector": detector,
                      "n_sim": u.history["n_sim"], "efficiency": u.history["efficiency"],
                      "fake_fraction": u.history["fake_fraction"],
                      "flow_epochs": u.history["flow"]["epochs"],
                      "train_seconds": round(u.history["train_seconds"], 2)}))
    return 0


def _absorbed(res):
    """The fine-tuning record of the adapted prior, if this run absorbed one."""
    u = res.unfolder
    if (u is None or u.prior is not None or not res.history
            or not u.history.get("absorbed_prior")):
        return None
    rec = u.history["absorbed_prior"][-1]
    return {"epochs": rec["epochs"], "seconds": round(rec["seconds"], 2)}


def _apply(args) -> int:
    from pathlib import Path

    import numpy as np

    from surrogate_stats._optional import optional_import
    from surrogate_stats.artifact import load_surrogate
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.unfold._data import read_events

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise InvalidInput(f"--out must end in .parquet or .csv; got {out.name!r}")
    if args.n_samples < 1:
        raise InvalidInput(f"--n-samples must be >= 1; got {args.n_samples}")
    loaded = load_surrogate(args.artifact)
    if not hasattr(loaded, "particle_names") or not hasattr(loaded, "detector_names"):
        raise InvalidInput(f"{args.artifact} is not a flow unfolder artifact")
    cols = list(loaded.detector_names) + ([args.weights] if args.weights else [])
    ev = read_events(args.inp, cols, tree=args.tree)
    r = np.column_stack([np.asarray(ev[c], float) for c in loaded.detector_names])
    v = None if args.weights is None else np.asarray(ev[args.weights], float)
    if args.no_iterate:
        res = loaded.unfold(r, n_samples=args.n_samples, seed=args.seed, data_weights=v)
    else:
        from surrogate_stats.unfold._flow_unfolder import Unfolder

        u = Unfolder.load(args.artifact)
        if u.simulation is None:
            raise InvalidInput(f"{args.artifact} was saved without its simulated events "
                               "(--no-simulation); rerun with --no-iterate")
        res = u.unfold(r, n_samples=args.n_samples, key=args.seed, data_weights=v,
                       n_iterations=args.iterations,
                       absorb_prior=False if args.no_absorb else None,
                       progress=not args.quiet)
    clash = sorted({"event", "sample", "weight"} & set(res.names))
    if clash:
        raise InvalidInput(f"particle-level columns {clash} clash with the output columns "
                           "event/sample/weight; rename them when training")
    pd = optional_import("pandas")
    n, k, _ = res.particle.shape
    frame = {"event": np.repeat(np.arange(n), k)}
    if k > 1:
        frame["sample"] = np.tile(np.arange(k), n)
    for j, name in enumerate(res.names):
        frame[name] = res.particle[:, :, j].reshape(-1)
    frame["weight"] = res.weights.reshape(-1)
    df = pd.DataFrame(frame)
    if out.suffix.lower() == ".csv":
        df.to_csv(out, index=False)
    else:
        optional_import("pyarrow")
        df.to_parquet(out, index=False)
    print(json.dumps({"out": str(out), "events": int(n), "n_samples": int(k),
                      "columns": list(df.columns), "iterations": res.history,
                      "absorbed_prior": _absorbed(res),
                      "out_of_range_fraction": res.out_of_range_fraction}))
    return 0
