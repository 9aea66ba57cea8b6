"""The lltfi passes as MLIR passes: added to a `PassManager` from Python, or named in a pipeline string
next to upstream passes.

    lltfi-sid{technique=aid|acd correct=and|min|none [opcodes=...] [nodes=...] [functions=...] [manifest=...]}
    lltfi-instrument{[opcodes=fmul,fadd] [exclude-opcodes=...] [operators=...] [nodes=...] [layers=Conv:1]
                     [functions=...] [exclude-functions=...] [register=dst] [sources=x.c] [lines=10,20]
                     [require-operator=false] [manifest=build/manifest.json]}

`manifest=` reads an ONNX build's node table, which `operators` and `layers` select by.

The bindings run Python-defined passes (`PassManager.add(callable, name=...)`) but cannot register
them by name, so `pass_manager(text)` splits a pipeline string itself: upstream elements are added
as text, lltfi elements as Python passes, in order, in one PassManager. Each lltfi pass verifies
the IR it receives and the IR it leaves, and reports a failure as an MLIR error diagnostic at the
offending location (the PassManager then fails with it). What each application did is kept on the
pass object (`results`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlir import ir, passmanager

from ..errors import PassError, UsageError
from .instrument_sites import InstrumentResult, InstrumentSitesPass
from .sites import GROUPS, KNOWN_OPCODES, REGISTERS, NodeInfo, SiteSelector

SID_PASS = "lltfi-sid"
INSTRUMENT_PASS = "lltfi-instrument"
PASS_NAMES = (SID_PASS, INSTRUMENT_PASS)


class PassFailure(PassError):
    """A pass refused its input; `location` is where (the module's location when None)."""

    def __init__(self, message: str, location: ir.Location | None = None) -> None:
        super().__init__(message)
        self.location = location


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip() for v in value.split(",") if v.strip())


def _opcodes(value: str, option: str) -> frozenset[str]:
    out: set[str] = set()
    for name in _names(value):
        if name in GROUPS:
            out |= GROUPS[name]
        elif name.lower() in KNOWN_OPCODES:
            out.add(name.lower())
        else:
            raise UsageError(f"{option}={value}: unknown opcode '{name}' (groups: {', '.join(GROUPS)})")
    return frozenset(out)


def _bool(value: str, option: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise UsageError(f"{option}={value}: expected true or false")
    return value.lower() in ("true", "1")


def _layers(value: str, option: str) -> frozenset[tuple[str, int]]:
    pairs = set()
    for item in _names(value):
        op_type, _, number = item.partition(":")
        if not number.isdigit():
            raise UsageError(f"{option}: '{item}' must look like Conv:1 (0 = every Conv)")
        pairs.add((op_type, int(number)))
    return frozenset(pairs)


def _lines(value: str, option: str) -> tuple[int, int]:
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > int(parts[1]):
        raise UsageError(f"{option}={value}: expected first,last source lines")
    return int(parts[0]), int(parts[1])


# Pass option -> (SiteSelector field, parser); the native config's `select` keys, dashed as MLIR spells them.
_SELECT_OPTIONS: dict[str, tuple[str, Callable]] = {
    "opcodes": ("opcodes", _opcodes),
    "exclude-opcodes": ("exclude_opcodes", _opcodes),
    "operators": ("operators", lambda v, o: _names(v)),
    "exclude-operators": ("exclude_operators", lambda v, o: _names(v)),
    "nodes": ("nodes", lambda v, o: _names(v)),
    "exclude-nodes": ("exclude_nodes", lambda v, o: _names(v)),
    "layers": ("layers", _layers),
    "functions": ("functions", lambda v, o: _names(v)),
    "exclude-functions": ("exclude_functions", lambda v, o: _names(v)),
    "sources": ("sources", lambda v, o: _names(v)),
    "lines": ("lines", _lines),
    "require-operator": ("require_operator", _bool),
}


def _report(failure: Exception, module: ir.Operation, pass_name: str) -> None:
    """Turn a failure into error diagnostics at their locations (the PassManager collects them)."""
    if isinstance(failure, ir.MLIRError):
        diagnostics = getattr(failure, "error_diagnostics", None) or []
        for diagnostic in diagnostics:
            diagnostic.location.emit_error(f"{pass_name}: {diagnostic.message}")
        if not diagnostics:
            module.location.emit_error(f"{pass_name}: {' '.join(str(failure).split())}")
        return
    location = getattr(failure, "location", None) or module.location
    location.emit_error(str(failure) if str(failure).startswith(pass_name) else f"{pass_name}: {failure}")


@dataclass
class _LltfiPass:
    """Common frame: verify the input, apply, verify the output; failures become diagnostics."""

    name = ""
    results: list = field(default_factory=list, init=False, repr=False, compare=False)

    def apply(self, module: ir.Operation):  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, op: ir.Operation, pass_: object) -> None:
        module = op.operation
        try:
            try:
                module.verify()
            except ir.MLIRError as exc:
                raise _Stage("input does not verify", exc) from None
            self.results.append(self.apply(module))
            try:
                module.verify()
            except ir.MLIRError as exc:
                raise _Stage("produced IR that does not verify (please report)", exc) from None
        except _Stage as stage:
            module.location.emit_error(f"{self.name}: {stage.what}")
            _report(stage.cause, module, self.name)
            pass_.signal_pass_failure()
        except (PassError, UsageError, ir.MLIRError) as exc:
            _report(exc, module, self.name)
            pass_.signal_pass_failure()

    def add_to(self, pm: passmanager.PassManager) -> None:
        """Append this pass to `pm` (any pipeline position, next to upstream passes)."""
        pm.add(self, name=self.name, argument=self.name, description=(self.__doc__ or "").split("\n")[0])


