"""GGUF per architecture (issue 17), checked against an outside writer: llama.cpp's own
convert_hf_to_gguf.py (llama-cpp-python 0.3.36's, unpacked into the venv by `make test`'s dev install)
run on tiny transformers models of each family (GQA on and off, tied and untied where the family ships
both: KINDS). The reader must give transformers' weights in the canonical interleaved q/k order
(permuted here with tiny_models' own permutation, not llamachat's), and `llamachat convert` must write
back what llama.cpp's converter wrote, tensor for tensor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from tiny_models import cached_logits, hf_logits, hf_to_gguf_permute, write_tokenizer_model

from llamachat.checkpoints import open_checkpoint
from llamachat.checkpoints.gguf import GGUFFile, read_config
from llamachat.convert import convert
from llamachat.errors import LlamachatError

CONVERTER = Path(sys.prefix) / "llama.cpp" / "convert_hf_to_gguf.py"
DIM, HEADS, KV, FFN, LAYERS, VOCAB = 64, 4, 2, 96, 2, 32000

# Each kind: (family, key/value heads, tied embeddings). Every family runs with GQA on (KV of HEADS
# heads) and off (HEADS of HEADS; Phi-3-mini's own layout). Tied only where the family ships tied
# models, and there both ways: Qwen2.5-0.5B and Qwen3-0.6B are tied (their GGUF has no `output`
# tensor), Qwen2.5-7B and Qwen3-8B are not. Mistral's and Phi-3/3.5's checkpoints all have their own
# lm_head (the one tied phi3, Phi-4-mini, needs partial rotary, which llamachat does not run). Tied and
# GQA-off share a kind: each kind is one converter run and ~12 tests.
KINDS = {
    "mistral": ("mistral", KV, False),
    "mistral-mha": ("mistral", HEADS, False),
    "qwen2": ("qwen2", KV, False),
    "qwen2-tied-mha": ("qwen2", HEADS, True),
    "qwen3": ("qwen3", KV, False),
    "qwen3-tied-mha": ("qwen3", HEADS, True),
    "phi3": ("phi3", KV, False),
    "phi3-mha": ("phi3", HEADS, False),
    "phi3-longrope": ("phi3-longrope", KV, False),
}


def family_of(kind: str) -> str:
    return KINDS[kind][0]


def hf_family(kind: str, seed: int = 0):
    """A tiny transformers model of `kind` (float32) with weights redrawn as tiny_models does (sharp
    attention, non-trivial biases and norms), so a wrong layout moves everything."""
    import torch
    import transformers as t

    family, kv, tied = KINDS[kind]
    common = dict(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=kv, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=tied,
    )  # fmt: skip
    config = {
        "mistral": lambda: t.MistralConfig(**common, sliding_window=64, head_dim=DIM // HEADS),
        "qwen2": lambda: t.Qwen2Config(**common, rope_theta=1e6),
        "qwen3": lambda: t.Qwen3Config(**common, head_dim=24, rope_theta=1e6),
        "phi3": lambda: t.Phi3Config(**common, pad_token_id=0, original_max_position_embeddings=256, sliding_window=None),
        "phi3-longrope": lambda: t.Phi3Config(
            **common, pad_token_id=0, original_max_position_embeddings=8, sliding_window=None, rope_parameters=LONGROPE
        ),
    }[family]()
    config._attn_implementation = "eager"
    cls = {"mistral": t.MistralForCausalLM, "qwen2": t.Qwen2ForCausalLM, "qwen3": t.Qwen3ForCausalLM}
    cls |= {"phi3": t.Phi3ForCausalLM, "phi3-longrope": t.Phi3ForCausalLM}
    torch.manual_seed(seed)
    model = cls[family](config).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.ndim == 1:
                p.copy_(1 + 0.4 * (torch.rand(p.shape, generator=g) - 0.5))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / p.shape[1] ** 0.5)
    return model


# Phi-3's longrope with an original context of 8: the 15 ids below pass it, and so does every cache
# the tests open (llama.cpp's and llamachat's rule, by context, agree with transformers', by length)
_g = np.random.default_rng(3)
LONGROPE = {
    "rope_type": "longrope",
    "rope_theta": 10000.0,
    "long_factor": [float(f) for f in np.sort(_g.uniform(1.0, 16.0, DIM // HEADS // 2))],
    "short_factor": [float(f) for f in np.sort(_g.uniform(1.0, 2.0, DIM // HEADS // 2))],
    "original_max_position_embeddings": 8,
}


def expected_canonical(model, kind: str) -> dict[str, np.ndarray]:
    """transformers' weights under canonical names, q/k rows (and their biases and norms) interleaved.
    A tied model's file holds no `output`: transformers' head is its embedding (asserted, not assumed)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c, family = model.config, family_of(kind)
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    out = {"token_embd": sd["model.embed_tokens.weight"], "output_norm": sd["model.norm.weight"]}
    if c.tie_word_embeddings:
        np.testing.assert_array_equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    else:
        out["output"] = sd["lm_head.weight"]
    for i in range(c.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        if family.startswith("phi3"):
            q_dim, kv_dim = c.num_attention_heads * hd, c.num_key_value_heads * hd
            qkv, gate_up = sd[p + "self_attn.qkv_proj.weight"], sd[p + "mlp.gate_up_proj.weight"]
            q, k, v = qkv[:q_dim], qkv[q_dim : q_dim + kv_dim], qkv[q_dim + kv_dim :]
            gate, up = gate_up[: c.intermediate_size], gate_up[c.intermediate_size :]
        else:
            q, k, v = (sd[p + f"self_attn.{x}_proj.weight"] for x in "qkv")
            gate, up = sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]
        out |= {
            b + "attn_norm": sd[p + "input_layernorm.weight"],
            b + "attn_q": hf_to_gguf_permute(q, c.num_attention_heads),
            b + "attn_k": hf_to_gguf_permute(k, c.num_key_value_heads),
            b + "attn_v": v,
            b + "attn_output": sd[p + "self_attn.o_proj.weight"],
            b + "ffn_norm": sd[p + "post_attention_layernorm.weight"],
            b + "ffn_gate": gate,
            b + "ffn_up": up,
            b + "ffn_down": sd[p + "mlp.down_proj.weight"],
        }
        if family == "qwen2":
            out[b + "attn_q.bias"] = hf_to_gguf_permute(sd[p + "self_attn.q_proj.bias"], c.num_attention_heads)
            out[b + "attn_k.bias"] = hf_to_gguf_permute(sd[p + "self_attn.k_proj.bias"], c.num_key_value_heads)
            out[b + "attn_v.bias"] = sd[p + "self_attn.v_proj.bias"]
        if family == "qwen3":
            out[b + "attn_q_norm"] = hf_to_gguf_permute(sd[p + "self_attn.q_norm.weight"], 1)
            out[b + "attn_k_norm"] = hf_to_gguf_permute(sd[p + "self_attn.k_norm.weight"], 1)
    if family == "phi3-longrope":  # the factors as the divisor weights GGUF stores
        out["rope_factors_long"] = np.asarray(LONGROPE["long_factor"], np.float32)
        out["rope_factors_short"] = np.asarray(LONGROPE["short_factor"], np.float32)
    return out


