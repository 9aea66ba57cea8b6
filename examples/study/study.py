"""The paper's study on the bundled example models, in one command, with a report.

    python examples/study/study.py [-o study-out] [--scale tiny|small|full] [--jobs J] [--seed S] [--no-html]

- RQ0: the same CNN exported by PyTorch's TorchScript exporter (`cnn_fmnist`, opset 17, and
  `cnn_fmnist_legacy`, opset 13), its dynamo exporter (`cnn_fmnist_dynamo`) and the same architecture
  in Keras through tf2onnx (`cnn_fmnist_keras`, trained separately: other weights) -- SDC rates of
  the same campaign, and whether their 95% intervals overlap.
- RQ1: instruction-level vs operator-level injection (same selection, seed and trial count).
- RQ2: the paper's Table II, from layer-traced campaigns.
- SID: SDC rate reduction against run-time overhead, unprotected vs hardened (faults in the
  protected operators' arithmetic, the duplicates and checks included).
- Weight and activation faults (which the paper did not have) vs instruction faults, and the bits
  that matter.

Writes `report.json` (every number), `report.md` (the tables) and, when the HTML report is
available, `report.html` (`lltfi-mlir report` over every database; --no-html skips it). Every campaign is a database
under `db/`, so any number can be looked at again with `lltfi-mlir results` or `replay`. Builds are
cached under `work/`: a second run with a larger --scale recompiles nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lltfi_mlir.dialect_passes.sites import GROUPS, SiteSelector

from lltfi_mlir import Build, CompileOptions, LltfiError, compile_onnx
from lltfi_mlir.campaign import Campaign, CampaignConfig
from lltfi_mlir.compiler import SidOptions

EXAMPLES = Path(__file__).resolve().parents[1]
EXPORTS = {"cnn_fmnist": "PyTorch (TorchScript exporter, opset 17)",
           "cnn_fmnist_legacy": "PyTorch (TorchScript exporter, opset 13)",
           "cnn_fmnist_dynamo": "PyTorch (dynamo exporter, opset 18)",
           "cnn_fmnist_keras": "TF/Keras (tf2onnx; trained separately)"}


@dataclass(frozen=True)
class Scale:
    runs: int                       # trials per campaign
    models: tuple[str, ...]         # RQ1, RQ2, SID and weights
    exports: tuple[str, ...]        # RQ0
    sid: tuple[tuple[str, str], ...]
    timing_rounds: int


SCALES = {
    "tiny": Scale(40, ("cnn_fmnist",), ("cnn_fmnist", "cnn_fmnist_dynamo", "cnn_fmnist_keras"), (("od", "min"),), 1),
    "small": Scale(500, ("cnn_fmnist", "lenet_fmnist"), tuple(EXPORTS), (("od", "min"), ("aid", "and")), 5),
    "full": Scale(3000, ("lenet_fmnist", "cnn_fmnist", "alexnet_cifar", "squeezenet_cifar", "dave2"), tuple(EXPORTS),
                  (("od", "min"), ("aid", "and"), ("acd", "min")), 7),
}


def rate(summary: dict, outcome: str = "sdc") -> dict:
    entry = summary["outcomes"][outcome]
    return {"count": entry["count"], "activated": summary["activated"], "trials": summary["trials"],
            "rate": entry["rate"], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"]}


def overlap(a: dict, b: dict) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def pct(r: dict) -> str:
    if r["rate"] != r["rate"]:
        return "-"
    return f"{100 * r['rate']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"


class Study:
    def __init__(self, out: Path, scale: Scale, seed: int, jobs: int | None) -> None:
        self.out, self.scale, self.seed, self.jobs = out, scale, seed, jobs
        self.databases: list[tuple[str, Path]] = []
        self.seconds: dict[str, float] = {}

    def model(self, name: str) -> Path:
        return EXAMPLES / name / "model.onnx"

    def build(self, name: str, folder: str, options: CompileOptions) -> Build:
        """A build of an example under work/ (compiled once: the examples do not change)."""
        directory = self.out / "work" / name / folder
        if (directory / "manifest.json").exists():
            return Build(directory)
        return compile_onnx(self.model(name), directory, options)

    def run(self, label: str, model: str, config: CampaignConfig, build_dir: Path | None = None) -> dict:
        """One campaign (resumed if its database holds it already); its summary."""
        config = dataclasses.replace(config, seed=self.seed)
        db = self.out / "db" / f"{label}.db"
        inputs = EXAMPLES / model / "inputs"
        if build_dir is not None:
            campaign = Campaign.from_build(build_dir, config, inputs, db=db, jobs=self.jobs)
        else:
            campaign = Campaign.from_onnx(self.model(model), config, inputs, out_dir=self.out / "work" / model,
                                          db=db, jobs=self.jobs)
        summary = campaign.run(self.scale.runs, progress=False)
        self.databases.append((label, db))
        summary["instances_per_inference"] = statistics.mean(p.total for p in campaign.profiles)
        return summary

    # -- the research questions -----------------------------------------------------------------
    def rq0(self) -> dict:
        rows = {}
        for name in self.scale.exports:
            summary = self.run(f"{name}-instruction", name, CampaignConfig())
            rows[name] = {"exporter": EXPORTS[name], "sdc": rate(summary)}
        torch = [n for n in rows if n != "cnn_fmnist_keras"]
        agree = all(overlap(rows[a]["sdc"], rows[b]["sdc"]) for a in torch for b in torch)
        return {"rows": rows, "pytorch_exports_agree": agree,
                "all_agree": all(overlap(rows[a]["sdc"], rows[b]["sdc"]) for a in rows for b in rows)}

    def rq1(self) -> dict:
        rows = {}
        for name in self.scale.models:
            instruction = rate(self.run(f"{name}-instruction", name, CampaignConfig()))
            operator = rate(self.run(f"{name}-operator", name, CampaignConfig(level="operator")))
            ratio = operator["rate"] / instruction["rate"] if instruction["rate"] else None
            rows[name] = {"instruction": instruction, "operator": operator, "operator_over_instruction": ratio,
                          "intervals_overlap": overlap(instruction, operator)}
        return rows

    def rq2(self) -> dict:
        rows = {}
        for name in self.scale.models:
            summary = self.run(f"{name}-traced", name, CampaignConfig(trace_layers=True))
            rows[name] = {"sdc": rate(summary), "table_two": summary.get("propagation")}
        return rows

    def sid(self) -> dict:
        rows = {}
        for name in self.scale.models:
            x = sorted((EXAMPLES / name / "inputs").glob("*.npy"))[0]
            config = CampaignConfig(selector=SiteSelector(operators=frozenset({"Conv"}),
                                                          opcodes=GROUPS["fp"] | GROUPS["sid"]))
            entries = []
            for technique, correction in self.scale.sid:
                options = SidOptions(technique, correction, frozenset({"Conv"}))
                hardened = self.build(name, f"sid-{technique}-{correction}", CompileOptions(sid=options))
                codegen = hardened.manifest["codegen"]
                plain = self.build(name, "build" if codegen == "optimized" else f"plain-{codegen}",
                                   CompileOptions(codegen=codegen))
                base = self.run(f"{name}-sid-none-{codegen}", name, config, plain.directory)
                hard = self.run(f"{name}-sid-{technique}-{correction}", name, config, hardened.directory)
                ratios = [per_inference_us(hardened.executable, x) / per_inference_us(plain.executable, x)
                          for _ in range(self.scale.timing_rounds)]
                b, h = rate(base), rate(hard)
                # SDCs per inference under one fault rate per dynamic instance: the hardened program
                # has more instructions that can fail (the paper's caveat on per-fault rates).
                per_run = (h["count"] / h["trials"] * hard["instances_per_inference"]) / \
                    (b["count"] / b["trials"] * base["instances_per_inference"]) if b["count"] and h["trials"] else None
                entries.append({"technique": technique, "correction": correction, "codegen": codegen,
                                "unprotected": b, "hardened": h,
                                "sdc_reduction": 1 - h["rate"] / b["rate"] if b["rate"] else None,
                                "sdc_per_inference_ratio": per_run,
                                "overhead": statistics.median(ratios) - 1})
            rows[name] = entries
        return rows

    def weights(self) -> dict:
        rows = {}
        for name in self.scale.models:
            instruction = rate(self.run(f"{name}-instruction", name, CampaignConfig()))
            summary = self.run(f"{name}-weights", name, CampaignConfig(target="weights", trace_layers=True))
            by_bit = {bit: rate(group) for bit, group in summary["by_bit"].items() if group["outcomes"]["sdc"]["count"]}
            activations = rate(self.run(f"{name}-activations", name, CampaignConfig(target="activations")))
            rows[name] = {"instruction": instruction, "weights": rate(summary), "activations": activations,
                          "weight_sdc_bits": by_bit,
                          "table_two": summary.get("propagation"),
                          "weights_per_tensor": {t: rate(g) for t, g in summary["by_function"].items()}}
        return rows

    def all(self) -> dict:
        report = {"scale": dataclasses.asdict(self.scale), "seed": self.seed}
        for part in ("rq0", "rq1", "rq2", "sid", "weights"):
            start = time.perf_counter()
            report[part] = getattr(self, part)()
            self.seconds[part] = round(time.perf_counter() - start, 1)
        report["seconds"] = self.seconds
        report["databases"] = {label: str(db) for label, db in self.databases}
        return report


def per_inference_us(exe: Path, x: Path, repeat: int = 20) -> float:
    proc = subprocess.run([str(exe), "--input", str(x), "--repeat", str(repeat), "--time"], capture_output=True,
                          text=True, check=True)
    return float(proc.stderr.split("time_per_inference_us")[1].split()[0])


def markdown(report: dict) -> str:
    runs = report["scale"]["runs"]
    lines = [f"# Study report ({runs} trials per campaign, seed {report['seed']})", "",
             "SDC rates are over activated faults, with 95% Wilson intervals.", "",
             "## RQ0: one CNN, several exporters", "", "| model | exporter | SDC |", "|---|---|---|"]
    for name, row in report["rq0"]["rows"].items():
        lines.append(f"| {name} | {row['exporter']} | {pct(row['sdc'])} |")
    lines += ["", f"PyTorch exports agree within their intervals: {report['rq0']['pytorch_exports_agree']}; "
              f"all (Keras has other weights): {report['rq0']['all_agree']}.", "",
              "## RQ1: instruction level vs operator level", "",
              "| model | instruction SDC | operator SDC | operator / instruction | intervals overlap |",
              "|---|---|---|---|---|"]
    for name, row in report["rq1"].items():
        ratio = row["operator_over_instruction"]
        lines.append(f"| {name} | {pct(row['instruction'])} | {pct(row['operator'])} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} | {row['intervals_overlap']} |")
    lines += ["", "## RQ2: fault propagation (Table II)", "",
              "| model | trials | injected layer changed | one element corrupted | ...by a single bit | "
              "SDC: layers travelled | benign: layers travelled |", "|---|---|---|---|---|---|---|"]
    rq2 = [(name, row["table_two"]) for name, row in report["rq2"].items()]
    rq2 += [(f"{name} (weight faults)", row["table_two"]) for name, row in report["weights"].items()]
    for name, t in rq2:
        if not t:
            lines.append(f"| {name} | 0 | - | - | - | - | - |")
            continue
        travel = [t["travel"][o]["mean_layers_travelled"] for o in ("sdc", "benign")]
        lines.append(f"| {name} | {t['trials']} | {pct(t['injected_layer_changed'])} | "
                     f"{pct(t['one_element_corrupted'])} | {pct(t['single_bit_difference'])} | "
                     + " | ".join("-" if v is None else f"{v:.2f}" for v in travel) + " |")
    lines += ["", "## SID: SDC reduction against overhead (Conv protected)", "",
              "| model | technique | SDC unprotected | SDC hardened | reduction | SDC/inference vs unprotected | "
              "overhead |", "|---|---|---|---|---|---|---|"]
    for name, entries in report["sid"].items():
        for e in entries:
            red = "-" if e["sdc_reduction"] is None else f"{100 * e['sdc_reduction']:.0f}%"
            per = "-" if e["sdc_per_inference_ratio"] is None else f"{e['sdc_per_inference_ratio']:.2f}"
            lines.append(f"| {name} | {e['technique']}-{e['correction']} ({e['codegen']}) | {pct(e['unprotected'])} | "
                         f"{pct(e['hardened'])} | {red} | {per} | {100 * e['overhead']:+.1f}% |")
    lines += ["", "## Weight faults vs instruction faults", "",
              "| model | instruction SDC | weight SDC | activation SDC | weight bits whose flips gave SDCs |",
              "|---|---|---|---|---|"]
    for name, row in report["weights"].items():
        bits = ", ".join(sorted(row["weight_sdc_bits"], key=lambda b: int(b) if b.isdigit() else 99))
        lines.append(f"| {name} | {pct(row['instruction'])} | {pct(row['weights'])} | {pct(row['activations'])} | "
                     f"{bits or '-'} |")
    lines += ["", "Seconds per part: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()), ""]
    return "\n".join(lines)


def write_html(report: dict, out: Path) -> Path | None:
    """The HTML report over every database, when `lltfi-mlir report` is available."""
    try:
        from lltfi_mlir.campaign.html_report import write_report
    except ImportError:
        return None
    labels = list(dict.fromkeys(report["databases"]))
    return write_report([report["databases"][k] for k in labels], out / "report.html", labels=labels,
                        title="lltfi-mlir study")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", default="study-out", help="output folder (default: study-out)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="small",
                        help="tiny: 40 trials, one model (a test); small: 500 trials, two models (default); "
                        "full: 3000 trials, five models")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", "-j", type=int, help="trials run at once (default: one per core)")
    parser.add_argument("--no-html", action="store_true", help="write report.md and report.json only")
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    try:
        report = Study(out, SCALES[args.scale], args.seed, args.jobs).all()
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "report.md").write_text(markdown(report))
        page = None if args.no_html else write_html(report, out)
    except LltfiError as exc:  # e.g. a database of an older build of a model: start in another folder
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}" + (f", {page}" if page else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
