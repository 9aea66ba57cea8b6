"""Campaign results as one dict (the `--json` schema), CSV rows, and rich tables.

Rates of sdc/benign/crash/hang are over activated trials; not_activated is over all trials.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict

from rich.console import Console
from rich.table import Table

from ..terminal import safe
from .database import TRIAL_COLUMNS, CampaignDatabase
from .masking import masking_summary
from .outcomes import OUTCOMES
from .stats import wilson

ACTIVATED_OUTCOMES = ("sdc", "benign", "crash", "hang")
BEFORE_FAULT = "_before_fault"  # suffix of a crash or hang whose fault was never reached


def _group(counter: Counter) -> dict:
    """Counts as the database has them: `activated` is the number of rows with activated = 1, and a
    trial that crashed or hung before its fault was reached (activated = 0: a too-short timeout, a
    program failing without faults) is not activated; it is reported apart, in no rate."""
    trials = sum(counter.values())
    activated = sum(counter[o] for o in ACTIVATED_OUTCOMES)
    before = {o: counter[o + BEFORE_FAULT] for o in ("crash", "hang") if counter[o + BEFORE_FAULT]}
    outcomes = {}
    for o in OUTCOMES:
        n = activated if o != "not_activated" else trials
        count = counter[o] + (sum(before.values()) if o == "not_activated" else 0)
        rate, low, high = wilson(count, n)
        outcomes[o] = {"count": count, "rate": rate, "ci_low": low, "ci_high": high}
    group = {"trials": trials, "activated": activated, "outcomes": outcomes}
    if before:
        group["failed_before_fault"] = before
    return group


def _bit_of(mask: str | None) -> str:
    if not mask:
        return "none"
    value = int(mask, 16)
    return str(value.bit_length() - 1) if value and value & (value - 1) == 0 else "multi"


def _by_block(db: CampaignDatabase) -> dict | None:
    """Outcomes per LLTFI run block (`- run:` entry, its own experiment): block b holds the trials
    numbered after the numOfRuns of the blocks before it (campaign/plan.py block_of)."""
    faults = ((db.get_meta("identity") or {}).get("config") or {}).get("faults") or []
    if len(faults) < 2 or any(f.get("runs") is None for f in faults):
        return None
    ends, total = [], 0
    for f in faults:
        total += f["runs"]
        ends.append(total)
    counters = [Counter() for _ in faults]
    for trial_id, outcome in db.query("SELECT id, outcome FROM trials"):
        block = next((b for b, end in enumerate(ends) if trial_id < end), len(faults) - 1)
        counters[block][outcome] += 1
    out = {}
    for number, (f, counter) in enumerate(zip(faults, counters)):
        entry = _group(counter)
        entry["fault"] = {k: f.get(k) for k in ("type", "runs", "bit", "num_bits", "max_multiple", "window_len",
                                                "window_start", "seed", "timeout", "cycle") if k in f}
        out[f"run {number}"] = entry
    return out


def summarize(db: CampaignDatabase) -> dict:
    sites = {row[0]: row for row in db.query("SELECT id, opcode, node, op_type, layer FROM sites")}
    functions = dict(db.query("SELECT id, function FROM sites"))
    overall: Counter = Counter()
    by_layer: dict[str, Counter] = defaultdict(Counter)
    by_opcode: dict[str, Counter] = defaultdict(Counter)
    by_bit: dict[str, Counter] = defaultdict(Counter)
    by_function: dict[str, Counter] = defaultdict(Counter)
    for outcome, site, mask, activated in db.query("SELECT outcome, site, mask, activated FROM trials"):
        if not activated and outcome in ("crash", "hang"):
            outcome += BEFORE_FAULT
        overall[outcome] += 1
        if site is None or site not in sites:
            continue
        _, opcode, node, op_type, layer = sites[site]
        layer_key = f"{node} ({op_type} {layer})" if node else "(no operator)"
        by_layer[layer_key][outcome] += 1
        by_opcode[opcode][outcome] += 1
        by_bit[_bit_of(mask)][outcome] += 1
        by_function[functions[site]][outcome] += 1
    result = _group(overall)
    result["by_function"] = {k: _group(v) for k, v in sorted(by_function.items())}
    result["by_layer"] = {k: _group(v) for k, v in sorted(by_layer.items())}
    result["by_opcode"] = {k: _group(v) for k, v in sorted(by_opcode.items())}
    result["by_bit"] = {k: _group(v) for k, v in sorted(by_bit.items(), key=lambda kv: (len(kv[0]), kv[0]))}
    masking = masking_summary(db)
    if masking is not None:
        result["masking"] = masking
    blocks = _by_block(db)
    if blocks is not None:
        result["by_block"] = blocks
    for key in ("model", "seed", "profile_summary", "sdc", "thresholds_sdc", "target", "nonfinite_golden"):
        value = db.get_meta(key)
        if value is not None:
            result[key] = value
    from .propagation import table_two

    propagation = table_two(db)
    if propagation is not None:
        result["propagation"] = propagation
    thresholds = db.get_meta("thresholds")
    if thresholds:
        activated = [d for (d,) in db.query("SELECT deviation FROM trials WHERE outcome IN ('sdc', 'benign')")]
        n = result["activated"]
        result["sdc_by_threshold"] = {}
        for t in thresholds:
            k = sum(1 for d in activated if d is not None and d > t)
            rate, low, high = wilson(k, n)
            result["sdc_by_threshold"][str(t)] = {"count": k, "rate": rate, "ci_low": low, "ci_high": high}
    return result


def _pct(entry: dict) -> str:
    if entry["rate"] != entry["rate"]:
        return "-"
    return f"{100 * entry['rate']:.1f}% [{100 * entry['ci_low']:.1f}, {100 * entry['ci_high']:.1f}]"


def _table(title: str, groups: dict) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("trials", justify="right")
    table.add_column("activated", justify="right")
    for o in ACTIVATED_OUTCOMES:
        table.add_column(o.upper() if o == "sdc" else o, justify="right")
    for name, g in groups.items():
        rates = [_pct(g["outcomes"][o]) for o in ACTIVATED_OUTCOMES]
        table.add_row(safe(name), str(g["trials"]), str(g["activated"]), *rates)
    return table


def print_summary(summary: dict, console: Console, details: bool = True) -> None:
    console.print(_table("Outcomes (rates over activated faults, 95% Wilson intervals)", {"all": summary}))
    na = summary["outcomes"]["not_activated"]
    console.print(f"not activated: {na['count']} of {summary['trials']} trials")
    if summary.get("failed_before_fault"):
        failed = ", ".join(f"{n} {o}" for o, n in summary["failed_before_fault"].items())
        console.print(f"warning: {failed} before the fault was injected (counted as not activated, in no rate): "
                      "a timeout shorter than a fault-free run, or a program that fails without faults")
    if summary.get("nonfinite_golden"):
        console.print(f"warning: the fault-free outputs hold {sum(summary['nonfinite_golden'].values())} NaN or Inf "
                      "value(s) (run with --allow-nonfinite-golden): faults that reach them look benign")
    if "sdc_by_threshold" in summary:
        table = Table(title="SDC by deviation threshold", title_justify="left")
        table.add_column("threshold")
        table.add_column("SDC", justify="right")
        for t, entry in summary["sdc_by_threshold"].items():
            table.add_row(f"> {t}", _pct(entry))
        console.print(table)
    if "propagation" in summary:
        p = summary["propagation"]
        table = Table(title=f"Fault propagation (paper Table II), {p['trials']} completed activated trials",
                      title_justify="left")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("injected layer's output changed", _pct(p["injected_layer_changed"]))
        table.add_row("exactly one element of it corrupted", _pct(p["one_element_corrupted"]))
        table.add_row("...that element differs by a single bit", _pct(p["single_bit_difference"]))
        for outcome, t in p["travel"].items():
            mean = t["mean_layers_travelled"]
            table.add_row(f"{outcome}: mean layers travelled", "-" if mean is None else f"{mean:.2f}")
            table.add_row(f"{outcome}: reached the last layer", _pct(t["reached_last_layer"]))
        console.print(table)
    if "masking" in summary:
        m = summary["masking"]
        line = (f"ended early (masked): {m['ended_early']} of {m['trials']} trials "
                f"({100 * m['ended_early'] / m['trials']:.1f}%); early ending {safe(m['early_end']['reason'])}")
        if "mean_work" in m:
            line += (f"; work per trial: {100 * m['mean_work']:.1f}% of an inference "
                     f"({100 * m['mean_work_without_early_end']:.1f}% without early ending)")
        console.print(line, soft_wrap=True)
        if details and m["by_operator"]:
            table = Table(title="Masked at (the operator after which the state was golden again)",
                          title_justify="left")
            table.add_column("operator")
            table.add_column("trials", justify="right")
            table.add_column("of ended early", justify="right")
            for name, count in list(m["by_operator"].items())[:20]:
                table.add_row(safe(name), str(count), f"{100 * count / m['ended_early']:.1f}%")
            console.print(table)
    if "by_block" in summary:
        console.print(_table("Per run block (runOption entry, its own experiment)",
                             {f"{name}: {g['fault'].get('type')}": g for name, g in summary["by_block"].items()}))
    if details:
        if set(summary["by_layer"]) != {"(no operator)"}:
            console.print(_table("Per layer (operator, type, layer number)", summary["by_layer"]))
        if summary.get("target") in ("weights", "activations"):  # memory faults: the sites are tensors
            console.print(_table("Per tensor", summary["by_function"]))
        elif len(summary["by_function"]) > 1 or "(no operator)" in summary["by_layer"]:
            console.print(_table("Per function", summary["by_function"]))
        console.print(_table("Per opcode", summary["by_opcode"]))
        console.print(_table("Per bit position", summary["by_bit"]))


def print_replay_hint(db: CampaignDatabase, console: Console) -> None:
    sdc = [i for (i,) in db.query("SELECT id FROM trials WHERE outcome = 'sdc' ORDER BY id LIMIT 5")]
    if sdc:
        console.print(f"SDC trials include {', '.join(map(str, sdc))}; replay one with: "
                      f"lltfi-mlir replay {safe(db.path)} --trial {sdc[0]}", soft_wrap=True)


def trials_csv(db: CampaignDatabase) -> str:
    out = io.StringIO()
    columns = [c for c in TRIAL_COLUMNS if c != "output" and db.has_column("trials", c)]
    writer = csv.writer(out)
    writer.writerow(columns + ["node", "op_type", "layer", "opcode"])
    sites = {row[0]: row[1:] for row in db.query("SELECT id, node, op_type, layer, opcode FROM sites")}
    for row in db.query(f"SELECT {', '.join(columns)} FROM trials ORDER BY id"):
        site = row[columns.index("site")]
        writer.writerow(list(row) + list(sites.get(site, (None, None, None, None))))
    return out.getvalue()
