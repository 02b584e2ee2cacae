"""The MLX backend: packed weights (MLX affine and GGUF blocks re-packed) against the NumPy reference
on the same dequantized values, the default model, the growing cache, device selection."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_one_line_error
from tiny_models import TinySpec, canonical_weights, hf_model, write_gguf, write_mlx_npz

import llamachat
from llamachat.generate import generate
from llamachat.plugins import registry
from llamachat.sampling import SamplerChain

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 2


def greedy(model, ids, n=16):
    chain = SamplerChain(registry().samplers, ["greedy"])
    return list(generate(model.runner, model.runner.new_cache(len(ids) + n), ids, chain, history=list(ids), max_tokens=n, stop_ids=()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = TinySpec(ffn=128)
    return spec, canonical_weights(hf_model(spec, seed=7), spec), tmp_path_factory.mktemp("mlx")


@pytest.mark.parametrize("source", ["npz-4bit-g32", "npz-8bit-g64", "gguf-Q4_0", "gguf-Q4_1", "gguf-Q8_0"])
def test_packed_weights_match_numpy_on_the_same_values(tiny, source):
    spec, weights, tmp = tiny
    if source.startswith("npz"):
        bits, group = int(source.split("-")[1][0]), int(source.split("g")[-1])
        path = write_mlx_npz(tmp / source, spec, weights, bits=bits, group_size=group)
    else:
        path = write_gguf(tmp / f"{source}.gguf", spec, weights, qtype=source.split("-")[1])
    reference, model = llamachat.load(path, "numpy"), llamachat.load(path, "mlx", device="cpu")
    layer = model.runner.layers[0]["ffn_up"]
    assert layer.bits in (4, 8) and layer.weight.dtype == mx.uint32  # still packed on the MLX side
    assert model.runner.weight_bytes < reference.runner.weight_bytes / 3
    assert np.abs(model.logits(IDS) - reference.logits(IDS)).max() < 1e-4
    assert greedy(model, IDS) == greedy(reference, IDS)


def test_default_model_greedy_tokens_equal_numpy(default_model, default_model_path):
    model = llamachat.load(default_model_path, "mlx", device="cpu")
    assert model.runner.layers[0]["attn_q"].bits == 4  # Q4_1 re-packed, not dequantized
    ids = default_model.encode_prompt("Write a short story about a robot who learns to paint.")
    assert greedy(model, ids, 32) == greedy(default_model, ids, 32)


def test_default_model_cache_round_trip(default_model_path):
    runner = llamachat.load(default_model_path, "mlx", device="cpu").runner
    ids = [1, 9690, 198, 2683, 359, 253, 5356, 2]
    fresh = runner.forward(ids + [28], runner.new_cache(32))
    cache = runner.new_cache(32)
    runner.forward(ids + [5, 6, 7], cache)
    cache.truncate(len(ids))
    restored = runner.new_cache(32)
    restored.load_state(cache.state())
    np.testing.assert_allclose(runner.forward([28], restored), fresh, atol=1e-4)


def test_cache_grows_in_steps(tiny):
    from llamachat_mlx.model import CACHE_STEP

    spec, weights, tmp = tiny
    runner = llamachat.load(write_gguf(tmp / "f32.gguf", spec, weights), "mlx", device="cpu").runner
    cache = runner.new_cache(spec.context)
    runner.forward(IDS[:3], cache)
    assert cache.k[0].shape[2] == min(CACHE_STEP, spec.context) and len(cache) == 3
    for t in IDS[3:10]:
        runner.forward([t], cache)
    assert cache.k[0].shape[2] == min(CACHE_STEP, spec.context) and len(cache) == 10


def test_device_selection(monkeypatch):
    from llamachat_mlx import pick_device, pick_dtype

    monkeypatch.setattr(mx, "is_available", lambda device: False)
    assert pick_device("auto") == "cpu" and pick_dtype(None, "cpu") == "float32"
    with pytest.raises(ValueError, match="no GPU here; available: cpu"):
        pick_device("gpu")
    monkeypatch.setattr(mx, "is_available", lambda device: True)  # Apple silicon, or an mlx-cuda build
    assert pick_device("auto") == "gpu" and pick_dtype(None, "gpu") == "float16"
    with pytest.raises(ValueError, match="accepted: auto, cpu, gpu"):
        pick_device("tpu")


def test_bad_options_are_one_line(tiny_gguf):
    out = run_cli("-p", "hi", "-m", str(tiny_gguf[2]), "--backend", "mlx", "--dtype", "float64")
    assert_one_line_error(out, "backend 'mlx': unknown dtype 'float64'")


def test_mlx_missing_is_one_line(tiny_gguf, tmp_path):
    blocker = tmp_path / "mlx" / "__init__.py"  # a package that fails to import shadows the real mlx
    blocker.parent.mkdir()
    blocker.write_text("raise ImportError('no mlx here')\n")
    out = run_cli("-p", "hi", "-m", str(tiny_gguf[2]), "--backend", "mlx", env={"PYTHONPATH": str(tmp_path)})
    assert_one_line_error(out, "backend 'mlx' cannot run here: mlx is not installed", "pip install 'llamachat[mlx]'")
