"""`lltfi-mlir cc` / `lltfi-mlir c++`: compiler wrappers for Makefiles, as wllvm and gllvm are.

`make CC="lltfi-mlir cc"` builds the project natively with Debian's clang-19 (legacy C accepted,
as LLFI's clang did), and for every object also writes its bitcode beside it (`foo.o.bc`). A link
records the bitcode of its objects beside the executable (`prog.lltfi-bitcode.json`), and
`lltfi-mlir compile --from-build prog` links that bitcode into a build directory for campaigns.
The wrapper exits with the compiler's status and passes its output through unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .c_frontend import BITCODE_RECORD, C_SUFFIXES, CXX_SUFFIXES, DEFAULT_CFLAGS, LEGACY_C_FLAGS, find_clang

# Options whose value is the next argument (gcc/clang spelling).
_WITH_VALUE = {"-o", "-I", "-D", "-U", "-include", "-isystem", "-iquote", "-idirafter", "-x", "-MF", "-MT", "-MQ",
               "-L", "-l", "-Xlinker", "-Xpreprocessor", "-Xassembler", "-imacros", "-arch", "-target", "-T", "-u"}
# Modes in which no object is produced: nothing to record.
_NO_OBJECT = {"-E", "-S", "-M", "-MM", "-fsyntax-only", "--version", "-v", "-###", "--help"}
_SOURCES = C_SUFFIXES | CXX_SUFFIXES


def _parse(args: list[str]) -> tuple[list[str], list[str], list[str], str | None]:
    """(sources, inputs that are objects, flags that matter for compiling, -o value)."""
    sources, objects, flags, output = [], [], [], None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _WITH_VALUE and i + 1 < len(args):
            value = args[i + 1]
            if arg == "-o":
                output = value
            elif arg in ("-I", "-D", "-U", "-include", "-isystem", "-iquote", "-idirafter", "-imacros", "-x"):
                flags += [arg, value]
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            output = arg[2:]
        elif arg.startswith("-"):
            keep = arg.startswith(("-I", "-D", "-U", "-std=", "-f", "-W", "-m", "-pthread", "-ansi"))
            drop = arg.startswith(("-O", "-g", "-fPIC", "-fpic", "-Wl,", "-Werror")) or arg == "-c"
            if keep and not drop:
                flags.append(arg)
        elif Path(arg).suffix in _SOURCES:
            sources.append(arg)
        elif Path(arg).suffix in (".o", ".a"):
            objects.append(arg)
        i += 1
    return sources, objects, flags, output


def _emit_bitcode(clang: str, source: str, flags: list[str], out: Path, cplusplus: bool) -> int:
    legacy = [] if cplusplus else LEGACY_C_FLAGS
    # The native compile already showed the warnings: the bitcode compile stays quiet.
    proc = subprocess.run([clang, *DEFAULT_CFLAGS, *legacy, *flags, "-w", "-emit-llvm", "-c", source, "-o", str(out)],
                          capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        sys.stderr.write(f"lltfi-mlir {'c++' if cplusplus else 'cc'}: bitcode of {source} failed:\n{proc.stderr}")
    return proc.returncode


def run_wrapper(kind: str, args: list[str]) -> int:
    """Compile like clang-19 does, then record bitcode; returns the exit status."""
    cplusplus = kind == "c++"
    clang = find_clang(cplusplus)
    sources, objects, flags, output = _parse(args)
    c_sources = not cplusplus and any(Path(s).suffix in C_SUFFIXES for s in sources)
    native = subprocess.run([clang, *(LEGACY_C_FLAGS if c_sources or not sources and not cplusplus else []), *args])
    if native.returncode != 0 or any(a in _NO_OBJECT for a in args) or (not sources and not objects):
        return native.returncode
    compile_only = "-c" in args
    is_cxx = cplusplus or any(Path(s).suffix in CXX_SUFFIXES for s in sources)
    if compile_only:
        for source in sources:
            obj = Path(output) if output and len(sources) == 1 else Path(Path(source).stem + ".o")
            status = _emit_bitcode(clang, source, flags, obj.with_name(obj.name + ".bc"), is_cxx)
            if status:
                return status
        return 0
    exe = Path(output or "a.out")
    bitcode: list[str] = []
    store = exe.with_name(exe.name + ".lltfi-bc")
    for number, source in enumerate(sources):  # sources compiled and linked in one command
        store.mkdir(exist_ok=True)
        out = store / f"{number}-{Path(source).stem}.bc"
        status = _emit_bitcode(clang, source, flags, out, is_cxx)
        if status:
            return status
        bitcode.append(str(out.resolve()))
    bitcode += [str(Path(o + ".bc").resolve()) for o in objects if not o.endswith(".a")]
    for archive in (o for o in objects if o.endswith(".a")):
        sys.stderr.write(f"lltfi-mlir {kind}: note: archive {archive} is linked natively only; its code is not "
                         "in the fault-injection build\n")
    record = {"bitcode": bitcode, "cplusplus": is_cxx, "sources": [str(Path(s).resolve()) for s in sources] +
              [str(Path(o).resolve()) for o in objects]}
    exe.with_name(exe.name + BITCODE_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return 0
