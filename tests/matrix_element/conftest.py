"""Fixtures and named tolerances of the matrix-element tests."""

from __future__ import annotations

import numpy as np
import pytest

EXACT_RTOL = 1e-9  # identities that hold exactly in float64 (Parke-Taylor, colour sums)
QUAD_RTOL = 1e-8  # Gauss-Legendre integrals of smooth angular distributions
PARITY_RTOL = 1e-9  # ONNX float64 vs numpy/JAX float64
P_MIN = 0.01  # chi^2 p-value threshold of the unbiasedness tests


def rotate(p, rng):
    """Apply one random rotation to every momentum of each event."""
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    out = p.copy()
    out[..., 1:] = p[..., 1:] @ q.T
    return out


def boost_z(p, beta):
    g = 1 / np.sqrt(1 - beta**2)
    out = p.copy()
    out[..., 0] = g * (p[..., 0] + beta * p[..., 3])
    out[..., 3] = g * (p[..., 3] + beta * p[..., 0])
    return out


@pytest.fixture()
def rng():
    return np.random.default_rng(20251126)
