"""Packed number formats that are not GGUF blocks: bfloat16 and MLX's affine quantization.

MLX affine (mlx `python/src/ops.cpp`, `mlx/ops.cpp` `affine_quantize`): a row is cut into groups of
`group_size` consecutive elements; each group has a scale s and a bias b and element i is
`w_i = s * q_i + b` with q_i an unsigned `bits`-bit code. Codes are packed into uint32 words from the
least significant bits up (for 4 bits, element 0 is bits 0-3 of word 0); for 3, 5 and 6 bits the row
is one little-endian bit stream. Weight [O, I] -> data uint32 [O, I * bits / 32], scales and biases
[O, I / group_size].

GGUF's block formats are decoded by the `gguf` package (see checkpoints/gguf.py); GGUF's Q4_0, Q4_1
and Q8_0 are affine formats too, and `gguf_to_affine` re-packs them for MLX without requantizing.
"""

from __future__ import annotations

import numpy as np

from .protocols import QuantizedTensor

AFFINE_BITS = (2, 3, 4, 5, 6, 8)
AFFINE_GROUP_SIZES = (32, 64, 128)

# -------------------------------------------------------------------------------------------------
# bfloat16: the top half of a float32, which numpy has no type for


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns held as uint16 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def bf16_tensor(raw: np.ndarray) -> QuantizedTensor:
    """A bfloat16 array (uint16 bit patterns) handed over as it is stored: 2 bytes a weight."""
    raw = raw.view(np.uint16)
    return QuantizedTensor("bf16", tuple(raw.shape), 16, 1, raw, dequantizer=lambda q: bf16_to_float32(q.data))


# -------------------------------------------------------------------------------------------------
# MLX affine


