"""Deciding what a trial did: SDC, benign, crash, hang or not activated.

A fault is activated when it reached its dynamic instance and changed the value (a stuck-at bit
that already held the stuck value changes nothing). Rates are reported over activated faults.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .config import SdcConfig

OUTCOMES = ("sdc", "benign", "crash", "hang", "not_activated")
_NUMBER = re.compile(rb"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)", re.IGNORECASE)


def _numbers(text: bytes) -> np.ndarray:
    """Every number printed in a program's output, for tolerance comparisons."""
    return np.array([float(m) for m in _NUMBER.findall(text)], dtype=np.float64)


def _load_function(spec: str) -> Callable:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ConfigError(f"sdc.function {spec!r}: expected 'file.py:name' or 'module:name'")
    try:
        if target.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location("lltfi_user_sdc", Path(target))
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        return getattr(module, name)
    except (OSError, ImportError, AttributeError, SyntaxError) as exc:
        raise ConfigError(f"sdc.function {spec!r} cannot be loaded: {exc}") from None


def _as_number(array: np.ndarray) -> np.ndarray:
    """Floats as they are; integers and bools as float64."""
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def program_view(output: bytes, config: SdcConfig) -> bytes:
    """The part of a program's output that decides SDC: without stdout when `stdout: false` (the
    driver appends each output file after a "--- name ---" header), without lines matching
    `ignore_lines` (wall-clock timings)."""
    if not config.stdout and config.files:
        header = f"\n--- {config.files[0]} ---\n".encode()
        at = output.find(header)
        output = output[at:] if at >= 0 else b"(output files missing)\n" + output
    if config.ignore_lines:
        patterns = [re.compile(p.encode()) for p in config.ignore_lines]
        output = b"".join(line for line in output.splitlines(keepends=True)
                          if not any(p.search(line) for p in patterns))
    return output


class SdcJudge:
    """Applies one SdcConfig to (golden, faulty) output lists."""

    def __init__(self, config: SdcConfig) -> None:
        self.config = config
        self.user = _load_function(config.function) if config.criterion == "python" else None

    def _view(self, outputs):
        """A program's outputs as the SDC criterion sees them (models: unchanged)."""
        if outputs and isinstance(outputs[0], bytes) and (not self.config.stdout or self.config.ignore_lines):
            return [program_view(outputs[0], self.config), *outputs[1:]]
        return outputs

    def deviation(self, golden: Sequence[np.ndarray], faulty: Sequence[np.ndarray]) -> float:
        """Largest absolute difference (in degrees for the threshold criterion when configured)."""
        golden, faulty = self._view(golden), self._view(faulty)
        if golden and isinstance(golden[0], bytes):
            golden, faulty = [_numbers(golden[0])], [_numbers(faulty[0])]
            if golden[0].shape != faulty[0].shape:
                return math.inf
        worst = 0.0
        for g, f in zip(golden, faulty):
            with np.errstate(all="ignore"):
                d = np.abs(f.astype(np.float64) - g.astype(np.float64))
            if d.size:
                m = float(np.nanmax(d)) if not np.all(np.isnan(d)) else math.inf
                worst = max(worst, math.inf if np.any(np.isnan(d)) else m)
        if self.config.criterion == "threshold" and self.config.degrees:
            worst = math.degrees(worst)
        return worst

    def is_sdc(self, golden: Sequence[np.ndarray], faulty: Sequence[np.ndarray]) -> bool:
        c = self.config
        golden, faulty = self._view(golden), self._view(faulty)
        if c.criterion == "python":
            return bool(self.user(golden, faulty))
        if golden and isinstance(golden[0], bytes):  # a program's stdout
            if c.criterion == "tolerance":
                g, f = _numbers(golden[0]), _numbers(faulty[0])
                text_same = _NUMBER.sub(b"#", golden[0]) == _NUMBER.sub(b"#", faulty[0])
                return not (text_same and g.shape == f.shape and np.allclose(f, g, rtol=c.rtol, atol=c.atol))
            return golden[0] != faulty[0]
        # Integer and bool outputs compare as numbers (-g, g - f are not defined on bools).
        golden, faulty = [_as_number(g) for g in golden], [_as_number(f) for f in faulty]
        for g, f in zip(golden, faulty):
            if np.any(~np.isfinite(f) & np.isfinite(g)):
                return True  # a NaN/Inf where the golden run had a number is never benign
        if c.positions != "all" and c.criterion in ("top1", "topk", "tolerance"):
            return self._positions_differ(golden[0], faulty[0])
        if c.criterion in ("top1", "topk"):
            k = 1 if c.criterion == "top1" else c.k
            g, f = golden[0].reshape(-1), faulty[0].reshape(-1)
            if g.size == 1:  # not a classifier: fall back to exact comparison
                return not np.array_equal(g, f)
            if k == 1:
                return int(np.argmax(g)) != int(np.argmax(f))
            return set(np.argsort(-g, kind="stable")[:k]) != set(np.argsort(-f, kind="stable")[:k])
        if c.criterion == "threshold":
            return self.deviation(golden, faulty) > c.thresholds[0]
        return any(not np.allclose(f, g, rtol=c.rtol, atol=c.atol, equal_nan=True) for g, f in zip(golden, faulty))


    def _positions_differ(self, golden: np.ndarray, faulty: np.ndarray) -> bool:
        """Language models: rows of logits along the last axis, of the last position only
        (`positions: last`, output[..., -1, :]) or of every position (`each`); SDC when any row's
        top-1 / top-k set changes, or (tolerance) any row leaves rtol/atol."""
        c = self.config
        if golden.ndim < (2 if c.positions == "last" else 1):
            return not np.array_equal(golden, faulty)
        if c.positions == "last":
            golden, faulty = golden[..., -1, :], faulty[..., -1, :]
        g, f = golden.reshape(-1, golden.shape[-1]), faulty.reshape(-1, faulty.shape[-1])
        if c.criterion == "tolerance":
            return not np.allclose(f, g, rtol=c.rtol, atol=c.atol, equal_nan=True)
        if c.criterion == "top1":
            return bool(np.any(np.argmax(g, axis=-1) != np.argmax(f, axis=-1)))
        top = lambda x: np.sort(np.argsort(-x, axis=-1, kind="stable")[:, :c.k], axis=-1)  # noqa: E731
        return bool(np.any(top(g) != top(f)))


def classify(status: str, activated: bool, judge: SdcJudge, golden, faulty) -> str:
    if status == "hang":
        return "hang"
    if status in ("crash", "exit"):
        return "crash"
    if not activated:
        return "not_activated"
    if status == "output_limit":  # a program's output far longer than its golden output
        return "sdc"
    return "sdc" if judge.is_sdc(golden, faulty) else "benign"
