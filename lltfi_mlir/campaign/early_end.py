"""When a campaign may end masked trials early, and why not when it may not.

A trial child compares each operator's outputs with a golden record (runtime/boundaries.h) and
ends as benign once no corrupted tensor is still to be read. That is exact only if a fault can
change nothing but floating-point values that the operators then store in their outputs: a
corrupted pointer, index, load, store, branch or call could write elsewhere or change what runs.
A floating-point value that an operator turns into an address (Resize's coordinates, a Cast to
indices) only selects what is read, except in the scatter operators, which write through their
indices: models where those indices are computed at run time run every trial to the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..build import Build
from ..dialect_passes.sites import FP_ARITH, FP_INTRINSICS
from ..instrument import InstrumentedBuild
from .config import CampaignConfig

VALUE_ONLY = FP_ARITH | FP_INTRINSICS
# Operators that write through indices they read at run time: a corrupted index would write outside
# the operator's output, where no boundary compares it.
INDEXED_WRITES = frozenset({"ScatterND", "ScatterElements", "Scatter"})


@dataclass(frozen=True)
class EarlyEnd:
    enabled: bool
    reason: str  # why it is on or off, for the database and the summary


def early_end_policy(build: Build, config: CampaignConfig, instrumented: InstrumentedBuild) -> EarlyEnd:
    if build.is_program:
        return EarlyEnd(False, "off: C/C++ programs have no operator boundaries")
    if config.target != "instructions":
        return EarlyEnd(False, f"off: {config.target} faults stay in memory for the whole run")
    if build.manifest.get("sid"):
        return EarlyEnd(False, "off: hardened builds keep state outside the operators' outputs")
    if not instrumented.boundaries:
        return EarlyEnd(False, "off: this build has no operator boundaries (reference codegen)")
    if config.max_trace:
        return EarlyEnd(False, "off: max_trace records the instances after the fault")
    nodes = build.manifest.get("nodes", [])
    computed = {o["name"] for n in nodes for o in n.get("outputs", [])}
    writers = sorted({n["op_type"] for n in nodes if n["op_type"] in INDEXED_WRITES
                      and len(n.get("inputs", [])) > 1 and n["inputs"][1] in computed})
    if writers:
        return EarlyEnd(False, f"off: {', '.join(writers)} writes through indices computed at run time")
    unsafe = sorted({s.opcode for s in instrumented.sites
                     if s.opcode not in VALUE_ONLY and not (config.level == "operator" and s.opcode == "call")})
    if unsafe:
        return EarlyEnd(False, f"off: the selection includes {', '.join(unsafe)} (a fault there may change more "
                               "than floating-point values)")
    return EarlyEnd(True, f"on: exact for this selection (floating-point values only); "
                          f"{instrumented.boundaries} operator boundaries")
