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


class SdcJudge:
    """Applies one SdcConfig to (golden, faulty) output lists."""

    def __init__(self, config: SdcConfig) -> None:
        self.config = config
        self.user = _load_function(config.function) if config.criterion == "python" else None

    def deviation(self, golden: Sequence[np.ndarray], faulty: Sequence[np.ndarray]) -> float:
        """Largest absolute difference (in degrees for the threshold criterion when configured)."""
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
        if c.criterion == "python":
            return bool(self.user(golden, faulty))
        if golden and isinstance(golden[0], bytes):  # a program's stdout
            if c.criterion == "tolerance":
                g, f = _numbers(golden[0]), _numbers(faulty[0])
                text_same = _NUMBER.sub(b"#", golden[0]) == _NUMBER.sub(b"#", faulty[0])
                return not (text_same and g.shape == f.shape and np.allclose(f, g, rtol=c.rtol, atol=c.atol))
            return golden[0] != faulty[0]
        for g, f in zip(golden, faulty):
            if np.any(~np.isfinite(f) & np.isfinite(g)):
                return True  # a NaN/Inf where the golden run had a number is never benign
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
