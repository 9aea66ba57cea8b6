"""What an operator boundary tells the campaign: each outlined node's outputs, their sizes and their
last readers. The instrumented build hands these to `lltfi_node_end` (runtime/boundaries.h), which
ends a trial early once no corrupted tensor is still to be read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import onnx
from mlir import ir

from .scalars import width

ATTRIBUTE = "lltfi.boundary"  # on node_<i>: [onnx node index, (nbytes, element bytes, last_use) per result]
FOREVER = 1 << 62  # read after the last node: graph outputs (compared at the end) and traced tensors


def last_uses(nodes: Sequence[onnx.NodeProto], views: Iterable[str], kept: Iterable[str]) -> dict[str, int]:
    """ONNX node index of each tensor's last reader. A view (Reshape, Flatten, ...) shares its
    input's buffer, so reading the view reads the source: views are followed to their root."""
    views = frozenset(views)
    root: dict[str, str] = {}

    def find(name: str) -> str:
        while name in root:
            name = root[name]
        return name

    last: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if node.op_type in views:
            if node.input and node.input[0] and node.output and node.output[0]:
                root[node.output[0]] = find(node.input[0])
            continue
        for name in node.input:
            if name:
                key = find(name)
                last[key] = max(last.get(key, -1), index)
    for name in kept:
        last[find(name)] = FOREVER
    return {name: last[find(name)] for name in {*last, *root} if find(name) in last}


def element_bytes(element_type: ir.Type) -> int:
    if isinstance(element_type, ir.IndexType):
        return 8
    return max(1, (width(element_type) + 7) // 8)  # i1 is stored in a byte


def boundary_attribute(node_index: int, results: Sequence[tuple[str, ir.Value]],
                       last: dict[str, int]) -> ir.Attribute:
    """The attribute of a node function returning `results` ((tensor name, value) in result order)."""
    values = [node_index]
    for name, value in results:
        tensor = ir.RankedTensorType(value.type)
        count = 1
        for dim in tensor.shape:
            count *= dim
        size = element_bytes(tensor.element_type)
        values += [count * size, size, last.get(name, node_index)]
    return ir.DenseI64ArrayAttr.get(values)
