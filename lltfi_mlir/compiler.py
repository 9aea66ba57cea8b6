"""The compile pipeline, stage by stage: load -> import -> lower -> translate -> llc -> link.

Writes the artifacts a researcher reads (`model.linalg.mlir`, `model.llvm.mlir` with locations,
`model.ll`, the executable, `manifest.json`) and returns a `Build` that can run the program.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from mlir import ir

from .build import Build
from .dialect_passes.lowering import lower_to_llvm
from .dialect_passes.sites import NodeInfo
from .errors import ModelImportError, UsageError
from .frontend.importer import ImportConfig, check_operators, check_supported, import_model
from .frontend.onnx_loader import LoadedModel, open_model, prepare
from .frontend.onnx_reader import OnnxSource
from .llvm_backend.codegen import assemble, build_native, translate_module
from .llvm_backend.glue import generate_glue, io_dtype
from .llvm_backend.weights import externalize_weights, weight_table, write_weights_assembly
from .module_file import write_llvm_module
from .workdir import file_digest, locked, source_key, staged

STEM = "model"


@dataclass(frozen=True)
class SidOptions:
    """Selective instruction duplication applied while compiling (`lltfi-mlir harden`)."""

    technique: str = "aid"            # aid | acd | od
    correction: str = "and"           # and | min | none (od: min)
    operators: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    layers: frozenset[tuple[str, int]] = frozenset()


@dataclass(frozen=True)
class CompileOptions:
    """Options of `lltfi-mlir compile`."""

    # "optimized": register-tiled vector Conv/Gemm/MatMul, `opt -O2` and llc -O2 for the host CPU;
    # every output element keeps the reference's scalar operations and their order (bit-identical).
    # "reference": the scalar linalg lowering at llc -O0, as the paper's tool compiles.
    # None: optimized, except under AID/ACD, which duplicate scalar instructions (reference).
    codegen: str | None = None
    # llc optimisation level; None = 2 for optimized code, 0 (the paper's) for reference code.
    opt_level: int | None = None
    # CPU for llc/opt: "native" (the host's vector ISA) or "portable" (the target's baseline).
    target_cpu: str = "native"
    # Input shapes / dynamic dimension values, as parsed from `--shape` (default: every free dim = 1).
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    entry: str = "main_graph"
    sid: SidOptions | None = None
    trace: bool = False  # a layer-tracing build: every node's output is returned too
    op_hooks: bool = False  # an operator-level injection build (see ImportConfig.op_hooks)


def _manifest_nodes(loaded: LoadedModel) -> list[dict]:
    per_type: Counter[str] = Counter()
    nodes = []
    for index, node in enumerate(loaded.model.graph.node):
        nodes.append({
            "name": node.name,
            "op_type": node.op_type,
            "index": index,
            "type_index": per_type[node.op_type],
            "inputs": [i for i in node.input if i],
            "outputs": [{"name": o, "shape": list(loaded.shapes.get(o, ()))} for o in node.output if o],
        })
        per_type[node.op_type] += 1
    return nodes


def _apply_sid(module: ir.Module, sid: SidOptions, loaded: LoadedModel) -> dict:
    from .dialect_passes.sites import SiteSelector
    from .sid import DuplicateInstructionsPass
    from .sid.duplicate_instructions import ARITHMETIC

    node_info = {n["name"]: NodeInfo(n["op_type"], n["type_index"] + 1) for n in _manifest_nodes(loaded)}
    selector = SiteSelector(opcodes=ARITHMETIC, operators=sid.operators, nodes=sid.nodes, layers=sid.layers)
    result = DuplicateInstructionsPass(sid.technique, sid.correction, selector, node_info).apply(module)
    if not result.changed:
        raise UsageError("--sid selects no arithmetic instruction (check --operators / --nodes / --layers)")
    return {"technique": sid.technique, "correction": sid.correction, "duplicated_instructions": result.duplicated,
            "checks": result.checks}


CODEGENS = ("optimized", "reference")


def backend_settings(codegen: str, opt_level: int | None, target_cpu: str) -> dict:
    """llc level, CPU and whether `opt -O2` runs, as build_native's keyword arguments."""
    if codegen not in CODEGENS:
        raise UsageError(f"--codegen {codegen}: must be one of {', '.join(CODEGENS)}")
    if opt_level is None:
        opt_level = 2 if codegen == "optimized" else 0
    if opt_level not in (0, 1, 2, 3):
        raise UsageError(f"--opt-level {opt_level}: must be 0, 1, 2 or 3")
    if not target_cpu or not all(ch.isalnum() or ch in "-_." for ch in target_cpu):
        raise UsageError(f"--target-cpu {target_cpu!r}: give a CPU name such as native, portable, znver3")
    return {"opt_level": opt_level, "target_cpu": target_cpu, "ir_opt": codegen == "optimized"}


