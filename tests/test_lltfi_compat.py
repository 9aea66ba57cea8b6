"""LLTFI/LLFI users switch without editing: their input.yaml styles, their C programs, their Makefiles.

The configs below are written here in the styles of LLTFI's docs/input_masterlist*.yaml and of the
samples and test suites of LLFI and LLTFI (not copied from them); the programs are small ones in
LLFI's sample style (tests/lltfi_programs/).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lltfi_mlir.campaign.config import load_config, parse_config, with_overrides
from lltfi_mlir.campaign.plan import block_of, uniform_trial
from lltfi_mlir.cli import main
from lltfi_mlir.errors import ConfigError

PROGRAMS = Path(__file__).resolve().parent / "lltfi_programs"
ROOT = Path(__file__).resolve().parents[1]

ML_MASTER_STYLE = """\
defaultTimeOut: 30
compileOption:
    instSelMethod:
      - customInstselector:
          include:
            - CustomTensorOperator
          options:
            - layerNo=0;1
            - layerName=relu;conv
    regSelMethod: regloc
    regloc: dstreg
    includeInjectionTrace:
        - forward
    tracingPropagation: False
    tracingPropagationOption:
        maxTrace: 250
        debugTrace: False
        mlTrace: False
        generateCDFG: True
runOption:
    - run:
        numOfRuns: 5
        fi_type: bitflip
        timeOut: 10
    - run:
        numOfRuns: 3
        fi_type: bitflip
        fi_cycle: 10
        fi_reg_index: 0
        fi_bit: 30
        verbose: True
    - run:
        numOfRuns: 4
        fi_type: stuck_at_1
        fi_max_multiple: 4
        window_len_multiple_startindex: 10
        window_len_multiple_endindex: 100
kernelOption:
    - forceRun
"""

ML_SAMPLE_STYLE = """\
compileOption:
    instSelMethod:
      - customInstselector:
          include:
            - CustomTensorOperator
          options:
            -layerNo=1
            -layerName=conv
    regSelMethod: regloc
    regloc: dstreg
    includeInjectionTrace:
        - forward
    tracingPropagation: False # trace dynamic instruction values.
    tracingPropagationOption:
        maxTrace: 250
        debugTrace: False
        mlTrace: False # enable for tracing ML programs
        generateCDFG: True
runOption:
    - run:
        numOfRuns: 6
        fi_type: bitflip
        window_len_multiple_startindex: 1
        window_len_multiple_endindex: 500
"""

LLFI_MASTER_STYLE = """\
defaultTimeOut: 500
compileOption:
    instSelMethod:
      - insttype:
          include:
            - add
            - sub
            - getelementptr
            - alloca
            - icmp
            - phi
            - call
          exclude:
            - ret
            - alloca
            - call
      - funcname:
          include:
            - all
          exclude:
            - helper
    regSelMethod: regloc
    regloc: allsrcreg
    includeInjectionTrace:
        - forward
        - backward
    tracingPropagation: True
    tracingPropagationOption:
        maxTrace: 100
        debugTrace: True
runOption:
    - run:
        numOfRuns: 5
        fi_type: stuck_at_0
        timeOut: 1000
    - run:
        numOfRuns: 5
        fi_type: bitflip
        fi_cycle: 684347
        fi_index: 417
        fi_reg_index: 1
        fi_reg_pos: 1
        fi_bit: 15
        fi_max_multiple: 4
        window_len_multiple_startindex: 10
        window_len_multiple_endindex: 100
    - run:
        numOfRuns: 50
        fi_type: bitflip
        window_len: 10
        fi_reg: 2
"""

LLFI_INDEX_STYLE = """\
defaultTimeout: 15
compileOption:
    instSelMethod:
      - customInstselector:
          include:
            - llfiindex
          options:
            - -injecttoindex=12
            - -injecttoindex=40
    regSelMethod: regloc
    regloc: dstreg
runOption:
    - run:
        numOfRuns: 5
        fi_type: bitflip
    - run:
        numOfRuns: 3
        fi_type: stuck_at_1
        timeOut: 7
"""

LLFI_FIRST_FORMAT = """\
kernelOption:
    - forceRun
