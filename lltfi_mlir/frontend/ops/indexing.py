"""Indexing operators: Gather, GatherElements, GatherND, ScatterND, Slice, Split, Expand, Tile, Where.

Data-dependent reads are `tensor.extract` inside a linalg.generic over the output; the index
arithmetic (negative-index wrap, row offsets) is done in the indices' own integer type under the
node's location, so it lowers to integer fault sites of that operator (the `int` group). Indices
out of range are undefined in ONNX; here they read outside the buffer, as a faulty index would.
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, scf, tensor

from .. import builders as b
from .. import scalars as sc
from ..importer import Importer, handler


def _as_index(i: ir.Value, size: int) -> ir.Value:
    """ONNX index (negative counts from the end) -> `index`, computed in the index's own type."""
    wrapped = arith.select(sc.compare("lt", i, sc.const_like(i, 0)), arith.addi(i, sc.const_like(i, size)), i)
    return arith.index_cast(b.index(), wrapped)


def _identity(rank: int) -> ir.AffineMap:
    return b.affine_map(rank, b.dims(rank))


def _axis(imp: Importer, node: onnx.NodeProto, rank: int, default: int = 0) -> int:
    axis = int(imp.attrs(node).get("axis", default))
    if not -rank <= axis < max(rank, 1):
        raise imp.error(f"axis {axis} out of range for rank {rank}")
    return axis % max(rank, 1)


@handler("Gather", any_dtype=True)
def gather(imp: Importer, node: onnx.NodeProto) -> list:
    data, idx = imp.value(node.input[0]), imp.value(node.input[1])
    dshape, ishape = b.shape_of(data), b.shape_of(idx)
    axis = _axis(imp, node, len(dshape))
    out_shape = dshape[:axis] + ishape + dshape[axis + 1:]
    rank, q = len(out_shape), len(ishape)
    d = b.dims(rank)

    def body(i, _):
        coords = ([b.loop_index(j) for j in range(axis)] + [_as_index(i, dshape[axis])]
                  + [b.loop_index(j) for j in range(axis + q, rank)])
        return tensor.extract(data, coords)

    return [b.generic([idx], [b.affine_map(rank, d[axis:axis + q])], b.empty(out_shape, b.elem_of(data)),
                      _identity(rank), [b.PARALLEL] * rank, body)]


@handler("GatherElements", any_dtype=True)
def gather_elements(imp: Importer, node: onnx.NodeProto) -> list:
    data, idx = imp.value(node.input[0]), imp.value(node.input[1])
    dshape, ishape = b.shape_of(data), b.shape_of(idx)
    rank = len(ishape)
    axis = _axis(imp, node, rank)

    def body(i, _):
        coords = [b.loop_index(j) for j in range(rank)]
        coords[axis] = _as_index(i, dshape[axis])
        return tensor.extract(data, coords)

    return [b.generic([idx], [_identity(rank)], b.empty(ishape, b.elem_of(data)), _identity(rank),
                      [b.PARALLEL] * rank, body)]


@handler("GatherND", any_dtype=True)
def gather_nd(imp: Importer, node: onnx.NodeProto) -> list:
    data, idx = imp.value(node.input[0]), imp.value(node.input[1])
    dshape, ishape = b.shape_of(data), b.shape_of(idx)
    batch = int(imp.attrs(node).get("batch_dims", 0))
    k = ishape[-1]
    out_shape = ishape[:-1] + dshape[batch + k:]
    rank, lead = len(out_shape), len(ishape) - 1

    def body(_):
        loops = [b.loop_index(j) for j in range(rank)]
        coords = loops[:batch]
        for j in range(k):
            i = tensor.extract(idx, loops[:lead] + [arith.constant(b.index(), j)])
            coords.append(_as_index(i, dshape[batch + j]))
        return tensor.extract(data, coords + loops[lead:])

    return [b.generic([], [], b.empty(out_shape, b.elem_of(data)), _identity(rank), [b.PARALLEL] * rank, body)]


_REDUCTIONS = {"none": None, "add": sc.add, "mul": sc.mul,
               "min": sc.minimum, "max": sc.maximum}


@handler("ScatterND", any_dtype=True)
def scatter_nd(imp: Importer, node: onnx.NodeProto) -> list:
    """Updates applied one index tuple after the other (later ones win, as in the reference)."""
    data, idx, upd = (imp.value(n) for n in node.input[:3])
    dshape, ishape = b.shape_of(data), b.shape_of(idx)
    mode = imp.attrs(node).get("reduction", b"none")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in _REDUCTIONS:
        raise imp.error(f"ScatterND reduction '{mode}' is not supported")
    combine = _REDUCTIONS[mode]
    unsigned = imp.unsigned(node.input[0])
    k = ishape[-1]
    rows = int(np.prod(dshape[:k]))
    count, width = int(np.prod(ishape[:-1])), int(np.prod(dshape[k:]))
    strides = [int(np.prod(dshape[j + 1:k])) for j in range(k)]
    table = b.reshape(data, (rows, width))
    idx2 = b.reshape(idx, (count, k))
    upd2 = b.reshape(upd, (count, width))

    def const(v: int) -> ir.Value:
        return arith.constant(b.index(), v)

    outer = scf.ForOp(const(0), const(count), const(1), [table])
    with ir.InsertionPoint(outer.body):
        n, acc = outer.induction_variable, outer.inner_iter_args[0]
        row = const(0)
        for j in range(k):
            i = _as_index(tensor.extract(idx2, [n, const(j)]), dshape[j])
            row = arith.addi(row, arith.muli(i, const(strides[j])))
        inner = scf.ForOp(const(0), const(width), const(1), [acc])
        with ir.InsertionPoint(inner.body):
            s, t = inner.induction_variable, inner.inner_iter_args[0]
            value = tensor.extract(upd2, [n, s])
            if combine is not None:
                old = tensor.extract(t, [row, s])
                value = combine(old, value) if combine in (sc.add, sc.mul) else combine(old, value, unsigned)
            scf.YieldOp([tensor.insert(value, t, [row, s])])
        scf.YieldOp([inner.results[0]])
    return [b.reshape(outer.results[0], dshape)]


