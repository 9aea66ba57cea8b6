"""Reductions, normalization, resizing, contractions and recurrent operators against onnxruntime.

The ONNX node tests cover these operators case by case (test_onnx_node_tests.py); this file covers
what they leave out: float32 CumSum and Einsum (every node case is float64 or bfloat16), the Resize
forms exporters emit (a YOLO-style 2x nearest upsample, linear with pytorch_half_pixel), recurrent
cells with uneven sequence lengths, batch-first layout, clip and linear_before_reset, and
LayerNormalization's Mean/InvStdDev outputs. Each case is one node with small random inputs,
compiled natively and compared with onnxruntime (onnx.reference for the batch-first layout, which
onnxruntime refuses) within the issue's bound,
max |error| <= 1e-3 * max(1, max |reference|).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.errors import ModelImportError

RNG = np.random.default_rng(20261128)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


@dataclass(frozen=True)
class Case:
    id: str
    node: onnx.NodeProto
    inputs: dict[str, np.ndarray]
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17
    reference: str = "ort"  # or "onnx": onnx.reference, for attributes onnxruntime refuses (layout=1)

    def model(self) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in self.inputs.items()]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in self.node.output if n]
        inits = [numpy_helper.from_array(a, n) for n, a in self.inits.items()]
        graph = helper.make_graph([self.node], self.id, inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        return model


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], name=f"{op.lower()}_node", **attrs)


def _recurrent(kind: str, direction: str = "forward", lens: list[int] | None = None, layout: int = 0,
               **attrs) -> Case:
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind]
    dirs = 2 if direction == "bidirectional" else 1
    seq, batch, size, hidden = 4, 3, 5, 6
    inits = {"W": rand(dirs, gates * hidden, size, scale=0.5), "R": rand(dirs, gates * hidden, hidden, scale=0.5),
             "B": rand(dirs, 2 * gates * hidden, scale=0.5)}
    names = ["x", "W", "R", "B", ""]
    if lens is not None:
        inits["lens"] = np.array(lens, dtype=np.int32)
        names[4] = "lens"
    x_shape = (batch, seq, size) if layout else (seq, batch, size)
    state = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    inputs = {"x": rand(*x_shape), "h0": rand(*state)}
    names.append("h0")
    outputs = ["y", "y_h"]
    if kind == "LSTM":
        inputs["c0"] = rand(*state)
        names.append("c0")
        outputs.append("y_c")
    name = f"{kind.lower()}_{direction}_{'lens' if lens else 'full'}_{layout}_{'_'.join(attrs)}"
    return Case(name, node(kind, names, outputs, hidden_size=hidden, direction=direction, layout=layout, **attrs),
                inputs, inits, opset=14, reference="onnx" if layout else "ort")


CASES = [
    Case("cumsum_axis1_reverse_exclusive", node("CumSum", ["x", "axis"], exclusive=1, reverse=1),
         {"x": rand(2, 5, 3)}, {"axis": np.array(1, dtype=np.int64)}, opset=14),
    Case("cumsum_last_axis", node("CumSum", ["x", "axis"]), {"x": rand(3, 7)}, {"axis": np.array(-1, dtype=np.int64)},
         opset=14),
    Case("einsum_attention_scores", node("Einsum", ["q", "k"], equation="bhid,bhjd->bhij"),
         {"q": rand(1, 2, 3, 4), "k": rand(1, 2, 5, 4)}),
    Case("einsum_ellipsis_broadcast", node("Einsum", ["a", "b"], equation="...d,...d->..."),
         {"a": rand(2, 3, 4), "b": rand(1, 3, 4)}),
    Case("einsum_implicit_diagonal", node("Einsum", ["a"], equation="bii"), {"a": rand(2, 3, 3)}),
    Case("resize_yolo_nearest_2x", node("Resize", ["x", "", "scales"], mode="nearest"),
         {"x": rand(1, 4, 5, 6)}, {"scales": np.array([1, 1, 2, 2], dtype=np.float32)}, opset=13),
    Case("resize_linear_pytorch_half_pixel_sizes",
         node("Resize", ["x", "", "", "sizes"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
         {"x": rand(1, 2, 4, 6)}, {"sizes": np.array([1, 2, 8, 3], dtype=np.int64)}, opset=13),
    Case("upsample_bilinear_opset9", node("Upsample", ["x", "scales"], mode="linear"),
         {"x": rand(1, 2, 3, 4)}, {"scales": np.array([1, 1, 2, 2], dtype=np.float32)}, opset=9),
    Case("layernorm_with_statistics", node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "inv_std"], axis=-2),
         {"x": rand(2, 3, 4, 5)}, {"s": rand(4, 5), "b": rand(4, 5)}),
    Case("groupnorm_opset18_per_group_scale", node("GroupNormalization", ["x", "s", "b"], num_groups=2),
         {"x": rand(2, 4, 3, 3)}, {"s": rand(2), "b": rand(2)}, opset=18),
    Case("convtranspose_stride2_output_padding",
         node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0]),
         {"x": rand(1, 3, 4, 5)}, {"w": rand(3, 2, 3, 3), "b": rand(2)}),
    _recurrent("LSTM", "bidirectional", lens=[4, 2, 3]),
    _recurrent("GRU", "reverse", lens=[1, 4, 4], linear_before_reset=1),
    _recurrent("LSTM", clip=0.7),
    _recurrent("LSTM", layout=1),  # (onnx.reference ignores clip, onnxruntime refuses layout=1)
    _recurrent("RNN", "bidirectional", layout=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_matches_onnxruntime(case: Case, tmp_path) -> None:
    model = case.model()
    build = compile_onnx(model, tmp_path / "build", CompileOptions())
    outputs = build.run(list(case.inputs.values()))
    if case.reference == "onnx":
        from onnx.reference import ReferenceEvaluator

        expected = ReferenceEvaluator(model).run(None, case.inputs)
    else:
        expected = ort_run(model, case.inputs)
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        assert got.shape == want.shape, (got.shape, want.shape)
        bound = 1e-3 * max(1.0, float(np.max(np.abs(want))))
        assert float(np.max(np.abs(got - want))) <= bound


@pytest.mark.parametrize("attrs, message", [
    (dict(mode="cubic"), "mode 'cubic'"),
    (dict(mode="linear", antialias=1), "antialias"),
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize"),
], ids=["cubic", "antialias", "tf_crop_and_resize"])
def test_resize_refusals_name_the_attribute(attrs, message, tmp_path) -> None:
    case = Case("refused", node("Resize", ["x", "", "scales"], **attrs), {"x": rand(1, 1, 2, 2)},
                {"scales": np.array([1, 1, 2, 2], dtype=np.float32)}, opset=18)
    with pytest.raises(ModelImportError, match=message):
        compile_onnx(case.model(), tmp_path)


def test_resize_scales_computed_at_run_time_are_refused(tmp_path) -> None:
    case = Case("runtime_scales", node("Resize", ["x", "", "scales"]),
                {"x": rand(1, 1, 2, 2), "scales": np.array([1, 1, 2, 2], dtype=np.float32)}, opset=13)
    # (ONNX shape inference cannot size the output, and the handler would need the scales anyway)
    with pytest.raises(ModelImportError, match="no static shape|must be a constant"):
        compile_onnx(case.model(), tmp_path)
