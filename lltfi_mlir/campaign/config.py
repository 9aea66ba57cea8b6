"""Campaign configuration from YAML: LLTFI's `input.yaml` keys, or a native schema, or both.

Every key is checked: an unknown or misspelt key, or a bad value, is a ConfigError that names the
file, the line, the key and what would be accepted. Nothing is silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from ..dialect_passes.sites import DEFAULT_OPCODES, GROUPS, KNOWN_OPCODES, REGISTERS, SiteSelector
from ..errors import ConfigError

FAULT_TYPES = ("bitflip", "stuck_at_0", "stuck_at_1")
SDC_CRITERIA = ("top1", "topk", "threshold", "tolerance", "python")
DRAWS = ("uniform", "per_layer", "exhaustive")
MEMORY_TARGETS = ("instructions", "weights", "activations")
# LLTFI -layerName values -> ONNX op types (onnx-mlir lowers Gemm and MatMul alike to "matmul").
LLTFI_LAYER_NAMES = {"conv": ("Conv",), "relu": ("Relu",), "matmul": ("MatMul", "Gemm"), "gemm": ("Gemm",),
                     "maxpool": ("MaxPool",), "avgpool": ("AveragePool", "GlobalAveragePool"),
                     "add": ("Add", "Sum"), "softmax": ("Softmax",), "sigmoid": ("Sigmoid",), "tanh": ("Tanh",),
                     "batchnorm": ("BatchNormalization",), "lrn": ("LRN",)}
REGLOC = {"dstreg": "dst", "allsrcreg": "allsrc", "srcreg1": "src1", "srcreg2": "src2", "srcreg3": "src3",
          "srcreg4": "src4", "allreg": "all"}


@dataclass(frozen=True)
class FaultConfig:
    """One fault model (LLTFI: one `runOption` entry)."""

    type: str = "bitflip"
    bit: int | None = None         # fixed bit position (fi_bit); None draws uniformly
    num_bits: int = 1              # bits corrupted in one register (fi_num_bits)
    max_multiple: int = 1          # faults per run (fi_max_multiple)
    window_len: int = 1            # faults are 1..window_len selected instances apart
    runs: int | None = None        # numOfRuns of this entry (None: campaign default)
    cycle: int | None = None       # replay: the dynamic index (fi_cycle)
    seed: int | None = None        # fi_random_seed


@dataclass(frozen=True)
class SdcConfig:
    """When a run with a clean exit counts as silent data corruption."""

    criterion: str = "top1"
    k: int = 5
    thresholds: tuple[float, ...] = (15.0, 30.0, 60.0, 90.0)
    degrees: bool = True           # threshold: outputs are radians, thresholds in degrees (Dave2)
    rtol: float = 0.0
    atol: float = 0.0
    function: str | None = None    # python: "file.py:name" or "module:name", f(golden, faulty) -> bool


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
    notes: tuple[str, ...] = field(default_factory=tuple)


class _Reader:
    """Walks a composed YAML tree keeping line numbers for error messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, where: str, known: tuple[str, ...]) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key not in known:
                raise self.fail(key_node, f"unknown key '{key}' in {where} (known: {', '.join(known)})")
            if key in out:
                raise self.fail(key_node, f"duplicate key '{key}' in {where}")
            out[key] = value_node
        return out

    def value(self, node: yaml.Node):
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True) \
            if not isinstance(node, yaml.ScalarNode) else yaml.safe_load(yaml.serialize(node))

    def scalar(self, node: yaml.Node, key: str, kind, check=None, rule: str = ""):
        value = self.value(node)
        if value is None and kind is not bool:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(node, f"{key}: expected {kind.__name__}, got {value!r}")
        if check is not None and not check(value):
            raise self.fail(node, f"{key}: {value!r} is not allowed ({rule})")
        return value

    def choice(self, node: yaml.Node, key: str, choices) -> str:
        value = self.value(node)
        if value not in choices:
            raise self.fail(node, f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value

    def strings(self, node: yaml.Node, key: str) -> list[str]:
        value = self.value(node)
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            raise self.fail(node, f"{key}: expected a list of names")
        return [str(v) for v in value]


def _opcodes(reader: _Reader, node: yaml.Node, key: str) -> frozenset[str]:
    out: set[str] = set()
    for name in reader.strings(node, key):
        if name in GROUPS:
            out |= GROUPS[name]
        elif name.lower() in KNOWN_OPCODES:
            out.add(name.lower())
        else:
            raise reader.fail(node, f"{key}: unknown opcode '{name}' (opcodes: {', '.join(sorted(KNOWN_OPCODES))}; "
                                    f"groups: {', '.join(GROUPS)})")
    return frozenset(out)


def _lltfi_compile_option(reader: _Reader, node: yaml.Node, sel: dict, notes: list[str], campaign: dict) -> None:
    keys = reader.mapping(node, "compileOption", ("instSelMethod", "regSelMethod", "regloc", "includeInjectionTrace",
                                                  "tracingPropagation", "tracingPropagationOption"))
    if "instSelMethod" in keys:
        methods = keys["instSelMethod"]
        if not isinstance(methods, yaml.SequenceNode):
            raise reader.fail(methods, "instSelMethod must be a list of selectors")
        for item in methods.value:
            entry = reader.mapping(item, "instSelMethod", ("insttype", "funcname", "customInstselector"))
            for kind, body in entry.items():
                if kind in ("insttype", "funcname"):
                    parts = reader.mapping(body, kind, ("include", "exclude"))
                    if kind == "insttype":
                        if "include" in parts:
                            sel["opcodes"] = _opcodes(reader, parts["include"], "insttype.include")
                        if "exclude" in parts:
                            sel["exclude_opcodes"] = _opcodes(reader, parts["exclude"], "insttype.exclude")
                    else:
                        if "include" in parts:
                            names = reader.strings(parts["include"], "funcname.include")
                            if names != ["all"]:
                                sel["functions"] = frozenset(names)
                        if "exclude" in parts:
                            sel["exclude_functions"] = frozenset(reader.strings(parts["exclude"], "funcname.exclude"))
                else:
                    _custom_selector(reader, body, sel)
    if "regSelMethod" in keys:
        reader.choice(keys["regSelMethod"], "regSelMethod", ("regloc",))
    if "regloc" in keys:
        sel["register"] = REGLOC[reader.choice(keys["regloc"], "regloc", tuple(REGLOC))]
    if "includeInjectionTrace" in keys:
        notes.append("includeInjectionTrace is accepted for LLTFI compatibility; it has no effect here")
    tracing = "tracingPropagation" in keys and reader.scalar(keys["tracingPropagation"], "tracingPropagation", bool)
    max_trace = 250
    if "tracingPropagationOption" in keys:
        options = reader.mapping(keys["tracingPropagationOption"], "tracingPropagationOption",
                                 ("maxTrace", "debugTrace", "mlTrace", "generateCDFG"))
        if "maxTrace" in options:
            max_trace = reader.scalar(options["maxTrace"], "maxTrace", int, lambda v: 0 < v <= 4096, "1..4096")
    if tracing:
        campaign["trace_layers"] = True
        campaign["max_trace"] = max_trace


def _custom_selector(reader: _Reader, body: yaml.Node, sel: dict) -> None:
    parts = reader.mapping(body, "customInstselector", ("include", "options"))
    include = reader.strings(parts["include"], "customInstselector.include") if "include" in parts else []
    if include != ["CustomTensorOperator"]:
        raise reader.fail(body, "customInstselector: only 'CustomTensorOperator' is supported")
    options = reader.strings(parts["options"], "customInstselector.options") if "options" in parts else []
    names, numbers = ["all"], ["0"]
    for option in options:
        key, _, value = option.lstrip("-").partition("=")
        if key == "layerName":
            names = [v.strip() for v in value.split(";")]
        elif key == "layerNo":
            numbers = [v.strip() for v in value.split(";")]
        else:
            raise reader.fail(parts["options"], f"customInstselector option '{option}' is not supported "
                                                "(use -layerName=conv;relu and -layerNo=2;0)")
    if len(numbers) == 1 and len(names) > 1:
        numbers = numbers * len(names)
    if len(numbers) != len(names):
        raise reader.fail(parts["options"], "-layerNo must give one number per -layerName entry")
    layers: set[tuple[str, int]] = set()
    for name, number in zip(names, numbers):
        if not number.isdigit():
            raise reader.fail(parts["options"], f"-layerNo={number}: expected a non-negative integer (0 = all)")
        if name.lower() == "all":
            if int(number) != 0:
                raise reader.fail(parts["options"], "-layerName=all takes -layerNo=0")
            continue
        op_types = LLTFI_LAYER_NAMES.get(name.lower(), (name,))
        layers |= {(t, int(number)) for t in op_types}
    if layers:
        sel["layers"] = frozenset(layers)


def _fault(reader: _Reader, node: yaml.Node, lltfi: bool) -> FaultConfig:
    if lltfi:
        keys = reader.mapping(node, "runOption.run", ("numOfRuns", "fi_type", "fi_bit", "fi_num_bits",
                                                      "fi_max_multiple", "window_len", "timeOut", "fi_random_seed",
                                                      "fi_cycle", "fi_index"))
        names = {"numOfRuns": "runs", "fi_type": "type", "fi_bit": "bit", "fi_num_bits": "num_bits",
                 "fi_max_multiple": "max_multiple", "window_len": "window_len", "fi_random_seed": "seed",
                 "fi_cycle": "cycle"}
        if "fi_index" in keys:
            raise reader.fail(keys["fi_index"], "fi_index (a static LLFI index) is not supported; replay a fault "
                                                "with fi_cycle (dynamic index) and fi_bit")
    else:
        keys = reader.mapping(node, "fault", ("type", "bit", "num_bits", "max_multiple", "window_len", "target",
                                              "tensors"))
        names = {k: k for k in keys if k not in ("target", "tensors")}  # campaign-wide: see parse_config
    values: dict = {}
    for key, target in names.items():
        if key not in keys:
            continue
        n = keys[key]
        if target == "type":
            values[target] = reader.choice(n, key, FAULT_TYPES)
        elif target == "bit":
            values[target] = reader.scalar(n, key, int, lambda v: 0 <= v < 64, "a bit position 0..63")
        else:
            least = 0 if target in ("cycle", "seed") else 1
            values[target] = reader.scalar(n, key, int, lambda v, least=least: v >= least, f"must be >= {least}")
    return FaultConfig(**values)


def parse_config(text: str, source: str = "<config>") -> CampaignConfig:
    reader = _Reader(source)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    if root is None:
        return CampaignConfig()
    top = reader.mapping(root, "the configuration", ("compileOption", "runOption", "select", "fault", "campaign",
                                                     "sdc"))
    sel: dict = {}
    notes: list[str] = []
    faults: list[FaultConfig] = []
    campaign: dict = {}  # filled before compileOption is read (tracing settings live there)
    if "compileOption" in top:
        _lltfi_compile_option(reader, top["compileOption"], sel, notes, campaign)
    if "runOption" in top:
        runs = top["runOption"]
        if not isinstance(runs, yaml.SequenceNode):
            raise reader.fail(runs, "runOption must be a list of '- run:' entries")
        for item in runs.value:
            entry = reader.mapping(item, "runOption", ("run",))
            fault = _fault(reader, entry["run"], lltfi=True)
            run_keys = reader.mapping(entry["run"], "runOption.run", tuple(k.value for k, _ in entry["run"].value))
            if "timeOut" in run_keys:
                campaign["timeout"] = reader.scalar(run_keys["timeOut"], "timeOut", float, lambda v: v > 0,
                                                    "milliseconds > 0") / 1000.0
            faults.append(fault)
    if "select" in top:
        keys = reader.mapping(top["select"], "select", ("opcodes", "exclude_opcodes", "operators", "exclude_operators",
                                                        "nodes", "exclude_nodes", "layers", "functions",
                                                        "exclude_functions", "register", "require_operator",
                                                        "sources", "lines"))
        for key, n in keys.items():
            if key in ("opcodes", "exclude_opcodes"):
                sel[key] = _opcodes(reader, n, key)
            elif key == "register":
                sel[key] = reader.choice(n, key, REGISTERS)
            elif key == "require_operator":
                sel[key] = reader.scalar(n, key, bool)
            elif key == "lines":
                value = reader.value(n)
                if (not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int) for v in value)
                        or value[0] > value[1]):
                    raise reader.fail(n, f"lines: expected [first, last] source lines, got {value!r}")
                sel[key] = (value[0], value[1])
            elif key == "layers":
                pairs = set()
                for item in reader.strings(n, key):
                    op_type, _, number = item.partition(":")
                    if not number.isdigit():
                        raise reader.fail(n, f"layers: '{item}' must look like Conv:1 (0 = every Conv)")
                    pairs.add((op_type, int(number)))
                sel[key] = frozenset(pairs)
            else:
                sel[key] = frozenset(reader.strings(n, key))
    if "fault" in top:
        if faults:
            raise reader.fail(top["fault"], "give the fault model either in runOption (LLTFI) or in fault, not both")
        faults.append(_fault(reader, top["fault"], lltfi=False))
        keys = reader.mapping(top["fault"], "fault", tuple(k.value for k, _ in top["fault"].value))
        if "target" in keys:
            campaign["target"] = reader.choice(keys["target"], "target", MEMORY_TARGETS)
        if "tensors" in keys:
            campaign["tensors"] = frozenset(reader.strings(keys["tensors"], "tensors"))
            if campaign.get("target") != "weights":
                raise reader.fail(keys["tensors"], "tensors: selects weight tensors; give target: weights too")
    if "campaign" in top:
        keys = reader.mapping(top["campaign"], "campaign", ("runs", "seed", "timeout", "draw", "trace_layers",
                                                            "max_trace", "level"))
        if "level" in keys:
            campaign["level"] = reader.choice(keys["level"], "level", ("instruction", "operator"))
        if "trace_layers" in keys:
            campaign["trace_layers"] = reader.scalar(keys["trace_layers"], "trace_layers", bool)
        if "max_trace" in keys:
            campaign["max_trace"] = reader.scalar(keys["max_trace"], "max_trace", int, lambda v: 0 <= v <= 4096,
                                                  "0..4096")
        if "runs" in keys:
            campaign["runs"] = reader.scalar(keys["runs"], "runs", int, lambda v: v > 0, "must be positive")
        if "seed" in keys:
            campaign["seed"] = reader.scalar(keys["seed"], "seed", int, lambda v: v >= 0, "must be >= 0")
        if "timeout" in keys:
            value = reader.value(keys["timeout"])
            if value != "auto":
                campaign["timeout"] = reader.scalar(keys["timeout"], "timeout", float, lambda v: v > 0,
                                                    "seconds > 0, or auto")
        if "draw" in keys:
            campaign["draw"] = reader.choice(keys["draw"], "draw", DRAWS)
    sdc = SdcConfig()
    if "sdc" in top:
        keys = reader.mapping(top["sdc"], "sdc", ("criterion", "k", "thresholds", "degrees", "rtol", "atol",
                                                  "function"))
        values: dict = {}
        for key, n in keys.items():
            if key == "criterion":
                values[key] = reader.choice(n, key, SDC_CRITERIA)
            elif key == "k":
                values[key] = reader.scalar(n, key, int, lambda v: v >= 1, "must be >= 1")
            elif key == "thresholds":
                raw = reader.value(n)
                raw = raw if isinstance(raw, list) else [raw]
                if not raw or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in raw):
                    raise reader.fail(n, "thresholds: expected a list of non-negative numbers")
                values[key] = tuple(float(v) for v in raw)
            elif key == "degrees":
                values[key] = reader.scalar(n, key, bool)
            elif key in ("rtol", "atol"):
                values[key] = reader.scalar(n, key, float, lambda v: v >= 0, "must be >= 0")
            else:
                values[key] = reader.scalar(n, key, str)
        sdc = SdcConfig(**values)
        if sdc.criterion == "python" and not sdc.function:
            raise reader.fail(top["sdc"], "sdc.criterion python needs sdc.function: 'file.py:name'")
    seeds = {f.seed for f in faults if f.seed is not None}
    if seeds and "seed" not in campaign:
        campaign["seed"] = min(seeds)
    runs = [f.runs for f in faults if f.runs is not None]
    if runs and "runs" not in campaign:
        campaign["runs"] = sum(runs)
    return CampaignConfig(selector=SiteSelector(**sel), faults=tuple(faults) or (FaultConfig(),), sdc=sdc,
                          notes=tuple(notes), **campaign)


def load_config(path: str | Path | None) -> CampaignConfig:
    """Read a YAML file; a missing or unreadable file is an error, never an empty default."""
    if path is None:
        return CampaignConfig()
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    return parse_config(text, str(path))


def with_overrides(config: CampaignConfig, **changes) -> CampaignConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


__all__ = [
    "DEFAULT_OPCODES",
    "CampaignConfig",
    "FaultConfig",
    "SdcConfig",
    "load_config",
    "parse_config",
    "with_overrides",
]
