"""Ctrl-C during a long `llama_decode`: stop it through llama.cpp's abort callback.

While C code runs, Python's SIGINT handler cannot run, so a 512-token prompt on a big model would
finish before Ctrl-C took effect. llama.cpp calls an abort callback after each node of the graph,
on the calling thread; with our callback installed, Python runs there, its pending SIGINT handler
with it. The handler we install for the duration only raises a flag (an exception raised inside a
ctypes callback would be printed and lost); the callback returns the flag, llama_decode returns 2,
and the caller raises KeyboardInterrupt after dropping what the aborted call left in the cache.

The callback costs a trip into Python per graph node, ~1 us: nothing against a prompt's compute,
a few percent of a single token's, so it is installed only for multi-token calls. Ctrl-C during a
single token is handled by Python as soon as the call returns.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType


class AbortFlag:
    """Raised by SIGINT while a long call runs; read by llama.cpp through `callback`."""

    def __init__(self, llama_cpp: ModuleType):
        self.raised = False
        self.callback = llama_cpp.ggml_abort_callback(self._should_abort)

    def _should_abort(self, _data) -> bool:
        return self.raised

    def _on_sigint(self, _signum, _frame) -> None:
        self.raised = True


class _NeverRaised:
    raised = False


NEVER_RAISED = _NeverRaised()  # the flag of a call made without the callback


@contextmanager
def abortable(llama_cpp: ModuleType, ctx) -> Iterator[AbortFlag]:
    """Within the block, SIGINT aborts the context's llama_decode and sets `flag.raised`, where
    Ctrl-C would raise KeyboardInterrupt (in the main thread, with Python's default handler in
    place); elsewhere the block runs as it is, with a flag that is never raised."""
    flag = AbortFlag(llama_cpp)
    ours = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if not ours:
        yield flag
        return
    signal.signal(signal.SIGINT, flag._on_sigint)
    llama_cpp.llama_set_abort_callback(ctx, flag.callback, None)
    try:
        yield flag
    finally:
        llama_cpp.llama_set_abort_callback(ctx, llama_cpp.ggml_abort_callback(), None)
        signal.signal(signal.SIGINT, signal.default_int_handler)
