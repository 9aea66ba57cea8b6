"""Integer, bool and float16/float64 tensors (issue 11): typed MLIR from the importer, models that
mix them checked against onnxruntime, integer fault sites of Gather, and the SDC criteria of
language models (top-1 / tolerance over the last token's logits)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from lltfi_mlir.dialect_passes.sites import GROUPS, SiteSelector
from mlir import ir
from onnx import TensorProto as T
from onnx import helper as h

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.campaign.config import SdcConfig
from lltfi_mlir.campaign.outcomes import SdcJudge
from lltfi_mlir.errors import ModelImportError
from lltfi_mlir.frontend.importer import IO_TYPES, Importer
from lltfi_mlir.frontend.onnx_loader import prepare

RNG = np.random.default_rng(11)
VOCAB, SEQ, HIDDEN = 16, 6, 8


def _model(nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", inputs, outputs, inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def _floats(name, shape):
    return onnx.numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _ints(name, values, dtype=np.int64):
    return onnx.numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _mlir(model: onnx.ModelProto) -> str:
    with ir.Context(), ir.Location.unknown():
        module = Importer(prepare(model)).import_module()
        return str(module)


def bert_like_block() -> onnx.ModelProto:
    """Float positions in, logits out: token ids (cast to int64), an embedding Gather, an
    attention mask from Equal/Not/Where, an Erf GELU, Split/Slice/Expand/Tile/Range/Trilu."""
    nodes = [
        h.make_node("Cast", ["x"], ["ids"], to=T.INT64),
        h.make_node("Gather", ["emb", "ids"], ["e"], axis=0),                       # (1, SEQ, HIDDEN)
        h.make_node("Range", ["zero", "seq", "one"], ["pos"]),                      # int64 positions
        h.make_node("Gather", ["pemb", "pos"], ["p"]),
        h.make_node("Add", ["e", "p"], ["ep"]),
        h.make_node("Equal", ["ids", "pad"], ["is_pad"]),
        h.make_node("Not", ["is_pad"], ["keep"]),
        h.make_node("Unsqueeze", ["keep", "ax2"], ["keep3"]),
        h.make_node("Where", ["keep3", "ep", "zf"], ["masked"]),
        h.make_node("Split", ["masked", "halves"], ["a", "b"], axis=2),
        h.make_node("Erf", ["a"], ["ea"]),
        h.make_node("Mul", ["b", "ea"], ["g"]),
        h.make_node("Slice", ["g", "s0", "s1", "s2", "s3"], ["sl"]),               # reversed sequence
        h.make_node("Expand", ["sl", "eshape"], ["ex"]),
        h.make_node("Tile", ["ex", "reps"], ["t"]),
        h.make_node("Trilu", ["t"], ["tr"], upper=0),
        h.make_node("Identity", ["tr"], ["y"]),
        h.make_node("Cast", ["is_pad"], ["pad_f"], to=T.FLOAT),
        h.make_node("Mod", ["ids", "three"], ["m"], fmod=0),
        h.make_node("Cast", ["m"], ["mf"], to=T.DOUBLE),
        h.make_node("Cast", ["mf"], ["z"], to=T.FLOAT),
        h.make_node("Add", ["pad_f", "z"], ["y2"]),
    ]
    inits = [_floats("emb", (VOCAB, HIDDEN)), _floats("pemb", (SEQ, HIDDEN)), _ints("zero", 0), _ints("seq", SEQ),
             _ints("one", 1), _ints("pad", 0), _ints("ax2", [2]), onnx.numpy_helper.from_array(np.float32(0), "zf"),
             _ints("halves", [HIDDEN // 2, HIDDEN // 2]), _ints("s0", [-1]), _ints("s1", [-SEQ - 1]), _ints("s2", [1]),
             _ints("s3", [-1]), _ints("eshape", [2, 1, 1]), _ints("reps", [1, 1, 2]), _ints("three", -3)]
    return _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, SEQ])],
                  [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("y2", T.FLOAT, None)], inits)


def test_integer_and_bool_intermediates_are_typed_tensors():
    text = _mlir(bert_like_block())
    assert "tensor<1x6xi64>" in text  # the cast token ids
    assert "tensor<1x6xi8>" in text   # bools are bytes (0/1)
    assert "tensor<1x6xf64>" in text
    assert "math.erf" in text and "arith.remsi" in text and "tensor.extract" in text


def test_float_ops_refuse_integer_inputs_with_one_line():
    nodes = [h.make_node("Cast", ["x"], ["i"], to=T.INT32), h.make_node("Softmax", ["i"], ["s"]),
             h.make_node("Cast", ["s"], ["y"], to=T.FLOAT)]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
                   [h.make_tensor_value_info("y", T.FLOAT, [2, 3])], [])
    with pytest.raises(ModelImportError, match="element type INT32; Softmax is supported on float32 only"):
        _mlir(model)


def test_bert_like_block_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = bert_like_block()
    x = np.array([[3, 0, 7, 15, 0, 9]], np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = compile_onnx(model, tmp_path / "b").run([x])
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.max(np.abs(g - w)) <= 1e-3 * max(1.0, float(np.max(np.abs(w))))


@pytest.mark.skipif(T.INT64 not in IO_TYPES, reason="the native program reads float32 inputs only")
def test_int64_token_ids_in_and_bool_out(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    nodes = [h.make_node("Gather", ["emb", "ids"], ["y"]), h.make_node("Less", ["ids", "four"], ["small"])]
    model = _model(nodes, [h.make_tensor_value_info("ids", T.INT64, [2, 3])],
                   [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("small", T.BOOL, None)],
                   [_floats("emb", (VOCAB, HIDDEN)), _ints("four", 4)])
    ids = np.array([[1, 5, 15], [0, -1, 4]], np.int64)  # -1: the last row, as ONNX says
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    got = compile_onnx(model, tmp_path / "b").run([ids])
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1].astype(bool), want[1])


def test_gather_index_arithmetic_is_an_int_fault_site(tmp_path):
    """The `int` group selects the Gather's index arithmetic (the negative-index wrap, row offsets)."""
    from lltfi_mlir.instrument import instrument_build

    nodes = [h.make_node("Cast", ["x"], ["ids"], to=T.INT64), h.make_node("Gather", ["emb", "ids"], ["y"], axis=0)]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, None)],
                   [_floats("emb", (VOCAB, HIDDEN))])
    build = compile_onnx(model, tmp_path / "b", CompileOptions(codegen="reference"))
    sites = instrument_build(build, SiteSelector(opcodes=GROUPS["int"], operators=frozenset({"Gather"}))).sites
    gather_ops = {(s.opcode, s.type) for s in sites if s.op_type == "Gather"}
    assert {("icmp", "i1"), ("add", "i64")} <= gather_ops, gather_ops  # (an icmp site is its i1 result)
    assert all(s.op_type == "Gather" for s in sites)


@pytest.mark.parametrize("criterion, faulty_last, sdc", [
    ("top1", [0.0, 3.0, 0.0], True),      # the last token's argmax moves
    ("top1", [2.9, 1.0, 0.0], False),     # same argmax, other logits changed
    ("tolerance", [3.0, 1.0, 0.0005], False),
    ("tolerance", [3.0, 1.0, 0.01], True),
])
def test_language_model_sdc_judges_the_last_token(criterion, faulty_last, sdc):
    golden = np.array([[[0.0, 0.0, 5.0], [3.0, 1.0, 0.0]]], np.float32)  # (batch, seq, vocab)
    faulty = golden.copy()
    faulty[0, -1] = faulty_last
    faulty[0, 0] = [9.0, 0.0, 0.0]  # an earlier position changes: ignored with positions: last
    judge = SdcJudge(SdcConfig(criterion=criterion, positions="last", atol=0.001))
    assert judge.is_sdc([golden], [faulty]) is sdc
    assert SdcJudge(SdcConfig(criterion=criterion, positions="each", atol=0.001)).is_sdc([golden], [faulty])
