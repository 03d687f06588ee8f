"""One call that runs every unfolding method on the same pseudo-experiments of a toy."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import ExtrapolationWarning, InvalidInput
from surrogate_stats.unfold._data import UnfoldingData, check_detector_range
from surrogate_stats.unfold._methods import SimulationPrior, UnfoldResult, get_method
from surrogate_stats.unfold._metrics import (
    bin_edges,
    chi2_ndf,
    histogram,
    interval_coverage,
    triangular_discriminator,
    wasserstein1,
)
from surrogate_stats.unfold._toys import Toy, as_generator, get_toy

__all__ = ["ComparisonReport", "compare", "coverage"]

LEVELS = (0.68, 0.95)


@dataclass
class ComparisonReport:
    """Metrics of every method over the pseudo-experiments of one toy.

    Attributes:
        toy: toy name.
        observables: observable names.
        edges: per observable particle-level bin edges.
        settings: sizes and seeds of the run.
        metrics: ``{method: {"wasserstein": (n_pseudo, d), "triangular": ..., "chi2_ndf": ...}}``
            per pseudo-experiment and observable, against each pseudo-experiment's own truth;
            ``"prior"`` is the simulation's particle level without unfolding.
        coverage: ``{method: {level: coverage}}`` of per-bin intervals against the
            population truth, over all bins, observables and pseudo-experiments (None when a
            method gives no errors).
        closure: ``{method: (d,) W1}`` unfolding an independent simulated sample, against its
            own truth.
        seconds: ``{method: median seconds per unfolding}``.
        example: first pseudo-experiment's histograms for the plots.
        out_of_range_fraction: mean fraction of measured events outside the simulated
            detector-level range (the methods extrapolate there).
        levels: confidence levels of ``coverage``.
        per_event_coverage: ``{method: {level: coverage}}`` for methods with per-event
            posteriors (the flow): the fraction of (measured event with a particle-level
            partner, observable) pairs whose truth lies in the event's central posterior
            interval, over all pseudo-experiments.
    """

    toy: str
    observables: tuple[str, ...]
    edges: list
    settings: dict
    metrics: dict
    coverage: dict
    closure: dict
    seconds: dict
    example: dict = field(repr=False, default_factory=dict)
    out_of_range_fraction: float = 0.0
    levels: tuple[float, ...] = LEVELS
    per_event_coverage: dict = field(default_factory=dict)

    def median(self, method: str, metric: str) -> np.ndarray:
        """Median over pseudo-experiments, per observable."""
        return np.median(np.asarray(self.metrics[method][metric]), axis=0)

    @property
    def methods(self) -> list[str]:
        return [m for m in self.metrics if m != "prior"]

    def to_dict(self) -> dict:
        """The issue's JSON summary (medians over pseudo-experiments) plus run details."""
        def r(a):
            return [float(f"{v:.5g}") for v in np.asarray(a).ravel()]

        w_prior = self.median("prior", "wasserstein")
        out = {"toy": self.toy, "observables": list(self.observables),
               "settings": self.settings,
               "out_of_range_fraction": round(self.out_of_range_fraction, 6),
               "prior": {"wasserstein": r(w_prior),
                         "triangular": r(self.median("prior", "triangular"))},
               "methods": {}}
        for m in self.methods:
            w = self.median(m, "wasserstein")
            cov = self.coverage.get(m)
            out["methods"][m] = {
                "wasserstein": r(w),
                "wasserstein_over_prior": r(w / np.where(w_prior > 0, w_prior, np.nan)),
                "triangular": r(self.median(m, "triangular")),
                "chi2_ndf": r(self.median(m, "chi2_ndf")),
                **{f"coverage{round(100 * lv)}": None if cov is None else round(cov[lv], 4)
                   for lv in self.levels},
                **{f"per_event_coverage{round(100 * lv)}":
                   self.per_event_coverage[m][lv] for lv in self.levels
                   if m in self.per_event_coverage},
                "closure_wasserstein": r(self.closure[m]) if m in self.closure else None,
                "seconds": round(self.seconds[m], 3),
            }
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def table(self) -> str:
        """A markdown table: per method and observable, median W1 (and / prior), Δ, χ²/ndf."""
        head = ("| method | observable | W1 | W1 / W1(prior) | Δ (×10³) | χ²/ndf |\n"
                "|---|---|---|---|---|---|")
        rows = [head]
        w_prior = self.median("prior", "wasserstein")
        for m in ["prior", *self.methods]:
            w, tri = self.median(m, "wasserstein"), self.median(m, "triangular")
            chi = self.median(m, "chi2_ndf")
            for k, obs in enumerate(self.observables):
                rows.append(f"| {m} | {obs} | {w[k]:.4g} | {w[k] / w_prior[k]:.3f} | "
                            f"{tri[k]:.3g} | {chi[k]:.3g} |")
        levels = " | ".join(f"coverage {round(100 * lv)}%" for lv in self.levels)
        cov = ["", f"| method | {levels} | closure W1 (per observable) | s / unfolding |",
               "|---|" + "---|" * (len(self.levels) + 2)]
        for m in self.methods:
            c = self.coverage.get(m) or {}
            cl = ", ".join(f"{v:.3g}" for v in self.closure.get(m, []))
            cs = " | ".join(f"{c.get(lv, float('nan')):.3f}" for lv in self.levels)
            cov.append(f"| {m} | {cs} | {cl} | {self.seconds[m]:.3g} |")
        if self.per_event_coverage:
            cov += ["", "| method | " + " | ".join(f"per-event coverage {round(100 * lv)}%"
                                                   for lv in self.levels) + " |",
                    "|---|" + "---|" * len(self.levels)]
            for m, c in self.per_event_coverage.items():
                cov.append(f"| {m} | " + " | ".join(f"{c[lv]:.3f}" for lv in self.levels)
                           + " |")
        return "\n".join(rows + cov)

    def _repr_markdown_(self) -> str:
        return f"**{self.toy}** ({self.settings})\n\n" + self.table()

    def plot(self, directory, *, dpi: int = 100) -> list[Path]:
        """One PNG per method: unfolded vs truth vs detector level, with ratio panels.

        Uses the first pseudo-experiment. Returns the written paths.
        """
        optional_import("matplotlib")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ex = self.example
        paths = []
        d = len(self.observables)
        for m in self.methods:
            fig = Figure(figsize=(3.6 * d, 4.6))
            FigureCanvasAgg(fig)
            gs = fig.add_gridspec(2, d, height_ratios=(3, 1), hspace=0.05)
            for k, obs in enumerate(self.observables):
                e = np.asarray(self.edges[k])
                c, wdt = 0.5 * (e[1:] + e[:-1]), np.diff(e)
                top = fig.add_subplot(gs[0, k])
                bot = fig.add_subplot(gs[1, k], sharex=top)
                t, te = ex["truth"][k]
                top.stairs(t / wdt, e, fill=True, alpha=0.3, color="0.4", label="truth")
                top.stairs(ex["prior"][k][0] / wdt, e, color="tab:green", ls="--",
                           label="sim. particle (prior)")
                top.stairs(ex["detector"][k] / wdt, e, color="tab:orange", ls=":",
                           label="data, detector level")
                p, pe = ex[m][k]
                top.errorbar(c, p / wdt, yerr=None if pe is None else pe / wdt, fmt="o",
                             ms=3, color="k", label=m)
                top.set_title(obs)
                top.tick_params(labelbottom=False)
                safe = np.where(t > 0, t, np.nan)
                bot.axhline(1.0, color="0.5", lw=0.8)
                bot.errorbar(c, p / safe, yerr=None if pe is None else pe / safe, fmt="o",
                             ms=3, color="k")
                bot.stairs(ex["prior"][k][0] / safe, e, color="tab:green", ls="--")
                bot.fill_between(c, 1 - te / safe, 1 + te / safe, step="mid", color="0.4",
                                 alpha=0.3)
                bot.set_ylim(0.5, 1.5)
                bot.set_xlabel(obs)
                if k == 0:
                    top.set_ylabel("density")
                    bot.set_ylabel(f"{m} / truth")
                    top.legend(fontsize=7)
            fig.suptitle(f"{self.toy}: {m} (pseudo-experiment 0)")
            path = directory / f"unfold_{self.toy}_{m}.png"
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
            paths.append(path)
        return paths


