"""Memory: the native program frees every buffer, artifacts hold no weights, weights are read once.

RSS is measured through a small wrapper process: a child's maximum RSS includes whatever its parent
held when it was spawned, so measuring the model directly from pytest would hide a leak below
pytest's own size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import assert_close, make_model, ort_run
from lltfi_mlir.dialect_passes.lowering import TO_LLVM, run_pipeline
from lltfi_mlir.llvm_backend.codegen import build_native
from lltfi_mlir.llvm_backend.glue import generate_glue
from mlir import ir
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.errors import ModelImportError
from lltfi_mlir.frontend import onnx_reader
from lltfi_mlir.frontend.importer import check_operators, check_supported
from lltfi_mlir.frontend.onnx_loader import open_model, prepare

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
F = TensorProto.FLOAT

_MAX_RSS = ("import resource, subprocess, sys\n"
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def max_rss_kb(args: list[str]) -> int:
    """Peak RSS of one run of `args`, in KB (Linux ru_maxrss units)."""
    proc = subprocess.run([sys.executable, "-c", _MAX_RSS, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


def run_repeated(build_dir: Path, inputs: list[np.ndarray], n_outputs: int, repeat: int) -> list[np.ndarray]:
    """Run the native program `repeat` times in one process; a double free aborts it."""
    args = [str(build_dir / "model"), "--repeat", str(repeat)]
    for i, array in enumerate(inputs):
        np.save(build_dir / f"in{i}.npy", array)
        args += ["--input", str(build_dir / f"in{i}.npy")]
    for i in range(n_outputs):
        args += ["--output", str(build_dir / f"out{i}.npy")]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    return [np.load(build_dir / f"out{i}.npy") for i in range(n_outputs)]


# -- 1. every buffer is freed ---------------------------------------------------------------------

def test_repeated_inference_keeps_a_flat_rss(tmp_path):
    example = EXAMPLES / "lenet_fmnist"
    compile_onnx(example / "model.onnx", tmp_path / "b")
    args = [str(tmp_path / "b" / "model"), "--input", str(example / "inputs" / "0.npy"), "--repeat"]
    few, many = max_rss_kb(args + ["100"]), max_rss_kb(args + ["10000"])
    # Without deallocation LeNet leaked ~66 KB per inference: 650 MB over these 9,900 runs.
    assert many - few < 8 * 1024, (few, many)


def _x() -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", F, [2, 3])


def _out(name: str, shape=(2, 3)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, F, list(shape))


SMALL_C = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "C")
# Above the importer's resource threshold: a constant global (allocated pointer 0xdeadbeef).
BIG_C = numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "BIG")
SHAPE = numpy_helper.from_array(np.array([3, 2], np.int64), "s")

ALIASING = {
    "identity_of_input": ([helper.make_node("Identity", ["x"], ["y"])], [_out("y")], []),
    "input_is_output": ([], [_out("x")], []),
    "reshaped_input": ([helper.make_node("Reshape", ["x", "s"], ["y"])], [_out("y", (3, 2))], [SHAPE]),
    "small_constant_output": ([helper.make_node("Relu", ["x"], ["r"])], [_out("r"), _out("C")], [SMALL_C]),
    "global_constant_output": ([helper.make_node("Relu", ["x"], ["r"])], [_out("r"), _out("BIG", (20, 30))],
                               [BIG_C]),
    "identity_of_constant": ([helper.make_node("Identity", ["BIG"], ["y"])], [_out("y", (20, 30))], [BIG_C]),
    "same_output_twice": ([helper.make_node("Relu", ["x"], ["r"])], [_out("r"), _out("r")], []),
    "identity_of_output": ([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["i"])],
                           [_out("r"), _out("i")], []),
    "input_and_result": ([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["x"], ["i"])],
                         [_out("i"), _out("r")], []),
}


@pytest.mark.parametrize("case", sorted(ALIASING))
def test_outputs_that_alias_inputs_constants_or_each_other(tmp_path, case):
    nodes, outputs, inits = ALIASING[case]
    model = make_model(nodes, [_x()], outputs, inits)
    compile_onnx(model, tmp_path / "b")
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    got = run_repeated(tmp_path / "b", [x], len(outputs), repeat=300)
    for actual, expected in zip(got, ort_run(model, {"x": x})):
        assert_close(actual, expected)


def test_traced_views_of_one_buffer_are_freed_once(tmp_path):
    """A layer trace returns Relu's buffer and a Reshape view of it: one allocation, two results."""
    model = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Reshape", ["r", "s"], ["y"]),
                        helper.make_node("Sigmoid", ["y"], ["z"])], [_x()], [_out("z", (3, 2))], [SHAPE])
    build = compile_onnx(model, tmp_path / "b", CompileOptions(trace=True))
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    assert [t["tensor"] for t in build.traced] == ["r", "y", "z"]
    z, r, y, z_traced = run_repeated(tmp_path / "b", [x], 4, repeat=300)
    assert_close(z, ort_run(model, {"x": x})[0])
    relu = np.maximum(x, 0)
    assert np.array_equal(r, relu) and np.array_equal(y, relu.reshape(3, 2)) and np.array_equal(z_traced, z)
    glue = (tmp_path / "b" / "glue.c").read_text()
    assert "lltfi_free_results(owned, 4, inputs);" in glue


