"""Reasoning models: the reply's reasoning apart from its answer, /think, what goes back into the context
(the template's choice: R1-Distill and Qwen3 drop earlier replies' reasoning), and what that costs."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from reasoning_helpers import QWEN3, R1_LLAMA, R1_QWEN, scripted_chain
from test_session import assert_cache_is_fresh_prefill

import llamachat
from llamachat import transcript
from llamachat.errors import LlamachatError
from llamachat.reasoning import ReasoningSplitter, set_mode, starts_inside
from llamachat.session import Session
from llamachat.templates import ChatContext, get_template

THINK = ("<think>", "</think>")


def split(text: str, inside: bool, chunk: int) -> tuple[str, str]:
    s = ReasoningSplitter(THINK, inside)
    pieces = []
    for i in range(0, len(text), chunk):
        pieces += s.feed(text[i : i + chunk])
    pieces += s.flush()
    assert "".join(t for k, t in pieces if k == "reasoning") == s.reasoning
    assert "".join(t for k, t in pieces if k == "answer") == s.answer
    return s.reasoning, s.answer


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
@pytest.mark.parametrize(
    ("text", "inside", "expected"),
    [
        ("Let me see.\nYes.\n</think>\n\nParis.", True, ("Let me see.\nYes.", "Paris.")),  # R1: the prompt opened it
        ("<think>\nHmm.\n</think>\n\nParis <think> is text here.", False, ("Hmm.", "Paris <think> is text here.")),  # Qwen3
        ("\n<think>\n\n</think>\n\nParis.", False, ("", "Paris.")),
        ("Paris.", False, ("", "Paris.")),
        ("<thinking aloud", False, ("", "<thinking aloud")),
        ("cut off in the middle </thi", True, ("cut off in the middle </thi", "")),
    ],
)
def test_splitter(text, inside, expected, chunk):
    assert split(text, inside, chunk) == expected


def test_r1_prompts_open_the_reasoning_and_qwen3_off_closes_it():
    user = [{"role": "user", "content": "Hi"}]
    r1 = get_template("jinja", R1_LLAMA)
    assert r1.thinking_tags == THINK and not r1.thinking_switch
    assert starts_inside(r1.render(user), THINK)
    qwen3 = get_template("jinja", QWEN3)
    assert qwen3.thinking_switch
    assert not starts_inside(qwen3.render(user, context=ChatContext(thinking=True)), THINK)  # the model opens it itself
    assert not starts_inside(qwen3.render(user, context=ChatContext(thinking=False)), THINK)  # "<think>\n\n</think>\n\n"
    r1_qwen = get_template("jinja", R1_QWEN)
    assert starts_inside(r1_qwen.render(user, context=ChatContext(thinking=True)), THINK)
    assert not starts_inside(r1_qwen.render(user, context=ChatContext(thinking=False)), THINK)
    assert get_template("chatml").thinking_tags is None


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return llamachat.load(tiny_gguf[2])


REPLY = "I should compare the two.\nBoth are fine.\n</think>\n\nTake the first one."


def test_follow_up_costs_the_answer_and_the_message_not_the_reasoning(tiny):
    """R1-Distill's template drops the reasoning from earlier replies: the cache keeps the history up
    to the previous reply, which is evaluated again without its reasoning, then the new message."""
    model = tiny.with_template(get_template("jinja", R1_LLAMA))
    s = Session(model, scripted_chain(model.tokenizer, REPLY), max_tokens=64)
    reasoning = []
    first = s.ask("Which one?", on_reasoning=reasoning.append)
    assert first.reasoning == "I should compare the two.\nBoth are fine." == "".join(reasoning)
    assert first.text == "Take the first one."
    assert s.messages[-1]["content"].endswith(REPLY)  # kept as written: the template decides what goes back
    assert s.messages[-1]["reasoning"] == first.reasoning and s.messages[-1]["answer"] == first.text

    follow_up = s.ask("Why?")
    before = model.template.encode(s.chat()[:1], model.tokenizer)  # the first prompt: history, then <think>\n
    now = model.template.encode(s.chat()[:3], model.tokenizer)  # the second prompt
    shared = next(i for i, (a, b) in enumerate(zip(before, now)) if a != b)
    answer_and_message = len(now) - shared
    assert follow_up.stats.cached_tokens == shared  # the history is not evaluated again
    assert follow_up.stats.prompt_tokens == answer_and_message  # the answer (no reasoning) and the new message
    assert "I should compare" not in model.tokenizer.decode(now)  # the template dropped it
    evaluated = model.tokenizer.decode(now[shared:])  # what the follow-up paid for
    assert "Take the first one." in evaluated and "Why?" in evaluated and "Which one?" not in evaluated
    assert_cache_is_fresh_prefill(s)


def test_think_off_uses_the_templates_switch(tiny):
    model = tiny.with_template(get_template("jinja", QWEN3))
    s = Session(model, scripted_chain(model.tokenizer, "Fine."), max_tokens=8)
    s.ask("Hello")
    assert set_mode(s, "off").startswith("thinking set to off")
    assert s.template_context.thinking is False
    s.messages.append({"role": "user", "content": "Again"})
    assert s.render().endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    s.messages.pop()
    assert_cache_is_fresh_prefill(s)
    assert set_mode(s, "show").startswith("thinking set to show") and s.template_context.thinking is True


def test_think_off_without_a_switch_is_one_line(tiny):
    s = Session(tiny.with_template(get_template("jinja", R1_LLAMA)), scripted_chain(tiny.tokenizer, "x"))
    with pytest.raises(LlamachatError, match=r"^the jinja template has no switch for reasoning .*; /think hide hides it instead$"):
        set_mode(s, "off")
    with pytest.raises(LlamachatError, match=r"^usage: /think show\|hide\|off \(now show\)$"):
        set_mode(s, "loud")
    assert set_mode(s, "hide").startswith("thinking set to hide") and s.think == "hide"


def test_transcript_keeps_the_reasoning_and_the_chats_date(tiny):
    """The reasoning is in the saved transcript; the date the chat started is saved with it, so on
    another day the resumed chat renders the same prompt and its saved cache is used as it is."""
    model = tiny.with_template(get_template("jinja", (R1_LLAMA.replace("{{bos_token}}", "{{bos_token}}{{ strftime_now('%d %b %Y') }}"))))
    s = Session(model, scripted_chain(model.tokenizer, REPLY), max_tokens=64)
    s.template_context = ChatContext(started=dt.datetime(2026, 3, 7, 9, 30))
    s.ask("Which one?")
    assert "07 Mar 2026" in s.render()
    transcript.save(s, "thoughtful")
    md = (transcript.sessions_dir() / "thoughtful.md").read_text(encoding="utf-8")
    assert "> *Reasoning:*\n>\n> I should compare the two.\n> Both are fine.\n\nTake the first one.\n" in md

    later = Session(model, scripted_chain(model.tokenizer, REPLY), max_tokens=64)  # started today
    assert later.template_context.started.date() != dt.date(2026, 3, 7)
    notice = transcript.restore(later, transcript.read("thoughtful"))
    assert "no re-evaluation" in notice
    assert later.template_context.started == dt.datetime(2026, 3, 7, 9, 30) and "07 Mar 2026" in later.render()
    first_prompt = later.encode(later.messages[:1])
    r = later.ask("Why?")
    second_prompt = later.encode(later.messages[:3])
    shared = next(i for i, (a, b) in enumerate(zip(first_prompt, second_prompt)) if a != b)
    assert r.stats.cached_tokens == shared > 20  # up to the previous reply, as if the chat had never stopped
    assert "07 Mar 2026" in later.render()
    assert_cache_is_fresh_prefill(later)


def test_printer_shows_reasoning_dimmed_and_apart():
    from rich.console import Console

    from llamachat.reply import ReplyPrinter

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=60)
    with ReplyPrinter(console, markdown=True) as printer:
        for piece in ("Let me", " see.\nOk", "ay."):
            printer.think(piece)
        printer.write("**Paris**.")
    screen = out.getvalue()
    dim = "\x1b[2m"
    assert dim + "Let me see." in screen.replace("\x1b[0m", "") or dim + "Let me see.\n" in screen
    assert screen.index("Okay.") < screen.index("Paris")
    assert "**" not in screen  # the answer is Markdown, the reasoning plain

    plain = io.StringIO()
    with ReplyPrinter(Console(file=plain, width=60), markdown=True, thinking="hide") as printer:
        printer.think("secret")
        printer.write("Paris.")
    assert plain.getvalue() == "(reasoning, hidden: /think show shows it)\nParis.\n"


def test_think_in_the_chat(default_model):
    from test_repl import chat

    model = default_model.with_template(get_template("jinja", QWEN3))
    code, out, app = chat(model, "/think off\r/think loud\r/think hide\r/temp 0.5\r", history=False)
    assert code == 0 and "Traceback" not in out
    assert "thinking set to off: the template's own switch turns reasoning off" in out
    assert "usage: /think show|hide|off (now off)" in out
    assert "thinking set to hide" in out and "temperature set to 0.5" in out
    assert app.session.think == "hide" and app.session.template_context.thinking is True
