"""The walk engine (trials forked at their injection point) against the simple engine (each trial a
whole inference): the same database rows, column for column, on every example model, on multiple
faults, on an exhaustive campaign, on crashes and hangs, with traces, at operator level, per layer,
and across a resume."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from conftest import tiny_cnn
from lltfi_mlir.dialect_passes.sites import SiteSelector
from test_campaign import A, gemm_model

from lltfi_mlir.campaign import Campaign, CampaignConfig, FaultConfig, walk_executor
from lltfi_mlir.campaign.campaign import _engine
from lltfi_mlir.campaign.plan import Trial
from lltfi_mlir.campaign.walk_executor import WalkExecutor
from lltfi_mlir.cli import main
from lltfi_mlir.errors import RunError, UsageError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODELS = sorted(p.parent.name for p in EXAMPLES.glob("*/model.onnx"))


def rows(db: Path, table: str = "trials") -> list[tuple]:
    connection = sqlite3.connect(db)
    try:
        return connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    finally:
        connection.close()


def both_engines(make, n: int | None = None, tables: tuple[str, ...] = ("trials",), **run) -> dict:
    """Runs `make(engine, db)` with each engine; returns each engine's summary, and checks that every
    listed table holds the same rows (the trials table has no timing column: all columns compared)."""
    summaries, contents = {}, {}
    for engine in ("simple", "walk"):
        campaign = make(engine)
        assert campaign.engine == engine
        summaries[engine] = campaign.run(n, progress=False, **run)
        contents[engine] = {t: rows(campaign.db_path, t) for t in tables}
    for table in tables:
        assert contents["walk"][table], f"no {table} rows"
        assert contents["walk"][table] == contents["simple"][table], table
    return summaries


@pytest.mark.parametrize("name", MODELS)
def test_examples_give_identical_rows(name, tmp_path):
    model = EXAMPLES / name / "model.onnx"

    def make(engine):
        return Campaign.from_onnx(model, CampaignConfig(seed=17), out_dir=tmp_path / "out",
                                  db=tmp_path / f"{engine}.db", jobs=2, engine=engine)

    summary = both_engines(make, 200)["walk"]
    assert summary["trials"] == 200 and summary["activated"] > 150


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cnn")
    onnx.save(tiny_cnn(), root / "cnn.onnx")
    (root / "inputs").mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        np.save(root / "inputs" / f"{i}.npy", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    return root


def test_multiple_faults_give_identical_rows(cnn_dir, tmp_path):
    """fi_max_multiple/window_len trials fork at their first fault and go on as in inject mode."""
    faults = (FaultConfig(max_multiple=4, window_len=6, runs=150), FaultConfig(type="stuck_at_1", num_bits=3, runs=50),
              FaultConfig(max_multiple=2, window_len=1, bit=3, runs=100))
    config = CampaignConfig(faults=faults, seed=8)

    def make(engine):
        return Campaign.from_onnx(cnn_dir / "cnn.onnx", config, out_dir=cnn_dir / "out", db=tmp_path / f"{engine}.db",
                                  jobs=2, engine=engine)

    both_engines(make, 300)
    multi = [json.loads(f) for (f,) in sqlite3.connect(tmp_path / "walk.db").execute(
        "SELECT faults FROM trials WHERE faults IS NOT NULL")]
    assert sum(len(f) == 4 for f in multi) > 100  # most multi-fault trials got all four faults


@pytest.fixture(scope="module")
def gemm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemm")
    onnx.save(gemm_model(), root / "gemm.onnx")
    (root / "inputs").mkdir()
    np.save(root / "inputs" / "0.npy", A)
    return root


@pytest.mark.parametrize("children", [1, 3])
def test_exhaustive_campaign_gives_identical_rows(gemm_dir, tmp_path, monkeypatch, children):
    """Every (instance, bit) of a small Gemm: 32 trials fork at each instance, one after the other;
    with one child per walker (the default), and with one walker forking up to three at once."""
    monkeypatch.setattr(walk_executor, "CHILDREN_PER_WALKER", children)

    def make(engine):
        return Campaign.from_onnx(gemm_dir / "gemm.onnx", CampaignConfig(), out_dir=gemm_dir / "out",
                                  db=tmp_path / f"{engine}.db", jobs=children, engine=engine)

    summary = both_engines(make, exhaustive=True)["walk"]
    assert summary["trials"] == 16 * 32 == summary["activated"]


def test_targets_past_the_end_of_the_run_are_golden(gemm_dir, tmp_path):
    """A replayed fi_cycle beyond the run is never reached: the walker's own inference serves it."""
    config = CampaignConfig(faults=(FaultConfig(cycle=10**6),))

    def make(engine):
        return Campaign.from_onnx(gemm_dir / "gemm.onnx", config, out_dir=gemm_dir / "out",
                                  db=tmp_path / f"{engine}.db", jobs=2, engine=engine)

    summary = both_engines(make, 20)["walk"]
    assert summary["outcomes"]["not_activated"]["count"] == 20


