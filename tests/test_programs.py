"""C/C++ programs through the same engine: exhaustive ground truth recomputed in Python, crash and
hang classification, and the example programs' campaigns."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from lltfi_mlir.dialect_passes.sites import SiteSelector

from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.campaign.executor import ProgramRun
from lltfi_mlir.campaign.report import print_summary
from lltfi_mlir.campaign.stats import wilson
from lltfi_mlir.cli import main
from lltfi_mlir.compiler import compile_program
from lltfi_mlir.errors import BuildError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "c"

TINY = r"""
#include <stdio.h>
int main(void) {
  int a = 7, b = 5;
  int c = a * b;
  int d = c + 3;
  float x = 1.5f;
  float y = x * (float)d;
  float z = y + 0.25f;
  printf("%d %.3f\n", d, z);
  return 0;
}
"""


def flip32(value, bit: int, dtype):
    raw = np.array([value], dtype).view(np.uint32) ^ np.uint32(1 << bit)
    return raw.view(dtype)[0]


def tiny_output(instance: int, bit: int) -> str:
    """The program's own arithmetic redone in numpy with one flipped bit (instances in program order)."""
    with np.errstate(all="ignore"):
        c = np.int32(7) * np.int32(5)
        c = flip32(c, bit, np.int32) if instance == 0 else c
        d = np.int32(c + np.int32(3))
        d = flip32(d, bit, np.int32) if instance == 1 else d
        y = np.float32(np.float32(1.5) * np.float32(d))
        y = flip32(y, bit, np.float32) if instance == 2 else y
        z = np.float32(y + np.float32(0.25))
        z = flip32(z, bit, np.float32) if instance == 3 else z
    return f"{int(d)} {float(z):.3f}\n"


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    (root / "tiny.c").write_text(TINY)
    return compile_program([root / "tiny.c"], root / "build"), root


SELECT = SiteSelector(opcodes=frozenset({"mul", "add", "fmul", "fadd"}), functions=frozenset({"main"}),
                      require_operator=False)


def test_exhaustive_program_campaign_matches_python(tiny_build):
    build, root = tiny_build
    campaign = Campaign.from_build(build.directory, CampaignConfig(selector=SELECT), db=root / "ex.db", jobs=2)
    summary = campaign.run(exhaustive=True, progress=False)
    golden = tiny_output(-1, 0)
    assert golden == "38 57.250\n"
    rows = sqlite3.connect(root / "ex.db").execute("SELECT target, bit, outcome, output FROM trials").fetchall()
    assert len(rows) == 4 * 32 and summary["activated"] == 128
    for target, bit, outcome, output in rows:
        expected = tiny_output(target, bit)
        assert outcome == ("benign" if expected == golden else "sdc"), (target, bit)
        if expected[0] != "n" and "nan" not in expected and "inf" not in expected:
            assert output.decode() == expected, (target, bit)
    exhaustive_rate = summary["outcomes"]["sdc"]["rate"]
    sampled = Campaign.from_build(build.directory, CampaignConfig(selector=SELECT, seed=2), db=root / "s.db",
                                  jobs=2).run(300, progress=False)
    _, low, high = wilson(sampled["outcomes"]["sdc"]["count"], sampled["activated"], confidence=0.99)
    assert low <= exhaustive_rate <= high


LOOP = """#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10;
  long s = 0;
  for (long i = 0; i != n;
       i = i + 1)
    s += i;
  printf("%ld\\n", s);
  return 0;
}
"""


