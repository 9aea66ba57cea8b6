"""Operator boundaries in an instrumented module: after each call of an outlined operator
(`node_<i>`, which the importer marks with `lltfi.boundary`), pass each returned tensor to
`lltfi_node_end(node, last_use, data, nbytes, final)` (runtime/boundaries.h).

Applied after site instrumentation, so the calls it adds are never fault sites. The reference
codegen has no outlined operators: nothing to do there, and campaigns run every trial to the end.
"""

from __future__ import annotations

from mlir import ir

from .instrument_sites import INSERTED

ATTRIBUTE = "lltfi.boundary"
HOOK = "lltfi_node_end"
MARK = "lltfi.boundaries"  # on the module: boundary calls inserted (a second application is a no-op)


def _create(name: str, operands: list[ir.Value], result: ir.Type | None = None, **attributes) -> ir.Value | None:
    attributes[INSERTED] = ir.UnitAttr.get()
    op = ir.Operation.create(name, results=[result] if result else [], operands=operands, attributes=attributes)
    return op.result if result else None


def _constant(t: ir.Type, value: int) -> ir.Value:
    return _create("llvm.mlir.constant", [], t, value=ir.IntegerAttr.get(t, value))


def insert_boundaries(module: ir.Module) -> int:
    """Insert the boundary calls; returns how many operator calls got them."""
    if MARK in module.operation.attributes:
        return int(ir.IntegerAttr(module.operation.attributes[MARK]).value)
    table = ir.SymbolTable(module.operation)
    marked = {}
    for op in module.body.operations:
        if op.operation.name == "llvm.func" and ATTRIBUTE in op.operation.attributes:
            marked[ir.StringAttr(op.operation.attributes["sym_name"]).value] = list(
                ir.DenseI64ArrayAttr(op.operation.attributes[ATTRIBUTE]))
    calls = []
    for op in module.body.operations:
        if op.operation.name != "llvm.func":
            continue
        for region in op.operation.regions:
            for block in region.blocks:
                for inner in block.operations:
                    if inner.operation.name == "llvm.call" and "callee" in inner.operation.attributes:
                        callee = ir.FlatSymbolRefAttr(inner.operation.attributes["callee"]).value
                        if callee in marked:
                            calls.append((inner.operation, marked[callee]))
    i32, i64 = ir.IntegerType.get_signless(32), ir.IntegerType.get_signless(64)
    ptr = ir.Type.parse("!llvm.ptr")
    if calls and HOOK not in table:
        decl = ir.Module.parse(f"llvm.func @{HOOK}(i64, i64, !llvm.ptr, i64, i32)", context=module.context)
        first = module.body.operations[0]
        for d in list(decl.body.operations):
            d.operation.move_before(first)
    callee = ir.FlatSymbolRefAttr.get(HOOK)
    segments, bundles = ir.DenseI32ArrayAttr.get([5, 0]), ir.DenseI32ArrayAttr.get([])
    no_wrap = ir.Attribute.parse("#llvm.overflow<none>")
    for call, info in calls:
        node, results = info[0], [info[1 + 3 * k:4 + 3 * k] for k in range((len(info) - 1) // 3)]
        with ir.InsertionPoint.after(call), call.location:  # ops land in creation order after the call
            for k, (nbytes, size, last_use) in enumerate(results):
                position = [k] if len(results) > 1 else []  # a multi-result call returns a struct of them
                aligned = _create("llvm.extractvalue", [call.result], ptr,
                                  position=ir.DenseI64ArrayAttr.get(position + [1]))
                offset = _create("llvm.extractvalue", [call.result], i64,
                                 position=ir.DenseI64ArrayAttr.get(position + [2]))
                offset_bytes = _create("llvm.mul", [offset, _constant(i64, size)], i64, overflowFlags=no_wrap)
                data = _create("llvm.getelementptr", [aligned, offset_bytes], ptr,
                               rawConstantIndices=ir.DenseI32ArrayAttr.get([-2147483648]),
                               elem_type=ir.TypeAttr.get(ir.IntegerType.get_signless(8)))
                _create("llvm.call", [_constant(i64, node), _constant(i64, last_use), data, _constant(i64, nbytes),
                                      _constant(i32, int(k == len(results) - 1))],
                        callee=callee, operandSegmentSizes=segments, op_bundle_sizes=bundles)
    module.operation.attributes[MARK] = ir.IntegerAttr.get(i64, len(calls))
    return len(calls)
