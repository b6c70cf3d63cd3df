"""The numpy reference executor: float32/integer semantics of the ONNX ops ptqc supports.

It is the float oracle of ptqc (constant folding, ``-r infer`` on float models, the float side
of comparisons) and is checked op by op against onnxruntime.  It imports numpy only.

Two entry points:

- :func:`run_node` evaluates one op on numpy arrays (``None`` for an omitted optional input);
- :class:`ReferenceExecutor` runs a list of nodes in the given (topological) order and frees
  each intermediate after its last use, so memory is the live set, not the whole model.

Semantics follow the ONNX operator specification for the default domain at the given opset
(attribute-vs-input forms of Clip, Split, Squeeze, Unsqueeze, Pad, Slice, Reduce*, Resize,
Softmax's coercion to 2-D before opset 13).  An op or attribute value it does not implement
raises :class:`UnsupportedOpError` naming the op and node; a failure while running (bad shapes,
bad indices) raises :class:`ReferenceRuntimeError` naming the node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["UnsupportedOpError", "ReferenceRuntimeError", "SUPPORTED_OPS", "supports", "run_node",
           "ReferenceExecutor", "ONNX_DTYPES"]


class UnsupportedOpError(ValueError):
    """An op (or an attribute value of it) the reference executor does not implement."""

    def __init__(self, op_type: str, domain: str = "", node_name: str = "", *, opset: int | None = None,
                 detail: str = ""):
        self.op_type, self.domain, self.node_name, self.opset, self.detail = (
            op_type, domain, node_name, opset, detail)
        where = f"node {node_name!r}: " if node_name else ""
        dom = f" in domain {domain!r}" if domain not in ("", "ai.onnx") else ""
        ver = f" at opset {opset}" if opset is not None else ""
        why = f": {detail}" if detail else ""
        super().__init__(f"{where}op {op_type}{dom}{ver} is not supported by the reference executor{why}")


class ReferenceRuntimeError(RuntimeError):
    """An op failed while running (shapes, indices, dtypes); the message names the node."""


# ONNX TensorProto.DataType -> numpy dtype (the ones numpy can hold exactly).
ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8), 4: np.dtype(np.uint16),
    5: np.dtype(np.int16), 6: np.dtype(np.int32), 7: np.dtype(np.int64), 8: np.dtype(object),
    9: np.dtype(np.bool_), 10: np.dtype(np.float16), 11: np.dtype(np.float64),
    12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}

_NUMPY_DTYPES = frozenset(ONNX_DTYPES.values())


@dataclass(frozen=True)
class _Call:
    op_type: str
    opset: int
    name: str
    n_outputs: int

    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op_type, "", self.name, opset=self.opset, detail=detail)


_Impl = Callable[[list, dict, _Call], Any]
_OPS: dict[str, _Impl] = {}


def _op(*names: str) -> Callable[[_Impl], _Impl]:
    def register(fn: _Impl) -> _Impl:
        for n in names:
            _OPS[n] = fn
        return fn
    return register


# onnxruntime's contrib Q/DQ (domain com.microsoft) carry 16-bit types before opset 21; their
# semantics are the default-domain ops'.
_MS_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def supports(op_type: str, domain: str = "") -> bool:
    """Whether :func:`run_node` implements ``op_type`` (default domain, plus com.microsoft Q/DQ)."""
    if domain == "com.microsoft":
        return op_type in _MS_OPS
    return domain in ("", "ai.onnx") and op_type in _OPS


def run_node(op_type: str, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any] | None = None, *,
             domain: str = "", opset: int = 13, name: str = "", n_outputs: int = 1) -> list[np.ndarray]:
    """Evaluate one op.  ``n_outputs`` is how many outputs the node declares (Split,
    Dropout's mask, BatchNormalization's training outputs, MaxPool's indices, TopK...)."""
    if not supports(op_type, domain):
        raise UnsupportedOpError(op_type, domain, name, opset=opset)
    call = _Call(op_type, opset, name, n_outputs)
    for x in inputs:
        if x is not None and not isinstance(x, np.ndarray):
            raise call.unsupported(f"non-tensor values ({type(x).__name__}: sequences, optionals)")
        if x is not None and x.dtype not in _NUMPY_DTYPES:
            raise call.unsupported(f"tensors of dtype {x.dtype}")
    try:
        with np.errstate(all="ignore"):  # IEEE results (inf, nan) are the ONNX semantics
            out = _OPS[op_type](list(inputs), dict(attrs or {}), call)
    except (UnsupportedOpError, ReferenceRuntimeError):
        raise
    except Exception as e:  # noqa: BLE001 - any numpy failure becomes one named error
        where = f"node {name!r}" if name else "node"
        raise ReferenceRuntimeError(f"{where} ({op_type}): {type(e).__name__}: {e}") from e
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [np.asarray(o) for o in outs]


class ReferenceExecutor:
    """Run ``nodes`` (objects with op_type, domain, name, inputs, outputs, attrs) in order."""

    def __init__(self, nodes: Iterable[Any], *, opset: int = 13, constants: Mapping[str, np.ndarray] | None = None):
        self.nodes = list(nodes)
        self.opset = opset
        self.constants = dict(constants or {})
        for n in self.nodes:
            if not supports(n.op_type, getattr(n, "domain", "")):
                raise UnsupportedOpError(n.op_type, getattr(n, "domain", ""), n.name, opset=opset)
        self._last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for name in n.inputs:
                if name:
                    self._last_use[name] = i

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
            keep_all: bool = False) -> dict[str, np.ndarray]:
        """Values of ``outputs`` (default: every value no node consumes) given ``feeds``.
        With ``keep_all`` every intermediate is returned too."""
        if outputs is None:
            used = set(self._last_use)
            outputs = [o for n in self.nodes for o in n.outputs if o and o not in used]
        wanted = set(outputs)
        env: dict[str, np.ndarray] = dict(self.constants)
        env.update(feeds)
        kept: dict[str, np.ndarray] = {}
        for i, n in enumerate(self.nodes):
            try:
                args = [env[x] if x else None for x in n.inputs]
            except KeyError as e:
                raise ReferenceRuntimeError(f"node {n.name!r} ({n.op_type}): input {e.args[0]!r} has no value") from None
            outs = run_node(n.op_type, args, n.attrs, opset=self.opset, name=n.name, n_outputs=len(n.outputs))
            for name, value in zip(n.outputs, outs):
                if name:
                    env[name] = value
                    if keep_all:
                        kept[name] = value
            for x in set(n.inputs):
                if x and self._last_use.get(x) == i and x not in wanted and x not in self.constants:
                    env.pop(x, None)
        missing = [o for o in outputs if o not in env]
        if missing:
            raise ReferenceRuntimeError(f"output {missing[0]!r} is not computed by any node or feed")
        result = {o: env[o] for o in outputs}
        if keep_all:
            kept.update(result)
            return kept
        return result


# --------------------------------------------------------------------------------- helpers

def _ints(v: Any) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _like(x: np.ndarray, value: Any) -> np.ndarray:
    """``value`` cast to ``x``'s dtype (numpy 2 does not demote float64 0-d arrays)."""
    return np.asarray(value).astype(x.dtype, copy=False)


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


def _opt(inputs: list, i: int) -> np.ndarray | None:
    return inputs[i] if len(inputs) > i and inputs[i] is not None else None


def _float_dtype(x: np.ndarray) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


# ---------------------------------------------------------------------- elementwise math

def _binary(fn: Callable) -> _Impl:
    return lambda i, a, c: fn(i[0], i[1])


_OPS["Add"] = _binary(np.add)
_OPS["Sub"] = _binary(np.subtract)
_OPS["Mul"] = _binary(np.multiply)
_OPS["Equal"] = _binary(np.equal)
_OPS["Less"] = _binary(np.less)
_OPS["LessOrEqual"] = _binary(np.less_equal)
_OPS["Greater"] = _binary(np.greater)
_OPS["GreaterOrEqual"] = _binary(np.greater_equal)
_OPS["And"] = _binary(np.logical_and)
_OPS["Or"] = _binary(np.logical_or)
_OPS["Xor"] = _binary(np.logical_xor)
_OPS["BitwiseAnd"] = _binary(np.bitwise_and)
_OPS["BitwiseOr"] = _binary(np.bitwise_or)
_OPS["BitwiseXor"] = _binary(np.bitwise_xor)


