"""Softmax, LogSoftmax, BatchNormalization (inference), LRN, and Layer/Instance/Group normalization.

The statistics of the last three follow the ONNX definitions operation by operation (the function
bodies of LayerNormalization and GroupNormalization, onnx.reference for InstanceNormalization), each
sum accumulated in index order.
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir.dialects import arith, math

from .. import builders as b
from ..importer import Importer, handler


def _reduce_middle(x, init_value, combine):
    """Reduce dim 1 of an (outer, A, inner) or (outer, A) tensor to (outer, inner) or (outer,)."""
    shape = b.shape_of(x)
    rank = len(shape)
    d = b.dims(rank)
    kept = [d[0]] + d[2:]
    iterators = [b.PARALLEL, b.REDUCTION] + [b.PARALLEL] * (rank - 2)
    return b.generic([x], [b.affine_map(rank, d)], b.fill(tuple(shape[:1] + shape[2:]), init_value),
                     b.affine_map(rank, kept), iterators, lambda v, acc: combine(acc, v))


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
    # Softmax over the last axis (attention) has inner = 1: no unit dim then, so that the elementwise
    # loops' innermost loop runs along the axis and vectorizes (a loop of one iteration does not).
    view = (outer, middle, inner) if inner != 1 else (outer, middle)
    kept = (outer, 1, inner) if inner != 1 else (outer, 1)
    x3 = b.reshape(x, view)
    peak = _reduce_middle(x3, float("-inf"), arith.maximumf)
    shifted = b.elementwise([x3, b.reshape(peak, kept)], lambda v, p: arith.subf(v, p))
    exps = b.elementwise([shifted], lambda v: math.exp(v))
    total = b.reshape(_reduce_middle(exps, 0.0, arith.addf), kept)
    if node.op_type == "Softmax":
        y = b.elementwise([exps, total], lambda e, s: arith.divf(e, s))
    else:
        y = b.elementwise([shifted, total], lambda v, s: arith.subf(v, math.log(s)))
    return [b.reshape(y, shape)]


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


def _row_sums(x2, square: bool = False):
    """(rows, count) -> (rows,): each row's sum (of squares), accumulated in index order from 0."""
    rows, _ = b.shape_of(x2)
    d = b.dims(2)
    if square:
        body = lambda v, acc: arith.addf(acc, arith.mulf(v, v))  # noqa: E731
    else:
        body = lambda v, acc: arith.addf(acc, v)  # noqa: E731
    return b.generic([x2], [b.affine_map(2, d)], b.fill((rows,), 0.0), b.affine_map(2, [d[0]]),
                     [b.PARALLEL, b.REDUCTION], body)


def _mean_and_std(x2, eps: float, two_pass: bool):
    """Per-row mean and sqrt(var + eps) of a (rows, count) tensor, as (rows, 1) tensors.

    two_pass: var = mean((x - mean)^2) (onnx.reference's InstanceNormalization); otherwise
    var = mean(x*x) - mean*mean (the function bodies of LayerNormalization and GroupNormalization).
    """
    rows, count = b.shape_of(x2)
    n = b.scalar(float(count))
    mean = b.reshape(b.elementwise([_row_sums(x2)], lambda s: arith.divf(s, n)), (rows, 1))
    if two_pass:
        dev = b.elementwise([x2, mean], lambda v, m: arith.subf(v, m))
        var = b.elementwise([_row_sums(dev, square=True)], lambda s: arith.divf(s, n))
    else:
        mean_sq = b.elementwise([_row_sums(x2, square=True)], lambda s: arith.divf(s, n))
        var = b.elementwise([mean_sq, b.reshape(mean, (rows,))],
                            lambda q, m: arith.subf(q, arith.mulf(m, m)))
    std = b.elementwise([var], lambda v: math.sqrt(arith.addf(v, b.scalar(eps))))
    return mean, b.reshape(std, (rows, 1))


