"""Instrument a model's functions in two processes, each planning and compiling its own half.

Instrumenting is Python (the pass) and then LLVM (translate, opt, llc), one after the other: on
two cores one core idled while the pass ran. So the functions split in two halves of about equal
code, and the process forks. Each process plans its half (`InstrumentSitesPass.plan(only=...)`:
sites, nests, unit ids, numbered from 0); they exchange their counts through a pipe, and the
second half's sites, units and instruction indices move after the first half's (`shift`). Each
then instruments its half, turns the other half into declarations, and translates, optimizes and
compiles its own module; the parent links both. Every function is instrumented exactly as one
process would do it (same site ids, unit ids and instruction indices): only which object file
holds it differs (tests/test_instrument_parts.py).

A forked child has only the forking thread, and a lock another thread held at the fork stays
locked in it forever. So the fork happens only in a process that runs no other Python thread
(`safe_to_fork`); this module's MLIR context never starts its thread pool
(`enable_multithreading(False)` before parsing); and the child collects no garbage (destroying an
earlier context there waits for its pool's threads, which the child does not have), starts no
thread itself (one tool after the other), prints nothing, and reports through pipes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import threading
import time
from pathlib import Path

from mlir import ir

from .dialect_passes.instrument_sites import InstrumentResult, InstrumentSitesPass, Plan, drop_blocks
from .dialect_passes.node_boundaries import insert_boundaries
from .dialect_passes.sites import Site
from .errors import BuildError, UsageError
from .llvm_backend.codegen import compile_parts, rename_locals, translate_module

STEM = "model"
NOTHING_SELECTED = ("the selection matches no instruction of this model (check opcodes, operators, node names "
                    "and layer numbers against the manifest)")
PART_BYTECODE = "model.llvm.part{}.mlirbc"  # each process's module (its half defined, the rest declared)


def safe_to_fork() -> bool:
    """True if no other Python thread runs (one might hold a lock the child needs: a test session's
    helper thread once hung a child). Native threads are left alone: OpenBLAS's wait idle and
    glibc's malloc survives a fork; the LLVM thread pool of an earlier MLIR context is harmless as
    long as nothing destroys that context in the child, so garbage is collected here, before the
    fork, and never in the child (a child that did waited for the pool's threads forever)."""
    gc.collect()
    return threading.active_count() == 1


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


def split_point(weights: list[int]) -> int:
    """k such that the functions [:k] and [k:] hold about the same amount of code (`weights`: their
    op counts), which is what the pass and llc spend their time on; 0 < k < len(weights)."""
    total, running = sum(weights), 0
    for k, weight in enumerate(weights[:-1], start=1):
        running += weight
        if 2 * running >= total:
            return k
    return len(weights) - 1


def _keep_only(module: ir.Module, owned: set[str]) -> None:
    """Every function not in `owned` becomes a declaration."""
    drop_blocks(module, [block for fn in _defined_functions(module) if _name(fn) not in owned
                         for block in fn.regions[0].blocks])


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


def _exchange(send: int, receive: int, counts: dict) -> dict:
    """Tell the other process this half's counts and read its own (small: the pipe never blocks)."""
    os.write(send, (json.dumps(counts) + "\n").encode())
    text = b""
    while not text.endswith(b"\n"):
        chunk = os.read(receive, 4096)
        if not chunk:
            raise BuildError("the other instrumenting process ended before planning its half")
        text += chunk
    return json.loads(text)


def _counts(plan: Plan) -> dict:
    return {"sites": len(plan.result.sites), "units": plan.units,
            "instructions": sum(f.candidates for f in plan.functions)}


def build_in_halves(module: ir.Module, pass_: InstrumentSitesPass, out: Path,
                    backend: dict) -> tuple[InstrumentResult, list[Path], int, dict[str, float]]:
    """Plan, instrument and compile the module in two processes, the first half of the functions
    in a forked child: each plans its half numbering from 0, they exchange their counts, and the
    second half's sites, units and instruction indices follow the first half's. Returns the whole
    result (sites and units), the objects to link, the boundary calls, and seconds per stage."""
    functions = [fn for _, fn in pass_._functions(module)]
    names = [_name(fn) for fn in functions]
    k = split_point([sum(len(b.operations) for b in fn.regions[0].blocks) for fn in functions])
    planned = set(names)
    # The first half also keeps what the pass does not instrument (C interface wrappers, the runtime).
    first = set(names[:k]) | {_name(fn) for fn in _defined_functions(module) if _name(fn) not in planned}
    second = set(names[k:])
    parent_reads, child_writes = os.pipe()  # the counts, each way
    child_reads, parent_writes = os.pipe()
    reader, writer = os.pipe()  # the child's report
    pid = os.fork()
    if pid == 0:  # the child: the first half
        gc.disable()  # it ends with os._exit: nothing needs collecting, and nothing may be destroyed
        for fd in (parent_reads, parent_writes, reader):  # so that either side sees the other end
            os.close(fd)
        status = 1
        try:
            plan = pass_.plan(module, only=set(names[:k]))
            theirs = _exchange(child_writes, child_reads, _counts(plan))
            plan.units += theirs["units"]
            plan.result.units += [{} for _ in range(theirs["units"])]
            report = {}
            if plan.result.sites or theirs["sites"]:
                report = _build_half(module, pass_, plan, range(len(plan.functions)), first, out, 0, backend)
            report["sites"] = [site.row() for site in plan.result.sites]
            status = 0
        except BaseException as exc:  # reported to the parent, never printed here
            report = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            with os.fdopen(writer, "w") as handle:
                json.dump(report, handle)
            os._exit(status)
    for fd in (child_reads, child_writes, writer):
        os.close(fd)
    try:
        plan = pass_.plan(module, only=second)
        theirs = _exchange(parent_writes, parent_reads, _counts(plan))
        pass_.shift(plan, theirs["sites"], theirs["units"], theirs["instructions"])
        if not plan.result.sites and not theirs["sites"]:
            raise UsageError(NOTHING_SELECTED)
        mine = _build_half(module, pass_, plan, range(len(plan.functions)), second, out, 1, backend)
        with os.fdopen(reader) as handle:
            text = handle.read()
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    finally:
        os.waitpid(pid, 0)
        for fd in (parent_reads, parent_writes):
            os.close(fd)
    report = json.loads(text) if text else {"error": "the instrumenting child process died"}
    if "error" in report:
        raise BuildError(f"instrumenting the first half of the functions failed: {report['error']}")
    result = plan.result
    result.sites = [Site(**row) for row in report["sites"]] + result.sites
    for unit, sites in report["units"].items():
        result.units[int(unit)] = {int(site): count for site, count in sites.items()}
    result.versioned_blocks += report["counts"][0]
    result.inline_blocks += report["counts"][1]
    result.versioned_nests += report["counts"][2]
    seconds = {stage: max(mine["seconds"][stage], report["seconds"][stage]) for stage in mine["seconds"]}
    seconds["halves"] = 2
    objects = [Path(o) for o in report["objects"]] + [Path(o) for o in mine["objects"]]
    return result, objects, report["boundaries"] + mine["boundaries"], seconds


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
