"""Propagation tracing: the paper's structural findings, graphs that render, and traces that do
not change what they observe."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_campaign import A, C, W, gemm_model

from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.campaign.propagation import write_graphs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def traced_lenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("lenet")
    model = EXAMPLES / "lenet_fmnist" / "model.onnx"
    config = CampaignConfig(trace_layers=True, max_trace=40, seed=21)
    summary = Campaign.from_onnx(model, config, out_dir=root / "out", db=root / "t.db", jobs=2).run(
        400, progress=False)
    return root, summary


def test_single_flip_in_conv_or_gemm_arithmetic_corrupts_at_most_one_output_element(traced_lenet):
    root, summary = traced_lenet
    db = sqlite3.connect(root / "t.db")
    rows = db.execute("""SELECT t.id, s.node, l.corrupted FROM trials t JOIN sites s ON s.id = t.site
                         LEFT JOIN layer_trace l ON l.trial = t.id AND l.node = s.node
                         WHERE s.op_type IN ('Conv', 'Gemm') AND s.opcode IN ('fmul', 'fadd')
                         AND t.outcome IN ('sdc', 'benign')""").fetchall()
    assert len(rows) > 300
    assert all((corrupted or 0) <= 1 for _, _, corrupted in rows)
    assert summary["propagation"]["one_element_corrupted"]["rate"] > 0.5


def _masked_trials(db: sqlite3.Connection) -> list[int]:
    """Corrupted at the injected Conv/Gemm, clean at the Relu/MaxPool right after it."""
    graph = [n for (n,) in db.execute("SELECT value FROM meta WHERE key = 'graph'")]
    import json

    nodes = json.loads(graph[0])
    following = {n["name"]: nodes[i + 1] for i, n in enumerate(nodes[:-1])}
    found = []
    for trial, node in db.execute("""SELECT t.id, s.node FROM trials t JOIN sites s ON s.id = t.site
                                     WHERE t.outcome = 'benign'"""):
        nxt = following.get(node)
        if not nxt or nxt["op_type"] not in ("Relu", "MaxPool"):
            continue
        hit = db.execute("SELECT corrupted FROM layer_trace WHERE trial = ? AND node = ?", (trial, node)).fetchone()
        after = db.execute("SELECT corrupted FROM layer_trace WHERE trial = ? AND node = ?",
                           (trial, nxt["name"])).fetchone()
        if hit and not after:
            found.append(trial)
    return found


def test_a_fault_masked_by_relu_or_maxpool(traced_lenet):
    root, _ = traced_lenet
    assert _masked_trials(sqlite3.connect(root / "t.db"))


def test_svg_of_an_sdc_and_a_masked_trial(traced_lenet):
    root, _ = traced_lenet
    db = sqlite3.connect(root / "t.db")
    sdc = db.execute("SELECT id FROM trials WHERE outcome = 'sdc' LIMIT 1").fetchone()
    assert sdc, "no SDC in 400 trials"
    for trial in (sdc[0], _masked_trials(db)[0]):
        node = db.execute("SELECT s.node FROM trials t JOIN sites s ON s.id = t.site WHERE t.id = ?",
                          (trial,)).fetchone()[0]
        files = write_graphs(root / "t.db", trial, root / "graphs")
        svgs = [f for f in files if f.suffix == ".svg"]
        assert len(svgs) == 2, files
        for svg in svgs:
            ET.parse(svg)  # well-formed
        assert node in svgs[0].read_text()


def test_layer_tracing_changes_nothing_it_observes(tmp_path):
    """The same seed with and without layer tracing: identical faults, values and outcomes."""
    model = EXAMPLES / "cnn_fmnist" / "model.onnx"
    rows = {}
    for traced in (False, True):
        config = CampaignConfig(trace_layers=traced, seed=8)
        Campaign.from_onnx(model, config, out_dir=tmp_path / "out", db=tmp_path / f"{traced}.db", jobs=2).run(
            150, progress=False)
        rows[traced] = sqlite3.connect(tmp_path / f"{traced}.db").execute(
            "SELECT id, site, dyn_index, mask, value_before, value_after, outcome, output FROM trials "
            "ORDER BY id").fetchall()
    assert rows[True] == rows[False]


def test_instruction_trace_windows_match_numpy(tmp_path):
    """Gemm (loop order m, n, k; `acc + a*w`): the golden window after instance t holds the next
    instances' true values, computed independently in numpy."""
    import onnx

    onnx.save(gemm_model(), tmp_path / "gemm.onnx")
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", A)
    values = []
    for n in range(2):
        acc = np.float32(C[n])
        for k in range(4):
            p = np.float32(A[0, k] * W[k, n])
            acc = np.float32(acc + p)
            values += [p, acc]
    bits = [int(np.array([v], np.float32).view(np.uint32)[0]) for v in values]
    config = CampaignConfig(max_trace=4, seed=3)
    # The numpy model walks the instances in the reference build's order (n, k).
    Campaign.from_onnx(tmp_path / "gemm.onnx", config, out_dir=tmp_path / "out", db=tmp_path / "g.db",
                       codegen="reference").run(
        60, progress=False)
    db = sqlite3.connect(tmp_path / "g.db")
    for trial, target in db.execute("SELECT id, target FROM trials"):
        window = db.execute("SELECT position, faulty, golden FROM inst_trace WHERE trial = ? ORDER BY position",
                            (trial,)).fetchall()
        assert len(window) == min(4, 15 - target)
        for position, _, golden in window:
            assert int(golden, 16) == bits[target + 1 + position]


def test_operator_level_flips_one_output_element(tmp_path):
    """On a single Gemm, an operator-level fault is one flipped bit in one element of the output."""
    import onnx

    onnx.save(gemm_model(), tmp_path / "gemm.onnx")
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", A)
    golden = C.copy()  # the Gemm's own order: acc = c; acc += a[k] * w[k, n]
    for n in range(2):
        for k in range(4):
            golden[n] = np.float32(golden[n] + np.float32(A[0, k] * W[k, n]))
    Campaign.from_onnx(tmp_path / "gemm.onnx", CampaignConfig(level="operator", seed=2), out_dir=tmp_path / "out",
                       db=tmp_path / "op.db").run(40, progress=False)
    rows = sqlite3.connect(tmp_path / "op.db").execute(
        "SELECT target, mask, value_before, value_after, output FROM trials").fetchall()
    for target, mask, before, after, output in rows:
        assert bin(int(mask, 16)).count("1") == 1
        out = np.frombuffer(output, np.float32).copy()
        assert int(before, 16) == int(golden.view(np.uint32)[target])
        expected = golden.copy()
        expected[target] = np.array([int(after, 16)], np.uint32).view(np.float32)[0]
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)) or np.isnan(expected[target])


def test_compare_command_prints_both_levels(tmp_path, capsys):
    from lltfi_mlir.cli import main

    model = EXAMPLES / "cnn_fmnist" / "model.onnx"
    assert main(["compare", str(model), "--runs", "120", "--seed", "1", "-o", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    assert "instruction" in out and "operator" in out and "operator-level / instruction-level" in out
