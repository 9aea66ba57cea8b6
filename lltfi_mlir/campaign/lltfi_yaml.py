"""LLFI's and LLTFI's `input.yaml` vocabulary, read into this tool's selection, fault models and options.

The keys are those of LLTFI's `docs/input_masterlist.yaml` and `docs/input_masterlist_ml.yaml` and
of the samples and test suites of LLFI and LLTFI. Each key either does what it does there, or is
accepted with a one-line note saying why it has no counterpart here, or is refused with a message
that names it (LLFI's software-failure injectors). Units follow LLFI's `injectfault.py`: `timeOut`
and `defaultTimeout` are seconds.
"""

from __future__ import annotations

import yaml

from ..dialect_passes.sites import GROUPS
from .yaml_reader import Reader, short

LLFI_FAULT_TYPES = ("bitflip", "stuck_at_0", "stuck_at_1")
# LLTFI -layerName values -> ONNX op types (onnx-mlir lowers Gemm and MatMul alike to "matmul").
LAYER_NAMES = {"conv": ("Conv",), "relu": ("Relu",), "matmul": ("MatMul", "Gemm"), "gemm": ("Gemm",),
               "maxpool": ("MaxPool",), "avgpool": ("AveragePool", "GlobalAveragePool"), "add": ("Add", "Sum"),
               "softmax": ("Softmax",), "sigmoid": ("Sigmoid",), "tanh": ("Tanh",),
               "batchnorm": ("BatchNormalization",), "lrn": ("LRN",), "loop": ("Loop",),
               "nonmaxs": ("NonMaxSuppression",), "unsqueeze": ("Unsqueeze",)}
REGLOC = {"dstreg": "dst", "allsrcreg": "allsrc", "srcreg1": "src1", "srcreg2": "src2", "srcreg3": "src3",
          "srcreg4": "src4", "allreg": "all"}
# LLVM instructions that exist but are never a fault site in the LLVM dialect (no value register, or
# not an operation there: PHI nodes are block arguments). Excluding them changes nothing.
NO_SITES = frozenset({"ret", "br", "switch", "indirectbr", "unreachable", "phi", "alloca", "fence", "resume",
                      "landingpad", "invoke", "va_arg", "extractvalue", "insertvalue", "extractelement",
                      "insertelement", "shufflevector", "atomicrmw", "cmpxchg", "freeze", "callbr"})
# LLFI's software-failure injectors (LLFI's "SoftwareFailureAutoScan" list and test_programs).
SOFTWARE_FAULT_TYPES = ("SoftwareFault", "AutoInjection", "Automated")
MAX_FAULTS = 100  # LLFI's fi_max_multiple limit (and this runtime's)
LLTFI_DEFAULT_MULTIPLE = 100  # LLTFI: a window without fi_max_multiple means up to 100 faults

RUN_KEYS = ("numOfRuns", "fi_type", "fi_bit", "fi_num_bits", "fi_max_multiple", "window_len", "window_len_multiple",
            "window_len_multiple_startindex", "window_len_multiple_endindex", "timeOut", "fi_random_seed",
            "fi_cycle", "fi_index", "fi_reg_index", "fi_reg_pos", "fi_reg", "verbose")
COMPILE_KEYS = ("instSelMethod", "include", "exclude", "customInstSelector", "regSelMethod", "regloc",
                "customRegSelector", "includeInjectionTrace", "tracingPropagation", "tracingPropagationOption",
                "generateDotGraph")
TOP_KEYS = ("compileOption", "runOption", "kernelOption", "defaultTimeOut", "defaultTimeout", "timeOut")


class LltfiConfig:
    """What an LLTFI input.yaml says, in this tool's terms (filled by `read_lltfi`)."""

    def __init__(self) -> None:
        self.selector: dict = {}
        self.campaign: dict = {}
        self.blocks: list[tuple[dict, yaml.Node]] = []  # FaultConfig fields per `- run:` block, and its node
        self.notes: list[str] = []
        self.default_timeout: float | None = None
        self.injector: str | None = None  # a customInstselector that names an LLFI software injector


