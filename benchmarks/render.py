"""What drawing a streamed reply costs: CPU seconds and bytes written to the terminal, llamachat's
ReplyPrinter against redrawing the whole reply as Markdown at every token (rich's Live as its docs
show it, which is what the chat did before 2026-11-23), in the same run.

    .venv/bin/python benchmarks/render.py [--tokens 400,1600] [--rate 33]

A reply of the default model (greedy, "Write a long story ...", repeated to the length asked for) is
replayed piece by piece at `rate` tokens a second into an in-memory terminal of 100 x 50; the CPU time
is the whole process's (the caller's thread and Live's refresh thread), which on a 2-core machine is
taken from the decoding.
"""

from __future__ import annotations

import argparse
import io
import time

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown

import llamachat
from llamachat.reply import ReplyPrinter


class WholeReplyRedrawn:
    """The baseline: a new Markdown of the whole reply handed to Live at every token."""

    def __init__(self, console, markdown: bool):
        self.text, self.live = "", Live(Markdown(""), console=console, refresh_per_second=12, vertical_overflow="visible")

    def __enter__(self):
        self.live.__enter__()
        return self

    def write(self, piece: str) -> None:
        self.text += piece
        self.live.update(Markdown(self.text))

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)


def replay(printer_class, pieces: list[str], rate: float) -> tuple[float, int]:
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=50)
    cpu = time.process_time()
    with printer_class(console, markdown=True) as out:
        for piece in pieces:
            time.sleep(1 / rate)
            out.write(piece)
    return time.process_time() - cpu, len(console.file.getvalue().encode())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", default="400,1600")
    p.add_argument("--rate", type=float, default=33.0)
    args = p.parse_args()
    model = llamachat.load()
    story = list(model.generate("Write a long story about a dragon who learns to bake bread.", temperature=0, max_tokens=400))
    print("| tokens | printer | CPU s | written MB |\n|---|---|---|---|")
    for n in (int(t) for t in args.tokens.split(",")):
        pieces = (story * (n // len(story) + 1))[:n]
        for printer in (WholeReplyRedrawn, ReplyPrinter):
            cpu, written = replay(printer, pieces, args.rate)
            print(f"| {n} | {printer.__name__} | {cpu:.2f} | {written / 1e6:.2f} |")


if __name__ == "__main__":
    main()
