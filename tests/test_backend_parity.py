"""Every backend against the NumPy reference: prefill, a cached decode step and the cache's state
round trip, on tiny random models (GQA on and off, tied and untied) read from an HF-layout source
(safetensors, q/k permuted at load) and from a Meta-layout one (.pth shards, interleaved q/k)."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import TinySpec, canonical_weights, hf_logits, hf_model, write_hf, write_meta

import llamachat

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 3
SPECS = {"gqa": TinySpec(n_heads=4, n_kv_heads=2), "mha-tied": TinySpec(n_heads=4, n_kv_heads=4, tied=True, rope_theta=50000.0)}
BACKENDS = {"torch": {"device": "cpu"}, "mlx": {"device": "cpu"}}


@pytest.fixture(scope="module", params=[(s, src) for s in sorted(SPECS) for src in ("hf", "meta")], ids=lambda p: "-".join(p))
def source(request, tmp_path_factory):
    spec_name, layout = request.param
    spec = SPECS[spec_name]
    hf = hf_model(spec, seed=11)
    tmp = tmp_path_factory.mktemp(spec_name)
    path = write_hf(tmp / "hf", hf) if layout == "hf" else write_meta(tmp / "meta", spec, canonical_weights(hf, spec), n_shards=2)
    return path, llamachat.load(path, "numpy"), hf


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_prefill_matches_numpy_and_transformers(source, backend):
    path, reference, hf = source
    model = llamachat.load(path, backend, **BACKENDS[backend])
    logits = model.logits(IDS)
    assert logits.dtype == np.float32 and model.runner.dtype == "float32"
    assert np.abs(logits - reference.logits(IDS)).max() < 1e-4
    assert np.abs(logits - hf_logits(hf, IDS)).max() < 1e-4


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_cached_decode_step_matches_numpy(source, backend):
    path, reference, _ = source
    model = llamachat.load(path, backend, **BACKENDS[backend])
    steps = []
    for m in (reference, model):
        cache = m.runner.new_cache(64)
        m.runner.forward(IDS[:20], cache)
        m.runner.forward(IDS[20:23], cache)  # a short multi-token chunk on a warm cache (the chat's follow-up)
        steps.append(np.stack([m.runner.forward([t], cache) for t in IDS[23:27]]))
    assert np.abs(steps[0] - steps[1]).max() < 1e-4


@pytest.mark.parametrize("backend", ["numpy", *sorted(BACKENDS)])
def test_cache_state_round_trip_and_truncate(source, backend):
    path, _, _ = source
    runner = llamachat.load(path, backend, **BACKENDS.get(backend, {})).runner
    fresh = runner.forward(IDS[:10] + [999], runner.new_cache(64))
    cache = runner.new_cache(64)
    runner.forward(IDS, cache)
    cache.truncate(10)
    state = cache.state()
    assert state["k"].dtype == np.float32 and state["k"].shape == (
        runner.config.n_layers,
        runner.config.n_kv_heads,
        10,
        runner.config.head_dim,
    )
    restored = runner.new_cache(64)
    restored.load_state(state)
    np.testing.assert_allclose(runner.forward([999], restored), fresh, atol=1e-4)
    np.testing.assert_allclose(runner.forward([999], cache), fresh, atol=1e-4)
