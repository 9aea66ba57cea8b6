"""One self-contained HTML page of one or more campaign databases (`lltfi-mlir report`).

The page loads nothing from anywhere and runs no script: charts are inline SVG from matplotlib's
SVG backend (the `report` extra; without it the page has the tables only), propagation graphs are
Graphviz SVG with scripts, styles, event handlers and outside links removed, and every string that
comes from a database or a model (node names, paths, labels) is escaped. Databases are opened
read-only. The numbers are the ones `results` prints (report.summarize, stats.wilson).
"""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LltfiError, UsageError
from .database import CampaignDatabase
from .outcomes import OUTCOMES
from .propagation import instruction_graph, operator_graph
from .report import ACTIVATED_OUTCOMES, summarize

COLOURS = {"sdc": "#c0392b", "benign": "#7fb77e", "crash": "#e67e22", "hang": "#8e44ad", "not_activated": "#aaaaaa"}
SERIES = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MAX_BARS = 60         # rows per per-layer / per-opcode chart (the table lists them all)
GRAPHS_PER_DB = 2     # propagation graphs drawn per traced database when no trial is chosen
DOT_SECONDS = 60
FOLD_ROWS = 12        # longer tables are folded under their chart


# -- SVG ----------------------------------------------------------------------------------------------
_DROPPED_TAGS = {"script", "foreignObject", "style", "iframe", "object", "embed", "image", "audio", "video"}
_OUTSIDE = re.compile(r"(?i)javascript:|data:|https?:|//|@import")


def clean_svg(text: str, prefix: str) -> str:
    """An SVG document as an element to inline in HTML: no prolog, namespace declarations (URLs that
    inline SVG does not need), scripts, styles, event handlers or references outside the image; ids
    prefixed so that several images on one page cannot capture each other's references."""
    start = text.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document")
    text = re.sub(r"<metadata\b.*?</metadata>", "", text[start:], flags=re.S)  # RDF: URLs and prefixes
    text = re.sub(r'\s+xmlns(:\w+)?\s*=\s*"[^"]*"', "", text)
    text = text.replace("xlink:href=", "href=")
    root = ET.fromstring(text)  # the DOCTYPE is gone: no entity can be declared
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag in _DROPPED_TAGS:
                parent.remove(child)
    for element in root.iter():
        for name, value in list(element.attrib.items()):
            if name.lower().startswith("on") or (name == "href" and not value.startswith("#")):
                del element.attrib[name]
            elif name == "id":
                element.set(name, f"{prefix}{value}")
            elif name == "href":
                element.set(name, f"#{prefix}{value[1:]}")
            elif "url(#" in value:
                element.set(name, value.replace("url(#", f"url(#{prefix}"))
            elif _OUTSIDE.search(value):
                del element.attrib[name]
    return ET.tostring(root, encoding="unicode")


def _charts():
    """matplotlib's Figure (no pyplot: no global figure state), or None without the `report` extra."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return matplotlib, Figure


@dataclass
class _Svg:
    counter: int = 0

    def figure(self, fig) -> str:
        import matplotlib

        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "lltfi-mlir"}):
            fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
        return self.element(buffer.getvalue())

    def element(self, text: str) -> str:
        self.counter += 1
        return f'<div class="chart">{clean_svg(text, f"s{self.counter}-")}</div>'


def _new_figure(width: float, height: float):
    import matplotlib

    _, Figure = _charts()
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = Figure(figsize=(width, height))
    return fig


def _label_text(text: str) -> str:
    """Names go into charts as plain text: no mathtext (`$`), clipped."""
    return text if len(text) <= 48 else text[:45] + "..."


def _rate_chart(svg: _Svg, title: str, groups: dict[str, dict], outcome: str = "sdc") -> str:
    """Horizontal bars of one outcome's rate per group, with the 95% Wilson interval."""
    items = [(k, g["outcomes"][outcome]) for k, g in groups.items() if g["activated"]][:MAX_BARS]
    if not items or _charts() is None:
        return ""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _new_figure(7.5, 0.8 + 0.26 * len(items))
        ax = fig.subplots()
        names = [_label_text(k) for k, _ in items][::-1]
        rates = [100 * e["rate"] for _, e in items][::-1]
        low = [100 * (e["rate"] - e["ci_low"]) for _, e in items][::-1]
        high = [100 * (e["ci_high"] - e["rate"]) for _, e in items][::-1]
        ax.barh(range(len(items)), rates, xerr=[low, high], color=COLOURS.get(outcome, SERIES[0]),
                error_kw={"ecolor": "#333333", "capsize": 2, "lw": 0.8})
        ax.set_yticks(range(len(items)), names, fontsize=8)
        ax.set_xlabel(f"{outcome.upper() if outcome == 'sdc' else outcome} rate, % of activated faults (95% interval)")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlim(0, min(100, max(h + r for h, r in zip(high, rates)) * 1.1 + 1))
        return svg.figure(fig)


