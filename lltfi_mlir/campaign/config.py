"""Campaign configuration from YAML: LLTFI's/LLFI's `input.yaml` keys, or a native schema, or both.

Every key is checked: an unknown or misspelt key, or a bad value (null, not finite, out of range),
is a ConfigError that names the file, the line, the key and what would be accepted. Nothing is
silently ignored: LLTFI keys without a counterpart here are accepted with a note
(`campaign/lltfi_yaml.py`). Each LLTFI `- run:` block is its own experiment, with its own runs,
fault model, seed and timeout; trials are numbered block after block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..dialect_passes.sites import DEFAULT_OPCODES, GROUPS, KNOWN_OPCODES, REGISTERS, SiteSelector
from ..errors import ConfigError
from .lltfi_yaml import LAYER_NAMES as LLTFI_LAYER_NAMES
from .lltfi_yaml import REGLOC, TOP_KEYS, read_lltfi, register_of
from .yaml_reader import MAX_TEXT, Reader, compose, decode, short

FAULT_TYPES = ("bitflip", "stuck_at_0", "stuck_at_1")
SDC_CRITERIA = ("top1", "topk", "threshold", "tolerance", "python")
SDC_POSITIONS = ("all", "last", "each")
DRAWS = ("uniform", "per_layer", "exhaustive")
MEMORY_TARGETS = ("instructions", "weights", "activations")
MAX_RUNS = 10**9
MAX_SEED = (1 << 63) - 1
MIN_TIMEOUT, MAX_TIMEOUT = 0.01, 1e6  # seconds per trial


@dataclass(frozen=True)
class FaultConfig:
    """One fault model (LLTFI: one `- run:` block, its own experiment)."""

    type: str = "bitflip"
    bit: int | None = None         # fixed bit position (fi_bit); None draws uniformly
    num_bits: int = 1              # bits corrupted in one register (fi_num_bits)
    max_multiple: int = 1          # faults per run (fi_max_multiple)
    window_len: int = 1            # faults are window_start..window_len selected instances apart
    #                                (0: up to the rest of the run, LLFI's fi_max_multiple without a window)
    runs: int | None = None        # numOfRuns of this entry (None: campaign default)
    cycle: int | None = None       # replay: the dynamic index (fi_cycle)
    seed: int | None = None        # fi_random_seed: this block's seed (None: the campaign's)
    window_start: int = 1          # window_len_multiple_startindex
    timeout: float | None = None   # timeOut in seconds for this block (None: the campaign's)

    @property
    def window_code(self) -> int:
        """The runtime's window field: window_len, or (start-1) << 32 | span for a window start..len."""
        if self.window_start <= 1:
            return self.window_len
        return ((self.window_start - 1) << 32) | (self.window_len - self.window_start + 1)


@dataclass(frozen=True)
class SdcConfig:
    """When a run with a clean exit counts as silent data corruption."""

    criterion: str = "top1"
    k: int = 5
    thresholds: tuple[float, ...] = (15.0, 30.0, 60.0, 90.0)
    degrees: bool = True           # threshold: outputs are radians, thresholds in degrees (Dave2)
    rtol: float = 0.0
    atol: float = 0.0
    # Which part of the first output top1/topk/tolerance judge: "all" (flattened: a classifier),
    # "last" (language models: the last position's logits, output[..., -1, :], per batch row) or
    # "each" (every position's logits along the last axis).
    positions: str = "all"
    function: str | None = None    # python: "file.py:name" or "module:name", f(golden, faulty) -> bool
    # Programs: compare stdout (or not), these output files, and drop lines matching these regexes
    # (wall-clock timings) from both outputs before comparing.
    stdout: bool = True
    files: tuple[str, ...] = ()
    ignore_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class CampaignConfig:
    selector: SiteSelector = SiteSelector()
    faults: tuple[FaultConfig, ...] = (FaultConfig(),)
    sdc: SdcConfig = SdcConfig()
    runs: int = 1000
    seed: int = 0
    timeout: float | None = None   # seconds per trial; None: 50x the golden time, at least 2 s
    draw: str = "uniform"
    # Propagation tracing (LLTFI tracingPropagation): per-layer corruption of every trial (a traced
    # build returns every node's output), and the next `max_trace` instrumented instances after the
    # fault, in the faulty and in the golden run.
    trace_layers: bool = False
    max_trace: int = 0
    # "operator": flip bits of operator output elements (TensorFI / PyTorchFI style) instead of
    # instruction results; same selection by operator type / node / layer, same outcomes.
    level: str = "instruction"
    # What a fault corrupts (native `fault: {target: ...}`): instruction results, or a stored weight
    # element for the whole run (campaign/memory.py); `tensors` narrows weight faults by name.
    target: str = "instructions"
    tensors: frozenset[str] = frozenset()
    verbose: bool = False          # LLFI verbose / debugTrace: per-block outcome tables
    graphs: bool = False           # LLTFI generateCDFG: draw traced trials after the campaign
    notes: tuple[str, ...] = field(default_factory=tuple)


