"""Lookup decoding: the drafts, and exactness: with lookup a reply is the one plain decoding gives,
token for token, on every backend, greedy and seeded, with stops, limits, Ctrl-C and the cache's
invariant as without it."""

from __future__ import annotations

import pytest
from test_session import assert_cache_is_fresh_prefill

import llamachat
from llamachat.errors import LlamachatError
from llamachat.generate import Stats, generate
from llamachat.lookup import draft, parse_lookup
from llamachat.plugins import registry
from llamachat.profiles import parse_profile
from llamachat.sampling import SamplerChain
from llamachat.session import Session

BACKENDS = {"numpy": {}, "torch": {"device": "cpu"}, "mlx": {"device": "cpu"}}
# A prompt that repeats itself, so drafts are found in it and in the reply (a tiny random model loops)
PROMPT = "the cat sat on the mat and the dog sat on the log, " * 3 + "the cat"


def test_draft_is_the_continuation_of_the_longest_earlier_ngram():
    assert draft([5, 6, 7, 8, 9, 5, 6, 7], 3) == [8, 9, 5]
    # "1 2 3" (length 3) at the start beats the more recent "2 3" (length 2)
    assert draft([1, 2, 3, 4, 8, 2, 3, 5, 1, 2, 3], 3) == [4, 8, 2]
    # of equally long matches, the most recent
    assert draft([1, 2, 7, 1, 2, 8, 1, 2], 2) == [8, 1]
    assert draft([1, 2, 9, 1, 2], 5) == [9, 1, 2]  # the continuation runs into the end of the history
    assert draft([4, 1, 5, 1], 3) == []  # only a one-token match: too weak a guess
    assert draft([1, 2, 1, 2], 0) == [] and draft([], 4) == [] and draft([3, 3], 2) == []
    assert draft([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4], 2, max_ngram=2) == [5, 1]


def chain(seeded: bool) -> SamplerChain:
    if not seeded:
        return SamplerChain(registry().samplers, ["greedy"])
    c = SamplerChain(registry().samplers, seed=1234)
    c.update({"temperature": 0.7, "top_k": 40, "top_p": 0.95, "min_p": 0.05})
    return c


# -- the verify step on every backend ----------------------------------------------------------
# A tiny random model rarely repeats itself, so these tests draft from what plain decoding said
# (`Oracle`), with every fourth draft wrong from its third token on: acceptance, rejection at any
# position, and the bonus token after a fully accepted draft all happen, on each backend.


class Oracle:
    """Drafts the continuation that plain decoding gave after `history`, corrupted now and then."""

    def __init__(self, vocab: int):
        self.vocab, self.histories, self.calls = vocab, [], 0

    def record(self, *args, history, **options):  # stands in for api.generate (what Model.stream calls) in the plain run
        self.histories.append(history)  # the list generate grows: the whole turn once it is done
        yield from generate(*args, history=history, **options)

    def draft(self, history: list[int], k: int) -> list[int]:
        self.calls += 1
        for seen in self.histories:
            if len(seen) > len(history) and seen[: len(history)] == history:
                proposal = list(seen[len(history) : len(history) + k])
                if self.calls % 4 == 0 and len(proposal) > 2:
                    proposal[2] = (proposal[2] + 1) % self.vocab
                return proposal
        return []


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def model(request, tiny_gguf):
    return llamachat.load(tiny_gguf[2], request.param, **BACKENDS[request.param])


def two_turns(model, seeded: bool, lookup: int) -> tuple[list[str], Session]:
    s = Session(model, chain(seeded), max_tokens=40, lookup=lookup)
    texts = [s.ask(PROMPT).text, s.ask("and " + PROMPT).text]
    return texts, s


def reply_stats(session: Session) -> list[Stats]:
    return [Stats(**m["stats"]) for m in session.messages if m["role"] == "assistant"]


@pytest.mark.parametrize("seeded", [False, True], ids=["greedy", "seeded"])
def test_a_chat_with_lookup_says_what_it_says_without(model, seeded, monkeypatch):
    oracle = Oracle(model.config.vocab_size)
    with monkeypatch.context() as m:
        m.setattr("llamachat.api.generate", oracle.record)
        plain, s0 = two_turns(model, seeded, 0)
    monkeypatch.setattr("llamachat.generate.draft", oracle.draft)
    looked, s8 = two_turns(model, seeded, 8)
    assert looked == plain and s8.ledger == s0.ledger
    stats = reply_stats(s8)
    assert all(st.drafted > st.accepted >= 30 for st in stats)  # drafts taken, and some refused
    assert all(st.drafted == 0 for st in reply_stats(s0))
    assert_cache_is_fresh_prefill(s8)


def plain_tokens(model, ids: list[int], n: int, oracle: Oracle) -> list[int]:
    cache, history = model.runner.new_cache(256), list(ids)
    out = list(generate(model.runner, cache, ids, chain(True), history=history, max_tokens=n, stop_ids=()))
    oracle.histories.append(history)
    return out


