"""Make the published example artifacts in onnx_models/ (train + validate against pyhf).

Run from the repository root (a few minutes on 2 cores):

    python examples/make_onnx_models.py

For each signal point it trains the default surrogate (``surrogate-stats likelihood train``),
validates it against fresh pyhf computations (``surrogate-stats likelihood validate``),
records the validation metrics in the artifact's metadata.json and draws the comparison plot
into docs/img/.
"""

from __future__ import annotations

import json
from pathlib import Path

from surrogate_stats import load_surrogate
from surrogate_stats.likelihood import load_signal_workspace, train, validate
from surrogate_stats.likelihood._pipeline import record_validation

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "workspaces"
MODELS = {
    "3L-eRJR_ERJR_500p0_0p0": dict(background=DATA / "3L-eRJR" / "BkgOnly.json",
                                   patchset=DATA / "3L-eRJR" / "patchset.json",
                                   patch="ERJR_500p0_0p0"),
    "sbottom-RegionA_1300_850_60": dict(
        background=DATA / "sbottom-RegionA" / "BkgOnly.json",
        patch=DATA / "sbottom-RegionA" / "patch.sbottom_1300_850_60.json"),
}


def main() -> None:
    summary = {}
    for name, inputs in MODELS.items():
        out = ROOT / "onnx_models" / name
        workspace = load_signal_workspace(**inputs)
        train(workspace, out, seed=0, log=print)
        surrogate = load_surrogate(out)
        metrics = validate(surrogate, workspace, plot=ROOT / "docs" / "img" / f"{name}.png",
                           log=print)
        record_validation(out, metrics)
        summary[name] = metrics
        print(name, json.dumps(metrics))
    (ROOT / "onnx_models" / "VALIDATION.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
