"""`lltfi-mlir inject ... --dry-run`: what a campaign would do, without running a trial.

Compiles, instruments and profiles exactly as the campaign would (so the profile is cached for the
real run), then reports the selected static sites and their dynamic instances per layer, function
and opcode, the trials of each run block, and an estimate of the time the trials take.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ..terminal import safe

# Per trial on top of the program's own run: fork, pipes, bookkeeping (measured here: ~1-3 ms).
TRIAL_OVERHEAD_S = 0.003


def plan(campaign, runs: int | None = None, exhaustive: bool = False) -> dict:
    """Prepare `campaign` (build, instrument, profile; no database is kept) and describe its trials."""
    real_db = campaign.db_path
    with tempfile.TemporaryDirectory(prefix="lltfi-dry-run-") as tmp:
        campaign.db_path = Path(tmp) / "plan.db"
        try:
            campaign.prepare().close()
        finally:
            campaign.db_path = real_db
    config = campaign.config
    sites = campaign.instrumented.sites
    counts = np.sum([p.site_counts for p in campaign.profiles], axis=0)
    groups: dict[str, dict[str, list[int]]] = {"layer": defaultdict(lambda: [0, 0]),
                                               "function": defaultdict(lambda: [0, 0]),
                                               "opcode": defaultdict(lambda: [0, 0])}
    for site in sites:
        n = int(counts[site.id])  # dynamic instances (a vector site: one per lane)
        keys = {"layer": f"{site.node} ({site.op_type} {site.layer})" if site.node else "(no operator)",
                "function": site.function, "opcode": site.opcode}
        for kind, key in keys.items():
            groups[kind][key][0] += 1
            groups[kind][key][1] += n
    for target in campaign.weight_targets:  # weight faults: each tensor a site, its elements the instances
        keys = {"layer": f"{target.node} ({target.op_type} {target.layer})", "function": target.tensor,
                "opcode": "weight"}
        for kind, key in keys.items():
            groups[kind][key][0] += 1
            groups[kind][key][1] += target.count
    total = runs if runs is not None else config.runs
    if campaign.weight_targets and (exhaustive or config.draw == "exhaustive"):
        total = campaign.population()  # every (input set, element, bit)
    elif exhaustive or config.draw == "exhaustive":  # every (instance, bit) of the widest register
        from .campaign import WIDTH
        from .plan import exhaustive_size

        total = exhaustive_size([p.total for p in campaign.profiles], max(WIDTH.get(s.type, 64) for s in sites))
    per_block = [0] * len(config.faults)
    if exhaustive or config.draw == "exhaustive":
        per_block[0] = total  # exhaustive trials use the first fault model
    else:
        start = 0
        for number, fault in enumerate(config.faults):  # as plan.block_of numbers them
            runs_here = fault.runs if fault.runs is not None else config.runs
            last = number == len(config.faults) - 1
            per_block[number] = max(0, total - start) if last else max(0, min(runs_here, total - start))
            start += runs_here
    golden = max(p.golden_seconds for p in campaign.profiles)
    share = 0.5 if campaign.engine == "walk" else 1.0  # a walk trial runs the rest of one inference
    seconds = total * (golden * share + TRIAL_OVERHEAD_S) / max(campaign.jobs, 1)
    return {
        "static_sites": len(sites),
        "dynamic_instances": [int(p.total) for p in campaign.profiles],
        "groups": {kind: {k: {"static": v[0], "dynamic": v[1]} for k, v in sorted(g.items())}
                   for kind, g in groups.items()},
        "blocks": [{"block": b, "trials": per_block[b], "type": f.type, "seed": f.seed if f.seed is not None
                    else config.seed, "timeout": f.timeout if f.timeout is not None else campaign.timeout_seconds(),
                    "max_multiple": f.max_multiple, "window": [f.window_start, f.window_len]}
                   for b, f in enumerate(config.faults)],
        "trials": total,
        "golden_seconds": golden,
        "estimated_seconds": seconds,
        "engine": campaign.engine,
        "jobs": campaign.jobs,
        "self_check": campaign.self_check,
        "db": str(real_db),
    }


def print_plan(summary: dict, console: Console) -> None:
    console.print(f"plan: {summary['static_sites']:,} static sites, dynamic instances per input set "
                  f"{', '.join(f'{n:,}' for n in summary['dynamic_instances'])}")
    for kind in ("layer", "function", "opcode"):
        groups = summary["groups"][kind]
        if kind == "layer" and set(groups) == {"(no operator)"}:
            continue
        table = Table(title=f"Selected sites per {kind}", title_justify="left")
        for col in (kind, "static sites", "dynamic instances"):
            table.add_column(col, justify="left" if col == kind else "right")
        for name, g in groups.items():
            table.add_row(safe(name), f"{g['static']:,}", f"{g['dynamic']:,}")
        console.print(table)
    table = Table(title="Trials per run block", title_justify="left")
    for col in ("block", "trials", "fault", "faults per run", "seed", "timeout (s)"):
        table.add_column(col, justify="right")
    for b in summary["blocks"]:
        faults = str(b["max_multiple"]) if b["max_multiple"] == 1 else \
            f"{b['max_multiple']}, {b['window'][0]}..{b['window'][1] or 'end of run'} apart"
        table.add_row(str(b["block"]), f"{b['trials']:,}", b["type"], faults, str(b["seed"]), f"{b['timeout']:g}")
    console.print(table)
    console.print(f"estimated time: {summary['estimated_seconds']:.1f} s for {summary['trials']:,} trials "
                  f"({summary['engine']} engine, {summary['jobs']} jobs, "
                  f"fault-free run {summary['golden_seconds']:.3g} s)")
    console.print(f"dry run: no trial was run; the campaign would write {safe(summary['db'])}", soft_wrap=True)
