"""mlir-translate -> .ll, llc -> .o, cc -> executable, each a separate timed stage."""

from __future__ import annotations

import time
from pathlib import Path

from ..runtime import CONTROLLER_SOURCES, SOURCE_DIR
from .toolchain import run_tool, tool_path


def translate(llvm_mlir: Path, out_ll: Path) -> None:
    run_tool([tool_path("mlir-translate"), "--mlir-to-llvmir", str(llvm_mlir), "-o", str(out_ll)],
             "mlir-translate")


def llc(ll: Path, obj: Path, opt_level: int = 0) -> None:
    run_tool([tool_path("llc"), f"-O{opt_level}", "-filetype=obj", "-relocation-model=pic",
              str(ll), "-o", str(obj)], "llc")


def link(objects: list[Path], extra_sources: list[Path], exe: Path) -> None:
    """Link the model object with the controller; the C runtime is compiled here each time (small)."""
    sources = [SOURCE_DIR / s for s in CONTROLLER_SOURCES] + list(extra_sources)
    run_tool([tool_path("cc"), "-O2", "-I", str(SOURCE_DIR), *map(str, sources), *map(str, objects),
              "-o", str(exe), "-lm"], "linking with cc")


def build_native(llvm_mlir: Path, out_dir: Path, stem: str, extra_sources: list[Path],
                 opt_level: int = 0) -> dict[str, float]:
    """Run the three backend stages; returns seconds per stage."""
    seconds: dict[str, float] = {}
    ll, obj, exe = out_dir / f"{stem}.ll", out_dir / f"{stem}.o", out_dir / stem
    start = time.perf_counter()
    translate(llvm_mlir, ll)
    seconds["translate"] = time.perf_counter() - start
    start = time.perf_counter()
    llc(ll, obj, opt_level)
    seconds["llc"] = time.perf_counter() - start
    start = time.perf_counter()
    link([obj], extra_sources, exe)
    seconds["link"] = time.perf_counter() - start
    return seconds
