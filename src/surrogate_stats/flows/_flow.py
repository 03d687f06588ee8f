"""Conditional rational-quadratic spline flows, written once for JAX and ONNX.

A :class:`Flow` maps an event ``x`` (``dim`` numbers) given a condition ``c`` (``cond_dim``
numbers) to a latent ``z`` with a standard-normal base:
``log p(x | c) = log N(z; 0, 1) + log |det dz/dx|``. The map is a fixed standardisation of
``x`` and ``c`` (from the training data) followed by a chain of layers, each of which sees the
standardised condition:

* ``rq_coupling``: the dimensions in ``identity`` pass unchanged and, together with ``c``,
  feed an MLP whose outputs parametrise monotone rational-quadratic splines (Durkan et al.
  2019, "Neural Spline Flows") of the other dimensions; identity outside ``[-bound, bound]``.
* ``rq_made``: a masked autoregressive network (MADE, Germain et al. 2015) gives the spline
  of dimension ``order[i]`` from the dimensions before it in ``order`` and from ``c``;
  ``x -> z`` is one pass, ``z -> x`` takes ``dim`` passes (unrolled).
* ``permute`` (fixed) and ``lu_linear`` (learned ``W = L U``, unit lower ``L``, upper ``U``
  with positive diagonal) mix the dimensions between spline layers.

The conditioner of a spline layer is a tanh MLP (``hidden``) unless the layer spec has a
``net``: a generic network of ``dense`` and ``residual`` items (see :func:`conditioner`), with
any activation of :data:`ACTIVATIONS`, context fed by concatenation, addition or a gate, and,
for ``rq_made``, MADE masks built from stored hidden degrees. This is how flows trained
elsewhere (:func:`surrogate_stats.flows.from_nflows`) are represented exactly.

Direction convention: :meth:`Flow.transform` is ``x -> z`` (the density direction),
:meth:`Flow.inverse` is ``z -> x`` (sampling). Everything is batched (events on axis 0) and
uses only the vocabulary of :mod:`surrogate_stats.flows._ops`, so the ONNX graph
(:func:`surrogate_stats.flows.export_onnx`) is the same computation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from surrogate_stats._optional import optional_import
from surrogate_stats.errors import InvalidInput

__all__ = ["Flow", "coupling_flow", "masked_autoregressive_flow", "rq_spline", "conditioner",
           "ACTIVATIONS"]

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
_D_SHIFT = math.log(math.expm1(1.0 - MIN_DERIVATIVE))  # raw 0 -> derivative 1


# ---------------------------------------------------------------- the spline
def derivative_shift(min_derivative: float = MIN_DERIVATIVE) -> float:
    """The offset added to raw derivatives so that raw 0 gives derivative 1."""
    return math.log(math.expm1(1.0 - min_derivative))


def rq_spline(ops, x, raw, knots: int, bound: float, *, inverse: bool = False,
              min_bin_width: float = MIN_BIN, min_bin_height: float = MIN_BIN,
              min_derivative: float = MIN_DERIVATIVE):
    """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    Args:
        ops: a :class:`~surrogate_stats.flows._ops.JaxOps` or ``OnnxOps``.
        x: values, shape ``(N, n)``.
        raw: unconstrained parameters, shape ``(N, n, 3 * knots - 1)``: bin widths, bin
            heights (softmax), interior knot derivatives (softplus); the end derivatives are
            1 so the linear tails join smoothly.
        inverse: evaluate the inverse map instead.
        min_bin_width, min_bin_height, min_derivative: lower limits of the bins and of the
            knot derivatives: ``w = min_w + (1 - K min_w) softmax(raw_w)`` (same for heights),
            ``d = min_d + softplus(raw_d + log(expm1(1 - min_d)))``.

    Returns:
        ``(y, log|dy/dx|)`` both of shape ``(N, n)`` (for ``inverse``: the log-derivative of
        the inverse map).
    """
    K, B = knots, float(bound)
    mw, mh, md = float(min_bin_width), float(min_bin_height), float(min_derivative)
    inside = ops.logical_and(ops.ge(x, -B), ops.le(x, B))
    xc = ops.clip(x, -B, B)
    bin_of = _bin_unrolled if getattr(ops, "unroll_bins", False) else _bin_stacked
    # knots (x_k, x_k+1), (y_k, y_k+1) of each value's bin and their raw derivatives
    xk, xk1, yk, yk1, rk, rk1 = bin_of(ops, xc, raw, K, B, mw, mh, inverse)
    # softplus is elementwise: only the two knots of each value's bin need it
    shift = _D_SHIFT if md == MIN_DERIVATIVE else derivative_shift(md)
    dk = ops.softplus(rk + shift) + md
    dk1 = ops.softplus(rk1 + shift) + md
    wk = xk1 - xk
    hk = yk1 - yk
    s = hk / wk
    g = dk1 + dk - 2.0 * s
    if inverse:
        dy = xc - yk
        a = hk * (s - dk) + dy * g
        b = hk * dk - dy * g
        cc = -s * dy
        disc = ops.relu(b * b - 4.0 * a * cc)
        xi = (2.0 * cc) / (-b - ops.sqrt(disc))
        y = xi * wk + xk
    else:
        xi = (xc - xk) / wk
        y = yk + hk * (s * xi * xi + dk * xi * (1.0 - xi)) / (s + g * xi * (1.0 - xi))
    t = xi * (1.0 - xi)
    denom = s + g * t
    deriv = s * s * (dk1 * xi * xi + 2.0 * s * t + dk * (1.0 - xi) * (1.0 - xi)) / (denom * denom)
    logd = ops.log(deriv)
    if inverse:
        logd = -logd
    return ops.where(inside, y, x), ops.where(inside, logd, 0.0)


def _bin_stacked(ops, xc, raw, K, B, mw, mh, inverse):
    """Bin parameters from ``(N, n, K)`` arrays: softmax and cumulative sums along the last
    axis, the bin index as a comparison count, and one gather per quantity."""
    w = ops.softmax(ops.slice_last(raw, 0, K)) * (1.0 - mw * K) + mw
    h = ops.softmax(ops.slice_last(raw, K, 2 * K)) * (1.0 - mh * K) + mh
    rd = ops.slice_last(raw, 2 * K, 3 * K - 1)
    xl = ops.cumsum_excl(w) * (2 * B) - B
    yl = ops.cumsum_excl(h) * (2 * B) - B
    xr = ops.pad_last(ops.slice_last(xl, 1, K), 0, 1, B)
    yr = ops.pad_last(ops.slice_last(yl, 1, K), 0, 1, B)
    # raw 0 (+ shift) is derivative 1, that of the end knots
    rl, rr = ops.pad_last(rd, 1, 0, 0.0), ops.pad_last(rd, 0, 1, 0.0)
    idx = ops.bin_index(ops.ge(ops.expand_last(xc), yl if inverse else xl))
    return tuple(ops.pick(a, idx) for a in (xl, xr, yl, yr, rl, rr))


def _bin_unrolled(ops, xc, raw, K, B, mw, mh, inverse):
    """The same from one ``(N, n)`` array per bin: everything is elementwise, which XLA fuses
    into a few loops; the bin search walks the interior knots and keeps, with ``where``, the
    knots of the last bin whose left edge lies at or below the value."""
    col = [ops.col(raw, j) for j in range(3 * K - 1)]
    xe = _knots_list(ops, _softmax_list(ops, col[:K], mw), B)       # K + 1 knots
    ye = _knots_list(ops, _softmax_list(ops, col[K:2 * K], mh), B)
    zero = col[0] * 0.0
    rd = [zero] + col[2 * K:] + [zero]
    search = ye if inverse else xe
    xk, xk1, yk, yk1, rk, rk1 = xe[0], xe[1], ye[0], ye[1], rd[0], rd[1]
    for j in range(1, K):
        above = ops.ge(xc, search[j])
        xk, xk1 = ops.where(above, xe[j], xk), ops.where(above, xe[j + 1], xk1)
        yk, yk1 = ops.where(above, ye[j], yk), ops.where(above, ye[j + 1], yk1)
        rk, rk1 = ops.where(above, rd[j], rk), ops.where(above, rd[j + 1], rk1)
    return xk, xk1, yk, yk1, rk, rk1


def _softmax_list(ops, a, floor):
    """``floor + (1 - K floor) softmax(a)`` over a list of K arrays."""
    m = a[0]
    for v in a[1:]:
        m = ops.maximum(m, v)
    e = [ops.exp(v - m) for v in a]
    total = e[0]
    for v in e[1:]:
        total = total + v
    scale = (1.0 - floor * len(a)) / total
    return [v * scale + floor for v in e]


def _knots_list(ops, widths, B):
    """Knot positions ``-B, -B + 2B w_0, ..., B`` from K bin widths (summing to 1)."""
    out, acc = [], None
    for v in widths[:-1]:
        acc = v if acc is None else acc + v
        out.append(acc * (2 * B) - B)
    first = widths[0] * 0.0
    return [first - B] + out + [first + B]


# ---------------------------------------------------------------- networks
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "silu", "leaky_relu")
LEAKY_SLOPE = 0.01


def sigmoid(ops, a):
    """``1 / (1 + exp(-a))`` without overflow for either sign."""
    e = ops.exp(-ops.abs(a))
    return ops.where(ops.ge(a, 0.0), 1.0 / (1.0 + e), e / (1.0 + e))


def activation(ops, name: str, a):
    """One of :data:`ACTIVATIONS` in the op vocabulary (ELU with alpha 1, leaky slope 0.01)."""
    if name == "relu":
        return ops.relu(a)
    if name == "tanh":
        return ops.tanh(a)
    if name == "sigmoid":
        return sigmoid(ops, a)
    if name == "elu":
        return ops.relu(a) + ops.exp(-ops.relu(-a)) - 1.0
    if name == "silu":
        return a * sigmoid(ops, a)
    if name == "leaky_relu":
        return ops.relu(a) - LEAKY_SLOPE * ops.relu(-a)
    raise InvalidInput(f"activation must be one of {ACTIVATIONS}; got {name!r}")


def conditioner(ops, net: dict, weights: dict, h, c):
    """A generic conditioner network, written once in the op vocabulary.

    ``net = {"activation": name, "layers": [item, ...]}``; each item (index ``j``, weights
    named ``n{j}.*`` in ``weights``) is

    * ``{"type": "dense", "act": bool, "context": "none" | "add" | "add_act"}``:
      ``h = h @ W + b``, plus ``c @ Wc + bc`` (``"add"``) or ``act(c @ Wc + bc)``
      (``"add_act"``), then the activation if ``act``;
    * ``{"type": "residual", "context": "none" | "add" | "glu", "pre_norm": bool}``:
      ``t = act(h * pre_scale + pre_shift)`` (the affine only with ``pre_norm``),
      ``t = act(t @ W0 + b0 [+ c @ Wc + bc if "add"])``, ``t = t @ W1 + b1``,
      ``t = t * sigmoid(c @ Wc + bc)`` if ``"glu"``, and ``h = h + t``.

    ``h`` is the network input (for spline layers: the conditioning features, then ``c``).
    Masked (MADE) networks receive weights already multiplied by their masks.
    """
    act = net.get("activation", "relu")
    for j, item in enumerate(net["layers"]):
        p = f"n{j}."
        ctx = item.get("context", "none") if c is not None else "none"
        if item["type"] == "dense":
            h = ops.matmul(h, weights[p + "W"]) + weights[p + "b"]
            if ctx in ("add", "add_act"):
                hc = ops.matmul(c, weights[p + "Wc"]) + weights[p + "bc"]
                h = h + (activation(ops, act, hc) if ctx == "add_act" else hc)
            if item.get("act", False):
                h = activation(ops, act, h)
            continue
        t = h
        if item.get("pre_norm", False):
            t = t * weights[p + "pre_scale"] + weights[p + "pre_shift"]
        t = ops.matmul(activation(ops, act, t), weights[p + "W0"]) + weights[p + "b0"]
        if ctx == "add":
            t = t + (ops.matmul(c, weights[p + "Wc"]) + weights[p + "bc"])
        t = ops.matmul(activation(ops, act, t), weights[p + "W1"]) + weights[p + "b1"]
        if ctx == "glu":
            t = t * sigmoid(ops, ops.matmul(c, weights[p + "Wc"]) + weights[p + "bc"])
        h = h + t
    return h


def check_net(net, *, masked: bool = False) -> None:
    """Validate a ``net`` spec (structure only); raises :class:`InvalidInput`."""
    if not isinstance(net, dict) or not isinstance(net.get("layers"), list) or not net["layers"]:
        raise InvalidInput(f"a conditioner 'net' must be a dict with a non-empty 'layers' list; "
                           f"got {net!r}")
    if net.get("activation", "relu") not in ACTIVATIONS:
        raise InvalidInput(f"net activation must be one of {ACTIVATIONS}; "
                           f"got {net.get('activation')!r}")
    items = net["layers"]
    if items[0].get("type") != "dense" or items[-1].get("type") != "dense":
        raise InvalidInput("a conditioner 'net' must start and end with a 'dense' item")
    for item in items:
        if item.get("type") not in ("dense", "residual"):
            raise InvalidInput(f"net items are 'dense' or 'residual'; got {item!r}")
        allowed = ("none", "add", "glu") if item["type"] == "residual" else (
            "none", "add", "add_act")
        if item.get("context", "none") not in allowed:
            raise InvalidInput(f"the context of a {item['type']} item must be one of {allowed}; "
                               f"got {item!r}")
        if item["type"] == "dense" and item is not items[-1] and "size" not in item:
            raise InvalidInput(f"hidden dense items need a 'size'; got {item!r}")
        if masked and item is not items[-1] and "degrees" not in item:
            raise InvalidInput("every hidden item of a masked ('rq_made') net needs 'degrees'")


def _net_masks(spec, cond_dim):
    """MADE masks of a generic ``rq_made`` net: ``{weight name: 0/1 matrix}``.

    Input ``order[i]`` has degree ``i + 1``; hidden units have the stored ``degrees``; a hidden
    unit of degree ``k`` sees inputs of degree ``<= k``, the outputs of dimension ``i`` (degree
    ``d``) see hidden units of degree ``< d``; the condition is seen by every unit.
    """
    order = spec["order"]
    dim = len(order)
    deg_in = np.empty(dim, int)
    deg_in[np.asarray(order)] = np.arange(1, dim + 1)
    items = spec["net"]["layers"]
    P = 3 * spec["knots"] - 1
    prev, masks = deg_in, {}
    for j, item in enumerate(items):
        p = f"n{j}."
        if item["type"] == "dense":
            if j == len(items) - 1:
                out = np.repeat(deg_in, P)
                m = out[None, :] > prev[:, None]
            else:
                out = np.asarray(item["degrees"], int)
                m = out[None, :] >= prev[:, None]
            if j == 0:
                m = np.concatenate([m, np.ones((cond_dim, len(out)), bool)], axis=0)
            masks[p + "W"] = m
        else:
            inner = np.asarray(item["inner_degrees"], int)
            out = np.asarray(item["degrees"], int)
            if out.shape != prev.shape or np.any(out < prev):
                raise InvalidInput("a masked residual block must not lower the degrees of its "
                                   "input units")
            masks[p + "W0"] = inner[None, :] >= prev[:, None]
            masks[p + "W1"] = out[None, :] >= inner[:, None]
        prev = out
    return masks


def _mlp(ops, weights, h):
    n = len(weights) // 2
    for i in range(n):
        h = ops.matmul(h, weights[f"W{i}"]) + weights[f"b{i}"]
        if i < n - 1:
            h = ops.tanh(h)
    return h


def _init_mlp(key, sizes, dtype):
    jax = optional_import("jax")
    jnp = jax.numpy
    out = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i == len(sizes) - 2:  # last layer zero: every spline starts as the identity
            out[f"W{i}"] = jnp.zeros((a, b), dtype)
        else:
            out[f"W{i}"] = jax.random.normal(keys[i], (a, b), dtype) / math.sqrt(max(a, 1))
        out[f"b{i}"] = jnp.zeros((b,), dtype)
    return out


def _init_net(key, net, n_in, n_out, cond_dim, dtype):
    """Initial weights of a generic net: scaled normal, residual branches and the output
    layer zero (every spline starts as the identity)."""
    jax = optional_import("jax")
    jnp = jax.numpy
    items = net["layers"]
    keys = jax.random.split(key, 2 * len(items))
    out, width = {}, n_in
    for j, item in enumerate(items):
        p = f"n{j}."
        if item["type"] == "dense":
            size = n_out if j == len(items) - 1 else int(item["size"])
            scale = 0.0 if j == len(items) - 1 else 1.0 / math.sqrt(max(width, 1))
            out[p + "W"] = jax.random.normal(keys[2 * j], (width, size), dtype) * scale
            out[p + "b"] = jnp.zeros((size,), dtype)
            if item.get("context", "none") != "none":
                out[p + "Wc"] = (jax.random.normal(keys[2 * j + 1], (cond_dim, size), dtype)
                                 / math.sqrt(max(cond_dim, 1)))
                out[p + "bc"] = jnp.zeros((size,), dtype)
            width = size
            continue
        out[p + "W0"] = jax.random.normal(keys[2 * j], (width, width), dtype) / math.sqrt(width)
        out[p + "b0"] = jnp.zeros((width,), dtype)
        out[p + "W1"] = jnp.zeros((width, width), dtype)
        out[p + "b1"] = jnp.zeros((width,), dtype)
        if item.get("context", "none") != "none":
            out[p + "Wc"] = (jax.random.normal(keys[2 * j + 1], (cond_dim, width), dtype)
                             / math.sqrt(max(cond_dim, 1)))
            out[p + "bc"] = jnp.zeros((width,), dtype)
        if item.get("pre_norm", False):
            out[p + "pre_scale"] = jnp.ones((width,), dtype)
            out[p + "pre_shift"] = jnp.zeros((width,), dtype)
    return out


def _made_masks(order, hidden, cond_dim, n_out_per_dim):
    """MADE masks: hidden degrees 0..dim-1 (degree 0 sees only the condition)."""
    dim = len(order)
    deg_in = np.empty(dim, int)
    deg_in[np.asarray(order)] = np.arange(1, dim + 1)
    degs = [np.arange(h) % dim for h in hidden]
    masks = [np.concatenate([(degs[0][None, :] >= deg_in[:, None]),
                             np.ones((cond_dim, hidden[0]), bool)], axis=0)]
    for a, b in zip(degs[:-1], degs[1:]):
        masks.append(b[None, :] >= a[:, None])
    deg_out = np.repeat(deg_in, n_out_per_dim)
    masks.append(deg_out[None, :] > degs[-1][:, None])
    return [m.astype(np.float64) for m in masks]


# ---------------------------------------------------------------- layers
def _init_layer(key, spec, dim, cond_dim, dtype):
    jnp = optional_import("jax.numpy")
    kind = spec["type"]
    if kind == "permute":
        return {}
    if kind == "lu_linear":
        return {"lower": jnp.zeros((dim, dim), dtype), "upper": jnp.zeros((dim, dim), dtype),
                "log_diag": jnp.zeros((dim,), dtype), "bias": jnp.zeros((dim,), dtype)}
    P = 3 * spec["knots"] - 1
    if "net" in spec:
        if kind == "rq_coupling":
            n_in, n_out = len(spec["identity"]) + cond_dim or 1, len(spec["transformed"]) * P
        else:
            n_in, n_out = dim + cond_dim, dim * P
        return _init_net(key, spec["net"], n_in, n_out, cond_dim, dtype)
    if kind == "rq_coupling":
        n_in = len(spec["identity"]) + cond_dim or 1
        return _init_mlp(key, [n_in, *spec["hidden"], len(spec["transformed"]) * P], dtype)
    if kind == "rq_made":
        return _init_mlp(key, [dim + cond_dim, *spec["hidden"], dim * P], dtype)
    raise InvalidInput(f"unknown flow layer type {kind!r}")


def _prepare(spec, params, xp, cond_dim, *, inverse):
    """Derived constants of a layer (masked weights, LU matrices) in the array module xp."""
    kind = spec["type"]
    if kind == "lu_linear":
        dim = params["log_diag"].shape[0]
        L = xp.tril(params["lower"], -1) + xp.eye(dim)
        U = xp.triu(params["upper"], 1) + xp.diag(xp.exp(params["log_diag"]))
        W = L @ U
        out = {"Wt": W.T, "bias": params["bias"], "logdet": xp.sum(params["log_diag"])}
        if inverse:
            out["Winv_t"] = xp.linalg.inv(W).T
        return out
    if kind == "rq_made" and "net" in spec:
        masks = _net_masks(spec, cond_dim)
        return {k: (params[k] * masks[k].astype(params[k].dtype) if k in masks else params[k])
                for k in params}
    if kind == "rq_made":
        masks = _made_masks(spec["order"], spec["hidden"], cond_dim, 3 * spec["knots"] - 1)
        return {k: (params[k] * masks[int(k[1:])] if k.startswith("W") else params[k])
                for k in params}
    return params


def _net_input(ops, x, c, identity):
    parts = ([ops.take_cols(x, identity)] if identity else []) + ([c] if c is not None else [])
    return ops.concat_cols(parts) if parts else ops.take_cols(x, [0]) * 0.0


def _layer(ops, spec, k, x, c, *, inverse):
    kind = spec["type"]
    if kind == "permute":
        perm = np.asarray(spec["perm"])
        return ops.take_cols(x, np.argsort(perm) if inverse else perm), 0.0
    if kind == "lu_linear":
        if inverse:
            return ops.matmul(x - k["bias"], k["Winv_t"]), -k["logdet"]
        return ops.matmul(x, k["Wt"]) + k["bias"], k["logdet"]
    K, B, P = spec["knots"], spec["bound"], 3 * spec["knots"] - 1
    opts = {name: spec[name] for name in ("min_bin_width", "min_bin_height", "min_derivative")
            if name in spec}
    net = spec.get("net")

    def network(inp):
        return _mlp(ops, k, inp) if net is None else conditioner(ops, net, k, inp, c)

    if kind == "rq_coupling":
        ident, trans = spec["identity"], spec["transformed"]
        raw = ops.reshape3(network(_net_input(ops, x, c, ident)), len(trans), P)
        yb, ld = rq_spline(ops, ops.take_cols(x, trans), raw, K, B, inverse=inverse, **opts)
        parts = ([ops.take_cols(x, ident)] if ident else []) + [yb]
        back = np.argsort(np.asarray(list(ident) + list(trans)))
        return ops.take_cols(ops.concat_cols(parts), back), ops.sum_last(ld)
    # rq_made
    dim = len(spec["order"])

    def params_of(v):
        inp = ops.concat_cols([v] + ([c] if c is not None else []))
        return ops.reshape3(network(inp), dim, P)

    if not inverse:
        y, ld = rq_spline(ops, x, params_of(x), K, B, **opts)
        return y, ops.sum_last(ld)
    y = x * 0.0
    for _ in range(dim):
        y, ld = rq_spline(ops, x, params_of(y), K, B, inverse=True, **opts)
    return y, ops.sum_last(ld)


# ---------------------------------------------------------------- the flow
@dataclass(frozen=True)
class Flow:
    """A conditional normalising flow: JSON-able structure + arrays.

    Build one with :func:`coupling_flow` or :func:`masked_autoregressive_flow`; train it with
    :func:`surrogate_stats.flows.fit_flow`; export it with
    :func:`surrogate_stats.flows.export_onnx`. ``params`` (one dict per layer) are trained;
    ``buffers`` (``x_loc``, ``x_scale``, ``c_loc``, ``c_scale``) are the fixed
    standardisation, set from the training data by ``fit_flow``.
    """

    dim: int
    cond_dim: int
    layers: tuple
    params: tuple
    buffers: dict = field(default_factory=dict)

    # structure -------------------------------------------------------
    def structure(self) -> dict:
        """The JSON-able description (everything except the arrays)."""
        return {"dim": self.dim, "cond_dim": self.cond_dim, "layers": list(self.layers)}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array as numpy, named ``layer{i}.{name}`` and ``buffer.{name}``."""
        out = {f"buffer.{k}": np.asarray(v) for k, v in self.buffers.items()}
        for i, p in enumerate(self.params):
            out.update({f"layer{i}.{k}": np.asarray(v) for k, v in p.items()})
        return out

    @classmethod
    def from_arrays(cls, structure: dict, arrays: dict, *, dtype=np.float32) -> Flow:
        """Rebuild from :meth:`structure` and :meth:`arrays` (numpy arrays)."""
        _register_pytree()
        layers = tuple(structure["layers"])
        params = tuple({k.split(".", 1)[1]: np.asarray(v, dtype) for k, v in arrays.items()
                        if k.startswith(f"layer{i}.")} for i in range(len(layers)))
        buffers = {k.split(".", 1)[1]: np.asarray(v, dtype) for k, v in arrays.items()
                   if k.startswith("buffer.")}
        return cls(int(structure["dim"]), int(structure["cond_dim"]), layers, params, buffers)

    def with_params(self, params) -> Flow:
        return replace(self, params=tuple(params))

    def with_standardisation(self, x, condition=None, weights=None) -> Flow:
        """Set the fixed standardisation to the (weighted) mean and std of the data."""
        x = np.asarray(x, np.float64)
        w = np.ones(len(x)) if weights is None else np.abs(np.asarray(weights, np.float64))
        dtype = np.asarray(jax_leaf(self.params)).dtype

        def stats(a):
            m = np.average(a, axis=0, weights=w)
            s = np.sqrt(np.average((a - m) ** 2, axis=0, weights=w))
            return m.astype(dtype), np.where(s > 0, s, 1.0).astype(dtype)

        b = {}
        b["x_loc"], b["x_scale"] = stats(x)
        if self.cond_dim:
            b["c_loc"], b["c_scale"] = stats(np.asarray(condition, np.float64))
        return replace(self, buffers=b)

    # evaluation ------------------------------------------------------
    def _check(self, x, condition, what="x"):
        jnp = optional_import("jax.numpy")
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInput(f"{what} must have shape (N, {self.dim}); got {tuple(x.shape)}")
        if self.cond_dim:
            if condition is None:
                raise InvalidInput(f"this flow needs condition= of shape (N, {self.cond_dim})")
            condition = jnp.asarray(condition)
            if condition.shape != (x.shape[0], self.cond_dim):
                raise InvalidInput(f"condition must have shape ({x.shape[0]}, "
                                   f"{self.cond_dim}); got {tuple(condition.shape)}")
        elif condition is not None:
            raise InvalidInput("this flow is unconditional; got a condition")
        return x, condition

    def log_prob(self, x, condition=None):
        """``log p(x | condition)`` for ``x`` of shape ``(N, dim)``; returns ``(N,)``."""
        from surrogate_stats.flows._ops import JaxOps

        x, condition = self._check(x, condition)
        return flow_log_prob(JaxOps(x.dtype), self, _jprep(self, False), x, condition)

    def transform(self, x, condition=None):
        """``x -> (z, log|det dz/dx|)``."""
        from surrogate_stats.flows._ops import JaxOps

        x, condition = self._check(x, condition)
        return flow_forward(JaxOps(x.dtype), self, _jprep(self, False), x, condition)

    def inverse(self, z, condition=None):
        """``z -> (x, log|det dx/dz|)``."""
        from surrogate_stats.flows._ops import JaxOps

        z, condition = self._check(z, condition, "z")
        return flow_inverse(JaxOps(z.dtype), self, _jprep(self, True), z,
                            condition)

    def sample(self, key, n: int | None = None, *, condition=None, noise=None):
        """Draw ``x = inverse(z)`` with ``z ~ N(0, 1)`` (or ``noise`` given as ``z``)."""
        jax = optional_import("jax")
        if noise is None:
            if n is None:
                n = 1 if condition is None else len(condition)
            dtype = jax_leaf(self.params).dtype
            noise = jax.random.normal(key, (n, self.dim), dtype)
        return self.inverse(noise, condition)[0]