def test_limits_and_stop_ids_inside_a_draft_end_the_reply_where_plain_decoding_does(model, monkeypatch):
    ids = model.encode_prompt(PROMPT)
    oracle = Oracle(model.config.vocab_size)
    reference = plain_tokens(model, ids, 48, oracle)
    monkeypatch.setattr("llamachat.generate.draft", oracle.draft)
    for max_tokens in (1, 2, 5, 17, 48):
        cache, stats, history = model.runner.new_cache(256), Stats(), list(ids)
        out = list(
            generate(model.runner, cache, ids, chain(True), history=history, max_tokens=max_tokens, stop_ids=(), stats=stats, lookup=8)
        )
        assert out == reference[:max_tokens] and stats.finish_reason == "length"
        assert len(cache) <= len(history) == len(ids) + max_tokens
    # stop at a token first drawn late in the reply: it comes inside a draft, after accepted ones
    stop_at = next(i for i in range(len(reference) - 1, 0, -1) if reference[i] not in reference[:i])
    cache, stats, history = model.runner.new_cache(256), Stats(), list(ids)
    gen = generate(
        model.runner, cache, ids, chain(True), history=history, max_tokens=48, stop_ids=[reference[stop_at]], stats=stats, lookup=8
    )
    assert list(gen) == reference[:stop_at] and stats.finish_reason == "stop" and stats.accepted > 0
    assert len(cache) == len(history)  # the drafts after the stop id are gone


def test_context_end_is_where_plain_decoding_ends(model, monkeypatch):
    ids = model.encode_prompt(PROMPT)
    oracle = Oracle(model.config.vocab_size)
    plain_tokens(model, ids, 20, oracle)
    monkeypatch.setattr("llamachat.generate.draft", oracle.draft)
    for lookup in (0, 8):
        cache, stats = model.runner.new_cache(len(ids) + 9), Stats()
        out = list(
            generate(model.runner, cache, ids, chain(True), history=list(ids), max_tokens=40, stop_ids=(), stats=stats, lookup=lookup)
        )
        assert (len(out), stats.finish_reason) == (10, "context")


def test_closing_the_generator_mid_draft_leaves_the_cache_a_prefix_of_the_history(model, monkeypatch):
    ids = model.encode_prompt(PROMPT)
    oracle = Oracle(model.config.vocab_size)
    plain_tokens(model, ids, 40, oracle)
    monkeypatch.setattr("llamachat.generate.draft", oracle.draft)
    for n in range(1, 30, 3):
        cache, history, stats = model.runner.new_cache(256), list(ids), Stats()
        gen = generate(model.runner, cache, ids, chain(True), history=history, max_tokens=40, stop_ids=(), stats=stats, lookup=8)
        for i, _ in enumerate(gen):
            if i + 1 == n:
                break
        gen.close()
        assert len(history) - 1 <= len(cache) <= len(history)


def test_ctrl_c_and_stop_strings_mid_draft_keep_the_invariant(model, monkeypatch):
    oracle = Oracle(model.config.vocab_size)
    plain = Session(model, chain(False), max_tokens=40, lookup=0)
    with monkeypatch.context() as m:
        m.setattr("llamachat.api.generate", oracle.record)
        whole = plain.ask(PROMPT).text
    monkeypatch.setattr("llamachat.generate.draft", oracle.draft)
    s = Session(model, chain(False), max_tokens=40, lookup=8)
    pieces = []

    def interrupt(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 12:
            raise KeyboardInterrupt

    r = s.ask(PROMPT, on_text=interrupt)
    assert r.interrupted and r.stats.accepted > 0 and whole.startswith(r.text)
    assert_cache_is_fresh_prefill(s)
    s.reset()
    s.stop_strings = [whole[len(whole) * 2 // 3 :][:4]]
    cut = s.ask(PROMPT)
    assert cut.stats.finish_reason == "stop" and whole.startswith(cut.text) and len(cut.text) < len(whole)
    assert_cache_is_fresh_prefill(s)


# -- real drafts, on the default model -------------------------------------------------------


@pytest.mark.parametrize("seeded", [False, True], ids=["greedy", "seeded"])
def test_drafts_from_the_conversation_on_the_default_model(default_model, seeded):
    text = "The quick brown fox jumps over the lazy dog near the river bank, every single morning."
    prompt = f"Repeat this sentence exactly, twice: {text}"
    replies = {}
    for lookup in (0, 8):
        s = Session(default_model, chain(seeded), max_tokens=40, lookup=lookup)
        replies[lookup] = s.ask(prompt)
    assert replies[8].text == replies[0].text
    assert replies[8].stats.accepted >= 5 and replies[0].stats.drafted == 0
    assert "lookup " in replies[8].stats.line() and "drafts accepted" in replies[8].stats.line()


def test_bad_lookup_values_are_one_line_naming_the_range():
    assert parse_lookup("8") == 8 and parse_lookup(0) == 0 and parse_lookup(16) == 16
    for bad in ("17", "-1", "x", 2.5, True, None):
        with pytest.raises(LlamachatError, match=r"lookup takes an integer from 0 to 16 .*, got "):
            parse_lookup(bad)
    with pytest.raises(LlamachatError, match=r"^p.toml: \[chat\] lookup takes an integer from 0 to 16 .*, got 40$"):
        parse_profile("[chat]\nlookup = 40\n", "p.toml")
    with pytest.raises(LlamachatError, match=r"p.toml: \[chat\] lookup must be int, got 'a'"):
        parse_profile("[chat]\nlookup = 'a'\n", "p.toml")
    assert parse_profile("[chat]\nlookup = 4\n", "p.toml")["chat"]["lookup"] == 4
