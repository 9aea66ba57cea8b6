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

from .glue import quoted_string

_RESOURCE = re.compile(r"dense_resource<([^>]+)>")
_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    """Write one .bin per weight and a `weights.S` that defines every external symbol. The `.incbin`
    paths are relative to `out_dir` (assemble with `-I out_dir`): a build folder can be moved."""
    bin_dir = out_dir / "weights"
    bin_dir.mkdir(parents=True, exist_ok=True)
    lines = ["\t.section .rodata"]
    sizes: dict[str, int] = {}
    for symbol, handle in sorted(weights.symbols.items()):
        path = bin_dir / f"{handle}.bin"
        data = _stored(arrays[handle])
        data.tofile(path)
        sizes[symbol] = data.nbytes
        if not _SYMBOL.fullmatch(symbol):  # MLIR's own names; nothing else may enter weights.S
            raise ValueError(f"weight symbol {symbol!r} is not an assembler identifier")
        lines += [f"\t.globl {symbol}", "\t.p2align 6", f"{symbol}:",
                  f"\t.incbin {quoted_string(f'weights/{path.name}')}"]
    # The table that memory faults address weights by (campaign/memory.py, runtime/memory_faults.h):
    # entry i is the i-th symbol in sorted order, as weight_order() lists them; names never reach C.
    order = weight_order(weights)
    lines += ['\t.section .data.rel.ro,"aw"', "\t.globl lltfi_weight_table", "\t.p2align 3", "lltfi_weight_table:"]
    for symbol in order:
        lines += [f"\t.quad {symbol}", f"\t.quad {sizes[symbol]}"]
    lines += ["\t.globl lltfi_num_weights", "\t.p2align 3", "lltfi_num_weights:", f"\t.quad {len(order)}"]
    lines.append('\t.section .note.GNU-stack,"",@progbits')
    asm = out_dir / "weights.S"
    asm.write_text("\n".join(lines) + "\n")
    return asm


def _stored(array: np.ndarray) -> np.ndarray:
    """The bytes a weight symbol holds: the constant's own element type (float32 for weights). A
    lazily packed constant (frontend/builders.ColumnPanels) writes itself."""
    return array if hasattr(array, "panels") else np.ascontiguousarray(array)


def weight_order(weights: ExternalizedWeights) -> list[str]:
    """The symbols in the order of `lltfi_weight_table` (the manifest's "weights" list)."""
    return sorted(weights.symbols)


def weight_table(weights: ExternalizedWeights, arrays: dict[str, np.ndarray],
                 sources: dict[str, tuple[str, str | None]], readers: dict[str, list[str]]) -> list[dict]:
    """The manifest's "weights": entry i describes `lltfi_weight_table[i]` for memory faults. `sources`:
    handle -> (tensor name, node that materialised it); `readers`: graph tensor -> nodes reading it."""
    table = []
    for symbol in weight_order(weights):
        handle = weights.symbols[symbol]
        data = _stored(arrays[handle])
        name, owner = sources.get(handle, (handle, None))
        entry = {"symbol": symbol, "tensor": name, "shape": list(data.shape), "dtype": data.dtype.name,
                 "itemsize": data.itemsize, "count": int(data.size),
                 "readers": readers.get(name) or ([owner] if owner else [])}
        if hasattr(data, "panels"):  # stored as column panels of B (K, N): campaign/memory.py
            entry["panels"] = {"width": data.width, "k": data.b_kn.shape[0], "n": data.b_kn.shape[1],
                               "transposed": data.transposed}
        table.append(entry)
    return table