def _jprep(flow, inverse):
    return prepared(flow, optional_import("jax.numpy"), inverse=inverse)


def jax_leaf(params):
    for p in params:
        for v in p.values():
            return v
    return np.zeros((), np.float32)


def prepared(flow: Flow, xp, *, inverse: bool) -> list:
    return [_prepare(s, p, xp, flow.cond_dim, inverse=inverse)
            for s, p in zip(flow.layers, flow.params)]


def _std(ops, flow, x, condition):
    b = flow.buffers
    if b:
        x = (x - b["x_loc"]) / b["x_scale"]
        if flow.cond_dim:
            condition = (condition - b["c_loc"]) / b["c_scale"]
    return x, condition


def _log_scale_sum(b):
    s = b["x_scale"]
    if isinstance(s, np.ndarray):
        return float(np.sum(np.log(s.astype(np.float64))))
    jnp = optional_import("jax.numpy")
    return jnp.sum(jnp.log(s))


def flow_forward(ops, flow, consts, x, condition):
    """``x -> (z, logdet)`` in the vocabulary of ``ops``; ``consts`` from :func:`prepared`."""
    x, c = _std(ops, flow, x, condition)
    ld = -_log_scale_sum(flow.buffers) if flow.buffers else 0.0
    for spec, k in zip(flow.layers, consts):
        x, l_ = _layer(ops, spec, k, x, c, inverse=False)
        ld = ld + l_
    return x, ld


