"""Give the body ops of linalg named ops (conv_2d_*, pooling_*, matmul) their op's location.

Named ops build their region with `loc(unknown)`; after lowering, every fmul/fadd of such a
convolution would lose its ONNX operator and no selection by operator could reach it. The
importer here builds generic ops with located bodies, but modules from other frontends may not.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir


@dataclass(frozen=True)
class PassResult:
    changed: bool
    ops_relocated: int = 0


def _is_unknown(loc: ir.Location) -> bool:
    return str(loc) == "loc(unknown)"


@dataclass(frozen=True)
class PropagateNamedOpLocationsPass:
    name = "propagate-named-op-locations"

    def apply(self, module: ir.Module) -> PassResult:
        targets: list[tuple[ir.Operation, ir.Location]] = []

        def collect(op: ir.Operation) -> ir.WalkResult:
            if op.name.startswith("linalg.") and not _is_unknown(op.location):
                for region in op.regions:
                    for block in region.blocks:
                        for inner in block.operations:
                            if _is_unknown(inner.location):
                                targets.append((inner.operation, op.location))
            return ir.WalkResult.ADVANCE

        module.operation.walk(collect)
        for inner, loc in targets:
            inner.location = loc
        return PassResult(changed=bool(targets), ops_relocated=len(targets))
