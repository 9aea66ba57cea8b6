"""Hostile inputs on the Python side (issue 13): names that try DOT, SVG, ANSI and Rich markup
injection, files that are not what they claim, stale caches, concurrent and moved builds, replays.

Every bad input must end in one line on stderr and exit status 2 (no traceback); the CLI is
called in-process through `main(argv)`, and once as a subprocess for the tracebacks that only a
real process shows.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir.cli import main
from lltfi_mlir.terminal import plain, safe

DOT_ATTACK = 'mm"; evil [label="PWNED", URL="javascript:alert(1)"]; //\\'
TERMINAL_ATTACK = "red\x1b[31mX\x1b[0m[/x][bold]"
RNG = np.random.default_rng(13)
W1 = RNG.standard_normal((4, 6)).astype(np.float32)
W2 = RNG.standard_normal((6, 3)).astype(np.float32)


def hostile_model(w1: np.ndarray = W1) -> onnx.ModelProto:
    """MatMul -> Relu -> MatMul whose node and tensor names attack DOT, the terminal and Rich."""
    nodes = [helper.make_node("MatMul", ["a", "w1"], ["h"], name=DOT_ATTACK),
             helper.make_node("Relu", ["h"], ["r"], name=TERMINAL_ATTACK),
             helper.make_node("MatMul", ["r", "w2"], [TERMINAL_ATTACK + "out"], name="tail\\")]
    return make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info(TERMINAL_ATTACK + "out", TensorProto.FLOAT, [1, 3])],
                      [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(W2, "w2")])


def write_inputs(directory: Path, n: int = 3, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(directory / f"{i}.npy", rng.standard_normal((1, 4)).astype(np.float32))
    return directory


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def no_raw_names(text: str) -> None:
    assert "\x1b" not in text
    assert "[/x]" in text or TERMINAL_ATTACK not in text  # printed literally when printed at all


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A compiled hostile model and a finished traced campaign on it."""
    root = tmp_path_factory.mktemp("hostile")
    onnx.save(hostile_model(), root / "evil.onnx")
    write_inputs(root / "inputs")
    return root


@pytest.fixture(scope="module")
def traced(hostile):
    db = hostile / "traced.db"
    code = main(["inject", str(hostile / "evil.onnx"), "--runs", "24", "--trace", "all", "-o", str(hostile / "w"),
                 "--db", str(db), "--quiet", "--jobs", "1"])
    assert code == 0
    return db


def test_plain_and_safe_strip_escapes_and_markup():
    assert plain("a\x1b[31mb\x1b[0mc\x1b]0;title\x07d\x07e\u202ef") == "abcd?e?f"
    assert plain("line\nbreak\ttab") == "line?break?tab"
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(safe(TERMINAL_ATTACK + "\\"))  # markup would raise on [/x]; a trailing \ escapes nothing
    assert console.export_text().strip() == "redX[/x][bold]\\"


def test_compile_prints_names_without_escapes_or_markup(hostile, capsys):
    assert main(["compile", str(hostile / "evil.onnx"), "-o", str(hostile / "b")]) == 0
    out = capsys.readouterr().out
    no_raw_names(out)
    assert "output redX[/x][bold]out: 1x3" in out


def test_inject_and_results_print_names_literally(hostile, traced, capsys):
    capsys.readouterr()
    assert main(["results", str(traced)]) == 0
    out = capsys.readouterr().out
    no_raw_names(out)
    assert "redX[/x][bold] (Relu 1)" in out
    assert "tail\\ (MatMul 2)" in out


def test_trace_svg_has_no_injected_node_or_link(traced, tmp_path, capsys):
    db = sqlite3.connect(traced)
    trial = db.execute("SELECT t.id FROM trials t JOIN sites s ON s.id = t.site WHERE s.node = ? LIMIT 1",
                       (DOT_ATTACK,)).fetchone()
    assert trial, "no trial in the attacking node"
    assert main(["trace", str(traced), "--trial", str(trial[0]), "-o", str(tmp_path)]) == 0
    no_raw_names(capsys.readouterr().out)
    svgs = sorted(tmp_path.glob("*.svg"))
    assert len(svgs) == 2
    operators = ET.parse(tmp_path / f"trial{trial[0]}_operators.svg").getroot()
    nodes = [e for e in operators.iter() if e.get("class") == "node"]
    assert len(nodes) == 3  # no "evil" node
    texts = " ".join(e.text or "" for e in operators.iter())
    assert DOT_ATTACK.rstrip("\\") in texts  # the name is shown, as text
    for svg in svgs:
        root = ET.parse(svg).getroot()  # well-formed: no control characters
        for element in root.iter():
            assert not element.tag.endswith("}a"), "a link in the SVG"
            for key, value in element.attrib.items():
                assert "javascript:" not in value, (key, value)
                assert not key.endswith("href"), key