@_op("Div")
def _div(i, a, c):
    x, y = i
    if x.dtype.kind in "iu":  # C semantics: truncate toward zero
        q = np.abs(x) // np.abs(y)
        return (q * np.sign(x) * np.sign(y)).astype(np.result_type(x, y))
    return np.divide(x, y)


@_op("Mod")
def _mod(i, a, c):
    x, y = i
    return np.fmod(x, y) if a.get("fmod", 0) else np.mod(x, y)  # fmod=0: sign of the divisor


@_op("Pow")
def _pow(i, a, c):
    x, y = i
    if x.dtype.kind in "iu":
        return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)
    return np.power(x, y.astype(x.dtype)).astype(x.dtype)


def _unary(fn: Callable) -> _Impl:
    return lambda i, a, c: fn(i[0])


_OPS["Neg"] = _unary(np.negative)
_OPS["Abs"] = _unary(np.abs)
_OPS["Sqrt"] = _unary(np.sqrt)
_OPS["Exp"] = _unary(np.exp)
_OPS["Log"] = _unary(np.log)
_OPS["Floor"] = _unary(np.floor)
_OPS["Ceil"] = _unary(np.ceil)
_OPS["Round"] = _unary(np.rint)  # half to even, as ONNX
_OPS["Sign"] = _unary(np.sign)
_OPS["Sin"] = _unary(np.sin)
_OPS["Cos"] = _unary(np.cos)
_OPS["Tan"] = _unary(np.tan)
_OPS["Asin"] = _unary(np.arcsin)
_OPS["Acos"] = _unary(np.arccos)
_OPS["Atan"] = _unary(np.arctan)
_OPS["Sinh"] = _unary(np.sinh)
_OPS["Cosh"] = _unary(np.cosh)
_OPS["Asinh"] = _unary(np.arcsinh)
_OPS["Acosh"] = _unary(np.arccosh)
_OPS["Atanh"] = _unary(np.arctanh)
_OPS["Tanh"] = _unary(np.tanh)
_OPS["Not"] = _unary(np.logical_not)
_OPS["BitwiseNot"] = _unary(np.bitwise_not)
_OPS["IsNaN"] = _unary(np.isnan)


@_op("Reciprocal")
def _reciprocal(i, a, c):
    return (np.ones((), i[0].dtype) / i[0]).astype(i[0].dtype)


@_op("IsInf")
def _isinf(i, a, c):
    x = i[0]
    pos, neg = a.get("detect_positive", 1), a.get("detect_negative", 1)
    return (np.isposinf(x) & bool(pos)) | (np.isneginf(x) & bool(neg))


def _variadic(fn: Callable) -> _Impl:
    def impl(i, a, c):
        out = i[0]
        for x in i[1:]:
            out = fn(out, x)
        return np.array(out, copy=True)
    return impl


_OPS["Sum"] = _variadic(np.add)
_OPS["Max"] = _variadic(np.maximum)
_OPS["Min"] = _variadic(np.minimum)


@_op("Mean")
def _mean(i, a, c):
    s = _variadic(np.add)(i, a, c)
    return (s / _like(s, len(i))).astype(i[0].dtype)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to ~1e-14: Maclaurin series for |x| < 3, asymptotic erfc beyond."""
    z = np.asarray(x, dtype=np.float64)
    out = np.empty_like(z)
    small = np.abs(z) < 3.0
    zs = z[small]
    term, total, z2 = zs.copy(), zs.copy(), zs * zs
    for n in range(1, 70):
        term = term * (-z2 / n)
        total += term / (2 * n + 1)
    out[small] = total * (2.0 / math.sqrt(math.pi))
    zb = z[~small]
    ab = np.abs(zb)
    inv = 1.0 / (2.0 * ab * ab)
    series = 1.0 - inv + 3 * inv**2 - 15 * inv**3 + 105 * inv**4 - 945 * inv**5
    erfc = np.exp(-ab * ab) / (ab * math.sqrt(math.pi)) * series
    out[~small] = np.sign(zb) * (1.0 - erfc)
    out[np.isnan(z)] = np.nan
    return out


@_op("Erf")
def _erf_op(i, a, c):
    return _erf(i[0]).astype(i[0].dtype)


# ----------------------------------------------------------------------------- activations

@_op("Relu")
def _relu(i, a, c):
    return np.maximum(i[0], _like(i[0], 0))


@_op("LeakyRelu")
def _leaky(i, a, c):
    x = i[0]
    return np.where(x >= 0, x, x * _like(x, a.get("alpha", 0.01)))


@_op("PRelu")
def _prelu(i, a, c):
    x, slope = i
    return np.where(x >= 0, x, x * slope).astype(x.dtype)


@_op("Elu")
def _elu(i, a, c):
    x = i[0]
    return np.where(x >= 0, x, _like(x, a.get("alpha", 1.0)) * np.expm1(x)).astype(x.dtype)


@_op("Celu")
def _celu(i, a, c):
    x, alpha = i[0], _like(i[0], a.get("alpha", 1.0))
    return (np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))).astype(x.dtype)


@_op("Selu")
def _selu(i, a, c):
    x = i[0]
    alpha = a.get("alpha", 1.67326319217681884765625)
    gamma = a.get("gamma", 1.05070102214813232421875)
    return (gamma * np.where(x > 0, x, alpha * np.expm1(x))).astype(x.dtype)


@_op("ThresholdedRelu")
def _thresholded(i, a, c):
    x = i[0]
    return np.where(x > a.get("alpha", 1.0), x, _like(x, 0))


@_op("Clip")
def _clip(i, a, c):
    x = i[0]
    if c.opset < 11:
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
    else:
        lo, hi = _opt(i, 1), _opt(i, 2)
    out = x
    if lo is not None:
        out = np.maximum(out, _like(x, lo))
    if hi is not None:
        out = np.minimum(out, _like(x, hi))
    return np.array(out, copy=True)


@_op("Sigmoid")
def _sigmoid(i, a, c):
    x = i[0].astype(np.float64)
    return (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(i[0].dtype)


@_op("HardSigmoid")
def _hard_sigmoid(i, a, c):
    x = i[0]
    y = x * _like(x, a.get("alpha", 0.2)) + _like(x, a.get("beta", 0.5))
    return np.clip(y, _like(x, 0), _like(x, 1))


@_op("HardSwish")
def _hard_swish(i, a, c):
    x = i[0]
    return x * np.clip(x * _like(x, 1 / 6) + _like(x, 0.5), _like(x, 0), _like(x, 1))


@_op("Softplus")
def _softplus(i, a, c):
    x = i[0].astype(np.float64)
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(i[0].dtype)


@_op("Softsign")
def _softsign(i, a, c):
    x = i[0]
    return x / (_like(x, 1) + np.abs(x))


@_op("Mish")
def _mish(i, a, c):
    x = i[0].astype(np.float64)
    return (x * np.tanh(np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))))).astype(i[0].dtype)


@_op("Gelu")
def _gelu(i, a, c):
    x = i[0].astype(np.float64)
    if _s(a.get("approximate", "none")) == "tanh":
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        y = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    return y.astype(i[0].dtype)


def _softmax_axes(x: np.ndarray, a: dict, c: _Call) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """(view to normalize over, axis, original shape).  Before opset 13 the input is coerced
    to 2-D at ``axis`` (default 1); from 13 one axis (default -1)."""
    if c.opset < 13:
        axis = _axis(a.get("axis", 1), x.ndim)
        return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1), 1, x.shape
    return x, _axis(a.get("axis", -1), x.ndim), x.shape


@_op("Softmax")
def _softmax(i, a, c):
    v, axis, shape = _softmax_axes(i[0], a, c)
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).reshape(shape)


@_op("LogSoftmax")
def _log_softmax(i, a, c):
    v, axis, shape = _softmax_axes(i[0], a, c)
    s = v - v.max(axis=axis, keepdims=True)
    return (s - np.log(np.exp(s).sum(axis=axis, keepdims=True))).reshape(shape)


@_op("Hardmax")
def _hardmax(i, a, c):
    v, axis, shape = _softmax_axes(i[0], a, c)
    idx = np.expand_dims(np.argmax(v, axis=axis), axis)
    out = np.zeros_like(v)
    np.put_along_axis(out, idx, 1, axis=axis)
    return out.reshape(shape)


# ---------------------------------------------------------------------------- normalization

@_op("BatchNormalization")
def _batchnorm(i, a, c):
    x, scale, bias, mean, var = i[:5]
    eps = a.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    training = a.get("training_mode", 0) if c.opset >= 14 else (c.n_outputs > 1 and c.opset < 9)
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        cur_mean, cur_var = x.mean(axis=axes), x.var(axis=axes)
        y = (x - cur_mean.reshape(shape)) / np.sqrt(cur_var.reshape(shape) + _like(x, eps))
        y = (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)
        m = a.get("momentum", 0.9)
        run_mean = (mean * m + cur_mean * (1 - m)).astype(mean.dtype)
        run_var = (var * m + cur_var * (1 - m)).astype(var.dtype)
        return [y, run_mean, run_var][:c.n_outputs]
    inv = (scale / np.sqrt(var + _like(var, eps))).astype(x.dtype)
    return (x - mean.reshape(shape).astype(x.dtype)) * inv.reshape(shape) + bias.reshape(shape).astype(x.dtype)


@_op("InstanceNormalization")
def _instancenorm(i, a, c):
    x, scale, bias = i
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean) / np.sqrt(var + _like(x, a.get("epsilon", 1e-5)))
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@_op("LayerNormalization")
def _layernorm(i, a, c):
    x, scale, bias = i[0], i[1], _opt(i, 2)
    axis = _axis(a.get("axis", -1), x.ndim)
    axes = tuple(range(axis, x.ndim))
    xf = x.astype(np.float32) if a.get("stash_type", 1) == 1 else x
    mean = xf.mean(axis=axes, keepdims=True)
    var = ((xf - mean) ** 2).mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + _like(xf, a.get("epsilon", 1e-5)))
    y = ((xf - mean) * inv_std).astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return [y.astype(x.dtype), mean, inv_std][:c.n_outputs]


@_op("LRN")
def _lrn(i, a, c):
    x = i[0]
    size = a["size"]
    alpha, beta, bias = a.get("alpha", 1e-4), a.get("beta", 0.75), a.get("bias", 1.0)
    sq = np.square(x.astype(np.float64))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = np.pad(sq, [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2))
    csum = np.cumsum(np.concatenate([np.zeros_like(padded[:, :1]), padded], axis=1), axis=1)
    window = csum[:, size:] - csum[:, :-size]
    return (x / (bias + alpha / size * window) ** beta).astype(x.dtype)


# ---------------------------------------------------------------------------- reductions

def _reduce_axes(i: list, a: dict, c: _Call, attr_until: int) -> tuple[int, ...] | None:
    """Axes to reduce; ``None`` = all; ``()`` = none (noop_with_empty_axes)."""
    x = i[0]
    if c.opset < attr_until:
        axes = a.get("axes")
    else:
        axes = _opt(i, 1)
        axes = None if axes is None or axes.size == 0 else _ints(axes)
        if axes is None and a.get("noop_with_empty_axes", 0):
            return ()
    if axes is None:
        return None
    return tuple(sorted(_axis(int(ax), x.ndim) for ax in axes))


def _lowest(x: np.ndarray) -> Any:
    """The identity of max over ``x``'s dtype (an empty ReduceMax gives it)."""
    return False if x.dtype == bool else -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min


