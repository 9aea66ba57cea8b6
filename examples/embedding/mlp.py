"""Embedding lltfi-mlir in your own MLIR pipeline: a small model written with the upstream MLIR Python
API (no ONNX), lowered by *your* pass pipeline, hardened and instrumented by the lltfi passes added
to *your* PassManager, then compiled and injected through the Python API.

The model is a 4-3-2 perceptron, y = W2 relu(W1 x + b1) + b2, on one built-in input. Every layer's
ops carry `loc("<layer name>")`, which is how faults are selected and reported per layer. Its
`main` prints the two outputs, so a campaign compares stdout with the golden run.

    python examples/embedding/mlp.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from lltfi_mlir.dialect_passes.pipeline import InstrumentPass, SidPass
from lltfi_mlir.dialect_passes.sites import GROUPS, SiteSelector
from mlir import ir, passmanager
from mlir.dialects import arith, func, memref, scf

from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.compiler import compile_mlir

rng = np.random.default_rng(0)
X = rng.standard_normal(4).astype(np.float32)
LAYERS = {  # name: (weights [out, in], bias [out], relu)
    "dense1": (rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(3).astype(np.float32), True),
    "dense2": (rng.standard_normal((2, 3)).astype(np.float32), rng.standard_normal(2).astype(np.float32), False),
}
# The user's own lowering to the LLVM dialect (upstream passes only).
USER_PIPELINE = ("builtin.module(canonicalize,convert-scf-to-cf,expand-strided-metadata,finalize-memref-to-llvm,"
                 "convert-arith-to-llvm,convert-func-to-llvm,convert-cf-to-llvm,reconcile-unrealized-casts)")
# Fault sites: floating-point arithmetic and, in the hardened model, the SID checking code.
SELECTOR = SiteSelector(opcodes=GROUPS["fp"] | GROUPS["sid"], require_operator=False)


def _constant(name: str, array: np.ndarray) -> None:
    memref.global_(name, ir.MemRefType.get(list(array.shape), ir.F32Type.get()), sym_visibility="private",
                   initial_value=ir.DenseElementsAttr.get(array), constant=True)


def _dense(x: ir.Value, name: str, rows: int, cols: int, relu: bool) -> ir.Value:
    """out[i] = (relu)(sum_j W[i, j] * x[j] + b[i]), as loops over memrefs, under loc(name)."""
    f32, index = ir.F32Type.get(), ir.IndexType.get()
    with ir.Location.name(name):
        w = memref.get_global(ir.MemRefType.get([rows, cols], f32), f"{name}_w")
        b = memref.get_global(ir.MemRefType.get([rows], f32), f"{name}_b")
        out = memref.alloca(ir.MemRefType.get([rows], f32), [], [])
        zero, one = arith.constant(index, 0), arith.constant(index, 1)
        rows_loop = scf.ForOp(zero, arith.constant(index, rows), one)
        with ir.InsertionPoint(rows_loop.body):
            i = rows_loop.induction_variable
            acc = scf.ForOp(zero, arith.constant(index, cols), one, [memref.load(b, [i])])
            with ir.InsertionPoint(acc.body):
                j = acc.induction_variable
                product = arith.mulf(memref.load(w, [i, j]), memref.load(x, [j]))
                scf.YieldOp([arith.addf(acc.inner_iter_args[0], product)])
            value = acc.results[0]
            if relu:
                value = arith.maximumf(value, arith.constant(f32, 0.0))
            memref.store(value, out, [i])
            scf.YieldOp([])
    return out


def build_model() -> ir.Module:
    """The model as func/arith/scf/memref, with a C-ABI `int main(void)` that prints its outputs."""
    module = ir.Module.create()
    with ir.InsertionPoint(module.body):
        _constant("input_x", X)
        for name, (w, b, _) in LAYERS.items():
            _constant(f"{name}_w", w)
            _constant(f"{name}_b", b)
        for text in ('llvm.mlir.global internal constant @fmt("%.6f\\0A\\00") {addr_space = 0 : i32}',
                     "llvm.func @printf(!llvm.ptr, ...) -> i32"):
            module.body.append(ir.Operation.parse(text))

        @func.FuncOp.from_py_func()
        def main():
            h = memref.get_global(ir.MemRefType.get([4], ir.F32Type.get()), "input_x")
            for name, (w, _, relu) in LAYERS.items():
                h = _dense(h, name, w.shape[0], w.shape[1], relu)
            fmt = ir.Operation.create("llvm.mlir.addressof", results=[ir.Type.parse("!llvm.ptr")],
                                      attributes={"global_name": ir.FlatSymbolRefAttr.get("fmt")}).result
            for k in range(2):
                value = arith.extf(ir.F64Type.get(), memref.load(h, [arith.constant(ir.IndexType.get(), k)]))
                _printf(fmt, value)
            return arith.constant(ir.IntegerType.get_signless(32), 0)
    return module


def _printf(fmt: ir.Value, value: ir.Value) -> None:
    i32 = ir.IntegerType.get_signless(32)
    ir.Operation.create("llvm.call", results=[i32], operands=[fmt, value], attributes={
        "callee": ir.FlatSymbolRefAttr.get("printf"),
        "var_callee_type": ir.TypeAttr.get(ir.Type.parse("!llvm.func<i32 (ptr, ...)>")),
        "operandSegmentSizes": ir.DenseI32ArrayAttr.get([2, 0]),
        "op_bundle_sizes": ir.DenseI32ArrayAttr.get([])})


def numpy_outputs() -> np.ndarray:
    """The same arithmetic in float32 numpy, in the same order (the check of the golden output)."""
    h = X
    for w, b, relu in LAYERS.values():
        out = np.empty(w.shape[0], np.float32)
        for i in range(w.shape[0]):
            acc = b[i]
            for j in range(w.shape[1]):
                acc = np.float32(acc + np.float32(w[i, j] * h[j]))
            out[i] = max(acc, np.float32(0)) if relu else acc
        h = out
    return h


def run(work: Path, trials: int = 300) -> dict:
    """Lower, harden and instrument with one PassManager, compile, inject; returns what it printed."""
    report: dict = {}
    for label, hardened in (("unprotected", False), ("hardened", True)):
        with ir.Context(), ir.Location.unknown():
            module = build_model()
            pm = passmanager.PassManager.parse(USER_PIPELINE)   # the user's pipeline ...
            if hardened:
                SidPass("acd", "and").add_to(pm)                 # ... plus the lltfi passes
            instrument = InstrumentPass(SELECTOR)
            instrument.add_to(pm)
            pm.run(module.operation)
            sites = instrument.results[0].sites
            build = compile_mlir(module, work / label)
        golden = subprocess.run([str(build.executable)], capture_output=True, text=True, check=True).stdout
        summary = Campaign.from_build(build.directory, CampaignConfig(selector=SELECTOR, seed=1),
                                      db=work / f"{label}.db", jobs=2).run(trials, progress=False)
        report[label] = {"sites": len(sites), "output": golden.split(), "summary": summary}
    return report


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print("numpy reference:", " ".join(f"{v:.6f}" for v in numpy_outputs()))
        for label, entry in run(Path(tmp)).items():
            sdc = entry["summary"]["outcomes"]["sdc"]
            print(f"{label}: prints {' '.join(entry['output'])}; {entry['sites']} sites; SDC {100 * sdc['rate']:.1f}% "
                  f"[{100 * sdc['ci_low']:.1f}, {100 * sdc['ci_high']:.1f}] of "
                  f"{entry['summary']['activated']} activated faults")
