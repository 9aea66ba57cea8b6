"""A compiled model on disk (a build directory) and how to run it from Python."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, RunError, UsageError


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"  # numpy dtype name; builds older than integer I/O are float32 throughout


class Build:
    """A build directory written by `compile_onnx`; `run` executes its native program."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.exists():
            raise UsageError(f"{self.directory} is not a build directory (no manifest.json); "
                             "create one with: lltfi-mlir compile model.onnx -o DIR")
        self.manifest = json.loads(manifest_path.read_text())
        self.inputs = [TensorSpec(t["name"], tuple(t["shape"]), t.get("dtype", "float32"))
                       for t in self.manifest["inputs"]]
        self.outputs = [TensorSpec(t["name"], tuple(t["shape"]), t.get("dtype", "float32"))
                        for t in self.manifest["outputs"]]
        # Layer-tracing builds return every node's output after the model's own outputs.
        self.traced = self.manifest.get("traced") or []
        self.all_outputs = self.outputs + [TensorSpec(t["tensor"], tuple(t["shape"]), t.get("dtype", "float32"))
                                           for t in self.traced]
        self.executable = self.directory / self.manifest["executable"]
        self.is_program = self.manifest.get("kind") == "program"  # a C/C++ program, not a model

    def check_inputs(self, arrays: Sequence[np.ndarray]) -> None:
        if len(arrays) != len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} input(s) "
                             f"({', '.join(t.name for t in self.inputs)}), {len(arrays)} given")
        for spec, array in zip(self.inputs, arrays):
            if array.dtype != np.dtype(spec.dtype) or tuple(array.shape) != spec.shape:
                raise InputError(f"input '{spec.name}': expected {spec.dtype} of shape "
                                 f"{'x'.join(map(str, spec.shape)) or 'scalar'}, got {array.dtype} of "
                                 f"shape {'x'.join(map(str, array.shape)) or 'scalar'}")

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run one inference natively; inputs by position or by name."""
        if isinstance(inputs, Mapping):
            missing = [t.name for t in self.inputs if t.name not in inputs]
            if missing:
                raise InputError(f"missing input(s): {', '.join(missing)}")
            inputs = [inputs[t.name] for t in self.inputs]
        arrays = [np.asarray(a) for a in inputs]
        self.check_inputs(arrays)
        with tempfile.TemporaryDirectory(prefix="lltfi-run-") as tmp:
            in_paths, out_paths = [], []
            for i, array in enumerate(arrays):
                in_paths.append(Path(tmp) / f"in{i}.npy")
                np.save(in_paths[-1], np.ascontiguousarray(array).reshape(array.shape))
            out_paths = [Path(tmp) / f"out{i}.npy" for i in range(len(self.outputs))]
            self.run_files(in_paths, out_paths)
            return [np.load(p) for p in out_paths]

    def run_files(self, in_paths: Sequence[Path], out_paths: Sequence[Path]) -> None:
        args = [str(self.executable)]
        for p in in_paths:
            args += ["--input", str(p)]
        for p in out_paths:
            args += ["--output", str(p)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode == 2:
            raise InputError(proc.stderr.strip().removeprefix("error: "))
        if proc.returncode != 0:
            reason = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
            raise RunError(f"{self.executable} failed with {reason}: {proc.stderr.strip()[:300]}")