def _highest(x: np.ndarray) -> Any:
    return True if x.dtype == bool else np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).max


def _reduction(fn: Callable, attr_until: int = 18, pre: Callable | None = None,
               post: Callable | None = None) -> _Impl:
    def impl(i, a, c):
        x = i[0]
        axes = _reduce_axes(i, a, c, attr_until)
        if axes == ():
            return (post(pre(x)) if post else pre(x) if pre else x).astype(x.dtype)
        v = pre(x) if pre else x
        kw = {"initial": _lowest(x) if fn is np.max else _highest(x)} if fn in (np.max, np.min) else {}
        r = fn(v, axis=axes, keepdims=bool(a.get("keepdims", 1)), **kw)
        return np.asarray(post(r) if post else r).astype(x.dtype)
    return impl


_OPS["ReduceMean"] = _reduction(np.mean)
_OPS["ReduceSum"] = _reduction(np.sum, attr_until=13)
_OPS["ReduceMax"] = _reduction(np.max)
_OPS["ReduceMin"] = _reduction(np.min)
_OPS["ReduceProd"] = _reduction(np.prod)
_OPS["ReduceSumSquare"] = _reduction(np.sum, pre=np.square)
_OPS["ReduceL1"] = _reduction(np.sum, pre=np.abs)
_OPS["ReduceL2"] = _reduction(np.sum, pre=lambda x: np.square(x.astype(np.float64)), post=np.sqrt)
_OPS["ReduceLogSum"] = _reduction(np.sum, post=np.log)
_OPS["ReduceLogSumExp"] = _reduction(np.sum, pre=lambda x: np.exp(x.astype(np.float64)), post=np.log)


def _arg(fn: Callable) -> _Impl:
    def impl(i, a, c):
        x = i[0]
        axis = _axis(a.get("axis", 0), x.ndim)
        if a.get("select_last_index", 0):
            r = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            r = fn(x, axis=axis)
        if a.get("keepdims", 1):
            r = np.expand_dims(r, axis)
        return r.astype(np.int64)
    return impl


_OPS["ArgMax"] = _arg(np.argmax)
_OPS["ArgMin"] = _arg(np.argmin)


@_op("TopK")
def _topk(i, a, c):
    x = i[0]
    k = int(i[1].reshape(-1)[0]) if c.opset >= 10 else a["k"]
    axis = _axis(a.get("axis", -1), x.ndim)
    largest = a.get("largest", 1)
    key = (~x if x.dtype.kind == "u" else -x) if largest else x  # ~ reverses unsigned order
    idx = np.argsort(key, axis=axis, kind="stable")  # ties: lower index first
    idx = np.take(idx, np.arange(k), axis=axis)
    return [np.take_along_axis(x, idx, axis), idx.astype(np.int64)]


@_op("CumSum")
def _cumsum(i, a, c):
    x, axis = i[0], _axis(int(i[1].reshape(-1)[0]), i[0].ndim)
    v = np.flip(x, axis) if a.get("reverse", 0) else x
    out = np.cumsum(v, axis=axis, dtype=x.dtype)
    if a.get("exclusive", 0):
        out = np.concatenate([np.zeros_like(np.take(out, [0], axis)), np.take(out, np.arange(x.shape[axis] - 1), axis)], axis)
    return np.flip(out, axis) if a.get("reverse", 0) else out


# ------------------------------------------------------------------------------- linear

@_op("MatMul")
def _matmul(i, a, c):
    return np.matmul(i[0], i[1])


@_op("MatMulInteger")
def _matmul_integer(i, a, c):
    """int32 (A - a_zp) @ (B - b_zp): a_zp per row of A (1-D) or scalar, b_zp per column of B."""
    A, B = i[0].astype(np.int64), i[1].astype(np.int64)
    a_zp, b_zp = _opt(i, 2), _opt(i, 3)
    if a_zp is not None:
        A = A - (a_zp.astype(np.int64).reshape(-1, 1) if a_zp.ndim == 1 and a_zp.size > 1 else a_zp.astype(np.int64))
    if b_zp is not None:
        B = B - b_zp.astype(np.int64)
    return np.matmul(A, B).astype(np.int32)


