"""mlir-translate -> .ll, [opt] and llc -> .o, cc -> executable, each a separate timed stage.

Optimized builds of large modules are split by function (`llvm-split`; every ONNX node is a
function) so that opt and llc run on all cores; the partitions link into the same program.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import BuildError
from ..runtime import CONTROLLER_SOURCES, PROGRAM_SOURCES, SOURCE_DIR
from .exact_math import use_exact_math
from .toolchain import run_tool, tool_path


def translate(llvm_mlir: Path, out_ll: Path) -> None:
    run_tool([tool_path("mlir-translate"), "--mlir-to-llvmir", str(llvm_mlir), "-o", str(out_ll)],
             "mlir-translate")
    out_ll.write_text(use_exact_math(out_ll.read_text()))


def translate_module(module, out_ll: Path) -> float:
    """In-process mlir-translate of a live module (no text round trip: 0.1 s against 1.5 s for
    ResNet-50); returns the seconds taken."""
    from mlir.dialects.llvm import translate_module_to_llvmir

    start = time.perf_counter()
    out_ll.write_text(use_exact_math(translate_module_to_llvmir(module.operation)))
    return time.perf_counter() - start


def assemble(source: Path, out: Path | None = None) -> Path:
    """Assemble weights.S once: every instrumented build of the model links the same object. Its
    `.incbin` paths are relative to its folder (`-I`), so a moved build folder assembles again."""
    obj = source.with_suffix(".o") if out is None else out
    run_tool([tool_path("cc"), "-c", "-Xassembler", f"-I{source.parent}", str(source), "-o", str(obj)],
             f"assembling {source.name}")
    return obj


def _cpu_flags(target_cpu: str | None) -> list[str]:
    """`native` = the host's vector ISA; `portable` = the target's baseline (runs anywhere)."""
    if target_cpu in (None, "portable"):
        return []
    return [f"-mcpu={target_cpu}"]


# What the tiled code and the scalar loops need, at a fraction of -O2's time on one huge function
# (ResNet-50: 1.9 s against 6.5-12 s, same speed): SROA promotes the accumulator allocas to
# registers, LICM hoists address arithmetic, the loop vectorizer handles elementwise loops. No pass
# here may change a floating-point result: without fast-math flags LLVM never reassociates or fuses.
IR_PIPELINE = ("function(sroa,early-cse,instcombine<no-verify-fixpoint>,simplifycfg,loop-mssa(licm),loop(loop-rotate),"
               "loop-vectorize,instcombine<no-verify-fixpoint>,simplifycfg)")


# Loops with a constant trip count under 16 are vectorized by default only by folding the tail into
# masked loads and stores, and AMD's cores microcode masked stores (a Conv's 10-float pad rows took
# half of a depthwise 7x7 layer's time). From 4 iterations on, plain vectors and a scalar remainder.
SHORT_LOOPS = "-vectorizer-min-trip-count=4"


def optimize_ir(ll: Path, out_bc: Path, target_cpu: str | None, outline_cold: bool = False) -> None:
    # hotcoldsplit moves the blocks behind never-taken branch weights (the instrumented build's cold
    # copies) into functions of their own, `<function>.cold.<n>`, for `split_cold` to take out.
    passes = f"{IR_PIPELINE},hotcoldsplit" if outline_cold else IR_PIPELINE
    run_tool([tool_path("opt"), f"-passes={passes}", SHORT_LOOPS,
              *(["-hotcoldsplit-threshold=-1"] if outline_cold else []),
              f"-mtriple={host_triple()}", *_cpu_flags(target_cpu), str(ll), "-o", str(out_bc)], "opt")


COLD_FUNCTIONS = r"\.cold\.[0-9]+$"  # the names hotcoldsplit gives the functions it outlines


def split_cold(bc: Path) -> tuple[Path, Path | None]:
    """The module without its outlined cold functions, and those functions (None if there are none).

    An instrumented build is mostly cold copies: the loop nests again, with a hook call per site,
    run only for the one unit entry that holds a trial's target. Compiled apart with llc -O0 (fast
    instruction selection and register allocation), one DenseNet-121 part took 7.8-9.6 s of opt and
    llc against 10.8 s at -O2 throughout; the code computes the same IEEE results at any level, and
    a unit entry is 0.03-0.05% of an inference on average, so trials do not notice the slower code."""
    hot, cold = bc.with_suffix(".hot.bc"), bc.with_suffix(".cold.bc")
    proc = subprocess.run([tool_path("llvm-extract"), f"--rfunc={COLD_FUNCTIONS}", str(bc), "-o", str(cold)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        if "doesn't contain" in proc.stderr:
            return bc, None  # nothing was outlined
        raise BuildError(f"llvm-extract failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    run_tool([tool_path("llvm-extract"), "--delete", f"--rfunc={COLD_FUNCTIONS}", str(bc), "-o", str(hot)],
             "llvm-extract")
    return hot, cold


@functools.cache
def host_triple() -> str:
    proc = run_tool([tool_path("llc"), "--version"], "llc --version")
    for line in proc.stdout.splitlines():
        if "Default target:" in line:
            return line.split(":", 1)[1].strip()
    return "x86_64-unknown-linux-gnu"


def llc(ll: Path, obj: Path, opt_level: int = 0, target_cpu: str | None = None) -> None:
    # -fp-contract=off: a separate fmul and fadd stay two roundings (never fused into an FMA).
    run_tool([tool_path("llc"), f"-O{opt_level}", "-filetype=obj", "-relocation-model=pic", "-fp-contract=off",
              *_cpu_flags(target_cpu), str(ll), "-o", str(obj)], "llc")


def runtime_digest() -> str:
    """Content hash of the C runtime: caches of anything linked with it must key on this."""
    digest = hashlib.sha256()
    for name in sorted(p.name for p in SOURCE_DIR.iterdir() if p.suffix in (".c", ".h")):
        digest.update(name.encode() + (SOURCE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def runtime_objects(sources: list[str] = CONTROLLER_SOURCES) -> list[Path]:
    """Compile the C runtime once per content hash (cached under ~/.cache/lltfi-mlir)."""
    cache = Path(os.environ.get("LLTFI_CACHE", Path.home() / ".cache" / "lltfi-mlir"))
    cache = cache / f"runtime-{runtime_digest()}"
    objects = [cache / (Path(s).stem + ".o") for s in sources]
    if all(o.exists() for o in objects):
        return objects
    cache.mkdir(parents=True, exist_ok=True)
    for source, obj in zip(sources, objects):
        tmp = obj.with_suffix(f".{os.getpid()}.tmp.o")
        run_tool([tool_path("cc"), "-O2", "-c", "-I", str(SOURCE_DIR), str(SOURCE_DIR / source), "-o", str(tmp)],
                 f"compiling runtime/{source}")
        os.replace(tmp, obj)  # atomic: parallel builds never see a half-written object
    return objects


def link(objects: list[Path], extra_sources: list[Path], exe: Path, program: bool = False,
         cplusplus: bool = False) -> None:
    """Link the model (or program) object with the cached runtime and the generated glue."""
    runtime = runtime_objects(PROGRAM_SOURCES if program else CONTROLLER_SOURCES)
    linker = tool_path("c++" if cplusplus else "cc")
    # The generated glue is C even when the program is C++ (C linkage, C const semantics).
    glue = ["-x", "c", *map(str, extra_sources), "-x", "none"] if cplusplus else list(map(str, extra_sources))
    run_tool([linker, "-O2", "-I", str(SOURCE_DIR), *glue, *map(str, objects),
              *map(str, runtime), "-o", str(exe), "-lm"], f"linking with {Path(linker).name}")


SPLIT_BYTES = 1 << 20  # modules smaller than this compile faster in one piece

# The header line of a function definition as mlir-translate prints it (the body ends with "}" alone
# on a line): return type, name, parameter list.
_HEADER = re.compile(r"define ([^@]*)@([\w.$]+)(\([^)]*\))[^{]*\{")
_LOCAL = ("internal", "private", "linkonce", "linkonce_odr", "weak", "weak_odr", "available_externally")


def _local_names(text: str) -> set[str]:
    return set(re.findall(rf"^@([\w.$]+) = (?:{'|'.join(_LOCAL)}) ", text, re.M))


def _rename_local(local: set[str], suffix: str, m: re.Match) -> str:
    return f"@{m.group(1)}{suffix}" if m.group(1) in local else m.group(0)


def rename_locals(text: str, suffix: str) -> str:
    """Give the module's local globals names of their own. Modules compiled into one program may
    each hold a copy of the same local constant; cutting the cold copies out (`split_cold`) makes a
    local that both halves use visible, and the names must not clash then."""
    local = _local_names(text)
    return re.sub(r"@([\w.$]+)", functools.partial(_rename_local, local, suffix), text) if local else text


def split_functions(text: str, parts: int) -> list[str] | None:
    """The module's function definitions dealt out to `parts` modules by size (longest first, each
    to the lightest part), every part with the whole rest of the module and a declaration of each
    function another part defines. None when the module has anything this cannot place safely
    (local functions or variables, comdats, quoted names): llvm-split handles those.

    mlir-translate's modules of models hold only external definitions and declarations, so the
    split is textual: no llvm-split parse of the whole module (DenseNet-121: 1.7 s), and the parts
    weigh the same instead of holding the same number of functions."""
    if " comdat" in text or '@"' in text:
        return None
    definitions: list[tuple[int, int, re.Match]] = []  # start, end, header
    rest, at = [], 0
    while (start := text.find("\ndefine ", at)) >= 0:
        start += 1
        end = text.find("\n}\n", start)
        header = _HEADER.fullmatch(text, start, text.find("\n", start))
        if end < 0 or header is None or header.group(1).split()[0] in _LOCAL:
            return None
        rest.append(text[at:start])
        at = end + 3
        definitions.append((start, at, header))
    rest.append(text[at:])
    rest = "".join(rest)
    # Local constants are copied into every part (read-only: a copy each is the same program);
    # local variables are not.
    if len(definitions) < parts or re.search(rf"^@\S+ = (?:{'|'.join(_LOCAL)}) (?!(?:unnamed_addr )?constant )",
                                             rest, re.M):
        return None
    if _local_names(rest) and 'c"' in text:
        return None  # a string could hold a name that rename_locals would change
    loads = [0] * parts
    members: list[list[tuple[int, int, re.Match]]] = [[] for _ in range(parts)]
    for definition in sorted(definitions, key=lambda d: d[1] - d[0], reverse=True):
        lightest = loads.index(min(loads))
        loads[lightest] += definition[1] - definition[0]
        members[lightest].append(definition)
    out = []
    for k, mine in enumerate(members):
        own = {d[2].group(2) for d in mine}
        declarations = "".join(f"declare {h.group(1)}@{h.group(2)}{h.group(3)}\n"
                               for _, _, h in definitions if h.group(2) not in own)
        bodies = "".join(text[a:b] for a, b, _ in sorted(mine, key=lambda d: d[0]))
        out.append(rename_locals(rest + declarations + bodies, f".part{k}"))
    return out


def _split(ll: Path, prefix: Path) -> list[Path]:
    """Partitions of the module for parallel opt/llc (one partition when small or on one core)."""
    jobs = min(os.cpu_count() or 1, 8)
    for stale in prefix.parent.glob(prefix.name + "*"):
        stale.unlink()
    if jobs < 2 or ll.stat().st_size < SPLIT_BYTES:
        return [ll]
    pieces = split_functions(ll.read_text(), jobs)
    if pieces is not None:
        paths = [prefix.parent / f"{prefix.name}{i}.ll" for i in range(jobs)]
        for path, piece in zip(paths, pieces):
            path.write_text(piece)
        return paths
    run_tool([tool_path("llvm-split"), "-j", str(jobs), "--round-robin", "-o", str(prefix), str(ll)], "llvm-split")
    return [prefix.parent / f"{prefix.name}{i}" for i in range(jobs)]


def compile_parts(parts: list[Path], opt_level: int, target_cpu: str | None, cold_at_o0: bool = False,
                  jobs: int | None = None) -> list[Path]:
    """opt, then llc, of each part on `jobs` cores (default: all); with `cold_at_o0`, each part's cold
    copies go to llc -O0 on their own (`split_cold`). Returns the objects."""
    jobs = jobs or os.cpu_count() or 1

    def optimize(part: Path) -> list[tuple[Path, int]]:
        optimized = part.with_suffix(part.suffix + ".opt.bc")
        optimize_ir(part, optimized, target_cpu, outline_cold=cold_at_o0)
        hot, cold = split_cold(optimized) if cold_at_o0 else (optimized, None)
        return [(hot, opt_level)] + ([(cold, 0)] if cold else [])

    def codegen(piece: tuple[Path, int]) -> Path:
        bc, level = piece
        llc(bc, bc.with_suffix(".o"), level, target_cpu)
        return bc.with_suffix(".o")

    if jobs == 1:  # no thread at all (a forked child must not start any: instrument_parts.py)
        return [codegen(piece) for part in parts for piece in optimize(part)]
    with ThreadPoolExecutor(min(len(parts), jobs)) as pool:
        pieces = [piece for pieces in pool.map(optimize, parts) for piece in pieces]
    # Longest first (-O2 takes about 3x the time of -O0 per byte of bitcode).
    pieces.sort(key=lambda piece: -piece[0].stat().st_size * (3 if piece[1] else 1))
    with ThreadPoolExecutor(min(len(pieces), jobs)) as pool:
        return list(pool.map(codegen, pieces))


def build_native(llvm_mlir: Path, out_dir: Path, stem: str, extra_sources: list[Path],
                 opt_level: int = 0, program: bool = False, cplusplus: bool = False,
                 target_cpu: str | None = None, ir_opt: bool = False,
                 translated: float | None = None, cold_at_o0: bool = False) -> dict[str, float]:
    """Run the backend stages (translate unless `translated` gives its seconds, optionally opt,
    llc, link); returns seconds per stage. `cold_at_o0` (with `ir_opt`): compile the cold copies of
    an instrumented build apart, at -O0 (`split_cold`)."""
    seconds: dict[str, float] = {}
    ll, obj, exe = out_dir / f"{stem}.ll", out_dir / f"{stem}.o", out_dir / stem
    start = time.perf_counter()
    if translated is None:
        translate(llvm_mlir, ll)
        seconds["translate"] = time.perf_counter() - start
    else:
        seconds["translate"] = translated
    objects = [obj]
    if ir_opt:
        start = time.perf_counter()
        parts = _split(ll, out_dir / f"{stem}.part")

        objects = compile_parts(parts, opt_level, target_cpu, cold_at_o0)
        seconds["opt+llc"] = time.perf_counter() - start
    else:
        start = time.perf_counter()
        llc(ll, obj, opt_level, target_cpu)
        seconds["llc"] = time.perf_counter() - start
    start = time.perf_counter()
    link(objects, extra_sources, exe, program, cplusplus)
    seconds["link"] = time.perf_counter() - start
    return seconds
