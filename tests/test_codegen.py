"""`--codegen optimized` against `--codegen reference`: same bits, same fault sites, same counts.

The optimized code (register-tiled vector Conv/Gemm/MatMul, `opt -O2`, llc -O2 for the host) must
perform every output element's scalar floating-point operations in the reference order, so its
outputs are bit-identical and each vector lane of a fault site is one reference instance.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ort_run
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.frontend.ops import conv as conv_ops

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RNG = np.random.default_rng(11)


def bits(arrays) -> list[bytes]:
    """Bit patterns, with every NaN made canonical: LLVM IR leaves NaN payloads and signs unspecified
    (x86 takes the first operand's, and fadd operands may be commuted), so only NaN-ness is compared."""
    out = []
    for a in arrays:
        a = np.array(a, dtype=np.float32, copy=True)
        a[np.isnan(a)] = np.nan
        out.append(a.tobytes())
    return out


def both_builds(model, tmp_path: Path, **options):
    optimized = compile_onnx(model, tmp_path / "optimized", CompileOptions(**options))
    reference = compile_onnx(model, tmp_path / "reference", CompileOptions(codegen="reference", **options))
    return optimized, reference


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXAMPLES.glob("*/model.onnx")))
def test_examples_bit_identical(name, tmp_path):
    optimized, reference = both_builds(EXAMPLES / name / "model.onnx", tmp_path)
    assert optimized.manifest["codegen"] == "optimized" and reference.manifest["opt_level"] == 0
    inputs = sorted((EXAMPLES / name / "inputs").glob("*.npy"))[:2]
    for path in inputs:
        x = np.load(path)
        assert bits(optimized.run([x])) == bits(reference.run([x]))
    assert "vector<" in (tmp_path / "optimized" / "model.llvm.mlir").read_text()


