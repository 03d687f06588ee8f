"""Two array backends for one flow implementation: JAX arrays and ONNX graph building.

The flow layers (:mod:`surrogate_stats.flows._flow`) are written once against the small
vocabulary below, on batched arrays (first axis = events). :class:`JaxOps` evaluates them with
``jax.numpy``; :class:`OnnxOps` records the same operations as nodes of an ``onnx.helper``
graph (opset 17) whose values are :class:`Sym` names. The exported graph therefore computes
exactly the JAX function by construction: bin search is a comparison-sum with a one-hot pick
(no ``searchsorted``), every layer is unrolled, and nothing random happens inside the graph.
"""

from __future__ import annotations

import numpy as np

from surrogate_stats._optional import optional_import

__all__ = ["JaxOps", "NumpyOps", "OnnxOps", "Sym"]

OPSET = 17


class JaxOps:
    """The vocabulary on ``jax.numpy`` arrays (differentiable, jit-able).

    ``unroll_bins=True`` makes the spline work on one ``(N, n)`` array per bin instead of
    ``(N, n, K)`` arrays (see :func:`surrogate_stats.flows._flow.rq_spline`): faster for large
    batches of events in inference, much slower in small training batches (many more, tiny
    operations), so it is off by default.
    """

    unroll_bins = False

    def __init__(self, dtype=None, *, unroll_bins: bool = False):
        self.jnp = optional_import("jax.numpy")
        self.dtype = dtype
        self.unroll_bins = bool(unroll_bins)

    def const(self, a):
        return self.jnp.asarray(a, dtype=self.dtype)

    def matmul(self, a, w):
        return a @ w

    def tanh(self, a):
        return self.jnp.tanh(a)

    def exp(self, a):
        return self.jnp.exp(a)

    def log(self, a):
        return self.jnp.log(a)

    def sqrt(self, a):
        return self.jnp.sqrt(a)

    def relu(self, a):
        return self.jnp.maximum(a, 0)

    def abs(self, a):
        return self.jnp.abs(a)

    def maximum(self, a, b):
        return self.jnp.maximum(a, b)

    def col(self, a, j):
        """``a[..., j]``: one entry of the last axis."""
        return a[..., j]

    def softplus(self, a):
        return self.relu(a) + self.log(1.0 + self.exp(-self.abs(a)))

    def softmax(self, a):
        e = self.exp(a - self.jnp.max(a, axis=-1, keepdims=True))
        return e / self.jnp.sum(e, axis=-1, keepdims=True)

    def cumsum_excl(self, a):
        return self.jnp.cumsum(a, axis=-1) - a

    def pad_last(self, a, before, after, value, rank=3):
        widths = [(0, 0)] * (a.ndim - 1) + [(before, after)]
        return self.jnp.pad(a, widths, constant_values=value)

    def slice_last(self, a, start, stop):
        return a[..., start:stop]

    def sum_last(self, a):
        return self.jnp.sum(a, axis=-1)

    def expand_last(self, a):
        return a[..., None]

    def take_cols(self, a, idx):
        return a[:, np.asarray(idx, dtype=int)]

    def concat_cols(self, parts):
        return self.jnp.concatenate(parts, axis=1)

    def reshape3(self, a, k, m):
        return a.reshape(-1, k, m)

    def clip(self, a, lo, hi):
        return self.jnp.clip(a, lo, hi)

    def ge(self, a, b):
        return a >= b

    def le(self, a, b):
        return a <= b

    def lt(self, a, b):
        return a < b

    def gt(self, a, b):
        return a > b

    def eq(self, a, b):
        return a == b

    def logical_and(self, a, b):
        return a & b

    def to_float(self, b):
        return b.astype(self.dtype or self.jnp.float32)

    def bin_index(self, ge):
        """(count of true along the last axis) - 1, as integers."""
        return self.jnp.sum(ge, axis=-1).astype(self.jnp.int32) - 1

    def pick(self, a, idx):
        """``a[..., idx]`` elementwise along the last axis."""
        return self.jnp.take_along_axis(a, idx[..., None], axis=-1)[..., 0]

    def where(self, cond, a, b):
        return self.jnp.where(cond, a, b)


class NumpyOps(JaxOps):
    """The vocabulary on numpy arrays (no JAX needed)."""

    def __init__(self, dtype=np.float64, *, unroll_bins: bool = False):
        self.jnp = np
        self.dtype = dtype
        self.unroll_bins = bool(unroll_bins)


class Sym:
    """A named value in an ONNX graph under construction; arithmetic emits nodes."""

    __array_ufunc__ = None  # numpy arrays defer to our reflected operators

    def __init__(self, ops: OnnxOps, name: str):
        self.ops, self.name = ops, name

    def _bin(self, op, other, swap=False):
        o = self.ops._as_sym(other)
        a, b = (o, self) if swap else (self, o)
        return self.ops._node(op, [a.name, b.name])

    def __add__(self, o):
        return self._bin("Add", o)

    def __radd__(self, o):
        return self._bin("Add", o, True)

    def __sub__(self, o):
        return self._bin("Sub", o)

    def __rsub__(self, o):
        return self._bin("Sub", o, True)

    def __mul__(self, o):
        return self._bin("Mul", o)

    def __rmul__(self, o):
        return self._bin("Mul", o, True)

    def __truediv__(self, o):
        return self._bin("Div", o)

    def __rtruediv__(self, o):
        return self._bin("Div", o, True)

    def __neg__(self):
        return self.ops._node("Neg", [self.name])

    def __matmul__(self, w):
        return self.ops.matmul(self, w)

    def __and__(self, o):
        return self._bin("And", o)


