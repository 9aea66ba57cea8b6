"""C/C++ sources -> one LLVM-dialect module: clang -O0 -g -emit-llvm, llvm-link, mlir-translate --import-llvm.

clang-19 (Debian) writes IR that LLVM 22 reads (the other direction does not work), so the sources go
through Debian's clang and then stay in LLVM 22 end to end. `-ffp-contract=off` keeps `a*b+c` as an
fmul and an fadd (otherwise llvm.fmuladd) and -O0 keeps small functions from folding away.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mlir import ir

from ..errors import BuildError, UsageError
from ..llvm_backend.toolchain import run_tool, tool_path

C_SUFFIXES = {".c"}
CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".C"}
DEFAULT_CFLAGS = ["-O0", "-gline-tables-only", "-ffp-contract=off"]  # lines suffice for selection
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
        clang = find_clang(source.suffix in CXX_SUFFIXES)
        out = out_dir / (source.stem + ".bc")
        proc = subprocess.run([clang, *DEFAULT_CFLAGS, *cflags, "-emit-llvm", "-c", str(source), "-o", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise UsageError(f"clang failed on {source}: {first}")
        bitcode.append(out)
    linked = out_dir / "program.bc"
    run_tool([tool_path("llvm-link"), *map(str, bitcode), "-o", str(linked)], "llvm-link")
    return linked, cplusplus


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
