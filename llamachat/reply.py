"""Streaming a reply to the screen: Markdown drawn live in a terminal, the text as it comes elsewhere.

In a terminal, rich's Live redraws the reply as it grows. Redrawing all of it at every refresh costs
time proportional to its length, 12 times a second, taken from the cores that decode (a 1,600-token
reply: 5.0-6.8 s of CPU and 2.3 MB written to the terminal, against 1.5 s and 0.12 MB this way;
benchmarks/render.py). So the blocks that later text can no longer change (see `finished_blocks`) are
printed once, above the live region, which keeps only the block being written; at the end that block
is printed too. All are printed as the lines the whole reply renders to, so the screen ends as if the
reply had been rendered in one piece; that costs one render of the printed part per finished block
(~2 ms per 1,000 characters here), not per refresh. Markdown is parsed when Live draws it, not at
every token.

A reasoning model's reasoning (`think`) comes first, dimmed, as plain text (its finished lines printed
once, the line being written live), then a blank line and the answer; hidden (/think hide), one dim
line stands for it.
"""

from __future__ import annotations

import re

FENCE = re.compile(r" {0,3}(```|~~~)")


def finished_blocks(text: str) -> int:
    """How many leading characters of `text` are whole Markdown blocks that later text cannot change:
    up to the start of the last line that follows a blank line outside a code fence and is not
    indented (an indented line may continue a list item). 0 when there are none."""
    end, offset, in_fence, after_blank = 0, 0, False, False
    for line in text.splitlines(keepends=True):
        if after_blank and not in_fence and not line[0].isspace():
            end = offset
        if FENCE.match(line):
            in_fence = not in_fence
        after_blank = not line.strip()
        offset += len(line)
    return end


def _segments(lines):
    """Rendered lines (lists of Segments) as one stream of segments, each line ended."""
    from rich.segment import Segment

    for line in lines:
        yield from line
        yield Segment.line()


class _LiveBlock:
    """The block being written, parsed as Markdown when Live draws it, one blank line below the printed
    blocks (rich starts a list, a quote or a table drawn alone with an empty line of its own)."""

    def __init__(self) -> None:
        self.text, self.gap = "", False
        self.thinking = ""  # the reasoning's line being written, dimmed

    def __rich_console__(self, console, options):
        from rich.markdown import Markdown
        from rich.text import Text

        if self.thinking:
            yield Text(self.thinking, style="dim")
        lines = console.render_lines(Markdown(self.text), options, pad=False) if self.text else []
        while lines and not any(segment.text for segment in lines[0]):
            lines.pop(0)
        if self.gap and lines:
            lines.insert(0, [])  # the blank line Markdown puts between blocks
        yield from _segments(lines)


class ReplyPrinter:
    """Streams a reply: live Markdown in a terminal, plain text anywhere else. `text` is the reply so far."""

    def __init__(self, console, markdown: bool, thinking: str = "show"):
        self.console, self.text = console, ""
        self.thinking, self.thought, self.thought_printed = thinking, "", 0  # /think mode, the reasoning, how much is printed
        self.live = None
        if markdown and console.is_terminal:
            from rich.live import Live

            self.view = _LiveBlock()
            self.live = Live(self.view, console=console, refresh_per_second=12, vertical_overflow="visible")
            self.printed, self.printed_lines = 0, 0  # characters of `text` printed for good, as that many lines

    def __enter__(self) -> ReplyPrinter:
        if self.live:
            self.live.__enter__()
        return self

    def think(self, piece: str) -> None:
        """Reasoning, before the answer: dimmed and apart from it, or (hidden) one dim line saying so."""
        if self.thinking == "hide":
            if not self.thought:
                self._print_dim("(reasoning, hidden: /think show shows it)\n")
            self.thought += piece
            return
        self.thought += piece
        done = self.thought.rfind("\n") + 1 if self.live else len(self.thought)  # live: whole lines only
        if done > self.thought_printed:
            self._print_dim(self.thought[self.thought_printed : done])
            self.thought_printed = done
        if self.live:
            self.view.thinking = self.thought[self.thought_printed :]

    def _print_dim(self, text: str) -> None:
        from rich.text import Text

        self.console.print(Text(text, style="dim"), end="", soft_wrap=True)

    def _end_reasoning(self) -> None:
        """The rest of the reasoning's last line, then a blank line before the answer."""
        if self.thinking != "hide":
            self._print_dim(self.thought[self.thought_printed :] + "\n\n")
            if self.live:
                self.view.thinking = ""
        self.thought, self.thought_printed = "", 0

    def write(self, piece: str) -> None:
        if self.thought:
            self._end_reasoning()
        self.text += piece
        if not self.live:
            self.console.file.write(piece)
            self.console.file.flush()
            return
        done = finished_blocks(self.text[self.printed :])  # the printed part ends where a block does
        if done:
            self.printed += done
            self._print_finished()
        self.view.text, self.view.gap = self.text[self.printed :], self.printed_lines > 0  # drawn at the next refresh

    def _print_finished(self) -> None:
        """Print, above the live region, the lines of the finished blocks not printed yet."""
        from rich.markdown import Markdown
        from rich.segment import Segments

        lines = self.console.render_lines(Markdown(self.text[: self.printed]), pad=False)
        new = lines[self.printed_lines :]
        self.printed_lines = len(lines)
        self.console.print(Segments(_segments(new)), end="")

    def __exit__(self, *exc) -> None:
        if self.thought and not self.text:  # a reply that ended inside its reasoning (Ctrl-C, max_tokens)
            if self.thinking != "hide":
                self._print_dim(self.thought[self.thought_printed :] + "\n")
            if self.live:
                self.view.thinking = ""
        if self.live:  # the last block too is printed as the whole reply renders it (also after Ctrl-C)
            self.printed = len(self.text)
            self._print_finished()
            self.view.text = ""
            self.live.__exit__(*exc)
        elif self.text and not self.text.endswith("\n"):
            self.console.file.write("\n")
