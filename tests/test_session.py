"""The session: a KV cache that persists across turns and always equals a fresh prefill of its ledger."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reasoning_helpers import R1_LLAMA, scripted_chain

import llamachat
from llamachat.errors import LlamachatError
from llamachat.plugins import registry
from llamachat.sampling import SamplerChain
from llamachat.session import Session
from llamachat.templates import get_template


def greedy() -> SamplerChain:
    return SamplerChain(registry().samplers, ["greedy"])


def assert_cache_is_fresh_prefill(session: Session) -> None:
    """The invariant: the cache holds exactly the ledger's tokens, as a fresh prefill computes them."""
    assert len(session.cache) == len(session.ledger)
    if not session.ledger:
        return
    runner = session.model.runner
    fresh = runner.new_cache(session.context)
    runner.forward(session.ledger, fresh)
    ours, theirs = session.cache.state(), fresh.state()
    for key in ("k", "v"):
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-4)


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return llamachat.load(tiny_gguf[2])  # LLaMA-2 vocabulary, so the llama-2 template


def test_follow_ups_cost_only_their_new_tokens(default_model):
    s = Session(default_model, greedy(), max_tokens=24)
    first = s.ask("What is the capital of France?")
    assert first.stats.cached_tokens == 0 and "Paris" in first.text
    for question in ("And of Germany?", "And of Italy?"):
        before = len(s.ledger)
        reply_tokens = s.messages[-1]["stats"]["generated_tokens"]
        message_tokens = len(default_model.tokenizer.encode(question))
        r = s.ask(question)
        # at most the previous reply plus the new message and the template's few boundary tokens
        assert r.stats.prompt_tokens <= reply_tokens + message_tokens + 8
        assert r.stats.cached_tokens >= before - 1
        assert_cache_is_fresh_prefill(s)


def test_llama2_boundary_tokens_are_re_evaluated(tiny):
    """LLaMA-2 re-encodes a finished reply with " " + EOS after it: the cache follows the reference ids."""
    s = Session(tiny, greedy(), max_tokens=6)
    s.ask("Hello there")
    s.ask("Tell me more")
    ids = tiny.template.encode(s.chat()[:2], tiny.tokenizer, add_generation_prompt=False)
    assert s.ledger[: len(ids)] == ids  # the history in the cache is exactly Meta's encoding
    assert_cache_is_fresh_prefill(s)


def test_undo_retry_system_reset_keep_the_invariant(tiny):
    s = Session(tiny, greedy(), max_tokens=5, system="Be brief.")
    s.ask("one")
    s.ask("two")
    assert s.undo().startswith("removed your message 'two' and its reply")
    assert_cache_is_fresh_prefill(s)
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]
    again = s.retry()
    assert s.messages[-1]["content"] == again.text
    assert_cache_is_fresh_prefill(s)
    s.set_system("Be verbose.")
    assert s.system == "Be verbose."
    assert_cache_is_fresh_prefill(s)
    s.reset()
    assert [m["role"] for m in s.messages] == ["system"] and len(s.cache) == 0
    with pytest.raises(LlamachatError, match="nothing to undo"):
        s.undo()
    with pytest.raises(LlamachatError, match="nothing to retry"):
        s.retry()


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), st.sampled_from(["hi", "tell me a long story about dragons", "why?", "ok " * 12])),
        st.tuples(st.just("undo"), st.none()),
        st.tuples(st.just("retry"), st.none()),
        st.tuples(st.just("system"), st.sampled_from([None, "Be brief.", "You are a pirate."])),
        st.tuples(st.just("reset"), st.none()),
    ),
    min_size=1,
    max_size=8,
)


def run_actions(s: Session, actions) -> None:
    for action, arg in actions:
        try:
            if action == "ask":
                s.ask(arg)
            elif action == "undo":
                s.undo()
            elif action == "retry":
                s.retry()
            elif action == "system":
                s.set_system(arg)
            else:
                s.reset()
        except LlamachatError:
            pass  # nothing to undo/retry, or a message that cannot fit: the state must still hold
        assert_cache_is_fresh_prefill(s)
        assert len(s.ledger) <= s.context
        # With drop-oldest the conversation as the template encodes it fits too, after a reply that
        # re-encodes longer than it was sampled (the template's </s> after it: 'hi', 'ok ' * 12, 'hi',
        # 'tell me a long story about dragons' at context 96 came to 99). Under stop the next message
        # is refused, as the policy says (test_overflow_stop_sends_nothing).
        if s.overflow == "drop-oldest" and any(m["role"] == "user" for m in s.messages):
            assert len(s.encode(add_generation_prompt=s.messages[-1]["role"] == "user")) <= s.context


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, overflow=st.sampled_from(["drop-oldest", "stop"]))
def test_ledger_and_cache_stay_consistent(tiny, actions, overflow):
    s = Session(tiny, SamplerChain(registry().samplers, ["temperature"], seed=3), max_tokens=8, context=96, overflow=overflow)
    run_actions(s, actions)


