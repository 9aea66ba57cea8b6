"""How faults travel: the paper's Table II from layer traces, and Graphviz graphs of one trial.

Table II (per model, over activated trials that ran to completion): how often the injected layer's
output changes; how often exactly one element of it does; how often that element differs from the
golden value by one bit; and how far the corruption travels (last layer still corrupted), split by
outcome.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import graphviz
import numpy as np

from ..errors import BuildError, UsageError
from ..terminal import plain
from .database import CampaignDatabase
from .stats import wilson


def _finite_max(values: np.ndarray) -> float | None:
    if not values.size:
        return None
    return float(np.max(values)) if np.all(np.isfinite(values)) else float("inf")


def layer_rows(trial_id: int, traced: list[dict], node_index: dict[str, int], n_outputs: int, golden_all: list,
               faulty_all: list) -> list[tuple]:
    """Per traced layer whose output differs from the golden run: how, where, by how much."""
    rows = []
    n = n_outputs
    for spec, g, f in zip(traced, golden_all[n:], faulty_all[n:]):
        bits = np.dtype(f"u{g.dtype.itemsize}")  # compare bit patterns, whatever the element type
        gb, fb = g.reshape(-1).view(bits), f.reshape(-1).view(bits)
        diff = np.flatnonzero(gb != fb)
        if not diff.size:
            continue
        with np.errstate(all="ignore"):
            gv, fv = g.reshape(-1)[diff].astype(np.float64), f.reshape(-1)[diff].astype(np.float64)
            absd = np.abs(fv - gv)
            rel = absd / np.abs(gv)
        single = int(diff.size == 1 and bin(int(gb[diff[0]] ^ fb[diff[0]])).count("1") == 1)
        shown = diff[:16]
        rows.append((trial_id, spec["node"], node_index.get(spec["node"], -1), int(diff.size), int(gb.size),
                     json.dumps(shown.tolist()), json.dumps([repr(float(v)) for v in g.reshape(-1)[shown]]),
                     json.dumps([repr(float(v)) for v in f.reshape(-1)[shown]]),
                     _finite_max(absd), _finite_max(rel[np.isfinite(rel)]), single))
    return rows


def _rate(k: int, n: int) -> dict:
    rate, low, high = wilson(k, n)
    return {"count": k, "of": n, "rate": rate, "ci_low": low, "ci_high": high}


def table_two(db: CampaignDatabase) -> dict | None:
    rows = db.query("SELECT trial, node, node_index, corrupted, single_bit FROM layer_trace")
    graph = db.get_meta("graph") or []
    if not graph or not db.get_meta("trace_layers"):
        return None
    index = {n["name"]: i for i, n in enumerate(graph)}
    last_node = len(graph) - 1
    per_trial: dict[int, dict[str, tuple]] = defaultdict(dict)
    for trial, node, node_index, corrupted, single in rows:
        per_trial[trial][node] = (node_index, corrupted, single)
    trials = db.query("SELECT t.id, t.outcome, s.node FROM trials t JOIN sites s ON s.id = t.site "
                      "WHERE t.outcome IN ('sdc', 'benign')")
    changed = one = single = 0
    travel: dict[str, list[int]] = {"sdc": [], "benign": []}
    reach: dict[str, int] = {"sdc": 0, "benign": 0}
    for trial, outcome, node in trials:
        layers = per_trial.get(trial, {})
        hit = layers.get(node)
        if hit:
            changed += 1
            if hit[1] == 1:
                one += 1
                single += hit[2]
        last = max((v[0] for v in layers.values()), default=-1)
        start = index.get(node, 0)
        travel[outcome].append(max(0, last - start) if last >= 0 else 0)
        reach[outcome] += int(last == last_node)
    n = len(trials)
    result = {
        "trials": n,
        "injected_layer_changed": _rate(changed, n),
        "one_element_corrupted": _rate(one, n),
        "single_bit_difference": _rate(single, one),
        "travel": {},
    }
    for outcome, depths in travel.items():
        result["travel"][outcome] = {
            "trials": len(depths),
            "mean_layers_travelled": (sum(depths) / len(depths)) if depths else None,
            "reached_last_layer": _rate(reach[outcome], len(depths)),
        }
    return result


def _label(*lines: object) -> str:
    """A DOT label whose text is literal: graphviz quotes it, every backslash and `<...>` of the text
    loses its meaning, and lines break with DOT's own `\\n`. Names never become DOT syntax; control
    characters (invalid in the SVG's XML) are dropped as on the terminal."""
    return graphviz.nohtml("\\n".join(graphviz.escape(plain(line)) for line in lines))


def operator_graph(db: CampaignDatabase, trial: int) -> str:
    """DOT of the ONNX graph with the corrupted path highlighted and annotated (paper Fig. 3). Nodes
    are identified by their position (n0, n1, ...); their names appear only in quoted labels."""
    graph = db.get_meta("graph") or []
    site_row = db.query("SELECT s.node, s.opcode, t.mask, t.value_before, t.value_after, t.outcome FROM trials t "
                        "JOIN sites s ON s.id = t.site WHERE t.id = ?", (trial,))
    if not site_row:
        raise UsageError(f"trial {trial} not found or never activated")
    injected, opcode, mask, before, after, outcome = site_row[0]
    query = "SELECT node, corrupted, size, indices, golden, faulty FROM layer_trace WHERE trial = ?"
    corrupted = {node: (count, size, json.loads(idx), json.loads(g), json.loads(f))
                 for node, count, size, idx, g, f in db.query(query, (trial,))}
    producer = {o: i for i, n in enumerate(graph) for o in n["outputs"]}
    dot = graphviz.Digraph(f"trial {int(trial)}", graph_attr={"rankdir": "TB", "labelloc": "t",
                                                               "label": _label(f"trial {trial}: {outcome}")},
                           node_attr={"shape": "box", "style": "rounded,filled", "fillcolor": "white",
                                      "fontname": "Helvetica"})
    for i, n in enumerate(graph):
        lines = [n["name"], n["op_type"]]
        attrs = {}
        if n["name"] in corrupted:
            count, size, idx, g, f = corrupted[n["name"]]
            lines.append(f"{count}/{size} corrupted")
            if idx:
                lines.append(f"[{idx[0]}] {float(g[0]):.4g} -> {float(f[0]):.4g}")
            attrs["fillcolor"] = "#f4a3a3"
        if n["name"] == injected:
            lines.append(f"fault: {opcode} mask {mask}")
            attrs.update(penwidth="3", color="#b00000")
        dot.node(f"n{i}", _label(*lines), **attrs)
    for i, n in enumerate(graph):
        for tensor in n["inputs"]:
            if tensor in producer:
                source = graph[producer[tensor]]["name"]
                hot = source in corrupted and n["name"] in corrupted
                dot.edge(f"n{producer[tensor]}", f"n{i}", **({"color": "#b00000", "penwidth": "2"} if hot else {}))
    return dot.source


def instruction_graph(db: CampaignDatabase, trial: int) -> str:
    """DOT of the instrumented instructions after the fault, in execution order; the ones whose value
    differs from the golden run's are highlighted (the chain the fault reached)."""
    sites = {sid: (opcode, node) for sid, opcode, node in db.query("SELECT id, opcode, node FROM sites")}
    head = db.query("SELECT site, value_before, value_after FROM trials WHERE id = ?", (trial,))
    rows = db.query("SELECT position, site, faulty, golden FROM inst_trace WHERE trial = ? ORDER BY position",
                    (trial,))
    if not head or head[0][0] is None:
        raise UsageError(f"trial {trial} not found or never activated")
    if not rows:
        raise UsageError(f"trial {trial} has no instruction trace (run the campaign with maxTrace / --max-trace)")
    site, before, after = head[0]
    opcode, node = sites.get(site, ("?", None))
    dot = graphviz.Digraph(f"trial {int(trial)} instructions", graph_attr={"rankdir": "TB"},
                           node_attr={"shape": "box", "fontname": "Courier"})
    dot.node("fault", _label(f"fault: site {site} {opcode} ({node})", f"{before} -> {after}"),
             style="filled", fillcolor="#f4a3a3")
    previous = "fault"
    for position, sid, faulty, golden in rows:
        op, where = sites.get(sid, ("?", None))
        differs = golden is not None and faulty != golden
        label = _label(f"#{position} site {sid} {op} ({where})", f"{golden} -> {faulty}" if differs else faulty)
        dot.node(f"i{int(position)}", label, **({"style": "filled", "fillcolor": "#f4a3a3"} if differs else {}))
        dot.edge(previous, f"i{int(position)}")
        previous = f"i{int(position)}"
    return dot.source


def _render_svg(dot_path: Path) -> Path:
    """Graphviz's `dot -Tsvg`; a failure is a one-line BuildError, not a traceback."""
    svg = dot_path.with_suffix(".svg")
    try:
        subprocess.run(["dot", "-Tsvg", str(dot_path), "-o", str(svg)], check=True, capture_output=True,
                       text=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"dot could not render {dot_path}: {(exc.stderr or '').strip()[:300]}") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"dot did not render {dot_path} within 300 s") from None
    return svg


def write_graphs(db_path: str | Path, trial: int, out_dir: str | Path) -> list[Path]:
    """Write DOT files (and SVG when Graphviz's `dot` is installed); returns the files written."""
    db = CampaignDatabase(db_path, create=False)
    try:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        graphs = {"operators": operator_graph(db, trial)}
        if db.query("SELECT 1 FROM inst_trace WHERE trial = ? LIMIT 1", (trial,)):
            graphs["instructions"] = instruction_graph(db, trial)
        for name, text in graphs.items():
            dot_path = out / f"trial{trial}_{name}.dot"
            dot_path.write_text(text)
            written.append(dot_path)
            if shutil.which("dot"):
                written.append(_render_svg(dot_path))
        return written
    finally:
        db.close()
