"""OD: duplicate chosen ONNX operator nodes and keep the smaller output (ONNX `Min`).

Done on the ONNX graph with onnx-graphsurgeon, before the normal compile pipeline. ONNX has no
bitwise AND on floats, so OD offers the `min` correction only.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from lltfi_mlir.errors import UsageError


def duplicate_operators(model: onnx.ModelProto, op_types: frozenset[str] = frozenset(),
                        names: frozenset[str] = frozenset(), correction: str = "min") -> tuple[onnx.ModelProto, int]:
    """Return the hardened model and how many nodes were duplicated."""
    if correction != "min":
        raise UsageError(f"--sid od supports --correct min only (got {correction!r}): ONNX cannot AND float bits")
    graph = gs.import_onnx(model)
    chosen = [n for n in graph.nodes
              if (not op_types or n.op in op_types) and (not names or n.name in names) and len(n.outputs) == 1]
    for node in chosen:
        out = node.outputs[0]
        original = gs.Variable(f"{out.name}__od_a", dtype=out.dtype, shape=out.shape)
        copy = gs.Variable(f"{out.name}__od_b", dtype=out.dtype, shape=out.shape)
        twin = gs.Node(op=node.op, name=f"{node.name}__od_dup", attrs=dict(node.attrs), inputs=list(node.inputs),
                       outputs=[copy], domain=node.domain)
        node.outputs = [original]
        combine = gs.Node(op="Min", name=f"{node.name}__od_min", inputs=[original, copy], outputs=[out])
        graph.nodes.extend([twin, combine])
    graph.toposort()
    hardened = gs.export_onnx(graph)
    del hardened.opset_import[:]
    hardened.opset_import.extend(model.opset_import)
    hardened.ir_version = model.ir_version
    return hardened, len(chosen)
