"""Instrument a compiled model for fault injection: one executable for golden, profile and inject.

Reads the build's lowered `model.llvm.mlir` (weights are external, so it is small), applies the
`InstrumentSitesPass` with the campaign's selection, and builds a sibling executable linked with
the same weights. Results are cached per selection under `<build>/fi-<hash>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mlir import ir

from .build import Build
from .dialect_passes.instrument_sites import (
    InstrumentResult,
    InstrumentSitesPass,
    is_instrumented,
    node_info_from_manifest,
)
from .dialect_passes.node_boundaries import insert_boundaries
from .dialect_passes.sites import Site, SiteSelector
from .errors import UsageError
from .instrument_parts import NOTHING_SELECTED, build_in_halves, merged_module, safe_to_fork, splittable
from .llvm_backend.codegen import assemble, build_native, link, runtime_digest, translate_module
from .llvm_backend.glue import generate_glue, generate_program_glue
from .module_file import read_llvm_module
from .workdir import replace_folder, stage_folder, weights_digest

STEM = "model"
BYTECODE = f"{STEM}.llvm.mlirbc"  # the instrumented module (MLIR bytecode)


@dataclass
class InstrumentedBuild:
    """An instrumented executable and its site table."""

    build: Build
    directory: Path
    executable: Path
    sites: list[Site]
    versioned_blocks: int
    inline_blocks: int
    versioned_nests: int = 0
    units: list = None  # per versioning unit: {site id: instances per entry}
    boundaries: int = 0  # operator calls that report their outputs (runtime/boundaries.h)

    def ir_text(self) -> str:
        """The instrumented module as text with locations (`model.llvm.mlir`, printed from the bytecode
        copy on first use). The same as `lltfi-mlir opt model.llvm.mlirbc -o model.llvm.mlir
        --pass-pipeline 'builtin.module()'`."""
        text = self.directory / f"{STEM}.llvm.mlir"
        if not text.exists():
            with ir.Context():
                whole = self.directory / BYTECODE
                module = ir.Module.parseFile(str(whole)) if whole.exists() else merged_module(self.directory)
                staged = text.with_suffix(f".{os.getpid()}.tmp")
                with open(staged, "w") as handle:
                    module.operation.print(file=handle, enable_debug_info=True)
                staged.replace(text)
        return text.read_text()


def _selector_key(selector: SiteSelector, backend: dict, module_text: bytes, weights: str = "") -> str:
    payload = {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(selector).items()}
    payload["backend"] = backend
    payload["module"] = hashlib.sha256(module_text).hexdigest()  # a rebuilt model invalidates the cache
    payload["weights"] = weights  # so do retrained weights (not in the module: it declares them external)
    payload["runtime"] = runtime_digest()  # so does a changed C runtime
    # 3 and older: per-block grouping bug (wrong counts in multi-block nests); 4: smaller units
    payload["version"] = 8  # 6: operator boundary calls (early ending); 7: OD copies count as their node, sid group;
    # 8: erff expanded into the IR (llvm_backend/exact_math.py)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()[:12]


def _write_bytecode(module: ir.Module, path: Path) -> None:
    with open(path, "wb") as handle:
        module.operation.write_bytecode(handle)


def _backend(build: Build, out: Path, result, translated: float, backend: dict) -> dict[str, float]:
    glue = out / "glue.c"
    if build.is_program:
        glue.write_text(generate_program_glue(len(result.sites), len(result.units)))
        return build_native(out / f"{STEM}.llvm.mlir", out, STEM, [glue], backend["opt_level"], program=True,
                            cplusplus=build.manifest.get("language") == "c++", translated=translated)
    return build_native(out / f"{STEM}.llvm.mlir", out, STEM, [_model_glue(build, out, result),
                                                               _weights_object(build, out)],
                        translated=translated, cold_at_o0=True, **backend)


def _model_glue(build: Build, out: Path, result: InstrumentResult) -> Path:
    glue = out / "glue.c"
    inputs = [(t.name, t.shape, t.dtype) for t in build.inputs]
    outputs = [(t.name, t.shape, t.dtype) for t in build.all_outputs]
    glue.write_text(generate_glue(build.manifest["entry"], inputs, outputs, len(result.sites), len(result.units)))
    return glue


def _weights_object(build: Build, out: Path) -> Path:
    weights = build.directory / "weights.o"  # assembled by compile (older builds: the .S)
    return weights if weights.exists() else assemble(build.directory / "weights.S", out / "weights.o")


def _in_halves(build: Build, backend: dict, module: ir.Module, selector: SiteSelector) -> bool:
    """Two processes pay when there are two cores, the model's optimized backend, and a fresh module;
    not when the selection names static instruction indices (each half numbers its own from 0).
    They fork: only from a process running no other thread (which might hold a lock the child needs)."""
    return (not build.is_program and backend["ir_opt"] and (os.cpu_count() or 1) >= 2 and hasattr(os, "fork")
            and not selector.instructions and os.environ.get("LLTFI_INSTRUMENT_HALVES", "1") != "0"
            and not is_instrumented(module) and splittable(module) and safe_to_fork())


def _in_one(build: Build, module: ir.Module, instrument: InstrumentSitesPass, out: Path,
            backend: dict) -> tuple[InstrumentResult, int, dict[str, float]]:
    """The whole module in this process: instrument, translate, then opt and llc on every core."""
    result = instrument.apply(module)
    if not result.sites:
        raise UsageError(NOTHING_SELECTED)
    boundaries = insert_boundaries(module)
    translated = translate_module(module, out / f"{STEM}.ll")
    # The instrumented module is kept as bytecode, written while opt and llc run: printing it as
    # text with locations would take a core for seconds beside them (DenseNet-121: 4.4 s against
    # 0.8 s). `InstrumentedBuild.ir_text()` prints it when somebody reads it.
    printer = threading.Thread(target=_write_bytecode, args=(module, out / BYTECODE))
    printer.start()
    try:
        seconds = _backend(build, out, result, translated, backend)
    finally:
        printer.join()
    return result, boundaries, seconds


def _link_model(build: Build, out: Path, result: InstrumentResult, objects: list[Path]) -> float:
    start = time.perf_counter()
    link(objects, [_model_glue(build, out, result), _weights_object(build, out)], out / STEM)
    return time.perf_counter() - start


def instrument_build(build: Build, selector: SiteSelector, opt_level: int | None = None) -> InstrumentedBuild:
    """Instrument `build` for the given selection (cached); raises UsageError if nothing is selected."""
    # The instrumented copy is compiled like its build: vector code stays vector code, and the
    # optimizer runs on the fast paths (the countdown checks keep the instance accounting exact).
    backend = {"opt_level": build.manifest["opt_level"] if opt_level is None else opt_level,
               "target_cpu": build.manifest.get("target_cpu"), "ir_opt": build.manifest.get("ir_opt", False)}
    source = build.directory / f"{STEM}.llvm.mlir"
    weights = weights_digest(build.directory, build.manifest)
    text = source.read_bytes()
    out = build.directory / f"fi-{_selector_key(selector, backend, text, weights)}"
    table_path = out / "sites.json"
    exe = out / STEM
    if table_path.exists() and exe.exists():
        table = json.loads(table_path.read_text())
        return InstrumentedBuild(build, out, exe, [Site(**s) for s in table["sites"]],
                                 table["versioned_blocks"], table["inline_blocks"], table["versioned_nests"],
                                 [{int(k): v for k, v in u.items()} for u in table["units"]],
                                 table.get("boundaries", 0))
    # Built aside and renamed into place: concurrent campaigns never run a half-written executable.
    final, out = out, stage_folder(out)
    with ir.Context() as context:
        context.enable_multithreading(False)  # no threads: the halves below fork
        module = read_llvm_module(build.directory, text)
        instrument = InstrumentSitesPass(selector, node_info_from_manifest(build.manifest))
        if _in_halves(build, backend, module, selector):
            with ir.Location.unknown():
                result, objects, boundaries, seconds = build_in_halves(module, instrument, out, backend)
            seconds["link"] = _link_model(build, out, result, objects)
        else:
            result, boundaries, seconds = _in_one(build, module, instrument, out, backend)
    table = {"sites": [s.row() for s in result.sites], "versioned_blocks": result.versioned_blocks,
             "inline_blocks": result.inline_blocks, "versioned_nests": result.versioned_nests,
             "units": result.units, "boundaries": boundaries, "seconds": seconds}
    (out / "sites.json").write_text(json.dumps(table) + "\n")
    replace_folder(out, final, complete=lambda d: (d / "sites.json").exists() and (d / STEM).exists())
    out = final
    return InstrumentedBuild(build, out, exe, result.sites, result.versioned_blocks, result.inline_blocks,
                             result.versioned_nests, result.units, boundaries)
