"""Cost of instrumentation, profiling and campaigns, per example model, measured side by side.

For each model (--codegen optimized unless --codegen reference; default selection: floating-point
arithmetic in the operators):
  plain       one inference of the uninstrumented program
  instr       one inference of the instrumented program, not injecting (golden mode); also as
              a callgrind instruction count (deterministic, unlike time on a shared machine)
  profile     the profile is a golden run of the instrumented program: every versioning unit (loop
              nest or block) counts its entries, and per-site counts are entries x static
              instances per entry; so profiling costs what instrumentation costs (instr column)
  check run   the one-off verification run per input that sends every selected instance
              through the C hooks (must agree with the counters; not part of the profile's cost)
  campaign    trials per second with --jobs J against the ideal J / plain; the share of trials
              ended early (masked: every operator output still to be read equals golden), and
              the mean work per trial as a fraction of one inference (selected instances from
              the injection point to the masking operator or the end; without early ending)
Plain and instrumented runs are interleaved (R rounds) and the medians compared, because separate
timings on these shared machines drift by tens of percent.

    python benchmarks/overhead.py [--rounds 7] [--repeat 30] [--trials 300] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from lltfi_mlir.dialect_passes.sites import SiteSelector
from rich.console import Console
from rich.table import Table

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.campaign.profile import run_profile, write_inputs_list
from lltfi_mlir.instrument import instrument_build

ROOT = Path(__file__).resolve().parents[1]


def per_inference_us(exe: Path, inputs: list[Path], repeat: int) -> float:
    args = [str(exe)] + [a for p in inputs for a in ("--input", str(p))] + ["--repeat", str(repeat), "--time"]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return float(proc.stderr.split("time_per_inference_us")[1].split()[0])


def instructions_per_inference(exe: Path, inputs: list[Path]) -> int | None:
    """Deterministic cost: callgrind's instruction count, (3 inferences - 1 inference) / 2."""
    if not shutil.which("valgrind"):
        return None
    counts = []
    for repeat in (1, 3):
        args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", str(exe)]
        args += [a for p in inputs for a in ("--input", str(p))] + ["--repeat", str(repeat)]
        proc = subprocess.run(args, capture_output=True, text=True, check=True)
        counts.append(int(proc.stderr.split("refs:")[1].split()[0].replace(",", "")))
    return (counts[1] - counts[0]) // 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=30, help="inferences per timed run")
    parser.add_argument("--trials", type=int, default=300, help="campaign trials per model")
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--models", nargs="*", help="example names (default: all)")
    parser.add_argument("--codegen", choices=["optimized", "reference"], default="optimized")
    args = parser.parse_args()
    console = Console(width=160)
    tmp = Path(tempfile.mkdtemp(prefix="lltfi-overhead-"))
    table = Table(title=f"instrumentation overhead (--codegen {args.codegen}; medians of {args.rounds} interleaved "
                        f"rounds) and campaign throughput (jobs={args.jobs})")
    for col in ["model", "selected instances", "plain us", "instr us", "instr overhead", "instructions +",
                "check run us", "trials/s", "ideal trials/s", "of ideal", "ended early", "work/trial"]:
        table.add_column(col, justify="right")
    models = sorted(ROOT.glob("examples/*/model.onnx"))
    if args.models:
        models = [m for m in models if m.parent.name in args.models]
    for model in models:
        name = model.parent.name
        inputs = [sorted((model.parent / "inputs").glob("*.npy"))[0]]
        with console.status(f"{name}: compile and instrument"):
            build = compile_onnx(model, tmp / name / "build", CompileOptions(codegen=args.codegen))
            inst = instrument_build(build, SiteSelector())
        plain, instr = [], []
        with console.status(f"{name}: timing"):
            for _ in range(args.rounds):
                plain.append(per_inference_us(build.executable, inputs, args.repeat))
                instr.append(per_inference_us(inst.executable, inputs, args.repeat))
            listing = write_inputs_list([inputs], tmp / name / "inputs.txt")
            profiles = [run_profile(inst.executable, listing, inst.units, repeat=1)[0] for _ in range(args.rounds)]
        p_us, i_us = statistics.median(plain), statistics.median(instr)
        with console.status(f"{name}: counting instructions with callgrind"):
            p_ins = instructions_per_inference(build.executable, inputs)
            i_ins = instructions_per_inference(inst.executable, inputs)
        ins = f"{100 * (i_ins / p_ins - 1):+.2f}%" if p_ins else "no valgrind"
        check_us = 1e6 * statistics.median(p.check_seconds for p in profiles)
        with console.status(f"{name}: campaign of {args.trials} trials"):
            campaign = Campaign.from_build(build.directory, CampaignConfig(seed=1), model.parent / "inputs",
                                           db=tmp / name / "c.db", jobs=args.jobs)
            summary = campaign.run(args.trials, progress=False)
        masking = summary.get("masking") or {}
        early = f"{100 * masking['ended_early'] / masking['trials']:.0f}%" if masking else "-"
        work = (f"{100 * masking['mean_work']:.0f}% ({100 * masking['mean_work_without_early_end']:.0f}%)"
                if "mean_work" in masking else "-")
        rate = campaign.last_trials / campaign.last_run_seconds
        ideal = args.jobs / (p_us * 1e-6)
        overhead = f"{100 * (i_us / p_us - 1):+.1f}%"
        table.add_row(name, f"{profiles[0].total:,}", f"{p_us:.0f}", f"{i_us:.0f}", overhead, ins,
                      f"{check_us:.0f}", f"{rate:.0f}", f"{ideal:.0f}",
                      f"{100 * rate / ideal:.0f}%", early, work)
    console.print(table)


if __name__ == "__main__":
    main()
