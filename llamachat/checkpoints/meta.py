"""Meta's download: `consolidated.NN.pth` + `params.json` + `tokenizer.model`.

A .pth is a zip holding `data.pkl` (a pickle naming tensors) and one raw storage per tensor. The
pickle is read by `_TensorUnpickler`, which resolves exactly the globals a plain tensor dictionary
needs to llamachat's own functions and refuses every other (the check torch's `weights_only=True`
does, without needing torch): a .pth holding a module, a function or any other object is refused
before anything in it runs. Storages are memory-mapped straight out of the (uncompressed) zip.

Model-parallel shards (13B: 2, 70B: 8) are merged as fairscale split them (docs/formats.md 2(a)):
column-parallel weights (wq, wk, wv, w1, w3, output) along axis 0, row-parallel ones (wo, w2) and
LLaMA-1/2's embedding along axis 1, 1-D norms replicated. The merge is lazy (sharded.py): nothing is
concatenated until a weight is read whole, and a tensor-parallel rank slices its share out of the
shards it overlaps (only its own file when its split is the files').
"""

from __future__ import annotations

import mmap
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LlamachatError
from ..protocols import ModelConfig, Tensor
from ..quantize import bf16_tensor
from ..rope import llama3_divisors
from .hf import read_json
from .layouts import META, to_canonical, with_tied
from .names import display_name
from .sharded import Sharded, ShardedWeights

LLAMA2_VOCAB = 32000
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,  # raw bits, see quantize.bf16_tensor
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}
_ROW_PARALLEL = ("attention.wo", "feed_forward.w2")


# -------------------------------------------------------------------------------------------------
# params.json


