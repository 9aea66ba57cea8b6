"""Re-run one recorded trial, alone, and check that it does what the database says it did.

A trial is fully determined by its row (input, dynamic index, fault model, seed: the runtime draws
the bits from the seed), so replaying it reproduces the same fault, output and outcome.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .config import FaultConfig, SdcConfig
from .database import CampaignDatabase
from .executor import LocalExecutor, ProgramRun, split_outputs
from .outcomes import SdcJudge, classify
from .plan import Trial


@dataclass(frozen=True)
class Replay:
    trial: Trial
    recorded: dict
    outcome: str
    faults: list
    output: list

    @property
    def matches(self) -> bool:
        first = self.faults[0] if self.faults else None
        same_fault = (first is None and self.recorded["site"] is None) or (
            first is not None and first.site == self.recorded["site"] and f"{first.mask:x}" == self.recorded["mask"]
            and f"{first.after:x}" == self.recorded["value_after"])
        return same_fault and self.outcome == self.recorded["outcome"]


def replay_trial(db_path: str | Path, trial_id: int) -> Replay:
    db = CampaignDatabase(db_path, create=False)
    try:
        info = db.get_meta("replay")
        memory = db.get_meta("memory_targets")  # a memory-fault campaign: {site: its trial lines' prefix}
        if info is None:
            raise UsageError(f"{db_path} has no replay information (written by an older version?)")
        columns = ["id", "input", "target", "fault_type", "num_bits", "bit", "max_multiple", "window_len", "seed",
                   "outcome", "site", "mask", "value_after", "output"]
        rows = db.query(f"SELECT {', '.join(columns)} FROM trials WHERE id = ?", (trial_id,))
        if not rows:
            raise UsageError(f"{db_path} has no trial {trial_id}")
        recorded = dict(zip(columns, rows[0]))
        # draw: per_layer ran trial i on the build of layer i mod L, with an index relative to that layer
        strata = db.get_meta("replay_strata")
        layer = db.get_meta(f"replay_stratum_{trial_id % strata}") if strata else None
        if strata and layer is None:
            raise UsageError(f"{db_path}: the per-layer build of trial {trial_id} was not recorded")
    finally:
        db.close()
    if layer is not None:
        info = dict(info, executable=layer["executable"], inputs_list=layer["inputs_list"])
    executable = Path(info["executable"])
    if not executable.exists():
        raise UsageError(f"the campaign's instrumented program {executable} no longer exists; re-run the "
                         "campaign command to rebuild it")
    fault = FaultConfig(type=recorded["fault_type"], bit=recorded["bit"], num_bits=recorded["num_bits"],
                        max_multiple=recorded["max_multiple"], window_len=recorded["window_len"])
    trial = Trial(recorded["id"], recorded["input"], recorded["target"], fault, recorded["bit"], recorded["seed"],
                  memory=memory[str(recorded["site"])] if memory else None)
    program = ProgramRun(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["program"].items()}) \
        if info.get("program") else None
    executor = LocalExecutor(executable, Path(info["inputs_list"]), 1, info["timeout_us"], program,
                             max_output=info.get("max_output", 0))
    (result,) = list(executor.run([trial]))
    if layer is not None:  # the layer build's site ids, as the campaign stored them: the full build's
        result = dataclasses.replace(result, faults=tuple(dataclasses.replace(f, site=layer["id_map"][f.site])
                                                          for f in result.faults))
    shapes = [tuple(s) for s in info["output_shapes"]]

    def outputs(data: bytes) -> list:
        return [data] if program is not None else split_outputs(data, shapes, info.get("output_dtypes"))

    golden = outputs(bytes.fromhex(info["golden"][recorded["input"]]))
    judge = SdcJudge(SdcConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["sdc"].items()}))
    faulty = outputs(result.output) if result.status == "ok" else None
    activated = any(f.before != f.after for f in result.faults)
    outcome = classify(result.status, activated, judge, golden, faulty)
    return Replay(trial, recorded, outcome, list(result.faults), faulty or [])
