"""Documented toy data sets for unfolding studies (numpy only, seeded).

Three generators, each a :class:`Toy` with a *simulation* and a *data* model that differ at
particle level (the simulation's prior is wrong) and share the detector model:

``gaussian``
    The OmniFold paper's Gaussian example (Andreassen et al., PRL 124 (2020) 182001): particle
    level N(0, 1) for data and N(0.2, 0.8) for simulation, detector = particle + N(0, 0.5).
    Full efficiency, no fakes.
``multidim``
    Three correlated observables with a detector like the RooUnfold example's (constant bias,
    Gaussian smearing, efficiency rising with the first observable from 0.3 to 1), and 5%
    fakes (detector-only events from a broad distribution). Data differ from simulation in
    means, widths and correlations.
``substructure``
    Jets with six observables — mass [GeV], width (girth), constituent multiplicity, τ21,
    ln ρ = ln(m²/pT²) and the groomed momentum fraction z_g — from a quark/gluon mixture whose
    parameters differ between "data" (a Pythia-like set) and simulation (a Herwig-like set:
    fewer constituents, heavier jets, a softer z_g, more two-prong τ21). The detector smears
    pT (8%), mass (10% and 2 GeV), width, τ21 and z_g, loses constituents (90% efficiency)
    and adds noise ones; events pass the particle (detector) selection when the true
    (measured) jet pT > 200 GeV, so migrations across the threshold make inefficiency and
    fakes, and 3% of jets are lost at random.

Each toy is reproducible from a seed (an int, a ``numpy.random.Generator`` or a JAX key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from surrogate_stats.errors import InvalidInput
from surrogate_stats.unfold._data import EventSample, UnfoldingData

__all__ = ["Toy", "TOYS", "get_toy", "as_generator"]


def as_generator(seed) -> np.random.Generator:
    """A numpy Generator from an int, a Generator, or a JAX PRNG key (old or typed)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)):
        return np.random.default_rng(int(seed))
    arr = seed
    if "key<" in str(getattr(seed, "dtype", "")):  # typed JAX key
        import jax

        arr = jax.random.key_data(seed)
    try:
        words = np.asarray(arr).astype(np.uint64).ravel().tolist()
    except (TypeError, ValueError):
        raise InvalidInput(f"seed must be an int, a numpy Generator or a JAX key; got "
                           f"{type(seed).__name__}") from None
    return np.random.default_rng(words)


@dataclass(frozen=True)
class Toy:
    """A toy: one detector model, a simulation and a data particle-level model.

    Attributes:
        name: registry name.
        names: observable names.
        generate: ``generate(rng, n, params) -> EventSample`` (``n`` generated events, before
            any selection).
        sim_params / data_params: the particle-level parameters of simulation and data.
        discrete: which observables are integers.
        ranges: per observable (lo, hi) used for binning and plots.
        description: one line for tables.
    """

    name: str
    names: tuple[str, ...]
    generate: Callable[[np.random.Generator, int, dict], EventSample]
    sim_params: dict
    data_params: dict
    ranges: tuple[tuple[float, float], ...]
    discrete: tuple[bool, ...] = field(default=())
    description: str = ""

    def simulate(self, seed, n: int) -> EventSample:
        """``n`` simulated events (particle and detector level)."""
        return self.generate(as_generator(seed), _check_n(n), self.sim_params)

    def sample_data(self, seed, n: int) -> EventSample:
        """``n`` "data" events; the particle level is the truth to compare with."""
        return self.generate(as_generator(seed), _check_n(n), self.data_params)

    def make(self, seed, *, n_sim: int = 20000, n_data: int = 20000) -> UnfoldingData:
        """Simulation and data drawn from independent streams of one seed."""
        rng = as_generator(seed)
        s_sim, s_data = rng.spawn(2)
        return UnfoldingData(self.simulate(s_sim, n_sim), self.sample_data(s_data, n_data),
                             name=self.name, has_truth=True,
                             ranges=np.array(self.ranges, dtype=float),
                             discrete=self.discrete or (False,) * len(self.names))


