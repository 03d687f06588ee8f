"""Invariants of every flow constructor: bijectivity, log-det, jit, normalisation, ONNX."""

from __future__ import annotations

import numpy as np
import pytest

from tests.flows.conftest import (
    F64_ATOL,
    FIT_LOGPDF_TOL,
    FLOW_NAMES,
    INTEGRAL_TOL_1D,
    INTEGRAL_TOL_2D,
    ONNX_RTOL,
    random_flow,
)

jax = pytest.importorskip("jax")
jnp = jax.numpy


def _inputs(flow, n=64, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 3.0, (n, flow.dim)).astype(dtype)  # reaches the linear tails too
    c = rng.normal(-1.0, 3.0, (n, flow.cond_dim)).astype(dtype) if flow.cond_dim else None
    return x, c


@pytest.mark.parametrize("name", FLOW_NAMES)
@pytest.mark.parametrize("dims", [(3, 2), (2, 0), (1, 1)])
def test_inverse_undoes_forward(name, dims):
    with jax.enable_x64(True):
        flow = random_flow(name, *dims)
        x, c = _inputs(flow)
        z, ld = flow.transform(x, c)
        xb, ldi = flow.inverse(z, c)
        np.testing.assert_allclose(xb, x, atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(ld + ldi, 0.0, atol=F64_ATOL)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_logdet_equals_autodiff(name):
    with jax.enable_x64(True):
        flow = random_flow(name, 3, 2)
        x, c = _inputs(flow, n=8)
        _, ld = flow.transform(x, c)

        def one(v, cc):
            return flow.transform(v[None, :], cc[None, :])[0][0]
        jac = np.asarray(jax.jit(jax.vmap(jax.jacfwd(one)))(jnp.asarray(x), jnp.asarray(c)))
        sign, logabs = np.linalg.slogdet(jac)
        assert np.all(sign != 0)
        np.testing.assert_allclose(logabs, np.asarray(ld), atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", ["coupling_lu", "maf_reverse"])
def test_jit_equals_eager(name):
    with jax.enable_x64(True):
        flow = random_flow(name, 3, 2)
        x, c = _inputs(flow)
        eager = flow.log_prob(x, c)
        jitted = jax.jit(lambda f, a, b: f.log_prob(a, b))(flow, x, c)
        np.testing.assert_allclose(jitted, eager, rtol=1e-12, atol=1e-12)
        sample = jax.jit(lambda f, z, b: f.inverse(z, b)[0])(flow, x, c)
        np.testing.assert_allclose(sample, flow.inverse(x, c)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FLOW_NAMES)
def test_density_integrates_to_one_1d(name):
    with jax.enable_x64(True):
        flow = random_flow(name, 1, 1, scale=0.5)
        grid = np.linspace(-40, 40, 40001)[:, None]
        for cval in (-3.0, 0.7):
            lp = np.asarray(flow.log_prob(grid, np.full_like(grid, cval)))
            assert abs(np.trapezoid(np.exp(lp), grid[:, 0]) - 1) < INTEGRAL_TOL_1D


@pytest.mark.parametrize("name", ["coupling_lu", "maf_reverse"])
def test_density_integrates_to_one_2d(name):
    with jax.enable_x64(True):
        flow = random_flow(name, 2, 0, scale=0.3)
        g = np.linspace(-25, 25, 701)
        xx, yy = np.meshgrid(g, g, indexing="ij")
        pts = np.c_[xx.ravel(), yy.ravel()]
        p = np.exp(np.asarray(flow.log_prob(pts))).reshape(xx.shape)
        total = np.trapezoid(np.trapezoid(p, g, axis=1), g)
        assert abs(total - 1) < INTEGRAL_TOL_2D


def test_spline_starts_as_identity_and_is_monotone():
    from surrogate_stats.flows import rq_spline
    from surrogate_stats.flows._ops import JaxOps

    ops = JaxOps(jnp.float32)
    x = jnp.linspace(-6, 6, 101)[:, None]
    y, ld = rq_spline(ops, x, jnp.zeros((101, 1, 3 * 8 - 1)), 8, 5.0)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_allclose(ld, 0, atol=1e-5)
    raw = jax.random.normal(jax.random.key(3), (1, 1, 23)).repeat(101, axis=0)
    y, ld = rq_spline(ops, x, raw, 8, 5.0)
    assert np.all(np.diff(np.asarray(y[:, 0])) > 0)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("minima", [{}, {"min_bin_width": 0.02, "min_bin_height": 0.05,
                                        "min_derivative": 0.1}])
def test_unrolled_spline_equals_stacked(inverse, minima):
    """The two forms of the bin machinery (per-bin arrays for fast inference, (N, n, K)
    arrays for training and ONNX) are the same function, knots and tails included."""
    from surrogate_stats.flows import rq_spline
    from surrogate_stats.flows._ops import JaxOps

    with jax.enable_x64(True):
        rng = np.random.default_rng(11)
        raw = jnp.asarray(rng.normal(size=(4000, 3, 3 * 6 - 1)) * 2.0)
        x = rng.normal(size=(4000, 3)) * 2.5                 # a good part beyond the bound 3
        x[:10] = [-3.0, 0.0, 3.0]                            # the ends and the middle
        x = jnp.asarray(x)
        a = rq_spline(JaxOps(jnp.float64), x, raw, 6, 3.0, inverse=inverse, **minima)
        b = rq_spline(JaxOps(jnp.float64, unroll_bins=True), x, raw, 6, 3.0, inverse=inverse,
                      **minima)
        for u, v in zip(a, b):
            np.testing.assert_allclose(np.asarray(v), np.asarray(u), rtol=0, atol=1e-10)
        # gradients too (the unrolled form is not used in training, but it is JAX)
        def loss(r, ops):
            y, ld = rq_spline(ops, x, r, 6, 3.0, inverse=inverse, **minima)
            return jnp.sum(y) + jnp.sum(ld)
        ga = jax.grad(loss)(raw, JaxOps(jnp.float64))
        gb = jax.grad(loss)(raw, JaxOps(jnp.float64, unroll_bins=True))
        np.testing.assert_allclose(np.asarray(gb), np.asarray(ga), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", FLOW_NAMES)
@pytest.mark.parametrize("role", ["log_prob", "sample", "transform", "inverse"])
def test_onnx_matches_jax(name, role):
    ort = pytest.importorskip("onnxruntime")
    from surrogate_stats.flows import export_onnx

    flow = random_flow(name, 3, 2, dtype=np.float32, scale=0.1)
    blob = export_onnx(flow, role=role)
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for n in (1, 37):  # dynamic batch, fresh inputs each time
        x, c = _inputs(flow, n=n, seed=n + 7, dtype=np.float32)
        feed = {sess.get_inputs()[0].name: x, "condition": c}
        got = sess.run(None, feed)
        if role == "log_prob":
            want = [flow.log_prob(x, c)]
        elif role == "transform":
            want = list(flow.transform(x, c))
        else:
            want = list(flow.inverse(x, c))[: 1 if role == "sample" else 2]
        for g, w in zip(got, want):
            w = np.asarray(w)
            rel = np.abs(g - w) / np.maximum(np.abs(w), 1.0)
            assert rel.max() <= ONNX_RTOL, (role, rel.max())


def test_unconditional_export_has_no_condition_input():
    from surrogate_stats.flows import export_onnx

    onnx = pytest.importorskip("onnx")
    flow = random_flow("maf_reverse", 2, 0, dtype=np.float32, scale=0.1)
    m = onnx.load_from_string(export_onnx(flow, role="sample"))
    assert [i.name for i in m.graph.input] == ["noise"]


def test_arrays_roundtrip():
    from surrogate_stats.flows import Flow

    flow = random_flow("coupling_lu", 3, 2, dtype=np.float32)
    back = Flow.from_arrays(flow.structure(), flow.arrays())
    x, c = _inputs(flow, dtype=np.float32)
    np.testing.assert_array_equal(back.log_prob(x, c), flow.log_prob(x, c))


def test_bad_shapes_and_hyperparameters():
    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.flows import coupling_flow

    flow = random_flow("coupling_lu", 3, 2, dtype=np.float32)
    with pytest.raises(InvalidInput, match=r"shape \(N, 3\)"):
        flow.log_prob(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(InvalidInput, match="condition"):
        flow.log_prob(np.zeros((4, 3)))
    with pytest.raises(InvalidInput, match="condition must have shape"):
        flow.log_prob(np.zeros((4, 3)), np.zeros((5, 2)))
    with pytest.raises(InvalidInput, match="knots"):
        coupling_flow(jax.random.key(0), dim=2, knots=1)
    with pytest.raises(InvalidInput, match="mixing"):
        coupling_flow(jax.random.key(0), dim=2, mixing="shuffle")


def test_fit_flow_learns_a_conditional_gaussian():
    """Oracle: x | c ~ N(c, 0.5^2); the fitted log density is close to scipy's."""
    from scipy import stats

    from surrogate_stats.errors import InvalidInput
    from surrogate_stats.flows import FlowTrainConfig, coupling_flow, fit_flow

    rng = np.random.default_rng(0)
    c = rng.uniform(-2, 2, (4000, 1))
    x = c + 0.5 * rng.standard_normal((4000, 1))
    w = np.where(rng.random(4000) < 0.1, -0.2, 1.0)  # a few signed weights
    flow = coupling_flow(jax.random.key(0), dim=1, cond_dim=1, n_layers=2, hidden=(16,))
    cfg = FlowTrainConfig(max_epochs=15, batch_size=256, learning_rate=3e-3)
    fitted, hist = fit_flow(jax.random.key(1), flow, x, condition=c, weights=w, config=cfg,
                            progress=False)
    assert hist.val_loss[-1] < hist.val_loss[0]
    xt = 0.3 + 0.5 * np.random.default_rng(5).standard_normal((200, 1))  # from the truth
    ct = np.full_like(xt, 0.3)
    got = np.asarray(fitted.log_prob(xt.astype(np.float32), ct.astype(np.float32)))
    want = stats.norm.logpdf(xt[:, 0], 0.3, 0.5)
    assert np.mean(np.abs(got - want)) < FIT_LOGPDF_TOL
    with pytest.raises(InvalidInput, match="positive sum"):
        fit_flow(jax.random.key(1), flow, x, condition=c, weights=-np.ones(4000), config=cfg)
    with pytest.raises(InvalidInput, match="NaN"):
        fit_flow(jax.random.key(1), flow, np.full_like(x, np.nan), condition=c, config=cfg)
    # fine-tuning (standardise=False) keeps the standardisation and follows shifted data
    tuned, _ = fit_flow(jax.random.key(2), fitted, x + 0.4, condition=c, config=cfg,
                        progress=False, standardise=False)
    for k, v in fitted.buffers.items():
        np.testing.assert_array_equal(tuned.buffers[k], v)
    lp = [float(np.mean(np.asarray(f.log_prob((xt + 0.4).astype(np.float32),
                                                ct.astype(np.float32)))))
          for f in (fitted, tuned)]
    assert lp[1] > lp[0] + 0.1, lp


def test_generic_conditioner_nets_keep_the_invariants():
    """Layers with a generic ``net`` (residual blocks, context added / gated, batch-norm-like
    affine, MADE masks from degrees): inverse undoes forward, log-det = autodiff, ONNX = JAX."""
    ort = pytest.importorskip("onnxruntime")
    from surrogate_stats.flows import Flow, export_onnx
    from surrogate_stats.flows._flow import _build, check_net

    dim, cond = 3, 2
    degs = [1, 2, 0, 1, 2, 0, 1, 2]  # hidden degrees (0: sees only the condition)
    made_net = {"activation": "silu", "layers": [
        {"type": "dense", "act": False, "size": 8, "degrees": degs, "context": "add_act"},
        {"type": "residual", "context": "add", "pre_norm": True, "inner_degrees": degs,
         "degrees": degs},
        {"type": "dense", "act": True, "size": 8, "degrees": degs},
        {"type": "dense"}]}
    coupling_net = {"activation": "elu", "layers": [
        {"type": "dense", "size": 6},
        {"type": "residual", "context": "glu"},
        {"type": "residual", "context": "none"},
        {"type": "dense"}]}
    check_net(made_net, masked=True)
    check_net(coupling_net)
    specs = [{"type": "rq_made", "order": [2, 0, 1], "knots": 5, "bound": 3.0,
              "min_derivative": 1e-2, "net": made_net},
             {"type": "permute", "perm": [1, 2, 0]},
             {"type": "rq_coupling", "identity": [0], "transformed": [1, 2], "knots": 4,
              "bound": 2.5, "net": coupling_net}]
    with jax.enable_x64(True):
        base = _build(jax.random.key(2), dim, cond, specs, np.float64)
        rng = np.random.default_rng(3)
        flow = base.with_params([{k: np.asarray(v) + 0.3 * rng.standard_normal(np.shape(v))
                                  for k, v in p.items()} for p in base.params])
        x, c = _inputs(flow)
        z, ld = flow.transform(x, c)
        xb, ldi = flow.inverse(z, c)
        np.testing.assert_allclose(xb, x, atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(ld + ldi, 0.0, atol=F64_ATOL)

        def one(v, cc):
            return flow.transform(v[None, :], cc[None, :])[0][0]
        jac = np.asarray(jax.vmap(jax.jacfwd(one))(jnp.asarray(x[:8]), jnp.asarray(c[:8])))
        np.testing.assert_allclose(np.linalg.slogdet(jac)[1], np.asarray(ld[:8]), atol=1e-8)
        # the MADE layer alone is autoregressive in its order [2, 0, 1]
        made_only = Flow(dim, cond, (specs[0],), (flow.params[0],), {})
        jm = np.asarray(jax.jacfwd(lambda v: made_only.transform(v[None], c[:1])[0][0])(
            jnp.asarray(x[0])))
        assert jm[0, 1] == 0 and jm[2, 0] == 0 and jm[2, 1] == 0 and jm[1, 0] != 0
    f32 = Flow.from_arrays(flow.structure(), flow.arrays())
    x32, c32 = _inputs(f32, n=37, seed=9, dtype=np.float32)
    sess = ort.InferenceSession(export_onnx(f32, role="log_prob"),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x32, "condition": c32})[0]
    want = np.asarray(f32.log_prob(x32, c32))
    assert (np.abs(got - want) / np.maximum(np.abs(want), 1.0)).max() <= ONNX_RTOL