class _Stage(Exception):
    def __init__(self, what: str, cause: Exception) -> None:
        super().__init__(what)
        self.what, self.cause = what, cause


@dataclass
class SidPass(_LltfiPass):
    """Selective instruction duplication (AID or ACD, corrections and/min/none) as an MLIR pass."""

    name = SID_PASS
    technique: str = "aid"
    correct: str = "and"
    # Default: floating-point and integer arithmetic anywhere (a module has no ONNX operators).
    selector: SiteSelector | None = None
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)

    def apply(self, module: ir.Operation):
        from lltfi_mlir.sid.duplicate_instructions import ARITHMETIC, INT_ARITHMETIC, DuplicateInstructionsPass

        selector = self.selector or SiteSelector(opcodes=ARITHMETIC | INT_ARITHMETIC, require_operator=False)
        return DuplicateInstructionsPass(self.technique, self.correct, selector, self.node_info).apply(module)


@dataclass
class InstrumentPass(_LltfiPass):
    """Fault-site selection and instrumentation (hooks, versioned loop nests and blocks) as an MLIR pass."""

    name = INSTRUMENT_PASS
    selector: SiteSelector = field(default_factory=lambda: SiteSelector(require_operator=False))
    node_info: Mapping[str, NodeInfo] = field(default_factory=dict)

    def apply(self, module: ir.Operation) -> InstrumentResult:
        result = InstrumentSitesPass(self.selector, self.node_info).apply(module)
        if not result.sites:
            raise PassFailure(f"{self.name}: the selection matches no instruction of the module")
        return result


def _options(text: str, name: str) -> dict[str, str]:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{name}{{{text}}}: {exc}") from None
    options: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not value:
            raise UsageError(f"{name}: option '{word}' must look like key=value")
        options[key.replace("_", "-")] = value
    return options


def _node_info(path: str) -> dict[str, NodeInfo]:
    """The ONNX node table of a build (its manifest.json): what `operators` and `layers` select by."""
    from .instrument_sites import node_info_from_manifest

    try:
        return node_info_from_manifest(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"manifest={path}: cannot read a build's manifest.json ({exc})") from None


def make_pass(name: str, options: Mapping[str, str] | None = None) -> _LltfiPass:
    """`lltfi-sid` / `lltfi-instrument` with options as they are written in a pipeline string."""
    options = dict(options or {})
    node_info = _node_info(options.pop("manifest")) if "manifest" in options else {}
    if name == SID_PASS:
        from lltfi_mlir.sid.duplicate_instructions import ARITHMETIC, CORRECTIONS, INT_ARITHMETIC, TECHNIQUES

        technique = options.pop("technique", "aid")
        correct = options.pop("correct", "and")
        if technique not in TECHNIQUES:
            raise UsageError(f"{name}: technique={technique}: use one of {', '.join(TECHNIQUES)}")
        if correct not in CORRECTIONS:
            raise UsageError(f"{name}: correct={correct}: use one of {', '.join(CORRECTIONS)}")
        selection = {"opcodes": ARITHMETIC | INT_ARITHMETIC, "require_operator": False}
        allowed = ("opcodes", "nodes", "operators", "layers", "functions", "exclude-functions", "sources", "lines",
                   "manifest")
        for key, value in options.items():
            if key not in allowed:
                raise UsageError(f"{name}: unknown option '{key}' (options: technique, correct, {', '.join(allowed)})")
            attr, parse = _SELECT_OPTIONS[key]
            selection[attr] = parse(value, key)
        return SidPass(technique, correct, SiteSelector(**selection), node_info)
    if name == INSTRUMENT_PASS:
        selection: dict = {"require_operator": False}
        for key, value in options.items():
            if key == "register":
                if value not in REGISTERS:
                    raise UsageError(f"{name}: register={value}: use one of {', '.join(REGISTERS)}")
                selection["register"] = value
            elif key in _SELECT_OPTIONS:
                attr, parse = _SELECT_OPTIONS[key]
                selection[attr] = parse(value, key)
            else:
                known = ", ".join([*_SELECT_OPTIONS, "register", "manifest"])
                raise UsageError(f"{name}: unknown option '{key}' (options: {known})")
        return InstrumentPass(SiteSelector(**selection), node_info)
    raise UsageError(f"unknown lltfi pass '{name}' (lltfi passes: {', '.join(PASS_NAMES)})")


