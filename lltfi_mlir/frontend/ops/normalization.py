"""Softmax, LogSoftmax, ReduceMean, BatchNormalization (inference) and LRN."""

from __future__ import annotations

import numpy as np
import onnx
from mlir.dialects import arith, math

from .. import builders as b
from ..importer import Importer, handler


def _reduce_middle(x3, init_value, combine):
    """Reduce dim 1 of an (outer, A, inner) tensor to (outer, inner)."""
    outer, _, inner = b.shape_of(x3)
    d = b.dims(3)
    return b.generic([x3], [b.affine_map(3, d)], b.fill((outer, inner), init_value),
                     b.affine_map(3, [d[0], d[2]]), [b.PARALLEL, b.REDUCTION, b.PARALLEL],
                     lambda v, acc: combine(acc, v))


@handler("Softmax", "LogSoftmax")
def softmax(imp: Importer, node: onnx.NodeProto) -> list:
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    legacy = imp.opset < 13
    axis = int(imp.attrs(node).get("axis", 1 if legacy else -1)) % max(rank, 1)
    outer = int(np.prod(shape[:axis]))
    if legacy:  # coerced to 2-D at `axis`
        middle, inner = int(np.prod(shape[axis:])), 1
    else:
        middle, inner = shape[axis], int(np.prod(shape[axis + 1:]))
    x3 = b.reshape(x, (outer, middle, inner))
    peak = _reduce_middle(x3, float("-inf"), arith.maximumf)
    shifted = b.elementwise([x3, b.reshape(peak, (outer, 1, inner))], lambda v, p: arith.subf(v, p))
    exps = b.elementwise([shifted], lambda v: math.exp(v))
    total = b.reshape(_reduce_middle(exps, 0.0, arith.addf), (outer, 1, inner))
    if node.op_type == "Softmax":
        y = b.elementwise([exps, total], lambda e, s: arith.divf(e, s))
    else:
        y = b.elementwise([shifted, total], lambda v, s: arith.subf(v, math.log(s)))
    return [b.reshape(y, shape)]


@handler("ReduceMean")
def reduce_mean(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    if imp.opset >= 18:
        axes = None
        if len(node.input) > 1 and node.input[1]:
            axes = [int(a) for a in imp.require_const(node.input[1], "ReduceMean's axes")]
    else:
        axes = attrs.get("axes")
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    axes = sorted({int(a) % rank for a in axes})
    kept = [i for i in range(rank) if i not in axes]
    d = b.dims(rank)
    reduced_shape = [shape[i] for i in kept]
    total = b.generic([x], [b.affine_map(rank, d)], b.fill(reduced_shape, 0.0),
                      b.affine_map(rank, [d[i] for i in kept]),
                      [b.REDUCTION if i in axes else b.PARALLEL for i in range(rank)],
                      lambda v, acc: arith.addf(acc, v))
    count = float(np.prod([shape[i] for i in axes]))
    mean = b.elementwise([total], lambda s: arith.divf(s, b.scalar(count)))
    return [b.reshape(mean, imp.shape(node.output[0]))]


def _per_channel(imp: Importer, name: str, rank: int):
    """A (C,) parameter as a (C, 1, ...) tensor that broadcasts against (N, C, ...)."""
    value = imp.const(name)
    if value is not None:
        return imp.pool.constant(_channel_shaped(value.astype(np.float32), rank), name)
    v = imp.value(name)
    if len(b.shape_of(v)) != 1:  # spatial=0 (opset < 9): already (C, D1, ...)
        return v
    return b.reshape(v, b.shape_of(v) + (1,) * (rank - 2))


def _channel_shaped(value: np.ndarray, rank: int) -> np.ndarray:
    """(C,) -> (C, 1, ...); a (C, D1, ...) parameter of spatial=0 (opset < 9) already broadcasts."""
    return value.reshape((-1,) + (1,) * (rank - 2)) if value.ndim <= 1 else value


@handler("BatchNormalization")
def batch_norm(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    if attrs.get("training_mode", 0) or len([o for o in node.output if o]) > 1:
        raise imp.error("BatchNormalization in training mode is not supported (inference only)")
    eps = float(attrs.get("epsilon", 1e-5))
    x = imp.value(node.input[0])
    rank = len(b.shape_of(x))
    params = [imp.const(n) for n in node.input[1:5]]
    if all(p is not None for p in params):
        # Folded into one multiply-add per element, as inference runtimes do.
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        mul = scale / np.sqrt(var + eps)
        add = bias - mean * mul
        mul_v = imp.pool.constant(_channel_shaped(mul.astype(np.float32), rank), node.name + "_scale")
        add_v = imp.pool.constant(_channel_shaped(add.astype(np.float32), rank), node.name + "_shift")
        return [b.elementwise([x, mul_v, add_v], lambda v, m, a: arith.addf(arith.mulf(v, m), a))]
    scale, bias, mean, var = (_per_channel(imp, n, rank) for n in node.input[1:5])

    def body(v, s, t, mu, var_):
        denom = math.sqrt(arith.addf(var_, b.scalar(eps)))
        return arith.addf(arith.mulf(arith.divf(arith.subf(v, mu), denom), s), t)

    return [b.elementwise([x, scale, bias, mean, var], body)]


@handler("LRN")
def lrn(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    size = int(attrs["size"])
    alpha, beta = float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75))
    bias = float(attrs.get("bias", 1.0))
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    squares = b.elementwise([x], lambda v: arith.mulf(v, v))
    low, high = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = b.pad(squares, [0, low] + [0] * (rank - 2), [0, high] + [0] * (rank - 2), 0.0)
    num = rank + 1  # n, c, spatial..., window
    d = b.dims(num)
    window = d[rank]
    sums = b.generic([padded, b.empty([size])],
                     [b.affine_map(num, [d[0], d[1] + window] + d[2:rank]), b.affine_map(num, [window])],
                     b.fill(shape, 0.0), b.affine_map(num, d[:rank]),
                     [b.PARALLEL] * rank + [b.REDUCTION], lambda v, _w, acc: arith.addf(acc, v))

    def body(v, s):
        base = arith.addf(b.scalar(bias), arith.mulf(b.scalar(alpha / size), s))
        return arith.divf(v, math.powf(base, b.scalar(beta)))

    return [b.elementwise([x, sums], body)]
