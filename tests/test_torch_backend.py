"""The PyTorch backend against the NumPy reference (and transformers through it), device selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli
from tiny_models import TinySpec, canonical_weights, hf_model, write_gguf

import llamachat
from llamachat.errors import LlamachatError
from llamachat.generate import generate
from llamachat.plugins import registry
from llamachat.sampling import SamplerChain

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 3
SPECS = {"gqa": TinySpec(n_heads=4, n_kv_heads=2), "mha-tied": TinySpec(n_heads=4, n_kv_heads=4, tied=True, rope_theta=50000.0)}


@pytest.fixture(scope="module", params=sorted(SPECS))
def pair(request, tmp_path_factory):
    spec = SPECS[request.param]
    hf = hf_model(spec)
    path = write_gguf(tmp_path_factory.mktemp("t") / "m.gguf", spec, canonical_weights(hf, spec))
    return llamachat.load(path, "numpy"), llamachat.load(path, "torch", device="cpu"), hf


def test_bf16_stays_close(pair):
    reference, _, _ = pair
    path = reference.path
    bf16 = llamachat.load(path, "torch", device="cpu", dtype="bf16")
    assert bf16.runner.dtype == "bfloat16" and bf16.runner.weight_bytes < reference.runner.weight_bytes
    a, b = bf16.logits(IDS), reference.logits(IDS)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_bf16_prompt_products_in_float32_or_not(pair):
    """A CPU without bf16 matrix instructions runs a prompt's products in float32 (`upcast_rows`);
    either way the logits follow the reference."""
    reference, _, _ = pair
    bf16 = llamachat.load(reference.path, "torch", device="cpu", dtype="bf16")
    expected = reference.logits(IDS)
    for upcast in (True, False):
        bf16.runner.upcast_rows = upcast
        assert np.corrcoef(bf16.logits(IDS).ravel(), expected.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("shape", [(96, 40), (40, 96), (35, 40)])  # out >= in, out < in, out not divisible
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_sliced_linear_is_f_linear(shape, parts):
    """Float32 weights on the CPU are cut into one slice per thread (sliced.py): the same products and
    rows as the unsliced matrix, whatever the shape and the number of slices."""
    from llamachat_torch.sliced import SlicedLinear

    w = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    sliced = SlicedLinear(w, parts)
    for rows in (1, 2, 3, 5, 9):  # both forms of the product for both kinds of shape (vector_rows)
        x = torch.randn(rows, shape[1])
        torch.testing.assert_close(sliced(x), F.linear(x, w), rtol=1e-5, atol=1e-5)
    ids = torch.tensor([0, shape[0] - 1, shape[0] // 2, 7])
    assert torch.equal(sliced.rows(ids), w[ids])
    assert sliced.nbytes == w.nbytes


def test_default_model_greedy_tokens_equal_numpy(default_model, default_model_path):
    model = llamachat.load(default_model_path, "torch")
    ids = default_model.encode_prompt("Write a short story about a robot who learns to paint.")
    out = []
    for m in (default_model, model):
        chain = SamplerChain(registry().samplers, ["greedy"])
        out.append(list(generate(m.runner, m.runner.new_cache(128), ids, chain, history=list(ids), max_tokens=32, stop_ids=())))
    assert out[0] == out[1] and len(out[0]) == 32


def test_device_selection(monkeypatch):
    from llamachat_torch import pick_device, pick_dtype

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_dtype(None, "cpu") == "float32"
    with pytest.raises(ValueError, match="device 'mps' is not available here .* available: cpu"):
        pick_device("mps")
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("auto") == "cuda" and pick_dtype(None, "cuda") == "bfloat16" and pick_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="does not exist"):
        pick_device("cuda:2")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # macOS on Apple silicon
    assert pick_device("auto") == "mps" and pick_dtype(None, "mps") == "float16"
    with pytest.raises(ValueError, match="accepted: float32 .fp32., float16 .fp16., bfloat16 .bf16."):
        pick_dtype("float64", "cpu")
    with pytest.raises(ValueError, match="accepted: auto, cpu, mps, cuda, cuda:N"):
        pick_device("tpu")


def test_bad_device_is_one_line_at_start_up(tiny_gguf):
    for args, fragment in (
        (("--device", "mps"), "device 'mps' is not available here"),
        (("--device", "cuda"), "no CUDA GPU is visible"),
        (("--dtype", "float64"), "unknown dtype 'float64'"),
    ):
        out = run_cli("-p", "hi", "-m", str(tiny_gguf[2]), "--backend", "torch", *args)
        err = out.stderr.decode()
        assert out.returncode == 2 and err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_load_errors_name_the_backend(tiny_gguf):
    with pytest.raises(LlamachatError, match="backend 'torch': unknown dtype"):
        llamachat.load(tiny_gguf[2], "torch", dtype="int3")


def test_int4_kernel_on_q4_1_weights(default_model_path):
    """Q4_1 blocks go to the int4 kernel as they are: x @ W.T equals the dequantized product up to
    the bfloat16 rounding of the activations and scales."""
    from llamachat_torch.int4 import Int4Linear

    from llamachat.checkpoints import open_checkpoint

    q = open_checkpoint(default_model_path).weights["blk.2.ffn_up"]
    assert q.scheme == "gguf:Q4_1"
    x = torch.randn(3, q.shape[1]).bfloat16()
    ours = Int4Linear([q])(x).float()
    exact = x.float() @ torch.from_numpy(q.dequantize()).T
    assert (ours - exact).abs().max() / exact.abs().max() < 2e-2


def test_int4_default_model_stays_close(default_model, default_model_path):
    model = llamachat.load(default_model_path, "torch", quantize="int4")
    bf16 = llamachat.load(default_model_path, "torch", dtype="bf16")
    assert model.runner.dtype == "bfloat16+int4" and model.runner.weight_bytes < 0.5 * bf16.runner.weight_bytes + 60e6
    ids = default_model.encode_prompt("Write a short story about a robot who learns to paint.")
    a, b = model.logits(ids), default_model.logits(ids)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99 and (a.argmax(-1) == b.argmax(-1)).mean() > 0.9


def test_quantize_option_errors(tiny_gguf):
    path = tiny_gguf[2]
    for backend, options, fragment in (
        ("torch", {"quantize": "int8"}, "unknown quantize 'int8'; accepted: none, int4"),
        ("torch", {"quantize": "int4", "dtype": "fp32"}, "bfloat16 activations"),
        ("numpy", {"quantize": "int4"}, "numpy backend has no quantize option"),
    ):
        with pytest.raises(LlamachatError, match=fragment):
            llamachat.load(path, backend, **options)


def test_cpu_cache_is_float32_whatever_the_weights(default_model_path):
    """bf16 (and int4) models on the CPU keep keys and values in float32: PyTorch's CPU attention is
    several times slower in bf16 (docs/benchmarks.md). The cache state round trip still holds."""
    model = llamachat.load(default_model_path, "torch", dtype="bfloat16")
    cache = model.runner.new_cache(64)
    logits = model.runner.forward([1, 2, 3, 4, 5], cache)
    assert cache.k.dtype == cache.v.dtype == torch.float32 and logits.dtype == np.float32
    state = cache.state()
    again = model.runner.new_cache(64)
    again.load_state(state)
    assert np.array_equal(model.runner.forward([6], cache), model.runner.forward([6], again))


def test_gpu_benchmark_script_runs_on_the_cpu(capsys, benchmark_script):
    """benchmarks/gpu_decode.py is run by hand on a lent GPU (random 7B-shaped weights); here its tiny
    shape on the CPU keeps it working: one row per dtype, the bytes the ceiling divides by being the
    config's own parameter count at the dtype's width (norms stay float32)."""
    script = benchmark_script("gpu_decode")
    argv = ["--shape", "tiny", "--device", "cpu", "--dtypes", "float32,bfloat16", "--n-prompt", "16", "--n-gen", "4", "--reps", "1"]
    rows = script.main(argv + ["--bandwidth-mib", "64"])
    shapes = script.SHAPES["tiny"].weight_shapes().values()
    norms = sum(s[0] for s in shapes if len(s) == 1)
    matrices = sum(int(np.prod(s)) for s in shapes if len(s) == 2)
    assert [r["dtype"] for r in rows] == ["float32", "bfloat16"]
    assert [r["weight_bytes"] for r in rows] == [4 * (matrices + norms), 2 * matrices + 4 * norms]
    assert all(r["tg_tok_s"] > 0 and r["pp_tok_s"] > 0 for r in rows)
    assert "RANDOM weights" in capsys.readouterr().out
