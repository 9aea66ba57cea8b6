"""Early ending of masked trials (runtime/boundaries.h): a trial ends as benign once every operator
output still to be read equals the golden run's. It must change no outcome and no output: every
campaign here runs with and without it and the rows must be equal, column for column, except
`masked_at`, which only the early-ending run fills. Both engines must agree on `masked_at` too."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model
from lltfi_mlir.dialect_passes.sites import SiteSelector
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir.campaign import Campaign, CampaignConfig, FaultConfig
from lltfi_mlir.campaign.early_end import early_end_policy
from lltfi_mlir.compiler import CompileOptions, compile_onnx
from lltfi_mlir.frontend.boundaries import FOREVER, last_uses
from lltfi_mlir.frontend.importer import VIEW_OPS
from lltfi_mlir.instrument import instrument_build

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def skip_model() -> onnx.ModelProto:
    """x -> MatMul(W1) -> Relu -> MatMul(W2) -> Add(relu) -> Reshape -> MatMul(W3) -> y.

    Row 1 of W2 is zero, so a fault in relu[1] vanishes in the second MatMul but still reaches the Add
    through the skip connection: a wrong liveness (the Relu output dead after its first reader) would
    end such trials as masked although they are SDCs."""
    w1 = np.array([[0.5, 1.0, -0.25], [0.75, 0.5, 1.0], [-0.5, 0.25, 0.5]], np.float32)
    w2 = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [0.5, 0.75, -1.0]], np.float32)
    w3 = np.array([[0.25, -1.0], [1.0, 0.5], [-0.75, 0.25]], np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="mm2"),
        helper.make_node("Add", ["m", "r"], ["s"], name="add"),
        helper.make_node("Reshape", ["s", "shape"], ["v"], name="view"),
        helper.make_node("MatMul", ["v", "w3"], ["y"], name="mm3"),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(np.array([1, 3], np.int64), "shape")]
    return make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)


@pytest.fixture(scope="module")
def skip_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("skip")
    onnx.save(skip_model(), root / "model.onnx")
    (root / "inputs").mkdir()
    np.save(root / "inputs" / "0.npy", np.array([[1.0, 2.0, 0.5]], np.float32))  # relu passes all three
    return root


def trial_rows(db: Path) -> tuple[list[str], list[tuple]]:
    connection = sqlite3.connect(db)
    try:
        cursor = connection.execute("SELECT * FROM trials ORDER BY id")
        return [c[0] for c in cursor.description], cursor.fetchall()
    finally:
        connection.close()


def with_and_without(make, n: int | None = None, **run) -> list[tuple]:
    """Runs `make(early_end, db_name)` both ways; asserts equal rows except masked_at; returns the
    early-ending run's rows."""
    results = {}
    for early in (True, False):
        campaign = make(early, f"early-{early}.db")
        campaign.run(n, progress=False, **run)
        assert campaign.early_end.enabled is early, campaign.early_end.reason
        results[early] = trial_rows(campaign.db_path)
    columns, on = results[True]
    _, off = results[False]
    masked = columns.index("masked_at")
    strip = lambda rows: [r[:masked] + r[masked + 1:] for r in rows]  # noqa: E731
    assert strip(on) == strip(off)
    assert all(r[masked] is None for r in off)
    return [dict(zip(columns, r)) for r in on]


def test_exhaustive_skip_connection_same_outcomes(skip_dir, tmp_path):
    def make(early, db):
        return Campaign.from_onnx(skip_dir / "model.onnx", CampaignConfig(seed=3), inputs=skip_dir / "inputs",
                                  out_dir=tmp_path / "out", db=tmp_path / db, jobs=2, early_end=early)

    rows = with_and_without(make, exhaustive=True)
    masked = [r for r in rows if r["masked_at"]]
    assert masked and all(r["outcome"] == "benign" for r in masked)
    assert {r["masked_at"] for r in masked} <= {"mm1", "relu", "mm2", "add", "mm3"}
    # Faults in the second MatMul's products of relu[1] (times the zero row) are masked there, but a
    # corrupted relu[1] itself stays live until the Add reads it: never masked before the Add.
    assert any(r["outcome"] == "sdc" for r in rows)


