"""`llamachat convert SRC DST`: any checkpoint llamachat reads, written as mlx-lm, GGUF or HF.

    --to mlx   mlx-lm's layout: config.json (+ `quantization`) and model.safetensors with HF names and
               q/k order; `-q 4|8` packs every Linear and the embedding as MLX affine (nn.quantize's
               choice) in groups of --group-size (default 64). `mlx_lm.load` opens it (and runs a
               Mistral, Qwen2 or Phi-3 sliding window as full attention, as it runs those models'
               own folders: its qwen2 and phi3 have no window, its llama needs a full layer).
    --to gguf  F32/F16/BF16 as the source has them, or with `-q 8|4` Q8_0/Q4_0 (GGUF's own blocks of
               32; norms stay F32 as llama.cpp wants). llamachat and transformers open it.
    --to hf    float safetensors that transformers opens; `-q` is refused.

Without -q the source's dtype is kept: fp32/fp16/bf16 stay, GGUF Q4_0/Q4_1/Q8_0 become MLX affine
(bit-identical, group 32) for --to mlx and stay themselves for --to gguf; other packed weights are
dequantized to --dtype (default fp16). Converted tensors wait in a scratch file beside DST (one
tensor in memory at a time); output goes to a temporary name beside DST, is fsynced, and renamed
only when complete; an interruption removes both.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .checkpoints import Checkpoint, open_checkpoint
from .errors import LlamachatError
from .protocols import ModelConfig, QuantizedTensor, Tensor, as_float32
from .quantize import AFFINE_GROUP_SIZES, bf16_tensor, gguf_to_affine, quantize_affine
from .rope import DIVISOR_WEIGHTS

TARGETS = ("mlx", "gguf", "hf")
DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": "bf16"}
_GGUF_QUANT = {8: "Q8_0", 4: "Q4_0"}
_AFFINE_FROM_GGUF = ("gguf:Q4_0", "gguf:Q4_1", "gguf:Q8_0")


def _dense(t: Tensor, dtype: object) -> Tensor:
    """`t` as a dense float array of `dtype` (bf16 as raw-bit QuantizedTensor)."""
    if dtype == "bf16":
        if isinstance(t, QuantizedTensor) and t.scheme == "bf16":
            return t
        bits = as_float32(t).view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        return bf16_tensor(rounded)
    return as_float32(t).astype(dtype) if not (isinstance(t, np.ndarray) and t.dtype == dtype) else t


def _kept(t: Tensor, fallback: object) -> Tensor:
    """The source's own dense form, or `fallback` dtype for packed weights."""
    if isinstance(t, np.ndarray) or (isinstance(t, QuantizedTensor) and t.scheme == "bf16"):
        return t
    return _dense(t, fallback)


def plan_tensor(t: Tensor, to: str, bits: int | None, group_size: int, dtype: object | None) -> Tensor:
    """What one canonical weight becomes in the target format."""
    if t.ndim == 1 and to == "gguf":  # norms (and rope_freqs) stay float32, as llama.cpp wants them
        return _dense(t, np.float32)
    if bits and t.ndim > 1:
        if to == "mlx":
            if isinstance(t, QuantizedTensor) and t.scheme == "affine" and (t.bits, t.group_size) == (bits, group_size):
                return t
            from .quantize import affine_tensor

            data, scales, biases = quantize_affine(as_float32(t), bits, group_size)
            # scales and biases in the weight's own precision, as nn.quantize leaves them
            scale_dtype = np.float32 if isinstance(t, np.ndarray) and t.dtype == np.float32 else np.float16
            return affine_tensor(data, scales.astype(scale_dtype), biases.astype(scale_dtype), bits, group_size)
        import gguf

        kind = _GGUF_QUANT[bits]
        if isinstance(t, QuantizedTensor) and t.scheme == f"gguf:{kind}":
            return t
        raw = gguf.quants.quantize(as_float32(t), gguf.GGMLQuantizationType[kind])
        return QuantizedTensor(f"gguf:{kind}", tuple(t.shape), bits, 32, raw)
    if dtype is not None:
        return _dense(t, dtype)
    if isinstance(t, QuantizedTensor):
        if to == "mlx" and t.scheme in _AFFINE_FROM_GGUF:
            return gguf_to_affine(t)
        if to == "mlx" and t.scheme == "affine":
            return t
        if to == "gguf" and t.scheme.startswith("gguf:"):
            return t
    return _kept(t, np.float16)