@_op("Gemm")
def _gemm(i, a, c):
    A, B, C = i[0], i[1], _opt(i, 2)
    if a.get("transA", 0):
        A = A.T
    if a.get("transB", 0):
        B = B.T
    y = A @ B
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        y = y * _like(y, alpha)
    if C is not None and beta != 0:
        y = y + (C * _like(C, beta) if beta != 1.0 else C)
    return y.astype(A.dtype)


@_op("Einsum")
def _einsum(i, a, c):
    return np.einsum(_s(a["equation"]), *i)


# ----------------------------------------------------------------- recurrent (RNN, GRU, LSTM)

# name (lower case) -> (how many of activation_alpha / activation_beta it consumes, function).
_RNN_ACTS: dict[str, tuple[int, Callable]] = {
    "relu": (0, lambda x, al, be: np.maximum(x, 0)),
    "tanh": (0, lambda x, al, be: np.tanh(x)),
    "sigmoid": (0, lambda x, al, be: 0.5 * (np.tanh(0.5 * x) + 1)),
    "affine": (2, lambda x, al, be: al * x + be),
    "leakyrelu": (1, lambda x, al, be: np.where(x >= 0, x, al * x)),
    "thresholdedrelu": (1, lambda x, al, be: np.where(x > al, x, 0)),
    "scaledtanh": (2, lambda x, al, be: al * np.tanh(be * x)),
    "hardsigmoid": (2, lambda x, al, be: np.clip(al * x + be, 0, 1)),
    "elu": (1, lambda x, al, be: np.where(x >= 0, x, al * np.expm1(x))),
    "softsign": (0, lambda x, al, be: x / (1 + np.abs(x))),
    "softplus": (0, lambda x, al, be: np.logaddexp(0, x)),
}
# Defaults of an omitted alpha/beta, as onnxruntime (0 for the others, e.g. ThresholdedRelu).
_RNN_ACT_DEFAULTS = {"leakyrelu": (0.01, 0.0), "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)}


def _rnn_activations(a: dict, c: _Call, default: Sequence[str], dirs: int) -> list[list[Callable]]:
    """Per direction, the activation functions (f, g, h...) with their alpha/beta bound.  The
    alphas and betas are consumed in order by the functions that take them, as onnxruntime."""
    n = len(default)
    names = [_s(v) for v in a.get("activations") or list(default) * dirs]
    if len(names) == 2 * n and dirs == 1:  # RNN's schema default ["Tanh", "Tanh"] on one direction
        names = names[:n]
    if len(names) != n * dirs:
        raise ValueError(f"{len(names)} activations, expected {n * dirs}")
    alphas, betas = iter(a.get("activation_alpha") or []), iter(a.get("activation_beta") or [])
    fns = []
    for name in names:
        if name.lower() not in _RNN_ACTS:
            raise c.unsupported(f"activation {name!r}")
        n_params, fn = _RNN_ACTS[name.lower()]
        da, db = _RNN_ACT_DEFAULTS.get(name.lower(), (0.0, 0.0))
        al = float(next(alphas, da)) if n_params >= 1 else 0.0
        be = float(next(betas, db)) if n_params == 2 else 0.0
        fns.append(lambda x, fn=fn, al=al, be=be: fn(x, al, be))
    return [fns[d * n:(d + 1) * n] for d in range(dirs)]


def _recurrent(i: list, a: dict, c: _Call, n_gates: int, default_acts: Sequence[str], cell: Callable) -> list:
    """The driver shared by RNN, GRU and LSTM: layout, directions, per-batch sequence_lens,
    initial states and the Y / Y_h / Y_c outputs.  ``cell(d, r, rb, acts, clip)`` returns
    ``step(xw_t, states) -> new states`` for direction ``d``, where ``xw_t`` is X_t*W^T + Wb and
    ``states`` is [H] (RNN, GRU) or [H, C] (LSTM).  Computes in float32 (float64 stays float64)."""
    direction = _s(a.get("direction", "forward"))
    if direction not in ("forward", "reverse", "bidirectional"):
        raise c.unsupported(f"direction {direction!r}")
    layout = a.get("layout", 0) if c.opset >= 14 else 0
    if layout not in (0, 1):
        raise c.unsupported(f"layout {layout}")
    if i[0].dtype.kind != "f":
        raise c.unsupported(f"X of dtype {i[0].dtype} (float types only)")
    dirs = 2 if direction == "bidirectional" else 1
    ft = np.promote_types(i[0].dtype, np.float32)
    x, w, r = (v.astype(ft) for v in i[:3])
    n_states = 2 if c.op_type == "LSTM" else 1
    init = [_opt(i, 5 + k) for k in range(n_states)]
    if layout:  # batch-first X [batch, seq, input], initial states [batch, dirs, hidden]
        x = x.swapaxes(0, 1)
        init = [None if s is None else s.swapaxes(0, 1) for s in init]
    seq, batch, hidden = x.shape[0], x.shape[1], r.shape[-1]
    if a.get("hidden_size", hidden) != hidden:
        raise ValueError(f"hidden_size {a['hidden_size']} but R has shape {r.shape}")
    b = _opt(i, 3)
    b = np.zeros((dirs, 2 * n_gates * hidden), ft) if b is None else b.astype(ft)
    lens = _opt(i, 4)
    lens = np.full(batch, seq, np.int64) if lens is None else lens.astype(np.int64).reshape(batch)
    clip = a.get("clip")
    clipf = (lambda v: v) if clip is None else (lambda v: np.clip(v, -clip, clip))
    acts = _rnn_activations(a, c, default_acts, dirs)
    t = np.arange(seq)[:, None]
    valid = t < lens  # [seq, batch]
    cols = np.arange(batch)
    ys, finals = [], []
    for d in range(dirs):
        # time order per batch: reverse runs backwards within each sequence's own length
        rev = direction == "reverse" or d == 1
        order = np.where(valid, lens - 1 - t, t) if rev else np.broadcast_to(t, valid.shape)
        xw = (x @ w[d].T + b[d, :n_gates * hidden])[order, cols]
        step = cell(d, r[d], b[d, n_gates * hidden:], acts[d], clipf)
        states = [np.zeros((batch, hidden), ft) if s is None else s[d].astype(ft) for s in init]
        y = np.zeros((seq, batch, hidden), ft)
        for k in range(seq):
            new = step(xw[k], states)
            m = valid[k][:, None]
            states = [np.where(m, v, s) for v, s in zip(new, states)]
            y[k] = np.where(m, new[0], 0)
        ys.append(y[order, cols])  # the reversal within a length is its own inverse
        finals.append([np.where((lens > 0)[:, None], s, 0) for s in states])  # length 0: zeros, as onnxruntime
    outs = [np.stack(ys, 1)] + [np.stack([f[k] for f in finals]) for k in range(n_states)]
    if layout:  # Y [batch, seq, dirs, hidden], Y_h / Y_c [batch, dirs, hidden]
        outs = [outs[0].transpose(2, 0, 1, 3)] + [s.transpose(1, 0, 2) for s in outs[1:]]
    return [o.astype(i[0].dtype) for o in outs][:c.n_outputs]


@_op("RNN")
def _rnn(i, a, c):
    def cell(d, r, rb, acts, clip):
        return lambda xw, s: [acts[0](clip(xw + s[0] @ r.T + rb))]
    return _recurrent(i, a, c, 1, ("Tanh",), cell)


@_op("GRU")
def _gru(i, a, c):
    lbr = a.get("linear_before_reset", 0)

    def cell(d, r, rb, acts, clip):
        f, g = acts
        hs = r.shape[-1]
        r_zr, r_h, rb_zr, rb_h = r[:2 * hs], r[2 * hs:], rb[:2 * hs], rb[2 * hs:]

        def step(xw, s):
            h = s[0]
            xz, xr, xh = np.split(xw, 3, -1)
            hz, hr = np.split(h @ r_zr.T + rb_zr, 2, -1)
            z, rt = f(clip(xz + hz)), f(clip(xr + hr))
            hh = g(clip(xh + rt * (h @ r_h.T + rb_h))) if lbr else g(clip(xh + (rt * h) @ r_h.T + rb_h))
            return [(1 - z) * hh + z * h]
        return step
    return _recurrent(i, a, c, 3, ("Sigmoid", "Tanh"), cell)


@_op("LSTM")
def _lstm(i, a, c):
    peep, input_forget = _opt(i, 7), a.get("input_forget", 0)

    def cell(d, r, rb, acts, clip):
        f, g, h_act = acts
        p = np.zeros(3 * r.shape[-1], r.dtype) if peep is None else peep[d].astype(r.dtype)
        p_i, p_o, p_f = np.split(p, 3)

        def step(xw, s):
            h, cs = s
            gi, go, gf, gc = np.split(xw + h @ r.T + rb, 4, -1)
            it = f(clip(gi + p_i * cs))
            forget = 1 - it if input_forget else f(clip(gf + p_f * cs))
            cn = forget * cs + it * g(clip(gc))
            return [f(clip(go + p_o * cn)) * h_act(cn), cn]
        return step
    return _recurrent(i, a, c, 4, ("Sigmoid", "Tanh", "Tanh"), cell)


# ------------------------------------------------------------------------- convolutions

def _spatial_pads(in_sp: Sequence[int], k: Sequence[int], s: Sequence[int], d: Sequence[int],
                  a: dict) -> tuple[list[int], list[int]]:
    n = len(in_sp)
    auto = _s(a.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for x, kk, ss, dd in zip(in_sp, k, s, d):
            out = -(-x // ss)
            total = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - x)
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begins.append(b)
            ends.append(total - b)
        return begins, ends
    if auto == "VALID":
        return [0] * n, [0] * n
    pads = list(a.get("pads") or [0] * (2 * n))
    return pads[:n], pads[n:]


def _window_slice(start: int, count: int, step: int) -> slice:
    return slice(start, start + (count - 1) * step + 1, step)


@_op("ConvInteger")
def _conv_integer(i, a, c):
    """int32 Conv of (x - x_zp) and (w - w_zp): padding holds x's zero point; w_zp scalar or
    per output channel."""
    x, w = i[0].astype(np.int64), i[1].astype(np.int64)
    x_zp, w_zp = _opt(i, 2), _opt(i, 3)
    if x_zp is not None:
        x = x - x_zp.astype(np.int64).reshape(())
    if w_zp is not None:
        w = w - (w_zp.astype(np.int64).reshape((-1,) + (1,) * (w.ndim - 1)) if w_zp.size > 1 else
                 w_zp.astype(np.int64).reshape(()))
    return np.rint(_conv([x, w], a, c)).astype(np.int32)


@_op("Conv")
def _conv(i, a, c):
    x, w, b = i[0], i[1], _opt(i, 2)
    n_sp = x.ndim - 2
    k = list(a.get("kernel_shape") or w.shape[2:])
    s = list(a.get("strides") or [1] * n_sp)
    d = list(a.get("dilations") or [1] * n_sp)
    g = a.get("group", 1)
    pb, pe = _spatial_pads(x.shape[2:], k, s, d, a)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    out_sp = [(xp.shape[2 + j] - ((k[j] - 1) * d[j] + 1)) // s[j] + 1 for j in range(n_sp)]
    N, C, M = x.shape[0], x.shape[1], w.shape[0]
    if C != w.shape[1] * g or M % g:
        raise ValueError(f"input channels {C} and weight {w.shape} do not match group {g}")
    cg, mg = C // g, M // g
    xg = xp.reshape(N, g, cg, *xp.shape[2:])
    acc_t = np.promote_types(x.dtype, np.float32)  # float16 accumulates in float32, as onnxruntime
    wg = w.reshape(g, mg, cg, *k).astype(acc_t)
    acc = np.zeros((N, g, mg, int(np.prod(out_sp, dtype=np.int64))), dtype=acc_t)
    lead = (slice(None),) * 3
    for kidx in np.ndindex(*k):
        window = tuple(_window_slice(kidx[j] * d[j], out_sp[j], s[j]) for j in range(n_sp))
        patch = xg[lead + window].reshape(N, g, cg, -1).astype(acc_t, copy=False)
        wk = wg[lead + kidx]  # (g, mg, cg)
        if cg == 1:
            acc += wk.reshape(1, g, mg, 1) * patch
        else:
            acc += np.matmul(wk[None], patch)
    y = acc.reshape(N, M, *out_sp)
    if b is not None:
        y += b.reshape((1, M) + (1,) * n_sp).astype(acc_t)
    return y.astype(x.dtype, copy=False)


@_op("ConvTranspose")
def _conv_transpose(i, a, c):
    x, w, b = i[0], i[1], _opt(i, 2)
    n_sp = x.ndim - 2
    in_sp = list(x.shape[2:])
    k = list(a.get("kernel_shape") or w.shape[2:])
    s = list(a.get("strides") or [1] * n_sp)
    d = list(a.get("dilations") or [1] * n_sp)
    op = list(a.get("output_padding") or [0] * n_sp)
    g = a.get("group", 1)
    full = [(in_sp[j] - 1) * s[j] + (k[j] - 1) * d[j] + 1 + op[j] for j in range(n_sp)]
    auto = _s(a.get("auto_pad", "NOTSET"))
    out_shape = a.get("output_shape")
    if out_shape is not None:
        out_shape = list(out_shape)[-n_sp:]
    elif auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = [in_sp[j] * s[j] for j in range(n_sp)]
    if out_shape is not None:
        pb = []
        for j in range(n_sp):  # the spec's split of the total padding (onnxruntime agrees)
            total = full[j] - out_shape[j]
            pb.append(total // 2 if auto == "SAME_UPPER" else total - total // 2)
        out_sp = out_shape
    else:
        pads = list(a.get("pads") or [0] * (2 * n_sp))
        pb = pads[:n_sp]
        out_sp = [full[j] - pads[j] - pads[n_sp + j] for j in range(n_sp)]
    N, C = x.shape[:2]
    cg, mg = C // g, w.shape[1]
    M = mg * g
    shift = [max(0, -p) for p in pb]  # negative pads: output starts before the buffer
    buf_sp = [max(full[j], pb[j] + out_sp[j]) + shift[j] for j in range(n_sp)]
    buf = np.zeros((N, g, mg, *buf_sp), dtype=x.dtype)
    xg = x.reshape(N, g, cg, -1)
    wg = w.reshape(g, cg, mg, *k).astype(x.dtype)
    lead = (slice(None),) * 3
    for kidx in np.ndindex(*k):
        wk = np.swapaxes(wg[lead + kidx], 1, 2)  # (g, mg, cg)
        contrib = np.matmul(wk[None], xg).reshape(N, g, mg, *in_sp)
        window = tuple(_window_slice(shift[j] + kidx[j] * d[j], in_sp[j], s[j]) for j in range(n_sp))
        buf[lead + window] += contrib
    crop = tuple(slice(shift[j] + pb[j], shift[j] + pb[j] + out_sp[j]) for j in range(n_sp))
    y = buf[lead + crop].reshape(N, M, *out_sp)
    if b is not None:
        y = y + b.reshape((1, M) + (1,) * n_sp).astype(x.dtype)
    return np.ascontiguousarray(y)


# ------------------------------------------------------------------------------- pooling

def _pool_geometry(x: np.ndarray, a: dict) -> tuple[list, list, list, list, list, list]:
    n_sp = x.ndim - 2
    k = list(a["kernel_shape"])
    s = list(a.get("strides") or [1] * n_sp)
    d = list(a.get("dilations") or [1] * n_sp)
    auto = _s(a.get("auto_pad", "NOTSET"))
    in_sp = x.shape[2:]
    pb, pe = _spatial_pads(in_sp, k, s, d, a)
    out_sp = []
    for j in range(n_sp):
        span = in_sp[j] + pb[j] + pe[j] - ((k[j] - 1) * d[j] + 1)
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-in_sp[j] // s[j])
        elif a.get("ceil_mode", 0):
            o = -(-span // s[j]) + 1
            if (o - 1) * s[j] >= in_sp[j] + pb[j]:  # last window would start in the end padding
                o -= 1
        else:
            o = span // s[j] + 1
        out_sp.append(o)
    extra = [max(0, (out_sp[j] - 1) * s[j] + (k[j] - 1) * d[j] + 1 - (in_sp[j] + pb[j] + pe[j]))
             for j in range(n_sp)]
    return k, s, d, pb, [pe[j] + extra[j] for j in range(n_sp)], out_sp


@_op("MaxPool")
def _maxpool(i, a, c):
    x = i[0]
    k, s, d, pb, pe, out_sp = _pool_geometry(x, a)
    n_sp = x.ndim - 2
    low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)), constant_values=low)
    best = np.full(x.shape[:2] + tuple(out_sp), low, dtype=x.dtype)
    want_idx = c.n_outputs > 1
    if want_idx:
        best_idx = np.zeros(best.shape, dtype=np.int64)
        grids = np.meshgrid(*[np.arange(o) * s[j] - pb[j] for j, o in enumerate(out_sp)], indexing="ij")
        order = "F" if a.get("storage_order", 0) else "C"
        plane = int(np.prod(x.shape[2:], dtype=np.int64))
        base = np.arange(x.shape[0] * x.shape[1], dtype=np.int64).reshape(x.shape[:2] + (1,) * n_sp) * plane
    for kidx in np.ndindex(*k):
        window = tuple(_window_slice(kidx[j] * d[j], out_sp[j], s[j]) for j in range(n_sp))
        patch = xp[(slice(None), slice(None)) + window]
        if want_idx:
            better = patch > best
            pos = [np.clip(grids[j] + kidx[j] * d[j], 0, x.shape[2 + j] - 1) for j in range(n_sp)]
            flat = np.ravel_multi_index(pos, x.shape[2:], order=order)
            best_idx = np.where(better, base + flat, best_idx)
        best = np.maximum(best, patch)
    return [best, best_idx] if want_idx else best


def _pool_counts(in_len: int, pb: int, pe_orig: int, k: int, s: int, d: int, out: int,
                 include_pad: bool) -> np.ndarray:
    pos = np.arange(out)[:, None] * s + np.arange(k)[None, :] * d  # in padded coordinates
    hi = in_len + pb + pe_orig if include_pad else in_len + pb
    lo = 0 if include_pad else pb
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


@_op("AveragePool", "LpPool")
def _avgpool(i, a, c):
    x = i[0]
    k, s, d, pb, pe, out_sp = _pool_geometry(x, a)
    n_sp = x.ndim - 2
    _, pe_orig = _spatial_pads(x.shape[2:], k, s, d, a)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe)))
    p = a.get("p", 2)
    lp = c.op_type == "LpPool"
    acc = np.zeros(x.shape[:2] + tuple(out_sp), dtype=np.float64 if lp else x.dtype)
    for kidx in np.ndindex(*k):
        window = tuple(_window_slice(kidx[j] * d[j], out_sp[j], s[j]) for j in range(n_sp))
        patch = xp[(slice(None), slice(None)) + window]
        acc += np.abs(patch.astype(np.float64)) ** p if lp else patch
    if lp:
        return (acc ** (1.0 / p)).astype(x.dtype)
    include = bool(a.get("count_include_pad", 0))
    count = np.ones((), dtype=np.float64)
    for j in range(n_sp):
        cj = _pool_counts(x.shape[2 + j], pb[j], pe_orig[j], k[j], s[j], d[j], out_sp[j], include)
        count = np.multiply.outer(count, cj) if count.ndim else cj.astype(np.float64)
    return (acc / count.astype(x.dtype)).astype(x.dtype)


