"""Selective instruction duplication, per example model and per technique x correction.

Faults go into the protected operators' floating-point arithmetic (default: Conv), in the
unprotected program and in each hardened one (where the duplicates, compares and corrections are
fault sites too: the `sid` group). Printed side by side from one run: SDC rate per fault with its
95% interval and the % reduction; the selected dynamic instances per inference; the expected SDCs
per inference under a uniform per-instruction fault rate (SDC per trial x dynamic instances, in
units of that rate), and its ratio to the unprotected program's, which is the paper's question:
hardening adds instructions that can fail too, so a lower rate per fault can still mean more SDCs
per run; and the run-time overhead of the hardened program (medians of interleaved timings).

    python benchmarks/sid.py [--models lenet_fmnist cnn_fmnist] [--trials 1000] [--operators Conv]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from lltfi_mlir.dialect_passes.sites import GROUPS, SiteSelector
from rich.console import Console
from rich.table import Table

from lltfi_mlir import CompileOptions, compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.campaign.stats import wilson
from lltfi_mlir.compiler import SidOptions

ROOT = Path(__file__).resolve().parents[1]
COMBINATIONS = [("aid", "and"), ("aid", "min"), ("acd", "and"), ("acd", "min"), ("od", "min")]


def per_inference_us(exe: Path, x: Path, repeat: int) -> float:
    proc = subprocess.run([str(exe), "--input", str(x), "--repeat", str(repeat), "--time"], capture_output=True,
                          text=True, check=True)
    return float(proc.stderr.split("time_per_inference_us")[1].split()[0])


def instances(campaign: Campaign) -> float:
    """Selected dynamic instances per inference (mean over the input sets)."""
    return statistics.mean(p.total for p in campaign.profiles)


def expected_sdcs(summary: dict, per_inference: float) -> tuple[float, float, float]:
    """Expected SDCs per inference when every selected dynamic instance fails at the same small rate
    (in units of that rate): the chance that a fault is an SDC, times how many instances can fail;
    with the 95% Wilson interval of that chance."""
    rate, low, high = wilson(summary["outcomes"]["sdc"]["count"], summary["trials"])
    return rate * per_inference, low * per_inference, high * per_inference


def fmt_expected(value: tuple[float, float, float]) -> str:
    return f"{value[0]:,.0f} [{value[1]:,.0f}, {value[2]:,.0f}]"


def pct(entry: dict) -> str:
    return f"{100 * entry['rate']:.2f}% [{100 * entry['ci_low']:.2f}, {100 * entry['ci_high']:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["lenet_fmnist", "cnn_fmnist", "alexnet_cifar"])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--operators", default="Conv", help="comma-separated ONNX op types to protect and inject")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=160)
    operators = frozenset(args.operators.split(","))
    config = CampaignConfig(selector=SiteSelector(operators=operators, opcodes=GROUPS["fp"] | GROUPS["sid"]),
                            seed=args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="lltfi-sid-"))
    table = Table(title=f"SID on {args.operators}: faults in {args.operators} arithmetic, {args.trials} trials "
                        "each (llc -O0), overhead = hardened / unprotected inference time")
    for col in ["model", "technique", "correction", "SDC/fault unprotected", "SDC/fault hardened", "reduction",
                "instances", "SDCs/inference x rate [95%]", "vs unprotected", "overhead"]:
        table.add_column(col, justify="right")
    for name in args.models:
        model = ROOT / "examples" / name / "model.onnx"
        inputs = model.parent / "inputs"
        x = sorted(inputs.glob("*.npy"))[0]
        with console.status(f"{name}: unprotected campaign"):
            plain = compile_onnx(model, tmp / name / "plain", CompileOptions(codegen="reference"))
            campaign = Campaign.from_build(plain.directory, config, inputs, db=tmp / name / "plain.db")
            base_summary = campaign.run(args.trials, progress=False)
            base, base_instances = base_summary["outcomes"]["sdc"], instances(campaign)
            base_expected = expected_sdcs(base_summary, base_instances)
        table.add_row(name, "none", "-", pct(base), "", "", f"{base_instances:,.0f}", fmt_expected(base_expected),
                      "1.00", "")
        for technique, correction in COMBINATIONS:
            label = f"{technique}-{correction}"
            with console.status(f"{name}: {label}"):
                sid = SidOptions(technique, correction, operators)
                # the unprotected program's code generation: the same loops, so the same instances per fault site
                hard = compile_onnx(model, tmp / name / label, CompileOptions(codegen="reference", sid=sid))
                campaign = Campaign.from_build(hard.directory, config, inputs, db=tmp / name / f"{label}.db")
                summary = campaign.run(args.trials, progress=False)
                result, hard_instances = summary["outcomes"]["sdc"], instances(campaign)
                expected = expected_sdcs(summary, hard_instances)
                ratios = []
                for _ in range(args.rounds):
                    p = per_inference_us(plain.executable, x, 20)
                    h = per_inference_us(hard.executable, x, 20)
                    ratios.append(h / p)
            reduction = (1 - result["rate"] / base["rate"]) * 100 if base["rate"] else float("nan")
            table.add_row(name, technique, correction, pct(base), pct(result), f"{reduction:.1f}%",
                          f"{hard_instances:,.0f}", fmt_expected(expected),
                          f"{expected[0] / base_expected[0]:.2f}" if base_expected[0] else "n/a",
                          f"{100 * (statistics.median(ratios) - 1):+.1f}%")
    console.print(table)


if __name__ == "__main__":
    main()