ALIASED_RESULTS = """
memref.global "private" constant @c : memref<2xf32> = dense<[1.0, 2.0]> {alignment = 64 : i64}
func.func @main_graph(%x: memref<2xf32>) -> (memref<2xf32>, memref<2xf32>, memref<2xf32>, memref<2xf32>,
                                             memref<1x2xf32>) attributes {llvm.emit_c_interface} {
  %g = memref.get_global @c : memref<2xf32>
  %a = memref.alloc() {alignment = 64 : i64} : memref<2xf32>
  linalg.add ins(%x, %g : memref<2xf32>, memref<2xf32>) outs(%a : memref<2xf32>)
  %v = memref.expand_shape %a [[0, 1]] output_shape [1, 2] : memref<2xf32> into memref<1x2xf32>
  return %x, %g, %a, %a, %v : memref<2xf32>, memref<2xf32>, memref<2xf32>, memref<2xf32>, memref<1x2xf32>
}
"""


def test_glue_frees_only_what_the_model_allocated(tmp_path):
    """Lowered without the deallocation pipeline, the entry returns its input, a constant global
    (allocated pointer 0xdeadbeef), one buffer twice and a view of it: the glue must free that
    buffer once and nothing else, or 1,000 runs abort (double free) or crash."""
    with ir.Context():
        module = ir.Module.parse(ALIASED_RESULTS)
        run_pipeline(module, TO_LLVM, "lowering to LLVM")
        (tmp_path / "model.llvm.mlir").write_text(str(module))
    outputs = [("x", (2,)), ("c", (2,)), ("a", (2,)), ("a_again", (2,)), ("view", (1, 2))]
    (tmp_path / "glue.c").write_text(generate_glue("main_graph", [("x", (2,))], outputs))
    build_native(tmp_path / "model.llvm.mlir", tmp_path, "model", [tmp_path / "glue.c"])
    x = np.array([10.0, 20.0], np.float32)
    got = run_repeated(tmp_path, [x], len(outputs), repeat=1000)
    c, total = np.array([1.0, 2.0], np.float32), np.array([11.0, 22.0], np.float32)
    for actual, expected in zip(got, [x, c, total, total, total.reshape(1, 2)]):
        assert np.array_equal(actual, expected)


# -- 2. no artifact holds weight text -------------------------------------------------------------

def _wide_gemm(n: int = 1024, trans_b: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "B")]
    nodes = [helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=trans_b, name="fc"),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    return make_model(nodes, [helper.make_tensor_value_info("x", F, [1, n])],
                      [helper.make_tensor_value_info("y", F, [1, n])], inits)