def read_lltfi(reader: Reader, top: dict[str, yaml.Node], opcodes) -> LltfiConfig:
    """Read the LLTFI keys of a config's top level; `opcodes(node, key, names)` resolves opcode names."""
    out = LltfiConfig()
    if "kernelOption" in top:
        for option in reader.strings(top["kernelOption"], "kernelOption"):
            if option != "forceRun":
                raise reader.fail(top["kernelOption"], f"kernelOption: {short(option)} is not an LLFI kernel option "
                                                       "(LLFI knows forceRun)")
        out.notes.append("kernelOption forceRun has no counterpart: lltfi-mlir never stops to ask for confirmation")
    timeouts = sorted((k for k in ("defaultTimeOut", "defaultTimeout", "timeOut") if k in top),
                      key=lambda k: top[k].start_mark.line)
    if len(timeouts) > 1:
        raise reader.fail(top[timeouts[1]], f"{timeouts[0]} and {timeouts[1]} both set the default timeout; keep one")
    if timeouts:
        out.default_timeout = _seconds(reader, top[timeouts[0]], timeouts[0])
    if "compileOption" in top:
        _compile_option(reader, top["compileOption"], out, opcodes)
    if "runOption" in top:
        _run_option(reader, top["runOption"], out)
    return out


def _flag(reader: Reader, node: yaml.Node, key: str, out: LltfiConfig) -> bool:
    """An LLFI boolean; the master lists' placeholder `True/False` is false there (it is not True)."""
    value = reader.value(node)
    if isinstance(value, str) and value.replace(" ", "") in ("True/False", "False/True"):
        out.notes.append(f"{key}: {value!r} (the master list's placeholder) is read as False, as LLFI does")
        return False
    return reader.boolean(node, key)


def _seconds(reader: Reader, node: yaml.Node, key: str) -> float:
    return reader.scalar(node, key, float, lambda v: 0.01 <= v <= 1e6, "seconds, 0.01..1e6 (LLFI's unit)")


def _compile_option(reader: Reader, node: yaml.Node, out: LltfiConfig, opcodes) -> None:
    keys = reader.mapping(node, "compileOption", COMPILE_KEYS)
    sel = out.selector
    if "instSelMethod" in keys:
        methods = keys["instSelMethod"]
        if isinstance(methods, yaml.ScalarNode):  # LLFI's first format: a name, include/exclude beside it
            _old_style_selector(reader, methods, keys, out, opcodes)
        elif isinstance(methods, yaml.SequenceNode):
            for item in methods.value:
                entry = reader.mapping(item, "instSelMethod", ("insttype", "funcname", "customInstselector"))
                for kind, body in entry.items():
                    parts = reader.mapping(body, kind, ("include", "options") if kind == "customInstselector"
                                           else ("include", "exclude"))
                    if kind == "insttype":
                        _insttype(reader, parts, out, opcodes)
                    elif kind == "funcname":
                        _funcname(reader, parts, sel)
                    else:
                        _custom_selector(reader, body, parts, out)
        else:
            raise reader.fail(methods, "instSelMethod must be a list of selectors (insttype, funcname, "
                                       "customInstselector)")
    elif "include" in keys or "exclude" in keys or "customInstSelector" in keys:
        first = next(keys[k] for k in ("include", "exclude", "customInstSelector") if k in keys)
        raise reader.fail(first, "compileOption.include/exclude/customInstSelector need 'instSelMethod: insttype' "
                                 "(or custominstselector) beside them")
    method = reader.choice(keys["regSelMethod"], "regSelMethod", ("regloc", "customregselector")) \
        if "regSelMethod" in keys else "regloc"
    if method == "customregselector":
        name = reader.strings(keys["customRegSelector"], "customRegSelector")[0] if "customRegSelector" in keys \
            else None
        where = keys.get("customRegSelector", keys["regSelMethod"])
        if name == "SoftwareFault":
            raise reader.fail(where, "customRegSelector SoftwareFault belongs to LLFI's software-failure injectors, "
                                     "which lltfi-mlir does not have (it injects hardware faults: bitflip, "
                                     "stuck_at_0, stuck_at_1)")
        raise reader.fail(where, f"customRegSelector {short(name)}: LLFI's custom register selectors are C++ "
                                 "plugins that do not exist here; choose operands with regSelMethod: regloc and "
                                 "regloc (dstreg, allsrcreg, srcreg1..4, allreg), or fi_reg_index in a run block")
    if "customRegSelector" in keys:
        raise reader.fail(keys["customRegSelector"], "customRegSelector needs regSelMethod: customregselector")
    if "regloc" in keys:
        sel["register"] = REGLOC[reader.choice(keys["regloc"], "regloc", tuple(REGLOC))]
    if "includeInjectionTrace" in keys:
        node = keys["includeInjectionTrace"]
        directions = reader.strings(node, "includeInjectionTrace")
        for d in directions:
            if d not in ("forward", "backward"):
                raise reader.fail(node, f"includeInjectionTrace: {short(d)} is not forward or backward")
        sel["trace"] = frozenset(directions)
    tracing = _flag(reader, keys["tracingPropagation"], "tracingPropagation", out) \
        if "tracingPropagation" in keys else False
    max_trace, graphs = 250, False
    if "tracingPropagationOption" in keys:
        options = reader.mapping(keys["tracingPropagationOption"], "tracingPropagationOption",
                                 ("maxTrace", "debugTrace", "mlTrace", "generateCDFG"))
        if "maxTrace" in options:
            max_trace = reader.integer(options["maxTrace"], "maxTrace", 1, 4096)
        if "debugTrace" in options and _flag(reader, options["debugTrace"], "debugTrace", out):
            out.campaign["verbose"] = True
        if "mlTrace" in options and _flag(reader, options["mlTrace"], "mlTrace", out):
            out.campaign["trace_layers"] = True
        if "generateCDFG" in options:
            graphs = _flag(reader, options["generateCDFG"], "generateCDFG", out)
    if "generateDotGraph" in keys:
        graphs = graphs or _flag(reader, keys["generateDotGraph"], "generateDotGraph", out)
    if tracing:
        out.campaign["trace_layers"] = True
        out.campaign["max_trace"] = max_trace
    if graphs:
        if tracing or out.campaign.get("trace_layers"):
            out.campaign["graphs"] = True
        else:
            out.notes.append("generateCDFG draws traced faults: it takes effect with tracingPropagation: True")


