"""Load an ONNX file and bring it to the form the importer expects.

The importer only sees static shapes, float32 activations and no shape arithmetic: exporters
(tf2onnx, Keras, the torch dynamo exporter) leave dynamic batch dimensions and Shape/Gather/Concat
chains that compute reshape targets. Binding the dynamic dimensions, running ONNX shape inference
and evaluating every node whose inputs are all constants removes them before import.

Large initializers never enter a protobuf message here (see onnx_reader.py): shape inference sees
them as typed graph inputs and folding reads them as numpy arrays, so no round copies the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from ..errors import ModelImportError, UsageError
from .onnx_reader import SMALL, OnnxSource, scan_onnx, split_model


@dataclass
class LoadedModel:
    """A model ready for import: static shapes, constants separated from the computation."""

    model: onnx.ModelProto
    opset: int
    constants: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, int]
    inputs: list[str]
    outputs: list[str]
    node_names: list[str] = field(default_factory=list)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read a model file, turning every way it can be unreadable into one UsageError."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if path.is_dir():
        raise UsageError(f"expected an ONNX file, got a directory: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelImportError(f"cannot parse {path} as ONNX: {exc.__class__.__name__}: {exc}") from None
    if not model.graph.node and not model.graph.output:
        raise ModelImportError(f"{path} holds no graph (is it an ONNX model?)")
    return model


def parse_shape_overrides(items: list[str]) -> dict[str, object]:
    """`NAME=1x8x8x1` (an input's full shape) or `DIM=4` (a named dynamic dimension)."""
    overrides: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise UsageError(f"--shape {item!r}: expected NAME=1x8x8x1 or DIMNAME=4")
        try:
            dims = tuple(int(d) for d in value.lower().split("x"))
        except ValueError:
            raise UsageError(f"--shape {item!r}: dimensions must be integers separated by 'x'") from None
        if any(d <= 0 for d in dims):
            raise UsageError(f"--shape {item!r}: dimensions must be positive")
        overrides[name] = dims
    return overrides


def _bind_dims(model: onnx.ModelProto, overrides: dict[str, object], initializer_names: set[str]) -> None:
    """Give every graph input a static shape: overrides first, then 1 for anything symbolic."""
    input_names = {i.name for i in model.graph.input}
    dim_names = set()
    for inp in model.graph.input:
        for dim in inp.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim_names.add(dim.dim_param)
    unknown = [k for k in overrides if k not in input_names and k not in dim_names]
    if unknown:
        raise UsageError(f"--shape names {unknown} match no model input ({sorted(input_names)}) "
                         f"and no dynamic dimension ({sorted(dim_names)})")
    for inp in model.graph.input:
        if inp.name in initializer_names:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name in overrides:
            shape = overrides[inp.name]
            if len(shape) != len(dims):
                raise UsageError(f"--shape {inp.name}: rank {len(shape)} given, the model input has "
                                 f"rank {len(dims)}")
            for dim, value in zip(dims, shape):
                if dim.HasField("dim_value") and dim.dim_value not in (0, value):
                    raise UsageError(f"--shape {inp.name}: dimension fixed to {dim.dim_value} by the "
                                     f"model, {value} given")
                dim.Clear()
                dim.dim_value = value
            continue
        for dim in dims:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            value = overrides.get(dim.dim_param, (1,))[0] if dim.HasField("dim_param") else 1
            dim.Clear()
            dim.dim_value = value
    # Intermediate value_info and outputs may carry stale symbolic dims; inference recomputes them.
    del model.graph.value_info[:]
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


def _evaluate(node: onnx.NodeProto, values: list[np.ndarray | None], opset_imports) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    inputs = [onnx.helper.make_tensor_value_info(f"in{i}", onnx.TensorProto.UNDEFINED, None)
              for i in range(len(node.input))]
    renamed = onnx.NodeProto()
    renamed.CopyFrom(node)
    del renamed.input[:]
    renamed.input.extend(f"in{i}" if name else "" for i, name in enumerate(node.input))
    del renamed.output[:]
    renamed.output.extend(f"out{i}" for i in range(len(node.output)))
    outputs = [onnx.helper.make_tensor_value_info(f"out{i}", onnx.TensorProto.UNDEFINED, None)
               for i in range(len(node.output))]
    graph = onnx.helper.make_graph([renamed], "fold", [inputs[i] for i, n in enumerate(node.input) if n],
                                   outputs)
    model = onnx.helper.make_model(graph, opset_imports=list(opset_imports))
    feeds = {f"in{i}": v for i, v in enumerate(values) if node.input[i]}
    return ReferenceEvaluator(model).run(None, feeds)


def _fold_constants(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                    constants: dict[str, np.ndarray]) -> None:
    """Evaluate Constant nodes, Shape of static tensors and anything whose inputs are all constant;
    their values join `constants` and the nodes leave the graph."""
    kept = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = _constant_value(node)
            if value is None:
                raise ModelImportError("Constant without a supported value attribute",
                                       node.name, node.op_type, None)
            constants[node.output[0]] = value
            continue
        if node.op_type == "Shape" and node.input[0] in shapes and node.domain in ("", "ai.onnx"):
            full = np.array(shapes[node.input[0]], dtype=np.int64)
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), None)
            constants[node.output[0]] = full[start:end]
            continue
        if node.op_type == "Size" and node.input[0] in shapes:
            constants[node.output[0]] = np.array(int(np.prod(shapes[node.input[0]])), dtype=np.int64)
            continue
        ins = [n for n in node.input if n]
        if ins and all(n in constants for n in ins) and node.domain in ("", "ai.onnx") \
                and node.op_type not in ("RandomNormalLike", "RandomUniformLike"):
            vals = [constants.get(n) if n else None for n in node.input]
            try:
                results = _evaluate(node, vals, model.opset_import)
            except Exception:
                kept.append(node)
                continue
            for name, value in zip(node.output, results):
                constants[name] = np.asarray(value)
            continue
        kept.append(node)
    # Graph outputs that folded to constants are materialised by the importer.
    del model.graph.node[:]
    model.graph.node.extend(kept)


