"""Convert a trained `nflows <https://github.com/bayesiains/nflows>`_ flow into a :class:`Flow`.

Supported nflows 0.14 pieces (anything else raises :class:`InvalidInput` naming the piece):

* ``nflows.flows.base.Flow`` with a ``StandardNormal`` base and no embedding net;
* ``CompositeTransform`` (nested ones are flattened);
* ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with ``tails="linear"``
  (its ``MADE``: residual or feed-forward blocks, sequential or random masks, context);
* ``PiecewiseRationalQuadraticCouplingTransform`` with ``tails="linear"`` and a
  ``ResidualNet`` (context through its gates) or ``MLP`` conditioner, without the
  unconditional transform of the identity features;
* ``Permutation``, ``ReversePermutation``, ``RandomPermutation``, ``LULinear``;
* activations relu, tanh, sigmoid, elu (alpha 1), silu, leaky_relu (slope 0.01), as
  functions or modules; ``BatchNorm1d`` in evaluation mode (its running statistics);
  dropout in evaluation mode (the identity).

nflows transforms map data to noise in ``forward``, as :meth:`Flow.transform` does, so the layer
order is kept. The spline parameterisation is the same (softmax widths and heights with
minimum 1e-3, softplus derivatives, end derivatives 1, identity outside ``[-B, B]``); the two
differences are folded into the last layer of each conditioner: nflows divides the raw widths
and heights by ``sqrt(hidden_features)`` when the network has that attribute (``ResidualNet``
has, ``MADE`` and ``MLP`` have not), and our raw derivatives carry an offset
``log(expm1(1 - min_derivative))`` that nflows does not.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput

__all__ = ["from_nflows"]

_SUPPORTED = ("MaskedPiecewiseRationalQuadraticAutoregressiveTransform (tails='linear'), "
              "PiecewiseRationalQuadraticCouplingTransform (tails='linear'), Permutation, "
              "ReversePermutation, RandomPermutation, LULinear, CompositeTransform")
_HINTS = {
    "NaiveLinear": "its inverse is broken in nflows 0.14; use LULinear",
    "BatchNorm": "the BatchNorm transform changes with every batch in training; "
                 "it is not supported",
    "ActNorm": "not supported; use LULinear",
    "MaskedAffineAutoregressiveTransform": "affine MAF layers are not supported; use "
                                           "MaskedPiecewiseRationalQuadraticAutoregressiveTransform",
    "AffineCouplingTransform": "affine coupling layers are not supported; use "
                               "PiecewiseRationalQuadraticCouplingTransform",
}


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().copy()


class _Converter:
    def __init__(self):
        self.torch = optional_import("torch")
        self.F = self.torch.nn.functional
        self.nf = {
            "base": optional_import("nflows.flows.base"),
            "normal": optional_import("nflows.distributions.normal"),
            "tbase": optional_import("nflows.transforms.base"),
            "auto": optional_import("nflows.transforms.autoregressive"),
            "coupling": optional_import("nflows.transforms.coupling"),
            "perm": optional_import("nflows.transforms.permutations"),
            "lu": optional_import("nflows.transforms.lu"),
            "made": optional_import("nflows.transforms.made"),
            "resnet": optional_import("nflows.nn.nets.resnet"),
            "mlp": optional_import("nflows.nn.nets.mlp"),
        }

    # ------------------------------------------------------------ pieces
    def activation(self, fn, where: str) -> str:
        torch, F = self.torch, self.F
        nn = torch.nn
        by_function = {F.relu: "relu", torch.relu: "relu", torch.tanh: "tanh",
                       F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                       F.silu: "silu", F.elu: "elu", F.leaky_relu: "leaky_relu"}
        for f, name in by_function.items():
            if fn is f:
                return name
        if isinstance(fn, (nn.ReLU,)):
            return "relu"
        if isinstance(fn, nn.Tanh):
            return "tanh"
        if isinstance(fn, nn.Sigmoid):
            return "sigmoid"
        if isinstance(fn, nn.SiLU):
            return "silu"
        if isinstance(fn, nn.ELU) and fn.alpha == 1.0:
            return "elu"
        if isinstance(fn, nn.LeakyReLU) and fn.negative_slope == 0.01:
            return "leaky_relu"
        raise InvalidInput(f"{where}: activation {fn!r} is not supported; supported: relu, tanh, "
                           "sigmoid, silu, elu (alpha 1), leaky_relu (slope 0.01)")

    def check_modes(self, module, where: str) -> None:
        nn = self.torch.nn
        for name, m in module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.training:
                    raise InvalidInput(
                        f"{where}: {type(m).__name__} {name!r} is in training mode (its output "
                        "depends on the batch); call flow.eval() before converting")
                if m.running_mean is None:
                    raise InvalidInput(f"{where}: {type(m).__name__} {name!r} keeps no running "
                                       "statistics (track_running_stats=False)")
            if isinstance(m, nn.Dropout) and m.training and m.p > 0:
                raise InvalidInput(f"{where}: Dropout {name!r} (p={m.p}) is in training mode; "
                                   "call flow.eval() before converting")

    @staticmethod
    def bn_affine(bn):
        """Evaluation-mode batch norm as ``x * scale + shift``."""
        mean, var = _np(bn.running_mean), _np(bn.running_var)
        gamma = _np(bn.weight) if bn.weight is not None else np.ones_like(mean)
        beta = _np(bn.bias) if bn.bias is not None else np.zeros_like(mean)
        scale = gamma / np.sqrt(var + bn.eps)
        return scale, beta - mean * scale

    @staticmethod
    def linear(lin, mask=None):
        """``(W, b)`` with ``x @ W + b`` = the torch layer (mask applied)."""
        w = _np(lin.weight)
        if mask is not None:
            w = w * _np(mask)
        b = _np(lin.bias) if lin.bias is not None else np.zeros(w.shape[0])
        return w.T, b

    def spline_head(self, w, b, knots, net_module, min_derivative):
        """Fold nflows' ``1/sqrt(hidden_features)`` and our derivative offset into ``w, b``."""
        P = 3 * knots - 1
        col = np.arange(w.shape[1]) % P
        if hasattr(net_module, "hidden_features"):
            s = 1.0 / math.sqrt(net_module.hidden_features)
            wh = col < 2 * knots
            w, b = w.copy(), b.copy()
            w[:, wh] *= s
            b[wh] *= s
        shift = math.log(math.expm1(1.0 - min_derivative))
        return w, b - np.where(col >= 2 * knots, shift, 0.0)

    @staticmethod
    def spline_opts(t, where):
        if t.tails != "linear":
            raise InvalidInput(f"{where}: tails={t.tails!r} is not supported (only "
                               "tails='linear', the identity outside [-tail_bound, tail_bound])")
        return {"knots": int(t.num_bins), "bound": float(t.tail_bound),
                "min_bin_width": float(t.min_bin_width),
                "min_bin_height": float(t.min_bin_height),
                "min_derivative": float(t.min_derivative)}

    # ------------------------------------------------------------ MADE
    def made(self, t, dim, cond_dim, where):
        made_mod = self.nf["made"]
        net = t.autoregressive_net
        if type(net) is not made_mod.MADE:
            raise InvalidInput(f"{where}: autoregressive net {type(net).__name__} is not "
                               "supported (only nflows' MADE)")
        opts = self.spline_opts(t, where)
        K = opts["knots"]
        arrays, items = {}, []
        # nflows.transforms.made.MADE: h = x W + b [+ act(c Wc + bc)], activated when the
        # blocks are feed-forward ones; the condition columns of our first layer are zero
        act = self.activation(net.activation, where)
        w, b = self.linear(net.initial_layer, net.initial_layer.mask)
        arrays["n0.W"] = np.concatenate([w, np.zeros((cond_dim, w.shape[1]))], axis=0)
        arrays["n0.b"] = b
        first = {"type": "dense", "act": not net.use_residual_blocks, "size": int(w.shape[1]),
                 "degrees": _np(net.initial_layer.degrees).astype(int).tolist()}
        if hasattr(net, "context_layer"):
            arrays["n0.Wc"], arrays["n0.bc"] = self.linear(net.context_layer)
            first["context"] = "add_act"
        items.append(first)
        for blk in net.blocks:
            j = len(items)
            p = f"n{j}."
            if self.activation(blk.activation, where) != act:
                raise InvalidInput(f"{where}: MADE blocks with another activation than the MADE")
            if isinstance(blk, made_mod.MaskedResidualBlock):
                l0, l1 = blk.linear_layers
                w0, b0 = self.linear(l0, l0.mask)
                w1, b1 = self.linear(l1, l1.mask)
                item = {"type": "residual", "context": "none", "pre_norm": False,
                        "inner_degrees": _np(l0.degrees).astype(int).tolist(),
                        "degrees": _np(l1.degrees).astype(int).tolist()}
                wc = bc = None
                if hasattr(blk, "context_layer"):
                    wc, bc = self.linear(blk.context_layer)
                    item["context"] = "add"
                if blk.use_batch_norm:
                    s0, t0 = self.bn_affine(blk.batch_norm_layers[0])
                    arrays[p + "pre_scale"], arrays[p + "pre_shift"] = s0, t0
                    item["pre_norm"] = True
                    s1, t1 = self.bn_affine(blk.batch_norm_layers[1])  # after W0 (+ context)
                    w0, b0 = w0 * s1, b0 * s1 + t1
                    if wc is not None:
                        wc, bc = wc * s1, bc * s1
                arrays.update({p + "W0": w0, p + "b0": b0, p + "W1": w1, p + "b1": b1})
                if wc is not None:
                    arrays[p + "Wc"], arrays[p + "bc"] = wc, bc
                items.append(item)
            elif isinstance(blk, made_mod.MaskedFeedforwardBlock):
                wl, bl = self.linear(blk.linear, blk.linear.mask)
                if blk.batch_norm is not None:  # batch norm, then the linear map: fold
                    s, sh = self.bn_affine(blk.batch_norm)
                    wl, bl = wl * s[:, None], bl + sh @ wl
                arrays[p + "W"], arrays[p + "b"] = wl, bl
                items.append({"type": "dense", "act": True, "size": int(wl.shape[1]),
                              "degrees": _np(blk.linear.degrees).astype(int).tolist()})
            else:
                raise InvalidInput(f"{where}: MADE block {type(blk).__name__} is not supported")
        fl = net.final_layer
        wf, bf = self.linear(fl, fl.mask)
        if wf.shape[1] != dim * (3 * K - 1):
            raise InvalidInput(f"{where}: MADE gives {wf.shape[1]} outputs; expected "
                               f"{dim} x {3 * K - 1}")
        wf, bf = self.spline_head(wf, bf, K, net, opts["min_derivative"])
        j = len(items)
        arrays[f"n{j}.W"], arrays[f"n{j}.b"] = wf, bf
        items.append({"type": "dense", "act": False})
        spec = {"type": "rq_made", "order": list(range(dim)), **opts,
                "net": {"activation": act, "layers": items}}
        self.check_masks(spec, net, cond_dim, where)
        return spec, arrays

    def check_masks(self, spec, net, cond_dim, where):
        """Our masks (from the degrees) must be nflows' masks, else the conversion is wrong."""
        from surrogate_stats.flows._flow import _net_masks

        ours = _net_masks(spec, cond_dim)
        theirs = {"n0.W": net.initial_layer.mask}
        for j, blk in enumerate(net.blocks, start=1):
            if hasattr(blk, "linear_layers"):
                theirs[f"n{j}.W0"] = blk.linear_layers[0].mask
                theirs[f"n{j}.W1"] = blk.linear_layers[1].mask
            else:
                theirs[f"n{j}.W"] = blk.linear.mask
        theirs[f"n{len(net.blocks) + 1}.W"] = net.final_layer.mask
        for name, m in theirs.items():
            mine = ours[name][: m.shape[1]] if name == "n0.W" else ours[name]
            if not np.array_equal(mine.astype(bool), _np(m).T.astype(bool)):
                raise InvalidInput(f"{where}: MADE mask of {name} does not follow the degree "
                                   "rule (hidden >= input, output > hidden)")

    # ------------------------------------------------------------ coupling
    def coupling(self, t, dim, cond_dim, where):
        if t.unconditional_transform is not None:
            raise InvalidInput(f"{where}: apply_unconditional_transform=True is not supported")
        opts = self.spline_opts(t, where)
        K = opts["knots"]
        ident = [int(i) for i in _np(t.identity_features).astype(int)]
        trans = [int(i) for i in _np(t.transform_features).astype(int)]
        if not ident:
            raise InvalidInput(f"{where}: a coupling mask that transforms every feature is not "
                               "supported")
        net = t.transform_net
        resnet, mlp = self.nf["resnet"], self.nf["mlp"]
        arrays, items = {}, []
        n_id = len(ident)
        if isinstance(net, resnet.ResidualNet):
            w, b = self.linear(net.initial_layer)
            if net.context_features is None:
                w = np.concatenate([w, np.zeros((cond_dim, w.shape[1]))], axis=0)
            elif net.context_features != cond_dim or w.shape[0] != n_id + cond_dim:
                raise InvalidInput(f"{where}: ResidualNet expects {net.context_features} context "
                                   f"features; the flow has {cond_dim}")
            arrays["n0.W"], arrays["n0.b"] = w, b
            items.append({"type": "dense", "act": False, "size": int(w.shape[1])})
            act = "relu"
            for j, blk in enumerate(net.blocks, start=1):
                p = f"n{j}."
                act = self.activation(blk.activation, where)
                l0, l1 = blk.linear_layers
                w0, b0 = self.linear(l0)
                w1, b1 = self.linear(l1)
                item = {"type": "residual", "context": "none", "pre_norm": False}
                if blk.use_batch_norm:
                    s0, t0 = self.bn_affine(blk.batch_norm_layers[0])
                    arrays[p + "pre_scale"], arrays[p + "pre_shift"] = s0, t0
                    item["pre_norm"] = True
                    s1, t1 = self.bn_affine(blk.batch_norm_layers[1])
                    w0, b0 = w0 * s1, b0 * s1 + t1
                if hasattr(blk, "context_layer"):
                    arrays[p + "Wc"], arrays[p + "bc"] = self.linear(blk.context_layer)
                    item["context"] = "glu"
                arrays.update({p + "W0": w0, p + "b0": b0, p + "W1": w1, p + "b1": b1})
                items.append(item)
            wf, bf = self.linear(net.final_layer)
        elif isinstance(net, mlp.MLP):
            # nflows' MLP has no context input: the condition rows of its first layer are 0
            act = self.activation(net._activation, where)
            layers = [net._input_layer, *net._hidden_layers]
            for j, lin in enumerate(layers):
                w, b = self.linear(lin)
                if j == 0:
                    w = np.concatenate([w, np.zeros((cond_dim, w.shape[1]))], axis=0)
                arrays[f"n{j}.W"], arrays[f"n{j}.b"] = w, b
                items.append({"type": "dense", "act": True, "size": int(w.shape[1])})
            wf, bf = self.linear(net._output_layer)
        else:
            raise InvalidInput(f"{where}: coupling conditioner {type(net).__name__} is not "
                               "supported (ResidualNet or MLP)")
        if wf.shape[1] != len(trans) * (3 * K - 1):
            raise InvalidInput(f"{where}: the conditioner gives {wf.shape[1]} outputs; expected "
                               f"{len(trans)} x {3 * K - 1}")
        wf, bf = self.spline_head(wf, bf, K, net, opts["min_derivative"])
        j = len(items)
        arrays[f"n{j}.W"], arrays[f"n{j}.b"] = wf, bf
        items.append({"type": "dense",
                      "act": bool(isinstance(net, mlp.MLP) and net._activate_output)})
        spec = {"type": "rq_coupling", "identity": ident, "transformed": trans, **opts,
                "net": {"activation": act, "layers": items}}
        return spec, arrays

    # ------------------------------------------------------------ others
    def lu(self, t, dim):
        lower, upper = t._create_lower_upper()
        diag = _np(t.upper_diag)
        return {"type": "lu_linear"}, {
            "lower": np.tril(_np(lower), -1), "upper": np.triu(_np(upper), 1),
            "log_diag": np.log(diag),
            "bias": _np(t.bias) if t.bias is not None else np.zeros(dim)}

    def flatten(self, t):
        tbase = self.nf["tbase"]
        if isinstance(t, tbase.CompositeTransform):
            out = []
            for s in t._transforms:
                out += self.flatten(s)
            return out
        return [t]

    def context_dim(self, transforms):
        dims = set()
        for t in transforms:
            for m in t.modules():
                if type(m).__name__ == "ResidualNet" and m.context_features is not None:
                    dims.add(int(m.context_features))
                elif hasattr(m, "context_layer"):
                    dims.add(int(m.context_layer.in_features))
        if len(dims) > 1:
            raise InvalidInput(f"the layers of this nflows flow expect different context sizes "
                               f"{sorted(dims)}")
        return dims.pop() if dims else 0

    def convert(self, flow, dtype):
        if not isinstance(flow, self.nf["base"].Flow):
            raise InvalidInput(f"expected an nflows.flows.base.Flow; got {type(flow).__name__}")
        dist = flow._distribution
        if type(dist) is not self.nf["normal"].StandardNormal:
            raise InvalidInput(f"base distribution {type(dist).__name__} is not supported "
                               "(only StandardNormal)")
        if len(dist._shape) != 1:
            raise InvalidInput(f"only flows of 1-D events are supported; the base has shape "
                               f"{tuple(dist._shape)}")
        if not isinstance(flow._embedding_net, self.torch.nn.Identity):
            raise InvalidInput(f"embedding net {type(flow._embedding_net).__name__} is not "
                               "supported (only none, i.e. torch.nn.Identity); embed the "
                               "context yourself and pass the embedding as condition")
        dim = int(dist._shape[0])
        transforms = self.flatten(flow._transform)
        cond_dim = self.context_dim(transforms)
        auto, coupling, perm, lu = (self.nf["auto"], self.nf["coupling"], self.nf["perm"],
                                    self.nf["lu"])
        specs, params = [], []
        for i, t in enumerate(transforms):
            name = type(t).__name__
            where = f"transform {i} ({name})"
            self.check_modes(t, where)
            if isinstance(t, auto.MaskedPiecewiseRationalQuadraticAutoregressiveTransform):
                spec, arrays = self.made(t, dim, cond_dim, where)
            elif isinstance(t, coupling.PiecewiseRationalQuadraticCouplingTransform):
                spec, arrays = self.coupling(t, dim, cond_dim, where)
            elif isinstance(t, perm.Permutation):
                if t._dim != 1:
                    raise InvalidInput(f"{where}: only permutations of dimension 1")
                spec = {"type": "permute",
                        "perm": [int(v) for v in _np(t._permutation).astype(int)]}
                arrays = {}
            elif type(t) is lu.LULinear:
                spec, arrays = self.lu(t, dim)
            else:
                hint = next((h for k, h in _HINTS.items() if k in name), "")
                raise InvalidInput(f"{where} is not supported" + (f": {hint}" if hint else "")
                                   + f". Supported: {_SUPPORTED}")
            specs.append(spec)
            params.append({k: np.asarray(v, dtype) for k, v in arrays.items()})
        from surrogate_stats.flows._flow import Flow, _register_pytree, check_net

        for s in specs:
            if "net" in s:
                check_net(s["net"], masked=s["type"] == "rq_made")
        _register_pytree()
        return Flow(dim, cond_dim, tuple(specs), tuple(params), {})


