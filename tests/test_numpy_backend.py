"""The NumPy reference backend against HF transformers' LlamaForCausalLM on the same weights: the
fast forward pass (model.py) and the plain walk-through (plain.py, option `plain`) alike."""

from __future__ import annotations

import numpy as np
import pytest
from llamachat_numpy import rows
from llamachat_numpy.model import stored
from llamachat_numpy.plain import PlainModel
from llamachat_numpy.rows import Products
from tiny_models import TinySpec, canonical_weights, dequantized, hf_logits, hf_model, load_into_hf, write_gguf

import llamachat

# A sentence from the LLaMA-2 vocabulary, three times: 36 positions, repeated content.
IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 3

SPECS = {
    "gqa": TinySpec(n_heads=4, n_kv_heads=2),
    "mha-tied-theta": TinySpec(n_heads=4, n_kv_heads=4, tied=True, rope_theta=50000.0),
    "gqa-4to1-theta1e6": TinySpec(n_heads=8, n_kv_heads=2, dim=128, rope_theta=1e6),
}


FORWARD_PASSES = {"fast": {}, "plain": {"plain": True}}


@pytest.mark.parametrize("forward", FORWARD_PASSES)
@pytest.mark.parametrize("name", SPECS)
def test_logits_match_transformers_f32(tmp_path, name, forward):
    spec = SPECS[name]
    hf = hf_model(spec)
    path = write_gguf(tmp_path / "m.gguf", spec, canonical_weights(hf, spec))
    model = llamachat.load(path, **FORWARD_PASSES[forward])
    assert isinstance(model.runner, PlainModel) == (forward == "plain")  # the option picks the forward pass
    logits = model.logits(IDS)
    assert logits.dtype == np.float32 and logits.shape == (len(IDS), spec.vocab)
    assert np.abs(logits - hf_logits(hf, IDS)).max() < 1e-4


@pytest.mark.parametrize("forward", FORWARD_PASSES)
@pytest.mark.parametrize("name", ["gqa", "mha-tied-theta"])
def test_wrong_qk_layout_fails_the_same_comparison(tmp_path, name, forward):
    """Negative control: q/k rows left in HF's layout must be caught by the 1e-4 comparison."""
    spec = SPECS[name]
    hf = hf_model(spec)
    path = write_gguf(tmp_path / "m.gguf", spec, canonical_weights(hf, spec, permute_qk=False))
    assert np.abs(llamachat.load(path, **FORWARD_PASSES[forward]).logits(IDS) - hf_logits(hf, IDS)).max() > 1e-2


@pytest.mark.parametrize("forward", FORWARD_PASSES)
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1"])
def test_quantized_file_matches_transformers_on_dequantized_weights(tmp_path, qtype, forward):
    spec = SPECS["gqa"]
    hf = hf_model(spec)
    weights = canonical_weights(hf, spec)
    path = write_gguf(tmp_path / "m.gguf", spec, weights, qtype)
    load_into_hf(hf, dequantized(weights, qtype), spec)
    assert np.abs(llamachat.load(path, **FORWARD_PASSES[forward]).logits(IDS) - hf_logits(hf, IDS)).max() < 1e-4


@pytest.mark.parametrize("forward", FORWARD_PASSES)
def test_incremental_decode_equals_prefill(tiny_gguf, forward):
    spec, _, path = tiny_gguf
    runner = llamachat.load(path, **FORWARD_PASSES[forward]).runner
    full = runner.forward(IDS, runner.new_cache(64), all_logits=True)
    cache = runner.new_cache(64)
    runner.forward(IDS[:20], cache)
    steps = [runner.forward([t], cache) for t in IDS[20:]]
    np.testing.assert_allclose(np.stack(steps), full[20:], atol=1e-4)
    assert len(cache) == len(IDS)


def test_long_prompts_attended_in_blocks_match_transformers(tiny_gguf):
    """A prompt longer than the backend's block of query rows (64), on an empty cache and after 50
    cached tokens (the blocks then start mid-cache), against transformers at every position."""
    spec, model, path = tiny_gguf
    ids = [1, *np.random.default_rng(3).integers(3, spec.vocab, 199).tolist()]  # 200: three blocks and a part
    runner = llamachat.load(path).runner
    assert runner.query_block < 100
    reference = hf_logits(model, ids)
    assert np.abs(runner.forward(ids, runner.new_cache(256), all_logits=True) - reference).max() < 1e-4
    cache = runner.new_cache(256)
    runner.forward(ids[:50], cache)
    assert np.abs(runner.forward(ids[50:], cache, all_logits=True) - reference[50:]).max() < 1e-4


