"""The NumPy backend's matrix products, `x @ w.T`, with faster ways for a few rows (lookup's passes).

One row (a decode step) is a matrix-vector product on the weight's memory order (`stored()` in
model.py). Two or three rows (a lookup pass of one or two drafts) are that many matrix-vector
products, one after the other: the first streams the weight from memory, the next find it in the
last-level cache (every matrix but the head is 1.3-7 MB, against 32 MiB of L3). On the AMD EPYC kind
(OpenBLAS's Haswell kernels) a whole 2-token forward pass costs 1.5x one token against 2.3x with the
blocks below, 3 tokens 1.7x against 2.7x (benchmarks/numpy_pass_ab.py; docs/benchmarks.md,
2026-12-06). Where the cache does not help they cost what that many decode steps do: on the Sapphire
Rapids kind, where they were not measured, a 3-token pass could then cost 3x one token, a little
more than the blocks' 2.9x there.

Four to FEW_ROWS rows (longer drafts) would be a GEMM, and OpenBLAS 0.3.31 (SkylakeX kernels, on the
Sapphire Rapids kind) multiplies 5 rows by a whole weight matrix 4-7x slower than one row: its GEMM
path packs the big matrix on every call and splits it over threads, which a handful of rows never
pays back. Cut into blocks, each block's product runs on OpenBLAS's small-matrix path straight from
the weight's memory, read once for all the rows: 5 rows cost 1.2-2x one row instead of 4-7x
(docs/benchmarks.md, Issue 19). The blocks follow the memory order, so that each is contiguous:
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

# Up to this many rows multiply as matrix-vector products. On the EPYC kind they beat the blocks up to
# 9 rows (whole passes: 5 tokens 2.50x one token against 3.13x, 9 tokens 3.74x against 4.06x), but the
# blocks were chosen on the Sapphire Rapids kind (3.05x at 5) where vector products were never timed,
# and lookup's defaults check at most one draft.
VECTOR_ROWS = 3
CHUNK_BYTES = 8 << 20  # the vector products walk a weight in chunks this big (a quarter of the L3)
FEW_ROWS = 16  # up to this many rows (lookup's 1 + 16 drafts at most) go through blocks (above VECTOR_ROWS)
ROW_BLOCK = 64  # rows of a contiguous [out, in] w a block: 5 x 64 x 576 fits OpenBLAS's small path
IN_BLOCK = 16  # inputs a block of an [in, out]-ordered w (gate/up 3072 x 576: 16 and 32 best of 16-64)


class Products:
    """`products(x, w)` = x @ w.T for x [T, in] and w [out, in] (float32), on `threads` threads."""

    def __init__(self, threads: int):
        self.pool = ThreadPoolExecutor(1) if threads > 1 else None

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        T = len(x)
        if 1 < T <= FEW_ROWS and isinstance(w, np.ndarray):  # anything else multiplies as it defines @
            if T <= VECTOR_ROWS:
                return vector_products(x, w)
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


def vector_products(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T as one matrix-vector product per row of x, chunk by chunk of w's rows, so that the
    rows after the first find the chunk in the cache (the head, 113 MB, would not fit whole). For a w
    stored [in, out] a chunk is a strided strip of columns of that array, which BLAS's gemv takes as
    it is. Each product runs on OpenBLAS's own threads (the blocks' two halves are not needed)."""
    out = np.empty((len(x), len(w)), np.result_type(x, w))  # [T, out], the dtype x @ w.T would have
    step = max(1, CHUNK_BYTES // (w.shape[1] * w.itemsize))
    for start in range(0, len(w), step):
        chunk = w[start : start + step]
        for row, y in zip(x, out):
            np.matmul(chunk, row, out=y[start : start + step])
    return out


def blas_threads() -> int:
    """The threads NumPy's BLAS runs on (the backend's `threads` option sets them)."""
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)
