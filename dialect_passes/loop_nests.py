"""Loop nests with an exact, constant number of selected instances per entry.

After scf-to-cf every linalg loop is a header block `^h(%iv)` testing `%iv < C` with a constant
initial value, bound and step. For such a loop, and nests of them in which every block holding
sites runs once per iteration (blocks without sites may be conditional), the number of selected
dynamic instances per entry of the nest is known at compile time; the instrumentation then checks
the countdown once in the preheader instead of once per block.

`analyze` computes the control-flow facts once per function, before any rewriting, in near-linear
time: a model function has thousands of blocks, and the instrumentation used to recompute set-based
dominators per site block (minutes on SqueezeNet). Everything is derived from the successor edges
in reverse post-order, so the result does not depend on how the blocks are laid out in the text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mlir import ir


@dataclass(eq=False)
class Loop:
    header: ir.Block
    latch: ir.Block | None                      # the single back-edge source, if there is one
    blocks: list[ir.Block]                      # reverse post-order, header first
    children: list[Loop] = field(default_factory=list)
    trip: int | None = None
    preheader: ir.Block | None = None
    count: int | None = None                    # selected instances per entry, when exact
    parent: Loop | None = field(default=None, repr=False)


@dataclass(eq=False)
class Cfg:
    """Reachable blocks of one function in reverse post-order, with dominance and natural loops."""

    blocks: list[ir.Block]
    index: dict[ir.Block, int]
    preds: dict[ir.Block, list[ir.Block]]
    loops: list[Loop]                           # top-level loops, by header position
    _pre: list[int] = field(repr=False, default_factory=list)
    _post: list[int] = field(repr=False, default_factory=list)

    def dominates(self, a: ir.Block, b: ir.Block) -> bool:
        """Dominator-tree interval test: O(1) per query."""
        i, j = self.index[a], self.index[b]
        return self._pre[i] <= self._pre[j] and self._post[j] <= self._post[i]


def _terminator(block: ir.Block) -> ir.Operation:
    return block.operations[len(block.operations) - 1].operation


def _constant(value: ir.Value) -> int | None:
    owner = value.owner
    if isinstance(owner, ir.Block):
        return None
    op = owner.operation
    if op.name != "llvm.mlir.constant":
        return None
    try:
        return ir.IntegerAttr(op.attributes["value"]).value
    except ValueError:
        return None


def _reverse_post_order(entry: ir.Block, succs: dict) -> list[ir.Block]:
    seen, order = {entry}, []
    stack = [(entry, iter(succs[entry]))]
    while stack:
        node, it = stack[-1]
        nxt = next((s for s in it if s not in seen), None)
        if nxt is None:
            order.append(node)
            stack.pop()
        else:
            seen.add(nxt)
            stack.append((nxt, iter(succs[nxt])))
    return order[::-1]


def _idoms(preds: list[list[int]]) -> list[int]:
    """Cooper-Harvey-Kennedy iterative dominators over reverse post-order indices (entry = 0)."""
    idom = [-1] * len(preds)
    idom[0] = 0
    changed = True
    while changed:
        changed = False
        for i in range(1, len(preds)):
            new = -1
            for p in preds[i]:
                if idom[p] < 0:
                    continue
                if new < 0:
                    new = p
                    continue
                a, b = p, new
                while a != b:
                    while a > b:
                        a = idom[a]
                    while b > a:
                        b = idom[b]
                new = a
            if idom[i] != new:
                idom[i], changed = new, True
    return idom


def _intervals(idom: list[int]) -> tuple[list[int], list[int]]:
    """Pre- and post-order numbers of the dominator tree (a dominates b iff b's interval is inside)."""
    children: list[list[int]] = [[] for _ in idom]
    for i in range(1, len(idom)):
        children[idom[i]].append(i)
    pre, post = [0] * len(idom), [0] * len(idom)
    clock = 0
    stack = [(0, iter(children[0]))]
    pre[0] = clock
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        clock += 1
        if nxt is None:
            post[node] = clock
            stack.pop()
        else:
            pre[nxt] = clock
            stack.append((nxt, iter(children[nxt])))
    return pre, post


def analyze(fn_region: ir.Region) -> Cfg:
    """Reverse post-order, dominators and the loop forest of a function body, computed once."""
    layout = list(fn_region.blocks)
    succs = {b: list(_terminator(b).successors) for b in layout}
    blocks = _reverse_post_order(layout[0], succs)
    index = {b: i for i, b in enumerate(blocks)}
    preds: dict[ir.Block, list[ir.Block]] = {b: [] for b in blocks}
    for b in blocks:
        for s in succs[b]:
            preds[s].append(b)
    idom = _idoms([[index[p] for p in preds[b]] for b in blocks])
    pre, post = _intervals(idom)
    cfg = Cfg(blocks, index, preds, [], pre, post)
    cfg.loops = _loops(cfg, succs)
    return cfg


def _loops(cfg: Cfg, succs: dict) -> list[Loop]:
    """Natural loops, one per header (all its back edges), nested by header containment."""
    latches: dict[ir.Block, list[ir.Block]] = {}
    for b in cfg.blocks:
        for h in succs[b]:
            if cfg.dominates(h, b):
                latches.setdefault(h, []).append(b)
    loops: list[Loop] = []
    for h in sorted(latches, key=cfg.index.__getitem__):
        body, work = {h}, []
        for latch in latches[h]:
            if latch not in body:
                body.add(latch)
                work.append(latch)
        while work:
            for p in cfg.preds[work.pop()]:
                if p not in body:
                    body.add(p)
                    work.append(p)
        loop = Loop(header=h, latch=latches[h][0] if len(latches[h]) == 1 else None,
                    blocks=sorted(body, key=cfg.index.__getitem__))
        loops.append(loop)
    # Natural loops with distinct headers are nested or disjoint: the parent of a loop is the
    # smallest other loop that holds its header.
    by_header = {lp.header: lp for lp in loops}
    for loop in sorted(loops, key=lambda lp: len(lp.blocks)):
        for b in loop.blocks:
            inner = by_header.get(b)
            if inner is not None and inner is not loop and inner.parent is None:
                inner.parent = loop
    top: list[Loop] = []
    for loop in loops:  # header order, so children lists are in header order too
        (loop.parent.children if loop.parent else top).append(loop)
        members = set(loop.blocks)
        outside = [p for p in cfg.preds[loop.header] if p not in members]
        if len(outside) == 1 and _branch_args(_terminator(outside[0]), loop.header) is not None:
            loop.preheader = outside[0]
        loop.trip = _trip_count(loop, cfg, members, succs)
    return top


def _branch_args(term: ir.Operation, target: ir.Block) -> list[ir.Value] | None:
    """Operands passed to `target` by an unconditional llvm.br, else None."""
    if term.name != "llvm.br" or term.successors[0] != target:
        return None
    return list(term.operands)


def _trip_count(loop: Loop, cfg: Cfg, members: set, succs: dict) -> int | None:
    h = loop.header
    term = _terminator(h)
    if loop.latch is None or loop.preheader is None or term.name != "llvm.cond_br" or len(h.operations) != 2:
        return None
    # Only the header may leave the loop, or an iteration could end early (a `break`).
    if any(s not in members for b in loop.blocks if b != h for s in succs[b]):
        return None
    cmp = term.operands[0].owner
    if isinstance(cmp, ir.Block) or cmp.operation.name != "llvm.icmp":
        return None
    if term.successors[0] not in members or term.successors[1] in members:
        return None
    predicate = ir.IntegerAttr(cmp.operation.attributes["predicate"]).value
    lhs, rhs = cmp.operation.operands
    args = list(h.arguments)
    if lhs not in args:
        return None
    index = args.index(lhs)
    bound = _constant(rhs)
    if bound is None or len(cfg.preds[h]) != 2:
        return None
    init_args = _branch_args(_terminator(loop.preheader), h)
    latch_args = _branch_args(_terminator(loop.latch), h)
    if init_args is None or latch_args is None:
        return None
    init = _constant(init_args[index])
    step_op = latch_args[index].owner
    if init is None or isinstance(step_op, ir.Block) or step_op.operation.name != "llvm.add":
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


def compute_counts(loop: Loop, sites: Mapping[ir.Block, int], cfg: Cfg) -> int | None:
    """Exact selected instances per entry, or None (unknown trip count, conditional blocks)."""
    child_counts = [compute_counts(c, sites, cfg) for c in loop.children]
    loop.count = None
    if loop.trip is None or any(c is None for c in child_counts):
        return None
    inner = {b for c in loop.children for b in c.blocks}
    per_iteration = 0
    for b in loop.blocks:
        if b == loop.header or b in inner or not sites.get(b, 0):
            continue
        if not cfg.dominates(b, loop.latch):  # runs only on some iterations
            return None
        per_iteration += sites[b]
    for child, count in zip(loop.children, child_counts):
        if count and (not cfg.dominates(child.header, loop.latch) or child.preheader is None):
            return None
        per_iteration += count
    loop.count = (loop.trip + 1) * sites.get(loop.header, 0) + loop.trip * per_iteration
    return loop.count


def result_users(block: ir.Block) -> set[ir.Block]:
    """Blocks other than `block` that use a result of one of its ops."""
    users = set()
    for op in block.operations:
        for result in op.results:
            for use in result.uses:
                user = use.owner.operation.block
                if user != block:
                    users.add(user)
    return users


def escapes(loop: Loop, users: Callable[[ir.Block], set[ir.Block]] = result_users) -> bool:
    """True if a value defined in the loop is used outside it (cloning would need SSA repair)."""
    members = set(loop.blocks)
    for b in loop.blocks:
        if not users(b) <= members:
            return True
        for arg in b.arguments:
            if any(use.owner.operation.block not in members for use in arg.uses):
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
