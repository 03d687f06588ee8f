"""Unfolding methods behind one calling convention, and their registry.

A *method* is any callable ``method(key, data, *, edges, progress=False) -> UnfoldResult``
where ``data`` is an :class:`~surrogate_stats.unfold.UnfoldingData` and ``edges`` a list of
per-observable particle-level bin edges. :data:`METHODS` maps a name to a zero-argument
factory of a default-configured method; a new method (e.g. the conditional-flow unfolder) is
added with one line, ``METHODS["flow"] = FlowMethod``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from surrogate_stats.errors import InvalidInput
from surrogate_stats.train import member_keys
from surrogate_stats.unfold._data import UnfoldingData
from surrogate_stats.unfold._ibu import ibu, response_matrix
from surrogate_stats.unfold._metrics import histogram
from surrogate_stats.unfold._omnifold import OmniFoldConfig, omnifold

__all__ = ["UnfoldResult", "IBUMethod", "OmniFoldMethod", "FlowMethod", "METHODS",
           "get_method", "SimulationPrior"]


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class UnfoldResult:
    """What every method returns, per observable on the given particle-level binning.

    Attributes:
        method: method name.
        probs: per observable, bin probabilities (unit sum over the binning range).
        errors: per observable, the per-bin standard deviations the method claims, or None
            when it gives none.
        samples: optional unbinned result ``(particle (n, d), weights (n,))`` (OmniFold:
            the simulated particle level with its final weights; a flow: posterior draws).
        info: method-specific extras (JSON-able).
    """

    method: str
    probs: tuple[np.ndarray, ...]
    errors: tuple[np.ndarray, ...] | None = None
    samples: tuple[np.ndarray, np.ndarray] | None = None
    info: dict = field(default_factory=dict)


def _check_edges(data: UnfoldingData, edges) -> list[np.ndarray]:
    edges = [np.asarray(e, dtype=float) for e in edges]
    if len(edges) != len(data.names):
        raise InvalidInput(f"expected bin edges for {len(data.names)} observables "
                           f"{list(data.names)}; got {len(edges)}")
    n_meas = int(data.data.passed_reco.sum())
    for name, e in zip(data.names, edges):
        if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
            raise InvalidInput(f"edges of {name!r} must be increasing with >= 2 entries")
        if n_meas < 5 * (e.size - 1):
            raise InvalidInput(
                f"too few events for the requested binning: {n_meas} measured events for "
                f"{e.size - 1} bins of {name!r} (need >= 5 per bin on average); use fewer "
                "bins or more events")
    return edges


def _seed_words(key) -> list[int]:
    """Integers from a JAX key (typed or raw), an int, or None (for numpy seeding)."""
    if key is None:
        return [0]
    if isinstance(key, (int, np.integer)):
        return [int(key)]
    if "key<" in str(getattr(key, "dtype", "")):
        import jax

        key = jax.random.key_data(key)
    return np.asarray(key).astype(np.uint64).ravel().tolist()


@dataclass(frozen=True)
class IBUMethod:
    """Iterative Bayesian unfolding, one observable at a time, prior = simulated truth.

    The reco binning equals the truth binning. Errors: data statistics propagated linearly
    through the iterations (:func:`~surrogate_stats.unfold.ibu`) and the normalisation, plus
    the simulation's statistics (response, efficiency, fakes, prior) from a Poisson
    bootstrap of the simulated events with ``n_sim_bootstrap`` replicas (0: none).
    """

    n_iterations: int = 4
    n_sim_bootstrap: int = 20
    name: str = "ibu"

    def __call__(self, key, data: UnfoldingData, *, edges, progress: bool = False):
        del progress  # fast
        edges = _check_edges(data, edges)
        sim, dat = data.sim, data.data
        x, w = dat.measured()
        rng = np.random.default_rng(_seed_words(key))
        boot = [sim.weights * rng.poisson(1.0, len(sim)) for _ in range(self.n_sim_bootstrap)]
        probs, errs = [], []
        for k, e in enumerate(edges):
            counts, _ = np.histogram(x[:, k], e, weights=w)

            def unfold(sim_w, counts=counts, k=k, e=e):
                R, f, prior = response_matrix(
                    sim.particle[:, k], sim.detector[:, k], weights=sim_w,
                    passed_truth=sim.passed_truth, passed_reco=sim.passed_reco,
                    truth_edges=e, reco_edges=e)
                res = ibu(counts, R, fake_fraction=f, prior=prior + 1e-12,
                          n_iterations=self.n_iterations)
                n = res.unfolded
                p = n / n.sum()
                A = (np.eye(n.size) - p[:, None]) / n.sum()  # d p / d n
                return p, A @ res.covariance @ A.T

            p, cov = unfold(sim.weights)
            var = np.diag(cov).copy()
            if len(boot) >= 2:
                var += np.var([unfold(b)[0] for b in boot], axis=0, ddof=1)
            probs.append(p)
            errs.append(np.sqrt(np.clip(var, 0.0, None)))
        return UnfoldResult(self.name, tuple(probs), tuple(errs),
                            info={"n_iterations": self.n_iterations,
                                  "n_sim_bootstrap": self.n_sim_bootstrap})


@dataclass(frozen=True)
class OmniFoldMethod:
    """OmniFold weights, histogrammed; errors from a Poisson bootstrap of the data.

    Each of the ``n_bootstrap`` replicas reruns OmniFold with Poisson(1) weights on the data
    and on the simulated events and a fresh key (statistical uncertainty of both samples and
    the classifiers' training noise); with ``n_bootstrap < 2`` the errors are the
    weighted-histogram ones (which ignore the data's fluctuations and are not meant for
    coverage).
    """

    config: OmniFoldConfig = OmniFoldConfig()
    n_bootstrap: int = 4
    name: str = "omnifold"

    def __call__(self, key, data: UnfoldingData, *, edges, progress: bool = False):
        import warnings

        from surrogate_stats._optional import optional_import
        from surrogate_stats.errors import ExtrapolationWarning

        jax = optional_import("jax")
        edges = _check_edges(data, edges)
        k_main, k_boot = jax.random.split(key)
        res = omnifold(k_main, data, config=self.config, progress=progress)
        truth = data.sim.passed_truth
        t = data.sim.particle[truth]

        def hists(weights):
            return [histogram(t[:, k], e, weights=weights[truth]) for k, e in enumerate(edges)]

        main = hists(res.weights)
        probs = tuple(h[0] for h in main)
        errors = tuple(h[1] for h in main)
        if self.n_bootstrap >= 2:
            rng = np.random.default_rng(_seed_words(k_boot))
            reps = []
            with warnings.catch_warnings():  # the range warning was given once above
                warnings.simplefilter("ignore", ExtrapolationWarning)
                for kb in jax.random.split(k_boot, self.n_bootstrap):
                    wb = data.data.weights * rng.poisson(1.0, len(data.data))
                    ws = data.sim.weights * rng.poisson(1.0, len(data.sim))
                    rb = omnifold(kb, data, config=self.config, data_weights=wb,
                                  sim_weights=ws)
                    reps.append([h[0] for h in hists(rb.weights)])
            errors = tuple(np.std([r[k] for r in reps], axis=0, ddof=1)
                           for k in range(len(edges)))
        return UnfoldResult(self.name, probs, errors, samples=(t, res.weights[truth]),
                            info={"config": self.config.as_dict(),
                                  "n_bootstrap": self.n_bootstrap})


@dataclass(frozen=True)
class FlowMethod:
    """The conditional-flow unfolder (:class:`~surrogate_stats.unfold.Unfolder`), binned.

    The unfolder is trained once per simulated sample (cached on the method instance: every
    pseudo-experiment of :func:`~surrogate_stats.unfold.compare` shares the simulation) and
    iterates on each data set (:meth:`~surrogate_stats.unfold.Unfolder.unfold`). Each
    measured event gets ``n_samples`` posterior draws; the bin probabilities are the weighted
    histogram of all draws.

    Per-bin errors: a Poisson bootstrap of the measured events (``n_bootstrap`` replicas;
    each replica multiplies all draws of an event by the same Poisson(1) weight), which is the
    sampling distribution of the estimator sum_i q_i(bin) over data sets
    with the trained (and iterated) flow held fixed. With ``n_ensemble = K >= 2``, K
    unfolders are trained on Poisson(1) bootstrap replicas of the simulated events (each with
    its own key) and each unfolds the data with its own iterations; the bin probabilities are
    the members' mean and the variance between members (the simulation's statistics, the
    training noise and the iterations) is added to the data-bootstrap variance (averaged over
    the members). The between-member variance is not divided by K: bootstrap replicas of one
    simulated sample share that sample's fluctuation, which averaging does not remove.

    ``info["per_event_coverage"]`` (when the data carry their truth): the fraction of
    (event, observable) pairs, over measured events with a particle-level partner, whose true
    value lies in the central 68% / 95% interval of the event's posterior draws.
    """

    config: object = None  # FlowUnfoldConfig; None: the default
    n_samples: int = 20
    n_bootstrap: int = 100
    n_ensemble: int = 1
    name: str = "flow"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.n_ensemble, (int, np.integer)) or self.n_ensemble < 1:
            raise InvalidInput(f"n_ensemble must be a positive integer; got "
                               f"{self.n_ensemble!r}")

    def unfolders(self, key, sim, *, progress: bool = False) -> list:
        """The unfolders trained on ``sim`` (an :class:`EventSample`), cached per sample:
        one on ``sim`` itself, or ``n_ensemble`` on bootstrap replicas of it."""
        from surrogate_stats.unfold._flow_unfolder import FlowUnfoldConfig, Unfolder

        if self._cache.get("sim") is not sim:
            cfg = self.config if self.config is not None else FlowUnfoldConfig()
            rng = np.random.default_rng(_seed_words(key))
            members = []
            for k in member_keys(key, self.n_ensemble):
                w = sim.weights if self.n_ensemble == 1 else \
                    sim.weights * rng.poisson(1.0, len(sim))
                members.append(Unfolder.fit(
                    k, sim_particle=sim.particle, sim_detector=sim.detector, sim_weights=w,
                    passed_reco=sim.passed_reco, passed_truth=sim.passed_truth,
                    particle_names=sim.names, detector_names=sim.names, config=cfg,
                    progress=progress))
            self._cache.clear()
            self._cache.update(sim=sim, unfolders=members)
        return self._cache["unfolders"]

    def __call__(self, key, data: UnfoldingData, *, edges, progress: bool = False):
        from surrogate_stats._optional import optional_import

        jax = optional_import("jax")
        edges = _check_edges(data, edges)
        k_fit, k_unf, k_boot = jax.random.split(key, 3)
        members = self.unfolders(k_fit, data.sim, progress=progress)
        dat = data.data
        x, v = dat.measured()
        rng = np.random.default_rng(_seed_words(k_boot))
        boot = rng.poisson(1.0, (self.n_bootstrap, len(x))).astype(float)
        member_p, member_var, results = [], [], []
        for u, ku in zip(members, member_keys(k_unf, len(members))):
            res = u.unfold(x, n_samples=self.n_samples, key=ku, data_weights=v,
                           on_extrapolation="ignore", progress=progress)
            results.append(res)
            ps, vs = [], []
            for j, e in enumerate(edges):
                h = _per_event_hist(res.particle[:, :, j], res.weights, e)
                tot = h.sum()
                if not tot > 0:
                    raise InvalidInput(f"no unfolded weight inside the binning of "
                                       f"{data.names[j]!r}")
                ps.append(h.sum(axis=0) / tot)
                var = np.zeros(len(e) - 1)
                if self.n_bootstrap >= 2:
                    hb = boot @ h
                    var += np.var(hb / hb.sum(axis=1, keepdims=True), axis=0, ddof=1)
                vs.append(var)
            member_p.append(ps)
            member_var.append(vs)
        probs, errors = [], []
        for j in range(len(edges)):
            pj = np.array([m[j] for m in member_p])
            var = np.mean([m[j] for m in member_var], axis=0)
            if len(members) > 1:
                var = var + np.var(pj, axis=0, ddof=1)
            probs.append(pj.mean(axis=0))
            errors.append(np.sqrt(var))
        res = results[0] if len(results) == 1 else _pooled(results)
        info = {"n_samples": self.n_samples, "n_bootstrap": self.n_bootstrap,
                "n_ensemble": len(members),
                "iterations": res.history}
        if data.has_truth:
            truth = dat.particle[dat.passed_reco]
            real = dat.passed_truth[dat.passed_reco]
            if real.any():
                cov = {}
                for level in (0.68, 0.95):
                    lo, hi = res.intervals(level)
                    inside = (truth[real] >= lo[real]) & (truth[real] <= hi[real])
                    cov[str(level)] = float(inside.mean())
                info["per_event_coverage"] = cov
        t, w = res.flat()
        return UnfoldResult(self.name, tuple(probs), tuple(errors), samples=(t, w), info=info)


def _pooled(results):
    """The members' draws of every event side by side (K members of n draws: K n draws)."""
    from surrogate_stats.unfold._flow_unfolder import UnfoldedEvents

    return UnfoldedEvents(np.concatenate([r.particle for r in results], axis=1),
                          np.concatenate([r.weights for r in results], axis=1),
                          results[0].names, [r.history for r in results])


