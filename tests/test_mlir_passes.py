"""The lltfi passes as MLIR passes: in a Python PassManager next to upstream passes, by name in a
pipeline string, with failures as located diagnostics, and composing when applied twice."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from lltfi_mlir.dialect_passes.pipeline import (
    PASS_NAMES,
    InstrumentPass,
    SidPass,
    make_pass,
    pass_manager,
    split_elements,
)
from lltfi_mlir.dialect_passes.sites import SiteSelector
from mlir import ir, passmanager
from test_mlir_targets import LOOP

from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.cli import main
from lltfi_mlir.compiler import compile_mlir
from lltfi_mlir.errors import UsageError


def filecheck(text: str, checks: str, tmp_path: Path) -> None:
    pytest.importorskip("filecheck")
    (tmp_path / "checks").write_text(checks)
    proc = subprocess.run([sys.executable, "-m", "filecheck", str(tmp_path / "checks")], input=text, text=True,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_python_pass_manager_runs_upstream_and_lltfi_passes(tmp_path):
    with ir.Context():
        module = ir.Module.parse(LOOP)
        pm = passmanager.PassManager("builtin.module")
        pm.add("canonicalize")
        sid = SidPass("acd", "min")
        sid.add_to(pm)
        pm.add("cse")
        instrument = InstrumentPass(SiteSelector(opcodes=frozenset({"mul", "sid"}), require_operator=False))
        instrument.add_to(pm)
        pm.run(module.operation)
        text = module.operation.get_asm()
        (result,) = instrument.results
        assert sid.results[0].chains == 2 and sid.results[0].duplicated == 4
        # the original mul, then the checking code in program order; of the adds, only the 3 duplicates
        assert [s.opcode for s in result.sites][:3] == ["mul", "inline_asm", "mul"]
        assert sum(s.opcode == "add" for s in result.sites) == 3
    filecheck(text, """
