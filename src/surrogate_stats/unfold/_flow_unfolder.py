r"""Generative unfolding with a conditional flow :math:`p(t \mid r)` (particle given detector).

Trained on simulated pairs :math:`(t_k, r_k)` with weights :math:`w_k`:

* the **flow** :math:`q(t \mid r)` (:func:`surrogate_stats.flows.coupling_flow`) on the
  events passing both selections, by weighted maximum likelihood;
* the **efficiency** :math:`\varepsilon(t) = P(\text{passed reco} \mid t)`, a classifier on
  the events passing the particle-level selection (absent when every such event is measured);
* the **fake probability** :math:`f(r) = P(\text{no particle-level partner} \mid r)`, a
  classifier on the events passing the detector-level selection (absent without fakes).

A measured event :math:`r_i` (weight :math:`v_i`) is unfolded into draws
:math:`t_{ij} = T^{-1}(z_{ij}; r_i)`, :math:`z_{ij} \sim N(0, 1)`, each with weight
:math:`v_i\,(1 - f(r_i)) / \max(\varepsilon(t_{ij}), \varepsilon_{\min})`: the purity removes
the fakes' share, the inverse efficiency restores the events the detector lost.

**Prior dependence.** :math:`q(t \mid r) \propto p(r \mid t)\,\varepsilon(t)\,
p_\text{sim}(t)` carries the simulation's particle-level spectrum. Reweighting the simulated
particle level by :math:`g(t)` changes the posterior to :math:`q(t \mid r)\,g(t) /
E_q[g \mid r]` and the odds of a real (not fake) event at :math:`r` by the factor
:math:`E_q[g \mid r]` — exactly, so the iterations need no retraining of the flow.
:meth:`Unfolder.unfold` iterates with the data (like IBU, unbinned): with ``n_proposals``
fixed draws per event from :math:`q`, the current unfolded distribution (draws weighted by
:math:`g`, purity and efficiency) is compared with the simulated particle level by a
classifier, which gives the next :math:`g \approx p_\text{unfolded} / p_\text{sim}`
(clipped to ``[1/clip_ratio, clip_ratio]``, fitted afresh each time so that an early-stopped
fit cannot fake convergence). The
iterations stop when the **closure criterion** holds — the largest per-observable
Wasserstein-1 distance between two successive unfolded distributions, in units of the
simulated particle level's standard deviation, is below ``config.closure_tol`` — or after
``config.n_iterations``. Then (``config.absorb_prior``, the default) the flow is fine-tuned
on the simulated pairs reweighted by :math:`g(t)` and the fake classifier refitted with those
weights, so :math:`g` is absorbed: the adapted unfolder draws each sample with one flow pass.
With ``absorb_prior=False`` the final draws are instead resampled from
``max(4 n_samples, n_proposals)`` proposals per event in proportion to :math:`g`
(sampling-importance-resampling; exact for the given flow and :math:`g`, but that many
flow passes per draw). The iterations use at most ``config.max_iteration_events`` measured
events.

A trained :class:`Unfolder` saves as an artifact of kind ``"flow_unfolder"``: one ONNX graph
``detector, noise -> particle, efficiency, purity, prior_ratio`` (the base draws are an
input: nothing random runs in the graph), the arrays to rebuild the JAX model, and
(optionally) the simulated pairs so that a loaded unfolder can iterate on new data.
``load_surrogate(DIR)`` gives a :class:`LoadedUnfolder` that needs only numpy and
onnxruntime and samples like the JAX unfolder (same resampling).
"""

from __future__ import annotations

import math
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import (
    ExtrapolationError,
    ExtrapolationWarning,
    InvalidInput,
)

__all__ = ["FlowUnfoldConfig", "Unfolder", "UnfoldedEvents", "KIND", "MIN_EVENTS"]

