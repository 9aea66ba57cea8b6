"""Instrument fault sites with versioning units: loop nests with exact counts, else basic blocks.

A versioning unit holding n selected site instances per entry becomes
  check:  r = lltfi_fi_remaining; enter = r < n; lltfi_fi_remaining = enter ? r : r - n
          cond_br enter, ^cold, ^fast
  fast:   the original instructions, untouched
  cold:   a copy in which each site's value passes through `lltfi_fi_<type>(site, value)`
so a run costs one load/compare/store per unit entry, and the C hook (which injects, counts for
profiling, or traces) is called only during the one unit execution that holds the target instance.
`lltfi_fi_remaining` counts selected dynamic instances still to skip: the hook at the instance
where it reads 0 is exactly the k-th selected dynamic instance. A unit is a loop nest whose
instances per entry are a compile-time constant (loop_nests.py), checked in its preheader; any
other site block is a unit of its own. Each unit entry also does `lltfi_unit_counts[unit] += 1`,
so a golden run yields the profile without calling any hook.

Blocks whose values are used outside the block cannot be cloned without SSA repair; their sites
call the hook unconditionally (counted in the result as `inline_blocks`). With `versioning=False`
every site does: the plain program-order enumeration, which a versioned build must reproduce
instance for instance (units are entered and left whole, so unit order is program order).

Control-flow facts (reverse post-order, dominators, loops) are computed once per function before
it is rewritten, and sites are numbered in reverse post-order: the result does not depend on how
the blocks are laid out in the text.

Vector sites. An op on `vector<L x T>` (T a scalar type) is one static site with `lanes = L` and
`type = T`: each execution is L instances, one per lane; together they are the scalar build's
instances, enumerated in the vector code's order. Unit counts are in lanes; in the cold copies
lane 0..L-1, in that order, goes through the scalar hook (extractelement, lltfi_fi_<T>,
insertelement) and the rebuilt vector replaces the result (or the source operand).

A second application. Everything the pass inserts carries `lltfi.inserted`, and each site op
records its ids as `lltfi.sites = {register = id}`. Applying the pass again first strips the
previous instrumentation (checks become branches to the fast path, cold copies are deleted, hooks
are bypassed), keeps the previous sites with their ids, numbers newly selected sites after them,
and instruments the union exactly as one application would. Stacking a second instrumentation on
the first cannot stay exact with one shared countdown: a unit's fast path would subtract the first
application's instances before the second's, while its cold copy hooks them in program order.
The result of a second application describes the whole module (all sites, units renumbered).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mlir import ir
from mlir.dialects import llvm

from .loop_nests import Cfg, Loop, analyze, block_multiplicities, compute_counts, escapes, result_users
from .module_view import module_view
from .sites import (
    OD_COMBINE,
    OD_DUPLICATE,
    SID,
    NodeInfo,
    Site,
    SiteSelector,
    lanes_of,
    node_name_of,
    opcode_of,
    source_of,
    type_name,
)

REMAINING = "lltfi_fi_remaining"
UNIT_COUNTS = "lltfi_unit_counts"  # defined by the generated glue, one i64 per versioning unit
INSERTED = "lltfi.inserted"        # marks every op this pass creates (never a site; stripped on re-application)
SITE_IDS = "lltfi.sites"           # on a site op: {register = site id}
COUNTS = "lltfi.instrumented"      # on the module: {sites, units}, what the linked glue must define
SID_MARK = "lltfi.sid"             # on the ops (and the module) that selective instruction duplication hardened
_NEVER = {"llvm.mlir.constant", "llvm.mlir.addressof", "llvm.mlir.zero", "llvm.mlir.undef",
          "llvm.mlir.poison", "llvm.alloca", "llvm.return", "llvm.br", "llvm.cond_br", "llvm.switch",
          "llvm.unreachable", "llvm.intr.dbg.declare", "llvm.intr.dbg.value", "llvm.intr.dbg.label"}
# Vectors of these element types go through memory to one `lltfi_fi_lanes_<type>(site, ptr, n)`
# call (i1 and pointer vectors have no plain C array layout: they go lane by lane).
_LANE_HOOKS = frozenset({"f32", "f64", "i8", "i16", "i32", "i64"})
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
    kept_sites: int = 0  # sites of a previous application, re-instrumented with their ids


def _hook_name(tname: str) -> str:
    return f"lltfi_fi_{_HOOKS[tname][0]}"


def _mark(op: ir.OpView) -> ir.OpView:
    op.operation.attributes[INSERTED] = ir.UnitAttr.get()
    return op


def _declare(module: ir.Module, decls: list[str]) -> None:
    parsed = ir.Module.parse("\n".join(decls), context=module.context)
    first = module.body.operations[0] if len(module.body.operations) else None
    for op in list(parsed.body.operations):
        if first is not None:
            op.operation.move_before(first)
        else:
            module.body.append(op.operation)


def _declare_runtime(module: ir.Module, types: set[str], units: int) -> None:
    """Declare the counters and hooks once per module (symbol table first); size the unit counters."""
    table = ir.SymbolTable(module.operation)
    decls = []
    if REMAINING not in table:
        decls.append(f"llvm.mlir.global external @{REMAINING}() {{addr_space = 0 : i32}} : i64")
    for t in sorted(types):
        if _hook_name(t) not in table:
            llvm_t = _HOOKS[t][1]
            decls.append(f"llvm.func @{_hook_name(t)}(i32, {llvm_t}) -> {llvm_t}")
        if t in _LANE_HOOKS and _lanes_hook_name(t) not in table:
            decls.append(f"llvm.func @{_lanes_hook_name(t)}(i32, !llvm.ptr, i32)")
    array = f"!llvm.array<{max(1, units)} x i64>"  # the glue defines the array, one i64 per unit
    if UNIT_COUNTS in table:  # a previous application's: resize in place
        table[UNIT_COUNTS].attributes["global_type"] = ir.TypeAttr.get(ir.Type.parse(array))
    else:
        decls.append(f"llvm.mlir.global external @{UNIT_COUNTS}() {{addr_space = 0 : i32}} : {array}")
    if decls:
        _declare(module, decls)


def _lanes_hook_name(tname: str) -> str:
    return f"lltfi_fi_lanes_{tname}"


def _i(width: int, value: int) -> ir.Value:
    t = ir.IntegerType.get_signless(width)
    return _mark(llvm.ConstantOp(t, ir.IntegerAttr.get(t, value))).result


def _count_unit(unit: int) -> None:
    """lltfi_unit_counts[unit] += 1: entries of a versioning unit, for the profile."""
    i64 = ir.IntegerType.get_signless(64)
    base = _mark(llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), UNIT_COUNTS)).result
    addr = _mark(llvm.GEPOp(ir.Type.parse("!llvm.ptr"), base, [], ir.DenseI32ArrayAttr.get([unit]),
                            ir.TypeAttr.get(i64), None)).result
    count = _mark(llvm.LoadOp(i64, addr)).result
    _mark(llvm.StoreOp(_mark(llvm.AddOp(count, _i(64, 1), ir.Attribute.parse("#llvm.overflow<none>"))).result,
                       addr))


def _countdown_check(count: int) -> ir.Value:
    """enter = remaining < count; remaining -= count unless entering (then the hooks count)."""
    i64 = ir.IntegerType.get_signless(64)
    ptr = _mark(llvm.AddressOfOp(ir.Type.parse("!llvm.ptr"), REMAINING)).result
    remaining = _mark(llvm.LoadOp(i64, ptr)).result
    n = _i(64, count)
    enter = _mark(llvm.ICmpOp(llvm.ICmpPredicate.ult, remaining, n)).result
    rest = _mark(llvm.SubOp(remaining, n, ir.Attribute.parse("#llvm.overflow<none>"))).result
    _mark(llvm.StoreOp(_mark(llvm.SelectOp(enter, remaining, rest)).result, ptr))
    return enter


def _branch(enter: ir.Value, args: list[ir.Value], cold: ir.Block, fast: ir.Block) -> None:
    _mark(llvm.CondBrOp(enter, args, args, cold, fast, branch_weights=ir.DenseI32ArrayAttr.get([1, 1 << 20])))


class _Hooks:
    """Emits hook calls. A model gets tens of thousands of them (one per vector lane), so ops are
    created in generic form with attributes built once (ODS builders are ~3x slower) and the
    constants a block's hooks share are created once, at the start of that block."""

    def __init__(self) -> None:
        self._mark = ir.UnitAttr.get()
        self._i8 = ir.IntegerType.get_signless(8)
        self._segments = ir.DenseI32ArrayAttr.get([2, 0])
        self._bundles = ir.DenseI32ArrayAttr.get([])
        self._callees = {t: ir.FlatSymbolRefAttr.get(_hook_name(t)) for t in _HOOKS}
        self._constants: dict[tuple[ir.Block, int, int], ir.Value] = {}
        self._lane_callees = {t: ir.FlatSymbolRefAttr.get(_lanes_hook_name(t)) for t in _LANE_HOOKS}
        self._lane_segments = ir.DenseI32ArrayAttr.get([3, 0])
        self._slots: dict[tuple[ir.Operation, str], ir.Value] = {}

    def _slot(self, block: ir.Block, vtype: ir.Type) -> ir.Value:
        """One stack slot per function and vector type, allocated in the entry block."""
        fn = block.owner.operation
        key = (fn, str(vtype))
        if key not in self._slots:
            entry = fn.regions[0].blocks[0]
            with ir.InsertionPoint.at_block_begin(entry):
                one = self._op("llvm.mlir.constant", ir.IntegerType.get_signless(64), [],
                               value=ir.IntegerAttr.get(ir.IntegerType.get_signless(64), 1))
                self._slots[key] = self._op("llvm.alloca", ir.Type.parse("!llvm.ptr"), [one],
                                            elem_type=ir.TypeAttr.get(vtype))
        return self._slots[key]

    def _op(self, name: str, result: ir.Type, operands: list[ir.Value], **attributes: ir.Attribute) -> ir.Value:
        attributes[INSERTED] = self._mark
        return ir.Operation.create(name, results=[result], operands=operands, attributes=attributes).result

    def _constant(self, block: ir.Block, width: int, value: int) -> ir.Value:
        key = (block, width, value)
        if key not in self._constants:
            t = ir.IntegerType.get_signless(width)
            with ir.InsertionPoint.at_block_begin(block):
                self._constants[key] = self._op("llvm.mlir.constant", t, [], value=ir.IntegerAttr.get(t, value))
        return self._constants[key]

    def _scalar(self, site: ir.Value, tname: str, value: ir.Value) -> tuple[ir.Value, ir.Operation]:
        """lltfi_fi_<type>(site, value), widening i1 to i8 for the C ABI; also the op reading `value`."""
        arg = self._op("llvm.zext", self._i8, [value]) if tname == "i1" else value
        result = self._op("llvm.call", arg.type, [site, arg], callee=self._callees[tname],
                          operandSegmentSizes=self._segments, op_bundle_sizes=self._bundles)
        reader = (arg if tname == "i1" else result).owner.operation
        if tname == "i1":
            result = self._op("llvm.trunc", value.type, [result])
        return result, reader

    def hook(self, block: ir.Block, site: Site, value: ir.Value) -> tuple[ir.Value, list[ir.Operation]]:
        """Pass `value` through the hook, lane 0..L-1 for vectors; returns it and the ops that read it."""
        site_id = self._constant(block, 32, site.id)
        if not isinstance(value.type, ir.VectorType):
            hooked, reader = self._scalar(site_id, site.type, value)
            return hooked, [reader]
        if site.type in _LANE_HOOKS:
            slot = self._slot(block, value.type)
            store = ir.Operation.create("llvm.store", operands=[value, slot], attributes={INSERTED: self._mark})
            ir.Operation.create("llvm.call", operands=[site_id, slot, self._constant(block, 32, site.lanes)],
                                attributes={INSERTED: self._mark, "callee": self._lane_callees[site.type],
                                            "operandSegmentSizes": self._lane_segments,
                                            "op_bundle_sizes": self._bundles})
            return self._op("llvm.load", value.type, [slot]), [store]
        element_type = value.type.element_type
        readers, result = [], value
        for lane in range(site.lanes):
            position = self._constant(block, 64, lane)
            element = self._op("llvm.extractelement", element_type, [value, position])
            hooked, _ = self._scalar(site_id, site.type, element)
            inserted = self._op("llvm.insertelement", value.type, [result, hooked, position])
            readers += [element.owner.operation, inserted.owner.operation] if lane == 0 else \
                [element.owner.operation]
            result = inserted
        return result, readers

    def instrument_op(self, op: ir.Operation, op_sites: list[Site]) -> ir.Value | None:
        """Insert hook calls around `op` for its sites; returns the hooked result, if any."""
        hooked = None
        for site in op_sites:
            if site.register == "dst":
                old = op.results[0]
                with ir.InsertionPoint.after(op), op.location:
                    hooked, readers = self.hook(op.block, site, old)
                old.replace_all_uses_except(hooked, readers)
            else:
                index = int(site.register[3:]) - 1
                with ir.InsertionPoint(op), op.location:
                    op.operands[index] = self.hook(op.block, site, op.operands[index])[0]
        return hooked

    def instrument_ops(self, sites: list[tuple[ir.Operation, Site]]) -> None:
        for op, op_sites in _by_op(sites).items():
            self.instrument_op(op, op_sites)

    def version_block(self, block: ir.Block, sites: list[tuple[ir.Operation, Site]], unit: int | None) -> None:
        """Split `block` into check, fast (the original ops) and cold (a hooked copy)."""
        by_op = _by_op(sites)
        ops = [op.operation for op in block.operations]
        terminator_loc = ops[-1].location
        fast = block.create_after()
        cold = fast.create_after()
        # The copy is made in C++ (op by op from Python, remapping each operand, was slow): the ops
        # move into a scratch op's block, the scratch op is cloned, and both blocks' ops move out.
        with _scratch_point(block.region):
            scratch = ir.Operation.create("builtin.module", regions=1)
        holder = scratch.regions[0].blocks.append()
        for op in ops:
            holder.append(op)
        copy = scratch.clone()
        for op in ops:
            fast.append(op)
        clones = [op.operation for op in copy.regions[0].blocks[0].operations]
        for clone in clones:
            cold.append(clone)
        scratch.erase()
        copy.erase()
        for op, clone in zip(ops, clones):
            if op in by_op:
                self.instrument_op(clone, by_op[op])
        with ir.InsertionPoint(block), terminator_loc:
            if unit is not None:
                _count_unit(unit)
            _branch(_countdown_check(sum(site.lanes for _, site in sites)), [], cold, fast)


