"""The command line, called in-process through `main(argv)`: outputs, errors and exit codes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_model, tiny_cnn
from onnx import TensorProto, helper

from lltfi_mlir.cli import ExitCode, main


@pytest.mark.parametrize("command", [[], ["compile"], ["run"], ["harden"], ["inject"], ["results"], ["replay"]])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main(command + ["--help"])
    assert info.value.code == 0
    assert "usage: lltfi-mlir" in capsys.readouterr().out


def test_compile_then_run_prints_top_classes(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    assert main(["compile", str(model), "-o", str(tmp_path / "b")]) == ExitCode.OK
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 1, 8, 8), np.float32))
    out = tmp_path / "y.npy"
    capsys.readouterr()
    assert main(["run", str(tmp_path / "b"), "--input", str(x), "--output", str(out)]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert "top classes" in printed
    y = np.load(out)
    assert y.shape == (1, 10) and str(int(np.argmax(y))) in printed


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_inputs_give_one_line_and_status_2(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    assert main(["compile", str(tmp_path / "missing.onnx")]) == 2
    assert "not found" in _error_line(capsys)
    (tmp_path / "junk.onnx").write_text("not a model")
    assert main(["compile", str(tmp_path / "junk.onnx")]) == 2
    assert "cannot parse" in _error_line(capsys)
    assert main(["compile", str(model), "-o", str(tmp_path / "b"), "--shape", "batch=x"]) == 2
    assert "--shape" in _error_line(capsys)
    assert main(["compile", str(model), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((1, 1, 8, 9), np.float32))
    assert main(["run", str(tmp_path / "b"), "--input", str(wrong)]) == 2
    assert "expected float32 of shape 1x1x8x8" in _error_line(capsys)
    np.save(wrong, np.ones((1, 1, 8, 8), np.int32))
    assert main(["run", str(tmp_path / "b"), "--input", str(wrong)]) == 2
    assert "int32" in _error_line(capsys)
    assert main(["run", str(tmp_path / "nobuild"), "--input", str(wrong)]) == 2
    assert "not a build directory" in _error_line(capsys)


def test_unsupported_op_exit_status_2(tmp_path, capsys):
    model = make_model([helper.make_node("Det", ["x"], ["y"], name="d")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    onnx.save(model, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "b")]) == 2
    assert "unsupported ONNX operators: Det (d)" in _error_line(capsys)


def test_controller_rejects_wrong_shape_by_itself(tmp_path):
    """The native program checks .npy shapes without Python: exit 2 and a message."""
    import subprocess

    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    assert main(["compile", str(model), "-o", str(tmp_path / "b")]) == 0
    wrong = tmp_path / "w.npy"
    np.save(wrong, np.ones((2, 1, 8, 8), np.float32))
    proc = subprocess.run([str(tmp_path / "b" / "model"), "--input", str(wrong)], capture_output=True, text=True)
    assert proc.returncode == 2 and "expected float32 of shape 1x1x8x8" in proc.stderr


def test_inject_and_results_json_schema(tmp_path, capsys):
    import json

    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    (tmp_path / "inputs").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(tmp_path / "inputs" / f"{i}.npy", rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    db = tmp_path / "c.db"
    assert main(["inject", str(model), "--inputs", str(tmp_path / "inputs"), "--runs", "120", "--seed", "2",
                 "--db", str(db), "-o", str(tmp_path / "out"), "--quiet"]) == ExitCode.OK
    assert "Outcomes" in capsys.readouterr().out
    assert main(["results", str(db), "--json"]) == ExitCode.OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"] == 120
    assert set(summary["outcomes"]) == {"sdc", "benign", "crash", "hang", "not_activated"}
    for entry in summary["outcomes"].values():
        assert {"count", "rate", "ci_low", "ci_high"} <= set(entry)
    assert sum(e["count"] for e in summary["outcomes"].values()) == 120
    assert {"conv1 (Conv 1)", "fc (Gemm 1)"} <= set(summary["by_layer"])
    assert {"fmul", "fadd", "maximum"} <= set(summary["by_opcode"])
    assert summary["by_bit"]
    assert main(["results", str(db), "--csv"]) == ExitCode.OK
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 121 and lines[0].startswith("id,input,target")
    # Every trial replays alone to the same fault and outcome.
    import sqlite3

    for trial_id, outcome in sqlite3.connect(db).execute("SELECT id, outcome FROM trials WHERE id % 40 = 3"):
        assert main(["replay", str(db), "--trial", str(trial_id)]) == ExitCode.OK
        assert f"outcome now: {outcome}; recorded: {outcome}" in capsys.readouterr().out


def test_inject_usage_errors(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    assert main(["inject", str(model), "--runs", "0"]) == 2
    assert "--runs 0" in _error_line(capsys)
    assert main(["inject", str(model), "-o", str(tmp_path / "o")]) == 2
    assert "no inputs" in _error_line(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("runOption:\n  - run:\n      numOfRun: 3\n")
    assert main(["inject", str(model), "-c", str(bad)]) == 2
    assert "bad.yaml:3: unknown key 'numOfRun'" in _error_line(capsys)
    assert main(["results", str(tmp_path / "none.db")]) == 2
    assert "not found" in _error_line(capsys)
