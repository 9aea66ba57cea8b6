"""Every bundled example model (all three exporters included) against onnxruntime on its inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_close, ort_run

from lltfi_mlir import compile_onnx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted(p.parent.name for p in EXAMPLES.glob("*/model.onnx"))


def test_examples_are_present():
    expected = {"lenet_fmnist", "cnn_fmnist", "lenet_mnist", "cnn_mnist", "dave2", "alexnet_cifar",
                "squeezenet_cifar", "cnn_fmnist_legacy", "cnn_fmnist_dynamo", "cnn_fmnist_keras"}
    assert expected <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_example_matches_onnxruntime(name, tmp_path):
    model_path = EXAMPLES / name / "model.onnx"
    build = compile_onnx(model_path, tmp_path / name)
    model = onnx.load(str(model_path))
    inputs = sorted((EXAMPLES / name / "inputs").glob("*.npy"))
    assert inputs, f"{name} ships no test inputs"
    (spec,) = build.inputs
    for path in inputs:
        x = np.load(path)
        got = build.run([x])
        want = ort_run(model, {spec.name: x})
        for g, w in zip(got, want):
            assert_close(g, w)
