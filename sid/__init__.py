"""Selective instruction duplication: harden chosen operators against transient faults.

AID duplicates each selected arithmetic instruction, ACD duplicates whole chains and compares only
their last value, OD duplicates ONNX operator nodes. Corrections: `and` (bitwise AND of the two
values: undoes any 0->1 flip in either copy), `min` (the smaller value; NaN propagates), or `none`
(detection only: count mismatches).
"""

from .duplicate_instructions import DuplicateInstructionsPass, SidResult
from .operator_duplication import duplicate_operators

__all__ = ["DuplicateInstructionsPass", "SidResult", "duplicate_operators"]
