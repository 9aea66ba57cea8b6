"""LSTM, GRU and RNN: forward, reverse and bidirectional, with constant sequence lengths.

The time loop is unrolled at compile time (sequence lengths are static), so every step's matrix
products and gate arithmetic are ordinary linalg.generic ops under the node's location: a fault in
step t is a fault in that step's instructions. Per step and direction, as onnx.reference computes:
`gates = x_t W^T + h_{t-1} R^T + (Wb + Rb)` (each product accumulated `acc + a * w` in index order),
then the gate functions element-wise. A batch entry whose sequence length is shorter than the input
keeps its state after its last step, its later Y rows are zero, and a reverse direction starts from
its own last step (the ONNX rule). The input projections of all steps are one product up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, math, tensor

from .. import builders as b
from ..importer import Importer, handler

Activation = Callable[[ir.Value], ir.Value]


def _activation(imp: Importer, name: str, alpha: float | None, beta: float | None) -> Activation:
    one = lambda: b.scalar(1.0)  # noqa: E731
    if name == "Sigmoid":
        return lambda x: arith.divf(one(), arith.addf(one(), math.exp(arith.negf(x))))
    if name == "Tanh":
        return math.tanh
    if name == "Relu":
        return lambda x: arith.maximumf(x, b.scalar(0.0))
    if name == "HardSigmoid":
        a, c = (0.2 if alpha is None else alpha), (0.5 if beta is None else beta)
        return lambda x: arith.maximumf(b.scalar(0.0), arith.minimumf(one(), arith.addf(
            arith.mulf(b.scalar(a), x), b.scalar(c))))
    if name == "LeakyRelu":
        a = 0.01 if alpha is None else alpha
        return lambda x: arith.select(arith.cmpf(arith.CmpFPredicate.OLT, x, b.scalar(0.0)),
                                      arith.mulf(b.scalar(a), x), x)
    if name == "Affine":
        a, c = (1.0 if alpha is None else alpha), (0.0 if beta is None else beta)
        return lambda x: arith.addf(arith.mulf(b.scalar(a), x), b.scalar(c))
    if name == "ScaledTanh":
        a, c = (1.0 if alpha is None else alpha), (1.0 if beta is None else beta)
        return lambda x: arith.mulf(b.scalar(a), math.tanh(arith.mulf(b.scalar(c), x)))
    if name == "Softsign":
        return lambda x: arith.divf(x, arith.addf(one(), math.absf(x)))
    if name == "Softplus":
        return lambda x: math.log(arith.addf(math.exp(x), one()))
    raise imp.error(f"recurrent activation '{name}' is not supported")


@dataclass(frozen=True)
class Cell:
    kind: str              # "LSTM", "GRU" or "RNN"
    gates: int
    hidden: int
    clip: float | None
    linear_before_reset: bool = False


def _activations(imp: Importer, node: onnx.NodeProto, directions: int, defaults: list[str]) -> list[tuple]:
    attrs = imp.attrs(node)
    names = [n.decode() if isinstance(n, bytes) else n for n in attrs.get("activations", [])]
    names = names or defaults * directions
    if len(names) != len(defaults) * directions:
        raise imp.error(f"{node.op_type} expects {len(defaults) * directions} activations, got {len(names)}")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    acts = [_activation(imp, n, alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None)
            for i, n in enumerate(names)]
    per = len(defaults)
    return [tuple(acts[d * per:(d + 1) * per]) for d in range(directions)]


def _slice(value: ir.Value, offsets: list[int], sizes: list[int]) -> ir.Value:
    """A static slice, rank kept."""
    shape = b.shape_of(value)
    if list(offsets) == [0] * len(shape) and list(sizes) == list(shape):
        return value
    return tensor.ExtractSliceOp(b.tensor_type(sizes), value, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                 ir.DenseI64ArrayAttr.get(sizes), ir.DenseI64ArrayAttr.get([1] * len(shape))).result


def _insert(piece: ir.Value, dest: ir.Value, offsets: list[int]) -> ir.Value:
    sizes = list(b.shape_of(piece))
    return tensor.InsertSliceOp(piece, dest, [], [], [], ir.DenseI64ArrayAttr.get(offsets),
                                ir.DenseI64ArrayAttr.get(sizes), ir.DenseI64ArrayAttr.get([1] * len(sizes))).result


def _matmul_t(a: ir.Value, w: ir.Value) -> ir.Value:
    """(..., K) x (N, K)^T -> (..., N): `acc + a * w` over K in order, from 0."""
    a_shape, n = b.shape_of(a), b.shape_of(w)[0]
    rank = len(a_shape) + 1
    d = b.dims(rank)
    lead = d[:len(a_shape) - 1]
    return b.generic([a, w], [b.affine_map(rank, lead + [d[-1]]), b.affine_map(rank, [d[-2], d[-1]])],
                     b.fill(list(a_shape[:-1]) + [n], 0.0), b.affine_map(rank, lead + [d[-2]]),
                     [b.PARALLEL] * (rank - 1) + [b.REDUCTION], lambda x, y, acc: arith.addf(acc, arith.mulf(x, y)))


def _gate(value: ir.Value, index: int, hidden: int) -> ir.Value:
    """Gate `index` of a (batch, gates*hidden) tensor."""
    batch = b.shape_of(value)[0]
    return _slice(value, [0, index * hidden], [batch, hidden])


class _Direction:
    """The parameters of one direction, as tensors."""

    def __init__(self, imp: Importer, node: onnx.NodeProto, cell: Cell, d: int) -> None:
        self.imp, self.cell = imp, cell
        gh = cell.gates * cell.hidden
        self.w = self._param(node, 1, d)
        self.r = self._param(node, 2, d)
        bias = node.input[3] if len(node.input) > 3 else ""
        self.wb = self.rb = None
        if bias:
            full = self._param(node, 3, d)
            self.wb = b.reshape(_slice(b.reshape(full, (1, 2 * gh)), [0, 0], [1, gh]), (gh,))
            self.rb = b.reshape(_slice(b.reshape(full, (1, 2 * gh)), [0, gh], [1, gh]), (gh,))
        self.peep = self._param(node, 7, d) if cell.kind == "LSTM" and len(node.input) > 7 and node.input[7] else None

    def _param(self, node: onnx.NodeProto, index: int, d: int) -> ir.Value:
        name = node.input[index]
        value = self.imp.const(name)
        if value is not None:
            return self.imp.pool.constant(np.ascontiguousarray(value[d]).astype(np.float32), f"{name}_{d}")
        full = self.imp.value(name)
        shape = list(b.shape_of(full))
        return b.reshape(_slice(full, [d] + [0] * (len(shape) - 1), [1] + shape[1:]), shape[1:])


def _clip(cell: Cell, x: ir.Value) -> ir.Value:
    if cell.clip is None:
        return x
    return arith.minimumf(arith.maximumf(x, b.scalar(-cell.clip)), b.scalar(cell.clip))


def _bias_sum(p: _Direction, lo: int, count: int):
    """Wb + Rb for gates [lo, lo + count), or None."""
    if p.wb is None:
        return None
    h = p.cell.hidden
    wb = b.reshape(_slice(b.reshape(p.wb, (1, b.shape_of(p.wb)[0])), [0, lo * h], [1, count * h]), (count * h,))
    rb = b.reshape(_slice(b.reshape(p.rb, (1, b.shape_of(p.rb)[0])), [0, lo * h], [1, count * h]), (count * h,))
    return b.elementwise([wb, rb], lambda x, y: arith.addf(x, y))


def _pre(xw: ir.Value, hr: ir.Value, bias) -> ir.Value:
    """x W^T + h R^T (+ (Wb + Rb)), as onnx.reference adds them."""
    if bias is None:
        return b.elementwise([xw, hr], lambda x, y: arith.addf(x, y))
    return b.elementwise([xw, hr, bias], lambda x, y, z: arith.addf(arith.addf(x, y), z))


def _step(p: _Direction, acts: tuple, xw: ir.Value, h: ir.Value, c: ir.Value | None):
    """One time step for a batch slice: (new h, new c)."""
    cell, hid = p.cell, p.cell.hidden
    if cell.kind == "RNN":
        pre = _pre(xw, _matmul_t(h, p.r), _bias_sum(p, 0, 1))
        return b.elementwise([pre], lambda v: acts[0](_clip(cell, v))), None
    if cell.kind == "LSTM":
        pre = _pre(xw, _matmul_t(h, p.r), _bias_sum(p, 0, 4))
        i, o, f, g = (_gate(pre, k, hid) for k in range(4))  # ONNX order: i, o, f, c
        f_act, g_act, h_act = acts
        peep = [None, None, None]
        if p.peep is not None:
            peep = [b.reshape(_slice(b.reshape(p.peep, (1, 3 * hid)), [0, k * hid], [1, hid]), (hid,))
                    for k in range(3)]  # p_i, p_o, p_f

        def gate(v, pv, cv):
            return f_act(_clip(cell, v if pv is None else arith.addf(v, arith.mulf(pv, cv))))

        ins = [i, f, g, c] + [v for v in (peep[0], peep[2]) if v is not None]

        def new_c(iv, fv, gv, cv, *pv):
            pi, pf = (pv[0], pv[1]) if pv else (None, None)
            it, ft = gate(iv, pi, cv), gate(fv, pf, cv)
            return arith.addf(arith.mulf(ft, cv), arith.mulf(it, g_act(_clip(cell, gv))))

        c_new = b.elementwise(ins, new_c)
        o_ins = [o, c_new] + ([peep[1]] if peep[1] is not None else [])

        def new_h(ov, cv, *pv):
            return arith.mulf(gate(ov, pv[0] if pv else None, cv), h_act(cv))

        return b.elementwise(o_ins, new_h), c_new
    # GRU: z, r, h
    f_act, g_act = acts
    zr = _pre(_slice(xw, [0, 0], [b.shape_of(xw)[0], 2 * hid]), _matmul_t(h, _slice(p.r, [0, 0], [2 * hid, hid])),
              _bias_sum(p, 0, 2))
    z = b.elementwise([_gate(zr, 0, hid)], lambda v: f_act(_clip(cell, v)))
    r = b.elementwise([_gate(zr, 1, hid)], lambda v: f_act(_clip(cell, v)))
    xh = _gate(xw, 2, hid)
    rh_w = _slice(p.r, [2 * hid, 0], [hid, hid])
    wbh = rbh = None
    if p.wb is not None:
        wbh = b.reshape(_slice(b.reshape(p.wb, (1, 3 * hid)), [0, 2 * hid], [1, hid]), (hid,))
        rbh = b.reshape(_slice(b.reshape(p.rb, (1, 3 * hid)), [0, 2 * hid], [1, hid]), (hid,))
    if cell.linear_before_reset:
        hr = _matmul_t(h, rh_w)
        if rbh is not None:
            hr = b.elementwise([hr, rbh], lambda x, y: arith.addf(x, y))
        ins = [xh, r, hr] + ([wbh] if wbh is not None else [])
        cand = b.elementwise(ins, lambda x, rv, hv, *wv: g_act(_clip(cell, arith.addf(
            arith.addf(x, arith.mulf(rv, hv)), wv[0]) if wv else arith.addf(x, arith.mulf(rv, hv)))))
    else:
        rhp = _matmul_t(b.elementwise([r, h], lambda x, y: arith.mulf(x, y)), rh_w)
        ins = [xh, rhp] + ([rbh, wbh] if wbh is not None else [])
        cand = b.elementwise(ins, lambda x, y, *bv: g_act(_clip(cell, arith.addf(
            arith.addf(arith.addf(x, y), bv[0]), bv[1]) if bv else arith.addf(x, y))))
    one = lambda: b.scalar(1.0)  # noqa: E731
    h_new = b.elementwise([z, cand, h], lambda zv, cv, hv: arith.addf(
        arith.mulf(arith.subf(one(), zv), cv), arith.mulf(zv, hv)))
    return h_new, None


def _recurrent(imp: Importer, node: onnx.NodeProto, kind: str) -> list:
    attrs = imp.attrs(node)
    hidden = int(attrs["hidden_size"])
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise imp.error(f"{kind} direction '{direction}' is not supported")
    if attrs.get("input_forget", 0):
        raise imp.error("LSTM input_forget=1 is not supported")
    dirs = 2 if direction == "bidirectional" else 1
    layout = int(attrs.get("layout", 0))
    clip = float(attrs["clip"]) if "clip" in attrs else None
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}[kind]
    acts = _activations(imp, node, dirs, defaults)
    cell = Cell(kind, gates, hidden, clip, bool(attrs.get("linear_before_reset", 0)))

    x = imp.value(node.input[0])
    if layout:
        x = _transpose01(x)
    seq, batch, _ = b.shape_of(x)
    lens_name = node.input[4] if len(node.input) > 4 else ""
    lens = [seq] * batch
    if lens_name:
        lens = [int(v) for v in np.asarray(imp.require_const(lens_name, f"{kind}'s sequence_lens")).ravel()]
        if len(lens) != batch or min(lens) < 0 or max(lens) > seq:
            raise imp.error(f"{kind} sequence_lens {lens} do not fit batch {batch} and {seq} steps")

    def initial(index: int, d: int):
        name = node.input[index] if len(node.input) > index else ""
        if not name:
            return b.fill((batch, hidden), 0.0)
        value = imp.value(name)
        if layout:
            value = _transpose01(value)
        return b.reshape(_slice(value, [d, 0, 0], [1, batch, hidden]), (batch, hidden))

    y = b.fill((seq, dirs, batch, hidden), 0.0)
    y_h = b.fill((dirs, batch, hidden), 0.0)
    y_c = b.fill((dirs, batch, hidden), 0.0)
    # Batch entries with equal lengths run together.
    groups: dict[int, list[int]] = {}
    for index, n in enumerate(lens):
        groups.setdefault(n, []).append(index)
    for d in range(dirs):
        p = _Direction(imp, node, cell, d)
        xw_all = _matmul_t(x, p.w)  # (seq, batch, gates*hidden)
        h0, c0 = initial(5, d), initial(6, d) if kind == "LSTM" else None
        for length, members in sorted(groups.items()):
            for lo, hi in _runs(members):
                h = _slice(h0, [lo, 0], [hi - lo, hidden])
                c = _slice(c0, [lo, 0], [hi - lo, hidden]) if c0 is not None else None
                reverse = direction == "reverse" or d == 1
                for t in (reversed(range(length)) if reverse else range(length)):
                    xw = b.reshape(_slice(xw_all, [t, lo, 0], [1, hi - lo, gates * hidden]),
                                   (hi - lo, gates * hidden))
                    h, c = _step(p, acts[d], xw, h, c)
                    y = _insert(b.reshape(h, (1, 1, hi - lo, hidden)), y, [t, d, lo, 0])
                y_h = _insert(b.reshape(h, (1, hi - lo, hidden)), y_h, [d, lo, 0])
                if c is not None:
                    y_c = _insert(b.reshape(c, (1, hi - lo, hidden)), y_c, [d, lo, 0])
    if layout:
        y = _permute(y, [2, 0, 1, 3])
        y_h, y_c = _transpose01(y_h), _transpose01(y_c)
    outputs = [y, y_h, y_c][:len(node.output)]
    return [v if imp.is_used(name) else None for v, name in zip(outputs, node.output)]


def _runs(members: list[int]) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) runs of sorted batch indices."""
    runs: list[tuple[int, int]] = []
    for m in members:
        if runs and runs[-1][1] == m:
            runs[-1] = (runs[-1][0], m + 1)
        else:
            runs.append((m, m + 1))
    return runs


def _permute(value: ir.Value, perm: list[int]) -> ir.Value:
    shape = b.shape_of(value)
    rank = len(shape)
    inverse = [0] * rank
    for j, p in enumerate(perm):
        inverse[p] = j
    d = b.dims(rank)
    return b.generic([value], [b.affine_map(rank, [d[inverse[i]] for i in range(rank)])],
                     b.empty([shape[p] for p in perm]), b.affine_map(rank, d), [b.PARALLEL] * rank, lambda v, _: v)


def _transpose01(value: ir.Value) -> ir.Value:
    rank = len(b.shape_of(value))
    return _permute(value, [1, 0] + list(range(2, rank)))


@handler("LSTM")
def lstm(imp: Importer, node: onnx.NodeProto) -> list:
    return _recurrent(imp, node, "LSTM")


@handler("GRU")
def gru(imp: Importer, node: onnx.NodeProto) -> list:
    return _recurrent(imp, node, "GRU")


@handler("RNN")
def rnn(imp: Importer, node: onnx.NodeProto) -> list:
    return _recurrent(imp, node, "RNN")
