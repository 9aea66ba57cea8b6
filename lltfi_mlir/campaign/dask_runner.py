"""Campaigns on a Dask cluster: batches of trials run by the same fork-server engines on the workers.

The driver plans the trials (trial i is a pure function of the seed and i), sends them to the
workers in batches and gets back the fork-servers' raw results, which it classifies and commits to
SQLite exactly as for a local run: `DaskExecutor` has the executors' `run(trials)` generator. A batch
is a pure function of its trials, so when a worker is lost mid-batch the scheduler runs the whole
batch again elsewhere and nothing of the lost attempt reaches the driver: no trial is lost, none is
counted twice (the driver also drops a trial id it has already yielded).

The build travels as a `BuildRef`: the executable and the files it reads (input sets, a program's
stdin) by path and content hash. A worker that sees every path with the same content (a shared
filesystem) runs them in place; otherwise the driver ships the bytes (scattered once), and each
worker writes them into a directory named after the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import LltfiError, RunError, UsageError
from .executor import LocalExecutor, ProgramRun, RawResult
from .plan import Trial
from .walk_executor import WalkExecutor

BATCH = 256            # trials per task: a walk server per task amortises its start-up and golden walks
BATCHES_PER_THREAD = 2  # tasks queued per worker thread, so that no worker waits for the driver
CONNECT_SECONDS = 30


class BuildMissing(RunError):
    """A worker does not see the build in place (no shared filesystem): the driver ships it."""


@dataclasses.dataclass(frozen=True)
class BuildRef:
    """Everything a worker needs to run trials of one instrumented build, without the bytes."""

    executable: str
    input_sets: tuple[tuple[str, ...], ...]  # the inputs list: the files of each input set
    files: tuple[tuple[str, str], ...]       # (absolute path, sha256) of the executable, input files, stdin
    engine: str                              # walk | simple
    timeout_us: int
    program: ProgramRun | None = None
    max_output: int = 0
    early_end: bool = False                  # the servers end a trial once its state is golden again

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr((self.files, self.input_sets)).encode()).hexdigest()[:16]


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_ref(executable: Path, inputs_list: Path, engine: str, timeout_us: int, program: ProgramRun | None = None,
              max_output: int = 0, early_end: bool = False) -> BuildRef:
    """The executable, every input file the list names, and a program's stdin, with their hashes."""
    input_sets = tuple(tuple(line.split()) for line in Path(inputs_list).read_text().splitlines())
    paths = [str(Path(executable).resolve())]
    for input_set in input_sets:
        paths += [p for p in input_set if p not in paths]
    if program is not None and program.stdin and program.stdin not in paths:
        paths.append(program.stdin)
    files = tuple((p, _sha256(p)) for p in paths)
    return BuildRef(paths[0], input_sets, files, engine, timeout_us, program, max_output, early_end)


def read_bundle(ref: BuildRef) -> dict[str, bytes]:
    """The bytes of every file of the build, by driver path (what is shipped without a shared filesystem)."""
    return {path: Path(path).read_bytes() for path, _ in ref.files}


def sees_build(ref: BuildRef) -> bool:
    """Whether this machine has every file of the build at the same path with the same content."""
    return all(os.path.isfile(path) and _sha256(path) == digest for path, digest in ref.files)


# Per worker process: (build digest, shipped) -> (executable, inputs list, program) ready to run. A
# worker runs many batches of one build; its files are checked or written once.
_PREPARED: dict[tuple[str, bool], tuple[Path, Path, ProgramRun | None]] = {}
_PREPARING = threading.Lock()


def _cache_root() -> Path:
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory) / "lltfi-builds"
    except (ImportError, ValueError):  # not on a worker (run_batch called directly)
        import tempfile

        return Path(tempfile.gettempdir()) / f"lltfi-mlir-dask-{os.getuid()}"


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    staging.write_bytes(data)
    os.chmod(staging, mode)
    os.replace(staging, path)


def prepare_build(ref: BuildRef, bundle: dict[str, bytes] | None) -> tuple[Path, Path, ProgramRun | None]:
    """The build's executable, inputs list and program on this worker: in place when this machine sees
    every file (else BuildMissing when nothing was shipped), or written from the shipped bytes into
    <cache>/<digest>/."""
    key = (ref.digest, bundle is not None)
    with _PREPARING:
        if key in _PREPARED:
            return _PREPARED[key]
        directory = _cache_root() / ref.digest
        directory.mkdir(parents=True, exist_ok=True)
        if bundle is None:
            if not sees_build(ref):
                raise BuildMissing(f"this worker does not see the build at {ref.executable}")
            local = {path: path for path, _ in ref.files}
        else:
            local = {}
            for i, (path, digest) in enumerate(ref.files):
                data = bundle[path]
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RunError(f"shipped file {path} does not match its hash")
                local[path] = str(directory / f"{i}-{Path(path).name}")
                _write_atomically(Path(local[path]), data, 0o755 if path == ref.executable else 0o644)
        inputs_list = directory / "inputs.txt"
        text = "".join(" ".join(local[p] for p in input_set) + "\n" for input_set in ref.input_sets)
        _write_atomically(inputs_list, text.encode())
        program = ref.program
        if program is not None and program.stdin:
            program = dataclasses.replace(program, stdin=local[program.stdin])
        _PREPARED[key] = (Path(local[ref.executable]), inputs_list, program)
        return _PREPARED[key]


