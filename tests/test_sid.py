"""Selective instruction duplication: bit-identical without faults, far fewer SDCs with them,
and the paper's observation on NaN-producing exponent flips (`and` repairs them, `min` does not)."""

from __future__ import annotations

import platform
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_model, tiny_cnn
from lltfi_mlir.dialect_passes.sites import SiteSelector
from onnx import TensorProto, helper, numpy_helper

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig, FaultConfig
from lltfi_mlir.cli import main
from lltfi_mlir.compiler import SidOptions
from lltfi_mlir.errors import UsageError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMBINATIONS = [("aid", "and"), ("aid", "min"), ("aid", "none"), ("acd", "and"), ("acd", "min"), ("acd", "none"),
                ("od", "min")]


@pytest.mark.parametrize("opt_level", [0, 2])
@pytest.mark.parametrize("technique, correction", COMBINATIONS)
def test_fault_free_output_is_bit_identical(technique, correction, opt_level, tmp_path):
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    plain = compile_onnx(tiny_cnn(), tmp_path / "plain",
                         CompileOptions(codegen="reference", opt_level=opt_level)).run([x])[0]
    sid = SidOptions(technique, correction)  # every operator
    hardened = compile_onnx(tiny_cnn(), tmp_path / "h", CompileOptions(opt_level=opt_level, sid=sid))
    assert hardened.manifest["sid"]["checks"] > 0
    assert np.array_equal(hardened.run([x])[0], plain)


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("objdump"), reason="x86-64 objdump")
@pytest.mark.parametrize("technique", ["aid", "acd"])
def test_duplicates_survive_llc_O2(technique, tmp_path):
    """llc -O2 merges identical instructions unless something opaque separates them."""
    def multiplies(build_dir: Path) -> int:
        text = subprocess.run(["objdump", "-d", str(build_dir / "model.o")], capture_output=True, text=True).stdout
        return text.count("mulss")

    compile_onnx(tiny_cnn(), tmp_path / "plain", CompileOptions(codegen="reference", opt_level=2))
    sid = SidOptions(technique, "and", operators=frozenset({"Conv"}))
    compile_onnx(tiny_cnn(), tmp_path / "h", CompileOptions(opt_level=2, sid=sid))
    assert multiplies(tmp_path / "h") == multiplies(tmp_path / "plain") + 1  # the Conv's fmul, twice


def test_hardening_cuts_conv_sdc_rate(tmp_path):
    """Faults in the protected Conv arithmetic (originals, duplicates, checks): SDC rate unprotected
    vs AID-and, with non-overlapping 95% intervals."""
    model = EXAMPLES / "cnn_fmnist" / "model.onnx"
    config = CampaignConfig(selector=SiteSelector(operators=frozenset({"Conv"})), seed=5)
    plain = compile_onnx(model, tmp_path / "plain", CompileOptions(codegen="reference"))
    hardened = compile_onnx(model, tmp_path / "aid", CompileOptions(sid=SidOptions("aid", "and",
                                                                                   frozenset({"Conv"}))))
    rates = {}
    for name, build in (("plain", plain), ("aid", hardened)):
        summary = Campaign.from_build(build.directory, config, EXAMPLES / "cnn_fmnist" / "inputs",
                                      db=tmp_path / f"{name}.db").run(2500, progress=False)
        rates[name] = summary["outcomes"]["sdc"]
    assert rates["plain"]["ci_low"] > rates["aid"]["ci_high"], rates
    assert rates["aid"]["rate"] < 0.3 * rates["plain"]["rate"]


def _nan_model() -> onnx.ModelProto:
    """y = x * 1: the multiply's result 1.5 * 2**127 has exponent 0xFE; flipping its lowest exponent
    bit (bit 23) gives exponent 0xFF with a non-zero mantissa: NaN."""
    one = numpy_helper.from_array(np.ones((1, 1), np.float32), "one")
    return make_model([helper.make_node("Mul", ["x", "one"], ["y"], name="scale")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], [one])


@pytest.mark.parametrize("correction, finite", [(None, False), ("and", True), ("min", False)])
def test_and_repairs_nan_exponent_flip_min_lets_it_through(correction, finite, tmp_path):
    x = np.array([[1.5 * 2.0**127]], np.float32)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs" / "0.npy", x)
    sid = SidOptions("aid", correction) if correction else None
    build = compile_onnx(_nan_model(), tmp_path / "b", CompileOptions(sid=sid))
    # Dynamic instance 0 is the original fmul (its duplicate runs next); flip bit 23.
    config = CampaignConfig(selector=SiteSelector(opcodes=frozenset({"fmul"})),
                            faults=(FaultConfig(bit=23, cycle=0),), runs=1)
    Campaign.from_build(build.directory, config, tmp_path / "inputs", db=tmp_path / "c.db").run(1, progress=False)
    before, after, output = sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT value_before, value_after, output FROM trials").fetchone()
    assert int(before, 16) == int(x.view(np.uint32)[0, 0])
    assert np.isnan(np.array([int(after, 16)], np.uint32).view(np.float32)[0])  # the fault made a NaN
    y = np.frombuffer(output, np.float32)[0]
    assert np.isfinite(y) == finite
    if finite:
        assert y == x[0, 0]