def _strided_copy(x: ir.Value, starts: list[int], steps: list[int], out_shape: list[int]) -> ir.Value:
    """out[i] = x[start + step * i] per dimension, as a copy (never a view): a static strided
    extract_slice of the visited range, then one linalg.generic that reverses negative-step dims."""
    rank = len(out_shape)
    if 0 in out_shape:  # nothing to read (the exporters' zero-size splits and slices)
        return b.empty(out_shape, b.elem_of(x))
    lows = [st if step > 0 else st + step * (n - 1) for st, step, n in zip(starts, steps, out_shape)]
    view = tensor.ExtractSliceOp(b.tensor_type(out_shape, b.elem_of(x)), x, [], [], [],
                                 ir.DenseI64ArrayAttr.get(lows), ir.DenseI64ArrayAttr.get(list(out_shape)),
                                 ir.DenseI64ArrayAttr.get([abs(t) for t in steps])).result
    d = b.dims(rank)
    exprs = [d[k] if steps[k] > 0 or out_shape[k] == 1 else b.const_expr(out_shape[k] - 1) - d[k]
             for k in range(rank)]
    return b.generic([view], [b.affine_map(rank, exprs)], b.empty(out_shape, b.elem_of(x)), _identity(rank),
                     [b.PARALLEL] * rank, lambda v, _: v)


@handler("Slice", any_dtype=True)
def slice_(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    if imp.opset < 10:
        attrs = imp.attrs(node)
        begin, end = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(begin))))
        steps = [1] * len(begin)
    else:
        def param(index: int, what: str):
            name = node.input[index] if len(node.input) > index else ""
            return [int(v) for v in imp.require_const(name, f"Slice's {what}").reshape(-1)] if name else None
        begin, end = param(1, "starts"), param(2, "ends")
        axes = param(3, "axes") or list(range(len(begin)))
        steps = param(4, "steps") or [1] * len(begin)
    starts, strides, out_shape = [0] * rank, [1] * rank, list(shape)
    for start, stop, axis, step in zip(begin, end, axes, steps):
        if step == 0:
            raise imp.error("Slice step 0")
        axis %= rank
        lo, _, st = slice(start, stop, step).indices(shape[axis])
        starts[axis], strides[axis] = lo, st
        out_shape[axis] = len(range(*slice(start, stop, step).indices(shape[axis])))
    return [_strided_copy(x, starts, strides, out_shape)]


@handler("Split", any_dtype=True)
def split(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    axis = _axis(imp, node, len(shape))
    sizes = [imp.shape(name)[axis] for name in node.output]
    outputs, offset = [], 0
    for size in sizes:
        starts = [0] * len(shape)
        starts[axis] = offset
        out_shape = list(shape)
        out_shape[axis] = size
        outputs.append(_strided_copy(x, starts, [1] * len(shape), out_shape))
        offset += size
    if offset != shape[axis]:
        raise imp.error(f"Split sizes {sizes} do not add up to dimension {shape[axis]}")
    return outputs


@handler("Expand", any_dtype=True)
def expand(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    out_shape = imp.shape(node.output[0])
    return [b.elementwise([x], lambda v: v, out_shape)]


@handler("Tile", any_dtype=True)
def tile(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    repeats = [int(r) for r in imp.require_const(node.input[1], "Tile's repeats").reshape(-1)]
    out_shape = [s * r for s, r in zip(shape, repeats)]
    rank = len(shape)
    d = b.dims(rank)
    exprs = [d[k] if repeats[k] == 1 else (b.const_expr(0) if shape[k] == 1 else d[k] % shape[k])
             for k in range(rank)]
    return [b.generic([x], [b.affine_map(rank, exprs)], b.empty(out_shape, b.elem_of(x)), _identity(rank),
                      [b.PARALLEL] * rank, lambda v, _: v)]


@handler("Where", any_dtype=True)
def where(imp: Importer, node: onnx.NodeProto) -> list:
    cond, x, y = (imp.value(n) for n in node.input)
    return [b.elementwise([cond, x, y], lambda c, u, v: arith.select(sc.truth(c), u, v), out_elem=b.elem_of(x))]
