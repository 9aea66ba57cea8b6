"""A builtin.module seen the same way whether it arrives as an `ir.Module` or as the `ir.Operation`
that an MLIR PassManager hands to a Python-defined pass."""

from __future__ import annotations

from dataclasses import dataclass

from mlir import ir


@dataclass(frozen=True)
class ModuleView:
    """The three things the passes use of a module: its operation, its body block and its context."""

    operation: ir.Operation

    @property
    def body(self) -> ir.Block:
        return self.operation.regions[0].blocks[0]

    @property
    def context(self) -> ir.Context:
        return self.operation.context


def module_view(target: ir.Module | ir.Operation | ir.OpView) -> ModuleView:
    """Accept an `ir.Module`, a builtin.module operation or its OpView; refuse anything else."""
    operation = target.operation
    if operation.name != "builtin.module":
        raise TypeError(f"expected a builtin.module, got {operation.name}")
    return ModuleView(operation)
