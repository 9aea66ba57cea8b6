"""Register-tiled, vectorized contractions (Conv, Gemm, MatMul) and pooling windows for `--codegen optimized`.

A contraction here is `out[outer, row, col] = init + sum_r s(outer, r, row) * v(outer, r, col)`: the
column dimension (output channels or output width for Conv, N for MatMul) is vectorized, a register tile holds
`rows x vectors` accumulators, and the reduction loops run OUTSIDE the vector lanes, in the same
lexicographic order as the reference `linalg.generic` (c, k_0, k_1, ...). Each output element is
therefore computed by exactly the scalar operations of the reference build, in the same order and
with the same operand order: one vector lane of one `fmul`/`fadd` is one scalar instance of the
reference, so outputs are bit-identical and fault sites map one to one (lanes are counted as
instances by the instrumentation). No FMA, no reassociation. A pooling window is the same nest with
one row and no scalar operand: `out[outer, col] = combine(...combine(init, v(r_0, col))..., v(r_n, col))`.

Accumulators live in entry-block `alloca`s (promoted to registers by LLVM's mem2reg/SROA), so the
emitted loops carry no SSA values across their exits: every tile's reduction nest can be cloned
for instrumentation without SSA repair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, bufferization, memref, scf, vector

from . import builders as b

Values = list[ir.Value]
CACHE_BYTES = 256 << 10  # what a loop nest may assume stays cached between its sweeps (half an L2)


@dataclass(frozen=True)
class TilePolicy:
    """Register-tile shape: `lanes` per vector, at most `budget` vector accumulators."""

    lanes: int = 8
    budget: int = 12

    def shape(self, rows: int, cols: int) -> tuple[int, int]:
        """(rows per tile, vectors per row) for a contraction of this many rows and columns."""
        col_vectors = -(-cols // self.lanes)
        if rows <= 2:
            vectors = min(col_vectors, 4)
        else:
            vectors = min(col_vectors, 2)
        return max(1, min(rows, self.budget // vectors)), vectors


@dataclass
class Contraction:
    """What varies between operators; the loop structure is shared.

    Loops: `outer[:row_at]`, row blocks, `outer[row_at:]`, column blocks, then `reduction`.
    With `vector_per_row`, `load_vector` also takes the row, `(outer, red, col0, width, row)`: each
    row has a vector operand of its own (a depthwise Conv's rows are channels).
    """

    outer: Sequence[int]
    row_at: int
    rows: int
    cols: int
    reduction: Sequence[int]
    load_vector: Callable[[Values, Values, ir.Value, int], ir.Value]   # (outer, red, col0, width)
    # (outer, red, row); None for a window reduction (pooling): `step(acc, None, vec)`, one row
    load_scalar: Callable[[Values, Values, ir.Value], ir.Value] | None
    load_init: Callable[[Values, ir.Value, ir.Value, int], ir.Value]   # (outer, row, col0, width)
    store: Callable[[Values, ir.Value, ir.Value, ir.Value], None] | None  # (outer, row, col0, vec)
    step: Callable[[ir.Value, ir.Value, ir.Value], ir.Value]           # (acc, broadcast, vec)
    # Column blocks outside the row blocks (needs row_at == len(outer)): each column panel of the
    # vector operand stays in cache while every row block uses it (a MatMul's B, K x 16 floats),
    # instead of the whole operand streaming through once per row block.
    columns_outside: bool = False
    # Instead of `store` per accumulator: (outer, rows, col0s, widths, values[row][vector]) once per tile.
    store_tile: Callable[[Values, Values, Values, list[int], list[Values]], None] | None = None
    vector_per_row: bool = False


def index(value: int) -> ir.Value:
    return arith.ConstantOp(ir.IndexType.get(), value).result


def add(a: ir.Value, c: int | ir.Value) -> ir.Value:
    if isinstance(c, int):
        if c == 0:
            return a
        c = index(c)
    return arith.addi(a, c)


def mul(a: ir.Value, c: int) -> ir.Value:
    return a if c == 1 else arith.muli(a, index(c))


def window_index(out: ir.Value, tap: ir.Value, stride: int, dilation: int) -> ir.Value:
    """The input index that output position `out` reads at kernel tap `tap` (Conv, pooling)."""
    return add(mul(out, stride), mul(tap, dilation))


def panel_index(col0: ir.Value, k: ir.Value, k_extent: int, panel: int, cols: int) -> ir.Value:
    """Where element (k, col0) of a K x cols matrix stored as column panels (builders.ColumnPanels)
    lies: panel col0 // P starts at (col0 // P) * K * P, its rows are P wide, the last panel's
    cols % P (the remainder column block, which starts at the constant cols // P * P)."""
    full, tail = cols // panel * panel, cols % panel
    start = mul(arith.divui(col0, index(panel)), k_extent * panel)
    last = arith.cmpi(arith.CmpIPredicate.uge, col0, index(full))
    row_width = arith.select(last, index(tail or panel), index(panel))
    return add(add(start, arith.muli(k, row_width)), arith.remui(col0, index(panel)))


def vector_type(width: int, element: ir.Type | None = None) -> ir.VectorType:
    return ir.VectorType.get([width], element or b.f32())


def memref_type(shape: Sequence[int]) -> ir.MemRefType:
    return ir.MemRefType.get(list(shape), b.f32())


def as_buffer(tensor: ir.Value) -> ir.Value:
    """A read-only view of a tensor's buffer (one-shot bufferization resolves it)."""
    return bufferization.to_buffer(memref_type(b.shape_of(tensor)), tensor, read_only=True)


def new_buffer(shape: Sequence[int]) -> ir.Value:
    """A buffer aligned as bufferization aligns its own (64 bytes): ResNet-18's 3x3 Conv read its
    padded input 30-40% slower from a buffer malloc had aligned to 16 bytes."""
    return memref.alloc(memref_type(shape), [], [], alignment=64)


def as_tensor(buffer: ir.Value) -> ir.Value:
    shape = ir.MemRefType(buffer.type).shape
    return bufferization.to_tensor(b.tensor_type(shape), buffer, restrict=True, writable=True)


class AccumulatorSlots:
    """Entry-block allocas for accumulators, reused by every tile of the function."""

    def __init__(self, entry: ir.Block) -> None:
        self.entry = entry
        self.slots: dict[tuple[int, int], ir.Value] = {}

    def get(self, slot: int, width: int) -> ir.Value:
        key = (slot, width)
        if key not in self.slots:
            self.slots[key] = self._alloca(ir.MemRefType.get([], vector_type(width)))
        return self.slots[key]

    def scratch(self, rows: int, cols: int) -> ir.Value:
        """A rows x cols float32 tile on the stack (a tile's values on their way to a strided store)."""
        key = ("scratch", rows, cols)
        if key not in self.slots:
            self.slots[key] = self._alloca(memref_type((rows, cols)))
        return self.slots[key]

    def _alloca(self, mtype: ir.MemRefType) -> ir.Value:
        first = self.entry.operations[0] if len(self.entry.operations) else None
        with ir.InsertionPoint(first) if first is not None else ir.InsertionPoint(self.entry):
            return memref.alloca(mtype, [], [])


def _for(extent: int, step: int = 1, start: int = 0) -> scf.ForOp:
    return scf.ForOp(index(start), index(extent), index(step))


def _blocks(total: int, size: int) -> list[tuple[int, int, int]]:
    """(start, end, size) runs: a loop over full blocks, then one remainder block."""
    runs = []
    full = total // size * size
    if full:
        runs.append((0, full, size))
    if total - full:
        runs.append((full, total, total - full))
    return runs


def emit(c: Contraction, slots: AccumulatorSlots, policy: TilePolicy = TilePolicy()) -> None:
    """Emit the loop nest of `c` at the current insertion point."""
    tile_rows, tile_vectors = policy.shape(c.rows, c.cols)
    assert not c.columns_outside or c.row_at == len(c.outer), "columns outside rows: rows must be innermost"
    assert c.load_scalar is not None or c.rows == 1, "a window reduction has one row"
    col_block = tile_vectors * policy.lanes

    def outer_loops(level: int, ivs: Values, row: tuple[ir.Value, int] | None) -> None:
        if level == c.row_at and row is None:
            if c.columns_outside:
                column_blocks(lambda col0, widths: row_blocks(lambda r: tile(ivs, r, col0, widths)))
            else:
                row_blocks(lambda r: outer_loops(level, ivs, r))
            return
        if level == len(c.outer):
            column_blocks(lambda col0, widths: tile(ivs, row, col0, widths))
            return
        loop = _for(c.outer[level])
        with ir.InsertionPoint(loop.body):
            outer_loops(level + 1, ivs + [loop.induction_variable], row)
            scf.YieldOp([])

    def row_blocks(body: Callable[[tuple[ir.Value, int]], None]) -> None:
        for start, end, size in _blocks(c.rows, tile_rows):
            if end - start == size:
                body((index(start), size))
                continue
            loop = _for(end, size, start)
            with ir.InsertionPoint(loop.body):
                body((loop.induction_variable, size))
                scf.YieldOp([])

    def column_blocks(body: Callable[[ir.Value, list[int]], None]) -> None:
        for start, end, size in _blocks(c.cols, col_block):
            widths = [policy.lanes] * (size // policy.lanes) + ([size % policy.lanes] if size % policy.lanes else [])
            if end - start == size:
                body(index(start), widths)
                continue
            loop = _for(end, size, start)
            with ir.InsertionPoint(loop.body):
                body(loop.induction_variable, widths)
                scf.YieldOp([])

    def tile(ivs: Values, row: tuple[ir.Value, int], col0: ir.Value, widths: list[int]) -> None:
        row0, nrows = row
        rows = [add(row0, i) for i in range(nrows)]
        offsets = [sum(widths[:j]) for j in range(len(widths))]
        cols = [add(col0, o) for o in offsets]
        accs = [[slots.get(i * len(widths) + j, w) for j, w in enumerate(widths)] for i in range(nrows)]
        for i in range(nrows):
            for j, w in enumerate(widths):
                memref.store(c.load_init(ivs, rows[i], cols[j], w), accs[i][j], [])
        reduction(ivs, rows, cols, widths, accs)
        if c.store_tile is not None:
            c.store_tile(ivs, rows, cols, widths, [[memref.load(a, []) for a in row_accs] for row_accs in accs])
            return
        for i in range(nrows):
            for j in range(len(widths)):
                c.store(ivs, rows[i], cols[j], memref.load(accs[i][j], []))

    def reduction(ivs: Values, rows: Values, cols: Values, widths: list[int], accs: list[list[ir.Value]]) -> None:
        extents = list(c.reduction)
        unrolled = extents[-1] if extents and extents[-1] <= 8 else 1
        looped = extents[:-1] if unrolled > 1 else extents

        def body(red: Values) -> None:
            values = [[memref.load(a, []) for a in row_accs] for row_accs in accs]
            for u in range(unrolled):
                r = red + [index(u)] if unrolled > 1 else red
                if not c.vector_per_row:
                    vecs = [c.load_vector(ivs, r, col, w) for col, w in zip(cols, widths)]
                for i, row in enumerate(rows):
                    if c.vector_per_row:
                        vecs = [c.load_vector(ivs, r, col, w, row) for col, w in zip(cols, widths)]
                    splats = dict.fromkeys(widths)  # a window reduction has no scalar operand
                    if c.load_scalar is not None:
                        scalar = c.load_scalar(ivs, r, row)
                        splats = {w: vector.broadcast(vector_type(w), scalar) for w in sorted(set(widths))}
                    for j, w in enumerate(widths):
                        values[i][j] = c.step(values[i][j], splats[w], vecs[j])
            for row_accs, row_values in zip(accs, values):
                for a, v in zip(row_accs, row_values):
                    memref.store(v, a, [])

        def loops(level: int, red: Values) -> None:
            if level == len(looped):
                body(red)
                return
            loop = _for(looped[level])
            with ir.InsertionPoint(loop.body):
                loops(level + 1, red + [loop.induction_variable])
                scf.YieldOp([])

        loops(0, [])

    outer_loops(0, [], None)
