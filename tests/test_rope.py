"""The RoPE kit's inverse frequencies against transformers' own (`ROPE_INIT_FUNCTIONS` and the
default computation): plain, linear scaling, and Llama-3.1's scaling as GGUF-style divisors."""

from __future__ import annotations

import numpy as np
import pytest

from llamachat.protocols import ModelConfig, RopeScaling
from llamachat.rope import inverse_frequencies, llama3_divisors

LLAMA31_ROPE = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def ours(head_dim: int, theta: float, scaling: RopeScaling | None = None, divisors=None) -> np.ndarray:
    config = ModelConfig(
        dim=4 * head_dim,
        n_layers=1,
        n_heads=4,
        n_kv_heads=4,
        head_dim=head_dim,
        ffn_dim=8,
        vocab_size=8,
        rope_theta=theta,
        rope_scaling=scaling,
    )
    return inverse_frequencies(config, divisors)


def transformers_inv_freq(head_dim: int, theta: float, rope: dict | None) -> np.ndarray:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "default", "rope_theta": theta} | (rope or {})
    config = LlamaConfig(
        hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim, max_position_embeddings=131072, rope_parameters=params
    )
    if params["rope_type"] == "default":
        inv_freq, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        inv_freq, _ = ROPE_INIT_FUNCTIONS[params["rope_type"]](config, None)
    return inv_freq.double().numpy()


@pytest.mark.parametrize(("head_dim", "theta"), [(64, 10000.0), (128, 500000.0), (16, 1e6)])
def test_plain_frequencies(head_dim, theta):
    np.testing.assert_allclose(ours(head_dim, theta), transformers_inv_freq(head_dim, theta, None), rtol=1e-6)


def test_linear_scaling():
    expected = transformers_inv_freq(128, 10000.0, {"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(ours(128, 10000.0, RopeScaling("linear", 4.0)), expected, rtol=1e-6)
    assert not np.allclose(ours(128, 10000.0), expected)  # the scaling is visible at this tolerance


@pytest.mark.parametrize(("head_dim", "theta"), [(128, 500000.0), (64, 500000.0)])
def test_llama31_scaling_as_divisors(head_dim, theta):
    expected = transformers_inv_freq(head_dim, theta, {"rope_type": "llama3"} | LLAMA31_ROPE)
    got = ours(head_dim, theta, divisors=llama3_divisors(head_dim, theta, LLAMA31_ROPE))
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # the divisors travel as float32, as GGUF stores them
    assert not np.allclose(ours(head_dim, theta), expected, rtol=1e-3)


@pytest.mark.parametrize(
    "extra",
    [{}, {"attention_factor": 1.3}, {"factor": 8.0}],  # the attention factor: default, given, or from a given factor
)
def test_longrope_from_config_json(tmp_path, extra):
    """Phi-3-mini-128k's shape (head_dim 96, original 4096, context 131072): llamachat's reading of the
    config.json, long and short factors as divisors and the attention factor, against transformers'
    `_compute_longrope_parameters` (long when asked for more than the original context, short otherwise)."""
    import json

    from transformers import Phi3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from llamachat.checkpoints.hf import read_hf_config
    from llamachat.rope import attention_factor

    g = np.random.default_rng(0)
    rope = {"type": "longrope", "long_factor": list(np.sort(g.uniform(1, 60, 48))), "short_factor": list(g.uniform(1, 3, 48))}
    cfg = {"model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 32, "num_hidden_layers": 1, "intermediate_size": 8,
           "vocab_size": 32064, "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
           "rope_theta": 10000.0, "rope_scaling": rope | extra, "pad_token_id": None}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    config, extras = read_hf_config(tmp_path / "config.json")
    hf = Phi3Config(**{k: v for k, v in cfg.items() if k != "model_type"})
    for seq_len, side in ((4097, "long"), (None, "short")):
        expected, factor = ROPE_INIT_FUNCTIONS["longrope"](hf, None, seq_len=seq_len)
        got = inverse_frequencies(config, extras["longrope"][f"rope_factors_{side}"])
        np.testing.assert_allclose(got, expected.double().numpy(), rtol=1e-6)
        assert attention_factor(config) == pytest.approx(factor, rel=1e-12)
    assert attention_factor(config) != 1.0