def _by_op(sites: list[tuple[ir.Operation, Site]]) -> dict[ir.Operation, list[Site]]:
    by_op: dict[ir.Operation, list[Site]] = {}
    for op, site in sites:
        by_op.setdefault(op, []).append(site)
    return by_op


@dataclass
class _Function:
    """One function's selection, with its control-flow facts computed before any rewriting."""

    name: str
    region: ir.Region
    cfg: Cfg
    order: list[ir.Block]                                   # reverse post-order, then unreachable blocks
    per_block: dict[ir.Block, list[tuple[ir.Operation, Site]]] = field(default_factory=dict)
    found: dict[ir.Block, set[ir.Block]] = field(default_factory=dict)
    ops: int = 0  # operations before rewriting (how much code there is to copy and compile)
    candidates: int = 0  # instructions that count in the static instruction index

    def users(self, block: ir.Block) -> set[ir.Block]:
        """Blocks using a result of `block`'s ops (computed once per original block)."""
        if block not in self.found:
            self.found[block] = result_users(block)
        return self.found[block]


@dataclass
class Plan:
    """What an application does, decided before any rewriting: the sites, each function's nests, and
    its first unit id, so that functions can be instrumented apart (even in other processes)."""

    functions: list[_Function]
    result: InstrumentResult
    nests: list[list[Loop]]
    first_unit: list[int]
    units: int = 0


