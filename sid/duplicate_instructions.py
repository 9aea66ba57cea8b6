"""AID and ACD on an LLVM-dialect module: duplicate, compare bit patterns, correct on mismatch.

For a protected value `a` with duplicate `b`:
    mismatch = bitcast(a) != bitcast(b)
    a'       = select(mismatch, correct(a, b), a)          correct: and | min
so a fault-free run returns `a` itself, bit for bit. The duplicate's operands that come from outside
the duplicated code pass through an empty inline-asm copy, which no optimizer can see through, so
the duplicate survives `llc -O2` (which would otherwise merge it into the original). Every inserted
op carries the original's location: faults can be injected into originals, duplicates, compares
and corrections alike, by the same operator selection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lltfi_mlir.dialect_passes.sites import NodeInfo, SiteSelector, node_name_of, opcode_of
from mlir import ir
from mlir.dialects import llvm

TECHNIQUES = ("aid", "acd")
CORRECTIONS = ("and", "min", "none")
ARITHMETIC = frozenset({"fadd", "fsub", "fmul", "fdiv"})
MISMATCHES = "lltfi_sid_mismatches"
_INT_OF = {"f32": 32, "f64": 64}


@dataclass
class SidResult:
    changed: bool
    duplicated: int = 0     # instructions duplicated
    checks: int = 0         # compare + correct sequences inserted
    chains: int = 0         # ACD chains (AID: one per instruction)


def _overflow_none() -> ir.Attribute:
    return ir.Attribute.parse("#llvm.overflow<none>")


def _opaque(value: ir.Value) -> ir.Value:
    """An empty inline-asm copy of `value`: same bits, but nothing can fold across it."""
    t = str(value.type)
    int_t = ir.IntegerType.get_signless(_INT_OF[t])
    as_int = llvm.BitcastOp(int_t, value).result
    copied = llvm.InlineAsmOp(int_t, [as_int], "", "=r,0", has_side_effects=True).result
    return llvm.BitcastOp(value.type, copied).result


def _check_and_correct(original: ir.Value, duplicate: ir.Value, correction: str) -> tuple[ir.Value, list]:
    """Returns the corrected value and the inserted ops that read `original` (they must keep it)."""
    t = str(original.type)
    int_t = ir.IntegerType.get_signless(_INT_OF[t])
    a_op = llvm.BitcastOp(int_t, original)
    b = llvm.BitcastOp(int_t, duplicate).result
    mismatch = llvm.ICmpOp(llvm.ICmpPredicate.ne, a_op.result, b).result
    readers = [a_op.operation]
    if correction == "none":
        ptr = llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), MISMATCHES).result
        i64 = ir.IntegerType.get_signless(64)
        count = llvm.LoadOp(i64, ptr).result
        llvm.StoreOp(llvm.AddOp(count, llvm.ZExtOp(i64, mismatch).result, _overflow_none()).result, ptr)
        return original, readers
    if correction == "and":
        fixed = llvm.BitcastOp(original.type, llvm.AndOp(a_op.result, b).result).result
    else:
        minimum = llvm.intr_minimum(original, duplicate)
        readers.append(minimum.owner.operation if hasattr(minimum.owner, "operation") else minimum.owner)
        fixed = minimum
    select = llvm.SelectOp(mismatch, fixed, original)
    readers.append(select.operation)
    return select.result, readers


@dataclass(frozen=True)
class DuplicateInstructionsPass:
    """AID or ACD over the selected arithmetic (default: fadd/fsub/fmul/fdiv in every operator)."""

    name = "duplicate-instructions"
    technique: str = "aid"
    correction: str = "and"
    selector: SiteSelector = SiteSelector(opcodes=ARITHMETIC)
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)

    def _selected(self, op: ir.Operation) -> bool:
        opcode = opcode_of(op.name)
        if opcode not in ARITHMETIC or opcode not in self.selector.opcodes or len(op.results) != 1:
            return False
        if str(op.results[0].type) not in _INT_OF:
            return False
        node = node_name_of(op.location)
        return self.selector.accepts_node(node, self.node_info.get(node) if node else None)

    def apply(self, module: ir.Module) -> SidResult:
        if self.technique not in TECHNIQUES or self.correction not in CORRECTIONS:
            raise ValueError(f"technique {self.technique!r} / correction {self.correction!r}")
        result = SidResult(changed=False)
        chains: list[list[ir.Operation]] = []
        for fn in module.body.operations:
            if fn.operation.name != "llvm.func" or not len(fn.regions[0].blocks):
                continue
            for block in fn.regions[0].blocks:
                selected = [op.operation for op in block.operations if self._selected(op.operation)]
                chains += self._chains(block, selected)
        if not chains:
            return result
        with module.context, ir.Location.unknown():
            if self.correction == "none":
                names = {ir.StringAttr(op.attributes["sym_name"]).value for op in module.body.operations
                         if "sym_name" in op.attributes}
                if MISMATCHES not in names:
                    decl = ir.Module.parse(f"llvm.mlir.global external @{MISMATCHES}() {{addr_space = 0 : i32}} : i64")
                    for op in list(decl.body.operations):
                        op.operation.move_before(module.body.operations[0])
            for chain in chains:
                self._duplicate_chain(chain)
                result.duplicated += len(chain)
                result.checks += 1
        result.chains = len(chains)
        result.changed = True
        return result

    def _chains(self, block: ir.Block, selected: list[ir.Operation]) -> list[list[ir.Operation]]:
        """AID: every op alone. ACD: maximal trees whose inner results feed only the tree."""
        if self.technique == "aid":
            return [[op] for op in selected]
        members = set(selected)
        parent: dict[ir.Operation, ir.Operation] = {}
        for op in selected:
            users = {use.owner.operation for use in op.results[0].uses}
            if len(users) == 1:
                (user,) = users
                if user in members and user.block == block:
                    parent[op] = user
        groups: dict[ir.Operation, list[ir.Operation]] = {}
        for op in selected:  # block order is a topological order
            root = op
            while root in parent:
                root = parent[root]
            groups.setdefault(root, []).append(op)
        return list(groups.values())

    def _duplicate_chain(self, chain: list[ir.Operation]) -> None:
        root = chain[-1]
        inside = {op.results[0] for op in chain}
        value_map: dict[ir.Value, ir.Value] = {}
        anchor = root
        with ir.InsertionPoint.after(root), root.location:
            for op in chain:
                operands = list(op.operands)
                external = all(v not in inside for v in operands)
                clone = op.clone(ip=ir.InsertionPoint.after(anchor)).operation
                for index, v in enumerate(operands):
                    if v in value_map:
                        clone.operands[index] = value_map[v]
                if external:
                    with ir.InsertionPoint(clone), op.location:
                        clone.operands[0] = _opaque(operands[0])
                value_map[op.results[0]] = clone.results[0]
                anchor = clone
            original, duplicate = root.results[0], value_map[root.results[0]]
            with ir.InsertionPoint.after(anchor), root.location:
                corrected, readers = _check_and_correct(original, duplicate, self.correction)
            if self.correction != "none":
                original.replace_all_uses_except(corrected, readers)
