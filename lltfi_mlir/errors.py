"""One exception tree for everything the user can get wrong or the toolchain can refuse.

Only the CLI's `main` catches these; it prints the message on one line and exits with `exit_code`.
"""

from __future__ import annotations


class LltfiError(Exception):
    """Base of every error the tool reports to the user."""

    exit_code = 1


class UsageError(LltfiError):
    """Bad input from the user: a file, an option, a shape, a config key."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or option that cannot be accepted."""


class ModelImportError(UsageError):
    """The ONNX model cannot be imported (malformed, unsupported operator, non-float tensor)."""

    def __init__(self, message: str, node: str | None = None, op_type: str | None = None,
                 opset: int | None = None) -> None:
        where = ""
        if node is not None:
            where = f"node '{node}' ({op_type}, opset {opset}): "
        super().__init__(where + message)
        self.node, self.op_type, self.opset = node, op_type, opset


class PassError(LltfiError):
    """An MLIR pass pipeline failed; the message names the pass and a command that reproduces it."""


class BuildError(LltfiError):
    """A backend tool (mlir-translate, llc, cc) failed."""


class RunError(LltfiError):
    """The compiled program failed or was given inputs it cannot take."""


class InputError(RunError, UsageError):
    """An input array of the wrong shape or dtype, or an unreadable input file."""

    exit_code = 2
