"""Validation report of a simulation-to-data correction (classifier AUC, distances, plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.flows._spikes import detect_spikes

__all__ = ["validate_correction", "classifier_auc", "weighted_corr"]


def weighted_corr(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson correlation matrix of the columns of ``x``."""
    m = np.average(x, axis=0, weights=w)
    d = x - m
    cov = (w[:, None] * d).T @ d / w.sum()
    s = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return cov / np.outer(s, s)


def classifier_auc(a, b, *, wa=None, wb=None, seed: int = 0, test_fraction: float = 0.3,
                   max_iter: int = 200) -> float:
    """ROC AUC of a gradient-boosted classifier separating ``a`` from ``b`` on held-out events.

    Features are the columns of ``a``/``b``. Each sample gets the same total weight (negative
    weights are set to 0 for the classifier). 0.5 means indistinguishable.
    """
    ens = optional_import("sklearn.ensemble")
    metrics = optional_import("sklearn.metrics")
    rng = np.random.default_rng(seed)
    wa = np.ones(len(a)) if wa is None else np.clip(np.asarray(wa, float), 0, None)
    wb = np.ones(len(b)) if wb is None else np.clip(np.asarray(wb, float), 0, None)
    X = np.concatenate([a, b])
    y = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    w = np.concatenate([wa / wa.sum(), wb / wb.sum()]) * len(X) / 2
    test = rng.random(len(X)) < test_fraction
    clf = ens.HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.1,
                                             early_stopping=True, random_state=seed)
    clf.fit(X[~test], y[~test], sample_weight=w[~test])
    p = clf.predict_proba(X[test])[:, 1]
    return float(metrics.roc_auc_score(y[test], p, sample_weight=w[test]))


def _arr(name, a, cols):
    a = np.asarray(a, np.float64)
    if a.ndim != 2 or (cols is not None and a.shape[1] != cols):
        raise InvalidInput(f"{name} must have shape (N, {cols}); got {a.shape}")
    return a


def validate_correction(data, mc, corrected, *, data_conditions=None, mc_conditions=None,
                        data_weights=None, mc_weights=None, variables=None, conditions=None,
                        seed: int = 0, plot: str | Path | None = None,
                        plot_condition: int = 0) -> dict:
    """Compare data with simulation before and after a correction.

    Returns a dict with ``auc_before``/``auc_after`` (gradient-boosted classifier on the
    variables and conditions, held-out events), per-variable 1-D Wasserstein distances
    ``wasserstein_before``/``wasserstein_after`` (and their ratio), the largest absolute
    difference of the correlation matrices before/after, and spike fractions. With ``plot``
    (a PNG path) draws marginals data / MC / corrected MC with ratio panels in three bins
    (tertiles) of condition number ``plot_condition``.
    """
    stats = optional_import("scipy.stats")
    xd = _arr("data", data, None)
    d = xd.shape[1]
    xm, xc = _arr("mc", mc, d), _arr("corrected", corrected, d)
    if len(xc) != len(xm):
        raise InvalidInput(f"corrected has {len(xc)} events but mc has {len(xm)}")
    cd = np.zeros((len(xd), 0)) if data_conditions is None else _arr("data_conditions",
                                                                       data_conditions, None)
    cm = np.zeros((len(xm), 0)) if mc_conditions is None else _arr("mc_conditions",
                                                                     mc_conditions, cd.shape[1])
    wd = np.ones(len(xd)) if data_weights is None else np.asarray(data_weights, float)
    wm = np.ones(len(xm)) if mc_weights is None else np.asarray(mc_weights, float)
    names = list(variables) if variables else [f"x{j}" for j in range(d)]
    cnames = list(conditions) if conditions else [f"c{j}" for j in range(cd.shape[1])]

    auc_before = classifier_auc(np.c_[xd, cd], np.c_[xm, cm], wa=wd, wb=wm, seed=seed)
    auc_after = classifier_auc(np.c_[xd, cd], np.c_[xc, cm], wa=wd, wb=wm, seed=seed)
    pos_d, pos_m = np.clip(wd, 0, None), np.clip(wm, 0, None)
    wb, wa = {}, {}
    for j, n in enumerate(names):
        wb[n] = float(stats.wasserstein_distance(xd[:, j], xm[:, j], pos_d, pos_m))
        wa[n] = float(stats.wasserstein_distance(xd[:, j], xc[:, j], pos_d, pos_m))
    corr_d = weighted_corr(xd, pos_d)
    corr_b = float(np.max(np.abs(weighted_corr(xm, pos_m) - corr_d)))
    corr_a = float(np.max(np.abs(weighted_corr(xc, pos_m) - corr_d)))
    spikes = detect_spikes(xd)
    sf = []
    for j, v in zip(spikes["column"], spikes["value"]):
        sf.append({"variable": names[j], "value": v,
                   "data": float(np.sum(pos_d * (xd[:, j] == v)) / pos_d.sum()),
                   "mc": float(np.sum(pos_m * (xm[:, j] == v)) / pos_m.sum()),
                   "corrected": float(np.sum(pos_m * (xc[:, j] == v)) / pos_m.sum())})
    out = {
        "auc_before": auc_before,
        "auc_after": auc_after,
        "wasserstein_before": wb,
        "wasserstein_after": wa,
        "wasserstein_ratio": {n: (wb[n] / wa[n] if wa[n] > 0 else float("inf"))
                              for n in names},
        "corr_max_abs_diff_before": corr_b,
        "corr_max_abs_diff_after": corr_a,
        "spike_fractions": sf,
        "n_data": int(len(xd)),
        "n_mc": int(len(xm)),
    }
    if plot:
        plot_marginals(plot, xd, xm, xc, wd=pos_d, wm=pos_m, names=names,
                       cond_d=cd[:, plot_condition] if cd.shape[1] else None,
                       cond_m=cm[:, plot_condition] if cm.shape[1] else None,
                       cond_name=cnames[plot_condition] if cnames else None)
        out["plot"] = str(plot)
    return out


