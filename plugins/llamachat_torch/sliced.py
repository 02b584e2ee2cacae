"""Float32 Linear layers on the CPU, cut into one slice per thread and multiplied as one batch.

MKL's float32 matrix-vector product runs on one thread on this project's CPU (the 121 products of a
decode step took as long with MKL_NUM_THREADS=1 as with 2), so half the cores sat idle while a token
was decoded. `torch.bmm` hands each thread its own slice: the slices are cut along the outputs, so
the product is the slices' results side by side, and each row's dot product is the one `F.linear`
computes. Measured on the default model with 2 threads, one process, two models alternating
(10 x 12 tokens, medians): 44.3 -> 36.4 ms a token (1.22x); 58.7 -> 45.4 in a slower hour. In
bfloat16 the batched product is ~10x slower than `F.linear`, so only float32 on the CPU is sliced.
"""

from __future__ import annotations

import torch


class SlicedLinear:
    """y = x @ W.T for W [out, in], held as `parts` slices of its rows, a [parts, in, out/parts] view
    whose memory is [parts, in, out/parts] when out >= in, else [parts, out/parts, in] (the order MKL
    multiplies fastest for each shape: gate/up [3072, 576] 9.2 ms against 11.4 for 30 layers, down
    [576, 1536] 5.2 against 7.3)."""

    def __init__(self, w: torch.Tensor, parts: int):
        out, n_in = w.shape
        self.parts = parts if out % parts == 0 else 1
        rows = w.reshape(self.parts, out // self.parts, n_in)  # slice p: the p-th run of out/parts rows
        self.weight = rows.contiguous().transpose(1, 2) if out < n_in else rows.transpose(1, 2).contiguous()
        self.nbytes = self.weight.nbytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] -> [T, out] (for T = 1 a view of the batch's result, no copy)."""
        T, n_in = x.shape
        return torch.bmm(x.expand(self.parts, T, n_in), self.weight).transpose(0, 1).reshape(T, -1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of W, [len(ids), in]: a tied embedding looked up in its head."""
        n = self.weight.shape[2]
        return self.weight[ids // n, :, ids % n]