def options_of_build(manifest: dict) -> dict:
    """The code-generation options a build was made with (recompiles of it must match)."""
    return {"codegen": manifest.get("codegen", "reference"), "opt_level": manifest["opt_level"],
            "target_cpu": manifest.get("target_cpu") or "portable"}


def _entry_signature(module: ir.Module, entry: str) -> tuple[list[str], list[str]]:
    """The MLIR element types ("f32", "i64", ...) of the entry point's arguments and results."""
    for op in module.body.operations:
        if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == entry:
            ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
            return ([str(ir.ShapedType(t).element_type) for t in ftype.inputs],
                    [str(ir.ShapedType(t).element_type) for t in ftype.results])
    raise ModelImportError(f"the imported module has no function {entry!r}")


def _declared_dtype(loaded: LoadedModel, name: str) -> str | None:
    """The numpy name of a tensor's ONNX element type, if known."""
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(loaded.dtypes[name])).name
    except (KeyError, TypeError, ValueError):
        return None


def compile_onnx(model: str | Path | onnx.ModelProto, out_dir: str | Path,
                 options: CompileOptions = CompileOptions()) -> Build:
    """Compile an ONNX model into `out_dir`; raises an LltfiError subclass on any failure.

    The build is made in a temporary folder, under a lock on `out_dir`, and published whole:
    concurrent compiles into one folder wait for each other, and a failed compile (a refused
    model, a full disk) leaves `out_dir` as it was. The manifest records the content hashes that
    caches key on: the weights (`weights_sha256`) and the ONNX source (`source_key`)."""
    with locked(Path(out_dir).resolve()), staged(Path(out_dir).resolve()) as stage:
        _compile_onnx(model, stage, options)
        manifest = json.loads((stage / "manifest.json").read_text())
        if (stage / "weights.o").exists():
            manifest["weights_sha256"] = file_digest(stage / "weights.o")
        if not isinstance(model, onnx.ModelProto):
            manifest["source_key"] = source_key(Path(model))
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Build(out_dir)