def _unnested_site_blocks(func: _Function, chosen: list[Loop]) -> list[ir.Block]:
    """Site blocks outside the chosen nests, in order: each a versioning unit of its own."""
    nested = {b for loop in chosen for b in loop.blocks}
    return [b for b in func.order if b in func.per_block and b not in nested]


@dataclass(frozen=True)
class InstrumentSitesPass:
    """Select fault sites and instrument them; callable on any LLVM-dialect module."""

    name = "instrument-sites"
    selector: SiteSelector = SiteSelector()
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)
    # Check the countdown once per entry of a loop nest with an exact instance count (preheader),
    # instead of once per block; nests above this many instances per entry are split further.
    version_loop_nests: bool = True
    # 2^20: a register tile's whole reduction nest fits (checked once per tile; ResNet-50 idle
    # overhead +2.7% by callgrind, against +19.6% at 2^16, where hot reduction bodies were checked
    # per block), and a targeted cold copy still costs only milliseconds.
    max_nest_instances: int = 1 << 20
    # False: no fast paths, the hook runs at every instance. Slow, but its enumeration is plain program
    # order, which every versioned build must reproduce instance for instance (the tests compare them).
    versioning: bool = True

    # -- selection --------------------------------------------------------------------------------
    def _registers(self, op: ir.Operation) -> list[str]:
        reg = self.selector.register
        out: list[str] = []
        if reg in ("dst", "all") and len(op.results) == 1 and type_name(op.results[0].type):
            out.append("dst")
        if reg != "dst":
            for index, operand in enumerate(op.operands):
                wanted = reg in ("allsrc", "all") or reg == f"src{index + 1}"
                if wanted and type_name(operand.type):
                    out.append(f"src{index + 1}")
        return out

    def _accepts(self, op: ir.Operation, opcode: str | None, hardened: bool = False) -> bool:
        selector = self.selector
        if opcode is None or opcode in selector.exclude_opcodes:
            return False
        # In a hardened module (SID ran), the `sid` group selects the checking code by its marker.
        inserted_by_sid = hardened and SID_MARK in op.attributes
        if inserted_by_sid and SID in selector.exclude_opcodes:
            return False
        if opcode not in selector.opcodes and not (inserted_by_sid and SID in selector.opcodes):
            return False
        if selector.callees and not self._calls_one_of(op, selector.callees):
            return False
        node = node_name_of(op.location)
        if not selector.accepts_node(node, self.node_info.get(node) if node else None):
            return False
        return selector.accepts_source(source_of(op.location))

    def _functions(self, module: ir.Module) -> list[tuple[str, ir.Operation]]:
        out = []
        for fn in module.body.operations:
            if fn.operation.name != "llvm.func" or not len(fn.regions[0].blocks):
                continue
            fname = ir.StringAttr(fn.attributes["sym_name"]).value
            if fname.startswith(("_mlir_ciface_", "lltfi_")) or "lltfi.driver" in fn.attributes:
                continue  # C interface wrappers, the runtime, and the driver's entry wrapper
            if "lltfi.name" in fn.attributes:  # an MLIR module's entry, renamed for the driver
                fname = ir.StringAttr(fn.attributes["lltfi.name"]).value
            out.append(("main" if fname == "__lltfi_program_main" else fname, fn.operation))  # a C main
        return out

    def _select(self, module: ir.Module, instrumented: bool,
                only: set[str] | None = None) -> tuple[list[_Function], int]:
        """Sites in reverse post-order of each function; a previous application's sites keep their ids.
        `only`: the functions (by symbol) to look at, numbering their sites and instructions from 0."""
        selector = self.selector
        hardened = SID_MARK in module.operation.attributes
        functions: list[_Function] = []
        picks: list[tuple[_Function, ir.Block, ir.Operation, str, int | None, int]] = []
        candidates: list[tuple[_Function, ir.Block, ir.Operation, dict, bool, int]] = []
        index = -1
        for fname, fn in self._functions(module):
            if only is not None and ir.StringAttr(fn.attributes["sym_name"]).value not in only:
                continue
            region = fn.regions[0]
            cfg = analyze(region)
            reachable = set(cfg.blocks)
            order = cfg.blocks + [b for b in region.blocks if b not in reachable]
            func = _Function(fname, region, cfg, order)
            functions.append(func)
            wanted_fn = (not selector.functions or fname in selector.functions) and \
                fname not in selector.exclude_functions
            for block in order:
                func.ops += len(block.operations)
                for op in block.operations:
                    op = op.operation
                    opcode = opcode_of(op.name)
                    if opcode is None or op.name in _NEVER:
                        continue
                    previous: dict[str, int] = {}
                    if instrumented:  # attributes are slow to read: only after a previous application
                        if INSERTED in op.attributes:
                            continue
                        if SITE_IDS in op.attributes:
                            previous = {n.name: ir.IntegerAttr(n.attr).value
                                        for n in ir.DictAttr(op.attributes[SITE_IDS])}
                    index += 1  # the static instruction index (`lltfi-mlir sites`, LLFI's llfiindex)
                    func.candidates += 1
                    accepted = wanted_fn and (not selector.instructions or index in selector.instructions) \
                        and self._accepts(op, opcode, hardened)
                    candidates.append((func, block, op, previous, accepted, index))
        sliced = _slices(candidates, selector.trace) if selector.trace else set()
        for func, block, op, previous, accepted, index in candidates:
            registers = set(previous)
            if accepted or op in sliced:
                registers.update(self._registers(op))
            for register in sorted(registers, key=lambda r: -1 if r == "dst" else int(r[3:])):
                picks.append((func, block, op, register, previous.get(register), index))
        # Previous ids keep their order and stay dense; new sites follow them.
        old = sorted({p[4] for p in picks if p[4] is not None})
        renumber = {o: i for i, o in enumerate(old)}
        next_id, seen = len(old), set()
        for func, block, op, register, previous, index in picks:
            if previous is not None and previous not in seen:
                seen.add(previous)
                site_id = renumber[previous]
            else:
                site_id, next_id = next_id, next_id + 1
            t = op.results[0].type if register == "dst" else op.operands[int(register[3:]) - 1].type
            node = node_name_of(op.location)
            info = self.node_info.get(node) if node else None
            source = source_of(op.location)
            site = Site(id=site_id, function=func.name, opcode=opcode_of(op.name), type=type_name(t),
                        register=register, node=node, op_type=info.op_type if info else None,
                        layer=info.layer if info else None,
                        source=f"{source[0].rsplit('/', 1)[-1]}:{source[1]}" if source else None, lanes=lanes_of(t),
                        instruction=index)
            func.per_block.setdefault(block, []).append((op, site))
            ids = ({n.name: n.attr for n in ir.DictAttr(op.attributes[SITE_IDS])} if SITE_IDS in op.attributes
                   else {})
            ids[register] = ir.IntegerAttr.get(ir.IntegerType.get_signless(32), site_id)
            op.attributes[SITE_IDS] = ir.DictAttr.get(ids)
        return functions, len(seen)

    @staticmethod
    def _calls_one_of(op: ir.Operation, callees: frozenset[str]) -> bool:
        if op.name != "llvm.call" or "callee" not in op.attributes:
            return False
        return ir.FlatSymbolRefAttr(op.attributes["callee"]).value in callees

    # -- rewriting --------------------------------------------------------------------------------
    def apply(self, module: ir.Module | ir.Operation) -> InstrumentResult:
        """Instrument in place (a second application re-instruments the union; see the module doc)."""
        module = module_view(module)
        with module.context, ir.Location.unknown():
            stripped = _strip(module)
            plan = self.plan(module, stripped)
            if not plan.result.sites:
                if COUNTS in module.operation.attributes:
                    del module.operation.attributes[COUNTS]
                return InstrumentResult(changed=stripped, sites=[])
            self.instrument(plan, range(len(plan.functions)))
            self.finish(module, plan)
        return plan.result

    def plan(self, module: ir.Module, stripped: bool = False, only: set[str] | None = None) -> Plan:
        """Select the sites, and choose each function's versioning units (numbered in function order).
        `only`: plan these functions alone, numbering from 0 (`shift` moves the numbers after others')."""
        functions, kept = self._select(module, stripped, only)
        sites = sorted((s for f in functions for sites in f.per_block.values() for _, s in sites), key=lambda s: s.id)
        plan = Plan(functions, InstrumentResult(changed=True, sites=sites, kept_sites=kept), [], [])
        if sites or only is not None:  # a half without sites still takes part in the numbering
            for func in functions:
                plan.nests.append(self._choose_nests(func, func.users))
                plan.first_unit.append(plan.units)
                plan.units += len(plan.nests[-1]) + len(_unnested_site_blocks(func, plan.nests[-1]))
            plan.result.units = [{} for _ in range(plan.units)]  # filled in by `instrument`
        return plan

    def shift(self, plan: Plan, sites: int, units: int, instructions: int) -> None:
        """Number a plan made with `only` after `sites` sites, `units` units and `instructions`
        instructions planned elsewhere (in the op attributes too); `plan.units` becomes the total
        once the caller adds the others' units."""
        i32 = ir.IntegerType.get_signless(32)
        for func in plan.functions:
            for block, entries in func.per_block.items():
                func.per_block[block] = [(op, dataclasses.replace(site, id=site.id + sites,
                                                                  instruction=site.instruction + instructions))
                                         for op, site in entries]
                for op in {op for op, _ in entries}:
                    ids = {n.name: ir.IntegerAttr.get(i32, ir.IntegerAttr(n.attr).value + sites)
                           for n in ir.DictAttr(op.attributes[SITE_IDS])}
                    op.attributes[SITE_IDS] = ir.DictAttr.get(ids)
        plan.result.sites = sorted((s for f in plan.functions for entries in f.per_block.values() for _, s in entries),
                                   key=lambda s: s.id)
        plan.first_unit = [u + units for u in plan.first_unit]
        plan.result.units = [{} for _ in range(units)] + plan.result.units
        plan.units += units

    def instrument(self, plan: Plan, indices: Iterable[int]) -> None:
        """Instrument these functions of the plan (in any process: unit ids come from the plan)."""
        hooks = _Hooks()
        for i in indices:
            self._instrument_function(plan.functions[i], plan.nests[i], plan.first_unit[i], plan.result, hooks)

    def finish(self, module: ir.Module, plan: Plan) -> None:
        """Declare the runtime's counters and hooks, and record the counts the glue must define."""
        sites = plan.result.sites
        _declare_runtime(module, {s.type for s in sites}, plan.units)
        i64 = ir.IntegerType.get_signless(64)
        module.operation.attributes[COUNTS] = ir.DictAttr.get(
            {"sites": ir.IntegerAttr.get(i64, len(sites)), "units": ir.IntegerAttr.get(i64, plan.units)})

    def _choose_nests(self, func: _Function, users: Callable[[ir.Block], set[ir.Block]]) -> list[Loop]:
        """Outermost loops with an exact count small enough to clone; larger ones are split."""
        counts = {b: sum(site.lanes for _, site in sites) for b, sites in func.per_block.items()}
        chosen: list[Loop] = []

        def choose(loop: Loop) -> None:
            if (loop.count and loop.count <= self.max_nest_instances and loop.preheader is not None
                    and not escapes(loop, users)):
                chosen.append(loop)
            elif any(b in counts for b in loop.blocks):
                for child in loop.children:
                    choose(child)

        if self.version_loop_nests and self.versioning:
            for loop in func.cfg.loops:
                compute_counts(loop, counts, func.cfg)
                choose(loop)
        return chosen

    def _instrument_function(self, func: _Function, chosen: list[Loop], first_unit: int, result: InstrumentResult,
                             hooks: _Hooks) -> None:
        per_block, users = func.per_block, func.users
        work: list[tuple[ir.Block, list, int | None, bool]] = []
        unit = first_unit
        for loop in chosen:
            mult = block_multiplicities(loop)
            unit_sites: dict[int, int] = {}
            for b in loop.blocks:
                for _, site in per_block.get(b, []):
                    unit_sites[site.id] = unit_sites.get(site.id, 0) + mult[b] * site.lanes
            result.units[unit] = unit_sites
            block_map, op_map = _clone_loop(loop, func.region)
            term = _terminator_of(loop.preheader)
            args = list(term.operands)
            with ir.InsertionPoint(term), term.location:
                _count_unit(unit)
                _branch(_countdown_check(loop.count), args, block_map[loop.header], loop.header)
            term.erase()
            result.versioned_nests += 1
            unit += 1
            for b in loop.blocks:
                if b in per_block:  # the cold copy's blocks: the nest counted the entry already
                    work.append((block_map[b], [(op_map[op], site) for op, site in per_block[b]], None,
                                 bool(users(b))))
        for b in _unnested_site_blocks(func, chosen):  # a unit of its own
            unit_sites = {}
            for _, site in per_block[b]:
                unit_sites[site.id] = unit_sites.get(site.id, 0) + site.lanes
            work.append((b, per_block[b], unit, bool(users(b))))
            result.units[unit] = unit_sites
            unit += 1
        # A block whose values are used elsewhere cannot be copied without SSA repair: inline hooks.
        for block, sites, unit, escaping in work:
            if escaping or not self.versioning:
                if unit is not None:
                    first = block.operations[0].operation
                    with ir.InsertionPoint(first), first.location:
                        _count_unit(unit)
                hooks.instrument_ops(sites)
                result.inline_blocks += 1
            else:
                hooks.version_block(block, sites, unit)
                result.versioned_blocks += 1


