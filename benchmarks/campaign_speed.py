"""Campaign throughput of the two engines, side by side, against a full-forward injector's ideal.

For each model (every examples/*/model.onnx by default; --models takes example names and paths to
ONNX files, e.g. the torchvision exports that benchmarks/zoo.py caches in ~/.cache/lltfi-mlir/zoo/):

  onnxruntime   one inference on one thread (intra/inter-op threads 1, sequential; median of
                timed runs, each up to --repeat inferences, on the first input set)
  native        one golden inference of the instrumented program (the profile's best of 3)
  setup         from a compiled build to the first trial: instrument for the default selection
                (floating-point arithmetic in the operators) and profile every input set
  simple, walk  trials per second of --trials trials (default 2,000) with --jobs J (default: the
                tool's, one per core, and one more for the walk engine): `campaign.run`
                from its first trial to its last (results written to SQLite), per engine; the
                engines alternate for --rounds rounds, and the best round counts
  end to end    --trials / (setup + the walk engine's trial time)
  ended early   share of the walk engine's trials that ended as masked (runtime/boundaries.h), and
                the mean work per trial: selected instances from the injection point to the
                masking operator or the end, as a fraction of one inference
  CPU/trial     CPU time per trial of the trials (servers, walkers, trial children) + of the driver
                (Python: planning, parsing, outcomes, SQLite), per engine: steadier than trials/s
                on a shared machine
  ideal         a full-forward injector on every core at onnxruntime's single-thread speed:
                cores / t_onnxruntime trials per second, i.e. --trials x t_onnxruntime / cores
                seconds for the campaign (issue 10's reference)

Inputs: the example's inputs/ folder, or for another ONNX file its inputs/ folder when it has one,
else one random input set (seeded). Builds go to a temporary directory (--keep DIR keeps them).

Targets (issue 10): end to end at least 2x faster than the ideal on every model whose onnxruntime
time is at least 5 ms (column "e2e/ideal"; "target" says met or missed).

    python benchmarks/campaign_speed.py [--models lenet_fmnist,squeezenet_cifar,dave2,path/to/x.onnx] [--zoo]
                                        [--trials 2000] [--jobs N] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig

ROOT = Path(__file__).resolve().parents[1]
ZOO = Path.home() / ".cache" / "lltfi-mlir" / "zoo"  # benchmarks/zoo.py's exports
ENGINES = ("simple", "walk")


def select_models(spec: str | None) -> list[tuple[str, Path]]:
    examples = {p.parent.name: p for p in sorted(ROOT.glob("examples/*/model.onnx"))}
    if not spec:
        return list(examples.items())
    models = []
    if spec == "zoo":
        return [(p.name.split("-opset")[0], p) for p in sorted(ZOO.glob("*-opset*.onnx"))]
    for item in spec.split(","):
        item = item.strip()
        if item in examples:
            models.append((item, examples[item]))
        elif Path(item).expanduser().is_file():
            path = Path(item).expanduser().resolve()
            models.append((path.parent.name if path.stem == "model" else path.stem, path))
        else:
            raise SystemExit(f"--models: {item!r} is neither an example ({', '.join(examples)}) nor an ONNX file")
    return models


def input_dir(model: Path, work: Path) -> Path:
    """The model's inputs/ folder, or one seeded random input set written to `work`."""
    if (model.parent / "inputs").is_dir():
        return model.parent / "inputs"
    graph = onnx.load(str(model), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    (graph_input,) = [i for i in graph.input if i.name not in initializers]
    shape = [d.dim_value or 1 for d in graph_input.type.tensor_type.shape.dim]
    folder = work / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "0.npy", np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    return folder


def onnxruntime_seconds(model: Path, x: np.ndarray, repeat: int, runs: int = 5) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    feeds = {session.get_inputs()[0].name: x}
    start = time.perf_counter()
    session.run(None, feeds)  # warm-up, and the size of a timed run
    once = time.perf_counter() - start
    n = max(1, min(repeat, int(1.0 / max(once, 1e-6))))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(n):
            session.run(None, feeds)
        times.append((time.perf_counter() - start) / n)
    return statistics.median(times)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds of the reaped descendants (servers include their walkers and trial children) and of
    this process."""
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


def measure(name: str, model: Path, args, work: Path, console: Console) -> dict:
    row: dict = {"model": name}
    inputs = input_dir(model, work)
    with console.status(f"{name}: onnxruntime"):
        row["ort_s"] = onnxruntime_seconds(model, np.load(sorted(inputs.glob("*.npy"))[0]), args.repeat)
    with console.status(f"{name}: compile"):
        build = compile_onnx(model, work / "build", CompileOptions())
    # No spinner here: its thread would keep the instrumenting from forking its two halves, as
    # `lltfi-mlir inject` (which shows none while it prepares) does.
    console.print(f"{name}: instrument and profile", style="dim")
    start = time.perf_counter()
    campaign = Campaign.from_build(build.directory, CampaignConfig(seed=1), inputs, db=work / "setup.db",
                                   jobs=args.jobs)
    campaign.prepare().close()
    row["setup_s"] = time.perf_counter() - start
    row["native_s"] = min(p.golden_seconds for p in campaign.profiles)
    row["instances"] = sum(p.total for p in campaign.profiles)
    for engine in ENGINES:
        row[engine], row[f"{engine}_cpu"] = [], []
    for round_ in range(args.rounds):
        for engine in args.engines:
            db = work / f"{engine}-{round_}.db"
            with console.status(f"{name}: {args.trials} trials, {engine} engine (round {round_ + 1})"):
                campaign = Campaign.from_build(build.directory, CampaignConfig(seed=1), inputs, db=db, jobs=args.jobs,
                                               engine=engine)
                campaign.prepare().close()  # cached by now: only the trials are measured
                before = cpu_seconds()
                summary = campaign.run(args.trials, progress=False)
                after = cpu_seconds()
            row[engine].append(campaign.last_trials / campaign.last_run_seconds)
            if engine == "walk":
                masking = summary.get("masking") or {}
                row["ended_early"] = masking.get("ended_early", 0) / max(1, masking.get("trials", 1))
                row["work"] = masking.get("mean_work")
            row[f"{engine}_cpu"].append(tuple((b - a) / args.trials for a, b in zip(before, after)))
            db.unlink()
    row["cores"] = os.cpu_count() or 1
    row["ideal"] = row["cores"] / row["ort_s"]
    best = {engine: max(row[engine]) for engine in args.engines}
    row["end_to_end"] = args.trials / (row["setup_s"] + args.trials / best["walk"])
    row["e2e_vs_ideal"] = row["end_to_end"] / row["ideal"]
    return row


def cpu(rounds: list[tuple[float, float]]) -> str:
    trials, driver = min(rounds)
    return f"{1e3 * trials:.2f} + {1e3 * driver:.2f} ms"  # trials (C) + driver (Python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help="comma-separated example names and ONNX paths (default: every example; "
                        "'zoo': every export cached by benchmarks/zoo.py)")
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--jobs", type=int, help="trials at once (default: the tool's default per engine)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per engine (the best counts)")
    parser.add_argument("--repeat", type=int, default=200, help="onnxruntime inferences per timed run, at most")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="engines to measure (default simple,walk; the targets need walk)")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--keep", help="keep the builds in this directory")
    args = parser.parse_args()
    args.engines = [e for e in args.engines.split(",") if e]
    if "walk" not in args.engines or set(args.engines) - set(ENGINES):
        raise SystemExit(f"--engines: a comma-separated subset of {','.join(ENGINES)} that includes walk")
    console = Console(width=220)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lltfi-speed-"))
    rows = []
    try:
        for name, model in select_models(args.models):
            rows.append(measure(name, model, args, work / name, console))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    cores = os.cpu_count() or 1
    jobs = args.jobs or "default"
    table = Table(title=f"campaign speed: {args.trials} trials, default selection, jobs={jobs}, {cores} cores "
                        f"(ideal: a full-forward injector at onnxruntime's single-thread speed on every core)")
    for column in ("model", "instances", "onnxruntime", "native", "setup", "simple /s", "walk /s", "walk/simple",
                   "ideal /s", "walk/ideal", "end to end /s", "e2e/ideal", "target", "ended early", "work/trial",
                   "CPU/trial simple", "CPU/trial walk"):
        table.add_column(column, justify="right")
    for row in rows:
        simple, walk = max(row["simple"], default=float("nan")), max(row["walk"])
        table.add_row(row["model"], f"{row['instances']:,}", f"{1e3 * row['ort_s']:.3f} ms",
                      f"{1e3 * row['native_s']:.3f} ms", f"{row['setup_s']:.1f} s", f"{simple:.0f}", f"{walk:.0f}",
                      f"{walk / simple:.2f}x", f"{row['ideal']:.0f}", f"{walk / row['ideal']:.2f}x",
                      f"{row['end_to_end']:.0f}", f"{row['e2e_vs_ideal']:.2f}x",
                      ("met" if row["e2e_vs_ideal"] >= 2 else "missed") if row["ort_s"] >= 5e-3 else "(< 5 ms)",
                      f"{100 * row.get('ended_early', 0):.0f}%",
                      "-" if row.get("work") is None else f"{100 * row['work']:.0f}%",
                      cpu(row["simple_cpu"]) if row["simple_cpu"] else "-", cpu(row["walk_cpu"]))
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
