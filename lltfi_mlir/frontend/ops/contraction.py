"""Einsum and ConvTranspose as single linalg.generic contractions (same lowering in both codegen modes).

Einsum: one loop per distinct subscript letter (ellipsis dims included), output letters parallel and
the others reductions in order of first appearance; each output element is `acc + a * b (* c ...)`
from 0. ConvTranspose is computed in gather form, like Conv: output element y[n, m, o] accumulates
`acc + x[n, c, i] * w[c, m, k]` over (c, k) in index order for the input positions i with
`i * stride + k * dilation - pad = o`; taps that hit no input position are skipped (an scf.if around
the multiply-add), so no multiply by an inserted zero ever becomes a fault site.
"""

from __future__ import annotations

import re
import string

import onnx
from mlir import ir
from mlir.dialects import arith, scf, tensor

from .. import builders as b
from .. import scalars as sc
from ..importer import Importer, handler
from .windows import window_attrs


def _parse_einsum(imp: Importer, equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Operand subscripts and output subscripts with every '...' spelled out as fresh capital letters."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise imp.error(f"Einsum equation '{equation}' names {len(terms)} operands, the node has {len(ranks)}")
    if not re.fullmatch(r"[a-zA-Z.,>\-]*", equation):
        raise imp.error(f"Einsum equation '{equation}' has characters other than letters, ',', '...' and '->'")
    spare = [c for c in string.ascii_uppercase if c not in equation]
    ellipsis_rank = max((rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks) if "..." in t),
                        default=0)
    ell = "".join(spare[:ellipsis_rank])
    expanded = []
    for term, rank in zip(terms, ranks):
        if "..." in term:
            own = rank - len(term.replace("...", ""))
            term = term.replace("...", ell[ellipsis_rank - own:])
        if len(term) != rank:
            raise imp.error(f"Einsum subscripts '{term}' do not match an operand of rank {rank}")
        expanded.append(term)
    if arrow:
        out = rhs.replace("...", ell)
    else:  # implicit output: ellipsis dims, then the letters used once, alphabetically
        counts = {c: "".join(expanded).count(c) for c in "".join(expanded)}
        out = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    if len(set(out)) != len(out) or any(c not in "".join(expanded) for c in out):
        raise imp.error(f"Einsum output subscripts '{rhs}' are invalid")
    return expanded, out


@handler("Einsum", any_dtype=True)
def einsum(imp: Importer, node: onnx.NodeProto) -> list:
    equation = imp.attrs(node)["equation"]
    equation = equation.decode() if isinstance(equation, bytes) else equation
    operands = [imp.value(n) for n in node.input]
    shapes = [b.shape_of(v) for v in operands]
    terms, out = _parse_einsum(imp, equation, [len(s) for s in shapes])
    letters = list(out) + [c for c in dict.fromkeys("".join(terms)) if c not in out]
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for c, n in zip(term, shape):
            if n != 1 or c not in sizes:
                if sizes.get(c, 1) not in (1, n):
                    raise imp.error(f"Einsum dimension '{c}' has sizes {sizes[c]} and {n}")
                sizes[c] = n if n != 1 else sizes.get(c, 1)
    num = len(letters)
    d = {c: ir.AffineDimExpr.get(i) for i, c in enumerate(letters)}
    maps = [b.affine_map(num, [b.const_expr(0) if n == 1 and sizes[c] != 1 else d[c] for c, n in zip(term, shape)])
            for term, shape in zip(terms, shapes)]
    out_shape = [sizes[c] for c in out]
    iterators = [b.PARALLEL if c in out else b.REDUCTION for c in letters]

    def body(*args):
        *values, acc = args
        product = values[0]
        for v in values[1:]:
            product = sc.mul(product, v)
        return sc.add(acc, product)

    elem = b.elem_of(operands[0])
    return [b.generic(operands, maps, b.fill(out_shape, 0, elem), b.affine_map(num, [d[c] for c in out]),
                      iterators, body)]


