"""Padded copies of a window operator's input (Conv, pooling) for `--codegen optimized`.

`tensor.pad` bufferizes to a fill of the whole padded buffer followed by a copy of the input into
its interior: every interior element is written twice, and LLVM vectorizes the fill's short rows
(9 or 10 floats on a 7x7 plane) with masked stores, which are microcoded on AMD's cores. In a
depthwise Conv on a 7x7 plane that fill took half of the node's time. Here every element of the
padded buffer is written once, by flat loops that LLVM's loop vectorizer turns into plain vector
loads and stores. A strided window can also read the copy as phases (`stride`): each phase holds
every stride-th column of a padded row, so a tap reads one contiguous vector instead of a wide load
and a shuffle, and the phase copy costs nothing beyond the padding copy it replaces.

A copy: loads and stores, no arithmetic, so no fault site of the default selection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mlir import ir
from mlir.dialects import arith, memref, scf

from . import builders as b
from . import tiled


def padded(x: ir.Value, low: Sequence[int], high: Sequence[int], value: float, stride: int = 1) -> ir.Value:
    """`x` (float32) padded with `value`; with `stride` > 1 its last dim W_p is stored as
    (stride, ceil(W_p / stride)): element [..., p, j] is padded column j * stride + p (columns past
    W_p hold `value`)."""
    shape = b.shape_of(x)
    if stride == 1 and not any(low) and not any(high):
        return x
    padded_shape = [s + lo + hi for s, lo, hi in zip(shape, low, high)]
    width, columns = shape[-1], padded_shape[-1]
    phase_width = -(-columns // stride)
    row = stride * phase_width  # elements per padded row in the copy
    out_shape = padded_shape[:-1] + ([stride, phase_width] if stride > 1 else [columns])
    source = tiled.as_buffer(b.reshape(x, (math.prod(shape),)))
    out = tiled.new_buffer((math.prod(out_shape),))
    fill = arith.ConstantOp(b.f32(), ir.FloatAttr.get(b.f32(), value)).result

    def fill_range(start: ir.Value, count: int) -> None:
        if count <= 0:
            return
        loop = scf.ForOp(tiled.index(0), tiled.index(count), tiled.index(1))
        with ir.InsertionPoint(loop.body):
            memref.store(fill, out, [arith.addi(start, loop.induction_variable)])
            scf.YieldOp([])

    def copy_range(to: ir.Value, start: ir.Value, count: int, step: int) -> None:
        """out[to + j] = x[start + j * step] for j < count."""
        if count <= 0:
            return
        loop = scf.ForOp(tiled.index(0), tiled.index(count), tiled.index(1))
        with ir.InsertionPoint(loop.body):
            j = loop.induction_variable
            value_j = memref.load(source, [tiled.add(start, tiled.mul(j, step))])
            memref.store(value_j, out, [arith.addi(to, j)])
            scf.YieldOp([])

    def copy_row(to: ir.Value, start: ir.Value) -> None:
        """One padded row at flat offset `to` from the input row at flat offset `start`."""
        for phase in range(stride):
            # phase column j is padded column j * stride + phase: input column j * stride + phase - low
            first = max(0, -(-(low[-1] - phase) // stride))
            end = min(phase_width, -(-(low[-1] + width - phase) // stride))
            base = tiled.add(to, phase * phase_width)
            fill_range(base, first)
            copy_range(tiled.add(base, first), tiled.add(start, first * stride + phase - low[-1]),
                       end - first, stride)
            fill_range(tiled.add(base, max(end, first)), phase_width - max(end, first))

    def block(level: int, to: ir.Value, start: ir.Value) -> None:
        """The padded block of dims `level`.. at flat offset `to`, its input at `start`."""
        if level == len(shape) - 1:
            copy_row(to, start)
            return
        inner_out = math.prod(padded_shape[level + 1:-1]) * row
        inner_in = math.prod(shape[level + 1:])
        fill_range(to, low[level] * inner_out)
        loop = scf.ForOp(tiled.index(0), tiled.index(shape[level]), tiled.index(1))
        with ir.InsertionPoint(loop.body):
            i = loop.induction_variable
            block(level + 1, tiled.add(tiled.add(to, low[level] * inner_out), tiled.mul(i, inner_out)),
                  tiled.add(start, tiled.mul(i, inner_in)))
            scf.YieldOp([])
        fill_range(tiled.add(to, (low[level] + shape[level]) * inner_out), high[level] * inner_out)

    block(0, tiled.index(0), tiled.index(0))
    return b.reshape(tiled.as_tensor(out), tuple(out_shape))


def phase_column(col: ir.Value, tap: ir.Value, stride: int, dilation: int) -> list[ir.Value]:
    """Where output column `col` reads kernel tap `tap` in a phased copy: padded column
    col * stride + tap * dilation is column col + t // stride of phase t % stride (t = tap * dilation)."""
    t = tiled.mul(tap, dilation)
    return [arith.remui(t, tiled.index(stride)), tiled.add(col, arith.divui(t, tiled.index(stride)))]
