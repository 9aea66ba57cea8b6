"""Gemm and MatMul as linalg.generic contractions (`acc + a * b`, in the paper's fmul/fadd pattern)."""

from __future__ import annotations

import numpy as np
import onnx
from mlir.dialects import arith

from .. import builders as b
from ..importer import Importer, handler


@handler("Gemm")
def gemm(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
    a, w = imp.value(node.input[0]), imp.value(node.input[1])
    out_shape = imp.shape(node.output[0])
    d = b.dims(3)  # m, n, k
    a_map = b.affine_map(3, [d[2], d[0]] if trans_a else [d[0], d[2]])
    w_map = b.affine_map(3, [d[1], d[2]] if trans_b else [d[2], d[1]])
    has_c = len(node.input) > 2 and node.input[2] and beta != 0.0
    if has_c:
        c_name = node.input[2]
        c_const = imp.const(c_name)
        if c_const is not None:
            c = imp.pool.constant((beta * c_const.astype(np.float32)).astype(np.float32), c_name)
            init = b.elementwise([c], lambda v: v, out_shape)
        else:
            scaled = beta != 1.0
            init = b.elementwise([imp.value(c_name)],
                                 lambda v: arith.mulf(v, b.scalar(beta)) if scaled else v, out_shape)
    else:
        init = b.fill(out_shape, 0.0)

    def body(av, wv, acc):
        prod = arith.mulf(av, wv)
        if alpha != 1.0:
            prod = arith.mulf(prod, b.scalar(alpha))
        return arith.addf(acc, prod)

    out_map = b.affine_map(3, [d[0], d[1]])
    return [b.generic([a, w], [a_map, w_map], init, out_map, [b.PARALLEL, b.PARALLEL, b.REDUCTION], body)]


@handler("MatMul")
def matmul(imp: Importer, node: onnx.NodeProto) -> list:
    a, w = imp.value(node.input[0]), imp.value(node.input[1])
    a_shape, w_shape = b.shape_of(a), b.shape_of(w)
    out_shape = imp.shape(node.output[0])
    if len(a_shape) == 1:
        a, a_shape = b.reshape(a, (1,) + a_shape), (1,) + a_shape
    if len(w_shape) == 1:
        w, w_shape = b.reshape(w, w_shape + (1,)), w_shape + (1,)
    batch = b.broadcast_shape(a_shape[:-2], w_shape[:-2])
    nb = len(batch)
    num = nb + 3  # batch..., m, n, k
    d = b.dims(num)
    m, n, k = d[nb], d[nb + 1], d[nb + 2]

    def operand_map(shape, inner):
        offset = nb - (len(shape) - 2)
        exprs = [b.const_expr(0) if size == 1 and batch[offset + i] != 1 else d[offset + i]
                 for i, size in enumerate(shape[:-2])]
        return b.affine_map(num, exprs + inner)

    full_shape = batch + (a_shape[-2], w_shape[-1])
    y = b.generic([a, w], [operand_map(a_shape, [m, k]), operand_map(w_shape, [k, n])],
                  b.fill(full_shape, 0.0), b.affine_map(num, d[:nb] + [m, n]),
                  [b.PARALLEL] * (nb + 2) + [b.REDUCTION],
                  lambda av, wv, acc: arith.addf(acc, arith.mulf(av, wv)))
    return [b.reshape(y, out_shape)]
