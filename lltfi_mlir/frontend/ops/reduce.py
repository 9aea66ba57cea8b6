"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/SumSquare/LogSum/LogSumExp, and CumSum.

Each Reduce* is one linalg.generic whose reduction loops visit the reduced elements in index order
(row-major over the reduced axes), accumulating `acc = combine(acc, f(x))` from the operation's
identity: the sequence numpy's `add.reduce` defines for one axis and onnx.reference follows. The
same generic serves both codegen modes. CumSum is a scan: an explicit loop over the axis carrying
the running sum, one `fadd` per element.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, math, memref, scf, tensor

from .. import builders as b
from .. import tiled
from ..importer import Importer, handler


def _square(v):
    return arith.mulf(v, v)


# op type -> (identity, combine(acc, v), map applied to each element, map applied to the result)
_REDUCTIONS: dict[str, tuple[float, Callable, Callable | None, Callable | None]] = {
    "ReduceSum": (0.0, arith.addf, None, None),
    "ReduceMean": (0.0, arith.addf, None, None),  # then divided by the count
    "ReduceMax": (float("-inf"), arith.maximumf, None, None),
    "ReduceMin": (float("inf"), arith.minimumf, None, None),
    "ReduceProd": (1.0, arith.mulf, None, None),
    "ReduceSumSquare": (0.0, arith.addf, _square, None),
    "ReduceL1": (0.0, arith.addf, math.absf, None),
    "ReduceL2": (0.0, arith.addf, _square, math.sqrt),
    "ReduceLogSum": (0.0, arith.addf, None, math.log),
    "ReduceLogSumExp": (0.0, arith.addf, math.exp, math.log),
}
# Opset from which `axes` is an input rather than an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13}


def reduction_axes(imp: Importer, node: onnx.NodeProto, rank: int) -> list[int] | None:
    """The sorted reduced axes; None for noop_with_empty_axes with no axes (the identity)."""
    attrs = imp.attrs(node)
    if imp.opset >= _AXES_INPUT_FROM.get(node.op_type, 18):
        axes = None
        if len(node.input) > 1 and node.input[1]:
            axes = [int(a) for a in np.asarray(imp.require_const(node.input[1], f"{node.op_type}'s axes")).ravel()]
    else:
        axes = attrs.get("axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    for a in axes:
        if not -rank <= int(a) < rank:
            raise imp.error(f"{node.op_type} axis {a} is out of range for rank {rank}")
    return sorted({int(a) % rank for a in axes})


@handler(*_REDUCTIONS)
def reduce(imp: Importer, node: onnx.NodeProto) -> list:
    identity, combine, pre, post = _REDUCTIONS[node.op_type]
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    axes = reduction_axes(imp, node, rank)
    out_shape = imp.shape(node.output[0])
    if axes is None:  # noop_with_empty_axes: the input itself (through the element map, as the spec's
        # function bodies do for ReduceSumSquare/L1/L2/LogSum/LogSumExp)
        steps = [f for f in (pre, post) if f is not None]
        if not steps:
            return [x]
        return [b.elementwise([x], lambda v: _chain(v, steps))]
    kept = [i for i in range(rank) if i not in axes]
    d = b.dims(rank)

    def body(v, acc):
        return combine(acc, pre(v) if pre is not None else v)

    total = b.generic([x], [b.affine_map(rank, d)], b.fill([shape[i] for i in kept], identity),
                      b.affine_map(rank, [d[i] for i in kept]),
                      [b.REDUCTION if i in axes else b.PARALLEL for i in range(rank)], body)
    if node.op_type == "ReduceMean":
        count = b.scalar(float(np.prod([shape[i] for i in axes])))
        total = b.elementwise([total], lambda s: arith.divf(s, count))
    elif post is not None:
        total = b.elementwise([total], post)
    return [b.reshape(total, out_shape)]


def _chain(v, steps):
    for f in steps:
        v = f(v)
    return v


@handler("CumSum")
def cumsum(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    exclusive, reverse = int(attrs.get("exclusive", 0)), int(attrs.get("reverse", 0))
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    axis_value = np.asarray(imp.require_const(node.input[1], "CumSum's axis"))
    if axis_value.size != 1:
        raise imp.error("CumSum's axis must be a scalar")
    axis = int(axis_value.reshape(()))
    if not -rank <= axis < rank:
        raise imp.error(f"CumSum axis {axis} is out of range for rank {rank}")
    axis %= rank
    outer, length, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))
    x3 = b.reshape(x, (outer, length, inner))
    # numpy's cumsum (onnx.reference): out_first = x_first, out_k = out_{k-1} + x_k, as plain loops
    # over buffers (no loop-carried SSA values, like the lowered linalg loops).
    xb, out = tiled.as_buffer(x3), tiled.new_buffer((outer, length, inner))
    i_outer = scf.ForOp(tiled.index(0), tiled.index(outer), tiled.index(1))
    with ir.InsertionPoint(i_outer.body):
        i_inner = scf.ForOp(tiled.index(0), tiled.index(inner), tiled.index(1))
        with ir.InsertionPoint(i_inner.body):
            o, i = i_outer.induction_variable, i_inner.induction_variable
            first = tiled.index(length - 1 if reverse else 0)
            memref.store(memref.load(xb, [o, first, i]), out, [o, first, i])
            scan = scf.ForOp(tiled.index(1), tiled.index(length), tiled.index(1))
            with ir.InsertionPoint(scan.body):
                step = scan.induction_variable
                if reverse:
                    k = arith.subi(tiled.index(length - 1), step)
                    previous = arith.addi(k, tiled.index(1))
                else:
                    k, previous = step, arith.subi(step, tiled.index(1))
                total = arith.addf(memref.load(out, [o, previous, i]), memref.load(xb, [o, k, i]))
                memref.store(total, out, [o, k, i])
                scf.YieldOp([])
            scf.YieldOp([])
        scf.YieldOp([])
    result = tiled.as_tensor(out)
    if exclusive and length > 1:  # the inclusive sums shifted by one along the scan, 0 where it starts
        kept = tensor.ExtractSliceOp(b.tensor_type((outer, length - 1, inner)), result, [], [], [],
                                     ir.DenseI64ArrayAttr.get([0, 1 if reverse else 0, 0]),
                                     ir.DenseI64ArrayAttr.get([outer, length - 1, inner]),
                                     ir.DenseI64ArrayAttr.get([1, 1, 1])).result
        result = b.pad(kept, [0, 0 if reverse else 1, 0], [0, 1 if reverse else 0, 0], 0.0)
    elif exclusive:
        result = b.fill((outer, length, inner), 0.0)
    return [b.reshape(result, shape)]
