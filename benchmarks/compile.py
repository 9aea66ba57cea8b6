"""Compile-time and inference-time benchmark: every bundled example model plus a VGG16.

For each model, in one run on this machine: seconds per compile stage (load, import, passes,
translate, llc, link), peak resident memory of the whole compile (Python and the LLVM tools),
native inference time (llc -O0, the paper's setting) beside onnxruntime's (one thread).

The VGG16 has torchvision's layer shapes (138 M parameters, 553 MB of float32) and random
weights; it is built with onnx.helper, so no framework is needed.

    python benchmarks/compile.py [--skip-vgg] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def build_vgg16(path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes, inits, cur, channels = [], [], "input", 3
    for i, layer in enumerate(VGG16):
        if layer == "M":
            nodes.append(helper.make_node("MaxPool", [cur], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2],
                                          name=f"pool{i}"))
            cur = f"p{i}"
            continue
        w = (rng.standard_normal((layer, channels, 3, 3)) * np.sqrt(2 / (9 * channels))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(np.zeros(layer, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        cur, channels = f"r{i}", layer
    nodes.append(helper.make_node("Flatten", [cur], ["flat"], name="flatten"))
    cur, width = "flat", 512 * 7 * 7
    for j, out in enumerate([4096, 4096, 1000]):
        w = (rng.standard_normal((out, width)) * np.sqrt(2 / width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fw{j}"), numpy_helper.from_array(np.zeros(out, np.float32), f"fb{j}")]
        nodes.append(helper.make_node("Gemm", [cur, f"fw{j}", f"fb{j}"], [f"f{j}"], transB=1, name=f"fc{j}"))
        cur, width = f"f{j}", out
        if j < 2:
            nodes.append(helper.make_node("Relu", [cur], [f"fr{j}"], name=f"fc_relu{j}"))
            cur = f"fr{j}"
    image = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])
    graph = helper.make_graph(nodes, "vgg16", [image],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))


COMPILE_CHILD = """
import json, resource, sys, time
from lltfi_mlir import compile_onnx
start = time.perf_counter()
build = compile_onnx(sys.argv[1], sys.argv[2])
total = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tools = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": build.manifest["seconds"], "total": total, "peak_kb": max(own, tools)}))
"""


def compile_in_child(model: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", COMPILE_CHILD, str(model), str(out)], capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"compile of {model} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def native_us(exe: Path, inputs: list[Path], repeat: int) -> float:
    args = [str(exe)] + [a for p in inputs for a in ("--input", str(p))] + ["--repeat", str(repeat), "--time"]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(proc.stderr.split("time_per_inference_us")[1].split()[0])


def ort_us(model: Path, feeds: dict, repeat: int) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(repeat):
        session.run(None, feeds)
    return 1e6 * (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-vgg", action="store_true", help="only the bundled examples")
    parser.add_argument("--repeat", type=int, default=20, help="inferences timed per small model")
    parser.add_argument("--make-vgg", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_vgg:
        build_vgg16(Path(args.make_vgg))
        return
    console = Console(width=150)
    models = sorted(ROOT.glob("examples/*/model.onnx"))
    tmp = Path(tempfile.mkdtemp(prefix="lltfi-bench-"))
    if not args.skip_vgg:
        vgg = tmp / "vgg16" / "model.onnx"
        vgg.parent.mkdir()
        with console.status("building VGG16 with random weights"):
            # In a child: ru_maxrss survives fork+exec, so a big parent would inflate every
            # later child's peak-memory reading.
            subprocess.run([sys.executable, __file__, "--make-vgg", str(vgg)], check=True)
        models.append(vgg)
    table = Table(title="compile stages (s), peak memory, inference (us) -- llc -O0, one thread")
    for col in ["model", "load", "import", "passes", "translate", "llc", "link", "total", "peak MB",
                "native us", "ort us", "native/ort"]:
        table.add_column(col, justify="right")
    for model in models:
        name = model.parent.name
        with console.status(f"compiling {name}"):
            result = compile_in_child(model, tmp / f"build-{name}")
        from lltfi_mlir import Build

        build = Build(tmp / f"build-{name}")
        rng = np.random.default_rng(0)
        feeds, paths = {}, []
        for i, spec in enumerate(build.inputs):
            sample = model.parent / "inputs" / "0.npy"
            x = np.load(sample) if sample.exists() and len(build.inputs) == 1 else \
                rng.standard_normal(spec.shape).astype(np.float32)
            feeds[spec.name] = x
            paths.append(tmp / f"{name}-in{i}.npy")
            np.save(paths[-1], x)
        repeat = 1 if name == "vgg16" else args.repeat
        with console.status(f"timing {name}"):
            native = native_us(build.executable, paths, repeat)
            reference = ort_us(model, feeds, max(repeat, 3))
        s = result["seconds"]
        table.add_row(name, *(f"{s.get(k, 0):.2f}" for k in ["load", "import", "passes", "translate", "llc", "link"]),
                      f"{result['total']:.2f}", f"{result['peak_kb'] / 1024:.0f}", f"{native:.0f}",
                      f"{reference:.0f}", f"{native / reference:.1f}x")
    console.print(table)


if __name__ == "__main__":
    main()
