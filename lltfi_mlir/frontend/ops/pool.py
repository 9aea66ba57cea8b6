"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool as windowed linalg.generic reductions.

The window extent is carried by an unused `tensor.empty` operand, as linalg's named pooling ops do.
AveragePool sums, then divides by a per-position count computed here with numpy, which covers
count_include_pad, ceil_mode and auto_pad with one rule.
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, memref, vector

from .. import builders as b
from .. import scalars as sc
from .. import padding, tiled
from ..importer import Importer, handler
from .windows import explicit_auto_pad, explicit_pads, extra_high, window_attrs

NEG_INF = float("-inf")


def _window_reduce(x, out_shape, kernel, strides, dilations, init_value, combine):
    rank = len(kernel)
    num = 2 + 2 * rank
    d = b.dims(num)
    o, k = d[2:2 + rank], d[2 + rank:]
    x_map = b.affine_map(num, [d[0], d[1]] + [o[i] * strides[i] + k[i] * dilations[i] for i in range(rank)])
    w_map = b.affine_map(num, k)
    out_map = b.affine_map(num, [d[0], d[1]] + o)
    window = b.empty(kernel)
    return b.generic([x, window], [x_map, w_map], b.fill(out_shape, init_value, b.elem_of(x)), out_map,
                     [b.PARALLEL] * (2 + rank) + [b.REDUCTION] * rank,
                     lambda xv, _w, acc: combine(acc, xv))


def _tiled_window_reduce(imp: Importer, x, out_shape, kernel, strides, dilations, init_value: float, combine):
    """The reference's window reduction as vector loops over the last output dim (`--codegen optimized`):
    each output element still starts at `init_value` and combines the window in (k_0, ..., k_{r-1})
    order with the accumulator first, so every lane is one reference instance. The reference's scalar
    `maximumf` loops compile to a branch per element (signed zeros): 6 ms of SqueezeNet's 27.
    `x` is padded; strided rows are stored as phases (padding.padded), so a tap reads one vector."""
    rank = len(kernel)
    stride = strides[-1]
    xb = tiled.as_buffer(x)
    out = tiled.new_buffer(out_shape)

    def load_vector(ivs, red, col0, width):
        spatial = [tiled.window_index(ivs[2 + i], red[i], strides[i], dilations[i]) for i in range(rank - 1)]
        if stride == 1:
            last = tiled.window_index(col0, red[-1], 1, dilations[-1])
            return vector.load(tiled.vector_type(width), xb, ivs[:2] + spatial + [last])
        return vector.load(tiled.vector_type(width), xb,
                           ivs[:2] + spatial + padding.phase_column(col0, red[-1], stride, dilations[-1]))

    def load_init(ivs, row, col0, width):
        splat = ir.DenseElementsAttr.get_splat(tiled.vector_type(width), ir.FloatAttr.get(b.f32(), init_value))
        return arith.ConstantOp(tiled.vector_type(width), splat).result

    def store(ivs, row, col0, vec):
        vector.store(vec, out, ivs + [col0])

    outer = list(out_shape[:-1])
    tiled.emit(tiled.Contraction(
        outer=outer, row_at=len(outer), rows=1, cols=out_shape[-1], reduction=list(kernel),
        load_vector=load_vector, load_scalar=None, load_init=load_init, store=store,
        step=lambda acc, _, v: combine(acc, v)), imp.slots, imp.tile_policy)
    return tiled.as_tensor(out)


def _reduce(imp: Importer, x, low, high, out_shape, kernel, strides, dilations, init_value: float, combine):
    """`x` padded with `init_value` (`low`, `high` per spatial dim), reduced over each window."""
    low, high = [0, 0] + list(low), [0, 0] + list(high)
    if imp.optimized and b.elem_of(x) == b.f32() and out_shape[-1] > 1:
        x = padding.padded(x, low, high, init_value, strides[-1])
        return _tiled_window_reduce(imp, x, list(out_shape), kernel, strides, dilations, init_value, combine)
    x = b.pad(x, low, high, init_value)
    return _window_reduce(x, out_shape, kernel, strides, dilations, init_value, combine)