# A lookup table filled by the model and read at i*7 (`gather`), and a counting loop (`count_up`):
# integer faults in the index crash (past the heap's end) or read the model's own memory, and faults
# in the loop counters hang. Nothing here reads memory the model does not own, so every outcome is
# reproducible run after run.
CRASH_AND_HANG = """
!desc = !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
module {
  llvm.func @malloc(i64) -> !llvm.ptr
  llvm.func @fill(%buf: !llvm.ptr, %n: i64) {
    %zero = llvm.mlir.constant(0 : i64) : i64
    %one = llvm.mlir.constant(1 : i64) : i64
    llvm.br ^loop(%zero : i64)
  ^loop(%i: i64):
    %done = llvm.icmp "eq" %i, %n : i64
    llvm.cond_br %done, ^exit, ^body
  ^body:
    %v = llvm.sitofp %i : i64 to f32
    %p = llvm.getelementptr %buf[%i] : (!llvm.ptr, i64) -> !llvm.ptr, f32
    llvm.store %v, %p : f32, !llvm.ptr
    %next = llvm.add %i, %one : i64
    llvm.br ^loop(%next : i64)
  ^exit:
    llvm.return
  }
  llvm.func @gather(%buf: !llvm.ptr, %n: i64) -> f32 {
    %zero = llvm.mlir.constant(0 : i64) : i64
    %one = llvm.mlir.constant(1 : i64) : i64
    %seven = llvm.mlir.constant(7 : i64) : i64
    %fzero = llvm.mlir.constant(0.0 : f32) : f32
    llvm.br ^loop(%zero, %fzero : i64, f32)
  ^loop(%i: i64, %s: f32):
    %done = llvm.icmp "eq" %i, %n : i64
    llvm.cond_br %done, ^exit, ^body
  ^body:
    %idx = llvm.mul %i, %seven : i64
    %p = llvm.getelementptr %buf[%idx] : (!llvm.ptr, i64) -> !llvm.ptr, f32
    %v = llvm.load %p : !llvm.ptr -> f32
    %s2 = llvm.fadd %s, %v : f32
    %next = llvm.add %i, %one : i64
    llvm.br ^loop(%next, %s2 : i64, f32)
  ^exit:
    llvm.return %s : f32
  }
  llvm.func @count_up(%n: i64) -> i64 {
    %zero = llvm.mlir.constant(0 : i64) : i64
    %one = llvm.mlir.constant(1 : i64) : i64
    llvm.br ^loop(%zero : i64)
  ^loop(%i: i64):
    %done = llvm.icmp "eq" %i, %n : i64
    llvm.cond_br %done, ^exit, ^body
  ^body:
    %next = llvm.add %i, %one : i64
    llvm.br ^loop(%next : i64)
  ^exit:
    llvm.return %i : i64
  }
  llvm.func @_mlir_ciface_main_graph(%result: !llvm.ptr, %input: !llvm.ptr) {
    %c8 = llvm.mlir.constant(8 : i64) : i64
    %c1 = llvm.mlir.constant(1 : i64) : i64
    %c0 = llvm.mlir.constant(0 : i64) : i64
    %len = llvm.mlir.constant(4096 : i64) : i64
    %bytes = llvm.mlir.constant(16384 : i64) : i64
    %aligned_in_addr = llvm.getelementptr %input[0, 1] : (!llvm.ptr) -> !llvm.ptr, !desc
    %in = llvm.load %aligned_in_addr : !llvm.ptr -> !llvm.ptr
    %x = llvm.load %in : !llvm.ptr -> f32
    %n = llvm.fptosi %x : f32 to i64
    %table = llvm.call @malloc(%bytes) : (i64) -> !llvm.ptr
    llvm.call @fill(%table, %len) : (!llvm.ptr, i64) -> ()
    %sum = llvm.call @gather(%table, %n) : (!llvm.ptr, i64) -> f32
    %count = llvm.call @count_up(%n) : (i64) -> i64
    %c = llvm.sitofp %count : i64 to f32
    %y = llvm.fadd %sum, %c : f32
    %buf = llvm.call @malloc(%c8) : (i64) -> !llvm.ptr
    llvm.store %y, %buf : f32, !llvm.ptr
    %undef = llvm.mlir.undef : !desc
    %d0 = llvm.insertvalue %buf, %undef[0] : !desc
    %d1 = llvm.insertvalue %buf, %d0[1] : !desc
    %d2 = llvm.insertvalue %c0, %d1[2] : !desc
    %d3 = llvm.insertvalue %c1, %d2[3, 0] : !desc
    %d4 = llvm.insertvalue %c1, %d3[4, 0] : !desc
    llvm.store %d4, %result : !desc, !llvm.ptr
    llvm.return
  }
}
"""


