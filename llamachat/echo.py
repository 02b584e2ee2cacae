"""Keeping the terminal from echoing keys while a reply is drawn.

While a reply streams, prompt_toolkit is not reading, so the terminal is in its ordinary (cooked)
mode and echoes what is typed; Ctrl-C is echoed as "^C" where the cursor is. rich's Live keeps the
reply's last block in a region it redraws by moving the cursor up as many lines as it drew, so any
echoed text moves the cursor under it: when the last drawn line fills the terminal's width (a
paragraph that wraps is padded to it), "^C" starts a new line, the region is erased one line short,
and the first line of the interrupted paragraph stays on the screen above its final copy. So echo
is off while a reply is drawn; typed keys still reach the next prompt (the terminal keeps them),
and Ctrl-C still interrupts (ISIG is untouched).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO

try:
    import termios
except ImportError:  # pragma: no cover - Windows: its console does not echo into rich's region
    termios = None  # type: ignore[assignment]


@contextlib.contextmanager
def no_echo(stream: IO | None = None) -> Iterator[None]:
    """Terminal echo (ECHO, ECHOCTL) off for the duration, when `stream` (default stdin) is a terminal."""
    stream = sys.stdin if stream is None else stream
    try:
        fd = stream.fileno()
        if termios is None or not stream.isatty():
            raise OSError
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, AttributeError):  # not a terminal, closed, or a pipe from a test
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | getattr(termios, "ECHOCTL", 0))  # lflags
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
