"""``surrogate-stats me``: train |M|^2 surrogates and generate unweighted events."""

from __future__ import annotations

import json
import sys

__all__ = ["register"]


def register(subparsers) -> None:
    me = subparsers.add_parser("me", help="matrix-element surrogates and two-stage unweighting")
    sub = me.add_subparsers(dest="action", required=True)

    tr = sub.add_parser("train", help="exact |M|^2 at RAMBO points -> MLP -> ONNX artifact")
    tr.add_argument("process", help="ee_mumu, ee_qqg, gg_gg, gg_ggg or gg_gggg")
    tr.add_argument("--sqrt-s", type=float, required=True, help="centre-of-mass energy (GeV)")
    tr.add_argument("--n-train", type=int, required=True, help="training points in the cuts")
    tr.add_argument("--n-test", type=int, default=5000, help="fresh points for the accuracy")
    tr.add_argument("--out", required=True, help="artifact directory to write")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int, default=None, help="maximum Adam steps")
    tr.add_argument("--hidden", default=None, help="hidden widths, e.g. 64,64,64")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    uw = sub.add_parser("unweight", help="two-stage unweighting with a trained artifact")
    uw.add_argument("artifact", help="artifact directory from 'me train'")
    uw.add_argument("--n-events", type=int, required=True)
    uw.add_argument("--out", required=True, help="Les Houches Event file to write (.lhe); "
                                                 "a .npz writes arrays instead")
    uw.add_argument("--seed", type=int, default=1)
    uw.add_argument("--n-calibration", type=int, default=20000)
    uw.add_argument("--batch-size", type=int, default=1024)
    uw.add_argument("--overweight-fraction", type=float, default=1e-3)
    uw.add_argument("--threads", type=int, default=1,
                    help="onnxruntime threads; with 1, XLA (the exact |M|^2) is also limited "
                         "to one thread unless XLA_FLAGS is already set")
    uw.add_argument("--quiet", action="store_true")
    uw.set_defaults(func=_unweight)


def _log(quiet):
    return (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr))


def _train(args) -> int:
    from dataclasses import replace

    from surrogate_stats.matrix_element import SurrogateConfig, get_process, train

    proc = get_process(args.process, sqrt_s=args.sqrt_s)
    cfg = SurrogateConfig()
    if args.hidden:
        from surrogate_stats.errors import InvalidInput

        try:
            hidden = tuple(int(h) for h in args.hidden.split(","))
        except ValueError:
            raise InvalidInput(f"--hidden must be comma-separated integers; got "
                               f"{args.hidden!r}") from None
        cfg = replace(cfg, hidden=hidden)
    if args.steps:
        cfg = replace(cfg, train=replace(cfg.train, steps=args.steps))
    sur, meta = train(proc, args.out, seed=args.seed, n_train=args.n_train, n_test=args.n_test,
                      config=cfg, progress=not args.quiet, log=_log(args.quiet))
    acc = meta["accuracy"]
    print(json.dumps({"artifact": str(args.out), "process": proc.name, "sqrt_s": proc.sqrt_s,
                      "median_abs_rel_err": acc["median_abs_rel_err"],
                      "top_median_abs_rel_err": acc["top_median_abs_rel_err"],
                      "ln_ratio_std": acc["ln_ratio_std"],
                      "train_seconds": meta["training"]["train_seconds"],
                      "label_seconds": meta["training"]["label_seconds"]}))
    return 0


def _unweight(args) -> int:
    from surrogate_stats import load_surrogate
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.matrix_element import (
        TwoStageUnweighter,
        UnweightingConfig,
        get_process,
        write_arrays,
        write_lhe,
    )

    if args.n_events < 1:
        raise InvalidInput(f"--n-events must be >= 1; got {args.n_events}")
    import os

    if args.threads == 1 and "jax" not in sys.modules and "XLA_FLAGS" not in os.environ:
        # t_exact and t_surrogate are then measured on the same single thread
        os.environ["XLA_FLAGS"] = ("--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")
    sur = load_surrogate(args.artifact, threads=args.threads)
    if getattr(sur, "metadata", {}).get("kind") != "matrix_element":
        raise InvalidInput(f"{args.artifact} is not a matrix_element artifact")
    info = sur.metadata["process"]
    proc = get_process(info["name"], sqrt_s=info["sqrt_s"], **info.get("options", {}))
    cfg = UnweightingConfig(n_calibration=args.n_calibration, batch_size=args.batch_size,
                            overweight_fraction=args.overweight_fraction)
    uw = TwoStageUnweighter(proc, sur, cuts=sur.cuts, config=cfg)
    log = _log(args.quiet)
    cal = uw.calibrate(args.seed + 1000003)
    log(f"calibration: s_max={cal['s_max']:.4g} x_max={cal['x_max']:.4g} "
        f"eps_full={cal['eps_full']:.4g}")
    times = uw.measure_times()
    res = uw.run(args.seed, args.n_events, progress=not args.quiet, times=times)
    if str(args.out).endswith(".npz"):
        write_arrays(args.out, res)
    else:
        write_lhe(args.out, res, proc)
    st = res.stats
    print(json.dumps({"sigma": res.sigma, "sigma_err": res.sigma_err, "unit": "pb",
                      "eps_full": st["eps_full"], "eps_1": st["eps_1"], "eps_2": st["eps_2"],
                      "t_exact": st["t_exact"], "t_surrogate": st["t_surrogate"],
                      "f_eff": st["f_eff"], "n_events": st["n_events"],
                      "n_trials": st["n_trials"], "n_exact_calls": st["n_exact_calls"],
                      "overweight_events": st["overweight_events"],
                      "n_floored": st["n_floored"], "out": str(args.out)}))
    return 0
