"""Random LLaMA weights drawn straight from a ModelConfig (no HF model), for the checks that compare
llamachat with itself in another arrangement: tensor-parallel ranks (tests/test_tp.py,
benchmarks/tp_gpu_check.py on a GPU machine) and Meta's shards (tests/test_meta_tp.py). NumPy and
llamachat only, since a lent GPU machine's image has no gguf or transformers."""

from __future__ import annotations

import numpy as np

from llamachat.protocols import ModelConfig


def random_weights(config: ModelConfig, seed: int = 0, qk_gain: float = 1.0) -> dict[str, np.ndarray]:
    """Random float32 weights under GGUF names, in the canonical layout. Norm weights 1 +- 0.2;
    matrices std 1/sqrt(fan_in), q/k times `qk_gain` (sharper attention); an untied embedding
    unit-variance. A tied embedding is the head too, so it is drawn at the head's scale: logits of
    order 1 either way, which keeps an absolute bound on them meaning the same (float32's rounding
    is relative; a unit-variance tied head made logits of ~18 whose rank-split sums missed 1e-5 by
    rounding alone on an AMD EPYC, 2026-12-04)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.weight_shapes().items():
        if len(shape) == 1:
            weights[name] = 1 + 0.2 * rng.standard_normal(shape)
        elif name == "token_embd" and not config.tied_embeddings:
            weights[name] = rng.standard_normal(shape)
        else:
            gain = qk_gain if "attn_q" in name or "attn_k" in name else 1.0
            weights[name] = rng.standard_normal(shape) * (gain / np.sqrt(shape[1]))
    return {name: w.astype(np.float32) for name, w in weights.items()}
