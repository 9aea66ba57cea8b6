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
from mlir.dialects import arith, bufferization, math, memref, scf, tensor

from .. import builders as b
from .. import scalars as sc
from .. import tiled
from ..importer import Importer, handler


def _square(v):
    return sc.mul(v, v)


def _abs(v):
    return math.absf(v) if sc.is_float(v) else math.absi(v)


# op type -> (identity, combine(acc, v, unsigned), map applied to each element, map applied to the
# result, whether integers are accepted). Identities "min"/"max" are the element type's extremes.
_REDUCTIONS: dict[str, tuple[object, Callable, Callable | None, Callable | None, bool]] = {
    "ReduceSum": (0, lambda a, v, u: sc.add(a, v), None, None, True),
    "ReduceMean": (0, lambda a, v, u: sc.add(a, v), None, None, True),  # then divided by the count
    "ReduceMax": ("min", sc.maximum, None, None, True),
    "ReduceMin": ("max", sc.minimum, None, None, True),
    "ReduceProd": (1, lambda a, v, u: sc.mul(a, v), None, None, True),
    "ReduceSumSquare": (0, lambda a, v, u: sc.add(a, v), _square, None, True),
    "ReduceL1": (0, lambda a, v, u: sc.add(a, v), _abs, None, True),
    "ReduceL2": (0, lambda a, v, u: sc.add(a, v), _square, math.sqrt, False),
    "ReduceLogSum": (0, lambda a, v, u: sc.add(a, v), None, math.log, False),
    "ReduceLogSumExp": (0, lambda a, v, u: sc.add(a, v), math.exp, math.log, False),
}
# Opset from which `axes` is an input rather than an attribute.
_AXES_INPUT_FROM = {"ReduceSum": 13}


def _extreme(elem: ir.Type, which: str, unsigned: bool) -> float | int:
    """The smallest ("min") or largest ("max") value of an element type (bool: 0 and 1)."""
    if b.is_float(elem):
        return float("-inf") if which == "min" else float("inf")
    width = sc.width(elem)
    if unsigned:
        return 0 if which == "min" else (1 << width) - 1
    return -(1 << (width - 1)) if which == "min" else (1 << (width - 1)) - 1


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


@handler(*_REDUCTIONS, any_dtype=True)
def reduce(imp: Importer, node: onnx.NodeProto) -> list:
    identity, combine, pre, post, integers = _REDUCTIONS[node.op_type]
    x = imp.value(node.input[0])
    elem = b.elem_of(x)
    unsigned = imp.unsigned(node.input[0]) or imp.dtype(node.input[0]) == onnx.TensorProto.BOOL
    if not b.is_float(elem) and not integers:
        raise imp.error(f"{node.op_type} of integer or bool tensors is not supported (float only)")
    if isinstance(identity, str):
        identity = _extreme(elem, identity, unsigned)
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
        return combine(acc, pre(v) if pre is not None else v, unsigned)

    total = b.generic([x], [b.affine_map(rank, d)], b.fill([shape[i] for i in kept], identity, elem),
                      b.affine_map(rank, [d[i] for i in kept]),
                      [b.REDUCTION if i in axes else b.PARALLEL for i in range(rank)], body)
    if node.op_type == "ReduceMean":
        count = int(np.prod([shape[i] for i in axes]))
        total = b.elementwise([total], lambda s: sc.div(s, b.scalar(count, elem), unsigned))
    elif post is not None:
        total = b.elementwise([total], post)
    return [b.reshape(total, out_shape)]


def _chain(v, steps):
    for f in steps:
        v = f(v)
    return v


@handler("CumSum", any_dtype=True)
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
    elem = b.elem_of(x)
    buffer_type = ir.MemRefType.get([outer, length, inner], elem)
    xb = bufferization.to_buffer(buffer_type, x3, read_only=True)
    out = memref.alloc(buffer_type, [], [])
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
                total = sc.add(memref.load(out, [o, previous, i]), memref.load(xb, [o, k, i]))
                memref.store(total, out, [o, k, i])
                scf.YieldOp([])
            scf.YieldOp([])
        scf.YieldOp([])
    result = bufferization.to_tensor(b.tensor_type((outer, length, inner), elem), out, restrict=True, writable=True)
    if exclusive and length > 1:  # the inclusive sums shifted by one along the scan, 0 where it starts
        kept = tensor.ExtractSliceOp(b.tensor_type((outer, length - 1, inner), elem), result, [], [], [],
                                     ir.DenseI64ArrayAttr.get([0, 1 if reverse else 0, 0]),
                                     ir.DenseI64ArrayAttr.get([outer, length - 1, inner]),
                                     ir.DenseI64ArrayAttr.get([1, 1, 1])).result
        result = b.pad(kept, [0, 0 if reverse else 1, 0], [0, 1 if reverse else 0, 0], 0.0)
    elif exclusive:
        result = b.fill((outer, length, inner), 0, elem)
    return [b.reshape(result, shape)]


def _axis_of(imp: Importer, node: onnx.NodeProto, rank: int, default: int = 0) -> int:
    axis = int(imp.attrs(node).get("axis", default))
    if not -rank <= axis < rank:
        raise imp.error(f"{node.op_type} axis {axis} is out of range for rank {rank}")
    return axis % rank


