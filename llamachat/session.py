"""A conversation with a model whose KV cache persists across turns.

The invariant: the cache holds exactly the tokens of `ledger`. Each turn the whole conversation is
encoded with the template (so the model always sees exactly the reference format), the longest
common prefix with the ledger is kept, the cache is truncated to it, and only the rest is evaluated.
A follow-up therefore costs the new message plus the few boundary tokens where the re-encoded reply
differs from the sampled ids, never the earlier history. /undo, /retry, /system and /reset only
change the messages; the next turn's prefix match brings the cache along, and `resync()` does it at
once where memory should be given back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from .api import Model
from .errors import LlamachatError
from .generate import Stats, prefill
from .lookup import default_lookup
from .protocols import TemplateError
from .reasoning import ReasoningSplitter, starts_inside
from .sampling import SamplerChain
from .templates import ChatContext, encode_chat, render_chat
from .tokenizer import replace_lone_surrogates

OVERFLOW_POLICIES = ("drop-oldest", "stop")
OnText = Callable[[str], None] | None


@dataclass
class Reply:
    text: str  # the answer (a reasoning model's reasoning is apart, in `reasoning`)
    stats: Stats
    interrupted: bool = False
    notices: list[str] = field(default_factory=list)  # one line each: warnings, what was dropped
    reasoning: str = ""
    unsent: str = ""  # Ctrl-C came during the prompt: the message, to offer again (its evaluated part is cached)


def check_overflow_free(value: Any, name: str = "overflow_free") -> float:
    """The share of the room to free when the context fills: a number from 0 to 0.9."""
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = -1.0
    if isinstance(value, bool) or not 0 <= share <= 0.9:
        raise LlamachatError(f"{name} takes a number from 0 to 0.9 (the share of the context to free when it fills), got {value!r}")
    return share


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class StopText:
    """Cuts a streamed reply at the first stop string, holding back text that may begin one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.text, self.emitted, self.hit = "", 0, False

    def feed(self, piece: str) -> str:
        self.text += piece
        for stop in self.stops:
            at = self.text.find(stop)
            if at >= 0:
                self.hit, self.text = True, self.text[:at]
                return self._emit(len(self.text))
        hold = max((k for stop in self.stops for k in range(1, len(stop)) if self.text.endswith(stop[:k])), default=0)
        return self._emit(len(self.text) - hold)

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        out = self.text[self.emitted : upto] if upto > self.emitted else ""
        self.emitted = max(self.emitted, upto)
        return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _preview(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")


class Session:
    def __init__(
        self,
        model: Model,
        chain: SamplerChain,
        *,
        system: str | None = None,
        max_tokens: int = 1024,
        context: int | None = None,
        overflow: str = "drop-oldest",
        stop: Sequence[str] = (),
        lookup: int | None = None,
        overflow_free: float = 0.5,
    ):
        if overflow not in OVERFLOW_POLICIES:
            raise LlamachatError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {overflow!r}")
        self.model, self.chain = model, chain
        self.max_tokens, self.overflow = max_tokens, overflow
        # drop-oldest frees this share of the room (context less max_tokens) when the context fills:
        # dropping changes the prefix right after the system prompt, so the rest is evaluated again,
        # once every many turns rather than at every turn (0: drop only what the new message needs)
        self.overflow_free = check_overflow_free(overflow_free)
        self.stop_strings: list[str] = list(stop)  # a reply also ends at any of these (/stop)
        self.lookup = lookup  # draft tokens a pass checks (lookup.py); None: the backend's default
        self.context = min(context or model.config.context_length, model.config.context_length)
        self.messages: list[dict[str, Any]] = []  # role, content, time; replies also stats, interrupted
        self.dropped: list[dict[str, Any]] = []  # exchanges dropped to fit the context (kept for the transcript)
        if system:
            self.messages.append({"role": "system", "content": system, "time": _now()})
        self.cache = model.runner.new_cache(self.context)
        self.context = min(self.context, self.cache.capacity)  # a backend may cap it (llamacpp's `context`)
        self.ledger: list[int] = []
        self.template_context = ChatContext()  # the chat's start (its date) and thinking switch, saved with it
        self.think = "show"  # /think: show, hide or off
        self.used = 0  # tokens the conversation took at the last turn (prompt and reply)
        self.totals = {"prompt_new": 0, "prompt_cached": 0, "generated": 0, "replies": 0}

    # -- what the model sees ----------------------------------------------------------------------
    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    def chat(self, messages: list[dict[str, Any]] | None = None) -> list[dict[str, str]]:
        """The messages as the template takes them (role and content only)."""
        return [{"role": m["role"], "content": m["content"]} for m in (self.messages if messages is None else messages)]

    def encode(self, messages: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True) -> list[int]:
        try:
            return encode_chat(self.model.template, self.chat(messages), self.model.tokenizer, add_generation_prompt, self.template_context)
        except TemplateError as e:
            raise LlamachatError(str(e)) from None

    def render(self, add_generation_prompt: bool | None = None) -> str:
        """The conversation as the template writes it (special tokens spelled out); with the
        generation prompt when it ends with a user message, unless told."""
        if add_generation_prompt is None:
            add_generation_prompt = bool(self.messages) and self.messages[-1]["role"] == "user"
        try:
            return render_chat(self.model.template, self.chat(), add_generation_prompt, self.template_context, self.model.tokenizer)
        except TemplateError as e:
            raise LlamachatError(str(e)) from None

    def keep(self, n: int) -> None:
        """Keep the first `n` tokens of the cache and of the ledger, together."""
        self.cache.truncate(n)
        self.ledger = self.ledger[:n]

    def _sync(self, ids: list[int]) -> list[int]:
        """Truncate the cache to its longest prefix shared with `ids`, keeping at least the last id to
        evaluate (its logits start the reply); return the ids still to evaluate."""
        keep = min(common_prefix(self.ledger, ids), len(ids) - 1)
        self.keep(keep)
        return ids[keep:]

    def resync(self, evaluate: bool = False) -> None:
        """Give back the cache beyond what the current conversation shares with it; with `evaluate`,
        also evaluate the rest of the conversation now (after a backend switch or a load)."""
        if not any(m["role"] == "user" for m in self.messages):
            return  # nothing to compare with yet: the next turn's prefix match trims the cache
        ids = self.encode(add_generation_prompt=self.messages[-1]["role"] == "user")
        keep = common_prefix(self.ledger, ids)
        self.keep(keep)
        if evaluate and len(ids) > keep:
            ids = ids[: self.cache.capacity]  # a conversation over the context: the next ask fits it
            try:
                prefill(self.model.runner, self.cache, ids[keep:])
            finally:
                self.ledger = ids[: len(self.cache)]  # the passes that completed, if interrupted

    # -- turns ------------------------------------------------------------------------------------
    def ask(self, text: str, on_text: OnText = None, on_reasoning: OnText = None) -> Reply:
        """Answer `text`, streaming the answer to `on_text` and a reasoning model's reasoning to
        `on_reasoning`. Ctrl-C (KeyboardInterrupt) during the reply keeps what was generated."""
        if not text.strip():
            raise LlamachatError("empty message: nothing to send")
        text, replaced = replace_lone_surrogates(text)  # kept as sent: a session file is UTF-8
        if self.messages and self.messages[-1]["role"] == "user":  # an answer was never generated
            self.messages.pop()
        candidate = [*self.messages, {"role": "user", "content": text, "time": _now()}]
        messages, ids, notices = self._fit(candidate)
        self.messages = messages
        if replaced:
            notices = ["the message held bytes that are not UTF-8; they were replaced with \ufffd", *notices]
        return self._reply(ids, notices, on_text, on_reasoning)

    def retry(self, on_text: OnText = None, on_reasoning: OnText = None) -> Reply:
        """Generate the last reply again."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise LlamachatError("nothing to retry: there is no reply yet")
        self.messages.pop()
        messages, ids, notices = self._fit(self.messages)
        self.messages = messages
        return self._reply(ids, notices, on_text, on_reasoning)

    def undo(self) -> str:
        """Drop the last exchange; say what was removed."""
        if not self.messages or self.messages[-1]["role"] == "system":
            raise LlamachatError("nothing to undo")
        removed = []
        if self.messages[-1]["role"] == "assistant":
            removed.append(self.messages.pop())
        if self.messages and self.messages[-1]["role"] == "user":
            removed.insert(0, self.messages.pop())
        self.resync()
        parts = [f"your message {_preview(m['content'])}" if m["role"] == "user" else "its reply" for m in removed]
        return "removed " + " and ".join(parts)

    def set_system(self, text: str | None) -> list[str]:
        """Set (or, with None, remove) the system prompt; return what had to be dropped to fit it."""
        if self.system is not None:
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text, "time": _now()})
        self.resync()
        return self._fit_closed()  # a longer system prompt can push the conversation past the context

    def reset(self) -> None:
        """Forget the conversation, keeping the system prompt."""
        self.messages = self.messages[:1] if self.system is not None else []
        self.dropped = []
        self.keep(0)

    # -- internals --------------------------------------------------------------------------------
    def _fits(self, ids: list[int]) -> bool:
        return len(ids) + self.max_tokens <= self.context

    def _fit(self, messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int], list[str]]:
        """The messages (oldest exchanges dropped if the policy allows) and their ids, fitting the
        context with `max_tokens` to spare for the reply."""
        if self.max_tokens >= self.context:  # no message fits: say so, rather than blame the message
            larger = ", or a larger --context" if self.context < self.model.config.context_length else ""  # not past the model's
            raise LlamachatError(
                f"max_tokens {self.max_tokens} exceeds the context ({self.context} tokens): it takes an integer "
                f"from 1 to {self.context - 1} (-n, /max_tokens{larger}); nothing was sent"
            )
        ids = self.encode(messages)
        if self._fits(ids):
            return messages, ids, []
        head = messages[:1] if messages[0]["role"] == "system" else []
        newest = messages[-1:]
        alone = self.encode([*head, *newest])
        if not self._fits(alone):
            raise LlamachatError(
                f"message too long: {len(alone)} tokens with the system prompt, and the context holds {self.context} "
                f"with {self.max_tokens} kept for the reply (lower max_tokens, shorten the system prompt or raise the context); nothing was sent"
            )
        if self.overflow == "stop":
            raise LlamachatError(
                f"the conversation ({len(ids)} tokens + {self.max_tokens} for the reply) would overflow the context ({self.context}); "
                "nothing was sent: /undo or /reset to make room, or use a profile with a larger context"
            )
        kept, ids, notice = self._drop_oldest(head, messages[len(head) : -1], newest, self.context - self.max_tokens)
        return kept, ids, [notice]

    def _drop_oldest(
        self, head: list[dict[str, Any]], body: list[dict[str, Any]], newest: list[dict[str, Any]], room: int
    ) -> tuple[list[dict[str, Any]], list[int], str]:
        """Drop the oldest exchanges of `body` until head + body + newest takes at most `room` tokens
        less the share `overflow_free` asks to free (never fewer than needed to fit `room`)."""
        target = int(room * (1 - self.overflow_free))
        dropped: list[dict[str, Any]] = []
        ids = self.encode([*head, *body, *newest], add_generation_prompt=newest[-1]["role"] == "user")
        while body and (len(ids) > target or not dropped):
            dropped += body[:2]  # the oldest exchange: a user message and its reply
            body = body[2:]
            ids = self.encode([*head, *body, *newest], add_generation_prompt=newest[-1]["role"] == "user")
        self.dropped += dropped
        n = len([m for m in dropped if m["role"] == "user"])
        users = [m for m in dropped if m["role"] == "user"]
        span = f"{_preview(users[0]['content'], 24)} to {_preview(users[-1]['content'], 24)}" if users else ""
        notice = (
            f"context full: dropped the oldest {n} exchange{'s' if n != 1 else ''} ({len(dropped)} messages{', ' + span if span else ''}) "
            f"to fit {self.context} tokens; the conversation now takes {len(ids)} (overflow_free {self.overflow_free:g}), "
            "and what follows the system prompt was evaluated again"
        )
        return [*head, *body, *newest], ids, notice

    def _prefill_interrupted(self, stats: Stats, wanted: int, notices: list[str]) -> Reply:
        """Ctrl-C before the first token: no empty reply is kept; the passes that completed stay in
        the cache, the user's message stays last (the next ask replaces it), and the caller offers it
        again, so sending it again costs only the rest."""
        stats.prompt_tokens = max(0, len(self.cache) - stats.cached_tokens)  # evaluated and kept
        unsent = self.messages[-1]["content"] if self.messages and self.messages[-1]["role"] == "user" else ""
        notice = (
            f"interrupted during the prompt: {stats.prompt_tokens} of {wanted} new tokens evaluated and kept in the cache; "
            "no reply was kept"  # (the chat offers the message again: repl.py says so)
        )
        return Reply("", stats, True, [*notices, notice], unsent=unsent)

    def _fit_closed(self) -> list[str]:
        """The conversation as it stands can take more tokens than the context: a reply re-encoded
        (the template closing it, its text tokenized afresh) can take more than were sampled, a new
        system prompt more than the old. With drop-oldest, drop again now, so the conversation always
        fits (a backend switch or /load evaluates it whole). Under stop, the next message is refused
        as the policy says."""
        if self.overflow != "drop-oldest" or not any(m["role"] == "user" for m in self.messages):
            return []
        awaiting = self.messages[-1]["role"] == "user"  # a message whose reply was interrupted
        if len(self.encode(add_generation_prompt=awaiting)) <= self.context:
            return []
        head = self.messages[:1] if self.messages[0]["role"] == "system" else []
        last = self.messages[-1:] if awaiting or len(self.messages) - len(head) < 2 else self.messages[-2:]
        body = self.messages[len(head) : len(self.messages) - len(last)]
        if not body:
            return []
        self.messages, _, notice = self._drop_oldest(head, body, last, self.context)
        self.resync()
        return [notice]

    def _splitter(self) -> ReasoningSplitter:
        """Where the reply's reasoning ends (and whether it starts inside it), for a reasoning template."""
        tags = getattr(self.model.template, "thinking_tags", None)
        return ReasoningSplitter(tags, tags is not None and starts_inside(self.render(), tags))

    def _reply(self, ids: list[int], notices: list[str], on_text: OnText, on_reasoning: OnText) -> Reply:
        warnings = getattr(self.model.template, "warnings", lambda _: [])(self.chat())
        splitter = self._splitter()
        new_ids = self._sync(ids)
        stats, history = Stats(), list(ids)
        text = StopText(self.stop_strings)
        interrupted = False

        def emit(piece: str, final: bool = False) -> None:
            for kind, part in splitter.feed(piece) + (splitter.flush() if final else []):
                sink = on_text if kind == "answer" else on_reasoning
                if sink:
                    sink(part)

        max_tokens = min(self.max_tokens, self.context - len(ids))
        lookup = self.lookup if self.lookup is not None else default_lookup(self.model.runner)
        pieces = self.model.stream(self.cache, new_ids, self.chain, history=history, max_tokens=max_tokens, stats=stats, lookup=lookup)
        try:
            with closing(pieces):  # closed at once on a break or Ctrl-C: the cache drops drafts not drawn
                for piece in pieces:
                    emit(text.feed(piece))
                    if text.hit:
                        stats.finish_reason = "stop"
                        break
        except KeyboardInterrupt:
            interrupted = True
            stats.finish_reason = "interrupted"
        emit(text.flush(), final=True)
        self.ledger = history[: len(self.cache)]  # what the cache now holds
        self.used = len(history)
        if interrupted and not stats.generated_tokens:
            return self._prefill_interrupted(stats, len(new_ids), notices + warnings)
        message = {"role": "assistant", "content": text.text, "time": _now(), "stats": vars(stats).copy(), "interrupted": interrupted}
        if splitter.seen_reasoning:  # content stays as written, for the template; these are for people
            message |= {"reasoning": splitter.reasoning, "answer": splitter.answer}
        self.messages.append(message)
        notices = notices + self._fit_closed()
        self.totals["prompt_new"] += stats.prompt_tokens
        self.totals["prompt_cached"] += stats.cached_tokens
        self.totals["generated"] += stats.generated_tokens
        self.totals["replies"] += 1
        return Reply(splitter.answer, stats, interrupted, notices + warnings, splitter.reasoning)