def _affine(imp: Importer, normalized, shape, scale_name: str, bias_name: str, param_shape):
    """normalized * scale (+ bias), the parameters broadcast from `param_shape` (numpy rules)."""
    def param(name):
        value = imp.const(name)
        if value is not None:
            return imp.pool.constant(value.astype(np.float32).reshape(param_shape), name)
        return b.reshape(imp.value(name), param_shape)

    y = b.reshape(normalized, shape)
    scale = param(scale_name)
    if bias_name:
        return b.elementwise([y, scale, param(bias_name)], lambda v, s, t: arith.addf(arith.mulf(v, s), t),
                             shape)
    return b.elementwise([y, scale], lambda v, s: arith.mulf(v, s), shape)


def _optional(node: onnx.NodeProto, index: int) -> str:
    return node.input[index] if len(node.input) > index else ""


@handler("LayerNormalization")
def layer_norm(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    rank = len(shape)
    axis = int(attrs.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise imp.error(f"LayerNormalization axis {attrs.get('axis')} is out of range for rank {rank}")
    eps = float(attrs.get("epsilon", 1e-5))
    outer, inner = int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))
    x2 = b.reshape(x, (outer, inner))
    mean, std = _mean_and_std(x2, eps, two_pass=False)
    normalized = b.elementwise([x2, mean, std], lambda v, m, s: arith.divf(arith.subf(v, m), s))
    scale_shape = imp.shape(node.input[1])
    y = _affine(imp, normalized, shape, node.input[1], _optional(node, 2), scale_shape)
    stats_shape = tuple(shape[:axis]) + (1,) * (rank - axis)
    outputs = [y, None, None]
    if len(node.output) > 1 and imp.is_used(node.output[1]):
        outputs[1] = b.reshape(mean, stats_shape)
    if len(node.output) > 2 and imp.is_used(node.output[2]):
        one = b.scalar(1.0)
        outputs[2] = b.reshape(b.elementwise([std], lambda s: arith.divf(one, s)), stats_shape)
    return outputs[:max(1, len(node.output))]


@handler("InstanceNormalization")
def instance_norm(imp: Importer, node: onnx.NodeProto) -> list:
    eps = float(imp.attrs(node).get("epsilon", 1e-5))
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    if len(shape) < 3:
        raise imp.error(f"InstanceNormalization input must have rank >= 3, got {shape}")
    n, c = shape[:2]
    x2 = b.reshape(x, (n * c, int(np.prod(shape[2:]))))
    mean, std = _mean_and_std(x2, eps, two_pass=True)
    stats = (n, c) + (1,) * (len(shape) - 2)
    mean, std = b.reshape(mean, stats), b.reshape(std, stats)
    scale, bias = (_per_channel(imp, name, len(shape)) for name in node.input[1:3])

    def body(v, m, sd, s, t):  # onnx.reference: scale * (x - mean) / std + bias
        return arith.addf(arith.divf(arith.mulf(s, arith.subf(v, m)), sd), t)

    return [b.elementwise([x, mean, std, scale, bias], body, shape)]


@handler("GroupNormalization")
def group_norm(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    eps = float(attrs.get("epsilon", 1e-5))
    groups = int(attrs["num_groups"])
    x = imp.value(node.input[0])
    shape = b.shape_of(x)
    n, c = shape[:2]
    if groups <= 0 or c % groups:
        raise imp.error(f"GroupNormalization: {c} channels cannot be split into {groups} groups")
    rank = len(shape)
    x2 = b.reshape(x, (n * groups, int(np.prod(shape[1:])) // groups))
    mean, std = _mean_and_std(x2, eps, two_pass=False)
    normalized = b.elementwise([x2, mean, std], lambda v, m, s: arith.divf(arith.subf(v, m), s))
    if imp.opset < 21:  # opset 18: one scale and bias per group
        if imp.shape(node.input[1]) != (groups,):
            raise imp.error(f"GroupNormalization-18 scale must have shape ({groups},)")
        grouped = (n, groups, c // groups) + tuple(shape[2:])
        y = _affine(imp, normalized, grouped, node.input[1], node.input[2], (groups, 1) + (1,) * (rank - 2))
        return [b.reshape(y, shape)]
    return [_affine(imp, normalized, shape, node.input[1], node.input[2], (c,) + (1,) * (rank - 2))]