def conv_model(c, m, hw, kernel, stride, dilation, pads, group, bias, rank=2) -> onnx.ModelProto:
    w = RNG.standard_normal((m, c // group) + (kernel,) * rank).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    names = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(m).astype(np.float32), "b"))
        names.append("b")
    node = helper.make_node("Conv", names, ["y"], name="conv", strides=[stride] * rank,
                            dilations=[dilation] * rank, pads=list(pads) * rank if len(pads) == 2 else list(pads),
                            group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [1, c] + [hw] * rank)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# Remainders in both tile dimensions, strides (phase copies), dilation, groups, depthwise, 1-D and
# 3-D, 1x1 and 7x7 kernels, with and without bias. Output channels not a multiple of 8 (or grouped)
# take the nest with output positions in the lanes; the "channels_" cases take the one with output
# channels in the lanes (ops/conv.py: _channels_in_lanes).
CONVS = {
    "3x3": (5, 11, 13, 3, 1, 1, (1, 1), 1, True, 2),
    "stride2": (4, 13, 17, 3, 2, 1, (1, 1), 1, False, 2),
    "stride3_dilated": (6, 7, 19, 3, 3, 2, (2, 1), 1, True, 2),
    "grouped": (6, 12, 15, 3, 1, 1, (1, 1), 3, True, 2),
    "depthwise": (8, 8, 14, 3, 1, 1, (1, 1), 8, True, 2),
    "pointwise_7x7": (16, 36, 7, 1, 1, 1, (0, 0), 1, True, 2),
    "stem_7x7_stride2": (3, 20, 33, 7, 2, 1, (3, 3), 1, False, 2),
    "conv1d": (3, 9, 21, 5, 2, 1, (2, 2), 1, True, 1),
    "conv3d": (2, 5, 6, 3, 1, 1, (1, 1), 1, True, 3),
    # 1.2 MB of input, 4 KB of weights: output-channel blocks inside the output rows
    "channel_blocks_inside": (8, 14, 190, 3, 1, 1, (1, 1), 1, True, 2),
    # Pointwise planes of at most 64 elements run as one row: padded (the plane is the padded input),
    # grouped; wider planes, a row width that is a multiple of 8 and a stride keep the row-by-row path.
    "pointwise_padded": (5, 9, 5, 1, 1, 1, (1, 1), 1, False, 2),
    "pointwise_grouped": (12, 8, 6, 1, 1, 1, (0, 0), 4, True, 2),
    "pointwise_13x13_rows": (24, 20, 13, 1, 1, 1, (0, 0), 1, True, 2),
    "pointwise_16_wide": (6, 7, 16, 1, 1, 1, (0, 0), 1, True, 2),
    "pointwise_stride2": (6, 7, 15, 1, 2, 1, (0, 0), 1, True, 2),
    # Strided rows read from phase copies of the input (frontend/padding.py), depthwise ones too.
    "depthwise_stride2": (8, 8, 15, 3, 2, 1, (1, 1), 8, True, 2),
    # Depthwise tiles hold up to 12 channels: a remainder block of channels (20 = 12 + 8), a 7x7
    # plane, asymmetric pads, 5x5 stride 2, dilation.
    "depthwise_7x7_channel_blocks": (20, 20, 7, 3, 1, 1, (1, 1), 20, True, 2),
    "depthwise_5x5_stride2": (12, 12, 14, 5, 2, 1, (2, 2), 12, True, 2),
    "depthwise_asymmetric_dilated": (9, 9, 12, 3, 2, 2, (0, 1, 2, 3), 9, False, 2),
    "depthwise_multiplier2": (4, 8, 10, 3, 1, 1, (1, 1), 4, True, 2),
    "conv3d_stride2_phased": (4, 5, 7, 3, 2, 1, (1, 1), 1, True, 3),
    "stride_beyond_kernel": (4, 6, 11, 2, 3, 1, (0, 1), 1, False, 2),
    # A row's last vector of 3, 5 or 7 lanes loads in full from zero columns padded on: "3x3" (5 lanes)
    # and "grouped" (7) above, a 7x7 plane as in ResNet's last stage, and an unpadded Conv (3 lanes).
    "tail7_7x7": (16, 20, 7, 3, 1, 1, (1, 1), 1, True, 2),
    "tail3_unpadded": (3, 10, 13, 3, 1, 1, (0, 0), 1, False, 2),
    # Output channels in the lanes (at least CHANNEL_REDUCTION products per element): a remainder of
    # positions (121 = 20 x 6 + 1), a last panel of 8 channels (24 = 16 + 8), strides and dilation
    # read straight from the input (no phases), 1-D and 3-D, and weights larger than the cache
    # (panels outside the positions).
    "channels_3x3": (16, 16, 11, 3, 1, 1, (1, 1), 1, True, 2),
    "channels_stride2_last_panel": (16, 24, 13, 3, 2, 1, (1, 1), 1, False, 2),
    "channels_stride3_dilated": (16, 16, 19, 3, 3, 2, (2, 1), 1, True, 2),
    "channels_conv1d": (32, 16, 21, 5, 2, 1, (2, 2), 1, True, 1),
    "channels_conv3d": (8, 16, 6, 3, 1, 1, (1, 1), 1, True, 3),
    "channels_pointwise_7x7": (128, 40, 7, 1, 1, 1, (0, 0), 1, True, 2),
    "channels_stem_7x7_stride2": (3, 16, 33, 7, 2, 1, (3, 3), 1, False, 2),
    "channels_large_weights": (128, 64, 6, 3, 1, 1, (1, 1), 1, True, 2),
    "short_reduction": (16, 16, 9, 1, 1, 1, (0, 0), 1, True, 2),  # 16 products: positions in the lanes
}


def channel_lanes(linalg_text: str) -> bool:
    """Whether a Conv of the module put its output channels in the lanes: its tiles reach the NCHW
    output through a 2-D tile on the stack."""
    return re.search(r"memref\.alloca\(\) : memref<\d+x\d+xf32>", linalg_text) is not None


def test_traced_channel_lane_conv_returns_both_values(tmp_path):
    """A layer-tracing build of a channel-lane Conv with a fused Relu returns the Conv's own values and
    the Relu's, each bit-identical to the reference build's."""
    conv_only = conv_model(*CONVS["channels_3x3"])
    model = with_clip(onnx.ModelProto.FromString(conv_only.SerializeToString()), 0.0, None)
    optimized, reference = both_builds(model, tmp_path, trace=True)
    assert channel_lanes((tmp_path / "optimized" / "model.linalg.mlir").read_text())
    x = RNG.standard_normal((1, 16, 11, 11)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)

    def every_output(build) -> list[np.ndarray]:  # the graph's output, then the traced tensors
        outs = [tmp_path / f"{build.directory.name}{i}.npy" for i in range(3)]
        subprocess.run([str(build.directory / "model"), "--input", str(tmp_path / "x.npy"),
                        *[a for o in outs for a in ("--output", str(o))]], check=True, capture_output=True)
        return [np.load(o) for o in outs]

    got = every_output(optimized)
    assert bits(got) == bits(every_output(reference))
    conv = ort_run(conv_only, {"x": x})[0]
    assert [t["tensor"] for t in optimized.traced] == ["c", "y"]
    np.testing.assert_allclose(got[1], conv, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got[2], np.maximum(got[1], 0)) and np.array_equal(got[0], got[2])


def test_output_channels_in_lanes_where_they_fill_vectors(tmp_path):
    """Constant weights, one group, whole vectors of output channels and a long enough reduction: the
    channels are the lanes, else the output positions are."""
    for name in ("channels_3x3", "channels_pointwise_7x7", "3x3", "grouped", "pointwise_7x7", "short_reduction"):
        compile_onnx(conv_model(*CONVS[name]), tmp_path / name, CompileOptions())
        text = (tmp_path / name / "model.linalg.mlir").read_text()
        assert channel_lanes(text) == name.startswith("channels_"), name


def test_small_pointwise_plane_runs_as_one_row(tmp_path):
    for name, one_row in (("pointwise_7x7", True), ("pointwise_13x13_rows", False)):
        compile_onnx(conv_model(*CONVS[name]), tmp_path / name, CompileOptions())
        text = (tmp_path / name / "model.linalg.mlir").read_text()
        row_width = CONVS[name][2] % 8  # the vector of a row's last columns
        assert (f"vector<{row_width}xf32>" not in text) == one_row, name


def test_row_tail_of_3_5_or_7_lanes_loads_a_full_vector(tmp_path):
    """LLVM splits a load of 3, 5 or 7 floats into pieces; those tails load 8 lanes of a row padded with
    zero columns. A tail of 6 lanes keeps its own load (a full one measured slower)."""
    for name, tail in (("3x3", 5), ("grouped", 7), ("tail3_unpadded", 3), ("depthwise", 6)):
        compile_onnx(conv_model(*CONVS[name]), tmp_path / name, CompileOptions())
        text = (tmp_path / name / "model.linalg.mlir").read_text()
        loads = set(re.findall(r"vector\.load [^\n]*, vector<(\d+)xf32>", text))
        assert loads == ({"8"} if tail != 6 else {"8", "6"}), (name, loads)


def test_strided_conv_reads_phases(tmp_path):
    """Strided rows, depthwise ones included, read one vector per tap from the padded phase copy
    (frontend/padding.py), never a wide load and a strided shuffle (the reference has neither)."""
    for name in ("stride2", "depthwise_stride2", "depthwise_5x5_stride2"):
        optimized, reference = (compile_onnx(conv_model(*CONVS[name]), tmp_path / name / codegen,
                                             CompileOptions(codegen=codegen)) for codegen in ("optimized", "reference"))
        for build in (optimized, reference):
            text = (build.directory / "model.llvm.mlir").read_text()
            assert re.search(r"llvm\.shufflevector [^\[]*\[0, 2, 4,", text) is None, name
        assert "vector<" in (optimized.directory / "model.llvm.mlir").read_text()


def test_conv_loop_order_follows_memory_traffic():
    from lltfi_mlir.frontend.ops.conv import _channel_blocks_inside
    mb = 1 << 20
    assert _channel_blocks_inside(13 * mb, 147 << 10, 224, 11)       # VGG16 conv1_2: re-read 147 KB of weights
    assert not _channel_blocks_inside(100 << 10, 9 * mb, 7, 86)      # ResNet 7x7x512: the input fits in cache
    assert not _channel_blocks_inside(200 << 10, 100 << 10, 56, 11)  # both fit: the usual order


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv_bit_identical_and_matches_onnxruntime(name, tmp_path):
    model = conv_model(*CONVS[name])
    optimized, reference = both_builds(model, tmp_path)
    (spec,) = optimized.inputs
    x = RNG.standard_normal(spec.shape).astype(np.float32)
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def pool_model(op: str, c: int, hw: int, rank: int = 2, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="pool", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [1, c] + [hw] * rank)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# Pooling windows as vector loops: strides (phase copies), pads, ceil_mode, dilation, 1-D and
# 3-D, AveragePool's divisor rules; a 1-wide output row keeps the scalar generic. Global pools put
# channels in the lanes: 20 = 16 + 4 channels, a 1-D plane, 3 channels (one short vector).
POOLS = {
    "max_3x3_s2_ceil": ("MaxPool", 5, 28, 2, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "max_3x3_s1_pad1": ("MaxPool", 4, 14, 2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "max_2x2_s2": ("MaxPool", 3, 20, 2, dict(kernel_shape=[2, 2], strides=[2, 2])),
    "max_dilated": ("MaxPool", 2, 19, 2, dict(kernel_shape=[3, 2], dilations=[2, 3], pads=[0, 1, 2, 0])),
    "max_1d": ("MaxPool", 3, 37, 1, dict(kernel_shape=[4], strides=[3], pads=[1, 2])),
    "max_3d": ("MaxPool", 2, 9, 3, dict(kernel_shape=[2, 3, 2], strides=[1, 2, 1])),
    "max_one_column": ("MaxPool", 3, 5, 2, dict(kernel_shape=[5, 5])),
    "avg_3x3_pad_excluded": ("AveragePool", 4, 13, 2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "avg_3x3_pad_included": ("AveragePool", 4, 13, 2, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                                           count_include_pad=1)),
    "avg_2x2_s2": ("AveragePool", 6, 28, 2, dict(kernel_shape=[2, 2], strides=[2, 2])),
    "avg_ceil": ("AveragePool", 3, 17, 2, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    "global_avg_7x7": ("GlobalAveragePool", 20, 7, 2, {}),
    "global_max_9x9": ("GlobalMaxPool", 40, 9, 2, {}),
    "global_avg_1d": ("GlobalAveragePool", 3, 30, 1, {}),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pool_bit_identical_and_matches_onnxruntime(name, tmp_path):
    op, c, hw, rank, attrs = POOLS[name]
    model = pool_model(op, c, hw, rank, **attrs)
    optimized, reference = both_builds(model, tmp_path)
    x = RNG.standard_normal((1, c) + (hw,) * rank).astype(np.float32)
    x.flat[::23] = -0.0
    x.flat[5::29] = 0.0
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"x": x})[0], rtol=1e-6, atol=1e-6)
    vectorized = "vector<" in (tmp_path / "optimized" / "model.llvm.mlir").read_text()
    assert vectorized == (name != "max_one_column")


def test_maxpool_special_values_bit_identical(tmp_path):
    """NaN propagates and -0 < +0 in both builds (maximumf), whatever the lanes."""
    model = pool_model("MaxPool", 3, 16, 2, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    optimized, reference = both_builds(model, tmp_path)
    x = RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    x.flat[5::13] = -np.inf
    x.flat[1::5] = -0.0
    x.flat[2::9] = 0.0
    assert bits(optimized.run([x])) == bits(reference.run([x]))


def gemm_model(m, k, n, trans_a, trans_b, alpha, beta, const_b, with_c) -> onnx.ModelProto:
    a_shape = (k, m) if trans_a else (m, k)
    b_shape = (n, k) if trans_b else (k, n)
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)]
    inits = []
    if const_b:
        inits.append(numpy_helper.from_array(RNG.standard_normal(b_shape).astype(np.float32), "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, b_shape))
    names = ["a", "b"]
    if with_c:
        inits.append(numpy_helper.from_array(RNG.standard_normal((n,)).astype(np.float32), "c"))
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], name="fc", transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


GEMMS = {
    "linear": (1, 37, 21, 0, 1, 1.0, 1.0, True, True),
    "rows": (9, 8, 30, 0, 0, 1.0, 1.0, True, True),
    "alpha_beta": (5, 6, 7, 1, 0, 0.5, 2.0, True, True),
    "runtime_transposed_b": (4, 5, 19, 0, 1, 1.0, 1.0, False, False),
}


@pytest.mark.parametrize("name", sorted(GEMMS))
def test_gemm_bit_identical(name, tmp_path):
    model = gemm_model(*GEMMS[name])
    optimized, reference = both_builds(model, tmp_path)
    xs = [RNG.standard_normal(s.shape).astype(np.float32) for s in optimized.inputs]
    got = optimized.run(xs)
    assert bits(got) == bits(reference.run(xs))
    feeds = {s.name: x for s, x in zip(optimized.inputs, xs)}
    np.testing.assert_allclose(got[0], ort_run(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_batched_matmul_with_broadcast_bit_identical(tmp_path):
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 5, 6]),
                                            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 6, 11])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, reference = both_builds(model, tmp_path)
    xs = [RNG.standard_normal(s.shape).astype(np.float32) for s in optimized.inputs]
    assert bits(optimized.run(xs)) == bits(reference.run(xs))


@pytest.mark.parametrize("a_shape", [(9, 1, 20), (3, 4, 7, 20)], ids=["one_row_batches", "rank4"])
def test_matmul_batches_sharing_b_run_as_one_m_bit_identical(a_shape, tmp_path):
    """A batched A times a 2-D B: all batches' rows form one M (ViT's [197, 1, 768] projections ran as
    197 batches of one row, each reading all of B)."""
    w = numpy_helper.from_array(RNG.standard_normal((20, 13)).astype(np.float32), "w")
    node = helper.make_node("MatMul", ["a", "w"], ["y"], name="proj")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, reference = both_builds(model, tmp_path)
    rows = int(np.prod(a_shape[:-1]))
    assert f"memref<{rows}x13xf32>" in (tmp_path / "optimized" / "model.linalg.mlir").read_text()
    x = RNG.standard_normal(a_shape).astype(np.float32)
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"a": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,axis", [((2, 3, 37), -1), ((2, 37, 5), 1)], ids=["last_axis", "middle_axis"])
def test_softmax_bit_identical(shape, axis, tmp_path):
    """Over the last axis (attention), the elementwise loops run along it: exp vectorizes (it ran one
    element per loop of one iteration, 19 ns an element)."""
    node = helper.make_node("Softmax", ["x"], ["y"], name="softmax", axis=axis)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, reference = both_builds(model, tmp_path)
    x = (3 * RNG.standard_normal(shape)).astype(np.float32)
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)
    if axis == -1:
        text = subprocess.run(["objdump", "-d", str(optimized.executable)], capture_output=True, text=True,
                              check=True).stdout
        assert re.search(r"vcvtps2pd\s+%xmm\d+,%ymm", text), "exp's loop is not vectorized"


