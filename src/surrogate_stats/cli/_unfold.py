"""``surrogate-stats unfold compare``: IBU and OmniFold (and later the flow) on a toy."""

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

    unf = subparsers.add_parser("unfold", help="unfolding: compare methods on toy data sets")
    usub = unf.add_subparsers(dest="action", required=True)
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
