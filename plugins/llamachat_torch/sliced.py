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
    """y = x @ W.T for W [out, in], held as `parts` slices of its rows, [parts, out/parts, in] (W's own
    memory order, cut). A few rows (a decode step, a lookup pass) multiply as W_p @ x.T, the
    matrix-vector form, which streams each weight once whatever the rows; more rows (a prompt) as
    x @ W_p.T, the matrix-matrix form, on the same memory. Where one overtakes the other, measured per
    product (benchmarks/torch_sliced_ab.py, docs/benchmarks.md): up to 5 rows for a tall matrix (out >=
    in), up to 2 for a wide one (the FFN's down). The earlier order ([parts, in, out/parts] for out >=
    in, multiplied x @ W_p) lost to the matrix-vector form on every product of a decode step."""

    def __init__(self, w: torch.Tensor, parts: int):
        out, n_in = w.shape
        self.parts = parts if out % parts == 0 else 1
        self.weight = w.reshape(self.parts, out // self.parts, n_in).contiguous()  # slice p: the p-th run of out/parts rows
        self.vector_rows = 5 if out >= n_in else 2  # the most rows the matrix-vector form takes
        self.nbytes = self.weight.nbytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] -> [T, out] (for T = 1 a view of the batch's result, no copy)."""
        T, n_in = x.shape
        if T > self.vector_rows:
            return torch.bmm(x.expand(self.parts, T, n_in), self.weight.transpose(1, 2)).transpose(0, 1).reshape(T, -1)
        y = torch.bmm(self.weight, x.t().expand(self.parts, n_in, T))  # [parts, out/parts, T]
        return y.reshape(1, -1) if T == 1 else y.reshape(-1, T).t().contiguous()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of W, [len(ids), in]: a tied embedding looked up in its head."""
        n = self.weight.shape[1]
        return self.weight[ids // n, ids % n]
