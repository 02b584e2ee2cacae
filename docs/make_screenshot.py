"""The picture of a chat in README.md (docs/chat.svg): a real session on the default model, recorded
from a terminal.

    .venv/bin/python docs/make_screenshot.py [--out docs/chat.svg] [--cols 100] [--rows 70]

`llamachat` runs in a pseudo-terminal (pexpect) exactly as a user starts it (the default profile and
model, a fixed --seed so the replies are the same each time; nothing saved), and what it writes is fed
to a terminal emulator (pyte). The emulator's screen, colours included, is then drawn by rich's own
SVG export. The timings in the stats lines are this machine's at the time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from itertools import groupby
from pathlib import Path

import pexpect
import pyte
from rich.console import Console
from rich.style import Style
from rich.text import Text

KEYS = [  # what is typed, and what to wait for before typing on
    ("What is the capital of France?", "tok/s, first token"),
    ("And of Germany?", "tok/s, first token"),
    ("/undo", "removed"),
    ("/tokens", "in the KV cache"),
]


class Terminal:
    """`llamachat` in a pseudo-terminal, its output fed to a terminal emulator."""

    def __init__(self, args: list[str], rows: int, cols: int):
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        env.pop("NO_COLOR", None)
        self.child = pexpect.spawn(sys.executable, ["-m", "llamachat", *args], env=env, dimensions=(rows, cols), timeout=300)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, needle: str, times: int = 1, timeout: float = 300) -> None:
        """Feed the output to the emulator until `needle` is on the screen `times` times."""
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < times:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{needle!r} did not appear; the screen:\n{self.text()}")
            self.read(0.2)

    def settle(self, seconds: float = 2.0) -> None:
        """Take in what is still coming (the toolbar's redraw) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.read(0.1)

    def read(self, timeout: float) -> None:
        """Feed what the chat wrote to the emulator, and answer prompt_toolkit's cursor-position
        requests as a terminal does (it draws the toolbar once it knows where the cursor is)."""
        try:
            data = self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            return
        parts = data.split(b"\x1b[6n")
        for i, part in enumerate(parts):
            self.stream.feed(part)
            if i < len(parts) - 1:
                self.child.send(f"\x1b[{self.screen.cursor.y + 1};{self.screen.cursor.x + 1}R")


def _color(name: str) -> str | None:
    """pyte's colour name (`red`, `brightblack`, or six hex digits) as rich's."""
    if name == "default":
        return None
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return "#" + name
    return "bright_" + name[len("bright") :] if name.startswith("bright") else name


def screen_text(screen: pyte.Screen) -> Text:
    """The emulator's screen as rich Text, one line per row, trailing blank rows dropped."""
    rows = [screen.buffer[y] for y in range(screen.lines)]
    while rows and not "".join(rows[-1][x].data for x in range(screen.columns)).strip():
        rows.pop()
    text = Text()
    for row in rows:
        for style, run in groupby((row[x] for x in range(screen.columns)), key=_style):
            text.append("".join(char.data for char in run), style)
        text.append("\n")
    text.rstrip()
    return text


def _style(char) -> Style:
    fg, bg = _color(char.fg), _color(char.bg)
    if char.reverse:
        fg, bg = bg or "black", fg or "white"
    return Style(color=fg, bgcolor=bg, bold=char.bold, italic=char.italics, underline=char.underscore)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "chat.svg")
    p.add_argument("--cols", type=int, default=100)
    p.add_argument("--rows", type=int, default=70, help="the terminal's height; the picture keeps the rows used")
    args = p.parse_args()
    term = Terminal(["--seed", "1", "--no-history"], args.rows, args.cols)
    term.wait_for(">>> ")
    for keys, until in KEYS:
        seen = term.text().count(until)
        term.child.send(keys + "\r")
        term.wait_for(until, seen + 1)
    term.settle()
    console = Console(record=True, width=args.cols, file=open(os.devnull, "w"), force_terminal=True, color_system="truecolor")
    console.print(screen_text(term.screen), soft_wrap=True)
    console.save_svg(str(args.out), title="llamachat")
    term.child.send("/quit\r")
    term.child.expect(pexpect.EOF)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
