"""Training a yield-parametrised surrogate on exact labels (JAX + optax, float64)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.likelihood._yields_labels import DATASETS, YieldLabels
from surrogate_stats.likelihood._yields_surrogate import (
    YieldBaseline,
    YieldLikelihoodSurrogate,
    YieldNetwork,
)
from surrogate_stats.train import TrainConfig, fit, member_keys, split_indices

__all__ = ["YieldSurrogateConfig", "fit_yield_surrogate"]


@dataclass(frozen=True)
class YieldSurrogateConfig:
    """Network and training settings of a yield surrogate.

    Attributes:
        hidden: widths of the tanh hidden layers.
        val_fraction: labelled points held out for early stopping and the reported errors.
        tmu_core: points whose -2 ln lambda (per data set) is above this weigh less
            (~(core/tmu)^2).
        baseline: ``"effective_poisson"`` (:meth:`YieldBaseline.effective_poisson`) or
            ``"none"`` (the network learns the whole -ln L difference).
        ray_minima: also fit each ray's best fit on the observed data (its yields and
            -ln L(mu_hat), observed output only). Where the data have an excess, these points
            mark the bottom of the observed valley that -2 ln lambda is measured from.
        gradient_weight: weight of the derivative term of the loss (0: values only). Each
            label carries the exact gradient of its profiled -ln L in the yields; the network
            is also fitted to the derivative along the point's signal ray,
            ``d/dmu nll(mu s) = s . grad``, which is what -2 ln lambda along a ray integrates.
        gradient_direction: which derivative the gradient term fits: ``"ray"``, the
            derivative along the point's own signal ray (``y . grad``), or ``"random"``, the
            derivative along one random direction per point (isotropic in the yields in units
            of each bin's sensitivity, as long as the point's own yield vector). Values along
            a ray already fix the derivative along it; a random direction also constrains how
            -ln L changes *across* rays, which is where the network interpolates between the
            sampled signal shapes.
        ensemble: networks trained from different initialisations on the same split and
            averaged. The average is itself one tanh MLP (the members side by side, block-
            diagonal hidden weights, the output layer divided by their number), so the artifact
            and its ONNX graph keep their form; training takes ``ensemble`` times as long.
            The default, five, because one network overfits the labels (its validation loss
            can stop improving after a quarter of the schedule) and its errors depend on its
            initialisation as much as on anything else; the average of five much less.
        train: the optimiser settings (:class:`surrogate_stats.train.TrainConfig`): Adam on
            random mini-batches of 1024 points (seven times faster per network than full-batch
            steps here, and no worse), the whole cosine schedule (the parameters best on the
            validation split are kept), then an L-BFGS polish on the whole training split,
            kept only if it lowers the validation loss (in the benchmark it was kept for every
            network on sbottom A, sbottom C and displaced leptons, for none on 3L).
    """

    hidden: tuple = (64, 64, 64)
    val_fraction: float = 0.15
    tmu_core: float = 9.0
    baseline: str = "none"
    ray_minima: bool = False
    gradient_weight: float = 0.0
    gradient_direction: str = "ray"
    ensemble: int = 5
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        learning_rate=3e-3, steps=12000, chunk=250, patience=48, polish_steps=300,
        batch_size=1024))

    def __post_init__(self):
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise InvalidInput(f"hidden must be a non-empty tuple of widths; got {self.hidden}")
        if self.baseline not in ("effective_poisson", "none"):
            raise InvalidInput(f"baseline must be 'effective_poisson' or 'none'; got "
                               f"{self.baseline!r}")
        if not (self.gradient_weight >= 0 and np.isfinite(self.gradient_weight)):
            raise InvalidInput(f"gradient_weight must be a finite number >= 0; got "
                               f"{self.gradient_weight}")
        if self.gradient_direction not in ("ray", "random"):
            raise InvalidInput(f"gradient_direction must be 'ray' or 'random'; got "
                               f"{self.gradient_direction!r}")
        if self.gradient_direction == "random" and self.baseline != "none":
            raise InvalidInput("gradient_direction='random' needs baseline='none' (the "
                               "baseline's derivative is only available along the ray)")
        if int(self.ensemble) != self.ensemble or self.ensemble < 1:
            raise InvalidInput(f"ensemble must be an integer >= 1; got {self.ensemble}")
        if not 0 < self.val_fraction < 0.5:
            raise InvalidInput(f"val_fraction must be in (0, 0.5); got {self.val_fraction}")


def _init(key, sizes):
    jax = optional_import("jax")
    jnp = jax.numpy
    layers = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1),
                                zip(sizes[:-1], sizes[1:])):
        w = jax.random.normal(k, (n_in, n_out), dtype=jnp.float64) * jnp.sqrt(1.0 / n_in)
        layers.append((w, jnp.zeros(n_out, dtype=jnp.float64)))
    layers[-1] = (jnp.zeros_like(layers[-1][0]), layers[-1][1])  # start at the baseline
    return layers


def _apply(layers, z):
    jnp = optional_import("jax.numpy")
    h = z
    for w, b in layers[:-1]:
        h = jnp.tanh(h @ w + b)
    w, b = layers[-1]
    return h @ w + b


def merge_ensemble(members) -> tuple:
    """One MLP whose output is the mean of the members' outputs (same input and depth).

    ``members``: a list of layer lists ``[(W, b), ...]``. The first layers are put side by
    side, the hidden ones block-diagonally, the output layers stacked and divided by the
    number of members.
    """
    k = len(members)
    depth = len(members[0])
    if any(len(m) != depth for m in members):
        raise InvalidInput("ensemble members must have the same number of layers")
    out = []
    for i in range(depth):
        ws = [np.asarray(m[i][0]) for m in members]
        bs = [np.asarray(m[i][1]) for m in members]
        if i == 0 and depth > 1:
            w = np.concatenate(ws, axis=1)
        elif i == depth - 1:
            w = (np.concatenate(ws, axis=0) if depth > 1 else sum(ws)) / k
        else:
            rows, cols = sum(a.shape[0] for a in ws), sum(a.shape[1] for a in ws)
            w = np.zeros((rows, cols))
            r = c = 0
            for a in ws:
                w[r:r + a.shape[0], c:c + a.shape[1]] = a
                r, c = r + a.shape[0], c + a.shape[1]
        b = sum(bs) / k if i == depth - 1 else np.concatenate(bs)
        out.append((w, b))
    return tuple(out)


def fit_yield_surrogate(key, labels: YieldLabels, *, config: YieldSurrogateConfig | None = None,
                        progress: bool = True, bins=None, prefit=None
                        ) -> tuple[YieldLikelihoodSurrogate, dict]:
    """Fit the residual network to the labels; returns the surrogate and held-out errors.

    Args:
        key: a JAX random key.
        labels: from :func:`generate_yield_labels`.
        config: :class:`YieldSurrogateConfig`.
        bins: bin names (default ``bin-<i>``); prefit: background at nominal parameters.
    """
    jax = optional_import("jax")
    config = config or YieldSurrogateConfig()
    use = labels.usable
    y = labels.y[use]
    if len(y) < 50:
        raise InvalidInput(f"only {len(y)} usable labelled points: too few to train on")
    if config.baseline == "none":
        baseline = YieldBaseline.zero(*np.shape(labels.gradient0))
    else:
        baseline = YieldBaseline.effective_poisson(labels.gradient0, labels.information0)
    g = labels.nll[use] - labels.nll0[None, :]
    use_gradient = config.gradient_weight > 0 and labels.gradient is not None
    # the derivative along a tangent per point (its own ray, y, or a random direction of the
    # same length in units of the bins' sensitivity), tangent . grad (N, 4), in -ln L
    tangent = y
    if use_gradient and config.gradient_direction == "random":
        xi = np.asarray(jax.random.normal(jax.random.fold_in(key, 11), y.shape))
        u_len = np.linalg.norm(y / labels.scale, axis=1, keepdims=True)
        tangent = xi / np.linalg.norm(xi, axis=1, keepdims=True) * u_len * labels.scale
    r = (np.einsum("nb,ndb->nd", tangent, labels.gradient[use]) if use_gradient
         else np.zeros_like(g))
    mask_r = np.full_like(g, 1.0 if use_gradient else 0.0)
    tmu = np.nan_to_num(labels.tmu_observed[use], nan=config.tmu_core)
    t_d = _tmu_per_dataset(tmu, g)
    mask = np.ones_like(g)
    n_points = len(y)
    if config.ray_minima:
        y_hat, g_hat = _ray_minima(labels)
        if len(y_hat):
            y = np.concatenate([y, y_hat])
            g = np.concatenate([g, np.zeros((len(y_hat), g.shape[1]))])
            g[n_points:, DATASETS.index("observed")] = g_hat
            m_hat = np.zeros((len(y_hat), g.shape[1]))
            m_hat[:, DATASETS.index("observed")] = 1.0
            mask = np.concatenate([mask, m_hat])
            t_d = np.concatenate([t_d, np.zeros_like(m_hat)])
            r = np.concatenate([r, np.zeros_like(m_hat)])
            tangent = np.concatenate([tangent, y_hat])
            mask_r = np.concatenate([mask_r, np.zeros_like(m_hat)])
    resid = g - baseline(y)
    resid_r = (r - baseline.radial(y)) * mask_r
    scale = labels.scale
    u = y / scale
    v = tangent / scale
    feats = np.concatenate([u, np.log1p(u)], axis=1)
    mean, std = feats.mean(0), np.maximum(feats.std(0), 1e-6)
    z0 = (np.concatenate([np.zeros(len(scale)), np.zeros(len(scale))]) - mean) / std
    out_scale = np.maximum(resid[:n_points].std(0), 1e-3)
    target = resid / out_scale
    target_r = resid_r / out_scale
    core = config.tmu_core
    w = mask * np.where(t_d <= core, 1.0, (core / np.maximum(t_d, 1e-12)) ** 2)
    w = w * (out_scale[None, :] ** 2)  # the loss is in units of -ln L
    w_r = w * mask_r * config.gradient_weight
    norm = w.mean()
    w, w_r = w / norm, w_r / norm
    k_split, k_init, k_fit = jax.random.split(key, 3)
    # the split is drawn over the labelled points alone; the ray minima only ever train
    tr, va = split_indices(k_split, n_points, config.val_fraction)
    tr = np.concatenate([tr, np.arange(n_points, len(y))])
    sizes = [feats.shape[1]] + [int(h) for h in config.hidden] + [len(DATASETS)]
    with jax.enable_x64(True):
        jnp = jax.numpy
        z0j = jnp.asarray(z0)[None, :]
        meanj, stdj = jnp.asarray(mean), jnp.asarray(std)

        def net_u(layers, uu):
            return _apply(layers, (jnp.concatenate([uu, jnp.log1p(uu)], axis=1) - meanj) / stdj)

        def loss_fn(layers, batch):
            uu, tt, ww, tr_, wr, vv = batch
            if not use_gradient:
                pred = net_u(layers, uu) - _apply(layers, z0j)
                return jnp.mean(ww * (pred - tt) ** 2)
            # the network is row-wise: a jvp with tangents v is each row's v . grad_u
            out, radial = jax.jvp(lambda x: net_u(layers, x), (uu,), (vv,))
            pred = out - _apply(layers, z0j)
            return jnp.mean(ww * (pred - tt) ** 2 + wr * (radial - tr_) ** 2)

        def part(idx):
            return tuple(jnp.asarray(a[idx]) for a in (u, target, w, target_r, w_r, v))

        n_members = int(config.ensemble)
        keys = list(zip(member_keys(k_init, n_members), member_keys(k_fit, n_members)))
        members, histories = [], []
        for m, (k_i, k_f) in enumerate(keys):
            desc = "training (yields)" if n_members == 1 else \
                f"training (yields, {m + 1}/{n_members})"
            layers, history = fit(k_f, _init(k_i, sizes), loss_fn, part(tr), part(va),
                                  config=config.train, progress=progress, desc=desc)
            members.append([(np.asarray(a), np.asarray(b)) for a, b in layers])
            histories.append(history.as_dict())
        layers = merge_ensemble(members)  # one member: its own layers
    net = YieldNetwork(layers=layers, scale=np.asarray(scale, float), mean=mean, std=std,
                       out_scale=out_scale)
    n_bins = len(scale)
    bins = tuple(bins) if bins is not None else tuple(f"bin-{i}" for i in range(n_bins))
    prefit = np.asarray(prefit if prefit is not None else labels.datasets["apriori"][0])
    y_max = labels.y[use].max(axis=0)
    surrogate = YieldLikelihoodSurrogate(
        bins=bins, network=net, baseline=baseline, nll0=labels.nll0, y_max=y_max,
        prefit=prefit)
    pred = surrogate.delta_nll(y)
    err = np.abs(pred - g)
    held = va
    metrics = {
        "history": histories[0] if len(histories) == 1 else {
            "members": histories,
            "best_val_loss": [h["best_val_loss"] for h in histories]},
        "n_train": int(tr.size), "n_val": int(va.size),
        "config": _jsonable(asdict(config)),
        "heldout": {
            d: {"rms_dnll": float(np.sqrt(np.mean(err[held, i] ** 2))),
                "max_dnll_core": float(np.max(err[held][tmu[held] <= 9.0, i]))
                if np.any(tmu[held] <= 9.0) else None}
            for i, d in enumerate(DATASETS)},
        "baseline_rms_dnll": {d: float(np.sqrt(np.mean(resid[held, i] ** 2)))
                              for i, d in enumerate(DATASETS)},
    }
    return surrogate, metrics


def _ray_minima(labels: YieldLabels) -> tuple[np.ndarray, np.ndarray]:
    """Each ray's best fit on the observed data where it lies inside the ray: (y, -ln L - nll0).

    Rays whose best fit is at mu = 0 (no valley) or at their far end are left out, and so is
    any best fit above the ray's own lowest labelled point (a fit that did not find it).
    """
    shapes, mu_hat, nll_hat = labels.ray_shapes, labels.ray_mu_hat, labels.ray_nll_hat
    if shapes is None or not len(shapes):
        return np.zeros((0, labels.y.shape[1])), np.zeros(0)
    d = DATASETS.index("observed")
    ok = np.isfinite(nll_hat) & np.isfinite(mu_hat) & (mu_hat > 0)
    y_max = labels.y[labels.usable].max(axis=0)
    y_hat = shapes * np.where(ok, mu_hat, 0.0)[:, None]
    ok &= np.all(y_hat <= y_max[None, :], axis=1)
    conv = (labels.ray >= 0) & labels.converged[:, d]
    best = np.full(len(shapes), np.inf)
    np.minimum.at(best, labels.ray[conv], labels.nll[conv, d])
    ok &= nll_hat <= best + 1e-9
    return y_hat[ok], nll_hat[ok] - labels.nll0[d]


def _tmu_per_dataset(tmu_observed: np.ndarray, g: np.ndarray) -> np.ndarray:
    """-2 ln lambda(mu = 1) of each point's own signal, per data set (N, 4).

    Observed data: the labelled value. The a-priori data and both Asimov data sets are
    background-like, so their best fit along any signal ray is at mu = 0 and -2 ln lambda is
    ``2 (nll(y) - nll(0))``.
    """
    out = 2.0 * np.maximum(g, 0.0)
    out[:, DATASETS.index("observed")] = tmu_observed
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