def test_crashes_and_hangs_give_identical_rows(tmp_path):
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "model.llvm.mlir").write_text(CRASH_AND_HANG)
    (build_dir / "weights.S").write_text('\t.section .note.GNU-stack,"",@progbits\n')
    manifest = {"entry": "main_graph", "opt_level": 0, "executable": "model", "nodes": [], "source": "<hand>",
                "inputs": [{"name": "x", "shape": [1], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [1], "dtype": "float32"}]}
    (build_dir / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", np.array([200.0], np.float32))
    selector = SiteSelector(opcodes=frozenset({"add", "mul"}), functions=frozenset({"gather", "count_up"}),
                            require_operator=False)
    config = CampaignConfig(selector=selector, timeout=0.2, seed=2)

    def make(engine):
        return Campaign.from_build(build_dir, config, tmp_path / "inputs", db=tmp_path / f"{engine}.db", jobs=2,
                                   engine=engine)

    outcomes = both_engines(make, 60)["walk"]["outcomes"]
    assert outcomes["crash"]["count"] > 10 and outcomes["hang"]["count"] > 10
    assert outcomes["sdc"]["count"] + outcomes["benign"]["count"] > 0


def test_traced_campaign_gives_identical_rows_and_traces(cnn_dir, tmp_path):
    config = CampaignConfig(trace_layers=True, max_trace=30, seed=4)

    def make(engine):  # reference code: the optimized Conv absorbs the Relu that a traced build must keep
        return Campaign.from_onnx(cnn_dir / "cnn.onnx", config, out_dir=cnn_dir / "ref-out", codegen="reference",
                                  db=tmp_path / f"{engine}.db", jobs=2, engine=engine)

    both_engines(make, 100, tables=("trials", "layer_trace", "inst_trace"))


@pytest.mark.parametrize("config", [CampaignConfig(level="operator", seed=6), CampaignConfig(draw="per_layer", seed=6)],
                         ids=["operator-level", "per-layer"])
def test_operator_level_and_per_layer_campaigns_give_identical_rows(cnn_dir, tmp_path, config):
    def make(engine):
        return Campaign.from_onnx(cnn_dir / "cnn.onnx", config, out_dir=cnn_dir / "out", db=tmp_path / f"{engine}.db",
                                  jobs=2, engine=engine)

    both_engines(make, 150)


def test_either_engine_resumes_the_other(cnn_dir, tmp_path):
    config = CampaignConfig(seed=12)

    def campaign(engine, db):
        return Campaign.from_onnx(cnn_dir / "cnn.onnx", config, out_dir=cnn_dir / "out", db=tmp_path / db, jobs=2,
                                  engine=engine)

    campaign("simple", "whole.db").run(300, progress=False)
    campaign("simple", "mixed.db").run(100, progress=False)
    campaign("walk", "mixed.db").run(200, progress=False)
    campaign("simple", "mixed.db").run(300, progress=False)
    assert rows(tmp_path / "mixed.db") == rows(tmp_path / "whole.db")
    assert len(rows(tmp_path / "whole.db")) == 300


def test_walk_server_refuses_what_it_cannot_walk(gemm_dir, tmp_path):
    campaign = Campaign.from_onnx(gemm_dir / "gemm.onnx", CampaignConfig(), out_dir=gemm_dir / "out",
                                  db=tmp_path / "c.db", jobs=2)
    campaign.prepare().close()
    exe = campaign.instrumented.executable
    with pytest.raises(RunError, match="walk server did not start: error: cannot open .*missing.txt"):
        next(WalkExecutor(exe, tmp_path / "missing.txt", 2, 1_000_000).run([]))
    inputs = campaign.inputs_list  # each campaign writes its own list (replay after another campaign)
    lines = "".join(Trial(i, 0, target, FaultConfig(), None, i + 1).line(1_000_000) for i, target in enumerate((5, 3)))
    proc = subprocess.run([str(exe), "--walk", "--inputs-list", str(inputs)], input=lines + "walk\n",
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "sorted by target" in proc.stderr


def test_engine_defaults_and_choices(capsys):
    model, program = SimpleNamespace(is_program=False), SimpleNamespace(is_program=True)
    assert _engine(None, model) == "walk" and _engine("simple", model) == "simple"
    assert _engine(None, program) == "simple"
    with pytest.raises(UsageError, match="C/C.. programs run with --engine simple"):
        _engine("walk", program)
    with pytest.raises(UsageError, match="use one of walk, simple"):
        _engine("fast", model)
    with pytest.raises(SystemExit):
        main(["inject", "--help"])
    assert "--engine {walk,simple}" in capsys.readouterr().out


def test_servers_get_huge_pages_and_keep_the_users_tunables(monkeypatch):
    from lltfi_mlir.campaign.executor import server_environment

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert server_environment(True)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    assert server_environment(True)["LLTFI_EARLY_END"] == "1" and "LLTFI_EARLY_END" not in server_environment(False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.check=3")
    assert server_environment(False)["GLIBC_TUNABLES"] == "glibc.malloc.check=3:glibc.malloc.hugetlb=1"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")
    assert server_environment(False)["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_default_jobs_keep_every_core_busy(monkeypatch):
    from lltfi_mlir.campaign import campaign

    monkeypatch.setattr(campaign.os, "cpu_count", lambda: 4)
    assert campaign.default_jobs("walk") == 5 and campaign.default_jobs("simple") == 4
    monkeypatch.setattr(campaign.os, "cpu_count", lambda: 1)
    assert campaign.default_jobs("walk") == 1
