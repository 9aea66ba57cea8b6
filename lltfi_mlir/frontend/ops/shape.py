"""Layout operators: reshapes become views, Transpose/Concat/Pad copy.

Target shapes come from ONNX shape inference (already run by the loader), which resolves
Reshape's 0/-1 rules, Squeeze/Unsqueeze axes in attributes or inputs, and Flatten's axis.
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import tensor

from .. import builders as b
from ..importer import Importer, handler


@handler("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(imp: Importer, node: onnx.NodeProto) -> list:
    out_shape = imp.shape(node.output[0])
    return [b.reshape(imp.value(node.input[0]), out_shape)]


@handler("Transpose")
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
    return [b.generic([x], [b.affine_map(rank, [d[inverse[i]] for i in range(rank)])], b.empty(out_shape),
                      b.affine_map(rank, d), [b.PARALLEL] * rank, lambda v, _: v)]


@handler("Concat")
def concat(imp: Importer, node: onnx.NodeProto) -> list:
    values = [imp.value(n) for n in node.input if n]
    out_shape = imp.shape(node.output[0])
    rank = len(out_shape)
    axis = int(imp.attrs(node)["axis"]) % rank
    result = b.empty(out_shape)
    offset = 0
    for v in values:
        shape = b.shape_of(v)
        offsets = [0] * rank
        offsets[axis] = offset
        result = tensor.InsertSliceOp(v, result, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                      ir.DenseI64ArrayAttr.get(list(shape)),
                                      ir.DenseI64ArrayAttr.get([1] * rank)).result
        offset += shape[axis]
    return [result]


@handler("Pad")
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
        x = tensor.ExtractSliceOp(b.tensor_type(sizes), x, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                  ir.DenseI64ArrayAttr.get(sizes), ir.DenseI64ArrayAttr.get([1] * rank)).result
        low, high = [max(0, lo) for lo in low], [max(0, hi) for hi in high]
    return [b.pad(x, low, high, value)]


@handler("Constant")
def constant(imp: Importer, node: onnx.NodeProto) -> list:
    # The loader folds every Constant node into a constant value; this is reached only for
    # a Constant it could not read.
    raise imp.error("Constant node without a value the loader could read")
