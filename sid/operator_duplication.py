"""OD: duplicate chosen ONNX operator nodes and keep the smaller output (ONNX `Min`).

Done on the ONNX graph with onnx-graphsurgeon, before the normal compile pipeline. ONNX has no
bitwise AND on floats, so OD offers the `min` correction only.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs
from lltfi_mlir.dialect_passes.sites import OD_COMBINE, OD_DUPLICATE

from lltfi_mlir.errors import UsageError


def layer_names(model: onnx.ModelProto, layers: frozenset[tuple[str, int]]) -> frozenset[str]:
    """Names of the nodes that (op type, N) pairs pick: the N-th node of that type in graph order,
    1-based as LLTFI's -layerNo and the manifest's layer numbers; N = 0 picks every node of the type."""
    seen: dict[str, int] = {}
    picked = set()
    for node in model.graph.node:
        seen[node.op_type] = seen.get(node.op_type, 0) + 1
        if any(t == node.op_type and n in (0, seen[node.op_type]) for t, n in layers):
            picked.add(node.name)
    return frozenset(picked)


def duplicate_operators(model: onnx.ModelProto, op_types: frozenset[str] = frozenset(),
                        names: frozenset[str] = frozenset(), correction: str = "min",
                        layers: frozenset[tuple[str, int]] = frozenset()) -> tuple[onnx.ModelProto, int]:
    """Return the hardened model and how many nodes were duplicated (those matching every given
    filter: op types, node names, layers)."""
    if correction != "min":
        raise UsageError(f"--sid od supports --correct min only (got {correction!r}): ONNX cannot AND float bits")
    in_layers = layer_names(model, layers) if layers else None
    graph = gs.import_onnx(model)
    chosen = [n for n in graph.nodes
              if (not op_types or n.op in op_types) and (not names or n.name in names)
              and (in_layers is None or n.name in in_layers) and len(n.outputs) == 1]
    for node in chosen:
        out = node.outputs[0]
        original = gs.Variable(f"{out.name}__od_a", dtype=out.dtype, shape=out.shape)
        copy = gs.Variable(f"{out.name}__od_b", dtype=out.dtype, shape=out.shape)
        twin = gs.Node(op=node.op, name=f"{node.name}{OD_DUPLICATE}", attrs=dict(node.attrs), inputs=list(node.inputs),
                       outputs=[copy], domain=node.domain)
        node.outputs = [original]
        combine = gs.Node(op="Min", name=f"{node.name}{OD_COMBINE}", inputs=[original, copy], outputs=[out])
        graph.nodes.extend([twin, combine])
    graph.toposort()
    hardened = gs.export_onnx(graph)
    del hardened.opset_import[:]
    hardened.opset_import.extend(model.opset_import)
    hardened.ir_version = model.ir_version
    return hardened, len(chosen)