class OnnxOps:
    """The vocabulary recorded as ONNX nodes (:meth:`input` ... :meth:`model`)."""

    unroll_bins = False  # GatherElements on (N, n, K) arrays: fewer nodes

    def __init__(self, dtype: str = "float32"):
        self.onnx = optional_import("onnx")
        self.np_dtype = np.dtype(dtype)
        self.elem = (self.onnx.TensorProto.FLOAT if self.np_dtype == np.float32
                     else self.onnx.TensorProto.DOUBLE)
        self.nodes, self.inits, self.inputs = [], [], []
        self._n = 0
        self._consts: dict = {}

    # graph plumbing
    def _name(self, stem="t"):
        self._n += 1
        return f"{stem}{self._n}"

    def _node(self, op, inputs, **attrs):
        out = self._name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], **attrs))
        return Sym(self, out)

    def _init(self, array, stem="c"):
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key in self._consts:
            return self._consts[key]
        name = self._name(stem)
        self.inits.append(self.onnx.numpy_helper.from_array(array, name))
        self._consts[key] = name
        return name

    def _as_sym(self, v):
        if isinstance(v, Sym):
            return v
        return Sym(self, self._init(np.asarray(v, dtype=self.np_dtype)))

    def _ints(self, values):
        return self._init(np.asarray(values, dtype=np.int64), "i")

    def input(self, name, shape):
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, self.elem, shape))
        return Sym(self, name)

    def model(self, outputs: dict, *, name: str = "flow") -> bytes:
        """Serialise the graph with ``outputs`` = {name: (Sym, shape)}; checked by onnx."""
        helper = self.onnx.helper
        nodes = list(self.nodes)
        outs = []
        for out_name, (sym, shape) in outputs.items():
            nodes.append(helper.make_node("Identity", [sym.name], [out_name]))
            outs.append(helper.make_tensor_value_info(out_name, self.elem, shape))
        graph = helper.make_graph(nodes, name, self.inputs, outs, initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="surrogate_stats", ir_version=8)
        self.onnx.checker.check_model(m)
        return m.SerializeToString()

    # the vocabulary
    def const(self, a):
        return self._as_sym(a)

    def matmul(self, a, w):
        return self._node("MatMul", [a.name, self._as_sym(w).name])

    def tanh(self, a):
        return self._node("Tanh", [a.name])

    def exp(self, a):
        return self._node("Exp", [a.name])

    def log(self, a):
        return self._node("Log", [a.name])

    def sqrt(self, a):
        return self._node("Sqrt", [a.name])

    def relu(self, a):
        return self._node("Relu", [a.name])

    def abs(self, a):
        return self._node("Abs", [a.name])

    def softplus(self, a):  # no float64 Softplus kernel in onnxruntime: spell it out
        return self.relu(a) + self.log(1.0 + self.exp(-self.abs(a)))

    def softmax(self, a):
        return self._node("Softmax", [a.name], axis=-1)

    def cumsum_excl(self, a):
        return self._node("CumSum", [a.name, self._init(np.array(-1, dtype=np.int64), "i")],
                          exclusive=1)

    def pad_last(self, a, before, after, value, rank=3):
        pads = [0] * (rank - 1) + [before] + [0] * (rank - 1) + [after]
        return self._node("Pad", [a.name, self._ints(pads), self._as_sym(value).name],
                          mode="constant")

    def slice_last(self, a, start, stop):
        return self._node("Slice", [a.name, self._ints([start]), self._ints([stop]),
                                    self._ints([-1])])

    def sum_last(self, a):
        return self._node("ReduceSum", [a.name, self._ints([-1])], keepdims=0)

    def expand_last(self, a):
        return self._node("Unsqueeze", [a.name, self._ints([-1])])

    def take_cols(self, a, idx):
        return self._node("Gather", [a.name, self._ints(list(idx))], axis=1)

    def concat_cols(self, parts):
        if len(parts) == 1:
            return parts[0]
        return self._node("Concat", [p.name for p in parts], axis=1)

    def reshape3(self, a, k, m):
        return self._node("Reshape", [a.name, self._ints([-1, k, m])])

    def clip(self, a, lo, hi):
        return self._node("Clip", [a.name, self._as_sym(np.asarray(lo, self.np_dtype)).name,
                                   self._as_sym(np.asarray(hi, self.np_dtype)).name])

    def ge(self, a, b):
        return self._node("GreaterOrEqual", [a.name, self._as_sym(b).name])

    def le(self, a, b):
        return self._node("LessOrEqual", [a.name, self._as_sym(b).name])

    def lt(self, a, b):
        return self._node("Less", [a.name, self._as_sym(b).name])

    def gt(self, a, b):
        return self._node("Greater", [a.name, self._as_sym(b).name])

    def eq(self, a, b):
        return self._node("Equal", [a.name, self._as_sym(b).name])

    def logical_and(self, a, b):
        return self._node("And", [a.name, b.name])

    def to_float(self, b):
        return self._node("Cast", [b.name], to=self.elem)

    def bin_index(self, ge):
        count = self._node("ReduceSum", [self.to_float(ge).name, self._ints([-1])], keepdims=1)
        idx = self._node("Cast", [count.name], to=self.onnx.TensorProto.INT64)
        return self._node("Sub", [idx.name, self._init(np.array(1, np.int64), "i")])

    def pick(self, a, idx):
        g = self._node("GatherElements", [a.name, idx.name], axis=-1)
        return self._node("Squeeze", [g.name, self._ints([-1])])

    def where(self, cond, a, b):
        return self._node("Where", [cond.name, self._as_sym(a).name, self._as_sym(b).name])
