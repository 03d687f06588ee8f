"""The exact |M|^2 ladder against independent numbers (textbook formulas, Parke-Taylor)."""

import itertools
import math

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element import COUPLINGS, PROCESSES, get_process, rambo
from tests.matrix_element.conftest import EXACT_RTOL, QUAD_RTOL, boost_z, rotate

ALPHA, SW2 = COUPLINGS["alpha"], COUPLINGS["sin2w"]
MZ, GZ, ALPHA_S = COUPLINGS["mz"], COUPLINGS["gamma_z"], COUPLINGS["alpha_s"]


def two_body(sqrt_s, cos):
    """e-(+z) e+(-z) -> f(cos theta) fbar, phi = 0."""
    e = sqrt_s / 2
    sin = np.sqrt(1 - cos**2)
    p = np.zeros((cos.size, 4, 4))
    p[:, 0] = [e, 0, 0, e]
    p[:, 1] = [e, 0, 0, -e]
    p[:, 2] = np.stack([np.full_like(cos, e), e * sin, 0 * cos, e * cos], axis=1)
    p[:, 3] = p[:, 2] * [1, -1, -1, -1]
    return p


def sigma_ee_mumu(sqrt_s, **options):
    """sigma = int dcos |M|^2 / (32 pi s) (dPhi_2 = dOmega/(32 pi^2), flux 1/(2s))."""
    x, w = np.polynomial.legendre.leggauss(40)
    me = get_process("ee_mumu", sqrt_s, **options).matrix_element(two_body(sqrt_s, x))
    return float(np.sum(w * me)) * 2 * math.pi / (64 * math.pi**2 * sqrt_s**2)


def test_ee_mumu_qed_cross_section():
    """Photon only: sigma = 4 pi alpha^2 / (3 s) (Peskin-Schroeder 5.13), exact."""
    for sqrt_s in (10.0, 91.0, 500.0):
        qed = 4 * math.pi * ALPHA**2 / (3 * sqrt_s**2)
        assert sigma_ee_mumu(sqrt_s, z_exchange=False) == pytest.approx(qed, rel=QUAD_RTOL)
    # far below the Z the full result is QED up to O(s / M_Z^2)
    assert sigma_ee_mumu(10.0) == pytest.approx(4 * math.pi * ALPHA**2 / 300.0, rel=0.01)


def test_ee_mumu_breit_wigner_peak():
    """At s = M_Z^2 the interference vanishes: sigma = sigma_QED + 12 pi Gee^2/(M_Z^2 G_Z^2)."""
    gz2 = 4 * math.pi * ALPHA / (SW2 * (1 - SW2))
    g_l, g_r = -0.5 + SW2, SW2
    gamma_ee = gz2 * MZ * (g_l**2 + g_r**2) / (24 * math.pi)
    assert gamma_ee == pytest.approx(0.0839, rel=0.01)  # the measured Gamma(Z -> ee)
    peak = 4 * math.pi * ALPHA**2 / (3 * MZ**2) + 12 * math.pi * gamma_ee**2 / (MZ**2 * GZ**2)
    assert sigma_ee_mumu(MZ) == pytest.approx(peak, rel=QUAD_RTOL)
    # the line shape is a resonance: half way down near M_Z +- Gamma_Z / 2
    assert sigma_ee_mumu(MZ + GZ / 2) == pytest.approx(0.5 * peak, rel=0.05)


def test_ee_mumu_angular_distribution_is_one_plus_cos2_for_photons():
    cos = np.linspace(-0.9, 0.9, 7)
    me = get_process("ee_mumu", 20.0, z_exchange=False).matrix_element(two_body(20.0, cos))
    e4 = (4 * math.pi * ALPHA) ** 2
    np.testing.assert_allclose(me, e4 * (1 + cos**2), rtol=EXACT_RTOL)


