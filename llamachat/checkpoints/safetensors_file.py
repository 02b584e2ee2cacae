"""safetensors files, memory-mapped: an 8-byte header length, a JSON header, raw little-endian data.

The `safetensors` package writes them (convert) and is the oracle the reader is tested against; it
is not used to read because its numpy loader copies every tensor and refuses bfloat16, the dtype
most LLaMA checkpoints are stored in. Here a tensor is a view of the file (bfloat16 ones handed over
as `bf16` QuantizedTensors of their raw bits).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np

from ..errors import LlamachatError
from ..protocols import Tensor
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


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write with the `safetensors` package (the format's owner); the caller makes it atomic."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