def test_cache_truncate_and_state_round_trip(tiny_gguf):
    _, _, path = tiny_gguf
    runner = llamachat.load(path).runner
    fresh = runner.forward(IDS[:10] + [999], runner.new_cache(64))

    cache = runner.new_cache(64)
    runner.forward(IDS, cache)
    cache.truncate(10)  # keep the first 10 tokens
    assert len(cache) == 10
    np.testing.assert_allclose(runner.forward([999], cache), fresh, atol=1e-5)

    cache.truncate(10)
    state = cache.state()
    assert all(a.dtype == np.float32 for a in state.values())
    assert state["k"].shape == (2, 2, 10, 16)  # [layers, kv heads, tokens, head_dim]
    restored = runner.new_cache(64)
    restored.load_state(state)
    assert len(restored) == 10
    np.testing.assert_allclose(runner.forward([999], restored), fresh, atol=1e-5)
    with pytest.raises(ValueError):
        cache.truncate(11)


def test_no_float64_anywhere(tiny_gguf):
    _, _, path = tiny_gguf
    runner = llamachat.load(path).runner
    cache = runner.new_cache(64)
    assert runner.forward(IDS[:5], cache).dtype == np.float32
    assert runner.forward([7], cache).dtype == np.float32
    assert cache.k.dtype == cache.v.dtype == np.float32
    arrays = [runner.head, runner.output_norm, *(a for layer in runner.layers for a in vars(layer).values())]
    assert all(a.dtype == np.float32 for a in arrays)
    assert runner.rope.for_capacity(64).dtype == np.complex64  # pairs of float32


def test_cache_overflow_is_refused(tiny_gguf):
    _, _, path = tiny_gguf
    runner = llamachat.load(path).runner
    cache = runner.new_cache(8)
    with pytest.raises(ValueError, match="do not fit"):
        runner.forward(IDS[:9], cache)


def test_numpy_backend_refuses_other_dtypes(tiny_gguf):
    from llamachat.errors import LlamachatError

    with pytest.raises(LlamachatError, match="float32 only"):
        llamachat.load(tiny_gguf[2], dtype="float16")


@pytest.mark.parametrize("name", ["gqa", "mha-tied-theta"])
def test_decode_split_times_every_product_without_changing_it(tmp_path, name, benchmark_script):
    """benchmarks/decode_split.py wraps the runner's products in a timing stand-in inside the real forward pass:
    the logits must stay bit-identical (tied: the embedding rows pass through too), and every product
    of a step must be counted, 4 a layer and the head."""
    script = benchmark_script("decode_split")
    spec = SPECS[name]
    path = write_gguf(tmp_path / "m.gguf", spec, canonical_weights(hf_model(spec), spec))
    plain, timed = llamachat.load(path).runner, llamachat.load(path).runner
    clock = script.Clock()
    script.time_products(timed, clock)
    caches = plain.new_cache(64), timed.new_cache(64)
    for ids in (IDS[:5], [7], [8]):
        expected, got = (runner.forward(ids, cache) for runner, cache in zip((plain, timed), caches))
        assert np.array_equal(expected, got)
    assert clock.products == 3 * (4 * spec.n_layers + 1)
    assert clock.seconds > 0


@pytest.mark.parametrize("chunk_bytes", [rows.CHUNK_BYTES, 1800])  # one chunk; chunks of 7, 3 and 11 rows, each with some left over
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(192, 64), (64, 128), (100, 40)])  # [in, out]-stored, [out, in], neither blocks
def test_products_of_a_few_rows_are_x_times_w_transposed(shape, threads, chunk_bytes, monkeypatch):
    """A lookup pass's products (2-3 rows as matrix-vector products over chunks of w, 4-16 in rows.py's
    blocks of w) against float64's x @ w.T, in both memory orders `stored` picks, and the fallback where
    the blocks do not divide w; 2-3 rows, and only they, take the vector products."""
    monkeypatch.setattr(rows, "CHUNK_BYTES", chunk_bytes)
    vector_rows, vector_products = [], rows.vector_products

    def counted(x, w):
        vector_rows.append(len(x))
        return vector_products(x, w)

    monkeypatch.setattr(rows, "vector_products", counted)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape, dtype=np.float32)
    products = Products(threads)
    for T in (1, 2, 3, 4, 5, 16, 17):
        x = rng.standard_normal((T, shape[1]), dtype=np.float32)
        got = products(x, stored(w))
        assert got.dtype == np.float32 and got.shape == (T, shape[0])
        np.testing.assert_allclose(got, x.astype(np.float64) @ w.T.astype(np.float64), rtol=1e-5, atol=1e-4)
    assert vector_rows == [2, 3]
