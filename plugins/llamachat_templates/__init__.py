"""The built-in chat templates: llama-2 (Meta's chat_completion), chatml, zephyr, llama-3, the model's
own Jinja template, and none (raw text for base models)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from llamachat.hookspecs import hookimpl
from llamachat.protocols import Message, TemplateError
from llamachat.templates import BOS, EOS, Segment, SegmentTemplate, Special, check_dialog


class Llama2(SegmentTemplate):
    """Exactly Meta's `Llama.chat_completion` (meta-llama/llama, llama/generation.py).

    The system text is merged into the first user message; every finished exchange is one encode
    call `[BOS] + encode(f"[INST] {u} [/INST] {a} ") + [EOS]`, the open turn
    `[BOS] + encode(f"[INST] {u} [/INST]")`, with u and a `.strip()`ped (for the first exchange the
    strip applies to the merged string). BOS and EOS are ids, never parsed out of text.
    """

    name = "llama-2"
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
    SPECIAL_TAGS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        dialog = [dict(m) for m in messages]
        if dialog[0]["role"] == "system":
            system = dialog.pop(0)["content"]
            dialog[0]["content"] = self.B_SYS + system + self.E_SYS + dialog[0]["content"]
        out: list[Segment] = []
        for user, answer in zip(dialog[::2], dialog[1::2]):
            out += [BOS, f"{self.B_INST} {user['content'].strip()} {self.E_INST} {answer['content'].strip()} ", EOS]
        if add_generation_prompt:
            out += [BOS, f"{self.B_INST} {dialog[-1]['content'].strip()} {self.E_INST}"]
        return out

    def warnings(self, messages: Sequence[Message]) -> list[str]:
        tags = sorted({tag for m in messages for tag in self.SPECIAL_TAGS if tag in m["content"]})
        if not tags:
            return []
        return [
            f"the conversation contains {', '.join(tags)}: encoded as plain text, not as control tags (Meta's reference refuses such prompts)"
        ]


class ChatML(SegmentTemplate):
    name = "chatml"
    end_pieces = ("<|im_end|>",)
    START, END = Special("<|im_start|>"), Special("<|im_end|>")

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        out: list[Segment] = []
        for m in messages:
            out += [self.START, f"{m['role']}\n{m['content']}", self.END, "\n"]
        if add_generation_prompt:
            out += [self.START, "assistant\n"]
        return out


class Zephyr(SegmentTemplate):
    name = "zephyr"

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        out: list[Segment] = []
        for m in messages:
            out += [Special(f"<|{m['role']}|>"), f"\n{m['content']}", EOS, "\n"]
        if add_generation_prompt:
            out += [Special("<|assistant|>"), "\n"]
        return out


class Llama3(SegmentTemplate):
    name = "llama-3"
    end_pieces = ("<|eot_id|>", "<|eom_id|>")
    START, END, EOT = Special("<|start_header_id|>"), Special("<|end_header_id|>"), Special("<|eot_id|>")

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        out: list[Segment] = [Special("<|begin_of_text|>", "bos")]
        for m in messages:
            out += [self.START, m["role"], self.END, "\n\n" + m["content"].strip(), self.EOT]
        if add_generation_prompt:
            out += [self.START, "assistant", self.END, "\n\n"]
        return out


class Raw(SegmentTemplate):
    """No chat format: the messages' text as is, after BOS where the tokenizer is SentencePiece."""

    name = "none"

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        if not messages:
            raise TemplateError("nothing to answer: no text")
        return ["".join(m["content"] for m in messages)]

    def encode(self, messages, tokenizer, add_generation_prompt=True):
        ids = super().encode(messages, tokenizer, add_generation_prompt)
        return ([tokenizer.bos_id] if tokenizer.kind == "sentencepiece" and tokenizer.bos_id is not None else []) + ids


class Jinja(SegmentTemplate):
    """The model's own `chat_template`, rendered in jinja2's sandbox as transformers does.

    Special-token strings become ids only where the template emitted them: before rendering, each
    special string inside message content is broken by an invisible sentinel, so after splitting the
    output on special strings every match is the template's own; the sentinels are then removed.
    """

    name = "jinja"
    KNOWN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")  # those the source uses end a turn

    def __init__(self, source: str | None):
        if not source:
            raise TemplateError("this model has no chat template of its own; choose one with --template (e.g. llama-2, chatml)")
        from jinja2 import TemplateError as JinjaError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        try:
            self.template = env.from_string(source)
        except JinjaError as e:
            raise TemplateError(f"the model's chat template does not compile: {e}") from None
        self.source = source
        self.end_pieces = tuple(p for p in self.KNOWN_ENDS if p in source)
        self._tokenizer = None
        self._specials: list[str] = []

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool, bos: str = "<s>", eos: str = "</s>") -> str:
        from jinja2 import TemplateError as JinjaError

        try:
            return self.template.render(messages=list(messages), add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
        except TemplateError:
            raise
        except JinjaError as e:
            raise TemplateError(f"the model's chat template failed: {e}") from None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        check_dialog(messages, add_generation_prompt)
        return self._render(messages, add_generation_prompt)

    def encode(self, messages, tokenizer, add_generation_prompt=True):
        check_dialog(messages, add_generation_prompt)
        specials = self._special_pieces(tokenizer)
        sentinel = next(chr(c) for c in range(0xE000, 0xF900) if not any(chr(c) in m["content"] for m in messages))
        escaped = [dict(m, content=_break(m["content"], specials, sentinel)) for m in messages]
        bos = tokenizer.piece(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
        eos = tokenizer.piece(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
        text = self._render(escaped, add_generation_prompt, bos, eos)
        ids: list[int] = []
        if not specials:
            return tokenizer.encode(text.replace(sentinel, ""))
        pattern = "(" + "|".join(re.escape(s) for s in specials) + ")"
        for i, part in enumerate(re.split(pattern, text)):
            if i % 2:
                ids.append(tokenizer.token_id(part))
            elif part:
                ids += tokenizer.encode(part.replace(sentinel, ""))
        return ids

    def _special_pieces(self, tokenizer) -> list[str]:
        if tokenizer is not self._tokenizer:  # longest first, so that no special hides a longer one
            pieces = {tokenizer.piece(i) for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)}
            used = {p for p in pieces if p and p in self.source} | _bos_eos(tokenizer)  # bos/eos come in as variables
            self._specials = sorted(used, key=len, reverse=True)
            self._tokenizer = tokenizer
        return self._specials


def _bos_eos(tokenizer) -> set[str]:
    return {tokenizer.piece(i) for i in (tokenizer.bos_id, tokenizer.eos_id) if i is not None}


def _break(content: str, specials: list[str], sentinel: str) -> str:
    for s in specials:
        content = content.replace(s, s[0] + sentinel + s[1:])
    return content


def _raise(message: str):
    raise TemplateError(f"the model's chat template refused the conversation: {message}")


@hookimpl
def register_templates(register):
    register("llama-2", lambda _: Llama2())
    register("chatml", lambda _: ChatML())
    register("zephyr", lambda _: Zephyr())
    register("llama-3", lambda _: Llama3())
    register("jinja", Jinja)
    register("none", lambda _: Raw())
