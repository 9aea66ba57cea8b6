"""Model-zoo benchmark: torchvision models and the bundled examples, compiled and timed side by side.

For every model, in one run on this machine:

  weights       bytes of the ONNX initializers (and Constant tensors)
  native        time per inference of the compiled program (`build/model --input x.npy --repeat N
                --time`, which prints time_per_inference_us on stderr; one thread): the median of
                --runs timed runs of up to --repeat inferences each (at most ~1 s per run); when one
                inference takes more than 2 s, that single first inference is the measurement
  onnxruntime   the same, for onnxruntime on the same input (CPUExecutionProvider,
                intra_op_num_threads=1, inter_op_num_threads=1, sequential execution)
  ratio         native / onnxruntime; `rel err` is max |native - ort| / max |ort| over the outputs
  compile       wall time of `lltfi-mlir compile model.onnx -o DIR [--codegen X]`, and its peak
                resident memory (Python and every LLVM tool it starts), with peak / weight bytes
  instr, prof   what a campaign does before its first trial, through the campaign's own code:
                `instrument_build(build, SiteSelector())` (the default configuration's selection:
                floating-point arithmetic in the operators; rewrite, translate, opt/llc, link), then
                `Campaign.prepare()` on one input set, which finds that build in its cache and
                profiles (golden runs that count every site, and the hooked self-check when the
                campaign runs one) and opens the database; `FI MiB` is the peak memory of both

Peak memory is `getrusage(RUSAGE_CHILDREN).ru_maxrss` read in a small wrapper process started
once per measurement (the largest process of the measured tree; a big parent process would
otherwise inflate it, because ru_maxrss carries over fork + exec).

The torchvision models (random weights: `weights=None`, `torch.manual_seed(0)`, `.eval()`; batch 1,
3x224x224, opset 17, `torch.onnx.export(..., dynamo=False)`) are exported once and cached under
~/.cache/lltfi-mlir/zoo/. Without torch and torchvision (and without a cached file) they are
skipped with a one-line message and the bundled examples/*/model.onnx are still measured. Their
input is a fixed random image; the examples use their inputs/0.npy.

Each model gets --timeout seconds for all its stages together; a stage that fails or runs out of
time leaves the reason in the row's note and the run goes on with the next model.

    python benchmarks/zoo.py [--models examples,squeezenet1_1,resnet50] [--codegen optimized]
                             [--repeat 20] [--runs 5] [--skip-instrument] [--timeout 1800]
                             [--json out.json] [--keep DIR]

Summary lines: median and worst ratio, and pass/fail against the targets: median ratio <= 3x, no
model worse than 6x, instrumenting + profiling ResNet-50 <= 10 s, VGG16 compile < 60 s and
< 8 GB, compile peak <= 3x weight bytes (checked on models with at least 64 MiB of weights: below
that, the fixed cost of Python and MLIR dominates).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "lltfi-mlir" / "zoo"
OPSET = 17
# Cheapest first, so that a run with a short budget gets through the small ones.
TORCHVISION = ["squeezenet1_1", "mnasnet0_5", "mobilenet_v2", "efficientnet_b0", "resnet18", "densenet121",
               "resnet50", "vgg16",
               # issue 11's zoo: newer architectures (Hardswish, channel shuffle, LayerNorm, attention)
               "mobilenet_v3_small", "shufflenet_v2_x1_0", "googlenet", "regnet_y_400mf", "convnext_tiny",
               "vit_b_16", "swin_t"]
SLOW_INFERENCE_S = 2.0   # above this, one inference is the whole measurement
RUN_BUDGET_S = 1.0       # otherwise: as many inferences per timed run as fit (up to --repeat)
BIG_WEIGHTS = 64 * 2**20  # the compile-peak/weights target applies from this size on

TARGET_MEDIAN_RATIO = 3.0
TARGET_WORST_RATIO = 6.0
TARGET_RESNET50_FI_S = 10.0
TARGET_VGG16_COMPILE_S = 60.0
TARGET_VGG16_COMPILE_BYTES = 8 * 2**30
TARGET_PEAK_PER_WEIGHT = 3.0

# Runs the measured command and reports its wall time and the peak RSS of its whole process tree.
WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as handle:
    json.dump({"rc": rc, "wall": wall, "peak_kb": peak}, handle)
"""