def _slices(candidates: list[tuple], directions: frozenset[str]) -> set[ir.Operation]:
    """LLFI's includeInjectionTrace: the candidate instructions that use a selected value, directly
    or transitively (forward), or that compute one of its operands (backward), through SSA def-use
    chains within the function (block arguments, LLVM's PHIs, end a backward chain)."""
    known = {c[2] for c in candidates}
    seeds = [c[2] for c in candidates if c[4]]
    found: set[ir.Operation] = set()
    if "forward" in directions:
        stack, seen = list(seeds), set(seeds)
        while stack:
            for result in stack.pop().results:
                for use in result.uses:
                    user = use.owner.operation if hasattr(use.owner, "operation") else use.owner
                    if user not in seen:
                        seen.add(user)
                        stack.append(user)
        found |= seen & known
    if "backward" in directions:
        stack, seen = list(seeds), set(seeds)
        while stack:
            for operand in stack.pop().operands:
                if isinstance(operand, ir.OpResult):
                    owner = operand.owner.operation if hasattr(operand.owner, "operation") else operand.owner
                    if owner not in seen:
                        seen.add(owner)
                        stack.append(owner)
        found |= seen & known
    return found


def _terminator_of(block: ir.Block) -> ir.Operation:
    return block.operations[len(block.operations) - 1].operation