def _opcodes(reader: Reader, node: yaml.Node, key: str, names: list[str] | None = None) -> frozenset[str]:
    out: set[str] = set()
    for name in names if names is not None else reader.strings(node, key):
        if name in GROUPS:
            out |= GROUPS[name]
        elif name.lower() in KNOWN_OPCODES:
            out.add(name.lower())
        else:
            raise reader.fail(node, f"{key}: unknown opcode {short(name)} (opcodes: "
                                    f"{', '.join(sorted(KNOWN_OPCODES))}; groups: {', '.join(GROUPS)})")
    return frozenset(out)


def _fault(reader: Reader, node: yaml.Node) -> FaultConfig:
    keys = reader.mapping(node, "fault", ("type", "bit", "num_bits", "max_multiple", "window_len", "target",
                                          "tensors"))
    values: dict = {}
    if "type" in keys:
        values["type"] = reader.choice(keys["type"], "type", FAULT_TYPES)
    if "bit" in keys:
        values["bit"] = reader.integer(keys["bit"], "bit", 0, 63)
    if "num_bits" in keys:
        values["num_bits"] = reader.integer(keys["num_bits"], "num_bits", 1, 64)
    if "max_multiple" in keys:
        values["max_multiple"] = reader.integer(keys["max_multiple"], "max_multiple", 1, 100)
    if "window_len" in keys:
        values["window_len"] = reader.integer(keys["window_len"], "window_len", 1, 1 << 31)
    return FaultConfig(**values)


def _blocks(reader: Reader, lltfi, sel: dict) -> list[FaultConfig]:
    """One FaultConfig per run block; fi_index / fi_reg_index become the (campaign-wide) selection."""
    faults = []
    for name, target in (("instruction", "instructions"), ("reg_index", "register")):
        given = [(fields.get(name), node) for fields, node in lltfi.blocks]
        values = {v[0] if v else None for v, _ in given}
        if values <= {None}:
            continue
        if len(values) > 1:
            node = next(n for v, n in given if v is not None)
            raise reader.fail(node, f"{'fi_index' if name == 'instruction' else 'fi_reg_index'} changes the "
                                    "selection, which every run block here shares: give all run blocks the same "
                                    "value, or put them in separate configs")
        value, node = next(v for v, _ in given if v is not None)
        if target == "instructions":
            sel["instructions"] = frozenset({value})
            sel["require_operator"] = False
            sel.setdefault("opcodes", GROUPS["all"])  # LLFI: the index alone selects
        else:
            register = register_of(sel.get("register", "dst"), value)
            if register is None:
                raise reader.fail(node, f"fi_reg_index {value}: regloc {sel.get('register', 'dst')} has no "
                                        f"register number {value}")
            sel["register"] = register
    for fields, _ in lltfi.blocks:
        values = {k: v for k, v in fields.items() if k not in ("line", "instruction", "reg_index")}
        if "timeout" not in values and lltfi.default_timeout is not None:
            values["timeout"] = lltfi.default_timeout
        faults.append(FaultConfig(**values))
    return faults


