"""The exact matrix-element ladder in JAX (float64 in a local x64 context, vectorised).

Conventions for every process: momenta ``p`` of shape ``[N, 2 + n_out, 4]`` as (E, px, py, pz)
in GeV, the two incoming momenta first (along +z, then along -z, in the centre-of-mass frame),
then the outgoing ones. ``matrix_element(p)`` returns |M|^2 summed over final-state and averaged
over initial-state helicities and colours, without the symmetry factor for identical final-state
particles (that is :attr:`Process.symmetry_factor`, applied by the cross-section weight) and
without cuts. Couplings are fixed (no running):

* ``alpha = 1/128`` (electromagnetic, at the Z scale), ``sin^2 theta_W = 0.2312``,
  ``M_Z = 91.1876 GeV``, ``Gamma_Z = 2.4952 GeV`` (fixed width in the s-channel propagator);
* ``alpha_s = 0.118``, ``N_c = 3``.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element._colour import ddm_colour_matrix, ddm_orderings
from surrogate_stats.matrix_element._phase_space import Cuts, check_momenta

__all__ = ["Process", "get_process", "PROCESSES", "COUPLINGS", "parke_taylor_helicity_sum"]

COUPLINGS = {"alpha": 1.0 / 128.0, "sin2w": 0.2312, "mz": 91.1876, "gamma_z": 2.4952,
             "alpha_s": 0.118, "n_c": 3}
PROCESSES = ("ee_mumu", "ee_qqg", "gg_gg", "gg_ggg", "gg_gggg")
GEV2_TO_PB = 0.3893793721e9


def _x64():
    jax = optional_import("jax")
    return jax.enable_x64(True)


def _dots(p):
    """Physical ``2 p_i . p_j`` (all >= 0 for physical momenta), ``[N, n, n]``."""
    jnp = optional_import("jax.numpy")
    metric = jnp.array([1.0, -1.0, -1.0, -1.0])
    return 2.0 * jnp.einsum("eia,eja->eij", p, p * metric)


@dataclass(frozen=True)
class Process:
    """An exact |M|^2 with its kinematics. Use :func:`get_process` to build one.

    Attributes:
        name: one of :data:`PROCESSES`.
        sqrt_s: centre-of-mass energy (GeV).
        n_out: number of outgoing particles.
        symmetry_factor: ``1/k!`` for k identical outgoing particles.
        default_cuts: cuts used by training and unweighting unless others are given.
        options: process options (e.g. ``{"z_exchange": False}``), JSON-able.
        particles: PDG ids of all 2 + n_out particles (for event files).
    """

    name: str
    sqrt_s: float
    n_out: int
    symmetry_factor: float
    default_cuts: Cuts
    options: dict = field(default_factory=dict)
    particles: tuple = ()
    colour_lines: tuple = ()

    @property
    def n_particles(self) -> int:
        return 2 + self.n_out

    @property
    def flux(self) -> float:
        """The flux factor ``1 / (2 s)`` of massless beams (GeV^-2)."""
        return 1.0 / (2.0 * self.sqrt_s**2)

    def matrix_element(self, p, *, batch_size: int | None = None) -> np.ndarray:
        """|M|^2 at momenta ``p`` ``[N, 2 + n_out, 4]`` (incoming first); float64 ``[N]``.

        Raises:
            InvalidInput: wrong shape, non-finite entries, or 4-momentum not conserved.
        """
        p = check_momenta(p, self.n_particles)
        return self._evaluate(p, batch_size=batch_size)

    def _evaluate(self, p: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        jax = optional_import("jax")
        n = p.shape[0]
        if n == 0:
            return np.zeros(0)
        chunk = batch_size or _CHUNK.get(self.name, 4096)
        size = min(chunk, 1 << max(6, math.ceil(math.log2(max(n, 1)))))
        out = np.empty(n)
        fn = _jitted(self.name, tuple(sorted(self.options.items())))
        with _x64():
            for start in range(0, n, size):
                block = p[start:start + size]
                m = block.shape[0]
                if m < size:
                    block = np.concatenate([block, np.repeat(block[:1], size - m, axis=0)])
                res = fn(jax.numpy.asarray(block, dtype=jax.numpy.float64))
                out[start:start + m] = np.asarray(res)[:m]
        return out

    def __call__(self, p) -> np.ndarray:
        return self.matrix_element(p)


_CHUNK = {"gg_gggg": 512}


@functools.cache
def _jitted(name: str, options: tuple):
    jax = optional_import("jax")
    opts = dict(options)
    body = {"ee_mumu": _ee_mumu, "ee_qqg": _ee_qqg, "gg_gg": _gluons_pt, "gg_ggg": _gluons_pt,
            "gg_gggg": _gluons_bg}[name]
    return jax.jit(functools.partial(body, **opts))


def _z_couplings(charge: float, t3: float, sin2w: float):
    return {"L": t3 - charge * sin2w, "R": -charge * sin2w}


def _chiral_factors(s, q_f, t3_f, z_exchange):
    """``f_ij(s)`` for electron chirality i and final fermion chirality j (dict of complex)."""
    jnp = optional_import("jax.numpy")
    c = COUPLINGS
    e2 = 4.0 * math.pi * c["alpha"]
    sw2, mz, gz = c["sin2w"], c["mz"], c["gamma_z"]
    ge = _z_couplings(-1.0, -0.5, sw2)
    gf = _z_couplings(q_f, t3_f, sw2)
    out = {}
    for i in "LR":
        for j in "LR":
            amp = e2 * (-1.0 * q_f) / s + 0j
            if z_exchange:
                amp = amp + e2 / (sw2 * (1 - sw2)) * ge[i] * gf[j] / (s - mz**2 + 1j * mz * gz)
            out[i + j] = jnp.abs(amp) ** 2
    return out


def _ee_mumu(p, z_exchange=True):
    """e-(p0) e+(p1) -> mu-(p2) mu+(p3): photon (+ Z) s-channel, massless.

    ``|M|^2 = sum_ij |f_ij|^2 (u^2 if i == j else t^2)``, ``t = (p0-p2)^2``, ``u = (p0-p3)^2``;
    for photon exchange only this is Peskin-Schroeder (5.10), ``2 e^4 (t^2 + u^2) / s^2``.
    """
    d = _dots(p)
    s, t, u = d[:, 0, 1], d[:, 0, 2], d[:, 0, 3]
    f = _chiral_factors(s, -1.0, -0.5, z_exchange)
    return (f["LL"] + f["RR"]) * u**2 + (f["LR"] + f["RL"]) * t**2


def _ee_qqg(p, z_exchange=False, quark_charge=2.0 / 3.0):
    """e-(p0) e+(p1) -> q(p2) qbar(p3) g(p4) through a virtual photon (+ Z if asked).

    Ellis-Ross-Terrano: ``|M|^2 = 2 N_c C_F g_s^2 s sum_ij |f_ij|^2 X_ij / ((p2.p4)(p3.p4))``
    with ``X_same = (p0.p3)^2 + (p1.p2)^2`` and ``X_opposite = (p0.p2)^2 + (p1.p3)^2``;
    photon only: ``4 N_c C_F Q_q^2 e^4 g_s^2 [(p0.p2)^2 + (p0.p3)^2 + (p1.p2)^2 + (p1.p3)^2]
    / (s (p2.p4)(p3.p4))``.
    """
    c = COUPLINGS
    d = 0.5 * _dots(p)  # p_i . p_j
    s = 2.0 * d[:, 0, 1]
    t3 = 0.5 if quark_charge > 0 else -0.5
    f = _chiral_factors(s, quark_charge, t3, z_exchange)
    x_same = d[:, 0, 3] ** 2 + d[:, 1, 2] ** 2
    x_opp = d[:, 0, 2] ** 2 + d[:, 1, 3] ** 2
    gs2 = 4.0 * math.pi * c["alpha_s"]
    nc = c["n_c"]
    cf = (nc**2 - 1) / (2 * nc)
    num = (f["LL"] + f["RR"]) * x_same + (f["LR"] + f["RL"]) * x_opp
    return 2.0 * nc * cf * gs2 * s * num / (d[:, 2, 4] * d[:, 3, 4])


@functools.cache
def _cyclic_pairs(n: int) -> np.ndarray:
    """For each of the (n-1)! orderings (0, sigma), the n adjacent pairs: [(n-1)!, n, 2]."""
    out = []
    for perm in itertools.permutations(range(1, n)):
        order = (0, *perm)
        out.append([(order[k], order[(k + 1) % n]) for k in range(n)])
    return np.array(out)


def parke_taylor_helicity_sum(sij, n: int):
    """``sum_hel sum_{sigma in S_(n-1)} |A(0, sigma)|^2`` from Parke-Taylor (n = 4, 5 exact).

    ``sij`` holds ``|s_ij|`` ``[N, n, n]``. MHV and anti-MHV amplitudes have
    ``|A|^2 = s_ab^4 / prod_k |s_(k,k+1)|`` (a, b the two odd helicities); for n = 4 they are
    the same set, for n = 5 they are all non-vanishing helicity configurations.
    """
    jnp = optional_import("jax.numpy")
    iu, ju = np.triu_indices(n, 1)
    num = jnp.sum(sij[:, iu, ju] ** 4, axis=1) * (1.0 if n == 4 else 2.0)
    pairs = _cyclic_pairs(n)
    den = jnp.prod(sij[:, pairs[..., 0], pairs[..., 1]], axis=-1)  # [N, (n-1)!]
    return num * jnp.sum(1.0 / den, axis=1)


def _gluon_norm(n):
    c = COUPLINGS
    nc = c["n_c"]
    gs2 = 4.0 * math.pi * c["alpha_s"]
    average = 1.0 / (4.0 * (nc**2 - 1) ** 2)
    return gs2 ** (n - 2) * average


def _gluons_pt(p):
    """g g -> (n-2) g, full colour, n = 4 or 5, from Parke-Taylor amplitudes.

    ``sum |M|^2 = g^(2n-4) N^(n-2) (N^2-1) sum_{sigma in S_(n-1)} sum_hel |A(1, sigma)|^2``,
    exact for n <= 5; averaged over the 2 x 2 helicities and 8 x 8 colours of the beams.
    """
    n = p.shape[1]
    nc = COUPLINGS["n_c"]
    sij = _dots(p)
    return _gluon_norm(n) * nc ** (n - 2) * (nc**2 - 1) * parke_taylor_helicity_sum(sij, n)


# ----- Berends-Giele recursion for colour-ordered gluon amplitudes -----

def _mdot(a, b):
    return (a[..., 0] * b[..., 0] - a[..., 1] * b[..., 1] - a[..., 2] * b[..., 2]
            - a[..., 3] * b[..., 3])


def polarisations(k):
    """Helicity polarisation vectors ``eps_+, eps_-`` ``[..., 4]`` (complex) for momenta ``k``.

    Built from the direction of the physical momentum ``k`` (for a crossed, incoming leg the
    same vectors serve the all-outgoing momentum ``-k``, as the spinors of ``-k`` differ from
    those of ``k`` by phases only): ``eps_+- = -+(e_theta +- i e_phi)/sqrt2``.
    """
    jnp = optional_import("jax.numpy")
    kv = k[..., 1:]
    kt = jnp.sqrt(kv[..., 0] ** 2 + kv[..., 1] ** 2)
    kk = jnp.sqrt(kt**2 + kv[..., 2] ** 2)
    cos_t = kv[..., 2] / kk
    sin_t = kt / kk
    safe = kt > 1e-12 * kk
    cos_p = jnp.where(safe, kv[..., 0] / jnp.where(safe, kt, 1.0), 1.0)
    sin_p = jnp.where(safe, kv[..., 1] / jnp.where(safe, kt, 1.0), 0.0)
    zero = jnp.zeros_like(cos_t)
    e_theta = jnp.stack([zero, cos_t * cos_p, cos_t * sin_p, -sin_t], axis=-1)
    e_phi = jnp.stack([zero, -sin_p, cos_p, zero], axis=-1)
    plus = -(e_theta + 1j * e_phi) / math.sqrt(2.0)
    minus = (e_theta - 1j * e_phi) / math.sqrt(2.0)
    return plus, minus


def _v3(j1, j2, p1, p2):
    # (i/sqrt2)[(J1.J2)(P1-P2)^mu + 2 (P2.J1) J2^mu - 2 (P1.J2) J1^mu]
    return (1j / math.sqrt(2.0)) * (_mdot(j1, j2)[..., None] * (p1 - p2)
                                    + 2.0 * _mdot(p2, j1)[..., None] * j2
                                    - 2.0 * _mdot(p1, j2)[..., None] * j1)


def _v4(j1, j2, j3):
    # (i/2)[2 (J1.J3) J2^mu - (J1.J2) J3^mu - (J2.J3) J1^mu]
    return 0.5j * (2.0 * _mdot(j1, j3)[..., None] * j2 - _mdot(j1, j2)[..., None] * j3
                   - _mdot(j2, j3)[..., None] * j1)


def berends_giele(k, eps):
    """Colour-ordered amplitude ``A(1, ..., n)`` from Berends-Giele recursion.

    Args:
        k: all-outgoing momenta ``[..., n, 4]`` (sum zero), real.
        eps: polarisation vectors ``[..., n, 4]``, complex, in the same order.

    Returns:
        The amplitudes ``[...]`` (complex), normalised so that MHV amplitudes have modulus
        ``|<ab>|^4 / prod |<k k+1>|`` (Parke-Taylor).
    """
    n = k.shape[-2]
    m = n - 1
    J, P = {}, {}
    for a in range(m):
        J[a, a] = eps[..., a, :]
        P[a, a] = k[..., a, :]
    for length in range(2, m + 1):
        for a in range(0, m - length + 1):
            b = a + length - 1
            P[a, b] = P[a, a] + P[a + 1, b]
            acc = 0.0
            for c in range(a, b):
                acc = acc + _v3(J[a, c], J[c + 1, b], P[a, c], P[c + 1, b])
            for c in range(a, b):
                for d in range(c + 1, b):
                    acc = acc + _v4(J[a, c], J[c + 1, d], J[d + 1, b])
            if length == m:
                J[a, b] = acc  # amputated: the last propagator is cancelled by P^2 = 0
            else:
                J[a, b] = (-1j / _mdot(P[a, b], P[a, b]))[..., None] * acc
    return _mdot(J[0, m - 1], eps[..., m, :])


@functools.cache
def _helicities(n: int) -> np.ndarray:
    """Helicity configurations with leg 0 '+' and 2..n-2 negative helicities overall."""
    out = []
    for rest in itertools.product((1, -1), repeat=n - 1):
        h = (1, *rest)
        neg = sum(x < 0 for x in h)
        if 2 <= neg <= n - 2:
            out.append(h)
    return np.array(out)


def colour_ordered_amplitudes(p, helicities, orderings):
    """Berends-Giele amplitudes ``[N, H, O]`` at physical momenta ``p`` ``[N, n, 4]``.

    The incoming momenta are crossed (``k = -p``); helicities are all-outgoing labels (an
    incoming gluon labelled + is physically of helicity -).
    """
    jnp = optional_import("jax.numpy")
    sign = jnp.array([-1.0, -1.0] + [1.0] * (p.shape[1] - 2))
    k = p * sign[None, :, None]
    plus, minus = polarisations(p)  # [N, n, 4]
    h = jnp.asarray(helicities)  # [H, n]
    eps = jnp.where((h > 0)[None, :, :, None], plus[:, None], minus[:, None])  # [N, H, n, 4]
    order = jnp.asarray(np.array(orderings))  # [O, n]
    eps_o = eps[:, :, order]  # [N, H, O, n, 4]
    k_o = k[:, order][:, None]  # [N, 1, O, n, 4]
    k_o = jnp.broadcast_to(k_o, eps_o.shape).astype(eps_o.dtype)
    return berends_giele(k_o, eps_o)


def _gluons_bg(p):
    """g g -> (n-2) g, full colour, from Berends-Giele amplitudes in the DDM colour basis.

    ``sum |M|^2 = g^(2n-4) sum_hel sum_{s,s'} A_s C_ss' A_s'^*`` over the (n-2)! orderings
    ``A(1, s, n)`` and the :func:`ddm_colour_matrix`. Helicities with leg 1 '+' are summed and
    doubled (parity: ``|A(-h)| = |A(h)|`` for real momenta).
    """
    jnp = optional_import("jax.numpy")
    n = p.shape[1]
    orderings = ddm_orderings(n)
    amps = colour_ordered_amplitudes(p, _helicities(n), orderings)  # [N, H, O]
    C = jnp.asarray(ddm_colour_matrix(n))
    quad = jnp.einsum("eho,op,ehp->e", amps, C.astype(amps.dtype), jnp.conj(amps))
    return _gluon_norm(n) * 2.0 * jnp.real(quad)


_GLUON_IDS = {"gg_gg": 2, "gg_ggg": 3, "gg_gggg": 4}


def get_process(name: str, sqrt_s: float, **options) -> Process:
    """The exact process ``name`` at centre-of-mass energy ``sqrt_s`` (GeV).

    Args:
        name: ``ee_mumu`` (e-e+ -> mu-mu+, photon + Z), ``ee_qqg`` (e-e+ -> u ubar g; photon
            only unless ``z_exchange=True``), ``gg_gg``, ``gg_ggg`` (full colour, Parke-Taylor),
            ``gg_gggg`` (full colour, Berends-Giele in the DDM colour basis).
        sqrt_s: centre-of-mass energy in GeV.
        **options: ``z_exchange`` (bool) for the e+e- processes.

    Example:
        >>> proc = get_process("gg_ggg", sqrt_s=1000.0)      # doctest: +SKIP
        >>> me2 = proc.matrix_element(p)                       # p: [N, 5, 4]
    """
    if name not in PROCESSES:
        raise InvalidInput(f"unknown process {name!r}; choose one of {list(PROCESSES)}")
    try:
        sqrt_s = float(sqrt_s)
    except (TypeError, ValueError):
        raise InvalidInput(f"sqrt_s must be a number of GeV; got {sqrt_s!r}") from None
    if not (math.isfinite(sqrt_s) and sqrt_s > 0):
        raise InvalidInput(f"sqrt_s must be a positive number of GeV; got {sqrt_s!r}")
    allowed = {"ee_mumu": {"z_exchange"}, "ee_qqg": {"z_exchange"}}.get(name, set())
    unknown = set(options) - allowed
    if unknown:
        raise InvalidInput(f"unknown option(s) {sorted(unknown)} for {name}; allowed: "
                           f"{sorted(allowed) or 'none'}")
    if name == "ee_mumu":
        opts = {"z_exchange": bool(options.get("z_exchange", True))}
        return Process(name, sqrt_s, 2, 1.0, Cuts(), opts, (11, -11, 13, -13))
    if name == "ee_qqg":
        opts = {"z_exchange": bool(options.get("z_exchange", False))}
        return Process(name, sqrt_s, 3, 1.0, Cuts(y_min=0.01), opts, (11, -11, 2, -2, 21))
    n_out = _GLUON_IDS[name]
    cuts = Cuts(pt_min=0.05 * sqrt_s, eta_max=2.5, delta_r_min=0.4)
    return Process(name, sqrt_s, n_out, 1.0 / math.factorial(n_out), cuts, {},
                   (21,) * (2 + n_out))