def plot_marginals(path, xd, xm, xc, *, wd, wm, names, cond_d=None, cond_m=None,
                   cond_name=None, bins=40):
    """Marginals (data points, MC and corrected MC histograms) with data/MC ratio panels."""
    optional_import("matplotlib").use("Agg")
    plt = optional_import("matplotlib.pyplot")
    if cond_d is not None:
        edges = np.quantile(cond_d, [0, 1 / 3, 2 / 3, 1])
        sel = [((cond_d >= lo) & (cond_d <= hi), (cond_m >= lo) & (cond_m <= hi),
                f"{cond_name} in [{lo:.3g}, {hi:.3g}]") for lo, hi in zip(edges[:-1], edges[1:])]
    else:
        sel = [(np.ones(len(xd), bool), np.ones(len(xm), bool), "all events")]
    d = len(names)
    fig, axes = plt.subplots(2 * d, len(sel), figsize=(4.2 * len(sel), 3.2 * d),
                             gridspec_kw={"height_ratios": [3, 1] * d}, squeeze=False)
    for j, name in enumerate(names):
        lo, hi = np.quantile(np.r_[xd[:, j], xm[:, j]], [0.002, 0.998])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        be = np.linspace(lo, hi, bins + 1)
        for k, (sd, sm, label) in enumerate(sel):
            ax, rax = axes[2 * j, k], axes[2 * j + 1, k]
            hd, _ = np.histogram(xd[sd, j], be, weights=wd[sd])
            hm, _ = np.histogram(xm[sm, j], be, weights=wm[sm])
            hc, _ = np.histogram(xc[sm, j], be, weights=wm[sm])
            ed = np.sqrt(np.histogram(xd[sd, j], be, weights=wd[sd] ** 2)[0])
            nd, nm = hd.sum(), hm.sum()
            hd, ed, hm, hc = hd / nd, ed / nd, hm / nm, hc / nm
            cen = 0.5 * (be[1:] + be[:-1])
            ax.stairs(hm, be, label="MC", color="tab:red")
            ax.stairs(hc, be, label="corrected MC", color="tab:blue")
            ax.errorbar(cen, hd, ed, fmt="k.", ms=3, label="data")
            ax.set_title(label, fontsize=9)
            ax.set_ylabel(f"fraction ({name})")
            with np.errstate(divide="ignore", invalid="ignore"):
                rax.stairs(hm / hd, be, color="tab:red")
                rax.stairs(hc / hd, be, color="tab:blue")
                rax.errorbar(cen, np.ones_like(cen), ed / hd, fmt="none", ecolor="k")
            rax.axhline(1, color="k", lw=0.5)
            rax.set_ylim(0.7, 1.3)
            rax.set_ylabel("MC / data")
            rax.set_xlabel(name)
            if j == 0 and k == 0:
                ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