def test_matmul_with_column_panels_outside_row_blocks_bit_identical(tmp_path):
    """B of 300 KB and three row blocks: the row blocks run inside each column panel of B (a
    transformer's MLP shape, scaled down); batched, with a remainder block in both dimensions."""
    from lltfi_mlir.frontend.tiled import CACHE_BYTES

    m, k, n = 13, 300, 250
    assert 4 * k * n > CACHE_BYTES
    w = numpy_helper.from_array(RNG.standard_normal((k, n)).astype(np.float32), "w")
    node = helper.make_node("MatMul", ["a", "w"], ["y"], name="mlp")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    optimized, reference = both_builds(model, tmp_path)
    x = RNG.standard_normal((2, m, k)).astype(np.float32)
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"a": x})[0], rtol=1e-4, atol=1e-4)


def test_special_values_bit_identical(tmp_path):
    """NaN, infinities, signed zeros and subnormals travel the same operations in both builds (NaN payloads
    aside: see `bits`)."""
    model = conv_model(4, 9, 10, 3, 1, 1, (1, 1), 1, True)
    optimized, reference = both_builds(model, tmp_path)
    x = RNG.standard_normal((1, 4, 10, 10)).astype(np.float32)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    x.flat[5::13] = -np.inf
    x.flat[1::17] = -0.0
    x.flat[2::19] = np.float32(1e-42)
    assert bits(optimized.run([x])) == bits(reference.run([x]))


