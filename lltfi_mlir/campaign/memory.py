"""Memory fault targets: bits of stored weights flipped for a whole inference (persistent faults),
and bits of operator outputs in memory (transient faults).

A weight target is one externalized initializer of a build: the manifest's "weights" list, whose
i-th entry is entry i of the runtime's `lltfi_weight_table` (llvm_backend/weights.py). Initializers
of at most RESOURCE_THRESHOLD (64) elements are not targets: they are inlined into the code as
immediates or constant-pool literals, which are no data symbol of the model (and hold only biases
of a few channels and small shape constants); integer constants (indices, shapes) are no weights
either. Tensors the compiler derives from initializers are targets under their own name: a folded
BatchNormalization's `<node>_scale` and `<node>_shift` -- the memory faults hit what the program
stores. A Gemm's or MatMul's constant B keeps its initializer's name but is stored in column panels
(frontend/builders.ColumnPanels); its manifest entry says so ("panels": width P, B's k and n, and
whether B is the initializer transposed, Gemm transB), and `source_element` maps a stored element
(the trials' dyn_index) to its index in the initializer.

Activations (transient faults): one bit of one element of a selected operator's output buffer,
flipped right after the operator wrote it and before anything reads it. In optimized builds every
operator is an outlined function whose call is followed, in instrumented builds, by
`lltfi_node_end` for each output tensor (dialect_passes/node_boundaries.py); the runtime flips the
element there (runtime/memory_faults.c). The targets come from the boundary attributes of the
build's model.linalg.mlir; a Conv whose Relu is fused into its store has one output buffer, the
Relu's. Weight and activation trials alike are whole inferences in a fork-server child (engine
simple).

Trials are drawn uniformly over (input set, element, bit) of the selected tensors; each is a
`Trial` whose `memory` starts its trial line (weights: the tensor's table entries, every stored
copy flipped alike; activations: the node and which output), `target` is the element and `bit` the
bit (or the runtime draws `num_bits` bits from the seed). The fault record names the tensor's
number as its `site`, so the database's sites table holds one row per tensor and the per-layer,
per-tensor and per-bit results come out of the same queries as for instruction faults.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..build import Build
from ..dialect_passes.instrument_sites import node_info_from_manifest
from ..dialect_passes.sites import SiteSelector
from ..errors import UsageError
from ..instrument import InstrumentedBuild
from .config import CampaignConfig
from .plan import Trial, _fault_of

TARGETS = ("instructions", "weights", "activations")
# Weights are floating-point tensors; integer constants (indices, shapes) are no targets.
FLOAT_DTYPES = ("float32", "float64", "float16")
TYPE_NAMES = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64", "int32": "i32",
              "int16": "i16", "int8": "i8", "uint8": "i8", "uint16": "i16", "uint32": "i32", "uint64": "i64",
              "bool": "i8"}


@dataclass(frozen=True)
class WeightTarget:
    """One tensor a memory fault may hit: a weight (entry `index` of the runtime's weight table) or
    an activation (an operator's output, numbered `index` by the campaign)."""

    index: int          # weights: its first copy's table entry; the site id in the database
    tensor: str
    count: int          # elements
    itemsize: int       # bytes per element
    dtype: str
    node: str | None    # the first node reading it (per-layer results)
    op_type: str | None
    layer: int | None
    # Every table entry holding this tensor: each outlined node stores the constants it reads, so a
    # tensor read by two nodes (an OD duplicate and its original) has two copies, all hit at once.
    copies: tuple[int, ...] = ()
    # Activations: the ONNX node index reporting the tensor at its boundary, and which of its outputs.
    activation: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        return 8 * self.itemsize

    @property
    def prefix(self) -> str:
        """What the fork-server's trial line starts with (runtime/memory_faults.h)."""
        if self.activation is not None:
            return f"A {self.index} {self.activation[0]} {self.activation[1]} {self.itemsize}"
        return f"W {','.join(map(str, self.copies))} {self.itemsize}"

    def site_row(self) -> tuple:
        """Its row in the database's sites table (function column: the tensor's name)."""
        kind = "activation" if self.activation is not None else "weight"
        return (self.index, self.tensor, kind, TYPE_NAMES.get(self.dtype, self.dtype), "memory", self.node,
                self.op_type, self.layer, self.count)


def source_element(entry: dict, element: int) -> int:
    """The flat index in the ONNX initializer of element `element` of a weight table entry as stored
    (the same index unless the entry has "panels": panel p holds B's columns p*P .. p*P + w - 1 as K
    rows of w, w = P but in the last panel, N % P)."""
    panels = entry.get("panels")
    if not panels:
        return element
    width, k, n = panels["width"], panels["k"], panels["n"]
    panel, rest = divmod(element, k * width)
    w = width if panel < n // width else n % width
    row, col = rest // w, panel * width + rest % w
    return col * k + row if panels["transposed"] else row * n + col


def weight_targets(build: Build, selector: SiteSelector, tensors: frozenset[str] = frozenset()) -> list[WeightTarget]:
    """The build's weight tensors selected by name (`tensors`, empty: any) and by the operators,
    nodes or layers reading them (a tensor is selected when any reader is)."""
    table = build.manifest.get("weights")
    if table is None:
        raise UsageError(f"{build.directory} was compiled before weight faults existed; compile the model again")
    info = node_info_from_manifest(build.manifest)
    unknown = sorted(tensors - {w["tensor"] for w in table})
    if unknown:
        names = ", ".join(w["tensor"] for w in table[:20])
        raise UsageError(f"weight tensor(s) {', '.join(unknown)} not among this build's weight targets "
                         f"({names or 'none'}{', ...' if len(table) > 20 else ''}; initializers of at most 64 "
                         "elements are inlined into the code and are no targets)")
    node_selector = SiteSelector(operators=selector.operators, exclude_operators=selector.exclude_operators,
                                 nodes=selector.nodes, exclude_nodes=selector.exclude_nodes, layers=selector.layers)
    copies: dict[tuple, list[int]] = {}
    for index, entry in enumerate(table):
        copies.setdefault((entry["tensor"], entry["count"], entry["itemsize"], entry["dtype"]), []).append(index)
    targets = []
    for (tensor, count, itemsize, dtype), indices in copies.items():
        all_readers = dict.fromkeys(r for i in indices for r in table[i]["readers"])
        readers = [r for r in all_readers if node_selector.accepts_node(r, info.get(r))]
        if tensors and tensor not in tensors or not readers or not count or dtype not in FLOAT_DTYPES:
            continue
        node = readers[0]
        targets.append(WeightTarget(indices[0], tensor, count, itemsize, dtype, node,
                                    info[node].op_type if node in info else None,
                                    info[node].layer if node in info else None, tuple(indices)))
    if not targets:
        raise UsageError("the selection matches no weight tensor of this model (check fault.tensors, operators, "
                         "nodes and layers against the manifest's \"weights\" list)")
    return targets


_BOUNDARY = re.compile(r"lltfi\.boundary = array<i64: ([0-9, ]+)>")
_TENSOR = re.compile(r"tensor<([^>]*)>")
_FLOAT_BYTES = {"f32": 4, "f64": 8, "f16": 2}


def activation_targets(build: Build, selector: SiteSelector) -> list[WeightTarget]:
    """The floating-point outputs of the selected operators, as their outlined functions report them
    at their boundaries (the importer's `lltfi.boundary` attribute in model.linalg.mlir: ONNX node
    index, then bytes, element bytes and last reader per result). A Conv whose Relu is fused into its
    store reports the Relu's output: that is the buffer the program writes."""
    nodes = build.manifest.get("nodes", [])
    info = node_info_from_manifest(build.manifest)
    node_selector = SiteSelector(operators=selector.operators, exclude_operators=selector.exclude_operators,
                                 nodes=selector.nodes, exclude_nodes=selector.exclude_nodes, layers=selector.layers)
    boundaries: dict[int, tuple[list[int], list[str]]] = {}  # node index -> (attribute values, result types)
    with open(build.directory / "model.linalg.mlir") as handle:
        for line in handle:
            match = _BOUNDARY.search(line) if "func.func private @node_" in line else None
            if match:
                values = [int(v) for v in match.group(1).split(",")]
                signature = line[:match.start()].rpartition(" attributes {")[0].rpartition(") -> ")[2]
                boundaries[values[0]] = (values, _TENSOR.findall(signature))
    found = bool(boundaries)
    # A Relu fused into its producer's store has no boundary: the producer's buffer holds its output.
    fused = {node["inputs"][0]: node["outputs"][0]["name"] for i, node in enumerate(nodes)
             if node["op_type"] == "Relu" and i not in boundaries and node["inputs"] and node["outputs"]}
    targets: list[WeightTarget] = []
    for node_index, (values, results) in sorted(boundaries.items()):
        name = nodes[node_index]["name"] if node_index < len(nodes) else None
        if name is None or not node_selector.accepts_node(name, info.get(name)):
            continue
        outputs = [o["name"] for o in nodes[node_index]["outputs"]]
        for k, spec in enumerate(results):
            element = spec.rpartition("x")[2]
            nbytes, size = values[1 + 3 * k], values[2 + 3 * k]
            if element not in _FLOAT_BYTES or size != _FLOAT_BYTES[element] or not nbytes:
                continue
            tensor = fused.get(outputs[k], outputs[k]) if k < len(outputs) else f"output {k}"
            targets.append(WeightTarget(len(targets), f"{tensor} ({name})", nbytes // size, size,
                                        {"f32": "float32", "f64": "float64", "f16": "float16"}[element], name,
                                        info[name].op_type, info[name].layer, activation=(node_index, k)))
    if not found:
        raise UsageError("activation faults need operator boundaries: compile with --codegen optimized")
    if not targets:
        raise UsageError("the selection matches no operator output of this model (check operators, nodes and "
                         "layers against the manifest)")
    return targets


def population(targets: Sequence[WeightTarget], n_inputs: int) -> int:
    """Every (input set, element, bit)."""
    return n_inputs * sum(t.count * t.width for t in targets)


def uniform_weight_trial(config: CampaignConfig, targets: Sequence[WeightTarget], n_inputs: int,
                         index: int) -> Trial:
    """Trial `index`: uniform over (input set, element, bit); a pure function of (seed, index)."""
    rng = np.random.default_rng([config.seed, index])
    fault = _fault_of(config, index)
    sizes = np.array([t.count * t.width for t in targets], dtype=np.int64)
    flat = int(rng.integers(int(sizes.sum())))
    which = int(np.searchsorted(np.cumsum(sizes), flat, side="right"))
    target = targets[which]
    offset = flat - int(sizes[:which].sum())
    element, bit = divmod(offset, target.width)
    input_index = int(rng.integers(n_inputs))
    seed = int(rng.integers(1, 2**62))
    if fault.bit is not None:
        bit = fault.bit
    elif fault.num_bits > 1:
        bit = None  # the runtime draws num_bits distinct bits from the seed
    return Trial(index, input_index, element, fault, bit, seed, memory=target.prefix)


def exhaustive_weight_trials(config: CampaignConfig, targets: Sequence[WeightTarget],
                             n_inputs: int) -> Iterator[Trial]:
    """Every (input set, tensor, element, bit), in that order."""
    fault = config.faults[0]
    index = 0
    for input_index in range(n_inputs):
        for target in targets:
            for element in range(target.count):
                for bit in range(target.width):
                    yield Trial(index, input_index, element, fault, bit, index + 1, memory=target.prefix)
                    index += 1


def check_memory_campaign(config: CampaignConfig, build: Build, engine: str | None) -> None:
    """Refuse what memory faults do not combine with, before any work."""
    kind = config.target[:-1]  # weight | activation
    if build.is_program:
        raise UsageError(f"{kind} faults need an ONNX model (a C/C++ program has no tensors)")
    if config.level != "instruction":
        raise UsageError(f"{kind} faults and --level operator do not combine (choose one fault target)")
    if config.target == "activations" and config.trace_layers:
        raise UsageError("layer tracing of activation faults is not supported (weight faults: --trace layers)")
    if config.max_trace:
        raise UsageError(f"{kind} faults change no instruction: trace them with --trace layers, not instructions")
    if config.draw == "per_layer":
        raise UsageError(f"per-layer draws are for instruction faults; {kind} faults draw uniformly or exhaustively")
    if engine == "walk":
        raise UsageError(f"{kind} faults run with --engine simple (the default for them)")
    if any(f.max_multiple > 1 or f.cycle is not None for f in config.faults):
        raise UsageError(f"a {kind} fault corrupts one element: max_multiple and fi_cycle do not apply")


def weight_plan(config: CampaignConfig, targets: Sequence[WeightTarget], n_inputs: int, runs: int,
                exhaustive: bool) -> tuple[int, Iterator[Trial]]:
    """How many trials, and the trials (ids 0..total-1)."""
    if exhaustive:
        return population(targets, n_inputs), exhaustive_weight_trials(config, targets, n_inputs)
    return runs, (uniform_weight_trial(config, targets, n_inputs, i) for i in range(runs))


def uninstrumented(build: Build) -> InstrumentedBuild:
    """The build's own executable as the campaign's program: weight faults need no hooks (its
    fork-server applies them, runtime/memory_faults.c). Its inputs list and profile cache live in
    `<build>/memory/`."""
    directory = build.directory / "memory"
    directory.mkdir(exist_ok=True)
    return InstrumentedBuild(build, directory, build.executable, [], 0, 0, 0, [])