def planned_tensor(name: str, t: Tensor, to: str, bits: int | None, group_size: int, dtype: object | None) -> Tensor:
    """`plan_tensor`, except that RoPE's divisors (rope_freqs, longrope's factors) stay float32 in
    every format, as GGUF keeps them and as config.json's numbers were read."""
    return _dense(t, np.float32) if name in DIVISOR_WEIGHTS else plan_tensor(t, to, bits, group_size, dtype)


def _replace(new: Path, dst: Path) -> None:
    """Put the complete `new` at `dst` (--force: over what is there). The old model stays until then: a
    file is replaced in one rename; a folder is renamed aside, the new one renamed in, and only then
    is the old one deleted (a crash between leaves it beside DST, not lost)."""
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(f".{dst.name}.replaced-{os.getpid()}")
        os.replace(dst, old)
        os.replace(new, dst)
        shutil.rmtree(old)
    else:
        if dst.exists() and new.is_dir():
            dst.unlink()  # a folder cannot be renamed over a file
        os.replace(new, dst)


def _check_writable(dst: Path) -> None:
    """Before any work: DST names something to create, in a directory that exists and can be written."""
    if dst.name in ("", ".", ".."):
        raise LlamachatError(f"DST must name the file or folder to write, got {str(dst)!r}")
    parent = dst.parent
    if not parent.is_dir():
        raise LlamachatError(f"cannot write {dst}: {parent} is not an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LlamachatError(f"cannot write {dst}: {parent} is not writable")


def _quantization(tensors: dict[str, Tensor], config: ModelConfig) -> dict | None:
    """mlx-lm's `quantization` entry: the commonest (bits, group) and per-module exceptions."""
    from .checkpoints.layouts import HF, source_names

    packed = {k: t for k, t in tensors.items() if isinstance(t, QuantizedTensor) and t.scheme == "affine"}
    if not packed:
        return None
    (bits, group), _ = Counter((t.bits, t.group_size) for t in packed.values()).most_common(1)[0]
    names = source_names(config.n_layers, HF)
    quantization: dict = {"group_size": group, "bits": bits, "mode": "affine"}
    for k, t in packed.items():
        if (t.bits, t.group_size) != (bits, group):
            quantization[names[k]] = {"group_size": t.group_size, "bits": t.bits}
    return quantization


def _dtype_name(tensors: dict[str, Tensor]) -> str:
    for t in tensors.values():
        if isinstance(t, np.ndarray) and t.ndim == 2:
            return {np.float32: "float32", np.float16: "float16"}.get(t.dtype.type, "float32")
        if isinstance(t, QuantizedTensor) and t.scheme == "bf16":
            return "bfloat16"
    return "float16"


class Scratch:
    """Converted tensors parked on disk as they are made, so a conversion holds one tensor in memory
    at a time whatever the model's size (a 13B model quantized or cast would not fit otherwise). The
    writers need every tensor's shape and type before the first byte of data, so the tensors are made
    first, written here, and handed to the writer memory-mapped. A tensor the target takes unchanged
    stays the source's own (memory-mapped) array and is not copied."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._parked: dict[str, Tensor | tuple] = {}  # name -> the tensor itself, or where it was parked

    def add(self, name: str, source: Tensor, converted: Tensor) -> None:
        if converted is source:
            self._parked[name] = converted
            return
        if self._file is None:
            self._file = open(self.path, "wb")  # noqa: SIM115  (closed by tensors() or remove())
        if isinstance(converted, QuantizedTensor):
            arrays = {k: getattr(converted, k) for k in ("data", "scales", "biases") if getattr(converted, k) is not None}
            self._parked[name] = (converted, {k: self._park(a) for k, a in arrays.items()})
        else:
            self._parked[name] = self._park(converted)

    def _park(self, a: np.ndarray) -> tuple[int, np.dtype, tuple[int, ...]]:
        a = np.ascontiguousarray(a)
        offset = self._file.tell()
        self._file.write(a.data)
        return offset, a.dtype, a.shape

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor, the parked ones memory-mapped read-only from the scratch file."""
        if self._file is None:
            return dict(self._parked)
        self._file.close()
        buf = np.memmap(self.path, np.uint8, mode="r") if self.path.stat().st_size else np.zeros(0, np.uint8)

        def view(where: tuple) -> np.ndarray:
            offset, dtype, shape = where
            return np.frombuffer(buf, dtype, int(np.prod(shape)), offset).reshape(shape)

        out: dict[str, Tensor] = {}
        for name, entry in self._parked.items():
            if isinstance(entry, tuple) and isinstance(entry[0], QuantizedTensor):
                out[name] = dataclasses.replace(entry[0], **{k: view(w) for k, w in entry[1].items()})
            else:
                out[name] = view(entry) if isinstance(entry, tuple) else entry
        return out

    def remove(self) -> None:
        if self._file is not None:
            self._file.close()
        self.path.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------------
# Writing, atomically


def _write(checkpoint: Checkpoint, tensors: dict[str, Tensor], to: str, out: Path) -> None:
    config = checkpoint.config
    if to == "gguf":
        from .checkpoints.gguf import write_gguf

        write_gguf(out, config, tensors, checkpoint.tokenizer.gguf_fields())
        return
    import json

    from .checkpoints.hf import hf_config, hf_tensors
    from .checkpoints.safetensors_file import write_safetensors

    out.mkdir()
    config_json = hf_config(config, _dtype_name(tensors), _quantization(tensors, config), tensors)
    write_safetensors(out / "model.safetensors", hf_tensors(config, tensors), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_json, indent=2) + "\n", encoding="utf-8")
    checkpoint.tokenizer.save(out)
    if config.chat_template:
        (out / "chat_template.jinja").write_text(config.chat_template, encoding="utf-8")


