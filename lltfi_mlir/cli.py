"""`lltfi-mlir` command line. `main(argv)` returns an exit code and can be called in-process.

Only this module catches `LltfiError`; it prints the message on one line and exits with the
error's code (2 for bad input, 1 for tool failures).
"""

from __future__ import annotations

import argparse
import errno
import sys
from enum import IntEnum
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .errors import LltfiError, UsageError
from .terminal import plain, safe


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so `main` stays the only exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _add_build_options(p: argparse.ArgumentParser, default_codegen: str = "optimized") -> None:
    """Options shared by everything that compiles a model (compile, harden)."""
    p.add_argument("--codegen", choices=["optimized", "reference"], default=default_codegen,
                   help="optimized: register-tiled vector Conv/Gemm/MatMul, IEEE-exact opt passes, llc -O2 "
                   "(bit-identical outputs and the same fault sites as reference); reference: scalar loops at "
                   f"llc -O0, as the LLTFI paper (default {default_codegen})")
    p.add_argument("--opt-level", type=int, default=None, choices=[0, 1, 2, 3],
                   help="llc optimisation level (default: 2 for optimized code, 0 for reference code)")
    p.add_argument("--target-cpu", default="native",
                   help="CPU to generate code for: native (the host's vector ISA, default), portable, or an "
                   "LLVM CPU name such as znver3")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=DIMS",
                   help="bind an input's shape (x=1x8x8x1) or a dynamic dimension (batch=4); "
                   "free dimensions default to 1; repeatable")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lltfi-mlir", description=(
        "Fault injection below the ML framework: compile ONNX models through MLIR to native code."))
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    p = sub.add_parser("compile", help="compile an ONNX model (or C/C++ sources, an MLIR module) to a native program",
                       description="Compile an ONNX model through MLIR and LLVM to a native program. "
                       "Writes model.linalg.mlir, model.llvm.mlir (with locations), model.ll, the "
                       "executable 'model' and manifest.json into the output directory. C/C++ sources "
                       "(.c, .cpp, ...) go through clang-19 -O0 -g -ffp-contract=off and the same LLVM 22 "
                       "passes and backend.")
    p.add_argument("model", nargs="*", help="ONNX model file, one or more C/C++ source files, or one MLIR module "
                   "(.mlir)")
    p.add_argument("--from-build", metavar="EXE", help="C/C++: link the bitcode that 'lltfi-mlir cc'/'c++' recorded "
                   "for EXE (make CC=\"lltfi-mlir cc\"), instead of compiling sources")
    p.add_argument("--cflags", default="", help="extra clang flags for C/C++ sources, e.g. \"-DN=64 -I inc\"")
    p.add_argument("--entry", default=None,
                   help="MLIR modules (.mlir): the C-ABI entry point run as the program, int f(int, char **), "
                   "int f(void) or void f(void) (default main)")
    p.add_argument("-o", "--output", default="build", help="output directory (default: build)")
    _add_build_options(p)
    p.epilog = ("An .mlir file in the LLVM dialect (or func/arith/scf/cf/memref/math, lowered with upstream "
                "passes) is compiled as a program, like C sources: run it as the original program, inject with "
                "'lltfi-mlir inject DIR -- ARGS'; its loc(\"name\") locations select as nodes, file:line "
                "locations as sources/lines.")

    p = sub.add_parser("run", help="run a compiled model on .npy inputs",
                       description="Run a compiled model natively on .npy inputs and print the outputs "
                       "(the top classes for a classifier).")
    p.add_argument("build", help="build directory written by 'lltfi-mlir compile'")
    p.add_argument("--input", "-i", action="append", default=[], required=True,
                   help=".npy file per model input, in the model's input order; repeatable")
    p.add_argument("--output", action="append", default=[],
                   help="write the model's outputs to these .npy files (one per output)")
    p.add_argument("--top", type=int, default=5, help="how many top classes to print (default 5)")

    p = sub.add_parser("inject", help="run a fault-injection campaign",
                       description="Run (or resume) a fault-injection campaign on a model or a build directory. "
                       "The YAML config accepts LLTFI's input.yaml keys (compileOption, runOption) and a native "
                       "schema (select, fault, campaign, sdc). Re-running the same command resumes.")
    p.add_argument("target", help="ONNX model file, MLIR module (.mlir, compiled as a program; entry main) or "
                   "build directory")
    p.add_argument("-c", "--config", help="YAML configuration (default: paper defaults: single bit flips in the "
                   "destination registers of floating-point arithmetic inside the model's operators)")
    p.add_argument("--inputs", help="directory of .npy input sets (default: the model's inputs/ folder)")
    p.add_argument("--runs", type=int, help="number of trials (overrides the config's numOfRuns)")
    p.add_argument("--seed", type=int, help="campaign seed (overrides fi_random_seed / campaign.seed)")
    p.add_argument("--jobs", "-j", type=int,
                   help="trials run at once (default: one per core; the walk engine one more)")
    p.add_argument("--dry-run", action="store_true",
                   help="compile, instrument and profile, then print the plan (sites and dynamic instances per "
                   "layer, function and opcode; trials per run block; estimated time) without running trials")
    p.add_argument("--no-early-end", dest="early_end", action="store_false",
                   help="run every trial to the end; by default a trial whose fault only changes floating-point "
                   "values ends as benign once every operator output still to be read equals the golden run's "
                   "(exact; the database records the operator as masked_at)")
    p.add_argument("--engine", choices=["walk", "simple"],
                   help="walk (default for models): one golden run per input set forks each trial at its first "
                   "fault, so a trial costs only the rest of the inference; simple (default and only choice for "
                   "C/C++ programs): each trial runs the whole program in a fork-server child. Both give the "
                   "same results, and either resumes the other's database")
    p.add_argument("--margin", type=float, help="plan the trial count for this error margin (Leveugle et al. "
                   "2009) and stop once the 95%% interval of the SDC rate is that tight")
    p.add_argument("--exhaustive", action="store_true", help="every (dynamic instance, bit) pair")
    p.add_argument("--draw", choices=["uniform", "per_layer", "exhaustive"],
                   help="uniform over all selected dynamic instances (default), stratified per layer (trial i "
                   "goes to layer i mod L; per function for C programs), or exhaustive")
    p.add_argument("--db", help="campaign database (default: campaign-<hash>.db beside the build)")
    p.add_argument("--timeout", type=float, help="seconds per trial before it counts as a hang "
                   "(default: 50x the golden run, at least 2 s)")
    p.add_argument("--codegen", choices=["optimized", "reference"], default="optimized",
                   help="code generation when compiling an ONNX file (see compile --help)")
    p.add_argument("--opt-level", type=int, default=None, choices=[0, 1, 2, 3],
                   help="llc level when compiling (default: 2 optimized, 0 reference)")
    p.add_argument("-o", "--output", help="working directory for the build (default: lltfi-out/<model>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-layer tables")
    p.add_argument("--stdin", help="C/C++ programs: file fed to the program's stdin in every run")
    p.add_argument("--output-file", action="append", default=[], metavar="NAME",
                   help="C/C++ programs: a file the program writes in its working directory, compared "
                   "like its stdout; repeatable")
    p.add_argument("--trace", choices=["layers", "instructions", "all"],
                   help="propagation tracing: per-layer corruption of every trial (a traced build returns "
                   "every node's output; same arithmetic), and/or the next --max-trace instrumented "
                   "instructions after the fault in the faulty and the golden run")
    p.add_argument("--max-trace", type=int, help="instructions recorded per trial with --trace (default 250)")
    p.add_argument("--level", choices=["instruction", "operator"],
                   help="inject into instruction results (default) or into operator output elements "
                   "(TensorFI / PyTorchFI style), with the same operator selection and outcomes")
    p.add_argument("--allow-nonfinite-golden", action="store_true",
                   help="run although a fault-free output holds NaN or Inf (refused by default: faults that reach "
                   "such values look benign); the database records the count")
    p.add_argument("--target", dest="fault_target", choices=["instructions", "weights", "activations"],
                   help="what a fault corrupts: instruction results (default); one stored weight element for the "
                   "whole inference; or one element of an operator's output buffer once written. Uniform over "
                   "every (element, bit), --exhaustive: all of them; the config's select operators/nodes/layers "
                   "pick the operators (weights: by the operators reading them)")
    p.add_argument("--tensors", help="comma-separated weight tensor names (with --target weights; the manifest's "
                   "\"weights\" list names them)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="run the trials on a Dask cluster: a scheduler address (tcp://host:8786) or 'local' (a "
                   "LocalCluster of --jobs workers); same rows as a local run; needs pip install 'lltfi-mlir[dask]'")
    p.add_argument("--dask-batch", type=int, metavar="N", help="trials per Dask task (default 256)")

    p = sub.add_parser("compare", help="instruction-level vs operator-level SDC rates (the paper's RQ1)",
                       description="Run an instruction-level and an operator-level campaign with the same "
                       "selection, inputs, trial count and seed, and print both SDC rates with 95% intervals "
                       "and their ratio.")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-c", "--config", help="YAML configuration (as for inject)")
    p.add_argument("--inputs", help="directory of .npy input sets (default: the model's inputs/ folder)")
    p.add_argument("--runs", type=int, default=1000, help="trials per level (default 1000)")
    p.add_argument("--seed", type=int, help="campaign seed")
    p.add_argument("--jobs", "-j", type=int,
                   help="trials run at once (default: one per core; the walk engine one more)")
    p.add_argument("-o", "--output", help="working directory (default: lltfi-out/<model>)")
    p.add_argument("--allow-nonfinite-golden", action="store_true",
                   help="run although a fault-free output holds NaN or Inf (see inject --help)")
    p.epilog = "C/C++ programs: arguments after '--' are passed to the program in every run."

    p = sub.add_parser("harden", help="compile with selective instruction duplication (AID, ACD, OD)",
                       description="Compile a model like 'compile' does, duplicating the arithmetic of the "
                       "chosen operators: aid (every fadd/fsub/fmul/fdiv), acd (chains, one check per chain), "
                       "od (ONNX operator nodes, combined with Min). The result is a build directory that "
                       "'run' and 'inject' accept.")
    p.add_argument("model", help="ONNX model file, or an MLIR module (.mlir; aid/acd over its floating-point "
                   "and integer arithmetic, --nodes selects loc(\"name\") locations)")
    p.add_argument("--entry", default="main", help="MLIR modules: the C-ABI entry point (default main)")
    p.add_argument("--sid", required=True, choices=["aid", "acd", "od"], help="duplication technique")
    p.add_argument("--correct", default="and", choices=["and", "min", "none"],
                   help="on mismatch: bitwise AND of both copies (undoes 0->1 flips), the smaller value "
                   "(NaN propagates), or none (detection only: count mismatches). Default: and")
    p.add_argument("--operators", default="", help="comma-separated ONNX op types to protect, e.g. Conv "
                   "(default: all)")
    p.add_argument("--nodes", default="", help="comma-separated ONNX node names to protect")
    p.add_argument("--layers", default="", help="comma-separated Type:N (N-th node of that type, 1-based)")
    p.add_argument("-o", "--output", default="hardened", help="output directory (default: hardened)")
    _add_build_options(p, default_codegen="reference")

    p = sub.add_parser("opt", help="run a pass pipeline (upstream and lltfi passes) on an MLIR module",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a pass pipeline on an MLIR module, like mlir-opt, with the lltfi passes "
                       "available by name next to upstream ones, e.g.\n"
                       "  lltfi-mlir opt in.mlir -o out.mlir --pass-pipeline "
                       "'builtin.module(canonicalize,lltfi-sid{technique=acd correct=min},"
                       "lltfi-instrument{opcodes=fmul,fadd})'\n\n"
                       "lltfi-sid{technique=aid|acd correct=and|min|none [opcodes=..] [nodes=..] [operators=..] "
                       "[layers=..] [functions=..] [sources=..] [lines=first,last] [manifest=..]}\n"
                       "  selective instruction duplication of floating-point and integer arithmetic (default: all "
                       "of it); every inserted op carries lltfi.sid and the original's location.\n"
                       "lltfi-instrument{[opcodes=..] [exclude-opcodes=..] [operators=..] [exclude-operators=..] "
                       "[nodes=..] [exclude-nodes=..] [layers=Conv:1] [functions=..] [exclude-functions=..] "
                       "[register=dst|src1..src4|allsrc|all] [sources=..] [lines=first,last] "
                       "[require-operator=false] [manifest=build/manifest.json]}\n"
                       "  fault-site selection and instrumentation, with the native config's select keys "
                       "(opcodes and groups fp, int, cast, sid, all; default fp). Applied to an instrumented "
                       "module it keeps the existing sites' ids and numbers new sites after them.\n"
                       "manifest= reads an ONNX build's manifest.json: operators and layers select by its node "
                       "table.\n\n"
                       "Lists are comma-separated. Each lltfi pass verifies its input and output; failures are "
                       "MLIR diagnostics with locations. Compile the result with 'lltfi-mlir compile OUT.mlir'.")
    p.add_argument("input", help="MLIR module (.mlir)")
    p.add_argument("-o", "--output", required=True, help="output file (.mlir)")
    p.add_argument("--pass-pipeline", required=True, dest="pipeline", help="pass pipeline, mlir-opt syntax")

    p = sub.add_parser("trace", help="draw how one trial's fault travelled (Graphviz DOT, and SVG)",
                       description="Write the operator data-flow graph with the corrupted path highlighted "
                       "(each corrupted layer annotated with an index, golden -> faulty value and the number "
                       "of corrupted elements) and the instruction-level propagation graph of one trial of a "
                       "campaign run with --trace. SVG too when Graphviz's dot is installed.")
    p.add_argument("db", help="campaign database")
    p.add_argument("--trial", type=int, required=True, help="trial id")
    p.add_argument("-o", "--output", default="trace-graphs", help="output directory (default: trace-graphs)")

    p = sub.add_parser("replay", help="re-run one trial of a campaign and check its recorded outcome",
                       description="Re-run one recorded trial alone (same input, dynamic index, fault model "
                       "and seed, hence the same bits) and compare fault and outcome with the database. "
                       "Exit status 1 if they differ.")
    p.add_argument("db", help="campaign database")
    p.add_argument("--trial", type=int, required=True, help="trial id")

    p = sub.add_parser("report", help="write one self-contained HTML page of one or more campaigns",
                       description="Write an HTML report of campaign databases: outcomes with 95% intervals, SDC "
                       "per layer, opcode and bit position, masking and Table II when traced, propagation graphs, "
                       "and with several databases a side-by-side comparison. Charts are inline SVG (matplotlib: "
                       "pip install 'lltfi-mlir[report]'); the page loads nothing and runs no script. Databases "
                       "are opened read-only.")
    p.add_argument("db", nargs="+", help="campaign databases")
    p.add_argument("-o", "--output", default="report.html", help="HTML file to write (default: report.html)")
    p.add_argument("--label", action="append", default=[], help="name of each database, in order (default: the "
                   "file name); repeatable")
    p.add_argument("--trial", action="append", type=int, default=[], help="draw the propagation graphs of this "
                   "trial in every traced database (default: its first traced SDC and benign trials); repeatable")
    p.add_argument("--title", help="page title")

    p = sub.add_parser("results", help="print or export a campaign's results",
                       description="Print a finished (or partial) campaign's outcome rates with 95% Wilson "
                       "intervals, overall and per layer, opcode and bit, or export them.")
    p.add_argument("db", help="campaign database")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="print one JSON object (rates over activated trials)")
    group.add_argument("--csv", action="store_true", help="print one CSV row per trial")
    from .cli_compat import add_compat_parsers

    add_compat_parsers(sub)  # check-config, sites (and `cc` / `c++`, dispatched in main)
    return parser


