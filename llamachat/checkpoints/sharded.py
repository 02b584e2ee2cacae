"""Model-parallel shards held as one weight, merged only when read whole, sliced without merging.

Meta's `consolidated.NN.pth` each hold a slice of every matrix (fairscale's column-parallel layers cut
by rows, row-parallel ones by columns) and a copy of every norm. A `Sharded` weight keeps the shards'
memory-mapped arrays and the axis they were cut along. Read whole (`ShardedWeights[name]`) it is
concatenated then, a fresh copy the checkpoint does not keep, so a one-process chat holds only the
backend's own copy. `weight_part` cuts a slice out of any weight without converting or copying the
rest: from a Sharded one it reads only the shards the slice overlaps (a view of one file's pages when
the slice lies inside one shard, as a tensor-parallel rank's does when its split is the files'), and
`touched` records which shards' data a read used: the proof that rank r read only its own file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ..protocols import QuantizedTensor, Tensor
from ..quantize import bf16_tensor

Key = tuple[slice, ...]  # basic slices, one an axis (missing axes: whole)


@dataclass
class Sharded:
    """One weight cut into `parts` along `axis` (None: every part is a whole copy, as Meta's norms)."""

    name: str
    parts: list[np.ndarray]
    axis: int | None
    touched: set[int] = field(default_factory=set)  # the parts whose data was read

    def __post_init__(self) -> None:
        """ValueError naming the tensor when the parts do not fit together."""
        shapes = [p.shape for p in self.parts]
        if len({p.dtype for p in self.parts}) > 1:
            raise ValueError(f"{self.name} is stored as {', '.join(str(p.dtype) for p in self.parts)} in the shards")
        others = {tuple(n for a, n in enumerate(s) if a != self.axis) for s in shapes}
        if len({len(s) for s in shapes}) > 1 or len(others) > 1:
            cut = "copies" if self.axis is None else f"cut along axis {self.axis}"
            raise ValueError(f"{self.name} has shapes {' and '.join(str(list(s)) for s in shapes)} in the shards, which are not {cut}")

    @property
    def bf16(self) -> bool:
        return self.parts[0].dtype == np.uint16  # raw bfloat16 bits (quantize.bf16_tensor)

    @property
    def shape(self) -> tuple[int, ...]:
        shape = list(self.parts[0].shape)
        if self.axis is not None:
            shape[self.axis] = sum(p.shape[self.axis] for p in self.parts)
        return tuple(shape)

    @property
    def ndim(self) -> int:
        return self.parts[0].ndim

    @property
    def bounds(self) -> list[tuple[int, int]]:
        """[start, end) of each part along the axis."""
        ends = np.cumsum([p.shape[self.axis] for p in self.parts]).tolist() if self.axis is not None else []
        return list(zip([0, *ends[:-1]], ends))

    def _wrap(self, raw: np.ndarray) -> Tensor:
        return bf16_tensor(raw) if self.bf16 else raw

    def merged(self) -> Tensor:
        """The whole weight (a new array: every part is read)."""
        self.touched.update(range(len(self.parts)))
        if self.axis is None:
            return self._wrap(self.parts[0])
        return self._wrap(np.concatenate(self.parts, axis=self.axis))

    def part(self, key: Key, replica: int = 0) -> Tensor:
        """weight[key], reading only the parts it overlaps; a copy is `replica`'s part (mod their number)."""
        if self.axis is None:
            i = replica % len(self.parts)
            self.touched.add(i)
            return self._wrap(self.parts[i][key])
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        start, stop, step = key[self.axis].indices(self.shape[self.axis])
        assert step == 1, "only contiguous slices"
        pieces = []
        for i, (a, b) in enumerate(self.bounds):
            lo, hi = max(start, a), min(stop, b)
            if lo < hi:
                self.touched.add(i)
                local = list(key)
                local[self.axis] = slice(lo - a, hi - a)
                pieces.append(self.parts[i][tuple(local)])
        if len(pieces) == 1:  # inside one shard: a view of its pages
            return self._wrap(pieces[0])
        if not pieces:  # an empty slice
            return self._wrap(self.parts[0][tuple(slice(0, 0) if a == self.axis else k for a, k in enumerate(key))])
        return self._wrap(np.concatenate(pieces, axis=self.axis))


class ShardedWeights(Mapping[str, Tensor]):
    """Canonical weights some of which are `Sharded`: reading one whole merges it (not kept; `merges`
    counts them), `part` slices it."""

    def __init__(self, tensors: Mapping[str, Tensor | Sharded]):
        self.tensors = dict(tensors)
        self.merges = 0

    def __getitem__(self, name: str) -> Tensor:
        t = self.tensors[name]
        if isinstance(t, Sharded):
            self.merges += 1
            return t.merged()
        return t

    def __contains__(self, name: object) -> bool:  # Mapping's own would merge the weight to answer
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def split_axis(self, name: str) -> int | None:
        """The axis the files cut weight `name` along (None: not cut, or copies)."""
        t = self.tensors[name]
        return t.axis if isinstance(t, Sharded) else None

    def shards_read(self) -> set[int]:
        """Which shards' tensor data has been read so far (the pickles and zip directories aside)."""
        return set().union(*(t.touched for t in self.tensors.values() if isinstance(t, Sharded)))


def tensor_part(t: Tensor, key: Key) -> Tensor:
    """t[key] without converting the rest: a view of a dense array or of bfloat16 bits, packed rows
    of a quantized weight (its blocks and groups never cross a row), and for columns of a packed
    weight its rows dequantized a block at a time (a float32 array of the slice only)."""
    if not isinstance(t, QuantizedTensor):
        return t[key]
    if t.scheme == "bf16":
        return bf16_tensor(t.data[key])
    rows = key[0] if key else slice(None)
    start, stop, _ = rows.indices(t.shape[0])
    packed = replace(
        t,
        shape=(stop - start, *t.shape[1:]),
        data=t.data[start:stop],
        scales=None if t.scales is None else t.scales[start:stop],
        biases=None if t.biases is None else t.biases[start:stop],
    )
    if all(k == slice(None) for k in key[1:]):
        return packed
    step = max(1, (1 << 22) // max(1, t.shape[-1]))  # a few million elements at a time
    blocks = [tensor_part(packed, (slice(r, r + step),)).dequantize()[(slice(None), *key[1:])] for r in range(0, stop - start, step)]
    return np.concatenate(blocks) if blocks else packed.dequantize()[(slice(None), *key[1:])]


def weight_part(weights: Mapping[str, Tensor], name: str, key: Key, replica: int = 0) -> Tensor:
    """weights[name][key] without materialising the whole weight (see module docstring); `replica`
    picks whose copy of a replicated weight is read (a rank reads its own shard's)."""
    if isinstance(weights, ShardedWeights) and isinstance(weights.tensors[name], Sharded):
        return weights.tensors[name].part(key, replica)
    return tensor_part(weights[name], key)