def _scratch_point(region: ir.Region) -> ir.InsertionPoint:
    """Where scratch ops go: the start of the module that holds the function of `region`."""
    return ir.InsertionPoint.at_block_begin(region.owner.operation.parent.regions[0].blocks[0])


MAX_MOVED_BLOCKS = 512  # blocks a region clone may move aside and back (else: op by op)


def _clone_loop(loop: Loop, region: ir.Region) -> tuple[dict, dict]:
    """Clone a loop nest's blocks to the end of its function; branches inside stay inside the copy.

    The nest is cloned as one region, in C++ (op by op from Python, remapping each operand, took
    most of the pass's time): its blocks move into a scratch op, in `loop.blocks` order, the blocks
    after them into another, the scratch op is cloned, and all move back in their order, the copy
    last. In functions where that would move too many blocks, op by op."""
    members = set(loop.blocks)
    order = list(region.blocks)
    tail = order[min(order.index(b) for b in loop.blocks):]
    if len(tail) > MAX_MOVED_BLOCKS:
        return _clone_op_by_op(loop, order[-1])
    with _scratch_point(region):
        nest = ir.Operation.create("builtin.module", regions=1)
        rest = ir.Operation.create("builtin.module", regions=1)
    for b in loop.blocks:
        b.append_to(nest.regions[0])
    for b in tail:
        if b not in members:
            b.append_to(rest.regions[0])
    copy = nest.clone()
    for b in tail:
        b.append_to(region)
    for new in list(copy.regions[0].blocks):
        new.append_to(region)
    for scratch in (nest, rest, copy):
        scratch.erase()
    # Blocks and ops looked up again through the function: objects reached through a scratch op
    # die with it.
    copies = list(region.blocks)[-len(loop.blocks):]
    block_map = dict(zip(loop.blocks, copies))
    op_map = {op.operation: clone.operation for b, new in block_map.items()
              for op, clone in zip(b.operations, new.operations)}
    return block_map, op_map


