"""Conv (any spatial rank, groups, strides, dilations, pads, auto_pad) as one linalg.generic.

A generic op rather than `linalg.conv_2d_*` so that 1-D/3-D, grouped and depthwise convolutions
share one path and the body ops are born with the node's location. The iteration order is
(n, g, m, o..., c, k...): for each output element, a chain `acc + x * w` of fmul/fadd pairs,
the instruction pattern the LLTFI paper injects into.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, memref, scf, vector

from .. import builders as b
from .. import padding, tiled
from ..importer import Importer, handler
from .windows import explicit_pads, window_attrs


@dataclass(frozen=True)
class Grouped:
    """A Conv's operands viewed per group: x (n, g, cg, padded spatial...), w (g, mg, cg, kernel...)."""

    x: ir.Value
    w: ir.Value
    group: int
    mg: int
    strides: list[int]
    dilations: list[int]
    slack: int = 0  # zero columns after each padded row (_tail_slack)
    phased: bool = False  # x's last dim stored as (stride, columns / stride) phases (padding.padded)

    @property
    def rank(self) -> int:
        return len(self.strides)


@dataclass(frozen=True)
class Geometry:
    """A Conv-style node's shapes and window: per group `mg` output and `cg` input channels."""

    group: int
    mg: int
    cg: int
    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    low: list[int]
    high: list[int]
    out_spatial: tuple[int, ...]


