"""The built-in chat templates: llama-2 (Meta's chat_completion), mistral (mistral-common's v1),
chatml, zephyr, llama-3, phi-3, the model's own Jinja template (jinja.py), and none (raw text for base
models)."""

from __future__ import annotations

from collections.abc import Sequence

from llamachat.hookspecs import hookimpl
from llamachat.protocols import Message, TemplateError
from llamachat.templates import BOS, EOS, Segment, SegmentTemplate, Special, check_dialog

from .jinja import Jinja


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


class Mistral(SegmentTemplate):
    """Mistral's v1 instruct format, exactly as mistral-common's `InstructTokenizerV1` builds it
    (mistralai/mistral-common, tokens/tokenizers/instruct.py at bc022b9; the format of Mistral-7B-
    Instruct v0.1, where [INST] is text): BOS once, then each user turn one encode call
    `encode(f"[INST] {u} [/INST]")`, each reply `encode(a) + [EOS]`. A system prompt has no tags of its
    own: it goes before the first user message as `system + "\n\n" + u`. Nothing is stripped.
    """

    name = "mistral"

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        turns = [m for m in messages if m["role"] != "system"]
        out: list[Segment] = [BOS]
        for i, m in enumerate(turns):
            if m["role"] == "user":
                content = system + "\n\n" + m["content"] if i == 0 and system else m["content"]
                out.append(f"[INST] {content} [/INST]")
            else:
                out += [m["content"], EOS]
        return out


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


class Phi3(SegmentTemplate):
    """Phi-3's format, as microsoft/Phi-3.5-mini-instruct's chat template writes it: each message
    `<|role|>\ncontent<|end|>\n` (an empty system message is left out), then `<|assistant|>\n` for a
    reply; a closed conversation ends with EOS."""

    name = "phi-3"
    end_pieces = ("<|end|>", "<|endoftext|>")

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        check_dialog(messages, add_generation_prompt)
        out: list[Segment] = []
        for m in messages:
            if m["role"] != "system" or m["content"]:
                out += [Special(f"<|{m['role']}|>"), "\n" + m["content"], Special("<|end|>"), "\n"]
        out += [Special("<|assistant|>"), "\n"] if add_generation_prompt else [EOS]
        return out


class Raw(SegmentTemplate):
    """No chat format: the messages' text as is, after BOS where the tokenizer is SentencePiece."""

    name = "none"

    def segments(self, messages: Sequence[Message], add_generation_prompt: bool) -> list[Segment]:
        if not messages:
            raise TemplateError("nothing to answer: no text")
        return ["".join(m["content"] for m in messages)]

    def encode(self, messages, tokenizer, add_generation_prompt=True, context=None):
        ids = super().encode(messages, tokenizer, add_generation_prompt)
        return ([tokenizer.bos_id] if tokenizer.kind == "sentencepiece" and tokenizer.bos_id is not None else []) + ids


@hookimpl
def register_templates(register):
    register("llama-2", lambda _: Llama2())
    register("mistral", lambda _: Mistral())
    register("chatml", lambda _: ChatML())
    register("zephyr", lambda _: Zephyr())
    register("llama-3", lambda _: Llama3())
    register("phi-3", lambda _: Phi3())
    register("jinja", Jinja)
    register("none", lambda _: Raw())
