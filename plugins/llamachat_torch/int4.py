"""Weight-only int4 Linear layers on PyTorch's CPU kernel (`_weight_int4pack_mm_for_cpu`).

The kernel computes x @ W.T with W stored as 4-bit codes q in groups along the input dimension and
W = (q - 8) * scale + zero per group (the tinygemm convention). MLX affine weights, and GGUF Q4_0 and
Q4_1 blocks through `llamachat.quantize.gguf_to_affine`, are that form already (zero = bias + 8 * scale),
so a 4-bit model is used as it was quantized; other weights are quantized here (min-max, group 32).
Activations are bfloat16: the kernel's float32 path is ~12x slower on this project's CPU (measured:
11008x4096 matrix-vector, 4.3 ms bf16 vs 50 ms fp32, fp32 dense 8 ms).
"""

from __future__ import annotations

import numpy as np
import torch

from llamachat.protocols import QuantizedTensor, Tensor, as_float32
from llamachat.quantize import affine_tensor, gguf_to_affine, quantize_affine, scale_floats, unpack_codes

GROUP = 32


def to_affine4(t: Tensor) -> QuantizedTensor:
    """`t` as 4-bit affine codes: as stored when it is 4-bit already, else quantized (group 32)."""
    if isinstance(t, QuantizedTensor) and t.scheme in ("gguf:Q4_0", "gguf:Q4_1"):
        t = gguf_to_affine(t)
    if isinstance(t, QuantizedTensor) and t.scheme == "affine" and t.bits == 4:
        return t
    data, scales, biases = quantize_affine(as_float32(t), 4, GROUP)
    return affine_tensor(data, scales, biases, 4, GROUP)


class Int4Linear:
    """y = x @ W.T for a 4-bit W [out, in] packed for the CPU kernel (rows of several weights may be
    concatenated: they are independent)."""

    def __init__(self, parts: list[Tensor], dtype: torch.dtype = torch.bfloat16):
        quantized = [to_affine4(t) for t in parts]
        groups = {q.group_size for q in quantized}
        if len(groups) != 1:
            raise ValueError(f"fused weights with different group sizes {sorted(groups)}")
        self.group_size = groups.pop()
        codes = torch.from_numpy(np.concatenate([unpack_codes(q.data, 4) for q in quantized]).astype(np.int32))  # [N, K]
        scales = torch.cat([torch.from_numpy(scale_floats(q.scales)) for q in quantized])  # [N, K / group]
        zeros = torch.cat([torch.from_numpy(scale_floats(q.biases)) for q in quantized]) + 8 * scales
        k = codes.shape[1]
        tiles = next(t for t in (8, 4, 2) if k % (16 * t) == 0)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, tiles)
        self.scales_and_zeros = torch.stack([scales, zeros], -1).transpose(0, 1).contiguous().to(dtype)  # [K/group, N, 2]

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] in the dtype the layer was built with (the model's activations are): no reshape
        or cast per call, which at ~3 us each is measurable at decode (4 products x 30 layers a token)."""
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size, self.scales_and_zeros)
