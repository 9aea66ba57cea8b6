"""Instrument a model's functions in two processes, each compiling its own half.

Instrumenting is Python (the pass) and then LLVM (translate, opt, llc), one after the other: on
two cores one core idled while the pass ran. Once the pass has planned the sites and each
function's unit ids (`InstrumentSitesPass.plan`, in one process), the functions split in two
halves of about equal work. The process forks; each process instruments its half, turns the
other half into declarations, and translates, optimizes and compiles its own module; the parent
links both. Every function is instrumented exactly as one process would do it (same sites, same
unit ids): only which object file holds it differs (tests/test_instrument_parts.py).

A forked child has only the forking thread, and a lock another thread held at the fork stays
locked in it forever. So the fork happens only in a process with no other Python thread
(instrument.py), the MLIR context never starts its thread pool (`enable_multithreading(False)`
before parsing), the child starts no thread itself (one tool after the other), prints nothing, and
reports through a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from mlir import ir

from .dialect_passes.instrument_sites import InstrumentSitesPass, Plan
from .dialect_passes.node_boundaries import insert_boundaries
from .errors import BuildError
from .llvm_backend.codegen import compile_parts, rename_locals, translate_module

STEM = "model"
PART_BYTECODE = "model.llvm.part{}.mlirbc"  # each process's module (its half defined, the rest declared)


def _defined_functions(module: ir.Module) -> list[ir.Operation]:
    return [op.operation for op in module.body.operations
            if op.operation.name == "llvm.func" and len(op.operation.regions[0].blocks)]


def _name(fn: ir.Operation) -> str:
    return ir.StringAttr(fn.attributes["sym_name"]).value


def splittable(module: ir.Module) -> bool:
    """True if every definition can become a declaration in the other half: external functions,
    and no variable the two halves would each get a copy of (local constants are copied)."""
    for op in module.body.operations:
        op = op.operation
        linkage = str(op.attributes["linkage"]) if "linkage" in op.attributes else "#llvm.linkage<external>"
        if op.name == "llvm.func" and len(op.regions[0].blocks) and linkage != "#llvm.linkage<external>":
            return False
        if op.name == "llvm.mlir.global" and "constant" not in op.attributes and (
                len(op.regions[0].blocks) or "value" in op.attributes):
            return False
    return True


def split_point(plan: Plan) -> int:
    """k such that plan.functions[:k] and [k:] hold about the same amount of code, counting a
    versioned function twice (its cold copies): what the pass and llc spend their time on."""
    weights = [f.ops * (2 if f.per_block else 1) for f in plan.functions]
    total, running = sum(weights), 0
    for k, weight in enumerate(weights[:-1], start=1):
        running += weight
        if 2 * running >= total:
            return k
    return len(weights) - 1


def _keep_only(module: ir.Module, owned: set[str]) -> None:
    """Every function not in `owned` becomes a declaration (its blocks go with a scratch op)."""
    with ir.InsertionPoint.at_block_begin(module.body):
        scratch = ir.Operation.create("builtin.module", regions=1)
    for fn in _defined_functions(module):
        if _name(fn) not in owned:
            for block in list(fn.regions[0].blocks):
                block.append_to(scratch.regions[0])
    scratch.erase()


def _build_half(module: ir.Module, pass_: InstrumentSitesPass, plan: Plan, indices: range, owned: set[str],
                out: Path, part: int, backend: dict) -> dict:
    """One process's half: instrument, declare the rest, translate, optimize and compile."""
    result = plan.result
    before = (result.versioned_blocks, result.inline_blocks, result.versioned_nests)
    pass_.instrument(plan, indices)
    _keep_only(module, owned)
    boundaries = insert_boundaries(module)
    pass_.finish(module, plan)
    ll = out / f"{STEM}.part{part}.ll"
    translated = translate_module(module, ll)
    ll.write_text(rename_locals(ll.read_text(), f".part{part}"))  # each half's own copy of a local constant
    with open(out / PART_BYTECODE.format(part), "wb") as handle:
        module.operation.write_bytecode(handle)
    start = time.perf_counter()
    # One tool at a time: the other half compiles on the other core.
    objects = compile_parts([ll], backend["opt_level"], backend["target_cpu"], cold_at_o0=True, jobs=1)
    return {"objects": [str(o) for o in objects], "boundaries": boundaries,
            "counts": [now - was for now, was in zip((result.versioned_blocks, result.inline_blocks,
                                                       result.versioned_nests), before)],
            "units": {str(u): sites for u, sites in enumerate(result.units) if sites},
            "seconds": {"translate": translated, "opt+llc": time.perf_counter() - start}}


def build_in_halves(module: ir.Module, pass_: InstrumentSitesPass, plan: Plan, out: Path,
                    backend: dict) -> tuple[list[Path], int, dict[str, float]]:
    """Instrument and compile the planned module in two processes; fills plan.result (units and
    counters) and returns the objects to link, the boundary calls, and seconds per stage."""
    k = split_point(plan)
    names = [_name(f.region.owner.operation) for f in plan.functions]
    planned = set(names)
    # The first half also keeps what the pass does not instrument (C interface wrappers, the runtime).
    first = set(names[:k]) | {_name(fn) for fn in _defined_functions(module) if _name(fn) not in planned}
    second = set(names[k:])
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the first half
        os.close(reader)
        status = 1
        try:
            report = _build_half(module, pass_, plan, range(0, k), first, out, 0, backend)
            status = 0
        except BaseException as exc:  # reported to the parent, never printed here
            report = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            with os.fdopen(writer, "w") as handle:
                json.dump(report, handle)
            os._exit(status)
    os.close(writer)
    try:
        mine = _build_half(module, pass_, plan, range(k, len(plan.functions)), second, out, 1, backend)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(reader)
        raise
    try:
        with os.fdopen(reader) as handle:
            text = handle.read()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.waitpid(pid, 0)
    theirs = json.loads(text) if text else {"error": "the instrumenting child process died"}
    if "error" in theirs:
        raise BuildError(f"instrumenting the first half of the functions failed: {theirs['error']}")
    result = plan.result
    for unit, sites in theirs["units"].items():
        result.units[int(unit)] = {int(site): count for site, count in sites.items()}
    result.versioned_blocks += theirs["counts"][0]
    result.inline_blocks += theirs["counts"][1]
    result.versioned_nests += theirs["counts"][2]
    seconds = {stage: max(mine["seconds"][stage], theirs["seconds"][stage]) for stage in mine["seconds"]}
    seconds["halves"] = 2
    objects = [Path(o) for o in theirs["objects"]] + [Path(o) for o in mine["objects"]]
    return objects, theirs["boundaries"] + mine["boundaries"], seconds


def merged_module(directory: Path) -> ir.Module:
    """The whole instrumented module, from the two halves' bytecode (in the current context): the
    second half's definitions replace their declarations in the first, declarations only the
    second half has move over."""
    first = ir.Module.parseFile(str(directory / PART_BYTECODE.format(0)))
    second = ir.Module.parseFile(str(directory / PART_BYTECODE.format(1)))
    table = ir.SymbolTable(first.operation)
    for op in list(second.body.operations):
        op = op.operation
        if "sym_name" not in op.attributes:
            continue
        name = _name(op)
        defines = op.name == "llvm.func" and len(op.regions[0].blocks)
        if name not in table:
            op.move_before(first.body.operations[0])
        elif defines:
            declared = table[name].operation
            op.move_before(declared)
            declared.erase()
    return first