def _compile_onnx(model: str | Path | onnx.ModelProto, out_dir: str | Path,
                  options: CompileOptions = CompileOptions()) -> Build:
    scalar_sid = options.sid is not None and options.sid.technique in ("aid", "acd")
    codegen = options.codegen or ("reference" if scalar_sid else "optimized")
    if scalar_sid and codegen != "reference":
        raise UsageError(f"--sid {options.sid.technique} duplicates scalar instructions: use --codegen reference "
                         "(AID/ACD of vector code is not supported yet)")
    backend = backend_settings(codegen, options.opt_level, options.target_cpu)
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    source = open_model(model)  # the graph, named; its weights are read by prepare()
    sid_report: dict = {}
    if options.sid is not None and options.sid.technique == "od":
        from .sid import duplicate_operators

        hardened, count = duplicate_operators(source.model, options.sid.operators, options.sid.nodes,
                                              options.sid.correction, options.sid.layers)
        if not count:
            raise UsageError("--sid od selects no operator node (check --operators / --nodes / --layers)")
        source = OnnxSource(hardened, source.weights)
        sid_report = {"technique": "od", "correction": options.sid.correction, "duplicated_nodes": count,
                      "checks": count}
    check_operators(source)  # before any weight is read: a refusal costs milliseconds
    loaded = prepare(source, options.shapes)
    check_supported(loaded)  # before any compilation work or output files
    seconds["load"] = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)

    with ir.Context(), ir.Location.unknown():
        start = time.perf_counter()
        module, importer = import_model(loaded, ImportConfig(entry=options.entry, trace=options.trace,
                                                               op_hooks=options.op_hooks, codegen=codegen))
        seconds["import"] = time.perf_counter() - start
        signature = _entry_signature(module, options.entry)  # element types of the I/O tensors
        with open(out_dir / f"{STEM}.linalg.mlir", "w") as handle:
            # Weights are dense resources: a top-level print appends them all as hex (1.1 GB for
            # VGG16), and large_resource_limit elides them only after hexing each one (6x its size in
            # transient memory). A local-scope print has no resource section; locations go inline.
            module.operation.print(file=handle, enable_debug_info=True, large_elements_limit=16,
                                   use_local_scope=True)
        lowering = lower_to_llvm(module)
        seconds["passes"] = lowering.seconds["passes"]
        if options.sid is not None and options.sid.technique in ("aid", "acd"):
            sid_report = _apply_sid(module, options.sid, loaded)
        weights = externalize_weights(module, importer.pool.arrays)
        llvm_mlir = write_llvm_module(module, out_dir)
        translated = translate_module(module, out_dir / f"{STEM}.ll")
        asm = write_weights_assembly(weights, importer.pool.arrays, out_dir)
        weight_targets = weight_table(weights, importer.pool.arrays, importer.pool.sources,
                                      {k: [n.name for n in v] for k, v in importer.consumers.items()})
    start = time.perf_counter()
    weights_obj = assemble(asm)
    seconds["assemble"] = time.perf_counter() - start

    result_names = loaded.outputs + [t for _, t in importer.traced]
    try:
        in_types, out_types = [[io_dtype(e, _declared_dtype(loaded, n)) for e, n in zip(elements, names)]
                               for elements, names in zip(signature, (loaded.inputs, result_names))]
    except ValueError as exc:
        raise ModelImportError(str(exc)) from None
    inputs = [(n, tuple(loaded.shapes[n]), d) for n, d in zip(loaded.inputs, in_types)]
    outputs = [(n, tuple(loaded.shapes[n]), d) for n, d in zip(loaded.outputs, out_types)]
    traced = [{"node": node, "tensor": t, "shape": list(loaded.shapes[t]), "dtype": d}
              for (node, t), d in zip(importer.traced, out_types[len(loaded.outputs):])]
    outputs += [(t["tensor"], tuple(t["shape"]), t["dtype"]) for t in traced]
    glue = out_dir / "glue.c"
    glue.write_text(generate_glue(options.entry, inputs, outputs))
    seconds.update(build_native(llvm_mlir, out_dir, STEM, [glue, weights_obj], translated=translated, **backend))

    manifest = {
        "format": 1,
        "source": str(model) if not isinstance(model, onnx.ModelProto) else "<in-memory model>",
        "producer": f"{source.model.producer_name} {source.model.producer_version}".strip(),
        "opset": loaded.opset,
        "entry": options.entry,
        "codegen": codegen,
        **backend,
        "executable": STEM,
        "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in inputs],
        "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in outputs[:len(loaded.outputs)]],
        "traced": traced,
        "nodes": _manifest_nodes(loaded),
        "weights_bytes": weights.nbytes,
        "weights": weight_targets,  # lltfi_weight_table's entries, in order (weight faults)
        "sid": sid_report or None,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Build(out_dir)


def compile_program(sources: list[str | Path], out_dir: str | Path, cflags: list[str] | None = None,
                    opt_level: int = 0, from_build: str | Path | None = None) -> Build:
    """Compile C/C++ sources into a build directory whose program runs under the fault driver;
    or, `from_build`, the bitcode that `lltfi-mlir cc` recorded for a Makefile-built executable.
    Staged and locked like `compile_onnx`: a failed compile leaves `out_dir` as it was."""
    with locked(Path(out_dir).resolve()), staged(Path(out_dir).resolve()) as stage:
        _compile_program(sources, stage, cflags, opt_level, from_build)
    return Build(out_dir)


def _compile_program(sources: list[str | Path], out_dir: str | Path, cflags: list[str] | None = None,
                     opt_level: int = 0, from_build: str | Path | None = None) -> Build:
    from .frontend.c_frontend import bitcode_of_build, compile_to_bitcode, import_program
    from .llvm_backend.glue import generate_program_glue

    if opt_level not in (0, 1, 2, 3):
        raise UsageError(f"--opt-level {opt_level}: must be 0, 1, 2 or 3")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(s) for s in sources]
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if from_build is not None:
        bitcode, cplusplus, recorded = bitcode_of_build(Path(from_build), out_dir)
        paths = [Path(p) for p in recorded]
    else:
        bitcode, cplusplus = compile_to_bitcode(paths, out_dir, list(cflags or []))
    seconds["clang"] = time.perf_counter() - start
    with ir.Context():
        start = time.perf_counter()
        module = import_program(bitcode, out_dir)
        seconds["import"] = time.perf_counter() - start
        write_llvm_module(module, out_dir)
    glue = out_dir / "glue.c"
    glue.write_text(generate_program_glue())
    seconds.update(build_native(out_dir / f"{STEM}.llvm.mlir", out_dir, STEM, [glue], opt_level, program=True,
                                cplusplus=cplusplus))
    manifest = {
        "format": 1, "kind": "program", "language": "c++" if cplusplus else "c",
        "source": [str(p.resolve()) for p in paths], "cflags": list(cflags or []), "entry": None,
        "opt_level": opt_level, "executable": STEM, "inputs": [], "outputs": [], "nodes": [],
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return Build(out_dir)


def compile_mlir(source: str | Path | ir.Module, out_dir: str | Path, entry: str = "main", opt_level: int = 0,
                 sid: SidOptions | None = None) -> Build:
    """Compile an MLIR module (a .mlir file or a live `ir.Module`, which is copied, not changed; LLVM
    dialect, or func/arith/scf/memref that upstream passes lower) whose C-ABI `entry` is the program:
    linked with the program driver, run and injected as a C program is (stdout and output files
    compared, arguments after `--`). An instrumented module (lltfi-instrument) keeps its sites.
    Built in a temporary folder under a lock and published whole, as compile_onnx does."""
    with locked(Path(out_dir).resolve()), staged(Path(out_dir).resolve()) as stage:
        _compile_mlir(source, stage, entry, opt_level, sid)
    return Build(out_dir)


def _compile_mlir(source: str | Path | ir.Module, out_dir: Path, entry: str, opt_level: int,
                  sid: SidOptions | None) -> None:
    from .dialect_passes.sites import SiteSelector
    from .frontend.mlir_frontend import lower_module, parse_module, prepare_entry
    from .llvm_backend.glue import generate_program_glue
    from .sid import DuplicateInstructionsPass
    from .sid.duplicate_instructions import ARITHMETIC, INT_ARITHMETIC

    if opt_level not in (0, 1, 2, 3):
        raise UsageError(f"--opt-level {opt_level}: must be 0, 1, 2 or 3")
    if sid is not None and sid.technique not in ("aid", "acd"):
        raise UsageError(f"--sid {sid.technique}: MLIR modules are hardened with aid or acd (od needs an ONNX graph)")
    if sid is not None and (sid.operators or sid.layers):
        raise UsageError("--operators and --layers name ONNX operators: select an MLIR module's code with --nodes "
                         "(its loc(\"name\") locations)")
    out_dir = Path(out_dir)
    seconds: dict[str, float] = {}
    sid_report = None
    with ir.Context():
        start = time.perf_counter()
        if isinstance(source, ir.Module):
            module = ir.Module.parse(source.operation.get_asm(enable_debug_info=True))
            source = "<in-memory module>"
        else:
            module = parse_module(source)
        lower_module(module)
        signature = prepare_entry(module, entry)
        seconds["import"] = time.perf_counter() - start
        if sid is not None:
            selector = SiteSelector(opcodes=ARITHMETIC | INT_ARITHMETIC, nodes=sid.nodes, require_operator=False)
            result = DuplicateInstructionsPass(sid.technique, sid.correction, selector).apply(module)
            if not result.changed:
                raise UsageError("--sid selects no arithmetic instruction (check --nodes)")
            sid_report = {"technique": sid.technique, "correction": sid.correction,
                          "duplicated_instructions": result.duplicated, "checks": result.checks}
        out_dir.mkdir(parents=True, exist_ok=True)
        write_llvm_module(module, out_dir)
        translated = translate_module(module, out_dir / f"{STEM}.ll")
        counts = {"sites": 0, "units": 0}  # an instrumented module needs its counters defined
        if "lltfi.instrumented" in module.operation.attributes:
            counts.update({n.name: ir.IntegerAttr(n.attr).value
                           for n in ir.DictAttr(module.operation.attributes["lltfi.instrumented"])})
    glue = out_dir / "glue.c"
    glue.write_text(generate_program_glue(counts["sites"], counts["units"]))
    seconds.update(build_native(out_dir / f"{STEM}.llvm.mlir", out_dir, STEM, [glue], opt_level, program=True,
                                translated=translated))
    manifest = {
        "format": 1, "kind": "program", "language": "mlir",
        "source": [str(Path(source).resolve()) if source != "<in-memory module>" else source],
        "entry": entry, "entry_type": signature, "opt_level": opt_level, "executable": STEM, "inputs": [],
        "outputs": [], "nodes": [], "sid": sid_report, "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
