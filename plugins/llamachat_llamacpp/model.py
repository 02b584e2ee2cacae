"""A GGUF file on llama.cpp's engine, behind llamachat's Runner protocol: ids in, float32 logits out.

llama.cpp owns the weights (memory-mapped from the file as they are: any type it supports) and the
KV cache; llamachat keeps its tokenizer, templates and sampler chain. Each cache is its own
`llama_context` holding one sequence (id 0), so the chat's cache, the REPL's warm-up, `Model.logits`
and bench can be alive at once without sharing cells; a context allocates its KV buffer for its
capacity when it is made, which is why `context` caps a cache's capacity.

    forward(ids, cache):  ids -> llama_batch of n_batch tokens at positions len(cache)... ->
                          llama_decode -> logits [n or 1, vocab] copied out of llama.cpp's buffer
"""

from __future__ import annotations

import ctypes
import os
import weakref
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from llamachat.errors import LlamachatError
from llamachat.protocols import CacheLength, ModelConfig

from . import library
from .interrupt import NEVER_RAISED, abortable

N_BATCH = 512  # tokens per llama_decode call (llama.cpp's default ubatch, and Llama()'s n_batch)
SEQ = 0  # every context holds one sequence
BLOB = "blob"  # the key of an opaque saved state (see LlamaCppCache.state)


class LlamaCppModel:
    """The Runner: one llama_model, and a llama_context per cache."""

    def __init__(self, config: ModelConfig, path: Path, *, threads: int, gpu_layers: int, context: int):
        self.config, self.path = config, path
        self.threads, self.max_context = threads, context
        self.lib = lib = library.library()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        library.clear_errors()
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise LlamachatError(f"{path}: llama.cpp cannot load it ({library.first_error('no reason given')})")
        self.model = model
        self._free = weakref.finalize(self, lib.llama_model_free, model)
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        if self.n_vocab != config.vocab_size:
            raise LlamachatError(f"{path}: llama.cpp reads {self.n_vocab} tokens, llamachat {config.vocab_size}; not the same model")
        self.weight_bytes = int(lib.llama_model_size(model))
        self.dtype = _describe(lib, model)
        self.engine = library.version()

    def new_cache(self, capacity: int | None = None) -> LlamaCppCache:
        capacity = min(capacity or self.config.context_length, self.max_context)
        return LlamaCppCache(self, capacity)

    def forward(self, ids: Sequence[int], cache: LlamaCppCache, all_logits: bool = False) -> np.ndarray:
        """Evaluate `ids` after the cache's tokens: (vocab,) logits for the last, or (len(ids), vocab)."""
        ids = np.asarray(ids, dtype=np.int32).reshape(-1)
        if not len(ids):
            raise ValueError("nothing to evaluate: no token ids")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.n_vocab - 1}, got {int(ids.min() if ids.min() < 0 else ids.max())}")
        start, end = cache.span(len(ids))
        out = np.empty((len(ids), self.n_vocab), dtype=np.float32) if all_logits else None
        try:
            with abortable(self.lib, cache.ctx) if len(ids) > 1 else nullcontext(NEVER_RAISED) as flag:
                for at in range(0, len(ids), N_BATCH):
                    chunk = ids[at : at + N_BATCH]
                    if flag.raised:
                        raise KeyboardInterrupt
                    cache.decode(chunk, start + at, all_logits or at + len(chunk) == len(ids), all_logits)
                    if out is not None:
                        out[at : at + len(chunk)] = cache.logits(len(chunk))
            last = out[-1] if out is not None else cache.logits(1)[0].copy()
        except BaseException:
            # an interrupted or failed call leaves the cache as it was: drop what llama.cpp kept
            self.lib.llama_memory_seq_rm(cache.memory, SEQ, start, -1)
            raise
        cache.length = end
        return out if out is not None else last


