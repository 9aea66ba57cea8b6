"""MLIR modules from anyone's pipeline as campaign targets: parse, lower to the LLVM dialect, and
hand the C-ABI entry point to the program driver.

A module in the LLVM dialect is used as it is; one that still holds func/arith/scf/cf/memref/math
ops is lowered with the upstream passes below first. The entry (`--entry`, default `main`) must be
`i32 (i32, ptr)` (argc/argv), `i32 ()` or `void ()`: it becomes the program that the driver runs in
golden, profile and inject modes, exactly as a C program's `main` does. Locations written by the
other pipeline stay: `loc("name")` selects as a node name, `loc("file":line:col)` as a source line.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlir import ir

from ..errors import UsageError
from ..terminal import plain
from .c_frontend import PROGRAM_ENTRY

# Upstream passes that bring func/arith/scf/cf/memref/math modules down to the LLVM dialect.
DEFAULT_LOWERING = ("builtin.module(convert-scf-to-cf,expand-strided-metadata,finalize-memref-to-llvm,"
                    "convert-math-to-llvm,convert-math-to-libm,convert-arith-to-llvm,convert-func-to-llvm,"
                    "convert-cf-to-llvm,reconcile-unrealized-casts)")
ENTRY_PREFIX = "__lltfi_entry_"   # a renamed entry that the driver reaches through a wrapper
NAME_ATTR = "lltfi.name"          # the name a renamed function is reported under (sites, selection)
DRIVER_ATTR = "lltfi.driver"      # a wrapper generated here: never a fault site


def _first_diagnostic(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else str(exc))
    return detail.removeprefix("error: ")


def parse_module(path: str | Path) -> ir.Module:
    """Parse (with the file's own locations) and verify, in the current Context."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    try:
        module = ir.Module.parseFile(str(path))
    except ir.MLIRError as exc:
        raise UsageError(f"cannot parse {path} as MLIR: {_first_diagnostic(exc)}") from None
    try:
        module.operation.verify()
    except ir.MLIRError as exc:
        raise UsageError(f"{path} does not verify: {_first_diagnostic(exc)}") from None
    return module


def foreign_ops(module: ir.Module | ir.Operation) -> list[str]:
    """Names of the ops that are neither LLVM dialect nor the builtin module (sorted, unique)."""
    names: set[str] = set()

    def visit(op: ir.Operation) -> ir.WalkResult:
        if not op.name.startswith("llvm.") and op.name != "builtin.module":
            names.add(op.name)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return sorted(names)


def lower_module(module: ir.Module, pipeline: str = DEFAULT_LOWERING) -> None:
    """Lower to the LLVM dialect unless it is there already; refuse what the passes leave behind."""
    if not foreign_ops(module):
        return
    from ..dialect_passes.lowering import run_pipeline

    inner = pipeline.strip()
    if inner.startswith("builtin.module(") and inner.endswith(")"):
        inner = inner[len("builtin.module("):-1]
    run_pipeline(module, inner, "mlir-input")
    left = foreign_ops(module)
    if left:
        raise UsageError(f"after lowering, the module still holds non-LLVM ops ({', '.join(left[:6])}): lower it "
                         "to the LLVM dialect first (lltfi-mlir opt --pass-pipeline ...)")


def _signature(fn: ir.Operation) -> str:
    return str(ir.TypeAttr(fn.attributes["function_type"]).value)


def prepare_entry(module: ir.Module, entry: str) -> str:
    """Make `entry` the program the driver runs; returns its signature (as LLVM prints it)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.$]*", entry):
        raise UsageError(f"--entry {plain(entry)!r}: give a C identifier (the entry point is called from C)")
    functions = {ir.StringAttr(op.attributes["sym_name"]).value: op.operation for op in module.body.operations
                 if op.operation.name == "llvm.func"}
    fn = functions.get(entry)
    if fn is None or not len(fn.regions[0].blocks):
        defined = sorted(n for n, f in functions.items() if len(f.regions[0].blocks))
        raise UsageError(f"the module defines no function '{entry}' (defined: {plain(', '.join(defined)) or 'none'}); "
                         "choose one with --entry")
    if entry != "main" and "main" in functions:
        raise UsageError("the module defines main() besides the entry: the driver owns main, rename it")
    if PROGRAM_ENTRY in functions:
        raise UsageError(f"the module already defines {PROGRAM_ENTRY}: is it a build's model.llvm.mlir?")
    signature = _signature(fn)
    with module.context, ir.Location.unknown():
        fn.attributes[NAME_ATTR] = ir.StringAttr.get(entry)
        if signature == "!llvm.func<i32 (i32, ptr)>":
            ir.SymbolTable.replace_all_symbol_uses(entry, PROGRAM_ENTRY, module.operation)
            fn.attributes["sym_name"] = ir.StringAttr.get(PROGRAM_ENTRY)
            return signature
        if signature not in ("!llvm.func<i32 ()>", "!llvm.func<void ()>"):
            raise UsageError(f"entry '{entry}' has type {signature}: the entry must be int {entry}(int, char **), "
                             f"int {entry}(void) or void {entry}(void)")
        renamed = ENTRY_PREFIX + entry
        ir.SymbolTable.replace_all_symbol_uses(entry, renamed, module.operation)
        fn.attributes["sym_name"] = ir.StringAttr.get(renamed)
        returns = "i32" if "i32 ()" in signature else "void"
        call = (f"%r = llvm.call @{renamed}() : () -> i32\n    llvm.return %r : i32" if returns == "i32" else
                f"llvm.call @{renamed}() : () -> ()\n    %r = llvm.mlir.constant(0 : i32) : i32\n"
                "    llvm.return %r : i32")
        parsed = ir.Module.parse(f"llvm.func @{renamed}() -> {returns}\n"  # declared only to parse the call
                                 f"llvm.func @{PROGRAM_ENTRY}(%argc: i32, %argv: !llvm.ptr) -> i32 "
                                 f"attributes {{{DRIVER_ATTR}}} {{\n    {call}\n}}")
        module.body.append(parsed.body.operations[1].operation)
    return signature
