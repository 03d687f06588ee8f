"""The flow unfolder, OmniFold and IBU on all three toys, in one run; writes results/.

    python benchmarks/bench_unfold.py                 # moderate size (see SIZE below)
    python benchmarks/bench_unfold.py --toys gaussian --n-pseudo 3
    python benchmarks/bench_unfold.py --toys none --timing   # only the 10^6-event timing
    python benchmarks/bench_unfold.py --toys none --cli-check  # default CLI on a fresh toy
    python benchmarks/bench_unfold.py --toys none --absorb-check  # absorbed vs resampled prior

For each toy it calls ``surrogate_stats.unfold.compare`` (the same code as
``surrogate-stats unfold compare``) and records, per method and observable, the median over
pseudo-experiments of the binned Wasserstein-1 distance to the truth, its ratio to the
simulation prior's distance (the "no unfolding" reference measured in the same run), the
triangular discriminator and chi2/ndf, the per-bin 68%/95% interval coverage, closure on an
independent simulated sample and the seconds per unfolding (bootstrap replicas included),
and for the flow the per-event posterior coverage. With ``--timing`` it also times unfolding
10^6 measured events (one draw each) with a trained flow unfolder, in JAX and with the ONNX
graph (numpy + onnxruntime), before and after the prior-reweighting iterations.
Results go to benchmarks/results/unfold.{json,md} (timing: unfold_timing.{json,md}) and plots
to docs/img/.
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
N_TIMING = 1_000_000


def _fresh_toy(rng, n, data: bool):
    """A toy made for this check only (no method was tuned on it): two particle-level
    observables, a gamma-distributed energy-like ``e`` and an angle-like ``a`` correlated
    with it; the detector scales e by N(1, 0.15), smears a by N(0, 0.3), loses events with
    an efficiency rising with e (0.5 -> 0.95) and adds 4% fakes. Data differ from
    simulation in the gamma shape/scale and the correlation."""
    import numpy as np

    shape, scale, slope = (2.5, 1.3, 0.25) if data else (3.0, 1.0, 0.4)
    e = rng.gamma(shape, scale, n)
    a = slope * (e - shape * scale) + rng.normal(0.0, 0.8, n)
    re = e * rng.normal(1.0, 0.15, n)
    ra = a + rng.normal(0.0, 0.3, n)
    eff = 0.5 + 0.45 / (1 + np.exp(-(e - 2.0)))
    reco = rng.random(n) < eff
    fake = rng.random(n) < 0.04
    truth = ~fake
    reco |= fake
    re[fake] = rng.gamma(2.0, 1.5, fake.sum())
    ra[fake] = rng.normal(0.0, 1.5, fake.sum())
    return {"e": e, "a": a, "reco_e": re, "reco_a": ra, "passed_reco": reco,
            "passed_truth": truth}


def cli_check(seed: int = 0) -> dict:
    """W1(unfolded, truth) / W1(sim particle, truth) with the default CLI on a fresh toy."""
    import subprocess
    import tempfile

    import numpy as np
    import pandas as pd

    from surrogate_stats.unfold import wasserstein1

    rng = np.random.default_rng(seed + 1000)
    sim = _fresh_toy(rng, 40000, data=False)
    dat = _fresh_toy(rng, 20000, data=True)
    out = {"toy": _fresh_toy.__doc__.split("\n\n")[0].strip(), "n_sim": 40000,
           "n_data_generated": 20000}
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(sim).to_parquet(f"{tmp}/sim.parquet")
        m = dat["passed_reco"]
        pd.DataFrame({"reco_e": dat["reco_e"][m], "reco_a": dat["reco_a"][m]}).to_parquet(
            f"{tmp}/data.parquet")
        cmds = [["train", "--sim", f"{tmp}/sim.parquet", "--particle", "e,a", "--detector",
                 "reco_e,reco_a", "--passed-reco", "passed_reco", "--passed-truth",
                 "passed_truth", "--out", f"{tmp}/unfolder", "--quiet"],
                ["apply", f"{tmp}/unfolder", "--in", f"{tmp}/data.parquet", "--out",
                 f"{tmp}/unfolded.parquet", "--quiet"]]
        out["commands"] = []
        for c in cmds:
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "surrogate_stats", "unfold", *c],
                                 capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            out["commands"].append({"argv": "surrogate-stats unfold " + " ".join(
                x.replace(tmp, "TMP") for x in c), "seconds": round(time.perf_counter() - t0, 1),
                "json": json.loads(res.stdout.strip().splitlines()[-1])})
        unf = pd.read_parquet(f"{tmp}/unfolded.parquet")
    t = dat["passed_truth"]
    st = sim["passed_truth"]
    # statistical floor: W1 between the truth and an independent truth sample of as many
    # events as the unfolded result has draws
    ref = _fresh_toy(np.random.default_rng(seed + 2000), 20000, data=True)
    rt = ref["passed_truth"] & (np.arange(20000) < len(unf))
    out["observables"] = {}
    for col in ("e", "a"):
        w_unf = wasserstein1(unf[col].to_numpy(), dat[col][t], u_weights=unf["weight"].to_numpy())
        w_pri = wasserstein1(sim[col][st], dat[col][t])
        out["observables"][col] = {"w1_unfolded": w_unf, "w1_prior": w_pri,
                                   "ratio": w_unf / w_pri,
                                   "w1_independent_truth_sample": wasserstein1(ref[col][rt],
                                                                              dat[col][t])}
    return out


def timing(seed: int = 0) -> dict:
    """Seconds to unfold N_TIMING multidim events (one draw each): JAX and ONNX, with the
    simulation's prior, with the adapted prior absorbed into the flow (the default) and
    with the adapted prior kept as a classifier (resampled proposals), and the whole
    default path (iterations on a subset, fine-tuning, draws for every event)."""
    import tempfile
    import warnings

    import numpy as np

    from surrogate_stats import load_surrogate
    from surrogate_stats.unfold import Unfolder, get_toy

    d = get_toy("multidim").make(seed, n_sim=20000, n_data=10000)
    s = d.sim
    u = Unfolder.fit(seed, sim_particle=s.particle, sim_detector=s.detector,
                     passed_reco=s.passed_reco, passed_truth=s.passed_truth, progress=False)
    x, _ = d.data.measured()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    absorbed = u.unfold(x, key=1).unfolder
    t_abs = time.perf_counter() - t0
    t0 = time.perf_counter()
    resampled = u.unfold(x, key=1, absorb_prior=False).unfolder
    t_iter = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    big = get_toy("multidim").sample_data(rng, int(N_TIMING * 1.7)).measured()[0][:N_TIMING]
    out = {"n_events": len(big), "toy": "multidim", "n_sim": 20000,
           "iterations_seconds_10k_events": round(t_iter, 2),
           "iterations_and_absorb_seconds_10k_events": round(t_abs, 2),
           "absorb_epochs": absorbed.history["absorbed_prior"][-1]["epochs"],
           "absorb_seconds": round(absorbed.history["absorbed_prior"][-1]["seconds"], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for label, un in (("simulation_prior", u), ("absorbed_prior", absorbed),
                          ("resampled_prior", resampled)):
            un.unfold(big[:65536], iterate=False)  # compile the full-chunk shape
            t0 = time.perf_counter()
            un.unfold(big, iterate=False)
            out[f"jax_{label}_seconds"] = round(time.perf_counter() - t0, 2)
            path = un.save(f"{tmp}/{label}", include_simulation=False)
            loaded = load_surrogate(path, threads=0)
            t0 = time.perf_counter()
            loaded.unfold(big)
            out[f"onnx_{label}_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    res = u.unfold(big, key=2)
    out["jax_default_unfold_with_iterations_seconds"] = round(time.perf_counter() - t0, 2)
    out["default_iterations"] = len(res.history)
    out["max_iteration_events"] = u.config.max_iteration_events
    out["proposals_resampled"] = max(4, u.config.n_proposals)
    return out


ABSORB_CASES = (("gaussian", 5), ("gaussian", 6), ("multidim", 5), ("multidim", 6),
                ("substructure", 5))


def absorb_check() -> dict:
    """Absorbed vs resampled adapted prior on the same iterations: unbinned W1 to the
    data's truth (in units of the truth's standard deviation) per observable, 2*10^4
    simulated and 10^4 data events, 4 draws per event, default FlowUnfoldConfig."""
    import warnings

    import numpy as np

    from surrogate_stats.unfold import Unfolder, get_toy, wasserstein1

    warnings.simplefilter("ignore")
    rows = []
    for toy, seed in ABSORB_CASES:
        d = get_toy(toy).make(seed, n_sim=20000, n_data=10000)
        s = d.sim
        u = Unfolder.fit(seed, sim_particle=s.particle, sim_detector=s.detector,
                         passed_reco=s.passed_reco, passed_truth=s.passed_truth,
                         progress=False)
        x, _ = d.data.measured()
        tt, tw = d.data.truth()

        def w1(t, w, tt=tt, tw=tw):
            return [round(float(wasserstein1(t[:, j], tt[:, j], u_weights=np.clip(w, 0, None),
                                             v_weights=tw) / np.std(tt[:, j])), 4)
                    for j in range(t.shape[1])]

        row = {"toy": toy, "seed": seed, "observables": list(s.names),
               "prior": w1(*s.truth())}
        for label, kw in (("no_iterations", {"iterate": False}),
                          ("resampled", {"absorb_prior": False}), ("absorbed", {})):
            t0 = time.perf_counter()
            res = u.unfold(x, n_samples=4, key=1, **kw)
            row[label] = w1(*res.flat())
            row[f"{label}_seconds"] = round(time.perf_counter() - t0, 2)
        row["absorb_epochs"] = res.unfolder.history["absorbed_prior"][-1]["epochs"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return {"doc": absorb_check.__doc__, "cases": rows}


def main(argv=None) -> int:
    from surrogate_stats.unfold import TOYS, compare

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--toys", default=",".join(TOYS))
    ap.add_argument("--methods", default="flow,omnifold,ibu")
    ap.add_argument("--timing", action="store_true", help="also time 10^6 events")
    ap.add_argument("--cli-check", action="store_true",
                    help="also run the default CLI on a fresh toy (W1 vs prior)")
    ap.add_argument("--absorb-check", action="store_true",
                    help="also compare the absorbed and the resampled adapted prior")
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
    for name in [t for t in args.toys.split(",") if t in TOYS]:
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
    if args.timing:
        tm = timing(args.seed)
        tm["command"] = results["command"]
        tm["note"] = results["note"]
        labels = {"simulation_prior": "simulation's prior (no iterations)",
                  "absorbed_prior": "adapted, absorbed into the flow (default)",
                  "resampled_prior": "adapted, kept as a classifier (`absorb_prior=False`)"}
        md = [f"## Unfolding {tm['n_events']:,} events, one draw each", "",
              "| prior | JAX (s) | ONNX (s) |", "|---|---|---|",
              *[f"| {txt} | {tm[f'jax_{lab}_seconds']} | {tm[f'onnx_{lab}_seconds']} |"
                for lab, txt in labels.items()], "",
              f"On 10⁴ data events the iterations took {tm['iterations_seconds_10k_events']} "
              f"s, and with the absorption {tm['iterations_and_absorb_seconds_10k_events']} "
              f"s (fine-tuning {tm['absorb_epochs']} epochs, {tm['absorb_seconds']} s); the "
              f"resampled prior draws from {tm['proposals_resampled']} proposals per event. "
              f"The whole default `unfold` of the {tm['n_events']:,} events (iterations on "
              f"{tm['max_iteration_events']:,} of them, {tm['default_iterations']} iterations, "
              f"the absorption, one draw for every event): "
              f"{tm['jax_default_unfold_with_iterations_seconds']} s.", ""]
        (out / "unfold_timing.json").write_text(json.dumps(tm, indent=1) + "\n")
        (out / "unfold_timing.md").write_text("\n".join(md) + "\n")
        print(json.dumps(tm), file=sys.stderr)
    if args.cli_check:
        cc = cli_check(args.seed)
        cc["command"] = results["command"]
        cc["note"] = results["note"]
        (out / "unfold_cli.json").write_text(json.dumps(cc, indent=1) + "\n")
        print(json.dumps(cc), file=sys.stderr)
    if args.absorb_check:
        ab = absorb_check()
        ab["command"] = results["command"]
        md = ["# Absorbed vs resampled adapted prior (`" + ab["command"].strip() + "`)", "",
              " ".join(ab["doc"].split()), "",
              "| toy | seed | observable | prior | no iterations | resampled | absorbed |",
              "|---|---|---|---|---|---|---|"]
        for r in ab["cases"]:
            for j, name in enumerate(r["observables"]):
                md.append(f"| {r['toy']} | {r['seed']} | {name} | {r['prior'][j]} | "
                          f"{r['no_iterations'][j]} | {r['resampled'][j]} | "
                          f"{r['absorbed'][j]} |")
        md += ["", "Seconds per unfolding (iterations included; resampled / absorbed): " +
               ", ".join(f"{r['toy']} {r['seed']}: {r['resampled_seconds']} / "
                         f"{r['absorbed_seconds']}" for r in ab["cases"]) + ".", ""]
        (out / "unfold_absorb.json").write_text(json.dumps(ab, indent=1) + "\n")
        (out / "unfold_absorb.md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: {m: v["wasserstein_over_prior"] for m, v in s["methods"].items()}
                      for k, s in results["toys"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