def _transpose_pads(attrs: dict, in_spatial, out_spatial, kernel, strides, dilations) -> list[int]:
    """Leading pads of each spatial axis (the only ones the gather form needs)."""
    rank = len(kernel)
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if "output_shape" in attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_padding = list(attrs.get("output_padding", [0] * rank))
        low = []
        for i in range(rank):
            total = (strides[i] * (in_spatial[i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1
                     - out_spatial[i])
            low.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        return low
    if auto_pad == "VALID":
        return [0] * rank
    return list(attrs.get("pads", [0] * (2 * rank)))[:rank]


@handler("ConvTranspose")
def conv_transpose(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    w = imp.value(node.input[1])
    x_shape, w_shape = b.shape_of(x), b.shape_of(w)
    rank = len(x_shape) - 2
    if rank < 1:
        raise imp.error(f"ConvTranspose input must have rank >= 3, got {x_shape}")
    group = int(attrs.get("group", 1))
    n, channels = x_shape[:2]
    if w_shape[0] != channels or channels % group:
        raise imp.error(f"ConvTranspose channels {channels} / weights {w_shape} do not match group={group}")
    cg, mg = channels // group, w_shape[1]
    kernel = list(attrs.get("kernel_shape", w_shape[2:]))
    strides, dilations = window_attrs(attrs, rank, kernel)
    out_shape = tuple(imp.shape(node.output[0]))
    low = _transpose_pads(attrs, x_shape[2:], out_shape[2:], kernel, strides, dilations)

    acc_shape = (n, group, mg) + out_shape[2:]
    acc_rank = len(acc_shape)
    if len(node.input) > 2 and node.input[2]:
        bias = b.reshape(imp.value(node.input[2]), (group, mg))
        init = b.generic([bias], [b.affine_map(acc_rank, [ir.AffineDimExpr.get(1), ir.AffineDimExpr.get(2)])],
                         b.empty(acc_shape), b.affine_map(acc_rank, b.dims(acc_rank)),
                         [b.PARALLEL] * acc_rank, lambda v, _: v)
    else:
        init = b.fill(acc_shape, 0.0)

    # Loop dims: n, g, m, o_0..o_{r-1}, c, k_0..k_{r-1}; x is read with computed indices.
    num = 3 + rank + 1 + rank
    d = b.dims(num)
    c_dim, k_dims = d[3 + rank], d[4 + rank:]
    w = b.reshape(w, (group, cg, mg) + tuple(w_shape[2:]))
    w_map = b.affine_map(num, [d[1], c_dim, d[2]] + k_dims)
    index = ir.IndexType.get()

    def const(v):
        return arith.ConstantOp(index, v).result

    def body(wv, acc):
        positions, valid = [], None
        for i in range(rank):
            o, k = b.loop_index(3 + i), b.loop_index(4 + rank + i)
            shifted = arith.subi(arith.addi(o, const(low[i])), arith.muli(k, const(dilations[i])))
            q = arith.divsi(shifted, const(strides[i]))
            ok = arith.andi(arith.cmpi(arith.CmpIPredicate.sge, shifted, const(0)),
                            arith.cmpi(arith.CmpIPredicate.slt, q, const(x_shape[2 + i])))
            if strides[i] != 1:
                exact = arith.cmpi(arith.CmpIPredicate.eq, arith.remsi(shifted, const(strides[i])), const(0))
                ok = arith.andi(ok, exact)
            valid = ok if valid is None else arith.andi(valid, ok)
            positions.append(q)
        # (linalg.index must stay directly in the generic's body, outside the scf.if)
        batch, channel = b.loop_index(0), arith.addi(arith.muli(b.loop_index(1), const(cg)), b.loop_index(3 + rank))
        branch = scf.IfOp(valid, [b.f32()], has_else=True)
        with ir.InsertionPoint(branch.then_block):
            xv = tensor.extract(x, [batch, channel] + positions)
            scf.YieldOp([arith.addf(acc, arith.mulf(xv, wv))])
        with ir.InsertionPoint(branch.else_block):
            scf.YieldOp([acc])
        return branch.results[0]

    iterators = [b.PARALLEL] * (3 + rank) + [b.REDUCTION] * (1 + rank)
    y = b.generic([w], [w_map], init, b.affine_map(num, d[:3 + rank]), iterators, body)
    return [b.reshape(y, out_shape)]
