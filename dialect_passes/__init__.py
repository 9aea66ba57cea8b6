"""Passes over MLIR modules: lowering to the LLVM dialect, and (later) site selection and instrumentation.

Every pass takes an `mlir.ir.Module` and rewrites it in place, so the passes can be embedded in any
compiler pipeline that holds a module in the LLVM dialect, not only driven by the CLI.
"""

from .lowering import LoweringResult, lower_to_llvm
from .named_op_locations import PropagateNamedOpLocationsPass

__all__ = ["LoweringResult", "PropagateNamedOpLocationsPass", "lower_to_llvm"]