def test_ee_qqg_orientation_average_is_the_ert_formula():
    """Averaged over the beam direction: dsigma/dx1dx2 = sigma0 CF as/(2pi) (x1^2+x2^2)/..."""
    sqrt_s = 50.0
    proc = get_process("ee_qqg", sqrt_s)
    rng = np.random.default_rng(3)
    x1 = rng.uniform(0.3, 0.99, 50)
    x2 = rng.uniform(0.3, 0.99, 50)
    keep = x1 + x2 > 1.05
    x1, x2 = x1[keep], x2[keep]
    e = sqrt_s / 2
    # final state in the x-z plane (generic orientation), beams along the 6 axes
    e1, e2 = x1 * e, x2 * e
    e3 = sqrt_s - e1 - e2
    c12 = (e3**2 - e1**2 - e2**2) / (2 * e1 * e2)
    k1 = np.stack([e1, 0 * e1, 0 * e1, e1], 1)
    k2 = np.stack([e2, e2 * np.sqrt(1 - c12**2), 0 * e2, e2 * c12], 1)
    k3 = np.stack([e3, -k1[:, 1] - k2[:, 1], 0 * e3, -k1[:, 3] - k2[:, 3]], 1)
    avg = 0
    for axis in np.concatenate([np.eye(3), -np.eye(3)]):  # octahedron: a spherical 3-design
        p = np.zeros((x1.size, 5, 4))
        p[:, 0] = [e, *(e * axis)]
        p[:, 1] = [e, *(-e * axis)]
        for j, k in enumerate((k1, k2, k3)):
            p[:, 2 + j] = k
        avg = avg + proc.matrix_element(p) / 6
    nc, q = 3, 2.0 / 3.0
    sigma0 = nc * q**2 * 4 * math.pi * ALPHA**2 / (3 * sqrt_s**2)
    cf = 4.0 / 3.0
    ert = sigma0 * cf * ALPHA_S / (2 * math.pi) * (x1**2 + x2**2) / ((1 - x1) * (1 - x2))
    # dsigma = |M|^2/(2s) dPhi_3 with dPhi_3 = s dx1 dx2 / (128 pi^3) after the angles
    np.testing.assert_allclose(avg / (256 * math.pi**3), ert, rtol=EXACT_RTOL)


def test_ee_qqg_soft_gluon_limit_is_eikonal_times_ee_qq():
    """k_g -> 0: |M|^2 -> g^2 CF 2 (p_q.p_qb)/((p_q.k)(p_qb.k)) |M(ee -> qq)|^2."""
    sqrt_s = 30.0
    cos = np.array([0.3, -0.6])
    base = two_body(sqrt_s, cos)
    lam = 1e-5
    p = np.zeros((2, 5, 4))
    p[:, :2] = base[:, :2]
    k = np.array([1.0, 0.6, 0.0, 0.8]) * lam * sqrt_s
    p[:, 4] = k
    # recoil: scale q and qbar slightly so momentum is conserved (keeps them massless)
    p[:, 2] = base[:, 2]
    p[:, 3] = base[:, 3]
    tot = p[:, 0] + p[:, 1]
    # solve exactly: qbar = tot - q - k with q along its direction, |q| fixed by masslessness
    n = base[:, 2, 1:] / np.linalg.norm(base[:, 2, 1:], axis=1, keepdims=True)
    r = tot - k  # q + qbar = r
    eq = (r[:, 0] ** 2 - np.sum(r[:, 1:] ** 2, 1)) / (2 * (r[:, 0] - np.sum(r[:, 1:] * n, 1)))
    p[:, 2] = np.concatenate([eq[:, None], eq[:, None] * n], 1)
    p[:, 3] = r - p[:, 2]
    me3 = get_process("ee_qqg", sqrt_s).matrix_element(p)
    me2 = 3 * (2 / 3) ** 2 * get_process("ee_mumu", sqrt_s, z_exchange=False).matrix_element(base)
    dot = lambda a, b: a[..., 0] * b[..., 0] - np.sum(a[..., 1:] * b[..., 1:], -1)  # noqa: E731
    eik = 4 * math.pi * ALPHA_S * 4 / 3 * 2 * dot(p[:, 2], p[:, 3]) / (
        dot(p[:, 2], p[:, 4]) * dot(p[:, 3], p[:, 4]))
    np.testing.assert_allclose(me3, eik * me2, rtol=1e-4)


def test_gg_gg_textbook():
    """(1/256) sum |M|^2 = (9/2) g^4 (3 - tu/s^2 - su/t^2 - st/u^2)."""
    p = rambo(1, 50, 2, 1000.0)
    me = get_process("gg_gg", 1000.0).matrix_element(p)
    d = lambda a, b: a[..., 0] * b[..., 0] - np.sum(a[..., 1:] * b[..., 1:], -1)  # noqa: E731
    s = 2 * d(p[:, 0], p[:, 1])
    t = -2 * d(p[:, 0], p[:, 2])
    u = -2 * d(p[:, 0], p[:, 3])
    g4 = (4 * math.pi * ALPHA_S) ** 2
    np.testing.assert_allclose(me, g4 * 4.5 * (3 - t * u / s**2 - s * u / t**2 - s * t / u**2),
                               rtol=EXACT_RTOL)