def _insttype(reader: Reader, parts: dict, out: LltfiConfig, opcodes) -> None:
    for key in ("include", "exclude"):
        if key not in parts:
            continue
        names = reader.strings(parts[key], f"insttype.{key}")
        without = [n for n in names if n.lower() in NO_SITES]
        if without and key == "include":
            out.notes.append(f"insttype.include: {', '.join(without)} never yield a fault site here (no value "
                             "register, or a block argument in the LLVM dialect)")
        rest = [n for n in names if n.lower() not in NO_SITES]
        if key == "include" and not rest:
            raise reader.fail(parts[key], "insttype.include selects no instruction that has a fault site")
        if rest:
            out.selector["opcodes" if key == "include" else "exclude_opcodes"] = \
                opcodes(parts[key], f"insttype.{key}", rest)


def _funcname(reader: Reader, parts: dict, sel: dict) -> None:
    if "include" in parts:
        names = reader.strings(parts["include"], "funcname.include")
        if names != ["all"]:
            sel["functions"] = frozenset(names)
    if "exclude" in parts:
        sel["exclude_functions"] = frozenset(reader.strings(parts["exclude"], "funcname.exclude"))


def _old_style_selector(reader: Reader, method: yaml.Node, keys: dict, out: LltfiConfig, opcodes) -> None:
    name = reader.choice(method, "instSelMethod", ("insttype", "funcname", "custominstselector",
                                                   "customInstselector"))
    parts = {k: keys[k] for k in ("include", "exclude") if k in keys}
    if name == "insttype":
        _insttype(reader, parts, out, opcodes)
    elif name == "funcname":
        _funcname(reader, parts, out.selector)
    else:
        if "customInstSelector" not in keys:
            raise reader.fail(method, "instSelMethod: custominstselector needs customInstSelector: NAME")
        selector = reader.strings(keys["customInstSelector"], "customInstSelector")[0]
        raise reader.fail(keys["customInstSelector"], _unknown_selector(selector))


def _unknown_selector(name: str) -> str:
    if "(" in name or name in SOFTWARE_FAULT_TYPES:
        return (f"customInstselector {short(name)} is one of LLFI's software-failure injectors, which lltfi-mlir "
                "does not have: it injects hardware faults (bitflip, stuck_at_0, stuck_at_1) into instructions")
    return (f"customInstselector {short(name)} is an LLFI C++ plugin that does not exist here (supported: "
            "CustomTensorOperator, llfiindex, maingraph); select with insttype and funcname instead")


def _options(reader: Reader, parts: dict) -> list[str]:
    """Selector options: a list, or one string with several options (the ML master list writes both)."""
    if "options" not in parts:
        return []
    return [word for item in reader.strings(parts["options"], "customInstselector.options") for word in item.split()]


