"""Holding Ctrl-C off around work that must not stop halfway."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sigint_held() -> Iterator[None]:
    """Ctrl-C inside the block is remembered, not raised; KeyboardInterrupt comes when it ends.

    For work that cannot be undone halfway: a module import (torch interrupted mid-import stays
    half-registered, and every later import fails with "duplicate registrations"), a pass that
    every rank of a tensor-parallel model must finish. Off the main thread (where Python delivers
    no SIGINT) it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = signal.signal(signal.SIGINT, lambda *_: caught.append(1))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if caught:
        raise KeyboardInterrupt