def ffn_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """Meta's FeedForward hidden size (hidden_dim = 4 * dim on the way in)."""
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def config_from_params(params: dict[str, Any], source: str, vocab_size: int | None, name: str) -> tuple[ModelConfig, list[str]]:
    """ModelConfig from params.json keys (also mlx-examples' config.json, which adds `hidden_dim`),
    and notes for the user (a guessed vocabulary size)."""
    notes: list[str] = []
    try:
        dim, n_heads = int(params["dim"]), int(params["n_heads"])
        n_layers = int(params["n_layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise LlamachatError(f"{source}: params need integer dim, n_heads and n_layers ({e!r} missing or bad)") from None
    if min(dim, n_heads, n_layers) < 1:
        raise LlamachatError(f"{source}: dim, n_heads and n_layers must be >= 1, got {dim}, {n_heads}, {n_layers}")
    vocab = int(params.get("vocab_size", -1))
    if vocab <= 0:
        if vocab_size is not None:
            vocab = vocab_size
        else:
            vocab = LLAMA2_VOCAB
            notes.append(
                f"vocab_size is {params.get('vocab_size', 'absent')} and there is no tokenizer: assumed LLaMA-2's {LLAMA2_VOCAB:,}"
            )
    if "hidden_dim" in params:
        hidden = int(params["hidden_dim"])
    else:
        hidden = ffn_dim(dim, int(params.get("multiple_of", 256)), params.get("ffn_dim_multiplier"))
    config = ModelConfig(
        dim=dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=int(params.get("n_kv_heads") or n_heads),
        head_dim=int(params.get("head_dim") or dim // n_heads),
        ffn_dim=hidden,
        vocab_size=vocab,
        norm_eps=float(params.get("norm_eps", 1e-5)),
        rope_theta=float(params.get("rope_theta", 10000.0)),
        context_length=int(params.get("max_seq_len", 4096)),
        name=display_name(name),
    )
    return config, notes


# Llama-3.2 1B and 3B as (dim, n_layers): no other Llama-3 text model has these shapes. Their
# params.json says only use_scaled_rope, like 3.1's; Meta's reference code then applies factor 8, but
# these two were trained for factor 32 (their HF configs since a post-release fix; Meta's maintainers in
# llama-models issue #166; with 8 the output degrades beyond ~80k tokens, issue #241). See design.md.
LLAMA32_SMALL_SHAPES = {(2048, 16): "Llama-3.2 1B", (3072, 28): "Llama-3.2 3B"}


def llama3_rope(params: dict[str, Any]) -> dict[str, Any] | None:
    """The Llama-3.1-style RoPE scaling a params.json asks for (`use_scaled_rope`), in Hugging Face's
    rope_scaling terms; None without it. Factor 32 for Llama-3.2 1B/3B, 8 otherwise (Meta's code)."""
    if not params.get("use_scaled_rope"):
        return None
    factor = 32.0 if (params.get("dim"), params.get("n_layers")) in LLAMA32_SMALL_SHAPES else 8.0
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


# -------------------------------------------------------------------------------------------------
# .pth without running its pickle


@dataclass
class _Storage:
    dtype: type
    key: str


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: _Archive):
        super().__init__(file)
        self.archive = archive

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self.archive.rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks: data
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name  # a storage type is only ever a tag inside a persistent id (see persistent_load)
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
            raise pickle.UnpicklingError(f"persistent id {pid!r}")
        return _Storage(_STORAGE_DTYPES[pid[1]], str(pid[2]))


class _Archive:
    """One .pth zip: its storages are memory-mapped views at their offsets in the file."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.zip = zipfile.ZipFile(path)
        self.entries = {info.filename: info for info in self.zip.infolist()}
        pkl = [n for n in self.entries if n.endswith("data.pkl")]
        if len(pkl) != 1:
            raise LlamachatError(f"{path}: not a PyTorch checkpoint (no data.pkl)")
        self.prefix = pkl[0][: -len("data.pkl")]

    def load(self) -> dict[str, Any]:
        try:
            with self.zip.open(self.prefix + "data.pkl") as f:
                return _TensorUnpickler(f, self).load()
        except pickle.UnpicklingError as e:
            raise LlamachatError(
                f"{self.path}: holds {e}, not only tensors; refused without running it (llamachat reads .pth files of plain tensors)"
            ) from None

    def storage(self, s: _Storage) -> np.ndarray:
        info = self.entries.get(f"{self.prefix}data/{s.key}")
        if info is None:
            raise LlamachatError(f"{self.path}: storage {s.key} is missing from the archive")
        if info.compress_type != zipfile.ZIP_STORED:
            raise LlamachatError(f"{self.path}: storage {s.key} is compressed; PyTorch never writes that")
        name_len, extra_len = struct.unpack_from("<HH", self.map, info.header_offset + 26)
        start = info.header_offset + 30 + name_len + extra_len
        return np.frombuffer(self.map, dtype=s.dtype, count=info.file_size // np.dtype(s.dtype).itemsize, offset=start)

    def rebuild_tensor(self, storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
        flat = self.storage(storage)
        itemsize = flat.itemsize
        if offset + sum((n - 1) * st for n, st in zip(size, stride)) >= len(flat) and int(np.prod(size)):
            raise LlamachatError(f"{self.path}: a tensor runs past its storage (corrupt file)")
        view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[st * itemsize for st in stride], writeable=False)
        return view


def read_pth(path: Path) -> dict[str, np.ndarray]:
    """The tensors of one .pth file (a flat {name: tensor} dictionary), without running its pickle."""
    try:
        state = _Archive(path).load()
    except zipfile.BadZipFile:
        raise LlamachatError(f"{path}: not a PyTorch zip checkpoint (legacy or corrupt .pth files are not read)") from None
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise LlamachatError(f"{path}: expected a dictionary of tensors")
    return dict(state)


# -------------------------------------------------------------------------------------------------
# A Meta model directory


def shard_files(directory: Path) -> list[Path]:
    """consolidated.00.pth, consolidated.01.pth, ... in numeric order, with none missing."""
    found = {}
    for p in directory.glob("*.pth"):
        m = re.fullmatch(r"consolidated\.(\d+)\.pth", p.name)
        if m:
            found[int(m.group(1))] = p
    if not found:
        raise LlamachatError(f"{directory}: params.json but no consolidated.NN.pth weights")
    missing = [i for i in range(max(found) + 1) if i not in found]
    if missing:
        raise LlamachatError(f"{directory}: shard consolidated.{missing[0]:02d}.pth is missing (found {len(found)} of {max(found) + 1})")
    return [found[i] for i in sorted(found)]


def merge_shards(shards: list[dict[str, np.ndarray]], config: ModelConfig) -> dict[str, Tensor | Sharded]:
    """One state dict from model-parallel shards, merged lazily: a weight cut across the shards is a
    `Sharded` view of their memory maps (concatenated only when read whole, sliced without merging:
    sharded.py); bfloat16 tensors become `bf16` QuantizedTensors. ValueError when they do not fit."""
    merged: dict[str, Tensor | Sharded] = {}
    for name, first in shards[0].items():
        parts = [s.get(name) for s in shards]
        if any(p is None for p in parts):
            raise ValueError(f"tensor {name} is missing from a shard")
        if len(parts) == 1:
            merged[name] = bf16_tensor(first) if first.dtype == np.uint16 else first
            continue
        if first.ndim == 1:
            axis = None  # norms: every shard holds the whole vector
        elif name.startswith("tok_embeddings"):  # LLaMA-1/2 split the embedding dim, Llama-3 the vocabulary
            axis = 1 if sum(p.shape[1] for p in parts) == config.dim else 0
        else:
            axis = 1 if any(k in name for k in _ROW_PARALLEL) else 0
        merged[name] = Sharded(name, parts, axis)
    return merged


def read_meta(directory: Path, vocab_size: int | None) -> tuple[ModelConfig, Mapping[str, Tensor], list[str]]:
    params = read_json(directory / "params.json")
    config, notes = config_from_params(params, str(directory / "params.json"), vocab_size, directory.name)
    files = shard_files(directory)
    shards = [read_pth(f) for f in files]
    for f, s in zip(files, shards):
        if s.keys() != shards[0].keys():
            raise LlamachatError(f"{f}: holds other tensors than {files[0].name}")
    try:
        tensors = merge_shards(shards, config)
    except ValueError as e:  # shards that do not concatenate
        raise LlamachatError(f"{directory}: the {len(files)} shards do not fit together: {e}") from None
    rope = llama3_rope(params)
    if rope is not None:  # Llama-3.1 and later
        tensors["rope_freqs"] = llama3_divisors(config.head_dim, config.rope_theta, rope)
    else:
        tensors.pop("rope.freqs", None)  # a buffer Meta saves and never loads
    try:
        config = with_tied(config, tensors, META)
        weights = to_canonical(tensors, config, META, str(directory), hf_qk=False)
    except LlamachatError as e:
        raise LlamachatError(f"{e} ({len(files)} shard{'s' * (len(files) > 1)} read)") from None
    return config, ShardedWeights(weights) if len(files) > 1 else weights, notes
