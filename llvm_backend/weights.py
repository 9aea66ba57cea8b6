"""Keep weights out of the textual IR: large constant globals become external symbols whose
bytes are assembled straight from the numpy buffers with `.incbin`.

Without this a VGG16 turns into gigabytes of `.ll` text; with it the `.ll` stays readable and
the weight bytes go from numpy to the object file without passing through any text form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlir import ir

_RESOURCE = re.compile(r"dense_resource<([^>]+)>")


@dataclass
class ExternalizedWeights:
    symbols: dict[str, str]  # global symbol -> resource handle
    nbytes: int


def externalize_weights(module: ir.Module, arrays: dict[str, np.ndarray]) -> ExternalizedWeights:
    """Turn `llvm.mlir.global ... (dense_resource<h>)` into external declarations, in place."""
    symbols: dict[str, str] = {}
    nbytes = 0
    for op in module.body.operations:
        if op.operation.name != "llvm.mlir.global" or "value" not in op.attributes:
            continue
        match = _RESOURCE.match(str(op.attributes["value"]))
        if not match or match.group(1) not in arrays:
            continue
        handle = match.group(1)
        symbol = ir.StringAttr(op.attributes["sym_name"]).value
        del op.attributes["value"]
        op.attributes["linkage"] = ir.Attribute.parse("#llvm.linkage<external>")
        symbols[symbol] = handle
        nbytes += arrays[handle].nbytes
    return ExternalizedWeights(symbols, nbytes)


def write_weights_assembly(weights: ExternalizedWeights, arrays: dict[str, np.ndarray],
                           out_dir: Path) -> Path:
    """Write one .bin per weight and a `weights.S` that defines every external symbol."""
    bin_dir = out_dir / "weights"
    bin_dir.mkdir(parents=True, exist_ok=True)
    lines = ["\t.section .rodata"]
    for symbol, handle in sorted(weights.symbols.items()):
        path = bin_dir / f"{handle}.bin"
        np.ascontiguousarray(arrays[handle], dtype=np.float32).tofile(path)
        lines += [f"\t.globl {symbol}", "\t.p2align 6", f"{symbol}:", f'\t.incbin "{path.resolve()}"']
    lines.append('\t.section .note.GNU-stack,"",@progbits')
    asm = out_dir / "weights.S"
    asm.write_text("\n".join(lines) + "\n")
    return asm
