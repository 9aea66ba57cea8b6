"""Trial planning: which input, which dynamic instance, which fault model, which seed.

Trial i is a pure function of (campaign seed, i) -- `numpy.random.default_rng([seed, i])` -- so a
resumed or repeated campaign draws exactly the same trials, in any order, on any worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .config import CampaignConfig, FaultConfig

FAULT_CODES = {"bitflip": 0, "stuck_at_0": 1, "stuck_at_1": 2, "none": 3}


@dataclass(frozen=True)
class Trial:
    id: int
    input: int           # index of the input set
    target: int          # 0-based dynamic index among the selected instances of that input's run
    fault: FaultConfig
    bit: int | None      # fixed bit, or None: drawn by the runtime from `seed`
    seed: int

    trace_len: int = 0   # maxTrace: instances recorded after the fault
    # A memory fault (campaign/memory.py): the start of its trial line, naming the tensor ("W ..." a
    # weight, "A ..." an activation); `target` is then the element. None: an instruction fault.
    memory: str | None = None

    def line(self, timeout_us: int, mask: int = 0) -> str:
        """The fork-server's trial line (see runtime/campaign_server.c, runtime/memory_faults.h)."""
        f = self.fault
        bit = -1 if self.bit is None else self.bit
        prefix = f"{self.memory} " if self.memory else ""
        if f.timeout is not None:  # the run block's own timeOut
            timeout_us = int(f.timeout * 1e6)
        return (f"{prefix}{self.id} {self.input} {self.target} {FAULT_CODES[f.type]} {f.num_bits} {bit} {mask:x} "
                f"{f.max_multiple} {f.window_code} {self.seed} {timeout_us} {self.trace_len}\n")


def block_of(config: CampaignConfig, index: int) -> int:
    """The run block (LLTFI `- run:` entry) of trial `index`: blocks take trials in order, by their
    numOfRuns; trials beyond them (a larger --runs) belong to the last."""
    start = 0
    for number, fault in enumerate(config.faults):
        start += fault.runs if fault.runs is not None else config.runs
        if index < start:
            return number
    return len(config.faults) - 1


def _fault_of(config: CampaignConfig, index: int) -> FaultConfig:
    """Trials are split over the runOption entries in order, by their numOfRuns."""
    start = 0
    for fault in config.faults:
        runs = fault.runs if fault.runs is not None else config.runs
        if index < start + runs:
            return fault
        start += runs
    return config.faults[-1]


def uniform_trial(config: CampaignConfig, counts: Sequence[int], index: int) -> Trial:
    """Uniform over all selected dynamic instances of all inputs (inputs weighted by their counts)."""
    fault = _fault_of(config, index)
    rng = np.random.default_rng([fault.seed if fault.seed is not None else config.seed, index])  # per run block
    total = int(sum(counts))
    flat = int(rng.integers(total))
    input_index = int(np.searchsorted(np.cumsum(counts), flat, side="right"))
    target = flat - int(sum(counts[:input_index]))
    if fault.cycle is not None:
        target = fault.cycle
    if fault.window_len == 0:  # LLFI's fi_max_multiple without a window: gaps up to the rest of the run
        fault = replace(fault, window_len=max(1, int(counts[input_index]) - 1))
    seed = int(rng.integers(1, 2**62))
    return Trial(index, input_index, target, fault, fault.bit, seed)


def exhaustive_trials(config: CampaignConfig, counts: Sequence[int], width: int) -> Iterator[Trial]:
    """Every (input, dynamic instance, bit); bits beyond a site's width end not activated."""
    fault = config.faults[0]
    index = 0
    for input_index, count in enumerate(counts):
        for target in range(count):
            for bit in range(width):
                yield Trial(index, input_index, target, fault, bit, index + 1)
                index += 1


def exhaustive_size(counts: Sequence[int], width: int) -> int:
    return int(sum(counts)) * width
