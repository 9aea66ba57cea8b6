"""Native builds for the runtime tests without the MLIR pipeline: a C stand-in for the compiled model
(`_mlir_ciface_main_graph`) linked with the generated glue and the runtime, and the runtime built
under AddressSanitizer + UndefinedBehaviorSanitizer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from lltfi_mlir.llvm_backend.codegen import runtime_objects
from lltfi_mlir.llvm_backend.glue import generate_glue
from lltfi_mlir.runtime import CONTROLLER_SOURCES, SOURCE_DIR

from lltfi_mlir.build import Build

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}


def sanitizer_report(stderr: str) -> bool:
    """Whether a sanitizer reported anything."""
    return "AddressSanitizer" in stderr or "runtime error:" in stderr or "LeakSanitizer" in stderr


def sanitized_runtime(directory: Path) -> list[Path]:
    """The controller's C sources compiled with ASan + UBSan (one cc call)."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-O1", *SANITIZE, "-c", "-I", str(SOURCE_DIR),
                    *[str(SOURCE_DIR / s) for s in CONTROLLER_SOURCES]], cwd=directory, check=True)
    return [directory / (Path(s).stem + ".o") for s in CONTROLLER_SOURCES]


def _descriptor(rank: int) -> str:
    dims = f" int64_t sizes[{rank}]; int64_t strides[{rank}];" if rank else ""
    return f"typedef struct {{ void *allocated; void *aligned; int64_t offset;{dims} }} d{rank};"


def fake_model_source(inputs: list[tuple], outputs: list[tuple], body: str) -> str:
    """C for `_mlir_ciface_main_graph` over (name, shape, dtype) tensors: allocates each result as
    the model would (the glue frees it) and runs `body`, which reads `in[i]` and writes `out[i]`."""
    ranks = sorted({len(t[1]) for t in inputs + outputs})
    lines = ["#include <stdint.h>", "#include <stdlib.h>", "#include <string.h>", *map(_descriptor, ranks)]
    if len(outputs) == 1:
        result = f"d{len(outputs[0][1])}"
    else:
        fields = " ".join(f"d{len(t[1])} r{i};" for i, t in enumerate(outputs))
        lines.append(f"typedef struct {{ {fields} }} results;")
        result = "results"
    lines.append(f"static void body(void **in, void **out) {{\n{body}\n}}")
    params = ", ".join([f"{result} *res"] + [f"d{len(t[1])} *a{i}" for i, t in enumerate(inputs)])
    lines.append(f"void _mlir_ciface_main_graph({params}) {{")
    pointers = ", ".join(f"a{i}->aligned" for i in range(len(inputs))) or "0"
    lines.append(f"  void *in[{max(1, len(inputs))}] = {{{pointers}}};")
    lines.append(f"  void *out[{len(outputs)}];")
    for i, (_, shape, dtype) in enumerate(outputs):
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        ref = "(*res)" if len(outputs) == 1 else f"res->r{i}"
        lines.append(f"  out[{i}] = malloc({max(1, nbytes)}); {ref}.allocated = {ref}.aligned = out[{i}]; "
                     f"{ref}.offset = 0;")
        for d, size in enumerate(shape):
            stride = int(np.prod(shape[d + 1:], dtype=np.int64))
            lines.append(f"  {ref}.sizes[{d}] = {size}; {ref}.strides[{d}] = {stride};")
    lines += ["  body(in, out);", "}"]
    return "\n".join(lines) + "\n"


def fake_model_build(directory: Path, inputs: list[tuple], outputs: list[tuple], body: str,
                     sanitized: list[Path] | None = None) -> Build:
    """A build directory (manifest.json, `model`) whose model is `body` (see fake_model_source); with
    `sanitized` objects, linked with those instead of the cached runtime."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "glue.c").write_text(generate_glue("main_graph", inputs, outputs))
    (directory / "fake_model.c").write_text(fake_model_source(inputs, outputs, body))
    runtime = sanitized or runtime_objects()
    flags = ["-O0", *SANITIZE] if sanitized else ["-O0"]  # thousands of outputs: -O1 takes a minute
    subprocess.run(["cc", *flags, "-I", str(SOURCE_DIR), str(directory / "glue.c"), str(directory / "fake_model.c"),
                    *map(str, runtime), "-o", str(directory / "model"), "-lm"], check=True)
    manifest = {"format": 1, "source": "<fake>", "entry": "main_graph", "opt_level": 0, "executable": "model",
                "inputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in inputs],
                "outputs": [{"name": n, "shape": list(s), "dtype": d} for n, s, d in outputs], "nodes": []}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return Build(directory)


def result_bytes(line: str) -> bytes:
    """The output bytes of a fork-server result line (its last two fields: byte count, hex)."""
    parts = line.split()
    return bytes.fromhex(parts[-1]) if int(parts[-2]) else b""


def trial_line(trial_id: int, input_set: int, target: int = 0) -> str:
    """A fault-free trial (no fault: type 3) in the servers' line protocol (runtime/trial_protocol.h)."""
    return f"{trial_id} {input_set} {target} 3 1 0 0 1 0 0 5000000\n"