def _used_names(graph: onnx.GraphProto) -> set[str]:
    """Every name a node reads (subgraphs included) or the graph returns."""
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                used |= _used_names(sub)
    return used


def _stage(model: onnx.ModelProto, constants: dict[str, np.ndarray], inputs: list[onnx.ValueInfoProto]) -> None:
    """Show the constants to shape inference: small ones as initializers (their values matter for
    Reshape targets and the like), large numeric ones as typed inputs (only their shape matters)."""
    del model.graph.initializer[:]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    for name, value in constants.items():
        value = np.asarray(value)
        if value.size <= SMALL or value.dtype.kind not in "biuf":
            model.graph.initializer.append(numpy_helper.from_array(value, name))
        else:
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    # Annotations from the exporter (or from the round before) can hold symbolic dims that shape
    # inference keeps rather than replace with the static ones it now derives (ViT's class-token
    # Concat stayed (1, unk__2, 768)): infer from the graph alone.
    del model.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelImportError(f"ONNX shape inference failed: {exc}") from None


def _collect_shapes(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, int] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type"):
            dtypes[vi.name] = tt.elem_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    return shapes, dtypes


# Ops whose output has the shape and type of input 0 but that ONNX shape inference leaves unknown
# (GroupNormalization is a function whose body reshapes through Shape).
_SHAPE_PRESERVING = frozenset({"GroupNormalization"})


def _same_shape_outputs(model: onnx.ModelProto, shapes: dict, dtypes: dict) -> None:
    for node in model.graph.node:
        if node.op_type in _SHAPE_PRESERVING and node.output[0] not in shapes and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
            dtypes[node.output[0]] = dtypes.get(node.input[0], onnx.TensorProto.FLOAT)


def name_nodes(model: onnx.ModelProto) -> None:
    """Unnamed (or duplicate-named) nodes get onnx-mlir style `<OpType>_<index>` names."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def open_model(model: str | Path | onnx.ModelProto | OnnxSource) -> OnnxSource:
    """The model's graph, local functions inlined and every node named, its weights not yet read:
    enough to check the operators of a large model in milliseconds."""
    if isinstance(model, OnnxSource):
        skeleton = onnx.ModelProto()
        skeleton.CopyFrom(model.model)
        source = OnnxSource(skeleton, dict(model.weights))
    elif isinstance(model, onnx.ModelProto):
        source = split_model(model)
    else:
        path = Path(model)
        try:
            source = scan_onnx(path)
        except Exception:  # missing, malformed or unusually encoded: load_onnx decides and explains
            source = split_model(load_onnx(path))
        if not source.model.graph.node and not source.model.graph.output:
            raise ModelImportError(f"{path} holds no graph (is it an ONNX model?)")
    if next((o for o in source.model.opset_import if o.domain in ("", "ai.onnx")), None) is None:
        raise ModelImportError("model imports no version of the default ONNX domain")
    if source.model.functions:
        # Local functions (dynamo exporter) are inlined so the importer sees plain nodes.
        from onnx import inliner
        source.model = inliner.inline_local_functions(source.model)
    name_nodes(source.model)
    return source


def _copy(value_info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(value_info)
    return copy


def prepare(model: onnx.ModelProto | OnnxSource, overrides: dict[str, object] | None = None) -> LoadedModel:
    """Bind dims, infer shapes, fold shape subgraphs; repeat until nothing folds any more.

    Each weight is read once, as a numpy array, and only if some node or output uses it; constants
    nothing uses any more (e.g. a weight whose transpose was folded) are dropped as folding goes."""
    source = open_model(model)
    model = source.model
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    initializer_names = {init.name for init in model.graph.initializer} | set(source.weights)
    _bind_dims(model, overrides or {}, initializer_names)
    inputs = [i.name for i in model.graph.input if i.name not in initializer_names]
    # Old IR versions list initializers among the inputs; shape inference would then treat them as
    # run-time data and could not propagate Reshape targets.
    runtime_inputs = [_copy(i) for i in model.graph.input if i.name not in initializer_names]
    model.ir_version = max(model.ir_version, 4)  # IR >= 4 lets initializers be absent from the inputs
    used = _used_names(model.graph)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in used}
    constants.update((name, ref.load()) for name, ref in source.weights.items() if name in used)
    for _ in range(64):  # ends as soon as a round folds nothing (Swin's shape arithmetic takes a dozen)
        _stage(model, constants, runtime_inputs)
        model = _infer(model)
        shapes, dtypes = _collect_shapes(model)
        before = len(model.graph.node)
        _fold_constants(model, shapes, constants)
        used = _used_names(model.graph)
        for name in [n for n in constants if n not in used]:
            del constants[name]
        if len(model.graph.node) == before:
            break
    _stage(model, constants, runtime_inputs)
    model = _infer(model)
    shapes, dtypes = _collect_shapes(model)
    _same_shape_outputs(model, shapes, dtypes)
    del model.graph.input[:]  # the stand-ins of large constants leave again
    model.graph.input.extend(runtime_inputs)
    for name, value in constants.items():
        shapes[name] = tuple(value.shape)
    outputs = [o.name for o in model.graph.output]
    return LoadedModel(model=model, opset=opset, constants=constants, shapes=shapes, dtypes=dtypes,
                       inputs=inputs, outputs=outputs, node_names=[n.name for n in model.graph.node])
