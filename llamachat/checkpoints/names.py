"""The one name a model is shown by (welcome line, toolbar, /info, transcripts).

First the file's or folder's own name without its quantization suffix ("SmolLM2-135M-Instruct" from
"SmolLM2-135M-Instruct.Q4_1.gguf"): it is what the user downloaded and typed. When that is a generic
name ("ggml-model-q4_0.gguf", "model.gguf"), a GGUF's `general.basename` + `general.size_label` +
`general.finetune` (llama.cpp's naming convention, joined by "-"), then `general.name`. The name is
for display only: a saved session is matched to its model by the weights' hash, never by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# .Q4_1, -Q4_K_M, .IQ4_XS, -F16, .bf16, -fp32, -4bit, _8-bit, -int4 at the end of a file or folder stem
QUANT_SUFFIX = re.compile(r"[-._](?:I?Q\d+(?:_[A-Z0-9]+)*|BF16|FP?16|FP?32|\d+-?bits?|int\d+)$", re.IGNORECASE)
# stems that say nothing about the model (llama.cpp's and the converters' default output names)
GENERIC_STEMS = {"", "model", "ggml-model", "weights", "consolidated", "checkpoint"}


def strip_quant_suffix(stem: str) -> str:
    """`stem` without its quantization suffixes ("llama-2-7b-chat.Q8_0" -> "llama-2-7b-chat")."""
    while True:
        shorter = QUANT_SUFFIX.sub("", stem)
        if shorter == stem:
            return stem
        stem = shorter


def display_name(stem: str, metadata: Mapping[str, Any] | None = None) -> str:
    """The model's display name from its file or folder stem and, for GGUF, its `general.*` metadata."""
    name = strip_quant_suffix(stem)
    if name.lower() not in GENERIC_STEMS:
        return name
    meta = metadata or {}
    parts = [meta.get(f"general.{key}") for key in ("basename", "size_label", "finetune")]
    if meta.get("general.basename"):
        return "-".join(str(p) for p in parts if p)
    return str(meta.get("general.name") or name or stem)
