"""train-yields end to end: workspace -> labels -> network -> validation -> artifact."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidWorkspace, UnknownPatch
from surrogate_stats.likelihood._workspace import load_json, sha256_file

__all__ = ["analysis_signals", "load_background", "train_yields", "validate_yields"]


def load_background(path) -> dict:
    """A background-only workspace as a dict, checked by pyhf's schema."""
    from surrogate_stats.likelihood._workspace import _workspace

    spec = load_json(path, "background-only workspace")
    _workspace(optional_import("pyhf"), spec, "workspace", path)
    return spec


def analysis_signals(spec: dict, *, patchset=None, patches=()) -> tuple[list, list, tuple]:
    """The analysis's own signal points: (names, jsonpatch operation lists, removed channels).

    ``patchset`` is a pyhf PatchSet file; ``patches`` bare jsonpatch files. The removed
    channels are those every patch removes (e.g. validation regions).
    """
    names, ops = [], []
    if patchset is not None:
        raw = load_json(patchset, "patchset")
        if not isinstance(raw, dict) or not isinstance(raw.get("patches"), list):
            raise InvalidWorkspace(f"patchset {str(patchset)!r} must be a pyhf PatchSet (an "
                                   "object with a 'patches' list)")
        for p in raw["patches"]:
            try:
                names.append(str(p["metadata"]["name"]))
                ops.append(list(p["patch"]))
            except (KeyError, TypeError):
                raise InvalidWorkspace(f"patchset {str(patchset)!r}: every patch needs "
                                       "metadata.name and a 'patch' list") from None
    for path in patches:
        data = load_json(path, "patch")
        if not isinstance(data, list):
            raise InvalidWorkspace(f"patch {str(path)!r} must be an RFC-6902 jsonpatch (a list "
                                   "of operations)")
        names.append(Path(path).stem.removeprefix("patch."))
        ops.append(data)
    return names, ops, removed_channels(spec, ops)


def removed_channels(spec: dict, ops: list) -> tuple:
    """The channels of ``spec`` that every jsonpatch in ``ops`` (lists of operations) removes."""
    channel_names = [c["name"] for c in spec["channels"]]
    removed_sets = []
    for lst in ops:
        gone = set()
        for op in lst:
            parts = str(op.get("path", "")).split("/") if isinstance(op, dict) else []
            if op.get("op") == "remove" and len(parts) == 3 and parts[1] == "channels":
                try:
                    gone.add(channel_names[int(parts[2])])
                except (ValueError, IndexError):
                    raise InvalidWorkspace(f"a patch removes {op['path']!r}, which is not a "
                                           "channel of the workspace") from None
        removed_sets.append(gone)
    return tuple(c for c in channel_names if removed_sets and all(c in g for g in removed_sets))


def _select(names, ops, wanted):
    if not wanted:
        return names, ops
    idx = {n: i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in idx]
    if missing:
        raise UnknownPatch(f"validation signals {missing} are not among the analysis's "
                           f"{len(names)} signal points: {', '.join(names[:50])}")
    return [names[idx[w]] for w in wanted], [ops[idx[w]] for w in wanted]


def validate_yields(surrogate, spec: dict, names, ops, *, model=None, fitter=None,
                    progress: bool = False) -> dict:
    """Compare a yield surrogate with exact engine results on the given signal patches."""
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_labels import reference_datasets
    from surrogate_stats.likelihood._yields_validate import (
        compare,
        exact_reference,
        signal_from_patch,
    )

    remove = tuple(surrogate.metadata.get("remove_channels", ()))
    model = model or build_model(spec, remove_channels=remove)
    if tuple(model.bins) != tuple(surrogate.bins):
        raise InvalidWorkspace(f"the workspace's bins {list(model.bins)} are not the "
                               f"surrogate's {list(surrogate.bins)}")
    fitter = fitter or VectorFitter(model, chunk=64)
    datasets, _, _ = reference_datasets(model, fitter)
    signals = np.stack([signal_from_patch(o, spec, model.bins) for o in ops])
    t0 = time.perf_counter()
    ref = exact_reference(fitter, datasets, signals)
    t_exact = time.perf_counter() - t0
    out = compare(surrogate, ref, names=list(names))
    out["summary"]["exact_seconds"] = round(t_exact, 2)
    out["summary"]["signals_converged"] = int(ref.converged.sum())
    return out


