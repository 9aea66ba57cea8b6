"""Where a campaign's input sets come from: a directory of .npy files, checked against the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..build import Build
from ..errors import InputError, UsageError


def find_input_sets(inputs: str | Path | None, build: Build, model_dir: Path | None) -> list[list[Path]]:
    """A directory of .npy files (one per input set), or of subdirectories with one <input>.npy each."""
    if inputs is None:
        candidate = model_dir / "inputs" if model_dir else None
        if candidate is None or not candidate.is_dir():
            raise UsageError("no inputs: give --inputs DIR (a directory of .npy files)")
        inputs = candidate
    path = Path(inputs)
    if path.is_file() and path.suffix == ".npy":
        return [[path]]
    if not path.is_dir():
        raise UsageError(f"--inputs {path}: not a directory of .npy files")
    names = [t.name for t in build.inputs]
    if len(names) == 1:
        files = sorted(path.glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
        sets = [[f] for f in files]
    else:
        sets = []
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            files = [sub / f"{n}.npy" for n in names]
            if all(f.exists() for f in files):
                sets.append(files)
    if not sets:
        raise UsageError(f"--inputs {path}: no input sets found (expected *.npy"
                         + (f", or subdirectories holding {', '.join(n + '.npy' for n in names)})" if len(names) > 1
                            else ")"))
    for files in sets:
        build.check_inputs([load_npy(f) for f in files])
    return sets


def load_npy(path: Path) -> np.ndarray:
    """An input array; anything numpy cannot read as a plain .npy file is a one-line InputError."""
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy's header parser raises many kinds (ValueError, TokenError, ...)
        raise InputError(f"cannot read {path} as a .npy array: {' '.join(str(exc).split())[:200]}") from None
