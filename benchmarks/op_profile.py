"""Where a compiled model's inference goes, per ONNX operator, beside onnxruntime's per-op-type times.

Our side: `perf record` of `model --repeat N` (every compute node is a function `node_<i>`, whose
first argument carries the ONNX node's name as its location in model.llvm.mlir), each node's share
of the samples times the measured time per inference. onnxruntime's side: its own profiler on one
thread, summed per operator type (it fuses and renames nodes, e.g. Conv+Relu, so only types match).
This is how MaxPool's scalar loops (a quarter of GoogLeNet's inference) were found.

    python benchmarks/op_profile.py MODEL.onnx BUILD INPUT.npy [--top 25] [--repeat 20]

Needs Linux `perf` (package linux-perf) and onnxruntime.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from native_ab import inference_ms  # benchmarks/, the script's own folder
from rich.console import Console
from rich.table import Table
from rich.text import Text

FUNCTION = re.compile(r'\s*llvm\.func (?:\w+ )*@(node_\d+)\(%arg0: [^ ]+ loc\("((?:[^"\\]|\\.)*)"\)')
SAMPLE = re.compile(r"\s+([0-9.]+)%\s+\[\.\]\s+(\S+)")


def node_names(build: Path) -> dict[str, str]:
    """node_<i> -> ONNX node name, from the build's LLVM-dialect module."""
    names = {}
    with open(build / "model.llvm.mlir") as handle:
        for line in handle:
            found = FUNCTION.match(line)
            if found:
                names[found.group(1)] = found.group(2)
    return names


def ours(build: Path, inputs: Path, repeat: int) -> tuple[float, dict[str, float]]:
    """(ms per inference, ms per node name) of the compiled model."""
    argv = [str(build / "model"), "--input", str(inputs), "--repeat", str(repeat)]
    ms = inference_ms(build, inputs, repeat)
    names = node_names(build)
    per_node: dict[str, float] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-o", str(data), *argv], capture_output=True, check=True)
        report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "sym"],
                                capture_output=True, text=True, check=True).stdout
    for line in report.splitlines():
        found = SAMPLE.match(line)
        if found:
            per_node[names.get(found.group(2), found.group(2))] += float(found.group(1)) * ms / 100
    return ms, per_node


def onnxruntime_per_type(model: Path, x: np.ndarray, repeat: int) -> tuple[float, dict[str, float]]:
    """(ms of all nodes per inference, ms per operator type) from onnxruntime's profiler, one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(repeat):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_type: dict[str, float] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_type[event.get("args", {}).get("op_name", "?")] += event["dur"] / 1e3 / repeat
    return sum(per_type.values()), per_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="the ONNX model the build was compiled from")
    parser.add_argument("build", type=Path, help="build directory written by `lltfi-mlir compile`")
    parser.add_argument("input", type=Path, help=".npy input of the model (its only input)")
    parser.add_argument("--top", type=int, default=25, help="operators to list (default 25)")
    parser.add_argument("--repeat", type=int, default=20, help="inferences per measurement (default 20)")
    args = parser.parse_args()
    if shutil.which("perf") is None:
        sys.exit("error: `perf` not found (Debian: apt-get install linux-perf)")
    if not (args.build / "model.llvm.mlir").is_file():
        sys.exit(f"error: {args.build} holds no compiled model (run `lltfi-mlir compile` first)")
    ms, per_node = ours(args.build, args.input, args.repeat)
    ort_ms, ort_types = onnxruntime_per_type(args.model, np.load(args.input), args.repeat)
    console = Console()
    table = Table(title=f"{args.model.name}: {ms:.2f} ms per inference, top {args.top} operators")
    for column in ("ms", "share", "operator"):
        table.add_column(column, justify="left" if column == "operator" else "right")
    for name, value in sorted(per_node.items(), key=lambda kv: -kv[1])[:args.top]:
        table.add_row(f"{value:.3f}", f"{100 * value / ms:.1f}%", Text(name))  # names are the model's: no markup
    console.print(table)
    types: dict[str, float] = collections.Counter()
    op_types = {}
    for node in onnx.load(str(args.model), load_external_data=False).graph.node:
        op_types[node.name] = node.op_type
    for name, value in per_node.items():
        types[op_types.get(name, "(outside the operators)")] += value
    by_type = Table(title=f"per operator type: ours {ms:.2f} ms, onnxruntime's nodes {ort_ms:.2f} ms")
    for column in ("type", "ours ms", "onnxruntime ms"):
        by_type.add_column(column, justify="left" if column == "type" else "right")
    for name in sorted(set(types) | set(ort_types), key=lambda t: -max(types.get(t, 0), ort_types.get(t, 0))):
        by_type.add_row(Text(name), f"{types.get(name, 0):.3f}", f"{ort_types.get(name, 0):.3f}")
    console.print(by_type)


if __name__ == "__main__":
    main()
