"""Model inputs and outputs of every element type (issue 11, item 1): the glue's descriptors, the standalone
`model --input/--output`, the fork-servers' input sets and output bytes, and the Python side of `run` and
campaigns."""

from __future__ import annotations

import sqlite3
import subprocess

import numpy as np
import onnx
import pytest
from conftest import make_model, ort_run
from lltfi_mlir.llvm_backend.glue import DTYPE_CODES
from native_helpers import fake_model_build, result_bytes, trial_line
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir.campaign import Campaign, CampaignConfig, FaultConfig
from lltfi_mlir.campaign.executor import split_outputs
from lltfi_mlir.cli import main
from lltfi_mlir.compiler import compile_onnx
from lltfi_mlir.errors import InputError

DTYPES = sorted(DTYPE_CODES)


def _sample(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@pytest.fixture(scope="module")
def every_dtype_build(tmp_path_factory):
    """A stand-in model with one (2, 3) input per dtype; output i is input i's elements reversed, as (3, 2)."""
    inputs = [(f"in_{d}", (2, 3), d) for d in DTYPES]
    outputs = [(f"out_{d}", (3, 2), d) for d in DTYPES]
    body = "\n".join(f"  for (int k = 0; k < 6; k++) memcpy((char *)out[{i}] + k * {np.dtype(d).itemsize}, "
                     f"(char *)in[{i}] + (5 - k) * {np.dtype(d).itemsize}, {np.dtype(d).itemsize});"
                     for i, d in enumerate(DTYPES))
    return fake_model_build(tmp_path_factory.mktemp("dtypes") / "b", inputs, outputs, body)


def test_every_dtype_through_run_and_the_servers(every_dtype_build, tmp_path):
    build = every_dtype_build
    rng = np.random.default_rng(3)
    xs = [_sample(d, (2, 3), rng) for d in DTYPES]
    want = [x.reshape(-1)[::-1].reshape(3, 2) for x in xs]
    got = build.run(xs)
    for d, g, w in zip(DTYPES, got, want):
        assert g.dtype == np.dtype(d) and g.tobytes() == w.tobytes(), d
    paths = []
    for d, x in zip(DTYPES, xs):
        paths.append(tmp_path / f"{d}.npy")
        np.save(paths[-1], x)
    (tmp_path / "inputs.txt").write_text(" ".join(map(str, paths)) + "\n")
    for mode, stdin in (("--serve", trial_line(1, 0)), ("--walk", trial_line(1, 0) + "walk\n")):
        lines = subprocess.run([str(build.executable), mode, "--inputs-list", str(tmp_path / "inputs.txt")],
                               input=stdin, capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
        decoded = split_outputs(result_bytes(lines[1]), [(3, 2)] * len(DTYPES), DTYPES)
        assert all(g.dtype == w.dtype and g.tobytes() == w.tobytes() for g, w in zip(decoded, want)), mode


def test_wrong_dtype_is_one_line_error(every_dtype_build, tmp_path):
    build = every_dtype_build
    rng = np.random.default_rng(4)
    xs = [_sample(d, (2, 3), rng) for d in DTYPES]
    at = DTYPES.index("int64")
    xs[at] = xs[at].astype(np.float32)
    with pytest.raises(InputError, match=r"^input 'in_int64': expected int64 of shape 2x3, got float32 of shape 2x3$"):
        build.run(xs)
    # the native program alone says the same (status 2, one line)
    args = [str(build.executable)]
    for i, x in enumerate(xs):
        np.save(tmp_path / f"{i}.npy", x)
        args += ["--input", str(tmp_path / f"{i}.npy")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"input {at} from" in proc.stderr and "expected int64 of shape 2x3, got float32 of shape 2x3" in proc.stderr
    (tmp_path / "inputs.txt").write_text(" ".join(str(tmp_path / f"{i}.npy") for i in range(len(xs))) + "\n")
    proc = subprocess.run([str(build.executable), "--serve", "--inputs-list", str(tmp_path / "inputs.txt")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not int64 of the shape of input" in proc.stderr


def _int_model() -> onnx.ModelProto:
    """int64 token-like input -> int64 sum and bool mask."""
    return make_model([helper.make_node("Add", ["x", "x"], ["y"], name="add"),
                       helper.make_node("Cast", ["x"], ["mask"], to=TensorProto.BOOL, name="cast")],
                      [helper.make_tensor_value_info("x", TensorProto.INT64, [2, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.INT64, [2, 3]),
                       helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 3])], opset=17)


def test_int64_model_end_to_end_with_cli(tmp_path, capsys):
    onnx.save(_int_model(), tmp_path / "m.onnx")
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "b")]) == 0
    x = np.array([[0, 1, -5], [2**40, 0, 7]], np.int64)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(tmp_path / "b"), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                 "--output", str(tmp_path / "mask.npy")]) == 0
    want = ort_run(_int_model(), {"x": x})
    for name, w in zip(("y", "mask"), want):
        got = np.load(tmp_path / f"{name}.npy")
        assert got.dtype == w.dtype and np.array_equal(got, w), name
    capsys.readouterr()
    np.save(tmp_path / "bad.npy", x.astype(np.int32))
    assert main(["run", str(tmp_path / "b"), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "expected int64 of shape 2x3, got int32 of shape 2x3" in err and "\n" not in err and "Traceback" not in err


def test_float64_and_narrow_types_end_to_end(tmp_path):
    """float64, uint8 and int32 inputs; float64, float16, int8 and int32 outputs, against onnxruntime."""
    model = make_model([helper.make_node("Mul", ["a", "a"], ["sq"], name="sq"),
                        helper.make_node("Cast", ["a"], ["half"], to=TensorProto.FLOAT16, name="half"),
                        helper.make_node("Cast", ["u"], ["s"], to=TensorProto.INT8, name="s"),
                        helper.make_node("Add", ["i", "i"], ["i2"], name="i2")],
                       [helper.make_tensor_value_info("a", TensorProto.DOUBLE, [3]),
                        helper.make_tensor_value_info("u", TensorProto.UINT8, [4]),
                        helper.make_tensor_value_info("i", TensorProto.INT32, [2])],
                       [helper.make_tensor_value_info(n, t, s) for n, t, s in
                        (("sq", TensorProto.DOUBLE, [3]), ("half", TensorProto.FLOAT16, [3]),
                         ("s", TensorProto.INT8, [4]), ("i2", TensorProto.INT32, [2]))], opset=17)
    build = compile_onnx(model, tmp_path / "b")
    assert [t.dtype for t in build.inputs] == ["float64", "uint8", "int32"]
    assert [t.dtype for t in build.outputs] == ["float64", "float16", "int8", "int32"]
    feeds = {"a": np.array([1e300, -2.5, 1 / 3]), "u": np.array([0, 127, 128, 255], np.uint8),
             "i": np.array([2**30, -7], np.int32)}
    for got, want in zip(build.run(feeds), ort_run(model, feeds)):
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()


def test_campaign_with_int64_inputs_and_mixed_outputs(tmp_path):
    """int64 input sets through the fork-server; float32, int64 and bool outputs compared and stored."""
    w = np.random.default_rng(5).standard_normal((4, 2)).astype(np.float32)
    model = make_model([helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT, name="tofloat"),
                        helper.make_node("MatMul", ["xf", "w"], ["y"], name="fc"),
                        helper.make_node("Add", ["x", "x"], ["twice"], name="twice"),
                        helper.make_node("Greater", ["y", "zero"], ["pos"], name="pos")],
                       [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
                        helper.make_tensor_value_info("twice", TensorProto.INT64, [1, 4]),
                        helper.make_tensor_value_info("pos", TensorProto.BOOL, [1, 2])],
                       [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(1, np.float32), "zero")],
                       opset=17)
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "inputs").mkdir()
    x = np.array([[3, -1, 2, 5]], np.int64)
    np.save(tmp_path / "inputs" / "0.npy", x)
    campaign = Campaign.from_onnx(tmp_path / "m.onnx", CampaignConfig(faults=(FaultConfig(runs=40),), seed=2),
                                  out_dir=tmp_path / "out", db=tmp_path / "c.db", jobs=1)
    campaign.run(40, progress=False)
    golden = split_outputs(campaign.profiles[0].golden, [(1, 2), (1, 4), (1, 2)], ["float32", "int64", "bool"])
    for got, want in zip(golden, ort_run(model, {"x": x})):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    rows = sqlite3.connect(tmp_path / "c.db").execute("SELECT outcome, output FROM trials").fetchall()
    assert len(rows) == 40 and {"benign", "sdc"} & {o for o, _ in rows}
    assert all(len(out) == 2 * 4 + 4 * 8 + 2 for o, out in rows if out is not None)