# What a campaign does before its first trial, through the campaign's own code: instrument with the
# default configuration's selection (SiteSelector()), then Campaign.prepare(), whose instrument_build
# is then a cache hit: the profile (golden runs with unit counters, the hooked self-check when the
# campaign runs it) and the database.
INSTRUMENT_CHILD = """
import json, sys, time
from pathlib import Path
from lltfi_mlir.build import Build
from lltfi_mlir.campaign import Campaign, load_config
from lltfi_mlir.instrument import instrument_build
build = Build(sys.argv[1])
config = load_config(None)
start = time.perf_counter()
instrumented = instrument_build(build, config.selector)
instrument_s = time.perf_counter() - start
campaign = Campaign(build, config, [[Path(p) for p in sys.argv[2:]]], jobs=1)
start = time.perf_counter()
campaign.prepare()
profile_s = time.perf_counter() - start
profiles = campaign.profiles
print(json.dumps({"instrument_s": instrument_s, "profile_s": profile_s, "sites": len(instrumented.sites),
                  "dynamic_instances": sum(p.total for p in profiles),
                  "golden_s": min(p.golden_seconds for p in profiles),
                  "check_s": sum(p.check_seconds for p in profiles),
                  "self_check": str(getattr(campaign, "self_check", ""))}))
"""


@dataclass
class Row:
    name: str
    kind: str                                  # "example" | "torchvision"
    codegen: str | None = None                 # as the build's manifest records it
    weights_bytes: int | None = None
    native_us: float | None = None
    native_runs: list[float] = field(default_factory=list)
    native_repeat: int | None = None
    native_peak_kb: int | None = None
    ort_us: float | None = None
    ort_runs: list[float] = field(default_factory=list)
    rel_err: float | None = None
    compile_s: float | None = None
    compile_peak_kb: int | None = None
    instrument_s: float | None = None
    profile_s: float | None = None
    fi_peak_kb: int | None = None
    golden_s: float | None = None              # best golden run of the instrumented program (profile)
    check_s: float | None = None               # the profile's check run (every instance through the hooks)
    self_check: str | None = None              # what the campaign says of its hooked self-check
    sites: int | None = None
    dynamic_instances: int | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.native_us / self.ort_us if self.native_us and self.ort_us else None

    @property
    def peak_per_weight(self) -> float | None:
        if self.compile_peak_kb is None or not self.weights_bytes:
            return None
        return self.compile_peak_kb * 1024 / self.weights_bytes

    def add_note(self, text: str) -> None:
        self.note = f"{self.note}; {text}" if self.note else text


class StageError(Exception):
    """A stage failed or ran out of time; the message is one line for the table."""


@dataclass
class Measured:
    rc: int
    wall: float
    peak_kb: int
    stdout: str
    stderr: str


def one_line(text: str, limit: int = 160) -> str:
    """The most telling line of an error output (the last `error:` line, else the last line)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "no output"
    errors = [line for line in lines if line.lower().startswith("error")]
    line = errors[-1] if errors else lines[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def run_measured(argv: list[str], timeout: float, what: str) -> Measured:
    """Run argv under the wrapper (own process group, killed whole on timeout)."""
    if timeout <= 0:
        raise StageError(f"{what}: no time left in the model's budget")
    with tempfile.TemporaryDirectory(prefix="lltfi-zoo-") as tmp:
        report, out, err = Path(tmp) / "report.json", Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            proc = subprocess.Popen([sys.executable, "-c", WRAPPER, str(report), *argv], stdout=stdout,
                                    stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise StageError(f"{what}: timed out after {timeout:.0f} s") from None
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        if not report.exists():
            raise StageError(f"{what}: measuring wrapper failed: {one_line(err.read_text())}")
        data = json.loads(report.read_text())
        return Measured(data["rc"], data["wall"], data["peak_kb"], out.read_text(), err.read_text())


# -- models ------------------------------------------------------------------------------------------

def torch_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))


def export_torchvision(name: str, path: Path) -> None:
    """Export one torchvision model with random weights (run in a child process: see main)."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript-based ONNX export"

    def has_op(op: str) -> bool:
        try:
            return getattr(torch.ops.torchvision, op).default is not None
        except (AttributeError, RuntimeError):
            return False

    # A PyPI torchvision whose compiled ops do not load against this torch fails to import in
    # register_fake("torchvision::nms"): declare the two schemas (as torchvision's C++ does) first.
    for op in ("nms", "qnms"):
        if not has_op(op):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision

    # Eval-mode attention takes a fused fast path (aten::_native_multi_head_attention) that the
    # TorchScript exporter cannot export (vit_b_16): the unfused path computes the same function.
    torch.backends.mha.set_fastpath_enabled(False)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    tmp = path.with_suffix(".part")
    with torch.no_grad():
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"])
    tmp.replace(path)


