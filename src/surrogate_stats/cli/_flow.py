"""``surrogate-stats flow ...``: train, apply and validate simulation-to-data corrections."""

from __future__ import annotations

import json
import sys

__all__ = ["register"]


def _names(s):
    return [c.strip() for c in s.split(",") if c.strip()] if s else []


def register(sub) -> None:
    flow = sub.add_parser("flow", help="conditional normalising flows: MC-to-data corrections")
    fsub = flow.add_subparsers(dest="action", required=True)

    tr = fsub.add_parser("train-correction", help="train a correction flow -> artifact")
    tr.add_argument("--mc", required=True, help="simulated events (.parquet, .csv, .root)")
    tr.add_argument("--data", required=True, help="data events (.parquet, .csv, .root)")
    tr.add_argument("--variables", required=True, help="comma-separated columns to correct")
    tr.add_argument("--conditions", default="", help="comma-separated condition columns")
    tr.add_argument("--mc-weights", help="column of per-event MC weights (signed allowed)")
    tr.add_argument("--data-weights", help="column of per-event data weights")
    tr.add_argument("--tree", help="TTree name in ROOT files")
    tr.add_argument("--out", required=True, help="artifact directory to write")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--flow", choices=["coupling", "autoregressive"], default="coupling")
    tr.add_argument("--layers", type=int, default=6)
    tr.add_argument("--hidden", default="64,64", help="hidden sizes, e.g. 64,64")
    tr.add_argument("--knots", type=int, default=8)
    tr.add_argument("--epochs", type=int, default=50)
    tr.add_argument("--batch-size", type=int, default=512)
    tr.add_argument("--learning-rate", type=float, default=1e-3)
    tr.add_argument("--patience", type=int, default=None,
                    help="stop after this many epochs without a lower validation loss "
                         "(default: no early stopping, the whole schedule runs)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    co = fsub.add_parser("correct", help="apply a correction artifact to simulated events")
    co.add_argument("artifact")
    co.add_argument("--in", dest="inp", required=True, help="events to correct")
    co.add_argument("--out", required=True, help="output table (all input columns kept)")
    co.add_argument("--tree", help="TTree name in ROOT files (also used for the output)")
    co.add_argument("--seed", type=int, default=0, help="seed of the spike-slab uniforms")
    co.add_argument("--on-extrapolation", choices=["warn", "raise", "ignore"], default="warn")
    co.set_defaults(func=_correct)

    va = fsub.add_parser("validate", help="data vs MC before/after the correction")
    va.add_argument("artifact")
    va.add_argument("--mc", required=True, help="held-out simulated events")
    va.add_argument("--data", required=True, help="held-out data events")
    va.add_argument("--mc-weights")
    va.add_argument("--data-weights")
    va.add_argument("--tree")
    va.add_argument("--plot", help="PNG with marginals and ratio panels")
    va.add_argument("--seed", type=int, default=0)
    va.add_argument("--quiet", action="store_true")
    va.set_defaults(func=_validate)


def _weights(df, col, what):
    from surrogate_stats.flows._io import columns

    return None if not col else columns(df, [col], what)[:, 0]


def _train(args) -> int:
    from surrogate_stats._optional import optional_import
    from surrogate_stats.flows._correction import (
        CorrectionConfig,
        CorrectionFlow,
        correction_train_config,
    )
    from surrogate_stats.flows._io import columns, read_table

    jax = optional_import("jax")
    variables, conditions = _names(args.variables), _names(args.conditions)
    mc, data = read_table(args.mc, tree=args.tree), read_table(args.data, tree=args.tree)
    config = CorrectionConfig(
        flow=args.flow, n_layers=args.layers, hidden=tuple(int(h) for h in _names(args.hidden)),
        knots=args.knots,
        train=correction_train_config(max_epochs=args.epochs, batch_size=args.batch_size,
                                      learning_rate=args.learning_rate,
                                      patience=args.patience))
    cf = CorrectionFlow.fit(
        jax.random.key(args.seed),
        mc=columns(mc, variables, "--mc"), data=columns(data, variables, "--data"),
        mc_conditions=columns(mc, conditions, "--mc") if conditions else None,
        data_conditions=columns(data, conditions, "--data") if conditions else None,
        mc_weights=_weights(mc, args.mc_weights, "--mc"),
        data_weights=_weights(data, args.data_weights, "--data"),
        variables=variables, conditions=conditions, config=config, progress=not args.quiet)
    cf.save(args.out)
    print(json.dumps({"artifact": str(args.out), "variables": variables,
                      "conditions": conditions, "spikes": cf.spikes,
                      "epochs": cf.history["epochs"],
                      "best_val_loss": cf.history["best_val_loss"],
                      "train_seconds": cf.history["train_seconds"]}))
    return 0


def _correct(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.flows._io import columns, read_table, write_table

    s = load_surrogate(args.artifact, on_extrapolation=args.on_extrapolation)
    if s.metadata.get("kind") != "correction_flow":
        raise InvalidInput(f"{args.artifact!r} is a {s.metadata.get('kind')!r} artifact, not a "
                           "correction_flow")
    df = read_table(args.inp, tree=args.tree)
    x = columns(df, list(s.variables), "--in")
    c = columns(df, list(s.conditions), "--in")
    out = s.correct(x, c if s.conditions else None, seed=args.seed)
    df = df.copy()
    for j, name in enumerate(s.variables):
        df[name] = out[:, j].astype(df[name].dtype if df[name].dtype.kind == "f" else float)
    write_table(df, args.out, tree=args.tree or "events")
    print(json.dumps({"out": str(args.out), "n_events": int(len(df)),
                      "corrected": list(s.variables)}))
    return 0


def _validate(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.flows._io import columns, read_table
    from surrogate_stats.flows._validate import validate_correction

    s = load_surrogate(args.artifact)
    mc, data = read_table(args.mc, tree=args.tree), read_table(args.data, tree=args.tree)
    v, c = list(s.variables), list(s.conditions)
    xm, xd = columns(mc, v, "--mc"), columns(data, v, "--data")
    cm, cd = columns(mc, c, "--mc"), columns(data, c, "--data")
    if not args.quiet:
        print(f"correcting {len(xm)} events and training the classifiers ...", file=sys.stderr)
    xc = s.correct(xm, cm if c else None, seed=args.seed)
    rep = validate_correction(xd, xm, xc, data_conditions=cd, mc_conditions=cm,
                              data_weights=_weights(data, args.data_weights, "--data"),
                              mc_weights=_weights(mc, args.mc_weights, "--mc"),
                              variables=v, conditions=c, seed=args.seed, plot=args.plot)
    print(json.dumps(rep))
    return 0
