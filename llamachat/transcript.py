"""Transcripts and saved sessions, under `<user data dir>/sessions/`.

A session NAME is three files: `NAME.json` (format version, messages with timestamps and per-reply
stats, sampler settings, the token ledger, a fingerprint), `NAME.md` (the conversation to read), and
for /save, `NAME.kv.safetensors` (the KV cache: k and v in the shared layout, or one uint8 `blob`,
the state of a backend whose engine owns its cache, as llamacpp's). Nothing is pickled: a session file is data, checked
on the way in, and never runs code. Every write is atomic (temporary file, fsync, rename), so a crash
or a kill leaves the previous version whole.

The fingerprint covers what must match for a saved cache to be reused: the model's weights (a sampled
hash), template, tokenizer, backend, dtype, the engine's version where the backend names one (an
opaque state is that engine's format) and this format's version; the cache file also records a
hash of the tokens it holds, which must be the conversation's ledger. Anything else is re-evaluated,
as is a cache file that cannot be read: it is derived data, and never costs the conversation.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .datadir import data_dir
from .errors import LlamachatError
from .generate import Stats
from .rope import divisor_name, is_longrope

FORMAT = "llamachat-session"
VERSION = 1
OPAQUE = "blob"  # the one tensor of an opaque cache's state (a backend whose engine owns the cache: llamacpp)
# a file name in the sessions folder: no path separator, no control character, not hidden; spaces and
# non-ASCII letters are fine (a session saved by hand as "my chat.json" is listed, so it must resolve)
NAME_RE = re.compile(r"^\w[^/\\\x00-\x1f\x7f]{0,99}$")


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def new_autosave_name() -> str:
    """The name a chat autosaves under, when it continues no saved session of its own: the time and a
    random suffix, since two chats started in the same second wrote one file and lost a conversation."""
    return time.strftime("chat-%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def file_digest(path: Path) -> str | None:
    """sha256 of a session file as it is now (None if it is gone): a chat writes a session again only
    if the file is as it read or last wrote it; otherwise another chat continued it meanwhile."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def in_sessions_dir(path: Path) -> bool:
    """Whether `path` is a saved session's own file: only those are written again when continued; a
    file resumed from elsewhere is saved under a new name, never over a saved session of its stem."""
    return path.parent.resolve() == sessions_dir().resolve()


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise LlamachatError(
            f"invalid session name {name!r}: up to 100 characters, starting with a letter or digit, without '/', '\\' or control characters"
        )
    return name


# -- fingerprint ------------------------------------------------------------------------------------

_HASHES: dict[tuple[str, int, float], str] = {}


