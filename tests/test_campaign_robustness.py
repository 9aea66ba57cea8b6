"""Nothing a program does costs more than its own trial: stderr is drained, every fault-free and
faulty run has a watchdog, runaway output is capped, an interrupt keeps every finished trial, and a
resume reuses the cached profile."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lltfi_mlir.dialect_passes.sites import SiteSelector

from lltfi_mlir.campaign import Campaign, CampaignConfig, load_config
from lltfi_mlir.campaign.config import FaultConfig
from lltfi_mlir.campaign.executor import LocalExecutor, ProgramRun
from lltfi_mlir.campaign.plan import uniform_trial
from lltfi_mlir.cli import main
from lltfi_mlir.compiler import compile_program
from lltfi_mlir.errors import InputError, RunError


def _compile(tmp_path: Path, name: str, source: str):
    (tmp_path / f"{name}.c").write_text(source)
    return compile_program([tmp_path / f"{name}.c"], tmp_path / name)


def _lines(first: int, last: int, *opcodes: str) -> SiteSelector:
    return SiteSelector(opcodes=frozenset(opcodes), lines=(first, last), require_operator=False)


NOISY = r"""
#include <stdio.h>
int main(void) {
  for (int k = 0; k < 64; k++)
    fputs("a diagnostic line of sixty-four bytes that nobody will ever read\n", stderr);
  int s = 0;
  for (int i = 0; i < 10; i++)
    s += i * 3;
  printf("%d\n", s);
  return 0;
}
"""


def test_program_writing_to_stderr_in_every_run_gives_no_false_hangs(tmp_path):
    """4 KB of stderr per run: an undrained 64 KB pipe blocked the 17th run of each server (a false hang)."""
    build = _compile(tmp_path, "noisy", NOISY)
    config = CampaignConfig(selector=_lines(8, 8, "add", "mul"), seed=1, timeout=1.0)
    summary = Campaign.from_build(build.directory, config, db=tmp_path / "n.db", jobs=2).run(60, progress=False)
    statuses = sqlite3.connect(tmp_path / "n.db").execute("SELECT DISTINCT status FROM trials").fetchall()
    assert summary["trials"] == 60
    assert summary["outcomes"]["hang"]["count"] == 0 and statuses == [("ok",)]


HANG = r"""
#include <stdio.h>
int main(void) {
  volatile long s = 0;
  for (;;)
    s = s + 1;
  printf("%ld\n", (long)s);
  return 0;
}
"""

CRASH = r"""
#include <stdio.h>
int main(int argc, char **argv) {
  volatile int *p = (int *)0;
  int s = argc * 3;
  *p = s;
  printf("%d\n", s);
  return 0;
}
"""


def test_golden_run_that_hangs_is_a_one_line_error_within_the_timeout(tmp_path, capsys):
    build = _compile(tmp_path, "hang", HANG)
    (tmp_path / "c.yaml").write_text("select:\n  opcodes: [add]\n")
    started = time.monotonic()
    status = main(["inject", str(build.directory), "-c", str(tmp_path / "c.yaml"), "--timeout", "0.5",
                   "--db", str(tmp_path / "h.db"), "--quiet"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert status == 2 and elapsed < 5, (status, elapsed)
    assert len(err.splitlines()) == 1
    assert "does not finish within 0.5 s without faults" in err


def test_golden_run_that_crashes_is_a_clear_error(tmp_path):
    build = _compile(tmp_path, "crash", CRASH)
    config = CampaignConfig(selector=_lines(1, 99, "mul"), timeout=0.5)
    with pytest.raises(InputError, match=r"crashes without faults \(signal 11"):
        Campaign.from_build(build.directory, config, db=tmp_path / "c.db", jobs=1).run(4, progress=False)


RUNAWAY = r"""
#include <stdio.h>
int main(void) {
  long n = 4;
  long m = n * 1;
  for (long i = 0; i < m; i++)
    printf("line %ld of a long listing\n", i);
  return 0;
}
"""


def test_runaway_stdout_is_capped_and_classified_sdc_quickly(tmp_path):
    """Bit 24 of the line count: 16.8 million lines (over 400 MB). Without the cap a trial took minutes."""
    build = _compile(tmp_path, "runaway", RUNAWAY)
    config = CampaignConfig(selector=_lines(5, 5, "mul"), faults=(FaultConfig(bit=24),), timeout=30.0)
    campaign = Campaign.from_build(build.directory, config, db=tmp_path / "r.db", jobs=2)
    started = time.monotonic()
    summary = campaign.run(4, progress=False)
    assert time.monotonic() - started < 10
    assert summary["outcomes"]["sdc"]["count"] == 4
    rows = sqlite3.connect(tmp_path / "r.db").execute("SELECT status, outcome, output FROM trials").fetchall()
    assert rows == [("output_limit", "sdc", None)] * 4
    assert campaign.max_output() == 4 << 20  # the floor: the golden output is 100 bytes


DEAF = r"""
#include <signal.h>
#include <stdio.h>
int main(void) {
  signal(SIGALRM, SIG_IGN);
  long n = 1000;
  long m = n * 1;
  volatile long s = 0;
  for (long i = 0; i < m; i++)
    s = s + 1;
  printf("%ld\n", (long)s);
  return 0;
}
"""


def test_child_that_ignores_its_timer_is_killed_by_the_server_watchdog(tmp_path):
    """Bit 40 of the loop bound and SIGALRM ignored: the server kills the child at 2 x 0.3 + 1 s."""
    build = _compile(tmp_path, "deaf", DEAF)
    config = CampaignConfig(selector=_lines(7, 7, "mul"), faults=(FaultConfig(bit=40),), timeout=0.3)
    started = time.monotonic()
    Campaign.from_build(build.directory, config, db=tmp_path / "d.db", jobs=2).run(2, progress=False)
    assert time.monotonic() - started < 8
    rows = sqlite3.connect(tmp_path / "d.db").execute("SELECT status, code, outcome FROM trials").fetchall()
    assert rows == [("hang", signal.SIGKILL, "hang")] * 2


def test_server_that_stops_answering_is_an_error(tmp_path):
    """The driver's own watchdog, below the server's (which would end the child at 1.6 s)."""
    build = _compile(tmp_path, "deaf", DEAF)
    config = CampaignConfig(selector=_lines(7, 7, "mul"), faults=(FaultConfig(bit=40),), timeout=0.3)
    campaign = Campaign.from_build(build.directory, config, db=tmp_path / "d.db", jobs=1)
    campaign.prepare().close()
    executor = LocalExecutor(campaign.instrumented.executable, Path("unused"), 1, 300_000, campaign.program,
                             stall_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(RunError, match="gave no result"):
        list(executor.run([uniform_trial(config, [1], 0)]))
    assert time.monotonic() - started < 3


SLOW = r"""
#include <stdio.h>
int main(void) {
  volatile long s = 0;
  for (long i = 0; i < 30000000; i++) s = s + 1;
  int a = (int)(s / 1000);
  int b = a * 3;
  int c = b + 7;
  printf("%d\n", c);
  return 0;
}
"""
SLOW_CONFIG = "select:\n  opcodes: [mul, add]\n  lines: [6, 7]\ncampaign:\n  seed: 5\n  timeout: 10\n"


def _rows(db: Path) -> list[tuple]:
    return sqlite3.connect(db).execute("SELECT * FROM trials ORDER BY id").fetchall()


INTERRUPTED_RUNS = 100


@pytest.fixture(scope="module")
def slow_campaign(tmp_path_factory):
    """A program of about 40 ms per run, and an uninterrupted campaign on it."""
    root = tmp_path_factory.mktemp("slow")
    build = _compile(root, "slow", SLOW)
    (root / "c.yaml").write_text(SLOW_CONFIG)
    Campaign.from_build(build.directory, load_config(root / "c.yaml"), db=root / "ref.db", jobs=2).run(
        INTERRUPTED_RUNS, progress=False)
    return build, root / "c.yaml", root / "ref.db"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_every_reported_trial_and_resume_runs_the_rest(slow_campaign, tmp_path, signum):
    """Interrupt `lltfi-mlir inject` mid-campaign: every trial the progress bar counted is in the
    database; the resume runs exactly the others; the rows equal an uninterrupted run's."""
    build, config, reference = slow_campaign
    total = INTERRUPTED_RUNS
    db = tmp_path / "int.db"
    proc = subprocess.Popen([sys.executable, "-m", "lltfi_mlir.cli", "inject", str(build.directory), "-c",
                             str(config), "--runs", str(total), "--db", str(db), "-j", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _trials_written(db):  # the first write: after 1 s of trials
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    reported = int(re.findall(rf"(\d+)/{total}", err)[-1])
    kept = len(_rows(db))
    assert 0 < reported < total, err
    assert kept in (reported, reported + 1)  # +1: a signal between storing a trial and drawing the bar
    resumed = Campaign.from_build(build.directory, load_config(config), db=db, jobs=2)
    resumed.run(total, progress=False)
    assert resumed.profile_cached and resumed.last_trials == total - kept
    assert _rows(db) == _rows(reference)
    assert _no_process_runs(build.directory)


def _trials_written(db: Path) -> bool:
    try:
        return db.exists() and sqlite3.connect(db).execute("SELECT count(*) FROM trials").fetchone()[0] > 0
    except sqlite3.OperationalError:  # not created yet
        return False


def _no_process_runs(directory: Path, wait: float = 2.0) -> bool:
    """No fork-server or trial child of this build is left (children die with their server)."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if str(directory) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    left.append(pid)
            except OSError:
                pass
        if not left or time.monotonic() > deadline:
            return not left
        time.sleep(0.05)


SUM = r"""
#include <stdio.h>
int main(void) {
  long x, s = 0;
  while (scanf("%ld", &x) == 1)
    s = s + x * 2;
  printf("%ld\n", s);
  return 0;
}
"""


def test_resume_reuses_the_cached_profile_and_new_inputs_profile_again(tmp_path, monkeypatch):
    build = _compile(tmp_path, "sum", SUM)
    (tmp_path / "in.txt").write_text("1 2 3\n")
    program = ProgramRun(stdin=str(tmp_path / "in.txt"))
    config = CampaignConfig(selector=_lines(6, 6, "add", "mul"), seed=3)
    first = Campaign.from_build(build.directory, config, db=tmp_path / "a.db", jobs=2, program=program)
    first.run(20, progress=False)
    assert not first.profile_cached and first.profile_cache.exists()
    assert first.profile_cache.parent == first.instrumented.directory

    import lltfi_mlir.campaign.campaign as campaign_module

    def no_profile(*args, **kwargs):
        raise AssertionError("the profile ran again")

    with monkeypatch.context() as patch:
        patch.setattr(campaign_module, "run_profile", no_profile)
        resumed = Campaign.from_build(build.directory, config, db=tmp_path / "a.db", jobs=2, program=program)
        summary = resumed.run(30, progress=False)
    assert resumed.profile_cached and resumed.last_trials == 10 and summary["trials"] == 30
    assert resumed.profiles == first.profiles and resumed.timeout_seconds() == first.timeout_seconds()
    # Other input contents: another profile (and another golden output).
    (tmp_path / "in.txt").write_text("1 2 3 4\n")
    changed = Campaign.from_build(build.directory, config, db=tmp_path / "b.db", jobs=2, program=program)
    changed.run(5, progress=False)
    assert not changed.profile_cached and changed.profile_cache != first.profile_cache
    assert changed.profiles[0].golden == b"20\n" and first.profiles[0].golden == b"12\n"