def _clone_op_by_op(loop: Loop, anchor: ir.Block) -> tuple[dict, dict]:
    """`_clone_loop` from Python, op by op: after `anchor`, the function's last block."""
    block_map: dict[ir.Block, ir.Block] = {}
    value_map: dict[ir.Value, ir.Value] = {}
    for b in loop.blocks:
        anchor = anchor.create_after(*[a.type for a in b.arguments], arg_locs=[a.location for a in b.arguments])
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


# -- stripping a previous application ----------------------------------------------------------------
def _chain_input(value: ir.Value) -> ir.Value:
    """The original value a chain of inserted ops (zext, hook call, trunc, lane insert) passes on."""
    while not isinstance(value.owner, ir.Block) and INSERTED in value.owner.operation.attributes:
        op = value.owner.operation
        value = op.operands[1] if op.name == "llvm.call" else op.operands[0]
    return value


def drop_blocks(module: ir.Module, blocks: list[ir.Block]) -> None:
    """Erase blocks (the bindings cannot): move them into a scratch op and erase that."""
    if not blocks:
        return
    with ir.InsertionPoint(module.body):
        scratch = ir.Operation.create("builtin.module", regions=1)
    for b in blocks:
        b.append_to(scratch.regions[0])
    scratch.erase()


def is_instrumented(module: ir.Module) -> bool:
    """True if a previous application left its counters in the module."""
    table = ir.SymbolTable(module.operation)
    return REMAINING in table or UNIT_COUNTS in table


