"""Replace pyhf by a published surrogate in a reinterpretation loop (numpy + onnxruntime only).

    python examples/reinterpretation.py [ARTIFACT_DIR]

A reinterpretation tool asks, for each model it tests, how strongly the analysis excludes it:
CLs at the model's predicted signal strength, the 95% CL upper limit on mu, and the profiled
likelihood for combinations. Each of these is a pyhf fit (seconds) or a root finding over fits
(minutes); with the surrogate they take microseconds to milliseconds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from surrogate_stats import load_surrogate

ROOT = Path(__file__).resolve().parents[1]


def main(path: str | Path = ROOT / "onnx_models" / "3L-eRJR_ERJR_500p0_0p0") -> None:
    s = load_surrogate(path, on_extrapolation="raise")
    meta = s.metadata
    print(f"{meta['name']}: analysis {meta['provenance'].get('analysis')}, "
          f"patch {meta['provenance']['patch_name']}, mu in {s.domain}")
    if meta.get("validation"):
        v = meta["validation"]
        print(f"validated against pyhf: max |d(-2 ln lambda)| obs {v['max_abs_dtmu_obs']:.3f}, "
              f"exp {v['max_abs_dtmu_exp']:.3f}; UL obs {v['ul_obs']:.4g} (pyhf "
              f"{v['ul_obs_pyhf']:.4g})")

    obs, exp = s.upper_limit()
    print(f"95% CL upper limit on mu: observed {obs:.3f}, expected {exp[2]:.3f} "
          f"[{exp[1]:.3f}, {exp[3]:.3f}] (1 sigma)")

    # a scan over models that predict different signal strengths (cross-section ratios)
    t = time.perf_counter()
    for mu in np.linspace(0.1, 0.9 * s.domain[1], 25):
        cls_obs, cls_exp = s.cls(mu)
        status = "excluded" if cls_obs < 0.05 else "allowed"
        print(f"  mu={mu:6.3f}  CLs={cls_obs:.4f}  expected CLs={cls_exp[2]:.4f}  {status}")
    print(f"25 CLs evaluations in {1e3 * (time.perf_counter() - t):.1f} ms")

    # the profiled likelihood itself, e.g. to combine with another analysis' surrogate
    mus = np.linspace(0, s.domain[1], 5)
    print("nll(mu):", np.round(s.nll(mus), 4), " -2 ln lambda:", np.round(s.tmu(mus), 4))


if __name__ == "__main__":
    main(*sys.argv[1:])
