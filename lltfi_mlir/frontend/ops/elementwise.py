"""Element-wise ONNX operators with numpy broadcasting, built as one linalg.generic each."""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, math

from .. import builders as b
from .. import scalars as sc
from ..importer import ELEMENT_TYPES, UNSIGNED_TYPES, Importer, handler

_BINARY = {
    "Add": lambda x, y, _: sc.add(x, y),
    "Sub": lambda x, y, _: sc.sub(x, y),
    "Mul": lambda x, y, _: sc.mul(x, y),
    "Div": sc.div,
    "Pow": lambda x, y, _: math.powf(x, y),
}


@handler(*_BINARY, any_dtype=True)
def binary(imp: Importer, node: onnx.NodeProto) -> list:
    fn = _BINARY[node.op_type]
    a = imp.value(node.input[0])
    unsigned = imp.unsigned(node.input[0])
    if node.op_type == "Pow" and not b.is_float(b.elem_of(a)):
        return [_integer_pow(imp, node, a)]
    exponent = imp.const(node.input[1]) if node.op_type == "Pow" else None
    if exponent is not None and exponent.dtype.kind in "iu":
        # Pow's exponent may be an integer tensor (T1 != T); a constant one is exact in float32
        # for the magnitudes that occur (x**2, x**3) and gives the same powf result.
        c = imp.pool.constant(exponent.astype(np.float32), node.input[1])
    else:
        c = imp.value(node.input[1])
    if node.op_type == "Pow" and b.elem_of(c) != b.elem_of(a):  # run-time exponent of another type
        base, unsigned_exponent = b.elem_of(a), imp.unsigned(node.input[1])
        c = b.elementwise([c], lambda e: sc.convert(e, base, unsigned_exponent), out_elem=base)
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
    return [b.elementwise([a, c], lambda x, y: fn(x, y, unsigned))]


def _integer_pow(imp: Importer, node: onnx.NodeProto, base_tensor):
    """Integer base: a float exponent goes through float64 pow and truncates back (numpy's
    power(...).astype); an integer exponent by binary exponentiation over its bits, wrapping as
    the integer type does."""
    e_tensor = imp.value(node.input[1])
    elem = b.elem_of(base_tensor)
    unsigned = imp.unsigned(node.input[0])
    if b.is_float(b.elem_of(e_tensor)):
        f64 = ir.F64Type.get()

        def body(x, e):
            wide = math.powf(sc.convert(x, f64, unsigned), sc.convert(e, f64))
            return sc.convert(wide, elem, unsigned_target=unsigned)
    else:
        e_unsigned = imp.unsigned(node.input[1])

        def body(x, e):
            e = sc.convert(e, elem, e_unsigned)
            one = sc.const_like(x, 1)
            result, power = one, x
            for _ in range(sc.width(elem)):
                bit = sc.compare("ne", arith.andi(e, one), sc.const_like(x, 0))
                result = arith.select(bit, arith.muli(result, power), result)
                power = arith.muli(power, power)
                e = arith.shrui(e, one)
            return result

    return b.elementwise([base_tensor, e_tensor], body, out_elem=elem)


