"""`lltfi-mlir sites BUILD`: every static instruction that can be a fault site, with its index.

The index is this tool's static numbering (LLFI's llfiindex): instructions in module order,
function by function, blocks in reverse post-order, counting every LLVM instruction the selection
looks at. `customInstselector: llfiindex` with `-injecttoindex=N`, `fi_index: N` and the native
`select: {instructions: [N]}` select by it. With a config, each row says whether it is selected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mlir import ir

from .build import Build
from .dialect_passes.instrument_sites import InstrumentSitesPass, node_info_from_manifest
from .dialect_passes.sites import KNOWN_OPCODES, SiteSelector

EVERYTHING = SiteSelector(opcodes=KNOWN_OPCODES, require_operator=False, register="all")


@dataclass(frozen=True)
class Instruction:
    """One static instruction: where it is, and which of its registers can be corrupted."""

    index: int
    opcode: str
    type: str
    registers: tuple[str, ...]
    function: str
    source: str | None
    node: str | None
    op_type: str | None
    layer: int | None
    selected: tuple[str, ...] = ()  # registers the config selects


def _select(text: str, selector: SiteSelector, node_info) -> list:
    with ir.Context():
        module = ir.Module.parse(text)
        functions, _ = InstrumentSitesPass(selector, node_info)._select(module, False)
        return [site for f in functions for sites in f.per_block.values() for _, site in sites]


def list_instructions(build: Build, selector: SiteSelector | None = None) -> list[Instruction]:
    """Every instruction with a register of a scalar or vector type; `selector` marks the selected."""
    text = (build.directory / "model.llvm.mlir").read_text()
    node_info = node_info_from_manifest(build.manifest)
    by_index: dict[int, Instruction] = {}
    for site in _select(text, EVERYTHING, node_info):
        known = by_index.get(site.instruction)
        if known is None:
            by_index[site.instruction] = Instruction(site.instruction, site.opcode, site.type, (site.register,),
                                                     site.function, site.source, site.node, site.op_type,
                                                     site.layer)
        else:
            by_index[site.instruction] = replace(known, registers=known.registers + (site.register,))
    if selector is not None:
        for site in _select(text, selector, node_info):
            known = by_index.get(site.instruction)
            if known is not None:
                by_index[site.instruction] = replace(known, selected=known.selected + (site.register,))
    return [by_index[i] for i in sorted(by_index)]