def affine_tensor(data: np.ndarray, scales: np.ndarray, biases: np.ndarray, bits: int, group_size: int) -> QuantizedTensor:
    """A packed MLX weight; its logical shape follows from the packed one."""
    if bits not in AFFINE_BITS:
        raise ValueError(f"{bits}-bit affine weights are not supported (supported: {', '.join(map(str, AFFINE_BITS))})")
    shape = (*data.shape[:-1], data.shape[-1] * 32 // bits)
    if scales.shape != biases.shape or scales.shape != (*shape[:-1], shape[-1] // group_size):
        raise ValueError(
            f"scales {list(scales.shape)} / biases {list(biases.shape)} do not fit a {list(shape)} weight in groups of {group_size}"
        )
    return QuantizedTensor("affine", shape, bits, group_size, data, scales, biases, dequantizer=dequantize_affine)


def scale_floats(a: np.ndarray) -> np.ndarray:
    """Scales or biases as float32: they are stored in the model's precision, bfloat16 as uint16 bits."""
    return bf16_to_float32(a) if a.dtype == np.uint16 else a.astype(np.float32)


def unpack_codes(data: np.ndarray, bits: int) -> np.ndarray:
    """The unsigned codes of uint32-packed rows, uint8, one per element."""
    words = np.ascontiguousarray(data, dtype=np.uint32)
    if 32 % bits == 0:  # whole codes per word: shift and mask
        shifts = np.arange(0, 32, bits, dtype=np.uint32)
        codes = (words[..., None] >> shifts) & np.uint32((1 << bits) - 1)
        return codes.reshape(*words.shape[:-1], -1).astype(np.uint8)
    stream = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")  # little-endian bit stream
    stream = stream.reshape(*words.shape[:-1], -1, bits)
    return (stream * (1 << np.arange(bits, dtype=np.uint8))).sum(-1, dtype=np.uint8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `unpack_codes`: uint32 words, rows packed LSB first."""
    codes = codes.astype(np.uint32)
    if 32 % bits == 0:
        per_word = 32 // bits
        grouped = codes.reshape(*codes.shape[:-1], -1, per_word) << np.arange(0, 32, bits, dtype=np.uint32)
        return np.bitwise_or.reduce(grouped, axis=-1).astype(np.uint32)
    bit_planes = (codes[..., None] >> np.arange(bits, dtype=np.uint32)) & 1
    packed = np.packbits(bit_planes.astype(np.uint8).reshape(*codes.shape[:-1], -1), axis=-1, bitorder="little")
    return packed.view(np.uint32)


def dequantize_affine(q: QuantizedTensor) -> np.ndarray:
    assert q.scales is not None and q.biases is not None
    out = np.empty(q.shape, dtype=np.float32)
    rows = out.reshape(-1, q.shape[-1])
    data = q.data.reshape(-1, q.data.shape[-1])
    scales, biases = q.scales.reshape(len(rows), -1), q.biases.reshape(len(rows), -1)
    step = max(1, (1 << 24) // q.shape[-1])  # a few million elements at a time
    for r in range(0, len(rows), step):
        codes = unpack_codes(data[r : r + step], q.bits).reshape(-1, scales.shape[-1], q.group_size)
        s, b = scale_floats(scales[r : r + step])[..., None], scale_floats(biases[r : r + step])[..., None]
        rows[r : r + step] = (codes * s + b).reshape(-1, q.shape[-1])
    return out


def quantize_affine(w: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, scales, biases) of `w` (float32 [..., I]) in MLX's layout; scales/biases float32.

    Min-max per group, as MLX does: s = (max - min) / (2^bits - 1), b = min, q = round((w - b) / s).
    (MLX additionally nudges the grid so that 0 is exact; either grid dequantizes the same way.)
    """
    if bits not in AFFINE_BITS or group_size not in AFFINE_GROUP_SIZES:
        raise ValueError(f"affine quantization takes bits in {AFFINE_BITS} and group sizes {AFFINE_GROUP_SIZES}")
    if w.shape[-1] % group_size:
        raise ValueError(f"rows of {w.shape[-1]} are not whole groups of {group_size}")
    groups = w.astype(np.float32).reshape(*w.shape[:-1], -1, group_size)
    lo, hi = groups.min(-1, keepdims=True), groups.max(-1, keepdims=True)
    scales = np.maximum((hi - lo) / ((1 << bits) - 1), 1e-12).astype(np.float32)
    codes = np.clip(np.rint((groups - lo) / scales), 0, (1 << bits) - 1).astype(np.uint8)
    return pack_codes(codes.reshape(w.shape), bits), scales[..., 0], lo[..., 0]


# -------------------------------------------------------------------------------------------------
# GGUF blocks that are affine already


def gguf_to_affine(q: QuantizedTensor) -> QuantizedTensor:
    """GGUF Q4_0, Q4_1 or Q8_0 as MLX affine with group 32, the same values bit for bit.

    Q4_1 is `d * n + m`; Q4_0 is `d * (n - 8)`, i.e. scale d and bias -8d; Q8_0 is `d * c` with a
    signed byte c, i.e. code c + 128, scale d and bias -128d. GGUF puts elements j and j + 16 of a
    block in the low and high nibble of byte j; MLX wants consecutive nibbles, hence the re-pack.
    Scales and biases are float32 so that no rounding is added.
    """
    kind = q.scheme.removeprefix("gguf:")
    rows = q.data.reshape(-1, q.data.shape[-1])
    n_blocks = q.shape[-1] // 32
    if kind in ("Q4_0", "Q4_1"):
        head = 2 if kind == "Q4_0" else 4
        blocks = rows.reshape(len(rows), n_blocks, head + 16)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32) if kind == "Q4_1" else -8 * d
        qs = blocks[..., head:]
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # elements 0..15, then 16..31
        bits = 4
    elif kind == "Q8_0":
        blocks = rows.reshape(len(rows), n_blocks, 34)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = -128 * d
        codes = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        bits = 8
    else:
        raise ValueError(f"GGUF {kind} has no affine equivalent (Q4_0, Q4_1 and Q8_0 do)")
    data = pack_codes(codes.reshape(len(rows), -1), bits).reshape(*q.shape[:-1], -1)
    shape_groups = (*q.shape[:-1], n_blocks)
    return affine_tensor(data, d.reshape(shape_groups), m.reshape(shape_groups), bits, 32)
