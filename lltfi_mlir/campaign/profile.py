"""The profile run: golden outputs, dynamic count per site, baseline time, per input set."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, RunError


@dataclass(frozen=True)
class InputProfile:
    golden_seconds: float        # best of several uninstrumented-path runs
    profile_seconds: float       # one counting run
    site_counts: tuple[int, ...]
    golden: bytes                # raw float32 outputs

    @property
    def total(self) -> int:
        return int(sum(self.site_counts))


def write_inputs_list(input_sets: list[list[Path]], path: Path) -> Path:
    path.write_text("".join(" ".join(str(p.resolve()) for p in paths) + "\n" for paths in input_sets))
    return path


def run_profile(executable: Path, inputs_list: Path, repeat: int = 3) -> list[InputProfile]:
    proc = subprocess.run([str(executable), "--profile", "--inputs-list", str(inputs_list), "--repeat", str(repeat)],
                          capture_output=True, text=True)
    if proc.returncode == 2:
        raise InputError(proc.stderr.strip().removeprefix("error: "))
    if proc.returncode != 0:
        raise RunError(f"profile run failed (status {proc.returncode}): {proc.stderr.strip()[-300:]}")
    profiles = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if not parts or parts[0] != "P":
            continue
        consumed, n_sites = int(parts[4]), int(parts[5])
        counts = tuple(int(c) for c in parts[6:6 + n_sites])
        n_out = int(parts[6 + n_sites])
        data = bytes.fromhex(parts[7 + n_sites]) if n_out else b""
        if consumed != sum(counts):
            raise RunError(f"instrumentation self-check failed: the fast paths counted {consumed} selected "
                           f"instances, the hooks {sum(counts)} (input set {parts[1]}); please report this")
        profiles.append(InputProfile(float(parts[2]), float(parts[3]), counts, data))
    return profiles


def golden_arrays(profile: InputProfile, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    from .executor import split_outputs

    return split_outputs(profile.golden, shapes)
