"""Element-wise ONNX operators with numpy broadcasting, built as one linalg.generic each."""

from __future__ import annotations

import numpy as np
import onnx
from mlir.dialects import arith, math

from .. import builders as b
from ..importer import Importer, handler

_BINARY = {
    "Add": arith.addf,
    "Sub": arith.subf,
    "Mul": arith.mulf,
    "Div": arith.divf,
    "Pow": math.powf,
}


@handler(*_BINARY)
def binary(imp: Importer, node: onnx.NodeProto) -> list:
    fn = _BINARY[node.op_type]
    a = imp.value(node.input[0])
    exponent = imp.const(node.input[1]) if node.op_type == "Pow" else None
    if exponent is not None and exponent.dtype.kind in "iu":
        # Pow's exponent may be an integer tensor (T1 != T); a constant one is exact in float32
        # for the magnitudes that occur (x**2, x**3) and gives the same powf result.
        c = imp.pool.constant(exponent.astype(np.float32), node.input[1])
    else:
        c = imp.value(node.input[1])
    attrs = imp.attrs(node)
    if imp.opset < 7 and attrs.get("broadcast", 0):
        # Legacy (opset < 7) broadcasting: B's shape matches a contiguous run of A's dims starting
        # at `axis` (default: the trailing dims); pad B with trailing 1s to numpy form.
        a_rank, c_shape = len(b.shape_of(a)), b.shape_of(c)
        axis = int(attrs.get("axis", a_rank - len(c_shape)))
        axis = axis + a_rank if axis < 0 else axis
        trailing = a_rank - axis - len(c_shape)
        if trailing < 0:
            raise imp.error(f"legacy broadcast of shape {c_shape} at axis {axis} exceeds rank {a_rank}")
        c = b.reshape(c, c_shape + (1,) * trailing)
    return [b.elementwise([a, c], lambda x, y: fn(x, y))]


@handler("Sum")
def sum_(imp: Importer, node: onnx.NodeProto) -> list:
    values = [imp.value(n) for n in node.input]

    def body(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = arith.addf(acc, x)
        return acc

    if len(values) == 1:
        return [b.elementwise(values, lambda x: x)]
    return [b.elementwise(values, body)]


def _unary(fn):
    def build(imp: Importer, node: onnx.NodeProto) -> list:
        return [b.elementwise([imp.value(node.input[0])], lambda x: fn(x, imp.attrs(node)))]

    return build


def _relu(x, _):
    return arith.maximumf(x, b.scalar(0.0))


def _leaky_relu(x, attrs):
    alpha = b.scalar(attrs.get("alpha", 0.01))
    negative = arith.cmpf(arith.CmpFPredicate.OLT, x, b.scalar(0.0))
    return arith.select(negative, arith.mulf(x, alpha), x)


def _elu(x, attrs):
    alpha = b.scalar(attrs.get("alpha", 1.0))
    negative = arith.cmpf(arith.CmpFPredicate.OLT, x, b.scalar(0.0))
    return arith.select(negative, arith.mulf(alpha, arith.subf(math.exp(x), b.scalar(1.0))), x)


def _sigmoid(x, _):
    one = b.scalar(1.0)
    return arith.divf(one, arith.addf(one, math.exp(arith.negf(x))))


_UNARY = {
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Sigmoid": _sigmoid,
    "Tanh": lambda x, _: math.tanh(x),
    "Atan": lambda x, _: math.atan(x),
    "Sqrt": lambda x, _: math.sqrt(x),
    "Exp": lambda x, _: math.exp(x),
}
for _op, _fn in _UNARY.items():
    handler(_op)(_unary(_fn))


@handler("Identity", "Dropout")
def identity(imp: Importer, node: onnx.NodeProto) -> list:
    if node.op_type == "Dropout":
        if len(node.output) > 1 and imp.is_used(node.output[1]):
            raise imp.error("the mask output of Dropout is not supported (inference only)")
        if len(node.input) > 2 and node.input[2]:
            training = imp.const(node.input[2])
            if training is None or bool(np.asarray(training)):
                raise imp.error("Dropout in training mode is not supported (inference only)")
    return [imp.value(node.input[0])]


@handler("Cast")
def cast(imp: Importer, node: onnx.NodeProto) -> list:
    # Casts of constants were folded by the loader; what remains must already be float32.
    to = imp.attrs(node).get("to")
    source = imp.loaded.dtypes.get(node.input[0], onnx.TensorProto.FLOAT)
    if to != onnx.TensorProto.FLOAT or source != onnx.TensorProto.FLOAT:
        names = [onnx.TensorProto.DataType.Name(t) for t in (source, to)]
        raise imp.error(f"Cast from {names[0]} to {names[1]} computed at run time is not supported "
                        "(only float32 computations)")
    return [imp.value(node.input[0])]


@handler("Clip")
def clip(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    operands = [x]
    bounds: list[float | int | None] = []  # a float constant, an operand index, or no bound
    if imp.opset < 11:
        attrs = imp.attrs(node)
        bounds = [attrs.get("min"), attrs.get("max")]
    else:
        for index in (1, 2):
            name = node.input[index] if len(node.input) > index else ""
            value = imp.const(name)
            if not name:
                bounds.append(None)
            elif value is not None:
                if value.size != 1:
                    raise imp.error("Clip bounds must be scalars")
                bounds.append(float(np.asarray(value).reshape(())))
            else:
                operands.append(imp.value(name))
                bounds.append(len(operands) - 1)

    def body(*xs):
        y = xs[0]
        for bound, op in zip(bounds, (arith.maximumf, arith.minimumf)):
            if isinstance(bound, float):
                y = op(y, b.scalar(bound))
            elif isinstance(bound, int):
                y = op(y, xs[bound])
        return y

    return [b.elementwise(operands, body, b.shape_of(x))]


@handler("Min", "Max")
def min_max(imp: Importer, node: onnx.NodeProto) -> list:
    """Variadic with broadcasting; NaN propagates (IEEE minimum/maximum), as in onnxruntime."""
    combine = arith.minimumf if node.op_type == "Min" else arith.maximumf
    values = [imp.value(n) for n in node.input if n]

    def body(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = combine(acc, x)
        return acc

    return [b.elementwise(values, body)]
