"""Slash commands: parsing, the command table, and what each one does to a chat.

Every command confirms what it did in words (`temperature set to 0.7`). A bad command or value is
one line, and the chat goes on. Handlers talk to the chat through a small surface (`ChatLike`), so
they can be driven without a terminal.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import LlamachatError
from .lookup import default_lookup, parse_lookup

QUIT = ("quit", "exit", "bye")


class ChatLike(Protocol):
    session: Any

    def say(self, text: str, style: str = "") -> None: ...
    def switch_backend(self, name: str) -> None: ...
    def switch_profile(self, name: str) -> None: ...
    def switch_template(self, name: str) -> None: ...
    def reply(self, action: Callable) -> None: ...


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Callable[[ChatLike, str], Any]
    completes: str = ""  # what its argument is: "param", "backend", "profile", "template", "session", "think"


def parse(line: str) -> tuple[str, str] | None:
    """("name", "argument") for a slash command, None for a message. "//text" sends "/text"."""
    stripped = line.strip()
    if not stripped.startswith("/") or stripped.startswith("//"):
        return None
    name, _, arg = stripped[1:].partition(" ")
    return name.lower(), arg.strip()


def message_text(line: str) -> str:
    """What a non-command line sends ("//x" is the escape for a message starting with "/")."""
    return line.strip()[1:] if line.strip().startswith("//") else line


class QuitChat(Exception):
    """Raised by /quit."""


# -- handlers -----------------------------------------------------------------------------------------


def _set(name: str, command: str | None = None) -> Callable[[ChatLike, str], None]:
    """The command /COMMAND VALUE (by default /NAME) that sets sampler parameter NAME."""

    def run(chat: ChatLike, arg: str) -> None:
        set_param(chat, name, arg, f"/{command or name} VALUE")

    return run


def set_param(chat: ChatLike, name: str, arg: str, usage: str) -> None:
    params = chat.session.chain.params
    if name not in params:
        raise LlamachatError(f"no sampler plugin provides {name!r} here (see `llamachat plugins`)")
    if not arg:
        raise LlamachatError(f"usage: {usage} ({params[name].describe_range()})")
    value = chat.session.chain.set(name, arg, source="/set")
    chat.say(f"{name} set to {value}")


def cmd_set(chat: ChatLike, arg: str) -> None:
    name, _, value = arg.partition(" ")
    if not name:
        raise LlamachatError("usage: /set NAME VALUE (see /sampler for the names)")
    if name == "max_tokens":
        return cmd_max_tokens(chat, value.strip())
    if name == "lookup":
        return cmd_lookup(chat, value.strip())
    if name == "overflow_free":
        from .session import check_overflow_free

        chat.session.overflow_free = check_overflow_free(value.strip())
        return chat.say(f"overflow_free set to {chat.session.overflow_free:g}")
    params = chat.session.chain.params
    if name not in params:
        close = difflib.get_close_matches(name, list(params) + ["max_tokens", "lookup", "overflow_free"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise LlamachatError(f"unknown parameter {name!r}{hint} (known: {', '.join(sorted(params))}, max_tokens, lookup, overflow_free)")
    set_param(chat, name, value.strip(), f"/set {name} VALUE")


def cmd_seed(chat: ChatLike, arg: str) -> None:
    try:
        seed = int(arg)
    except ValueError:
        raise LlamachatError(f"seed takes an integer >= 0, got {arg!r}") from None
    chat.session.chain.seed(seed)
    chat.say(f"seed set to {seed}")


def cmd_max_tokens(chat: ChatLike, arg: str) -> None:
    s = chat.session
    try:
        n = int(arg)
    except ValueError:
        n = 0
    if not 1 <= n < s.context:
        raise LlamachatError(f"max_tokens takes an integer from 1 to {s.context - 1}, got {arg!r}")
    s.max_tokens = n
    chat.say(f"max_tokens set to {n}")


def cmd_lookup(chat: ChatLike, arg: str) -> None:
    s = chat.session
    if not arg:
        now = s.lookup if s.lookup is not None else default_lookup(s.model.runner)
        return chat.say(f"lookup {now} (draft tokens a pass checks; 0 = off)")
    s.lookup = parse_lookup(arg)
    chat.say(f"lookup set to {s.lookup}")


def cmd_stop(chat: ChatLike, arg: str) -> None:
    s = chat.session
    if not arg:
        s.stop_strings = []
        chat.say("stop strings cleared")
        return
    text = decode_escapes(arg) if "\\" in arg else arg
    s.stop_strings.append(text)
    chat.say(f"stop strings set to {s.stop_strings!r}")


def decode_escapes(text: str) -> str:
    """Backslash escapes (\\n, \\t, \\u00e9) decoded, other characters kept: "unicode_escape" reads
    bytes as Latin-1, so UTF-8 bytes of "é" became "Ã©"; backslashreplace hands it "\\xe9" instead."""
    try:
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise LlamachatError(f"bad escape in {text!r}: {e.reason} (accepted: \\n, \\t, \\\\, \\xHH, \\uHHHH)") from None


def cmd_sampler(chat: ChatLike, arg: str) -> None:
    chain = chat.session.chain
    if arg:
        names = arg.replace(",", " ").split()
        if not names:
            raise LlamachatError(f"no sampler named in {arg!r}: give one or more of {', '.join(sorted(chain.available))}")
        chain.set_chain(names, source="/sampler")
        chat.say(f"sampler chain set to {' -> '.join(names)}")
        return
    chat.say(chain.describe())
    for line in chain.provenance():
        chat.say(f"  {line}", "dim")


def cmd_system(chat: ChatLike, arg: str) -> None:
    dropped = chat.session.set_system(arg or None)
    chat.say(f"system prompt set to {arg!r}" if arg else "system prompt removed")
    for line in dropped:
        chat.say(line, "yellow")


def cmd_reset(chat: ChatLike, arg: str) -> None:
    chat.session.reset()
    chat.say("conversation reset" + (" (system prompt kept)" if chat.session.system else ""))


def cmd_undo(chat: ChatLike, arg: str) -> None:
    chat.say(chat.session.undo())


def cmd_retry(chat: ChatLike, arg: str) -> None:
    chat.reply(lambda out: chat.session.retry(out.write, out.think))


def cmd_think(chat: ChatLike, arg: str) -> None:
    from .reasoning import set_mode

    chat.say(set_mode(chat.session, arg.strip().lower()))


def cmd_history(chat: ChatLike, arg: str) -> None:
    s = chat.session
    if not s.messages:
        chat.say("no messages yet")
    for i, m in enumerate(s.messages, 1):
        text = " ".join(m.get("answer", m["content"]).split())  # a reasoning model's answer, without its reasoning
        flag = " (interrupted)" if m.get("interrupted") else ""
        chat.say(f"{i:3} {m['role']:9} {text[:100]}{'…' if len(text) > 100 else ''}{flag}")


def cmd_tokens(chat: ChatLike, arg: str) -> None:
    s = chat.session
    if not any(m["role"] == "user" for m in s.messages):
        chat.say("no conversation yet")
        return
    ids = s.encode(add_generation_prompt=s.messages[-1]["role"] == "user")
    from .session import common_prefix

    cached = common_prefix(s.ledger, ids)
    tk = s.model.tokenizer
    pieces = " ".join(f"{tk.piece(i)!r}:{i}" for i in ids)
    chat.say(f"{len(ids)} tokens as the model sees them ({cached} in the KV cache), template {s.model.template.name}:")
    chat.say(s.render(add_generation_prompt=s.messages[-1]["role"] == "user"), style="dim")
    chat.say(pieces, style="dim")


def cmd_context(chat: ChatLike, arg: str) -> None:
    s = chat.session
    ids = s.encode(add_generation_prompt=s.messages[-1]["role"] == "user") if any(m["role"] == "user" for m in s.messages) else []
    chat.say(
        f"context: {len(ids)} of {s.context} tokens used by the conversation, {len(s.ledger)} in the KV cache, "
        f"{s.max_tokens} kept for a reply; overflow policy {s.overflow} (overflow_free {s.overflow_free:g})"
    )


def cmd_stats(chat: ChatLike, arg: str) -> None:
    s = chat.session
    last = next((m for m in reversed(s.messages) if m["role"] == "assistant" and "stats" in m), None)
    if last:
        from .generate import Stats

        chat.say("last reply: " + Stats(**last["stats"]).line())
    t = s.totals
    chat.say(
        f"session: {t['replies']} replies, {t['generated']} tokens generated, prompt {t['prompt_new']} new / {t['prompt_cached']} cached"
    )


def cmd_info(chat: ChatLike, arg: str) -> None:
    m = chat.session.model
    c = m.config
    chat.say(f"model    {c.name} ({m.path})")
    chat.say(f"shape    {c.n_layers} layers, dim {c.dim}, {c.n_heads} heads / {c.n_kv_heads} kv heads of {c.head_dim}, ffn {c.ffn_dim}")
    chat.say(f"vocab    {c.vocab_size} ({m.tokenizer.kind}), context {c.context_length}, rope theta {c.rope_theta:g}")
    chat.say(f"rope     scaling {_rope_scaling(m)}")
    chosen = f"; chosen by auto: {m.backend_reason}" if m.backend_reason else ""
    chat.say(f"backend  {m.backend} ({m.runner.dtype}, {m.runner.weight_bytes / 1e6:.0f} MB of weights){chosen}")
    chat.say(f"template {m.template.name}")
    for line in chat.session.chain.provenance():
        chat.say(f"sampler  {line}")


def _rope_scaling(model: Any) -> str:
    """The model's RoPE scaling as `llamachat info` shows it, read again from its config file (the
    loaded ModelConfig does not carry Llama-3.1-style scaling, only its rope_freqs weights do)."""
    from .checkpoints import read_config_only
    from .info import describe_rope_scaling, rope_scaling

    try:
        return describe_rope_scaling(rope_scaling(model.config, read_config_only(model.path).rope_scaling))
    except (LlamachatError, OSError):
        return "unknown (the model's files cannot be read again)"


def cmd_save(chat: ChatLike, arg: str) -> None:
    from . import transcript

    if "/" in arg or arg.endswith(".json"):  # a file of the user's choice, beside its .md and its cache
        target = Path(arg).expanduser()
        path = transcript.save(chat.session, target.name.removesuffix(".json"), folder=target.parent)  # save checks the name
        chat.say(f"saved -> {path}")
        return
    name = transcript.check_name(arg or chat.default_save_name())
    replaces = name != chat.default_save_name() and (transcript.sessions_dir() / f"{name}.json").is_file()
    path = transcript.save(chat.session, name)
    chat.say(f"saved {name} -> {path}" + (f" (in place of the earlier {name!r})" if replaces else ""))


def cmd_load(chat: ChatLike, arg: str) -> None:
    from . import transcript

    if not arg:
        raise LlamachatError("usage: /load NAME (see /sessions)")
    chat.say(transcript.restore(chat.session, transcript.read(arg)))


def cmd_sessions(chat: ChatLike, arg: str) -> None:
    from . import transcript

    sessions = transcript.list_sessions(damaged=True)
    if not sessions:
        chat.say(f"no saved sessions in {transcript.sessions_dir()}")
    for s in sessions:
        chat.say(transcript.session_line(s))


def cmd_backend(chat: ChatLike, arg: str) -> None:
    if not arg:
        raise LlamachatError(f"usage: /backend NAME (now {chat.session.model.backend})")
    chat.switch_backend(arg)


def cmd_profile(chat: ChatLike, arg: str) -> None:
    if not arg:
        raise LlamachatError("usage: /profile NAME (see `llamachat profiles`)")
    chat.switch_profile(arg)


def cmd_template(chat: ChatLike, arg: str) -> None:
    if not arg:
        raise LlamachatError(f"usage: /template NAME (now {chat.session.model.template.name})")
    chat.switch_template(arg)


def cmd_quit(chat: ChatLike, arg: str) -> None:
    raise QuitChat


def cmd_help(chat: ChatLike, arg: str) -> None:
    for c in COMMANDS.values():
        if c.name in QUIT[1:]:
            continue
        chat.say(f"/{c.usage:24} {c.help}")
    chat.say('Type """ to start a multi-line message and """ to end it; Esc then Enter adds a newline.')
    chat.say("Ctrl-C stops a reply (it is kept); Ctrl-D or /quit ends the chat; //text sends a message starting with /.")


_TABLE = [
    Command("help", "help", "this list", cmd_help),
    Command("temp", "temp T", "temperature (0 = greedy)", _set("temperature", "temp")),
    Command("top_p", "top_p P", "nucleus sampling mass (1 = off)", _set("top_p")),
    Command("top_k", "top_k K", "keep the K likeliest tokens (0 = off)", _set("top_k")),
    Command("min_p", "min_p P", "drop tokens below P x the likeliest (0 = off)", _set("min_p")),
    Command("repeat_penalty", "repeat_penalty R", "penalise repeated tokens (1 = off)", _set("repeat_penalty")),
    Command("seed", "seed N", "seed the sampler for a reproducible reply", cmd_seed),
    Command("max_tokens", "max_tokens N", "longest reply in tokens", cmd_max_tokens),
    Command("lookup", "lookup N", "lookup decoding: draft N tokens from the conversation a pass (0 = off)", cmd_lookup),
    Command("stop", "stop STRING", "also stop a reply at STRING (no argument: clear)", cmd_stop),
    Command("set", "set NAME VALUE", "set any sampler parameter", cmd_set, "param"),
    Command("sampler", "sampler [NAMES]", "the sampler chain in order with its values (or set it)", cmd_sampler),
    Command("system", "system [TEXT]", "set (or remove) the system prompt", cmd_system),
    Command("reset", "reset", "forget the conversation (the system prompt stays)", cmd_reset),
    Command("undo", "undo", "drop the last exchange", cmd_undo),
    Command("retry", "retry", "generate the last reply again", cmd_retry),
    Command("history", "history", "the conversation so far", cmd_history),
    Command("tokens", "tokens", "the conversation as the model sees it: text, ids, what is cached", cmd_tokens),
    Command("context", "context", "context used and free", cmd_context),
    Command("stats", "stats", "last reply and session totals", cmd_stats),
    Command("info", "info", "model, backend and template", cmd_info),
    Command(
        "save", "save [NAME or PATH.json]", "save the conversation and its KV cache (in the sessions folder, or the file named)", cmd_save
    ),
    Command("load", "load NAME", "load a saved conversation", cmd_load, "session"),
    Command("sessions", "sessions", "saved conversations", cmd_sessions),
    Command("backend", "backend NAME", "switch backend, at its defaults (the conversation is re-evaluated)", cmd_backend, "backend"),
    Command("profile", "profile NAME", "switch profile", cmd_profile, "profile"),
    Command("template", "template NAME", "switch chat template", cmd_template, "template"),
    Command("think", "think show|hide|off", "a reasoning model's reasoning: shown dimmed, hidden, or off", cmd_think, "think"),
    Command("quit", "quit", "end the chat (also /exit, /bye, Ctrl-D)", cmd_quit),
    Command("exit", "exit", "end the chat", cmd_quit),
    Command("bye", "bye", "end the chat", cmd_quit),
]
COMMANDS = {c.name: c for c in _TABLE}


def run(chat: ChatLike, name: str, arg: str) -> None:
    """Run /name arg; LlamachatError (one line) for an unknown command or a bad argument."""
    command = COMMANDS.get(name)
    if command is None:
        close = difflib.get_close_matches(name, COMMANDS, n=1, cutoff=0.5)
        hint = f"; did you mean /{close[0]}?" if close else ""
        raise LlamachatError(f"unknown command /{name}{hint} (/help lists them)")
    command.run(chat, arg)
