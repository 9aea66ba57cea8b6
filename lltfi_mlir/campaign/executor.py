"""Executors run trials on fork-servers and yield raw results; the caller owns the database.

`LocalExecutor` starts one fork-server per job (the instrumented model loaded once per server);
each trial is a fork inside the server, never an exec or a Python start-up. A cluster executor
only needs the same `run(trials)` generator.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RunError
from .plan import Trial


@dataclass(frozen=True)
class ProgramRun:
    """How a C/C++ program is run in every trial: the same arguments and the same stdin."""

    args: tuple[str, ...] = ()
    stdin: str | None = None
    output_files: tuple[str, ...] = ()  # relative names written by the program, compared like stdout

    def driver_args(self) -> list[str]:
        files = [a for f in self.output_files for a in ("--output-file", f)]
        return (["--stdin", self.stdin] if self.stdin else []) + files + ["--", *self.args]


@dataclass(frozen=True)
class FaultRecord:
    site: int
    index: int
    mask: int
    before: int
    after: int


@dataclass(frozen=True)
class RawResult:
    trial: Trial
    status: str                  # ok | crash | hang | exit
    code: int                    # signal number or exit status
    faults: tuple[FaultRecord, ...]
    output: bytes                # raw little-endian float32 bytes of all outputs, concatenated
    trace: tuple[tuple[int, int], ...] = ()  # (site, value bits) of the instances after the fault


def parse_result(line: str, trials: dict[int, Trial]) -> RawResult:
    parts = line.split()
    trial_id, status, code, n = int(parts[1]), parts[2], int(parts[3]), int(parts[4])
    faults = []
    at = 5
    for _ in range(n):
        site, index, mask, before, after = parts[at:at + 5]
        faults.append(FaultRecord(int(site), int(index), int(mask, 16), int(before, 16), int(after, 16)))
        at += 5
    n_trace = int(parts[at])
    trace = tuple((int(parts[at + 1 + 2 * i]), int(parts[at + 2 + 2 * i], 16)) for i in range(n_trace))
    at += 1 + 2 * n_trace
    n_values = int(parts[at])
    data = bytes.fromhex(parts[at + 1]) if n_values else b""
    return RawResult(trials.pop(trial_id), status, code, tuple(faults), data, trace)


class LocalExecutor:
    """A pool of fork-servers on this machine, `jobs` of them, each with two trials in flight."""

    def __init__(self, executable: Path, inputs_list: Path, jobs: int, timeout_us: int,
                 program: ProgramRun | None = None) -> None:
        self.executable, self.inputs_list, self.jobs, self.timeout_us = executable, inputs_list, jobs, timeout_us
        self.program = program

    def _start(self) -> list[subprocess.Popen]:
        servers = []
        if self.program is not None:
            argv = [str(self.executable), "--lltfi-serve", *self.program.driver_args()]
        else:
            argv = [str(self.executable), "--serve", "--inputs-list", str(self.inputs_list)]
        for _ in range(self.jobs):
            proc = subprocess.Popen(argv,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    bufsize=0)
            ready = b""
            while not ready.endswith(b"\n"):
                chunk = os.read(proc.stdout.fileno(), 1)
                if not chunk:
                    break
                ready += chunk
            ready = ready.decode()
            if not ready.startswith("READY"):
                err = proc.stderr.read().decode().strip()
                proc.kill()
                raise RunError(f"fork-server did not start: {err or ready.strip()}")
            servers.append(proc)
        return servers

    def run(self, trials: Iterable[Trial]) -> Iterator[RawResult]:
        pending = iter(trials)
        in_flight: dict[int, Trial] = {}
        servers = self._start()
        selector = selectors.DefaultSelector()
        buffers: dict[int, bytes] = {}
        try:
            for proc in servers:
                # Raw reads: a buffered readline could hold a second result line that select() never
                # reports, and the pool would wait forever.
                selector.register(proc.stdout.fileno(), selectors.EVENT_READ, proc)
                buffers[proc.pid] = b""
                for _ in range(2):
                    self._send(proc, pending, in_flight)
            while in_flight:
                for key, _ in selector.select():
                    proc = key.data
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        err = proc.stderr.read().decode().strip()
                        raise RunError(f"fork-server exited unexpectedly: {err[-300:]}")
                    buffers[proc.pid] += chunk
                    *lines, buffers[proc.pid] = buffers[proc.pid].split(b"\n")
                    for line in lines:
                        yield parse_result(line.decode(), in_flight)
                        self._send(proc, pending, in_flight)
        finally:
            for proc in servers:  # end of input lets a server clean up after itself
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            for proc in servers:
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            selector.close()

    def _send(self, proc: subprocess.Popen, pending: Iterator[Trial], in_flight: dict[int, Trial]) -> None:
        trial = next(pending, None)
        if trial is None:
            return
        in_flight[trial.id] = trial
        os.write(proc.stdin.fileno(), trial.line(self.timeout_us).encode())


def split_outputs(data: bytes, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    values = np.frombuffer(data, dtype="<f4")
    out, at = [], 0
    for shape in shapes:
        n = int(np.prod(shape)) if shape else 1
        out.append(values[at:at + n].reshape(shape))
        at += n
    return out
