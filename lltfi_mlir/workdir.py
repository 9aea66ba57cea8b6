"""Build folders that several processes share: a lock, atomic publication, content keys.

Three `inject model.onnx` started at once on one work folder must neither compile over each other
nor run an executable another process is still writing ("Text file busy"); a compile that fails
half-way (disk full, file-size limit, a refused model) must leave no partial build behind; and a
cached build is reused only while the bytes that made it are the same, weights included.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UsageError


def cache_dir() -> Path:
    """Per-user cache (compiled runtime, locks, input links); LLTFI_CACHE overrides it."""
    return Path(os.environ.get("LLTFI_CACHE", Path.home() / ".cache" / "lltfi-mlir"))


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive `flock` for `path` (a work or build folder, which need not exist yet):
    processes that build there wait for each other; the kernel drops the lock of a process that
    dies. The lock file lives in the cache folder, named by the resolved path, so that no file is
    left beside the user's folders."""
    locks = cache_dir() / "locks"
    name = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    try:
        locks.mkdir(parents=True, exist_ok=True)
        handle = open(locks / f"{name}.lock", "a")  # noqa: SIM115 (held for the block)
    except OSError as exc:
        raise UsageError(f"cannot create a lock in {locks}: {exc.strerror} (set LLTFI_CACHE)") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def staged(target: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside `target` to build into. On success its entries replace
    `target`'s (each with a rename; `manifest.json` is removed first and published last, so a
    reader sees the old build, no build, or the new one); on any failure it is deleted and
    `target` is left as it was (a process killed meanwhile leaves its folder to the next one's
    `stage_folder`). Other files in `target` (the user's, cached sub-builds) stay."""
    target = Path(target)
    try:
        stage = stage_folder(target)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {target}: {exc.strerror}") from None
    try:
        yield stage
        publish(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, target: Path) -> None:
    """Move every entry of `stage` into `target`, the manifest last."""
    target.mkdir(parents=True, exist_ok=True)
    manifest = target / "manifest.json"
    manifest.unlink(missing_ok=True)
    entries = sorted(stage.iterdir(), key=lambda p: p.name == "manifest.json")
    for entry in entries:
        destination = target / entry.name
        if entry.is_dir() and destination.is_dir() and not destination.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old-", dir=target))
            os.rename(destination, old / entry.name)
            os.rename(entry, destination)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, destination)


def file_digest(path: str | Path, digest: hashlib._Hash | None = None) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def source_key(model: Path) -> str:
    """What a cached compile of `model` depends on: the ONNX file's bytes and, for a model whose
    weights live in external data files (their names sit in the model as `location`), the size and
    modification time of every other file beside it."""
    digest = hashlib.sha256()
    external, tail = False, b""
    with open(model, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
            external = external or b"location" in tail + block
            tail = block[-8:]
    if external:
        for other in sorted(model.parent.iterdir()):
            if other.is_file() and other != model:
                stat = other.stat()
                digest.update(f"{other.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:32]


def weights_digest(build_dir: Path, manifest: dict) -> str:
    """The content hash of a build's weights (recorded by compile; older builds: hashed here)."""
    if manifest.get("weights_sha256"):
        return manifest["weights_sha256"]
    for name in ("weights.o", "weights.S"):
        if (build_dir / name).exists():
            return file_digest(build_dir / name)
    return ""


def stage_folder(final: Path) -> Path:
    """An empty folder beside `final`, named after this process, to build into before
    `replace_folder`; leftovers of processes that died are removed first."""
    for old in final.parent.glob(f".{final.name}.partial-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    stage = final.parent / f".{final.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    atexit.register(shutil.rmtree, stage, True)  # a build that failed; renamed stages are gone already
    return stage


def replace_folder(stage: Path, final: Path, complete: Callable[[Path], bool]) -> None:
    """Rename `stage` to `final`. A `complete` folder already there (another process published the
    same build first, and may be using it) is kept and `stage` dropped; an incomplete one (an older
    version's leftover) is replaced."""
    if complete(final):
        shutil.rmtree(stage, ignore_errors=True)
        return
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, trash / final.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(stage, final)
    except OSError:  # another process published the same build meanwhile: keep theirs
        shutil.rmtree(stage, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Readers of `path` see the old or the new text, never half of it."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    os.replace(partial, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