def _print_outputs(console: Console, names: list[str], outputs: list[np.ndarray], top: int) -> None:
    for name, out in zip(names, outputs):
        flat = out.reshape(-1)
        is_classifier = out.dtype.kind == "f" and out.ndim == 2 and out.shape[0] == 1 and out.shape[1] > 1
        if is_classifier:
            console.print(f"output '{safe(name)}' {tuple(out.shape)}: top classes", soft_wrap=True)
            table = Table()
            table.add_column("rank", justify="right")
            table.add_column("class", justify="right")
            table.add_column("value", justify="right")
            order = np.argsort(-flat, kind="stable")[:top]
            for rank, cls in enumerate(order, 1):
                table.add_row(str(rank), str(int(cls)), f"{flat[cls]:.6g}")
            console.print(table)
        else:
            console.print(f"output '{safe(name)}' {tuple(out.shape)}:")
            console.print(np.array2string(out, precision=6, threshold=64))


def _cmd_compile(args: argparse.Namespace, console: Console) -> ExitCode:
    from .compiler import CompileOptions, compile_onnx
    from .frontend.c_frontend import is_program_source
    from .frontend.onnx_loader import parse_shape_overrides

    if args.from_build or not args.model:
        from .compiler import compile_program

        if not args.from_build or args.model:
            raise UsageError("give a model or source files, or --from-build EXE (not both)")
        with console.status(f"linking the bitcode of {safe(args.from_build)}"):
            build = compile_program([], args.output, opt_level=args.opt_level or 0, from_build=args.from_build)
        console.print(f"compiled {safe(args.from_build)} (recorded bitcode) -> {safe(build.executable)}; inject with: "
                      f"lltfi-mlir inject {safe(args.output)} -- ARGS", soft_wrap=True)
        return ExitCode.OK
    if len(args.model) == 1 and args.model[0].endswith(".mlir"):
        from .compiler import compile_mlir

        with console.status(f"compiling {safe(args.model[0])}"):
            build = compile_mlir(args.model[0], args.output, args.entry or "main", args.opt_level or 0)
        total = sum(build.manifest["seconds"].values())
        console.print(f"compiled {safe(args.model[0])} -> {safe(build.executable)} in {total:.2f} s (run it as "
                      f"the program; inject with: lltfi-mlir inject {safe(args.output)} -- ARGS)", soft_wrap=True)
        return ExitCode.OK
    if all(is_program_source(m) for m in args.model):
        import shlex

        from .compiler import compile_program

        with console.status(f"compiling {safe(' '.join(args.model))}"):
            build = compile_program(args.model, args.output, shlex.split(args.cflags), args.opt_level or 0)
        total = sum(build.manifest["seconds"].values())
        console.print(f"compiled {safe(' '.join(args.model))} -> {safe(build.executable)} in {total:.2f} s "
                      f"(run it as the original program; inject with: lltfi-mlir inject {safe(args.output)} -- ARGS)")
        return ExitCode.OK
    if len(args.model) != 1:
        raise UsageError("give one ONNX model, or only C/C++ source files")
    args.model = args.model[0]
    options = CompileOptions(codegen=args.codegen, opt_level=args.opt_level, target_cpu=args.target_cpu,
                             shapes=parse_shape_overrides(args.shape))
    with console.status(f"compiling {safe(args.model)}"):
        build = compile_onnx(args.model, args.output, options)
    seconds = build.manifest["seconds"]
    total = sum(seconds.values())
    stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items())
    console.print(f"compiled {safe(args.model)} -> {safe(build.executable)} in {total:.2f} s ({stages})")
    for spec in build.inputs:
        console.print(f"  input  {safe(spec.name)}: {'x'.join(map(str, spec.shape))} {spec.dtype}")
    for spec in build.outputs:
        console.print(f"  output {safe(spec.name)}: {'x'.join(map(str, spec.shape))} {spec.dtype}")
    return ExitCode.OK