def test_lenet_walk_and_simple_agree_on_masking(tmp_path):
    model = EXAMPLES / "lenet_mnist" / "model.onnx"
    masked_by_engine = {}
    for engine in ("walk", "simple"):
        campaign = Campaign.from_onnx(model, CampaignConfig(seed=11), out_dir=tmp_path / "out",
                                      db=tmp_path / f"{engine}.db", jobs=2, engine=engine)
        campaign.run(300, progress=False)
        columns, rows = trial_rows(campaign.db_path)
        masked_by_engine[engine] = rows
    assert masked_by_engine["walk"] == masked_by_engine["simple"]
    masked = [r for r in masked_by_engine["walk"] if r[columns.index("masked_at")]]
    assert len(masked) > 100  # most faults die within an operator or two (the paper's Table II)


def test_lenet_multiple_faults_same_outcomes(tmp_path):
    """Multi-fault trials end only after their last fault."""
    model = EXAMPLES / "lenet_mnist" / "model.onnx"
    fault = FaultConfig(max_multiple=3, window_len=2000)

    def make(early, db):
        return Campaign.from_onnx(model, CampaignConfig(seed=5, faults=(fault,)), out_dir=tmp_path / "out",
                                  db=tmp_path / db, jobs=2, early_end=early)

    rows = with_and_without(make, 200)
    assert any(r["masked_at"] for r in rows)


def test_policy_says_when_it_is_off(skip_dir, tmp_path):
    build = compile_onnx(skip_dir / "model.onnx", tmp_path / "b")
    config = CampaignConfig()
    assert early_end_policy(build, config, instrument_build(build, config.selector)).enabled
    loads = SiteSelector(opcodes=frozenset({"fmul", "load"}))
    policy = early_end_policy(build, config, instrument_build(build, loads))
    assert not policy.enabled and "load" in policy.reason
    reference = compile_onnx(skip_dir / "model.onnx", tmp_path / "r", CompileOptions(codegen="reference"))
    policy = early_end_policy(reference, config, instrument_build(reference, config.selector))
    assert not policy.enabled and "reference" in policy.reason


def test_instrumented_ir_reports_each_operator_output(skip_dir, tmp_path):
    build = compile_onnx(skip_dir / "model.onnx", tmp_path / "b")
    instrumented = instrument_build(build, CampaignConfig().selector)
    text = instrumented.ir_text()
    assert instrumented.boundaries == 5  # five outlined operators; the Reshape is a view
    assert text.count("llvm.call @lltfi_node_end(") == 5
    assert "llvm.func @lltfi_node_end(i64, i64, !llvm.ptr, i64, i32)" in text


def test_last_uses_follow_views_and_skips():
    last = last_uses(skip_model().graph.node, VIEW_OPS, ["y"])
    assert last["h"] == 1          # read by the Relu only
    assert last["r"] == 3          # the MatMul, then the Add through the skip connection
    assert last["s"] == 5 and last["v"] == 5  # the Reshape is a view: its reader reads s
    assert last["y"] == FOREVER    # a graph output is compared at the end


def test_scatter_with_computed_indices_turns_it_off(tmp_path):
    """A corrupted index tensor would make ScatterND write outside its output: no early end."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Cast", ["r"], ["i"], to=TensorProto.INT64, name="cast"),
        helper.make_node("ScatterND", ["data", "i", "upd"], ["y"], name="scatter"),
    ]
    inits = [numpy_helper.from_array(np.zeros((4,), np.float32), "data"),
             numpy_helper.from_array(np.ones((1,), np.float32), "upd")]
    model = make_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits, opset=16)
    onnx.save(model, tmp_path / "m.onnx")
    build = compile_onnx(tmp_path / "m.onnx", tmp_path / "b")
    config = CampaignConfig()
    policy = early_end_policy(build, config, instrument_build(build, config.selector))
    assert not policy.enabled and "ScatterND" in policy.reason
