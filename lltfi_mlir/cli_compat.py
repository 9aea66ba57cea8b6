"""Commands for users coming from LLTFI/LLFI: `check-config`, `sites`, and what `inject` adds
after a campaign for LLTFI's `verbose`/`debugTrace` and `generateCDFG` keys.

Kept out of cli.py so that module stays a dispatcher; `cli.main` also hands `cc` and `c++` to
`frontend/cc_wrapper.py` before argument parsing (compiler flags are not lltfi-mlir options).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .terminal import plain, safe


def add_compat_parsers(sub) -> None:
    p = sub.add_parser("check-config", help="validate a YAML configuration (LLTFI input.yaml or native)",
                       description="Read a configuration as 'inject -c' would, without a model: exit status 0 and "
                       "a summary of what it selects and runs, or 2 and the file:line of the first problem. LLTFI "
                       "keys without a counterpart here are listed as notes.")
    p.add_argument("config", help="YAML configuration file")
    p = sub.add_parser("sites", help="list every static instruction of a build with its index (LLFI's llfiindex)",
                       description="List the static instructions that can be fault sites: index (LLFI's llfiindex, "
                       "used by customInstselector llfiindex -injecttoindex=N, fi_index and select.instructions), "
                       "opcode, type, registers, function, source line, ONNX operator and layer. With -c, the "
                       "registers the configuration selects.")
    p.add_argument("build", help="build directory written by 'lltfi-mlir compile'")
    p.add_argument("-c", "--config", help="mark what this configuration selects")
    p.add_argument("--selected", action="store_true", help="only the instructions the configuration selects")


def _describe_selector(selector) -> list[str]:
    from .dialect_passes.sites import DEFAULT_OPCODES, GROUPS, SiteSelector

    lines = []
    default = SiteSelector()
    if selector.opcodes != default.opcodes:
        named = [g for g, members in GROUPS.items() if members == selector.opcodes]
        lines.append(f"opcodes: {named[0] if named else ', '.join(sorted(selector.opcodes))}")
    else:
        lines.append(f"opcodes: the default floating-point arithmetic ({len(DEFAULT_OPCODES)} opcodes)")
    for field in ("exclude_opcodes", "operators", "exclude_operators", "nodes", "exclude_nodes", "functions",
                  "exclude_functions", "sources", "instructions", "trace"):
        value = getattr(selector, field)
        if value:
            lines.append(f"{field}: {', '.join(map(str, sorted(value)))}")
    if selector.layers:
        lines.append("layers: " + ", ".join(f"{t}:{n}" for t, n in sorted(selector.layers)))
    if selector.lines:
        lines.append(f"lines: {selector.lines[0]}..{selector.lines[1]}")
    lines.append(f"register: {selector.register}; inside ONNX operators only: {selector.require_operator}")
    return lines


def cmd_check_config(args: argparse.Namespace, console: Console) -> int:
    from .campaign.config import load_config

    config = load_config(args.config)
    console.print(f"{safe(args.config)}: valid", soft_wrap=True)
    for line in _describe_selector(config.selector):
        console.print(f"  select {safe(line)}", soft_wrap=True)
    table = Table(title="Run blocks (each its own experiment)", title_justify="left")
    for col in ("block", "runs", "fault", "bit", "bits", "faults per run", "seed", "timeout (s)", "fi_cycle"):
        table.add_column(col, justify="right")
    for number, f in enumerate(config.faults):
        faults = str(f.max_multiple) if f.max_multiple == 1 else \
            f"{f.max_multiple}, {f.window_start}..{f.window_len or 'end of run'} apart"
        table.add_row(str(number), str(f.runs if f.runs is not None else config.runs), f.type,
                      "random" if f.bit is None else str(f.bit), str(f.num_bits), faults,
                      str(f.seed if f.seed is not None else config.seed),
                      "auto" if (f.timeout or config.timeout) is None else f"{f.timeout or config.timeout:g}",
                      "-" if f.cycle is None else str(f.cycle))
    console.print(table)
    sdc = config.sdc
    extra = []
    if not sdc.stdout:
        extra.append("stdout ignored")
    if sdc.files:
        extra.append(f"files {', '.join(sdc.files)}")
    if sdc.ignore_lines:
        extra.append(f"ignoring lines matching {', '.join(sdc.ignore_lines)}")
    console.print(f"  sdc: {safe(sdc.criterion)}{'; ' + safe('; '.join(extra)) if extra else ''}", soft_wrap=True)
    tracing = [name for name, on in (("layers", config.trace_layers), (f"instructions ({config.max_trace})",
                                                                       config.max_trace), ("graphs", config.graphs))
               if on]
    console.print(f"  campaign: {config.runs} trials, draw {config.draw}, level {config.level}, tracing "
                  f"{', '.join(tracing) or 'off'}{', verbose' if config.verbose else ''}")
    for note in config.notes:
        console.print(f"note: {safe(note)}", soft_wrap=True)
    return 0


def cmd_sites(args: argparse.Namespace, console: Console) -> int:
    import dataclasses

    from .build import Build
    from .campaign.config import load_config
    from .dialect_passes.sites import DEFAULT_OPCODES, GROUPS
    from .site_list import list_instructions

    build = Build(args.build)
    selector = None
    if args.config:
        selector = load_config(args.config).selector
        if build.is_program and selector.require_operator:  # as a campaign does for programs
            opcodes = GROUPS["all"] if selector.opcodes == DEFAULT_OPCODES else selector.opcodes
            selector = dataclasses.replace(selector, require_operator=False, opcodes=opcodes)
    rows = list_instructions(build, selector)
    if args.selected:
        rows = [r for r in rows if r.selected]
    columns = ["index", "opcode", "type", "registers", "function", "source", "operator", "op_type", "layer"]
    if selector is not None:
        columns.append("selected")
    lines = ["\t".join(columns)]
    for r in rows:
        cells = [r.index, r.opcode, r.type, ",".join(r.registers), r.function, r.source or "-", r.node or "-",
                 r.op_type or "-", "-" if r.layer is None else r.layer]
        if selector is not None:
            cells.append(",".join(r.selected) or "-")
        lines.append("\t".join(plain(c) for c in cells))
    import sys

    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def after_campaign(campaign, summary: dict, console: Console) -> None:
    """LLFI's verbose (a per-block outcome summary) and LLTFI's generateCDFG (graphs of traced trials)."""
    config = campaign.config
    if config.verbose:
        blocks = summary.get("by_block") or {"run 0": summary}
        for name, g in blocks.items():
            counts = ", ".join(f"{o} {g['outcomes'][o]['count']}" for o in g["outcomes"])
            console.print(f"{name}: {g['trials']} trials: {counts}")
    if config.graphs:
        from .campaign.database import CampaignDatabase
        from .campaign.propagation import write_graphs

        out = Path(str(campaign.db_path) + ".graphs")
        db = CampaignDatabase(campaign.db_path, create=False)
        try:
            trials = [t for (t,) in db.query("SELECT id FROM trials WHERE activated = 1 ORDER BY id LIMIT 5")]
        finally:
            db.close()
        written = [p for t in trials for p in write_graphs(campaign.db_path, t, out / f"trial-{t}")]
        console.print(f"generateCDFG: {len(written)} graph file(s) of {len(trials)} traced trial(s) in {safe(out)}",
                      soft_wrap=True)


COMPAT_COMMANDS = {"check-config": cmd_check_config, "sites": cmd_sites}