def weights_hash(path: Path, samples: int = 16, chunk: int = 1 << 16) -> str:
    """sha256 over the file size and `samples` evenly spaced 64 KiB chunks: cheap for a 13 GB file,
    and any re-quantized or fine-tuned file differs in it."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _HASHES:
        h = hashlib.sha256(str(stat.st_size).encode())
        with open(path, "rb") as f:
            for i in range(samples):
                f.seek(max(0, (stat.st_size - chunk) * i // max(1, samples - 1)))
                h.update(f.read(chunk))
        _HASHES[key] = "sampled-sha256:" + h.hexdigest()[:32]
    return _HASHES[key]


def fingerprint(model, capacity: int | None = None) -> dict[str, Any]:
    """What a saved cache must match to be reused; for longrope (Phi-3), the factors a cache of
    `capacity` rotates with, which a different --context can change (llamachat/rope.py)."""
    tk = model.tokenizer
    pieces = hashlib.sha256("\x00".join(tk.piece(i) for i in range(0, tk.vocab_size, 97)).encode()).hexdigest()[:16]
    source = getattr(model.template, "source", model.template.name)
    found = {
        "format": VERSION,
        "model": weights_hash(model.path) if model.path.is_file() else str(model.path),
        "template": f"{model.template.name}:{hashlib.sha256(source.encode()).hexdigest()[:16]}",
        "tokenizer": f"{tk.kind}:{tk.vocab_size}:{pieces}",
        "backend": model.backend,
        "dtype": model.runner.dtype,
    }
    if capacity is not None and is_longrope(model.config):
        found["rope"] = divisor_name(model.config, capacity).removeprefix("rope_factors_") + " factors"
    engine = getattr(model.runner, "engine", None)  # an opaque cache's state is the engine's own format
    if engine:
        found["engine"] = engine
    return found


# -- writing ------------------------------------------------------------------------------------------


def to_markdown(session) -> str:
    """The whole conversation to read, in order: the exchanges dropped to fit the context (which the
    model no longer sees, marked so) come after the system prompt and before the ones it still sees."""
    messages = session.messages
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    lines = [f"# Chat with {session.model.config.name}", ""]
    for m in head:
        lines += _markdown_message(m)
    for m in session.dropped:
        lines += _markdown_message(m, " *(dropped from the model's context to fit it)*")
    for m in messages[len(head) :]:
        lines += _markdown_message(m)
    return "\n".join(lines)


def _markdown_message(m: dict[str, Any], note: str = "") -> list[str]:
    who = {"system": "System", "user": "You", "assistant": "Assistant"}[m["role"]]
    suffix = " *(interrupted)*" if m.get("interrupted") else ""
    lines = [f"**{who}** ({m.get('time', '')}){suffix}{note}", ""]
    if "reasoning" in m:  # a reasoning model's reasoning, quoted before its answer
        lines += ["> *Reasoning:*", ">", *(f"> {line}".rstrip() for line in m["reasoning"].splitlines()), ""]
    return [*lines, m.get("answer", m["content"]), ""]


def session_record(session) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"path": str(Path(session.model.path).resolve()), "name": session.model.config.name},  # found again from any folder
        "fingerprint": fingerprint(session.model, session.cache.capacity),
        "sampler": {"chain": session.chain.chain, "settings": session.chain.settings},
        "settings": {"max_tokens": session.max_tokens, "context": session.context, "overflow": session.overflow},
        "chat": {"started": session.template_context.started.isoformat(), "think": session.think},  # what templates read
        "messages": session.messages,
        "dropped": session.dropped,
        "ledger": session.ledger,
        "totals": session.totals,
    }


def save(session, name: str, with_cache: bool = True, folder: Path | None = None) -> Path:
    """Write NAME.json, NAME.md and (with_cache) NAME.kv.safetensors in `folder` (the sessions
    folder unless given: `/save PATH`); return the JSON's path."""
    from safetensors.numpy import save as save_tensors

    check_name(name)
    chosen, folder = folder is not None, folder or sessions_dir()
    record = session_record(session)
    path = folder / f"{name}.json"
    try:
        if with_cache:
            state = {k: np.ascontiguousarray(v) for k, v in session.cache.state().items()}
            metadata = {"ledger_length": str(len(session.ledger)), "ledger_sha256": ledger_digest(session.ledger)}
            atomic_write(folder / f"{name}.kv.safetensors", save_tensors(state, metadata=metadata))
        atomic_write(path, json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8"))
        atomic_write(folder / f"{name}.md", to_markdown(session).encode("utf-8"))
    except OSError as e:
        elsewhere = "" if chosen else " (/save PATH.json writes it to a file of your choice)"
        raise LlamachatError(f"cannot save session {name!r} in {folder}: {e.strerror or e}{elsewhere}") from None
    return path


def save_unless_changed(session, name: str, digest: str | None, with_cache: bool = True) -> tuple[Path, str | None, bool]:
    """Save under `name` if its file is still as this chat read or last wrote it (`digest`; None: no
    such file yet), else under a new autosave name: a fork, since another chat continued it
    meanwhile. The check and the write hold one lock on the sessions folder, so two chats saving at
    the same moment cannot both find the file unchanged. Returns (path, its digest, forked)."""
    folder = sessions_dir()
    with _folder_lock(folder):
        forked = digest is not None and file_digest(folder / f"{name}.json") != digest
        path = save(session, new_autosave_name() if forked else name, with_cache)
        return path, file_digest(path), forked


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` between llamachat processes (an flock on its `.lock` file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "a")  # noqa: SIM115 (held for the block, closed below)
    except OSError as e:
        raise LlamachatError(f"cannot save in {folder}: {e.strerror or e}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# -- reading -------------------------------------------------------------------------------------------


@dataclass
class SavedSession:
    path: Path
    record: dict[str, Any]
    cache_state: dict[str, np.ndarray] | None
    cache_problem: str = ""  # why a saved cache file could not be used (the conversation still can)
    digest: str | None = None  # file_digest of the file as read


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return path
    if path.suffix == ".json" and len(path.parts) > 1:  # a path, not a name
        raise LlamachatError(f"no such session file: {path}")
    check_name(name_or_path)
    path = sessions_dir() / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(s["name"] for s in list_sessions()[:10]) or "none yet"
        raise LlamachatError(f"no saved session {name_or_path!r} (saved: {known})")
    return path


def read(name_or_path: str) -> SavedSession:
    """A saved session, checked; LlamachatError for anything corrupt or foreign."""
    path = resolve(name_or_path)
    try:
        data = path.read_bytes()
        record = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LlamachatError(f"{path}: not a readable llamachat session ({e})") from None
    _check_record(record, path)
    state, problem = _read_cache(path.with_name(path.name[: -len(".json")] + ".kv.safetensors"), record.get("ledger", []))
    return SavedSession(path, record, state, problem, hashlib.sha256(data).hexdigest())


def ledger_digest(ledger: list[int]) -> str:
    return hashlib.sha256(np.asarray(ledger, dtype="<i8").tobytes()).hexdigest()


def _read_cache(cache_path: Path, ledger: list[int]) -> tuple[dict[str, np.ndarray] | None, str]:
    """(k/v state, "") or (None, why not). A cache is derived data: a damaged one costs a
    re-evaluation of the conversation, never the conversation itself. It is used only for the
    exact tokens it was saved with: NAME.json can be rewritten after it (an autosave under the name
    /save used), and a conversation of the same length but other tokens must not get its keys."""
    if not cache_path.is_file():
        return None, ""
    from safetensors import safe_open

    not_ours = f"{cache_path.name} is not a llamachat KV cache"
    try:
        with safe_open(str(cache_path), framework="numpy") as f:  # the header first: no tensor is read in vain
            metadata, names = f.metadata() or {}, set(f.keys())
            if names not in ({"k", "v"}, {OPAQUE}):
                return None, not_ours
            if "ledger_sha256" not in metadata:
                return None, f"{cache_path.name} does not record which tokens it holds (saved by an earlier llamachat)"
            if metadata["ledger_sha256"] != ledger_digest(ledger):
                return None, f"{cache_path.name} was saved for other tokens than the conversation now holds"
            state = {name: f.get_tensor(name) for name in names}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        return None, f"{cache_path.name} is corrupt: {e}"
    if OPAQUE in state:
        return (state, "") if state[OPAQUE].dtype == np.uint8 and state[OPAQUE].ndim == 1 else (None, not_ours)
    if state["k"].shape != state["v"].shape or state["k"].ndim != 4:
        return None, not_ours
    if not all(np.isfinite(state[name]).all() for name in ("k", "v")):  # a NaN key poisons every later reply
        return None, f"{cache_path.name} holds values that are not finite numbers (NaN or infinity)"
    return state, ""


def _check_record(record: Any, path: Path) -> None:
    def bad(why: str):
        raise LlamachatError(f"{path}: not a llamachat session ({why})")

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        bad("no llamachat-session format marker")
    if record.get("version") != VERSION:
        bad(f"format version {record.get('version')!r}; this llamachat reads version {VERSION}")
    for key in ("messages", "dropped"):
        messages = record.get(key, [])
        if not isinstance(messages, list) or not all(_is_message(m) for m in messages):
            bad(f"{key} must be a list of {{role, content}}")
        if not all(_is_stats(m["stats"]) for m in messages if "stats" in m):
            bad(f"a reply's stats in {key} must be {{{', '.join(_STATS_TYPES)}}} with numbers >= 0")
    ledger = record.get("ledger", [])
    if not isinstance(ledger, list) or not all(isinstance(i, int) and i >= 0 for i in ledger):
        bad("the ledger must be a list of token ids")
    problem = dialog_problem(record.get("messages", []))
    if problem:
        bad(f"no message can follow it: {problem}")


def dialog_problem(messages: list[dict[str, Any]]) -> str:
    """Why no message could follow this conversation ("" if one can): as the templates check a
    dialog (templates.check_dialog), where a trailing user message is one whose reply never came
    (Session.ask replaces it). A session loaded with such a shape refused every message until /reset."""
    from .protocols import TemplateError
    from .templates import check_dialog

    if not any(m["role"] == "user" for m in messages):
        system_later = next((i for i, m in enumerate(messages) if m["role"] == "system" and i), None)
        others = [m for m in messages if m["role"] != "system"]
        if system_later is not None:
            return f"the system message must come first (it is message {system_later + 1})"
        return "it holds replies without a user message" if others else ""
    try:
        check_dialog(messages, add_generation_prompt=messages[-1]["role"] == "user")
    except TemplateError as e:
        return str(e)
    return ""


def _cached_tokens(state: dict[str, np.ndarray]) -> int | None:
    """Tokens a saved k/v state holds; None for an opaque one (known once the backend loads it)."""
    return None if OPAQUE in state else state["k"].shape[2]


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)


# a reply's saved stats, field by field, as `Stats(**stats)` (/stats) takes them
_STATS_TYPES = {f.name: f.type for f in dataclasses.fields(Stats)}


def _is_stats(stats: Any) -> bool:
    if not isinstance(stats, dict) or not set(stats) <= set(_STATS_TYPES):
        return False
    for name, value in stats.items():
        if _STATS_TYPES[name] == "str":
            ok = isinstance(value, str)
        else:  # a count or seconds: a finite number >= 0 (JSON's 1.0 for an int is fine; true is not)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
        if not ok:
            return False
    return True


def list_sessions(damaged: bool = False) -> list[dict[str, Any]]:
    """Saved and autosaved sessions, newest first; with `damaged`, also those that cannot be read,
    each with a `problem` (so `-c` refuses a damaged latest chat instead of continuing an older one)."""
    folder = sessions_dir()
    found = []
    for path in folder.glob("*.json") if folder.is_dir() else []:
        if not NAME_RE.match(path.stem):
            continue  # listed means usable: only names that --resume, -c and --delete accept
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            _check_record(record, path)
        except (OSError, ValueError, LlamachatError) as e:
            if damaged and path.is_file():
                problem = str(e) if isinstance(e, LlamachatError) else f"{path}: not a readable llamachat session ({e})"
                found.append(_summary(path, {}) | {"problem": problem})
            continue
        found.append(_summary(path, record))
    return sorted(found, key=lambda s: s["mtime"], reverse=True)


def session_line(s: dict[str, Any]) -> str:
    """One entry of list_sessions as `llamachat sessions` and /sessions print it."""
    if "problem" in s:
        return f"{s['name']:28} cannot be read: {s['problem']}"
    turns = f"{s['turns']} turn" + ("" if s["turns"] == 1 else "s")
    cache = ", with KV cache" if s["cache"] else ""
    return f"{s['name']:28} {s['saved'][:19]}  {s['model']}  {turns}{cache}  {s['first']!r}"


def _summary(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """What `llamachat sessions` shows of a saved session."""
    users = [m for m in record.get("messages", []) if m["role"] == "user"]
    model, saved = record.get("model"), record.get("saved")  # display only: a damaged one shows "?"
    return {
        "name": path.stem,
        "saved": saved if isinstance(saved, str) else "",
        "mtime": path.stat().st_mtime,
        "model": str(model.get("name", "?")) if isinstance(model, dict) else "?",
        "turns": len(users),
        "first": users[0]["content"][:60] if users else "",
        "cache": path.with_name(path.stem + ".kv.safetensors").is_file(),
    }


def delete(name: str) -> list[Path]:
    path = resolve(name)
    stem = path.name[: -len(".json")]
    removed = []
    for p in (path, path.with_name(stem + ".md"), path.with_name(stem + ".kv.safetensors")):
        if p.exists():
            p.unlink()
            removed.append(p)
    return removed


def restore_chat_context(session, chat: Any) -> None:
    """The saved chat's start and /think mode: a template that prints the date renders the day the chat
    began, so a chat resumed on another day keeps its cached prefix. (Sessions saved before this have none.)"""
    if not isinstance(chat, dict):
        return
    try:
        started = datetime.fromisoformat(chat["started"])
    except (KeyError, TypeError, ValueError):
        return
    think = chat.get("think") if chat.get("think") in ("show", "hide", "off") else "show"
    session.template_context = replace(session.template_context, started=started, thinking=think != "off")
    session.think = think


def restore(session, saved: SavedSession) -> str:
    """Put a saved conversation into `session`: with a matching fingerprint and cache, the cache is
    reused as saved; otherwise the conversation is re-evaluated on the next turn. Returns a notice."""
    record = saved.record
    messages = [dict(m) for m in record.get("messages", [])]  # checked by read (_check_record)
    if any(m["role"] == "user" for m in messages):  # the dialog as this chat's template takes it, before anything is replaced
        try:
            session.encode(messages, add_generation_prompt=messages[-1]["role"] == "user")
        except LlamachatError as e:
            raise LlamachatError(f"{saved.path}: not loaded, the chat's template refuses its conversation ({e})") from None
    session.messages = messages
    session.dropped = list(record.get("dropped", []))
    restore_chat_context(session, record.get("chat"))
    session.keep(0)
    theirs, ours = record.get("fingerprint"), fingerprint(session.model, session.cache.capacity)
    theirs = theirs if isinstance(theirs, dict) else {}  # a damaged fingerprint matches nothing: re-evaluate
    ledger = record.get("ledger", [])
    refused = ""
    if saved.cache_state is not None and theirs == ours and _cached_tokens(saved.cache_state) in (None, len(ledger)):
        try:
            session.cache.load_state(saved.cache_state)
            if len(session.cache) != len(ledger):  # an opaque state says how many tokens it held only once loaded
                raise ValueError(f"the saved cache holds {len(session.cache)} tokens, the conversation {len(ledger)}")
            session.ledger = list(ledger)
            return f"restored {len(session.messages)} messages and {len(ledger)} cached tokens (no re-evaluation)"
        except ValueError as e:
            session.keep(0)
            refused = str(e)
    differs = [k for k in ours if theirs.get(k) != ours[k]] if saved.cache_state is not None else []
    if saved.cache_problem or refused:
        why = f" ({saved.cache_problem or refused})"
    elif differs:
        why = f" (saved with a different {', '.join(differs)})"
    else:
        why = " (no saved cache)" if saved.cache_state is None else ""
    return f"restored {len(session.messages)} messages; the conversation will be re-evaluated on the next turn{why}{model_note(record, session)}"


def restore_sampling(chain, saved: SavedSession) -> None:
    """The sampler chain and values a conversation was saved with, into `chain` (at start-up: flags
    win, the session over the profile and the model's recommendation). A sampler or parameter no
    longer installed, or a value that does not parse, is passed over: the chain keeps its own."""
    sampler = saved.record.get("sampler")
    sampler = sampler if isinstance(sampler, dict) else {}
    source = f"session {saved.path.stem}"
    names, values = sampler.get("chain"), sampler.get("settings")
    if (
        chain.chain_source != "flag"
        and isinstance(names, list)
        and names
        and all(isinstance(n, str) and n in chain.available for n in names)
    ):
        chain.set_chain(names, source)
    for key, value in values.items() if isinstance(values, dict) else ():
        if key in chain.params and chain.sources.get(key) != "flag":
            try:
                chain.set(key, value, source)
            except LlamachatError:
                pass


def saved_max_tokens(saved: SavedSession) -> int | None:
    """The reply limit a conversation was saved with, if the record holds a valid one."""
    settings = saved.record.get("settings")
    n = settings.get("max_tokens") if isinstance(settings, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def saved_model(saved: SavedSession) -> str | None:
    """The path of the model a saved conversation was had with, if that file is still here."""
    path = _recorded_model_path(saved.record)
    return path if path is not None and Path(path).exists() else None


def _recorded_model_path(record: dict[str, Any]) -> str | None:
    """The model path a session record names, if it names one."""
    model = record.get("model")
    path = model.get("path") if isinstance(model, dict) else None
    return path if isinstance(path, str) else None


def model_note(record: dict[str, Any], session) -> str:
    """Which model the conversation was had with, when this chat runs another ("" when the same)."""
    path, model = _recorded_model_path(record), record.get("model")
    if path is None or Path(path).resolve() == Path(session.model.path).resolve():
        return ""
    gone = "" if Path(path).exists() else ", no longer there"
    return f"; it was had with {model.get('name', '?')} ({path}{gone}), this chat runs {session.model.config.name}"