def _custom_selector(reader: Reader, body: yaml.Node, parts: dict, out: LltfiConfig) -> None:
    include = reader.strings(parts["include"], "customInstselector.include") if "include" in parts else []
    if len(include) != 1:
        raise reader.fail(body, "customInstselector.include takes one selector: CustomTensorOperator, llfiindex "
                                "or maingraph")
    options = _options(reader, parts)
    where = parts.get("options", body)
    if include[0] == "llfiindex":
        indices = set()
        for option in options:
            key, _, value = option.lstrip("-").partition("=")
            if key != "injecttoindex" or not value.isdigit():
                raise reader.fail(where, f"llfiindex option {short(option)}: expected -injecttoindex=N (a static "
                                         "index as `lltfi-mlir sites BUILD` lists them)")
            indices.add(int(value))
        if not indices:
            raise reader.fail(body, "llfiindex needs options: [-injecttoindex=N, ...]")
        out.selector["instructions"] = frozenset(indices)
        out.selector["require_operator"] = False
        out.selector.setdefault("opcodes", GROUPS["all"])  # LLFI: the index alone selects
        return
    if include[0] == "maingraph":  # early LLTFI: every instruction of onnx-mlir's main_graph function
        out.selector.setdefault("opcodes", GROUPS["all"])
        out.notes.append("customInstselector maingraph: every instruction kind inside the model's operators "
                         "(LLTFI's main_graph function)")
        return
    if include[0] != "CustomTensorOperator":
        if "(" in include[0]:
            out.injector = include[0]
        raise reader.fail(body, _unknown_selector(include[0]))
    names, numbers = ["all"], ["0"]
    for option in options:
        key, _, value = option.lstrip("-").partition("=")
        if key == "layerName":
            names = [v.strip() for v in value.split(";") if v.strip()]
        elif key == "layerNo":
            numbers = [v.strip() for v in value.split(";") if v.strip()]
        else:
            raise reader.fail(where, f"customInstselector option {short(option)} is not supported "
                                     "(use -layerName=conv;relu and -layerNo=2;0)")
    if len(numbers) == 1 and len(names) > 1:
        numbers = numbers * len(names)
    if len(numbers) != len(names):
        raise reader.fail(where, "-layerNo must give one number per -layerName entry")
    layers: set[tuple[str, int]] = set()
    for name, number in zip(names, numbers):
        if not number.isdigit() or len(number) > 9:
            raise reader.fail(where, f"-layerNo={short(number)}: expected a non-negative integer (0 = all)")
        if name.lower() == "all":
            if int(number) != 0:
                raise reader.fail(where, "-layerName=all takes -layerNo=0")
            continue
        op_types = LAYER_NAMES.get(name.lower(), (name,))
        layers |= {(t, int(number)) for t in op_types}
    if layers:
        out.selector["layers"] = frozenset(layers)


def _run_option(reader: Reader, node: yaml.Node, out: LltfiConfig) -> None:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise reader.fail(node, "runOption must be a list of '- run:' entries")
    for item in node.value:
        entry = reader.mapping(item, "runOption", ("run",))
        if "run" not in entry:
            raise reader.fail(item, "runOption entries look like '- run: {numOfRuns: 5, fi_type: bitflip}'")
        out.blocks.append((_run_block(reader, entry["run"], out), entry["run"]))
    if len(out.blocks) > 1:
        for fields, block in out.blocks:
            if "runs" not in fields:
                raise reader.fail(block, "each of several run blocks needs numOfRuns (as in LLFI)")


