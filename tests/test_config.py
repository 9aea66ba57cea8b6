"""Campaign configuration: LLTFI's input.yaml accepted unchanged, errors that name key and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from lltfi_mlir.dialect_passes.sites import DEFAULT_OPCODES

from lltfi_mlir.campaign.config import load_config, parse_config
from lltfi_mlir.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"


def test_lltfi_default_file_runs_unchanged():
    config = load_config(CONFIGS / "lltfi_default.yaml")
    assert config.runs == 1000 and config.timeout == 1.0
    assert config.selector.opcodes == DEFAULT_OPCODES and config.selector.register == "dst"
    assert config.selector.layers == frozenset()  # -layerName=all -layerNo=0
    assert config.faults[0].type == "bitflip" and config.faults[0].max_multiple == 1
    assert config.selector.trace == {"forward"}  # includeInjectionTrace: the forward slice joins the targets


def test_lltfi_layer_selector_pairs_names_and_numbers():
    config = load_config(CONFIGS / "conv_layer2.yaml")
    assert config.selector.layers == {("Conv", 2), ("Relu", 0)}
    assert config.seed == 7


def test_insttype_funcname_and_regloc():
    config = parse_config("""
compileOption:
  instSelMethod:
    - insttype:
        include: [fadd, fmul, load]
        exclude: [load]
    - funcname:
        include: [main_graph]
  regSelMethod: regloc
  regloc: srcreg2
runOption:
  - run:
      numOfRuns: 10
      fi_type: stuck_at_1
      fi_bit: 3
      fi_num_bits: 2
      fi_max_multiple: 4
      window_len: 50
""")
    sel = config.selector
    assert sel.opcodes == {"fadd", "fmul", "load"} and sel.exclude_opcodes == {"load"}
    assert sel.functions == {"main_graph"} and sel.register == "src2"
    fault = config.faults[0]
    assert (fault.type, fault.bit, fault.num_bits, fault.max_multiple, fault.window_len) == ("stuck_at_1", 3, 2, 4, 50)
    assert config.runs == 10


def test_native_schema():
    config = load_config(CONFIGS / "dave2_thresholds.yaml")
    assert config.selector.operators == {"Conv", "Gemm"}
    assert config.sdc.criterion == "threshold" and config.sdc.thresholds == (15, 30, 60, 90)


@pytest.mark.parametrize("text, message", [
    ("runOption:\n  - run:\n      numOfRuns: 5\n      fi_tpye: bitflip\n",
     ":4: unknown key 'fi_tpye' in runOption.run"),
    ("runOption:\n  - run:\n      fi_type: bitfilp\n", ":3: fi_type: 'bitfilp' is not one of bitflip"),
    ("compileOption:\n  regloc: dst\n", ":2: regloc: 'dst' is not one of dstreg"),
    ("select:\n  opcodes: [fmull]\n", ":2: opcodes: unknown opcode 'fmull'"),
    ("campaign:\n  runs: -3\n", ":2: runs: -3 is not allowed"),
    ("campaign:\n  runs: many\n", ":2: runs: expected int"),
    ("sdc:\n  criterion: python\n", "needs sdc.function"),
    ("compileOption:\n  tracingPropagationOption:\n    maxTrace: 0\n", "maxTrace: 0 is not allowed"),
    ("Select:\n  opcodes: [fadd]\n", ":1: unknown key 'Select' in the configuration"),
    ("compileOption:\n  instSelMethod:\n    - customInstselector:\n        include: [CustomTensorOperator]\n"
     "        options: [-layerNo=1;2, -layerName=conv]\n", "-layerNo must give one number per -layerName"),
    ("a: [1,\n", "not valid YAML"),
])
def test_bad_configs_name_the_line_and_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "input.yaml")
    assert message in str(info.value)
    assert str(info.value).startswith("input.yaml")


def test_missing_config_file_is_an_error_not_defaults(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_program_selection_keys():
    config = parse_config("select:\n  opcodes: [int, load]\n  functions: [partition]\n  sources: [quicksort.c]\n"
                          "  lines: [10, 14]\n  register: src1\n")
    sel = config.selector
    assert sel.sources == {"quicksort.c"} and sel.lines == (10, 14) and sel.functions == {"partition"}
    assert "load" in sel.opcodes and "add" in sel.opcodes and sel.register == "src1"
    with pytest.raises(ConfigError, match=":2: lines: expected"):
        parse_config("select:\n  lines: [14, 10]\n", "c.yaml")


def test_lltfi_tracing_options_enable_both_traces():
    config = parse_config("compileOption:\n  tracingPropagation: True\n  tracingPropagationOption:\n"
                          "    maxTrace: 100\n    generateCDFG: True\n")
    assert config.trace_layers and config.max_trace == 100
    assert not parse_config("compileOption:\n  tracingPropagation: False\n").trace_layers
