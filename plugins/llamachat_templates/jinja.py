"""The model's own chat template (Jinja), rendered as transformers' `apply_chat_template` renders it.

The environment is transformers' (`utils/chat_template_utils.py`, `_cached_compile_jinja_template`):
jinja2's immutable sandbox with trim_blocks and lstrip_blocks, the loopcontrols extension, a
`{% generation %}` tag that renders its body, its `tojson` (no HTML escaping), `raise_exception`,
`strftime_now`, `dict` and a `namespace` that refuses underscore names; and the variables it passes:
`messages`, `tools=None`, `documents=None`, `add_generation_prompt`, the tokenizer's `bos_token` and
`eos_token`, and the chat's own (`ChatContext.variables`: `strftime_now` on the chat's start, not the
clock, and `enable_thinking`).

Special-token strings become ids only where the template emitted them: before rendering, each special
string inside message content is broken by an invisible sentinel, so after splitting the output on
special strings every match is the template's own; the sentinels are then removed. (transformers does
the same when asked, with `sanitize_control_tokens=True`.)

A render's work is bounded (issue 15, item 5): the sandbox blocks attribute access but neither time
nor output, and a template of two nested `range(100000)` loops printing nothing never returned. Every
loop iteration and every call the template makes is a step (`Bounded`: each `for` loop's iterable is
wrapped in a counting filter when the template is parsed, and the sandbox's `call` counts too), and a
render that takes more than MAX_STEPS is refused in one line with `--template NAME` as the way out.
Counting, not a clock: a time limit would need `signal.alarm` (main thread only; the chat renders in
its loader thread too) or a subprocess per render, and would refuse a legitimate template on a loaded
machine; a step count gives the same answer everywhere.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from llamachat.protocols import Message, TemplateError, Tokenizer
from llamachat.templates import ChatContext, SegmentTemplate, check_dialog

# Reasoning markers, as (opening, closing) tags, in the order they are looked for in a template.
THINKING_TAGS = (("<think>", "</think>"), ("[THINK]", "[/THINK]"))
OUT = "choose another template with --template NAME (/template NAME in a chat)"
# Loop iterations + calls one render may take. A real template takes a few per message (the 12 of
# tests/test_model_templates.py: at most ~40), so a million is ~25,000 messages' worth, and takes
# about a second to reach here; two nested range(100000) loops are 10^10.
MAX_STEPS = 1_000_000
MAX_REPEAT = 1_000_000  # longest string or list `*` may build (`"x" * 10**9` would take the memory)
_steps = threading.local()  # the steps left to the render running in this thread


def _step(n: int = 1) -> None:
    left = getattr(_steps, "left", MAX_STEPS) - n
    _steps.left = left
    if left < 0:
        raise TemplateError(
            f"the model's chat template runs without end (more than {MAX_STEPS:,} loop steps and calls for one conversation); {OUT}"
        )


def _counted(iterable: Any):
    """A `for` loop's iterable, one step per item (the filter every loop's iterable is wrapped in)."""
    for item in iterable:
        _step()
        yield item


def _raise(message: str):
    raise TemplateError(f"the model's chat template refused the conversation: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


COUNTED = "llamachat_counted"  # the filter wrapped around every loop's iterable


@lru_cache(maxsize=1)
def environment():
    """transformers' chat-template environment (see the module docstring)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for transformers' masks; it renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """A namespace that refuses underscore names, so a template cannot reach Python's internals."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore names on a namespace ({name!r})")

    class Bounded(ImmutableSandboxedEnvironment):
        """The sandbox, with every loop iteration and call counted against the render's steps."""

        intercepted_binops = frozenset(["*", "**"])  # routed through call_binop, and never constant-folded

        def _parse(self, source, name, filename):
            tree = super()._parse(source, name, filename)
            for loop in tree.find_all(jinja2.nodes.For):
                loop.iter = jinja2.nodes.Filter(loop.iter, COUNTED, [], [], None, None, lineno=loop.lineno)
            return tree

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (the sandbox's own signature)
            _step()
            return super().call(__context, __obj, *args, **kwargs)

        def call_binop(self, context, operator, left, right):
            _step()
            if operator == "*" and isinstance(right, int) and isinstance(left, (str, list, tuple)):
                left, right = right, left
            if operator == "*" and isinstance(left, int) and isinstance(right, (str, list, tuple)) and left * len(right) > MAX_REPEAT:
                raise TemplateError(f"the model's chat template builds a sequence of {left * len(right):,} items; {OUT}")
            if operator == "**" and isinstance(right, int) and abs(right) > 1000 and isinstance(left, int) and abs(left) > 1:
                raise TemplateError(f"the model's chat template raises a number to the power {right:,}; {OUT}")
            return super().call_binop(context, operator, left, right)

    env = Bounded(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = _tojson
    env.filters[COUNTED] = _counted
    env.globals.update(raise_exception=_raise, dict=dict, namespace=Namespace)
    return env


class Jinja(SegmentTemplate):
    """The model's own `chat_template` (see the module docstring)."""

    name = "jinja"
    KNOWN_ENDS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|endoftext|>")  # those the source uses end a turn

    def __init__(self, source: str | None):
        if not source:
            raise TemplateError("this model has no chat template of its own; choose one with --template (e.g. llama-2, chatml)")
        from jinja2 import TemplateError as JinjaError

        try:
            self.template = environment().from_string(source)
        except JinjaError as e:
            raise TemplateError(f"the model's chat template does not compile ({e}); {OUT}") from None
        self.source = source
        self.end_pieces = tuple(p for p in self.KNOWN_ENDS if p in source)
        self.thinking_tags = next((tags for tags in THINKING_TAGS if tags[1] in source), None)
        self.thinking_switch = "enable_thinking" in source
        self._tokenizer: Tokenizer | None = None
        self._specials: list[str] = []
        self._probe()

    def _probe(self) -> None:
        """Render a one-message chat now, so that a template needing a variable llamachat does not
        provide fails when the model is chosen (at start-up, or at /template), not at the first reply."""
        try:
            self._render([{"role": "user", "content": "Hello"}], True, ChatContext(), "<s>", "</s>")
        except TemplateError as e:
            if "refused the conversation" not in str(e):  # a template may refuse a chat shape; that is not this
                raise

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool, context: ChatContext | None, bos: str, eos: str) -> str:
        from jinja2 import TemplateError as JinjaError
        from jinja2 import UndefinedError

        variables = (context or ChatContext()).variables()
        _steps.left = MAX_STEPS
        try:
            return self.template.render(
                messages=[dict(m) for m in messages],
                tools=None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos,
                eos_token=eos,
                **variables,
            )
        except TemplateError:
            raise
        except UndefinedError as e:
            raise TemplateError(
                f"the model's chat template needs {self._missing(variables) or e}, which llamachat does not provide; {OUT}"
            ) from None
        except JinjaError as e:
            raise TemplateError(f"the model's chat template failed ({e}); {OUT}") from None
        except RecursionError:  # a macro or recursive loop that calls itself without end
            raise TemplateError(f"the model's chat template recurses without end; {OUT}") from None

    def _missing(self, variables: dict[str, Any]) -> str:
        """The template's free variables that nobody sets, as a phrase ('the variable x')."""
        from jinja2 import meta

        given = {"messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token", *variables, *environment().globals}
        names = sorted(meta.find_undeclared_variables(environment().parse(self.source)) - given)
        if not names:
            return ""
        return ("the variable " if len(names) == 1 else "the variables ") + ", ".join(names)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True, context=None, tokenizer=None) -> str:
        check_dialog(messages, add_generation_prompt)
        bos, eos = _bos_eos_pieces(tokenizer) if tokenizer is not None else ("<s>", "</s>")
        return self._render(messages, add_generation_prompt, context, bos, eos)

    def encode(self, messages, tokenizer, add_generation_prompt=True, context=None):
        check_dialog(messages, add_generation_prompt)
        specials = self._special_pieces(tokenizer)
        sentinel = next(chr(c) for c in range(0xE000, 0xF900) if not any(chr(c) in m["content"] for m in messages))
        escaped = [dict(m, content=_break(m["content"], specials, sentinel)) for m in messages]
        text = self._render(escaped, add_generation_prompt, context, *_bos_eos_pieces(tokenizer))
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
            used = {p for p in pieces if p and p in self.source} | ({*_bos_eos_pieces(tokenizer)} - {""})  # bos/eos come in as variables
            self._specials = sorted(used, key=len, reverse=True)
            self._tokenizer = tokenizer
        return self._specials


def _bos_eos_pieces(tokenizer) -> tuple[str, str]:
    """The tokenizer's BOS and EOS as the template's `bos_token` and `eos_token` ("" when it has none)."""
    return tuple(tokenizer.piece(i) if i is not None else "" for i in (tokenizer.bos_id, tokenizer.eos_id))  # type: ignore[return-value]


def _break(content: str, specials: list[str], sentinel: str) -> str:
    for s in specials:
        content = content.replace(s, s[0] + sentinel + s[1:])
    return content
