"""Chat templates: how a conversation becomes the exact token ids a model was trained on.

A template produces *segments*: plain text, which the tokenizer encodes as text (so nothing a user
types ever becomes a control token), and `Special` tokens, which become ids directly. `render` shows
the same segments as one string with the special tokens written out. Templates themselves are
plugins (`register_templates`); this module holds what they share and how one is chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .protocols import Message, Template, TemplateError, Tokenizer

__all__ = [
    "Special",
    "SegmentTemplate",
    "TemplateError",
    "ChatContext",
    "encode_chat",
    "render_chat",
    "get_template",
    "available_templates",
    "choose_template",
    "check_dialog",
]

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Special:
    """A special token in a template's output: `piece` as the tokenizer spells it; `role` ("bos" or
    "eos") when it is the tokenizer's BOS/EOS whatever its spelling."""

    piece: str
    role: str | None = None

    def token_id(self, tokenizer: Tokenizer) -> int:
        i = {"bos": tokenizer.bos_id, "eos": tokenizer.eos_id}.get(self.role or "", None)
        if i is None:
            i = tokenizer.token_id(self.piece)
        if i is None:
            raise TemplateError(f"this model's tokenizer has no {self.piece} token; choose another template with --template")
        return i


Segment = str | Special
BOS, EOS = Special("<s>", "bos"), Special("</s>", "eos")


@dataclass(frozen=True)
class ChatContext:
    """What a template may read besides the messages, fixed for one chat.

    `started` is the moment the chat began: a template's `strftime_now` formats it (and never the
    clock), so a chat resumed on another day renders the same date and keeps its cached prefix.
    `thinking` is the reasoning switch passed as `enable_thinking` (Qwen3, llama.cpp's R1-Distill).
    """

    started: datetime = field(default_factory=lambda: datetime.now().replace(microsecond=0))
    thinking: bool = True

    def variables(self) -> dict[str, object]:
        """The extra variables a Jinja template sees (transformers passes these as `**kwargs`)."""
        started = self.started

        def strftime_now(format: str) -> str:  # a plain function, as transformers' (no datetime object to reach into)
            return started.strftime(format)

        return {"strftime_now": strftime_now, "enable_thinking": self.thinking}


def encode_chat(
    template: Template, messages: Sequence[Message], tokenizer: Tokenizer, add_generation_prompt: bool, context: ChatContext | None
) -> list[int]:
    """`template.encode`, with the chat's context where the template takes one (`takes_context`):
    the Template protocol does not require it, so an outside template without it still works."""
    if context is not None and getattr(template, "takes_context", False):
        return template.encode(messages, tokenizer, add_generation_prompt=add_generation_prompt, context=context)  # type: ignore[call-arg]
    return template.encode(messages, tokenizer, add_generation_prompt=add_generation_prompt)


def render_chat(
    template: Template,
    messages: Sequence[Message],
    add_generation_prompt: bool,
    context: ChatContext | None,
    tokenizer: Tokenizer | None = None,
) -> str:
    """`template.render` with the chat's context (and the tokenizer's BOS/EOS spelling) where it takes them."""
    if getattr(template, "takes_context", False):
        return template.render(messages, add_generation_prompt=add_generation_prompt, context=context, tokenizer=tokenizer)  # type: ignore[call-arg]
    return template.render(messages, add_generation_prompt=add_generation_prompt)


class SegmentTemplate:
    """Base of the built-in templates: subclasses define `segments`; encode and render follow."""

    name = "segments"
    end_pieces: tuple[str, ...] = ()  # special tokens that end an assistant turn
    takes_context = True  # encode/render accept `context` (built-in formats read nothing from it)
    thinking_tags: tuple[str, str] | None = None  # how a reasoning model marks its reasoning, if it is one
    thinking_switch = False  # whether ChatContext.thinking changes the format (/think off)

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:  # pragma: no cover
        raise NotImplementedError

    def encode(
        self, messages: Sequence[Message], tokenizer: Tokenizer, add_generation_prompt: bool = True, context: ChatContext | None = None
    ) -> list[int]:
        ids: list[int] = []
        for seg in self.segments(messages, add_generation_prompt):
            if isinstance(seg, Special):
                ids.append(seg.token_id(tokenizer))
            elif seg:
                ids += tokenizer.encode(seg)
        return ids

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, context=None, tokenizer=None) -> str:
        """The segments as one string; BOS and EOS spelled as `tokenizer` spells them, if given."""
        return "".join(_spelling(s, tokenizer) if isinstance(s, Special) else s for s in self.segments(messages, add_generation_prompt))

    def stop_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]:
        extra = (tokenizer.token_id(p) for p in self.end_pieces)
        return tuple(dict.fromkeys([*tokenizer.eot_ids, *(i for i in extra if i is not None)]))

    def warnings(self, messages: Sequence[Message]) -> list[str]:
        """Things worth telling the user about this conversation (e.g. control tags typed as text)."""
        return []


def _spelling(special: Special, tokenizer: Tokenizer | None) -> str:
    i = {"bos": getattr(tokenizer, "bos_id", None), "eos": getattr(tokenizer, "eos_id", None)}.get(special.role or "")
    return tokenizer.piece(i) if tokenizer is not None and i is not None else special.piece


def check_dialog(messages: Sequence[Message], add_generation_prompt: bool) -> None:
    """Raise TemplateError unless `messages` is [system?] user (assistant user)* [assistant], ending
    with a user message when a reply is wanted, and with an assistant message otherwise."""
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise TemplateError(f"message {i + 1} has role {m.get('role')!r}; roles are system, user and assistant")
        if not isinstance(m.get("content"), str):
            raise TemplateError(f"message {i + 1} has no text content")
        if m["role"] == "system" and i:
            raise TemplateError(f"the system message must come first (it is message {i + 1})")
    turns = [m for m in messages if m["role"] != "system"]
    if not turns:
        raise TemplateError("nothing to answer: the conversation has no user message")
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise TemplateError(f"two {m['role']} messages in a row: user and assistant messages must alternate, starting with user")
    last = turns[-1]["role"]
    if add_generation_prompt and last != "user":
        raise TemplateError("nothing to answer: the conversation must end with a user message")
    if not add_generation_prompt and last != "assistant":
        raise TemplateError("a closed conversation must end with an assistant message")


def available_templates() -> list[str]:
    from .plugins import registry

    return sorted(registry().templates)


def get_template(name: str, model_template: str | None = None) -> Template:
    """The template registered as `name`; `model_template` is the model's own Jinja template (the
    `jinja` template renders it). Unknown names raise TemplateError listing the available ones."""
    from .plugins import registry

    factories = registry().templates
    if name not in factories:
        raise TemplateError(f"unknown template {name!r} (available: {', '.join(sorted(factories))})")
    return factories[name](model_template)


def choose_template(requested: str | None, model_template: str | None, tokenizer: Tokenizer) -> Template:
    """The template to use: the one asked for, else the model's own, else one the vocabulary implies."""
    if requested and requested != "auto":
        return get_template(requested, model_template)
    if model_template:
        return get_template("jinja", model_template)
    # Phi-3's vocabulary has zephyr's <|user|> too, and ends turns with its own <|end|>
    for piece, name in (("<|start_header_id|>", "llama-3"), ("<|im_start|>", "chatml"), ("<|end|>", "phi-3"), ("<|user|>", "zephyr")):
        if tokenizer.token_id(piece) is not None:
            return get_template(name)
    return get_template("llama-2" if tokenizer.kind == "sentencepiece" else "none")
