"""A photon-like toy for simulation-to-data corrections (numpy only; not used by the library).

:func:`photon_toy` draws events with three kinematic conditions and five correlated
variables; ``sample="data"`` and ``sample="mc"`` differ the way real detector simulation
differs from data, all of it depending on the kinematics:

Conditions (same distributions for data and MC):
    ``pt``: transverse momentum in GeV, 25 + an exponential of mean 30 (capped at 300);
    ``eta``: pseudorapidity, uniform in [-2.4, 2.4];
    ``pileup``: number of pile-up interactions, Poisson(35) (as float).

Variables:
    ``r9``: energy fraction in the 3x3 core, ``1 - exp(g)`` of a Gaussian ``g`` (in (0, 1));
    ``sieie``: shower width, larger in the endcap (|eta| > 1.5) and with pile-up;
    ``eresp``: energy response E_reco / E_true, width ~ sqrt(a^2/pt + b^2);
    ``s4``: ratio correlated with r9;
    ``iso``: isolation, **exactly 0** for a fraction of events that falls with pile-up and
    rises with pt (logistic), otherwise a Gamma tail whose scale grows with pile-up.

Data vs MC: MC showers are narrower (sieie mean lower, width smaller), r9 mean higher, the
energy response has a shifted mean and a smaller resolution term, the r9–s4 and r9–sieie
correlations are stronger in MC, and MC has more events at iso = 0 with a different pile-up
dependence and a softer tail.
"""

from __future__ import annotations

import numpy as np

from surrogate_stats.errors import InvalidInput

__all__ = ["photon_toy", "VARIABLES", "CONDITIONS"]

VARIABLES = ("r9", "sieie", "eresp", "s4", "iso")
CONDITIONS = ("pt", "eta", "pileup")


def photon_toy(n: int, *, sample: str = "mc", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` toy events: ``(variables (n, 5), conditions (n, 3))``, columns as in
    :data:`VARIABLES` and :data:`CONDITIONS`.

    Example:
        >>> x_mc, c_mc = photon_toy(1000, sample="mc", seed=1)
        >>> x_mc.shape, c_mc.shape
        ((1000, 5), (1000, 3))
    """
    if sample not in ("mc", "data"):
        raise InvalidInput(f"sample must be 'mc' or 'data'; got {sample!r}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidInput(f"n must be a positive integer; got {n!r}")
    data = sample == "data"
    rng = np.random.default_rng([seed, 1 if data else 0])
    pt = np.minimum(25.0 + rng.exponential(30.0, n), 300.0)
    eta = rng.uniform(-2.4, 2.4, n)
    pu = rng.poisson(35, n).astype(float)
    endcap = (np.abs(eta) > 1.5).astype(float)
    lpt = np.log(pt / 40.0)
    dpu = (pu - 35.0) / 6.0

    # correlated Gaussian core: r9, sieie, s4 (correlation stronger in MC)
    rho_rs, rho_r4 = (-0.45, 0.75) if data else (-0.6, 0.88)
    cov = np.array([[1.0, rho_rs, rho_r4], [rho_rs, 1.0, rho_rs * rho_r4],
                    [rho_r4, rho_rs * rho_r4, 1.0]])
    g = rng.multivariate_normal(np.zeros(3), cov, n)

    r9_mu = (-2.2 if data else -2.45) + 0.25 * endcap + 0.1 * dpu - 0.1 * lpt
    r9_sd = (0.55 if data else 0.45) + 0.05 * endcap
    r9 = 1.0 - np.exp(r9_mu + r9_sd * g[:, 0])

    si_mu = (0.0100 if data else 0.0094) + 0.017 * endcap + 0.0004 * dpu
    si_sd = (0.0011 if data else 0.0008) * (1.0 + 1.5 * endcap)
    sieie = si_mu + si_sd * g[:, 1]

    s4 = np.clip(0.85 + (0.06 if data else 0.05) * g[:, 2] - 0.03 * endcap, 0.3, 1.2)

    a, b = (0.25, 0.012) if data else (0.22, 0.008)
    res = np.sqrt(a * a / pt + b * b) * (1.0 + 0.3 * endcap)
    shift = (0.996 if data else 1.0) - 0.002 * dpu
    eresp = shift + res * rng.standard_normal(n)

    z = (0.5 if data else 1.0) - (0.55 if data else 0.35) * dpu + 0.3 * lpt
    p0 = 1.0 / (1.0 + np.exp(-z))
    zero = rng.random(n) < p0
    scale = (0.9 if data else 0.7) * (1.0 + 0.15 * dpu.clip(-2, None))
    iso = np.where(zero, 0.0, rng.gamma(1.6, 1.0, n) * scale)

    x = np.column_stack([r9, sieie, eresp, s4, iso])
    c = np.column_stack([pt, eta, pu])
    return x, c