def _bit_chart(svg: _Svg, series: dict[str, dict[str, dict]]) -> str:
    """SDC rate per flipped bit, one line per database, with the intervals as bands."""
    if _charts() is None:
        return ""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _new_figure(8, 3.2)
        ax = fig.subplots()
        drawn = False
        for colour, (label, by_bit) in zip(SERIES * 8, series.items()):
            points = sorted((int(b), g["outcomes"]["sdc"]) for b, g in by_bit.items() if b.isdigit() and g["activated"])
            if not points:
                continue
            bits = [b for b, _ in points]
            ax.plot(bits, [100 * e["rate"] for _, e in points], marker="o", ms=3, lw=1, color=colour,
                    label=_label_text(label))
            ax.fill_between(bits, [100 * e["ci_low"] for _, e in points], [100 * e["ci_high"] for _, e in points],
                            color=colour, alpha=0.15, lw=0)
            drawn = True
        if not drawn:
            return ""
        ax.set_xlabel("flipped bit (0 = least significant)")
        ax.set_ylabel("SDC, % of activated")
        ax.set_title("SDC rate per bit position (bands: 95% intervals)", fontsize=10, loc="left")
        if len(series) > 1:
            ax.legend(fontsize=8)
        return svg.figure(fig)


def _grouped_chart(svg: _Svg, title: str, rows: list[str], series: dict[str, dict[str, dict]]) -> str:
    """SDC rate per row (layer, database...) with one bar per series, and the intervals."""
    if not rows or _charts() is None:
        return ""
    import matplotlib

    rows = rows[:MAX_BARS]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _new_figure(8, 1.0 + 0.22 * len(rows) * max(1, len(series)))
        ax = fig.subplots()
        height = 0.8 / max(1, len(series))
        for k, (colour, (label, groups)) in enumerate(zip(SERIES * 8, series.items())):
            ys, rates, low, high = [], [], [], []
            for i, row in enumerate(reversed(rows)):
                entry = groups.get(row)
                if entry is None or not entry["activated"]:
                    continue
                e = entry["outcomes"]["sdc"]
                ys.append(i - (k - (len(series) - 1) / 2) * height)  # the first series on top
                rates.append(100 * e["rate"])
                low.append(100 * (e["rate"] - e["ci_low"]))
                high.append(100 * (e["ci_high"] - e["rate"]))
            ax.barh(ys, rates, height=height, xerr=[low, high], color=colour, label=_label_text(label),
                    error_kw={"ecolor": "#333333", "capsize": 2, "lw": 0.8})
        ax.set_yticks(range(len(rows)), [_label_text(r) for r in reversed(rows)], fontsize=8)
        ax.set_xlabel("SDC rate, % of activated faults (95% interval)")
        ax.set_title(title, fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="lower right")
        return svg.figure(fig)


def _count_chart(svg: _Svg, title: str, xlabel: str, counts: dict[str, Counter]) -> str:
    """Stacked horizontal bars of trial counts per row, one colour per outcome."""
    if not counts or _charts() is None:
        return ""
    import matplotlib

    rows = list(counts)[:MAX_BARS]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = _new_figure(7.5, 0.9 + 0.26 * len(rows))
        ax = fig.subplots()
        left = [0] * len(rows)
        for outcome in ("sdc", "benign", "crash", "hang", "masked"):
            values = [counts[r][outcome] for r in reversed(rows)]
            if any(values):
                ax.barh(range(len(rows)), values, left=left, color=COLOURS.get(outcome, "#7fb77e"), label=outcome)
                left = [a + b for a, b in zip(left, values)]
        ax.set_yticks(range(len(rows)), [_label_text(r) for r in reversed(rows)], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10, loc="left")
        ax.legend(fontsize=8, loc="lower right")
        return svg.figure(fig)