def test_trace_of_a_name_ending_in_backslash_renders(traced, tmp_path):
    from lltfi_mlir.campaign.database import CampaignDatabase
    from lltfi_mlir.campaign.propagation import operator_graph

    db = CampaignDatabase(traced, create=False)
    try:
        trial = db.query("SELECT id FROM trials WHERE site IS NOT NULL LIMIT 1")[0][0]
        text = operator_graph(db, trial)
    finally:
        db.close()
    dot = tmp_path / "g.dot"
    dot.write_text(text)
    proc = subprocess.run(["dot", "-Tsvg", str(dot)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "tail\\" in "".join(ET.fromstring(proc.stdout).itertext())


def test_results_on_an_unrelated_sqlite_file_changes_nothing(tmp_path, capsys):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    for command in (["results", str(other)], ["results", str(other), "--json"], ["replay", str(other), "--trial", "0"],
                    ["trace", str(other), "--trial", "0", "-o", str(tmp_path / "g")]):
        assert main(command) == 2
        assert "is not a campaign database" in one_error_line(capsys)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, -shm or graphs
    (tmp_path / "junk.db").write_text("not sqlite at all")
    assert main(["results", str(tmp_path / "junk.db")]) == 2
    assert "is not a campaign database" in one_error_line(capsys)


def test_inject_refuses_an_unrelated_sqlite_file_as_db(hostile, tmp_path, capsys):
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    assert main(["inject", str(hostile / "evil.onnx"), "-o", str(hostile / "w"), "--db", str(other), "--runs", "2",
                 "--quiet"]) == 2
    assert "is not a campaign database" in one_error_line(capsys)
    assert other.read_bytes() == before


def test_results_reads_without_writing(traced, capsys):
    before = traced.read_bytes()
    assert main(["results", str(traced), "--json"]) == 0
    assert traced.read_bytes() == before


def test_read_only_database_under_inject_is_one_line(hostile, traced, tmp_path, capsys):
    db = tmp_path / "ro.db"
    db.write_bytes(traced.read_bytes())
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not permitted here")
    try:
        code = main(["inject", str(hostile / "evil.onnx"), "--runs", "26", "--trace", "all", "-o",
                     str(hostile / "w"), "--db", str(db), "--quiet", "--jobs", "1"])
        assert code == 2
        assert "cannot write the campaign database" in one_error_line(capsys)
    finally:
        subprocess.run(["chattr", "-i", str(db)], check=True)


@pytest.mark.parametrize("content", [b"garbage", b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'",
                                     b"\x93NUMPY\x01\x00\x20\x00{'descr': '<f4', 'shape': (-1,), }\n"])
def test_garbage_npy_under_inject_is_one_line(hostile, tmp_path, capsys, content):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "0.npy").write_bytes(content)
    assert main(["inject", str(hostile / "evil.onnx"), "-o", str(hostile / "w"), "--inputs", str(inputs),
                 "--db", str(tmp_path / "c.db"), "--runs", "2", "--quiet"]) == 2
    assert "cannot read" in one_error_line(capsys)


def test_input_paths_with_spaces(hostile, tmp_path, capsys):
    inputs = write_inputs(tmp_path / "my inputs\tfolder", n=2)
    model = tmp_path / "my model.onnx"
    model.write_bytes((hostile / "evil.onnx").read_bytes())
    code = main(["inject", str(model), "--inputs", str(inputs), "-o", str(tmp_path / "work dir"), "--runs", "4",
                 "--quiet", "--jobs", "1"])
    assert code == 0, capsys.readouterr().err


def test_cli_subprocess_bad_inputs_have_no_traceback(hostile, tmp_path):
    """The same refusals in a real process: status 2, one line, no traceback on either stream."""
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE notes (text TEXT)").connection.commit()
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "0.npy").write_bytes(b"garbage")
    cases = [["results", str(other)],
             ["inject", str(hostile / "evil.onnx"), "-o", str(hostile / "w"), "--inputs", str(tmp_path / "inputs"),
              "--runs", "2", "--quiet"]]
    for argv in cases:
        proc = subprocess.run([sys.executable, "-m", "lltfi_mlir.cli", *argv], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
