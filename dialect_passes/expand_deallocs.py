"""Expand `bufferization.dealloc` ops that free several buffers while retaining others.

Upstream's `bufferization-lower-deallocations` lowers such an op (a graph function that calls one
function per ONNX node ends with one: every node's result, retaining the returned tensor) into a
library helper over `memref<?xi1>` buffers, and `finalize-memref-to-llvm` 22.1.8 asserts on i1
stores. This rewrite gives the same semantics with pointer comparisons instead: buffer i is freed
when its condition holds and it is not a retained buffer (each listed value is freed once).
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir
from mlir.dialects import arith, memref, scf


@dataclass(frozen=True)
class ExpandDeallocsResult:
    changed: bool
    expanded: int = 0


def _pointer(value: ir.Value) -> ir.Value:
    return memref.extract_aligned_pointer_as_index(value)


def _expand(op: ir.Operation) -> None:
    operands = list(op.operands)
    segments = ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"])
    n_memrefs, n_conditions, _ = list(segments)
    memrefs = operands[:n_memrefs]
    conditions = operands[n_memrefs:n_memrefs + n_conditions]
    retained = operands[n_memrefs + n_conditions:]
    with ir.InsertionPoint(op), op.location:
        ptrs = [_pointer(m) for m in memrefs]
        kept = [_pointer(r) for r in retained]
        false = arith.constant(ir.IntegerType.get_signless(1), 0)
        updated = [false] * len(retained)
        for i, (m, cond, ptr) in enumerate(zip(memrefs, conditions, ptrs)):
            free = cond
            for j, r_ptr in enumerate(kept):
                same = arith.cmpi(arith.CmpIPredicate.eq, ptr, r_ptr)
                updated[j] = arith.ori(updated[j], arith.andi(cond, same))
                free = arith.andi(free, arith.cmpi(arith.CmpIPredicate.ne, ptr, r_ptr))
            # Entries are distinct allocations (callees return owned, fresh buffers: the ownership
            # pass clones any alias of an argument), except when the same value is listed twice.
            for k in range(i):
                if memrefs[k] == m:
                    true = arith.constant(ir.IntegerType.get_signless(1), 1)
                    free = arith.andi(free, arith.xori(conditions[k], true))
            branch = scf.IfOp(free)
            with ir.InsertionPoint(branch.then_block):
                memref.dealloc(m)
                scf.YieldOp([])
    for old, new in zip(op.results, updated):
        old.replace_all_uses_with(new)
    op.erase()


@dataclass(frozen=True)
class ExpandDeallocsPass:
    name = "expand-deallocs"

    def apply(self, module: ir.Module) -> ExpandDeallocsResult:
        found: list[ir.Operation] = []

        def collect(op: ir.Operation) -> ir.WalkResult:
            if op.name == "bufferization.dealloc":
                segments = list(ir.DenseI32ArrayAttr(op.attributes["operandSegmentSizes"]))
                if segments[0] > 1 and segments[2] > 0:
                    found.append(op.operation)
            return ir.WalkResult.ADVANCE

        module.operation.walk(collect)
        with module.context:
            for op in found:
                _expand(op)
        return ExpandDeallocsResult(changed=bool(found), expanded=len(found))
