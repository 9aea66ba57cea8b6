"""MLIR modules from another pipeline as campaign targets: a hand-written LLVM-dialect program
compiles, prints what mlir-translate/llc/cc make of it, has an exhaustive campaign equal to a Python
recomputation, and, hardened with `lltfi-mlir opt ... lltfi-sid`, prints the same and gives fewer SDCs."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from lltfi_mlir.dialect_passes.sites import SiteSelector
from lltfi_mlir.llvm_backend.toolchain import tool_path

from lltfi_mlir.build import Build
from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.cli import main

N = 5  # loop iterations
LOOP = f"""module {{
  llvm.mlir.global internal constant @fmt("%d\\0A\\00") {{addr_space = 0 : i32}}
  llvm.func @printf(!llvm.ptr, ...) -> i32
  llvm.func @main() -> i32 {{
    %zero = llvm.mlir.constant(0 : i32) : i32
    %one = llvm.mlir.constant(1 : i32) : i32
    %n = llvm.mlir.constant({N} : i32) : i32
    %three = llvm.mlir.constant(3 : i32) : i32
    llvm.br ^loop(%zero, %zero : i32, i32)
  ^loop(%i: i32, %acc: i32):
    %t = llvm.mul %i, %three : i32 loc("scale")
    %u = llvm.add %t, %one : i32 loc("offset")
    %acc2 = llvm.add %acc, %u : i32 loc("accumulate")
    %i2 = llvm.add %i, %one : i32 loc("step")
    %c = llvm.icmp "ult" %i2, %n : i32 loc("test")
    llvm.cond_br %c, ^loop(%i2, %acc2 : i32, i32), ^done
  ^done:
    %fmt = llvm.mlir.addressof @fmt : !llvm.ptr
    %r = llvm.call @printf(%fmt, %acc2) vararg(!llvm.func<i32 (ptr, ...)>) : (!llvm.ptr, i32) -> i32 loc("print")
    llvm.return %zero : i32
  }}
}}
"""
MASK = 0xFFFFFFFF


def python_output(target: int, bit: int) -> str | None:
    """The loop redone in Python with bit `bit` of dynamic instance `target` flipped (instances in
    program order: scale, offset, accumulate, step, test per iteration, then the printf result);
    None when the flip changes nothing (a bit above an i1's width)."""
    count = 0
    activated = target < 0

    def site(value: int, width: int = 32) -> int:
        nonlocal count, activated
        if count == target and bit < width:
            value ^= 1 << bit
            activated = True
        count += 1
        return value & ((1 << width) - 1)

    i = acc = 0
    while True:
        t = site(i * 3 & MASK)
        u = site(t + 1 & MASK)
        acc2 = site(acc + u & MASK)
        i2 = site(i + 1 & MASK)
        if not site(int(i2 < N), 1):
            break
        i, acc = i2, acc2
    site(3)  # printf's result (its byte count) is unused
    return f"{acc2 - (1 << 32) if acc2 >> 31 else acc2}\n" if activated else None


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> tuple[Path, Build]:
    root = tmp_path_factory.mktemp("mlir-target")
    (root / "loop.mlir").write_text(LOOP)
    assert main(["compile", str(root / "loop.mlir"), "-o", str(root / "build")]) == 0
    return root, Build(root / "build")


def _exhaustive(build_dir: Path, db: Path, selector: SiteSelector | None = None) -> tuple[dict, list]:
    config = CampaignConfig(selector=selector) if selector else CampaignConfig()
    summary = Campaign.from_build(build_dir, config, db=db, jobs=2).run(exhaustive=True, progress=False)
    rows = sqlite3.connect(db).execute("SELECT target, bit, outcome, output FROM trials").fetchall()
    return summary, rows


def test_prints_what_mlir_translate_llc_cc_make_of_it(loop):
    root, build = loop
    ll, obj, exe = root / "ref.ll", root / "ref.o", root / "ref"
    subprocess.run([tool_path("mlir-translate"), "--mlir-to-llvmir", str(root / "loop.mlir"), "-o", str(ll)],
                   check=True)
    subprocess.run([tool_path("llc"), "-filetype=obj", "-relocation-model=pic", str(ll), "-o", str(obj)], check=True)
    subprocess.run([tool_path("cc"), str(obj), "-o", str(exe)], check=True)
    reference = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert reference == python_output(-1, 0) == "35\n"
    assert subprocess.run([str(build.executable)], capture_output=True, text=True, check=True).stdout == reference
    assert build.manifest["kind"] == "program" and build.manifest["language"] == "mlir"


def test_exhaustive_campaign_equals_python_recomputation(loop):
    root, build = loop
    summary, rows = _exhaustive(build.directory, root / "ex.db")
    golden = python_output(-1, 0)
    instances = 5 * N + 1
    assert len(rows) == instances * 32
    for target, bit, outcome, output in rows:
        expected = python_output(target, bit)
        if expected is None:
            assert outcome == "not_activated", (target, bit)
        else:
            assert outcome == ("benign" if expected == golden else "sdc"), (target, bit, outcome)
            assert output.decode() == expected, (target, bit)
    assert summary["activated"] == 4 * N * 32 + N + 32
    # llc -O2 (the hooks keep the instance order): the same trials, outcomes and outputs
    assert main(["compile", str(root / "loop.mlir"), "--opt-level", "2", "-o", str(root / "o2")]) == 0
    _, rows_o2 = _exhaustive(root / "o2", root / "o2.db")
    assert sorted(rows_o2) == sorted(rows)


def test_sid_through_opt_keeps_output_and_cuts_sdcs(loop):
    """`lltfi-mlir opt ... lltfi-sid` then compile: bit-identical output; under the same exhaustive
    campaign (every instruction, the checking code included) fewer SDCs, in count and in rate."""
    root, build = loop
    hardened = root / "hardened.mlir"
    assert main(["opt", str(root / "loop.mlir"), "-o", str(hardened), "--pass-pipeline",
                 "builtin.module(canonicalize, lltfi-sid{technique=acd correct=and})"]) == 0
    assert main(["compile", str(hardened), "-o", str(root / "hbuild")]) == 0
    out = subprocess.run([str(root / "hbuild" / "model")], capture_output=True, text=True, check=True).stdout
    assert out == "35\n"
    plain, _ = _exhaustive(build.directory, root / "plain.db")
    hard, rows = _exhaustive(root / "hbuild", root / "hard.db")
    assert len(rows) > 3 * plain["trials"]  # duplicates, copies, compares, corrections are sites too
    assert hard["outcomes"]["sdc"]["count"] < plain["outcomes"]["sdc"]["count"] / 1.3
    assert hard["outcomes"]["sdc"]["rate"] < plain["outcomes"]["sdc"]["rate"] / 3


def test_selection_by_location_name_source_line_and_function(loop, tmp_path):
    root, build = loop
    by_name = SiteSelector(opcodes=frozenset({"mul", "add"}), nodes=frozenset({"accumulate"}),
                           require_operator=False)
    summary, rows = _exhaustive(build.directory, tmp_path / "name.db", by_name)
    assert summary["trials"] == N * 32
    assert {t for t, _, _, _ in rows} == set(range(N))
    # `%i2 = llvm.add` is on line 14 of the file: a file:line location written by the parser.
    hard = tmp_path / "lines.mlir"
    hard.write_text(LOOP.replace(' loc("step")', ""))
    assert main(["compile", str(hard), "-o", str(tmp_path / "b")]) == 0
    by_line = SiteSelector(opcodes=frozenset({"add"}), sources=frozenset({"lines.mlir"}), lines=(14, 14),
                           functions=frozenset({"main"}), require_operator=False)
    campaign = Campaign.from_build(tmp_path / "b", CampaignConfig(selector=by_line), db=tmp_path / "l.db", jobs=1)
    campaign.run(1, progress=False)
    assert [(s.opcode, s.source, s.function) for s in campaign.instrumented.sites] == [("add", "lines.mlir:14",
                                                                                        "main")]
    # and the CLI: a config's select keys, program arguments after `--`
    (tmp_path / "c.yaml").write_text("select:\n  opcodes: [mul]\n  nodes: [scale]\n")
    assert main(["inject", str(root / "build"), "-c", str(tmp_path / "c.yaml"), "--runs", "20", "--quiet",
                 "--db", str(tmp_path / "cli.db"), "--", "ignored-arg"]) == 0
    nodes = sqlite3.connect(tmp_path / "cli.db").execute("SELECT DISTINCT node FROM sites").fetchall()
    assert nodes == [("scale",)]


FUNC_MODULE = """module {
  llvm.mlir.global internal constant @fmt("%ld\\0A\\00") {addr_space = 0 : i32}
  llvm.func @printf(!llvm.ptr, ...) -> i32
  func.func @run(%argc: i32, %argv: !llvm.ptr) -> i32 {
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    %c10 = arith.constant 10 : index
    %init = arith.constant 1 : i64
    %buf = memref.alloca() : memref<1xi64>
    memref.store %init, %buf[%c0] : memref<1xi64>
    scf.for %k = %c0 to %c10 step %c1 {
      %v = memref.load %buf[%c0] : memref<1xi64>
      %w = arith.muli %v, %init : i64
      %kk = arith.index_cast %k : index to i64
      %x = arith.addi %w, %kk : i64
      memref.store %x, %buf[%c0] : memref<1xi64>
    }
    %r = memref.load %buf[%c0] : memref<1xi64>
    %fmt = llvm.mlir.addressof @fmt : !llvm.ptr
    %p = llvm.call @printf(%fmt, %r) vararg(!llvm.func<i32 (ptr, ...)>) : (!llvm.ptr, i64) -> i32
    %zero = arith.constant 0 : i32
    return %zero : i32
  }
}
"""


def test_func_scf_memref_module_is_lowered_and_runs_with_args(tmp_path):
    source = tmp_path / "f.mlir"
    source.write_text(FUNC_MODULE)
    assert main(["compile", str(source), "--entry", "run", "-o", str(tmp_path / "b")]) == 0
    out = subprocess.run([str(tmp_path / "b" / "model"), "x"], capture_output=True, text=True, check=True).stdout
    assert out == "46\n"  # 1 + 0 + 1 + ... + 9
    assert main(["harden", str(source), "--entry", "run", "--sid", "aid", "-o", str(tmp_path / "h")]) == 0
    assert subprocess.run([str(tmp_path / "h" / "model")], capture_output=True, text=True).stdout == out


@pytest.mark.parametrize("text, message", [
    ("module {", "cannot parse"),
    ("module { llvm.func @other() -> i32 { %0 = llvm.mlir.constant(0 : i32) : i32\n llvm.return %0 : i32 } }",
     "defines no function 'main'"),
    ("module { llvm.func @main(%a: f32) { llvm.return } }", "entry must be"),
])
def test_bad_modules_are_one_line_errors(text, message, tmp_path, capsys):
    (tmp_path / "bad.mlir").write_text(text)
    assert main(["compile", str(tmp_path / "bad.mlir"), "-o", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()  # nothing half-built is left


def test_harden_module_options(loop, tmp_path, capsys):
    root, _ = loop
    source = str(root / "loop.mlir")
    assert main(["harden", source, "--sid", "od", "--correct", "min", "-o", str(tmp_path / "od")]) == 2
    assert "od needs an ONNX graph" in capsys.readouterr().err
    assert main(["harden", source, "--sid", "aid", "--operators", "Conv", "-o", str(tmp_path / "op")]) == 2
    assert main(["harden", source, "--sid", "aid", "--nodes", "nothing", "-o", str(tmp_path / "n")]) == 2
    assert main(["harden", source, "--sid", "aid", "--nodes", "scale,step", "-o", str(tmp_path / "h")]) == 0
    assert "2 instruction(s) duplicated, 2 check(s) inserted" in " ".join(capsys.readouterr().out.split())
    assert subprocess.run([str(tmp_path / "h" / "model")], capture_output=True, text=True).stdout == "35\n"


def test_inject_a_module_file_then_resume_and_replay(loop, tmp_path, capsys):
    root, _ = loop
    args = ["inject", str(root / "loop.mlir"), "-o", str(tmp_path / "work"), "--quiet", "--seed", "3"]
    assert main([*args, "--runs", "10"]) == 0
    assert main([*args, "--runs", "15"]) == 0  # resumes: same module, same campaign database
    (db,) = (tmp_path / "work").glob("campaign-*.db")
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM trials").fetchone() == (15,)
    capsys.readouterr()
    assert main(["replay", str(db), "--trial", "7"]) == 0
    assert "outcome now" in capsys.readouterr().out


def test_entry_must_be_an_identifier(loop, tmp_path, capsys):
    root, _ = loop
    assert main(["compile", str(root / "loop.mlir"), "--entry", 'x"() {', "-o", str(tmp_path / "b")]) == 2
    assert "give a C identifier" in capsys.readouterr().err