@_op("GlobalAveragePool")
def _gap(i, a, c):
    x = i[0]
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=np.float64).astype(x.dtype)


@_op("GlobalMaxPool")
def _gmp(i, a, c):
    x = i[0]
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@_op("GlobalLpPool")
def _glp(i, a, c):
    x, p = i[0], a.get("p", 2)
    r = (np.abs(x.astype(np.float64)) ** p).sum(axis=tuple(range(2, x.ndim)), keepdims=True) ** (1.0 / p)
    return r.astype(x.dtype)


# ----------------------------------------------------------------------- shape & movement

@_op("Identity")
def _identity(i, a, c):
    return i[0]


@_op("Dropout")
def _dropout(i, a, c):
    x = i[0]
    training = _opt(i, 2)
    if training is not None and bool(training.reshape(-1)[0]) and (
            _opt(i, 1) is None or float(i[1].reshape(-1)[0]) != 0):
        raise c.unsupported("training mode (random) is not reproduced")
    return [x, np.ones(x.shape, dtype=bool)][:c.n_outputs]


@_op("Shape")
def _shape(i, a, c):
    shape = np.array(i[0].shape, dtype=np.int64)
    start, end = a.get("start", 0), a.get("end")
    return shape[start:end] if (start or end is not None) else shape


@_op("Size")
def _size(i, a, c):
    return np.array(i[0].size, dtype=np.int64)


