"""Element-wise math: Neg, Abs, Reciprocal, Floor, Ceil, Round, Erf, Gelu, Softplus, Mish,
HardSigmoid, HardSwish, Sign, Mod.

Erf is `math.erf`, lowered to libm's erff/erf by convert-math-to-libm, as onnxruntime uses. The
soft activations use the overflow-free form max(x, 0) + log1p(exp(-|x|)) of softplus.
"""

from __future__ import annotations

import onnx
from mlir.dialects import arith, math

from .. import builders as b
from .. import scalars as sc
from ..importer import Importer, handler


def _float_only(imp: Importer, node: onnx.NodeProto, x) -> None:
    if not b.is_float(b.elem_of(x)):
        raise imp.error(f"{node.op_type} of element type {b.elem_of(x)} is not supported (floats only)")


def _softplus(x):
    zero = sc.const_like(x, 0.0)
    return arith.addf(arith.maximumf(x, zero), math.log1p(math.exp(arith.negf(math.absf(x)))))


def _hard_sigmoid(x, alpha: float, beta: float):
    y = arith.addf(arith.mulf(sc.const_like(x, alpha), x), sc.const_like(x, beta))
    return arith.maximumf(sc.const_like(x, 0.0), arith.minimumf(sc.const_like(x, 1.0), y))


def _gelu(x, attrs):
    approximate = attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    half, one = sc.const_like(x, 0.5), sc.const_like(x, 1.0)
    if approximate == "tanh":
        cube = arith.mulf(arith.mulf(x, x), x)
        inner = arith.addf(x, arith.mulf(sc.const_like(x, 0.044715), cube))
        t = math.tanh(arith.mulf(sc.const_like(x, (2.0 / 3.141592653589793) ** 0.5), inner))
    else:
        t = math.erf(arith.mulf(x, sc.const_like(x, 0.5 ** 0.5)))
    return arith.mulf(arith.mulf(half, x), arith.addf(one, t))


_FLOAT_UNARY = {
    "Reciprocal": lambda x, _: arith.divf(sc.const_like(x, 1.0), x),
    "Floor": lambda x, _: math.floor(x),
    "Ceil": lambda x, _: math.ceil(x),
    "Round": lambda x, _: math.roundeven(x),  # halves to even, as ONNX
    "Erf": lambda x, _: math.erf(x),
    "Gelu": _gelu,
    "Softplus": lambda x, _: _softplus(x),
    "Mish": lambda x, _: arith.mulf(x, math.tanh(_softplus(x))),
    "HardSigmoid": lambda x, a: _hard_sigmoid(x, a.get("alpha", 0.2), a.get("beta", 0.5)),
    "HardSwish": lambda x, _: arith.mulf(x, _hard_sigmoid(x, 1.0 / 6.0, 0.5)),
}


@handler(*_FLOAT_UNARY, any_dtype=True)
def float_unary(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    _float_only(imp, node, x)
    attrs = imp.attrs(node)
    return [b.elementwise([x], lambda v: _FLOAT_UNARY[node.op_type](v, attrs))]


@handler("Neg", "Abs", "Sign", any_dtype=True)
def signed_unary(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    unsigned = imp.unsigned(node.input[0])

    def body(v):
        if node.op_type == "Neg":
            return sc.neg(v)
        if node.op_type == "Abs":
            if sc.is_float(v):
                return math.absf(v)
            return v if unsigned else math.absi(v)
        zero, one = sc.const_like(v, 0), sc.const_like(v, 1)  # Sign
        positive = arith.select(sc.compare("gt", v, zero, unsigned), one, zero)
        negative = sc.compare("lt", v, zero, unsigned)
        result = arith.select(negative, sc.const_like(v, -1), positive)
        if sc.is_float(v):  # NaN stays NaN
            result = arith.select(sc.compare("ne", v, v), v, result)
        return result

    return [b.elementwise([x], body)]


@handler("Mod", any_dtype=True)
def mod(imp: Importer, node: onnx.NodeProto) -> list:
    """fmod=1: C fmod (sign of the dividend); fmod=0: the sign of the divisor (Python's %)."""
    x, y = imp.value(node.input[0]), imp.value(node.input[1])
    unsigned = imp.unsigned(node.input[0])
    fmod = int(imp.attrs(node).get("fmod", 0))

    def body(u, v):
        if unsigned and not sc.is_float(u):
            return arith.remui(u, v)
        r = arith.remf(u, v) if sc.is_float(u) else arith.remsi(u, v)
        if fmod:
            return r
        # fmod=0 (on floats from opset 28): the remainder takes the divisor's sign, as numpy's mod.
        zero = sc.const_like(u, 0)
        differ = arith.xori(sc.compare("lt", r, zero), sc.compare("lt", v, zero))
        fix = arith.andi(sc.compare("ne", r, zero), differ)
        return arith.select(fix, sc.add(r, v), r)

    return [b.elementwise([x, y], body)]