def _geometry(imp: Importer, node: onnx.NodeProto):
    attrs = imp.attrs(node)
    x_shape = imp.shape(node.input[0])
    rank = len(x_shape) - 2
    kernel = list(attrs["kernel_shape"])
    strides, dilations = window_attrs(attrs, rank, kernel)
    low, high = explicit_pads(attrs, x_shape[2:], kernel, strides, dilations)
    out_shape = imp.shape(node.output[0])
    padded = [s + lo + hi for s, lo, hi in zip(x_shape[2:], low, high)]
    if attrs.get("ceil_mode", 0) and explicit_auto_pad(attrs):
        # A ceil_mode window that would start in the end padding is dropped (onnxruntime, PyTorch,
        # onnx.reference); ONNX shape inference before opset 22 keeps it, and the importer must take
        # the inferred shape, so refuse rather than return an extra window.
        for i, (size, lo, p, k, s, d) in enumerate(zip(x_shape[2:], low, padded, kernel, strides, dilations)):
            count = -(-(p - (k - 1) * d - 1) // s) + 1
            if (count - 1) * s >= size + lo:
                count -= 1
            if out_shape[2 + i] != count:
                raise imp.error(f"ceil_mode: ONNX shape inference (opset {imp.opset}) gives {out_shape[2 + i]} "
                                f"windows on spatial axis {i}, but the last one starts in the padding and is "
                                f"dropped ({count} windows); export the model with opset >= 22")
    more = extra_high(tuple(padded), out_shape[2:], kernel, strides, dilations)
    return attrs, x_shape, kernel, strides, dilations, low, high, more, out_shape


@handler("MaxPool", any_dtype=True)
def max_pool(imp: Importer, node: onnx.NodeProto) -> list:
    """Any element type: int8/uint8 pooling of quantized models pads with the type's minimum."""
    if len(node.output) > 1 and imp.is_used(node.output[1]):
        raise imp.error("the Indices output of MaxPool is not supported")
    _, _, kernel, strides, dilations, low, high, more, out_shape = _geometry(imp, node)
    high = [h + e for h, e in zip(high, more)]
    x = imp.value(node.input[0])
    elem = b.elem_of(x)
    unsigned = imp.unsigned(node.input[0])
    lowest = NEG_INF if b.is_float(elem) else _lowest(elem, unsigned)
    combine = arith.maximumf if b.is_float(elem) else (lambda acc, v: sc.maximum(acc, v, unsigned))
    return [_reduce(imp, x, low, high, out_shape, kernel, strides, dilations, lowest, combine)]


def _lowest(elem, unsigned: bool) -> int:
    width = sc.width(elem)
    return 0 if unsigned else -(1 << (width - 1))


@handler("AveragePool")
def average_pool(imp: Importer, node: onnx.NodeProto) -> list:
    attrs, x_shape, kernel, strides, dilations, low, high, more, out_shape = _geometry(imp, node)
    total = _reduce(imp, imp.value(node.input[0]), low, [h + e for h, e in zip(high, more)], out_shape, kernel,
                    strides, dilations, 0.0, arith.addf)
    # Which padded positions count towards the divisor.
    spatial = x_shape[2:]
    mask = np.ones(spatial, dtype=np.float64)
    if attrs.get("count_include_pad", 0):
        mask = np.pad(mask, list(zip(low, high)), constant_values=1.0)
        mask = np.pad(mask, [(0, e) for e in more], constant_values=0.0)
    else:
        mask = np.pad(mask, [(lo, hi + e) for lo, hi, e in zip(low, high, more)], constant_values=0.0)
    counts = np.zeros(out_shape[2:], dtype=np.float64)
    for index in np.ndindex(*out_shape[2:]):
        window = tuple(slice(i * s, i * s + (k - 1) * d + 1, d)
                       for i, s, k, d in zip(index, strides, kernel, dilations))
        counts[index] = mask[window].sum()
    counts = imp.pool.constant(np.maximum(counts, 1.0).astype(np.float32), node.name + "_count")
    return [b.elementwise([total, counts], lambda s, c: arith.divf(s, c), out_shape)]


def _tiled_global_reduce(imp: Importer, x, init_value: float, combine):
    """A global pool with channels in the vector lanes (`--codegen optimized`): lane c starts at
    `init_value` and combines channel c's plane in row-major order, the reference's order, so each
    lane is one reference instance. The reference's one chain of adds per channel ran at one
    element per add latency (EfficientNet's squeeze-excitation pools: 2.5 ms against onnxruntime's
    0.5). Each lane's element is its own scalar load, as in the reference."""
    x_shape = b.shape_of(x)
    n, channels, spatial = x_shape[0], x_shape[1], list(x_shape[2:])
    xb = tiled.as_buffer(x)
    out = tiled.new_buffer((n, channels))

    def load_vector(ivs, red, col0, width):
        return vector.from_elements(tiled.vector_type(width),
                                    [memref.load(xb, [ivs[0], tiled.add(col0, lane)] + red) for lane in range(width)])

    def load_init(ivs, row, col0, width):
        splat = ir.DenseElementsAttr.get_splat(tiled.vector_type(width), ir.FloatAttr.get(b.f32(), init_value))
        return arith.ConstantOp(tiled.vector_type(width), splat).result

    def store(ivs, row, col0, vec):
        vector.store(vec, out, [ivs[0], col0])

    tiled.emit(tiled.Contraction(
        outer=[n], row_at=1, rows=1, cols=channels, reduction=spatial, load_vector=load_vector,
        load_scalar=None, load_init=load_init, store=store, step=lambda acc, _, v: combine(acc, v)),
        imp.slots, imp.tile_policy)
    return b.reshape(tiled.as_tensor(out), (n, channels) + (1,) * len(spatial))


@handler("GlobalAveragePool", "GlobalMaxPool")
def global_pool(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    x_shape = b.shape_of(x)
    rank = len(x_shape) - 2
    kernel = list(x_shape[2:])
    out_shape = tuple(x_shape[:2]) + (1,) * rank
    init_value, combine = (NEG_INF, arith.maximumf) if node.op_type == "GlobalMaxPool" else (0.0, arith.addf)
    if imp.optimized and b.elem_of(x) == b.f32() and x_shape[1] > 1 and rank > 0:
        total = _tiled_global_reduce(imp, x, init_value, combine)
    else:
        total = _window_reduce(x, out_shape, kernel, [1] * rank, [1] * rank, init_value, combine)
    if node.op_type == "GlobalMaxPool":
        return [total]
    count = float(np.prod(kernel))
    return [b.elementwise([total], lambda s: arith.divf(s, b.scalar(count)))]
