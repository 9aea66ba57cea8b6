"""Resize (opset 10-19) and Upsample: nearest and (multi)linear, every coordinate mode but crop.

Scales and sizes must be constants, so the source coordinate of every output index is known at
compile time: it is computed here with numpy (float64, as onnx.reference does) and shipped as small
index and weight tables. Nearest mode is a gather; linear mode is one 1-D pass per resized axis,
innermost axis first (onnx.reference's recursion order), each output element `w0 * x[lo] + w1 * x[hi]`
with neighbours clamped at the edges ('edge' padding in the reference).
"""

from __future__ import annotations

import numpy as np
import onnx
from mlir import ir
from mlir.dialects import arith, tensor

from .. import builders as b
from ..importer import Importer, handler

_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "half_pixel_symmetric")


def _text(value: object, default: str) -> str:
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def source_coordinates(mode: str, size_in: int, size_out: int, scale: float) -> np.ndarray:
    """The input coordinate of each output index along one axis (ONNX Resize's formulas)."""
    y = np.arange(size_out, dtype=np.float64)
    width = scale * size_in  # the unrounded output length
    if mode == "align_corners":
        return np.zeros(size_out) if width == 1 else y * (size_in - 1) / (width - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "pytorch_half_pixel":
        return np.full(size_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    # half_pixel_symmetric
    offset = size_in / 2 * (1 - size_out / width)
    return offset + (y + 0.5) / scale - 0.5


def nearest_indices(coords: np.ndarray, rule: str, scale: float, size_in: int) -> np.ndarray:
    whole = np.floor(coords)
    frac = coords - whole
    if rule == "round_prefer_floor":
        up = frac > 0.5
    elif rule == "round_prefer_ceil":
        up = frac >= 0.5
    elif rule == "floor":
        up = np.zeros_like(frac, dtype=bool)
    elif rule == "ceil":
        up = frac > 0
    else:  # "simple" (Upsample, Resize-10, as onnxruntime): floor when enlarging, ceil when shrinking
        up = frac > 0 if scale < 1 else np.zeros_like(frac, dtype=bool)
    return np.clip(whole + up, 0, size_in - 1).astype(np.int64)


def linear_taps(coords: np.ndarray, size_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, w_lo, w_hi) per output index: onnx.reference's two neighbours and [1 - r, r]."""
    whole = np.floor(coords)
    ratio = np.where(coords == whole, 1.0, coords - whole)
    lo = np.where(coords == whole, whole - 1, whole)  # an integral coordinate takes [x - 1, x], r = 1
    hi = lo + 1
    clip = lambda i: np.clip(i, 0, size_in - 1).astype(np.int64)  # noqa: E731
    return clip(lo), clip(hi), (1.0 - ratio).astype(np.float32), ratio.astype(np.float32)


def _index(value: ir.Value) -> ir.Value:
    return arith.index_cast(ir.IndexType.get(), value)


def _gather(imp: Importer, x: ir.Value, out_shape: tuple[int, ...], tables: dict[int, np.ndarray]) -> ir.Value:
    """out[i] = x[table_a[i_a] for each resized axis a, i_a elsewhere]."""
    rank = len(out_shape)
    axes = sorted(tables)
    inputs = [imp.pool.constant(tables[a], f"{imp.node.name}_idx{a}") for a in axes]
    d = b.dims(rank)

    def body(*args):
        found = dict(zip(axes, args[:len(axes)]))
        coords = [_index(found[a]) if a in found else b.loop_index(a) for a in range(rank)]
        return tensor.extract(x, coords)

    return b.generic(inputs, [b.affine_map(rank, [d[a]]) for a in axes], b.empty(out_shape),
                     b.affine_map(rank, d), [b.PARALLEL] * rank, body)


def _linear_pass(imp: Importer, x: ir.Value, axis: int, size_out: int, taps) -> ir.Value:
    shape = list(b.shape_of(x))
    shape[axis] = size_out
    rank = len(shape)
    lo, hi, w_lo, w_hi = taps
    name = f"{imp.node.name}_ax{axis}"
    tables = [imp.pool.constant(lo, name + "_lo"), imp.pool.constant(hi, name + "_hi"),
              imp.pool.constant(w_lo, name + "_w0"), imp.pool.constant(w_hi, name + "_w1")]
    d = b.dims(rank)

    def body(i_lo, i_hi, c_lo, c_hi, _):
        coords = [b.loop_index(a) for a in range(rank)]
        p_lo = tensor.extract(x, coords[:axis] + [_index(i_lo)] + coords[axis + 1:])
        p_hi = tensor.extract(x, coords[:axis] + [_index(i_hi)] + coords[axis + 1:])
        return arith.addf(arith.mulf(c_lo, p_lo), arith.mulf(c_hi, p_hi))

    return b.generic(tables, [b.affine_map(rank, [d[axis]])] * 4, b.empty(shape), b.affine_map(rank, d),
                     [b.PARALLEL] * rank, body)


def _constant_input(imp: Importer, node: onnx.NodeProto, index: int, what: str) -> np.ndarray | None:
    name = node.input[index] if len(node.input) > index else ""
    if not name:
        return None
    value = np.asarray(imp.require_const(name, f"{node.op_type}'s {what}"))
    return value if value.size else None


@handler("Resize", "Upsample")
def resize(imp: Importer, node: onnx.NodeProto) -> list:
    attrs = imp.attrs(node)
    x = imp.value(node.input[0])
    in_shape = b.shape_of(x)
    rank = len(in_shape)
    out_shape = tuple(imp.shape(node.output[0]))
    mode = _text(attrs.get("mode"), "nearest")
    legacy = node.op_type == "Upsample" or imp.opset < 11
    if mode == "bilinear":  # Upsample-7's spelling
        mode = "linear"
    if mode not in ("nearest", "linear"):
        raise imp.error(f"{node.op_type} mode '{mode}' is not supported (nearest and linear are)")
    if legacy:
        coord_mode, rule = "asymmetric", "simple"
        if node.op_type == "Upsample" and imp.opset < 9:
            scales = np.asarray(attrs["scales"], dtype=np.float64)
        else:
            scales = _constant_input(imp, node, 1, "scales").astype(np.float64)
        sizes = None
    else:
        coord_mode = _text(attrs.get("coordinate_transformation_mode"), "half_pixel")
        rule = _text(attrs.get("nearest_mode"), "round_prefer_floor")
        if coord_mode not in _MODES:
            raise imp.error(f"Resize coordinate_transformation_mode '{coord_mode}' is not supported")
        if attrs.get("antialias", 0) and mode == "linear":
            raise imp.error("Resize with antialias is not supported")
        if float(attrs.get("exclude_outside", 0)) and mode != "nearest":
            raise imp.error("Resize with exclude_outside is not supported")
        scales = _constant_input(imp, node, 2, "scales")
        sizes = _constant_input(imp, node, 3, "sizes")
        if scales is not None:
            scales = scales.astype(np.float64)
    axes = [int(a) % rank for a in attrs.get("axes", range(rank))]
    full_scales = np.ones(rank)
    if sizes is not None:
        policy = _text(attrs.get("keep_aspect_ratio_policy"), "stretch")
        ratios = np.asarray(sizes, dtype=np.float64) / np.array([in_shape[a] for a in axes], dtype=np.float64)
        if policy != "stretch":
            ratios[:] = ratios.min() if policy == "not_larger" else ratios.max()
        for a, r in zip(axes, ratios):
            full_scales[a] = r
    elif scales is not None:
        for a, s in zip(axes, scales):
            full_scales[a] = s
    else:
        raise imp.error("Resize needs scales or sizes")
    if len(out_shape) != rank:
        raise imp.error(f"{node.op_type}: output rank {len(out_shape)} differs from input rank {rank}")
    resized = [a for a in range(rank) if out_shape[a] != in_shape[a] or full_scales[a] != 1.0]

    coords = {a: source_coordinates(coord_mode, in_shape[a], out_shape[a], full_scales[a]) for a in resized}
    if mode == "nearest":
        tables = {a: nearest_indices(coords[a], rule, full_scales[a], in_shape[a]) for a in resized}
        if not tables:
            return [b.elementwise([x], lambda v: v)]
        return [_gather(imp, x, out_shape, tables)]
    y = x
    for a in reversed(resized):  # innermost axis first
        y = _linear_pass(imp, y, a, out_shape[a], linear_taps(coords[a], in_shape[a]))
    if y is x:
        y = b.elementwise([x], lambda v: v)
    return [y]
