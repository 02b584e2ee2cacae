"""Meta .pth, HF safetensors, mlx-examples npz and mlx-lm safetensors against transformers (and mlx-lm).

One tiny random model per spec is written in every format by that format's own tools (torch.save,
save_pretrained, mx.savez / mx.quantize, mlx_lm.convert); each must give transformers' logits on the
same (or the same dequantized) weights.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from conftest import run_cli
from test_cli import assert_one_line_error
from tiny_models import (
    TinySpec,
    canonical_weights,
    hf_logits,
    hf_model,
    load_into_hf,
    mlx_dequantized,
    write_gguf,
    write_hf,
    write_meta,
    write_mlx_npz,
)

import llamachat
from llamachat.checkpoints import open_checkpoint
from llamachat.errors import LlamachatError

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889]
SPECS = {"gqa-untied": TinySpec(), "mha-tied": TinySpec(n_kv_heads=4, tied=True, rope_theta=5e4)}


@pytest.fixture(scope="module", params=list(SPECS))
def tiny(request, tmp_path_factory):
    spec = SPECS[request.param]
    model = hf_model(spec, seed=3)
    return spec, model, canonical_weights(model, spec), tmp_path_factory.mktemp(request.param)


def assert_logits_match(path, reference: np.ndarray, bound: float = 1e-4) -> None:
    logits = llamachat.load(path).logits(IDS)
    assert np.abs(logits - reference).max() < bound
    assert (logits.argmax(-1) == reference.argmax(-1)).all()


@pytest.mark.parametrize("layout", ["hf", "hf-sharded", "meta", "meta-2-shards", "mlx-npz", "mlx-npz-hf-qk", "gguf"])
def test_fp32_formats_match_transformers(tiny, layout):
    spec, model, weights, tmp = tiny
    path = tmp / layout
    if layout.startswith("hf"):
        write_hf(path, model, sharded=layout == "hf-sharded")
    elif layout.startswith("meta"):
        write_meta(path, spec, weights, n_shards=2 if "2" in layout else 1)
    elif layout.startswith("mlx-npz"):
        write_mlx_npz(path, spec, weights, hf_source=model if layout.endswith("hf-qk") else None)
    else:
        path.mkdir()
        write_gguf(path / "m.gguf", spec, weights)
    if layout == "hf-sharded":
        assert len(list(path.glob("*.safetensors"))) > 1 and (path / "model.safetensors.index.json").exists()
    checkpoint = open_checkpoint(path)
    assert checkpoint.format == layout.split("-")[0]
    assert checkpoint.config.tied_embeddings == spec.tied
    assert_logits_match(path, hf_logits(model, IDS))


# A tiny Llama-3.1 in Meta's layout: the real tokenizer.model and vocabulary size, use_scaled_rope.
# rope_theta 10,000 (not 500,000) so that at head_dim 16 the scaled low frequencies turn far enough
# within 160 positions for the logits to show whether the scaling was applied.
LLAMA31 = TinySpec(vocab=128256, rope_theta=10000.0, llama3_rope_factor=8.0)
LLAMA31_TEXT = "The quick brown fox jumps over the lazy dog; 12345 héllo wörld 😀 " * 12


@pytest.fixture(scope="module")
def tiny_llama31(tmp_path_factory):
    model = hf_model(LLAMA31, seed=5)
    return model, canonical_weights(model, LLAMA31), tmp_path_factory.mktemp("llama31")


@pytest.mark.parametrize("n_shards", [1, 2])
def test_meta_llama31_matches_transformers(tiny_llama31, n_shards):
    """Meta's Llama-3.1 download (embedding split along the vocabulary across shards, use_scaled_rope,
    tiktoken tokenizer.model) gives transformers' logits with rope_scaling llama3 on the same weights."""
    model, weights, tmp = tiny_llama31
    directory = write_meta(tmp / f"shards-{n_shards}", LLAMA31, weights, n_shards=n_shards, llama3=True)
    if n_shards == 2:
        from llamachat.checkpoints.meta import read_pth

        assert read_pth(directory / "consolidated.01.pth")["tok_embeddings.weight"].shape == (LLAMA31.vocab // 2, LLAMA31.dim)
    loaded = llamachat.load(directory)
    assert loaded.tokenizer.kind == "tiktoken"
    c = loaded.config
    assert (c.vocab_size, c.bos_id, c.eos_id, c.eot_ids) == (128256, 128000, 128001, (128001, 128008, 128009))
    ids = [c.bos_id, *loaded.tokenizer.encode(LLAMA31_TEXT)]
    assert len(ids) > 150
    logits, reference = loaded.logits(ids), hf_logits(model, ids)
    assert np.abs(logits - reference).max() < 1e-4
    assert (logits.argmax(-1) == reference.argmax(-1)).all()


def test_meta_bf16_shards(tiny):
    """Meta's files are bfloat16: read as raw bits, widened exactly."""
    import torch

    spec, model, weights, tmp = tiny
    write_meta(tmp / "bf16", spec, weights, n_shards=2, dtype=torch.bfloat16)
    rounded = {k: torch.from_numpy(v).bfloat16().float().numpy() for k, v in weights.items()}
    reference = hf_model(spec)
    load_into_hf(reference, rounded, spec)
    assert open_checkpoint(tmp / "bf16").weights["blk.0.attn_q"].scheme == "bf16"
    assert_logits_match(tmp / "bf16", hf_logits(reference, IDS))


def test_mlx_npz_4bit(tiny):
    """4-bit stays packed; it dequantizes to exactly mx.dequantize and runs like its dequantized weights."""
    import mlx.core as mx

    spec, model, weights, tmp = tiny
    write_mlx_npz(tmp / "q4", spec, weights, bits=4, group_size=32)
    checkpoint = open_checkpoint(tmp / "q4")
    q = checkpoint.weights["blk.1.ffn_down"]
    assert q.scheme == "affine" and (q.bits, q.group_size) == (4, 32)
    npz = np.load(tmp / "q4" / "weights.npz")
    expected = mx.dequantize(
        *(mx.array(npz[f"layers.1.feed_forward.w2.{p}"]) for p in ("weight", "scales", "biases")), group_size=32, bits=4
    )
    np.testing.assert_array_equal(q.dequantize(), np.array(expected))
    reference = hf_model(spec)
    load_into_hf(reference, mlx_dequantized(weights, 4, 32), spec)
    assert_logits_match(tmp / "q4", hf_logits(reference, IDS))


def test_mlx_lm_4bit_against_mlx_lm(tiny):
    """mlx-lm's own converter writes the model; mlx-lm's own forward pass is the reference."""
    import mlx.core as mx
    import mlx_lm

    spec, model, weights, tmp = tiny
    write_hf(tmp / "src", model)
    config = json.loads((tmp / "src" / "config.json").read_text())  # mlx-lm reads transformers 4's key
    (tmp / "src" / "config.json").write_text(json.dumps(config | {"rope_theta": spec.rope_theta}))
    mlx_lm.convert(str(tmp / "src"), str(tmp / "mlxlm"), quantize=True, q_bits=4, q_group_size=32)
    assert open_checkpoint(tmp / "mlxlm").weights["blk.0.attn_k"].scheme == "affine"
    theirs, _ = mlx_lm.load(str(tmp / "mlxlm"))
    reference = np.array(theirs(mx.array([IDS]))[0].astype(mx.float32))
    assert_logits_match(tmp / "mlxlm", reference)


def test_pth_reader_matches_torch_load(tiny):
    import torch

    from llamachat.checkpoints.meta import read_pth

    spec, model, weights, tmp = tiny
    path = write_meta(tmp / "cmp", spec, weights, n_shards=2, dtype=torch.bfloat16) / "consolidated.01.pth"
    ours = read_pth(path)
    theirs = torch.load(path, weights_only=True)
    assert ours.keys() == theirs.keys()
    for name, t in theirs.items():
        np.testing.assert_array_equal(ours[name].view(np.uint16), t.view(torch.uint16).numpy())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pth_with_code_is_refused_without_running_it(tmp_path):
    import torch

    directory = write_meta(tmp_path / "evil", TinySpec(), canonical_weights(hf_model(TinySpec()), TinySpec()))
    marker = tmp_path / "pwned"
    state = torch.load(directory / "consolidated.00.pth", weights_only=True)
    state["extra"] = _Payload(marker)
    torch.save(state, directory / "consolidated.00.pth")
    with pytest.raises(LlamachatError, match="posix.system.*refused without running it"):
        open_checkpoint(directory)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload does work when unpickled blindly
    assert marker.exists()


def test_missing_shards(tiny):
    spec, model, weights, tmp = tiny
    directory = write_meta(tmp / "three", spec, weights, n_shards=2)
    (directory / "consolidated.01.pth").rename(directory / "consolidated.02.pth")
    with pytest.raises(LlamachatError, match=r"consolidated.01.pth is missing \(found 2 of 3\)"):
        open_checkpoint(directory)
    (directory / "consolidated.02.pth").unlink()
    with pytest.raises(LlamachatError, match=r"has shape \[.*the config implies .*\(1 shard read\)"):
        open_checkpoint(directory)


def test_ffn_size_from_params():
    from llamachat.checkpoints.meta import ffn_dim

    assert ffn_dim(4096, 256, None) == 11008  # 7B
    assert ffn_dim(5120, 256, None) == 13824  # 13B
    assert ffn_dim(8192, 4096, 1.3) == 28672  # 70B
    assert ffn_dim(4096, 1024, 1.3) == 14336  # Llama-3-8B


def test_index_naming_a_missing_file(tiny):
    spec, model, weights, tmp = tiny
    directory = write_hf(tmp / "idx", model, sharded=True)
    sorted(directory.glob("model-*.safetensors"))[1].unlink()
    with pytest.raises(LlamachatError, match=r"index.json: names model-00002-of-\d+.safetensors, which is missing"):
        open_checkpoint(directory)


def test_shapes_that_disagree_with_the_config(tiny):
    spec, model, weights, tmp = tiny
    directory = write_hf(tmp / "bad-config", model)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"intermediate_size": spec.ffn * 2}))
    out = run_cli("-p", "hi", "-m", str(directory))
    assert_one_line_error(out, "mlp.gate_proj.weight has shape", f"the config implies [{spec.ffn * 2}, {spec.dim}]")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"num_attention_heads": 3, "num_key_value_heads": 2}, "n_heads (3) must be a multiple of n_kv_heads (2)"),
        ({"num_hidden_layers": -3}, "'num_hidden_layers' must be an integer >= 1, got -3"),
        ({"hidden_size": 64.5}, "'hidden_size' must be an integer >= 1, got 64.5"),
        ({"num_attention_heads": 0}, "'num_attention_heads' must be an integer >= 1, got 0"),
        ({"hidden_size": float("nan")}, "'hidden_size' must be an integer >= 1, got nan"),  # json reads NaN
    ],
)
def test_a_config_that_describes_no_model_is_one_line(tiny, change, fragment):
    """A damaged config.json was an internal error (ModelConfig's ValueError) for the chat, `info` and
    `convert`, or, with a negative layer count, a parameter total from `info`."""
    spec, model, weights, tmp = tiny
    directory = write_hf(tmp / f"bad-{next(iter(change))}-{next(iter(change.values()))}", model)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | change))
    for command in (
        ["-p", "hi", "-m", str(directory)],
        ["info", str(directory), "--no-measure"],
        ["convert", str(directory), str(tmp / "out.gguf")],
    ):
        assert_one_line_error(run_cli(*command), str(directory), fragment)


