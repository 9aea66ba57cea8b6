"""A build's LLVM-dialect module on disk: the readable text, and a bytecode copy to parse fast.

`model.llvm.mlir` is what a researcher reads and what every later step starts from. Parsing that
text is a large part of instrumenting a model (DenseNet-121: 1.3 s, against 0.35 s for the same
module as MLIR bytecode), so compile also writes `model.llvm.<digest>.mlirbc`, named after the
text's digest: a text edited or replaced afterwards simply has no bytecode copy, and is parsed.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from mlir import ir

STEM = "model"


def _bytecode_path(directory: Path, text: bytes) -> Path:
    return directory / f"{STEM}.llvm.{hashlib.sha256(text).hexdigest()[:16]}.mlirbc"


def write_llvm_module(module: ir.Module, directory: Path) -> Path:
    """Prints the module (with locations) to `model.llvm.mlir`, and its bytecode copy beside it."""
    path = directory / f"{STEM}.llvm.mlir"
    with open(path, "w") as handle:
        module.operation.print(file=handle, enable_debug_info=True)
    for stale in directory.glob(f"{STEM}.llvm.*.mlirbc"):
        stale.unlink()
    target = _bytecode_path(directory, path.read_bytes())
    staged = target.with_suffix(".tmp")
    with open(staged, "wb") as handle:
        module.operation.write_bytecode(handle)
    staged.replace(target)
    return path


def read_llvm_module(directory: Path, text: bytes | None = None) -> ir.Module:
    """Parses the build's module in the current context: from the bytecode copy of exactly this
    text when there is one (a copy another MLIR version cannot read is ignored), else the text."""
    text = (directory / f"{STEM}.llvm.mlir").read_bytes() if text is None else text
    copy = _bytecode_path(directory, text)
    if copy.exists():
        with contextlib.suppress(ir.MLIRError, ValueError, RuntimeError):
            return ir.Module.parse(copy.read_bytes())
    return ir.Module.parse(text.decode())