def _jax_x64():
    import jax

    return jax.enable_x64(True)


@pytest.mark.parametrize("n", [4, 5, 6])
def test_berends_giele_equals_parke_taylor_on_mhv(n):
    """|A_BG(1..n)|^2 = s_ab^4 / prod |s_(k,k+1)| for every (anti-)MHV configuration; zero for
    all-plus and one-minus configurations."""
    import jax.numpy as jnp

    from surrogate_stats.matrix_element._processes import colour_ordered_amplitudes

    p = rambo(5, 4, n - 2, 1000.0)
    hel = np.array(list(itertools.product((1, -1), repeat=n)))
    with _jax_x64():
        amps = np.asarray(colour_ordered_amplitudes(jnp.asarray(p), hel,
                                                    [tuple(range(n))]))[:, :, 0]
    sij = np.abs(2 * np.einsum("eia,eja->eij", p, p * np.array([1, -1, -1, -1])))
    den = np.prod([sij[:, k, (k + 1) % n] for k in range(n)], axis=0)
    scale = np.max(np.abs(amps) ** 2)
    checked = 0
    for h, a in zip(hel, amps.T):
        neg = [i for i in range(n) if h[i] < 0]
        pos = [i for i in range(n) if h[i] > 0]
        if len(neg) <= 1 or len(pos) <= 1:
            assert np.all(np.abs(a) ** 2 < 1e-12 * scale)
        odd = neg if len(neg) == 2 else pos if len(pos) == 2 else None
        if odd is not None:
            np.testing.assert_allclose(np.abs(a) ** 2, sij[:, odd[0], odd[1]] ** 4 / den,
                                       rtol=EXACT_RTOL)
            checked += 1
    assert checked == (6 if n == 4 else 2 * math.comb(n, 2))


@pytest.mark.parametrize("n", [4, 5])
def test_full_colour_berends_giele_equals_parke_taylor(n):
    """The DDM colour matrix with BG amplitudes reproduces the exact Parke-Taylor colour sum."""
    from surrogate_stats.matrix_element._processes import _jitted

    p = rambo(9, 8, n - 2, 1000.0)
    proc = get_process({4: "gg_gg", 5: "gg_ggg"}[n], 1000.0)
    bg = _jitted("gg_gggg", ())  # the BG body works for any n
    with _jax_x64():
        import jax.numpy as jnp

        via_bg = np.asarray(bg(jnp.asarray(p)))
    np.testing.assert_allclose(via_bg, proc.matrix_element(p), rtol=EXACT_RTOL)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "gg_gggg"
                                  else n for n in PROCESSES])
def test_lorentz_invariance_and_bose_symmetry(name, rng):
    proc = get_process(name, 500.0)
    p = rambo(11, 6, proc.n_out, 500.0)
    me = proc.matrix_element(p)
    assert np.all(me > 0) and np.all(np.isfinite(me))
    # a rotation of the whole event
    np.testing.assert_allclose(proc._evaluate(rotate(p, rng)), me, rtol=1e-8)
    np.testing.assert_allclose(proc._evaluate(boost_z(p, 0.3)), me, rtol=1e-8)
    if name.startswith("gg"):  # identical gluons: any permutation of the final state
        perm = [0, 1, *rng.permutation(range(2, 2 + proc.n_out))]
        np.testing.assert_allclose(proc.matrix_element(p[:, perm]), me, rtol=1e-8)
        np.testing.assert_allclose(proc.matrix_element(p[:, [1, 0, *range(2, p.shape[1])]]),
                                   me, rtol=1e-8)


def test_bad_input():
    proc = get_process("gg_ggg", 1000.0)
    p = rambo(0, 3, 3, 1000.0)
    with pytest.raises(InvalidInput, match=r"shape \[N, 5, 4\]"):
        proc.matrix_element(p[:, :4])
    bad = p.copy()
    bad[0, 3, 2] += 5.0
    with pytest.raises(InvalidInput, match="not conserved"):
        proc.matrix_element(bad)
    with pytest.raises(InvalidInput, match="unknown process"):
        get_process("gg_ttbar", 1000.0)
    with pytest.raises(InvalidInput, match="sqrt_s"):
        get_process("gg_gg", -3.0)
    with pytest.raises(InvalidInput, match="unknown option"):
        get_process("gg_gg", 100.0, z_exchange=True)
    assert proc.matrix_element(np.zeros((0, 5, 4))).shape == (0,)
