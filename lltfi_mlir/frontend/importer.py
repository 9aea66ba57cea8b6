"""ONNX graph -> MLIR module in upstream dialects, one handler per ONNX op type.

Every op a node produces is built under `Location.name(<node name>)`, so each `llvm.fmul` that the
lowering eventually emits still names the ONNX node it computes; the fault-site selection by
operator type, node name and layer number rests on that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import func

from ..errors import ModelImportError
from . import builders as b
from .boundaries import ATTRIBUTE as BOUNDARY
from .boundaries import boundary_attribute, last_uses
from .onnx_loader import LoadedModel
from .onnx_reader import OnnxSource
from .tiled import AccumulatorSlots, TilePolicy

# Nodes that only reinterpret a buffer: outlined, they would return an alias, which the buffer
# deallocation turns into a copy. They stay in the graph function.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Constant"})

Handler = Callable[["Importer", onnx.NodeProto], list]
HANDLERS: dict[str, Handler] = {}
# Op types whose handlers build every element type they accept (and refuse the others themselves).
# Other handlers build float32 arithmetic: a run-time input of another type is refused before them.
ANY_DTYPE: set[str] = set()

# Element types of traced and op-hooked values (float32 faults only).
FLOAT_TYPES = {onnx.TensorProto.FLOAT}
_T = onnx.TensorProto
# ONNX element types the importer computes with (integers as signless MLIR integers, bool as i1).
ELEMENT_TYPES: dict[int, np.dtype] = {
    _T.FLOAT: np.dtype(np.float32), _T.DOUBLE: np.dtype(np.float64), _T.FLOAT16: np.dtype(np.float16),
    _T.INT64: np.dtype(np.int64), _T.INT32: np.dtype(np.int32), _T.INT16: np.dtype(np.int16),
    _T.INT8: np.dtype(np.int8), _T.UINT64: np.dtype(np.uint64), _T.UINT32: np.dtype(np.uint32),
    _T.UINT16: np.dtype(np.uint16), _T.UINT8: np.dtype(np.uint8), _T.BOOL: np.dtype(np.bool_),
}
UNSIGNED_TYPES = {_T.UINT8, _T.UINT16, _T.UINT32, _T.UINT64}


def _io_types() -> set[int]:
    """Element types of model inputs and outputs the native program reads and writes: those the
    glue (llvm_backend/glue.py) has .npy codes for; float32 only with a glue that has none."""
    try:
        from ..llvm_backend.glue import DTYPE_CODES
    except ImportError:
        return {onnx.TensorProto.FLOAT}
    return {t for t, dtype in ELEMENT_TYPES.items() if dtype.name in DTYPE_CODES}


IO_TYPES = _io_types()
OP_HOOK = "lltfi_op_f32"  # identity defined in runtime/fi_runtime.c


def handler(*op_types: str, any_dtype: bool = False) -> Callable[[Handler], Handler]:
    """Register a function as the importer of the given ONNX op types; `any_dtype` says it handles
    run-time inputs of other element types than float32 (integers, bool, float16/64) itself."""

    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = fn
            if any_dtype:
                ANY_DTYPE.add(op_type)
        return fn

    return register


@dataclass(frozen=True)
class ImportConfig:
    """Options of the importer."""

    # Name of the entry function; the C controller calls `_mlir_ciface_<entry>`.
    entry: str = "main_graph"
    # Layer tracing: also return every node's float output, after the model's own outputs. The
    # arithmetic is unchanged (returned values are only kept alive, or copied when they alias).
    trace: bool = False
    # Operator-level injection (TensorFI/PyTorchFI style): every element of every node's float output
    # passes through an opaque identity call, `lltfi_op_f32`, whose results are the fault sites.
    op_hooks: bool = False
    # "optimized": Conv/Gemm/MatMul/MaxPool/AveragePool as tiled vector loops (frontend/tiled.py) that perform
    # each output element's scalar operations in the reference order; "reference": plain
    # linalg.generic ops lowered to scalar loops, as the paper's tool does.
    codegen: str = "optimized"
    # Lanes per vector in the optimized code (8 x f32 fills an AVX2 register).
    vector_lanes: int = 8


def supported_op_types() -> list[str]:
    _load_handlers()
    return sorted(HANDLERS)


def _load_handlers() -> None:
    from . import ops  # noqa: F401  (registers the handlers)


def _refuse_unsupported(nodes: list[onnx.NodeProto]) -> None:
    """One error listing every unsupported operator and its nodes."""
    _load_handlers()
    missing: dict[str, list[str]] = {}
    for node in nodes:
        if node.op_type not in HANDLERS or node.domain not in ("", "ai.onnx"):
            key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            missing.setdefault(key, []).append(node.name)
    if missing:
        parts = [f"{op} ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                 for op, names in sorted(missing.items())]
        raise ModelImportError("unsupported ONNX operators: " + "; ".join(parts))


def check_operators(source: OnnxSource) -> None:
    """Refuse unsupported operators from the bare graph, before any weight is read or folded (for a
    large model that took seconds and gigabytes). Only nodes sure to survive folding count: those
    fed by a run-time input through anything but Shape/Size, and those outside the default domain;
    check_supported() judges the rest after prepare()."""
    graph = source.model.graph
    constant = {i.name for i in graph.initializer} | set(source.weights)
    runtime = {i.name for i in graph.input if i.name not in constant}
    kept = []
    for node in graph.node:
        live = node.op_type not in ("Shape", "Size") and any(n in runtime for n in node.input)
        if live:
            runtime.update(node.output)
        if live or node.domain not in ("", "ai.onnx"):
            kept.append(node)
    _refuse_unsupported(kept)


def check_supported(loaded: LoadedModel) -> None:
    """Refuse the whole model before any work if any op is unsupported, listing every offender."""
    _refuse_unsupported(list(loaded.model.graph.node))
    for name in loaded.inputs + loaded.outputs:
        dtype = loaded.dtypes.get(name)
        if name in loaded.constants and name in loaded.outputs:
            continue
        if dtype not in IO_TYPES:
            kind = onnx.TensorProto.DataType.Name(dtype) if dtype else "unknown"
            allowed = ", ".join(onnx.TensorProto.DataType.Name(t).lower() for t in sorted(IO_TYPES))
            raise ModelImportError(f"tensor '{name}' has element type {kind}; only "
                                   f"{'float32' if IO_TYPES == FLOAT_TYPES else allowed} model "
                                   "inputs and outputs are supported")
        if name not in loaded.shapes:
            raise ModelImportError(f"tensor '{name}' has no static shape after shape inference")


class Importer:
    """Builds one `func.func` from a prepared ONNX graph."""

    def __init__(self, loaded: LoadedModel, config: ImportConfig = ImportConfig()) -> None:
        self.loaded = loaded
        self.config = config
        self.opset = loaded.opset
        self.values: dict[str, ir.Value] = {}
        self.pool = b.ConstantPool()
        self.node: onnx.NodeProto | None = None
        # Names read by some node or returned: optional outputs outside this set may be ignored.
        self.used = {n for node in loaded.model.graph.node for n in node.input} | set(loaded.outputs)
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in loaded.model.graph.node:
            for name in dict.fromkeys(node.input):
                self.consumers.setdefault(name, []).append(node)
        self.fused: set[str] = set()  # nodes computed inside another node's kernel

    # -- helpers for handlers -------------------------------------------------------------------
    def error(self, message: str) -> ModelImportError:
        node = self.node
        return ModelImportError(message, node.name if node else None, node.op_type if node else None,
                                self.opset)

    def attrs(self, node: onnx.NodeProto) -> dict[str, object]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def is_used(self, name: str) -> bool:
        return bool(name) and name in self.used

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant input (initializer or folded), or None if computed at run time."""
        return self.loaded.constants.get(name) if name else None

    def require_const(self, name: str, what: str) -> np.ndarray:
        value = self.const(name)
        if value is None:
            raise self.error(f"{what} must be a constant (input '{name}' is computed at run time)")
        return value

    def value(self, name: str) -> ir.Value:
        """The tensor for an input name, materialising constants at their own type on first use."""
        if name in self.values:
            return self.values[name]
        array = self.const(name)
        if array is None:
            raise self.error(f"input '{name}' is not produced by any node")
        if b.numpy_element(array.dtype) is None:
            raise self.error(f"constant '{name}' of dtype {array.dtype} cannot be used as a tensor")
        val = self.pool.constant(array, name)  # weights: no copy
        self.values[name] = val
        return val

    def dtype(self, name: str) -> int:
        """The ONNX element type of a tensor name (float32 when shape inference left it unknown)."""
        array = self.const(name)
        if array is not None:
            for onnx_type, np_type in ELEMENT_TYPES.items():
                if array.dtype == np_type:
                    return onnx_type
        return self.loaded.dtypes.get(name) or onnx.TensorProto.FLOAT

    def unsigned(self, name: str) -> bool:
        return self.dtype(name) in UNSIGNED_TYPES

    def element(self, onnx_type: int) -> ir.Type:
        """The MLIR element type of an ONNX element type; others are refused naming the node."""
        np_type = ELEMENT_TYPES.get(onnx_type)
        if np_type is None:
            kind = onnx.TensorProto.DataType.Name(onnx_type) if onnx_type else "unknown"
            raise self.error(f"element type {kind} is not supported")
        return b.numpy_element(np_type)

    @property
    def optimized(self) -> bool:
        return self.config.codegen == "optimized"

    @property
    def tile_policy(self) -> TilePolicy:
        return TilePolicy(lanes=self.config.vector_lanes)

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.values:
            return b.shape_of(self.values[name])
        if name in self.loaded.shapes:
            return self.loaded.shapes[name]
        raise self.error(f"no static shape known for '{name}'")

    # -- the import itself ----------------------------------------------------------------------
    def import_module(self) -> ir.Module:
        """Must be called inside an active `ir.Context`."""
        check_supported(self.loaded)
        module = ir.Module.create(loc=ir.Location.unknown())
        with ir.Location.unknown():
            return self._build(module)

    def _build(self, module: ir.Module) -> ir.Module:
        self.module = module
        loaded = self.loaded
        in_types = [b.tensor_type(loaded.shapes[n], self.element(self.dtype(n))) for n in loaded.inputs]
        self.traced = []
        if self.config.trace:
            seen: set[str] = set()  # graph outputs are traced too (as copies): the last layer counts
            for node in loaded.model.graph.node:
                for name in node.output:
                    if (name and name not in seen and name in loaded.shapes and name not in loaded.constants
                            and loaded.dtypes.get(name) in FLOAT_TYPES):
                        self.traced.append((node.name, name))
                        seen.add(name)
        out_types = [b.tensor_type(loaded.shapes[n], self.element(self.dtype(n)))
                     for n in list(loaded.outputs) + [t for _, t in self.traced]]
        with ir.InsertionPoint(module.body), ir.Location.name("graph"):
            if self.config.op_hooks:
                hook = func.FuncOp(OP_HOOK, ir.FunctionType.get([b.f32()], [b.f32()]))
                hook.sym_visibility = ir.StringAttr.get("private")
            fn = func.FuncOp(self.config.entry, ir.FunctionType.get(in_types, out_types))
            fn.attributes["llvm.emit_c_interface"] = ir.UnitAttr.get()
            block = fn.add_entry_block()
            self.slots = AccumulatorSlots(block)
            for name, arg in zip(loaded.inputs, block.arguments):
                self.values[name] = arg
            nodes = loaded.model.graph.node
            self.node_index = {id(node): i for i, node in enumerate(nodes)}
            self.last_use = last_uses(nodes, VIEW_OPS, [*loaded.outputs, *(t for _, t in self.traced)])
            with ir.InsertionPoint(block):
                for node in nodes:
                    if node.name not in self.fused:
                        self._import_node(node)
                self.node = None
                results = []
                for name in list(loaded.outputs) + [t for _, t in self.traced]:
                    with ir.Location.name(name):
                        val = self.value(name)
                        if val in results or name in loaded.inputs or name in loaded.constants:
                            # A returned argument/constant/alias still needs its own buffer.
                            val = b.elementwise([val], lambda x: x)
                    results.append(val)
                func.ReturnOp(results)
        return module

    def fused_activation(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto, list] | None:
        """The Relu or Clip that a tiled Conv applies to its accumulators before storing them (one
        buffer pass less), with its bounds: [(maximum or minimum, bound)], the ops its own handler
        builds per element, in the same order, under its location. Clip's bounds must be float
        constants (ReLU6 in MobileNet); any other Clip stays a node of its own."""
        if not self.optimized or self.config.op_hooks or node.op_type != "Conv":
            return None
        consumers = self.consumers.get(node.output[0], [])
        if len(consumers) != 1 or node.output[0] in self.loaded.outputs:
            return None
        (consumer,) = consumers
        if consumer.op_type == "Relu":
            return consumer, [("maximum", 0.0)]
        if consumer.op_type != "Clip" or self.dtype(node.output[0]) != onnx.TensorProto.FLOAT:
            return None
        if self.opset < 11:
            attrs = self.attrs(consumer)
            bounds = [attrs.get("min"), attrs.get("max")]
        else:
            bounds = []
            for index in (1, 2):
                name = consumer.input[index] if len(consumer.input) > index else ""
                value = self.const(name) if name else None
                if name and (value is None or np.asarray(value).size != 1 or np.asarray(value).dtype.kind != "f"):
                    return None
                bounds.append(None if value is None else float(np.asarray(value).reshape(())))
        return consumer, [(op, bound) for op, bound in zip(("maximum", "minimum"), bounds) if bound is not None]

    def _import_node(self, node: onnx.NodeProto) -> None:
        self.node = node
        self.pool.reader = node.name
        if node.op_type not in ANY_DTYPE:
            for name in node.input:
                if name and self.const(name) is None and self.dtype(name) != onnx.TensorProto.FLOAT:
                    kind = onnx.TensorProto.DataType.Name(self.dtype(name))
                    raise self.error(f"input '{name}' has element type {kind}; {node.op_type} is "
                                     "supported on float32 only")
        fused = self.fused_activation(node)
        with ir.Location.name(node.name):
            if self.config.codegen == "optimized" and node.op_type not in VIEW_OPS:
                outputs = self._outlined(node)
            else:
                outputs = HANDLERS[node.op_type](self, node)
        names = list(node.output)
        if fused is not None:  # the Conv's result is the activation's output (traced builds: both)
            activation = fused[0]
            self.fused.add(activation.name)
            names = [activation.output[0]] if len(outputs) == 1 else [node.output[0], activation.output[0]]
        if self.config.codegen == "optimized" and node.op_type not in VIEW_OPS:  # the call's outputs
            returned = [(names[i] if i < len(names) else "", v) for i, v in enumerate(outputs) if v is not None]
            self.outlined_fn.attributes[BOUNDARY] = boundary_attribute(self.node_index[id(node)], returned,
                                                                       self.last_use)
        for name, val in zip(names, outputs):
            if not name or val is None:
                continue
            if self.config.op_hooks and ir.RankedTensorType(val.type).element_type == b.f32():
                with ir.Location.name(node.name):
                    val = b.elementwise([val], lambda x: func.CallOp([b.f32()], OP_HOOK, [x]).result)
            expected = self.loaded.shapes.get(name)
            got = b.shape_of(val)
            want = self.loaded.dtypes.get(name)
            if want in ELEMENT_TYPES and b.elem_of(val) != self.element(want):
                raise self.error(f"output '{name}' built with element type {b.elem_of(val)}, ONNX says "
                                 f"{onnx.TensorProto.DataType.Name(want)}")
            if expected is not None and tuple(expected) != got:
                raise self.error(f"output '{name}' built with shape {got}, ONNX shape inference says "
                                 f"{tuple(expected)}")
            self.values[name] = val


    def _outlined(self, node: onnx.NodeProto) -> list:
        """Build the node in a function of its own and call it: LLVM's loop passes are superlinear in
        function size (DenseNet-121 as one function: 58 s in loop-rotate and loop-vectorize)."""
        graph_values = self.values
        runtime = [n for n in dict.fromkeys(node.input) if n and n not in self.loaded.constants]
        args = [self.value(n) for n in runtime]
        self.functions = getattr(self, "functions", 0) + 1
        name = f"node_{self.functions - 1}"  # never the ONNX name: symbols are not escaped
        with ir.InsertionPoint(self.module.body):
            fn = func.FuncOp(name, ir.FunctionType.get([a.type for a in args], []))
        fn.sym_visibility = ir.StringAttr.get("private")
        block = fn.add_entry_block()
        outer_slots = self.slots
        self.slots = AccumulatorSlots(block)
        self.values = dict(zip(runtime, block.arguments))
        try:
            with ir.InsertionPoint(block):
                outputs = HANDLERS[node.op_type](self, node)
                results = [v for v in outputs if v is not None]
                func.ReturnOp(results)
        finally:
            self.values, self.slots = graph_values, outer_slots
        fn.attributes["function_type"] = ir.TypeAttr.get(
            ir.FunctionType.get([a.type for a in args], [v.type for v in results]))
        self.outlined_fn = fn
        call = func.CallOp(fn, args)
        returned = iter(call.results)
        return [None if v is None else next(returned) for v in outputs]


def import_model(loaded: LoadedModel, config: ImportConfig = ImportConfig()) -> tuple[ir.Module, Importer]:
    """Import inside the caller's Context; the Importer is returned to keep weight buffers alive."""
    imp = Importer(loaded, config)
    return imp.import_module(), imp