@_op("Reshape")
def _reshape(i, a, c):
    x = i[0]
    shape = list(a["shape"]) if c.opset < 5 else _ints(i[1])
    if not a.get("allowzero", 0):
        shape = [x.shape[j] if v == 0 else v for j, v in enumerate(shape)]
    return x.reshape(shape)


@_op("Flatten")
def _flatten(i, a, c):
    x = i[0]
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1) if x.size else x.reshape(
        int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64)))


@_op("Transpose")
def _transpose(i, a, c):
    perm = a.get("perm")
    return np.ascontiguousarray(np.transpose(i[0], perm))


@_op("Squeeze")
def _squeeze(i, a, c):
    x = i[0]
    axes = a.get("axes") if c.opset < 13 else (_ints(i[1]) if _opt(i, 1) is not None else None)
    if axes is None:
        return x.reshape([v for v in x.shape if v != 1])
    return np.squeeze(x, axis=tuple(_axis(ax, x.ndim) for ax in axes))


@_op("Unsqueeze")
def _unsqueeze(i, a, c):
    x = i[0]
    axes = a["axes"] if c.opset < 13 else _ints(i[1])
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axis(ax, rank) for ax in axes)))


@_op("Concat")
def _concat(i, a, c):
    parts = [x for x in i if x is not None]
    return np.concatenate(parts, axis=_axis(a["axis"], parts[0].ndim))


