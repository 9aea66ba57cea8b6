"""Small models of the families issue 11 names, compiled natively and compared with onnxruntime.

- an int8 model quantized by `onnxruntime.quantization.quantize_static` (QDQ and QOperator formats),
  built from the tiny CNN of conftest.py, and an MLP quantized by `quantize_dynamic`
  (DynamicQuantizeLinear, MatMulInteger): no framework needed, so they run in the default suite;
- PyTorch exports (TorchScript exporter) of a ConvNeXt block (LayerNormalization, Erf-based GELU),
  an LSTM and a GRU classifier, a 1-D convolution audio model and a YOLO-style detection head (Conv,
  Resize, Concat, Sigmoid, Slice): marked slow, skipped with a message when torch is absent.
Bound: max |error| <= 1e-3 * max(1, max |reference|), as the issue states.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ort_run, tiny_cnn

from lltfi_mlir import CompileOptions, compile_onnx


def _within_bound(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    error = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))) if want.size else 0.0
    assert error <= 1e-3 * max(1.0, float(np.max(np.abs(want)))), error
    return error


def _compare(model_path: Path, feeds: dict[str, np.ndarray], out: Path) -> None:
    model = onnx.load(model_path)
    build = compile_onnx(model_path, out, CompileOptions())
    got = build.run(list(feeds.values()))
    want = ort_run(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        _within_bound(g, w)


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_int8_quantize_static_model(quant_format: str, tmp_path: Path) -> None:
    from onnxruntime import quantization as q

    model = tiny_cnn()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2  # a static batch
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, float_path)
    rng = np.random.default_rng(11)

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    q.quantize_static(str(float_path), str(int8_path), Reader(), quant_format=getattr(q.QuantFormat, quant_format),
                      op_types_to_quantize=["Conv", "Relu", "MaxPool"],
                      weight_type=q.QuantType.QInt8,
                      activation_type=q.QuantType.QUInt8)
    ops = {n.op_type for n in onnx.load(int8_path).graph.node}
    assert ("QLinearConv" in ops) if quant_format == "QOperator" else ("DequantizeLinear" in ops)
    _compare(int8_path, {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)}, tmp_path / "build")


def test_int8_quantize_dynamic_model(tmp_path: Path) -> None:
    """quantize_dynamic: DynamicQuantizeLinear on the activations, MatMulInteger with int8 weights."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime import quantization as q

    rng = np.random.default_rng(12)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((32,)).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((32, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(model, float_path)
    q.quantize_dynamic(str(float_path), str(int8_path), weight_type=q.QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(int8_path).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, ops
    _compare(int8_path, {"x": rng.standard_normal((3, 16)).astype(np.float32)}, tmp_path / "build")


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")


def _export(module, example, path: Path) -> Path:
    torch = _torch()
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, example, str(path), dynamo=False, opset_version=17)
    return path


def _torch_models():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)

    class Recurrent(nn.Module):
        def __init__(self, kind: str) -> None:
            super().__init__()
            cell = nn.LSTM if kind == "lstm" else nn.GRU
            self.rnn = cell(16, 24, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Linear(48, 5)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.head(y[:, -1])

    class Audio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv1d(1, 8, 9, stride=2, padding=4), nn.BatchNorm1d(8), nn.ReLU(),
                                     nn.MaxPool1d(2), nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(),
                                     nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 4))

        def forward(self, x):
            return self.net(x)

    class YoloHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.reduce = nn.Conv2d(32, 16, 1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.detect = nn.Conv2d(32, 3 * 7, 1)

        def forward(self, small, large):
            x = torch.cat([self.up(self.reduce(small)), large], 1)
            p = torch.sigmoid(self.detect(x))
            b, _, h, w = p.shape
            p = p.view(b, 3, 7, h, w)
            return torch.cat([p[:, :, :2] * 2 - 0.5, p[:, :, 2:4] * 4, p[:, :, 4:]], 2)

    class ConvNeXtBlock(nn.Module):  # torchvision's CNBlock: depthwise 7x7, channels-last LayerNorm, GELU
        def __init__(self, dim: int = 16) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, dim, 4, stride=4)
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            self.gamma = nn.Parameter(torch.full((dim,), 0.5))
            self.head = nn.Linear(dim, 10)

        def forward(self, x):
            x = self.stem(x)
            y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))) * self.gamma
            x = x + y.permute(0, 3, 1, 2)
            return self.head(x.mean((2, 3)))

    return {
        "convnext_block": (ConvNeXtBlock(), (torch.randn(1, 3, 32, 32),)),
        "lstm": (Recurrent("lstm"), (torch.randn(2, 6, 16),)),
        "gru": (Recurrent("gru"), (torch.randn(2, 6, 16),)),
        "audio_conv1d": (Audio(), (torch.randn(2, 1, 400),)),
        "yolo_head": (YoloHead(), (torch.randn(1, 32, 5, 5), torch.randn(1, 16, 10, 10))),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_block", "lstm", "gru", "audio_conv1d", "yolo_head"])
def test_torch_model_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    module, example = _torch_models()[name]
    path = _export(module, example, tmp_path / f"{name}.onnx")
    model = onnx.load(path)
    feeds = {vi.name: t.numpy() for vi, t in zip(model.graph.input, example)}
    _compare(path, feeds, tmp_path / "build")


# -- torchvision classifiers of issue 11's zoo (exported by benchmarks/zoo.py, cached) ----------------

TORCHVISION_ZOO = ["mobilenet_v3_small", "shufflenet_v2_x1_0", "googlenet", "regnet_y_400mf", "convnext_tiny",
                   "vit_b_16", "swin_t", "resnet18", "mobilenet_v2", "efficientnet_b0", "squeezenet1_1",
                   "mnasnet0_5", "densenet121", "resnet50"]


def _zoo_export(name: str) -> Path:
    """The cached export, or a fresh one through benchmarks/zoo.py (random weights, opset 17)."""
    import importlib.util

    name_ = "lltfi_zoo_benchmark"
    if name_ not in sys.modules:  # dataclasses look their module up in sys.modules
        spec = importlib.util.spec_from_file_location(
            name_, Path(__file__).resolve().parents[1] / "benchmarks" / "zoo.py")
        sys.modules[name_] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name_])
    zoo = sys.modules[name_]
    path = zoo.CACHE / f"{name}-opset{zoo.OPSET}.onnx"
    if not path.exists():
        if not zoo.torch_available():
            pytest.skip("torch and torchvision are not installed (and no cached export): see DEVELOPERS.md")
        path.parent.mkdir(parents=True, exist_ok=True)
        zoo.export_torchvision(name, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_ZOO)
def test_torchvision_classifier_matches_onnxruntime(name: str, tmp_path: Path) -> None:
    model = onnx.load(_zoo_export(name))
    # torchvision zero-initializes some classifier heads (ViT): with random weights elsewhere the
    # output would be all zeros and prove nothing, so zero float tensors get small random values.
    rng = np.random.default_rng(1)
    for i, init in enumerate(model.graph.initializer):
        value = onnx.numpy_helper.to_array(init)
        if value.dtype == np.float32 and value.size >= 1000 and not value.any():
            model.graph.initializer[i].CopyFrom(onnx.numpy_helper.from_array(
                (rng.standard_normal(value.shape) * 0.02).astype(np.float32), init.name))
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    _compare(path, {model.graph.input[0].name: x}, tmp_path / "build")