def _check_n(n) -> int:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInput(f"the number of events must be a positive integer; got {n!r}")
    return int(n)


# ---------------------------------------------------------------- gaussian (OmniFold paper)
def _gaussian(rng, n, p):
    x = rng.normal(p["mu"], p["sigma"], n)
    y = x + rng.normal(0.0, p["smear"], n)
    ones = np.ones(n, dtype=bool)
    return EventSample(x[:, None], y[:, None], np.ones(n), ones, ones.copy(), ("x",))


# ---------------------------------------------------------------- multidim (RooUnfold-like)
def _multidim(rng, n, p):
    sig = np.asarray(p["sigma"])
    corr = np.asarray(p["corr"])
    cov = corr * np.outer(sig, sig)
    x = rng.multivariate_normal(p["mean"], cov, n)
    # a slightly non-Gaussian first observable: a skew from an exponential tail
    x[:, 0] += p["skew"] * (rng.exponential(1.0, n) - 1.0)
    bias = np.array([-0.25, 0.15, 0.10])
    res = np.array([0.45, 0.55, 0.35])
    y = x + bias + res * np.sqrt(1 + 0.05 * x**2) * rng.normal(size=x.shape)
    eff = 0.3 + 0.7 / (1.0 + np.exp(-1.5 * x[:, 0]))  # rising 0.3 -> 1 (RooUnfold-like)
    fake = rng.random(n) < 0.05
    passed_truth = ~fake
    passed_reco = fake | (rng.random(n) < eff)
    y[fake] = rng.multivariate_normal([0.0, 0.0, 0.0], np.diag([2.0, 2.0, 1.5]) ** 2,
                                      int(fake.sum()))
    x[fake] = np.nan
    y[~passed_reco] = np.nan
    return EventSample(x, y, np.ones(n), passed_reco, passed_truth, ("x1", "x2", "x3"))


# ---------------------------------------------------------------- jet substructure
_SUB_NAMES = ("mass", "width", "multiplicity", "tau21", "lnrho", "zg")
_PT_MIN, _PT_CUT, _ZCUT = 160.0, 200.0, 0.1


def _reflect(x, lo, hi):
    x = np.where(x < lo, 2 * lo - x, x)
    x = np.where(x > hi, 2 * hi - x, x)
    return np.clip(x, lo, hi)


def _substructure(rng, n, p):
    # generate until n jets pass either selection (those failing both are never recorded)
    parts, got = [], 0
    while got < n:
        part = _substructure_batch(rng, max(3 * (n - got), 64), p)
        parts.append(part)
        got += len(part)
    cat = [np.concatenate([getattr(x, f) for x in parts])[:n]
           for f in ("particle", "detector", "weights", "passed_reco", "passed_truth")]
    return EventSample(*cat, _SUB_NAMES)