def _binned_w1(p, q, edges):
    c = 0.5 * (edges[1:] + edges[:-1])
    return wasserstein1(c, c, u_weights=p, v_weights=q)


def _metrics(res: UnfoldResult, truth_h, edges):
    w, tri, chi = [], [], []
    for k, e in enumerate(edges):
        p = res.probs[k]
        pe = res.errors[k] if res.errors is not None else np.zeros_like(p)
        t, te = truth_h[k]
        w.append(_binned_w1(p, t, e))
        tri.append(triangular_discriminator(p, t))
        chi.append(chi2_ndf(p, t, p_err=pe, q_err=te))
    return w, tri, chi


def compare(toy, methods=("ibu", "omnifold"), *, n_pseudo: int = 5, n_sim: int = 20000,
            n_data: int = 10000, n_bins: int = 16, seed=0, closure: bool = True,
            n_reference: int | None = None, method_options: dict | None = None,
            levels=LEVELS, progress: bool = True) -> ComparisonReport:
    """Run unfolding methods on the same pseudo-experiments of a toy and collect metrics.

    One simulated sample (the prior) is drawn once; each pseudo-experiment draws fresh "data"
    from the toy's data model and every method unfolds it. Metrics per observable on
    ``n_bins`` uniform bins over the toy's ranges: binned Wasserstein-1, triangular
    discriminator and χ²/ndf against the pseudo-experiment's own truth; per-bin interval
    coverage (68%, 95%) against the population truth (a sample of ``n_reference`` data
    events); closure on an independent simulated sample.

    Args:
        toy: a :class:`Toy` or a name in :data:`TOYS`.
        methods: registry names (:data:`METHODS`) or method callables.
        n_pseudo: pseudo-experiments (>= 1; coverage needs several).
        n_sim: simulated events; n_data: events per pseudo-experiment.
        n_bins: bins per observable (integer observables get unit-multiple bins).
        seed: int, numpy Generator or JAX key.
        closure: also unfold an independent simulated sample.
        n_reference: events of the population-truth sample (default ``max(20 n_data, 2e5)``).
        method_options: ``{name: {option: value}}`` passed to the registry factories, e.g.
            ``{"omnifold": {"n_bootstrap": 10}}``.
        levels: confidence levels of the coverage check.
        progress: tqdm bars.

    Returns:
        :class:`ComparisonReport` (``.table()``, ``.to_json()``, ``.plot(dir)``).
    """
    jax = optional_import("jax")
    tqdm = optional_import("tqdm.auto").tqdm
    toy = toy if isinstance(toy, Toy) else get_toy(toy)
    if not isinstance(n_pseudo, (int, np.integer)) or n_pseudo < 1:
        raise InvalidInput(f"n_pseudo must be a positive integer; got {n_pseudo!r}")
    opts = method_options or {}
    insts = [get_method(m, **(opts.get(m, {}) if isinstance(m, str) else {}))
             for m in methods]
    names = [getattr(m, "name", None) or str(m) for m in insts]
    if len(set(names)) != len(names) or "prior" in names:
        raise InvalidInput(f"method names must be unique and not 'prior'; got {names}")
    edges = [bin_edges(lo, hi, n_bins, discrete=dis)
             for (lo, hi), dis in zip(toy.ranges, toy.discrete or (False,) * len(toy.names))]
    rng = as_generator(seed)
    s_sim, s_ref, s_clo, s_key, *s_data = rng.spawn(4 + n_pseudo)
    sim = toy.simulate(s_sim, n_sim)
    ref = toy.sample_data(s_ref, n_reference or max(20 * n_data, 200_000))
    rt, rw = ref.truth()
    population = [histogram(rt[:, k], e, weights=rw)[0] for k, e in enumerate(edges)]
    key = jax.random.key(int(s_key.integers(2**31)))

    def unfold_all(data_sample, key, record_time):
        ud = UnfoldingData(sim, data_sample, name=toy.name, ranges=np.array(toy.ranges),
                           discrete=toy.discrete or (False,) * len(toy.names))
        out = {}
        for name, m, k in zip(names, insts, jax.random.split(key, len(insts))):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExtrapolationWarning)
                out[name] = m(k, ud, edges=edges)
            if record_time:
                times[name].append(time.perf_counter() - t0)
        out["prior"] = SimulationPrior()(None, ud, edges=edges)
        return out

    times = {n: [] for n in names}
    metrics = {n: {"wasserstein": [], "triangular": [], "chi2_ndf": []} for n in
               ["prior", *names]}
    est = {n: [] for n in names}
    err = {n: [] for n in names}
    pev = {n: [] for n in names}
    example, fracs = {}, []
    for i in tqdm(range(n_pseudo), desc=f"compare {toy.name}", disable=not progress):
        data_i = toy.sample_data(s_data[i], n_data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            fracs.append(check_detector_range(sim, data_i.measured()[0]))
        results = unfold_all(data_i, jax.random.fold_in(key, i), True)
        tt, tw = data_i.truth()
        truth_h = [histogram(tt[:, k], e, weights=tw) for k, e in enumerate(edges)]
        for name, res in results.items():
            w, tri, chi = _metrics(res, truth_h, edges)
            metrics[name]["wasserstein"].append(w)
            metrics[name]["triangular"].append(tri)
            metrics[name]["chi2_ndf"].append(chi)
            if name != "prior" and res.errors is not None:
                est[name].append(np.concatenate(res.probs))
                err[name].append(np.concatenate(res.errors))
            pec = res.info.get("per_event_coverage", {})
            if name != "prior" and all(str(lv) in pec for lv in levels):
                pev[name].append([pec[str(lv)] for lv in levels])
        if i == 0:
            mt, mw = data_i.measured()
            example = {"truth": truth_h, "prior": list(zip(results["prior"].probs,
                                                           results["prior"].errors)),
                       "detector": [histogram(mt[:, k], e, weights=mw)[0]
                                    for k, e in enumerate(edges)]}
            for name in names:
                r = results[name]
                example[name] = [(r.probs[k], None if r.errors is None else r.errors[k])
                                 for k in range(len(edges))]
    truth_flat = np.concatenate(population)
    coverage = {n: (interval_coverage(np.array(est[n]), np.array(err[n]), truth_flat,
                                      levels=levels) if len(est[n]) == n_pseudo else None)
                for n in names}
    clo = {}
    if closure:
        sim_as_data = toy.simulate(s_clo, n_data)
        results = unfold_all(sim_as_data, jax.random.fold_in(key, n_pseudo), False)
        tt, tw = sim_as_data.truth()
        truth_h = [histogram(tt[:, k], e, weights=tw) for k, e in enumerate(edges)]
        for name in names:
            clo[name] = np.array(_metrics(results[name], truth_h, edges)[0])
    per_event = {n: dict(zip(levels, np.mean(v, axis=0).tolist())) for n, v in pev.items()
                 if len(v) == n_pseudo}
    settings = {"n_pseudo": n_pseudo, "n_sim": n_sim, "n_data": n_data, "n_bins": n_bins,
                "seed": seed if isinstance(seed, int) else None}
    return ComparisonReport(
        toy.name, tuple(toy.names), [e.tolist() for e in edges], settings,
        {n: {k: np.array(v) for k, v in d.items()} for n, d in metrics.items()},
        coverage, clo, {n: float(np.median(t)) for n, t in times.items()}, example,
        float(np.mean(fracs)), tuple(levels), per_event)


def coverage(toy, method, *, n_pseudo: int = 20, levels=LEVELS, **kwargs) -> dict[float, float]:
    """Per-bin interval coverage of one method over pseudo-experiments of a toy.

    ``method`` is a registry name or any callable with the method signature (see
    :mod:`~surrogate_stats.unfold._methods`); the other keywords go to :func:`compare`.

    Returns:
        ``{level: fraction of (bin, observable, pseudo-experiment) intervals containing the
        population truth}``.

    Raises:
        InvalidInput: the method returns no per-bin errors.
    """
    rep = compare(toy, [method], n_pseudo=n_pseudo, levels=levels, closure=False, **kwargs)
    cov = rep.coverage[rep.methods[0]]
    if cov is None:
        raise InvalidInput(f"method {rep.methods[0]!r} returns no per-bin errors; its "
                           "coverage cannot be checked")
    return cov