def train_yields(background, out, *, patchset=None, patches=(), remove_channels=None,
                 labels=None, surrogate=None, executor=None, seed: int = 0,
                 progress: bool = True, log=print, keep_labels: bool = False,
                 validation_signals=()):
    """Label, train, validate and save a yield surrogate of a background-only workspace.

    Args:
        background: path of the background-only workspace (BkgOnly.json).
        out: artifact directory to write.
        patchset, patches: the analysis's own signal points (a PatchSet file and/or bare
            jsonpatch files): they define the channels to remove (those every patch removes)
            and are the validation set; they are never trained on.
        remove_channels: channels to drop instead of the ones the patches remove.
        labels, surrogate: :class:`YieldLabelConfig`, :class:`YieldSurrogateConfig`.
        executor: :class:`surrogate_stats._executor.ExecutorConfig` for the label fits.
        keep_labels: keep the label chunk store ``OUT.labels`` after success (it is always
            kept when the run fails, so rerunning resumes).
        validation_signals: names of the patches to validate on (default: all of them).

    Returns:
        ``(surrogate, metadata)``.
    """
    jax = optional_import("jax")
    from surrogate_stats.likelihood._histfactory import build_model
    from surrogate_stats.likelihood._vfit import VectorFitter
    from surrogate_stats.likelihood._yields_export import save_yield_surrogate
    from surrogate_stats.likelihood._yields_labels import YieldLabelConfig, generate_yield_labels
    from surrogate_stats.likelihood._yields_train import YieldSurrogateConfig, fit_yield_surrogate

    t_start = time.perf_counter()
    background = Path(background)
    out = Path(out)
    spec = load_background(background)
    names, ops, removed = analysis_signals(spec, patchset=patchset, patches=patches)
    remove = tuple(remove_channels) if remove_channels is not None else removed
    labels_cfg = labels or YieldLabelConfig(seed=seed)
    surrogate_cfg = surrogate or YieldSurrogateConfig()
    log(f"building the model ({background.name}; removing {list(remove) or 'no'} channels)")
    model = build_model(spec, remove_channels=remove)
    log(f"  {model.n_bins} bins ({', '.join(model.bins)}), {model.n_pars} parameters")
    store = out.parent / (out.name + ".labels")
    lab = generate_yield_labels(spec, remove_channels=remove, config=labels_cfg,
                                store_dir=store, executor=executor, progress=progress,
                                model=model)
    log(f"labels: {lab.info['n_points']} points ({lab.info['n_unconverged_points']} with "
        f"unconverged fits, not used) in {lab.info['seconds']['total']:.0f} s")
    t0 = time.perf_counter()
    sur, metrics = fit_yield_surrogate(jax.random.key(seed), lab, config=surrogate_cfg,
                                       progress=progress, bins=model.bins,
                                       prefit=lab.datasets["apriori"][0])
    t_train = time.perf_counter() - t0
    log(f"training: {t_train:.0f} s; held-out rms |d nll| observed "
        f"{metrics['heldout']['observed']['rms_dnll']:.3g}")
    validation = None
    if ops:
        vnames, vops = _select(names, ops, validation_signals)
        sur.metadata["remove_channels"] = list(remove)
        log(f"validating on {len(vops)} of the analysis's signal points")
        validation = validate_yields(sur, spec, vnames, vops, model=model,
                                     fitter=VectorFitter(model, chunk=64), progress=progress)
        s = validation["summary"]
        log(f"  max |d tmu| (exact <= 9): observed {s['max_abs_dtmu_observed']}, expected "
            f"{s['max_abs_dtmu_expected']}; upper limits: observed {s['max_ul_observed_rel']}, "
            f"median expected {s['max_ul_median_rel']}")
    provenance = {"workspace_file": background.name,
                  "workspace_sha256": sha256_file(background),
                  "patchset_sha256": sha256_file(patchset) if patchset else None,
                  "patch_files": [Path(p).name for p in patches],
                  "analysis": _analysis_id(patchset),
                  "versions": _versions(), "platform": platform.platform(),
                  "seed": seed}
    meta = {
        "provenance": provenance,
        "remove_channels": list(remove),
        "signal_injection": "normalisation factor only (no signal systematics)",
        "labels": lab.info,
        "label_scale": lab.scale.tolist(),
        "training": {**metrics, "seconds": round(t_train, 2)},
        "validation": validation,
        "seconds_total": round(time.perf_counter() - t_start, 2),
    }
    sur.metadata.update(meta)
    save_yield_surrogate(sur, out, metadata=meta)
    if not keep_labels:
        shutil.rmtree(store, ignore_errors=True)
    from surrogate_stats import load_surrogate

    return load_surrogate(out), meta


def _analysis_id(patchset):
    if not patchset:
        return None
    try:
        return (json.loads(Path(patchset).read_text()).get("metadata") or {}).get("analysis_id")
    except (OSError, ValueError, AttributeError):
        return None


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("surrogate_stats", "pyhf", "jax", "numpy", "onnxruntime", "optax"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
