"""Throughput of PyTorchFI (neuron-level) beside lltfi-mlir (instruction-level) on the same LeNet-5.

Model examples/lenet_fmnist/model.onnx, its 5 test inputs; 1,000 single-bit-flip trials per tool,
measured side by side in one run. SDC = the top-1 class differs from the fault-free run's. The two
tools inject different fault models (a flipped bit in one Conv/Linear output neuron vs a flipped bit
in the result of one executed floating-point instruction), so their SDC rates are not comparable.

Both tools (PyTorchFI needs torch==2.13.0, the CPU wheel, and pytorchfi from PyPI):
    python3 -m venv /work/venv-torch && /work/venv-torch/bin/pip install torch==2.13.0 onnx numpy pytorchfi
    /work/venv-torch/bin/pip install -e .
    /work/venv-torch/bin/python benchmarks/vs_pytorchfi.py [--trials 1000] [--seed 0]
lltfi-mlir only (the project's Python, no torch: the PyTorchFI row is skipped with a message):
    python3 benchmarks/vs_pytorchfi.py
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lltfi_mlir.campaign import Campaign, CampaignConfig, SdcConfig
from lltfi_mlir.campaign.outcomes import SdcJudge
from lltfi_mlir.campaign.stats import wilson

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lenet_fmnist"
MODEL, INPUTS = EXAMPLE / "model.onnx", EXAMPLE / "inputs"


def pytorchfi_trials(xs: list[np.ndarray], reference: list[np.ndarray], trials: int, seed: int) -> dict:
    import onnx
    import pytorchfi
    import torch
    from onnx import numpy_helper
    from pytorchfi.core import fault_injection
    from pytorchfi.neuron_error_models import random_neuron_location
    from torch import nn

    torch.set_num_threads(1)
    model = nn.Sequential(  # examples/train_lenet_cnn.py: lenet5()
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)).eval()
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(MODEL)).graph.initializer]
    params = list(model.parameters())
    if [tuple(w.shape) for w in weights] != [tuple(p.shape) for p in params]:
        sys.exit("ONNX initializers do not match the LeNet-5 parameters in order and shape")
    with torch.no_grad():
        for p, w in zip(params, weights):
            p.copy_(torch.tensor(w))
        xt = [torch.from_numpy(x) for x in xs]
        golden = [model(x).numpy() for x in xt]
    worst = max(float(np.max(np.abs(g - r))) for g, r in zip(golden, reference))
    if worst > 1e-4:
        sys.exit(f"torch LeNet-5 differs from lltfi-mlir's native output by {worst:.2e} (> 1e-4): aborting")

    # One-time setup (not timed): pytorchfi profiles the layer output shapes with a dummy input.
    pfi = fault_injection(model, batch_size=1, input_shape=[1, 28, 28], layer_types=[nn.Conv2d, nn.Linear])
    bit = [0]

    def flip_float32_bit(module, inputs, output):  # a pytorchfi custom neuron hook
        if pfi.get_current_layer() == pfi.corrupt_layer[0]:
            index = tuple(d for d in (0, pfi.corrupt_dim1[0], pfi.corrupt_dim2[0], pfi.corrupt_dim3[0])
                          if d is not None)
            output.view(torch.int32)[index] ^= (1 << bit[0]) if bit[0] < 31 else -(1 << 31)
        pfi.updateLayer()

    judge = SdcJudge(SdcConfig(criterion="top1"))
    random.seed(seed)  # pytorchfi's random_neuron_location draws from the `random` module
    sdc = 0
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(trials):
            i, bit[0] = random.randrange(len(xs)), random.randrange(32)
            layer, c, h, w = random_neuron_location(pfi)  # uniform layer, then uniform neuron in it
            faulty = pfi.declare_neuron_fi(batch=[0], layer_num=[layer], dim1=[c], dim2=[h], dim3=[w],
                                           function=flip_float32_bit)  # deep-copies the model + hooks
            sdc += judge.is_sdc([golden[i]], [faulty(xt[i]).numpy()])
    seconds = time.perf_counter() - start
    version = getattr(pytorchfi, "__version__", None) or _dist_version("pytorchfi")
    return {"tool": f"PyTorchFI {version}", "seconds": seconds, "torch": torch.__version__,
            "model": "neuron: float32 Conv/Linear output", "trials": trials, "sdc": sdc, "over": trials}


def _dist_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def lltfi_trials(campaign: Campaign, trials: int) -> dict:
    start = time.perf_counter()
    summary = campaign.run(trials, progress=False)
    seconds = time.perf_counter() - start
    activated = summary["activated"]
    return {"tool": f"lltfi-mlir jobs={campaign.jobs}", "seconds": seconds, "trials": summary["trials"],
            "model": "instruction: FP op result", "sdc": summary["outcomes"]["sdc"]["count"],
            "over": activated, "loop": getattr(campaign, "last_run_seconds", None),
            "extra": {o: summary["outcomes"][o]["count"] for o in ("crash", "hang", "not_activated")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    xs = [np.load(p) for p in sorted(INPUTS.glob("*.npy"), key=lambda p: (len(p.stem), p.stem))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vs-pytorchfi-") as tmp:
        campaigns, setup = [], []
        for jobs in dict.fromkeys((1, os.cpu_count() or 1)):
            start = time.perf_counter()
            campaign = Campaign.from_onnx(MODEL, CampaignConfig(seed=args.seed), inputs=INPUTS,
                                          out_dir=Path(tmp) / "out", jobs=jobs, db=Path(tmp) / f"jobs{jobs}.db")
            campaign.prepare().close()  # compile (first only), instrument (cached), profile the 5 inputs
            setup.append(time.perf_counter() - start)
            campaigns.append(campaign)
        reference = [campaigns[0].build.run([x])[0] for x in xs]
        try:
            import pytorchfi  # noqa: F401
            import torch
            if torch.__version__.split("+")[0] != "2.13.0":
                raise ImportError(f"torch {torch.__version__}")
        except ImportError as exc:
            console.print(f"[yellow]PyTorchFI skipped ({exc}): needs torch==2.13.0 + pytorchfi (see the "
                          "docstring); measuring lltfi-mlir only.[/]")
        else:
            rows.append(pytorchfi_trials(xs, reference, args.trials, args.seed))
        rows += [lltfi_trials(c, args.trials) for c in campaigns]

    table = Table(title=f"LeNet-5 (Fashion-MNIST), {len(xs)} inputs, single-bit flips, seed {args.seed}, "
                        f"{os.cpu_count()} CPUs")
    for column in ("tool", "fault model", "trials", "seconds", "trials/s", "SDC rate [95% CI]"):
        table.add_column(column, justify="left" if column in ("tool", "fault model") else "right")
    for r in rows:
        rate, low, high = wilson(r["sdc"], r["over"])
        over = "" if r["over"] == r["trials"] else f" of {r['over']} activated"
        table.add_row(r["tool"], r["model"], str(r["trials"]), f"{r['seconds']:.2f}",
                      f"{r['trials'] / r['seconds']:.0f}",
                      f"{100 * rate:.1f}% [{100 * low:.1f}, {100 * high:.1f}]{over}")
    console.print(table)
    notes = [f"{r['tool']} (torch {r['torch']}, torch.set_num_threads(1)): timed = the trial loop only (per "
             "trial: draw a site, declare_neuron_fi, which deep-copies the model and sets hooks, one batch-1 "
             "inference, top-1 check); model build, weight loading and pytorchfi's shape profiling excluded."
             for r in rows if "torch" in r]
    notes += [
        "lltfi-mlir: timed = wall time of Campaign.run: it re-profiles the 5 inputs (instrumentation is cached), "
        "then runs the trials on fork-servers and stores them in SQLite. Setup before it, not in the table: "
        + ", ".join(f"jobs={c.jobs} {s:.2f} s" for c, s in zip(campaigns, setup))
        + " (the first includes compiling the ONNX model and instrumenting it).",
    ]
    for r in rows[-len(campaigns):]:
        loop = f"trial loop alone {r['loop']:.2f} s; " if r.get("loop") else ""
        notes.append(f"{r['tool']}: {loop}" + ", ".join(f"{k}={v}" for k, v in r["extra"].items())
                     + "; its SDC rate is over activated trials (crashes/hangs are not SDCs).")
    notes.append("The fault models differ (neuron output vs instruction result; PyTorchFI picks a layer "
                 "uniformly, lltfi-mlir a dynamic instruction uniformly): compare throughput, not SDC rates.")
    for note in notes:
        console.print(f"- {note}", highlight=False)


if __name__ == "__main__":
    main()