def _per_event_hist(x, w, edges) -> np.ndarray:
    """(n_events, n_bins) weighted counts of each event's draws ``x`` (n_events, k)."""
    n, k = x.shape
    nb = len(edges) - 1
    idx = np.searchsorted(edges, x, side="right") - 1
    idx = np.where(x == edges[-1], nb - 1, idx)
    ok = (idx >= 0) & (idx < nb)
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    flat = (rows * nb + np.where(ok, idx, 0))[ok]
    return np.bincount(flat, weights=(w / k)[ok], minlength=n * nb).reshape(n, nb)


@dataclass(frozen=True)
class SimulationPrior:
    """The simulation's particle level as it is (the "no unfolding" reference)."""

    name: str = "prior"

    def __call__(self, key, data: UnfoldingData, *, edges, progress: bool = False):
        del key, progress
        edges = _check_edges(data, edges)
        t, w = data.sim.truth()
        hs = [histogram(t[:, k], e, weights=w) for k, e in enumerate(edges)]
        return UnfoldResult(self.name, tuple(h[0] for h in hs), tuple(h[1] for h in hs),
                            samples=(t, w))


METHODS: dict[str, Callable[[], Callable]] = {
    "flow": FlowMethod,
    "omnifold": OmniFoldMethod,
    "ibu": IBUMethod,
}


def get_method(method, **options) -> Callable:
    """A method instance from a registry name (``options`` go to its factory), or ``method``
    itself if it is already a callable method."""
    if callable(method):
        return method
    try:
        factory = METHODS[method]
    except KeyError:
        raise InvalidInput(f"unknown unfolding method {method!r}; choose from "
                           f"{sorted(METHODS)} or pass a callable") from None
    return factory(**options)