timeOut: 20
compileOption:
    instSelMethod: insttype
    include:
        - br
        - sub
        - fmul
    exclude:
        - ret
    regSelMethod: regloc
    regloc: dstreg
    generateDotGraph: True
runOption:
    - run:
        numOfRuns: 3
        fi_type: bitflip
        fi_random_seed: 9
"""

CPP_SAMPLE_STYLE = """\
compileOption:
    instSelMethod:
      - insttype:
          include:
            - all
          exclude:
            - ret
    regSelMethod: regloc
    regloc: dstreg
    includeInjectionTrace:
        - forward
        - backward
    tracingPropagation: True
    tracingPropagationOption:
        maxTrace: 250
        debugTrace: False
        generateCDFG: True
runOption:
    - run:
        numOfRuns: 3
        fi_type: bitflip
    - run:
        numOfRuns: 3
        fi_type: stuck_at_0
"""

STYLES = {"ml_master": ML_MASTER_STYLE, "ml_sample": ML_SAMPLE_STYLE, "llfi_master": LLFI_MASTER_STYLE,
          "llfi_index": LLFI_INDEX_STYLE, "llfi_first_format": LLFI_FIRST_FORMAT, "cpp_sample": CPP_SAMPLE_STYLE}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_check_config_accepts_every_style(style, tmp_path, capsys):
    path = tmp_path / "input.yaml"
    path.write_text(STYLES[style])
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "Run blocks" in out


def test_ml_master_list_keys_do_what_lltfi_does():
    config = parse_config(ML_MASTER_STYLE, "input.yaml")
    assert config.selector.layers == {("Relu", 0), ("Conv", 1)} and config.selector.trace == {"forward"}
    first, second, third = config.faults
    assert (first.runs, first.timeout) == (5, 10.0)            # timeOut: seconds, this block only
    assert (second.cycle, second.bit, second.timeout) == (10, 30, 30.0)  # defaultTimeOut for the others
    assert (third.type, third.max_multiple, third.window_start, third.window_len) == ("stuck_at_1", 4, 10, 100)
    assert config.runs == 12 and config.timeout == 30.0 and config.verbose
    assert any("forceRun" in n for n in config.notes)
    assert any("generateCDFG" in n for n in config.notes)  # without tracing: said, not silently dropped
    assert [block_of(config, i) for i in (0, 4, 5, 7, 8, 11, 20)] == [0, 0, 1, 1, 2, 2, 2]


def test_ml_sample_window_without_max_multiple_is_lltfis_hundred_faults():
    config = parse_config(ML_SAMPLE_STYLE)
    fault = config.faults[0]
    assert (fault.max_multiple, fault.window_start, fault.window_len) == (100, 1, 500)
    assert config.selector.layers == {("Conv", 1)}  # "-layerNo=1 -layerName=conv" as one folded string
    assert any("up to 100 faults" in n for n in config.notes)


def test_llfi_master_list_keys():
    config = parse_config(LLFI_MASTER_STYLE, "input.yaml")
    sel = config.selector
    assert {"add", "sub", "getelementptr", "icmp"} <= sel.opcodes and "call" in sel.exclude_opcodes
    assert sel.exclude_functions == {"helper"} and sel.trace == {"forward", "backward"}
    assert sel.register == "allsrc"  # fi_reg_index with fi_cycle: the dynamic index names the register
    one = parse_config("compileOption:\n  regloc: allsrcreg\nrunOption:\n  - run:\n      numOfRuns: 2\n"
                       "      fi_reg_index: 1\n")
    assert one.selector.register == "src2"  # without fi_cycle: the second source register is the target
    assert config.max_trace == 100 and config.verbose  # debugTrace prints more
    assert config.faults[0].timeout == 1000.0 and config.faults[2].timeout == 500.0
    assert config.faults[2].max_multiple == 2 and config.faults[2].window_len == 10  # LLFI: two faults
    assert sel.instructions == frozenset()  # fi_index is ignored when fi_cycle is given, as in LLFI
    notes = " ".join(config.notes)
    assert "fi_reg_index is implied by fi_cycle" in notes
    assert "fi_index is ignored" in notes and "fi_reg_pos" in notes and "fi_reg " in notes
    assert "phi" in notes  # included opcodes that never have a site here are named


def test_llfiindex_and_old_formats():
    config = parse_config(LLFI_INDEX_STYLE)
    assert config.selector.instructions == {12, 40} and not config.selector.require_operator
    assert [f.timeout for f in config.faults] == [15.0, 7.0]
    old = parse_config(LLFI_FIRST_FORMAT)
    assert old.selector.opcodes == {"sub", "fmul"} and old.timeout == 20.0 and old.faults[0].seed == 9
    index_alone = parse_config("runOption:\n  - run:\n      numOfRuns: 2\n      fi_index: 7\n")
    assert index_alone.selector.instructions == {7}


def test_llfi_test_suite_tracing_style_with_placeholders():
    config = parse_config("defaultTimeOut: 500\ncompileOption:\n  instSelMethod:\n    - insttype:\n"
                          "        include: [all]\n        exclude: [ret]\n  regSelMethod: regloc\n  regloc: dstreg\n"
                          "  tracingPropagation: True\n  tracingPropagationOption:\n    maxTrace: 250\n"
                          "    debugTrace: True/False\n    generateCDFG: True\nrunOption:\n"
                          "  - run:\n      numOfRuns: 5\n      fi_type: bitflip\n"
                          "  - run:\n      numOfRuns: 1\n      fi_type: bitflip\n      fi_cycle: 15574729\n"
                          "      fi_index: 2293\n      fi_reg_index: 0\n      fi_bit: 49\n      fi_random_seed: 10\n"
                          "      verbose: True\n      timeOut: 1000\n")
    assert config.verbose and config.faults[1].seed == 10  # verbose: True in the run block
    assert config.graphs and config.max_trace == 250 and config.faults[1].cycle == 15574729
    assert any("placeholder" in n for n in config.notes)
    with pytest.raises(ConfigError, match=":3: debugTrace: expected True or False, got 'maybe'"):
        parse_config("compileOption:\n  tracingPropagationOption:\n    debugTrace: maybe\n", "t.yaml")


def test_early_lltfi_maingraph_selector_and_auto_injection():
    config = parse_config("compileOption:\n  instSelMethod:\n    - customInstselector:\n        include: [maingraph]\n"
                          "runOption:\n  - run:\n      numOfRuns: 100\n      fi_type: bitflip\n"
                          "      fi_max_multiple: 20\n      window_len_multiple_startindex: 1\n"
                          "      window_len_multiple_endindex: 500\n")
    assert config.selector.require_operator and "load" in config.selector.opcodes
    assert (config.faults[0].max_multiple, config.faults[0].window_len) == (20, 500)
    with pytest.raises(ConfigError, match=":4: fi_type 'AutoInjection': LLFI's software-failure injector"):
        parse_config("runOption:\n  - run:\n      numOfRuns: 2\n      fi_type: AutoInjection\n", "memcpy.yaml")


def test_run_blocks_draw_with_their_own_seeds_and_timeouts():
    config = parse_config("runOption:\n  - run: {numOfRuns: 4, fi_type: bitflip, fi_random_seed: 1, timeOut: 3}\n"
                          "  - run: {numOfRuns: 4, fi_type: stuck_at_0, fi_random_seed: 2}\n")
    counts = [1000]
    trials = [uniform_trial(config, counts, i) for i in range(8)]
    assert [t.fault.type for t in trials] == ["bitflip"] * 4 + ["stuck_at_0"] * 4
    # Block 1 draws from its own seed: the same trials as a one-block campaign seeded with 2.
    alone = parse_config("runOption:\n  - run: {numOfRuns: 8, fi_type: stuck_at_0, fi_random_seed: 2}\n")
    assert [t.target for t in trials[4:]] == [uniform_trial(alone, counts, i).target for i in range(4, 8)]
    assert " 3000000 " in trials[0].line(9_000_000) and " 9000000 " in trials[5].line(9_000_000)
    overridden = with_overrides(config, seed=5, timeout=2.0)  # --seed / --timeout replace every block's
    assert all(f.seed is None and f.timeout is None for f in overridden.faults) and overridden.seed == 5


def test_max_multiple_without_a_window_spreads_over_the_run():
    config = parse_config("runOption:\n  - run: {numOfRuns: 4, fi_max_multiple: 3}\n")
    assert config.faults[0].window_len == 0 and not config.notes
    trial = uniform_trial(config, [1000, 50], 1)
    assert trial.fault.window_len == (999 if trial.input == 0 else 49)  # LLFI: window = cycles - 1


def test_window_code_encodes_the_start():
    fault = parse_config("runOption:\n  - run: {numOfRuns: 1, fi_max_multiple: 3, "
                         "window_len_multiple_startindex: 10, window_len_multiple_endindex: 100}\n").faults[0]
    assert fault.window_code == (9 << 32) | 91
    assert parse_config("runOption:\n  - run: {numOfRuns: 1, window_len: 7}\n").faults[0].window_code == 7


@pytest.mark.parametrize("text, message", [
    ("compileOption:\n  instSelMethod:\n    - customInstselector:\n        include: [BufferOverflow(API)]\n"
     "  regSelMethod: customregselector\n  customRegSelector: SoftwareFault\nrunOption:\n  - run:\n"
     "      numOfRuns: 5\n      fi_type: SoftwareFault\n", ":4: customInstselector 'BufferOverflow(API)' is one of "
     "LLFI's software-failure injectors"),
    ("runOption:\n  - run:\n      numOfRuns: 5\n      fi_type: MemoryLeak(Res)\n",
     ":4: fi_type 'MemoryLeak(Res)': LLFI's software-failure injector"),
    ("compileOption:\n  regSelMethod: customregselector\n  customRegSelector: onlyconstint\n",
     ":3: customRegSelector 'onlyconstint'"),
    ("kernelOption: [forceRun, fastRun]\n", ":1: kernelOption: 'fastRun'"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      window_len_multiple_startindex: 5\n",
     ":4: window_len_multiple_startindex and window_len_multiple_endindex go together"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      window_len_multiple_startindex: 50\n"
     "      window_len_multiple_endindex: 5\n", "is larger than the endindex"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      fi_index: 3\n  - run:\n      numOfRuns: 1\n      fi_index: 4\n",
     "give all run blocks the same value"),
    ("runOption:\n  - run:\n      fi_type: bitflip\n  - run:\n      numOfRuns: 2\n",
     ":3: each of several run blocks needs numOfRuns"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      fi_max_multiple: 101\n", "fi_max_multiple: 101 is not allowed"),
    ("compileOption:\n  regloc: dstreg\nrunOption:\n  - run:\n      numOfRuns: 1\n      fi_reg_index: 2\n",
     ":6: fi_reg_index 2: regloc dst has no register number 2"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      fi_type: bitflip/stuck_at_0/stuck_at_1\n", "is not one of"),
    ("compileOption:\n  instSelMethod: custominstselector\n  customInstSelector: onlymain\n",
     ":3: customInstselector 'onlymain' is an LLFI C++ plugin that does not exist here"),
    ("compileOption:\n  instSelMethod:\n    - customInstselector:\n        include: [llfiindex]\n"
     "        options: [-injecttoindex=x]\n", ":5: llfiindex option '-injecttoindex=x'"),
    ("defaultTimeout: 5\ndefaultTimeOut: 6\n", ":2: defaultTimeout and defaultTimeOut both set"),
])
def test_refusals_name_the_key_and_line(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "input.yaml")
    assert message in str(info.value) and str(info.value).startswith("input.yaml")


# -- hostile configs and values (issue 13): one line, exit status 2, bounded --------------------------

@pytest.mark.parametrize("text, message", [
    ("sdc:\n  criterion: topk\n  k: null\n", ":3: k: a value is required"),
    ("runOption:\n  - run:\n      numOfRuns: ~\n", ":3: numOfRuns: a value is required"),
    ("compileOption:\n  instSelMethod:\n", ":2: instSelMethod: a value is required"),
    ("campaign:\n  timeout: .inf\n", ":2: timeout: inf is not a finite number"),
    ("campaign:\n  timeout: .nan\n", "is not a finite number"),
    ("campaign:\n  timeout: 0.000001\n", ":2: timeout: 1e-06 is not allowed"),
    ("campaign:\n  timeout: 0\n", ":2: timeout: 0.0 is not allowed"),
    ("runOption:\n  - run:\n      numOfRuns: 1\n      timeOut: 0\n", ":4: timeOut: 0.0 is not allowed"),
    ("campaign:\n  seed: -1\n", ":2: seed: -1 is not allowed"),
    ("campaign:\n  runs: 100000000000000000000\n", ":2: runs: 100000000000000000000 is not allowed"),
    ("fault:\n  bit: 64\n", ":2: bit: 64 is not allowed"),
    ("sdc:\n  thresholds: [.nan]\n", "thresholds: expected a list of non-negative numbers"),
    ("sdc:\n  ignore_lines: ['(']\n", "is not a regular expression"),
    ("campaign:\n  runs: " + "9" * 5000 + "\n", ":2: cannot read this value: Exceeds the limit"),
    ("campaign:\n  runs: !!python/object:os.system x\n", ":2: cannot read this value: could not determine a "
     "constructor"),
    ("campaign:\n  runs: 2001-12-14\n", ":2: runs: expected int, got datetime.date(2001, 12, 14)"),
])
def test_null_infinite_and_out_of_range_values(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml")
    assert message in str(info.value)


def test_alias_bomb_fails_fast_with_a_short_message(tmp_path, capsys):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\nselect:\n  lines: *a9\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)
    start = time.perf_counter()
    assert main(["check-config", str(path)]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert "YAML nodes" in err and len(err) < 400 and err.count("\n") == 1


def test_deep_nesting_is_refused_before_the_recursive_composer():
    # 50,000 levels crash libyaml's composer (a segfault) and overflow Python's: refused from the events.
    with pytest.raises(ConfigError, match=":1: the configuration nests deeper than 64 levels"):
        parse_config("select: " + "[" * 50000 + "]" * 50000 + "\n", "deep.yaml")


def test_long_garbage_value_gives_a_bounded_message():
    with pytest.raises(ConfigError) as info:
        parse_config("select:\n  lines: [" + ", ".join(["99999"] * 5000) + "]\n", "c.yaml")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("path, message", [("/dev/zero", "not a regular file"), (".", "not a regular file")])
def test_config_that_is_not_a_file(path, message, capsys):
    assert main(["check-config", path]) == 2
    assert message in capsys.readouterr().err


def test_oversized_config(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert main(["check-config", str(path)]) == 2
    assert "is too large for a configuration" in capsys.readouterr().err


def test_non_utf8_config_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("runOption:\n  - run:\n      numOfRuns: 5 # d\xe9faut\n".encode("latin-1"))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "latin1.yaml:3: not UTF-8 text (byte 0xe9" in err and err.count("\n") == 1


@pytest.mark.parametrize("option, message", [
    (["--timeout", "inf"], "--timeout inf: must be a number of seconds"),
    (["--timeout", "nan"], "--timeout nan: must be a number of seconds"),
    (["--timeout", "0.000001"], "--timeout 1e-06"),
    (["--seed", "-1"], "--seed -1: must be 0.."),
    (["--runs", "100000000000000000000"], "--runs 100000000000000000000: must be 1..1,000,000,000"),
    (["--runs", "1e20"], "invalid int value"),
])
def test_cli_values_are_checked_before_any_work(option, message, tmp_path, capsys):
    assert main(["inject", str(tmp_path / "nothing-here"), *option]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


# -- C and C++ as LLFI users have them ------------------------------------------------------------------

def _compile(sources, out, capfd=None):
    from lltfi_mlir.compiler import compile_program

    return compile_program([str(s) for s in sources], out)


def _summary(db: Path) -> dict:
    from lltfi_mlir.campaign.database import CampaignDatabase
    from lltfi_mlir.campaign.report import summarize

    database = CampaignDatabase(db, create=False)
    try:
        return summarize(database)
    finally:
        database.close()


@pytest.fixture(scope="module")
def min_build(tmp_path_factory):
    """The K&R program, compiled with the default flags (legacy C accepted, warnings shown)."""
    out = tmp_path_factory.mktemp("knr") / "build"
    proc = subprocess.run([sys.executable, "-m", "lltfi_mlir.cli", "compile", str(PROGRAMS / "min.c"), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stderr


def test_knr_c_compiles_by_default_with_warnings(min_build):
    out, stderr = min_build
    assert "implicit int" in stderr and "atoi" in stderr  # clang's warnings are shown, not errors
    run = subprocess.run([str(out / "model"), "7", "3", "9"], capture_output=True, text=True, timeout=60)
    assert run.stdout == "min = 3\n"


def test_sites_lists_indices_that_llfiindex_selects(min_build, tmp_path, capsys):
    out, _ = min_build
    assert main(["sites", str(out)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:4] == ["index", "opcode", "type", "registers"]
    icmp = next(r for r in rows[1:] if r[1] == "icmp" and r[4] == "min")  # a < b in min()
    assert icmp[5].startswith("min.c:")
    config = tmp_path / "index.yaml"
    config.write_text(f"compileOption:\n  instSelMethod:\n    - customInstselector:\n        include: [llfiindex]\n"
                      f"        options: [-injecttoindex={icmp[0]}]\n")
    assert main(["sites", str(out), "-c", str(config), "--selected"]) == 0
    selected = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1], r[-1]) for r in selected] == [(icmp[0], "icmp", "dst")]
    # includeInjectionTrace: the backward slice adds the loads of a and b; the forward slice what uses
    # the compare (LLVM's select or branch: the branch has no register, a select or zext has one).
    config.write_text(config.read_text() + "  includeInjectionTrace: [backward]\n")
    assert main(["sites", str(out), "-c", str(config), "--selected"]) == 0
    back = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert icmp[0] in [r[0] for r in back] and {"load"} <= {r[1] for r in back}
    assert all(int(r[0]) <= int(icmp[0]) for r in back)  # operands are computed before the compare


def test_timing_program_with_output_file_criterion(tmp_path):
    from lltfi_mlir.campaign import Campaign
    from lltfi_mlir.campaign.database import CampaignDatabase
    from lltfi_mlir.campaign.outcomes import program_view

    build = _compile([PROGRAMS / "timing.c"], tmp_path / "build")
    # Faults in the timing arithmetic (fp) change only stdout; faults in the checksum (int) the file.
    config = parse_config("select:\n  opcodes: [int, fp]\ncampaign:\n  runs: 40\n  seed: 4\n  draw: per_layer\n"
                          "sdc:\n  stdout: false\n  files: [result.txt]\n")
    campaign = Campaign.from_build(build.directory, config, db=tmp_path / "t.db", jobs=2)
    summary = campaign.run(progress=False)
    # Timings differ in every run: with stdout compared, no completed trial could be benign.
    assert summary["outcomes"]["benign"]["count"] > 0 and summary["outcomes"]["sdc"]["count"] > 0
    db = CampaignDatabase(tmp_path / "t.db", create=False)
    golden = bytes.fromhex(db.get_meta("replay")["golden"][0])
    rows = db.query("SELECT outcome, status, activated, output FROM trials")
    db.close()
    assert b"checksum" in golden and b"Timing" in golden
    header = b"\n--- result.txt ---\n"
    for outcome, status, activated, output in rows:
        if status == "ok" and activated:  # the truth: the file's bytes against the golden file's
            differs = output[output.find(header):] != golden[golden.find(header):]
            assert outcome == ("sdc" if differs else "benign")
    assert program_view(b"Timing: 1.0\nx\n--- result.txt ---\n7\n", config.sdc) == b"\n--- result.txt ---\n7\n"
    ignore = parse_config("sdc:\n  ignore_lines: ['^Timing', '^IO:']\n").sdc
    assert program_view(b"Timing: 0.1 s\nresult 5\nIO: 0.2\n", ignore) == b"result 5\n"


def test_factorial_run_blocks_are_separate_experiments(tmp_path, capsys):
    build = _compile([PROGRAMS / "factorial.c"], tmp_path / "build")
    config = tmp_path / "input.yaml"
    config.write_text("defaultTimeout: 10\ncompileOption:\n  instSelMethod:\n    - insttype:\n        include: [all]\n"
                      "        exclude: [ret]\n  regSelMethod: regloc\n  regloc: dstreg\nrunOption:\n"
                      "  - run:\n      numOfRuns: 6\n      fi_type: bitflip\n      fi_random_seed: 3\n"
                      "  - run:\n      numOfRuns: 6\n      fi_type: bitflip\n      fi_max_multiple: 3\n"
                      "      window_len_multiple_startindex: 2\n      window_len_multiple_endindex: 4\n"
                      "      verbose: True\n")
    db = tmp_path / "f.db"
    assert main(["inject", str(build.directory), "-c", str(config), "--db", str(db), "--quiet", "-j", "2",
                 "--", "6"]) == 0
    out = capsys.readouterr().out
    assert "Per run block" in out and "run 1: 6 trials" in out  # verbose: LLFI's per-block summary
    assert main(["results", str(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    blocks = summary["by_block"]
    assert [b["trials"] for b in blocks.values()] == [6, 6] and summary["trials"] == 12
    assert blocks["run 1"]["fault"]["window_start"] == 2 and blocks["run 1"]["fault"]["max_multiple"] == 3
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT faults FROM trials WHERE id >= 6 AND faults IS NOT NULL").fetchall()
    gaps = [b[1] - a[1] for (faults,) in rows for a, b in zip(json.loads(faults), json.loads(faults)[1:])]
    assert gaps and all(2 <= g <= 4 for g in gaps)  # LLTFI's window: start..end instances apart


def test_makefile_project_with_the_cc_wrapper(tmp_path, capsys):
    project = tmp_path / "multifile"
    shutil.copytree(PROGRAMS / "multifile", project)
    wrapper = f"{sys.executable} -m lltfi_mlir.cli cc"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(["make", f"CC={wrapper}"], cwd=project, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (project / "main.o.bc").is_file() and (project / "util.o.bc").is_file()
    assert subprocess.run([str(project / "squares"), "4"], capture_output=True, text=True).stdout == \
        "sum of squares 1..4 = 30\n"
    build = tmp_path / "build"
    assert main(["compile", "--from-build", str(project / "squares"), "-o", str(build)]) == 0
    config = tmp_path / "input.yaml"
    config.write_text("compileOption:\n  instSelMethod:\n    - funcname:\n        include: [square, sum_of_squares]\n"
                      "runOption:\n  - run:\n      numOfRuns: 20\n      fi_type: bitflip\n      fi_random_seed: 2\n")
    assert main(["inject", str(build), "-c", str(config), "--db", str(tmp_path / "m.db"), "--quiet", "--", "4"]) == 0
    summary = _summary(tmp_path / "m.db")
    assert summary["trials"] == 20 and set(summary["by_function"]) <= {"square", "sum_of_squares"}
    assert summary["activated"] > 0


@pytest.mark.slow
def test_sum_and_file_copy_programs(tmp_path, capsys):
    build = _compile([PROGRAMS / "sum.c"], tmp_path / "sum")
    assert subprocess.run([str(build.executable), "1", "2", "39"], capture_output=True, text=True).stdout == \
        "sum = 42\n"
    copy = _compile([PROGRAMS / "copy.c"], tmp_path / "copy")
    data = tmp_path / "in.bin"
    data.write_bytes(bytes(range(256)) * 4)
    config = tmp_path / "copy.yaml"
    config.write_text("select:\n  functions: [main]\ncampaign:\n  runs: 30\n  seed: 1\nsdc:\n  files: [out.bin]\n")
    assert main(["inject", str(copy.directory), "-c", str(config), "--db", str(tmp_path / "c.db"), "--quiet",
                 "--", str(data), "out.bin"]) == 0
    summary = _summary(tmp_path / "c.db")
    assert summary["trials"] == 30 and summary["activated"] > 0


@pytest.mark.slow
def test_ml_styles_run_on_the_example_lenet(tmp_path, capsys):
    model = ROOT / "examples" / "lenet_fmnist" / "model.onnx"
    for style in ("ml_master", "ml_sample"):
        config = tmp_path / f"{style}.yaml"
        config.write_text(STYLES[style])
        assert main(["inject", str(model), "-c", str(config), "-o", str(tmp_path / "lenet"), "--db",
                     str(tmp_path / f"{style}.db"), "--quiet"]) == 0
        summary = _summary(tmp_path / f"{style}.db")
        runs = sum(f.runs for f in load_config(config).faults)
        assert summary["trials"] == runs
        if style == "ml_master":
            assert [b["trials"] for b in summary["by_block"].values()] == [5, 3, 4]
    assert main(["inject", str(model), "-c", str(tmp_path / "ml_sample.yaml"), "-o", str(tmp_path / "lenet"),
                 "--dry-run"]) == 0
    assert "Trials per run block" in capsys.readouterr().out


def test_dry_run_prints_the_plan_and_runs_nothing(min_build, tmp_path, capsys):
    out, _ = min_build
    config = tmp_path / "two.yaml"
    config.write_text("compileOption:\n  instSelMethod:\n    - funcname:\n        include: [min]\nrunOption:\n"
                      "  - run: {numOfRuns: 7, fi_type: bitflip}\n  - run: {numOfRuns: 5, fi_type: stuck_at_1}\n")
    db = tmp_path / "never.db"
    assert main(["inject", str(out), "-c", str(config), "--db", str(db), "--dry-run", "--", "7", "3"]) == 0
    text = capsys.readouterr().out
    assert "Selected sites per function" in text and "Trials per run block" in text and "estimated time" in text
    rows = [line for line in text.splitlines() if "│ min " in line or "│ main " in line]
    assert rows and all("│ min " in line for line in rows)  # funcname include: only min()
    assert "│     0 │      7 │" in text and "│     1 │      5 │" in text
    assert not db.exists()


def test_a_bit_beyond_the_registers_is_refused(min_build, tmp_path):
    from lltfi_mlir.campaign import Campaign
    from lltfi_mlir.errors import UsageError

    out, _ = min_build
    config = parse_config("select:\n  opcodes: [int]\n  functions: [min]\nfault:\n  bit: 40\n")
    campaign = Campaign.from_build(out, config, db=tmp_path / "b.db")
    with pytest.raises(UsageError, match=r"bit 40 is beyond the selected registers \(the widest has 1 bit: "):
        campaign.prepare()  # min() has one integer instruction: the compare, an i1


def test_any_yaml_is_a_config_or_one_config_error():
    """Property: whatever mapping of (known and unknown) keys to (odd) values, parse_config returns a
    config or raises ConfigError with a bounded message; never another exception."""
    import yaml
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from lltfi_mlir.campaign.lltfi_yaml import COMPILE_KEYS, RUN_KEYS

    names = st.sampled_from(list(RUN_KEYS + COMPILE_KEYS) + ["runOption", "compileOption", "run", "select", "sdc",
                                                             "campaign", "fault", "include", "options", "k",
                                                             "timeout", "seed", "runs", "criterion", "files",
                                                             "insttype", "customInstselector", "bogus"])
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                        st.sampled_from(["bitflip", "all", "-layerNo=0", "-injecttoindex=3", "CustomTensorOperator",
                                         "llfiindex", "forward", "dstreg", "fp", "True", "fadd"]))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(names, inner, max_size=4)), max_leaves=20)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(st.dictionaries(names, values, max_size=5))
    def check(document):
        try:
            parse_config(yaml.dump(document, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)), "fuzz.yaml")
        except ConfigError as exc:
            assert str(exc).startswith("fuzz.yaml") and len(str(exc)) < 1200

    check()


def test_cc_wrapper_reads_compiler_arguments():
    from lltfi_mlir.frontend.cc_wrapper import _parse

    sources, objects, flags, output = _parse(["-O2", "-g", "-Wall", "-DN=3", "-I", "inc", "-std=gnu89", "-c",
                                              "src/a.c", "-o", "obj/a.o", "-fPIC", "-Wl,-z,now", "-lm"])
    assert (sources, objects, output) == (["src/a.c"], [], "obj/a.o")
    assert flags == ["-Wall", "-DN=3", "-I", "inc", "-std=gnu89"]  # -O/-g/-fPIC/linker flags: ours or irrelevant
    sources, objects, flags, output = _parse(["main.o", "util.o", "libx.a", "-o", "prog", "-L", "lib", "-lm"])
    assert (sources, objects, output) == ([], ["main.o", "util.o", "libx.a"], "prog")


def test_exhaustive_with_several_run_blocks_is_refused(min_build, tmp_path, capsys):
    out, _ = min_build
    config = tmp_path / "two.yaml"
    config.write_text("runOption:\n  - run: {numOfRuns: 2, fi_type: bitflip}\n  - run: {numOfRuns: 2, fi_type: "
                      "stuck_at_0}\n")
    assert main(["inject", str(out), "-c", str(config), "--exhaustive", "--db", str(tmp_path / "x.db"), "--", "1"]) == 2
    assert "enumerates one fault model; this config has 2 run blocks" in capsys.readouterr().err
