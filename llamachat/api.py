"""The public Python API: `llamachat.load()` and the `Model` it returns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .backends import AUTO, choose_backend, find_backend, load_runner
from .checkpoints import Checkpoint, open_checkpoint
from .default_model import default_model
from .generate import Stats, generate
from .lookup import default_lookup, parse_lookup
from .protocols import Backend, Cache, Message, ModelConfig, Runner, Template, Tokenizer
from .sampling import DEFAULT_CHAIN, SamplerChain
from .templates import choose_template

# generate() options that are not sampler parameters (every other option is one)
GENERATION_OPTIONS = ("max_tokens", "seed", "system", "chain", "stop_ids", "lookup")


class Model:
    """A checkpoint loaded on a backend, with its tokenizer and chat template.

    (The backend's own object is the `runner`; this wraps it for people.)
    """

    def __init__(
        self,
        path: Path,
        config: ModelConfig,
        tokenizer: Tokenizer,
        template: Template,
        runner: Runner,
        backend: str,
        backend_reason: str = "",
    ):
        self.path, self.config, self.tokenizer, self.template = path, config, tokenizer, template
        self.runner, self.backend = runner, backend
        self.backend_reason = backend_reason  # why `auto` chose this backend ("" when it was named)
        self.last_stats: Stats | None = None

    def with_template(self, template: Template) -> Model:
        """The same loaded model behind another chat template (the runner is shared, not copied)."""
        return Model(self.path, self.config, self.tokenizer, template, self.runner, self.backend, self.backend_reason)

    @cached_property
    def stop_ids(self) -> tuple[int, ...]:
        """Every id that ends a reply (computed once): those the model's files declare (GGUF
        EOS/EOT/EOM and the end-of-turn texts llama.cpp stops at, HF config/generation_config eos
        lists), the tokenizer's, and the template's own end-of-turn tokens."""
        return tuple(dict.fromkeys([*self.config.eot_ids, *self.template.stop_ids(self.tokenizer)]))

    def __repr__(self) -> str:
        return f"<llamachat.Model {self.config.name!r} on {self.backend}, template {self.template.name}>"

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits after each prefix of `ids` (used exactly as given, no BOS added) on a fresh cache:
        float32, shape (len(ids), vocab); row i follows ids[: i + 1]."""
        cache = self.runner.new_cache(len(ids))
        return self.runner.forward(list(ids), cache, all_logits=True)

    def encode_prompt(self, prompt: str | Sequence[Message] | Sequence[int], system: str | None = None) -> list[int]:
        """Token ids for a string (one user message), a list of messages, or ids (used as given)."""
        if isinstance(prompt, str):
            messages: list[Message] = [{"role": "user", "content": prompt}]
        elif len(prompt) and isinstance(prompt[0], (int, np.integer)):
            return [int(i) for i in prompt]  # type: ignore[arg-type]
        else:
            messages = list(prompt)  # type: ignore[arg-type]
        if system is not None:
            messages = [{"role": "system", "content": system}, *[m for m in messages if m["role"] != "system"]]
        return self.template.encode(messages, self.tokenizer, add_generation_prompt=True)

    def generate(self, prompt: str | Sequence[Message] | Sequence[int], **options: Any) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated. Options: max_tokens (default 1024),
        seed, system, chain (sampler names in order), lookup (0..16 draft tokens a pass checks; default:
        the backend's) and any sampler parameter (temperature, top_k, top_p, min_p, ...). Timings are
        in `self.last_stats` afterwards."""
        from .plugins import registry

        ids = self.encode_prompt(prompt, options.get("system"))
        sampler_values = {k: v for k, v in options.items() if k not in GENERATION_OPTIONS}
        chain = SamplerChain(registry().samplers, options.get("chain") or DEFAULT_CHAIN, seed=options.get("seed"))
        chain.update(sampler_values)
        capacity = min(self.config.context_length, len(ids) + int(options.get("max_tokens") or 1024))
        cache = self.runner.new_cache(capacity)
        self.last_stats = stats = Stats()
        max_tokens = max(0, capacity - len(ids))
        lookup = parse_lookup(options["lookup"]) if options.get("lookup") is not None else default_lookup(self.runner)
        yield from self.stream(
            cache, ids, chain, history=list(ids), max_tokens=max_tokens, stats=stats, stop_ids=options.get("stop_ids"), lookup=lookup
        )

    def stream(
        self,
        cache: Cache,
        new_ids: Sequence[int],
        chain: SamplerChain,
        *,
        history: list[int],
        max_tokens: int,
        stats: Stats,
        stop_ids: Sequence[int] | None = None,
        lookup: int = 0,
    ) -> Iterator[str]:
        """The reply to `new_ids` (the prompt ids not yet in `cache`) as text pieces: `generate` with
        this template's stop ids, decoded by the tokenizer's stream decoder. The set-up every reply
        needs, written once: `generate` above and the chat's turns (Session) both use it. Ctrl-C
        (KeyboardInterrupt) still reaches the caller, after the text decoded so far. `lookup`: draft
        tokens a pass checks (lookup.py). Closing this generator closes `generate`'s at once, so the
        cache drops drafts that were not drawn."""
        decoder = self.tokenizer.stream_decoder()
        tokens = generate(
            self.runner,
            cache,
            new_ids,
            chain,
            history=history,
            max_tokens=max_tokens,
            stop_ids=stop_ids or self.stop_ids,
            stats=stats,
            lookup=lookup,
        )
        try:
            with closing(tokens):
                for token in tokens:
                    piece = decoder.push(token)
                    if piece:
                        yield piece
        except KeyboardInterrupt:
            tail = decoder.flush()
            if tail:
                yield tail
            raise
        tail = decoder.flush()
        if tail:
            yield tail


def load(model: str | Path | None = None, backend: str = "numpy", *, template: str | None = None, **options: Any) -> Model:
    """Load a model (a path; None: the default model) on a backend ("auto": the one the rule in
    `backends.choose_backend` picks). `template` overrides the model's own chat template; other
    options go to the backend (device, dtype, threads, ...)."""
    path = Path(model) if model is not None else default_model()
    return load_checkpoint(open_checkpoint(path), backend, template=template, **options)


def load_checkpoint(
    checkpoint: Checkpoint,
    backend: str | Backend = "numpy",
    *,
    template: str | Template | None = None,
    backend_reason: str = "",
    **options: Any,
) -> Model:
    """`load` for a checkpoint already opened (the chat opens it first, to fail fast on bad input).
    `backend` is a plugin's name, "auto" (backends.choose_backend), or the plugin itself as
    `backends.find_backend` returned it, with `backend_reason` saying why it was chosen; `template` a
    name, or a template already made for this tokenizer (a backend switch keeps its own)."""
    if backend == AUTO:
        backend, backend_reason = choose_backend(checkpoint.format, options.get("tp") or 1)
    plugin = find_backend(backend) if isinstance(backend, str) else backend
    tokenizer = checkpoint.tokenizer
    chat_template = (
        template
        if template is not None and not isinstance(template, str)
        else choose_template(template, checkpoint.config.chat_template, tokenizer)
    )
    runner = load_runner(plugin, checkpoint.config, checkpoint.weights, source=checkpoint.path, **options)
    return Model(checkpoint.path, checkpoint.config, tokenizer, chat_template, runner, plugin.name, backend_reason)
