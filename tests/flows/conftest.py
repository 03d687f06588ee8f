"""Fixtures of the flow tests: a registry of flow constructors, one tiny trained correction."""

from __future__ import annotations

import numpy as np
import pytest

# named tolerances
F64_ATOL = 1e-8  # inverse(forward(x)) and log-det identities in float64
ONNX_RTOL = 1e-4  # ONNX float32 vs JAX float32 (the requirement)
INTEGRAL_TOL_1D = 2e-3
INTEGRAL_TOL_2D = 5e-3
FIT_LOGPDF_TOL = 0.2  # mean |log p_flow - log p_true| after a short fit (4000 events)


def _ctors():
    from surrogate_stats.flows import coupling_flow, masked_autoregressive_flow

    small = dict(hidden=(8, 8), knots=5, bound=3.0)
    return {
        "coupling_lu": lambda k, d, c, dt: coupling_flow(k, dim=d, cond_dim=c, n_layers=3,
                                                          mixing="lu", dtype=dt, **small),
        "coupling_permute": lambda k, d, c, dt: coupling_flow(
            k, dim=d, cond_dim=c, n_layers=2, mixing="permute", dtype=dt, **small),
        "maf_reverse": lambda k, d, c, dt: masked_autoregressive_flow(
            k, dim=d, cond_dim=c, n_layers=2, mixing="reverse", dtype=dt, **small),
        "maf_lu": lambda k, d, c, dt: masked_autoregressive_flow(
            k, dim=d, cond_dim=c, n_layers=2, mixing="lu", dtype=dt, **small),
    }


FLOW_NAMES = ["coupling_lu", "coupling_permute", "maf_reverse", "maf_lu"]


def random_flow(name, dim, cond_dim, *, dtype=np.float64, seed=0, scale=0.3):
    """A constructor from the registry with perturbed (non-identity) parameters and a
    non-trivial standardisation."""
    import jax

    flow = _ctors()[name](jax.random.key(seed), dim, cond_dim, dtype)
    rng = np.random.default_rng(seed + 100)
    params = [{k: np.asarray(v) + scale * rng.standard_normal(np.shape(v)).astype(dtype)
               for k, v in p.items()} for p in flow.params]
    x = rng.normal(0.5, 2.0, (200, dim))
    c = rng.normal(-1.0, 3.0, (200, cond_dim)) if cond_dim else None
    return flow.with_params(params).with_standardisation(x, c)


@pytest.fixture(scope="session")
def toy_split():
    from surrogate_stats.flows.toys import photon_toy

    xm, cm = photon_toy(3000, sample="mc", seed=1)
    xd, cd = photon_toy(3000, sample="data", seed=1)
    return xm, cm, xd, cd


@pytest.fixture(scope="session")
def tiny_correction(toy_split):
    """A CorrectionFlow trained for one epoch on the toy (fast; quality is not tested)."""
    import jax

    from surrogate_stats.flows import CorrectionConfig, CorrectionFlow, FlowTrainConfig
    from surrogate_stats.flows.toys import CONDITIONS, VARIABLES

    xm, cm, xd, cd = toy_split
    cfg = CorrectionConfig(n_layers=2, hidden=(16,), knots=6,
                           train=FlowTrainConfig(max_epochs=2, batch_size=256))
    return CorrectionFlow.fit(jax.random.key(0), mc=xm, data=xd, mc_conditions=cm,
                              data_conditions=cd, variables=VARIABLES, conditions=CONDITIONS,
                              config=cfg, progress=False)


@pytest.fixture(scope="session")
def tiny_artifact(tiny_correction, tmp_path_factory):
    out = tmp_path_factory.mktemp("flows") / "toy_correction"
    tiny_correction.save(out)
    return out
