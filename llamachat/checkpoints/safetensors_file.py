"""safetensors files, memory-mapped: an 8-byte header length, a JSON header, raw little-endian data.

The `safetensors` package is the oracle the reader and the writer are tested against; it is not used
because its numpy loader copies every tensor and refuses bfloat16, the dtype
most LLaMA checkpoints are stored in. Here a tensor is a view of the file (bfloat16 ones handed over
as `bf16` QuantizedTensors of their raw bits).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import LlamachatError
from ..protocols import QuantizedTensor, Tensor
from ..quantize import bf16_tensor

DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,
    "F64": np.float64,
    "U32": np.uint32,
    "I32": np.int32,
    "U8": np.uint8,
    "I8": np.int8,
}


def read_safetensors(path: Path) -> dict[str, Tensor]:
    """Every tensor of one .safetensors file, as zero-copy views of its memory map."""
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise LlamachatError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        (n,) = struct.unpack_from("<Q", buf, 0)
        header = json.loads(bytes(buf[8 : 8 + n]))
    except (struct.error, ValueError):
        raise LlamachatError(f"{path}: not a safetensors file (unreadable header)") from None
    start = 8 + n
    tensors: dict[str, Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise LlamachatError(
                f"{path}: tensor {name} is {info.get('dtype')}, which llamachat does not read (supported: {', '.join(DTYPES)})"
            )
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * np.dtype(dtype).itemsize or start + end > len(buf):
            raise LlamachatError(f"{path}: tensor {name} does not fit its shape {list(shape)} (truncated or corrupt file)")
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=start + begin).reshape(shape)
        tensors[name] = bf16_tensor(arr) if info["dtype"] == "BF16" else arr
    return tensors


_WRITE_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.uint32): "U32",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
}


def write_safetensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a .safetensors file one tensor at a time (bfloat16 ones from their raw bits), so a large
    model is never held in memory twice. The caller makes the write atomic."""
    entries, offset = {}, 0
    for name, t in tensors.items():
        if isinstance(t, QuantizedTensor):
            assert t.scheme == "bf16", t.scheme
            dtype, nbytes = "BF16", t.data.nbytes
        else:
            dtype, nbytes = _WRITE_DTYPES[np.dtype(t.dtype)], t.nbytes
        entries[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        entries["__metadata__"] = metadata
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for t in tensors.values():
            data = t.data if isinstance(t, QuantizedTensor) else t
            f.write(np.ascontiguousarray(data).data)  # no copy: a memory-mapped tensor goes straight to the file
        f.flush()
        os.fsync(f.fileno())