def _strip(module: ir.Module) -> bool:
    """Undo a previous application in place; site ops keep their `lltfi.sites` ids. True if any."""
    if not is_instrumented(module):
        return False
    stripped = False
    for fn in module.body.operations:
        if fn.operation.name != "llvm.func" or not len(fn.regions[0].blocks):
            continue
        region = fn.regions[0]
        checks = [op.operation for b in region.blocks for op in b.operations
                  if op.operation.name == "llvm.cond_br" and INSERTED in op.operation.attributes]
        if not checks and not any(INSERTED in op.operation.attributes for b in region.blocks
                                  for op in b.operations):
            continue
        stripped = True
        merges = []
        for check in checks:  # every check falls through to its fast path
            fast, block = check.successors[1], check.block
            with ir.InsertionPoint(check), check.location:
                llvm.BrOp(list(check.opview.falseDestOperands), fast)
            check.erase()
            merges.append((block, fast))
        cfg = analyze(region)
        live = {b: b for b in cfg.blocks}  # handles owned by the function: a successor's dies with its branch
        merges = [(live[b], live[f]) for b, f in merges
                  if b in live and len(cfg.preds[live[f]]) == 1 and not len(live[f].arguments)]
        drop_blocks(module, [b for b in region.blocks if b not in live])  # the cold copies
        for block in region.blocks:
            inserted = [op.operation for op in block.operations if INSERTED in op.operation.attributes]
            for op in inserted:
                for result in op.results:
                    for owner, index in [(u.owner.operation, u.operand_number) for u in result.uses]:
                        if INSERTED not in owner.attributes:
                            owner.operands[index] = _chain_input(result)
            for op in reversed(inserted):
                op.erase()
        for block, fast in merges:  # a versioned block and its fast path become one block again
            _terminator_of(block).erase()
            for op in list(fast.operations):
                block.append(op.operation)
        drop_blocks(module, [fast for _, fast in merges])
    return stripped


def node_info_from_manifest(manifest: dict) -> dict[str, NodeInfo]:
    """NodeInfo per node name; layer numbers are 1-based per op type, as LLTFI's -layerNo.

    In an OD build the duplicate and the Min node of a protected node count as that node (same op
    type and layer), and layers are numbered over the original nodes only: `layers: [Conv:2]`
    means the model's second Conv, and a campaign on its operator strikes its OD copy and Min too."""
    sid = manifest.get("sid") or {}
    if sid.get("technique") != "od":
        return {n["name"]: NodeInfo(n["op_type"], n["type_index"] + 1) for n in manifest["nodes"]}
    inserted = {n["name"]: n["name"][:-len(suffix)] for n in manifest["nodes"] for suffix in (OD_DUPLICATE, OD_COMBINE)
                if n["name"].endswith(suffix)}
    info: dict[str, NodeInfo] = {}
    per_type: dict[str, int] = {}
    for n in manifest["nodes"]:
        if n["name"] not in inserted:
            per_type[n["op_type"]] = per_type.get(n["op_type"], 0) + 1
            info[n["name"]] = NodeInfo(n["op_type"], per_type[n["op_type"]])
    for name, protected in inserted.items():
        if protected in info:
            info[name] = info[protected]
    return info
