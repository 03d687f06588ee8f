"""RAMBO: momentum conservation, masslessness, the n-body volume and flatness; cuts; checks."""

import math

import numpy as np
import pytest

from surrogate_stats.errors import InvalidInput
from surrogate_stats.matrix_element import Cuts, check_momenta, phase_space_volume, rambo

VOLUME_RTOL = 1e-7


def _volume_by_recursion(n, s):
    """Phi_n(s) = int_0^s ds'/(2 pi) Phi_2(s; s', 0) Phi_(n-1)(s'), Phi_2 = (1 - s'/s)/(8 pi)."""
    from scipy.integrate import quad

    if n == 2:
        return 1.0 / (8 * math.pi)
    val, _ = quad(lambda sp: (1 - sp / s) / (8 * math.pi) * _volume_by_recursion(n - 1, sp)
                  / (2 * math.pi), 0.0, s, epsabs=0, epsrel=1e-12)
    return val


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_volume_matches_recursive_integral(n):
    sqrt_s = 91.0
    assert phase_space_volume(n, sqrt_s) == pytest.approx(
        _volume_by_recursion(n, sqrt_s**2), rel=VOLUME_RTOL)
    assert phase_space_volume(3, 10.0) == pytest.approx(100.0 / (256 * math.pi**3))


@pytest.mark.parametrize("n_out", [2, 3, 4])
def test_rambo_conserves_momentum_and_is_massless(n_out):
    p = rambo(1, 2000, n_out, 500.0)
    assert p.shape == (2000, 2 + n_out, 4)
    np.testing.assert_allclose(p[:, :2].sum(1), p[:, 2:].sum(1), atol=1e-9)
    m2 = p[..., 0] ** 2 - np.sum(p[..., 1:] ** 2, axis=-1)
    assert np.max(np.abs(m2)) < 1e-7
    assert np.all(p[..., 0] > 0)
    check_momenta(p, 2 + n_out, 500.0)


def test_rambo_three_body_is_flat_in_energy_fractions():
    """dPhi_3 is flat in (x1, x2) on the triangle: the marginal of x1 is 2 x1 on [0, 1]."""
    from scipy import stats

    p = rambo(7, 20000, 3, 100.0)
    x1 = 2 * p[:, 2, 0] / 100.0
    assert stats.kstest(x1, lambda x: np.clip(x, 0, 1) ** 2).pvalue > 0.01
    # and isotropic: cos(theta) uniform
    cos = p[:, 2, 3] / np.linalg.norm(p[:, 2, 1:], axis=1)
    assert stats.kstest(cos, "uniform", args=(-1, 2)).pvalue > 0.01


def test_rambo_is_reproducible_and_validates():
    np.testing.assert_array_equal(rambo(3, 5, 3, 10.0), rambo(3, 5, 3, 10.0))
    with pytest.raises(InvalidInput, match="n_out"):
        rambo(0, 5, 1, 10.0)
    with pytest.raises(InvalidInput, match="sqrt_s"):
        rambo(0, 5, 3, -1.0)


def test_cuts():
    p = rambo(2, 5000, 3, 100.0)
    c = Cuts(pt_min=10.0, eta_max=2.0, delta_r_min=0.4, y_min=0.01)
    ok = c.passes(p)
    out = p[ok][:, 2:]
    pt = np.hypot(out[..., 1], out[..., 2])
    assert 0 < ok.sum() < p.shape[0]
    assert np.all(pt >= 10.0)
    eta = np.arcsinh(out[..., 3] / pt)
    assert np.all(np.abs(eta) <= 2.0)
    assert Cuts.from_dict(c.to_dict()) == c
    assert Cuts.from_dict(Cuts().to_dict()) == Cuts()
    with pytest.raises(InvalidInput, match="pt_min"):
        Cuts(pt_min=-1.0)


def test_check_momenta_rejects_bad_input():
    p = rambo(0, 4, 2, 100.0)
    with pytest.raises(InvalidInput, match=r"shape \[N, 4, 4\]"):
        check_momenta(p[:, :3], 4)
    with pytest.raises(InvalidInput, match="not conserved"):
        bad = p.copy()
        bad[1, 2, 1] += 1.0
        check_momenta(bad, 4)
    with pytest.raises(InvalidInput, match="NaN"):
        bad = p.copy()
        bad[0, 0, 0] = np.nan
        check_momenta(bad, 4)
    with pytest.raises(InvalidInput, match="sqrt"):
        check_momenta(p, 4, 200.0)


def test_importing_the_subpackage_is_light():
    import subprocess
    import sys

    code = ("import sys, surrogate_stats.matrix_element, surrogate_stats.cli._me\n"
            "print([m for m in ('jax', 'optax', 'scipy', 'onnx', 'onnxruntime', 'pylhe', "
            "'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
