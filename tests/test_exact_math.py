"""`llvm.exp.f32` and `erff` expanded into the model (llvm_backend/exact_math.py): accurate,
vectorized, and the same bits in every build.

The references are float64 `numpy.exp` and `scipy.special.erf` rounded once to float32 (correctly
rounded but for ties closer than double precision can resolve), not libm's `expf` and `erff`, which
this replaces.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from lltfi_mlir.llvm_backend.exact_math import use_exact_math
from onnx import TensorProto, helper

from lltfi_mlir import CompileOptions, compile_onnx

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
                    88.72283, 88.72284, 89.0, -87.33654, -103.27893, -103.97207, -103.97208, -104.0, -150.0,
                    0.34657359, -0.34657359, 1.0, -1.0, 0.5, 1e-8, -1e-8], dtype=np.float32)


def unary_model(op: str, n: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], name=op.lower())], op, [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def samples(n: int) -> np.ndarray:
    """Every float class: a dense sweep of exp's finite range, random bit patterns, special values."""
    rng = np.random.default_rng(5)
    sweep = rng.uniform(-110.0, 95.0, n // 2).astype(np.float32)
    patterns = rng.integers(0, 2 ** 32, n - n // 2 - SPECIAL.size, dtype=np.uint64).astype(np.uint32).view(np.float32)
    return np.concatenate([SPECIAL, sweep, patterns])


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between same-signed finite float32 values."""
    ia, ib = a.view(np.int32).astype(np.int64), b.view(np.int32).astype(np.int64)
    return np.abs(ia - ib)


def correctly_rounded_exp(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32)


def both_builds(model, tmp: Path):
    return (compile_onnx(model, tmp / "optimized", CompileOptions()),
            compile_onnx(model, tmp / "reference", CompileOptions(codegen="reference")))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """NaN where the other is NaN (payloads aside), every other value bit for bit."""
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and a[~nan].tobytes() == b[~nan].tobytes()


@pytest.fixture(scope="module")
def exp_builds(tmp_path_factory):
    x = samples(1 << 18)
    return (x, *both_builds(unary_model("Exp", x.size), tmp_path_factory.mktemp("exp")))


def test_exp_is_correctly_rounded_and_handles_special_values(exp_builds):
    x, optimized, _ = exp_builds
    (y,) = optimized.run([x])
    expected = correctly_rounded_exp(x)
    nan = np.isnan(x)
    assert np.isnan(y[nan]).all()
    finite = ~nan
    assert np.array_equal(np.isinf(y[finite]), np.isinf(expected[finite]))  # overflow exactly where it must
    assert np.array_equal(y[finite] == 0, expected[finite] == 0)            # underflow exactly where it must
    distance = ulps(y[finite], expected[finite])
    assert distance.max() <= 1
    assert (distance != 0).mean() < 1e-5, f"{(distance != 0).sum()} of {distance.size} not correctly rounded"
    # The special values one by one: exp(-inf) = +0, exp(inf) = inf, exp(+-0) = 1, exp(tiny) = 1.
    (y_special,) = optimized.run([np.resize(SPECIAL, x.size)])
    assert y_special[2] == np.inf and y_special[3] == 0.0 and y_special[0] == 1.0 and y_special[1] == 1.0
    assert y_special[5] == 1.0 and np.isnan(y_special[4])


def test_exp_same_bits_in_optimized_and_reference_builds(exp_builds):
    x, optimized, reference = exp_builds
    (a,), (b,) = optimized.run([x]), reference.run([x])
    assert same_bits(a, b)


def test_sigmoid_loop_is_vectorized_without_libm(tmp_path):
    """The expansion is inline, so the loop vectorizes: no call to expf is left in the program."""
    n = 4099  # a vector remainder too
    x = samples(n)
    optimized, reference = both_builds(unary_model("Sigmoid", n), tmp_path)
    symbols = subprocess.run(["nm", "-u", str(optimized.executable)], capture_output=True, text=True, check=True).stdout
    assert "expf" not in symbols
    (a,), (b,) = optimized.run([x]), reference.run([x])
    assert same_bits(a, b)
    nan = np.isnan(a)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    assert np.allclose(a[~nan], expected[~nan], rtol=3e-7, atol=1e-37)  # two float roundings


def test_rewrite_keeps_other_calls_and_value_numbering():
    ll = ("declare float @llvm.exp.f32(float)\n"
          "define float @f(float %0) {\n"
          "  %2 = tail call float @llvm.exp.f32(float %0)\n"
          "  %3 = call float @llvm.exp2.f32(float %2)\n"
          "  %4 = call float @expf(float %3)\n"
          "  ret float %4\n}\n")
    out = use_exact_math(ll)
    assert "@llvm.exp.f32(float %0)" not in out and "call float @llvm.exp2.f32(float %2)" in out
    assert "call float @expf(float %3)" in out
    assert "  %2 = select i1 %lltfi.exp0.nan, float %0, float %lltfi.exp0.f" in out
    assert use_exact_math("define void @g() {\n  ret void\n}\n") == "define void @g() {\n  ret void\n}\n"


ERF_SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
                        0.99999994, 1.0, -1.0, 1.0000001, 2.5, -2.5, 3.9, 3.92, 3.93, 4.0, -4.0, 4.0000005, 10.0,
                        0.5, 1e-8, -1e-8], dtype=np.float32)


def erf_samples(n: int) -> np.ndarray:
    """A dense sweep where erf is not yet +-1, random bit patterns, special values."""
    rng = np.random.default_rng(7)
    sweep = rng.uniform(-4.5, 4.5, n // 2).astype(np.float32)
    patterns = rng.integers(0, 2 ** 32, n - n // 2 - ERF_SPECIAL.size, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([ERF_SPECIAL, sweep, patterns.view(np.float32)])


@pytest.fixture(scope="module")
def erf_builds(tmp_path_factory):
    x = erf_samples(1 << 18)
    return (x, *both_builds(unary_model("Erf", x.size), tmp_path_factory.mktemp("erf")))


def test_erf_is_correctly_rounded_and_handles_special_values(erf_builds):
    x, optimized, _ = erf_builds
    (y,) = optimized.run([x])
    expected = scipy.special.erf(x.astype(np.float64)).astype(np.float32)
    nan = np.isnan(x)
    assert np.isnan(y[nan]).all() and not np.isnan(y[~nan]).any()
    assert np.array_equal(np.signbit(y[~nan]), np.signbit(x[~nan]))  # odd: -0 stays -0
    distance = ulps(y[~nan], expected[~nan])
    assert distance.max() <= 1
    assert (distance != 0).mean() < 1e-5, f"{(distance != 0).sum()} of {distance.size} not correctly rounded"
    (y_special,) = optimized.run([np.resize(ERF_SPECIAL, x.size)])
    assert y_special[2] == 1.0 and y_special[3] == -1.0 and y_special[19] == 1.0 and y_special[20] == -1.0
    assert y_special[16] == np.float32(1.0) - np.float32(2.0 ** -24)  # erf(3.9): the float just below 1
    assert y_special[5] == np.float32(1e-45 * 2 / np.sqrt(np.pi)) and np.isnan(y_special[4])


def test_erf_same_bits_in_optimized_and_reference_builds(erf_builds):
    x, optimized, reference = erf_builds
    (a,), (b,) = optimized.run([x]), reference.run([x])
    assert same_bits(a, b)


def gelu_model(n: int):
    """GELU as PyTorch exports it at opset 17: x * 0.5 * (1 + erf(x / sqrt 2))."""
    const = [helper.make_tensor(name, TensorProto.FLOAT, [], [value])
             for name, value in (("r2", 2 ** 0.5), ("one", 1.0), ("half", 0.5))]
    steps = [("Div", ["x", "r2"], "s"), ("Erf", ["s"], "e"), ("Add", ["e", "one"], "p"), ("Mul", ["x", "p"], "m"),
             ("Mul", ["m", "half"], "y")]
    nodes = [helper.make_node(op, inputs, [out], name=f"n{i}") for i, (op, inputs, out) in enumerate(steps)]
    graph = helper.make_graph(nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], const)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_gelu_without_libm_erf_same_bits_in_both_builds(tmp_path):
    n = 4099  # a vector remainder too
    x = erf_samples(n)
    optimized, reference = both_builds(gelu_model(n), tmp_path)
    symbols = subprocess.run(["nm", "-u", str(optimized.executable)], capture_output=True, text=True, check=True).stdout
    assert "erff" not in symbols
    (a,), (b,) = optimized.run([x]), reference.run([x])
    assert same_bits(a, b)
    with np.errstate(over="ignore", invalid="ignore"):  # the same float32 steps, each rounded once
        s = x / np.float32(2 ** 0.5)
        e = scipy.special.erf(s.astype(np.float64)).astype(np.float32)
        expected = (x * (e + np.float32(1.0))) * np.float32(0.5)
    assert same_bits(a, expected)


def test_erf_rewrite_keeps_value_numbering_and_a_module_s_own_erff():
    ll = ("declare float @erff(float)\n"
          "define float @f(float %0) {\n"
          "  %2 = tail call float @erff(float %0)\n"
          "  %3 = call double @erf(double 1.0)\n"
          "  ret float %2\n}\n")
    out = use_exact_math(ll)
    assert "call float @erff(float %0)" not in out and "call double @erf(double 1.0)" in out
    assert "  %2 = select i1 %lltfi.erf0.nan, float %0, float %lltfi.erf0.f" in out
    own = ("define float @erff(float %0) {\n  ret float %0\n}\n"
           "define float @g(float %0) {\n  %2 = call float @erff(float %0)\n  ret float %2\n}\n")
    assert use_exact_math(own) == own