def test_unsupported_dtype(tmp_path):
    from llamachat.checkpoints.safetensors_file import read_safetensors

    header = json.dumps({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0")
    with pytest.raises(LlamachatError, match="w is F8_E4M3, which llamachat does not read .supported: F32, F16, BF16"):
        read_safetensors(tmp_path / "m.safetensors")


def test_unsupported_quantization_mode(tiny):
    spec, model, weights, tmp = tiny
    directory = write_mlx_npz(tmp / "mx", spec, weights, bits=4, group_size=32)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"quantization": {"group_size": 32, "bits": 4, "mode": "mxfp4"}}))
    with pytest.raises(LlamachatError, match="quantization mode 'mxfp4' is not supported"):
        open_checkpoint(directory)


def test_tokenizer_that_does_not_fit_the_embedding(tmp_path):
    spec = TinySpec(vocab=1000)
    directory = write_hf(tmp_path / "small-vocab", hf_model(spec))  # the 32,000-token LLaMA-2 tokenizer
    assert_one_line_error(run_cli("-p", "hi", "-m", str(directory)), "the tokenizer has 32000 tokens but the embedding only 1000 rows")


def test_cli_runs_a_meta_checkpoint(tiny):
    spec, model, weights, tmp = tiny
    directory = write_meta(tmp / "cli", spec, weights, n_shards=2)
    out = run_cli("-p", "hi", "-m", str(directory / "params.json"), "--temp", "0", "-n", "4", "-v")
    assert out.returncode == 0, out.stderr.decode()
    assert b"tok/s" in out.stderr