def test_codegen_options_are_checked(tmp_path):
    from lltfi_mlir.errors import UsageError

    model = conv_model(*CONVS["3x3"])
    with pytest.raises(UsageError, match="--codegen fast"):
        compile_onnx(model, tmp_path / "a", CompileOptions(codegen="fast"))
    with pytest.raises(UsageError, match="--target-cpu"):
        compile_onnx(model, tmp_path / "b", CompileOptions(target_cpu="x; rm -rf /"))
    from lltfi_mlir.compiler import SidOptions

    with pytest.raises(UsageError, match="--codegen reference"):
        compile_onnx(model, tmp_path / "d", CompileOptions(codegen="optimized", sid=SidOptions("aid")))
    portable = compile_onnx(model, tmp_path / "c", CompileOptions(target_cpu="portable"))
    assert portable.manifest["target_cpu"] == "portable"


# -- fault sites: the same instances, counted the same, with the same outcomes ----------------------

def _campaign_rows(db: Path) -> list[tuple]:
    import sqlite3

    query = "SELECT bit, outcome, value_before, value_after FROM trials"
    return sorted(sqlite3.connect(db).execute(query).fetchall())


def _exhaustive(model_path: Path, inputs: Path, tmp_path: Path, codegen: str):
    from lltfi_mlir.campaign import Campaign, CampaignConfig

    db = tmp_path / f"{codegen}.db"
    campaign = Campaign.from_onnx(model_path, CampaignConfig(), inputs, out_dir=tmp_path / codegen, db=db, jobs=2,
                                  codegen=codegen)
    return campaign, campaign.run(exhaustive=True, progress=False), _campaign_rows(db)


