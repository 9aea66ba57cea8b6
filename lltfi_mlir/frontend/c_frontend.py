"""C/C++ sources -> one LLVM-dialect module: clang -O0 -g -emit-llvm, llvm-link, mlir-translate --import-llvm.

clang-19 (Debian) writes IR that LLVM 22 reads (the other direction does not work), so the sources go
through Debian's clang and then stay in LLVM 22 end to end. `-ffp-contract=off` keeps `a*b+c` as an
fmul and an fadd (otherwise llvm.fmuladd) and -O0 keeps small functions from folding away.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from mlir import ir

from ..errors import BuildError, UsageError
from ..llvm_backend.toolchain import run_tool, tool_path

C_SUFFIXES = {".c"}
CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".C"}
DEFAULT_CFLAGS = ["-O0", "-gline-tables-only", "-ffp-contract=off"]  # lines suffice for selection
# LLFI-era C (K&R definitions, implicit int, implicit declarations) compiled as LLFI's clang did:
# clang 16+ makes these errors by default; here they stay warnings, and the warnings are shown.
LEGACY_C_FLAGS = ["-Wno-error=implicit-int", "-Wno-error=implicit-function-declaration",
                  "-Wno-error=int-conversion", "-Wno-error=incompatible-pointer-types",
                  "-Wno-error=incompatible-function-pointer-types"]
BITCODE_RECORD = ".lltfi-bitcode.json"  # beside an executable linked by `lltfi-mlir cc` / `c++`
PROGRAM_ENTRY = "__lltfi_program_main"  # the driver owns main(); sites still report "main"


def find_clang(cplusplus: bool) -> str:
    names = ["clang++-19", "clang++"] if cplusplus else ["clang-19", "clang"]
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BuildError(f"{names[0]} not found: install Debian's clang-19 (apt-get install clang-19)")


def is_program_source(path: str | Path) -> bool:
    return Path(path).suffix in C_SUFFIXES | CXX_SUFFIXES


def compile_to_bitcode(sources: list[Path], out_dir: Path, cflags: list[str]) -> tuple[Path, bool]:
    """Returns one linked bitcode file and whether any source is C++."""
    cplusplus = any(p.suffix in CXX_SUFFIXES for p in sources)
    bitcode = []
    for source in sources:
        if not source.exists():
            raise UsageError(f"source file not found: {source}")
        is_cxx = source.suffix in CXX_SUFFIXES
        clang = find_clang(is_cxx)
        out = out_dir / f"{len(bitcode)}-{source.stem}.bc"  # two sources may share a stem
        legacy = [] if is_cxx else LEGACY_C_FLAGS
        proc = subprocess.run([clang, *DEFAULT_CFLAGS, *legacy, *cflags, "-emit-llvm", "-c", str(source),
                               "-o", str(out)], capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise UsageError(f"clang failed on {source}: {first}")
        show_warnings(proc.stderr)
        bitcode.append(out)
    return link_bitcode(bitcode, out_dir), cplusplus


def show_warnings(stderr: str) -> None:
    """clang's warnings on the terminal, as a compiler prints them (legacy C compiles with warnings)."""
    if stderr.strip():
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")


def link_bitcode(bitcode: list[Path], out_dir: Path) -> Path:
    linked = out_dir / "program.bc"
    run_tool([tool_path("llvm-link"), *map(str, bitcode), "-o", str(linked)], "llvm-link")
    return linked


def bitcode_of_build(executable: Path, out_dir: Path) -> tuple[Path, bool, list[str]]:
    """The linked bitcode of an executable built with `lltfi-mlir cc` / `c++` (wllvm/gllvm style: the
    wrapper recorded one bitcode file per object); also whether it is C++, and its sources."""
    record = executable.with_name(executable.name + BITCODE_RECORD)
    if not record.is_file():
        raise UsageError(f"{executable} was not linked by `lltfi-mlir cc` or `lltfi-mlir c++` (no {record.name} "
                         "beside it); build with make CC=\"lltfi-mlir cc\" CXX=\"lltfi-mlir c++\"")
    try:
        info = json.loads(record.read_text())
        files = [Path(p) for p in info["bitcode"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{record} is not a bitcode record: {exc}") from None
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise UsageError(f"{executable}: bitcode missing for {', '.join(missing[:3])} (an object compiled without "
                         "the lltfi-mlir cc wrapper, or deleted); rebuild it with the wrapper")
    if not files:
        raise UsageError(f"{executable}: its record lists no bitcode")
    return link_bitcode(files, out_dir), bool(info.get("cplusplus")), list(info.get("sources", []))


def import_program(bitcode: Path, out_dir: Path) -> ir.Module:
    """Import into the current Context, with `main` renamed for the driver."""
    mlir_path = out_dir / "program.imported.mlir"
    run_tool([tool_path("mlir-translate"), "--import-llvm", "--mlir-print-debuginfo", str(bitcode),
              "-o", str(mlir_path)], "mlir-translate")
    module = ir.Module.parse(mlir_path.read_text())
    names = {ir.StringAttr(op.attributes["sym_name"]).value: op for op in module.body.operations
             if "sym_name" in op.attributes}
    main = names.get("main")
    if main is None or not len(main.regions[0].blocks):
        raise UsageError("the program defines no main()")
    ir.SymbolTable.replace_all_symbol_uses("main", PROGRAM_ENTRY, module.operation)
    main.attributes["sym_name"] = ir.StringAttr.get(PROGRAM_ENTRY)
    return module