def llama_cpp_convert(folder: Path, out: Path) -> Path:
    assert CONVERTER.is_file(), f"{CONVERTER} missing: the dev install (make test) unpacks it from the llama-cpp-python sdist"
    done = subprocess.run(
        [sys.executable, str(CONVERTER), str(folder), "--outfile", str(out), "--outtype", "f32"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module", params=list(KINDS))
def family(request, tmp_path_factory):
    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    model = hf_family(kind)
    model.save_pretrained(tmp / "hf")
    write_tokenizer_model(tmp / "hf")
    return kind, model, llama_cpp_convert(tmp / "hf", tmp / "llama-cpp.gguf"), tmp


def test_reader_against_llama_cpp_converter(family):
    kind, model, path, _ = family
    fam, kv, tied = KINDS[kind]
    checkpoint = open_checkpoint(path)
    config = checkpoint.config
    # llama.cpp writes Mistral as "llama" and drops its sliding window: structurally it is llama
    assert config.arch == {"mistral": "llama", "phi3-longrope": "phi3"}.get(fam, fam)
    assert (config.qkv_bias, config.qk_norm) == (fam == "qwen2", fam == "qwen3")
    assert config.head_dim == (24 if fam == "qwen3" else DIM // HEADS)
    assert config.rope_theta == (1e6 if fam.startswith("qwen") else 10000.0)
    assert (config.n_heads, config.n_kv_heads, config.tied_embeddings) == (HEADS, kv, tied)
    expected = expected_canonical(model, kind)
    assert set(checkpoint.weights) == set(expected)
    for name, w in expected.items():
        np.testing.assert_array_equal(np.asarray(checkpoint.weights[name]), w, err_msg=name)


def test_convert_writes_what_llama_cpp_writes(family):
    """`llamachat convert` of llama.cpp's file gives back its tensors (names, layout, fusion) and keys."""
    kind, _, path, tmp = family
    ours = convert(path, tmp / "ours.gguf", "gguf", force=True)
    theirs, mine = gguf.GGUFReader(path), gguf.GGUFReader(ours)
    t_theirs = {t.name: np.array(t.data) for t in theirs.tensors}
    t_mine = {t.name: np.array(t.data) for t in mine.tensors}
    assert set(t_mine) == set(t_theirs)
    for name, data in t_theirs.items():
        np.testing.assert_array_equal(t_mine[name], data, err_msg=name)
    assert mine.fields["general.architecture"].contents() == theirs.fields["general.architecture"].contents()
    arch = theirs.fields["general.architecture"].contents()
    for key in ("embedding_length", "block_count", "attention.head_count", "attention.head_count_kv", "rope.freq_base"):
        assert mine.fields[f"{arch}.{key}"].contents() == pytest.approx(theirs.fields[f"{arch}.{key}"].contents()), key
    import dataclasses

    assert dataclasses.replace(read_config(GGUFFile(ours)), name="x") == dataclasses.replace(read_config(GGUFFile(path)), name="x")


def test_mistral_sliding_window_round_trip(tmp_path):
    """Our writer keeps Mistral's window (llama.cpp's converter drops it); read back as mistral."""
    model = hf_family("mistral")
    model.save_pretrained(tmp_path / "hf")
    write_tokenizer_model(tmp_path / "hf")
    src = llama_cpp_convert(tmp_path / "hf", tmp_path / "l.gguf")
    import dataclasses

    checkpoint = open_checkpoint(src)
    from llamachat.checkpoints.gguf import write_gguf

    config = dataclasses.replace(checkpoint.config, arch="mistral", sliding_window=64)
    write_gguf(tmp_path / "m.gguf", config, dict(checkpoint.weights), checkpoint.tokenizer.gguf_fields())
    back = read_config(GGUFFile(tmp_path / "m.gguf"))
    assert (back.arch, back.sliding_window) == ("mistral", 64)


def test_switch_tensors_in_the_wrong_architecture(family, tmp_path):
    """A qwen2 file relabelled llama carries biases llama does not have: one line, not ignored weights."""
    kind, _, path, _ = family
    if kind != "qwen2":
        return
    data, header = path.read_bytes(), GGUFFile(path).data_offset
    bad = tmp_path / "relabelled.gguf"  # the arch and its keys renamed (same length), the tensors kept
    bad.write_bytes(data[:header].replace(b"qwen2", b"qwen3") + data[header:])
    with pytest.raises(LlamachatError, match="belongs to a qwen2 model but the file says 'qwen3'"):
        open_checkpoint(bad)


def test_longrope_factors_of_the_wrong_length(family, tmp_path):
    """A longrope GGUF whose rope_factors_long is not head_dim / 2 long: one line naming the file."""
    kind, _, path, _ = family
    if kind != "phi3-longrope":
        return
    from llamachat.checkpoints.gguf import write_gguf

    checkpoint = open_checkpoint(path)
    weights = dict(checkpoint.weights) | {"rope_factors_long": np.ones(5, np.float32)}
    write_gguf(tmp_path / "bad.gguf", checkpoint.config, weights, checkpoint.tokenizer.gguf_fields())
    with pytest.raises(LlamachatError, match=r"bad.gguf: tensor rope_factors_long.weight has shape \[5\], expected \[8\]"):
        open_checkpoint(tmp_path / "bad.gguf").weights  # noqa: B018


@pytest.mark.parametrize("vocab", ["default", "ggml-vocab-qwen2.gguf"])
def test_tokenizer_json_vocabulary_to_gguf(vocab, default_model_path, tmp_path):
    """A byte-level BPE tokenizer.json (written from a vocabulary llama.cpp's converter made) gives back
    llama.cpp's own fields: tokens, merges, token types, pre-tokenizer name, special ids."""
    from tiny_models import DATA

    from llamachat.tokenizer import load_tokenizer, tokenizer_from_json

    source = default_model_path if vocab == "default" else DATA / vocab
    meta = GGUFFile(source).metadata
    load_tokenizer(source).save(tmp_path)
    fields = tokenizer_from_json(tmp_path / "tokenizer.json").gguf_fields()
    assert fields["tokenizer.ggml.pre"] == meta["tokenizer.ggml.pre"]
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        assert list(fields[key]) == list(meta[key]), key
    special = {i for i, t in enumerate(meta["tokenizer.ggml.token_type"]) if t == 3}
    assert {i for i, t in enumerate(fields["tokenizer.ggml.token_type"]) if t == 3} == special
    for key in ("bos", "eos"):
        if f"tokenizer.ggml.{key}_token_id" in meta:
            assert fields[f"tokenizer.ggml.{key}_token_id"] == meta[f"tokenizer.ggml.{key}_token_id"]


def test_tokenizer_json_without_a_llama_cpp_name(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from llamachat.tokenizer import tokenizer_from_json

    tk = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Punctuation(), pre_tokenizers.ByteLevel()])
    tk.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(LlamachatError, match="pre-tokenizer is none llama.cpp names"):
        tokenizer_from_json(tmp_path / "tokenizer.json").gguf_fields()


IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 29871, 13, 450, 4996, 17354]


@pytest.fixture(scope="module")
def ggufs(family):
    """Each family's GGUF written two ways: by llama.cpp's converter and by `llamachat convert` of the
    HF folder (which keeps Mistral's window of 64, longer than the prompt)."""
    _, _, path, tmp = family
    return {"llama.cpp": path, "convert": convert(tmp / "hf", tmp / "from-hf.gguf", "gguf", dtype="f32")}


@pytest.mark.parametrize("writer", ["llama.cpp", "convert"])
@pytest.mark.parametrize("backend", ["numpy", "torch", "mlx"])
def test_logits_from_gguf(family, ggufs, writer, backend):
    """Each writer's file of each family, run by llamachat, within 1e-4 of transformers: a prefill of
    the whole prompt (all rows), then a prefill of all but its last token and one cached step with it."""
    _, model, *_ = family
    reference = hf_logits(model, IDS)
    runner = llamachat_load(ggufs[writer], backend).runner
    logits = runner.forward(IDS, runner.new_cache(64), all_logits=True)
    assert np.abs(logits - reference).max() < 1e-4
    assert np.abs(cached_logits(runner, IDS, len(IDS) - 1) - reference[-1:]).max() < 1e-4


def llamachat_load(path, backend):
    import llamachat

    return llamachat.load(path, backend, **({"device": "cpu"} if backend in ("torch", "mlx") else {}))


def test_our_gguf_runs_in_llama_cpp(family, ggufs):
    """What `llamachat convert` writes (from the HF folder) loads in llama.cpp itself (the llamacpp
    backend) with logits within 4e-3 of transformers' largest one: llama.cpp's KV cache is float16,
    whose error is relative (a layout slip is of order 1 relative)."""
    import llamachat

    _, model, *_ = family
    logits, reference = llamachat.load(ggufs["convert"], "llamacpp").logits(IDS), hf_logits(model, IDS)
    # measured 0.7e-3 to 2.6e-3 of the largest logit, every kind: 0.007-0.018 where it is ~7, 0.027 and
    # 0.047 for the tied kinds, whose head is the unit-variance embedding (logits ~40). With a float32
    # cache (type_k/type_v 0, not the backend's) llama.cpp was within 3e-5 of transformers on qwen2 and
    # qwen2-tied-mha, both writers' files: the float16 cache is all of it.
    assert np.abs(logits - reference).max() < 4e-3 * np.abs(reference).max()


def test_longrope_side_is_the_caches_as_in_llama_cpp(family, tmp_path):
    """Long or short factors by the cache's context, llama.cpp's rule (which pads n_ctx to a multiple
    of 256, so the original context here is 256): the same 15 ids in a cache of 256 rotate with the
    short factors, in a cache of 257 with the long ones, in llamachat as in llama.cpp itself (measured
    0.012 and 0.018 apart: llama.cpp's float16 cache). The two sides differ by 5.9."""
    import dataclasses

    import llamachat
    from llamachat.checkpoints.gguf import write_gguf

    kind, _, path, _ = family
    if kind != "phi3-longrope":
        return
    checkpoint = open_checkpoint(path)
    c = checkpoint.config
    c = dataclasses.replace(c, context_length=1024, rope_scaling=dataclasses.replace(c.rope_scaling, original_context=256))
    write_gguf(tmp_path / "o256.gguf", c, dict(checkpoint.weights), checkpoint.tokenizer.gguf_fields())
    ours, theirs = llamachat_load(tmp_path / "o256.gguf", "numpy").runner, llamachat.load(tmp_path / "o256.gguf", "llamacpp").runner
    by_side = {}
    for capacity in (256, 257):
        by_side[capacity] = ours.forward(IDS, ours.new_cache(capacity), all_logits=True)
        assert np.abs(by_side[capacity] - theirs.forward(IDS, theirs.new_cache(capacity), all_logits=True)).max() < 3e-2
    assert np.abs(by_side[256] - by_side[257]).max() > 1.0