def test_no_artifact_holds_the_weights_as_text(tmp_path):
    model = _wide_gemm(1024, trans_b=1)
    weight_bytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)  # 4 MB
    build = compile_onnx(model, tmp_path / "b")
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["weights_bytes"] >= weight_bytes
    for name in ("model.linalg.mlir", "model.llvm.mlir", "model.ll", "glue.c", "weights.S", "manifest.json"):
        path = tmp_path / "b" / name
        assert path.stat().st_size < weight_bytes / 10, (name, path.stat().st_size)
        assert "dialect_resources" not in path.read_text(), name
    # The weights are named in the readable module, their values left out.
    assert "dense_resource<" in (tmp_path / "b" / "model.linalg.mlir").read_text()
    x = np.random.default_rng(1).standard_normal((1, 1024)).astype(np.float32)
    assert_close(build.run([x])[0], ort_run(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


# -- 3. unsupported operators are refused before any weight is read ---------------------------------

def _with_unsupported(path: Path) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
             helper.make_node("Hardmax", ["m"], ["e"], name="hardmax"),
             helper.make_node("Hardmax", ["e"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F, ["batch", 512])],
                       [helper.make_tensor_value_info("y", F, ["batch", 512])], inits)
    onnx.save(model, path)
    return model


def test_unsupported_operator_refused_before_weights_are_read(tmp_path, monkeypatch):
    model = _with_unsupported(tmp_path / "erf.onnx")
    with pytest.raises(ModelImportError) as late:  # the message the full load used to give
        check_supported(prepare(model))
    reads = []
    original = onnx_reader._file_reader

    def spy(*args):
        read = original(*args)
        return lambda: reads.append(1) or read()

    monkeypatch.setattr(onnx_reader, "_file_reader", spy)
    with pytest.raises(ModelImportError) as early:
        compile_onnx(tmp_path / "erf.onnx", tmp_path / "b")
    assert str(early.value) == str(late.value) == "unsupported ONNX operators: Hardmax (hardmax, Hardmax_2)"
    assert reads == [] and not (tmp_path / "b").exists()
    assert open_model(tmp_path / "erf.onnx").weights.keys() == {"W"}  # the weight would have been read lazily


def test_early_check_leaves_foldable_shape_arithmetic_to_folding():
    """NonZero has no handler, but Shape(x) -> NonZero folds away; fed by x itself it cannot."""
    axis = numpy_helper.from_array(np.array(0, np.int64), "i0")
    shape_chain = make_model(
        [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("NonZero", ["s"], ["n"]),
         helper.make_node("Reshape", ["x", "target"], ["y"])],
        [_x()], [_out("y", (6,))], [axis, numpy_helper.from_array(np.array([6], np.int64), "target")])
    check_operators(open_model(shape_chain))
    on_data = make_model([helper.make_node("NonZero", ["x"], ["y"])], [_x()],
                         [helper.make_tensor_value_info("y", TensorProto.INT64, [None, None])], [axis])
    with pytest.raises(ModelImportError, match=r"unsupported ONNX operators: NonZero \(NonZero_0\)"):
        check_operators(open_model(on_data))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Foo", ["i0"], ["z"],
                                                                                        domain="acme")],
                              "custom", [_x()], [_out("y")], [axis])
    custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("acme", 1)])
    with pytest.raises(ModelImportError, match=r"acme\.Foo \(Foo_1\)"):
        check_operators(open_model(custom))


# -- 4. weights are read once, straight into numpy --------------------------------------------------

def test_scanned_weights_equal_what_onnx_load_gives(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.standard_normal((40, 50)).astype(np.float32),
        "f16": rng.standard_normal(3000).astype(np.float16),
        "i64": rng.integers(-5, 5, (2000,)).astype(np.int64),
        "small": rng.standard_normal(10).astype(np.float32),
    }
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    typed = helper.make_tensor("typed", F, [2000], rng.standard_normal(2000).astype(np.float32).tolist())
    arrays["typed"] = numpy_helper.to_array(typed)
    nodes = [helper.make_node("Identity", [n], [f"o_{n}"]) for n in arrays]
    outputs = [helper.make_tensor_value_info(f"o_{n}", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in arrays.items()]
    model = make_model(nodes, [], outputs, [*inits, typed])
    want = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    onnx.save(model, tmp_path / "m.onnx")
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)  # (moves the model's data out, in place)
    for name in ("m.onnx", "ext.onnx"):
        source = open_model(tmp_path / name)
        got = {init.name: numpy_helper.to_array(init) for init in source.model.graph.initializer}
        got.update((n, ref.load()) for n, ref in source.weights.items())
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            assert got[key].dtype == value.dtype and np.array_equal(got[key], value), (name, key)
    assert {"f32", "f16", "i64"} <= open_model(tmp_path / "m.onnx").weights.keys()


def test_a_file_the_scan_refuses_is_parsed_by_onnx(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x0f\xff\xff not protobuf")
    with pytest.raises(ModelImportError, match="cannot parse .* as ONNX|holds no graph"):
        open_model(tmp_path / "bad.onnx")


_PEAK = """
import json, sys
from lltfi_mlir import compile_onnx
def status(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
base = status("VmRSS:")
compile_onnx(sys.argv[1], sys.argv[2])
print(json.dumps({"base_kb": base, "peak_kb": status("VmHWM:")}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_compile_peak_memory_is_a_small_multiple_of_the_weights(tmp_path):
    model = _wide_gemm(3072)  # 36 MB of float32 weights
    onnx.save(model, tmp_path / "m.onnx")
    weight_bytes = 3072 * 3072 * 4
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "m.onnx"), str(tmp_path / "b")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    usage = json.loads(proc.stdout.splitlines()[-1])
    # The weights once, plus what MLIR and onnx need whatever the model (~25 MB here). Before: the
    # file, its parse, a model copy per shape-inference round and to_array copies, ~9x the weights.
    assert (usage["peak_kb"] - usage["base_kb"]) * 1024 < 1.5 * weight_bytes + (32 << 20), usage
