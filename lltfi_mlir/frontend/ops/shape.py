"""Layout operators: reshapes become views, Transpose/Concat/Pad copy.

Target shapes come from ONNX shape inference (already run by the loader), which resolves
Reshape's 0/-1 rules, Squeeze/Unsqueeze axes in attributes or inputs, and Flatten's axis.
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, tensor

from .. import builders as b
from ..importer import Importer, handler


@handler("Reshape", "Flatten", "Squeeze", "Unsqueeze", any_dtype=True)
def reshape(imp: Importer, node: onnx.NodeProto) -> list:
    out_shape = imp.shape(node.output[0])
    return [b.reshape(imp.value(node.input[0]), out_shape)]


@handler("Transpose", any_dtype=True)
def transpose(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    perm = list(imp.attrs(node).get("perm", list(reversed(range(rank)))))
    out_shape = [shape[p] for p in perm]
    # Output dim j reads input dim perm[j]: the input map sends input dim perm[j] to loop dim j.
    inverse = [0] * rank
    for j, p in enumerate(perm):
        inverse[p] = j
    d = b.dims(rank)
    return [b.generic([x], [b.affine_map(rank, [d[inverse[i]] for i in range(rank)])], b.empty(out_shape, b.elem_of(x)),
                      b.affine_map(rank, d), [b.PARALLEL] * rank, lambda v, _: v)]


@handler("Concat", any_dtype=True)
def concat(imp: Importer, node: onnx.NodeProto) -> list:
    values = [imp.value(n) for n in node.input if n]
    out_shape = imp.shape(node.output[0])
    rank = len(out_shape)
    axis = int(imp.attrs(node)["axis"]) % rank
    result = b.empty(out_shape, b.elem_of(values[0]))
    offset = 0
    for v in values:
        shape = b.shape_of(v)
        if 0 in shape:  # a zero-size input adds nothing (and its offset may equal the dimension)
            continue
        offsets = [0] * rank
        offsets[axis] = offset
        result = tensor.InsertSliceOp(v, result, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                      ir.DenseI64ArrayAttr.get(list(shape)),
                                      ir.DenseI64ArrayAttr.get([1] * rank)).result
        offset += shape[axis]
    return [result]


@handler("Pad", any_dtype=True)
def pad(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise imp.error(f"Pad mode '{mode}' is not supported (only 'constant')")
    x = imp.value(node.input[0])
    rank = len(b.shape_of(x))
    value = 0.0
    if imp.opset < 11:
        pads = list(attrs["pads"])
        value = float(attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in imp.require_const(node.input[1], "Pad's pads")]
        if len(node.input) > 2 and node.input[2]:
            value = float(np.asarray(imp.require_const(node.input[2], "Pad's constant_value")).reshape(()))
    axes = list(range(rank))
    if len(node.input) > 3 and node.input[3]:
        axes = [int(a) % rank for a in imp.require_const(node.input[3], "Pad's axes")]
    low, high = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        low[axis], high[axis] = pads[i], pads[i + len(axes)]
    if min(low + high) < 0:
        # Negative pads remove elements: crop first, then pad with what is positive.
        shape = b.shape_of(x)
        offsets = [max(0, -lo) for lo in low]
        sizes = [s + min(0, lo) + min(0, hi) for s, lo, hi in zip(shape, low, high)]
        x = tensor.ExtractSliceOp(b.tensor_type(sizes, b.elem_of(x)), x, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                  ir.DenseI64ArrayAttr.get(sizes), ir.DenseI64ArrayAttr.get([1] * rank)).result
        low, high = [max(0, lo) for lo in low], [max(0, hi) for hi in high]
    return [b.pad(x, low, high, value)]


@handler("Constant")
def constant(imp: Importer, node: onnx.NodeProto) -> list:
    # The loader folds every Constant node into a constant value; this is reached only for
    # a Constant it could not read.
    raise imp.error("Constant node without a value the loader could read")


@handler("Shape", "Size", any_dtype=True)
def shape_of(imp: Importer, node: onnx.NodeProto) -> list:
    """The loader folds these for every static tensor; this covers what it left (int64 constants)."""
    full = np.array(imp.shape(node.input[0]), dtype=np.int64)
    if node.op_type == "Size":
        return [imp.pool.constant(np.array(int(np.prod(full)), dtype=np.int64), node.output[0])]
    attrs = imp.attrs(node)
    return [imp.pool.constant(full[attrs.get("start", 0):attrs.get("end", None)], node.output[0])]


@handler("ConstantOfShape", any_dtype=True)
def constant_of_shape(imp: Importer, node: onnx.NodeProto) -> list:
    """Output shape from shape inference (a run-time shape input must have a static value)."""
    value = imp.attrs(node).get("value")
    array = onnx.numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    elem = b.numpy_element(array.dtype)
    if elem is None:
        raise imp.error(f"ConstantOfShape value of dtype {array.dtype} is not supported")
    return [b.fill(imp.shape(node.output[0]), array[0].item(), elem)]


@handler("Range", any_dtype=True)
def range_(imp: Importer, node: onnx.NodeProto) -> list:
    """start + i * delta for i < the length that shape inference gives (run-time start and delta
    are read as scalars; the length must be static)."""
    (length,) = imp.shape(node.output[0])
    start, delta = imp.value(node.input[0]), imp.value(node.input[2])
    elem = b.elem_of(start)
    start, delta = b.reshape(start, ()), b.reshape(delta, ())

    def body(s, dl, _):
        i = b.loop_index(0)
        if b.is_float(elem):
            step = arith.sitofp(elem, arith.index_cast(b.i64(), i))
            return arith.addf(s, arith.mulf(step, dl))
        return arith.addi(s, arith.muli(arith.index_cast(elem, i), dl))

    zero = b.affine_map(1, [])
    return [b.generic([start, delta], [zero, zero], b.empty([length], elem), b.affine_map(1, b.dims(1)),
                      [b.PARALLEL], body)]


@handler("Trilu", any_dtype=True)
def trilu(imp: Importer, node: onnx.NodeProto) -> list:
    """Keep j - i >= k (upper) or j - i <= k (lower) in the last two dims, zero elsewhere."""
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    k_name = node.input[1] if len(node.input) > 1 else ""
    k = int(np.asarray(imp.const(k_name)).reshape(())) if imp.const(k_name) is not None else 0
    offset = None
    if k_name and imp.const(k_name) is None:  # k read at run time
        k_scalar = tensor.extract(b.reshape(imp.value(k_name), ()), [])
        offset = arith.index_cast(b.index(), k_scalar)
    upper = int(imp.attrs(node).get("upper", 1))

    def body(v, _):
        i, j = b.loop_index(rank - 2), b.loop_index(rank - 1)
        diff = arith.subi(j, i)
        pred = arith.CmpIPredicate.sge if upper else arith.CmpIPredicate.sle
        keep = arith.cmpi(pred, diff, offset if offset is not None else arith.constant(b.index(), k))
        return arith.select(keep, v, b.scalar(0, b.elem_of(x)))

    d = b.dims(rank)
    return [b.generic([x], [b.affine_map(rank, d)], b.empty(shape, b.elem_of(x)), b.affine_map(rank, d),
                      [b.PARALLEL] * rank, body)]
