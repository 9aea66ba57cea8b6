"""Comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual) and boolean logic (Not, And,
Or, Xor). Bool tensors are stored as bytes 0/1 (any non-zero byte reads as true); float comparisons
are ordered (NaN compares false)."""

from __future__ import annotations

import onnx
from mlir import ir
from mlir.dialects import arith

from .. import builders as b
from .. import scalars as sc
from ..importer import Importer, handler

_COMPARE = {"Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge"}
_LOGIC = {"And": arith.andi, "Or": arith.ori, "Xor": arith.xori}


@handler(*_COMPARE, any_dtype=True)
def compare(imp: Importer, node: onnx.NodeProto) -> list:
    x, y = imp.value(node.input[0]), imp.value(node.input[1])
    kind, unsigned = _COMPARE[node.op_type], imp.unsigned(node.input[0])
    return [b.elementwise([x, y], lambda u, v: sc.as_bool(sc.compare(kind, u, v, unsigned)),
                          out_elem=ir.IntegerType.get_signless(8))]


@handler(*_LOGIC, any_dtype=True)
def logic(imp: Importer, node: onnx.NodeProto) -> list:
    fn = _LOGIC[node.op_type]
    return [b.elementwise([imp.value(node.input[0]), imp.value(node.input[1])],
                          lambda u, v: sc.as_bool(fn(sc.truth(u), sc.truth(v))))]


@handler("Not", any_dtype=True)
def not_(imp: Importer, node: onnx.NodeProto) -> list:
    return [b.elementwise([imp.value(node.input[0])],
                          lambda u: sc.as_bool(arith.xori(sc.truth(u), b.scalar(1, b.i1()))))]


@handler("IsNaN", "IsInf", any_dtype=True)
def is_special(imp: Importer, node: onnx.NodeProto) -> list:
    """IsNaN: x != x (unordered); IsInf: |x| == inf, restricted by detect_negative/detect_positive."""
    x = imp.value(node.input[0])
    if not b.is_float(b.elem_of(x)):
        raise imp.error(f"{node.op_type} of element type {b.elem_of(x)} is not supported (floats only)")
    attrs = imp.attrs(node)

    def body(v):
        if node.op_type == "IsNaN":
            return sc.as_bool(arith.cmpf(arith.CmpFPredicate.UNO, v, v))
        inf = sc.const_like(v, float("inf"))
        hits = []
        if attrs.get("detect_positive", 1):
            hits.append(arith.cmpf(arith.CmpFPredicate.OEQ, v, inf))
        if attrs.get("detect_negative", 1):
            hits.append(arith.cmpf(arith.CmpFPredicate.OEQ, v, arith.negf(inf)))
        flag = hits[0] if hits else b.scalar(0, b.i1())
        for other in hits[1:]:
            flag = arith.ori(flag, other)
        return sc.as_bool(flag)

    return [b.elementwise([x], body, out_elem=ir.IntegerType.get_signless(8))]
