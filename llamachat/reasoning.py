"""Reasoning models: a reply's reasoning told apart from its answer, and the /think switch.

DeepSeek-R1-Distill and Qwen3 (thinking on) write their reasoning between tags before the answer
(`<think>...</think>`; Mistral's reasoning models use `[THINK]...[/THINK]`). The R1-Distill templates
open the tag in the generation prompt, so such a reply starts inside the reasoning with no opening tag.
The reply is kept as the model wrote it (the message's content, which the template sees again: most
templates drop earlier turns' reasoning, and the KV cache follows by its prefix match); the split is
for the screen and the transcript.

/think show|hide|off: show the reasoning dimmed (the default), hide it, or turn it off where the
template has a switch for it (`enable_thinking`: Qwen3, llama.cpp's R1-Distill-Qwen).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .errors import LlamachatError

MODES = ("show", "hide", "off")


def starts_inside(prompt_text: str, tags: tuple[str, str] | None) -> bool:
    """Whether a reply to this rendered prompt begins inside the reasoning (the prompt opened the tag)."""
    if tags is None:
        return False
    return prompt_text.rstrip().endswith(tags[0])


class ReasoningSplitter:
    """Splits a streamed reply into its reasoning and its answer at the template's tags.

    `feed` returns (kind, text) pieces, kind "reasoning" or "answer", holding back text that may be the
    start of a tag. Before anything else a reply may open the reasoning (after blank space); once the
    answer has begun, tags in it are text. The whitespace between the reasoning and the answer belongs
    to neither.
    """

    def __init__(self, tags: tuple[str, str] | None, inside: bool):
        self.tags = tags
        self.state = "reasoning" if inside else ("start" if tags else "answer")
        self.pending = ""
        self.reasoning, self.answer = "", ""
        self.seen_reasoning = inside

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.pending += piece
        out: list[tuple[str, str]] = []
        while self.pending:
            step = getattr(self, "_" + self.state)()
            if step is None:
                break  # waiting for more text
            out += [s for s in step if s[1]]
        return out

    def flush(self) -> list[tuple[str, str]]:
        kind = "reasoning" if self.state == "reasoning" else "answer"
        text, self.pending = self.pending, ""
        if kind == "answer" and self.state in ("start", "after"):
            text = text.lstrip()
        elif kind == "reasoning":
            text = text.rstrip()
        return self._take(kind, text)

    def _take(self, kind: str, text: str) -> list[tuple[str, str]]:
        if kind == "reasoning":
            if not self.reasoning:
                text = text.lstrip("\n")
            self.reasoning += text
        else:
            self.answer += text
        return [(kind, text)] if text else []

    # -- states: each consumes some of `pending`, or returns None to wait for more -------------------
    def _start(self):
        opened = self.tags[0]
        text = self.pending.lstrip()
        if text.startswith(opened):
            self.pending, self.state, self.seen_reasoning = text[len(opened) :], "reasoning", True
            return []
        if opened.startswith(text):
            return None  # blank space or the tag's beginning so far
        self.state = "answer"
        return []

    def _reasoning(self):
        closed = self.tags[1]
        at = self.pending.find(closed)
        if at >= 0:
            text, self.pending, self.state = self.pending[:at], self.pending[at + len(closed) :], "after"
            return self._take("reasoning", text.rstrip())
        hold = max((k for k in range(1, len(closed)) if self.pending.endswith(closed[:k])), default=0)
        cut = len(self.pending) - hold
        while cut > 0 and self.pending[cut - 1].isspace():  # blank space may be the end of the reasoning
            cut -= 1
        if cut <= 0:
            return None
        text, self.pending = self.pending[:cut], self.pending[cut:]
        return self._take("reasoning", text)

    def _after(self):
        text = self.pending.lstrip()
        if not text:
            self.pending = ""
            return None
        self.pending, self.state = text, "answer"
        return []

    def _answer(self):
        text, self.pending = self.pending, ""
        return self._take("answer", text)


def set_mode(session: Any, mode: str) -> str:
    """/think MODE on `session`: what it did, in words. LlamachatError for a mode the template cannot do."""
    template = session.model.template
    now = session.think
    if mode not in MODES:
        raise LlamachatError(f"usage: /think show|hide|off (now {now})")
    tags = getattr(template, "thinking_tags", None)
    switch = getattr(template, "thinking_switch", False)
    if mode == "off" and not switch:
        raise LlamachatError(
            f"the {template.name} template has no switch for reasoning (Qwen3's enable_thinking is one); /think hide hides it instead"
        )
    session.think = mode
    thinking = mode != "off"
    if session.template_context.thinking != thinking:
        session.template_context = replace(session.template_context, thinking=thinking)
        session.resync()  # only the generation prompt changes: the cache keeps the history
    if tags is None:
        return f"thinking set to {mode} (the {template.name} template marks no reasoning: replies are unchanged)"
    return {
        "show": "thinking set to show: the reasoning is shown dimmed before the answer",
        "hide": "thinking set to hide: the model still reasons, the reasoning is not shown (the transcript keeps it)",
        "off": "thinking set to off: the template's own switch turns reasoning off",
    }[mode]