def _sdc(reader: Reader, node: yaml.Node) -> SdcConfig:
    keys = reader.mapping(node, "sdc", ("criterion", "k", "thresholds", "degrees", "rtol", "atol", "function",
                                        "stdout", "files", "ignore_lines", "positions"))
    values: dict = {}
    for key, n in keys.items():
        if key == "criterion":
            values[key] = reader.choice(n, key, SDC_CRITERIA)
        elif key == "k":
            values[key] = reader.integer(n, key, 1, 1 << 20)
        elif key == "positions":
            values[key] = reader.choice(n, key, SDC_POSITIONS)
        elif key == "thresholds":
            raw = reader.required(n, key)
            raw = raw if isinstance(raw, list) else [raw]
            if not raw or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                  and v >= 0 for v in raw):
                raise reader.fail(n, f"thresholds: expected a list of non-negative numbers, got {short(raw)}")
            values[key] = tuple(float(v) for v in raw)
        elif key in ("degrees", "stdout"):
            values[key] = reader.boolean(n, key)
        elif key in ("rtol", "atol"):
            values[key] = reader.scalar(n, key, float, lambda v: v >= 0, "must be >= 0")
        elif key == "files":
            names = reader.strings(n, key)
            if any("/" in f or f in ("", ".", "..") for f in names):
                raise reader.fail(n, "files: names of files the program writes in its working directory, not paths")
            values[key] = tuple(names)
        elif key == "ignore_lines":
            patterns = reader.strings(n, key)
            for pattern in patterns:
                try:
                    re.compile(pattern.encode())
                except re.error as exc:
                    raise reader.fail(n, f"ignore_lines: {short(pattern)} is not a regular expression: {exc}") \
                        from None
            values[key] = tuple(patterns)
        else:
            values[key] = reader.scalar(n, key, str)
    sdc = SdcConfig(**values)
    if sdc.criterion == "python" and not sdc.function:
        raise reader.fail(node, "sdc.criterion python needs sdc.function: 'file.py:name'")
    if not sdc.stdout and not sdc.files:
        raise reader.fail(node, "sdc.stdout: false compares output files only: name them in sdc.files")
    return sdc


def _select(reader: Reader, node: yaml.Node, sel: dict) -> None:
    keys = reader.mapping(node, "select", ("opcodes", "exclude_opcodes", "operators", "exclude_operators", "nodes",
                                           "exclude_nodes", "layers", "functions", "exclude_functions", "register",
                                           "require_operator", "sources", "lines", "instructions", "trace"))
    for key, n in keys.items():
        if key in ("opcodes", "exclude_opcodes"):
            sel[key] = _opcodes(reader, n, key)
        elif key == "register":
            sel[key] = reader.choice(n, key, REGISTERS)
        elif key == "require_operator":
            sel[key] = reader.boolean(n, key)
        elif key == "lines":
            value = reader.required(n, key)
            if (not isinstance(value, list) or len(value) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value) or value[0] > value[1]):
                raise reader.fail(n, f"lines: expected [first, last] source lines, got {short(value)}")
            sel[key] = (value[0], value[1])
        elif key == "instructions":
            value = reader.required(n, key)
            value = value if isinstance(value, list) else [value]
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31 for v in value):
                raise reader.fail(n, f"instructions: expected static indices (lltfi-mlir sites), got {short(value)}")
            sel[key] = frozenset(value)
        elif key == "trace":
            directions = reader.strings(n, key)
            if not set(directions) <= {"forward", "backward"}:
                raise reader.fail(n, f"trace: expected forward and/or backward, got {short(directions)}")
            sel[key] = frozenset(directions)
        elif key == "layers":
            pairs = set()
            for item in reader.strings(n, key):
                op_type, _, number = item.partition(":")
                if not number.isdigit() or len(number) > 9:
                    raise reader.fail(n, f"layers: {short(item)} must look like Conv:1 (0 = every Conv)")
                pairs.add((op_type, int(number)))
            sel[key] = frozenset(pairs)
        else:
            sel[key] = frozenset(reader.strings(n, key))


def _campaign(reader: Reader, node: yaml.Node, campaign: dict) -> None:
    keys = reader.mapping(node, "campaign", ("runs", "seed", "timeout", "draw", "trace_layers", "max_trace", "level",
                                             "verbose"))
    if "level" in keys:
        campaign["level"] = reader.choice(keys["level"], "level", ("instruction", "operator"))
    for flag in ("trace_layers", "verbose"):
        if flag in keys:
            campaign[flag] = reader.boolean(keys[flag], flag)
    if "max_trace" in keys:
        campaign["max_trace"] = reader.integer(keys["max_trace"], "max_trace", 0, 4096)
    if "runs" in keys:
        campaign["runs"] = reader.integer(keys["runs"], "runs", 1, MAX_RUNS)
    if "seed" in keys:
        campaign["seed"] = reader.integer(keys["seed"], "seed", 0, MAX_SEED)
    if "timeout" in keys and reader.value(keys["timeout"]) != "auto":
        campaign["timeout"] = reader.scalar(keys["timeout"], "timeout", float,
                                            lambda v: MIN_TIMEOUT <= v <= MAX_TIMEOUT,
                                            f"seconds {MIN_TIMEOUT}..{MAX_TIMEOUT:g}, or auto")
    if "draw" in keys:
        campaign["draw"] = reader.choice(keys["draw"], "draw", DRAWS)


