"""The trial children's buffer region (runtime/trial_heap.c) and the lowering that routes buffers to it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from lltfi_mlir.runtime import SOURCE_DIR
from native_helpers import SANITIZE, SANITIZER_ENV, sanitizer_report

from lltfi_mlir import CompileOptions, compile_onnx

HARNESS = Path(__file__).parent / "native" / "trial_heap_harness.c"


@pytest.mark.parametrize("flags", [["-O2"], ["-O1", *SANITIZE]], ids=["plain", "sanitized"])
def test_trial_heap_keeps_blocks_apart_and_gives_room_back(tmp_path, flags):
    exe = tmp_path / "harness"
    subprocess.run(["cc", *flags, "-I", str(SOURCE_DIR), str(HARNESS), str(SOURCE_DIR / "trial_heap.c"), "-o",
                    str(exe)], check=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=SANITIZER_ENV)
    assert proc.stdout.strip().endswith("PASS"), proc.stdout + proc.stderr
    assert proc.returncode == 0 and not sanitizer_report(proc.stderr), proc.stderr


def test_model_buffers_go_through_the_runtime_allocator(tiny_cnn_path, tmp_path):
    """Every memref allocation and free of a compiled model calls the runtime's pair, never libc's
    directly: a trial child's buffers can then come from its own region."""
    build = compile_onnx(tiny_cnn_path, tmp_path / "build", CompileOptions())
    ir = (build.directory / "model.ll").read_text()
    callees = set(re.findall(r"call \S+ @(\w+)\(", ir))
    assert {"_mlir_memref_to_llvm_alloc", "_mlir_memref_to_llvm_free"} <= callees
    assert not callees & {"malloc", "free", "aligned_alloc"}