def flow_inverse(ops, flow, consts, z, condition):
    """``z -> (x, logdet of the inverse)``."""
    b = flow.buffers
    _, c = _std(ops, flow, z, condition)
    ld = 0.0
    for spec, k in zip(reversed(flow.layers), reversed(consts)):
        z, l_ = _layer(ops, spec, k, z, c, inverse=True)
        ld = ld + l_
    if b:
        z = z * b["x_scale"] + b["x_loc"]
        ld = ld + _log_scale_sum(b)
    return z, ld


def flow_log_prob(ops, flow, consts, x, condition):
    z, ld = flow_forward(ops, flow, consts, x, condition)
    return ld - 0.5 * ops.sum_last(z * z) - 0.5 * flow.dim * math.log(2 * math.pi)


# ---------------------------------------------------------------- constructors
def _check_dims(dim, cond_dim, knots, bound, n_layers, hidden):
    for name, v, lo in (("dim", dim, 1), ("cond_dim", cond_dim, 0), ("knots", knots, 2),
                        ("n_layers", n_layers, 1)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise InvalidInput(f"{name} must be an integer >= {lo}; got {v!r}")
    if not (bound > 0 and math.isfinite(bound)):
        raise InvalidInput(f"bound must be positive; got {bound!r}")
    if not hidden or any(int(h) < 1 for h in hidden):
        raise InvalidInput(f"hidden must be a non-empty list of positive sizes; got {hidden!r}")


def _mixing(key, kind, dim):
    jax = optional_import("jax")
    if dim == 1 or kind == "none":
        return []
    if kind == "reverse":
        return [{"type": "permute", "perm": list(range(dim))[::-1]}]
    perm = [int(i) for i in np.asarray(jax.random.permutation(key, dim))]
    out = [{"type": "permute", "perm": perm}]
    if kind == "lu":
        out.append({"type": "lu_linear"})
    elif kind != "permute":
        raise InvalidInput(f"mixing must be 'lu', 'permute', 'reverse' or 'none'; got {kind!r}")
    return out


def _build(key, dim, cond_dim, specs, dtype) -> Flow:
    jax = optional_import("jax")
    _register_pytree()
    keys = jax.random.split(key, len(specs))
    params = tuple(_init_layer(k, s, dim, cond_dim, dtype) for k, s in zip(keys, specs))
    return Flow(int(dim), int(cond_dim), tuple(specs), params, {})


def coupling_flow(key, *, dim: int, cond_dim: int = 0, n_layers: int = 6,
                  hidden: tuple[int, ...] = (64, 64), knots: int = 8, bound: float = 5.0,
                  mixing: str = "lu", dtype: Any = np.float32) -> Flow:
    """A conditional RQ-spline coupling flow.

    Layer ``i`` transforms half of the dimensions (alternating halves) with splines whose
    parameters come from an MLP of the other half and the condition; ``mixing`` layers
    (``"lu"``: random permutation + learned LU linear map; ``"permute"``; ``"none"``) sit
    between spline layers. For ``dim == 1`` the spline depends on the condition only.

    Example:
        >>> import jax
        >>> flow = coupling_flow(jax.random.key(0), dim=3, cond_dim=2)
        >>> flow.log_prob(jax.numpy.zeros((4, 3)), condition=jax.numpy.zeros((4, 2))).shape
        (4,)
    """
    _check_dims(dim, cond_dim, knots, bound, n_layers, hidden)
    jax = optional_import("jax")
    keys = jax.random.split(key, 2 * n_layers + 1)
    specs = []
    for i in range(n_layers):
        if dim == 1:
            ident, trans = [], [0]
        else:
            half = np.arange(dim) < dim // 2
            if i % 2:
                half = ~half
            ident = [int(j) for j in np.flatnonzero(half)]
            trans = [int(j) for j in np.flatnonzero(~half)]
        specs.append({"type": "rq_coupling", "identity": ident, "transformed": trans,
                      "hidden": [int(h) for h in hidden], "knots": int(knots),
                      "bound": float(bound)})
        if i < n_layers - 1:
            specs += _mixing(keys[2 * i + 1], mixing, dim)
    return _build(keys[-1], dim, cond_dim, specs, dtype)


def masked_autoregressive_flow(key, *, dim: int, cond_dim: int = 0, n_layers: int = 5,
                               hidden: tuple[int, ...] = (64, 64), knots: int = 8,
                               bound: float = 5.0, mixing: str = "reverse",
                               dtype: Any = np.float32) -> Flow:
    """A conditional masked-autoregressive RQ-spline flow (MAF with spline transforms).

    Density evaluation (``x -> z``) is one network pass per layer; sampling and the inverse
    take ``dim`` passes per layer, unrolled. ``mixing`` between layers: ``"reverse"``
    (default), ``"permute"``, ``"lu"`` or ``"none"``.
    """
    _check_dims(dim, cond_dim, knots, bound, n_layers, hidden)
    jax = optional_import("jax")
    keys = jax.random.split(key, 2 * n_layers + 1)
    specs = []
    for i in range(n_layers):
        specs.append({"type": "rq_made", "order": list(range(dim)),
                      "hidden": [int(h) for h in hidden], "knots": int(knots),
                      "bound": float(bound)})
        if i < n_layers - 1:
            specs += _mixing(keys[2 * i + 1], mixing, dim)
    return _build(keys[-1], dim, cond_dim, specs, dtype)


def _register_pytree():
    jax = optional_import("jax")
    if getattr(_register_pytree, "done", False):
        return
    jax.tree_util.register_pytree_node(
        Flow,
        lambda f: ((f.params, f.buffers), (f.dim, f.cond_dim, json.dumps(list(f.layers)))),
        lambda aux, ch: Flow(aux[0], aux[1], tuple(json.loads(aux[2])), tuple(ch[0]), ch[1]))
    _register_pytree.done = True
