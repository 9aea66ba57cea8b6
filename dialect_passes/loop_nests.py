"""Loop nests with an exact, constant number of selected instances per entry.

After scf-to-cf every linalg loop is a header block `^h(%iv)` testing `%iv < C` with a constant
initial value, bound and step. For such a loop, and nests of them in which every block runs once
per iteration, the number of selected dynamic instances per entry of the nest is known at compile
time; the instrumentation then checks the countdown once in the preheader instead of once per block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlir import ir


@dataclass(eq=False)
class Loop:
    header: ir.Block
    latch: ir.Block
    blocks: list[ir.Block]                      # reverse post-order, header first
    children: list[Loop] = field(default_factory=list)
    trip: int | None = None
    preheader: ir.Block | None = None
    count: int | None = None                    # selected instances per entry, when exact


def _terminator(block: ir.Block) -> ir.Operation:
    ops = list(block.operations)
    return ops[-1].operation


def _successors(block: ir.Block) -> list[ir.Block]:
    return list(_terminator(block).successors)


def _constant(value: ir.Value) -> int | None:
    owner = value.owner
    if isinstance(owner, ir.Block) or not hasattr(owner, "name"):
        return None
    op = owner.operation if hasattr(owner, "operation") else owner
    if op.name != "llvm.mlir.constant":
        return None
    attr = op.attributes["value"]
    try:
        return ir.IntegerAttr(attr).value
    except ValueError:
        return None


def _dominators(blocks: list[ir.Block], preds: dict) -> dict:
    entry = blocks[0]
    everything = set(blocks)
    dom = {b: set(everything) for b in blocks}
    dom[entry] = {entry}
    changed = True
    while changed:
        changed = False
        for b in blocks[1:]:
            ps = [dom[p] for p in preds[b] if p in dom]
            new = set.intersection(*ps) | {b} if ps else {b}
            if new != dom[b]:
                dom[b], changed = new, True
    return dom


def _rpo(start: ir.Block, allowed: set) -> list[ir.Block]:
    seen, order = set(), []

    def visit(b: ir.Block) -> None:
        stack = [(b, iter(_successors(b)))]
        seen.add(b)
        while stack:
            node, it = stack[-1]
            nxt = next((s for s in it if s in allowed and s not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(_successors(nxt))))

    visit(start)
    return order[::-1]


def _branch_args(term: ir.Operation, target: ir.Block) -> list[ir.Value] | None:
    """Operands passed to `target` by an unconditional llvm.br, else None."""
    if term.name != "llvm.br" or term.successors[0] != target:
        return None
    return list(term.operands)


def _trip_count(loop: Loop, preds: dict) -> int | None:
    h = loop.header
    term = _terminator(h)
    if term.name != "llvm.cond_br" or len(list(h.operations)) != 2:
        return None
    cmp = term.operands[0].owner
    if not hasattr(cmp, "name") or cmp.operation.name != "llvm.icmp":
        return None
    if term.successors[0] not in loop.blocks or term.successors[1] in loop.blocks:
        return None
    predicate = ir.IntegerAttr(cmp.operation.attributes["predicate"]).value  # 2 slt.. see LLVM enum
    lhs, rhs = cmp.operation.operands
    args = list(h.arguments)
    if lhs not in args:
        return None
    index = args.index(lhs)
    bound = _constant(rhs)
    outside = [p for p in preds[h] if p not in loop.blocks]
    if bound is None or len(outside) != 1 or len(preds[h]) != 2:
        return None
    init_args = _branch_args(_terminator(outside[0]), h)
    latch_args = _branch_args(_terminator(loop.latch), h)
    if init_args is None or latch_args is None:
        return None
    init = _constant(init_args[index])
    step_op = latch_args[index].owner
    if init is None or not hasattr(step_op, "name") or step_op.operation.name != "llvm.add":
        return None
    a, b = step_op.operation.operands
    step = _constant(b) if a == lhs else _constant(a) if b == lhs else None
    # llvm.icmp predicates: eq=0 ne=1 slt=2 sle=3 sgt=4 sge=5 ult=6 ule=7 ugt=8 uge=9
    if step is None or step <= 0 or predicate not in (1, 2, 6):
        return None
    span = bound - init
    if predicate == 1:
        return span // step if span >= 0 and span % step == 0 else None
    return max(0, -(-span // step))


def find_loops(fn_region: ir.Region) -> list[Loop]:
    """Top-level natural loops of a function body, with children, trip counts and preheaders."""
    blocks = list(fn_region.blocks)
    preds: dict = {b: [] for b in blocks}
    for b in blocks:
        for s in _successors(b):
            preds[s].append(b)
    dom = _dominators(blocks, preds)
    loops: list[Loop] = []
    for b in blocks:
        for h in _successors(b):
            if h in dom[b]:  # back edge b -> h
                body, work = {h, b}, [b]
                while work:
                    x = work.pop()
                    for p in preds[x]:
                        if p not in body:
                            body.add(p)
                            work.append(p)
                loops.append(Loop(header=h, latch=b, blocks=_rpo(h, body)))
    loops.sort(key=lambda lp: len(lp.blocks))
    top: list[Loop] = []
    for i, loop in enumerate(loops):
        parent = next((o for o in loops[i + 1:] if loop.header in o.blocks and o is not loop), None)
        (parent.children if parent else top).append(loop)
    for loop in loops:
        loop.trip = _trip_count(loop, preds)
        outside = [p for p in preds[loop.header] if p not in loop.blocks]
        if len(outside) == 1 and _branch_args(_terminator(outside[0]), loop.header) is not None:
            loop.preheader = outside[0]
        loop.dom = dom  # type: ignore[attr-defined]
    return top


def compute_counts(loop: Loop, sites: Mapping[ir.Block, int]) -> int | None:
    """Exact selected instances per entry, or None (unknown trip count, conditional blocks)."""
    child_counts = [compute_counts(c, sites) for c in loop.children]
    if loop.trip is None or any(c is None for c in child_counts):
        loop.count = None
        return None
    dom = loop.dom  # type: ignore[attr-defined]
    inner = {b for c in loop.children for b in c.blocks}
    per_iteration = 0
    for b in loop.blocks:
        if b == loop.header or b in inner:
            continue
        if b not in dom[loop.latch]:  # runs only on some iterations
            loop.count = None
            return None
        per_iteration += sites.get(b, 0)
    for child, count in zip(loop.children, child_counts):
        if child.header not in dom[loop.latch] or child.preheader is None:
            loop.count = None
            return None
        per_iteration += count
    loop.count = (loop.trip + 1) * sites.get(loop.header, 0) + loop.trip * per_iteration
    return loop.count


def escapes(loop: Loop) -> bool:
    """True if a value defined in the loop is used outside it (cloning would need SSA repair)."""
    members = set(loop.blocks)
    for b in loop.blocks:
        values = list(b.arguments) + [r for op in b.operations for r in op.results]
        for v in values:
            for use in v.uses:
                if use.owner.operation.block not in members:
                    return True
    return False


def block_multiplicities(loop: Loop, outer: int = 1) -> dict[ir.Block, int]:
    """Executions of each block per entry of `loop` (requires compute_counts to have succeeded)."""
    mult = {loop.header: outer * (loop.trip + 1)}
    inner = {b for c in loop.children for b in c.blocks}
    for b in loop.blocks:
        if b != loop.header and b not in inner:
            mult[b] = outer * loop.trip
    for child in loop.children:
        mult.update(block_multiplicities(child, outer * loop.trip))
    return mult
