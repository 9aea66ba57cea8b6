"""The onnx wheel's `light_*` model graphs (AlexNet ... DenseNet) with random weights vs onnxruntime.

Their weights are ConstantOfShape placeholders; each is replaced by a seeded random initializer
scaled like He initialisation, so activations stay in a sane range through 50+ layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_close, ort_run
from onnx import numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    kept, inits = [], []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in consts:
            shape = tuple(int(d) for d in consts[node.input[0]])
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            if len(shape) == 1:  # biases, BatchNorm parameters: positive keeps var valid
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            inits.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        else:
            kept.append(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    out.graph.initializer.extend(inits)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_light_model_matches_onnxruntime(name, tmp_path):
    model = with_random_weights(onnx.load(str(LIGHT / f"light_{name}.onnx")))
    build = compile_onnx(model, tmp_path / name)
    (spec,) = build.inputs
    x = np.random.default_rng(1).uniform(0, 1, spec.shape).astype(np.float32)
    got = build.run([x])
    want = ort_run(model, {spec.name: x})
    for g, w in zip(got, want):
        assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_light_model_optimized_is_bit_identical_to_reference(name, tmp_path):
    """The reference build runs minutes on the 224x224 models: slow test."""
    model = with_random_weights(onnx.load(str(LIGHT / f"light_{name}.onnx")))
    optimized = compile_onnx(model, tmp_path / "optimized")
    reference = compile_onnx(model, tmp_path / "reference", CompileOptions(codegen="reference"))
    (spec,) = optimized.inputs
    x = np.random.default_rng(1).uniform(0, 1, spec.shape).astype(np.float32)
    for got, ref in zip(optimized.run([x]), reference.run([x])):
        nan = np.isnan(got)  # NaN payloads are unspecified in LLVM IR; NaN-ness is compared
        assert np.array_equal(nan, np.isnan(ref)) and got[~nan].tobytes() == ref[~nan].tobytes()