KIND = "flow_unfolder"
MIN_EVENTS = 50  # simulated events passing both selections needed to fit anything
PARITY_RTOL = 1e-4  # ONNX float32 vs JAX float32 on the self-check events
SELF_CHECK_TOL = 1e-5  # stored ONNX outputs vs re-evaluated ONNX outputs at load
N_SELF_CHECK = 64
RATIO_PATIENCE = 8  # early-stopping patience of the prior-ratio classifier (others: 3)


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class FlowUnfoldConfig:
    """Hyperparameters of :meth:`Unfolder.fit` and :meth:`Unfolder.unfold` (JSON-able).

    Attributes:
        n_layers, hidden, knots, bound, mixing: the coupling flow (see
            :func:`surrogate_stats.flows.coupling_flow`).
        learning_rate, batch_size, max_epochs, patience, val_fraction: flow training.
        classifier_hidden: hidden widths of the efficiency, fake and reweighting classifiers.
        classifier_epochs: maximum epochs of each classifier fit (early stopping on a
            validation split, patience 3).
        min_efficiency: floor of the efficiency in the weight ``1 / efficiency``.
        n_iterations: maximum prior-reweighting iterations in :meth:`Unfolder.unfold`.
        n_proposals: flow draws per event for the iterations and the least number of
            proposals per event that the final draws are resampled from.
        max_classifier_draws: at most this many (event, draw) pairs train the reweighting
            classifier (a uniform random subset when there are more).
        closure_tol: stop iterating when max over observables of W1(iteration k, k-1) /
            std(simulated particle level) is below this.
        clip_ratio: the reweighting ratio ``g`` is clipped to ``[1/clip_ratio, clip_ratio]``.
        max_iteration_events: the iterations use at most this many measured events (a
            uniform random subset when there are more; the final draws are made for all).
        absorb_prior: after the iterations, fine-tune the flow (and refit the fake
            classifier) on the simulation reweighted by ``g``, so that the adapted unfolder
            draws each sample with one flow pass; False keeps ``g`` as a separate classifier
            and resamples every draw from ``max(4 n_samples, n_proposals)`` proposals.
        finetune_epochs, finetune_learning_rate: that fine-tuning (early stopping with
            ``patience``; starts from the trained flow and keeps its standardisation).
    """

    n_layers: int = 4
    hidden: tuple = (64, 64)
    knots: int = 8
    bound: float = 5.0
    mixing: str = "lu"
    learning_rate: float = 2e-3
    batch_size: int = 512
    max_epochs: int = 60
    patience: int = 6
    val_fraction: float = 0.15
    classifier_hidden: tuple = (32, 32)
    classifier_epochs: int = 50
    min_efficiency: float = 0.05
    n_iterations: int = 6
    n_proposals: int = 16
    max_classifier_draws: int = 100000
    closure_tol: float = 0.01
    clip_ratio: float = 20.0
    max_iteration_events: int = 50000
    absorb_prior: bool = True
    finetune_epochs: int = 60
    finetune_learning_rate: float = 5e-4

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "classifier_hidden",
                           tuple(int(h) for h in self.classifier_hidden))
        for name in ("n_layers", "knots", "batch_size", "max_epochs", "patience",
                     "classifier_epochs", "n_proposals", "max_classifier_draws",
                     "max_iteration_events", "finetune_epochs"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"FlowUnfoldConfig.{name} must be >= 1; got "
                                   f"{getattr(self, name)!r}")
        if int(self.n_iterations) < 0:
            raise InvalidInput(f"n_iterations must be >= 0; got {self.n_iterations!r}")
        if not 0 < self.min_efficiency <= 1:
            raise InvalidInput(f"min_efficiency must be in (0, 1]; got {self.min_efficiency}")
        if not 0 < self.val_fraction < 0.9:
            raise InvalidInput(f"val_fraction must be in (0, 0.9); got {self.val_fraction}")
        if not self.closure_tol > 0:
            raise InvalidInput(f"closure_tol must be positive; got {self.closure_tol}")
        if not self.clip_ratio > 1:
            raise InvalidInput(f"clip_ratio must be > 1; got {self.clip_ratio}")
        if not self.finetune_learning_rate > 0:
            raise InvalidInput(f"finetune_learning_rate must be positive; got "
                               f"{self.finetune_learning_rate}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def flow_train(self):
        from surrogate_stats.flows._train import FlowTrainConfig

        return FlowTrainConfig(learning_rate=self.learning_rate, batch_size=self.batch_size,
                               max_epochs=self.max_epochs, patience=self.patience,
                               val_fraction=self.val_fraction)


# ------------------------------------------------------------------------------ input checks
def _key(key):
    jax = optional_import("jax")
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


def _matrix(name, a, n=None, d=None, names=None) -> np.ndarray:
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a numeric array") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise InvalidInput(f"{name} must have shape (n_events, n_columns); got {a.shape}")
    if n is not None and len(a) != n:
        raise InvalidInput(f"{name} has {len(a)} events but sim_particle has {n}; particle and "
                           "detector arrays must describe the same events, one row each (fill "
                           "unmeasured values with NaN and set passed_reco/passed_truth)")
    if d is not None and a.shape[1] != d:
        cols = f" ({', '.join(names)})" if names else ""
        raise InvalidInput(f"{name} must have {d} columns{cols}; got {a.shape[1]}")
    return a


def _mask(name, m, n) -> np.ndarray:
    if m is None:
        return np.ones(n, bool)
    m = np.asarray(m)
    if m.shape != (n,):
        raise InvalidInput(f"{name} must have one entry per event, shape ({n},); got {m.shape}")
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise InvalidInput(f"{name} must hold booleans (or 0/1)")
        m = m.astype(bool)
    return m


def _check_weights(name, w, n) -> np.ndarray:
    if w is None:
        return np.ones(n)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise InvalidInput(f"{name} must have one weight per event ({n}); got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise InvalidInput(f"{name} must be finite; got NaN or inf")
    if not w.sum() > 0:
        raise InvalidInput(f"{name} must have a positive total; got {w.sum():.4g} (all-zero or "
                           "negative total weight: check the weight column)")
    return w


def _check_finite(name, a, names):
    bad = ~np.isfinite(a)
    if bad.any():
        cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise InvalidInput(f"{int(bad.any(axis=1).sum())} events of {name} have NaN/inf values "
                           f"(columns {cols}); fix them or mark the events as failing the "
                           "selection")


def _range_check(x, lo, hi, names, on_extrapolation) -> float:
    """Fraction of rows outside [lo, hi]; warn or raise (``on_extrapolation``) when > 0."""
    if on_extrapolation not in ("warn", "raise", "ignore"):
        raise InvalidInput(f"on_extrapolation must be 'warn', 'raise' or 'ignore'; got "
                           f"{on_extrapolation!r}")
    out = (x < lo) | (x > hi)
    frac = float(out.any(axis=1).mean()) if len(x) else 0.0
    if frac > 0 and on_extrapolation != "ignore":
        cols = [names[j] for j in np.flatnonzero(out.any(axis=0))]
        msg = (f"{frac:.2%} of the measured events ({int(out.any(axis=1).sum())} of {len(x)}) "
               f"lie outside the simulated detector-level range (columns {cols}); the "
               "unfolding extrapolates there — simulate a wider phase space or cut the data")
        if on_extrapolation == "raise":
            raise ExtrapolationError(msg)
        warnings.warn(msg, ExtrapolationWarning, stacklevel=3)
    return frac


# ------------------------------------------------------------------------------ classifiers
def _clf_logit(ops, clf, x):
    from surrogate_stats.flows._flow import _mlp

    return ops.sum_last(_mlp(ops, clf["params"], (x - clf["loc"]) / clf["scale"]))


def _sigmoid(ops, z):
    return 1.0 / (1.0 + ops.exp(-z))


def _fit_classifier(key, x, y, w, *, hidden, epochs, init=None, progress=False, desc="clf",
                    patience=3, learning_rate=2e-3):
    """Weighted logistic regression with an MLP; returns {params, loc, scale} (float32)."""
    jax = optional_import("jax")
    jnp = jax.numpy
    from surrogate_stats.flows._flow import _init_mlp
    from surrogate_stats.flows._ops import JaxOps
    from surrogate_stats.train._loop import MinibatchConfig, fit_minibatch

    if init is None:
        loc = x.mean(axis=0)
        scale = x.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
    else:
        loc, scale = init["loc"], init["scale"]
    k_init, k_split, k_fit = jax.random.split(key, 3)
    params = (init["params"] if init is not None else
              _init_mlp(k_init, [x.shape[1], *hidden, 1], jnp.float32))
    w = w / np.mean(w)
    perm = np.asarray(jax.random.permutation(k_split, len(x)))
    n_val = max(1, int(0.2 * len(x)))
    val, tr = perm[:n_val], perm[n_val:]
    ops = JaxOps(jnp.float32)
    clf0 = {"loc": jnp.asarray(loc, jnp.float32), "scale": jnp.asarray(scale, jnp.float32)}

    def part(idx):
        return {"x": jnp.asarray(x[idx], jnp.float32), "y": jnp.asarray(y[idx], jnp.float32),
                "w": jnp.asarray(w[idx], jnp.float32)}

    def loss_fn(p, b):
        z = _clf_logit(ops, {**clf0, "params": p}, b["x"])
        ll = b["y"] * jax.nn.log_sigmoid(z) + (1 - b["y"]) * jax.nn.log_sigmoid(-z)
        return -jnp.mean(b["w"] * ll)

    cfg = MinibatchConfig(learning_rate=learning_rate, batch_size=1024,
                          max_epochs=int(epochs), patience=int(patience))
    params, _ = fit_minibatch(k_fit, params, loss_fn, part(tr), part(val), config=cfg,
                              progress=progress, desc=desc)
    return {"params": {k: np.asarray(v, np.float32) for k, v in params.items()},
            "loc": np.asarray(loc, np.float32), "scale": np.asarray(scale, np.float32)}


def _clf_arrays(clf) -> dict:
    return {**{f"params.{k}": np.asarray(v) for k, v in clf["params"].items()},
            **{k: np.asarray(clf[k]) for k in ("loc", "scale", "clip") if k in clf}}


def _clf_from_arrays(a, dtype=np.float32) -> dict:
    return {"params": {k.split(".", 1)[1]: np.asarray(v, dtype) for k, v in a.items()
                       if k.startswith("params.")},
            **{k: np.asarray(a[k], dtype) for k in ("loc", "scale", "clip") if k in a}}


def _ratio_classifier(key, xa, wa, xb, wb, *, hidden, epochs, clip, init=None):
    """A classifier A vs B with equal class weights: exp(logit) = p_A(x) / p_B(x); the
    clipping bound is stored with it."""
    x = np.concatenate([xa, xb])
    y = np.concatenate([np.ones(len(xa)), np.zeros(len(xb))])
    w = np.concatenate([wa / wa.sum(), wb / wb.sum()]) * len(x) / 2
    clf = _fit_classifier(key, x, y, w, hidden=hidden, epochs=epochs, init=init,
                          patience=RATIO_PATIENCE)
    clf["clip"] = np.asarray(math.log(clip), np.float32)
    return clf


def _ratio(ops, clf, x):
    c = float(clf["clip"])
    return ops.exp(ops.clip(_clf_logit(ops, clf, x), -c, c))


def _f64(clf):
    out = {"params": {k: np.asarray(v, np.float64) for k, v in clf["params"].items()},
           "loc": np.asarray(clf["loc"], np.float64),
           "scale": np.asarray(clf["scale"], np.float64)}
    if "clip" in clf:
        out["clip"] = np.asarray(clf["clip"], np.float64)
    return out


# ------------------------------------------------------------------------------ the map
def _unfold_fn(ops, flow, consts, eff, fake, prior, r, z, min_eff):
    """detector, noise -> (particle, efficiency, purity, prior_ratio), any ops vocabulary."""
    from surrogate_stats.flows._flow import flow_inverse

    t, _ = flow_inverse(ops, flow, consts, z, r)
    one = ops.sum_last(z * 0.0) + 1.0
    e = one if eff is None else ops.clip(_sigmoid(ops, _clf_logit(ops, eff, t)), min_eff, 1.0)
    p = one if fake is None else _sigmoid(ops, -_clf_logit(ops, fake, r))
    g = one if prior is None else _ratio(ops, prior, t)
    return t, e, p, g


def _posterior_weights(eff, pur, g, v):
    """Per draw, the weight of the unfolded distribution, and per event the resampling
    probabilities and adapted purity (module docstring); inputs ``(n, M)`` except ``v``."""
    a = g.mean(axis=1)
    p0 = pur[:, 0]
    purity = np.where(p0 >= 1.0, 1.0, p0 * a / np.maximum(p0 * a + (1.0 - p0), 1e-300))
    prob = g / g.sum(axis=1, keepdims=True)
    return (v * purity)[:, None] * prob / eff, prob, purity


def _resample(rng, t, eff, prob, purity, v, k):
    """``k`` of the ``M`` proposals per event drawn with probabilities ``prob``."""
    n, m = prob.shape
    c = np.cumsum(prob, axis=1)
    out_t = np.empty((n, k, t.shape[2]))
    out_w = np.empty((n, k))
    step = max(1, 2**24 // max(k * m, 1))
    for i in range(0, n, step):
        u = rng.random((min(step, n - i), k))
        idx = np.minimum((u[:, :, None] > c[i:i + step, None, :]).sum(-1), m - 1)
        rows = np.arange(len(idx))[:, None]
        out_t[i:i + step] = t[i:i + step][rows, idx]
        out_w[i:i + step] = (v[i:i + step] * purity[i:i + step])[:, None] / \
            eff[i:i + step][rows, idx]
    return out_t, out_w


@dataclass(frozen=True, eq=False)  # holds arrays: identity equality
class UnfoldedEvents:
    """Posterior draws of the particle level for each measured event.

    Attributes:
        particle: ``(n_events, n_samples, d)`` draws.
        weights: ``(n_events, n_samples)`` weights (event weight × purity / efficiency); a
            distribution is ``particle`` histogrammed with ``weights / n_samples``.
            The draws of one event follow its posterior (under the adapted prior after
            iterations); the weights do not change that posterior, they only correct the
            distribution's normalisation for fakes and inefficiency.
        names: particle-level column names.
        history: the iterations: per iteration the closure distance, the fake fraction, etc.
        unfolder: the unfolder after the iterations (save it to publish the adapted model);
            None for a loaded (ONNX) unfolder.
        out_of_range_fraction: share of the events outside the simulated detector range.
    """

    particle: np.ndarray
    weights: np.ndarray
    names: tuple
    history: list = field(default_factory=list)
    unfolder: object = None
    out_of_range_fraction: float = 0.0

    @property
    def n_samples(self) -> int:
        return self.particle.shape[1]

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """``(n_events * n_samples, d)`` draws and their weights (divided by n_samples)."""
        d = self.particle.shape[2]
        return self.particle.reshape(-1, d), self.weights.reshape(-1) / self.n_samples

    def intervals(self, level: float = 0.68) -> tuple[np.ndarray, np.ndarray]:
        """Per event and observable, the central ``level`` interval of the draws
        (``(lo, hi)``, each ``(n_events, d)``; efficiency weights ignored)."""
        if not 0 < level < 1:
            raise InvalidInput(f"level must be in (0, 1); got {level}")
        if self.n_samples < 2:
            raise InvalidInput("per-event intervals need n_samples >= 2")
        a = (1 - level) / 2
        lo, hi = np.quantile(self.particle, [a, 1 - a], axis=1)
        return lo, hi

    def __repr__(self):
        return (f"UnfoldedEvents(events={self.particle.shape[0]}, n_samples={self.n_samples}, "
                f"names={list(self.names)}, iterations={len(self.history)})")


# ------------------------------------------------------------------------------ Unfolder
class Unfolder:
    """A trained generative unfolder (JAX); build one with :meth:`fit`.

    Attributes:
        flow: the conditional flow ``p(particle | detector)``.
        efficiency, fakes: classifiers (dicts of arrays) or None.
        prior: the prior-ratio classifier ``g`` after :meth:`unfold`'s iterations with
            ``config.absorb_prior=False`` (None for the simulation's prior, and when ``g``
            was absorbed into the flow: see :attr:`adapted`).
        particle_names, detector_names: column names.
        detector_range: ``(lo, hi)`` of the simulated detector level (measured events).
        config: :class:`FlowUnfoldConfig`.
        history: training record (JSON-able).
    """

    def __init__(self, flow, *, efficiency, fakes, particle_names, detector_names,
                 detector_range, particle_scale, config, history=None, simulation=None,
                 prior=None):
        self.flow = flow
        self.efficiency, self.fakes, self.prior = efficiency, fakes, prior
        self.particle_names = tuple(particle_names)
        self.detector_names = tuple(detector_names)
        self.detector_range = (np.asarray(detector_range[0], float),
                               np.asarray(detector_range[1], float))
        self.particle_scale = np.asarray(particle_scale, float)
        self.config = config
        self.history = history or {}
        self.simulation = simulation  # dict of the training arrays (for the iterations)
        self._fn = None

    def __repr__(self):
        return (f"Unfolder(particle={list(self.particle_names)}, detector="
                f"{list(self.detector_names)}, efficiency={self.efficiency is not None}, "
                f"fakes={self.fakes is not None}, adapted={self.adapted})")

    @property
    def adapted(self) -> bool:
        """Whether the prior was adapted to data (a ``g`` classifier, or absorbed)."""
        return self.prior is not None or bool(self.history.get("absorbed_prior"))

    # ---------------------------------------------------------------- fit
    @classmethod
    def fit(cls, key, *, sim_particle, sim_detector, sim_weights=None, passed_reco=None,
            passed_truth=None, particle_names=None, detector_names=None,
            config: FlowUnfoldConfig = FlowUnfoldConfig(), progress: bool = True) -> Unfolder:
        """Train the flow and the efficiency and fake classifiers on simulated pairs.

        Args:
            key: JAX random key (or an int seed).
            sim_particle: ``(n, d_particle)`` particle level (rows failing ``passed_truth``
                may be NaN).
            sim_detector: ``(n, d_detector)`` detector level of the same events (rows failing
                ``passed_reco`` may be NaN).
            sim_weights: ``(n,)`` event weights (positive total; default ones).
            passed_reco, passed_truth: ``(n,)`` selection masks (default all True).
            particle_names, detector_names: column names (default ``t0..``, ``r0..``).
            config: :class:`FlowUnfoldConfig`.
            progress: tqdm bars.

        Raises:
            InvalidInput: mismatched shapes, NaN/inf in events passing a selection, a
                non-positive total weight, fewer than ``MIN_EVENTS`` events passing both
                selections.
        """
        from surrogate_stats.flows._flow import coupling_flow
        from surrogate_stats.flows._train import fit_flow

        jax = optional_import("jax")
        t0 = time.perf_counter()
        t = _matrix("sim_particle", sim_particle)
        n, dp = t.shape
        r = _matrix("sim_detector", sim_detector, n)
        dd = r.shape[1]
        particle_names = tuple(particle_names or [f"t{j}" for j in range(dp)])
        detector_names = tuple(detector_names or [f"r{j}" for j in range(dd)])
        if len(particle_names) != dp or len(detector_names) != dd:
            raise InvalidInput(f"got {len(particle_names)} particle names for {dp} columns and "
                               f"{len(detector_names)} detector names for {dd} columns")
        w = _check_weights("sim_weights", sim_weights, n)
        reco = _mask("passed_reco", passed_reco, n)
        truth = _mask("passed_truth", passed_truth, n)
        _check_finite("sim_particle (passing passed_truth)", t[truth], particle_names)
        _check_finite("sim_detector (passing passed_reco)", r[reco], detector_names)
        both = reco & truth
        if both.sum() < MIN_EVENTS:
            raise InvalidInput(f"only {int(both.sum())} simulated events pass both selections; "
                               f"need at least {MIN_EVENTS} to learn the detector response")
        if not w[both].sum() > 0:
            raise InvalidInput("the events passing both selections have a non-positive total "
                               "weight")
        k_flow, k_fit, k_eff, k_fake = jax.random.split(_key(key), 4)
        flow = coupling_flow(k_flow, dim=dp, cond_dim=dd, n_layers=config.n_layers,
                             hidden=config.hidden, knots=config.knots, bound=config.bound,
                             mixing=config.mixing)
        flow, hist = fit_flow(k_fit, flow, t[both], condition=r[both], weights=w[both],
                              config=config.flow_train(), progress=progress,
                              desc="unfolding flow")
        missed = truth & ~reco
        eff = None
        if missed.any():
            eff = _fit_classifier(k_eff, t[truth], reco[truth].astype(float), w[truth],
                                  hidden=config.classifier_hidden,
                                  epochs=config.classifier_epochs, progress=progress,
                                  desc="efficiency")
        fake = None
        if (reco & ~truth).any():
            fake = _fit_classifier(k_fake, r[reco], (~truth[reco]).astype(float), w[reco],
                                   hidden=config.classifier_hidden,
                                   epochs=config.classifier_epochs, progress=progress,
                                   desc="fakes")
        tt, wt = t[truth], w[truth]
        m = np.average(tt, axis=0, weights=wt)
        scale = np.sqrt(np.average((tt - m) ** 2, axis=0, weights=wt))
        rm = r[reco]
        history = {"flow": {"train_loss": hist.train_loss, "val_loss": hist.val_loss,
                            "epochs": len(hist.val_loss)},
                   "n_sim": int(n), "n_both": int(both.sum()), "n_missed": int(missed.sum()),
                   "n_fakes": int((reco & ~truth).sum()),
                   "efficiency": float(w[both].sum() / w[truth].sum()),
                   "fake_fraction": float(w[reco & ~truth].sum() / w[reco].sum()),
                   "train_seconds": time.perf_counter() - t0}
        simulation = {"particle": np.where(truth[:, None], t, 0.0),
                      "detector": np.where(reco[:, None], r, 0.0), "weights": w,
                      "passed_reco": reco.astype(float), "passed_truth": truth.astype(float)}
        return cls(flow, efficiency=eff, fakes=fake, particle_names=particle_names,
                   detector_names=detector_names, detector_range=(rm.min(0), rm.max(0)),
                   particle_scale=np.where(scale > 0, scale, 1.0), config=config,
                   history=history, simulation=simulation)

    # ---------------------------------------------------------------- sampling
    def _jit(self):
        if self._fn is None:
            jax = optional_import("jax")
            jnp = jax.numpy
            from surrogate_stats.flows._flow import prepared
            from surrogate_stats.flows._ops import JaxOps

            f = self.flow
            consts = prepared(f, jnp, inverse=True)
            eff, fake, prior = self.efficiency, self.fakes, self.prior
            me = float(self.config.min_efficiency)

            @jax.jit
            def fn(r, z):
                return _unfold_fn(JaxOps(jnp.float32), f, consts, eff, fake, prior, r, z, me)
            self._fn = fn
        return self._fn

    def sample(self, detector, noise, *, batch_size: int = 65536):
        """One flow draw per row of ``detector`` from the base draws ``noise`` (same rows).

        Returns:
            ``(particle (N, d), efficiency (N,), purity (N,), prior_ratio (N,))`` as numpy
            float64: the draw, the (floored) efficiency at the draw, the simulation's purity
            ``1 - P(fake | detector)`` and the prior ratio ``g`` at the draw (1 before any
            iteration). The ONNX graph computes the same.
        """
        jax = optional_import("jax")
        r = _matrix("detector", detector, d=len(self.detector_names),
                    names=self.detector_names)
        z = _matrix("noise", noise, len(r), len(self.particle_names))
        fn = self._jit()
        n = len(r)
        outs = [np.empty((n, z.shape[1])), np.empty(n), np.empty(n), np.empty(n)]
        chunk = int(min(batch_size, max(256, 1 << max(n - 1, 1).bit_length())))
        for i in range(0, n, chunk):
            m = min(chunk, n - i)
            rp = np.zeros((chunk, r.shape[1]), np.float32)
            zp = np.zeros((chunk, z.shape[1]), np.float32)
            rp[:m], zp[:m] = r[i:i + m], z[i:i + m]
            res = jax.device_get(fn(rp, zp))
            for o, v in zip(outs, res):
                o[i:i + m] = np.asarray(v, np.float64)[:m]
        return tuple(outs)

    # ---------------------------------------------------------------- unfold
    def unfold(self, data_detector, *, n_samples: int = 1, key=0, data_weights=None,
               iterate: bool = True, n_iterations: int | None = None,
               absorb_prior: bool | None = None, on_extrapolation: str = "warn",
               progress: bool = False) -> UnfoldedEvents:
        """Unfold measured events: per event ``n_samples`` posterior draws and weights.

        With ``iterate`` (default) and the simulated pairs available, the prior dependence
        is reduced first (module docstring): reweight the simulated particle level towards
        the unfolded result, repeat until the closure criterion holds.

        Args:
            data_detector: ``(N, d_detector)`` measured events (all passing the detector
                selection).
            n_samples: posterior draws per event (>= 1).
            key: JAX key or int seed (base draws, classifier randomness, resampling).
            data_weights: ``(N,)`` event weights (default ones).
            iterate: run the prior-reweighting iterations.
            n_iterations: maximum iterations (default ``config.n_iterations``).
            absorb_prior: fine-tune the flow on the reweighted simulation after the
                iterations (default ``config.absorb_prior``; module docstring).
            on_extrapolation: ``"warn"``, ``"raise"`` or ``"ignore"`` for events outside
                the simulated detector-level range.

        Returns:
            :class:`UnfoldedEvents` (``.unfolder`` is the adapted unfolder).
        """
        jax = optional_import("jax")
        tqdm = optional_import("tqdm.auto").tqdm
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise InvalidInput(f"n_samples must be a positive integer; got {n_samples!r}")
        r = _matrix("data_detector", data_detector, d=len(self.detector_names),
                    names=self.detector_names)
        if len(r) == 0:
            raise InvalidInput("data_detector holds no events")
        _check_finite("data_detector", r, self.detector_names)
        v = _check_weights("data_weights", data_weights, len(r))
        frac = _range_check(r, *self.detector_range, self.detector_names, on_extrapolation)
        n_it = self.config.n_iterations if n_iterations is None else n_iterations
        if not isinstance(n_it, (int, np.integer)) or n_it < 0:
            raise InvalidInput(f"n_iterations must be an integer >= 0; got {n_it!r}")
        key = _key(key)
        k_noise, k_iter, k_final = jax.random.split(key, 3)
        dp = len(self.particle_names)
        u = self
        history = []
        if iterate and n_it > 0:
            if self.simulation is None:
                raise InvalidInput("this unfolder was saved without its simulated events, so "
                                   "it cannot iterate; pass iterate=False")
            m = self.config.n_proposals
            ri, vi = r, v
            if len(r) > self.config.max_iteration_events:
                keep = np.sort(np.asarray(jax.random.choice(
                    jax.random.fold_in(key, 1), len(r), (self.config.max_iteration_events,),
                    replace=False)))
                ri, vi = r[keep], v[keep]
            z = np.asarray(jax.random.normal(k_noise, (len(ri), m, dp)), np.float64)
            t, eff, pur, g = (a.reshape(len(ri), m, *a.shape[1:]) for a in
                              self.sample(np.repeat(ri, m, axis=0), z.reshape(-1, dp)))
            prev = (t, _posterior_weights(eff, pur, g, vi)[0])
            for it in tqdm(range(n_it), desc="unfold iterations", disable=not progress,
                           leave=False):
                u, g, rec = u._iterate(jax.random.fold_in(k_iter, it), *prev)
                cur = (t, _posterior_weights(eff, pur, g, vi)[0])
                dist = _closure_distance(prev, cur, self.particle_scale)
                history.append({"iteration": it + 1, "closure_distance": dist, **rec})
                prev = cur
                if dist < self.config.closure_tol:
                    break
            absorb = self.config.absorb_prior if absorb_prior is None else bool(absorb_prior)
            if absorb and u.prior is not None:
                u = u._absorb(jax.random.fold_in(key, 2), progress=progress)
        return u._final(r, v, n_samples, k_final, history, frac)

    def _final(self, r, v, k, key, history, frac):
        jax = optional_import("jax")
        dp = len(self.particle_names)
        m = k if self.prior is None else max(4 * k, self.config.n_proposals)
        k_z, k_u = jax.random.split(key)
        z = np.asarray(jax.random.normal(k_z, (len(r), m, dp)), np.float64)
        t, eff, pur, g = (a.reshape(len(r), m, *a.shape[1:]) for a in
                          self.sample(np.repeat(r, m, axis=0), z.reshape(-1, dp)))
        if self.prior is None:
            w = (v[:, None] * pur) / eff
        else:
            _, prob, purity = _posterior_weights(eff, pur, g, v)
            rng = np.random.default_rng(np.asarray(jax.random.key_data(k_u)).ravel().tolist())
            t, w = _resample(rng, t, eff, prob, purity, v, k)
        return UnfoldedEvents(t, w, self.particle_names, history, self, frac)

    def _iterate(self, key, draws, weights):
        """One prior-reweighting step: (new unfolder, g at the draws, record)."""
        from surrogate_stats.flows._ops import NumpyOps

        jax = optional_import("jax")
        cfg = self.config
        s = self.simulation
        t, w = s["particle"], s["weights"]
        truth = s["passed_truth"] > 0
        k_sub, k_g = jax.random.split(key)
        xa = draws.reshape(-1, draws.shape[2])
        wa = weights.reshape(-1)
        keep = np.flatnonzero(wa > 0)
        if len(keep) > cfg.max_classifier_draws:
            keep = np.sort(np.asarray(jax.random.choice(k_sub, keep, (cfg.max_classifier_draws,),
                                                        replace=False)))
        prior = _ratio_classifier(k_g, xa[keep], wa[keep], t[truth], w[truth],
                                  hidden=cfg.classifier_hidden, epochs=cfg.classifier_epochs,
                                  clip=cfg.clip_ratio, init=None)
        g = _ratio(NumpyOps(np.float64), _f64(prior), xa).reshape(draws.shape[:2])
        new = Unfolder(self.flow, efficiency=self.efficiency, fakes=self.fakes,
                       prior=prior, particle_names=self.particle_names,
                       detector_names=self.detector_names, detector_range=self.detector_range,
                       particle_scale=self.particle_scale, config=cfg, history=self.history,
                       simulation=self.simulation)
        gs = _ratio(NumpyOps(np.float64), _f64(prior), t[truth])
        ess = float(np.sum(w[truth] * gs) ** 2 / np.sum((w[truth] * gs) ** 2))
        return new, g, {"ratio_min": float(gs.min()), "ratio_max": float(gs.max()),
                        "effective_sim_events": ess}

    def _absorb(self, key, *, progress=False):
        """The unfolder with ``g`` absorbed: the flow fine-tuned on the simulated pairs
        reweighted by ``g(t)``, the fake classifier refitted with those weights (its odds
        change by E_q[g | r], module docstring), the efficiency kept (it does not depend on
        the prior) and the stored simulation reweighted, so that later iterations start
        from the adapted prior."""
        from surrogate_stats.flows._ops import NumpyOps
        from surrogate_stats.flows._train import FlowTrainConfig, fit_flow

        jax = optional_import("jax")
        cfg, s = self.config, self.simulation
        t0 = time.perf_counter()
        truth, reco = s["passed_truth"] > 0, s["passed_reco"] > 0
        both = truth & reco
        g = np.ones(len(truth))
        g[truth] = _ratio(NumpyOps(np.float64), _f64(self.prior), s["particle"][truth])
        w = s["weights"] * g
        k_flow, k_fake = jax.random.split(key)
        tc = FlowTrainConfig(learning_rate=cfg.finetune_learning_rate,
                             batch_size=cfg.batch_size, max_epochs=cfg.finetune_epochs,
                             patience=cfg.patience, val_fraction=cfg.val_fraction)
        flow, hist = fit_flow(k_flow, self.flow, s["particle"][both],
                              condition=s["detector"][both], weights=w[both], config=tc,
                              progress=progress, desc="absorb prior", standardise=False)
        fakes = self.fakes
        if fakes is not None:
            fakes = _fit_classifier(k_fake, s["detector"][reco], (~truth[reco]).astype(float),
                                    w[reco], hidden=cfg.classifier_hidden,
                                    epochs=cfg.classifier_epochs, init=self.fakes)
        rec = {"epochs": len(hist.val_loss), "val_loss": hist.val_loss,
               "ratio_min": float(g[truth].min()), "ratio_max": float(g[truth].max()),
               "seconds": time.perf_counter() - t0}
        absorbed = [*self.history.get("absorbed_prior", []), rec]
        return Unfolder(flow, efficiency=self.efficiency, fakes=fakes, prior=None,
                        particle_names=self.particle_names,
                        detector_names=self.detector_names,
                        detector_range=self.detector_range,
                        particle_scale=self.particle_scale, config=cfg,
                        history={**self.history, "absorbed_prior": absorbed},
                        simulation={**s, "weights": w})

    # ---------------------------------------------------------------- persistence
    def save(self, directory, *, name: str | None = None,
             include_simulation: bool = True) -> Path:
        """Write the unfolder as an artifact of kind ``flow_unfolder``.

        ``include_simulation`` stores the simulated pairs (float64) so that a loaded
        unfolder (:meth:`load`, or ``surrogate-stats unfold apply``) can run the
        prior-reweighting iterations on new data.
        """
        return _save(self, directory, name=name, include_simulation=include_simulation)

    @classmethod
    def load(cls, directory) -> Unfolder:
        """The JAX unfolder of a saved artifact (verified like :func:`load_surrogate`)."""
        from surrogate_stats.artifact._format import load_arrays, read_artifact
        from surrogate_stats.errors import InvalidArtifact
        from surrogate_stats.flows._flow import Flow

        meta, _, arrays = read_artifact(directory)
        if meta.get("kind") != KIND:
            raise InvalidArtifact(f"{directory} holds a {meta.get('kind')!r} artifact, not a "
                                  f"{KIND!r}")
        try:
            optional_import("jax")
            flow = Flow.from_arrays(meta["flow"], load_arrays(arrays, "flow", []))
            cfg = FlowUnfoldConfig(**meta["config"])
            eff = _clf_from_arrays(arrays["efficiency"]) if "efficiency" in arrays else None
            fake = _clf_from_arrays(arrays["fakes"]) if "fakes" in arrays else None
            prior = (_clf_from_arrays(arrays["prior_ratio"]) if "prior_ratio" in arrays
                     else None)
            sim = dict(arrays["simulation"]) if "simulation" in arrays else None
            rng = meta["detector_range"]
            return cls(flow, efficiency=eff, fakes=fake,
                       particle_names=meta["particle"], detector_names=meta["detector"],
                       detector_range=(rng["lo"], rng["hi"]),
                       particle_scale=meta["particle_scale"], config=cfg,
                       history=meta.get("training", {}), simulation=sim, prior=prior)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArtifact(f"metadata.json of {directory} is malformed: {exc}") from None


def _closure_distance(prev, cur, scale) -> float:
    from surrogate_stats.unfold._metrics import wasserstein1

    (ta, wa), (tb, wb) = prev, cur
    ta, tb = ta.reshape(-1, ta.shape[2]), tb.reshape(-1, tb.shape[2])
    wa, wb = np.clip(wa.reshape(-1), 0, None), np.clip(wb.reshape(-1), 0, None)
    return float(max(wasserstein1(ta[:, j], tb[:, j], u_weights=wa, v_weights=wb) / scale[j]
                     for j in range(ta.shape[1])))


# ------------------------------------------------------------------------------ artifact
def _graph(u: Unfolder, dtype="float32"):
    from surrogate_stats.flows._flow import prepared
    from surrogate_stats.flows._onnx import _numpy_flow
    from surrogate_stats.flows._ops import OnnxOps

    nf = _numpy_flow(u.flow)
    dp, dd = len(u.particle_names), len(u.detector_names)
    ops = OnnxOps(dtype)
    r = ops.input("detector", ["N", dd])
    z = ops.input("noise", ["N", dp])
    eff = None if u.efficiency is None else _f64(u.efficiency)
    fake = None if u.fakes is None else _f64(u.fakes)
    prior = None if u.prior is None else _f64(u.prior)
    t, e, p, g = _unfold_fn(ops, nf, prepared(nf, np, inverse=True), eff, fake, prior, r, z,
                            float(u.config.min_efficiency))
    blob = ops.model({"particle": (t, ["N", dp]), "efficiency": (e, ["N"]),
                      "purity": (p, ["N"]), "prior_ratio": (g, ["N"])}, name="flow_unfolder")

    def s(n, shape, meaning):
        return {"name": n, "dtype": dtype, "shape": shape, "meaning": meaning}

    spec = {"inputs": [s("detector", ["N", dd], "measured event (" + ", ".join(
                u.detector_names) + ")"),
                       s("noise", ["N", dp], "standard-normal base draws")],
            "outputs": [s("particle", ["N", dp], "posterior draw (" + ", ".join(
                u.particle_names) + ")"),
                        s("efficiency", ["N"], "P(passed reco | particle draw), floored"),
                        s("purity", ["N"], "1 - P(fake | detector) under the simulation"),
                        s("prior_ratio", ["N"], "g(particle draw): adapted / simulated "
                                                "particle-level density (1: not adapted)")]}
    return blob, spec


def _versions():
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for p in ("surrogate_stats", "jax", "onnx", "onnxruntime", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def _save(u: Unfolder, directory, *, name=None, include_simulation=True) -> Path:
    import onnxruntime as ort

    from surrogate_stats.artifact._format import write_artifact
    from surrogate_stats.errors import InvalidArtifact

    name = name or Path(directory).name
    blob, spec = _graph(u)
    rng = np.random.default_rng(12345)
    lo, hi = u.detector_range
    dp = len(u.particle_names)
    r = (lo + (hi - lo) * rng.random((N_SELF_CHECK, len(lo)))).astype(np.float32)
    z = rng.standard_normal((N_SELF_CHECK, dp)).astype(np.float32)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    onnx_out = [o.astype(np.float64) for o in sess.run(None, {"detector": r, "noise": z})]
    jax_out = u.sample(r.astype(np.float64), z.astype(np.float64))
    parity = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0)))
                 for a, b in zip(onnx_out, jax_out))
    if parity > PARITY_RTOL:
        raise InvalidArtifact(f"ONNX graph and JAX disagree by {parity:.3g} (relative) on the "
                              "self-check events; refusing to write the artifact")
    meta = {
        "kind": KIND,
        "name": name,
        "graphs": {"model": spec},
        "particle": list(u.particle_names),
        "detector": list(u.detector_names),
        "detector_range": {"lo": [float(x) for x in lo], "hi": [float(x) for x in hi]},
        "particle_scale": [float(x) for x in u.particle_scale],
        "min_efficiency": float(u.config.min_efficiency),
        "has_efficiency": u.efficiency is not None,
        "has_fakes": u.fakes is not None,
        "has_prior_ratio": u.prior is not None,
        "prior_absorbed": bool(u.history.get("absorbed_prior")),
        "n_proposals": int(u.config.n_proposals),
        "flow": u.flow.structure(),
        "config": u.config.as_dict(),
        "training": _jsonable(u.history),
        "self_check": {"onnx_vs_jax_max_rel": parity, "tolerance": SELF_CHECK_TOL},
        "provenance": {"versions": _versions()},
        "method": "conditional RQ-spline coupling flow p(particle | detector); weights "
                  "purity/efficiency from classifiers; see docs/unfold.md",
    }
    arrays = {"flow": u.flow.arrays(),
              "self_check": {"detector": r.astype(np.float64), "noise": z.astype(np.float64),
                             **{k: o for k, o in zip(("particle", "efficiency", "purity",
                                                      "prior_ratio"), onnx_out)}}}
    if u.efficiency is not None:
        arrays["efficiency"] = _clf_arrays(u.efficiency)
    if u.fakes is not None:
        arrays["fakes"] = _clf_arrays(u.fakes)
    if u.prior is not None:
        arrays["prior_ratio"] = _clf_arrays(u.prior)
    if include_simulation and u.simulation is not None:
        arrays["simulation"] = {k: np.asarray(v, np.float64) for k, v in u.simulation.items()}
    return write_artifact(directory, meta, {"model": blob}, arrays)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
