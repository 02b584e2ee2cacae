"""Holding Ctrl-C off around work that must not stop halfway."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigint_held() -> Iterator[list[int]]:
    """Ctrl-C inside the block is remembered, not raised; KeyboardInterrupt comes when it ends.

    For work that cannot be undone halfway: a module import (torch interrupted mid-import stays
    half-registered, and every later import fails with "duplicate registrations"), a pass that
    every rank of a tensor-parallel model must finish. The list it yields gains an item per Ctrl-C.
    Off the main thread (where Python delivers no SIGINT) it holds nothing."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    old = signal.signal(signal.SIGINT, lambda *_: caught.append(1))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, old)
    if caught:
        raise KeyboardInterrupt
