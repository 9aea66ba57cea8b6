"""Instrument fault sites with per-basic-block versioning.

Every block that holds n selected site instances is split into
  check:  r = lltfi_fi_remaining; enter = r < n; lltfi_fi_remaining = enter ? r : r - n
          cond_br enter, ^slow, ^fast
  fast:   the original instructions, untouched
  slow:   a clone in which each site's value passes through `lltfi_fi_<type>(site, value)`
so a run costs one load/compare/store per block execution, and the C hook (which injects, counts
for profiling, or traces) is called only during the one block execution that holds the target
instance. `lltfi_fi_remaining` counts selected dynamic instances still to skip: the hook at the
instance where it reads 0 is exactly the k-th selected dynamic instance.

Blocks whose values are used outside the block cannot be cloned without SSA repair; their sites
call the hook unconditionally (counted in the result as `inline_blocks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mlir import ir
from mlir.dialects import llvm

from .loop_nests import Loop, block_multiplicities, compute_counts, escapes, find_loops
from .sites import NodeInfo, Site, SiteSelector, SiteTable, node_name_of, opcode_of, source_of, type_name

REMAINING = "lltfi_fi_remaining"
UNIT_COUNTS = "lltfi_unit_counts"  # defined by the generated glue, one i64 per versioning unit
_NEVER = {"llvm.mlir.constant", "llvm.mlir.addressof", "llvm.mlir.zero", "llvm.mlir.undef",
          "llvm.mlir.poison", "llvm.alloca", "llvm.return", "llvm.br", "llvm.cond_br", "llvm.switch",
          "llvm.unreachable", "llvm.intr.dbg.declare", "llvm.intr.dbg.value", "llvm.intr.dbg.label"}
# Site type -> (hook suffix, LLVM type of the hook's value); i1 travels as i8 (C has no i1).
_HOOKS = {"f32": ("f32", "f32"), "f64": ("f64", "f64"), "i1": ("i1", "i8"), "i8": ("i8", "i8"),
          "i16": ("i16", "i16"), "i32": ("i32", "i32"), "i64": ("i64", "i64"), "!llvm.ptr": ("ptr", "!llvm.ptr")}


@dataclass
class InstrumentResult:
    changed: bool
    sites: list[Site]
    versioned_blocks: int = 0
    inline_blocks: int = 0
    versioned_nests: int = 0
    # Versioning units (a loop nest or a block): site id -> instances per entry of the unit. The
    # profile multiplies each unit's entry count by these, so it needs no per-instance hook.
    units: list[dict[int, int]] = field(default_factory=list)


def _hook_name(tname: str) -> str:
    return f"lltfi_fi_{_HOOKS[tname][0]}"


def _declare_runtime(module: ir.Module, types: set[str]) -> None:
    """Declare the counter global and the hooks once per module (symbol table first)."""
    existing = {ir.StringAttr(op.attributes["sym_name"]).value for op in module.body.operations
                if "sym_name" in op.attributes}
    decls = []
    if REMAINING not in existing:
        decls.append(f"llvm.mlir.global external @{REMAINING}() {{addr_space = 0 : i32}} : i64")
    for t in sorted(types):
        name = _hook_name(t)
        if name in existing:
            continue
        llvm_t = _HOOKS[t][1]
        decls.append(f"llvm.func @{name}(i32, {llvm_t}) -> {llvm_t}")
        existing.add(name)
    if not decls:
        return
    parsed = ir.Module.parse("\n".join(decls), context=module.context)
    first = module.body.operations[0] if len(module.body.operations) else None
    for op in list(parsed.body.operations):
        if first is not None:
            op.operation.move_before(first)
        else:
            module.body.append(op.operation)


def _i(width: int, value: int) -> ir.Value:
    t = ir.IntegerType.get_signless(width)
    return llvm.ConstantOp(t, ir.IntegerAttr.get(t, value)).result


def _hook_call(site: Site, value: ir.Value) -> tuple[ir.Value, ir.Operation]:
    """value' = lltfi_fi_<type>(site, value), widening i1 to i8 for the C ABI.

    Returns the new value and the first inserted op that reads `value`."""
    arg = value
    if site.type == "i1":
        arg = llvm.ZExtOp(ir.IntegerType.get_signless(8), value).result
    call = llvm.CallOp(arg.type, [_i(32, site.id), arg], [], [],
                       callee=ir.FlatSymbolRefAttr.get(_hook_name(site.type)))
    result = call.result
    if site.type == "i1":
        result = llvm.TruncOp(value.type, result, ir.Attribute.parse("#llvm.overflow<none>")).result
    return result, arg.owner.operation if site.type == "i1" else call.operation


def _count_unit(unit: int) -> None:
    """lltfi_unit_counts[unit] += 1: entries of a versioning unit, for the profile."""
    i64 = ir.IntegerType.get_signless(64)
    base = llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), UNIT_COUNTS).result
    addr = llvm.GEPOp(ir.Type.parse("!llvm.ptr"), base, [], ir.DenseI32ArrayAttr.get([unit]), ir.TypeAttr.get(i64),
                      None).result
    count = llvm.LoadOp(i64, addr).result
    llvm.StoreOp(llvm.AddOp(count, _i(64, 1), ir.Attribute.parse("#llvm.overflow<none>")).result, addr)


def _countdown_check(count: int) -> ir.Value:
    """enter = remaining < count; remaining -= count unless entering (then the hooks count)."""
    i64 = ir.IntegerType.get_signless(64)
    ptr = llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), REMAINING).result
    remaining = llvm.LoadOp(i64, ptr).result
    n = _i(64, count)
    enter = llvm.ICmpOp(llvm.ICmpPredicate.ult, remaining, n).result
    rest = llvm.SubOp(remaining, n, ir.Attribute.parse("#llvm.overflow<none>")).result
    llvm.StoreOp(llvm.SelectOp(enter, remaining, rest).result, ptr)
    return enter


@dataclass(frozen=True)
class InstrumentSitesPass:
    """Select fault sites and instrument them; callable on any LLVM-dialect module."""

    name = "instrument-sites"
    selector: SiteSelector = SiteSelector()
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)
    # Check the countdown once per entry of a loop nest with an exact instance count (preheader),
    # instead of once per block; nests above this many instances per entry are split further.
    version_loop_nests: bool = True
    max_nest_instances: int = 1 << 16

    # -- selection --------------------------------------------------------------------------------
    def _registers(self, op: ir.Operation) -> list[tuple[str, ir.Type]]:
        reg = self.selector.register
        out: list[tuple[str, ir.Type]] = []
        if reg in ("dst", "all") and len(op.results) == 1 and type_name(op.results[0].type):
            out.append(("dst", op.results[0].type))
        if reg != "dst":
            for index, operand in enumerate(op.operands):
                wanted = reg in ("allsrc", "all") or reg == f"src{index + 1}"
                if wanted and type_name(operand.type):
                    out.append((f"src{index + 1}", operand.type))
        return out

    def _select(self, module: ir.Module, table: SiteTable) -> dict[ir.Block, list[tuple[ir.Operation, Site]]]:
        selector = self.selector
        per_block: dict[ir.Block, list[tuple[ir.Operation, Site]]] = {}
        for fn in module.body.operations:
            if fn.operation.name != "llvm.func" or not len(fn.regions[0].blocks):
                continue
            fname = ir.StringAttr(fn.attributes["sym_name"]).value
            if fname.startswith(("_mlir_ciface_", "lltfi_")):
                continue
            if fname == "__lltfi_program_main":  # a C program's main, renamed for the driver
                fname = "main"
            if selector.functions and fname not in selector.functions:
                continue
            if fname in selector.exclude_functions:
                continue
            for block in fn.regions[0].blocks:
                for op in block.operations:
                    op = op.operation
                    if op.name in _NEVER:
                        continue
                    opcode = opcode_of(op.name)
                    if opcode is None or opcode not in selector.opcodes or opcode in selector.exclude_opcodes:
                        continue
                    if selector.callees and not self._calls_one_of(op, selector.callees):
                        continue
                    node = node_name_of(op.location)
                    info = self.node_info.get(node) if node else None
                    if not selector.accepts_node(node, info):
                        continue
                    source = source_of(op.location)
                    if not selector.accepts_source(source):
                        continue
                    for register, t in self._registers(op):
                        site = table.add(function=fname, opcode=opcode, type=type_name(t), register=register,
                                         node=node, op_type=info.op_type if info else None,
                                         layer=info.layer if info else None,
                                         source=f"{source[0].rsplit('/', 1)[-1]}:{source[1]}" if source else None)
                        per_block.setdefault(block, []).append((op, site))
        return per_block

    @staticmethod
    def _calls_one_of(op: ir.Operation, callees: frozenset[str]) -> bool:
        if op.name != "llvm.call" or "callee" not in op.attributes:
            return False
        return ir.FlatSymbolRefAttr(op.attributes["callee"]).value in callees

    # -- rewriting --------------------------------------------------------------------------------
    def apply(self, module: ir.Module) -> InstrumentResult:
        table = SiteTable()
        with module.context, ir.Location.unknown():
            per_block = self._select(module, table)
            if not table.sites:
                return InstrumentResult(changed=False, sites=[])
            _declare_runtime(module, {s.type for s in table.sites})
            result = InstrumentResult(changed=True, sites=table.sites)
            by_region: dict[ir.Region, dict[ir.Block, list]] = {}
            for block, sites in per_block.items():
                by_region.setdefault(block.region, {})[block] = sites
            for region, blocks in by_region.items():
                self._instrument_region(region, blocks, result)
            decl = (f"llvm.mlir.global external @{UNIT_COUNTS}() {{addr_space = 0 : i32}} : "
                    f"!llvm.array<{max(1, len(result.units))} x i64>")
            parsed = ir.Module.parse(decl, context=module.context)
            for op in list(parsed.body.operations):
                op.operation.move_before(module.body.operations[0])
        return result

    def _instrument_region(self, region: ir.Region, per_block: dict, result: InstrumentResult) -> None:
        counts = {b: len(sites) for b, sites in per_block.items()}
        chosen: list[Loop] = []

        def choose(loop: Loop) -> None:
            if (loop.count and loop.count <= self.max_nest_instances and loop.preheader is not None
                    and not escapes(loop)):
                chosen.append(loop)
                return
            for child in loop.children:
                choose(child)

        if self.version_loop_nests:
            for loop in find_loops(region):
                compute_counts(loop, counts)
                choose(loop)
        unit_of: dict[Loop, int] = {}
        for loop in chosen:
            mult = block_multiplicities(loop)
            unit: dict[int, int] = {}
            for b in loop.blocks:
                for _, site in per_block.get(b, []):
                    unit[site.id] = unit.get(site.id, 0) + mult[b]
            unit_of[loop] = len(result.units)
            result.units.append(unit)
        work: list[tuple[ir.Block, list]] = []
        handled: set[ir.Block] = set()
        for loop in chosen:
            block_map, op_map = _clone_loop(region, loop)
            term = _terminator_of(loop.preheader)
            args = list(term.operands)
            with ir.InsertionPoint(term), term.location:
                _count_unit(unit_of[loop])
                enter = _countdown_check(loop.count)
                llvm.CondBrOp(enter, args, args, block_map[loop.header], loop.header,
                              branch_weights=ir.DenseI32ArrayAttr.get([1, 1 << 20]))
            term.erase()
            result.versioned_nests += 1
            for b in loop.blocks:
                handled.add(b)
                if b in per_block:
                    work.append((block_map[b], [(op_map[op], site) for op, site in per_block[b]]))
        # Blocks outside versioned nests are units of their own; copies inside a nest's slow
        # path are not (the nest counted the entry already).
        work += [(b, sites) for b, sites in per_block.items() if b not in handled]
        top_level = {b for b in per_block if b not in handled}
        for block, sites in work:
            unit = None
            if block in top_level:
                unit = len(result.units)
                counts_here: dict[int, int] = {}
                for _, site in sites:
                    counts_here[site.id] = counts_here.get(site.id, 0) + 1
                result.units.append(counts_here)
            if self._escapes(block):
                if unit is not None:
                    first = list(block.operations)[0].operation
                    with ir.InsertionPoint(first), first.location:
                        _count_unit(unit)
                self._instrument_inline(sites)
                result.inline_blocks += 1
            else:
                self._version_block(block, sites, unit)
                result.versioned_blocks += 1

    @staticmethod
    def _escapes(block: ir.Block) -> bool:
        for op in block.operations:
            for res in op.results:
                for use in res.uses:
                    if use.owner.operation.block != block:
                        return True
        return False

    @staticmethod
    def _instrument_op(op: ir.Operation, op_sites: list[Site]) -> ir.Value | None:
        """Insert hook calls around `op` for its sites; returns the hooked result, if any."""
        hooked = None
        for site in op_sites:
            if site.register == "dst":
                old = op.results[0]
                with ir.InsertionPoint.after(op), op.location:
                    hooked, reader = _hook_call(site, old)
                old.replace_all_uses_except(hooked, reader)
            else:
                index = int(site.register[3:]) - 1
                with ir.InsertionPoint(op), op.location:
                    op.operands[index] = _hook_call(site, op.operands[index])[0]
        return hooked

    def _instrument_inline(self, sites: list[tuple[ir.Operation, Site]]) -> None:
        by_op: dict[ir.Operation, list[Site]] = {}
        for op, site in sites:
            by_op.setdefault(op, []).append(site)
        for op, op_sites in by_op.items():
            self._instrument_op(op, op_sites)

    def _version_block(self, block: ir.Block, sites: list[tuple[ir.Operation, Site]], unit: int | None = None) -> None:
        by_op: dict[ir.Operation, list[Site]] = {}
        for op, site in sites:
            by_op.setdefault(op, []).append(site)
        ops = [op.operation for op in block.operations]
        terminator_loc = ops[-1].location
        fast = block.create_after()
        slow = fast.create_after()
        for op in ops:
            fast.append(op)
        # The slow copy: clone every op, remapping operands defined in this block.
        value_map: dict[ir.Value, ir.Value] = {}
        for op in ops:
            clone = op.clone(ip=ir.InsertionPoint(slow)).operation
            for index, operand in enumerate(clone.operands):
                if operand in value_map:
                    clone.operands[index] = value_map[operand]
            for old, new in zip(op.results, clone.results):
                value_map[old] = new
            if op in by_op:
                hooked = self._instrument_op(clone, by_op[op])
                if hooked is not None:
                    value_map[op.results[0]] = hooked
        with ir.InsertionPoint(block), terminator_loc:
            if unit is not None:
                _count_unit(unit)
            enter = _countdown_check(len(sites))
            llvm.CondBrOp(enter, [], [], slow, fast, branch_weights=ir.DenseI32ArrayAttr.get([1, 1 << 20]))


def _terminator_of(block: ir.Block) -> ir.Operation:
    return list(block.operations)[-1].operation


def _clone_loop(region: ir.Region, loop: Loop) -> tuple[dict, dict]:
    """Clone a loop nest's blocks at the end of the region; branches inside stay inside the copy."""
    anchor = list(region.blocks)[-1]
    block_map: dict[ir.Block, ir.Block] = {}
    value_map: dict[ir.Value, ir.Value] = {}
    for b in loop.blocks:
        anchor = anchor.create_after(*[a.type for a in b.arguments])
        block_map[b] = anchor
        for old, new in zip(b.arguments, anchor.arguments):
            value_map[old] = new
    op_map: dict[ir.Operation, ir.Operation] = {}
    for b in loop.blocks:
        for op in b.operations:
            op = op.operation
            clone = op.clone(ip=ir.InsertionPoint(block_map[b])).operation
            for index, operand in enumerate(clone.operands):
                if operand in value_map:
                    clone.operands[index] = value_map[operand]
            for index, succ in enumerate(clone.successors):
                if succ in block_map:
                    clone.successors[index] = block_map[succ]
            for old, new in zip(op.results, clone.results):
                value_map[old] = new
            op_map[op] = clone
    return block_map, op_map


def node_info_from_manifest(manifest: dict) -> dict[str, NodeInfo]:
    """NodeInfo per node name; layer numbers are 1-based per op type, as LLTFI's -layerNo."""
    return {n["name"]: NodeInfo(n["op_type"], n["type_index"] + 1) for n in manifest["nodes"]}
