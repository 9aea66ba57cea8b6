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