def _saved(tmp_path: Path, model: onnx.ModelProto, input_shape: tuple[int, ...]) -> tuple[Path, Path]:
    """The model and one random input set in tmp_path, for a campaign."""
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", RNG.standard_normal(input_shape).astype(np.float32))
    return path, tmp_path / "inputs"


def _tiny_conv(tmp_path: Path) -> tuple[Path, Path]:
    return _saved(tmp_path, conv_model(2, 3, 5, 3, 1, 1, (0, 0), 1, True), (1, 2, 5, 5))  # 27 outputs, 18 products each


def with_clip(model: onnx.ModelProto, low: float | None, high: float | None) -> onnx.ModelProto:
    """The Conv's output through Clip(low, high): ReLU6 is Clip(0, 6), fused into the tiled Conv."""
    model.graph.node[0].output[0] = "c"
    names = ["c"]
    for i, bound in enumerate((low, high)):
        names.append("" if bound is None else f"bound{i}")
        if bound is not None:
            model.graph.initializer.append(numpy_helper.from_array(np.array(bound, dtype=np.float32), f"bound{i}"))
    model.graph.node.append(helper.make_node("Clip", names, ["y"], name="relu6"))
    return model


def _tiny_conv_clip(tmp_path: Path) -> tuple[Path, Path]:
    path, inputs = _tiny_conv(tmp_path)
    onnx.save(with_clip(onnx.load(path), -0.5, 0.75), path)
    return path, inputs


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (None, 0.5), (-0.25, None)], ids=["relu6", "max_only", "min_only"])
def test_conv_clip_fused_bit_identical(bounds, tmp_path):
    model = with_clip(conv_model(5, 11, 13, 3, 1, 1, (1, 1), 1, True), *bounds)
    optimized, reference = both_builds(model, tmp_path)
    x = 4 * RNG.standard_normal((1, 5, 13, 13)).astype(np.float32)
    got = optimized.run([x])
    assert bits(got) == bits(reference.run([x]))
    np.testing.assert_allclose(got[0], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    ir_text = (tmp_path / "optimized" / "model.linalg.mlir").read_text()
    assert "@node_0(" in ir_text and "@node_1(" not in ir_text and 'loc("relu6")' in ir_text  # inside the Conv


def _tiny_pointwise(tmp_path: Path) -> tuple[Path, Path]:
    """A 1x1 Conv on a 7x7 plane, run as one row of 49 columns."""
    return _saved(tmp_path, conv_model(1, 2, 7, 1, 1, 1, (0, 0), 1, True), (1, 1, 7, 7))


def _tiny_strided(tmp_path: Path) -> tuple[Path, Path]:
    """A 2x2 stride-2 Conv of 16 output channels: it reads phase copies of its input."""
    return _saved(tmp_path, conv_model(1, 16, 5, 2, 2, 1, (0, 1), 1, True), (1, 1, 5, 5))


def _tiny_depthwise(tmp_path: Path) -> tuple[Path, Path]:
    """A 3x3 stride-2 depthwise Conv of 3 channels on a padded 5x5 plane: one tile of 3 channel rows,
    reading the padded phase copy."""
    return _saved(tmp_path, conv_model(3, 3, 5, 3, 2, 1, (1, 1), 3, True), (1, 3, 5, 5))


def _tiny_channels(tmp_path: Path) -> tuple[Path, Path]:
    """A 1-D Conv of 16 output channels and a fused Relu-like Clip, output channels in the lanes (the
    test lowers CHANNEL_REDUCTION for its 3 products per element): 7 positions, a tile of 6 and a
    remainder of 1."""
    path, inputs = _saved(tmp_path, conv_model(1, 16, 9, 3, 1, 1, (0, 0), 1, True, 1), (1, 1, 9))
    onnx.save(with_clip(onnx.load(path), 0.0, None), path)
    return path, inputs


def _tiny_pool(op: str, **attrs):
    def make(tmp_path: Path) -> tuple[Path, Path]:
        return _saved(tmp_path, pool_model(op, 1, 9, **attrs), (1, 1, 9, 9))
    return make


def _tiny_gemm(tmp_path: Path) -> tuple[Path, Path]:
    return _saved(tmp_path, gemm_model(2, 5, 3, 0, 1, 1.0, 1.0, True, True), (2, 5))


def _tiny_global_pool(tmp_path: Path) -> tuple[Path, Path]:
    """A GlobalAveragePool of 3 channels on 4x4 planes: one vector of 3 lanes."""
    return _saved(tmp_path, pool_model("GlobalAveragePool", 3, 4), (1, 3, 4, 4))


@pytest.mark.parametrize("make", [_tiny_gemm, _tiny_conv, _tiny_conv_clip, _tiny_pointwise, _tiny_strided,
                                  _tiny_depthwise, _tiny_channels,
                                  _tiny_pool("MaxPool", kernel_shape=[3, 3], strides=[2, 2]),
                                  _tiny_pool("AveragePool", kernel_shape=[2, 2], pads=[1, 0, 0, 1]), _tiny_global_pool],
                         ids=["gemm", "conv", "conv_clip", "pointwise", "strided", "depthwise", "channels", "maxpool",
                              "avgpool", "global_avgpool"])
def test_exhaustive_outcomes_identical(make, tmp_path, monkeypatch):
    """Every (instance, bit) of the reference build exists once in the optimized build, with the same
    value before and after the fault and the same outcome: only the numbering order differs."""
    if make is _tiny_channels:  # 3 products per element: put its output channels in the lanes anyway
        monkeypatch.setattr(conv_ops, "CHANNEL_REDUCTION", 3)
    path, inputs = make(tmp_path)
    ref_campaign, ref, ref_rows = _exhaustive(path, inputs, tmp_path, "reference")
    opt_campaign, opt, opt_rows = _exhaustive(path, inputs, tmp_path, "optimized")
    assert any(s.lanes > 1 for s in opt_campaign.instrumented.sites)
    text = (tmp_path / "optimized" / "build" / "model.linalg.mlir").read_text()
    assert channel_lanes(text) == (make is _tiny_channels)
    assert ref["trials"] == opt["trials"] > 0
    assert {k: v["count"] for k, v in ref["outcomes"].items()} == {k: v["count"] for k, v in opt["outcomes"].items()}
    assert ref_rows == opt_rows


def _site_totals(campaign) -> dict[tuple, int]:
    totals: dict[tuple, int] = {}
    for site, count in zip(campaign.instrumented.sites, campaign.profiles[0].site_counts):
        key = (site.node, site.opcode, site.register, site.type)
        totals[key] = totals.get(key, 0) + count
    return totals


def test_profile_counts_per_site_equal_reference(tmp_path):
    """Per (operator node, opcode, register, type): the dynamic counts of both builds agree, on a model
    with Conv, Relu, MaxPool, Gemm and Softmax."""
    from lltfi_mlir.campaign import Campaign, CampaignConfig

    model = EXAMPLES / "lenet_fmnist" / "model.onnx"
    counts = {}
    for codegen in ("reference", "optimized"):
        campaign = Campaign.from_onnx(model, CampaignConfig(), out_dir=tmp_path / codegen,
                                      db=tmp_path / f"{codegen}.db", codegen=codegen)
        campaign.prepare()
        counts[codegen] = _site_totals(campaign)
    assert counts["optimized"] == counts["reference"]
    assert sum(counts["reference"].values()) > 100_000


def test_instrumented_strided_conv_relu_builds_and_counts(tmp_path):
    """A stride-2 Conv with a fused Relu and a one-lane remainder tile: the optimizer (an assertion
    build of LLVM) once refused it ('instcombine did not reach a fixpoint'); the instrumented build
    must compile and its counts must pass the hooked self-check."""
    from lltfi_mlir.campaign import Campaign, CampaignConfig

    model = conv_model(3, 8, 99, 3, 2, 1, (0, 0), 1, True)
    model.graph.node[0].output[0] = "c"
    model.graph.node.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    path = tmp_path / "conv_relu.onnx"
    onnx.save(model, path)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", RNG.standard_normal((1, 3, 99, 99)).astype(np.float32))
    campaign = Campaign.from_onnx(path, CampaignConfig(), tmp_path / "inputs", out_dir=tmp_path / "out",
                                  db=tmp_path / "c.db")
    campaign.prepare()
    assert campaign.self_check == "passed"
    assert any(s.op_type == "Relu" and s.lanes > 1 for s in campaign.instrumented.sites)
    # The cold copies were outlined and compiled apart (at -O0): the hooked self-check ran them.
    directory = campaign.instrumented.directory
    assert list(directory.glob("*.cold.o"))
    symbols = subprocess.run(["nm", str(campaign.instrumented.executable)], capture_output=True, text=True).stdout
    assert ".cold." in symbols


SPLIT_MODULE = """source_filename = "LLVMDialectModule"

@__constant_4xf32 = private constant [4 x float] [float 1.0, float 2.0, float 3.0, float 4.0], align 64
@w = external constant [4 x float], align 64

declare void @lltfi_fi_lanes_f32(i32, ptr, i32)

define float @node_0(ptr %0) {
  %2 = load float, ptr @__constant_4xf32, align 4
  %3 = load float, ptr %0, align 4
  %4 = fadd float %2, %3
  ret float %4
}

define { ptr, i64 } @node_1(ptr %0, i64 %1) {
  %3 = load float, ptr @__constant_4xf32, align 4
  store float %3, ptr %0, align 4
  %4 = insertvalue { ptr, i64 } undef, ptr %0, 0
  %5 = insertvalue { ptr, i64 } %4, i64 %1, 1
  ret { ptr, i64 } %5
}

define float @main_graph(ptr %0) {
  %2 = call float @node_0(ptr %0)
  %3 = call { ptr, i64 } @node_1(ptr %0, i64 4)
  %4 = load float, ptr @w, align 4
  %5 = fmul float %2, %4
  ret float %5
}
"""


def test_textual_split_gives_parts_that_link_into_the_module(tmp_path):
    """Every definition lands in exactly one part, the others declare it, and each part's copy of a
    local constant has its own name: the parts link (llvm-link refuses duplicate definitions)."""
    from lltfi_mlir.llvm_backend.codegen import split_functions
    from lltfi_mlir.llvm_backend.toolchain import tool_path

    parts = split_functions(SPLIT_MODULE, 2)
    assert parts is not None and len(parts) == 2
    files = []
    for k, part in enumerate(parts):
        (tmp_path / f"p{k}.ll").write_text(part)
        files.append(str(tmp_path / f"p{k}.ll"))
    defined = [sorted(line.split("@")[1].split("(")[0] for line in p.splitlines() if line.startswith("define"))
               for p in parts]
    assert sorted(defined[0] + defined[1]) == ["main_graph", "node_0", "node_1"]
    linked = subprocess.run([tool_path("llvm-link"), *files, "-S", "-o", "-"], capture_output=True, text=True)
    assert linked.returncode == 0, linked.stderr
    assert linked.stdout.count("define ") == 3
    # split_cold may make a local visible: each part's copy has a name of its own.
    assert "@__constant_4xf32.part0 = private" in parts[0] and "@__constant_4xf32.part1 = private" in parts[1]
    # A local function (or variable) is left to llvm-split.
    assert split_functions(SPLIT_MODULE.replace("define float @node_0", "define internal float @node_0"), 2) is None
    assert split_functions(SPLIT_MODULE.replace("private constant", "internal global"), 2) is None
