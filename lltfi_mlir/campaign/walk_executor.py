"""The walk engine: trials forked at their injection point (runtime/walk_server.c).

A trial's run is golden up to its first fault, so one golden run per input set can serve a whole
group of trials: it walks through their sorted targets and forks each trial there; a trial costs
only the rest of the inference. Results are the fork-server's result lines, byte for byte the
same for the same trial (tests/test_walk_engine.py), so `WalkExecutor` is a drop-in for
`LocalExecutor` on models: same `run(trials)` generator, results in the order trials finish.

Trials are read ahead in windows, grouped by input set and sorted by target, and sent to the
servers a group at a time (a line "walk" ends a group); each server walks one group at a time
with up to its share of the `jobs` trial children alive.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import math
import os
import selectors
import subprocess
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import RunError
from .executor import RawResult, StderrTail, parse_result, server_environment, stop_servers
from .plan import Trial

# Trial children per walker. One walker per job measured best on 2 cores (LeNet-5, SqueezeNet, Dave2:
# 1.1-1.4x the trials/s of one walker with two children): the walkers fork in parallel, and each
# walks on while its child runs.
CHILDREN_PER_WALKER = 1
MIN_GROUP = 64            # trials per input set and walk that make the walker's golden run cheap
MAX_GROUP = 1 << 16       # trials per group the walk server takes (MAX_GROUP in walk_server.c)
READ_SLICE = 32           # trials planned between two looks at the results
RESULT_PIPE = 1 << 20     # bytes of results a walker may write ahead of the driver (Linux; best effort)


class _WalkServer:
    """One `model --walk` process: its pipes, the bytes waiting to be written, the trials in flight."""

    def __init__(self, argv: list[str], early_end: bool = False) -> None:
        # A session of its own, as the fork-servers: a Ctrl-C reaches the driver, which ends the servers.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0, start_new_session=True, env=server_environment(early_end))
        self.stderr = StderrTail(self.proc.stderr)
        with contextlib.suppress(AttributeError, OSError):  # F_SETPIPE_SZ: Linux
            fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, RESULT_PIPE)
        self.outgoing = bytearray()
        self.incoming = bytearray()
        self.in_flight = 0
        self.since = time.monotonic()
        ready = b""
        while not ready.endswith(b"\n"):
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                break
            ready += chunk
        if not ready.startswith(b"READY"):
            self.proc.kill()
            self.proc.wait()
            raise RunError(f"walk server did not start: {self.stderr.text()[-300:] or ready.decode().strip()}")
        os.set_blocking(self.proc.stdin.fileno(), False)

    def lines(self, chunk: bytes) -> list[bytes]:
        start = len(self.incoming)
        self.incoming += chunk
        if self.incoming.find(b"\n", start) < 0:
            return []
        *lines, rest = self.incoming.split(b"\n")
        self.incoming = bytearray(rest)
        return lines

    def flush(self) -> None:
        """Writes what the pipe takes now (never blocks: the server may be busy printing results)."""
        try:
            written = os.write(self.proc.stdin.fileno(), self.outgoing)
        except BlockingIOError:
            return
        except BrokenPipeError:
            self.proc.wait()
            raise RunError(f"walk server exited unexpectedly (status {self.proc.returncode}): "
                           f"{self.stderr.text()[-300:]}") from None
        del self.outgoing[:written]


class WalkExecutor:
    """Trials of an instrumented model, forked at their first fault by walk servers; `jobs` trial
    children at most. `window`: trials read ahead and grouped (default: MIN_GROUP per input set, or per
    two servers when there are more, and at least 512)."""

    def __init__(self, executable: Path, inputs_list: Path, jobs: int, timeout_us: int, n_inputs: int = 1,
                 window: int | None = None, stall_seconds: float | None = None, early_end: bool = False) -> None:
        self.executable, self.inputs_list, self.jobs, self.timeout_us = executable, inputs_list, jobs, timeout_us
        self.early_end = early_end
        servers = math.ceil(jobs / CHILDREN_PER_WALKER)
        self.window = min(window or max(512, MIN_GROUP * max(n_inputs, 2 * servers)), MAX_GROUP)
        self.stall_seconds = stall_seconds if stall_seconds is not None else 3 * timeout_us / 1e6 + 10

    def _start(self, servers: list[_WalkServer]) -> None:
        count = math.ceil(self.jobs / CHILDREN_PER_WALKER)
        for k in range(count):
            children = self.jobs // count + (k < self.jobs % count)
            servers.append(_WalkServer([str(self.executable), "--walk", "--inputs-list", str(self.inputs_list),
                                        "--jobs", str(children)], self.early_end))

    def _send(self, window: list[Trial], servers: list[_WalkServer]) -> None:
        """Queues a window of trials on the servers with the fewest trials in flight, as groups of one
        input set sorted by target; an input set's trials are cut into consecutive pieces (of MIN_GROUP
        trials at least) when there are fewer input sets than servers, so that every server walks."""
        by_input: dict[int, list[Trial]] = {}
        for trial in window:
            by_input.setdefault(trial.input, []).append(trial)
        pieces = math.ceil(len(servers) / len(by_input))
        for _, group in sorted(by_input.items()):
            group.sort(key=lambda t: (t.target, t.id))
            size = max(MIN_GROUP, math.ceil(len(group) / pieces))
            for at in range(0, len(group), size):
                server = min(servers, key=lambda s: s.in_flight)
                if not server.in_flight:
                    server.since = time.monotonic()
                piece = group[at:at + size]
                server.in_flight += len(piece)
                server.outgoing += "".join(t.line(self.timeout_us) for t in piece).encode() + b"walk\n"

    def run(self, trials: Iterable[Trial]) -> Iterator[RawResult]:
        pending = iter(trials)
        in_flight: dict[int, Trial] = {}
        window: list[Trial] = []  # read ahead, not sent yet
        servers: list[_WalkServer] = []
        selector = selectors.DefaultSelector()
        exhausted = False
        try:
            self._start(servers)
            for server in servers:
                # Raw reads: a buffered readline could hold a result line that select() never reports.
                selector.register(server.proc.stdout.fileno(), selectors.EVENT_READ, server)
            checked = time.monotonic()
            while True:
                # Read ahead a slice at a time, so that results keep flowing meanwhile (planning a trial
                # takes tens of microseconds, and a walker whose results nobody reads stalls), and send
                # each window once complete: every server stays a window ahead.
                reading = not exhausted and len(in_flight) < 2 * self.window
                if reading:
                    taken = list(itertools.islice(pending, READ_SLICE))
                    exhausted = len(taken) < READ_SLICE
                    window += taken
                    in_flight.update((t.id, t) for t in taken)
                    if window and (len(window) >= self.window or exhausted):
                        self._send(window, servers)
                        window = []
                if not in_flight:
                    break
                for server in servers:
                    self._flush(server, selector)
                events = selector.select(timeout=0 if reading and not exhausted else 1.0)
                if time.monotonic() - checked >= 1.0:
                    self._check_stalls(servers)
                    checked = time.monotonic()
                for key, _ in events:
                    server = key.data
                    if key.fd == server.proc.stdin.fileno():
                        continue  # writable: written at the top of the loop
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        server.proc.wait()
                        raise RunError(f"walk server exited unexpectedly (status {server.proc.returncode}): "
                                       f"{server.stderr.text()[-300:]}")
                    for line in server.lines(chunk):
                        server.since = time.monotonic()
                        server.in_flight -= 1
                        yield parse_result(line.decode(), in_flight)
        finally:
            self._stop(servers, abandon=bool(in_flight))
            selector.close()

    @staticmethod
    def _flush(server: _WalkServer, selector: selectors.BaseSelector) -> None:
        """Writes what the server's stdin takes; watches it for room while bytes are left."""
        fd = server.proc.stdin.fileno()
        watched = fd in selector.get_map()
        if server.outgoing:
            server.flush()
        if server.outgoing and not watched:
            selector.register(fd, selectors.EVENT_WRITE, server)
        elif not server.outgoing and watched:
            selector.unregister(fd)

    def _check_stalls(self, servers: list[_WalkServer]) -> None:
        now = time.monotonic()
        for server in servers:
            if server.in_flight and now - server.since > self.stall_seconds:
                raise RunError(f"walk server {server.proc.pid} gave no result for {now - server.since:.0f} s "
                               f"(timeout {self.timeout_us / 1e6:g} s per trial); its last words: "
                               f"{server.stderr.text(0)[-300:] or '(none)'}")

    @staticmethod
    def _stop(servers: list[_WalkServer], abandon: bool) -> None:
        stop_servers(servers, abandon)
