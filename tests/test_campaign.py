"""Campaigns checked against truth computed independently: exhaustive enumeration redone in numpy,
purpose-built crash and hang cases, resume after kill -9, and seed reproducibility."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import make_model, tiny_cnn
from lltfi_mlir.dialect_passes.sites import SiteSelector
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir.campaign import Campaign, CampaignConfig, FaultConfig
from lltfi_mlir.campaign.config import parse_config
from lltfi_mlir.campaign.stats import wilson

RNG = np.random.default_rng(7)
A = RNG.standard_normal((1, 4)).astype(np.float32)
W = RNG.standard_normal((4, 2)).astype(np.float32)
C = np.array([0.05, -0.05], np.float32)


def gemm_model() -> onnx.ModelProto:
    """One small Gemm and a 2-class decision (argmax of the two outputs)."""
    return make_model([helper.make_node("Gemm", ["a", "w", "c"], ["y"], name="fc")],
                      [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                      [numpy_helper.from_array(W, "w"), numpy_helper.from_array(C, "c")])


def flip(x: np.float32, bit: int) -> np.float32:
    return np.array([x], np.float32).view(np.uint32).__xor__(np.uint32(1 << bit)).view(np.float32)[0]


def numpy_faulty_gemm(instance: int, bit: int) -> np.ndarray:
    """The Gemm's own arithmetic in float32, loop order (m, n, k), `acc + a*w`, with one flipped bit."""
    out = C.copy()
    i = 0
    with np.errstate(all="ignore"):
        for n in range(2):
            for k in range(4):
                p = np.float32(A[0, k] * W[k, n])
                if i == instance:
                    p = flip(p, bit)
                i += 1
                s = np.float32(out[n] + p)
                if i == instance:
                    s = flip(s, bit)
                i += 1
                out[n] = s
    return out


def numpy_is_sdc(faulty: np.ndarray, golden: np.ndarray) -> bool:
    if not np.all(np.isfinite(faulty)):
        return True
    return int(np.argmax(faulty)) != int(np.argmax(golden))


@pytest.fixture(scope="module")
def gemm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gemm")
    onnx.save(gemm_model(), root / "gemm.onnx")
    (root / "inputs").mkdir()
    np.save(root / "inputs" / "0.npy", A)
    return root


def test_exhaustive_campaign_matches_numpy_recomputation(gemm_dir):
    # The reference build numbers instances in numpy's loop order (m, n, k); the optimized build
    # visits the same instances lane by lane (tests/test_codegen.py checks that they agree).
    campaign = Campaign.from_onnx(gemm_dir / "gemm.onnx", CampaignConfig(), out_dir=gemm_dir / "ref-out",
                                  db=gemm_dir / "exhaustive.db", jobs=2, codegen="reference")
    summary = campaign.run(exhaustive=True, progress=False)
    golden = numpy_faulty_gemm(-1, 0)
    assert summary["trials"] == 16 * 32 and summary["activated"] == 16 * 32
    expected = {(i, b): numpy_is_sdc(numpy_faulty_gemm(i, b), golden) for i in range(16) for b in range(32)}
    rows = sqlite3.connect(gemm_dir / "exhaustive.db").execute(
        "SELECT target, bit, outcome, value_before, value_after FROM trials").fetchall()
    for target, bit, outcome, _, _ in rows:
        assert (outcome == "sdc") == expected[(target, bit)], (target, bit, outcome)
    assert summary["outcomes"]["sdc"]["count"] == sum(expected.values())
    # The recorded value before the fault is the instruction's true result (independently computed).
    before = {(t, b): int(v, 16) for t, b, _, v, _ in rows}
    assert before[(0, 0)] == int(np.float32(A[0, 0] * W[0, 0]).view(np.uint32))
    assert before[(1, 5)] == int(np.float32(C[0] + np.float32(A[0, 0] * W[0, 0])).view(np.uint32))


def test_sampled_interval_contains_exhaustive_rate(gemm_dir):
    exhaustive_rate = sum(numpy_is_sdc(numpy_faulty_gemm(i, b), numpy_faulty_gemm(-1, 0))
                          for i in range(16) for b in range(32)) / 512
    campaign = Campaign.from_onnx(gemm_dir / "gemm.onnx", CampaignConfig(seed=3), out_dir=gemm_dir / "out",
                                  db=gemm_dir / "sampled.db", jobs=2)
    summary = campaign.run(400, progress=False)
    sdc = summary["outcomes"]["sdc"]["count"]
    _, low, high = wilson(sdc, summary["activated"], confidence=0.99)
    assert low <= exhaustive_rate <= high


