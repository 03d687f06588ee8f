"""Yield-parametrised likelihoods against pyhf, in one run; writes results/yields.{json,md}.

    python benchmarks/bench_yields.py                       # every part, every analysis
    python benchmarks/bench_yields.py --parts engine,normfactor
    python benchmarks/bench_yields.py --parts surrogate --analyses 3L,sbottomC

Parts:

* ``engine``: the vectorised profiled-fit engine against a loop of pyhf ``fixed_poi_fit``
  on the same models (the bundled 3L eRJR and sbottom region A workspaces, signals of their own
  patches injected with a normalisation factor, mu from 0.25 to 2): fits per second of the
  engine (one compiled batch) and of pyhf (numpy backend with its default SLSQP settings, and
  with the tight tolerance that converges on these workspaces, JAX backend for exact gradients),
  the ratio, and the largest |Delta(-2 ln L)| between the engine and tight pyhf.
* ``normfactor``: the surrogates inject a signal with a normalisation factor only; on every
  one of the analyses' own patches this compares the observed and median expected CLs limits
  of the full patch (signal systematics and all) with those of the normfactor-only injection,
  both from the engine's ``workspace_upper_limit`` (pyhf's asymptotic qtilde limits, seconds
  instead of minutes each); pyhf's own ``hypotest`` at the engine's limits checks the first
  ``--pyhf-checks`` patches of each analysis and the one with the largest change (CLs = 0.05
  there when they agree); ``--parts normfactor-check`` reruns only these checks on the
  results already in ``results/yields.json``.
* ``surrogate``: ``train-yields`` with default settings on each analysis (the 3L patchset,
  the sbottom region A and C patches, the displaced-leptons background-only workspace with
  injected signals), recording the total time and the validation on the analysis's own
  signal points (max |Delta(-2 ln lambda)| where the exact value is <= 9, limits).

The workspaces come from ``../shared/data/workspaces`` (HEPData, CC0) where present; the
engine part runs on the copies bundled in ``data/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "workspaces"
RESULTS = ROOT / "benchmarks" / "results"


def _analyses():
    sb = SHARED / "ATLAS-SUSY-2018-31_sbottom-multib_1908.03122"
    return {
        "3L": dict(bkg=SHARED / "ATLAS-SUSY-2018-06_3L-eRJR_1912.08479" / "BkgOnly.json",
                   patchset=SHARED / "ATLAS-SUSY-2018-06_3L-eRJR_1912.08479" / "patchset.json",
                   patches=[], seen=True),
        "sbottomA": dict(bkg=sb / "RegionA" / "BkgOnly.json", patchset=None,
                         patches=sorted((sb / "RegionA").glob("patch.*.json")), seen=True),
        "sbottomC": dict(bkg=sb / "RegionC" / "BkgOnly.json", patchset=None,
                         patches=sorted((sb / "RegionC").glob("patch.*.json")), seen=False),
        "displaced": dict(bkg=SHARED / "ATLAS-SUSY-2018-14_displaced-leptons_2011.07812_bkgonly"
                          / "Comb_bkgonly.json", patchset=None, patches="injected", seen=False),
    }


# -- engine ---------------------------------------------------------------------------------------
def _pyhf_fits(spec, remove, signals, mus, tight):
    """pyhf fixed_poi_fit for each (signal, mu): (seconds per fit, -2 ln L values)."""
    import pyhf

    from surrogate_stats.likelihood._exact import pyhf_backend
    from surrogate_stats.likelihood._histfactory import inject_signal

    backend = "jax" if tight else "numpy"
    out, spent = [], 0.0
    with pyhf_backend(backend, tolerance=1e-10 if tight else None):
        for s, mu in zip(signals, mus):
            ws = pyhf.Workspace(inject_signal(spec, s, remove=remove))
            model = ws.model()
            data = ws.data(model)
            bounds = model.config.suggested_bounds()
            bounds[model.config.poi_index] = (0.0, 20.0)
            pyhf.infer.mle.fixed_poi_fit(float(mu), data, model, par_bounds=bounds)  # warm-up
            t = time.perf_counter()
            _, twice = pyhf.infer.mle.fixed_poi_fit(float(mu), data, model, par_bounds=bounds,
                                                    return_fitted_val=True)
            spent += time.perf_counter() - t
            out.append(float(twice))
    return spent / len(out), out


def bench_engine(name, n_pyhf, n_engine=512):
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_pipeline import analysis_signals, load_background
    from surrogate_stats.likelihood._yields_validate import signal_from_patch

    folder = ROOT / "data" / "workspaces" / name
    spec = load_background(folder / "BkgOnly.json")
    ps = folder / "patchset.json"
    names, ops, remove = analysis_signals(
        spec, patchset=ps if ps.exists() else None,
        patches=sorted(folder.glob("patch.*.json")))
    model = build_model(spec, remove_channels=remove)
    sig = np.stack([signal_from_patch(o, spec, model.bins) for o in ops])
    rng = np.random.default_rng(0)
    pick = rng.integers(len(sig), size=n_engine)
    mus = rng.uniform(0.25, 2.0, size=n_engine)
    signals = sig[pick]
    fitter = VectorFitter(model, chunk=256)
    t = time.perf_counter()
    fitter.fit(signals[:256], model.observed, model.aux_observed, mu=mus[:256])
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    res = fitter.fit(signals, model.observed, model.aux_observed, mu=mus)
    engine_s = (time.perf_counter() - t) / n_engine
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # JAX-backend pyhf: own process
        tight = pool.submit(_pyhf_fits, spec, remove, signals[:n_pyhf], mus[:n_pyhf], True)
        default_s, default = _pyhf_fits(spec, remove, signals[:n_pyhf], mus[:n_pyhf], False)
        tight_s, tight = tight.result()
    eng = 2 * res.nll[:n_pyhf]
    return {
        "analysis": name, "bins": model.n_bins, "parameters": model.n_pars,
        "n_engine_fits": n_engine, "n_pyhf_fits": n_pyhf,
        "engine_converged": float(res.converged.mean()),
        "engine_ms_per_fit": 1e3 * engine_s, "engine_compile_s": compile_s,
        "pyhf_default_ms_per_fit": 1e3 * default_s, "pyhf_tight_ms_per_fit": 1e3 * tight_s,
        "speedup_vs_pyhf_default": default_s / engine_s,
        "speedup_vs_pyhf_tight": tight_s / engine_s,
        "max_abs_d_twice_nll_vs_tight": float(np.max(np.abs(eng - np.array(tight)))),
        "max_abs_d_twice_nll_vs_default": float(np.max(np.abs(eng - np.array(default)))),
        "engine_minus_default_min": float(np.min(eng - np.array(default))),
    }


# -- normfactor-only injection ------------------------------------------------------------------
POI_BOUNDS = (0.0, 100.0)  # the same POI bounds for both, from 0 (qtilde) to above every limit


def _pair_specs(spec, ops, remove):
    """The full patch and its normfactor-only injection, as workspaces."""
    import jsonpatch

    from surrogate_stats.likelihood._histfactory import build_model, inject_signal
    from surrogate_stats.likelihood._yields_validate import signal_from_patch

    model = build_model(spec, remove_channels=remove, check=False)
    s = signal_from_patch(ops, spec, model.bins)
    return {"full": jsonpatch.apply_patch(spec, ops),
            "normfactor": inject_signal(spec, s, remove=remove)}


def _limits_pair(spec, ops, remove):
    """Engine CLs limits of the full patch and of its normfactor-only injection."""
    from surrogate_stats.likelihood._workspace_limits import workspace_upper_limit

    out = {}
    for kind, ws in _pair_specs(spec, ops, remove).items():
        t = time.perf_counter()
        r = workspace_upper_limit(ws, poi_bounds=POI_BOUNDS)
        out[kind] = [r.observed, float(r.expected[2])]
        out[f"{kind}_converged"] = r.converged
        out[f"{kind}_seconds"] = time.perf_counter() - t
    return out


def _pyhf_check(spec, limits):
    """pyhf's hypotest (JAX backend, own process) at the engine's observed and median limits."""
    from surrogate_stats.likelihood._exact import pyhf_hypotests
    from surrogate_stats.likelihood._histfactory import set_poi_bounds

    t = time.perf_counter()
    (obs, _), (_, exp) = pyhf_hypotests(set_poi_bounds(spec, POI_BOUNDS), limits)
    return {"cls_observed_at_engine_limit": obs, "cls_median_at_engine_median": exp[2],
            "seconds": time.perf_counter() - t}


def _signals(info):
    from surrogate_stats.likelihood._yields_pipeline import analysis_signals, load_background

    spec = load_background(info["bkg"])
    return (spec, *analysis_signals(spec, patchset=info["patchset"], patches=info["patches"]))


def pyhf_checks(name, info, rows, which):
    """pyhf's CLs at the engine's limits (full and normfactor-only) for the named patches."""
    spec, names, ops, remove = _signals(info)
    by_name = {r["name"]: r for r in rows}
    out = []
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # JAX-backend pyhf: own process
        futs = []
        for n in which:
            specs = _pair_specs(spec, ops[names.index(n)], remove)
            for kind, ws in specs.items():
                futs.append((n, kind, pool.submit(_pyhf_check, ws, by_name[n][kind])))
        for n, kind, f in futs:
            c = f.result()
            out.append({"name": n, "kind": kind, **c})
            print(f"pyhf check {name} {n} {kind}: CLs {c['cls_observed_at_engine_limit']:.5f}"
                  f" (obs), {c['cls_median_at_engine_median']:.5f} (median)", file=sys.stderr,
                  flush=True)
    return out


def _check_targets(rows, n_check):
    """The first n_check patches and the one whose observed limit changes most."""
    finite = [r for r in rows if np.isfinite(r["observed_rel"])]
    worst = max(finite, key=lambda r: abs(r["observed_rel"]))["name"]
    first = [r["name"] for r in rows[:n_check]]
    return first + ([worst] if worst not in first else [])


def bench_normfactor(name, info, n_max, n_check):
    """Every (or n_max evenly spaced) signal patch: limits full vs normfactor-only (engine);
    pyhf's CLs at the engine's limits for the first n_check of them and the worst one."""
    spec, names, ops, remove = _signals(info)
    n = len(ops) if n_max <= 0 else min(n_max, len(ops))
    idx = np.linspace(0, len(ops) - 1, n).round().astype(int)
    rows = []
    t0 = time.perf_counter()
    for i in idx:
        r = _limits_pair(spec, ops[i], remove)
        r["name"] = names[i]
        r["observed_rel"] = r["normfactor"][0] / r["full"][0] - 1
        r["median_rel"] = r["normfactor"][1] / r["full"][1] - 1
        rows.append(r)
        print(f"normfactor {name} {names[i]}: observed {100 * r['observed_rel']:+.2f}%, "
              f"median {100 * r['median_rel']:+.2f}% ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    return {"analysis": name, "points": rows,
            "pyhf_check": pyhf_checks(name, info, rows, _check_targets(rows, n_check)),
            "n_patches": len(ops), "seconds": seconds,
            "all_converged": all(r["full_converged"] and r["normfactor_converged"]
                                 for r in rows),
            # a limit above the POI bound 100 is NaN (the point has no sensitivity): left out
            "n_limits_above_bound": int(sum(not np.isfinite(r[k]) for r in rows
                                            for k in ("observed_rel", "median_rel"))),
            **{f"{stat}_abs_{k}": float(getattr(np, f"nan{stat}")([abs(r[k]) for r in rows]))
               for stat in ("max", "median") for k in ("observed_rel", "median_rel")},
            "seconds_per_limit": float(np.mean([r[k] for r in rows
                                                for k in ("full_seconds",
                                                          "normfactor_seconds")]))}


# -- surrogates ---------------------------------------------------------------------------------
def injected_patches(spec, folder: Path, n=8, seed=0):
    """Signal patches for a background-only workspace: random shapes near the sensitivity.

    Each adds a sample with a normfactor to every channel (jsonpatch files in ``folder``),
    shapes drawn like the training signals but with a different seed and scaled so that the
    expected limit is around mu ~ 0.3-3.
    """
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter, signal_information
    from surrogate_stats.likelihood._yields_labels import reference_datasets, sample_shapes

    model = build_model(spec)
    datasets, _, thetas = reference_datasets(model, VectorFitter(model, chunk=8))
    info = signal_information(model, thetas["observed_asimov"], *datasets["observed_asimov"])
    ch_names = [c["name"] for c in spec["channels"]]
    of_bin = np.array([ch_names.index(b.rsplit("-", 1)[0]) for b in model.bins])
    rng = np.random.default_rng(1000 + seed)
    shapes = sample_shapes(rng, n, of_bin, info) * rng.uniform(0.7, 3.0, size=(n, 1))
    paths = []
    for k, s in enumerate(shapes):
        ops, start = [], 0
        for ci, ch in enumerate(spec["channels"]):
            nb = len(ch["samples"][0]["data"])
            ops.append({"op": "add", "path": f"/channels/{ci}/samples/0",
                        "value": {"name": "signal", "data": s[start:start + nb].tolist(),
                                  "modifiers": [{"name": "mu_SIG", "type": "normfactor",
                                                 "data": None}]}})
            start += nb
        ops.append({"op": "replace", "path": "/measurements/0/config/poi", "value": "mu_SIG"})
        p = folder / f"patch.injected_{k}.json"
        p.write_text(json.dumps(ops))
        paths.append(p)
    return paths


def bench_surrogate(name, info, out_dir: Path, quiet, ensemble=None):
    from surrogate_stats.likelihood._yields_pipeline import load_background, train_yields
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig

    patches = info["patches"]
    if patches == "injected":
        folder = out_dir / f"{name}_patches"
        folder.mkdir(parents=True, exist_ok=True)
        patches = injected_patches(load_background(info["bkg"]), folder)
    config = YieldSurrogateConfig() if ensemble is None else YieldSurrogateConfig(
        ensemble=ensemble)
    t = time.perf_counter()
    _, meta = train_yields(info["bkg"], out_dir / name, patchset=info["patchset"],
                           patches=patches, progress=not quiet, surrogate=config,
                           log=(lambda *a: None) if quiet else print)
    total = time.perf_counter() - t
    v = meta["validation"]
    return {"analysis": name, "seen_in_development": info["seen"],
            "ensemble": config.ensemble, "default_settings": ensemble is None,
            "seconds_total": total, "seconds_labels": meta["labels"]["seconds"]["total"],
            "seconds_training": meta["training"]["seconds"],
            "n_label_points": meta["labels"]["n_points"],
            "heldout_rms_dnll": {d: v_["rms_dnll"] for d, v_ in
                                 meta["training"]["heldout"].items()},
            "validation": v["summary"],
            "signals": [{k: r.get(k) for k in ("name", "max_abs_dtmu_observed",
                                               "max_abs_dtmu_expected", "ul_observed_rel",
                                               "ul_median_rel")} for r in v["signals"]]}


# -- report ---------------------------------------------------------------------------------------
def _fmt(x, spec=".3g"):
    return "—" if x is None else format(x, spec)


def write(results, stem="yields"):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {**old, **results}
    path.write_text(json.dumps(merged, indent=1) + "\n")
    lines = ["# Yield-parametrised likelihoods vs pyhf\n",
             f"`python benchmarks/bench_yields.py`; {merged.get('machine', '')}\n"]
    if merged.get("engine"):
        lines += ["## Vectorised engine vs a pyhf loop (fixed-mu fits)\n",
                  "| analysis | bins | pars | engine ms/fit | pyhf default ms/fit "
                  "| pyhf tight ms/fit | speed-up (default) | speed-up (tight) "
                  "| max abs d(-2lnL) vs tight | vs default |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in merged["engine"]:
            lines.append(
                f"| {r['analysis']} | {r['bins']} | {r['parameters']} | "
                f"{r['engine_ms_per_fit']:.2f} | {r['pyhf_default_ms_per_fit']:.1f} | "
                f"{r['pyhf_tight_ms_per_fit']:.0f} | {r['speedup_vs_pyhf_default']:.0f}x | "
                f"{r['speedup_vs_pyhf_tight']:.0f}x | {r['max_abs_d_twice_nll_vs_tight']:.1e} | "
                f"{r['max_abs_d_twice_nll_vs_default']:.2g} |")
        lines.append("")
    if merged.get("normfactor"):
        lines += ["## Normalisation-factor-only injection vs the full signal patch\n",
                  "Asymptotic qtilde CLs limits (POI bounds [0, 100]) from the engine's "
                  "`workspace_upper_limit` on both workspaces; normfactor / full - 1.\n",
                  "| analysis | patches | all fits converged | s per limit "
                  "| observed UL: max abs (median abs) "
                  "| median expected UL: max abs (median abs) |",
                  "|---|---|---|---|---|---|"]
        for r in merged["normfactor"]:
            lines.append(f"| {r['analysis']} | {len(r['points'])} of {r['n_patches']} | "
                         f"{'yes' if r['all_converged'] else 'no'} | "
                         f"{r['seconds_per_limit']:.1f} | "
                         f"{100 * r['max_abs_observed_rel']:.2f}% "
                         f"({100 * r['median_abs_observed_rel']:.2f}%) | "
                         f"{100 * r['max_abs_median_rel']:.2f}% "
                         f"({100 * r['median_abs_median_rel']:.2f}%) |")
        lines += ["", "Per patch (observed / median expected limits, full -> normfactor only):\n",
                  "| analysis | patch | observed | median expected |", "|---|---|---|---|"]
        for r in merged["normfactor"]:
            for q in r["points"]:
                lines.append(f"| {r['analysis']} | {q['name']} | {q['full'][0]:.4g} -> "
                             f"{q['normfactor'][0]:.4g} ({100 * q['observed_rel']:+.2f}%) | "
                             f"{q['full'][1]:.4g} -> {q['normfactor'][1]:.4g} "
                             f"({100 * q['median_rel']:+.2f}%) |")
        checks = [(r["analysis"], c) for r in merged["normfactor"] for c in r["pyhf_check"]]
        if checks:
            lines += ["", "pyhf's own `hypotest` (JAX backend) at the engine's limits; "
                      "exact agreement gives CLs = 0.05:\n",
                      "| analysis | patch | workspace | CLs obs at observed UL "
                      "| expected CLs at median UL |", "|---|---|---|---|---|"]
            for a, c in checks:
                lines.append(f"| {a} | {c['name']} | {c['kind']} | "
                             f"{c['cls_observed_at_engine_limit']:.5f} | "
                             f"{c['cls_median_at_engine_median']:.5f} |")
        lines.append("")
    if merged.get("surrogate"):
        ens = sorted({r.get("ensemble", 1) for r in merged["surrogate"]})
        title = ("default settings" if all(r.get("default_settings")
                                            for r in merged["surrogate"]) else
                 f"default settings except an ensemble of {', '.join(map(str, ens))} networks")
        lines += [f"## Surrogates with {title}, on the analyses' own signal points\n",
                  "| analysis | seen in development | signals | total s (labels, training) "
                  "| max abs d tmu obs (exact<=9) | exp | max UL obs rel | max UL median exp rel |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in merged["surrogate"]:
            v = r["validation"]
            lines.append(
                f"| {r['analysis']} | {'yes' if r['seen_in_development'] else 'no'} | "
                f"{v['n_signals']} | {r['seconds_total']:.0f} ({r['seconds_labels']:.0f}, "
                f"{r['seconds_training']:.0f}) | {_fmt(v['max_abs_dtmu_observed'])} | "
                f"{_fmt(v['max_abs_dtmu_expected'])} | "
                f"{_fmt(v['max_ul_observed_rel'] and 100 * v['max_ul_observed_rel'], '.2f')}% | "
                f"{_fmt(v['max_ul_median_rel'] and 100 * v['max_ul_median_rel'], '.2f')}% |")
        lines.append("")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default="engine,normfactor,surrogate")
    ap.add_argument("--analyses", default="3L,sbottomA,sbottomC,displaced")
    ap.add_argument("--out", default=None, help="artifact folder (default: a temporary one)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--normfactor-points", type=int, default=0,
                    help="signal patches per analysis for the normfactor part (0: all)")
    ap.add_argument("--pyhf-checks", type=int, default=2,
                    help="patches per analysis whose engine limits pyhf's hypotest checks")
    ap.add_argument("--ensemble", type=int, default=None,
                    help="surrogate part: networks per surrogate instead of the default; "
                         "writes results/yields_ensembleN.{json,md}")
    args = ap.parse_args(argv)
    stem = "yields" if args.ensemble is None else f"yields_ensemble{args.ensemble}"
    parts = args.parts.split(",")
    wanted = args.analyses.split(",")
    results = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores, {platform.python_version()}"}
    if "engine" in parts:
        results["engine"] = [bench_engine("3L-eRJR", 16), bench_engine("sbottom-RegionA", 16)]
    ana = _analyses()
    if "normfactor" in parts:
        results["normfactor"] = [bench_normfactor(n, ana[n], args.normfactor_points,
                                                  args.pyhf_checks)
                                 for n in ("3L", "sbottomA", "sbottomC")
                                 if n in wanted and ana[n]["bkg"].exists()]
    if "normfactor-check" in parts:  # pyhf checks of an earlier normfactor run's results
        old = json.loads((RESULTS / "yields.json").read_text())["normfactor"]
        for r in old:
            if r["analysis"] in wanted:
                r["pyhf_check"] = pyhf_checks(r["analysis"], ana[r["analysis"]], r["points"],
                                              _check_targets(r["points"], args.pyhf_checks))
        results["normfactor"] = old
    if "surrogate" in parts:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_yields_"))
        old = {}
        path = RESULTS / f"{stem}.json"
        if path.exists():
            old = {r["analysis"]: r for r in json.loads(path.read_text()).get("surrogate", [])}
        for n in wanted:
            if ana[n]["bkg"].exists():
                old[n] = bench_surrogate(n, ana[n], out, args.quiet, args.ensemble)
                write({**results, "surrogate": list(old.values())}, stem)
        results["surrogate"] = list(old.values())
    write(results, stem)


if __name__ == "__main__":
    main()
