"""mlx-examples' `llms/llama/convert.py` output: `weights.npz` (or `weights.NN.npz`) + `config.json`
holding params.json keys, `rope_traditional` and, for `-q`, `quantization: {group_size, bits}`.

Names are Meta's. With `rope_traditional` true (the default, Meta sources) q/k are interleaved; false
(converted from HF) they are in HF's half-split order and are permuted here. A quantized model stores
every Linear and the Embedding as `.weight` (uint32) + `.scales` + `.biases`. Read with numpy alone
(`allow_pickle=False`); bfloat16 arrays come back as 2-byte voids and are taken as raw bits.

(mlx-lm's safetensors layout is HF's and is read by checkpoints/hf.py.)
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import LlamachatError
from ..protocols import ModelConfig, Tensor
from ..quantize import bf16_tensor
from .hf import read_json
from .layouts import META, to_canonical, with_tied
from .meta import config_from_params


def npz_files(directory: Path) -> list[Path]:
    single = directory / "weights.npz"
    if single.is_file():
        return [single]
    shards = sorted(directory.glob("weights.*.npz"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    if not shards:
        raise LlamachatError(f"{directory}: no weights.npz")
    return shards


def _read_npz(path: Path) -> dict[str, Tensor]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise LlamachatError(f"{path}: not a readable .npz ({e})") from None
    out: dict[str, Tensor] = {}
    for k, a in arrays.items():
        if a.dtype.kind == "V" and a.dtype.itemsize == 2:  # bfloat16
            out[k] = bf16_tensor(a.view(np.uint16))
        elif a.dtype.kind in "fui":
            out[k] = a
        else:
            raise LlamachatError(f"{path}: array {k} has dtype {a.dtype}, which llamachat does not read")
    return out


def read_mlx(directory: Path, vocab_size: int | None) -> tuple[ModelConfig, dict[str, Tensor], list[str]]:
    params = read_json(directory / "config.json")
    tensors: dict[str, Tensor] = {}
    for f in npz_files(directory):
        tensors |= _read_npz(f)
    tensors.pop("rope.freqs", None)
    emb = tensors.get("tok_embeddings.weight")
    if int(params.get("vocab_size", -1)) <= 0 and emb is not None and "tok_embeddings.scales" not in tensors:
        vocab_size = emb.shape[0]  # the embedding says it (mlx's own rule of taking output's last dim does not)
    config, notes = config_from_params(params, str(directory / "config.json"), vocab_size, directory.name)
    if "hidden_dim" not in params and "layers.0.feed_forward.w1.weight" in tensors:
        from dataclasses import replace

        config = replace(config, ffn_dim=_rows(tensors, "layers.0.feed_forward.w1"))
    config = with_tied(config, tensors, META)
    weights = to_canonical(
        tensors,
        config,
        META,
        str(directory),
        hf_qk=not params.get("rope_traditional", True),
        quantization=params.get("quantization"),
    )
    return config, weights, notes


def _rows(tensors: dict[str, Tensor], module: str) -> int:
    return int(tensors[module + ".weight"].shape[0])
