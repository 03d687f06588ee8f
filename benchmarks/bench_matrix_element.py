"""Benchmark of the matrix-element surrogates and two-stage unweighting, every rung in one run.

For each process: train a surrogate on exact |M|^2 at RAMBO points inside the default cuts,
measure its accuracy on fresh points, run two-stage unweighting with it, and compare sigma and
unweighted observables with exact one-stage unweighting (gg -> gggg: with the exact weights of
an independent weighted sample, one-stage unweighting at 10 ms per point being too slow here).
Times per point are measured on one thread for both (onnxruntime and XLA), at the unweighting
batch size, compilation excluded.

    PYTHONPATH=src python benchmarks/bench_matrix_element.py [--quick]

writes benchmarks/results/matrix_element.{json,md} and docs/img/me_*.png.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from surrogate_stats import load_surrogate  # noqa: E402
from surrogate_stats.matrix_element import (  # noqa: E402
    SurrogateConfig,
    TwoStageUnweighter,
    UnweightingConfig,
    get_process,
    observables,
    rambo,
    train,
    unweight_exact,
    weighted_chi2,
)
from surrogate_stats.matrix_element._surrogate import cross_section_weight  # noqa: E402
from surrogate_stats.train import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"

# name, sqrt_s, n_train, hidden, steps, n_events, n_calibration, one-stage reference?
RUNGS = [
    ("ee_mumu", 91.0, 5000, (32, 32), 4000, 3000, 20000, True),
    ("ee_qqg", 91.0, 20000, (64, 64, 64), 12000, 3000, 20000, True),
    ("gg_gg", 1000.0, 5000, (32, 32), 4000, 3000, 20000, True),
    ("gg_ggg", 1000.0, 20000, (64, 64, 64), 12000, 3000, 20000, True),
    ("gg_gggg", 1000.0, 12000, (128, 128, 128), 12000, 1000, 3000, False),
]


def run_rung(name, sqrt_s, n_train, hidden, steps, n_events, n_cal, one_stage, *, quick,
             workdir, log):
    if quick:
        n_train, steps, n_events, n_cal = n_train // 5, steps // 6, n_events // 5, n_cal // 4
    proc = get_process(name, sqrt_s)
    cfg = SurrogateConfig(hidden=hidden, train=TrainConfig(
        learning_rate=3e-3, steps=steps, chunk=500, patience=6, polish_steps=0,
        batch_size=512))
    t0 = time.perf_counter()
    sur, meta = train(proc, workdir / name, seed=0, n_train=n_train, n_test=min(3000, n_train),
                      config=cfg, progress=False, log=log)
    sur = load_surrogate(workdir / name, threads=1)
    acc = meta["accuracy"]
    log(f"{name}: median |rel err| {acc['median_abs_rel_err']:.4g} "
        f"({time.perf_counter() - t0:.0f} s)")
    ucfg = UnweightingConfig(n_calibration=n_cal, batch_size=1024)
    uw = TwoStageUnweighter(proc, sur, config=ucfg)
    cal = uw.calibrate(11)
    times = uw.measure_times()
    two = uw.run(12, n_events, progress=False, times=times)
    st = two.stats
    log(f"{name}: two-stage sigma {two.sigma:.5g} +- {two.sigma_err:.3g} pb, "
        f"eps_full {cal['eps_full']:.3g} eps1 {st['eps_1']:.3g} eps2 {st['eps_2']:.3g} "
        f"f_eff {st['f_eff']:.3g}")
    t1 = time.perf_counter()
    if one_stage:
        ref = unweight_exact(13, proc, n_events, calibration_seed=14, config=ucfg)
        ref_p, ref_w, ref_sigma, ref_err = ref.momenta, ref.weights, ref.sigma, ref.sigma_err
        ref_kind = "exact one-stage unweighting"
    else:
        n_ref = 4 * n_cal if not quick else n_cal
        p = rambo(13, n_ref, proc.n_out, proc.sqrt_s)
        inside = proc.default_cuts.passes(p)
        w = np.zeros(n_ref)
        w[inside] = proc.matrix_element(p[inside]) * cross_section_weight(proc)
        ref_p, ref_w = p[inside], w[inside]
        ref_sigma, ref_err = float(w.mean()), float(w.std() / math.sqrt(n_ref))
        ref_kind = f"exact weighted sample of {n_ref} RAMBO points"
    ref_seconds = time.perf_counter() - t1
    oa, ob = observables(two.momenta), observables(ref_p)
    chi2 = {k: weighted_chi2(oa[k], two.weights, ob[k], ref_w, bins=10) for k in oa}
    pull = (two.sigma - ref_sigma) / math.hypot(two.sigma_err, ref_err)
    log(f"{name}: reference sigma {ref_sigma:.5g} +- {ref_err:.3g} (pull {pull:+.2f}); "
        f"chi2 p {[round(c['p_value'], 3) for c in chi2.values()]}")
    from surrogate_stats.artifact import read_artifact

    val = read_artifact(workdir / name)[2]["validation"]  # the recorded test points
    ln_ratio = np.log(val["surrogate_me2"] / val["exact_me2"])
    return {
        "process": name, "sqrt_s": sqrt_s, "cuts": proc.default_cuts.to_dict(),
        "factor": meta["training"]["factor"], "hidden": list(hidden),
        "n_train": n_train, "train_seconds": meta["training"]["train_seconds"],
        "label_seconds": meta["training"]["label_seconds"],
        "accuracy": acc, "calibration": cal,
        "two_stage": {"sigma": two.sigma, "sigma_err": two.sigma_err, **st},
        "reference": {"kind": ref_kind, "sigma": ref_sigma, "sigma_err": ref_err,
                      "seconds": ref_seconds},
        "sigma_pull": pull, "chi2": chi2,
        "_plot": {"ln_ratio": ln_ratio, "two": oa, "two_w": two.weights, "ref": ob,
                  "ref_w": ref_w},
    }


def plots(results):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3))
    for ax, r in zip(np.atleast_1d(axes), results):
        lr = r["_plot"]["ln_ratio"]
        lim = max(np.quantile(np.abs(lr), 0.995), 1e-4)
        ax.hist(lr, bins=60, range=(-lim, lim), histtype="step")
        ax.set_title(f"{r['process']}: median |rel| "
                     f"{r['accuracy']['median_abs_rel_err']:.2%}", fontsize=8)
        ax.set_xlabel("ln(surrogate / exact)")
    fig.tight_layout()
    fig.savefig(IMG / "me_ln_ratio.png", dpi=110)
    plt.close(fig)
    for r in results:
        if r["process"] not in ("ee_qqg", "gg_ggg", "gg_gggg"):
            continue
        keys = list(r["_plot"]["two"])
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3))
        for ax, k in zip(axes, keys):
            a, b = r["_plot"]["two"][k], r["_plot"]["ref"][k]
            edges = np.quantile(np.concatenate([a, b]), np.linspace(0, 1, 16))
            ax.hist(b, edges, weights=r["_plot"]["ref_w"], density=True, histtype="step",
                    label="exact")
            ax.hist(a, edges, weights=r["_plot"]["two_w"], density=True, histtype="step",
                    label="two-stage")
            ax.set_xlabel(k, fontsize=8)
            ax.set_title(f"p = {r['chi2'][k]['p_value']:.2f}", fontsize=8)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{r['process']}: unweighted events, surrogate two-stage vs exact",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(IMG / f"me_observables_{r['process']}.png", dpi=110)
        plt.close(fig)


def markdown(results, header):
    lines = [f"# Matrix-element surrogates: benchmark ({header['date']})", "",
             f"Command: `{header['command']}`; {header['machine']}. Timings were measured on "
             "a shared 2-core machine (other jobs running); t_exact and t_surrogate are "
             "seconds per point on one thread (onnxruntime and XLA) at the batch sizes the "
             "unweighting uses (256 stage-1 survivors for the exact |M|^2, 1024 RAMBO points "
             "for the surrogate), compilation excluded.", "",
             "| process | median \\|rel err\\| | top-1% median | eps_full | eps_1 | eps_2 | "
             "t_exact (s) | t_surr (s) | f_eff | sigma two-stage (pb) | sigma exact (pb) | "
             "pull | min chi2 p |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        a, t = r["accuracy"], r["two_stage"]
        lines.append(
            f"| {r['process']} | {a['median_abs_rel_err']:.2e} | "
            f"{a['top_median_abs_rel_err']:.2e} | {t['eps_full']:.3g} | {t['eps_1']:.3g} | "
            f"{t['eps_2']:.3g} | {t['t_exact']:.2e} | {t['t_surrogate']:.2e} | "
            f"{t['f_eff']:.3g} | {t['sigma']:.5g} ± {t['sigma_err']:.2g} | "
            f"{r['reference']['sigma']:.5g} ± {r['reference']['sigma_err']:.2g} | "
            f"{r['sigma_pull']:+.2f} | {min(c['p_value'] for c in r['chi2'].values()):.3f} |")
    lines += ["", "References: " + "; ".join(f"{r['process']}: {r['reference']['kind']}"
                                             for r in results), ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--only", nargs="*", help="process names to run")
    args = ap.parse_args(argv)
    workdir = ROOT / "benchmarks" / ".me_artifacts"
    workdir.mkdir(exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    t0 = time.perf_counter()
    for rung in RUNGS:
        if args.only and rung[0] not in args.only:
            continue
        results.append(run_rung(*rung, quick=args.quick, workdir=workdir, log=log))
        write(results, args, t0)  # after every rung, so a late failure keeps the others
    write(results, args, t0, with_plots=True)


def write(results, args, t0, with_plots=False):
    header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "PYTHONPATH=src python benchmarks/bench_matrix_element.py"
                         + (" --quick" if args.quick else ""),
              "machine": f"{platform.machine()} {os.cpu_count()} cores, "
                         f"python {platform.python_version()}",
              "total_seconds": time.perf_counter() - t0}
    if with_plots:
        plots(results)
    clean = [{k: v for k, v in r.items() if k != "_plot"} for r in results]
    RES.mkdir(parents=True, exist_ok=True)
    (RES / "matrix_element.json").write_text(json.dumps({"header": header, "results": clean},
                                                        indent=1))
    (RES / "matrix_element.md").write_text(markdown(clean, header))
    if not with_plots:
        return
    print(json.dumps({r["process"]: {"median_abs_rel_err": r["accuracy"]["median_abs_rel_err"],
                                     "f_eff": r["two_stage"]["f_eff"],
                                     "sigma_pull": r["sigma_pull"]} for r in clean}))


if __name__ == "__main__":
    main()