def from_nflows(flow: Any, *, dtype: Any = np.float32):
    """Convert a trained nflows flow into a :class:`~surrogate_stats.flows.Flow`.

    The result computes the same ``log_prob`` (``transform`` = nflows' ``forward``,
    ``inverse`` = nflows' ``inverse``, ``sample`` with given noise) and exports to ONNX with
    :func:`~surrogate_stats.flows.export_onnx` like any other flow. It has no standardisation
    buffers: inputs and conditions are used as nflows sees them. Needs the ``nflows`` extra
    (``torch==2.13.0``, ``nflows==0.14``); the converted flow does not need torch.

    Args:
        flow: an ``nflows.flows.base.Flow`` (see the module docstring for the supported
            transforms); its batch-norm and dropout layers must be in evaluation mode
            (``flow.eval()``).
        dtype: dtype of the converted arrays (``np.float32`` or ``np.float64``).

    Raises:
        InvalidInput: a transform, network, activation or mode that cannot be represented,
            named in the message.

    Example:
        >>> flow = from_nflows(nflows_flow.eval(), dtype=np.float64)  # doctest: +SKIP
        >>> flow.log_prob(x, condition=c)  # doctest: +SKIP
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise InvalidInput(f"dtype must be float32 or float64; got {dtype!r}")
    return _Converter().convert(flow, np.dtype(dtype).type)