class LlamaCppCache(CacheLength):
    """One llama_context: llama.cpp's KV cells for one sequence, `length` of them the conversation's."""

    def __init__(self, runner: LlamaCppModel, capacity: int):
        self.runner, self.capacity, self.length = runner, capacity, 0  # the runner (its model) outlives the context
        lib = self.lib = runner.lib
        params = lib.llama_context_default_params()
        params.n_ctx = capacity
        params.n_batch = params.n_ubatch = min(N_BATCH, capacity)
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = runner.threads
        params.no_perf = True
        library.clear_errors()
        ctx = lib.llama_init_from_model(runner.model, params)
        if not ctx:
            raise LlamachatError(f"llama.cpp cannot make a context of {capacity} tokens ({library.first_error('no reason given')})")
        self.ctx, self.memory = ctx, lib.llama_get_memory(ctx)
        self.batch = lib.llama_batch_init(params.n_batch, 0, 1)
        self._free = weakref.finalize(self, _free_context, lib, ctx, self.batch)
        n = params.n_batch
        self._tokens = np.ctypeslib.as_array(self.batch.token, shape=(n,))
        self._pos = np.ctypeslib.as_array(self.batch.pos, shape=(n,))
        self._want = np.ctypeslib.as_array(self.batch.logits, shape=(n,))
        np.ctypeslib.as_array(self.batch.n_seq_id, shape=(n,))[:] = 1
        for i in range(n):
            self.batch.seq_id[i][0] = SEQ

    def decode(self, ids: np.ndarray, start: int, want_logits: bool, all_rows: bool) -> None:
        """One llama_decode of up to n_batch ids at positions start...: logits for every id
        (`all_rows`), for the last one (`want_logits`), or none."""
        n = len(ids)
        self._tokens[:n], self._pos[:n] = ids, np.arange(start, start + n)
        self._want[:n] = 1 if all_rows else 0
        self._want[n - 1] = 1 if want_logits else 0
        self.batch.n_tokens = n
        library.clear_errors()
        rc = self.lib.llama_decode(self.ctx, self.batch)
        if rc == 2:
            raise KeyboardInterrupt
        if rc != 0:
            raise LlamachatError(
                f"llama.cpp could not evaluate {n} tokens (llama_decode returned {rc}: {library.first_error('no reason given')})"
            )

    def logits(self, rows: int) -> np.ndarray:
        """The last call's logits, (rows, vocab): a view of llama.cpp's buffer, valid until the next call."""
        vocab = self.runner.n_vocab
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx), shape=(rows, vocab))

    def truncate(self, n: int) -> None:
        super().truncate(n)
        self.lib.llama_memory_seq_rm(self.memory, SEQ, n, -1)

    def state(self) -> dict[str, np.ndarray]:
        """The opaque state: llama.cpp's own serialisation of this sequence's cells (uint8), which
        only llama.cpp on the same model reads back (the session's fingerprint checks that)."""
        size = self.lib.llama_state_seq_get_size(self.ctx, SEQ)
        blob = np.empty(size, dtype=np.uint8)
        written = self.lib.llama_state_seq_get_data(self.ctx, _bytes(blob), size, SEQ)
        return {BLOB: blob[:written]}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if set(state) != {BLOB}:
            raise ValueError("the saved cache is not llama.cpp's (the llamacpp backend reads only its own)")
        blob = np.ascontiguousarray(state[BLOB], dtype=np.uint8)
        self.truncate(0)
        library.clear_errors()
        if not self.lib.llama_state_seq_set_data(self.ctx, _bytes(blob), blob.size, SEQ):
            self.truncate(0)
            raise ValueError(f"llama.cpp refused the saved cache ({library.first_error('it does not fit this model')})")
        held = self.lib.llama_memory_seq_pos_max(self.memory, SEQ) + 1
        if held > self.capacity:
            self.truncate(0)
            raise ValueError(f"the saved cache holds {held} tokens, more than this cache's {self.capacity}")
        self.length = held


def _bytes(a: np.ndarray):
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


def _free_context(lib, ctx, batch) -> None:
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)


def _describe(lib, model) -> str:
    """The file's weight type as llama.cpp names it ("Q4_1", "Q4_K - Medium"), from llama_model_desc."""
    buf = ctypes.create_string_buffer(256)
    lib.llama_model_desc(model, buf, len(buf))
    words = buf.value.decode(errors="replace").split(" ", 2)  # "llama 135M Q4_1"; "(guessed) Q5_0" without general.file_type
    return words[2].removeprefix("(guessed) ") if len(words) == 3 else "gguf"


def default_threads() -> int:
    """The cores this process may run on (the chat decodes on all of them, as the other backends do)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