def test_corrupted_loop_counter_hangs_and_bad_addresses_crash(tmp_path):
    (tmp_path / "loop.c").write_text(LOOP)
    build = compile_program([tmp_path / "loop.c"], tmp_path / "b")
    counter = SiteSelector(opcodes=frozenset({"add"}), lines=(7, 7), require_operator=False)  # i = i + 1
    summary = Campaign.from_build(build.directory, CampaignConfig(selector=counter, timeout=0.3), db=tmp_path / "h.db",
                                  jobs=2, program=ProgramRun(("200",))).run(60, progress=False)
    rows = sqlite3.connect(tmp_path / "h.db").execute("SELECT value_after, outcome FROM trials").fetchall()
    for after, outcome in rows:
        value = int(np.array([int(after, 16)], np.uint64).view(np.int64)[0])
        assert outcome == ("hang" if value > 200 or value < 0 else outcome), (value, outcome)
        if not (value > 200 or value < 0):
            assert outcome in ("sdc", "benign")
    assert summary["outcomes"]["hang"]["count"] > 0
    # Address arithmetic and loads in quicksort: faulty pointers end in signals, classified as crashes.
    qs = compile_program([EXAMPLES / "quicksort.c"], tmp_path / "qs")
    addresses = SiteSelector(opcodes=frozenset({"getelementptr", "load"}), require_operator=False)
    summary = Campaign.from_build(qs.directory, CampaignConfig(selector=addresses, seed=3), db=tmp_path / "c.db",
                                  jobs=2, program=ProgramRun(stdin=str(EXAMPLES / "quicksort_input.txt"))).run(
        200, progress=False)
    assert summary["outcomes"]["crash"]["count"] > 10
    codes = {c for (c,) in sqlite3.connect(tmp_path / "c.db").execute(
        "SELECT code FROM trials WHERE outcome = 'crash' AND status = 'crash'")}
    assert codes and codes <= {signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL}


def test_cplusplus_source(tmp_path):
    (tmp_path / "p.cpp").write_text('#include <iostream>\n#include <vector>\nint main() { std::vector<int> v{3, 4};'
                                    ' std::cout << v[0] * v[1] << std::endl; return 0; }\n')
    assert main(["compile", str(tmp_path / "p.cpp"), "-o", str(tmp_path / "b")]) == 0
    import subprocess

    assert subprocess.run([str(tmp_path / "b" / "model")], capture_output=True, text=True).stdout == "12\n"


def test_missing_clang_names_the_package(tmp_path, monkeypatch):
    (tmp_path / "x.c").write_text("int main(void) { return 0; }\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="apt-get install clang-19"):
        compile_program([tmp_path / "x.c"], tmp_path / "b")


EXAMPLE_RUNS = {"matmul": ProgramRun(), "quicksort": ProgramRun(stdin=str(EXAMPLES / "quicksort_input.txt")),
                "integrate": ProgramRun(("2.0",)), "crc32": ProgramRun()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLE_RUNS))
def test_example_program_campaign(name, tmp_path, capsys):
    from rich.console import Console

    from lltfi_mlir.campaign import load_config

    build = compile_program([EXAMPLES / f"{name}.c"], tmp_path / name)
    config = load_config(EXAMPLES / "input.yaml")
    summary = Campaign.from_build(build.directory, config, db=tmp_path / "c.db", program=EXAMPLE_RUNS[name]).run(
        500, progress=False)
    assert summary["trials"] == 500 and summary["activated"] > 400
    assert summary["by_function"]
    with capsys.disabled():
        print_summary(summary, Console(width=140), details=False)
        print({f: round(g["outcomes"]["sdc"]["rate"], 3) for f, g in summary["by_function"].items()})


WRITER = r"""
#include <stdio.h>
int main(void) {
  FILE *f = fopen("result.txt", "w");
  int s = 0;
  for (int i = 0; i < 10; i++)
    s += i * i;
  fprintf(f, "%d\n", s);
  fclose(f);
  printf("done\n");
  return 0;
}
"""


def test_output_files_are_compared_like_stdout(tmp_path, monkeypatch):
    (tmp_path / "w.c").write_text(WRITER)
    build = compile_program([tmp_path / "w.c"], tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    # Only the accumulation `s += i * i` (line 7): its faults change result.txt, never stdout.
    select = SiteSelector(opcodes=frozenset({"add", "mul"}), lines=(7, 7), require_operator=False)
    summary = Campaign.from_build(build.directory, CampaignConfig(selector=select, seed=1), db=tmp_path / "w.db",
                                  jobs=2, program=ProgramRun(output_files=("result.txt",))).run(80, progress=False)
    assert summary["outcomes"]["sdc"]["count"] > 20
    outputs = sqlite3.connect(tmp_path / "w.db").execute(
        "SELECT outcome, output FROM trials WHERE status = 'ok'").fetchall()
    golden = b"done\n\n--- result.txt ---\n285\n"
    for outcome, output in outputs:
        assert output.startswith(b"done\n\n--- result.txt ---\n")
        assert (outcome == "sdc") == (output != golden)
    assert not (tmp_path / "result.txt").exists()  # runs happen in private directories
