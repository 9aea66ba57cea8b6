"""The ONNX backend node tests (inputs and expected outputs written by the ONNX authors), compiled natively.

Every case of `onnx.backend.test.case.node.collect_testcases()` whose operators are all in
`supported_op_types()` is one test, run one of three ways:
- inputs and outputs of element types the native program reads and writes (importer.IO_TYPES: float32,
  float16/64, the integers, bool): compile, run, compare (floats: rtol 1e-4, atol 1e-5 near zero,
  float16 rtol 1e-3, NaN == NaN; integers and bool: exactly);
- listed in `node_test_expectations.FROZEN` (a parameter such as Reshape's shape or an axes list
  given as a run-time integer input): the case as given must be refused with ModelImportError, and
  with those inputs turned into initializers holding the test data it must pass;
- listed in `node_test_expectations.SKIPPED`: compile_onnx must raise ModelImportError, then the test
  is skipped with the listed reason.

The default suite runs the cases `default_suite()` names (every float32 case, one case per operator
set in other element types); `-m slow` runs the rest (function-expanded forms, further dtype variants).

Regenerating the cases takes ~8 s, so the kept cases are pickled in pytest's cache directory
(keyed by the onnx version and the supported operators). About 200 compilations, ~1 minute serially.
"""

from __future__ import annotations

import functools
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import node_test_expectations as expect
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.errors import ModelImportError
from lltfi_mlir.frontend.importer import IO_TYPES, supported_op_types

RTOL, ATOL = 1e-4, 1e-5

# Parameters that are float32 yet must be constants (Resize's roi/scales/sizes, Upsample's scales): a
# case feeding them as graph inputs is frozen like the integer ones.
FLOAT_PARAMETER_INPUTS = {("Resize", 1), ("Resize", 2), ("Resize", 3), ("Upsample", 1),
                          ("Range", 0), ("Range", 1), ("Range", 2)}
# (op_type, input index): inputs that real models carry as constants and the importer requires to be.
PARAMETER_INPUTS = {
    ("Reshape", 1), ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceMean", 1),
    ("Pad", 1), ("Pad", 2), ("Pad", 3),
    *((op, 1) for op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "CumSum")),
    *FLOAT_PARAMETER_INPUTS, ("LSTM", 4), ("GRU", 4), ("RNN", 4), ("TopK", 1),
    # shapes, repeats, slice bounds and split sizes: the output shape must be static
    ("Expand", 1), ("Tile", 1), ("Split", 1), ("ConstantOfShape", 0),
    *(("Slice", i) for i in range(1, 5)),
}


