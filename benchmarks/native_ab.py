"""Native inference time of two builds of the same model, alternated in one run (A/B).

On a shared machine one timing of a build can be 25% off the next; two identical builds timed an
hour apart say nothing. This alternates A and B --rounds times (each a `model --repeat N --time`
run) and prints the best and median per build, and best(B) / best(A). Two identical builds came out
0-6% apart on the 2-core sandbox; run it both ways round before believing a few percent.

    python benchmarks/native_ab.py BUILD_A BUILD_B INPUT.npy [--rounds 7] [--repeat 10]

BUILD_A, BUILD_B: directories written by `lltfi-mlir compile` (e.g. one made from an older
checkout with PYTHONPATH pointing at it). INPUT.npy: the model's one input.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

TIME = re.compile(r"time_per_inference_us ([0-9.]+)")


def inference_ms(build: Path, inputs: Path, repeat: int) -> float:
    proc = subprocess.run([str(build / "model"), "--input", str(inputs), "--repeat", str(repeat), "--time"],
                          capture_output=True, text=True, timeout=3600)
    found = TIME.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        sys.exit(f"error: {build / 'model'} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    return float(found.group(1)) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="build directory A (the baseline)")
    parser.add_argument("b", type=Path, help="build directory B")
    parser.add_argument("input", type=Path, help=".npy input of the model")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--repeat", type=int, default=10, help="inferences per timed run (default 10)")
    args = parser.parse_args()
    for build in (args.a, args.b):
        if not (build / "model").is_file():
            sys.exit(f"error: {build} holds no compiled model (run `lltfi-mlir compile` first)")
    times: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        times["A"].append(inference_ms(args.a, args.input, args.repeat))
        times["B"].append(inference_ms(args.b, args.input, args.repeat))
    table = Table(title=f"native inference, {args.rounds} alternating rounds of {args.repeat}")
    for column in ("build", "directory", "best ms", "median ms"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for key, build in (("A", args.a), ("B", args.b)):
        table.add_row(key, Text(str(build)), f"{min(times[key]):.3f}", f"{statistics.median(times[key]):.3f}")
    console = Console()
    console.print(table)
    console.print(f"best(B) / best(A) = {min(times['B']) / min(times['A']):.3f}")


if __name__ == "__main__":
    main()