@pytest.fixture(scope="module")
def tiny_r1(tiny):
    """The tiny model behind DeepSeek-R1-Distill-Llama's template, which drops earlier replies' reasoning."""
    return tiny.with_template(get_template("jinja", R1_LLAMA))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS, overflow=st.sampled_from(["drop-oldest", "stop"]))
def test_ledger_and_cache_stay_consistent_when_the_template_drops_reasoning(tiny_r1, actions, overflow):
    """As above, with replies that reason ("...</think>answer", written by a scripted sampler, cut
    where max_tokens falls) and a template that drops that reasoning from every earlier reply."""
    chain = scripted_chain(tiny_r1.tokenizer, "hm</think>ok")
    s = Session(tiny_r1, chain, max_tokens=10, context=160, overflow=overflow)
    run_actions(s, actions)
    for m in s.messages:  # every reply began inside its reasoning (R1's prompt opens it), kept apart for people
        if m["role"] == "assistant":
            assert m["reasoning"] == m["content"].split("</think>")[0].strip() and "</think>" not in m["answer"]


def test_overflow_drops_the_oldest_exchanges(tiny):
    s = Session(tiny, greedy(), max_tokens=8, context=120, system="sys")
    notices = []
    for i in range(8):
        notices += s.ask(f"message number {i} with some words in it").notices
    assert any(n.startswith("context full: dropped the oldest") for n in notices)
    assert s.messages[0] == {**s.messages[0], "role": "system", "content": "sys"}  # never the system prompt
    assert s.messages[-2]["content"] == "message number 7 with some words in it"  # never the newest message
    assert s.dropped and s.dropped[0]["content"] == "message number 0 with some words in it"
    assert_cache_is_fresh_prefill(s)


def test_a_longer_system_prompt_drops_the_oldest_exchanges_to_fit(tiny):
    """Found by the test above: three long messages filled a 96-token context, then /system made the
    conversation 100 tokens, past the context, until the next message dropped something."""
    s = Session(tiny, greedy(), max_tokens=8, context=96)
    for _ in range(3):
        s.ask("tell me a long story about dragons")
    before = len(s.messages)
    notices = s.set_system("You are a pirate who speaks only in long, winding sentences.")
    assert len(s.encode(add_generation_prompt=False)) <= s.context
    assert notices and notices[0].startswith("context full: dropped the oldest")
    assert len(s.messages) < before + 1 and s.messages[0]["role"] == "system"
    assert_cache_is_fresh_prefill(s)
    assert s.set_system(None) == []  # a shorter one drops nothing


def test_the_markdown_transcript_is_the_whole_conversation(tiny):
    """Issue 15 case 3: the .md of a long chat dropped what context overflow dropped (the JSON kept it)."""
    from llamachat import transcript

    s = Session(tiny, greedy(), max_tokens=8, context=120, system="sys")
    for i in range(8):
        s.ask(f"message number {i} with some words in it")
    assert s.dropped
    transcript.save(s, "long", with_cache=False)
    md = (transcript.sessions_dir() / "long.md").read_text()
    positions = [md.index(f"message number {i} with") for i in range(8)]
    assert positions == sorted(positions) and md.index("sys") < positions[0]
    assert md.count("*(dropped from the model's context to fit it)*") == len(s.dropped)
    assert md.count("**Assistant**") == 8


def test_a_reply_that_re_encodes_longer_is_fitted_after_the_turn(tiny):
    """Issue 15: the closed conversation came to 99 tokens at context 96 (the reply re-encoded plus
    </s>): with drop-oldest, the oldest exchange is dropped after the turn and the notice says so."""
    s = Session(tiny, SamplerChain(registry().samplers, ["temperature"], seed=3), max_tokens=8, context=96)
    notices = []
    for text in ["hi", "ok " * 12, "hi", "tell me a long story about dragons"]:
        notices += s.ask(text).notices
    assert len(s.encode(add_generation_prompt=False)) <= s.context
    assert any(n.startswith("context full: dropped the oldest") for n in notices)
    assert_cache_is_fresh_prefill(s)


