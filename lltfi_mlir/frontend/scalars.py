"""Scalar arithmetic that picks the arith op for an element type: float, signed or unsigned integer.

MLIR integers are signless, so the signedness of an ONNX type (uint8 vs int8) is passed along by the
handler; bool is i1 (unsigned, 0 or 1). Float ops carry no fast-math flags: the optimized and the
reference builds stay bit-identical.
"""

from __future__ import annotations

from mlir import ir
from mlir.dialects import arith

from . import builders as b


def is_float(value: ir.Value) -> bool:
    return b.is_float(value.type)


def width(elem: ir.Type) -> int:
    if isinstance(elem, (ir.F16Type, ir.BF16Type)):
        return 16
    if isinstance(elem, ir.F32Type):
        return 32
    if isinstance(elem, ir.F64Type):
        return 64
    return ir.IntegerType(elem).width


def const_like(value: ir.Value, number: float) -> ir.Value:
    """A scalar constant of `value`'s type."""
    return b.scalar(number, value.type)


def add(x: ir.Value, y: ir.Value) -> ir.Value:
    return arith.addf(x, y) if is_float(x) else arith.addi(x, y)


def sub(x: ir.Value, y: ir.Value) -> ir.Value:
    return arith.subf(x, y) if is_float(x) else arith.subi(x, y)


def mul(x: ir.Value, y: ir.Value) -> ir.Value:
    return arith.mulf(x, y) if is_float(x) else arith.muli(x, y)


def div(x: ir.Value, y: ir.Value, unsigned: bool = False) -> ir.Value:
    """Integer division truncates toward zero (ONNX Div, as C)."""
    if is_float(x):
        return arith.divf(x, y)
    return arith.divui(x, y) if unsigned else arith.divsi(x, y)


def minimum(x: ir.Value, y: ir.Value, unsigned: bool = False) -> ir.Value:
    if is_float(x):
        return arith.minimumf(x, y)
    return arith.minui(x, y) if unsigned else arith.minsi(x, y)


def maximum(x: ir.Value, y: ir.Value, unsigned: bool = False) -> ir.Value:
    if is_float(x):
        return arith.maximumf(x, y)
    return arith.maxui(x, y) if unsigned else arith.maxsi(x, y)


def neg(x: ir.Value) -> ir.Value:
    return arith.negf(x) if is_float(x) else arith.subi(const_like(x, 0), x)


_FLOAT_CMP = {"eq": "OEQ", "ne": "UNE", "lt": "OLT", "le": "OLE", "gt": "OGT", "ge": "OGE"}
_INT_CMP = {"eq": "eq", "ne": "ne", "lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge"}


def compare(kind: str, x: ir.Value, y: ir.Value, unsigned: bool = False) -> ir.Value:
    """`kind` in eq/ne/lt/le/gt/ge; ordered float comparisons (NaN compares false, except ne)."""
    if is_float(x):
        return arith.cmpf(getattr(arith.CmpFPredicate, _FLOAT_CMP[kind]), x, y)
    pred = _INT_CMP[kind]
    if unsigned or width(x.type) == 1:
        pred = pred.replace("s", "u", 1) if pred.startswith("s") else pred
    return arith.cmpi(getattr(arith.CmpIPredicate, pred), x, y)


def truth(x: ir.Value) -> ir.Value:
    """A stored bool (i8 holding 0 or 1; any non-zero byte counts as true) -> i1."""
    return x if width(x.type) == 1 else compare("ne", x, const_like(x, 0))


def as_bool(flag: ir.Value) -> ir.Value:
    """i1 -> the stored bool form (i8 0/1)."""
    return arith.extui(ir.IntegerType.get_signless(8), flag)


def convert(x: ir.Value, to: ir.Type, unsigned_source: bool = False, unsigned_target: bool = False,
            bool_target: bool = False) -> ir.Value:
    """ONNX Cast semantics for one scalar: bool targets test != 0, bool sources are 0/1, integers
    extend by the source's signedness and truncate, float -> int rounds toward zero."""
    src = x.type
    if bool_target:
        return as_bool(compare("ne", x, const_like(x, 0)))
    if src == to:
        return x
    src_float, dst_float = b.is_float(src), b.is_float(to)
    if src_float and dst_float:
        return arith.extf(to, x) if width(to) > width(src) else arith.truncf(to, x)
    if src_float:
        return arith.fptoui(to, x) if unsigned_target else arith.fptosi(to, x)
    unsigned_source = unsigned_source or width(src) == 1
    if dst_float:
        return arith.uitofp(to, x) if unsigned_source else arith.sitofp(to, x)
    if width(to) > width(src):
        return arith.extui(to, x) if unsigned_source else arith.extsi(to, x)
    if width(to) < width(src):
        return arith.trunci(to, x)
    return x
