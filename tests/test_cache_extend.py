"""The Ctrl-C rule, broken on purpose: a forward pass that raises part-way (after it has written some
new keys and values) leaves the cache's length and saved state as they were, on every backend, and the
cache goes on as if the interrupted call had never happened. The rule is one code path,
`CacheLength.extend`; this test fails when that commits the length on the way out of an exception."""

from __future__ import annotations

import numpy as np
import pytest

import llamachat

IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889]
OPTIONS = {"numpy": {}, "numpy-plain": {"plain": True}, "torch": {"device": "cpu"}, "mlx": {"device": "cpu"}}


class Explodes:
    """Stands in for the last layer's down projection: whichever way a backend multiplies by it
    (`x @ w.T` in NumPy, plain or fast; a call in torch and MLX), it raises Ctrl-C's KeyboardInterrupt."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    @property
    def T(self):
        raise KeyboardInterrupt

    def __call__(self, x):
        raise KeyboardInterrupt


def swap_last_down_projection(runner, backend: str, replacement=None):
    """Puts `replacement` (default: an Explodes) in place of the last layer's down projection; returns the original."""
    layer = runner.layers[-1]
    if backend == "numpy":
        original = layer.wdown
        layer.wdown = Explodes(original.shape) if replacement is None else replacement
    else:
        key = {"numpy-plain": "ffn_down", "torch": "wdown", "mlx": "ffn_down"}[backend]
        original = layer[key]
        layer[key] = Explodes(()) if replacement is None else replacement  # called, never asked its shape
    return original


@pytest.mark.parametrize("backend", sorted(OPTIONS))
@pytest.mark.parametrize("new", [1, 5], ids=["decode", "chunk"])
def test_a_forward_interrupted_inside_leaves_the_cache_as_before(tiny_gguf, backend, new):
    runner = llamachat.load(tiny_gguf[2], backend.partition("-")[0], **OPTIONS[backend]).runner
    untouched = runner.new_cache(32)
    runner.forward(IDS[:6], untouched)
    expected = runner.forward(IDS[6:9], untouched, all_logits=True)

    cache = runner.new_cache(32)
    runner.forward(IDS[:6], cache)
    before = cache.state()
    original = swap_last_down_projection(runner, backend)
    with pytest.raises(KeyboardInterrupt):
        runner.forward([999] * new, cache)  # layer 0 wrote its keys and values at 6:6+new, then Ctrl-C
    swap_last_down_projection(runner, backend, original)

    assert len(cache) == 6
    after = cache.state()
    assert all(np.array_equal(before[name], after[name]) for name in ("k", "v"))
    np.testing.assert_allclose(runner.forward(IDS[6:9], cache, all_logits=True), expected, atol=1e-5)
    assert len(cache) == 9
