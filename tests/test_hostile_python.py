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
W1 = RNG.standard_normal((16, 6)).astype(np.float32)  # over 64 elements: kept out of the module
W2 = RNG.standard_normal((6, 3)).astype(np.float32)


def hostile_model(w1: np.ndarray = W1) -> onnx.ModelProto:
    """MatMul -> Relu -> MatMul whose node and tensor names attack DOT, the terminal and Rich."""
    nodes = [helper.make_node("MatMul", ["a", "w1"], ["h"], name=DOT_ATTACK),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], [TERMINAL_ATTACK + "out"], name=TERMINAL_ATTACK + "\\")]
    return make_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 16])],
                      [helper.make_tensor_value_info(TERMINAL_ATTACK + "out", TensorProto.FLOAT, [1, 3])],
                      [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(W2, "w2")])


def write_inputs(directory: Path, n: int = 3, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.save(directory / f"{i}.npy", rng.standard_normal((1, 16)).astype(np.float32))
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
    assert "redX[/x][bold]\\ (MatMul 2)" in out


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
    assert "redX[/x][bold]\\" in "".join(ET.fromstring(proc.stdout).itertext())


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


def numpy_model(a: np.ndarray, w1: np.ndarray) -> np.ndarray:
    return np.maximum(a @ w1, 0) @ W2


def golden_of(db: Path, input_set: int = 0) -> np.ndarray:
    import json

    info = json.loads(sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'replay'").fetchone()[0])
    return np.frombuffer(bytes.fromhex(info["golden"][input_set]), np.float32)


def test_retrained_weights_are_a_new_build_and_an_old_database_refuses_them(tmp_path, capsys):
    model, inputs = tmp_path / "m.onnx", write_inputs(tmp_path / "inputs")
    onnx.save(hostile_model(), model)
    stamp = model.stat().st_mtime_ns
    work = ["-o", str(tmp_path / "w"), "--runs", "3", "--quiet", "--jobs", "1"]
    assert main(["inject", str(model), "--db", str(tmp_path / "old.db"), *work]) == 0
    a = np.load(inputs / "0.npy")
    np.testing.assert_allclose(golden_of(tmp_path / "old.db"), numpy_model(a, W1).reshape(-1), rtol=1e-5)
    retrained = (W1 * 0.5 + 1).astype(np.float32)  # same architecture, other weights, same file time
    onnx.save(hostile_model(retrained), model)
    import os

    os.utime(model, ns=(stamp, stamp))
    assert main(["inject", str(model), "--db", str(tmp_path / "new.db"), *work]) == 0
    np.testing.assert_allclose(golden_of(tmp_path / "new.db"), numpy_model(a, retrained).reshape(-1), rtol=1e-5)
    capsys.readouterr()
    assert main(["inject", str(model), "--db", str(tmp_path / "old.db"), *work]) == 2
    assert "holds a campaign of another model" in one_error_line(capsys)


@pytest.mark.slow  # three processes that each import MLIR and compile: ~10 s on an idle machine
def test_three_concurrent_injects_on_one_work_folder(hostile, tmp_path):
    argv = [sys.executable, "-m", "lltfi_mlir.cli", "inject", str(hostile / "evil.onnx"), "-o", str(tmp_path / "w"),
            "--runs", "4", "--quiet", "--jobs", "1"]
    procs = [subprocess.Popen([*argv, "--db", str(tmp_path / f"c{i}.db")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    for i in range(3):
        assert sqlite3.connect(tmp_path / f"c{i}.db").execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 4
    leftovers = [p.name for p in (tmp_path / "w").rglob("*") if ".partial-" in p.name or ".old-" in p.name]
    assert not leftovers


def test_file_size_limit_during_compile_leaves_no_partial_build(hostile, tmp_path):
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    out = tmp_path / "out" / "b"
    proc = subprocess.run([sys.executable, "-m", "lltfi_mlir.cli", "compile", str(hostile / "evil.onnx"), "-o",
                           str(out)], capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no partial folder, no lock file


def test_a_moved_build_folder_is_instrumented_again(hostile, tmp_path, capsys):
    import shutil

    assert main(["compile", str(hostile / "evil.onnx"), "-o", str(tmp_path / "b1")]) == 0
    assert '"weights/' in (tmp_path / "b1" / "weights.S").read_text()  # relative .incbin
    shutil.move(tmp_path / "b1", tmp_path / "b2")
    (tmp_path / "b2" / "weights.o").unlink()  # the instrumented build assembles weights.S in its new place
    inputs = ["--inputs", str(hostile / "inputs"), "--runs", "3", "--quiet", "--jobs", "1"]
    assert main(["inject", str(tmp_path / "b2"), "--db", str(tmp_path / "m.db"), *inputs]) == 0, capsys.readouterr()
    a = np.load(hostile / "inputs" / "0.npy")
    np.testing.assert_allclose(golden_of(tmp_path / "m.db"), numpy_model(a, W1).reshape(-1), rtol=1e-5)


def test_nonfinite_golden_is_refused_unless_allowed_and_recorded(hostile, tmp_path, capsys):
    inputs = write_inputs(tmp_path / "inputs", n=2)
    a = np.load(inputs / "1.npy")
    a[0, 3] = np.inf
    np.save(inputs / "1.npy", a)
    argv = ["inject", str(hostile / "evil.onnx"), "-o", str(hostile / "w"), "--inputs", str(inputs),
            "--db", str(tmp_path / "nan.db"), "--runs", "4", "--jobs", "1"]
    assert main([*argv, "--quiet"]) == 2
    assert "NaN or Inf" in one_error_line(capsys) and not (tmp_path / "nan.db").exists()
    assert main([*argv, "--allow-nonfinite-golden"]) == 0
    assert "warning: the fault-free outputs hold" in capsys.readouterr().out
    import json

    recorded = sqlite3.connect(tmp_path / "nan.db").execute(
        "SELECT value FROM meta WHERE key = 'nonfinite_golden'").fetchone()[0]
    assert list(json.loads(recorded)) == ["1"]
    assert main(["results", str(tmp_path / "nan.db"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nonfinite_golden"] == json.loads(recorded)


def test_counts_come_from_the_database_rows(traced, tmp_path):
    """Crashes and hangs whose fault was never reached (activated = 0) are not activated: the summary's
    counts are the rows' counts, and they are reported apart."""
    import shutil

    from rich.console import Console

    from lltfi_mlir.campaign.database import CampaignDatabase
    from lltfi_mlir.campaign.report import print_summary, summarize

    db_path = tmp_path / "c.db"
    shutil.copy(traced, db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE trials SET outcome = 'crash', activated = 0, site = NULL WHERE id < 5")
    conn.execute("UPDATE trials SET outcome = 'hang', activated = 0, site = NULL WHERE id BETWEEN 5 AND 6")
    conn.commit()
    activated, total = conn.execute("SELECT SUM(activated), COUNT(*) FROM trials").fetchone()
    db = CampaignDatabase(db_path, create=False)
    try:
        summary = summarize(db)
    finally:
        db.close()
    assert summary["activated"] == activated and summary["trials"] == total
    assert summary["outcomes"]["not_activated"]["count"] == total - activated
    assert summary["outcomes"]["crash"]["count"] == 0 and summary["outcomes"]["hang"]["count"] == 0
    assert summary["failed_before_fault"] == {"crash": 5, "hang": 2}
    console = Console(record=True, width=200)
    print_summary(summary, console, details=False)
    assert "warning: 5 crash, 2 hang before the fault was injected" in console.export_text()


def test_replay_of_every_trial_of_a_per_layer_campaign(hostile, tmp_path):
    from lltfi_mlir.campaign.replay import replay_trial

    db = tmp_path / "layers.db"
    assert main(["inject", str(hostile / "evil.onnx"), "-o", str(hostile / "w"), "--db", str(db), "--runs", "20",
                 "--draw", "per_layer", "--quiet", "--jobs", "1"]) == 0
    rows = sqlite3.connect(db).execute("SELECT id, site, outcome FROM trials ORDER BY id").fetchall()
    assert len(rows) == 20 and len({site for _, site, _ in rows}) > 3
    for trial, site, outcome in rows:
        replay = replay_trial(db, trial)
        assert replay.matches, (trial, site, outcome, replay.outcome, replay.faults)
        assert replay.faults[0].site == site and replay.outcome == outcome


def test_replay_after_another_campaign_on_the_same_build(hostile, tmp_path):
    from lltfi_mlir.campaign.replay import replay_trial

    work = ["-o", str(hostile / "w"), "--runs", "6", "--quiet", "--jobs", "1"]
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    assert main(["inject", str(hostile / "evil.onnx"), "--db", str(first), *work]) == 0
    other = write_inputs(tmp_path / "other", n=4, seed=99)
    assert main(["inject", str(hostile / "evil.onnx"), "--db", str(second), "--inputs", str(other), *work]) == 0
    for trial in range(6):
        assert replay_trial(first, trial).matches, trial


def test_leftovers_of_killed_builds_are_swept_and_folders_replaced_whole(tmp_path):
    from lltfi_mlir.workdir import replace_folder, stage_folder

    final = tmp_path / "fi-abc"
    dead = tmp_path / ".fi-abc.partial-999999999"  # no such process
    dead.mkdir()
    (final / "old").mkdir(parents=True)
    stage = stage_folder(final)
    assert not dead.exists() and stage.is_dir() and not any(stage.iterdir())
    (stage / "model").write_text("new")
    complete = lambda d: (d / "model").exists()  # noqa: E731
    replace_folder(stage, final, complete)  # an incomplete leftover is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fi-abc"]
    assert [p.name for p in final.iterdir()] == ["model"]
    late = stage_folder(final)  # a second process that built the same folder: the first one's stays
    (late / "model").write_text("late")
    replace_folder(late, final, complete)
    assert (final / "model").read_text() == "new" and not late.exists()
