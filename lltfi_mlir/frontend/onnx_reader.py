"""Read an ONNX model without passing its weights through protobuf.

`onnx.load` reads the file, parses every initializer into the message, and each later
`numpy_helper.to_array` or shape-inference round copies the weights again: a 330 MB model needed
3 GB and over 10 s only to be refused for one unsupported operator. Here the file is scanned at the
protobuf wire level instead: everything but the large initializers is parsed as usual (the graph
is small) and each large initializer becomes a `TensorRef` that reads its bytes straight into a
numpy array when asked. Operators can thus be checked before any weight is read, and the weights
exist once in memory.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, numpy_helper

# Initializers up to this many elements stay in the graph: shape inference reads their values
# (Reshape targets, Pad amounts, Slice bounds), and copying them costs nothing.
SMALL = 1024

# Types whose raw little-endian bytes are exactly a numpy array's buffer.
_PLAIN = {t: onnx.helper.tensor_dtype_to_np_dtype(t) for t in (
    TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BOOL, TensorProto.INT8,
    TensorProto.INT16, TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16,
    TensorProto.UINT32, TensorProto.UINT64)}


def _number(message: type, name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


_GRAPH = _number(onnx.ModelProto, "graph")
_INITIALIZER = _number(onnx.GraphProto, "initializer")
_RAW_DATA = _number(TensorProto, "raw_data")


@dataclass(frozen=True)
class TensorRef:
    """A large initializer kept out of the protobuf graph; `load()` reads its values."""

    name: str
    elem_type: int
    dims: tuple[int, ...]
    read: Callable[[], np.ndarray] = field(repr=False, compare=False)

    def load(self) -> np.ndarray:
        return self.read()


@dataclass
class OnnxSource:
    """A model's graph without its large initializers, and where to read those."""

    model: onnx.ModelProto
    weights: dict[str, TensorRef] = field(default_factory=dict)


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of the field, start of its value, end) for each field in [start, end)."""
    pos = start
    while pos < end:
        key, value_start = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, value_end = _varint(buf, value_start)
        elif wire == 1:
            value_end = value_start + 8
        elif wire == 2:
            length, value_start = _varint(buf, value_start)
            value_end = value_start + length
        elif wire == 5:
            value_end = value_start + 4
        else:  # groups (3, 4) never occur in ONNX
            raise ValueError(f"unexpected wire type {wire}")
        if value_end > end:
            raise ValueError("truncated field")
        yield number, pos, value_start, value_end
        pos = value_end


def _file_reader(path: Path, offset: int, dtype: np.dtype, dims: tuple[int, ...]) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        array = np.empty(dims, dtype=dtype.newbyteorder("<"))
        with open(path, "rb") as handle:
            handle.seek(offset)
            got = handle.readinto(memoryview(array).cast("B"))
        if got != array.nbytes:
            raise ValueError(f"{path}: {got} bytes at offset {offset}, expected {array.nbytes}")
        return array if array.dtype.isnative else array.astype(dtype)
    return read


def _external_reader(header: TensorProto, base_dir: Path) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        tensor = TensorProto()
        tensor.CopyFrom(header)
        external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
        return numpy_helper.to_array(tensor)
    return read


def _proto_reader(tensor: TensorProto) -> Callable[[], np.ndarray]:
    return lambda: numpy_helper.to_array(tensor)


def _numel(tensor: TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1


def scan_onnx(path: Path) -> OnnxSource:
    """Wire-level read; raises ValueError on anything unexpected (then parse the file with onnx.load)."""
    path = path.resolve()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        top: list[bytes] = []
        graph: tuple[int, int] | None = None
        for number, start, value_start, end in _fields(buf, 0, len(buf)):
            if number == _GRAPH:
                if graph is not None:
                    raise ValueError("several graph fields")
                graph = (value_start, end)
            else:
                top.append(buf[start:end])
        if graph is None:
            raise ValueError("no graph")
        pieces: list[bytes] = []
        weights: dict[str, TensorRef] = {}
        for number, start, value_start, end in _fields(buf, *graph):
            if number != _INITIALIZER:
                pieces.append(buf[start:end])
                continue
            raw = None
            rest = []
            for inner, inner_start, inner_value, inner_end in _fields(buf, value_start, end):
                if inner == _RAW_DATA:
                    raw = (inner_value, inner_end)
                else:
                    rest.append(buf[inner_start:inner_end])
            header = TensorProto.FromString(b"".join(rest))
            dims = tuple(int(d) for d in header.dims)
            if header.data_location == TensorProto.EXTERNAL:
                weights[header.name] = TensorRef(header.name, header.data_type, dims,
                                                 _external_reader(header, path.parent))
            elif _numel(header) <= SMALL:
                pieces.append(buf[start:end])
            elif (raw is not None and header.data_type in _PLAIN
                  and raw[1] - raw[0] == _numel(header) * _PLAIN[header.data_type].itemsize):
                weights[header.name] = TensorRef(header.name, header.data_type, dims,
                                                 _file_reader(path, raw[0], _PLAIN[header.data_type], dims))
            else:  # typed fields (float_data, ...) or unusual types: parsed like any other field
                pieces.append(buf[start:end])
    body = b"".join(pieces)
    data = b"".join(top) + _encode_varint(_GRAPH << 3 | 2) + _encode_varint(len(body)) + body
    return OnnxSource(onnx.ModelProto.FromString(data), weights)


def _copy_fields(source, target, skip: str) -> None:
    for descriptor, value in source.ListFields():
        if descriptor.name == skip:
            continue
        if descriptor.is_repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)


def split_model(model: onnx.ModelProto) -> OnnxSource:
    """An in-memory model as an OnnxSource; the caller's message is left untouched."""
    skeleton = onnx.ModelProto()
    _copy_fields(model, skeleton, skip="graph")
    _copy_fields(model.graph, skeleton.graph, skip="initializer")
    weights: dict[str, TensorRef] = {}
    for init in model.graph.initializer:
        if _numel(init) <= SMALL:
            skeleton.graph.initializer.append(init)
        else:
            weights[init.name] = TensorRef(init.name, init.data_type, tuple(int(d) for d in init.dims),
                                           _proto_reader(init))
    return OnnxSource(skeleton, weights)