@handler("ArgMax", "ArgMin", any_dtype=True)
def arg_extreme(imp: Importer, node: onnx.NodeProto) -> list:
    """int64 index of the first (select_last_index: last) maximum/minimum along the axis: one scan in
    index order keeping the best index so far, comparing each element with the element it points at."""
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    axis = _axis_of(imp, node, rank)
    last = bool(attrs.get("select_last_index", 0))
    kind = ("ge" if last else "gt") if node.op_type == "ArgMax" else ("le" if last else "lt")
    unsigned = imp.unsigned(node.input[0])
    kept = [i for i in range(rank) if i != axis]
    d = b.dims(rank)
    i64 = b.i64()

    def body(v, best):
        coords = [b.loop_index(i) for i in range(rank)]
        k = arith.index_cast(i64, coords[axis])
        current = tensor.extract(x, coords[:axis] + [arith.index_cast(ir.IndexType.get(), best)] + coords[axis + 1:])
        better = sc.compare(kind, v, current, unsigned)
        if b.is_float(v.type):  # numpy: the first NaN wins
            nan_here = arith.cmpf(arith.CmpFPredicate.UNO, v, v)
            nan_best = arith.cmpf(arith.CmpFPredicate.UNO, current, current)
            better = arith.ori(better, arith.andi(nan_here, arith.xori(nan_best, arith.ConstantOp(
                b.i1(), ir.IntegerAttr.get(b.i1(), 1)).result)))
        return arith.select(better, k, best)

    index = b.generic([x], [b.affine_map(rank, d)], b.fill([shape[i] for i in kept], 0, i64),
                      b.affine_map(rank, [d[i] for i in kept]),
                      [b.REDUCTION if i == axis else b.PARALLEL for i in range(rank)], body)
    return [b.reshape(index, imp.shape(node.output[0]))]


@handler("TopK", any_dtype=True)
def top_k(imp: Importer, node: onnx.NodeProto) -> list:
    """The k largest (smallest) elements along the axis, ties in index order, as onnx.reference.

    Each element's rank is the number of elements that precede it in the sorted order (integer
    counts over comparisons); output position p takes the element whose rank is p. No float
    arithmetic, only comparisons, so values are copied exactly."""
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    axis = _axis_of(imp, node, rank, -1)
    if imp.opset < 10:
        k = int(attrs["k"])
    else:
        k_value = np.asarray(imp.require_const(node.input[1], "TopK's k")).ravel()
        k = int(k_value[0])
    n = shape[axis]
    if not 0 <= k <= n:
        raise imp.error(f"TopK k={k} is outside [0, {n}]")
    largest = bool(attrs.get("largest", 1))
    unsigned = imp.unsigned(node.input[0])
    i64 = b.i64()
    index_type = ir.IndexType.get()
    # rank[..., i, ...] = #{j : x_j before x_i}: loop dims = x's dims + j (reduction)
    num = rank + 1
    d = b.dims(num)
    j = d[rank]
    x_j = b.affine_map(num, d[:axis] + [j] + d[axis + 1:rank])
    before = "gt" if largest else "lt"

    def count(xi, xj, acc):
        i_pos, j_pos = b.loop_index(axis), b.loop_index(rank)
        ahead = sc.compare(before, xj, xi, unsigned)
        tie = arith.andi(sc.compare("eq", xj, xi, unsigned),
                         arith.cmpi(arith.CmpIPredicate.slt, j_pos, i_pos))
        one = arith.ConstantOp(i64, ir.IntegerAttr.get(i64, 1)).result
        return arith.select(arith.ori(ahead, tie), arith.addi(acc, one), acc)

    ranks = b.generic([x, x], [b.affine_map(num, d[:rank]), x_j], b.fill(shape, 0, i64),
                      b.affine_map(num, d[:rank]), [b.PARALLEL] * rank + [b.REDUCTION], count)
    # indices[..., p, ...] = the i with rank p (exactly one): loop dims = output dims + i (reduction)
    out_shape = list(shape)
    out_shape[axis] = k
    r_i = b.affine_map(num, d[:axis] + [j] + d[axis + 1:rank])

    def pick(r, acc):
        p = arith.index_cast(i64, b.loop_index(axis))
        i = arith.index_cast(i64, b.loop_index(rank))
        return arith.select(arith.cmpi(arith.CmpIPredicate.eq, r, p), i, acc)

    # the reduction dim's extent comes from `ranks` (n), the output's from out_shape (k)
    indices = b.generic([ranks], [r_i], b.fill(out_shape, 0, i64), b.affine_map(num, d[:rank]),
                        [b.PARALLEL] * rank + [b.REDUCTION], pick)

    def gather(i, _):
        coords = [b.loop_index(a) for a in range(rank)]
        coords[axis] = arith.index_cast(index_type, i)
        return tensor.extract(x, coords)

    values = b.generic([indices], [b.affine_map(rank, d[:rank])], b.empty(out_shape, b.elem_of(x)),
                       b.affine_map(rank, d[:rank]), [b.PARALLEL] * rank, gather)
    return [values, indices]
