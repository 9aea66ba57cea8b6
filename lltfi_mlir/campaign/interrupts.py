"""Interrupts that never lose a finished trial: SIGTERM ends a campaign like Ctrl-C (a
KeyboardInterrupt the campaign loop turns into a last write of everything finished), and neither
signal can cut that last write short."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _restore(signum: int, handler) -> None:
    signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Inside: SIGTERM raises KeyboardInterrupt, as SIGINT does (main thread only)."""
    if not _main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        _restore(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM are held; the first one that arrived is delivered on exit."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in _SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            _restore(signum, handler)
        if caught:
            signal.raise_signal(caught[0])