# -- HTML pieces --------------------------------------------------------------------------------------
def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(entry: dict) -> str:
    if entry["rate"] != entry["rate"]:
        return "-"
    return (f"{100 * entry['rate']:.2f}% <span class=ci>[{100 * entry['ci_low']:.2f}, "
            f"{100 * entry['ci_high']:.2f}]</span>")


def _table(headers: Sequence[str], rows: list[list[str]], raw_columns: Sequence[int] = ()) -> str:
    """A table; cells are escaped except the listed columns (already HTML built here from numbers)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if i in raw_columns else _e(c)}</td>" for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if len(rows) > FOLD_ROWS:  # folded without JavaScript
        return f"<details><summary>table of {len(rows)} rows</summary>{table}</details>"
    return table


def _groups_table(groups: dict[str, dict], first: str) -> str:
    rows = [[name, g["trials"], g["activated"], *(_pct(g["outcomes"][o]) for o in ACTIVATED_OUTCOMES)]
            for name, g in groups.items()]
    return _table([first, "trials", "activated", "SDC", "benign", "crash", "hang"], rows, raw_columns=(3, 4, 5, 6))


def _overall(summary: dict, svg: _Svg) -> str:
    rows = []
    for o in OUTCOMES:
        entry = summary["outcomes"][o]
        over = "all trials" if o == "not_activated" else "activated"
        rows.append([o, entry["count"], _pct(entry), over])
    parts = [_table(["outcome", "trials", "rate [95% Wilson interval]", "rate over"], rows, raw_columns=(2,))]
    if _charts() is not None and summary["activated"]:
        groups = {o: {"activated": 1, "outcomes": {o: summary["outcomes"][o]}} for o in ACTIVATED_OUTCOMES}
        items = [(o, groups[o]) for o in ACTIVATED_OUTCOMES]
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            fig = _new_figure(7.5, 1.8)
            ax = fig.subplots()
            for i, (o, g) in enumerate(items):
                e = g["outcomes"][o]
                ax.barh(len(items) - 1 - i, 100 * e["rate"], color=COLOURS[o],
                        xerr=[[100 * (e["rate"] - e["ci_low"])], [100 * (e["ci_high"] - e["rate"])]],
                        error_kw={"ecolor": "#333333", "capsize": 3, "lw": 0.8})
            ax.set_yticks(range(len(items)), [o for o, _ in reversed(items)], fontsize=9)
            ax.set_xlim(0, 100)
            ax.set_xlabel("% of activated faults (95% interval)")
            parts.append(svg.figure(fig))
    return "".join(parts)


def _masking(db: CampaignDatabase, summary: dict, svg: _Svg) -> str:
    """Where faults stopped mattering: the operator after which an early-ended trial's state was golden
    again (`masked_at`), and, when layers are traced, how many layers the corruption travelled."""
    parts = []
    m = summary.get("masking")
    if m and m.get("trials"):
        line = (f"Ended early (masked): {m['ended_early']} of {m['trials']} trials "
                f"({100 * m['ended_early'] / m['trials']:.1f}%); early ending "
                f"{(m.get('early_end') or {}).get('reason', '-')}")
        if "mean_work" in m:
            line += (f"; work per trial: {100 * m['mean_work']:.1f}% of an inference "
                     f"({100 * m['mean_work_without_early_end']:.1f}% without early ending)")
        parts.append(f"<p>{_e(line)}.</p>")
    graph = db.get_meta("graph") or []
    order = {n["name"]: i for i, n in enumerate(graph)}
    if "masked_at" in {row[1] for row in db.query("PRAGMA table_info(trials)")}:
        counts = Counter(dict(db.query("SELECT masked_at, COUNT(*) FROM trials WHERE masked_at IS NOT NULL "
                                       "GROUP BY masked_at")))
        if counts:
            total = sum(counts.values())
            names = sorted(counts, key=lambda n: (order.get(n, len(order)), n))
            parts.append(f"<p>{total} trials ended early: their state was golden again after the operator "
                         "below (the rest of the inference would have been the golden run).</p>")
            parts.append(_count_chart(svg, "Trials ended early, by the operator after which they were masked",
                                      "trials", {n: Counter(masked=counts[n]) for n in names}))
            parts.append(_table(["masked after operator", "trials", "share"],
                                [[n, counts[n], f"{100 * counts[n] / total:.1f}%"] for n in names]))
    if db.get_meta("trace_layers"):
        last = defaultdict(lambda: -1)
        for trial, index in db.query("SELECT trial, MAX(node_index) FROM layer_trace GROUP BY trial"):
            last[trial] = index
        travel: dict[str, Counter] = defaultdict(Counter)
        for trial, outcome, node in db.query("SELECT t.id, t.outcome, s.node FROM trials t JOIN sites s "
                                             "ON s.id = t.site WHERE t.outcome IN ('sdc', 'benign')"):
            start = order.get(node, 0)
            depth = "injected layer unchanged" if last[trial] < 0 else f"{max(0, last[trial] - start)} layers"
            travel[depth][outcome] += 1
        if travel:
            keys = sorted(travel, key=lambda k: (k[0].isdigit(), int(k.split()[0]) if k[0].isdigit() else 0))
            parts.append(_count_chart(svg, "How far the corruption travelled (last traced layer still corrupted, "
                                      "counted from the injected layer)", "completed activated trials",
                                      {k: travel[k] for k in keys}))
            parts.append(_table(["travelled", "benign", "SDC"],
                                [[k, travel[k]["benign"], travel[k]["sdc"]] for k in keys]))
    return "".join(parts)


def _table_two(p: dict) -> str:
    rows = [["injected layer's output changed", _pct(p["injected_layer_changed"])],
            ["exactly one element of it corrupted", _pct(p["one_element_corrupted"])],
            ["...that element differs by a single bit", _pct(p["single_bit_difference"])]]
    for outcome, t in p["travel"].items():
        mean = t["mean_layers_travelled"]
        rows.append([f"{outcome}: mean layers travelled", "-" if mean is None else f"{mean:.2f}"])
        rows.append([f"{outcome}: reached the last layer", _pct(t["reached_last_layer"])])
    return (f"<p>Over {p['trials']} completed activated trials (the paper's Table II).</p>"
            + _table(["measure", "value"], rows, raw_columns=(1,)))


def _dot_svg(dot_source: str) -> str:
    proc = subprocess.run(["dot", "-Tsvg"], input=dot_source, capture_output=True, text=True, timeout=DOT_SECONDS)
    if proc.returncode != 0:
        raise LltfiError(f"dot failed: {proc.stderr.strip()[:200]}")
    return proc.stdout


def _graphs(db: CampaignDatabase, chosen: Sequence[int], svg: _Svg) -> str:
    """Operator (and instruction) propagation graphs of the chosen trials, or of the first traced SDC
    and benign trials."""
    traced = bool(db.get_meta("trace_layers"))
    has_inst = bool(db.query("SELECT 1 FROM inst_trace LIMIT 1"))
    if not (traced or has_inst):
        return ""
    if shutil.which("dot") is None:
        return "<p class=note>Graphviz's <code>dot</code> is not installed: propagation graphs are omitted.</p>"
    trials = list(chosen)
    if not trials:
        for outcome in ("sdc", "benign"):
            trials += [i for (i,) in db.query("SELECT id FROM trials WHERE outcome = ? AND site IS NOT NULL "
                                              "AND id IN (SELECT trial FROM layer_trace UNION SELECT trial FROM "
                                              "inst_trace) ORDER BY id LIMIT 1", (outcome,))]
        trials = trials[:GRAPHS_PER_DB]
    parts = []
    for trial in trials:
        row = db.query("SELECT outcome FROM trials WHERE id = ?", (trial,))
        if not row:
            parts.append(f"<p class=note>trial {_e(trial)}: not in this database.</p>")
            continue
        parts.append(f"<h4>Trial {_e(trial)} ({_e(row[0][0])}): <code>lltfi-mlir replay {_e(db.path)} "
                     f"--trial {_e(trial)}</code></h4>")
        makers = ([("operators", operator_graph)] if traced else []) + \
                 ([("instructions", instruction_graph)] if has_inst else [])
        parts.append('<div class="graphs">')
        for name, make in makers:
            try:
                parts.append(f"<figure>{svg.element(_dot_svg(make(db, trial)))}<figcaption>{_e(name)}"
                             "</figcaption></figure>")
            except (LltfiError, ValueError, ET.ParseError, subprocess.TimeoutExpired) as exc:
                parts.append(f"<p class=note>{_e(name)} graph of trial {_e(trial)}: {_e(exc)}</p>")
        parts.append("</div>")
    return "".join(parts)


def _layer_key(name: str) -> str:
    """`node (Conv 3)` -> `Conv 3`: layers of different exports of one network match by type and number."""
    match = re.search(r"\(([^()]*)\)$", name)
    return match.group(1) if match else name


@dataclass
class _Campaign:
    label: str
    db: CampaignDatabase
    summary: dict


def _describe(c: _Campaign) -> list[str]:
    s = c.summary
    level = c.db.get_meta("level") or "instruction"
    target = c.db.get_meta("target") or "instructions"
    golden = (s.get("profile_summary") or {}).get("golden_seconds")
    return [c.label, s.get("model") or "-", level, target, str(s.get("seed", "-")), str(s["trials"]),
            str(s["activated"]), _seconds(golden)]


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{1000 * value:.3g} ms" if value < 1 else f"{value:.3g} s"


def _section(c: _Campaign, index: int, chosen: Sequence[int], svg: _Svg) -> str:
    s = c.summary
    parts = [f'<section id="db{index}"><h2>{_e(c.label)}</h2>',
             _table(["campaign", "model", "level", "fault target", "seed", "trials", "activated",
                     "fault-free run"], [_describe(c)]),
             "<h3>Outcomes</h3>", _overall(s, svg)]
    if "sdc_by_threshold" in s:
        parts.append("<h3>SDC by deviation threshold</h3>")
        parts.append(_table(["threshold", "SDC"], [[f"> {t}", _pct(e)] for t, e in s["sdc_by_threshold"].items()],
                            raw_columns=(1,)))
    if "by_block" in s:
        parts.append("<h3>Per run block</h3>" + _groups_table(s["by_block"], "block"))
    layers = {k: v for k, v in s["by_layer"].items() if k != "(no operator)"}
    if layers:
        parts += ["<h3>SDC per layer</h3>", _rate_chart(svg, "SDC rate per layer (operator, type, number)", layers),
                  _groups_table(layers, "layer")]
    if s.get("target") == "weights" or (len(s["by_function"]) > 1 and not layers):
        title = "tensor" if s.get("target") == "weights" else "function"
        parts += [f"<h3>SDC per {title}</h3>", _rate_chart(svg, f"SDC rate per {title}", s["by_function"]),
                  _groups_table(s["by_function"], title)]
    if s["by_opcode"]:
        parts += ["<h3>SDC per opcode</h3>", _rate_chart(svg, "SDC rate per opcode", s["by_opcode"]),
                  _groups_table(s["by_opcode"], "opcode")]
    if s["by_bit"]:
        parts += ["<h3>SDC per bit position</h3>", _bit_chart(svg, {c.label: s["by_bit"]}),
                  _groups_table(s["by_bit"], "bit")]
    masking = _masking(c.db, s, svg)
    if masking:
        parts += ["<h3>Masking</h3>", masking]
    if "propagation" in s:
        parts += ["<h3>Fault propagation (Table II)</h3>", _table_two(s["propagation"])]
    graphs = _graphs(c.db, chosen, svg)
    if graphs:
        parts += ["<h3>Propagation graphs</h3>", graphs]
    parts.append("</section>")
    return "".join(parts)


def _comparison(campaigns: list[_Campaign], svg: _Svg) -> str:
    """Side by side: outcome rates, fault-free run time relative to the first database (the overhead of
    a hardened build against the unprotected one), SDC per layer matched by type and number, and SDC
    per bit."""
    base = (campaigns[0].summary.get("profile_summary") or {}).get("golden_seconds")
    rows = []
    for c in campaigns:
        s = c.summary
        golden = (s.get("profile_summary") or {}).get("golden_seconds")
        relative = f"{golden / base:.2f}x" if golden and base else "-"
        rows.append([c.label, c.db.get_meta("level") or "instruction", c.db.get_meta("target") or "instructions",
                     s["trials"], s["activated"], *(_pct(s["outcomes"][o]) for o in ACTIVATED_OUTCOMES),
                     _seconds(golden), relative])
    parts = ['<section id="comparison"><h2>Side by side</h2>',
             _table(["campaign", "level", "fault target", "trials", "activated", "SDC", "benign", "crash", "hang",
                     "fault-free run", "vs first"], rows, raw_columns=(5, 6, 7, 8))]
    overall = {c.label: {"all": c.summary} for c in campaigns}
    parts.append(_grouped_chart(svg, "SDC rate of each campaign", ["all"], overall))
    by_layer: dict[str, dict[str, dict]] = {}
    for c in campaigns:
        merged: dict[str, dict] = {}
        for name, g in c.summary["by_layer"].items():
            if name != "(no operator)":
                merged.setdefault(_layer_key(name), g)
        by_layer[c.label] = merged
    counts = Counter(k for groups in by_layer.values() for k in groups)
    shared = [k for k in dict.fromkeys(k for groups in by_layer.values() for k in groups) if counts[k] > 1]
    if shared:
        parts.append(_grouped_chart(svg, "SDC rate per layer (matched by operator type and number)", shared,
                                    by_layer))
    parts.append(_bit_chart(svg, {c.label: c.summary["by_bit"] for c in campaigns}))
    parts.append("</section>")
    return "".join(parts)


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; background: #fff; }
h1 { border-bottom: 3px solid #c0392b; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
.ci { color: #777; font-size: 85%; }
.note { color: #a05a00; }
.chart svg { max-width: 100%; height: auto; }
.graphs { display: flex; flex-wrap: wrap; gap: 2em; align-items: flex-start; }
.graphs figure { margin: 0; }
details summary { cursor: pointer; color: #555; margin-bottom: .6em; }
nav a { margin-right: 1em; }
code { background: #f6f6f6; padding: 0 .2em; }
"""