def split_elements(text: str) -> list[str]:
    """Top-level elements of a pipeline string (`builtin.module(...)` unwrapped), commas inside
    parentheses and braces kept."""
    text = text.strip()
    if text.startswith("builtin.module(") and text.endswith(")"):
        text = text[len("builtin.module("):-1]
    elements, depth, start = [], 0, 0
    for index, ch in enumerate(text):
        if ch in "({":
            depth += 1
        elif ch in ")}":
            depth -= 1
            if depth < 0:
                raise UsageError(f"pipeline: unbalanced '{ch}' at character {index + 1}")
        elif ch == "," and depth == 0:
            elements.append(text[start:index].strip())
            start = index + 1
    if depth:
        raise UsageError("pipeline: unbalanced parentheses or braces")
    elements.append(text[start:].strip())
    return [e for e in elements if e]


def pass_manager(pipeline: str, context: ir.Context | None = None) -> tuple[passmanager.PassManager, list[_LltfiPass]]:
    """One PassManager running `pipeline` (upstream and lltfi passes in order); also the lltfi pass
    objects, whose `results` say what each application did."""
    pm = passmanager.PassManager("builtin.module", context=context)
    added: list[_LltfiPass] = []
    for element in split_elements(pipeline):
        name, brace, rest = element.partition("{")
        name = name.strip()
        if name.startswith("lltfi-"):
            if brace and not rest.endswith("}"):
                raise UsageError(f"pipeline element '{element}': options must end with '}}'")
            lltfi_pass = make_pass(name, _options(rest[:-1], name) if brace else {})
            lltfi_pass.add_to(pm)
            added.append(lltfi_pass)
        else:
            try:
                pm.add(element)
            except ValueError as exc:
                raise UsageError(f"pipeline element '{element}': {' '.join(str(exc).split())}") from None
    return pm, added

def _located(diagnostic) -> str:
    loc = diagnostic.location
    where = f"{loc.filename}:{loc.start_line}:{loc.start_col}: " if loc.is_a_file() else \
        f"loc(\"{loc.name_str}\"): " if loc.is_a_name() else ""
    return where + diagnostic.message


def failure_message(exc: ir.MLIRError) -> str:
    """The diagnostics of a failed pipeline, each with its location, on one line."""
    diagnostics = getattr(exc, "error_diagnostics", None) or []
    if not diagnostics:
        return " ".join(str(exc).split())
    return "; ".join(_located(d) for d in diagnostics)


def describe(lltfi_pass: _LltfiPass) -> list[str]:
    """One line per application of an lltfi pass: what it did."""
    lines = []
    for result in lltfi_pass.results:
        if isinstance(result, InstrumentResult):
            lines.append(f"{lltfi_pass.name}: {len(result.sites)} fault site(s) ({result.kept_sites} kept from a "
                         f"previous application), {len(result.units)} versioning unit(s)")
        else:
            lines.append(f"{lltfi_pass.name}: {result.duplicated} instruction(s) duplicated, {result.checks} "
                         "check(s) inserted")
    return lines


def run_pipeline_file(source: str | Path, destination: str | Path, pipeline: str) -> list[str]:
    """`lltfi-mlir opt`: parse `source`, run `pipeline`, write `destination` (with locations)."""
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise UsageError(f"no such file: {source}")
    with ir.Context() as context:
        try:
            module = ir.Module.parseFile(str(source))
        except ir.MLIRError as exc:
            raise UsageError(f"cannot parse {source} as MLIR: {failure_message(exc)}") from None
        pm, added = pass_manager(pipeline, context)
        try:
            pm.run(module.operation)
        except ir.MLIRError as exc:
            raise PassError(f"pass pipeline failed: {failure_message(exc)}") from None
        with open(destination, "w") as handle:
            module.operation.print(file=handle, enable_debug_info=True)
    return [line for p in added for line in describe(p)] + [f"wrote {destination}"]
