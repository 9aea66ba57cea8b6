"""Executors run trials on fork-servers and yield raw results; the caller owns the database.

`LocalExecutor` starts one fork-server per job (the instrumented model loaded once per server);
each trial is a fork inside the server, never an exec or a Python start-up. A cluster executor
only needs the same `run(trials)` generator.

Nothing a trial does can stall the pool: each server's stderr is drained by a thread (keeping the
last few KB for error messages), a child that outlives its timer is killed by its server, a
server that stops answering is an error after `stall_seconds`, and servers and children die with
their parent (runtime/trial_protocol.h).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import threading
import time
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
    status: str                  # ok | crash | hang | exit | output_limit (programs: output over the cap)
    code: int                    # signal number or exit status
    faults: tuple[FaultRecord, ...]
    output: bytes                # raw little-endian bytes of all outputs (their own dtypes), concatenated
    trace: tuple[tuple[int, int], ...] = ()  # (site, value bits) of the instances after the fault
    masked_at: int | None = None  # ONNX node index after which the run ended early (state golden again)


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
    masked_at = int(parts[at])
    n_values = int(parts[at + 1])
    data = bytes.fromhex(parts[at + 2]) if n_values else b""
    return RawResult(trials.pop(trial_id), status, code, tuple(faults), data, trace,
                     None if masked_at < 0 else masked_at)


class StderrTail(threading.Thread):
    """Reads a child's stderr until it closes, keeping the last `keep` bytes: a pipe nobody reads
    fills after 64 KB and blocks the writer (a trial that writes to stderr would end as a false hang)."""

    def __init__(self, stream, keep: int = 4096) -> None:
        super().__init__(daemon=True)
        self.stream, self.keep, self.tail = stream, keep, bytearray()
        self.start()

    def run(self) -> None:
        try:  # the thread owns the stream: it closes it at end of file, never under a pending read
            while chunk := os.read(self.stream.fileno(), 1 << 16):
                self.tail += chunk
                if len(self.tail) > 2 * self.keep:
                    del self.tail[:-self.keep]
        except OSError:
            pass
        finally:
            self.stream.close()

    def text(self, wait: float = 1.0) -> str:
        """The last bytes written, once the writer has closed its end (or after `wait` seconds)."""
        self.join(wait)
        return bytes(self.tail[-self.keep:]).decode(errors="replace").strip()


# glibc's malloc backs its heap and large chunks with transparent huge pages (madvise): a trial
# child's fork copies and its exit tears down one entry per 2 MB of the parent's buffers instead of
# 512, and its new buffers fault in once per 2 MB. MobileNetV2: the kernel's share of a trial fell
# from two thirds to about a third (fork, exit, page faults), trials/s +25%. Both engines get it, so
# their heaps stay alike; a user's own glibc.malloc.hugetlb setting wins.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def server_environment(early_end: bool) -> dict[str, str]:
    """The servers' environment: LLTFI_EARLY_END=1 lets them end masked trials early
    (runtime/boundaries.h); only for selections where that is exact (see campaign.early_end_policy)."""
    env = {k: v for k, v in os.environ.items() if k != "LLTFI_EARLY_END"}
    if early_end:
        env["LLTFI_EARLY_END"] = "1"
    tunables = env.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb" not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return env


class _Server:
    """One fork-server: its process, stderr tail, partial result line and trials in flight."""

    def __init__(self, argv: list[str], early_end: bool = False) -> None:
        # A session of its own: a Ctrl-C at the terminal reaches the driver only, which then saves what
        # is done and ends its servers (rather than servers dying under it while results are pending).
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, start_new_session=True, env=server_environment(early_end))
        self.stderr = StderrTail(self.proc.stderr)
        self.buffer = bytearray()
        self.scanned = 0           # bytes of `buffer` known to hold no newline
        self.in_flight: list[int] = []
        self.since = time.monotonic()  # last result (or start)

    def lines(self, chunk: bytes) -> list[bytes]:
        """Appends a chunk; returns the complete lines (linear in the line length, however long)."""
        self.buffer += chunk
        lines = []
        start = 0
        while (end := self.buffer.find(b"\n", max(start, self.scanned))) >= 0:
            lines.append(bytes(self.buffer[start:end]))
            start = end + 1
        del self.buffer[:start]
        self.scanned = len(self.buffer)
        return lines


def stop_servers(servers: list, abandon: bool) -> None:
    """End of input lets a server clean up after itself; with trials still in flight (an error or an
    interrupt: nobody will read their results) the servers are killed at once. Servers of either
    engine: each has `proc` (a Popen) and `stderr` (a StderrTail)."""
    for server in servers:
        if abandon:
            with contextlib.suppress(OSError):
                server.proc.kill()
        with contextlib.suppress(OSError):
            server.proc.stdin.close()
    for server in servers:
        try:
            server.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
        server.proc.stdout.close()
        server.stderr.join(1.0)


class LocalExecutor:
    """A pool of fork-servers on this machine, `jobs` of them, each with two trials in flight.

    `max_output` (programs): bytes of output a trial may produce before it ends as `output_limit`
    (0: no limit). A server that gives no result for `stall_seconds` (default: three trial timeouts
    plus 10 s; its own watchdog ends a child at two) is an error."""

    def __init__(self, executable: Path, inputs_list: Path, jobs: int, timeout_us: int,
                 program: ProgramRun | None = None, max_output: int = 0, stall_seconds: float | None = None,
                 early_end: bool = False) -> None:
        self.executable, self.inputs_list, self.jobs, self.timeout_us = executable, inputs_list, jobs, timeout_us
        self.early_end = early_end
        self.program = program
        self.max_output = max_output
        self.stall_seconds = stall_seconds if stall_seconds is not None else 3 * timeout_us / 1e6 + 10

    def _argv(self) -> list[str]:
        if self.program is not None:
            limit = ["--max-output", str(self.max_output)] if self.max_output else []
            return [str(self.executable), "--lltfi-serve", *limit, *self.program.driver_args()]
        return [str(self.executable), "--serve", "--inputs-list", str(self.inputs_list)]

    def _start(self, servers: list[_Server]) -> None:
        argv = self._argv()
        for _ in range(self.jobs):
            server = _Server(argv, self.early_end)
            servers.append(server)
            ready = b""
            while not ready.endswith(b"\n"):
                chunk = os.read(server.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                ready += chunk
            if not ready.startswith(b"READY"):
                server.proc.kill()
                server.proc.wait()
                err = server.stderr.text()
                raise RunError(f"fork-server did not start: {err[-300:] or ready.decode(errors='replace').strip()}")
            server.since = time.monotonic()

    def run(self, trials: Iterable[Trial]) -> Iterator[RawResult]:
        pending = iter(trials)
        in_flight: dict[int, Trial] = {}
        servers: list[_Server] = []
        selector = selectors.DefaultSelector()
        try:
            self._start(servers)
            for server in servers:
                # Raw reads: a buffered readline could hold a second result line that select() never
                # reports, and the pool would wait forever.
                selector.register(server.proc.stdout.fileno(), selectors.EVENT_READ, server)
                for _ in range(2):
                    self._send(server, pending, in_flight)
            checked = time.monotonic()
            while in_flight:
                events = selector.select(timeout=1.0)
                if time.monotonic() - checked >= 1.0:
                    self._check_stalls(servers)
                    checked = time.monotonic()
                for key, _ in events:
                    server = key.data
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        server.proc.wait()
                        raise RunError(f"fork-server exited unexpectedly (status {server.proc.returncode}): "
                                       f"{server.stderr.text()[-300:]}")
                    for line in server.lines(chunk):
                        server.since = time.monotonic()
                        result = parse_result(line.decode(), in_flight)
                        server.in_flight.remove(result.trial.id)
                        yield result
                        self._send(server, pending, in_flight)
        finally:
            self._stop(servers, abandon=bool(in_flight))
            selector.close()

    def _check_stalls(self, servers: list[_Server]) -> None:
        now = time.monotonic()
        for server in servers:
            if server.in_flight and now - server.since > self.stall_seconds:
                raise RunError(f"fork-server {server.proc.pid} gave no result for {now - server.since:.0f} s "
                               f"(trial {server.in_flight[0]}, timeout {self.timeout_us / 1e6:g} s per trial); "
                               f"its last words: {server.stderr.text(0)[-300:] or '(none)'}")

    @staticmethod
    def _stop(servers: list[_Server], abandon: bool) -> None:
        stop_servers(servers, abandon)

    def _send(self, server: _Server, pending: Iterator[Trial], in_flight: dict[int, Trial]) -> None:
        trial = next(pending, None)
        if trial is None:
            return
        in_flight[trial.id] = trial
        if not server.in_flight:
            server.since = time.monotonic()
        server.in_flight.append(trial.id)
        os.write(server.proc.stdin.fileno(), trial.line(self.timeout_us).encode())


def split_outputs(data: bytes, shapes: list[tuple[int, ...]], dtypes: list[str] | None = None) -> list[np.ndarray]:
    """The servers' output bytes as arrays: each output count x itemsize bytes of its own (little-endian)
    element type, concatenated (float32 when `dtypes` is None)."""
    out, at = [], 0
    for i, shape in enumerate(shapes):
        dtype = np.dtype(dtypes[i] if dtypes else "float32").newbyteorder("<")
        n = int(np.prod(shape, dtype=np.int64))
        out.append(np.frombuffer(data, dtype=dtype, count=n, offset=at).reshape(shape))
        at += n * dtype.itemsize
    return out