def _run_block(reader: Reader, node: yaml.Node, out: LltfiConfig) -> dict:
    keys = reader.mapping(node, "runOption.run", RUN_KEYS)
    fields: dict = {"line": reader.line(node)}
    if "numOfRuns" in keys:
        fields["runs"] = reader.integer(keys["numOfRuns"], "numOfRuns", 1, 10**9)
    if "fi_type" in keys:
        value = reader.required(keys["fi_type"], "fi_type")
        if value in SOFTWARE_FAULT_TYPES or (isinstance(value, str) and "(" in value):
            name = out.injector or value
            raise reader.fail(keys["fi_type"], f"fi_type {short(value)}: LLFI's software-failure injector "
                                               f"{short(name)} is not supported; lltfi-mlir injects hardware faults "
                                               "(bitflip, stuck_at_0, stuck_at_1)")
        fields["type"] = reader.choice(keys["fi_type"], "fi_type", LLFI_FAULT_TYPES)
    if "fi_bit" in keys:
        fields["bit"] = reader.integer(keys["fi_bit"], "fi_bit", 0, 63)
    if "fi_num_bits" in keys:
        fields["num_bits"] = reader.integer(keys["fi_num_bits"], "fi_num_bits", 1, 64)
    if "fi_max_multiple" in keys:
        fields["max_multiple"] = reader.integer(keys["fi_max_multiple"], "fi_max_multiple", 1, MAX_FAULTS)
    windows = [k for k in ("window_len", "window_len_multiple", "window_len_multiple_startindex") if k in keys]
    if len(windows) > 1:
        raise reader.fail(keys[windows[1]], f"{windows[0]} and {windows[1]} cannot be given together (as in LLFI)")
    if "window_len" in keys:
        fields["window_len"] = reader.integer(keys["window_len"], "window_len", 1, 1 << 31)
        fields.setdefault("max_multiple", 2)  # LLFI: a second fault 1..window_len instances later
    if "window_len_multiple" in keys:
        fields["window_len"] = reader.integer(keys["window_len_multiple"], "window_len_multiple", 1, 1 << 31)
    if ("window_len_multiple_startindex" in keys) != ("window_len_multiple_endindex" in keys):
        given = "window_len_multiple_startindex" if "window_len_multiple_startindex" in keys else \
            "window_len_multiple_endindex"
        raise reader.fail(keys[given], "window_len_multiple_startindex and window_len_multiple_endindex go together")
    if "window_len_multiple_startindex" in keys:
        start = reader.integer(keys["window_len_multiple_startindex"], "window_len_multiple_startindex", 1, 1 << 31)
        end = reader.integer(keys["window_len_multiple_endindex"], "window_len_multiple_endindex", 1, 1 << 31)
        if start > end:
            raise reader.fail(keys["window_len_multiple_startindex"],
                              f"window_len_multiple_startindex {start} is larger than the endindex {end}")
        fields["window_start"], fields["window_len"] = start, end
    if ("window_len_multiple" in keys or "window_len_multiple_startindex" in keys) and "max_multiple" not in fields:
        fields["max_multiple"] = LLTFI_DEFAULT_MULTIPLE
        out.notes.append(f"run block at line {fields['line']}: a multiple-fault window without fi_max_multiple "
                         f"injects up to {LLTFI_DEFAULT_MULTIPLE} faults per run, as in LLTFI")
    if fields.get("max_multiple", 1) > 1 and "window_len" not in fields:
        fields["window_len"] = 0  # LLFI: each next fault 1..(instances in the run - 1) after the previous
    if "timeOut" in keys:
        fields["timeout"] = _seconds(reader, keys["timeOut"], "timeOut")
    if "fi_random_seed" in keys:
        fields["seed"] = reader.integer(keys["fi_random_seed"], "fi_random_seed", 0, (1 << 63) - 1)
    if "fi_cycle" in keys:
        fields["cycle"] = reader.integer(keys["fi_cycle"], "fi_cycle", 0, (1 << 62))
    if "fi_index" in keys:
        index = reader.integer(keys["fi_index"], "fi_index", 0, 1 << 31)
        if "cycle" in fields:
            out.notes.append(f"run block at line {fields['line']}: fi_index is ignored when fi_cycle is given, "
                             "as in LLFI's runtime")
        else:
            fields["instruction"] = (index, keys["fi_index"])
    if "fi_reg_index" in keys:
        reg_index = reader.integer(keys["fi_reg_index"], "fi_reg_index", 0, 4)
        if "cycle" in fields:  # each register is a site of its own: the dynamic index names it already
            out.notes.append(f"run block at line {fields['line']}: fi_reg_index is implied by fi_cycle here (every "
                             "register is a fault site of its own, numbered by the dynamic index)")
        else:
            fields["reg_index"] = (reg_index, keys["fi_reg_index"])
    for key in ("fi_reg_pos", "fi_reg"):
        if key in keys:
            reader.integer(keys[key], key, 0, 1 << 16)
            out.notes.append(f"{key} is written by LLFI's runtime into its fault log but never read back: no effect")
    if "verbose" in keys and _flag(reader, keys["verbose"], "verbose", out):
        out.campaign["verbose"] = True
    return fields


def register_of(regloc: str, index: int) -> str | None:
    """The register that LLFI's fi_reg_index names under a regloc choice (None: there is none)."""
    if regloc == "dst":
        return "dst" if index == 0 else None
    if regloc == "allsrc":
        return f"src{index + 1}" if index < 4 else None
    if regloc == "all":
        return "dst" if index == 0 else f"src{index}"
    return regloc if index == 0 else None  # srcN: one register