@dataclass(frozen=True)
class NodeCase:
    """One node test case: the model and its single data set."""

    name: str
    model: onnx.ModelProto
    inputs: tuple[object, ...]
    outputs: tuple[object, ...]

    @property
    def op_types(self) -> frozenset[str]:
        return frozenset(n.op_type for n in self.model.graph.node)

    def all_float32(self) -> bool:
        return all(_is_float32(vi) for vi in list(self.model.graph.input) + list(self.model.graph.output))

    def io_supported(self) -> bool:
        """Every graph input and output is a tensor of a type the native program reads and writes."""
        return all(vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in IO_TYPES
                   for vi in list(self.model.graph.input) + list(self.model.graph.output))

    def parameter_inputs(self) -> set[str]:
        names = {name for node in self.model.graph.node for index, name in enumerate(node.input)
                 if name and (node.op_type, index) in PARAMETER_INPUTS}
        return names & {vi.name for vi in self.model.graph.input}

    def freezable(self) -> bool:
        """Not all float32 only because of non-float32 parameter inputs."""
        params = self.parameter_inputs()
        others = [vi for vi in list(self.model.graph.input) + list(self.model.graph.output)
                  if vi.name not in params]
        float_params = {name for node in self.model.graph.node for index, name in enumerate(node.input)
                        if (node.op_type, index) in FLOAT_PARAMETER_INPUTS} & params
        return ((not self.all_float32() or bool(float_params)) and bool(params)
                and all(vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type in IO_TYPES
                        for vi in others))

    def frozen(self) -> NodeCase:
        """This case with its parameter inputs turned into initializers holding the test data."""
        params = self.parameter_inputs()
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        pairs = list(zip(self.model.graph.input, self.inputs))
        model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a), vi.name)
                                       for vi, a in pairs if vi.name in params)
        del model.graph.input[:]
        model.graph.input.extend(vi for vi, _ in pairs if vi.name not in params)
        return NodeCase(self.name, model, tuple(a for vi, a in pairs if vi.name not in params), self.outputs)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every graph input bound to the shape of its test data (node tests are static anyway)."""
        return {vi.name: tuple(np.shape(a)) for vi, a in zip(self.model.graph.input, self.inputs)}


def _is_float32(vi: onnx.ValueInfoProto) -> bool:
    return vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def _collect() -> list[NodeCase]:
    from onnx.backend.test.case.node import collect_testcases

    supported = set(supported_op_types())
    with warnings.catch_warnings():  # the generators overflow casts on purpose
        warnings.simplefilter("ignore")
        raw = collect_testcases()
    cases = []
    for case in raw:
        nodes = case.model.graph.node
        if not nodes or case.model.functions or any(n.domain not in ("", "ai.onnx") for n in nodes):
            continue
        if not {n.op_type for n in nodes} <= supported:
            continue
        assert len(case.data_sets) == 1, f"{case.name}: {len(case.data_sets)} data sets"
        inputs, outputs = case.data_sets[0]
        def convert(a):
            return numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a

        cases.append(NodeCase(case.name, case.model, tuple(map(convert, inputs)), tuple(map(convert, outputs))))
    return cases


def load_cases(cache_dir: Path | None) -> list[NodeCase]:
    """The supported node cases, from the pickle in `cache_dir` when it is current."""
    key = ("rows-v1", onnx.__version__, tuple(supported_op_types()))
    path = Path(cache_dir) / "node-cases.pkl" if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            with open(path, "rb") as handle:
                cached_key, rows = pickle.load(handle)
        except (OSError, EOFError, ValueError, TypeError, AttributeError, ImportError, pickle.UnpicklingError):
            cached_key = None  # unreadable or written by other code: regenerate
        if cached_key == key:
            return [NodeCase(name, onnx.load_model_from_string(model), inputs, outputs)
                    for name, model, inputs, outputs in rows]
    cases = _collect()
    if path is not None:
        # Plain tuples and serialized models: the cache does not depend on this module's name.
        rows = [(c.name, c.model.SerializeToString(), c.inputs, c.outputs) for c in cases]
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            pickle.dump((key, rows), handle)
        tmp.replace(path)
    return cases


@functools.cache
def _cases_in(cache_dir: Path | None) -> list[NodeCase]:
    return load_cases(cache_dir)


def _cases(config: pytest.Config) -> list[NodeCase]:
    """Once per session; the pickle lives in pytest's cache directory unless the cache is disabled."""
    cache = getattr(config, "cache", None)
    return _cases_in(cache.mkdir("onnx_node_cases") if cache is not None else None)


def default_suite(cases: list[NodeCase]) -> set[str]:
    """The cases the default suite runs (the others are marked slow: `-m slow` runs them): every
    float32 case, every refusal, and the first case of each operator set in other element types. Function-expanded
    forms (`*_expanded*`: the operator's ONNX function body, made of operators tested on their own)
    and the further integer/float16/float64/bool variants would take the node tests from 2 to 12
    minutes on 2 cores."""
    seen: set[frozenset[str]] = set()
    keep = set()
    for case in sorted(cases, key=lambda c: c.name):
        if case.name in expect.SKIPPED:  # refusals are cheap: all of them
            keep.add(case.name)
        elif "_expanded" in case.name:
            continue
        elif case.all_float32():
            keep.add(case.name)
        elif case.op_types not in seen:
            seen.add(case.op_types)
            keep.add(case.name)
    return keep


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "node_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config)
        keep = default_suite(cases)
        metafunc.parametrize("node_case", [pytest.param(c, marks=() if c.name in keep else pytest.mark.slow)
                                           for c in cases], ids=[c.name for c in cases])
    if "all_node_cases" in metafunc.fixturenames:
        metafunc.parametrize("all_node_cases", [_cases(metafunc.config)], ids=["collected"])


