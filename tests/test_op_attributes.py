"""Operator attributes the ONNX node tests leave out, checked against onnxruntime.

The node tests (test_onnx_node_tests.py) have six Conv cases, no grouped or 1-D/3-D convolution, no
SAME_LOWER convolution, no legacy (opset < 13) Softmax and no float32 Cast. Each case here is one node
with small random inputs, compiled natively and compared with onnxruntime (or, for opsets older than
onnxruntime runs, with numpy), at the same tolerance: rtol 1e-4, atol 1e-5, NaN == NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.errors import ModelImportError

RNG = np.random.default_rng(20261114)


def rand(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return RNG.uniform(low, high, size=shape).astype(np.float32)


@dataclass(frozen=True)
class OpCase:
    id: str
    node: onnx.NodeProto
    inputs: dict[str, np.ndarray]  # run-time inputs, in node-input order
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 13
    # "ort" (onnxruntime), "onnx" (onnx.reference, where onnxruntime refuses the attributes) or a numpy
    # function of the inputs and initializers by name.
    reference: str | Callable[[dict[str, np.ndarray]], list[np.ndarray]] = "ort"

    def model(self) -> onnx.ModelProto:
        dtype = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}
        inputs = [helper.make_tensor_value_info(n, dtype[a.dtype], a.shape) for n, a in self.inputs.items()]
        outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in self.node.output if n]
        inits = [numpy_helper.from_array(a, n) for n, a in self.inits.items()]
        graph = helper.make_graph([self.node], self.id, inputs, outputs, inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets)
        model.ir_version = max(4, helper.find_min_ir_version_for(opsets, ignore_unknown=True))
        return model

    def expected(self) -> list[np.ndarray]:
        if callable(self.reference):
            return self.reference({**self.inputs, **self.inits})
        if self.reference == "onnx":
            from onnx.reference import ReferenceEvaluator

            return ReferenceEvaluator(self.model()).run(None, self.inputs)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(self.model().SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        return session.run(None, self.inputs)


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], name=f"{op.lower()}_node", **attrs)


def conv_case(id: str, x: tuple, w: tuple, bias: bool = False, const_w: bool = False, opset: int = 13,
              reference: str = "ort", **attrs) -> OpCase:
    names = ["x", "w"] + (["b"] if bias else [])
    arrays = {"x": rand(*x), "w": rand(*w), "b": rand(w[0])}
    runtime = {n: arrays[n] for n in names if not (const_w and n != "x")}
    inits = {n: arrays[n] for n in names if const_w and n != "x"}
    return OpCase(id, node("Conv", names, **attrs), runtime, inits, opset, reference)


def pool_case(id: str, op: str, x: tuple, opset: int = 19, data: np.ndarray | None = None, **attrs) -> OpCase:
    return OpCase(id, node(op, ["x"], **attrs), {"x": rand(*x) if data is None else data}, opset=opset)


def _legacy_add(values: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [values["a"] + values["b"].reshape(values["b"].shape + (1,))]


def _lrn_ref(size: int, alpha: float, beta: float, bias: float):
    def ref(values):
        x = values["x"].astype(np.float64)
        channels = x.shape[1]
        square_sum = np.zeros_like(x)
        for c in range(channels):
            lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)  # ceil((size-1)/2)
            square_sum[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        return [(x / (bias + alpha / size * square_sum) ** beta).astype(np.float32)]

    return ref


def _bn_spatial0(values):
    v = values
    return [((v["x"] - v["mean"]) / np.sqrt(v["var"] + 1e-5) * v["scale"] + v["bias"]).astype(np.float32)]


SPECIAL = np.array([-np.inf, -100.0, -3.5, -1.0, -0.0, 0.0, 0.5, 1.0, 100.0, np.inf, np.nan], np.float32)

CASES = [
    # -- Conv: ranks, groups, strides, dilations, pads, auto_pad, constant weights -------------------------
    conv_case("conv1d_stride_dilation_pads", (1, 2, 10), (4, 2, 3), bias=True, strides=[2], pads=[1, 2],
              dilations=[2]),
    conv_case("conv1d_same_lower_stride2", (1, 1, 7), (2, 1, 4), auto_pad="SAME_LOWER", strides=[2]),
    conv_case("conv2d_group2_bias_asym_pads", (2, 4, 6, 5), (6, 2, 3, 3), bias=True, group=2,
              pads=[1, 0, 1, 2]),
    conv_case("conv2d_depthwise_same_upper", (1, 3, 5, 5), (3, 1, 3, 3), group=3, strides=[2, 2],
              auto_pad="SAME_UPPER", dilations=[2, 1], reference="onnx"),  # ort: no dilated SAME
    conv_case("conv2d_same_lower_stride_dilation", (1, 2, 9, 8), (3, 2, 3, 2), auto_pad="SAME_LOWER",
              strides=[2, 2], dilations=[2, 2], reference="onnx"),
    conv_case("conv2d_valid_stride3", (1, 1, 8, 8), (2, 1, 2, 2), auto_pad="VALID", strides=[3, 3]),
    conv_case("conv2d_depthwise_multiplier2", (1, 2, 6, 6), (4, 1, 3, 3), bias=True, group=2, pads=[1, 1, 1, 1]),
    conv_case("conv3d_group2", (1, 4, 5, 6, 4), (2, 2, 3, 2, 3), bias=True, group=2, strides=[1, 2, 1],
              pads=[1, 0, 1, 0, 1, 1]),
    conv_case("conv2d_const_weights_kernel_shape", (1, 3, 6, 6), (4, 3, 3, 3), bias=True, const_w=True,
              kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    conv_case("conv2d_opset1", (1, 2, 5, 5), (2, 2, 2, 2), opset=1, strides=[1, 2]),
    # -- MaxPool ---------------------------------------------------------------------------------------------
    pool_case("maxpool1d_ceil_pads", "MaxPool", (1, 2, 11), kernel_shape=[3], strides=[2], pads=[1, 1],
              ceil_mode=1),
    pool_case("maxpool2d_same_lower_stride2", "MaxPool", (1, 1, 7, 6), kernel_shape=[3, 2], strides=[2, 2],
              auto_pad="SAME_LOWER"),
    pool_case("maxpool2d_dilations_ceil_pads", "MaxPool", (1, 1, 9, 9), kernel_shape=[2, 2], strides=[2, 2],
              dilations=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    pool_case("maxpool2d_negative_inputs_pads", "MaxPool", (1, 2, 4, 4), kernel_shape=[3, 3],
              pads=[1, 1, 1, 1], data=rand(1, 2, 4, 4, low=-9.0, high=-1.0)),
    pool_case("maxpool3d_stride_pads", "MaxPool", (1, 2, 5, 6, 7), kernel_shape=[2, 3, 2], strides=[2, 1, 2],
              pads=[0, 1, 1, 1, 1, 0]),
    pool_case("maxpool2d_opset8_storage_order", "MaxPool", (1, 1, 5, 5), opset=8, kernel_shape=[2, 2],
              storage_order=1),
    # -- AveragePool -----------------------------------------------------------------------------------------
    pool_case("avgpool2d_same_lower_exclude_pad", "AveragePool", (1, 2, 7, 7), kernel_shape=[3, 3],
              strides=[2, 2], auto_pad="SAME_LOWER"),
    pool_case("avgpool2d_same_upper_include_pad", "AveragePool", (1, 1, 6, 5), kernel_shape=[3, 2],
              strides=[2, 1], auto_pad="SAME_UPPER", count_include_pad=1),
    pool_case("avgpool2d_ceil_pads_exclude_pad", "AveragePool", (1, 1, 6, 6), kernel_shape=[3, 3],
              strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    pool_case("avgpool2d_ceil_pads_include_pad", "AveragePool", (1, 1, 6, 6), kernel_shape=[3, 3],
              strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    pool_case("avgpool1d_include_pad_asym", "AveragePool", (1, 3, 10), kernel_shape=[4], strides=[3],
              pads=[2, 1], count_include_pad=1),
    pool_case("avgpool2d_ceil_last_window_on_pad_exclude_pad", "AveragePool", (1, 2, 2, 2), opset=22,
              kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
    pool_case("maxpool2d_ceil_last_window_on_pad", "MaxPool", (1, 2, 5, 2), opset=22, kernel_shape=[3, 3],
              strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
    pool_case("avgpool3d_ceil_stride2", "AveragePool", (1, 1, 5, 5, 5), kernel_shape=[2, 2, 2],
              strides=[2, 2, 2], ceil_mode=1),
    pool_case("avgpool2d_dilations_pads", "AveragePool", (1, 1, 8, 8), kernel_shape=[2, 3], dilations=[2, 2],
              pads=[1, 2, 1, 2]),
    pool_case("avgpool2d_opset7_include_pad", "AveragePool", (1, 1, 5, 5), opset=7, kernel_shape=[2, 2],
              pads=[1, 1, 0, 0], count_include_pad=1),
    pool_case("avgpool2d_opset10_ceil", "AveragePool", (1, 1, 5, 5), opset=10, kernel_shape=[2, 2],
              strides=[2, 2], ceil_mode=1),
    pool_case("globalavgpool1d", "GlobalAveragePool", (2, 3, 7)),
    pool_case("globalavgpool3d", "GlobalAveragePool", (1, 2, 3, 4, 5)),
    pool_case("globalmaxpool3d", "GlobalMaxPool", (1, 2, 3, 4, 5)),
    # -- Gemm / MatMul ---------------------------------------------------------------------------------------
    OpCase("gemm_transA_transB_alpha_beta_vector_c",
           node("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0, transA=1, transB=1),
           {"a": rand(4, 3), "b": rand(5, 4), "c": rand(5)}),
    OpCase("gemm_column_c", node("Gemm", ["a", "b", "c"]), {"a": rand(3, 4), "b": rand(4, 2), "c": rand(3, 1)}),
    OpCase("gemm_runtime_c_beta", node("Gemm", ["a", "b", "c"], beta=0.3, transB=1),
           {"a": rand(2, 6), "b": rand(3, 6), "c": rand(2, 3)}),
    OpCase("gemm_const_b_const_scalar_c", node("Gemm", ["a", "b", "c"], beta=1.5, transB=1), {"a": rand(2, 8)},
           {"b": rand(4, 8), "c": np.array(0.75, np.float32)}),
    OpCase("gemm_beta0_ignores_c", node("Gemm", ["a", "b", "c"], beta=0.0), {"a": rand(2, 3), "b": rand(3, 2)},
           {"c": np.full((2, 2), np.nan, np.float32)}),
    OpCase("gemm_opset9", node("Gemm", ["a", "b", "c"], transA=1), {"a": rand(3, 2), "b": rand(3, 4),
                                                                    "c": rand(1, 4)}, opset=9),
    OpCase("gemm_opset11_no_c", node("Gemm", ["a", "b"], alpha=-1.0), {"a": rand(2, 3), "b": rand(3, 2)},
           opset=11),
    OpCase("matmul_batch_broadcast", node("MatMul", ["a", "b"]), {"a": rand(2, 1, 3, 4), "b": rand(5, 4, 2)}),
    OpCase("matmul_1d_2d", node("MatMul", ["a", "b"]), {"a": rand(3), "b": rand(3, 4)}),
    OpCase("matmul_3d_1d_const", node("MatMul", ["a", "b"]), {"a": rand(2, 3, 4)}, {"b": rand(4)}),
    # -- element-wise ----------------------------------------------------------------------------------------
    OpCase("add_opset6_legacy_broadcast_axis", node("Add", ["a", "b"], broadcast=1, axis=1),
           {"a": rand(2, 3, 4, 5), "b": rand(3, 4)}, opset=6, reference=_legacy_add),
    OpCase("mul_opset6_legacy_broadcast_suffix", node("Mul", ["a", "b"], broadcast=1),
           {"a": rand(2, 3, 4), "b": rand(4)}, opset=6,
           reference=lambda v: [v["a"] * v["b"]]),
    OpCase("sub_bidirectional_broadcast", node("Sub", ["a", "b"]), {"a": rand(3, 1, 5), "b": rand(4, 1)}),
    OpCase("div_const_scalar", node("Div", ["a", "b"]), {"a": rand(2, 3)}, {"b": np.array(3.0, np.float32)}),
    OpCase("pow_const_int64_exponent", node("Pow", ["a", "b"]), {"a": rand(2, 3)}, {"b": np.array(3, np.int64)}),
    OpCase("pow_negative_base_integral_exponent", node("Pow", ["a", "b"]), {"a": rand(4), "b":
                                                                          np.array([2, 3, 0, 1], np.float32)}),
    OpCase("sum_three_broadcast", node("Sum", ["a", "b", "c"]), {"a": rand(2, 3), "b": rand(3), "c": rand(2, 1)}),
    OpCase("relu_special_values", node("Relu", ["x"]), {"x": SPECIAL}),
    OpCase("leakyrelu_alpha_special", node("LeakyRelu", ["x"], alpha=0.2), {"x": SPECIAL}),
    OpCase("elu_alpha", node("Elu", ["x"], alpha=0.5), {"x": rand(3, 4, low=-5, high=5)}),
    OpCase("sigmoid_special_values", node("Sigmoid", ["x"]), {"x": SPECIAL}),
    OpCase("tanh_special_values", node("Tanh", ["x"]), {"x": SPECIAL}),
    OpCase("atan_special_values", node("Atan", ["x"]), {"x": SPECIAL}),
    OpCase("exp_range", node("Exp", ["x"]), {"x": rand(10, low=-80, high=80)}),
    OpCase("sqrt_negative_is_nan", node("Sqrt", ["x"]), {"x": rand(8, low=-1, high=4)}),
    OpCase("clip_opset6_attributes", node("Clip", ["x"], min=-0.5, max=1.0), {"x": rand(3, 4)}, opset=6),
    OpCase("clip_opset11_max_only", node("Clip", ["x", "", "hi"]), {"x": rand(3, 4)},
           {"hi": np.array(0.25, np.float32)}, opset=11),
    OpCase("clip_opset13_const_bounds", node("Clip", ["x", "lo", "hi"]), {"x": rand(2, 5)},
           {"lo": np.array(-1.0, np.float32), "hi": np.array(1.5, np.float32)}),
    OpCase("cast_float_to_float", node("Cast", ["x"], to=TensorProto.FLOAT), {"x": rand(2, 3)}, opset=19),
    OpCase("identity", node("Identity", ["x"]), {"x": rand(2, 2)}),
    OpCase("dropout_opset7_ratio", node("Dropout", ["x"], ratio=0.3), {"x": rand(2, 3)}, opset=7),
    OpCase("dropout_opset13_training_false", node("Dropout", ["x", "r", "t"]), {"x": rand(2, 3)},
           {"r": np.array(0.5, np.float32), "t": np.array(False)}),
    # -- normalisation ---------------------------------------------------------------------------------------
    OpCase("softmax_opset11_axis1_coerced_2d", node("Softmax", ["x"], axis=1), {"x": rand(2, 3, 4)}, opset=11),
    OpCase("softmax_opset11_default_axis", node("Softmax", ["x"]), {"x": rand(2, 3, 4)}, opset=11),
    OpCase("softmax_opset13_axis1_4d", node("Softmax", ["x"], axis=1), {"x": rand(2, 3, 2, 2)}),
    OpCase("logsoftmax_opset11_axis2", node("LogSoftmax", ["x"], axis=2), {"x": rand(2, 3, 4)}, opset=11),
    OpCase("logsoftmax_opset13_axis0", node("LogSoftmax", ["x"], axis=0), {"x": rand(3, 4)}),
    OpCase("reducemean_opset13_axes_no_keepdims", node("ReduceMean", ["x"], axes=[1, -1], keepdims=0),
           {"x": rand(2, 3, 4, 5)}),
    OpCase("reducemean_opset11_all_axes", node("ReduceMean", ["x"]), {"x": rand(2, 3, 4)}, opset=11),
    OpCase("reducemean_opset18_axes_init", node("ReduceMean", ["x", "axes"], keepdims=0), {"x": rand(2, 3, 4)},
           {"axes": np.array([0, 2], np.int64)}, opset=18),
    OpCase("reducemean_opset18_noop_empty_axes", node("ReduceMean", ["x"], noop_with_empty_axes=1),
           {"x": rand(2, 3)}, opset=18),
    OpCase("batchnorm_opset9_2d_const", node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                                             epsilon=1e-3),
           {"x": rand(4, 3)}, {"scale": rand(3), "bias": rand(3), "mean": rand(3), "var": rand(3, low=0.1)},
           opset=9),
    OpCase("batchnorm_opset15_runtime_params_5d",
           node("BatchNormalization", ["x", "scale", "bias", "mean", "var"]),
           {"x": rand(1, 2, 3, 2, 2), "scale": rand(2), "bias": rand(2), "mean": rand(2),
            "var": rand(2, low=0.1)}, opset=15),
    OpCase("batchnorm_opset7_spatial0", node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                                             spatial=0),
           {"x": rand(2, 3, 2, 2)}, {"scale": rand(3, 2, 2), "bias": rand(3, 2, 2), "mean": rand(3, 2, 2),
                                     "var": rand(3, 2, 2, low=0.1)}, opset=7, reference=_bn_spatial0),
    # onnxruntime takes only odd sizes and 4-D inputs; onnx.reference's LRN loops over the batch
    # dimension instead of the channels. numpy, from the formula in the operator's documentation.
    OpCase("lrn_even_size", node("LRN", ["x"], size=4, alpha=0.01, beta=0.6, bias=2.0), {"x": rand(1, 6, 3, 3)},
           reference=_lrn_ref(4, 0.01, 0.6, 2.0)),
    OpCase("lrn_3d_input_size1", node("LRN", ["x"], size=1), {"x": rand(2, 4, 5)},
           reference=_lrn_ref(1, 1e-4, 0.75, 1.0)),
    # -- layout ----------------------------------------------------------------------------------------------
    OpCase("flatten_opset9_axis3", node("Flatten", ["x"], axis=3), {"x": rand(2, 3, 4, 5)}, opset=9),
    OpCase("reshape_zero_and_minus_one", node("Reshape", ["x", "s"]), {"x": rand(2, 3, 4)},
           {"s": np.array([0, -1, 2], np.int64)}),
    OpCase("squeeze_opset11_attr_axes", node("Squeeze", ["x"], axes=[0, -1]), {"x": rand(1, 3, 1, 2, 1)},
           opset=11),
    OpCase("squeeze_no_axes", node("Squeeze", ["x"]), {"x": rand(1, 3, 1, 2)}),
    OpCase("unsqueeze_opset11_attr_axes", node("Unsqueeze", ["x"], axes=[0, 3]), {"x": rand(3, 2)}, opset=11),
    OpCase("transpose_perm_4d", node("Transpose", ["x"], perm=[2, 0, 3, 1]), {"x": rand(2, 3, 4, 5)}),
    OpCase("concat_three_with_init_axis1", node("Concat", ["a", "b", "c"], axis=1),
           {"a": rand(2, 1, 3), "c": rand(2, 2, 3)}, {"b": rand(2, 3, 3)}),
    OpCase("pad_opset2_attr_value", node("Pad", ["x"], pads=[0, 1, 2, 0], value=1.5), {"x": rand(2, 3)}, opset=2),
    OpCase("pad_opset11_negative_crop", node("Pad", ["x", "p", "v"]), {"x": rand(4, 5)},
           {"p": np.array([-1, 2, 1, -2], np.int64), "v": np.array(-3.0, np.float32)}, opset=11),
    OpCase("pad_crop_only", node("Pad", ["x", "p"]), {"x": rand(2, 4, 5)},
           {"p": np.array([0, -1, 0, -1, 0, -2], np.int64)}),
    OpCase("pad_opset18_axes", node("Pad", ["x", "p", "", "axes"]), {"x": rand(2, 3, 4)},
           {"p": np.array([1, 0, 2, 3], np.int64), "axes": np.array([0, -1], np.int64)}, opset=18),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_case(case: OpCase, tmp_path) -> None:
    build = compile_onnx(case.model(), tmp_path / "b", CompileOptions(opt_level=0))
    got = build.run(list(case.inputs.values()))
    want = case.expected()
    assert len(got) == len(want)
    for actual, expected in zip(got, want):
        expected = np.asarray(expected)
        assert actual.dtype == np.float32
        assert actual.shape == expected.shape, (actual.shape, expected.shape)
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True)


def test_case_ids_are_unique() -> None:
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
def test_pad_modes_other_than_constant_are_refused(mode: str, tmp_path) -> None:
    case = OpCase(f"pad_{mode}", node("Pad", ["x", "p"], mode=mode), {"x": rand(2, 3)},
                  {"p": np.array([1, 1, 1, 1], np.int64)}, opset=19)
    with pytest.raises(ModelImportError, match=f"mode '{mode}'"):
        compile_onnx(case.model(), tmp_path / "b")


def test_batchnorm_training_mode_is_refused(tmp_path) -> None:
    params = {n: rand(2, low=0.1) for n in ("scale", "bias", "mean", "var")}
    case = OpCase("bn_training", node("BatchNormalization", ["x", *params], ["y", "m", "v"], training_mode=1),
                  {"x": rand(2, 2, 3)}, params, opset=15)
    with pytest.raises(ModelImportError, match="training mode"):
        compile_onnx(case.model(), tmp_path / "b")


@pytest.mark.parametrize("op", ["AveragePool", "MaxPool"])
def test_ceil_window_starting_in_padding_before_opset22_is_refused(op: str, tmp_path) -> None:
    """ONNX shape inference before opset 22 keeps a ceil_mode window that starts in the end padding;
    runtimes drop it. The importer takes the inferred shape, so it must refuse, not add a window."""
    case = pool_case("ceil_on_pad", op, (1, 2, 2, 2), opset=19, kernel_shape=[3, 3], strides=[3, 3],
                     pads=[1, 1, 1, 1], ceil_mode=1)
    with pytest.raises(ModelImportError, match="opset >= 22"):
        compile_onnx(case.model(), tmp_path / "b")
