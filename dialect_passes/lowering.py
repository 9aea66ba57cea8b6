"""Tensor-level module (func/linalg/tensor/arith/math) -> LLVM dialect with upstream passes.

Two pipeline phases with one Python rewrite between them: bufferization can leave `memref.copy`,
which lowers to a call into MLIR's C runner library; rewriting it to `linalg.copy` keeps the copy
in the IR as plain loads and stores. On failure the input of the failing phase is saved and the
error names the one `mlir-opt` command that reproduces it.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field

from mlir import ir, passmanager
from mlir.dialects import linalg

from ..errors import PassError
from ..llvm_backend.toolchain import tool_path
from .expand_deallocs import ExpandDeallocsPass
from .named_op_locations import PropagateNamedOpLocationsPass

# Ownership-based deallocation (upstream's buffer-deallocation-pipeline): every buffer is freed
# inside the model except the results, whose ownership passes to the caller (cloned when they
# would alias an argument or a global); the glue frees them after copying. Without it each
# inference leaks its buffers (~66 KB for LeNet), which `--repeat` and profiling accumulate.
# The deallocation steps are upstream's buffer-deallocation-pipeline, split where ExpandDeallocsPass
# runs (see expand_deallocs.py).
BUFFERIZE = (
    "one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map},"
    "canonicalize,cse,expand-realloc{emit-deallocs=false},canonicalize,ownership-based-buffer-deallocation,"
    "canonicalize,buffer-deallocation-simplification"
)
LOWER_DEALLOCS = "bufferization-lower-deallocations,cse,canonicalize,convert-bufferization-to-memref"
# Buffers are allocated and freed through _mlir_memref_to_llvm_alloc/free (use-generic-functions):
# malloc and free, except in a walk engine's trial child (runtime/trial_heap.h).
TO_LLVM = (
    "convert-linalg-to-loops,lower-affine,convert-scf-to-cf,convert-vector-to-llvm,expand-strided-metadata,"
    "finalize-memref-to-llvm{use-generic-functions=true},convert-math-to-llvm,convert-math-to-libm,"
    "convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts,canonicalize"
)


@dataclass
class LoweringResult:
    copies_rewritten: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def run_pipeline(module: ir.Module, pipeline: str, phase: str) -> None:
    """Run `builtin.module(<pipeline>)`; on failure save the input and raise with a repro command."""
    text = f"builtin.module({pipeline})"
    pm = passmanager.PassManager.parse(text, context=module.context)
    saved = None
    try:
        pm.run(module.operation)
        return
    except Exception as exc:  # MLIRError carries the diagnostics
        message = str(exc).splitlines()
        with tempfile.NamedTemporaryFile("w", suffix=f".{phase}.mlir", delete=False) as handle:
            module.operation.print(file=handle, enable_debug_info=True)
        saved = handle.name
        first = next((line.strip() for line in message if "error" in line.lower()), message[0] if message else "")
        raise PassError(f"{phase} failed: {first}; reproduce with: "
                        f"{tool_path('mlir-opt')} '--pass-pipeline={text}' {saved}") from None


def rewrite_memref_copies(module: ir.Module) -> int:
    """memref.copy -> linalg.copy (same location), so no runtime library call is needed."""
    copies: list[ir.Operation] = []

    def collect(op: ir.Operation) -> ir.WalkResult:
        if op.name == "memref.copy":
            copies.append(op.operation)
        return ir.WalkResult.ADVANCE

    module.operation.walk(collect)
    for op in copies:
        with ir.InsertionPoint(op), op.location:
            linalg.copy(op.operands[0], outs=[op.operands[1]])
        op.erase()
    return len(copies)


def lower_to_llvm(module: ir.Module) -> LoweringResult:
    """Lower in place; the result carries timings and what the Python rewrites changed."""
    result = LoweringResult()
    start = time.perf_counter()
    PropagateNamedOpLocationsPass().apply(module)
    run_pipeline(module, BUFFERIZE, "bufferization")
    ExpandDeallocsPass().apply(module)
    run_pipeline(module, LOWER_DEALLOCS, "lowering deallocations")
    result.copies_rewritten = rewrite_memref_copies(module)
    run_pipeline(module, TO_LLVM, "lowering to LLVM")
    result.seconds["passes"] = time.perf_counter() - start
    return result