def _fsync_tree(path: Path) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def convert(
    src: str | Path,
    dst: str | Path,
    to: str,
    bits: int | None = None,
    group_size: int | None = None,
    dtype: str | None = None,
    force: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> Path:
    """Write `src` as `to` at `dst`; returns `dst`. LlamachatError for anything it cannot do."""
    dst = Path(dst).expanduser()
    if to not in TARGETS:
        raise LlamachatError(f"unknown target {to!r} (accepted: {', '.join(TARGETS)})")
    if bits and to == "hf":
        raise LlamachatError("--to hf writes float weights; -q is for --to mlx or --to gguf")
    if bits not in (None, 4, 8):
        raise LlamachatError(f"-q takes 4 or 8, got {bits}")
    if to != "mlx" and group_size is not None:
        raise LlamachatError("--group-size is for --to mlx -q (GGUF Q4_0 and Q8_0 use blocks of 32)")
    group_size = group_size or 64
    if group_size not in AFFINE_GROUP_SIZES:
        raise LlamachatError(f"--group-size takes {', '.join(map(str, AFFINE_GROUP_SIZES))}, got {group_size}")
    if dtype is not None and dtype not in DTYPES:
        raise LlamachatError(f"--dtype takes {', '.join(DTYPES)}, got {dtype!r}")
    if dst.exists() and not force:
        raise LlamachatError(f"{dst} exists; choose another name or pass --force to replace it")
    _check_writable(dst)
    checkpoint = open_checkpoint(src)
    checkpoint.tokenizer  # fail on a bad tokenizer before any work  # noqa: B018
    tmp = dst.with_name(f".{dst.name}.partial-{os.getpid()}")
    scratch = Scratch(dst.with_name(f".{dst.name}.scratch-{os.getpid()}"))
    try:
        for name, t in checkpoint.weights.items():
            try:
                # (no local holds the converted tensor: it must be freed before the next one is made)
                scratch.add(name, t, planned_tensor(name, t, to, bits, group_size, DTYPES.get(dtype) if dtype else None))
            except ValueError as e:
                raise LlamachatError(f"{name}: {e}") from None
            if progress:
                progress(name, len(checkpoint.weights))
        _write(checkpoint, scratch.tensors(), to, tmp)
        _fsync_tree(tmp)
        _replace(tmp, dst)
    except KeyboardInterrupt:
        raise LlamachatError(f"convert interrupted; nothing was written to {dst}") from None
    except OSError as e:  # the disk filled, the directory went read-only mid-way, ...
        raise LlamachatError(f"cannot write {dst}: {e.strerror or e}; nothing was written") from None
    finally:
        scratch.remove()
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return dst
