"""The sampler chain and the built-in NumPy samplers."""

from __future__ import annotations

import numpy as np
import pytest

from llamachat.errors import LlamachatError
from llamachat.plugins import registry
from llamachat.protocols import SamplingContext
from llamachat.sampling import SamplerChain, draw

LOGITS = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))


def ctx(**settings):
    chain = SamplerChain(registry().samplers, [])
    return SamplingContext(history=[], rng=np.random.default_rng(0), settings={**chain.settings, **settings})


def kept(logits):
    return set(np.flatnonzero(np.isfinite(logits)).tolist())


def test_top_k_keeps_exactly_k():
    s = registry().samplers["top_k"]
    assert kept(s.apply(LOGITS, ctx(top_k=2))) == {0, 1}
    ties = np.zeros(10, dtype=np.float32)
    assert len(kept(s.apply(ties, ctx(top_k=3)))) == 3
    assert kept(s.apply(LOGITS, ctx(top_k=0))) == set(range(5))


@pytest.mark.parametrize(("p", "expected"), [(0.5, {0}), (0.51, {0, 1}), (0.7, {0, 1}), (0.71, {0, 1, 2}), (1.0, {0, 1, 2, 3, 4})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, expected):
    assert kept(registry().samplers["top_p"].apply(LOGITS, ctx(top_p=p))) == expected


def test_min_p_is_relative_to_the_likeliest():
    s = registry().samplers["min_p"]
    assert kept(s.apply(LOGITS, ctx(min_p=0.3))) == {0, 1, 2}  # 0.15 >= 0.3 * 0.5
    assert kept(s.apply(LOGITS, ctx(min_p=0.31))) == {0, 1}


def test_temperature_zero_is_greedy():
    chain = SamplerChain(registry().samplers, ["top_k", "top_p", "min_p", "temperature"], seed=1)
    chain.set("temperature", 0)
    logits = np.random.default_rng(3).standard_normal(1000).astype(np.float32)
    assert all(chain.sample(logits, []) == int(np.argmax(logits)) for _ in range(20))
    greedy = SamplerChain(registry().samplers, ["greedy"])
    assert greedy.sample(logits, []) == int(np.argmax(logits))


def test_temperature_scales_logits():
    out = registry().samplers["temperature"].apply(LOGITS, ctx(temperature=2.0))
    np.testing.assert_allclose(out, LOGITS / 2)


def test_seed_reproduces_draws():
    logits = np.random.default_rng(5).standard_normal(200).astype(np.float32)
    a = SamplerChain(registry().samplers, ["temperature"], seed=42)
    b = SamplerChain(registry().samplers, ["temperature"], seed=42)
    assert [a.sample(logits, []) for _ in range(50)] == [b.sample(logits, []) for _ in range(50)]


def test_draw_frequencies_follow_the_softmax():
    rng = np.random.default_rng(0)
    counts = np.bincount([draw(LOGITS, rng) for _ in range(20000)], minlength=5) / 20000
    np.testing.assert_allclose(counts, np.exp(LOGITS), atol=0.015)


def test_parameter_validation():
    chain = SamplerChain(registry().samplers)
    with pytest.raises(LlamachatError, match="temperature takes a number from 0 to 100, got '-1'"):
        chain.set("temperature", "-1")
    with pytest.raises(LlamachatError, match="top_p takes a number from 0 to 1, got '2'"):
        chain.set("top_p", "2")
    with pytest.raises(LlamachatError, match="top_k takes an integer >= 0, got 'abc'"):
        chain.set("top_k", "abc")
    with pytest.raises(LlamachatError, match="unknown sampler parameter 'tmp'"):
        chain.set("tmp", "1")
    with pytest.raises(LlamachatError, match="unknown sampler 'nucleus'"):
        SamplerChain(registry().samplers, ["nucleus"])
    assert chain.set("temperature", "0.7") == 0.7


def test_chain_is_described_in_order():
    chain = SamplerChain(registry().samplers)
    assert chain.describe() == (
        "logits -> repetition_penalty(repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64)"
        " -> top_k(top_k=40) -> typical_p(typical_p=1.0) -> top_p(top_p=0.95) -> min_p(min_p=0.05)"
        " -> xtc(xtc_probability=0.0, xtc_threshold=0.1) -> temperature(temperature=0.8) -> draw"
    )


def test_penalties_touch_exactly_the_recent_tokens():
    s = registry().samplers["repetition_penalty"]
    logits = np.array([2.0, -2.0, 2.0, 1.0, 0.5], dtype=np.float32)
    c = ctx(repeat_penalty=2.0, repeat_last_n=3)
    c.history = [2, 0, 1, 1, 3]  # the last 3: 1, 1, 3 (prompt tokens count too)
    np.testing.assert_allclose(s.apply(logits, c), [2.0, -4.0, 2.0, 0.5, 0.5])
    c = ctx(frequency_penalty=0.5, presence_penalty=0.25, repeat_last_n=64)
    c.history = [4, 4, 0]
    np.testing.assert_allclose(s.apply(logits, c), [2.0 - 0.75, -2.0, 2.0, 1.0, 0.5 - 1.25])
    assert s.apply(logits, ctx()) is logits  # all off: untouched


def test_typical_p_keeps_tokens_of_typical_surprise():
    s = registry().samplers["typical_p"]
    # entropy 1.333 nats; surprises 0.693, 1.609, 1.897, 2.303, 2.996 nats; |surprise - entropy|
    # 0.640, 0.276, 0.564, 0.970, 1.663: most typical first is 1, 2, 0, 3, 4 (mass 0.2, 0.35, 0.85, ...)
    assert kept(s.apply(LOGITS, ctx(typical_p=0.15))) == {1}  # not the likeliest token
    assert kept(s.apply(LOGITS, ctx(typical_p=0.3))) == {1, 2}
    assert kept(s.apply(LOGITS, ctx(typical_p=0.5))) == {0, 1, 2}
    assert kept(s.apply(LOGITS, ctx(typical_p=1.0))) == set(range(5))


def test_xtc_drops_the_top_choices_but_the_least_likely():
    s = registry().samplers["xtc"]
    assert kept(s.apply(LOGITS, ctx(xtc_probability=1.0, xtc_threshold=0.12))) == {2, 3, 4}  # 0.5, 0.2 go; 0.15 stays
    assert kept(s.apply(LOGITS, ctx(xtc_probability=1.0, xtc_threshold=0.6))) == set(range(5))  # fewer than two top choices
    assert kept(s.apply(LOGITS, ctx(xtc_probability=0.0, xtc_threshold=0.12))) == set(range(5))


def test_mirostat_replaces_the_truncation_samplers_and_tracks_its_target():
    chain = SamplerChain(registry().samplers, seed=0)
    assert "mirostat" not in chain.effective()
    chain.set("mirostat", 2)
    assert chain.effective() == ["repetition_penalty", "mirostat"]
    assert (
        chain.describe().startswith("logits -> repetition_penalty(")
        and "-> mirostat(mirostat=2, mirostat_tau=5.0, mirostat_eta=0.1) -> draw" in chain.describe()
    )
    logits = np.random.default_rng(1).standard_normal(5000).astype(np.float32) * 3
    surprises = []
    for _ in range(400):
        token = chain.sample(logits, [])
        p = np.exp(logits - logits.max())
        p /= p.sum()
        surprises.append(-np.log2(p[token]))
    assert abs(np.mean(surprises[100:]) - 5.0) < 0.5  # the observed surprise settles near tau


@pytest.mark.parametrize("n", [10, 1000, 128256])
def test_top_k_is_the_k_largest_with_ties_kept_by_lowest_id(n):
    s = registry().samplers["top_k"]
    rng = np.random.default_rng(n)
    logits = rng.integers(-6, 3, n).astype(np.float32)  # few values: ties at the k-th everywhere
    logits[rng.integers(0, n, n // 10)] = -np.inf
    for k in (1, 3, 40):
        if k >= n:
            continue
        want = np.sort(np.argsort(-logits, kind="stable")[:k])  # a full stable sort: lowest ids first among equals
        np.testing.assert_array_equal(np.flatnonzero(s.apply(logits, ctx(top_k=k)) > -np.inf), want)


def test_chain_draws_ids_of_the_whole_vocabulary_after_top_k():
    # 128k logits with three planted likeliest tokens: top_k 3 leaves them, drawn at softmax odds
    logits = np.full(128256, -20.0, dtype=np.float32)
    logits[[70001, 5, 128255]] = np.log([0.5, 0.3, 0.2])
    chain = SamplerChain(registry().samplers, ["top_k", "top_p", "min_p", "temperature"], seed=3)
    chain.update({"top_k": 3, "top_p": 1.0, "min_p": 0.0, "temperature": 1.0})
    draws = [chain.sample(logits, []) for _ in range(6000)]
    assert set(draws) == {5, 70001, 128255}
    freq = {t: draws.count(t) / len(draws) for t in (70001, 5, 128255)}
    np.testing.assert_allclose(list(freq.values()), [0.5, 0.3, 0.2], atol=0.03)


def test_a_sampler_that_indexes_by_id_after_top_k_sees_the_whole_vocabulary():
    logits = np.zeros(5000, dtype=np.float32)
    logits[[17, 4000]] = [3.0, 2.0]
    chain = SamplerChain(registry().samplers, ["top_k", "repetition_penalty", "temperature"])
    chain.update({"top_k": 2, "repeat_penalty": 2.0, "temperature": 0})
    assert chain.sample(logits, [17]) == 4000  # 17's 3.0 halved to 1.5: 4000 (2.0) is the likeliest
    assert chain.sample(logits, []) == 17
