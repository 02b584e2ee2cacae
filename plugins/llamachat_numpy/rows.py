"""The NumPy backend's matrix products, `x @ w.T`, with a faster way for a few rows (lookup's passes).

One row (a decode step) is a matrix-vector product on the weight's memory order (`stored()` in
model.py). Two to FEW_ROWS rows (a lookup pass: the last token and its drafts) would be a GEMM, and
OpenBLAS 0.3.31 (SkylakeX kernels here) multiplies 5 rows by a whole weight matrix 4-7x slower than
one row: its GEMM path packs the big matrix on every call and splits it over threads, which a
handful of rows never pays back. Cut into blocks, each block's product runs on OpenBLAS's small-matrix
path straight from the weight's memory, read once for all the rows: 5 rows cost 1.2-2x one row
instead of 4-7x (benchmarks/lookup.py --pass-cost; docs/benchmarks.md, Issue 19). The blocks follow
the memory order, so that each is contiguous:
- w contiguous [out, in]: blocks of ROW_BLOCK rows of w, results side by side (the same dot products);
- w stored as a contiguous [in, out] (its transpose): blocks of IN_BLOCK inputs, partial products
  summed (the same terms in another order: float32 rounding differs in the last bits).
The blocks are split between the two halves of the BLAS threads' work (the small path runs on one
thread): this thread takes one half, a worker the other; NumPy releases the GIL while it multiplies.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FEW_ROWS = 16  # up to this many rows (lookup's 1 + 16 drafts at most) go through blocks
ROW_BLOCK = 64  # rows of a contiguous [out, in] w a block: 5 x 64 x 576 fits OpenBLAS's small path
IN_BLOCK = 16  # inputs a block of an [in, out]-ordered w (gate/up 3072 x 576: 16 and 32 best of 16-64)


class Products:
    """`products(x, w)` = x @ w.T for x [T, in] and w [out, in] (float32), on `threads` threads."""

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(1) if threads > 1 else None

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        T = len(x)
        if 1 < T <= FEW_ROWS and isinstance(w, np.ndarray):  # anything else multiplies as it defines @
            if w.flags.c_contiguous and w.shape[0] % ROW_BLOCK == 0:
                blocks = w.reshape(-1, ROW_BLOCK, w.shape[1]).transpose(0, 2, 1)  # [out/B, in, B] views of w's rows
                out = np.empty((len(blocks), T, ROW_BLOCK), np.float32)
                self.halves(len(blocks), lambda s: np.matmul(x, blocks[s], out=out[s]))  # [out/B, T, B]
                return out.transpose(1, 0, 2).reshape(T, -1)  # [T, out]
            if w.T.flags.c_contiguous and w.shape[1] % IN_BLOCK == 0:
                blocks = w.T.reshape(-1, IN_BLOCK, w.shape[0])  # [in/B, B, out], contiguous
                xs = x.reshape(T, -1, IN_BLOCK).transpose(1, 0, 2)  # [in/B, T, B]
                return sum(self.halves(len(blocks), lambda s: np.matmul(xs[s], blocks[s]).sum(axis=0)))  # [T, out]
        return x @ w.T

    def halves(self, n: int, part: Callable[[slice], np.ndarray]) -> list[np.ndarray]:
        """part(slice) over 0..n in two halves, the second on the worker thread (if any)."""
        if self.pool is None:
            return [part(slice(0, n))]
        other = self.pool.submit(part, slice(n // 2, n))
        return [part(slice(0, n // 2)), other.result()]


def blas_threads() -> int:
    """The threads NumPy's BLAS runs on (the backend's `threads` option sets them)."""
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)
