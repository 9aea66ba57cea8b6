"""AID and ACD on an LLVM-dialect module: duplicate, compare bit patterns, correct on mismatch.

For a protected value `a` with duplicate `b`:
    mismatch = bitcast(a) != bitcast(b)                  (integers: a != b)
    a'       = select(mismatch, correct(a, b), a)          correct: and | min
so a fault-free run returns `a` itself, bit for bit. The duplicate's operands that come from outside
the duplicated code pass through an empty inline-asm copy, which no optimizer can see through, so
the duplicate survives `llc -O2` (which would otherwise merge it into the original). Every inserted
op carries the original's location and the `lltfi.sid` marker: faults can be injected into
originals, duplicates, compares and corrections alike, by the same operator selection (the `sid`
opcode group selects the marked checking code whatever its opcode).

Floating-point arithmetic (fadd/fsub/fmul/fdiv) is protected by default; integer arithmetic
(add/sub/mul/shifts/and/or/xor) when the selector asks for it, as programs and MLIR modules do.
For integers `min` is the unsigned minimum: like `and`, it undoes a 0->1 flip in either copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lltfi_mlir.dialect_passes.module_view import module_view
from lltfi_mlir.dialect_passes.sites import NodeInfo, SiteSelector, node_name_of, opcode_of, source_of
from mlir import ir
from mlir.dialects import llvm

from lltfi_mlir.errors import PassError

TECHNIQUES = ("aid", "acd")
CORRECTIONS = ("and", "min", "none")
ARITHMETIC = frozenset({"fadd", "fsub", "fmul", "fdiv"})
INT_ARITHMETIC = frozenset({"add", "sub", "mul", "shl", "lshr", "ashr", "and", "or", "xor"})
MISMATCHES = "lltfi_sid_mismatches"
SID_MARK = "lltfi.sid"            # on every op the pass inserts, and on the module it hardened
INSTRUMENTED_MARK = "lltfi.inserted"
_INT_OF = {"f32": 32, "f64": 64}
_INT_TYPES = frozenset({"i8", "i16", "i32", "i64"})


@dataclass
class SidResult:
    changed: bool
    duplicated: int = 0     # instructions duplicated
    checks: int = 0         # compare + correct sequences inserted
    chains: int = 0         # ACD chains (AID: one per instruction)


def _overflow_none() -> ir.Attribute:
    return ir.Attribute.parse("#llvm.overflow<none>")


class _Marker:
    """Marks every op created inside the insertion point since the last call (the checking code)."""

    def __init__(self) -> None:
        self.unit = ir.UnitAttr.get()

    def value(self, value: ir.Value) -> ir.Value:
        owner = value.owner
        (owner.operation if hasattr(owner, "operation") else owner).attributes[SID_MARK] = self.unit
        return value

    def op(self, op: ir.OpView | ir.Operation) -> ir.OpView | ir.Operation:
        op.operation.attributes[SID_MARK] = self.unit
        return op


def _is_float(t: ir.Type) -> bool:
    return str(t) in _INT_OF


def _opaque(value: ir.Value, mark: _Marker) -> ir.Value:
    """An empty inline-asm copy of `value`: same bits, but nothing can fold across it."""
    if not _is_float(value.type):
        return mark.value(llvm.InlineAsmOp(value.type, [value], "", "=r,0", has_side_effects=True).result)
    int_t = ir.IntegerType.get_signless(_INT_OF[str(value.type)])
    as_int = mark.value(llvm.BitcastOp(int_t, value).result)
    copied = mark.value(llvm.InlineAsmOp(int_t, [as_int], "", "=r,0", has_side_effects=True).result)
    return mark.value(llvm.BitcastOp(value.type, copied).result)


def _check_and_correct(original: ir.Value, duplicate: ir.Value, correction: str,
                       mark: _Marker) -> tuple[ir.Value, list]:
    """Returns the corrected value and the inserted ops that read `original` (they must keep it)."""
    floating = _is_float(original.type)
    if floating:
        int_t = ir.IntegerType.get_signless(_INT_OF[str(original.type)])
        a_op = mark.op(llvm.BitcastOp(int_t, original))
        a, b = a_op.result, mark.value(llvm.BitcastOp(int_t, duplicate).result)
    else:
        a_op, a, b = None, original, duplicate
    compare = mark.op(llvm.ICmpOp(llvm.ICmpPredicate.ne, a, b))
    mismatch = compare.result
    readers = [a_op.operation if a_op is not None else compare.operation]
    if correction == "none":
        ptr = mark.value(llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), MISMATCHES).result)
        i64 = ir.IntegerType.get_signless(64)
        count = mark.value(llvm.LoadOp(i64, ptr).result)
        increment = mark.value(llvm.ZExtOp(i64, mismatch).result)
        mark.op(llvm.StoreOp(mark.value(llvm.AddOp(count, increment, _overflow_none()).result), ptr))
        return original, readers
    if correction == "and":
        both = mark.value(llvm.AndOp(a, b).result)
        fixed = mark.value(llvm.BitcastOp(original.type, both).result) if floating else both
        if not floating:
            readers.append(both.owner.operation)
    else:
        fixed = mark.value(llvm.intr_minimum(original, duplicate) if floating else llvm.intr_umin(original, duplicate))
        readers.append(fixed.owner.operation if hasattr(fixed.owner, "operation") else fixed.owner)
    select = mark.op(llvm.SelectOp(mismatch, fixed, original))
    readers.append(select.operation)
    return select.result, readers


@dataclass(frozen=True)
class DuplicateInstructionsPass:
    """AID or ACD over the selected arithmetic (default: fadd/fsub/fmul/fdiv in every operator)."""

    name = "lltfi-sid"
    technique: str = "aid"
    correction: str = "and"
    selector: SiteSelector = SiteSelector(opcodes=ARITHMETIC)
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)

    def _selected(self, op: ir.Operation, fname: str) -> bool:
        opcode = opcode_of(op.name)
        if opcode not in ARITHMETIC | INT_ARITHMETIC or opcode not in self.selector.opcodes:
            return False
        if opcode in self.selector.exclude_opcodes or len(op.results) != 1:
            return False
        t = str(op.results[0].type)
        if t not in (_INT_OF if opcode in ARITHMETIC else _INT_TYPES):
            return False
        if self.selector.functions and fname not in self.selector.functions:
            return False
        if fname in self.selector.exclude_functions:
            return False
        node = node_name_of(op.location)
        if not self.selector.accepts_node(node, self.node_info.get(node) if node else None):
            return False
        return self.selector.accepts_source(source_of(op.location))

    def apply(self, module: ir.Module | ir.Operation) -> SidResult:
        """Harden `module` in place. Raises PassError (with the offending location) on bad options,
        a module that is already hardened or instrumented, or IR that does not verify."""
        view = module_view(module)
        if self.technique not in TECHNIQUES:
            raise PassError(f"lltfi-sid: technique {self.technique!r}: use one of {', '.join(TECHNIQUES)} "
                            "(od works on the ONNX graph: lltfi-mlir harden --sid od)")
        if self.correction not in CORRECTIONS:
            raise PassError(f"lltfi-sid: correct {self.correction!r}: use one of {', '.join(CORRECTIONS)}")
        if SID_MARK in view.operation.attributes:
            raise PassError("lltfi-sid: the module is already hardened (apply SID once)")
        symbols = ir.SymbolTable(view.operation)
        if "lltfi_fi_remaining" in symbols:
            raise PassError("lltfi-sid: the module is already instrumented: run lltfi-sid before lltfi-instrument")
        result = SidResult(changed=False)
        chains: list[list[ir.Operation]] = []
        for fn in view.body.operations:
            if fn.operation.name != "llvm.func" or not len(fn.regions[0].blocks):
                continue
            fname = ir.StringAttr(fn.attributes["sym_name"]).value
            fname = ir.StringAttr(fn.attributes["lltfi.name"]).value if "lltfi.name" in fn.attributes else fname
            for block in fn.regions[0].blocks:
                selected = [op.operation for op in block.operations if self._selected(op.operation, fname)]
                chains += self._chains(block, selected)
        if not chains:
            return result
        with view.context, ir.Location.unknown():
            mark = _Marker()
            if self.correction == "none" and MISMATCHES not in symbols:
                decl = ir.Module.parse(f"llvm.mlir.global external @{MISMATCHES}() {{addr_space = 0 : i32}} : i64")
                for op in list(decl.body.operations):
                    op.operation.move_before(view.body.operations[0])
            for chain in chains:
                self._duplicate_chain(chain, mark)
                result.duplicated += len(chain)
                result.checks += 1
            view.operation.attributes[SID_MARK] = ir.StringAttr.get(f"{self.technique} correct={self.correction}")
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

    def _duplicate_chain(self, chain: list[ir.Operation], mark: _Marker) -> None:
        root = chain[-1]
        inside = {op.results[0] for op in chain}
        value_map: dict[ir.Value, ir.Value] = {}
        anchor = root
        with ir.InsertionPoint.after(root), root.location:
            for op in chain:
                operands = list(op.operands)
                external = all(v not in inside for v in operands)
                clone = mark.op(op.clone(ip=ir.InsertionPoint.after(anchor)).operation)
                for index, v in enumerate(operands):
                    if v in value_map:
                        clone.operands[index] = value_map[v]
                if external:
                    with ir.InsertionPoint(clone), op.location:
                        clone.operands[0] = _opaque(operands[0], mark)
                value_map[op.results[0]] = clone.results[0]
                anchor = clone
            original, duplicate = root.results[0], value_map[root.results[0]]
            with ir.InsertionPoint.after(anchor), root.location:
                corrected, readers = _check_and_correct(original, duplicate, self.correction, mark)
            if self.correction != "none":
                original.replace_all_uses_except(corrected, readers)