def test_harden_cli_reports_counts(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(tiny_cnn(), model)
    assert main(["harden", str(model), "--sid", "acd", "--correct", "min", "--operators", "Conv",
                 "-o", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "2 instruction(s) duplicated, 1 check(s) inserted" in out
    assert main(["harden", str(model), "--sid", "od", "--correct", "and"]) == 2
    assert main(["harden", str(model), "--sid", "aid", "--operators", "Nope", "-o", str(tmp_path / "x")]) == 2


def test_od_honours_layers(tmp_path):
    from lltfi_mlir.sid.operator_duplication import layer_names

    model = tiny_cnn()
    assert layer_names(model, frozenset({("Relu", 1), ("Gemm", 0)})) == {model.graph.node[1].name, "fc"}
    sid = SidOptions("od", "min", layers=frozenset({("Gemm", 1)}))
    build = compile_onnx(model, tmp_path / "od", CompileOptions(sid=sid))
    assert build.manifest["sid"]["duplicated_nodes"] == 1
    assert {n["name"] for n in build.manifest["nodes"]} >= {"fc__od_dup", "fc__od_min"}
    assert "conv1__od_dup" not in {n["name"] for n in build.manifest["nodes"]}
    with pytest.raises(UsageError, match="selects no operator"):
        compile_onnx(model, tmp_path / "none", CompileOptions(sid=SidOptions("od", "min",
                                                                             layers=frozenset({("Conv", 2)}))))


def test_sid_group_selects_the_checking_code(tmp_path):
    """The default selection (and `all`) includes the `sid` group: every instruction SID inserted,
    whatever its opcode; `exclude_opcodes: [sid]` leaves it out; unhardened builds are unchanged."""
    from lltfi_mlir.dialect_passes.instrument_sites import InstrumentSitesPass, node_info_from_manifest
    from lltfi_mlir.dialect_passes.sites import DEFAULT_OPCODES, GROUPS
    from mlir import ir

    from lltfi_mlir.campaign.config import load_config

    assert "sid" in DEFAULT_OPCODES and "sid" in GROUPS["all"]
    build = compile_onnx(tiny_cnn(), tmp_path / "h", CompileOptions(sid=SidOptions("aid", "and",
                                                                                  frozenset({"Gemm"}))))
    info = node_info_from_manifest(build.manifest)

    def opcodes(selector: SiteSelector) -> list[str]:
        with ir.Context():
            module = ir.Module.parse((build.directory / "model.llvm.mlir").read_text())
            return [s.opcode for s in InstrumentSitesPass(selector, info).apply(module).sites]

    default = opcodes(SiteSelector(operators=frozenset({"Gemm"})))
    assert {"inline_asm", "bitcast", "icmp", "and", "select"} <= set(default)
    without = opcodes(SiteSelector(operators=frozenset({"Gemm"}), exclude_opcodes=frozenset({"sid"})))
    assert set(without) == {"fmul", "fadd"}  # the originals only
    assert all(default.count(op) == 2 * without.count(op) for op in without)  # originals and duplicates
    (tmp_path / "c.yaml").write_text("select:\n  opcodes: [fp, sid]\n  operators: [Gemm]\n")
    assert load_config(tmp_path / "c.yaml").selector.opcodes == GROUPS["fp"] | GROUPS["sid"]


def test_od_copies_count_as_their_node():
    """An OD build's duplicate and Min node take the protected node's op type and layer; layers are
    numbered over the original nodes (Conv:2 is still the model's second Conv)."""
    from lltfi_mlir.dialect_passes.instrument_sites import node_info_from_manifest
    from lltfi_mlir.dialect_passes.sites import NodeInfo

    nodes = [("c1", "Conv"), ("c1__od_dup", "Conv"), ("c1__od_min", "Min"), ("c2", "Conv"), ("m", "Min")]
    seen: dict[str, int] = {}
    manifest = {"sid": {"technique": "od"}, "nodes": []}
    for name, op_type in nodes:
        manifest["nodes"].append({"name": name, "op_type": op_type, "type_index": seen.get(op_type, 0)})
        seen[op_type] = seen.get(op_type, 0) + 1
    info = node_info_from_manifest(manifest)
    assert info["c1__od_dup"] == info["c1__od_min"] == info["c1"] == NodeInfo("Conv", 1)
    assert info["c2"] == NodeInfo("Conv", 2) and info["m"] == NodeInfo("Min", 1)
    assert node_info_from_manifest({**manifest, "sid": None})["c2"] == NodeInfo("Conv", 3)  # not an OD build