@handler("Sum", any_dtype=True)
def sum_(imp: Importer, node: onnx.NodeProto) -> list:
    values = [imp.value(n) for n in node.input]

    def body(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = sc.add(acc, x)
        return acc

    if len(values) == 1:
        return [b.elementwise(values, lambda x: x)]
    return [b.elementwise(values, body)]


def _unary(fn):
    def build(imp: Importer, node: onnx.NodeProto) -> list:
        x = imp.value(node.input[0])
        if not b.is_float(b.elem_of(x)):
            raise imp.error(f"{node.op_type} of element type {b.elem_of(x)} is not supported (floats only)")
        return [b.elementwise([x], lambda v: fn(v, imp.attrs(node)))]

    return build


def _relu(x, _):
    return arith.maximumf(x, sc.const_like(x, 0.0))


def _leaky_relu(x, attrs):
    alpha = sc.const_like(x, attrs.get("alpha", 0.01))
    negative = arith.cmpf(arith.CmpFPredicate.OLT, x, sc.const_like(x, 0.0))
    return arith.select(negative, arith.mulf(x, alpha), x)


def _elu(x, attrs):
    alpha = sc.const_like(x, attrs.get("alpha", 1.0))
    negative = arith.cmpf(arith.CmpFPredicate.OLT, x, sc.const_like(x, 0.0))
    return arith.select(negative, arith.mulf(alpha, arith.subf(math.exp(x), sc.const_like(x, 1.0))), x)


def _sigmoid(x, _):
    one = sc.const_like(x, 1.0)
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
    handler(_op, any_dtype=True)(_unary(_fn))


@handler("Identity", "Dropout", any_dtype=True)
def identity(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    if node.op_type == "Dropout":
        if len(node.input) > 2 and node.input[2]:
            training = imp.const(node.input[2])
            if training is None or bool(np.asarray(training)):
                raise imp.error("Dropout in training mode is not supported (inference only)")
        if len(node.output) > 1 and imp.is_used(node.output[1]):  # inference: every element kept
            return [x, b.fill(b.shape_of(x), 1, imp.element(imp.dtype(node.output[1])))]
    return [x]


@handler("Cast", "CastLike", any_dtype=True)
def cast(imp: Importer, node: onnx.NodeProto) -> list:
    """Between float32/float16/float64, the signed and unsigned integers and bool (ONNX Cast rules:
    float -> int truncates toward zero, anything -> bool is != 0). Out-of-range float -> int
    conversions are undefined in ONNX and here."""
    if node.op_type == "CastLike":
        to = imp.dtype(node.input[1])
    else:
        to = imp.attrs(node).get("to")
    source = imp.dtype(node.input[0])
    for kind in (source, to):
        if kind not in ELEMENT_TYPES:
            names = [onnx.TensorProto.DataType.Name(t) for t in (source, to)]
            raise imp.error(f"Cast from {names[0]} to {names[1]}: element type "
                            f"{onnx.TensorProto.DataType.Name(kind)} is not supported")
    x = imp.value(node.input[0])
    elem = imp.element(to)
    bool_source, bool_target = source == onnx.TensorProto.BOOL, to == onnx.TensorProto.BOOL
    if source == to or (b.elem_of(x) == elem and not bool_target and not bool_source):
        return [b.elementwise([x], lambda v: v)]
    return [b.elementwise([x], lambda v: sc.convert(v, elem, source in UNSIGNED_TYPES or bool_source,
                                                    to in UNSIGNED_TYPES, bool_target), out_elem=elem)]


@handler("Clip", any_dtype=True)
def clip(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    unsigned = imp.unsigned(node.input[0])
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
                scalar = np.asarray(value).reshape(())
                bounds.append(float(scalar) if scalar.dtype.kind == "f" else str(int(scalar)))
            else:
                operands.append(imp.value(name))
                bounds.append(len(operands) - 1)

    def body(*xs):
        y = xs[0]
        for bound, op in zip(bounds, (sc.maximum, sc.minimum)):
            if isinstance(bound, (float, str)):  # (str: an exact integer bound)
                y = op(y, sc.const_like(y, int(bound) if isinstance(bound, str) else bound), unsigned)
            elif isinstance(bound, int):
                y = op(y, xs[bound], unsigned)
        return y

    return [b.elementwise(operands, body, b.shape_of(x))]


@handler("Min", "Max", any_dtype=True)
def min_max(imp: Importer, node: onnx.NodeProto) -> list:
    """Variadic with broadcasting; NaN propagates (IEEE minimum/maximum), as in onnxruntime."""
    combine = sc.minimum if node.op_type == "Min" else sc.maximum
    values = [imp.value(n) for n in node.input if n]
    unsigned = imp.unsigned(node.input[0])

    def body(*xs):
        acc = xs[0]
        for x in xs[1:]:
            acc = combine(acc, x, unsigned)
        return acc

    return [b.elementwise(values, body)]
