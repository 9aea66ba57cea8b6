"""Quantized operators: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul and QLinearConv.

Scales and zero points broadcast per tensor or per axis. Quantization follows onnx.reference:
`saturate(round_half_even(x / scale) + zero_point)`; dequantization `(x - zero_point) * scale` in
float32. The integer operators multiply-accumulate in int32 (`acc + (a - a_zp) * (b - b_zp)`, in index
order, as linalg.generic ops under the node's location), so their multiplies are integer fault sites
(the `int` group); QLinearMatMul and QLinearConv then requantize the int32 accumulators with
`round(acc * (a_scale * b_scale / y_scale)) + y_zp` (the scale ratio in float32).
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, math

from .. import builders as b
from .. import scalars as sc
from ..importer import Importer, handler
from .conv import grouped_operands, reference_conv

_T = onnx.TensorProto
# Saturation range of each quantized element type.
_RANGES = {_T.UINT8: (0, 255), _T.INT8: (-128, 127), _T.UINT16: (0, 65535), _T.INT16: (-32768, 32767)}


def _input(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


def _per_axis(imp: Importer, name: str, rank: int, axis: int, elem: ir.Type | None = None) -> ir.Value:
    """A scale or zero point shaped to broadcast against a rank-`rank` tensor: scalar or 1-D along axis."""
    value = imp.const(name)
    if value is not None:
        array = np.asarray(value)
        if elem is not None and b.is_float(elem):
            array = array.astype(np.float32)
        if array.ndim == 1 and array.size > 1:
            array = array.reshape([-1 if i == axis else 1 for i in range(rank)])
        elif array.ndim == 1 or array.ndim == 0:
            array = array.reshape([1] * rank) if rank else array.reshape(())
        return imp.pool.constant(array, name)
    v = imp.value(name)
    shape = b.shape_of(v)
    if len(shape) == 1 and shape[0] > 1:
        return b.reshape(v, [shape[0] if i == axis else 1 for i in range(rank)])
    return b.reshape(v, [1] * rank)


def _axis(imp: Importer, node: onnx.NodeProto, rank: int) -> int:
    if imp.attrs(node).get("block_size", 0):
        raise imp.error(f"{node.op_type} with block_size (blocked quantization) is not supported")
    axis = int(imp.attrs(node).get("axis", 1))
    return axis % rank if rank else 0


def _quantize_scalar(v: ir.Value, s: ir.Value, zp: ir.Value | None, target: ir.Type, low: int, high: int,
                     unsigned: bool, zp_unsigned: bool) -> ir.Value:
    """saturate(round_half_even(v / s) + zp) as the target integer type, computed in float32."""
    q = math.roundeven(arith.divf(v, s))
    if zp is not None:
        q = arith.addf(q, sc.convert(zp, b.f32(), unsigned_source=zp_unsigned))
    q = arith.minimumf(arith.maximumf(q, b.scalar(float(low))), b.scalar(float(high)))
    return sc.convert(q, target, unsigned_target=unsigned)


@handler("QuantizeLinear", any_dtype=True)
def quantize_linear(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    if b.elem_of(x) != b.f32():
        raise imp.error("QuantizeLinear of a non-float32 input is not supported")
    rank = len(b.shape_of(x))
    axis = _axis(imp, node, rank)
    zp_name = _input(node, 2)
    out_type = imp.dtype(node.output[0]) if node.output[0] in imp.loaded.dtypes else (
        imp.dtype(zp_name) if zp_name else _T.UINT8)
    if out_type not in _RANGES:
        kind = _T.DataType.Name(out_type)
        raise imp.error(f"QuantizeLinear to element type {kind} is not supported (int8/uint8/int16/uint16)")
    low, high = _RANGES[out_type]
    unsigned = out_type in (_T.UINT8, _T.UINT16)
    target = imp.element(out_type)
    scale = _per_axis(imp, node.input[1], rank, axis, b.f32())
    operands = [x, scale] + ([_per_axis(imp, zp_name, rank, axis)] if zp_name else [])
    zp_unsigned = bool(zp_name) and imp.unsigned(zp_name)

    def body(v, s, *zp):
        return _quantize_scalar(v, s, zp[0] if zp else None, target, low, high, unsigned, zp_unsigned)

    return [b.elementwise(operands, body, b.shape_of(x), target)]


@handler("DequantizeLinear", any_dtype=True)
def dequantize_linear(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    if b.is_float(b.elem_of(x)):
        raise imp.error("DequantizeLinear of float8 or other float inputs is not supported")
    rank = len(b.shape_of(x))
    axis = _axis(imp, node, rank)
    x_unsigned = imp.unsigned(node.input[0])
    scale = _per_axis(imp, node.input[1], rank, axis, b.f32())
    if b.elem_of(scale) != b.f32():
        raise imp.error("DequantizeLinear with a non-float32 scale is not supported")
    zp_name = _input(node, 2)
    operands = [x, scale] + ([_per_axis(imp, zp_name, rank, axis)] if zp_name else [])
    zp_unsigned = bool(zp_name) and imp.unsigned(zp_name)

    def body(v, s, *zp):
        f = sc.convert(v, b.f32(), unsigned_source=x_unsigned)
        if zp:
            f = arith.subf(f, sc.convert(zp[0], b.f32(), unsigned_source=zp_unsigned))
        return arith.mulf(f, s)

    return [b.elementwise(operands, body, b.shape_of(x), b.f32())]


def _widened(imp: Importer, name: str, zp_name: str, axis_map=None) -> ir.Value:
    """An integer tensor as int32 minus its zero point (scalar, or 1-D along `axis_map`'s axis)."""
    x = imp.value(name)
    shape = b.shape_of(x)
    rank = len(shape)
    unsigned = imp.unsigned(name)
    i32 = ir.IntegerType.get_signless(32)
    if not zp_name:
        return b.elementwise([x], lambda v: sc.convert(v, i32, unsigned_source=unsigned), shape, i32)
    zp = _per_axis(imp, zp_name, rank, axis_map if axis_map is not None else 0)
    zp_unsigned = imp.unsigned(zp_name)
    return b.elementwise([x, zp], lambda v, z: arith.subi(sc.convert(v, i32, unsigned_source=unsigned),
                                                          sc.convert(z, i32, unsigned_source=zp_unsigned)),
                         shape, i32)


def _int_matmul(a: ir.Value, w: ir.Value, out_shape: tuple[int, ...]) -> ir.Value:
    """numpy matmul of int32 tensors (rank >= 2, broadcast batch dims): `acc + a * b` over K, from 0."""
    a_shape, w_shape = b.shape_of(a), b.shape_of(w)
    rank = len(out_shape)
    num = rank + 1
    d = b.dims(num)
    batch = out_shape[:-2]

    def operand_map(shape):
        lead = shape[:-2]
        offset = len(batch) - len(lead)
        exprs = [b.const_expr(0) if n == 1 and batch[offset + i] != 1 else d[offset + i] for i, n in enumerate(lead)]
        return exprs

    a_map = b.affine_map(num, operand_map(a_shape) + [d[rank - 2], d[rank]])
    w_map = b.affine_map(num, operand_map(w_shape) + [d[rank], d[rank - 1]])
    i32 = ir.IntegerType.get_signless(32)
    return b.generic([a, w], [a_map, w_map], b.fill(out_shape, 0, i32), b.affine_map(num, d[:rank]),
                     [b.PARALLEL] * rank + [b.REDUCTION], lambda x, y, acc: arith.addi(acc, arith.muli(x, y)))


def _requantize(imp: Importer, acc: ir.Value, ratio: ir.Value, zp_name: str, out_type: int, zp_axis: int) -> ir.Value:
    """saturate(round_half_even(acc * ratio + zp)) as onnx.reference computes it (int32 * float32 scale
    ratio in float64)."""
    low, high = _RANGES[out_type]
    unsigned = out_type in (_T.UINT8, _T.UINT16)
    target = imp.element(out_type)
    shape = b.shape_of(acc)
    f64 = ir.F64Type.get()
    operands = [acc, ratio] + ([_per_axis(imp, zp_name, len(shape), zp_axis)] if zp_name else [])
    zp_unsigned = bool(zp_name) and imp.unsigned(zp_name)

    def body(v, r, *zp):
        q = arith.mulf(sc.convert(v, f64), arith.extf(f64, r))
        if zp:
            q = arith.addf(q, sc.convert(zp[0], f64, unsigned_source=zp_unsigned))
        q = math.roundeven(q)
        q = arith.minimumf(arith.maximumf(q, b.scalar(float(low), f64)), b.scalar(float(high), f64))
        return sc.convert(q, target, unsigned_target=unsigned)

    return b.elementwise(operands, body, shape, target)


def _scale_ratio(imp: Importer, names: list[str], rank: int, axis: int) -> ir.Value:
    """x_scale * w_scale / y_scale in float32 (w_scale may be per output channel along `axis`)."""
    x_s, w_s, y_s = (_per_axis(imp, n, rank, axis, b.f32()) for n in names)
    return b.elementwise([x_s, w_s, y_s], lambda x, w, y: arith.divf(arith.mulf(x, w), y))


def _matmul_shape(imp: Importer, node: onnx.NodeProto, a: int, w: int) -> tuple[int, ...]:
    shape = tuple(imp.shape(node.output[0]))
    if len(imp.shape(node.input[a])) < 2 or len(imp.shape(node.input[w])) < 2:
        raise imp.error(f"{node.op_type} with 1-D operands is not supported")
    return shape


@handler("MatMulInteger", any_dtype=True)
def matmul_integer(imp: Importer, node: onnx.NodeProto) -> list:
    out_shape = _matmul_shape(imp, node, 0, 1)
    a_rank, w_rank = len(imp.shape(node.input[0])), len(imp.shape(node.input[1]))
    a = _widened(imp, node.input[0], _input(node, 2), a_rank - 2)  # per-row zero points: along M
    w = _widened(imp, node.input[1], _input(node, 3), w_rank - 1)  # per-column: along N
    return [_int_matmul(a, w, out_shape)]


@handler("QLinearMatMul", any_dtype=True)
def qlinear_matmul(imp: Importer, node: onnx.NodeProto) -> list:
    out_shape = _matmul_shape(imp, node, 0, 3)
    a_rank, w_rank = len(imp.shape(node.input[0])), len(imp.shape(node.input[3]))
    a = _widened(imp, node.input[0], node.input[2], a_rank - 2)
    w = _widened(imp, node.input[3], node.input[5], w_rank - 1)
    acc = _int_matmul(a, w, out_shape)
    rank = len(out_shape)
    ratio = _scale_ratio(imp, [node.input[1], node.input[4], node.input[6]], rank, rank - 1)
    return [_requantize(imp, acc, ratio, node.input[7], imp.dtype(node.output[0]), rank - 1)]


def _int_conv(imp: Importer, node: onnx.NodeProto, x: ir.Value, w: ir.Value) -> ir.Value:
    """Conv over zero-point-corrected int32 tensors (zero padding), `acc + x * w` per output element."""
    g = grouped_operands(imp, node, x, w, 0)
    out_shape = tuple(imp.shape(node.output[0]))
    acc_shape = (out_shape[0], g.group, g.mg) + out_shape[2:]
    init = b.fill(acc_shape, 0, ir.IntegerType.get_signless(32))
    y = reference_conv(g, init, lambda xv, wv, acc: arith.addi(acc, arith.muli(xv, wv)))
    return b.reshape(y, out_shape)


@handler("ConvInteger", any_dtype=True)
def conv_integer(imp: Importer, node: onnx.NodeProto) -> list:
    x = _widened(imp, node.input[0], _input(node, 2))
    w = _widened(imp, node.input[1], _input(node, 3), 0)  # per output channel
    return [_int_conv(imp, node, x, w)]


@handler("QLinearConv", any_dtype=True)
def qlinear_conv(imp: Importer, node: onnx.NodeProto) -> list:
    x = _widened(imp, node.input[0], node.input[2])
    w = _widened(imp, node.input[3], node.input[5], 0)
    acc = _int_conv(imp, node, x, w)
    rank = len(b.shape_of(acc))
    if len(node.input) > 8 and node.input[8]:  # int32 bias, added to the accumulators
        bias = imp.value(node.input[8])
        bias = b.reshape(bias, [b.shape_of(bias)[0] if i == 1 else 1 for i in range(rank)])
        acc = b.elementwise([acc, bias], lambda v, t: arith.addi(v, t))
    ratio = _scale_ratio(imp, [node.input[1], node.input[4], node.input[6]], rank, 1)
    return [_requantize(imp, acc, ratio, node.input[7], imp.dtype(node.output[0]), 1)]


@handler("DynamicQuantizeLinear")
def dynamic_quantize_linear(imp: Importer, node: onnx.NodeProto) -> list:
    """uint8 quantization with a scale and zero point computed from the data (the ONNX definition):
    scale = (max(0, max x) - min(0, min x)) / 255, zero point = saturate(round(-min / scale))."""
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    d = b.dims(rank)

    def extreme(init, combine):
        return b.generic([x], [b.affine_map(rank, d)], b.fill((), init), b.affine_map(rank, []),
                         [b.REDUCTION] * rank, lambda v, acc: combine(acc, v))

    high = b.elementwise([extreme(float("-inf"), arith.maximumf)], lambda v: arith.maximumf(b.scalar(0.0), v))
    low = b.elementwise([extreme(float("inf"), arith.minimumf)], lambda v: arith.minimumf(b.scalar(0.0), v))

    def scale_of(hi, lo):
        same = arith.cmpf(arith.CmpFPredicate.OEQ, hi, lo)
        return arith.divf(arith.select(same, b.scalar(1.0), arith.subf(hi, lo)), b.scalar(255.0))

    scale = b.elementwise([high, low], scale_of)
    u8 = ir.IntegerType.get_signless(8)

    def zero_point(lo, s):
        z = math.roundeven(arith.subf(b.scalar(0.0), arith.divf(lo, s)))
        z = arith.minimumf(arith.maximumf(z, b.scalar(0.0)), b.scalar(255.0))
        return sc.convert(z, u8, unsigned_target=True)

    zp = b.elementwise([low, scale], zero_point, (), u8)
    y = b.elementwise([x, scale, zp], lambda v, s, z: _quantize_scalar(v, s, z, u8, 0, 255, True, True), shape, u8)
    return [y, scale, zp]
