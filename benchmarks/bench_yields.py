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
* ``normfactor``: the surrogates inject a signal with a normalisation factor only; on the
  analyses' own patches this compares pyhf's observed and median expected CLs limits of the
  full patch (signal systematics and all) with those of the normfactor-only injection.
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
def _limits_pair(spec, ops, remove):
    import jsonpatch

    from surrogate_stats.likelihood._exact import pyhf_upper_limit
    from surrogate_stats.likelihood._histfactory import build_model, inject_signal, set_poi_bounds
    from surrogate_stats.likelihood._yields_validate import signal_from_patch

    model = build_model(spec, remove_channels=remove, check=False)
    s = signal_from_patch(ops, spec, model.bins)
    # the same POI bounds for both, from 0 (pyhf's qtilde) to above every limit
    full = pyhf_upper_limit(set_poi_bounds(jsonpatch.apply_patch(spec, ops), (0.0, 100.0)))
    norm = pyhf_upper_limit(set_poi_bounds(inject_signal(spec, s, remove=remove), (0.0, 100.0)))
    return {"full": [full[0], full[1][2]], "normfactor": [norm[0], norm[1][2]]}


def bench_normfactor(name, info, n_max):
    from surrogate_stats.likelihood._yields_pipeline import analysis_signals, load_background

    spec = load_background(info["bkg"])
    names, ops, remove = analysis_signals(spec, patchset=info["patchset"],
                                          patches=info["patches"])
    idx = np.linspace(0, len(ops) - 1, min(n_max, len(ops))).round().astype(int)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1), mp_context=ctx) as pool:
        futs = [(names[i], pool.submit(_limits_pair, spec, ops[i], remove)) for i in idx]
        for n, f in futs:
            r = f.result()
            r["name"] = n
            r["observed_rel"] = r["normfactor"][0] / r["full"][0] - 1
            r["median_rel"] = r["normfactor"][1] / r["full"][1] - 1
            rows.append(r)
            print(f"normfactor {name} {n}: observed {100 * r['observed_rel']:+.2f}%, median "
                  f"{100 * r['median_rel']:+.2f}% ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
    return {"analysis": name, "points": rows,
            "max_abs_observed_rel": max(abs(r["observed_rel"]) for r in rows),
            "max_abs_median_rel": max(abs(r["median_rel"]) for r in rows)}


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


def bench_surrogate(name, info, out_dir: Path, quiet):
    from surrogate_stats.likelihood._yields_pipeline import load_background, train_yields

    patches = info["patches"]
    if patches == "injected":
        folder = out_dir / f"{name}_patches"
        folder.mkdir(parents=True, exist_ok=True)
        patches = injected_patches(load_background(info["bkg"]), folder)
    t = time.perf_counter()
    _, meta = train_yields(info["bkg"], out_dir / name, patchset=info["patchset"],
                           patches=patches, progress=not quiet,
                           log=(lambda *a: None) if quiet else print)
    total = time.perf_counter() - t
    v = meta["validation"]
    return {"analysis": name, "seen_in_development": info["seen"],
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
        lines += ["## Normalisation-factor-only injection vs the full signal patch (pyhf CLs)\n",
                  "| analysis | points | max abs rel. change, observed UL | median expected UL |",
                  "|---|---|---|---|"]
        for r in merged["normfactor"]:
            lines.append(f"| {r['analysis']} | {len(r['points'])} | "
                         f"{100 * r['max_abs_observed_rel']:.1f}% | "
                         f"{100 * r['max_abs_median_rel']:.1f}% |")
        lines.append("")
    if merged.get("surrogate"):
        lines += ["## Surrogates with default settings, on the analyses' own signal points\n",
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
    ap.add_argument("--normfactor-points", type=int, default=6,
                    help="signal patches per analysis for the normfactor part")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    wanted = args.analyses.split(",")
    results = {"machine": f"{platform.processor() or platform.machine()}, "
                          f"{os.cpu_count()} cores, {platform.python_version()}"}
    if "engine" in parts:
        results["engine"] = [bench_engine("3L-eRJR", 16), bench_engine("sbottom-RegionA", 16)]
    ana = _analyses()
    if "normfactor" in parts:
        results["normfactor"] = [bench_normfactor(n, ana[n], args.normfactor_points)
                                 for n in ("3L", "sbottomA")
                                 if n in wanted and ana[n]["bkg"].exists()]
    if "surrogate" in parts:
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_yields_"))
        old = {}
        path = RESULTS / "yields.json"
        if path.exists():
            old = {r["analysis"]: r for r in json.loads(path.read_text()).get("surrogate", [])}
        for n in wanted:
            if ana[n]["bkg"].exists():
                old[n] = bench_surrogate(n, ana[n], out, args.quiet)
                write({**results, "surrogate": list(old.values())})
        results["surrogate"] = list(old.values())
    write(results)


if __name__ == "__main__":
    main()
