"""The profile run: golden outputs, dynamic count per site, baseline time, per input set."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, RunError


@dataclass(frozen=True)
class InputProfile:
    golden_seconds: float        # best golden run; these runs also count every unit's entries
    check_seconds: float         # the verification run that sends every instance through the hooks
    site_counts: tuple[int, ...]
    golden: bytes                # raw float32 outputs

    @property
    def total(self) -> int:
        return int(sum(self.site_counts))


def write_inputs_list(input_sets: list[list[Path]], path: Path) -> Path:
    path.write_text("".join(" ".join(str(p.resolve()) for p in paths) + "\n" for paths in input_sets))
    return path


def run_profile(executable: Path, inputs_list: Path, units: list[dict[int, int]],
                repeat: int = 3, program=None, check: bool = True) -> list[InputProfile]:
    """Profile each input set; three independent counts must agree or the instrumentation is wrong:
    unit entries x static instances per entry, the hooks' per-site counts, and what the fast
    paths consumed from the countdown. `check=False` skips the hooked run (models only): the
    first and third still agree or the run fails."""
    if program is not None:
        argv = [str(executable), "--lltfi-profile", *program.driver_args()]
    else:
        argv = [str(executable), "--profile", "--inputs-list", str(inputs_list), "--repeat", str(repeat)]
        if not check:
            argv.append("--no-check")
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode == 2:
        raise InputError(proc.stderr.strip().removeprefix("error: "))
    if proc.returncode != 0:
        raise RunError(f"profile run failed (status {proc.returncode}): {proc.stderr.strip()[-300:]}")
    profiles = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if not parts or parts[0] != "P":
            continue
        consumed, checked, n_sites = int(parts[4]), parts[5] == "1", int(parts[6])
        hooked = [int(c) for c in parts[7:7 + n_sites]]
        at = 7 + n_sites
        n_units = int(parts[at])
        unit_counts = [int(c) for c in parts[at + 1:at + 1 + n_units]]
        at += 1 + n_units
        n_out = int(parts[at])
        data = bytes.fromhex(parts[at + 1]) if n_out else b""
        if program is not None and parts[-1] != "0":
            raise InputError(f"the program exits with status {parts[-1]} without faults; campaigns need a "
                             "fault-free run that exits 0 (check its arguments and --stdin)")
        counted = [0] * n_sites
        for entries, per_entry in zip(unit_counts, units):
            for site, k in per_entry.items():
                counted[int(site)] += entries * k
        if not checked:  # the hooks did not run
            hooked = counted
        if not consumed == sum(hooked) == sum(counted) or counted != hooked:
            raise RunError(f"instrumentation self-check failed on input set {parts[1]}: fast paths consumed "
                           f"{consumed}, hooks counted {sum(hooked)}, unit counters give {sum(counted)} "
                           "selected instances; please report this with the model")
        profiles.append(InputProfile(float(parts[2]), float(parts[3]), tuple(counted), data))
    return profiles