@pytest.mark.parametrize(("backend", "fragment"), [("numpy", "about 0.5 GiB on the numpy backend"), ("torch", "on the torch backend")])
def test_model_that_does_not_fit(default_model_path, backend, fragment):
    out = run_cli("-p", "hi", "-m", str(default_model_path), "--backend", backend, env={"LLAMACHAT_MEMORY_LIMIT": "100M"})
    assert_one_line_error(out, fragment, "only 0.1 GiB is available", "-q 4")


@pytest.mark.parametrize(
    "file_name, metadata, shown",
    [
        ("tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf", {}, "tinyllama-1.1b-chat-v1.0"),
        ("Meta-Llama-3-8B-Instruct-IQ4_XS.gguf", {}, "Meta-Llama-3-8B-Instruct"),
        ("llama-2-7b-chat.bf16.gguf", {"basename": "Llama-2"}, "llama-2-7b-chat"),
        # a generic stem: basename + size label + finetune, as llama.cpp's naming convention joins them
        ("ggml-model-q4_0.gguf", {"basename": "smollm2", "size_label": "135M", "finetune": "Instruct"}, "smollm2-135M-Instruct"),
        ("model.gguf", {}, "tiny-llama"),  # then general.name
    ],
)
def test_the_display_name_is_the_stem_without_its_quantization_then_the_metadata(tmp_path, file_name, metadata, shown):
    from llamachat.checkpoints import open_checkpoint

    spec = TinySpec(n_layers=1)

    def add(w) -> None:
        for key, value in metadata.items():
            getattr(w, f"add_{key}")(value)  # the gguf package's own add_basename, add_size_label, ...

    path = write_gguf(tmp_path / file_name, spec, canonical_weights(hf_model(spec), spec), metadata=add)
    assert open_checkpoint(path).config.name == shown
