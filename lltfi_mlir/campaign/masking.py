"""Where faults were masked, from the trials that ended early (`masked_at`), and what a trial cost.

`masked_at` is the operator after which a trial's state was bit-identical to the golden run's again
(runtime/boundaries.h): a free column of the paper's Table II, for every trial and not only traced
ones. The work estimate counts selected instances: a walk-engine trial runs from its injection point
to its masking operator's end, or to the end of the inference.
"""

from __future__ import annotations

from collections import Counter

from .database import CampaignDatabase


def masking_summary(db: CampaignDatabase) -> dict | None:
    """None for campaigns without the column (older databases) or without trials."""
    if not db.has_column("trials", "masked_at"):
        return None
    rows = db.query("SELECT input, target, masked_at FROM trials")
    if not rows:
        return None
    policy = db.get_meta("early_end") or {"enabled": False, "reason": "not recorded"}
    by_operator = Counter(m for _, _, m in rows if m)
    result = {"early_end": policy, "trials": len(rows), "ended_early": sum(by_operator.values()),
              "by_operator": dict(by_operator.most_common())}
    work = _work_per_trial(db, rows)
    if work is not None:
        result["mean_work"], result["mean_work_without_early_end"] = work
    return result


def _work_per_trial(db: CampaignDatabase, rows: list[tuple]) -> tuple[float, float] | None:
    """Mean fraction of one inference's selected instances a trial executes after its fork point,
    with early ending and without it."""
    if (db.get_meta("target") or "instructions") != "instructions":
        return None
    graph = db.get_meta("graph") or []
    totals = (db.get_meta("profile_summary") or {}).get("dynamic_instances") or []
    per_node = Counter()
    for node, count in db.query("SELECT node, dynamic_count FROM sites"):
        per_node[node] += count or 0
    everything = sum(per_node.values())
    if not graph or not totals or not everything:
        return None
    ends, running = {}, 0
    for node in graph:  # operators run in graph order; fused ones inside their producer's call
        running += per_node.get(node["name"], 0)
        ends[node["name"]] = running / everything
    early, full = 0.0, 0.0
    for input_set, target, masked in rows:
        total = totals[input_set] if input_set < len(totals) else 0
        start = min(1.0, target / total) if total else 0.0
        end = ends.get(masked, 1.0) if masked else 1.0
        early += max(0.0, end - start)
        full += 1.0 - start
    return early / len(rows), full / len(rows)