def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    """Floats: relative 1e-4 (float16: 1e-3), or absolute 1e-5 near zero; NaN must match NaN and inf
    must match inf. Integers and bool: equal, with the same dtype."""
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if expected.dtype.kind != "f":
        np.testing.assert_array_equal(actual, expected)
        return
    rtol = 1e-3 if expected.dtype == np.float16 else RTOL
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=ATOL, equal_nan=True)


def assert_refused(case: NodeCase, out_dir: Path, message: str = "") -> None:
    with pytest.raises(ModelImportError, match=message):
        compile_onnx(case.model, out_dir)


def test_node_case(node_case: NodeCase, tmp_path: Path) -> None:
    case = node_case
    if case.name in expect.SKIPPED:
        reason = expect.SKIPPED[case.name]
        # A case whose parameters are run-time inputs is refused for its reason once they are constants.
        refused = case.frozen() if case.freezable() else case
        assert_refused(refused, tmp_path / "refused", expect.REFUSAL_MESSAGE[reason])
        pytest.skip(f"refused as expected: {reason}")
    if case.name in expect.XFAIL:
        pytest.xfail(expect.XFAIL[case.name])
    if case.name in expect.FROZEN:
        assert_refused(case, tmp_path / "refused", r"element type U?INT(32|64)\b|must be a constant|static shape")
        case = case.frozen()
    build = compile_onnx(case.model, tmp_path / "build", CompileOptions(shapes=case.shapes()))
    outputs = build.run([np.asarray(a) for a in case.inputs])
    # The optimized code must compute every element with the reference's operations, in its order.
    reference = compile_onnx(case.model, tmp_path / "reference", CompileOptions(codegen="reference",
                                                                               shapes=case.shapes()))
    for got, ref in zip(outputs, reference.run([np.asarray(a) for a in case.inputs])):
        nan = np.isnan(got) if got.dtype.kind == "f" else np.zeros(got.shape, bool)  # NaN payloads are
        # unspecified in LLVM IR; NaN-ness is compared
        assert np.array_equal(nan, np.isnan(ref)) and got[~nan].tobytes() == ref[~nan].tobytes(), \
            "optimized and reference builds differ"
    assert len(outputs) == len(case.outputs)
    expected = case.outputs
    if case.name in expect.RECOMPUTED:
        from onnx.reference import ReferenceEvaluator

        feeds = {vi.name: np.asarray(a) for vi, a in zip(case.model.graph.input, case.inputs)}
        expected = ReferenceEvaluator(case.model).run(None, feeds)
    for got, want in zip(outputs, expected):
        assert_matches(got, want)


def test_expectations_match_the_collected_cases(all_node_cases: list[NodeCase]) -> None:
    """Every listed name is a collected case; every case that cannot run as given is listed."""
    by_name = {c.name: c for c in all_node_cases}
    listed = [expect.SKIPPED, expect.FROZEN, expect.RECOMPUTED, expect.XFAIL]
    for table in listed:
        unknown = sorted(set(table) - set(by_name))
        assert not unknown, f"expectations name cases that were not collected: {unknown}"
    assert not set(expect.SKIPPED) & set(expect.FROZEN)
    assert sorted(n for n, c in by_name.items() if c.freezable() and n not in expect.SKIPPED) == sorted(expect.FROZEN)
    unlisted = sorted(n for n, c in by_name.items() if not c.io_supported() and not c.freezable()
                      and n not in expect.SKIPPED)
    assert not unlisted, f"cases with unsupported I/O types missing from node_test_expectations.SKIPPED: {unlisted}"
    for name, reason in {**expect.SKIPPED, **expect.XFAIL}.items():
        assert reason.strip(), f"{name}: empty reason"
    assert set(expect.SKIPPED.values()) <= set(expect.REFUSAL_MESSAGE)


def test_every_supported_operator_has_a_passing_case(all_node_cases: list[NodeCase]) -> None:
    not_run = set(expect.SKIPPED) | set(expect.XFAIL)
    covered = {op for c in all_node_cases if c.name not in not_run for op in c.op_types}
    missing = set(supported_op_types()) - covered - set(expect.NO_NODE_CASE)
    assert not missing, f"operators with no passing node test case: {sorted(missing)}"