@_op("Split")
def _split(i, a, c):
    x = i[0]
    axis = _axis(a.get("axis", 0), x.ndim)
    split = a.get("split") if c.opset < 13 else (_ints(i[1]) if _opt(i, 1) is not None else None)
    if split is None:
        n = a.get("num_outputs", c.n_outputs)
        size = -(-x.shape[axis] // n)
        split = [size] * (n - 1) + [x.shape[axis] - size * (n - 1)]
    if sum(split) != x.shape[axis]:
        raise ValueError(f"split sizes {list(split)} do not add up to dim {x.shape[axis]}")
    return np.split(x, np.cumsum(split)[:-1], axis=axis)


@_op("Slice")
def _slice(i, a, c):
    x = i[0]
    if c.opset < 10:
        starts, ends = a["starts"], a["ends"]
        axes = a.get("axes") or list(range(len(starts)))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(i[1]), _ints(i[2])
        axes = _ints(i[3]) if _opt(i, 3) is not None else list(range(len(starts)))
        steps = _ints(i[4]) if _opt(i, 4) is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        ax = _axis(ax, x.ndim)
        dim = x.shape[ax]
        if sp == 0:
            raise ValueError("slice step 0")
        st = st + dim if st < 0 else st
        en = en + dim if en < 0 else en
        if sp > 0:
            st, en = min(max(st, 0), dim), min(max(en, 0), dim)
        else:
            st, en = min(max(st, -1), dim - 1), min(max(en, -1), dim - 1)
        index[ax] = slice(st, en if en >= 0 else None, sp)
    return np.array(x[tuple(index)], copy=True)


@_op("Gather")
def _gather(i, a, c):
    x, idx = i
    axis = _axis(a.get("axis", 0), x.ndim)
    return np.take(x, idx.astype(np.int64), axis=axis)


@_op("GatherElements")
def _gather_elements(i, a, c):
    x, idx = i
    axis = _axis(a.get("axis", 0), x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx).astype(np.int64)
    return np.take_along_axis(x, idx, axis)


@_op("GatherND")
def _gather_nd(i, a, c):
    x, idx = i[0], i[1].astype(np.int64)
    b = a.get("batch_dims", 0)
    batch = x.shape[:b]
    m = idx.shape[-1]
    xb = x.reshape((-1,) + x.shape[b:])
    ib = idx.reshape((xb.shape[0], -1, m))
    ib = np.where(ib < 0, ib + np.array(x.shape[b:b + m]), ib)
    out = np.stack([xb[n][tuple(ib[n].T)] for n in range(xb.shape[0])])
    return out.reshape(batch + idx.shape[b:-1] + x.shape[b + m:])


def _scatter_reduce(reduction: str) -> Callable:
    return {"none": None, "add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}[reduction]


@_op("ScatterND")
def _scatter_nd(i, a, c):
    x, idx, upd = i[0], i[1].astype(np.int64), i[2]
    out = x.copy()
    fn = _scatter_reduce(_s(a.get("reduction", "none")))
    m = idx.shape[-1]
    flat_idx = idx.reshape(-1, m)
    flat_upd = upd.reshape((-1,) + x.shape[m:])
    for k in range(flat_idx.shape[0]):
        key = tuple(flat_idx[k])
        out[key] = flat_upd[k] if fn is None else fn(out[key], flat_upd[k])
    return out


@_op("ScatterElements", "Scatter")
def _scatter_elements(i, a, c):
    x, idx, upd = i[0], i[1].astype(np.int64), i[2]
    axis = _axis(a.get("axis", 0), x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    out = x.copy()
    fn = _scatter_reduce(_s(a.get("reduction", "none")))
    for pos in np.ndindex(*idx.shape):
        key = list(pos)
        key[axis] = idx[pos]
        key = tuple(key)
        out[key] = upd[pos] if fn is None else fn(out[key], upd[pos])
    return out


@_op("Expand")
def _expand(i, a, c):
    x, shape = i[0], _ints(i[1])
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))), copy=True)


@_op("Tile")
def _tile(i, a, c):
    return np.tile(i[0], _ints(i[1]))


@_op("Pad")
def _pad(i, a, c):
    x = i[0]
    if c.opset < 11:
        pads, value = list(a.get("pads", a.get("paddings"))), a.get("value", 0.0)
        axes = list(range(x.ndim))
    else:
        pads = _ints(i[1])
        value = i[2].reshape(-1)[0] if _opt(i, 2) is not None and i[2].size else 0
        axes = [_axis(v, x.ndim) for v in _ints(i[3])] if _opt(i, 3) is not None else list(range(x.ndim))
    mode = _s(a.get("mode", "constant"))
    n = len(axes)
    widths = [(0, 0)] * x.ndim
    for j, ax in enumerate(axes):
        widths[ax] = (pads[j], pads[n + j])
    # negative pads crop
    crop = tuple(slice(max(0, -b), x.shape[k] - max(0, -e)) for k, (b, e) in enumerate(widths))
    x = x[crop]
    widths = [(max(0, b), max(0, e)) for b, e in widths]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    if mode in ("reflect", "edge", "wrap"):
        return np.pad(x, widths, mode=mode)
    raise c.unsupported(f"mode {mode!r}")


@_op("ConstantOfShape")
def _constant_of_shape(i, a, c):
    value = a.get("value")
    value = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value)
    return np.full(_ints(i[0]), value.reshape(-1)[0], dtype=value.dtype)


@_op("Constant")
def _constant(i, a, c):
    for key in ("value", "value_float", "value_int"):
        if key in a:
            v = a[key]
            return np.asarray(v, dtype=np.float32 if key == "value_float" else np.int64 if key == "value_int" else None)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], dtype=np.float32)
    if "value_ints" in a:
        return np.asarray(a["value_ints"], dtype=np.int64)
    raise c.unsupported("only tensor, float(s) and int(s) values")


@_op("Range")
def _range(i, a, c):
    start, limit, delta = (v.reshape(-1)[0] for v in i)
    n = max(int(math.ceil((limit - start) / delta)), 0)
    return (start + np.arange(n, dtype=np.float64 if i[0].dtype.kind == "f" else np.int64) * delta).astype(i[0].dtype)


@_op("NonZero")
def _nonzero(i, a, c):
    return np.array(np.nonzero(i[0]), dtype=np.int64).reshape(i[0].ndim, -1)


@_op("Where")
def _where(i, a, c):
    return np.where(i[0], i[1], i[2])