def render_report(db_paths: Sequence[str | Path], labels: Sequence[str] = (), trials: Sequence[int] = (),
                  title: str = "lltfi-mlir fault-injection report") -> str:
    """The whole page as a string."""
    if not db_paths:
        raise UsageError("give at least one campaign database")
    if len(labels) > len(db_paths):
        raise UsageError(f"{len(labels)} labels for {len(db_paths)} databases")
    campaigns: list[_Campaign] = []
    svg = _Svg()
    try:
        for i, path in enumerate(db_paths):
            db = CampaignDatabase(path, create=False)  # read-only
            label = labels[i] if i < len(labels) else Path(path).stem
            campaigns.append(_Campaign(label, db, {}))
            campaigns[-1].summary = summarize(db)
        nav = "".join(f'<a href="#db{i}">{_e(c.label)}</a>' for i, c in enumerate(campaigns))
        if len(campaigns) > 1:
            nav = '<a href="#comparison">side by side</a>' + nav
        body = [f"<h1>{_e(title)}</h1>", f"<nav>{nav}</nav>"]
        if _charts() is None:
            body.append("<p class=note>matplotlib is not installed (pip install 'lltfi-mlir[report]'): tables "
                        "only.</p>")
        body.append("<p>Rates of SDC, benign, crash and hang are over activated faults (the fault reached its "
                    "instance and changed the value), with 95% Wilson intervals.</p>")
        if len(campaigns) > 1:
            body.append(_comparison(campaigns, svg))
        body += [_section(c, i, trials, svg) for i, c in enumerate(campaigns)]
    finally:
        for c in campaigns:
            c.db.close()
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(db_paths: Sequence[str | Path], output: str | Path, labels: Sequence[str] = (),
                 trials: Sequence[int] = (), title: str | None = None) -> Path:
    page = render_report(db_paths, labels, trials, **({"title": title} if title else {}))
    out = Path(output)
    out.write_text(page, encoding="utf-8")
    return out
