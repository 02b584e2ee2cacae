"""Text from a file (a session, a model's metadata, a template's output) made safe to print: its
control characters shown escaped, so that a saved message holding `ESC]0;TITLE BEL ESC[2J` cannot
retitle or clear the terminal when /history prints it."""

from __future__ import annotations

import re

# C0 controls but newline and tab, DEL, and the C1 controls (U+0080-U+009F: a terminal reads U+009B as CSI)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with each control character as its escape (ESC as \\x1b); newlines and tabs kept."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
