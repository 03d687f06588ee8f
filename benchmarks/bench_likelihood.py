"""Surrogate nll vs pyhf fixed_poi_fit on the same model, in one run; writes results/.

    python benchmarks/bench_likelihood.py            # all artifacts in onnx_models/

For each published profiled-likelihood artifact it times (median over many calls):
one ``nll`` call (numpy fast path and the ONNX graph through onnxruntime), a batch of 10^6
points, one observed + expected upper limit, and one pyhf ``fixed_poi_fit`` on the same model
(numpy backend: with the tight tolerance the labels use, and with pyhf's defaults), and prints
the ratios. Results go to benchmarks/results/likelihood.{json,md}.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def median_time(fn, repeat, inner=1):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def bench(name, inputs):
    import pyhf

    from surrogate_stats import load_surrogate
    from surrogate_stats.likelihood import load_signal_workspace
    from surrogate_stats.likelihood._exact import numpy_backend, pyhf_upper_limit

    s = load_surrogate(ROOT / "onnx_models" / name)
    lo, hi = s.domain
    mu = 0.37 * hi
    s.nll(mu)
    single = median_time(lambda: s.nll(mu), 2000, inner=10)
    one = np.array([mu])
    single_onnx = median_time(lambda: s._session.run(["nll"], {"mu": one}), 2000, inner=5)
    batch = np.random.default_rng(1).uniform(lo, hi, 1_000_000)
    s.nll(batch[:1000])
    batch_numpy = median_time(lambda: s.nll(batch), 5)
    batch_onnx = median_time(lambda: s._session.run(["nll"], {"mu": batch}), 5)
    ul = median_time(s.upper_limit, 50)

    from surrogate_stats import infer

    ul_infer = median_time(lambda: infer.upper_limit(s), 50)
    ws = load_signal_workspace(**inputs).with_poi_bounds(*s.metadata["poi"]["bounds_used"])
    # pyhf's upper limit (hypotest + toms748 on the JAX backend, as `validate` does), timed in
    # this run in a worker process so that this one stays on numpy
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        pool.submit(int, 0).result()  # start the worker before the clock
        t = time.perf_counter()
        pool.submit(pyhf_upper_limit, ws.spec).result()
        pyhf_ul = time.perf_counter() - t
    model = ws.model()
    data = ws.observed_data(model)
    with numpy_backend():
        pyhf_tight = median_time(lambda: pyhf.infer.mle.fixed_poi_fit(
            mu, data, model, return_fitted_val=True), 5)
    with numpy_backend(tolerance=None):
        pyhf_default = median_time(lambda: pyhf.infer.mle.fixed_poi_fit(
            mu, data, model, return_fitted_val=True), 5)
    return {
        "npars": model.config.npars,
        "surrogate_nll_single_us": single * 1e6,
        "surrogate_nll_single_onnxruntime_us": single_onnx * 1e6,
        "surrogate_nll_batch_points_per_s": 1e6 / batch_numpy,
        "surrogate_nll_batch_onnxruntime_points_per_s": 1e6 / batch_onnx,
        "surrogate_upper_limit_ms": ul * 1e3,
        "infer_upper_limit_ms": ul_infer * 1e3,
        "pyhf_upper_limit_s": pyhf_ul,
        "ratio_upper_limit": pyhf_ul / ul_infer,
        "pyhf_fixed_poi_fit_s": pyhf_tight,
        "pyhf_fixed_poi_fit_default_settings_s": pyhf_default,
        "ratio_single": pyhf_tight / single,
        "ratio_single_default_settings": pyhf_default / single,
        "ratio_batch_per_point": pyhf_tight * 1e6 / batch_numpy,
    }


def main():
    from make_onnx_models import MODELS

    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}",
               "command": "python benchmarks/bench_likelihood.py", "models": {}}
    for name, inputs in MODELS.items():
        if not (ROOT / "onnx_models" / name / "metadata.json").exists():
            continue
        r = bench(name, inputs)
        results["models"][name] = r
        print(f"{name} ({r['npars']} parameters)")
        print(f"  surrogate nll, one call:  {r['surrogate_nll_single_us']:8.2f} us "
              f"(onnxruntime: {r['surrogate_nll_single_onnxruntime_us']:.1f} us)")
        print(f"  surrogate nll, batch:     {r['surrogate_nll_batch_points_per_s']:8.3g} points/s "
              f"(onnxruntime: {r['surrogate_nll_batch_onnxruntime_points_per_s']:.3g})")
        print(f"  surrogate upper limit:    {r['surrogate_upper_limit_ms']:8.2f} ms "
              f"(infer.upper_limit: {r['infer_upper_limit_ms']:.2f} ms; "
              f"pyhf: {r['pyhf_upper_limit_s']:.1f} s; ratio {r['ratio_upper_limit']:.3g}x)")
        print(f"  pyhf fixed_poi_fit:       {r['pyhf_fixed_poi_fit_s']:8.3f} s "
              f"(pyhf defaults: {r['pyhf_fixed_poi_fit_default_settings_s']:.3f} s)")
        print(f"  ratio, one call:          {r['ratio_single']:8.3g}x "
              f"(vs pyhf defaults: {r['ratio_single_default_settings']:.3g}x)")
        print(f"  ratio, per point batched: {r['ratio_batch_per_point']:8.3g}x")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "likelihood.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Likelihood surrogate vs pyhf", "",
             f"Machine: {results['machine']}. Command: `{results['command']}`.", "",
             "| artifact | pars | nll one call | nll batched | upper limit (obs+exp) | "
             "pyhf fixed_poi_fit | ratio one call | ratio batched |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(
            f"| {name} | {r['npars']} | {r['surrogate_nll_single_us']:.1f} µs | "
            f"{r['surrogate_nll_batch_points_per_s']:.3g} /s | "
            f"{r['infer_upper_limit_ms']:.2f} ms (pyhf {r['pyhf_upper_limit_s']:.1f} s, "
            f"{r['ratio_upper_limit']:.2g}×) | "
            f"{r['pyhf_fixed_poi_fit_s']:.3f} s "
            f"(defaults {r['pyhf_fixed_poi_fit_default_settings_s']:.3f} s) | "
            f"{r['ratio_single']:.3g}× | {r['ratio_batch_per_point']:.3g}× |")
    (out / "likelihood.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