def _cmd_run(args: argparse.Namespace, console: Console) -> ExitCode:
    from .build import Build

    build = Build(args.build)
    from .campaign.inputs import load_npy

    arrays = [load_npy(Path(path)) for path in args.input]
    if args.output and len(args.output) != len(build.outputs):
        raise UsageError(f"--output given {len(args.output)} time(s); the model has "
                         f"{len(build.outputs)} output(s)")
    outputs = build.run(arrays)
    for path, out in zip(args.output, outputs):
        np.save(path, out)
    _print_outputs(console, [s.name for s in build.outputs], outputs, args.top)
    return ExitCode.OK


def _split(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def _cmd_harden(args: argparse.Namespace, console: Console) -> ExitCode:
    from .compiler import CompileOptions, SidOptions, compile_onnx
    from .frontend.onnx_loader import parse_shape_overrides

    layers = set()
    for item in _split(args.layers):
        op_type, _, number = item.partition(":")
        if not number.isdigit():
            raise UsageError(f"--layers {item!r}: expected Type:N, e.g. Conv:2")
        layers.add((op_type, int(number)))
    if args.model.endswith(".mlir"):
        from .compiler import SidOptions, compile_mlir

        sid = SidOptions(args.sid, args.correct, _split(args.operators), _split(args.nodes), frozenset(layers))
        with console.status(f"hardening {safe(args.model)}"):
            build = compile_mlir(args.model, args.output, args.entry, args.opt_level or 0, sid=sid)
        report = build.manifest["sid"]
        console.print(f"hardened {safe(args.model)} -> {safe(build.executable)} ({args.sid}, correct={args.correct}): "
                      f"{report['duplicated_instructions']} instruction(s) duplicated, {report['checks']} check(s) "
                      "inserted", soft_wrap=True)
        return ExitCode.OK
    if args.sid == "od" and args.correct != "min":
        raise UsageError("--sid od combines the two copies with ONNX Min: use --correct min")
    sid = SidOptions(args.sid, args.correct, _split(args.operators), _split(args.nodes), frozenset(layers))
    options = CompileOptions(codegen=args.codegen, opt_level=args.opt_level, target_cpu=args.target_cpu,
                             shapes=parse_shape_overrides(args.shape), sid=sid)
    with console.status(f"hardening {safe(args.model)}"):
        build = compile_onnx(args.model, args.output, options)
    report = build.manifest["sid"]
    what = (f"{report['duplicated_nodes']} operator node(s) duplicated" if args.sid == "od"
            else f"{report['duplicated_instructions']} instruction(s) duplicated")
    console.print(f"hardened {safe(args.model)} -> {safe(build.executable)} ({args.sid}, correct={args.correct}): "
                  f"{what}, "
                  f"{report['checks']} check(s) inserted")
    return ExitCode.OK


def _cmd_inject(args: argparse.Namespace, console: Console) -> ExitCode:
    from .campaign import Campaign, load_config
    from .campaign.config import with_overrides
    from .campaign.report import print_summary

    config = with_overrides(load_config(args.config), seed=args.seed, timeout=args.timeout, draw=args.draw,
                            level=args.level, target=args.fault_target)
    if args.tensors:
        if config.target != "weights":
            raise UsageError("--tensors selects weight tensors: add --target weights")
        config = with_overrides(config, tensors=frozenset(t.strip() for t in args.tensors.split(",") if t.strip()))
    if args.trace in ("layers", "all"):
        config = with_overrides(config, trace_layers=True)
    if args.trace in ("instructions", "all") or args.max_trace:
        if args.max_trace is not None and not 0 < args.max_trace <= 4096:
            raise UsageError(f"--max-trace {args.max_trace}: must be 1..4096")
        config = with_overrides(config, max_trace=args.max_trace or config.max_trace or 250)
    for note in config.notes:
        console.print(f"note: {safe(note)}")
    from .campaign.config import check_runs

    check_runs(args.runs)
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    if args.margin is not None and not 0 < args.margin < 1:
        raise UsageError(f"--margin {args.margin}: must be between 0 and 1 (e.g. 0.01)")
    target = Path(args.target)
    kwargs = {"db": args.db, "jobs": args.jobs, "engine": args.engine, "early_end": args.early_end}
    if args.dask_batch is not None and args.dask_batch < 1:
        raise UsageError(f"--dask-batch {args.dask_batch}: must be at least 1")
    if args.dask:
        from .campaign.dask_runner import check_address

        kwargs.update(dask=check_address(args.dask), dask_batch=args.dask_batch)
    program_args = args.program_args
    if program_args or args.stdin or args.output_file:
        from .campaign.executor import ProgramRun

        if args.stdin and not Path(args.stdin).is_file():
            raise UsageError(f"--stdin {args.stdin}: no such file")
        if any("/" in f for f in args.output_file):
            raise UsageError("--output-file takes a name in the working directory, not a path")
        kwargs["program"] = ProgramRun(tuple(program_args), str(Path(args.stdin).resolve()) if args.stdin else None,
                                       tuple(args.output_file))
    if target.is_dir():
        campaign = Campaign.from_build(target, config, args.inputs, **kwargs)
    elif target.suffix == ".mlir":  # an MLIR module: compiled as a program (see compile --help)
        from .compiler import compile_mlir

        work = Path(args.output) if args.output else Path("lltfi-out") / target.stem
        build = compile_mlir(target, work / "build", opt_level=args.opt_level or 0)
        campaign = Campaign.from_build(build.directory, config, args.inputs, **kwargs)
    else:
        campaign = Campaign.from_onnx(target, config, args.inputs, out_dir=args.output, opt_level=args.opt_level,
                                      codegen=args.codegen, **kwargs)
    campaign.allow_nonfinite_golden = args.allow_nonfinite_golden
    if args.dry_run:
        from .campaign.dry_run import plan, print_plan

        print_plan(plan(campaign, args.runs, args.exhaustive), console)
        return ExitCode.OK
    summary = campaign.run(args.runs, margin=args.margin, exhaustive=args.exhaustive, progress=not args.quiet)
    if campaign.self_check.startswith("skipped"):
        console.print(f"note: instrumentation self-check {plain(campaign.self_check)}", markup=False)
    if campaign.planned_trials is not None:
        console.print(f"margin {args.margin}: planned {campaign.planned_trials} trials (Leveugle et al. 2009); "
                      f"{summary['trials']} run (the run stops once the SDC interval is that tight)")
    print_summary(summary, console, details=not args.quiet)
    from .cli_compat import after_campaign

    after_campaign(campaign, summary, console)  # LLTFI verbose / generateCDFG
    console.print(f"results: {safe(campaign.db_path)}  (lltfi-mlir results {safe(campaign.db_path)} --json)",
                  soft_wrap=True)
    from .campaign.database import CampaignDatabase
    from .campaign.report import print_replay_hint

    db = CampaignDatabase(campaign.db_path, create=False)
    try:
        print_replay_hint(db, console)
    finally:
        db.close()
    return ExitCode.OK


def _cmd_results(args: argparse.Namespace, console: Console) -> ExitCode:
    import json

    from .campaign.database import CampaignDatabase
    from .campaign.report import print_replay_hint, print_summary, summarize, trials_csv

    db = CampaignDatabase(args.db, create=False)
    try:
        if args.csv:
            sys.stdout.write(trials_csv(db))
        elif args.json:
            sys.stdout.write(json.dumps(summarize(db), indent=1, default=str) + "\n")
        else:
            print_summary(summarize(db), console)
            print_replay_hint(db, console)
    finally:
        db.close()
    return ExitCode.OK


def _cmd_compare(args: argparse.Namespace, console: Console) -> ExitCode:
    import dataclasses

    from .campaign import Campaign, load_config
    from .campaign.config import check_runs, with_overrides

    check_runs(args.runs)
    base = with_overrides(load_config(args.config), seed=args.seed)
    rates = {}
    for level in ("instruction", "operator"):
        config = dataclasses.replace(base, level=level)
        campaign = Campaign.from_onnx(args.model, config, args.inputs, out_dir=args.output, jobs=args.jobs)
        campaign.allow_nonfinite_golden = args.allow_nonfinite_golden
        console.print(f"{level}-level campaign: {safe(campaign.db_path)}")
        rates[level] = campaign.run(args.runs, progress=True)["outcomes"]["sdc"]
    table = Table(title=f"SDC rate by injection level ({args.runs} trials each, 95% Wilson intervals)",
                  title_justify="left")
    for col in ("level", "SDC", "95% interval"):
        table.add_column(col, justify="right")
    for level, r in rates.items():
        table.add_row(level, f"{100 * r['rate']:.2f}%", f"[{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]")
    console.print(table)
    instr, oper = rates["instruction"]["rate"], rates["operator"]["rate"]
    ratio = f"{oper / instr:.2f}x" if instr else "undefined (no instruction-level SDC)"
    console.print(f"operator-level / instruction-level SDC rate: {ratio}")
    return ExitCode.OK


def _cmd_opt(args: argparse.Namespace, console: Console) -> ExitCode:
    from .dialect_passes.pipeline import run_pipeline_file

    for line in run_pipeline_file(args.input, args.output, args.pipeline):
        console.print(line, markup=False, highlight=False)
    return ExitCode.OK


def _cmd_report(args: argparse.Namespace, console: Console) -> ExitCode:
    from .campaign.html_report import write_report

    out = write_report(args.db, args.output, args.label, args.trial, args.title)
    console.print(f"wrote {plain(out)}", markup=False, soft_wrap=True)
    return ExitCode.OK


def _cmd_trace(args: argparse.Namespace, console: Console) -> ExitCode:
    from .campaign.propagation import write_graphs

    for path in write_graphs(args.db, args.trial, args.output):
        console.print(f"wrote {safe(path)}")
    return ExitCode.OK


def _cmd_replay(args: argparse.Namespace, console: Console) -> ExitCode:
    import numpy as np

    from .campaign.replay import replay_trial

    replay = replay_trial(args.db, args.trial)
    rec = replay.recorded
    console.print(f"trial {rec['id']}: input set {rec['input']}, dynamic index {rec['target']}, "
                  f"{rec['fault_type']}, seed {rec['seed']}")
    for f in replay.faults:
        console.print(f"  fault at site {f.site}, instance {f.index}: mask {f.mask:#x}, value {f.before:#x} -> "
                      f"{f.after:#x}")
    if replay.output and isinstance(replay.output[0], bytes):
        console.print("  stdout: " + plain(replay.output[0].decode(errors="replace").strip()[:500]), markup=False)
    elif replay.output:
        console.print("  output: " + np.array2string(replay.output[0].reshape(-1), precision=5, threshold=20))
    console.print(f"outcome now: {replay.outcome}; recorded: {rec['outcome']}")
    if not replay.matches:
        console.print("MISMATCH: the replay differs from the recorded trial")
        return ExitCode.FAILURE
    return ExitCode.OK


COMMANDS = {"compile": _cmd_compile, "run": _cmd_run, "harden": _cmd_harden, "inject": _cmd_inject,
            "results": _cmd_results, "replay": _cmd_replay, "trace": _cmd_trace, "compare": _cmd_compare,
            "opt": _cmd_opt, "report": _cmd_report}


def _compat_commands() -> dict:
    from .cli_compat import COMPAT_COMMANDS

    return COMPAT_COMMANDS


COMMANDS.update(_compat_commands())  # check-config, sites


def main(argv: list[str] | None = None) -> int:
    # Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    errors = Console(stderr=True, highlight=False)
    parser = _parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if argv and argv[0] in ("cc", "c++"):  # compiler wrappers: clang's arguments, not ours
            from .frontend.cc_wrapper import run_wrapper

            return run_wrapper(argv[0], argv[1:])
        program_args = argv[argv.index("--") + 1:] if "--" in argv else []
        if "--" in argv:
            argv = argv[:argv.index("--")]
        args = parser.parse_args(argv)
        args.program_args = program_args
        if args.version:
            from . import __version__
            console.print(f"lltfi-mlir {__version__}")
            return ExitCode.OK
        if not args.command:
            parser.print_help()
            return ExitCode.USAGE
        return COMMANDS[args.command](args, console)
    except LltfiError as exc:
        message = plain(" ".join(str(exc)[:4000].split()))  # one bounded line, whatever the value inside
        if len(message) > 1000:
            message = message[:1000] + " ..."
        errors.print(f"lltfi-mlir: error: {message}", markup=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("lltfi-mlir: interrupted")
        return ExitCode.INTERRUPTED
    except OSError as exc:
        # The machine refused a write (disk full, file-size limit, quota, read-only file system):
        # nothing the tool can fix, and resuming later is safe (trials are written before they count).
        if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS):
            raise
        where = f" ({plain(exc.filename)})" if exc.filename else ""
        errors.print(f"lltfi-mlir: error: {plain(exc.strerror)}{where}: free space or raise the limit, then re-run "
                     "the command (a campaign resumes)", markup=False, soft_wrap=True)
        return ExitCode.FAILURE


if __name__ == "__main__":
    sys.exit(main())
