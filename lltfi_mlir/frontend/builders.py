"""Small builders over the MLIR Python bindings shared by the operator handlers.

Everything is built at the tensor level with static shapes; every helper uses the current
`Location` and `InsertionPoint`, so the handler's `with Location.name(node.name)` reaches every op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from mlir import ir
from mlir.dialects import arith, linalg, tensor

PARALLEL = "parallel"
REDUCTION = "reduction"
# Constants with more elements than this become dense resources (zero-copy from numpy).
RESOURCE_THRESHOLD = 64


def f32() -> ir.Type:
    return ir.F32Type.get()


def i64() -> ir.Type:
    return ir.IntegerType.get_signless(64)


def i1() -> ir.Type:
    return ir.IntegerType.get_signless(1)


def index() -> ir.Type:
    return ir.IndexType.get()


def tensor_type(shape: Sequence[int], elem: ir.Type | None = None) -> ir.RankedTensorType:
    return ir.RankedTensorType.get(list(shape), elem or f32())


def shape_of(value: ir.Value) -> tuple[int, ...]:
    return tuple(ir.RankedTensorType(value.type).shape)


def elem_of(value: ir.Value) -> ir.Type:
    """Element type of a ranked tensor value."""
    return ir.RankedTensorType(value.type).element_type


def is_float(elem: ir.Type) -> bool:
    return isinstance(elem, (ir.F16Type, ir.BF16Type, ir.F32Type, ir.F64Type))


def empty(shape: Sequence[int], elem: ir.Type | None = None) -> ir.Value:
    return tensor.EmptyOp(list(shape), elem or f32()).result


def scalar(value: float, elem: ir.Type | None = None) -> ir.Value:
    """A scalar constant of `elem` (default f32); integer types take int(value), i1 takes bool."""
    elem = elem or f32()
    if isinstance(elem, ir.IndexType):
        return arith.ConstantOp(elem, ir.IntegerAttr.get(elem, int(value))).result
    if is_float(elem):
        return arith.ConstantOp(elem, ir.FloatAttr.get(elem, float(value))).result
    width = ir.IntegerType(elem).width
    v = int(value) & ((1 << width) - 1)
    if v >= 1 << (width - 1) and width > 1:
        v -= 1 << width  # signless attributes take the two's complement value
    return arith.ConstantOp(elem, ir.IntegerAttr.get(elem, v)).result


def fill(shape: Sequence[int], value: float, elem: ir.Type | None = None) -> ir.Value:
    return linalg.fill(scalar(value, elem), outs=[empty(shape, elem)])


# numpy dtype -> MLIR element type (integers are signless: unsigned semantics are the handlers' job).
_NUMPY_ELEMENTS = {
    "float32": ir.F32Type.get, "float64": ir.F64Type.get, "float16": ir.F16Type.get,
    "int64": lambda: ir.IntegerType.get_signless(64), "uint64": lambda: ir.IntegerType.get_signless(64),
    "int32": lambda: ir.IntegerType.get_signless(32), "uint32": lambda: ir.IntegerType.get_signless(32),
    "int16": lambda: ir.IntegerType.get_signless(16), "uint16": lambda: ir.IntegerType.get_signless(16),
    "int8": lambda: ir.IntegerType.get_signless(8), "uint8": lambda: ir.IntegerType.get_signless(8),
    # Bool tensors are bytes holding 0 or 1 (numpy's layout); upstream's memref lowering asserts on
    # i1 stores. Comparisons yield i1 scalars that are widened before they are stored.
    "bool": lambda: ir.IntegerType.get_signless(8),
}
_SIGNED_VIEW = {"uint64": np.int64, "uint32": np.int32, "uint16": np.int16, "uint8": np.int8, "bool": np.int8}


def numpy_element(dtype: np.dtype) -> ir.Type | None:
    """The MLIR element type of a numpy dtype, or None if the importer has none for it."""
    make = _NUMPY_ELEMENTS.get(np.dtype(dtype).name)
    return make() if make else None


class ColumnPanels:
    """A constant B (K, N) stored as its column panels one after the other: each (K, width) row-major,
    the last (K, N % width) when N is not a multiple (nothing padded: a weight fault still draws from
    B's own elements). A tiled MatMul then streams row k + 1 of a panel right after row k, where
    rows of B lie 4 * N bytes apart (a page or more: the prefetchers stop). The panels are written
    straight from B to the weights file (`tofile`): the packed copy never exists in memory, so compile
    memory stays one copy of the weights. Quacks like the flat float32 array it stands for."""

    dtype = np.dtype(np.float32)
    itemsize = 4

    def __init__(self, b_kn: np.ndarray, width: int, transposed: bool = False) -> None:
        self.b_kn, self.width = b_kn, width
        self.transposed = transposed  # b_kn is the initializer's transpose (Gemm transB)
        self.size = int(b_kn.size)
        self.shape = (self.size,)
        self.nbytes = 4 * self.size

    def panels(self):
        for start in range(0, self.b_kn.shape[1], self.width):
            yield np.ascontiguousarray(self.b_kn[:, start:start + self.width], dtype=np.float32)

    def tofile(self, path) -> None:
        with open(path, "wb") as handle:
            for panel in self.panels():
                handle.write(panel.tobytes())

    def materialize(self) -> np.ndarray:
        return np.concatenate([p.reshape(-1) for p in self.panels()])


class ConstantPool:
    """Keeps the numpy buffers behind dense resources alive as long as the module lives."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        # handle -> (ONNX tensor or derived name, node being imported): weight faults name their targets
        self.sources: dict[str, tuple[str, str | None]] = {}
        self.reader: str | None = None  # set by the importer for each node
        self.placeholders: dict[str, np.ndarray] = {}  # never-written buffers behind lazy constants

    def panels(self, packed: ColumnPanels, name: str) -> ir.Value:
        """A 1-D constant holding `packed`'s bytes. The module gets an untouched zero buffer of that size
        (no resident memory; nothing reads it: weights reach the program through the weights file,
        llvm_backend/weights.py) and the pool keeps `packed` to write."""
        if packed.size <= RESOURCE_THRESHOLD:
            return self.constant(packed.materialize(), name)
        ttype = tensor_type(packed.shape, f32())
        handle = f"w{len(self.arrays)}_" + "".join(c if c.isalnum() else "_" for c in name)[:48]
        self.arrays[handle] = packed
        self.sources[handle] = (name, self.reader)
        self.placeholders[handle] = np.zeros(packed.size, np.float32)
        attr = ir.DenseResourceElementsAttr.get_from_buffer(memoryview(self.placeholders[handle]), handle, ttype)
        return arith.ConstantOp(ttype, attr).result

    def constant(self, array: np.ndarray, name: str) -> ir.Value:
        """A constant tensor of the array's own element type (float32 unless it has another)."""
        array = np.asarray(array)
        elem = numpy_element(array.dtype) or f32()
        if array.dtype.name not in _NUMPY_ELEMENTS:
            array = array.astype(np.float32)
        # (np.ascontiguousarray alone would turn a 0-d array into shape (1,).)
        array = np.ascontiguousarray(array).reshape(np.shape(array))
        if array.dtype.name in _SIGNED_VIEW:
            array = array.view(_SIGNED_VIEW[array.dtype.name])
        ttype = tensor_type(array.shape, elem)
        if array.size <= RESOURCE_THRESHOLD:
            attr = ir.DenseElementsAttr.get(array, type=ttype)
        else:
            handle = f"w{len(self.arrays)}_" + "".join(c if c.isalnum() else "_" for c in name)[:48]
            self.arrays[handle] = array
            self.sources[handle] = (name, self.reader)
            attr = ir.DenseResourceElementsAttr.get_from_buffer(memoryview(array), handle, ttype)
        return arith.ConstantOp(ttype, attr).result


def affine_map(num_dims: int, exprs: Sequence[ir.AffineExpr]) -> ir.AffineMap:
    return ir.AffineMap.get(num_dims, 0, list(exprs))


def dims(num_dims: int) -> list[ir.AffineExpr]:
    return [ir.AffineDimExpr.get(i) for i in range(num_dims)]


def const_expr(value: int) -> ir.AffineExpr:
    return ir.AffineConstantExpr.get(value)


def generic(inputs: Sequence[ir.Value], input_maps: Sequence[ir.AffineMap], init: ir.Value,
            output_map: ir.AffineMap, iterators: Sequence[str],
            body: Callable[..., ir.Value]) -> ir.Value:
    """One linalg.generic with a single output; `body(*input_scalars, out_scalar)` gives the yield."""
    out_type = init.type
    op = linalg.GenericOp(
        [out_type], list(inputs), [init],
        ir.ArrayAttr.get([ir.AffineMapAttr.get(m) for m in list(input_maps) + [output_map]]),
        ir.ArrayAttr.get([ir.Attribute.parse(f"#linalg.iterator_type<{it}>") for it in iterators]),
    )
    block = op.regions[0].blocks.append(*[elem_of(v) for v in list(inputs) + [init]])
    with ir.InsertionPoint(block):
        linalg.YieldOp([body(*block.arguments)])
    return op.result


def broadcast_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> ir.AffineMap:
    """Numpy broadcasting as an indexing map: missing leading dims dropped, size-1 dims pinned to 0."""
    rank = len(out_shape)
    offset = rank - len(in_shape)
    exprs = []
    for i, size in enumerate(in_shape):
        out_size = out_shape[offset + i]
        exprs.append(const_expr(0) if size == 1 and out_size != 1 else ir.AffineDimExpr.get(offset + i))
    return affine_map(rank, exprs)


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    return tuple(np.broadcast_shapes(*[tuple(s) for s in shapes]))


def elementwise(values: Sequence[ir.Value], body: Callable[..., ir.Value],
                out_shape: Sequence[int] | None = None, out_elem: ir.Type | None = None) -> ir.Value:
    """Apply `body` to broadcast scalars of `values`; the output slot is ignored. The result has
    `out_elem` elements (default: those of the first value)."""
    shapes = [shape_of(v) for v in values]
    out_shape = tuple(out_shape) if out_shape is not None else broadcast_shape(*shapes)
    out_elem = out_elem or elem_of(values[0])
    groups = collapsible_dims(shapes, out_shape)
    if len(groups) < len(out_shape):
        # One loop per group of dims that every operand reads alike (whole or broadcast): a 7x7
        # plane's 49 elements become one loop that LLVM vectorizes, where seven loops of 7 left a
        # scalar remainder each (EfficientNet's exp per element). Same elements, same row-major order.
        full = [right_aligned(s, len(out_shape)) for s in shapes]
        values = [reshape(v, [int(np.prod([s[d] for d in g])) for g in groups]) for v, s in zip(values, full)]
        collapsed = tuple(int(np.prod([out_shape[d] for d in g])) for g in groups)
        return reshape(elementwise(values, body, collapsed, out_elem), out_shape)
    rank = len(out_shape)
    return generic(values, [broadcast_map(s, out_shape) for s in shapes], empty(out_shape, out_elem),
                   affine_map(rank, dims(rank)), [PARALLEL] * rank,
                   lambda *args: body(*args[:-1]))


def right_aligned(shape: Sequence[int], rank: int) -> tuple[int, ...]:
    """`shape` with the leading 1s numpy broadcasting gives it against a rank-`rank` output."""
    return (1,) * (rank - len(shape)) + tuple(shape)


def collapsible_dims(shapes: Sequence[Sequence[int]], out_shape: Sequence[int]) -> list[list[int]]:
    """Runs of adjacent output dims that each operand (numpy-broadcast) either spans whole or
    broadcasts in every dim of the run: they can run as one loop."""
    full = [right_aligned(s, len(out_shape)) for s in shapes]

    def kind(shape: tuple[int, ...], d: int) -> str | None:  # None: either (a dim of extent 1)
        if out_shape[d] == 1:
            return None
        return "whole" if shape[d] == out_shape[d] else "broadcast"

    groups: list[list[int]] = []
    kinds: list[list[str | None]] = []
    for d in range(len(out_shape)):
        here = [kind(s, d) for s in full]
        if groups and all(a is None or b is None or a == b for a, b in zip(kinds[-1], here)):
            groups[-1].append(d)
            kinds[-1] = [a if a is not None else b for a, b in zip(kinds[-1], here)]
        else:
            groups.append([d])
            kinds.append(here)
    return groups


def reassociation_all(rank: int) -> list[list[int]]:
    return [list(range(rank))] if rank else []


def reshape(value: ir.Value, new_shape: Sequence[int]) -> ir.Value:
    """Any contiguous reshape: collapse to 1-D, then expand. Both become views after bufferization."""
    old_shape = shape_of(value)
    elem = elem_of(value)
    new_shape = tuple(int(d) for d in new_shape)
    if old_shape == new_shape:
        return value
    assert int(np.prod(old_shape)) == int(np.prod(new_shape)), (old_shape, new_shape)
    # Rank 0 <-> all-ones shapes: one collapse/expand with no reassociation groups.
    if not old_shape:
        return tensor.ExpandShapeOp(tensor_type(new_shape, elem), value, reassociation_attr([]), [],
                                    ir.DenseI64ArrayAttr.get(list(new_shape))).result
    if not new_shape:
        return tensor.CollapseShapeOp(tensor_type((), elem), value, reassociation_attr([])).result
    flat = value
    if len(old_shape) != 1:
        flat = tensor.CollapseShapeOp(tensor_type([int(np.prod(old_shape))], elem), value,
                                      reassociation_attr(reassociation_all(len(old_shape)))).result
    if len(new_shape) == 1:
        return flat
    return tensor.ExpandShapeOp(tensor_type(new_shape, elem), flat,
                                reassociation_attr(reassociation_all(len(new_shape))), [],
                                ir.DenseI64ArrayAttr.get(list(new_shape))).result


def reassociation_attr(groups: list[list[int]]) -> ir.ArrayAttr:
    i64 = ir.IntegerType.get_signless(64)
    return ir.ArrayAttr.get([ir.ArrayAttr.get([ir.IntegerAttr.get(i64, d) for d in g]) for g in groups])


def pad(value: ir.Value, low: Sequence[int], high: Sequence[int], pad_value: float) -> ir.Value:
    if not any(low) and not any(high):
        return value
    shape = shape_of(value)
    out_shape = [s + lo + hi for s, lo, hi in zip(shape, low, high)]
    op = tensor.PadOp(tensor_type(out_shape, elem_of(value)), value, [], [], ir.DenseI64ArrayAttr.get(list(low)),
                      ir.DenseI64ArrayAttr.get(list(high)))
    block = op.regions[0].blocks.append(*([ir.IndexType.get()] * len(shape)))
    with ir.InsertionPoint(block):
        tensor.YieldOp(scalar(pad_value, elem_of(value)))
    return op.result


def loop_index(dim: int) -> ir.Value:
    """The iteration index of loop `dim` inside a linalg.generic body."""
    return linalg.IndexOp(dim).result
