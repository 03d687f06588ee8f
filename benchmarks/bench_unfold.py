"""IBU and OmniFold (and any registered method) on all three toys, in one run; writes results/.

    python benchmarks/bench_unfold.py                 # moderate size (see SIZE below)
    python benchmarks/bench_unfold.py --toys gaussian --n-pseudo 3

For each toy it calls ``surrogate_stats.unfold.compare`` (the same code as
``surrogate-stats unfold compare``) and records, per method and observable, the median over
pseudo-experiments of the binned Wasserstein-1 distance to the truth, its ratio to the
simulation prior's distance (the "no unfolding" reference measured in the same run), the
triangular discriminator and chi2/ndf, the per-bin 68%/95% interval coverage, closure on an
independent simulated sample and the seconds per unfolding (bootstrap replicas included).
Results go to benchmarks/results/unfold.{json,md} and plots to docs/img/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = dict(n_sim=20000, n_data=10000, n_pseudo=5, n_bins=16,
            method_options={"omnifold": {"n_bootstrap": 4}, "ibu": {"n_sim_bootstrap": 30}})


def main(argv=None) -> int:
    from surrogate_stats.unfold import TOYS, compare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", default=",".join(TOYS))
    ap.add_argument("--methods", default="ibu,omnifold")
    ap.add_argument("--n-pseudo", type=int, default=SIZE["n_pseudo"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    size = dict(SIZE, n_pseudo=args.n_pseudo)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"command": "python benchmarks/bench_unfold.py " + " ".join(sys.argv[1:]),
               "size": size, "machine": {"platform": platform.platform(),
                                         "cpus": os.cpu_count()},
               "note": "2 CPU cores shared by several jobs: seconds are indicative only",
               "toys": {}}
    md = [f"# Unfolding comparison (`{results['command'].strip()}`)", "",
          f"Sizes: {json.dumps(size)}. {results['note']}.", ""]
    for name in args.toys.split(","):
        t0 = time.perf_counter()
        rep = compare(name, args.methods.split(","), seed=args.seed, progress=True, **size)
        summary = rep.to_dict()
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        summary["plots"] = [str(p.relative_to(ROOT)) for p in rep.plot(ROOT / "docs" / "img")]
        results["toys"][name] = summary
        md += [f"## {name} ({summary['wall_seconds']} s)", "", rep.table(), ""]
        print(f"{name}: done in {summary['wall_seconds']} s", file=sys.stderr)
        (out / "unfold.json").write_text(json.dumps(results, indent=1) + "\n")
        (out / "unfold.md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: {m: v["wasserstein_over_prior"] for m, v in s["methods"].items()}
                      for k, s in results["toys"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