CHECK: module attributes {lltfi.instrumented = {sites = 13 : i64, units = 1 : i64}, lltfi.sid = "acd correct=min"}
CHECK: llvm.mlir.global external @lltfi_unit_counts()
CHECK: llvm.func @main()
CHECK: %[[M:.*]] = llvm.mul
CHECK: llvm.call @lltfi_fi_i32(%{{.*}}, %[[M]])
CHECK: llvm.inline_asm has_side_effects {lltfi.sid
CHECK: llvm.intr.umin
CHECK: llvm.select
""", tmp_path)


def test_pipeline_string_mixes_upstream_and_lltfi_passes():
    assert split_elements("builtin.module(canonicalize{max-iterations=3}, lltfi-sid{technique=acd correct=min},"
                          "func.func(cse), lltfi-instrument{opcodes=fmul,fadd})") == [
        "canonicalize{max-iterations=3}", "lltfi-sid{technique=acd correct=min}", "func.func(cse)",
        "lltfi-instrument{opcodes=fmul,fadd}"]
    with ir.Context():
        module = ir.Module.parse(LOOP)
        pm, added = pass_manager("builtin.module(canonicalize, lltfi-sid{technique=aid correct=none}, "
                                 "lltfi-instrument{opcodes=int exclude-opcodes=icmp register=dst})")
        pm.run(module.operation)
        sid, instrument = added
        assert sid.results[0].checks == 4
        assert {s.opcode for s in instrument.results[0].sites} == {"mul", "add"}


def test_pass_names_match_their_passes():
    assert PASS_NAMES == ("lltfi-sid", "lltfi-instrument")
    for name in PASS_NAMES:
        assert make_pass(name).name == name


@pytest.mark.parametrize("text, message", [
    ("lltfi-sid{technique=od}", "technique=od"),
    ("lltfi-sid{correct=max}", "correct=max"),
    ("lltfi-instrument{opcodes=fmull}", "unknown opcode 'fmull'"),
    ("lltfi-instrument{colour=red}", "unknown option 'colour'"),
    ("lltfi-instrument{lines=9}", "first,last"),
    ("lltfi-nothing", "unknown lltfi pass"),
    ("builtin.module(cse", "unbalanced"),
    ("no-such-upstream-pass", "no-such-upstream-pass"),
])
def test_bad_pipelines_are_usage_errors(text, message):
    with ir.Context(), pytest.raises(UsageError, match=message):
        pass_manager(text)


def test_failures_are_diagnostics_with_locations(tmp_path, capsys):
    source = tmp_path / "loop.mlir"
    source.write_text(LOOP)
    hardened = tmp_path / "h.mlir"
    assert main(["opt", str(source), "-o", str(hardened), "--pass-pipeline", "lltfi-sid"]) == 0
    # SID twice is refused, at the module's location in the file
    assert main(["opt", str(hardened), "-o", str(tmp_path / "x.mlir"), "--pass-pipeline", "lltfi-sid"]) == 1
    err = capsys.readouterr().err
    assert "loop.mlir:1:1: lltfi-sid: the module is already hardened" in err and "Traceback" not in err
    assert main(["opt", str(source), "-o", str(tmp_path / "y.mlir"), "--pass-pipeline",
                 "lltfi-instrument{opcodes=fdiv}"]) == 1
    assert "lltfi-instrument: the selection matches no instruction" in capsys.readouterr().err
    assert not (tmp_path / "y.mlir").exists()


def test_second_instrumentation_numbers_sites_after_the_first(tmp_path):
    """Instrumenting twice keeps the first application's ids, numbers the new sites after them, declares
    the runtime symbols once, and campaigns on the result equal those of a one-shot union build."""
    source = tmp_path / "loop.mlir"
    source.write_text(LOOP)
    with ir.Context():
        module = ir.Module.parse(LOOP)
        pm, (_, second) = pass_manager("lltfi-instrument{opcodes=mul}, "
                                       "lltfi-instrument{opcodes=add nodes=accumulate}")
        pm.run(module.operation)
        module.operation.verify()
        sites = second.results[0].sites
        assert [(s.id, s.node) for s in sites] == [(0, "scale"), (1, "accumulate")]
        assert second.results[0].kept_sites == 1
        assert module.operation.get_asm().count("@lltfi_unit_counts(") == 1
        twice = compile_mlir(module, tmp_path / "twice")
    once = compile_mlir(source, tmp_path / "once")
    run = [subprocess.run([str(b.executable)], capture_output=True, text=True).stdout for b in (twice, once)]
    assert run == ["35\n", "35\n"]
    selector = SiteSelector(opcodes=frozenset({"mul", "add"}), nodes=frozenset({"scale", "accumulate"}),
                            require_operator=False)
    rows = []
    for build in (twice, once):
        db = tmp_path / f"{build.directory.name}.db"
        Campaign.from_build(build.directory, CampaignConfig(selector=selector), db=db, jobs=2).run(
            exhaustive=True, progress=False)
        rows.append(sqlite3.connect(db).execute(
            "SELECT target, bit, outcome, output FROM trials ORDER BY target, bit").fetchall())
    assert len(rows[0]) == 2 * 5 * 32 and rows[0] == rows[1]


def test_onnx_build_module_selects_operators_through_its_manifest(tmp_path):
    """An ONNX build's model.llvm.mlir through `opt`: operators and layers select by the manifest."""
    from conftest import tiny_cnn

    from lltfi_mlir import CompileOptions, compile_onnx

    build = compile_onnx(tiny_cnn(), tmp_path / "b", CompileOptions(codegen="reference"))
    manifest = build.directory / "manifest.json"
    with ir.Context():
        module = ir.Module.parse((build.directory / "model.llvm.mlir").read_text())
        pm, (sid, instrument) = pass_manager(
            f"lltfi-sid{{technique=aid correct=and opcodes=fp layers=Gemm:1 manifest={manifest}}},"
            f"lltfi-instrument{{operators=Gemm manifest={manifest}}}")
        pm.run(module.operation)
    assert sid.results[0].duplicated == 2  # the Gemm's fmul and fadd
    sites = instrument.results[0].sites
    assert {s.op_type for s in sites} == {"Gemm"} and {s.node for s in sites} == {"fc"}
    assert {"fmul", "fadd", "select", "inline_asm"} <= {s.opcode for s in sites}
    with ir.Context(), pytest.raises(UsageError, match="manifest="):
        pass_manager(f"lltfi-instrument{{manifest={tmp_path / 'missing.json'}}}")


def test_embedding_example_prints_the_numpy_outputs(tmp_path, monkeypatch):
    """examples/embedding/mlp.py: the model built with the MLIR Python API, lowered by its own pipeline
    with the lltfi passes in the same PassManager, prints what numpy computes, hardened or not."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples" / "embedding"))
    import mlp

    report = mlp.run(tmp_path, trials=60)
    expected = [f"{v:.6f}" for v in mlp.numpy_outputs()]
    assert report["unprotected"]["output"] == report["hardened"]["output"] == expected
    assert report["unprotected"]["sites"] == 5  # dense1: fmul, fadd, maximum; dense2: fmul, fadd
    assert report["hardened"]["sites"] > 5 * report["unprotected"]["sites"]
    assert report["hardened"]["summary"]["trials"] == 60


def test_input_that_does_not_verify_is_a_located_diagnostic():
    with ir.Context():
        module = ir.Module.parse(LOOP)
        main_fn = module.body.operations[2]
        done = main_fn.regions[0].blocks[2]
        done.operations[len(done.operations) - 1].erase()  # ^done loses its llvm.return
        pm, _ = pass_manager("lltfi-instrument{opcodes=mul}")
        with pytest.raises(ir.MLIRError) as failure:
            pm.run(module.operation)
    messages = [d.message for d in failure.value.error_diagnostics]
    assert messages[0] == "lltfi-instrument: input does not verify"
    assert any("terminator" in m for m in messages[1:]), messages
