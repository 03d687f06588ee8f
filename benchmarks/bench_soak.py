"""Soak: 10^7 single-point ``nll`` calls and 10^3 load/unload cycles of a published surrogate.

    python benchmarks/bench_soak.py            # full sizes (a few minutes)
    python benchmarks/bench_soak.py --quick    # 10^5 calls, 50 loads (a smoke test)

Reports the resident set size (RSS, from /proc/self/statm) and the peak RSS (ru_maxrss) before
and after each phase, and the latency drift: the mean latency of the last decile of the calls
(loads) divided by that of the first decile, both measured in this one run, in wall-clock time
and in the process's CPU time (``time.process_time``; on a machine shared with other jobs the
wall-clock latency follows their load, the CPU time much less). The target is memory growth
< 5% and no drift (ratio ~ 1). Results: benchmarks/results/soak.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "onnx_models" / "3L-eRJR_ERJR_500p0_0p0"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def memory() -> dict:
    gc.collect()
    return {"rss_mib": round(rss_mib(), 2), "peak_rss_mib": round(peak_mib(), 2)}


def deciles(block_seconds: list[float], per_block: int) -> dict:
    per_call = np.array(block_seconds) / per_block
    n = max(len(per_call) // 10, 1)
    first, last = float(per_call[:n].mean()), float(per_call[-n:].mean())
    return {"first_decile_us": round(first * 1e6, 3), "last_decile_us": round(last * 1e6, 3),
            "drift_last_over_first": round(last / first, 4),
            "median_us": round(float(np.median(per_call)) * 1e6, 3)}


def soak_calls(n_calls: int, progress: bool) -> dict:
    from tqdm import tqdm

    from surrogate_stats import load_surrogate

    s = load_surrogate(ARTIFACT)
    lo, hi = s.domain
    mus = [float(m) for m in np.random.default_rng(0).uniform(lo, hi, 1000)]
    for m in mus * 10:  # warm-up
        s.nll(m)
    before = memory()
    n_blocks, per_block = 100, n_calls // 100
    reps, blocks, cpu, trace = per_block // len(mus), [], [], [before["rss_mib"]]
    check = 0.0
    for _ in tqdm(range(n_blocks), desc="nll calls", disable=not progress):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            for m in mus:
                check += s.nll(m)
        blocks.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if len(blocks) % (n_blocks // 10) == 0:
            trace.append(round(rss_mib(), 2))
    after = memory()
    return {"calls": n_blocks * reps * len(mus), "seconds": round(sum(blocks), 2),
            "rss_trace_mib": trace,
            "memory_before": before, "memory_after": after,
            "rss_growth": round(after["rss_mib"] / before["rss_mib"] - 1, 4),
            "latency": deciles(blocks, reps * len(mus)),
            "cpu_latency": deciles(cpu, reps * len(mus)), "checksum": check}


def soak_loads(n_loads: int, progress: bool) -> dict:
    from tqdm import tqdm

    from surrogate_stats import load_surrogate

    for _ in range(10):  # warm-up: first imports, allocator pools
        load_surrogate(ARTIFACT).nll(1.0)
    before = memory()
    times, cpu, trace = [], [], [before["rss_mib"]]
    for _ in tqdm(range(n_loads), desc="load/unload", disable=not progress):
        t, c = time.perf_counter(), time.process_time()
        s = load_surrogate(ARTIFACT)
        s.nll(1.0)
        del s
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        if len(times) % (n_loads // 10) == 0:
            trace.append(round(rss_mib(), 2))
    after = memory()
    return {"loads": n_loads, "seconds": round(sum(times), 2), "rss_trace_mib": trace,
            "memory_before": before, "memory_after": after,
            "rss_growth": round(after["rss_mib"] / before["rss_mib"] - 1, 4),
            "latency": _ms(deciles(times, 1)), "cpu_latency": _ms(deciles(cpu, 1))}


def _ms(d: dict) -> dict:
    return {k.replace("_us", "_ms") if k.endswith("_us") else k:
            round(v / 1000, 3) if k.endswith("_us") else v for k, v in d.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args()
    n_calls, n_loads = (100_000, 50) if args.quick else (10_000_000, 1000)
    start = memory()
    calls = soak_calls(n_calls, not args.quiet)
    loads = soak_loads(n_loads, not args.quiet)
    import onnxruntime

    import surrogate_stats
    result = {
        "artifact": ARTIFACT.name, "quick": args.quick, "process_start": start,
        "nll_calls": calls, "load_cycles": loads, "target_memory_growth": 0.05,
        "machine": {"python": sys.version.split()[0], "numpy": np.__version__,
                    "onnxruntime": onnxruntime.__version__,
                    "surrogate_stats": surrogate_stats.__version__,
                    "platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
    }
    print(json.dumps(result, indent=1))
    if args.quick:
        return
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    c, L = calls, loads
    md = [
        "# Soak benchmark", "",
        f"`python benchmarks/bench_soak.py` on `onnx_models/{ARTIFACT.name}`; "
        f"{result['machine']['cpus']} CPUs shared with other jobs (load average "
        f"{result['machine']['load_average'][0]:.1f} at the end), so absolute times are "
        "noisy; ratios within the run are what matter.", "",
        "| phase | count | RSS before → after (MiB) | growth | peak RSS before → after (MiB) "
        "| wall latency first → last decile | drift (wall) | drift (CPU time) |",
        "|---|---|---|---|---|---|---|---|",
        f"| single-point `nll` (numpy fast path) | {c['calls']:,} | "
        f"{c['memory_before']['rss_mib']} → {c['memory_after']['rss_mib']} | "
        f"{100 * c['rss_growth']:+.2f}% | {c['memory_before']['peak_rss_mib']} → "
        f"{c['memory_after']['peak_rss_mib']} | {c['latency']['first_decile_us']} µs → "
        f"{c['latency']['last_decile_us']} µs | {c['latency']['drift_last_over_first']} | "
        f"{c['cpu_latency']['drift_last_over_first']} |",
        f"| `load_surrogate` + one call + unload | {L['loads']:,} | "
        f"{L['memory_before']['rss_mib']} → {L['memory_after']['rss_mib']} | "
        f"{100 * L['rss_growth']:+.2f}% | {L['memory_before']['peak_rss_mib']} → "
        f"{L['memory_after']['peak_rss_mib']} | {L['latency']['first_decile_ms']} ms → "
        f"{L['latency']['last_decile_ms']} ms | {L['latency']['drift_last_over_first']} | "
        f"{L['cpu_latency']['drift_last_over_first']} |",
        "", f"Target: memory growth < 5% in each phase. Total: {c['seconds']} s of calls, "
        f"{L['seconds']} s of loads. Median CPU time per call "
        f"{c['cpu_latency']['median_us']} µs, per load {L['cpu_latency']['median_ms']} ms. "
        f"Load average {result['machine']['load_average']} (1, 5, 15 min) at the end.", "",
        "RSS (MiB) at the start and after each tenth of the run — growth is a step while the "
        "allocator warms up, then flat:", "",
        f"- calls: {c['rss_trace_mib']}", f"- loads: {L['rss_trace_mib']}", "",
    ]
    (out / "soak.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
