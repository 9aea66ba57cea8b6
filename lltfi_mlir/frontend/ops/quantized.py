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