@_op("Cast")
def _cast(i, a, c):
    to = int(a["to"])
    if to not in ONNX_DTYPES:
        raise c.unsupported(f"cast to ONNX dtype {to}")
    dtype = ONNX_DTYPES[to]
    x = i[0]
    if x.dtype not in ONNX_DTYPES.values():
        raise c.unsupported(f"cast from {x.dtype}")
    if dtype == object:
        raise c.unsupported("cast to string")
    if x.dtype == object:
        return np.array([float(v) if dtype.kind == "f" else int(float(v)) for v in x.reshape(-1)]).astype(
            dtype).reshape(x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return x.astype(dtype)


@_op("CastLike")
def _cast_like(i, a, c):
    with np.errstate(invalid="ignore", over="ignore"):
        return i[0].astype(i[1].dtype)


@_op("OneHot")
def _one_hot(i, a, c):
    idx, depth, values = i
    depth = int(depth.reshape(-1)[0])
    axis = a.get("axis", -1)
    idx = np.where(idx < 0, idx + depth, idx).astype(np.int64)
    hot = np.arange(depth) == idx[..., None]
    out = np.where(hot, values[1], values[0]).astype(values.dtype)
    rank = idx.ndim + 1
    return np.moveaxis(out, -1, _axis(axis, rank))


@_op("DepthToSpace")
def _depth_to_space(i, a, c):
    x, b = i[0], a["blocksize"]
    n, ch, h, w = x.shape
    if _s(a.get("mode", "DCR")) == "DCR":
        y = x.reshape(n, b, b, ch // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, ch // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return y.reshape(n, ch // (b * b), h * b, w * b)


@_op("SpaceToDepth")
def _space_to_depth(i, a, c):
    x, b = i[0], a["blocksize"]
    n, ch, h, w = x.shape
    y = x.reshape(n, ch, h // b, b, w // b, b)
    y = y.transpose(0, 1, 3, 5, 2, 4) if _s(a.get("mode", "DCR")) == "CRD" else y.transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, ch * b * b, h // b, w // b)


@_op("Trilu")
def _trilu(i, a, c):
    x = i[0]
    k = int(i[1].reshape(-1)[0]) if _opt(i, 1) is not None else 0
    return np.triu(x, k) if a.get("upper", 1) else np.tril(x, k)


# -------------------------------------------------------------------------------- resize

def _resize_coord(x: np.ndarray, mode: str, scale: float, in_len: int, out_len: int,
                  roi: tuple[float, float] | None) -> np.ndarray:
    """Output index -> input coordinate, per ONNX ``coordinate_transformation_mode``."""
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        center = in_len / 2
        return center * (1 - adjustment) + (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_len > 1 else np.zeros_like(x) - 0.5
    if mode == "align_corners":  # onnxruntime divides by the integer output length - 1
        return x * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if mode == "tf_crop_and_resize":
        start, end = roi
        if out_len > 1:
            return start * (in_len - 1) + x * (end - start) * (in_len - 1) / (out_len - 1)
        return np.full_like(x, 0.5 * (start + end) * (in_len - 1))
    raise ValueError(f"coordinate_transformation_mode {mode!r}")


def _nearest_index(xo: np.ndarray, mode: str) -> np.ndarray:
    if mode == "round_prefer_floor":
        r = np.where(xo - np.floor(xo) == 0.5, np.floor(xo), np.round(xo))
    elif mode == "round_prefer_ceil":
        r = np.where(xo - np.floor(xo) == 0.5, np.ceil(xo), np.round(xo))
    elif mode == "floor":
        r = np.floor(xo)
    elif mode == "ceil":
        r = np.ceil(xo)
    else:
        raise ValueError(f"nearest_mode {mode!r}")
    return r.astype(np.int64)


def _cubic_coeffs(t: np.ndarray, A: float) -> np.ndarray:
    """Weights of the 4 neighbours floor-1..floor+2 for fractional offsets ``t``."""
    def w(d):
        d = np.abs(d)
        return np.where(d <= 1, ((A + 2) * d - (A + 3)) * d * d + 1,
                        np.where(d < 2, ((A * d - 5 * A) * d + 8 * A) * d - 4 * A, 0.0))
    return np.stack([w(t + 1), w(t), w(1 - t), w(2 - t)], axis=-1)


def _resize_axis(x: np.ndarray, axis: int, out_len: int, scale: float, a: dict,
                 roi: tuple[float, float] | None) -> np.ndarray:
    in_len = x.shape[axis]
    mode = _s(a.get("mode", "nearest"))
    ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
    xo = _resize_coord(np.arange(out_len, dtype=np.float64), ctm, scale, in_len, out_len, roi)
    outside = (xo < 0) | (xo > in_len - 1) if ctm == "tf_crop_and_resize" else None
    shape = [1] * x.ndim
    shape[axis] = out_len
    if mode == "nearest":
        idx = np.clip(_nearest_index(xo, _s(a.get("nearest_mode", "round_prefer_floor"))), 0, in_len - 1)
        y = np.take(x, idx, axis=axis)
    else:
        if mode == "linear":
            lo = np.floor(xo)
            t = xo - lo
            offsets, weights = np.array([0, 1]), np.stack([1 - t, t], axis=-1)
        elif mode == "cubic":
            lo = np.floor(xo)
            t = xo - lo
            offsets, weights = np.array([-1, 0, 1, 2]), _cubic_coeffs(t, a.get("cubic_coeff_a", -0.75))
        else:
            raise ValueError(f"mode {mode!r}")
        idx = lo.astype(np.int64)[:, None] + offsets[None, :]
        if a.get("exclude_outside", 0):
            weights = np.where((idx < 0) | (idx >= in_len), 0.0, weights)
            weights = weights / weights.sum(axis=1, keepdims=True)
        idx = np.clip(idx, 0, in_len - 1)
        y = np.zeros(x.shape[:axis] + (out_len,) + x.shape[axis + 1:], dtype=np.float64)
        for j in range(idx.shape[1]):
            y += np.take(x, idx[:, j], axis=axis) * weights[:, j].reshape(shape)
    if outside is not None and outside.any():
        y = np.where(outside.reshape(shape), a.get("extrapolation_value", 0.0), y)
    return y


@_op("Resize", "Upsample")
def _resize(i, a, c):
    x = i[0]
    if a.get("antialias", 0):
        raise c.unsupported("antialias=1")
    if _s(a.get("keep_aspect_ratio_policy", "stretch")) != "stretch":
        raise c.unsupported("keep_aspect_ratio_policy other than stretch")
    if c.op_type == "Upsample" or c.opset < 11:
        scales = a["scales"] if "scales" in a else i[1]
        scales, sizes, roi = np.asarray(scales, dtype=np.float64), None, None
        a = dict(a, coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if _s(a.get("mode", "nearest")) == "bilinear":
            a["mode"] = "linear"
    else:
        roi, scales, sizes = _opt(i, 1), _opt(i, 2), _opt(i, 3)
        scales = None if scales is None or scales.size == 0 else scales.astype(np.float64)
        sizes = None if sizes is None or sizes.size == 0 else _ints(sizes)
        roi = None if roi is None or roi.size == 0 else roi.astype(np.float64)
    axes = [_axis(ax, x.ndim) for ax in a["axes"]] if a.get("axes") else list(range(x.ndim))
    full_scales, full_sizes = [1.0] * x.ndim, list(x.shape)
    full_roi = [(0.0, 1.0)] * x.ndim
    for j, ax in enumerate(axes):
        if sizes is not None:
            full_sizes[ax] = sizes[j]
            full_scales[ax] = sizes[j] / x.shape[ax]
        elif scales is not None:
            full_scales[ax] = float(scales[j])
            full_sizes[ax] = int(math.floor(x.shape[ax] * float(scales[j])))
        if roi is not None:
            full_roi[ax] = (float(roi[j]), float(roi[len(axes) + j]))
    y = x
    ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
    for ax in range(x.ndim):
        if full_sizes[ax] == x.shape[ax] and full_scales[ax] == 1.0 and ctm != "tf_crop_and_resize":
            continue
        y = _resize_axis(y, ax, full_sizes[ax], full_scales[ax], a, full_roi[ax])
    return np.asarray(y).astype(x.dtype)


# -------------------------------------------------------------------------- quantization

_QRANGES = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
            np.dtype(np.uint16): (0, 65535), np.dtype(np.int16): (-32768, 32767),
            np.dtype(np.int32): (-2**31, 2**31 - 1)}


def _qparam_shape(x: np.ndarray, p: np.ndarray, a: dict) -> np.ndarray:
    """Broadcast a scale / zero point against ``x``: scalar, per-axis (1-D) or blocked."""
    if p.ndim == 0 or p.size == 1 and p.ndim <= 1 and x.ndim != 1:
        return p.reshape(()) if p.ndim <= 1 else p
    axis = _axis(a.get("axis", 1), x.ndim)
    if p.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = p.size
        return p.reshape(shape)
    block = a.get("block_size", 0)
    if not block:
        raise ValueError(f"scale of shape {p.shape} needs block_size")
    return np.repeat(p, block, axis=axis)[tuple(slice(0, n) for n in x.shape)]


@_op("QuantizeLinear")
def _quantize(i, a, c):
    x, scale, zp = i[0], i[1], _opt(i, 2)
    if a.get("output_dtype", 0):
        if int(a["output_dtype"]) not in ONNX_DTYPES:
            raise c.unsupported(f"output_dtype {a['output_dtype']}")
        dtype = ONNX_DTYPES[int(a["output_dtype"])]
    else:
        dtype = zp.dtype if zp is not None else np.dtype(np.uint8)
    if dtype not in _QRANGES:
        raise c.unsupported(f"quantized dtype {dtype}")
    s = _qparam_shape(x, scale, a)
    q = np.rint(x.astype(np.float32) / s.astype(np.float32))
    if zp is not None:
        q = q + _qparam_shape(x, zp, a).astype(np.float64)
    lo, hi = _QRANGES[dtype]
    return np.clip(q, lo, hi).astype(dtype)


@_op("DequantizeLinear")
def _dequantize(i, a, c):
    x, scale, zp = i[0], i[1], _opt(i, 2)
    if x.dtype not in _QRANGES:
        raise c.unsupported(f"quantized dtype {x.dtype}")
    s = _qparam_shape(x, scale, a)
    v = x.astype(np.int64)
    if zp is not None:
        v = v - _qparam_shape(x, zp, a).astype(np.int64)
    return (v.astype(np.float32) * s.astype(np.float32)).astype(scale.dtype)


@_op("DynamicQuantizeLinear")
def _dynamic_quantize(i, a, c):
    """uint8, the range widened to hold 0: scale (max - min) / 255, zero point and codes
    rounded half to even (the ONNX definition; onnxruntime's quantize_dynamic writes it); an
    all-zero input gets scale 1, as onnxruntime gives it."""
    x = i[0].astype(np.float32)
    lo = np.float32(min(0.0, float(x.min()) if x.size else 0.0))
    hi = np.float32(max(0.0, float(x.max()) if x.size else 0.0))
    scale = np.float32((hi - lo) / np.float32(255.0)) if hi > lo else np.float32(1.0)
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.rint(x / scale) + zp
    y = np.clip(q, 0, 255).astype(np.uint8)
    return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)


SUPPORTED_OPS: frozenset[str] = frozenset(_OPS)