def test_seed_reproducibility_and_resume_after_kill(tmp_path):
    model = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), model)
    (tmp_path / "inputs").mkdir()
    for i in range(3):
        np.save(tmp_path / "inputs" / f"{i}.npy", RNG.standard_normal((1, 1, 8, 8)).astype(np.float32))
    cmd = [sys.executable, "-m", "lltfi_mlir.cli", "inject", str(model), "--runs", "3000", "--seed", "11",
           "--jobs", "2", "--quiet", "-o", str(tmp_path / "out")]
    # Reference: uninterrupted.
    subprocess.run(cmd + ["--db", str(tmp_path / "ref.db")], check=True, capture_output=True)
    # Interrupted with kill -9 once some trials are committed, then resumed by the same command.
    proc = subprocess.Popen(cmd + ["--db", str(tmp_path / "resumed.db")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    count = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            count = sqlite3.connect(tmp_path / "resumed.db").execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        except sqlite3.Error:
            continue
        if count > 0:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = sqlite3.connect(tmp_path / "resumed.db").execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    assert 0 < partial < 3000, "the kill did not land mid-campaign"
    subprocess.run(cmd + ["--db", str(tmp_path / "resumed.db")], check=True, capture_output=True)
    query = "SELECT id, input, target, seed, outcome, site, dyn_index, mask, value_after FROM trials ORDER BY id"
    ref = sqlite3.connect(tmp_path / "ref.db").execute(query).fetchall()
    resumed = sqlite3.connect(tmp_path / "resumed.db").execute(query).fetchall()
    assert [r[0] for r in resumed] == list(range(3000))  # none lost, none twice
    assert resumed == ref  # same seed, same trials, same outcomes


def test_address_arithmetic_faults_crash(tmp_path):
    model = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), model)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", RNG.standard_normal((1, 1, 8, 8)).astype(np.float32))
    config = parse_config("select:\n  opcodes: [getelementptr]\nfault:\n  type: bitflip\n")
    summary = Campaign.from_onnx(model, config, out_dir=tmp_path / "out", db=tmp_path / "c.db", jobs=2).run(
        200, progress=False)
    assert summary["outcomes"]["crash"]["count"] > 20
    codes = {c for (c,) in sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT code FROM trials WHERE outcome = 'crash'")}
    assert codes <= {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}


HANG_MODULE = """
module {
  llvm.func @malloc(i64) -> !llvm.ptr
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
    %aligned_in_addr = llvm.getelementptr %input[0, 1] : (!llvm.ptr) -> !llvm.ptr, !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %in = llvm.load %aligned_in_addr : !llvm.ptr -> !llvm.ptr
    %x = llvm.load %in : !llvm.ptr -> f32
    %n = llvm.fptosi %x : f32 to i64
    %count = llvm.call @count_up(%n) : (i64) -> i64
    %y = llvm.sitofp %count : i64 to f32
    %buf = llvm.call @malloc(%c8) : (i64) -> !llvm.ptr
    llvm.store %y, %buf : f32, !llvm.ptr
    %undef = llvm.mlir.undef : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %d0 = llvm.insertvalue %buf, %undef[0] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %d1 = llvm.insertvalue %buf, %d0[1] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %d2 = llvm.insertvalue %c0, %d1[2] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %d3 = llvm.insertvalue %c1, %d2[3, 0] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %d4 = llvm.insertvalue %c1, %d3[4, 0] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    llvm.store %d4, %result : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>, !llvm.ptr
    llvm.return
  }
}
"""


def test_corrupted_loop_counter_hangs(tmp_path):
    """A hand-written LLVM-dialect program (`for (i = 0; i != n; i++)`): a flip of a high bit of
    the counter skips past n, and the loop runs for ~2^63 iterations: a hang, never a crash."""
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "model.llvm.mlir").write_text(HANG_MODULE)
    (build_dir / "weights.S").write_text('\t.section .note.GNU-stack,"",@progbits\n')
    manifest = {"entry": "main_graph", "opt_level": 0, "executable": "model", "nodes": [], "source": "<hand>",
                "inputs": [{"name": "x", "shape": [1], "dtype": "float32"}],
                "outputs": [{"name": "y", "shape": [1], "dtype": "float32"}]}
    (build_dir / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", np.array([200.0], np.float32))
    config = CampaignConfig(selector=SiteSelector(opcodes=frozenset({"add"}), functions=frozenset({"count_up"}),
                                                  require_operator=False), timeout=0.3)
    campaign = Campaign.from_build(build_dir, config, tmp_path / "inputs", db=tmp_path / "h.db", jobs=2)
    summary = campaign.run(60, progress=False)
    rows = sqlite3.connect(tmp_path / "h.db").execute("SELECT value_after, outcome FROM trials").fetchall()
    for after, outcome in rows:
        counter = int(np.array([int(after, 16)], np.uint64).view(np.int64)[0])
        # A counter pushed past n (or negative) never meets `i == n` again: hang. Otherwise the loop
        # ends, early or late: the output is wrong or right, but the program finishes.
        expected = "hang" if counter > 200 or counter < 0 else ("sdc", "benign")
        assert outcome in expected, (counter, outcome)
    assert summary["outcomes"]["hang"]["count"] > 0
    assert summary["outcomes"]["crash"]["count"] == 0


def test_per_layer_draw_puts_trial_i_in_layer_i_mod_L(tmp_path):
    model = tmp_path / "cnn.onnx"
    onnx.save(tiny_cnn(), model)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", RNG.standard_normal((1, 1, 8, 8)).astype(np.float32))
    config = CampaignConfig(draw="per_layer", seed=4)
    summary = Campaign.from_onnx(model, config, out_dir=tmp_path / "out", db=tmp_path / "s.db", jobs=2).run(
        100, progress=False)
    layers = sorted({"conv1", "Relu_1", "pool1", "fc", "softmax"})
    db = sqlite3.connect(tmp_path / "s.db")
    nodes = dict(db.execute("SELECT id, node FROM sites"))
    counts = dict(db.execute("SELECT id, dynamic_count FROM sites"))
    for trial_id, site, target in db.execute("SELECT id, site, target FROM trials"):
        layer = layers[trial_id % len(layers)]
        assert nodes[site] == layer, (trial_id, nodes[site], layer)
        layer_total = sum(c for s, c in counts.items() if nodes[s] == layer)
        assert 0 <= target < layer_total
    assert all(g["trials"] == 20 for g in summary["by_layer"].values())


def test_fault_models_stuck_at_multi_bit_and_multiple_faults(gemm_dir):
    """stuck_at_1 sets bits (never clears), fi_num_bits corrupts that many bits of one register,
    fi_max_multiple/window_len inject several faults 1..window_len instances apart."""
    db = gemm_dir / "models.db"
    faults = (FaultConfig(type="stuck_at_1", num_bits=3, runs=40), FaultConfig(type="stuck_at_0", bit=30, runs=40),
              FaultConfig(type="bitflip", max_multiple=3, window_len=2, runs=40))
    config = CampaignConfig(faults=faults, seed=9)
    Campaign.from_onnx(gemm_dir / "gemm.onnx", config, out_dir=gemm_dir / "out", db=db, jobs=2).run(
        120, progress=False)
    rows = sqlite3.connect(db).execute(
        "SELECT id, fault_type, mask, value_before, value_after, faults, target, activated, dyn_index FROM trials "
        "ORDER BY id").fetchall()
    for trial_id, kind, mask, before, after, multi, target, activated, dyn_index in rows:
        mask, before, after = int(mask, 16), int(before, 16), int(after, 16)
        if trial_id < 40:
            assert kind == "stuck_at_1" and bin(mask).count("1") == 3 and after == before | mask
            assert activated == int(after != before)
        elif trial_id < 80:
            assert kind == "stuck_at_0" and mask == 1 << 30 and after == before & ~mask
        else:
            indices = [r[1] for r in json.loads(multi)] if multi else [dyn_index]
            assert indices[0] == target and all(1 <= b - a <= 2 for a, b in zip(indices, indices[1:]))
            assert len(indices) == 3 or indices[-1] >= 14  # the Gemm has 16 instances per run


def test_margin_plans_trials_as_leveugle():
    from lltfi_mlir.campaign.stats import planned_trials

    # Infinite population: n = t^2 p (1 - p) / e^2 = 1.96^2 * 0.25 / 0.01^2 = 9604 (Leveugle et al. 2009).
    assert planned_trials(10**15, 0.01) == 9604
    # Finite population correction: n = N / (1 + e^2 (N - 1) / (t^2 p (1 - p))).
    assert planned_trials(1000, 0.05) == 278