def torchvision_onnx(name: str, console: Console, timeout: float) -> Path:
    path = CACHE / f"{name}-opset{OPSET}.onnx"
    if path.exists():
        return path
    if not torch_available():
        raise StageError("torch/torchvision not installed and no cached export")
    CACHE.mkdir(parents=True, exist_ok=True)
    with console.status(f"exporting {name} (cached in {CACHE})"):
        try:
            proc = subprocess.run([sys.executable, __file__, "--export", name, str(path)], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StageError(f"export: timed out after {timeout:.0f} s") from None
    if proc.returncode or not path.exists():
        raise StageError(f"export: {one_line(proc.stderr)}")
    return path


def weight_bytes(model: onnx.ModelProto) -> int:
    def nbytes(tensor: onnx.TensorProto) -> int:
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize

    total = sum(nbytes(t) for t in model.graph.initializer)
    for node in model.graph.node:
        if node.op_type == "Constant":
            total += sum(nbytes(a.t) for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return total


# -- measurements ------------------------------------------------------------------------------------

def lltfi_command() -> list[str]:
    exe = shutil.which("lltfi-mlir")
    if exe:
        return [exe]
    return [sys.executable, "-c", "import sys; from lltfi_mlir.cli import main; sys.exit(main())"]


def codegen_supported(command: list[str]) -> bool:
    proc = subprocess.run([*command, "compile", "--help"], capture_output=True, text=True)
    return "--codegen" in proc.stdout


def adaptive(measure, first_s: float, repeat: int, runs: int) -> tuple[list[float], int]:
    """Per-inference seconds of each timed run, and inferences per run (see the module docstring)."""
    if first_s > SLOW_INFERENCE_S:
        return [first_s], 1
    per_run = max(1, min(repeat, int(RUN_BUDGET_S / max(first_s, 1e-9))))
    return [measure(per_run) for _ in range(runs)], per_run


def time_native(row: Row, exe: Path, inputs: list[Path], out_paths: list[Path], args, deadline: float) -> None:
    base = [str(exe)] + [a for p in inputs for a in ("--input", str(p))]

    def once(repeat: int, outputs: bool = False) -> float:
        argv = base + ["--repeat", str(repeat), "--time"]
        if outputs:
            argv += [a for p in out_paths for a in ("--output", str(p))]
        result = run_measured(argv, deadline - time.monotonic(), "native run")
        row.native_peak_kb = max(row.native_peak_kb or 0, result.peak_kb)
        if result.rc:
            raise StageError(f"native run: exit status {result.rc}: {one_line(result.stderr)}")
        found = re.search(r"time_per_inference_us\s+([0-9.eE+-]+)", result.stderr)
        if not found:
            raise StageError("native run: no time_per_inference_us on stderr")
        return float(found.group(1)) * 1e-6

    first = once(1, outputs=True)
    runs, row.native_repeat = adaptive(once, first, args.repeat, args.runs)
    row.native_runs = [s * 1e6 for s in runs]
    row.native_us = statistics.median(row.native_runs)


def ort_session(model: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def time_ort(row: Row, model: Path, feeds: dict[str, np.ndarray], args) -> list[np.ndarray]:
    session = ort_session(model)
    start = time.perf_counter()
    outputs = session.run(None, feeds)
    first = time.perf_counter() - start

    def measure(repeat: int) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            session.run(None, feeds)
        return (time.perf_counter() - start) / repeat

    runs, _ = adaptive(measure, first, args.repeat, args.runs)
    row.ort_runs = [s * 1e6 for s in runs]
    row.ort_us = statistics.median(row.ort_runs)
    return outputs


def model_inputs(model: Path, onnx_model: onnx.ModelProto, kind: str) -> dict:
    """One input set: the example's inputs/0.npy, else a fixed random tensor (free dims = 1)."""
    initializers = {t.name for t in onnx_model.graph.initializer}
    graph_inputs = [i for i in onnx_model.graph.input if i.name not in initializers]
    sample = model.parent / "inputs" / "0.npy"
    if kind == "example" and len(graph_inputs) == 1 and sample.exists():
        return {graph_inputs[0].name: np.load(sample).astype(np.float32)}
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in graph_inputs:
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                 for d in spec.type.tensor_type.shape.dim]
        feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def measure_model(row: Row, model: Path, args, command: list[str], codegen: list[str], work: Path,
                  console: Console) -> None:
    deadline = time.monotonic() + args.timeout
    proto = onnx.load(str(model))
    row.weights_bytes = weight_bytes(proto)
    feeds = model_inputs(model, proto, row.kind)
    del proto
    input_paths = []
    for i, array in enumerate(feeds.values()):
        input_paths.append(work / f"input{i}.npy")
        np.save(input_paths[-1], array)

    with console.status(f"{row.name}: onnxruntime"):
        reference = time_ort(row, model, feeds, args)

    build = work / "build"
    with console.status(f"{row.name}: lltfi-mlir compile"):
        result = run_measured([*command, "compile", str(model), "-o", str(build), *codegen],
                              deadline - time.monotonic(), "compile")
    if result.rc:
        raise StageError(f"compile: {one_line(result.stderr + result.stdout)}")
    row.compile_s, row.compile_peak_kb = result.wall, result.peak_kb

    manifest = json.loads((build / "manifest.json").read_text())
    row.codegen = f"{manifest.get('codegen', 'reference')} (llc -O{manifest['opt_level']})"
    out_paths = [work / f"output{i}.npy" for i in range(len(manifest["outputs"]))]
    with console.status(f"{row.name}: native inference"):
        time_native(row, build / manifest["executable"], input_paths, out_paths, args, deadline)
    errors = []
    for path, ref in zip(out_paths, reference):
        got = np.load(path)
        scale = float(np.max(np.abs(ref))) or 1.0
        errors.append(float(np.max(np.abs(got.reshape(ref.shape) - ref))) / scale)
    row.rel_err = max(errors) if errors else None

    if args.skip_instrument:
        return
    with console.status(f"{row.name}: instrument + profile"):
        result = run_measured([sys.executable, "-c", INSTRUMENT_CHILD, str(build), *map(str, input_paths)],
                              deadline - time.monotonic(), "instrument+profile")
    if result.rc:
        raise StageError(f"instrument+profile: {one_line(result.stderr)}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    row.instrument_s, row.profile_s = data["instrument_s"], data["profile_s"]
    row.sites, row.dynamic_instances = data["sites"], data["dynamic_instances"]
    row.golden_s, row.check_s, row.self_check = data["golden_s"], data["check_s"], data["self_check"]
    row.fi_peak_kb = result.peak_kb


# -- report ------------------------------------------------------------------------------------------

def fmt_time(us: float | None) -> str:
    if us is None:
        return "-"
    if us >= 1e6:
        return f"{us / 1e6:.1f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} us"


def fmt_s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def mib(kb_or_bytes: float | None, kb: bool = True) -> str:
    if kb_or_bytes is None:
        return "-"
    return f"{kb_or_bytes * (1024 if kb else 1) / 2**20:.0f}"


def verdict(ok: bool | None) -> str:
    return "[yellow]n/a[/]" if ok is None else ("[green]PASS[/]" if ok else "[red]FAIL[/]")


def summary(rows: list[Row]) -> list[tuple[str, bool | None, str]]:
    """(target, pass/fail/None, what was measured) per target."""
    ratios = {r.name: r.ratio for r in rows if r.ratio is not None}
    by_name = {r.name: r for r in rows}
    lines = []
    median = statistics.median(ratios.values()) if ratios else None
    worst = max(ratios.items(), key=lambda kv: kv[1]) if ratios else None
    lines.append((f"median native/onnxruntime <= {TARGET_MEDIAN_RATIO:g}x",
                  None if median is None else median <= TARGET_MEDIAN_RATIO,
                  "no model timed" if median is None else f"median {median:.1f}x over {len(ratios)} models"))
    lines.append((f"no model worse than {TARGET_WORST_RATIO:g}x",
                  None if worst is None else worst[1] <= TARGET_WORST_RATIO,
                  "no model timed" if worst is None else f"worst {worst[1]:.1f}x ({worst[0]})"))
    r50 = by_name.get("resnet50")
    if r50 is not None and r50.instrument_s is not None:
        total = r50.instrument_s + r50.profile_s
        lines.append((f"instrument + profile ResNet-50 <= {TARGET_RESNET50_FI_S:g} s",
                      total <= TARGET_RESNET50_FI_S,
                      f"{total:.1f} s (instrument {r50.instrument_s:.1f} s, profile {r50.profile_s:.1f} s; "
                      f"golden run {r50.golden_s:.2f} s, self-check {(r50.self_check or '-').split(':')[0]})"))
    else:
        lines.append((f"instrument + profile ResNet-50 <= {TARGET_RESNET50_FI_S:g} s", None,
                      "not measured" + (f" ({r50.note})" if r50 is not None and r50.note else "")))
    vgg = by_name.get("vgg16")
    if vgg is not None and vgg.compile_s is not None:
        ok = vgg.compile_s < TARGET_VGG16_COMPILE_S and vgg.compile_peak_kb * 1024 < TARGET_VGG16_COMPILE_BYTES
        lines.append(("VGG16 compile < 60 s and < 8 GB", ok,
                      f"{vgg.compile_s:.1f} s, {vgg.compile_peak_kb / 2**20:.2f} GB"))
    else:
        lines.append(("VGG16 compile < 60 s and < 8 GB", None,
                      "not measured" + (f" ({vgg.note})" if vgg is not None and vgg.note else "")))
    peak_target = f"compile peak <= {TARGET_PEAK_PER_WEIGHT:g}x weight bytes (weights >= {BIG_WEIGHTS / 2**20:.0f} MiB)"
    big = [r for r in rows if r.weights_bytes and r.weights_bytes >= BIG_WEIGHTS and r.peak_per_weight is not None]
    if big:
        worst_big = max(big, key=lambda r: r.peak_per_weight)
        lines.append((peak_target, worst_big.peak_per_weight <= TARGET_PEAK_PER_WEIGHT,
                      ", ".join(f"{r.name} {r.peak_per_weight:.1f}x" for r in big)))
    else:
        lines.append((peak_target, None, "no model that large compiled"))
    return lines


def render(rows: list[Row], title: str, console: Console) -> list[tuple[str, bool | None, str]]:
    table = Table(title=title)
    columns = [("model", "left"), ("weights MiB", "right"), ("native", "right"), ("ort 1T", "right"),
               ("native/ort", "right"), ("rel err", "right"), ("compile s", "right"), ("compile MiB", "right"),
               ("peak/w", "right"), ("instr s", "right"), ("prof s", "right"), ("FI MiB", "right"),
               ("note", "left")]
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(r.name, mib(r.weights_bytes, kb=False) if r.weights_bytes is None or r.weights_bytes >= 2**20
                      else f"{r.weights_bytes / 2**20:.2f}",
                      fmt_time(r.native_us), fmt_time(r.ort_us), fmt(r.ratio, ".1f", "x"), fmt(r.rel_err, ".1e"),
                      fmt_s(r.compile_s), mib(r.compile_peak_kb), fmt(r.peak_per_weight, ".1f", "x"),
                      fmt_s(r.instrument_s), fmt_s(r.profile_s), mib(r.fi_peak_kb), escape(r.note))
    console.print(table)
    lines = summary(rows)
    for target, ok, measured in lines:
        console.print(f"{verdict(ok)}  {escape(target)}: {escape(measured)}")
    return lines


# -- main --------------------------------------------------------------------------------------------

def select_models(spec: str | None, console: Console) -> list[tuple[str, str, Path | None]]:
    examples = {p.parent.name: p for p in sorted(ROOT.glob("examples/*/model.onnx"))}
    if spec is None:
        wanted = list(examples) + TORCHVISION
    else:
        wanted = []
        for token in (t.strip() for t in spec.split(",") if t.strip()):
            group = {"examples": list(examples), "torchvision": TORCHVISION}.get(token, [token])
            wanted += [w for w in group if w not in wanted]
        unknown = [w for w in wanted if w not in examples and w not in TORCHVISION]
        if unknown:
            raise SystemExit(f"unknown model(s): {', '.join(unknown)}; known: examples, torchvision, "
                             f"{', '.join(list(examples) + TORCHVISION)}")
    torch_models = [w for w in wanted if w in TORCHVISION]
    missing = [w for w in torch_models if not (CACHE / f"{w}-opset{OPSET}.onnx").exists()]
    if missing and not torch_available():
        console.print(f"torch/torchvision not installed: skipping {', '.join(missing)} "
                      "(pip install torch==2.13.0; pip install torchvision==0.28.0 --no-deps)")
        wanted = [w for w in wanted if w not in missing]
    return [(w, "example", examples[w]) if w in examples else (w, "torchvision", None) for w in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated model names, or the groups 'examples' and "
                        f"'torchvision' (default: all; torchvision: {', '.join(TORCHVISION)})")
    parser.add_argument("--codegen", help="passed as `lltfi-mlir compile --codegen X` when compile has the option")
    parser.add_argument("--repeat", type=int, default=20, help="at most this many inferences per timed run "
                        "(default 20; fewer for slow models, 1 above 2 s per inference)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model; the median is reported "
                        "(default 5)")
    parser.add_argument("--skip-instrument", action="store_true", help="skip instrumentation and profiling")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per model for all its stages "
                        "together (default 1800); export is not counted")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    parser.add_argument("--keep", metavar="DIR", help="keep the build directories under DIR (default: a "
                        "temporary directory, removed at the end)")
    parser.add_argument("--export", nargs=2, metavar=("NAME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        export_torchvision(args.export[0], Path(args.export[1]))
        return
    if args.repeat < 1 or args.runs < 1:
        parser.error("--repeat and --runs must be at least 1")

    console = Console() if sys.stdout.isatty() else Console(width=200)
    command = lltfi_command()
    codegen: list[str] = []
    if args.codegen:
        if codegen_supported(command):
            codegen = ["--codegen", args.codegen]
        else:
            console.print(f"lltfi-mlir compile has no --codegen option: ignoring --codegen {args.codegen}")
    models = select_models(args.models, console)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lltfi-zoo-"))
    root.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    interrupted = False
    try:
        for name, kind, path in models:
            row = Row(name, kind)
            rows.append(row)
            work = root / name
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            try:
                if path is None:
                    path = torchvision_onnx(name, console, max(args.timeout, 600))
                measure_model(row, path, args, command, codegen, work, console)
            except StageError as exc:
                row.add_note(str(exc))
            except Exception as exc:  # a broken model must not end the benchmark
                row.add_note(f"{type(exc).__name__}: {one_line(str(exc))}")
            finally:
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
    except KeyboardInterrupt:
        interrupted = True
        if rows:
            rows[-1].add_note("interrupted")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    built = sorted({r.codegen for r in rows if r.codegen})
    codegen_text = ", ".join(built) or (args.codegen if codegen else "default")
    title = (f"lltfi-mlir vs onnxruntime (1 thread), codegen {codegen_text}; compile and instrument+profile "
             f"(default selection, 1 input); {platform.machine()}, {os.cpu_count()} cores")
    lines = render(rows, title, console)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "codegen": codegen_text, "machine": platform.machine(),
            "cores": os.cpu_count(), "repeat": args.repeat, "runs": args.runs, "interrupted": interrupted,
            "models": [dict(asdict(r), ratio=r.ratio, peak_per_weight=r.peak_per_weight) for r in rows],
            "targets": [{"target": t, "pass": ok, "measured": m} for t, ok, m in lines],
        }, indent=1) + "\n")
    if interrupted:
        raise SystemExit(130)


if __name__ == "__main__":
    main()
