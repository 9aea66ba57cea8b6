"""The compile pipeline end to end on small hand-built models, checked against onnxruntime."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import assert_close, make_model, ort_run, tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.errors import InputError, ModelImportError, UsageError


def test_tiny_cnn_matches_onnxruntime(tmp_path):
    build = compile_onnx(tiny_cnn(), tmp_path / "b")
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
        (got,) = build.run([x])
        (want,) = ort_run(tiny_cnn(), {"x": x})
        assert_close(got, want)


def test_artifacts_and_manifest(tmp_path):
    build = compile_onnx(tiny_cnn(), tmp_path / "b")
    for name in ("model.linalg.mlir", "model.llvm.mlir", "model.ll", "model", "manifest.json"):
        assert (tmp_path / "b" / name).exists(), name
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    nodes = {n["name"]: n for n in manifest["nodes"]}
    assert nodes["conv1"]["op_type"] == "Conv" and nodes["conv1"]["type_index"] == 0
    assert nodes["conv1"]["outputs"][0]["shape"] == [1, 4, 8, 8]
    # Unnamed nodes get onnx-mlir style names: <OpType>_<index>.
    assert nodes["Relu_1"]["index"] == 1
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert build.outputs[0].shape == (1, 10)


def test_module_bytecode_copy_follows_the_text(tmp_path):
    """Instrumenting parses the bytecode copy of exactly the text on disk: the same module; a text
    edited afterwards is parsed itself (its copy no longer matches)."""
    from mlir import ir

    from lltfi_mlir.module_file import read_llvm_module

    compile_onnx(tiny_cnn(), tmp_path / "b")
    text = (tmp_path / "b" / "model.llvm.mlir").read_text()
    (copy,) = (tmp_path / "b").glob("model.llvm.*.mlirbc")
    with ir.Context():
        assert str(ir.Module.parse(copy.read_bytes())) == str(ir.Module.parse(text))
        edited = text.replace("llvm.func @main_graph", "llvm.func @edited_in()\n  llvm.func @main_graph", 1)
        assert edited != text
        (tmp_path / "b" / "model.llvm.mlir").write_text(edited)
        assert "@edited_in" in str(read_llvm_module(tmp_path / "b"))


def test_every_float_arithmetic_op_keeps_its_onnx_node_location(tmp_path):
    compile_onnx(tiny_cnn(), tmp_path / "b")
    text = (tmp_path / "b" / "model.llvm.mlir").read_text()
    aliases = dict(re.findall(r'^(#loc\d+) = (loc\(.*\))$', text, flags=re.MULTILINE))
    arithmetic = re.findall(r"llvm\.(fmul|fadd|fdiv|fsub|intr\.maximum|intr\.exp)\b.* loc\((#loc\d+|\"[^\"]*\")\)",
                            text)
    assert arithmetic
    names = set()
    for _, loc in arithmetic:
        resolved = aliases.get(loc, loc)
        match = re.search(r'"([^"]+)"', resolved)
        assert match, f"arithmetic without a node location: {resolved}"
        names.add(match.group(1))
    # Conv multiply-adds, the Relu/MaxPool maximum, the Gemm and the softmax all reachable by name.
    assert {"conv1", "Relu_1", "pool1", "fc", "softmax"} <= names


def test_weights_stay_out_of_the_textual_ir(tmp_path):
    compile_onnx(tiny_cnn(), tmp_path / "b")
    ll = (tmp_path / "b" / "model.ll").read_text()
    assert re.search(r"@__constant_\w+ = external constant", ll)
    assert len(ll) < 200_000


def test_dynamic_batch_bound_by_shape_option(tmp_path):
    build = compile_onnx(tiny_cnn(), tmp_path / "b", CompileOptions(shapes={"batch": (3,)}))
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    (got,) = build.run([x])
    assert_close(got, ort_run(tiny_cnn(), {"x": x})[0])
    with pytest.raises(InputError, match="expected float32 of shape 3x1x8x8"):
        build.run([x[:1]])
    with pytest.raises(InputError, match="float64"):
        build.run([x.astype(np.float64)])


def test_shape_option_for_a_whole_input(tmp_path):
    build = compile_onnx(tiny_cnn(), tmp_path / "b", CompileOptions(shapes={"x": (2, 1, 8, 8)}))
    assert build.inputs[0].shape == (2, 1, 8, 8)
    with pytest.raises(UsageError, match="match no model input"):
        compile_onnx(tiny_cnn(), tmp_path / "c", CompileOptions(shapes={"nope": (1,)}))


def test_several_inputs_and_outputs(tmp_path):
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Mul", ["s", "a"], ["p"]),
        helper.make_node("Sigmoid", ["p"], ["o2"]),
        helper.make_node("ReduceMean", ["s"], ["o1"], axes=[1], keepdims=0),
    ]
    model = make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3])],
                       [helper.make_tensor_value_info("o1", TensorProto.FLOAT, [2]),
                        helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2, 3])])
    build = compile_onnx(model, tmp_path / "b")
    rng = np.random.default_rng(3)
    feeds = {"a": rng.standard_normal((2, 3)).astype(np.float32),
             "b": rng.standard_normal((1, 3)).astype(np.float32)}
    got = build.run(feeds)
    for g, w in zip(got, ort_run(model, feeds)):
        assert_close(g, w)


def test_shape_subgraph_is_folded(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape, as tf2onnx and Keras write a flatten."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    build = compile_onnx(model, tmp_path / "b")
    x = np.random.default_rng(4).standard_normal((1, 2, 3)).astype(np.float32)
    assert_close(build.run([x])[0], ort_run(model, {"x": x})[0])


def test_unsupported_operators_are_all_listed_before_any_work(tmp_path):
    nodes = [helper.make_node("Hardmax", ["x"], ["a"], name="hardmax_a"),
             helper.make_node("Hardmax", ["a"], ["b"], name="hardmax_b"),
             helper.make_node("LpNormalization", ["b"], ["y"], name="lpnorm_1")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    with pytest.raises(ModelImportError) as info:
        compile_onnx(model, tmp_path / "b")
    message = str(info.value)
    assert "Hardmax (hardmax_a, hardmax_b)" in message and "LpNormalization (lpnorm_1)" in message
    assert not (tmp_path / "b").exists()


def test_input_without_native_io_is_refused(tmp_path):
    """float64 and the integer types are model inputs now (tests/test_dtype_io.py); bfloat16 has no .npy type."""
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [4])],
                       [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [4])])
    with pytest.raises(ModelImportError, match="BFLOAT16"):
        compile_onnx(model, tmp_path / "b")


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelImportError, match="cannot parse"):
        compile_onnx(bad, tmp_path / "b")
    with pytest.raises(UsageError, match="not found"):
        compile_onnx(tmp_path / "missing.onnx", tmp_path / "b")


def test_opt_levels_agree(tmp_path):
    x = np.random.default_rng(5).standard_normal((1, 1, 8, 8)).astype(np.float32)
    outs = [compile_onnx(tiny_cnn(), tmp_path / f"o{level}", CompileOptions(opt_level=level)).run([x])[0]
            for level in (0, 2)]
    # llc optimises code generation only; no reassociation, so results are bit-identical.
    assert np.array_equal(outs[0], outs[1])