def run_batch(ref: BuildRef, trials: list[Trial], bundle: dict[str, bytes] | None) -> list[RawResult]:
    """One task: a batch of trials on one fork-server (or walk server) of this worker thread."""
    executable, inputs_list, program = prepare_build(ref, bundle)
    early = {"early_end": True} if ref.early_end else {}
    if ref.engine == "walk":
        executor = WalkExecutor(executable, inputs_list, 1, ref.timeout_us, n_inputs=len(ref.input_sets), **early)
    else:
        executor = LocalExecutor(executable, inputs_list, 1, ref.timeout_us, program, max_output=ref.max_output,
                                 **early)
    return list(executor.run(trials))


def check_address(address: str) -> str:
    """`local`, or a scheduler address such as tcp://host:8786 (a bare host:port means tcp://)."""
    if address == "local":
        return address
    scheme, sep, rest = address.rpartition("://")
    host, colon, port = rest.rpartition(":")
    if (sep and scheme not in ("tcp", "tls", "ucx", "ws", "wss")) or not colon or not host or not port.isdigit():
        raise UsageError(f"--dask {address!r}: expected 'local' or a scheduler address such as tcp://host:8786")
    return address if sep else f"tcp://{address}"


def _connect(address: str, workers: int):
    """A client of the scheduler at `address`, or of a new LocalCluster of `workers` one-thread workers."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--dask needs the 'distributed' package: pip install 'lltfi-mlir[dask]'") from None
    if address == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=CONNECT_SECONDS), None
    except (OSError, TimeoutError) as exc:
        raise RunError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


class DaskExecutor:
    """Trials of one instrumented build on a Dask cluster, `batch` trials per task, each task on one
    fork-server (`engine` simple) or walk server (`engine` walk) of a worker thread. `ship`: None to
    use the build in place where every worker sees it (shared filesystem), True to always ship it."""

    def __init__(self, address: str, executable: Path, inputs_list: Path, timeout_us: int, engine: str,
                 program: ProgramRun | None = None, max_output: int = 0, workers: int = 1,
                 batch: int | None = None, ship: bool | None = None, early_end: bool = False) -> None:
        self.address = check_address(address)
        self.ref = build_ref(executable, inputs_list, engine, timeout_us, program, max_output, early_end)
        self.workers = workers  # of a LocalCluster
        self.batch = batch or BATCH
        self.ship = ship

    def run(self, trials: Iterable[Trial]) -> Iterator[RawResult]:
        from distributed import as_completed

        client, cluster = _connect(self.address, self.workers)
        pending = iter(trials)
        batches: dict = {}      # future -> its trials (resubmitted with the bytes on BuildMissing)
        seen: set[int] = set()
        try:
            bundle = None
            try:
                in_place = not self.ship and all(client.run(sees_build, self.ref).values())
            except Exception as exc:  # e.g. a worker without lltfi-mlir installed
                raise RunError(f"the Dask workers cannot check the build: {type(exc).__name__}: {exc} "
                               "(workers need lltfi-mlir installed)") from None
            if not in_place:
                bundle = client.scatter([read_bundle(self.ref)], hash=False)[0]
            done = as_completed()
            exhausted = False

            def submit(chunk: list[Trial]) -> bool:
                if not chunk:
                    return False
                future = client.submit(run_batch, self.ref, chunk, bundle, pure=False)
                batches[future] = chunk
                done.add(future)
                return True

            def top_up() -> None:
                """BATCHES_PER_THREAD batches per worker thread now in the cluster (it may grow or shrink)."""
                nonlocal exhausted
                threads = max(sum(client.nthreads().values()), 1)
                while not exhausted and len(batches) < BATCHES_PER_THREAD * threads:
                    exhausted = not submit(_take(pending, self.batch))

            top_up()
            for future in done:
                chunk = batches.pop(future)
                try:
                    results = future.result()
                except BuildMissing:  # a worker without the shared filesystem: ship the bytes from now on
                    if bundle is None:
                        bundle = client.scatter([read_bundle(self.ref)], hash=False)[0]
                    submit(chunk)
                    continue
                except LltfiError:
                    raise
                except Exception as exc:  # e.g. KilledWorker: the batch's workers died too often
                    raise RunError(f"a batch of trials failed on the Dask cluster: {type(exc).__name__}: "
                                   f"{str(exc)[:300]}") from None
                for result in results:
                    if result.trial.id not in seen:
                        seen.add(result.trial.id)
                        yield result
                top_up()
        finally:
            for future in batches:
                future.cancel()
            client.close()
            if cluster is not None:
                cluster.close()


def _take(trials: Iterator[Trial], n: int) -> list[Trial]:
    return list(itertools.islice(trials, n))
