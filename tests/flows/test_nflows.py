"""nflows interoperability: converted flows compute nflows' log_prob, inverse and sampling,
in JAX and in the exported ONNX graphs; unsupported pieces raise naming the piece."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nflows")
jax = pytest.importorskip("jax")

from nflows.distributions.normal import ConditionalDiagonalNormal, StandardNormal  # noqa: E402
from nflows.flows.base import Flow as NFlow  # noqa: E402
from nflows.nn.nets.mlp import MLP  # noqa: E402
from nflows.nn.nets.resnet import ResidualNet  # noqa: E402
from nflows.transforms import (  # noqa: E402
    BatchNorm,
    CompositeTransform,
    LULinear,
    MaskedAffineAutoregressiveTransform,
    NaiveLinear,
    RandomPermutation,
    ReversePermutation,
)
from nflows.transforms.autoregressive import (  # noqa: E402
    MaskedPiecewiseRationalQuadraticAutoregressiveTransform as RQMaf,
)
from nflows.transforms.coupling import (  # noqa: E402
    PiecewiseRationalQuadraticCouplingTransform as RQCoupling,
)

from surrogate_stats.errors import InvalidInput  # noqa: E402
from surrogate_stats.flows import Flow, export_onnx, from_nflows  # noqa: E402

# named tolerances
F64_ATOL = 1e-9  # float64 nflows vs float64 conversion (JAX or ONNX): same maths, rounding only
F32_RTOL = 1e-5  # float32 nflows vs float32 JAX, relative to max(|log p|, 1)
ONNX_F32_RTOL = 1e-4  # float32 ONNX graph vs float64 nflows (the ONNX tolerance)

D, C = 3, 2


class ContextFreeMLP(MLP):
    """nflows' MLP called as a coupling conditioner (nflows passes the context, MLP takes
    none): the usual adapter, which ignores the context."""

    def forward(self, inputs, context=None):
        return super().forward(inputs)


def _resnet(context, **kw):
    return lambda i, o: ResidualNet(i, o, hidden_features=12, context_features=context,
                                    num_blocks=2, **kw)


def _maf(context, **kw):
    kw = {"num_bins": 6, "tails": "linear", "tail_bound": 3.0, "hidden_features": 16, **kw}
    return RQMaf(features=kw.pop("features", D), context_features=context, **kw)


def _ctors():
    """name -> (builder, context size); each builds an nflows Flow of D features."""
    F = torch.nn.functional
    return {
        "maf_residual": (lambda: [_maf(C), ReversePermutation(D), _maf(C, num_blocks=1)], C),
        "maf_feedforward_random_mask_tanh": (lambda: [
            _maf(C, use_residual_blocks=False, random_mask=True, activation=torch.tanh),
            RandomPermutation(D),
            _maf(C, use_residual_blocks=False, activation=F.elu, num_blocks=1)], C),
        "maf_batchnorm_unconditional": (lambda: [
            _maf(None, use_batch_norm=True), RandomPermutation(D),
            _maf(None, use_residual_blocks=False, use_batch_norm=True)], 0),
        "coupling_resnet": (lambda: [
            RQCoupling(torch.tensor([1, 0, 1]), _resnet(C), num_bins=5, tails="linear",
                       tail_bound=3.5),
            LULinear(D, identity_init=False),
            RQCoupling(torch.tensor([0, 1, 0]), _resnet(C, use_batch_norm=True), num_bins=7,
                       tails="linear", tail_bound=2.5, min_derivative=1e-2),
            RandomPermutation(D)], C),
        "coupling_mlp_unconditional": (lambda: [
            RQCoupling(torch.tensor([1, 1, 0]),
                       lambda i, o: ContextFreeMLP((i,), (o,), [10, 10]),
                       num_bins=4, tails="linear", tail_bound=3.0),
            ReversePermutation(D),
            RQCoupling(torch.tensor([1, 0, 0]),
                       lambda i, o: ContextFreeMLP((i,), (o,), [8], activation=torch.sigmoid),
                       num_bins=4, tails="linear", tail_bound=3.0)], 0),
        "mixed_conditional": (lambda: [
            _maf(C), RandomPermutation(D),
            RQCoupling(torch.tensor([0, 1, 1]), _resnet(C), num_bins=5, tails="linear",
                       tail_bound=3.0),
            LULinear(D, identity_init=False)], C),
    }


NAMES = list(_ctors())


def build(name, *, seed=0, perturb=0.3, train_steps=0):
    """A random nflows flow (parameters moved away from nflows' identity initialisation; for
    ``train_steps`` > 0, trained by maximum likelihood instead), in evaluation mode."""
    torch.manual_seed(seed)
    make, ctx = _ctors()[name]
    flow = NFlow(CompositeTransform(make()), StandardNormal([D]))
    x, c = _data(ctx, 256, seed=seed + 1, dtype=np.float32)
    xt, ct = torch.from_numpy(x), (torch.from_numpy(c) if ctx else None)
    if train_steps:
        opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
        flow.train()
        for _ in range(train_steps):
            opt.zero_grad()
            loss = -flow.log_prob(xt, context=ct).mean()
            loss.backward()
            opt.step()
    else:
        with torch.no_grad():
            for p in flow.parameters():
                p.add_(perturb * torch.randn_like(p))
            flow.train()
            for _ in range(3):  # give batch norms non-trivial running statistics
                flow.log_prob(xt, context=ct)
    return flow.eval(), ctx


def _data(ctx, n, *, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 2.0, (n, D)).astype(dtype)  # inside and outside the tail bounds
    x[:, 1] += 0.5 * x[:, 0] ** 2 / 4
    c = rng.normal(0.0, 1.5, (n, ctx)).astype(dtype) if ctx else None
    return x, c


def _nflows_log_prob(flow, x, c):
    with torch.no_grad():
        return flow.log_prob(torch.from_numpy(x),
                             context=None if c is None else torch.from_numpy(c)).numpy()


def _nflows_inverse(flow, z, c):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LULinear's inverse uses a deprecated torch solver
        x, ld = flow._transform.inverse(torch.from_numpy(z),
                                        context=None if c is None else torch.from_numpy(c))
    return x.numpy(), ld.numpy()


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_transform_and_inverse_match_nflows_float64(name):
    nflow, ctx = build(name)
    nflow = nflow.double()
    flow = from_nflows(nflow, dtype=np.float64)
    assert (flow.dim, flow.cond_dim) == (D, ctx)
    x, c = _data(ctx, 64, seed=11)  # fresh inputs, not the ones the batch norms saw
    with jax.enable_x64(True):
        lp = np.asarray(flow.log_prob(x, c))
        z, ld = (np.asarray(a) for a in flow.transform(x, c))
        z_ref, ld_ref = (a.detach().numpy() for a in nflow._transform(
            torch.from_numpy(x), context=None if c is None else torch.from_numpy(c)))
        np.testing.assert_allclose(lp, _nflows_log_prob(nflow, x, c), atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(z, z_ref, atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(ld, ld_ref, atol=F64_ATOL, rtol=0)
        # sampling with given noise = nflows' inverse of that noise
        noise = np.random.default_rng(12).standard_normal((64, D))
        xs, lds = (np.asarray(a) for a in flow.inverse(noise, c))
        xs_ref, lds_ref = _nflows_inverse(nflow, noise, c)
        np.testing.assert_allclose(xs, xs_ref, atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(lds, lds_ref, atol=F64_ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(flow.sample(None, noise=noise, condition=c)),
                                   xs_ref, atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["maf_residual", "coupling_resnet"])
def test_trained_flow_matches_in_float32_and_float64(name):
    nflow, ctx = build(name, train_steps=15)
    # the training moved the weights: the flow is no longer at its initialisation
    lp0 = _nflows_log_prob(build(name, perturb=0.0)[0], *_data(ctx, 64, seed=3,
                                                                dtype=np.float32))
    x, c = _data(ctx, 64, seed=21, dtype=np.float32)
    lp32_ref = _nflows_log_prob(nflow, x, c)
    assert not np.allclose(lp0, lp32_ref[:64], atol=0.05)
    got32 = np.asarray(from_nflows(nflow).log_prob(x, c))
    rel = np.abs(got32 - lp32_ref) / np.maximum(np.abs(lp32_ref), 1.0)
    assert rel.max() <= F32_RTOL, rel.max()
    nflow = nflow.double()
    x64, c64 = x.astype(np.float64), (c.astype(np.float64) if ctx else None)
    with jax.enable_x64(True):
        got64 = np.asarray(from_nflows(nflow, dtype=np.float64).log_prob(x64, c64))
    np.testing.assert_allclose(got64, _nflows_log_prob(nflow, x64, c64), atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("name", ["maf_residual", "coupling_resnet",
                                  "maf_batchnorm_unconditional"])
def test_onnx_export_matches_nflows(name):
    ort = pytest.importorskip("onnxruntime")
    nflow, ctx = build(name, seed=1)
    nflow = nflow.double()
    x, c = _data(ctx, 64, seed=31)
    noise = np.random.default_rng(32).standard_normal((64, D))
    lp_ref = _nflows_log_prob(nflow, x, c)
    xs_ref, _ = _nflows_inverse(nflow, noise, c)
    for dtype, tol in (("float64", None), ("float32", ONNX_F32_RTOL)):
        flow = from_nflows(nflow, dtype=np.float64 if dtype == "float64" else np.float32)
        for role, first, want in (("log_prob", x, lp_ref), ("sample", noise, xs_ref)):
            sess = ort.InferenceSession(export_onnx(flow, role=role, dtype=dtype),
                                        providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: first.astype(dtype)}
            if ctx:
                feed["condition"] = c.astype(dtype)
            got = sess.run(None, feed)[0].astype(np.float64)
            if tol is None:
                np.testing.assert_allclose(got, want, atol=F64_ATOL, rtol=0)
            else:
                rel = np.abs(got - want) / np.maximum(np.abs(want), 1.0)
                assert rel.max() <= tol, (role, rel.max())


def test_converted_flow_is_plain_json_and_arrays():
    nflow, ctx = build("mixed_conditional")
    flow = from_nflows(nflow)
    structure = json.loads(json.dumps(flow.structure()))
    back = Flow.from_arrays(structure, flow.arrays())
    x, c = _data(ctx, 64, seed=41, dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(back.log_prob(x, c)),
                                  np.asarray(flow.log_prob(x, c)))
    # the numpy backend (no JAX) computes the same in float64
    from surrogate_stats.flows._flow import flow_log_prob, prepared
    from surrogate_stats.flows._ops import NumpyOps

    n64 = from_nflows(nflow.double(), dtype=np.float64)
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    lp_np = flow_log_prob(NumpyOps(), n64, prepared(n64, np, inverse=False), x64, c64)
    np.testing.assert_allclose(lp_np, _nflows_log_prob(nflow, x64, c64), atol=F64_ATOL, rtol=0)


def test_one_dimensional_maf():
    torch.manual_seed(5)
    nflow = NFlow(CompositeTransform([_maf(C, features=1), _maf(C, features=1)]),
                  StandardNormal([1]))
    with torch.no_grad():
        for p in nflow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    nflow = nflow.eval().double()
    rng = np.random.default_rng(6)
    x, c = rng.normal(0, 2, (100, 1)), rng.normal(0, 1, (100, C))
    with jax.enable_x64(True):
        lp = np.asarray(from_nflows(nflow, dtype=np.float64).log_prob(x, c))
    np.testing.assert_allclose(lp, _nflows_log_prob(nflow, x, c), atol=F64_ATOL, rtol=0)


def _flow_of(*transforms, base=None, **kw):
    return NFlow(CompositeTransform(list(transforms)), base or StandardNormal([D]), **kw)


@pytest.mark.parametrize("make, match", [
    (lambda: _flow_of(MaskedAffineAutoregressiveTransform(D, 8)),
     "MaskedAffineAutoregressiveTransform"),
    (lambda: _flow_of(NaiveLinear(D)), "NaiveLinear.*inverse is broken"),
    (lambda: _flow_of(BatchNorm(D)), "BatchNorm"),
    (lambda: _flow_of(_maf(None, tails=None)), "tails=None"),
    (lambda: _flow_of(_maf(None, activation=torch.nn.functional.gelu)), "activation"),
    (lambda: _flow_of(RQCoupling(torch.tensor([1, 0, 1]), _resnet(None), tails="linear",
                                 apply_unconditional_transform=True)),
     "apply_unconditional_transform"),
    (lambda: _flow_of(_maf(None), base=ConditionalDiagonalNormal([D])),
     "ConditionalDiagonalNormal"),
    (lambda: _flow_of(_maf(C), embedding_net=torch.nn.Linear(4, C)), "embedding net Linear"),
    (lambda: _flow_of(_maf(None, use_batch_norm=True)).train(), "training mode"),
    (lambda: _flow_of(_maf(None, dropout_probability=0.2)).train(), "Dropout.*training mode"),
    (lambda: torch.nn.Linear(2, 2), "nflows.flows.base.Flow"),
])
def test_unsupported_pieces_raise_naming_them(make, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flow = make()
    with pytest.raises(InvalidInput, match=match):
        from_nflows(flow)


def test_bad_dtype():
    with pytest.raises(InvalidInput, match="float32 or float64"):
        from_nflows(_flow_of(_maf(None)), dtype=np.int32)
