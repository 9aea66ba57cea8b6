"""Gemm and MatMul as linalg.generic contractions (`acc + a * b`, in the paper's fmul/fadd pattern)."""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, memref, vector

from .. import builders as b
from .. import tiled
from ..importer import Importer, handler


@handler("Gemm")
def gemm(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    trans_a, trans_b = int(attrs.get("transA", 0)), int(attrs.get("transB", 0))
    a = imp.value(node.input[0])
    w_const = imp.const(node.input[1])
    # A constant B is packed at compile time instead (optimized): never materialize (and ship) it twice.
    if not imp.optimized or w_const is None or w_const.ndim != 2:
        w_const = None
    w = None if w_const is not None else imp.value(node.input[1])
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

    if imp.optimized:
        if w_const is not None:  # packed in column panels at compile time (B^T too)
            b_kn = w_const.astype(np.float32, copy=False)
            constant = (b_kn.T if trans_b else b_kn, node.input[1], bool(trans_b))
            return [_tiled_matmul(imp, a, None, init, out_shape, trans_a, alpha, constant_b=constant)]
        w_kn = _transpose(w) if trans_b else w
        return [_tiled_matmul(imp, a, w_kn, init, out_shape, trans_a, alpha)]

    def body(av, wv, acc):
        prod = arith.mulf(av, wv)
        if alpha != 1.0:
            prod = arith.mulf(prod, b.scalar(alpha))
        return arith.addf(acc, prod)

    out_map = b.affine_map(3, [d[0], d[1]])
    return [b.generic([a, w], [a_map, w_map], init, out_map, [b.PARALLEL, b.PARALLEL, b.REDUCTION], body)]


@handler("MatMul")
def matmul(imp: Importer, node: onnx.NodeProto) -> list:
    a = imp.value(node.input[0])
    a_shape, out_shape = b.shape_of(a), imp.shape(node.output[0])
    w_const = imp.const(node.input[1]) if imp.optimized else None
    if w_const is not None and (w_const.ndim != 2 or w_const.dtype != np.float32 or len(a_shape) < 2):
        w_const = None
    # A constant 2-D B is packed in column panels at compile time instead: never shipped twice.
    w = None if w_const is not None else imp.value(node.input[1])
    w_shape = w_const.shape if w_const is not None else b.shape_of(w)
    if imp.optimized and len(w_shape) == 2 and len(a_shape) >= 2:
        # One B for every batch: the batches' rows are one M (a row-major view), so tiles fill up and
        # B streams once per row block, not once per batch. ViT's projections are [197, 1, 768] x B:
        # 197 batches of one row read all of B each (19 GFLOP/s). Each output element keeps its
        # reduction over k; only which tile computes it changes.
        rows = int(np.prod(a_shape[:-1]))
        flat = (rows, w_shape[-1])
        constant = (w_const, node.input[1], False) if w_const is not None else None
        y = _tiled_matmul(imp, b.reshape(a, (rows, a_shape[-1])), w, b.fill(flat, 0.0), flat, False, 1.0,
                          constant_b=constant)
        return [b.reshape(y, out_shape)]
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
    if imp.optimized:
        y = _tiled_matmul(imp, a, w, b.fill(full_shape, 0.0), full_shape, False, 1.0)
        return [b.reshape(y, out_shape)]
    y = b.generic([a, w], [operand_map(a_shape, [m, k]), operand_map(w_shape, [k, n])],
                  b.fill(full_shape, 0.0), b.affine_map(num, d[:nb] + [m, n]),
                  [b.PARALLEL] * (nb + 2) + [b.REDUCTION],
                  lambda av, wv, acc: arith.addf(acc, arith.mulf(av, wv)))
    return [b.reshape(y, out_shape)]


def _transpose(value: ir.Value) -> ir.Value:
    rows, cols = b.shape_of(value)
    d = b.dims(2)
    return b.generic([value], [b.affine_map(2, [d[1], d[0]])], b.empty((cols, rows)), b.affine_map(2, d),
                     [b.PARALLEL] * 2, lambda v, _: v)


def _tiled_matmul(imp: Importer, a: ir.Value, w: ir.Value | None, init: ir.Value, out_shape: tuple[int, ...],
                  trans_a: bool, alpha: float, constant_b: tuple[np.ndarray, str, bool] | None = None) -> ir.Value:
    """Rows = M (broadcast from `a`), columns = N (vectors of `w`, laid out [..., K, N]; or of a
    constant 2-D B given as (array (K, N), its initializer's name, whether B is that initializer's
    transpose), packed in column panels under the initializer's name).

    Per output element: init, then `acc + a * w` (times alpha when alpha != 1) over k: the
    reference generic's order and operand order.
    """
    out_shape = tuple(out_shape)
    batch = out_shape[:-2]
    nb = len(batch)
    a_shape = b.shape_of(a)
    k_extent = a_shape[-2] if trans_a else a_shape[-1]
    ab, ib = tiled.as_buffer(a), tiled.as_buffer(init)
    out = tiled.new_buffer(out_shape)
    tile_rows, tile_vectors = imp.tile_policy.shape(out_shape[-2], out_shape[-1])
    panel = tile_vectors * imp.tile_policy.lanes  # a column block of the nest
    if constant_b is not None:
        # Row k of a panel follows row k - 1 in memory (builders.ColumnPanels).
        b_kn, name, transposed = constant_b
        assert not batch and b_kn.shape == (k_extent, out_shape[-1])
        wb = tiled.as_buffer(imp.pool.panels(b.ColumnPanels(b_kn, panel, transposed), name))
        w_shape = b_kn.shape
    else:
        wb, w_shape = tiled.as_buffer(w), b.shape_of(w)

    def batch_index(shape, ivs):
        offset = nb - (len(shape) - 2)
        return [tiled.index(0) if size == 1 and batch[offset + i] != 1 else ivs[offset + i]
                for i, size in enumerate(shape[:-2])]

    def load_vector(ivs, red, col0, width):
        if constant_b is None:
            return vector.load(tiled.vector_type(width), wb, batch_index(w_shape, ivs) + [red[0], col0])
        at = tiled.panel_index(col0, red[0], k_extent, panel, out_shape[-1])
        return vector.load(tiled.vector_type(width), wb, [at])

    def load_scalar(ivs, red, row):
        inner = [red[0], row] if trans_a else [row, red[0]]
        return memref.load(ab, batch_index(a_shape, ivs) + inner)

    def load_init(ivs, row, col0, width):
        return vector.load(tiled.vector_type(width), ib, list(ivs) + [row, col0])

    def store(ivs, row, col0, vec):
        vector.store(vec, out, list(ivs) + [row, col0])

    def step(acc, av, wv):
        prod = arith.mulf(av, wv)
        if alpha != 1.0:
            splat = ir.DenseElementsAttr.get_splat(wv.type, ir.FloatAttr.get(b.f32(), alpha))
            prod = arith.mulf(prod, arith.ConstantOp(wv.type, splat).result)
        return arith.addf(acc, prod)

    # B streams through the cache once per row block unless its column panels stay there: with more
    # than one row block and a B larger than the cache, sweep the row blocks inside each panel.
    row_blocks = -(-out_shape[-2] // tile_rows)
    columns_outside = row_blocks > 1 and 4 * k_extent * out_shape[-1] > tiled.CACHE_BYTES
    tiled.emit(tiled.Contraction(
        outer=list(batch), row_at=nb, rows=out_shape[-2], cols=out_shape[-1], reduction=[k_extent],
        load_vector=load_vector, load_scalar=load_scalar, load_init=load_init, store=store, step=step,
        columns_outside=columns_outside), imp.slots, imp.tile_policy)
    return tiled.as_tensor(out)