def _substructure_batch(rng, n, p):
    # jet pT: falling power law above 160 GeV (dN/dpT ~ pT^-5), capped at 1 TeV
    pt = np.minimum(_PT_MIN * rng.random(n) ** (-1 / 4), 1000.0)
    quark = rng.random(n) < p["quark_fraction"]
    # constituent multiplicity: negative binomial (gamma-Poisson), gluon jets ~1.8x quark
    mean_n = p["mult_scale"] * np.where(quark, 13.0, 23.0) * (pt / 200.0) ** 0.3
    lam = rng.gamma(8.0, mean_n / 8.0)
    mult = np.maximum(rng.poisson(lam), 2)
    zscore = (mult - mean_n) / np.sqrt(mean_n)
    # mass: ln(m/pT) Gaussian, correlated with the multiplicity
    ln_mpt = (np.log(np.where(quark, 0.065, 0.095)) + p["mass_shift"] + 0.12 * zscore
              + rng.normal(0.0, 0.42, n))
    m_over_pt = np.clip(np.exp(ln_mpt), 0.01, 0.45)
    mass = m_over_pt * pt
    width = np.clip(m_over_pt * np.exp(rng.normal(np.log(1.1) + p["width_shift"], 0.25, n)),
                    0.0, 0.6)
    a = np.where(quark, 4.0, 5.5) + p["tau_shift"]
    tau21 = rng.beta(a, 3.0)
    # z_g on [0.1, 0.5] with density ~ z^-alpha (inverse CDF)
    alpha = np.where(quark, 0.7, 1.2) + p["zg_alpha_shift"]  # never 1 for the toys' shifts
    u = rng.random(n)
    lo, hi = _ZCUT ** (1 - alpha), 0.5 ** (1 - alpha)
    zg = (lo + u * (hi - lo)) ** (1 / (1 - alpha))
    particle = np.stack([mass, width, mult.astype(float), tau21, np.log(m_over_pt**2), zg], 1)

    # detector
    pt_r = pt * rng.normal(0.98, 0.08, n)
    mult_r = rng.binomial(mult, 0.9) + rng.poisson(1.0, n)
    mass_r = np.abs(mass * rng.normal(1.03, 0.10, n) + rng.normal(0.0, 2.0, n)) + 0.1
    width_r = np.abs(width * rng.normal(1.0, 0.12, n) + rng.normal(0.0, 0.005, n))
    tau_r = _reflect(tau21 + rng.normal(0.02, 0.06, n), 0.0, 1.0)
    zg_r = _reflect(zg + rng.normal(0.0, 0.03, n), _ZCUT, 0.5)
    lnrho_r = np.log((mass_r / pt_r) ** 2)
    detector = np.stack([mass_r, width_r, mult_r.astype(float), tau_r, lnrho_r, zg_r], 1)

    passed_truth = pt > _PT_CUT
    passed_reco = (pt_r > _PT_CUT) & (rng.random(n) < 0.97)
    keep = passed_truth | passed_reco  # events failing both are never recorded
    particle[~passed_truth] = np.nan
    detector[~passed_reco] = np.nan
    return EventSample(particle[keep], detector[keep], np.ones(int(keep.sum())),
                       passed_reco[keep], passed_truth[keep], _SUB_NAMES)


TOYS: dict[str, Toy] = {
    "gaussian": Toy(
        "gaussian", ("x",), _gaussian,
        sim_params=dict(mu=0.2, sigma=0.8, smear=0.5),
        data_params=dict(mu=0.0, sigma=1.0, smear=0.5),
        ranges=((-4.0, 4.0),),
        description="OmniFold Gaussian: data N(0,1), sim N(0.2,0.8), smearing 0.5"),
    "multidim": Toy(
        "multidim", ("x1", "x2", "x3"), _multidim,
        sim_params=dict(mean=[0.0, 0.0, 0.0], sigma=[1.0, 1.2, 0.8], skew=0.0,
                        corr=[[1.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.0]]),
        data_params=dict(mean=[0.3, -0.2, 0.2], sigma=[1.1, 1.0, 0.9], skew=0.3,
                         corr=[[1.0, 0.3, 0.2], [0.3, 1.0, 0.5], [0.2, 0.5, 1.0]]),
        ranges=((-4.0, 5.0), (-4.5, 4.5), (-3.5, 3.5)),
        description="3 correlated observables, bias + smearing, rising efficiency, 5% fakes"),
    "substructure": Toy(
        "substructure", _SUB_NAMES, _substructure,
        sim_params=dict(quark_fraction=0.50, mult_scale=0.88, mass_shift=0.08,
                        width_shift=-0.05, tau_shift=0.6, zg_alpha_shift=0.25),
        data_params=dict(quark_fraction=0.55, mult_scale=1.0, mass_shift=0.0,
                         width_shift=0.0, tau_shift=0.0, zg_alpha_shift=0.0),
        ranges=((0.0, 100.0), (0.0, 0.4), (0.0, 60.0), (0.0, 1.0), (-8.5, -2.0), (0.1, 0.5)),
        discrete=(False, False, True, False, False, False),
        description="jets, six substructure observables, Pythia-like data vs Herwig-like sim"),
}


def get_toy(name: str) -> Toy:
    """The toy named ``name`` (one of :data:`TOYS`)."""
    try:
        return TOYS[name]
    except KeyError:
        raise InvalidInput(f"unknown toy {name!r}; choose one of {sorted(TOYS)}") from None