def geometry(imp: Importer, node: onnx.NodeProto, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Geometry:
    """Checks a Conv-style node (Conv, ConvInteger, QLinearConv) against its operands' shapes."""
    attrs = imp.attrs(node)
    rank = len(x_shape) - 2
    if rank < 1:
        raise imp.error(f"{node.op_type} input must have rank >= 3, got {x_shape}")
    channels = x_shape[1]
    m, cg = w_shape[:2]
    kernel = list(attrs.get("kernel_shape", w_shape[2:]))
    group = int(attrs.get("group", 1))
    if channels != cg * group or m % group:
        raise imp.error(f"{node.op_type} channels {channels} / weights {w_shape} do not match group={group}")
    strides, dilations = window_attrs(attrs, rank, kernel)
    low, high = explicit_pads(attrs, x_shape[2:], kernel, strides, dilations)
    out_spatial = tuple((size + lo + hi - (k - 1) * d - 1) // s + 1
                        for size, lo, hi, k, d, s in zip(x_shape[2:], low, high, kernel, dilations, strides))
    return Geometry(group, m // group, cg, kernel, strides, dilations, low, high, out_spatial)


def grouped_operands(imp: Importer, node: onnx.NodeProto, x: ir.Value, w: ir.Value, pad_value: float | int,
                     lanes: int = 0) -> Grouped:
    """Checks a Conv-style node against its operands' shapes, pads `x` with `pad_value` and views both
    operands per group. With `lanes` (a vectorized Conv), rows whose last vector is one of WIDE_TAILS
    get that vector's missing lanes as zero columns too, and strided rows are copied as phases."""
    x_shape = b.shape_of(x)
    geo = geometry(imp, node, x_shape, b.shape_of(w))
    slack = _tail_slack(geo.kernel, geo.strides, geo.out_spatial, lanes) if lanes else 0
    low, high = [0, 0] + geo.low, [0, 0] + geo.high[:-1] + [geo.high[-1] + slack]
    phased = bool(lanes) and geo.strides[-1] > 1
    if lanes:
        x = padding.padded(x, low, high, pad_value, geo.strides[-1])
    else:
        x = b.pad(x, low, high, pad_value)
    return Grouped(b.reshape(x, (x_shape[0], geo.group, geo.cg) + b.shape_of(x)[2:]),
                   b.reshape(w, (geo.group, geo.mg, geo.cg) + tuple(geo.kernel)),
                   geo.group, geo.mg, geo.strides, geo.dilations, slack, phased)


def reference_conv(g: Grouped, init: ir.Value, step) -> ir.Value:
    """One linalg.generic over loop dims n, g, m, o_0..o_{r-1}, c, k_0..k_{r-1}: per output element
    `step(x, w, acc)` in that reduction order."""
    rank = g.rank
    num = 3 + rank + 1 + rank
    d = b.dims(num)
    o, c, k = d[3:3 + rank], d[3 + rank], d[4 + rank:]
    x_map = b.affine_map(num, [d[0], d[1], c] + [o[i] * g.strides[i] + k[i] * g.dilations[i] for i in range(rank)])
    w_map = b.affine_map(num, [d[1], d[2], c] + k)
    out_map = b.affine_map(num, [d[0], d[1], d[2]] + o)
    iterators = [b.PARALLEL] * (3 + rank) + [b.REDUCTION] * (1 + rank)
    return b.generic([g.x, g.w], [x_map, w_map], init, out_map, iterators, step)


@handler("Conv")
def conv(imp: Importer, node: onnx.NodeProto) -> list:
    if imp.optimized:
        w_const = imp.const(node.input[1])
        if w_const is not None:
            geo = geometry(imp, node, b.shape_of(imp.value(node.input[0])), w_const.shape)
            if _channels_in_lanes(geo, w_const, imp.tile_policy.lanes):
                return _conv_over_channels(imp, node, geo, w_const)
    g = grouped_operands(imp, node, imp.value(node.input[0]), imp.value(node.input[1]), 0.0,
                         imp.tile_policy.lanes if imp.optimized else 0)
    out_shape = imp.shape(node.output[0])
    n = out_shape[0]
    acc_shape = (n, g.group, g.mg) + tuple(out_shape[2:])
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = b.reshape(imp.value(node.input[2]), (g.group, g.mg))

    if imp.optimized:
        y, pre = _tiled_conv(imp, g, bias, acc_shape, imp.fused_activation(node), keep_input=imp.config.trace)
        if pre is not None:  # a traced build returns the Conv's own output too
            return [b.reshape(pre, out_shape), b.reshape(y, out_shape)]
        return [b.reshape(y, out_shape)]

    if bias is not None:
        acc_rank = len(acc_shape)
        init = b.generic([bias], [b.affine_map(acc_rank, [ir.AffineDimExpr.get(1), ir.AffineDimExpr.get(2)])],
                         b.empty(acc_shape), b.affine_map(acc_rank, b.dims(acc_rank)),
                         [b.PARALLEL] * acc_rank, lambda v, _: v)
    else:
        init = b.fill(acc_shape, 0.0)
    y = reference_conv(g, init, lambda xv, wv, acc: arith.addf(acc, arith.mulf(xv, wv)))
    return [b.reshape(y, out_shape)]


def _channel_blocks_inside(input_bytes: int, weight_bytes: int, output_rows: int, channel_blocks: int) -> bool:
    """Loop order with the least memory traffic: output-channel blocks outside the output rows re-read
    the input once per block (VGG's 224x224 layers: 13 MB, eleven times); inside, they re-read the
    weights once per output row (ResNet's 7x7 layers: 9.4 MB, seven times). Data that fits in cache
    is read once either way. Only the order of independent output tiles changes: every element's
    operations and their order stay the reference's."""
    if input_bytes <= tiled.CACHE_BYTES:
        return False  # the usual order: each block's weights stay in L1 for the whole sweep
    outside = channel_blocks * input_bytes
    inside = weight_bytes if weight_bytes <= tiled.CACHE_BYTES else output_rows * weight_bytes
    return inside < outside


# Columns of a pointwise plane that runs as one row: the largest plane with no second nest for a
# remainder (which the instrumented build would compile again).
POINTWISE_PLANE = 64


# Lanes of a row's last vector that load as a full vector instead (the rest of the lanes unused):
# LLVM splits a load of 3, 5 or 7 floats into loads of 2 and 1, 4 and 1, or 4, 2 and 1 lanes plus
# inserts. Measured (A/B, both orders): ResNet-18's 7x7 layer -8 to -14%, SqueezeNet's 13x13 and 27x27
# layers -2 to -14% and -4 to -11% (its 55x55 layer, one tail in seven vectors: 0 to +6%, noise-sized);
# whole models -3 to -5% (ResNet-18), -1 to -8% (SqueezeNet), 0 to -9% (GoogLeNet). A tail of 6 lanes
# (14x14 planes) came out 4-7% slower: not in here.
WIDE_TAILS = (3, 5, 7)


def _one_row(kernel: list[int], strides: list[int], out_spatial: tuple[int, ...], lanes: int) -> bool:
    """A pointwise Conv whose output plane runs as one row (see POINTWISE_PLANE)."""
    return (all(k == 1 for k in kernel) and all(s == 1 for s in strides) and out_spatial[-1] % lanes != 0
            and len(out_spatial) > 1 and math.prod(out_spatial) <= POINTWISE_PLANE)


def _tail_slack(kernel: list[int], strides: list[int], out_spatial: tuple[int, ...], lanes: int) -> int:
    """Zero columns to pad each input row with, so that the row's last vector (WIDE_TAILS) loads as a
    full vector and stays inside the buffer; 0 for rows that load it as they are. Unstrided rows only
    (strided ones read phases or shuffle a wide load)."""
    tail = out_spatial[-1] % lanes
    if tail not in WIDE_TAILS or strides[-1] != 1 or _one_row(kernel, strides, out_spatial, lanes):
        return 0
    return lanes - tail


# Products per output element (c x kernel taps) from which a Conv puts its output channels in the lanes.
CHANNEL_REDUCTION = 128


def _channels_in_lanes(geo: Geometry, w: np.ndarray, lanes: int) -> bool:
    """Output channels in the vector lanes (_conv_over_channels): constant float32 weights (packed at
    compile time), one group, whole vectors of channels. Measured per layer against the rows-in-lanes
    nest (_tiled_conv), A/B medians on the 2-core sandbox: ResNet-18's 3x3 layers -14 to -26% (56x56
    to 7x7 planes, stride 2 included), VGG16's 224x224 and 56x56 layers -19% and -13%, ResNet-50's
    1x1 layers -13 to -20% on 28x28 to 7x7 planes (56x56: -1%), DenseNet's 1x1 and 3x3 on 14x14 -22%
    and -18%, the 7x7 stride-2 stem -7%, MobileNetV2's narrow 1x1 layers 0 to -4%. Rows of 7 or 14
    positions filled 8 of 8 or 14 of 16 lanes and took one vector per tile row; channels fill every
    lane, two vectors per tile row, and the weights stream from one panel. Each output element is
    copied on its own into the NCHW output, which short reductions do not pay for:
    MobileNetV2's 1x1 expansions of 16 and 24 channels took 2.2x as long (K = 64: no change)."""
    return (w.dtype == np.float32 and geo.group == 1 and geo.mg % lanes == 0 and geo.mg >= 2 * lanes
            and geo.cg * math.prod(geo.kernel) >= CHANNEL_REDUCTION)


def _conv_over_channels(imp: Importer, node: onnx.NodeProto, geo: Geometry, w_const: np.ndarray) -> list:
    """Rows = output positions (input values broadcast), columns = output channels (weight vectors).

    The weights are packed at compile time as column panels of W^T (K x M, K = c, k_0, ... in the
    reference's reduction order; builders.ColumnPanels): a tile's reduction streams its panel. Per
    output element: init (bias or 0), then `acc + x * w` over (c, k_0, ..., k_{r-1}), the reference
    generic's order and operand order; each vector lane is one output element. A finished tile goes
    to the NCHW output through a tile on the stack, one scalar copy per element (no fault site).
    """
    out_shape = imp.shape(node.output[0])
    n, m = out_shape[:2]
    out_spatial, rank = geo.out_spatial, len(geo.out_spatial)
    x = imp.value(node.input[0])
    xb = tiled.as_buffer(padding.padded(x, [0, 0] + geo.low, [0, 0] + geo.high, 0.0))
    k_extent = geo.cg * math.prod(geo.kernel)
    positions = math.prod(out_spatial)
    tile_rows, tile_vectors = imp.tile_policy.shape(positions, m)
    panel = tile_vectors * imp.tile_policy.lanes
    b_kn = w_const.reshape(m, k_extent).T
    wb = tiled.as_buffer(imp.pool.panels(b.ColumnPanels(b_kn, panel, transposed=True), node.input[1]))
    has_bias = len(node.input) > 2 and node.input[2]
    bb = tiled.as_buffer(imp.value(node.input[2])) if has_bias else None
    activation = imp.fused_activation(node)
    out = tiled.new_buffer(out_shape)
    pre = tiled.new_buffer(out_shape) if activation is not None and imp.config.trace else None

    def position(row):  # the output position of flat row `row`, row-major over out_spatial
        index = []
        for size in reversed(out_spatial[1:]):
            index.append(arith.remui(row, tiled.index(size)))
            row = arith.divui(row, tiled.index(size))
        return [row] + index[::-1]

    def load_scalar(ivs, red, row):
        c, k = red[0], red[1:]
        where = position(row)
        spatial = [tiled.window_index(where[i], k[i], geo.strides[i], geo.dilations[i]) for i in range(rank)]
        return memref.load(xb, [ivs[0], c] + spatial)

    def load_vector(ivs, red, col0, width):
        flat = red[0]  # row k of W^T: (c, k_0, ..., k_{r-1}) row-major
        for extent, tap in zip(geo.kernel, red[1:]):
            flat = tiled.add(tiled.mul(flat, extent), tap)
        return vector.load(tiled.vector_type(width), wb, [tiled.panel_index(col0, flat, k_extent, panel, m)])

    def load_init(ivs, row, col0, width):
        if bb is None:
            return arith.ConstantOp(tiled.vector_type(width),
                                    ir.DenseElementsAttr.get_splat(tiled.vector_type(width),
                                                                   ir.FloatAttr.get(b.f32(), 0.0))).result
        return vector.load(tiled.vector_type(width), bb, [col0])

    scratch = imp.slots.scratch(tile_rows, panel)

    def copy_out(buffer, ivs, rows, col0, width):
        """scratch[i, lane] -> buffer[n, col0 + lane, position of rows[i]]: loops, not one extract and
        store per lane (that code made ResNet-50's instrumenting 35% slower)."""
        per_row = scf.ForOp(tiled.index(0), tiled.index(len(rows)), tiled.index(1))
        with ir.InsertionPoint(per_row.body):
            i = per_row.induction_variable
            where = position(arith.addi(rows[0], i))
            per_lane = scf.ForOp(tiled.index(0), tiled.index(width), tiled.index(1))
            with ir.InsertionPoint(per_lane.body):
                lane = per_lane.induction_variable
                value = memref.load(scratch, [i, lane])
                memref.store(value, buffer, [ivs[0], arith.addi(col0, lane)] + where)
                scf.YieldOp([])
            scf.YieldOp([])

    def store_tile(ivs, rows, cols, widths, values):
        targets = ([(pre, lambda v: v)] if pre is not None else []) + [(out, lambda v: _activate(v, activation))]
        for buffer, finish in targets:
            for i, row_values in enumerate(values):
                offset = 0
                for w, vec in zip(widths, row_values):
                    vector.store(finish(vec), scratch, [tiled.index(i), tiled.index(offset)])
                    offset += w
            copy_out(buffer, ivs, rows, cols[0], sum(widths))

    tiled.emit(tiled.Contraction(
        outer=[n], row_at=1, rows=positions, cols=m, reduction=[geo.cg] + geo.kernel,
        load_vector=load_vector, load_scalar=load_scalar, load_init=load_init, store=None,
        step=lambda acc, xv, wv: arith.addf(acc, arith.mulf(xv, wv)),
        # weights larger than the cache: each panel stays cached while every position uses it
        columns_outside=4 * k_extent * m > tiled.CACHE_BYTES, store_tile=store_tile),
        imp.slots, imp.tile_policy)
    y = tiled.as_tensor(out)
    if pre is not None:  # a traced build returns the Conv's own output too
        return [tiled.as_tensor(pre), y]
    return [y]


def _activate(vec: ir.Value, activation: tuple[onnx.NodeProto, list] | None) -> ir.Value:
    """The fused Relu's or Clip's own operations, as its reference generic builds them."""
    if activation is None:
        return vec
    node, bounds = activation
    with ir.Location.name(node.name):
        for op, bound in bounds:
            splat = ir.DenseElementsAttr.get_splat(vec.type, ir.FloatAttr.get(b.f32(), bound))
            limit = arith.ConstantOp(vec.type, splat).result
            vec = arith.maximumf(vec, limit) if op == "maximum" else arith.minimumf(vec, limit)
    return vec


def _tiled_conv(imp: Importer, g: Grouped, bias: ir.Value | None, acc_shape: tuple[int, ...],
                activation: tuple[onnx.NodeProto, list] | None = None,
                keep_input: bool = False) -> tuple[ir.Value, ir.Value | None]:
    """Rows = output channels (weights broadcast), columns = the last output dim (input vectors).

    Per output element: init (bias or 0), then `acc + x * w` over (c, k_0, ..., k_{r-1}), the
    reference generic's reduction order and operand order. Strided rows read phases (padding.padded):
    column col * stride + tap is column col + tap // stride of phase tap % stride, one contiguous
    vector per tap (ResNet-18's 3x3 stride-2 Conv: -31% time, its 7x7 stem: -43%, against a wide
    load and a shuffle).
    """
    x, w, strides, dilations, slack, phased = g.x, g.w, g.strides, g.dilations, g.slack, g.phased
    n, group, mg = acc_shape[:3]
    cg = b.shape_of(x)[2]
    lanes = imp.tile_policy.lanes
    out_spatial = acc_shape[3:]
    tail = out_spatial[-1] % lanes if slack else 0  # the row's last vector loads in full (_tail_slack)
    if _one_row(b.shape_of(w)[3:], strides, out_spatial, lanes):
        # The output plane is the (padded) input plane: one row of H*W columns, so the vector lanes
        # fill up (a 7x7 plane ran as seven rows of 7 lanes, now as three tiles of 16 and one lane).
        # Each output element keeps its reduction over c; only which lanes compute it changes.
        plane = math.prod(out_spatial)
        x = b.reshape(x, (n, group, cg, plane))
        w = b.reshape(w, (group, mg, cg, 1))
        strides, dilations, out_spatial = [1], [1], (plane,)
    rank = len(out_spatial)
    kernel = b.shape_of(w)[3:]
    acc_shape = (n, group, mg) + tuple(out_spatial)
    input_bytes = 4 * cg * math.prod(b.shape_of(x)[3:])
    stride = strides[-1]
    xb, wb = tiled.as_buffer(x), tiled.as_buffer(w)
    bb = tiled.as_buffer(bias) if bias is not None else None
    out = tiled.new_buffer(acc_shape)
    # With a fused Relu, a traced build also stores the Conv's values (a store: no fault site).
    pre = tiled.new_buffer(acc_shape) if activation is not None and keep_input else None

    # A depthwise Conv (one output channel per group) has groups as its tile rows: each row its own
    # input plane and weights, so a tile holds up to 12 independent accumulators where one output
    # channel per group gave one (MobileNetV2's 7x7 planes: 4 GF/s, one add chain per tile).
    depthwise = group > 1 and mg == 1

    def where(ivs, row):  # (n, group, output channel of the group, output ivs outside the row)
        if depthwise:
            return ivs[0], row, tiled.index(0), ivs[1:]
        return ivs[0], ivs[1], row, ivs[2:]

    def load_init(ivs, row, col0, width):
        if bb is None:
            return arith.ConstantOp(tiled.vector_type(width),
                                    ir.DenseElementsAttr.get_splat(tiled.vector_type(width),
                                                                   ir.FloatAttr.get(b.f32(), 0.0))).result
        _, g, m, _ = where(ivs, row)
        return vector.broadcast(tiled.vector_type(width), memref.load(bb, [g, m]))

    def load_scalar(ivs, red, row):
        _, g, m, _ = where(ivs, row)
        return memref.load(wb, [g, m] + red)

    def load_vector(ivs, red, col0, width, row=None):
        image, g, _, rows_at = where(ivs, row)
        c, k = red[0], red[1:]
        spatial = [tiled.window_index(rows_at[i], k[i], strides[i], dilations[i]) for i in range(rank - 1)]
        if not phased:  # unstrided rows
            last = tiled.window_index(col0, k[-1], 1, dilations[-1])
            if tail and width == tail:  # the row's last vector: a full load, then its first `tail` lanes
                full = vector.load(tiled.vector_type(lanes), xb, [image, g, c] + spatial + [last])
                return vector.extract_strided_slice(tiled.vector_type(width), full, [0], [width], [1])
            return vector.load(tiled.vector_type(width), xb, [image, g, c] + spatial + [last])
        return vector.load(tiled.vector_type(width), xb,
                           [image, g, c] + spatial + padding.phase_column(col0, k[-1], stride, dilations[-1]))

    def store(ivs, row, col0, vec):
        image, g, m, rows_at = where(ivs, row)
        where_to = [image, g, m] + rows_at + [col0]
        if pre is not None:
            vector.store(vec, pre, where_to)
        vector.store(_activate(vec, activation), out, where_to)

    if depthwise:  # groups as rows, outside the output rows: a tile's planes stay cached down the rows
        outer, row_at, rows = [n] + list(out_spatial[:-1]), 1, group
    else:
        outer, rows = [n, group] + list(out_spatial[:-1]), mg
        tile_rows = imp.tile_policy.shape(mg, out_spatial[-1])[0]
        channels_inside = _channel_blocks_inside(input_bytes, 4 * mg * cg * math.prod(kernel),
                                                 math.prod(out_spatial[:-1]), -(-mg // tile_rows))
        row_at = len(outer) if channels_inside else 2
    tiled.emit(tiled.Contraction(
        outer=outer, row_at=row_at, rows=rows, cols=out_spatial[-1],
        reduction=[cg] + list(kernel), load_vector=load_vector, load_scalar=load_scalar,
        load_init=load_init, store=store, vector_per_row=depthwise,
        step=lambda acc, wv, xv: arith.addf(acc, arith.mulf(xv, wv))), imp.slots, imp.tile_policy)
    return tiled.as_tensor(out), tiled.as_tensor(pre) if pre is not None else None