def parse_config(text: str, source: str = "<config>") -> CampaignConfig:
    reader = Reader(source)
    root = compose(text, source)
    if root is None:
        return CampaignConfig()
    top = reader.mapping(root, "the configuration", TOP_KEYS + ("select", "fault", "campaign", "sdc"))
    campaign: dict = {}
    lltfi = read_lltfi(reader, top, lambda node, key, names: _opcodes(reader, node, key, names))
    sel = dict(lltfi.selector)
    campaign.update(lltfi.campaign)
    faults = _blocks(reader, lltfi, sel)
    if "select" in top:
        _select(reader, top["select"], sel)
    if "fault" in top:
        if faults:
            raise reader.fail(top["fault"], "give the fault model either in runOption (LLTFI) or in fault, not both")
        faults.append(_fault(reader, top["fault"]))
        keys = reader.mapping(top["fault"], "fault", tuple(k.value for k, _ in top["fault"].value))
        if "target" in keys:
            campaign["target"] = reader.choice(keys["target"], "target", MEMORY_TARGETS)
        if "tensors" in keys:
            campaign["tensors"] = frozenset(reader.strings(keys["tensors"], "tensors"))
            if campaign.get("target") != "weights":
                raise reader.fail(keys["tensors"], "tensors: selects weight tensors; give target: weights too")
    if "campaign" in top:
        _campaign(reader, top["campaign"], campaign)
    sdc = _sdc(reader, top["sdc"]) if "sdc" in top else SdcConfig()
    seeds = [f.seed for f in faults if f.seed is not None]
    if seeds and "seed" not in campaign:
        campaign["seed"] = seeds[0]  # blocks without fi_random_seed use the first block's
    runs = [f.runs for f in faults if f.runs is not None]
    if runs and "runs" not in campaign:
        campaign["runs"] = sum(runs)
    timeouts = [f.timeout for f in faults if f.timeout is not None]
    if timeouts and "timeout" not in campaign:
        campaign["timeout"] = max(timeouts)  # the watchdogs' and fault-free runs' limit
    elif lltfi.default_timeout is not None and "timeout" not in campaign:
        campaign["timeout"] = lltfi.default_timeout
    return CampaignConfig(selector=SiteSelector(**sel), faults=tuple(faults) or (FaultConfig(),), sdc=sdc,
                          notes=tuple(dict.fromkeys(lltfi.notes)), **campaign)


def load_config(path: str | Path | None) -> CampaignConfig:
    """Read a YAML file; a missing or unreadable file is an error, never an empty default."""
    if path is None:
        return CampaignConfig()
    path = Path(path)
    if path.exists() and not path.is_file():  # a directory, a device (/dev/zero), a FIFO that would block
        raise ConfigError(f"cannot read config {path}: not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT + 1)  # decode() refuses anything longer
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(decode(data, str(path)), str(path))


def check_runs(runs: int | None, what: str = "--runs") -> None:
    if runs is not None and not 1 <= runs <= MAX_RUNS:
        raise ConfigError(f"{what} {runs}: must be 1..{MAX_RUNS:,}")


def with_overrides(config: CampaignConfig, **changes) -> CampaignConfig:
    """Command-line values over the config's, each validated; --seed and --timeout also replace
    every run block's own fi_random_seed and timeOut."""
    changes = {k: v for k, v in changes.items() if v is not None}
    seed, timeout = changes.get("seed"), changes.get("timeout")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed}: must be 0..{MAX_SEED}")
    if timeout is not None and not (math.isfinite(timeout) and MIN_TIMEOUT <= timeout <= MAX_TIMEOUT):
        raise ConfigError(f"--timeout {timeout}: must be a number of seconds, {MIN_TIMEOUT}..{MAX_TIMEOUT:g}")
    check_runs(changes.get("runs"), "runs")
    if seed is not None or timeout is not None:
        faults = tuple(replace(f, seed=None if seed is not None else f.seed,
                               timeout=None if timeout is not None else f.timeout) for f in config.faults)
        changes["faults"] = faults
    return replace(config, **changes)


__all__ = [
    "DEFAULT_OPCODES",
    "LLTFI_LAYER_NAMES",
    "REGLOC",
    "CampaignConfig",
    "FaultConfig",
    "SdcConfig",
    "check_runs",
    "load_config",
    "parse_config",
    "with_overrides",
]
