"""`llamachat info`: exact parameter counts for LLaMA-2 7B/13B/70B (from params.json alone) and the
default model, the memory and FLOP arithmetic, and the CLI in both its forms."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from test_cli import assert_one_line_error
from tiny_models import TinySpec, hf_model, write_hf

from llamachat.checkpoints import read_config_only
from llamachat.costs import flops_per_token, kv_bytes_per_token, param_counts
from llamachat.info import report

# Meta's params.json files as published (docs/formats.md 2(a)); the totals are the widely quoted ones
LLAMA2 = {
    "7B": ({"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}, 6_738_415_616),
    "13B": ({"dim": 5120, "multiple_of": 256, "n_heads": 40, "n_layers": 40, "norm_eps": 1e-05, "vocab_size": -1}, 13_015_864_320),
    "70B": (
        {
            "dim": 8192,
            "multiple_of": 4096,
            "ffn_dim_multiplier": 1.3,
            "n_heads": 64,
            "n_kv_heads": 8,
            "n_layers": 80,
            "norm_eps": 1e-05,
            "vocab_size": -1,
        },
        68_976_648_192,
    ),
}


@pytest.mark.parametrize("size", list(LLAMA2))
def test_llama2_totals_from_params_json(tmp_path, size):
    params, total = LLAMA2[size]
    (tmp_path / "params.json").write_text(json.dumps(params))
    found = read_config_only(tmp_path / "params.json")
    assert param_counts(found.config).total == total
    assert found.config.vocab_size == 32000 and "assumed LLaMA-2's 32,000" in found.notes[0]


def test_7b_memory_kv_and_flops(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(LLAMA2["7B"][0]))
    c = read_config_only(tmp_path).config
    r = report(c, bandwidth=28.9e9)
    assert r["memory"]["fp32"]["bytes"] == 4 * 6_738_415_616  # 25,705 MiB
    assert round(r["memory"]["fp32"]["bytes"] / 2**20) == 25_705
    assert r["memory"]["Q4_0"]["bytes"] == 6_738_415_616 * 9 // 16  # 4.5 bits
    assert kv_bytes_per_token(c) == 2 * 32 * 4096 * 2  # 0.5 MiB per token in fp16
    assert r["kv_cache"]["bytes_at_context_fp16"] == 2 * 2**30  # 2 GiB at 4096
    assert flops_per_token(c, 4096) == 2 * 6_738_415_616 + 4 * 32 * 4096 * 4096
    assert r["memory"]["fp32"]["decode_ceiling_tok_s"] == round(28.9e9 / (4 * 6_738_415_616), 2)


def test_default_model_json(default_model_path):
    out = run_cli("info", str(default_model_path), "--json", "--bandwidth", "20")
    assert out.returncode == 0, out.stderr.decode()
    r = json.loads(out.stdout)
    assert r["total_params"] == 134_515_008 and isinstance(r["total_params"], int)
    assert r["params"]["output"] == 0  # tied
    assert r["format"] == "gguf" and r["bandwidth_GB_s"] == 20.0


def test_hf_config_json_alone_and_table(tmp_path):
    spec = TinySpec()
    write_hf(tmp_path, hf_model(spec))
    out = run_cli("info", str(tmp_path / "config.json"), "--no-measure")
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    total = param_counts(read_config_only(tmp_path).config).total
    assert f"{total:,}" in text and "MiB" in text and "KV cache" in text and "32.00 bits per weight" in text


def test_bad_path(tmp_path):
    assert_one_line_error(run_cli("info", str(tmp_path / "nope")), "no such file or directory")
    (tmp_path / "config.json").write_text("{not json")
    assert_one_line_error(run_cli("info", str(tmp_path / "config.json")), "not valid JSON")
    assert_one_line_error(run_cli("info", "-m", str(tmp_path / "nope")), "no such file or directory")  # -m as in the chat
    assert_one_line_error(run_cli("info", "a.gguf", "-m", "b.gguf"), "give the model once")


# Meta's Llama-3.x params.json as published (meta-llama/llama-models sku_list.py): no RoPE factor, only
# use_scaled_rope. Hugging Face's config.json for the same models says factor 8 for 3.1 and 3.3, and 32
# for 3.2 1B and 3B (its post-release fix; llama-models issues #166 and #241).
LLAMA3_PARAMS = {
    "3.1-8B": ({"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 8, "ffn_dim_multiplier": 1.3, "multiple_of": 1024}, 8.0),
    "3.3-70B": ({"dim": 8192, "n_layers": 80, "n_heads": 64, "n_kv_heads": 8, "ffn_dim_multiplier": 1.3, "multiple_of": 4096}, 8.0),
    "3.2-1B": ({"dim": 2048, "n_layers": 16, "n_heads": 32, "n_kv_heads": 8, "ffn_dim_multiplier": 1.5, "multiple_of": 256}, 32.0),
    "3.2-3B": ({"dim": 3072, "n_layers": 28, "n_heads": 24, "n_kv_heads": 8, "ffn_dim_multiplier": 1.0, "multiple_of": 256}, 32.0),
}
LLAMA3_COMMON = {"vocab_size": 128256, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True}


@pytest.mark.parametrize("model", list(LLAMA3_PARAMS))
def test_llama3_rope_scaling_shown(tmp_path, model):
    params, factor = LLAMA3_PARAMS[model]
    (tmp_path / "params.json").write_text(json.dumps(params | LLAMA3_COMMON))
    out = run_cli("info", str(tmp_path / "params.json"), "--json", "--no-measure")
    assert out.returncode == 0, out.stderr.decode()
    rope = json.loads(out.stdout)["architecture"]["rope_scaling"]
    assert rope == {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    table = run_cli("info", str(tmp_path), "--no-measure", env={"COLUMNS": "200"}).stdout.decode()
    assert f"llama3, factor {factor:g} (low_freq 1, high_freq 4, original context 8,192)" in table


def test_llama32_rope_divisors_match_transformers():
    """The divisors Meta's 3.2 1B gets give the inverse frequencies transformers computes from that
    model's Hugging Face config (rope_type llama3, factor 32)."""
    import numpy as np
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llamachat.checkpoints.meta import llama3_rope
    from llamachat.rope import llama3_divisors

    params = LLAMA3_PARAMS["3.2-1B"][0] | LLAMA3_COMMON
    rope = {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    hf = LlamaConfig(hidden_size=2048, num_attention_heads=32, max_position_embeddings=131072, rope_theta=500000.0, rope_scaling=rope)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
    plain = 500000.0 ** -(np.arange(0, 64, 2) / 64)
    ours = plain / llama3_divisors(64, 500000.0, llama3_rope(params))
    np.testing.assert_allclose(ours, inv_freq.double().numpy(), rtol=1e-6)


def test_no_rope_scaling_shown(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps(LLAMA2["7B"][0]))
    assert report(read_config_only(tmp_path).config)["architecture"]["rope_scaling"] is None


def test_gguf_rope_factor_from_rope_freqs(tmp_path):
    """A GGUF keeps Llama-3.1's scaling only as rope_freqs divisors (as llama.cpp's converter writes
    them); the factor shown is the largest divisor."""
    from tiny_models import canonical_weights, write_gguf

    from llamachat.rope import llama3_divisors

    spec = TinySpec()
    weights = canonical_weights(hf_model(spec), spec)
    rope = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    weights["rope_freqs.weight"] = llama3_divisors(spec.head_dim, 500000.0, rope)
    path = write_gguf(tmp_path / "m.gguf", spec, weights)
    r = json.loads(run_cli("info", str(path), "--json", "--no-measure").stdout)
    assert r["architecture"]["rope_scaling"] == {"rope_type": "llama3 (rope_freqs)", "factor": 8.0}


def test_chat_info_shows_rope_scaling(tmp_path):
    """/info in a chat: the same RoPE line as `llamachat info`."""
    from tiny_models import canonical_weights, write_gguf

    import llamachat
    from llamachat.commands import cmd_info
    from llamachat.plugins import registry
    from llamachat.rope import llama3_divisors
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    spec = TinySpec()
    weights = canonical_weights(hf_model(spec), spec)
    rope = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    weights["rope_freqs.weight"] = llama3_divisors(spec.head_dim, 500000.0, rope)
    model = llamachat.load(write_gguf(tmp_path / "m.gguf", spec, weights))

    class Chat:
        session = Session(model, SamplerChain(registry().samplers, ["greedy"]))
        said: list[str] = []

        def say(self, text: str) -> None:
            self.said.append(text)

    chat = Chat()
    cmd_info(chat, "")
    assert "rope     scaling llama3 (rope_freqs), factor 32" in chat.said


@pytest.mark.parametrize("bandwidth", ["-5", "0", "nan"])
def test_a_bandwidth_that_is_not_positive_is_refused(bandwidth):
    """Issue 15 case 16: `--bandwidth -5` printed negative speeds."""
    assert_one_line_error(run_cli("info", "--bandwidth", bandwidth, "--json"), "--bandwidth takes a number of GB/s > 0")