def test_a_full_context_frees_the_share_overflow_free_asks(tiny):
    """A full context drops in large steps (overflow_free of the room), so the conversation is
    evaluated again once every several turns, not at every turn as when dropping just enough (0)."""

    def drops(share: float) -> tuple[int, list[int]]:
        s = Session(tiny, greedy(), max_tokens=8, context=200, system="sys", overflow_free=share)
        dropping, sizes = 0, []
        for i in range(24):
            r = s.ask(f"message number {i} with some words in it")
            dropping += any(n.startswith("context full") for n in r.notices)
            if any(n.startswith("context full") for n in r.notices):
                sizes.append(len(s.encode(add_generation_prompt=False)))
        assert_cache_is_fresh_prefill(s)
        return dropping, sizes

    every_turn, _ = drops(0)
    halves, sizes = drops(0.5)
    assert halves >= 1 and halves * 3 <= every_turn
    assert all(n <= 200 * 0.5 + 30 for n in sizes)  # about half the room left after each drop (plus a reply)


def test_overflow_free_is_checked(tiny):
    with pytest.raises(LlamachatError, match="overflow_free takes a number from 0 to 0.9"):
        Session(tiny, greedy(), overflow_free=1.5)


def test_overflow_stop_sends_nothing(tiny):
    s = Session(tiny, greedy(), max_tokens=8, context=80, overflow="stop")
    with pytest.raises(LlamachatError, match="would overflow the context .* nothing was sent: /undo or /reset"):
        for i in range(10):
            s.ask(f"message number {i} with some words in it")
    assert s.messages[-1]["role"] == "assistant"  # the refused message was not added


def test_a_message_longer_than_the_context_is_refused(tiny):
    s = Session(tiny, greedy(), max_tokens=8, context=64)
    s.ask("hi")
    before = list(s.messages)
    with pytest.raises(LlamachatError, match="message too long: .* nothing was sent"):
        s.ask("word " * 200)
    assert s.messages == before


def test_ctrl_c_keeps_the_partial_reply(default_model):
    s = Session(default_model, greedy(), max_tokens=64)
    seen = []

    def interrupt_after_three(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            raise KeyboardInterrupt

    r = s.ask("Write a short story about a robot.", on_text=interrupt_after_three)
    assert r.interrupted and r.text == "".join(seen) and r.stats.finish_reason == "interrupted"
    assert s.messages[-1]["interrupted"] is True and s.messages[-1]["content"] == r.text
    assert_cache_is_fresh_prefill(s)
    follow_up = s.ask("Go on.")
    assert follow_up.stats.cached_tokens > 30


def test_stop_strings_cut_the_reply(default_model):
    s = Session(default_model, greedy(), max_tokens=32)
    s.stop_strings = [" is"]
    streamed = []
    r = s.ask("What is the capital of France?", on_text=streamed.append)
    assert r.text == "The capital of France" == "".join(streamed)
    assert r.stats.finish_reason == "stop"
    assert_cache_is_fresh_prefill(s)


def test_empty_message_is_refused(tiny):
    with pytest.raises(LlamachatError, match="empty message"):
        Session(tiny, greedy()).ask("   \n")


def test_ctrl_c_in_a_long_prompts_prefill_keeps_the_chunks_that_completed(tiny, monkeypatch):
    """Issue 15 case 14: Ctrl-C inside the third pass of a chunked prefill (after layer 0 of that pass
    wrote its keys) keeps the two passes before it, no empty reply, and the message to send again,
    which then costs only the rest."""
    from test_cache_extend import swap_last_down_projection

    import llamachat.generate

    monkeypatch.setattr(llamachat.generate, "PREFILL_CHUNK", 16)
    s = Session(tiny, greedy(), max_tokens=4, context=400)
    s.ask("hi")
    before = list(s.messages)
    runner, real, calls = tiny.runner, tiny.runner.forward, []

    def forward(ids, cache, **kw):
        calls.append(len(ids))
        if len(calls) == 3:  # the third chunk: Ctrl-C inside its forward pass
            original = swap_last_down_projection(runner, "numpy")
            try:
                return real(ids, cache, **kw)
            finally:
                swap_last_down_projection(runner, "numpy", original)
        return real(ids, cache, **kw)

    message = "tell me a long story about dragons " * 12
    monkeypatch.setattr(runner, "forward", forward)
    r = s.ask(message)
    monkeypatch.setattr(runner, "forward", real)
    assert calls[:3] == [16, 16, 16]
    assert r.interrupted and r.text == "" and r.unsent == message
    assert r.stats.prompt_tokens == 32 and r.stats.generated_tokens == 0
    assert any("interrupted during the prompt: 32 of" in n for n in r.notices)
    assert s.messages == [*before, {**s.messages[-1], "role": "user", "content": message}]  # no empty reply
    assert_cache_is_fresh_prefill(s)
    cached = len(s.ledger)
    again = s.ask(r.unsent)
    assert again.stats.cached_tokens == cached and not again.interrupted
    assert [m["role"] for m in s.messages] == ["user", "assistant", "user", "assistant"]
    assert_cache_is_fresh_prefill(s)
