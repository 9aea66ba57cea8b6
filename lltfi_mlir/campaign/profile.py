"""The profile run: golden outputs, dynamic count per site, baseline time, per input set.

Every fault-free run of the profile has a timeout (a hang or a crash is a one-line error, not a
stalled campaign), and profiles are cached beside the instrumented executable, keyed by that
executable and the contents of the inputs, so that a resumed campaign starts its trials at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError, RunError
from ..workdir import cache_dir

PROFILE_CACHE_VERSION = 1


@dataclass(frozen=True)
class InputProfile:
    golden_seconds: float        # best golden run; these runs also count every unit's entries
    check_seconds: float         # the verification run that sends every instance through the hooks
    site_counts: tuple[int, ...]
    golden: bytes                # raw outputs (little-endian, each in its own dtype)

    @property
    def total(self) -> int:
        return int(sum(self.site_counts))


def write_inputs_list(input_sets: list[list[Path]], path: Path) -> Path:
    """The runtime's list of input sets (one line per set, whitespace-separated paths), written
    atomically: campaigns that share a folder never read half a list."""
    text = "".join(" ".join(_listed(p) for p in paths) + "\n" for paths in input_sets)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def campaign_inputs_list(input_sets: list[list[Path]], directory: Path) -> Path:
    """This campaign's own input list in `directory`, named after its contents: another campaign on
    the same build with other inputs writes another file, so replays keep reading their own."""
    key = hashlib.sha256(json.dumps([[str(p.resolve()) for p in s] for s in input_sets]).encode()).hexdigest()[:12]
    return write_inputs_list(input_sets, directory / f"inputs-{key}.txt")


def _listed(path: Path) -> str:
    """The path as the runtime can read it from a whitespace-separated list: a path holding
    whitespace or a control character is listed as a symbolic link (named by the path's hash, in
    the cache folder) to the file."""
    target = str(path.resolve())
    if target.isprintable() and not any(ch.isspace() for ch in target):
        return target
    links = cache_dir() / "input-links"
    link = links / f"{hashlib.sha256(target.encode()).hexdigest()[:24]}.npy"
    if not link.is_symlink() or os.readlink(link) != target:
        links.mkdir(parents=True, exist_ok=True)
        partial = link.with_name(f"{link.name}.{os.getpid()}.tmp")
        partial.unlink(missing_ok=True)
        partial.symlink_to(target)
        os.replace(partial, link)
    if not str(link).isprintable() or any(ch.isspace() for ch in str(link)):
        raise InputError(f"input path {target!r} holds whitespace, and so does the cache folder {links}; "
                         "set LLTFI_CACHE to a folder without spaces")
    return str(link)


def _communicate(argv: list[str], backstop: float | None) -> subprocess.CompletedProcess:
    """Runs the profile in a process group of its own; on a timeout or an interrupt the whole group
    (the profile and any child of it) is killed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=backstop)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise RunError(f"the profile run of {argv[0]} did not end within {backstop:.0f} s; it was killed") from None
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def run_profile(executable: Path, inputs_list: Path, units: list[dict[int, int]],
                repeat: int = 3, program=None, check: bool = True, timeout: float | None = None) -> list[InputProfile]:
    """Profile each input set; three independent counts must agree or the instrumentation is wrong:
    unit entries x static instances per entry, the hooks' per-site counts, and what the fast
    paths consumed from the countdown. `check=False` skips the hooked run (models only): the
    first and third still agree or the run fails. `timeout`: seconds per fault-free run."""
    limit = ["--timeout-us", str(max(1, int(timeout * 1e6)))] if timeout else []
    if program is not None:
        argv = [str(executable), "--lltfi-profile", *limit, *program.driver_args()]
        runs = 3
    else:
        argv = [str(executable), "--profile", "--inputs-list", str(inputs_list), "--repeat", str(repeat), *limit]
        if not check:
            argv.append("--no-check")
        runs = sum(1 for line in inputs_list.read_text().splitlines() if line.strip()) * (repeat + 2)
    # The runtime times each fault-free run; this backstop also covers the (slower) hooked run.
    proc = _communicate(argv, 4 * timeout * runs + 60 if timeout else None)
    message = " ".join(proc.stderr.strip().splitlines()[-1:]).removeprefix("error: ")
    if proc.returncode == 2:
        raise InputError(message)
    if proc.returncode == 3:
        raise RunError(message)
    if proc.returncode < 0:
        name = "?"
        with contextlib.suppress(ValueError):
            name = signal.Signals(-proc.returncode).name
        raise RunError(f"the fault-free profile run of {executable} crashed (signal {-proc.returncode}, {name}): "
                       f"{proc.stderr.strip()[-300:] or 'no message'}")
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


def _digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def profile_cache_path(executable: Path, input_sets: list[list[Path]], program=None) -> Path:
    """Where the profile of this instrumented executable on these inputs is cached. The key: the
    executable (path, size, mtime), the contents of every input file; for a program its arguments,
    working directory, and the contents of its stdin and of every argument that names a file. (A
    program that reads other files: delete `profile-*.json` after changing them.)"""
    stat = executable.stat()
    key: dict = {"version": PROFILE_CACHE_VERSION,
                 "executable": [str(executable.resolve()), stat.st_size, stat.st_mtime_ns],
                 "inputs": [[_digest(p) for p in paths] for paths in input_sets]}
    if program is not None:
        key["program"] = dict(asdict(program), cwd=os.getcwd(), stdin=_digest(program.stdin) if program.stdin else None,
                              files={a: _digest(a) for a in program.args if os.path.isfile(a)})
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]
    return executable.parent / f"profile-{name}.json"


def save_profiles(path: Path, profiles: list[InputProfile], self_check: str) -> None:
    data = {"self_check": self_check,
            "profiles": [dict(asdict(p), golden=p.golden.hex()) for p in profiles]}
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)  # atomic: concurrent campaigns never read half a file


def load_profiles(path: Path) -> tuple[list[InputProfile], str] | None:
    """The cached profiles and self-check status, or None (missing or unreadable: profile again)."""
    try:
        data = json.loads(path.read_text())
        profiles = [InputProfile(float(p["golden_seconds"]), float(p["check_seconds"]),
                                 tuple(int(c) for c in p["site_counts"]), bytes.fromhex(p["golden"]))
                    for p in data["profiles"]]
        return profiles, str(data["self_check"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
