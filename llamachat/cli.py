"""The `llamachat` command: chat (or answer one prompt) and the tools around it.

    llamachat [options]                  chat with the model (the profile's, or the default one)
    llamachat -p PROMPT [options]        answer once and exit (piped stdin is appended)
    echo PROMPT | llamachat [options]    answer stdin once and exit
    llamachat plugins [--json]           every plugin and what it registers
    llamachat bench [--backend B] [--model M] [-p N] [-n N] [-d DEPTH] [--json]

Bad input gets one line naming the problem and what is accepted, and exit code 2; --debug shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import LlamachatError
from .protocols import TemplateError

SUBCOMMANDS = ("plugins", "bench", "sessions", "profiles", "info", "convert")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str):  # type: ignore[override]
        raise LlamachatError(f"{message} (see {self.prog} --help)")


def chat_parser() -> Parser:
    p = Parser(prog="llamachat", description="Chat with a LLaMA-family model in the terminal.")
    p.add_argument("-p", "--prompt", help="answer this prompt once and exit (piped stdin is appended)")
    p.add_argument("-m", "--model", help="a model file or directory (default: the profile's, else SmolLM2-135M-Instruct)")
    p.add_argument("-b", "--backend", help="backend plugin (see `llamachat plugins`), or auto (the default profile's: see /info)")
    p.add_argument("--profile", help="a profile name or .toml path (default: default)")
    p.add_argument("--template", help="chat template: auto (the model's own), llama-2, chatml, zephyr, llama-3, jinja, none")
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument(
        "--samplers",
        metavar="CHAIN",
        help="sampler chain, comma-separated, in order (default repetition_penalty,top_k,top_p,min_p,temperature)",
    )
    p.add_argument("--temp", "--temperature", dest="temperature", metavar="T", help="temperature (0 = greedy; default 0.8)")
    p.add_argument("--top-k", dest="top_k", metavar="K", help="keep the K likeliest tokens (0 = off; default 40)")
    p.add_argument("--top-p", dest="top_p", metavar="P", help="nucleus sampling mass (1 = off; default 0.95)")
    p.add_argument("--min-p", dest="min_p", metavar="P", help="minimum probability relative to the likeliest (0 = off; default 0.05)")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any sampler parameter (repeatable; see `llamachat plugins`)",
    )
    p.add_argument("--seed", metavar="N", help="seed for a reproducible reply")
    p.add_argument("-n", "--max-tokens", dest="max_tokens", metavar="N", help="longest reply in tokens (default 1024)")
    p.add_argument("--device", help="backend device (e.g. cpu, cuda, mps)")
    p.add_argument("--dtype", help="backend dtype (e.g. float32, float16, bfloat16)")
    p.add_argument("-t", "--threads", metavar="N", help="CPU threads for the backend's matrix products (default: its own choice)")
    p.add_argument("--quantize", metavar="KIND", help="weight-only quantization at load (torch: int4; default none)")
    p.add_argument("--context", metavar="N", help="context length in tokens (default: the model's)")
    p.add_argument("-c", "--continue", dest="continue_", action="store_true", help="continue the most recent chat")
    p.add_argument("--resume", metavar="NAME", help="resume a saved chat (see `llamachat sessions`)")
    p.add_argument("--no-history", action="store_true", help="keep no input history and do not autosave the chat")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return p


def _version() -> str:
    from . import __version__

    return __version__


def _int(value: Any, name: str, minimum: int = 0) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise LlamachatError(f"{name} takes an integer >= {minimum}, got {value!r}") from None
    if n < minimum:
        raise LlamachatError(f"{name} takes an integer >= {minimum}, got {value!r}")
    return n


# ------------------------------------------------------------------------------------------------
# chat and one-shot


def build_chain(args: argparse.Namespace, profile: dict[str, dict[str, Any]]):
    from .plugins import registry
    from .sampling import DEFAULT_CHAIN, SamplerChain

    chain = SamplerChain(registry().samplers, DEFAULT_CHAIN)
    chain.configure(profile["sampler"])  # the profile's chain, seed and values; flags override them
    if args.samplers:
        chain.set_chain([n.strip() for n in args.samplers.split(",") if n.strip()])
    chain.update({name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "min_p")})
    for option in args.option:
        name, eq, value = option.partition("=")
        if not eq:
            raise LlamachatError(f"-o takes NAME=VALUE, got {option!r}")
        chain.set(name.strip(), value.strip())
    if args.seed is not None:
        chain.seed(_int(args.seed, "--seed"))
    return chain


def read_stdin() -> str:
    """All of stdin as text, without the line end(s) `echo` leaves at its end."""
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        print("llamachat: warning: stdin is not valid UTF-8; undecodable bytes were replaced with \ufffd", file=sys.stderr)
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\r\n")


def settings_from_profile(profile: dict[str, dict[str, Any]], name: str, args: argparse.Namespace | None = None):
    """ChatSettings from a checked profile, with the command-line flags over it."""
    from .repl import ChatSettings

    def flag(attr: str) -> Any:
        return getattr(args, attr, None) if args is not None else None

    chat, model, backend = profile["chat"], profile["model"], profile["backend"]
    stop = chat.get("stop", [])
    return ChatSettings(
        profile=name,
        model=flag("model") or model.get("path"),
        backend=flag("backend") or backend.get("name", "numpy"),
        template=flag("template") or model.get("template"),
        device=flag("device") or backend.get("device"),
        dtype=flag("dtype") or backend.get("dtype"),
        backend_extra=_backend_extra(backend, flag("threads"), flag("quantize")),
        system=flag("system") if flag("system") is not None else chat.get("system"),
        max_tokens=_int(flag("max_tokens") if flag("max_tokens") is not None else chat.get("max_tokens", 1024), "--max-tokens", 1),
        context=_int(flag("context"), "--context", 16) if flag("context") is not None else model.get("context"),
        overflow=chat.get("overflow", "drop-oldest"),
        markdown=chat.get("markdown", True),
        stop=[stop] if isinstance(stop, str) else list(stop),
    )


def _backend_extra(backend: dict[str, Any], threads: Any, quantize: str | None) -> dict[str, Any]:
    """The profile's other [backend] options (threads, quantize, ...), with --threads/--quantize over them."""
    extra = {k: v for k, v in backend.items() if k not in ("name", "device", "dtype")}
    if threads is not None:
        extra["threads"] = _int(threads, "--threads", 1)
    if quantize is not None:
        extra["quantize"] = quantize
    return extra


def check_profile_model(settings) -> None:
    """A profile's model that is not on this machine (the shipped LLaMA-2 ones point at ~/models/...):
    one line naming the profile and the ways out, not a bare 'no such file'."""
    if settings.model and not Path(settings.model).expanduser().exists():
        raise LlamachatError(
            f"profile {settings.profile!r} names the model {settings.model}, which is not here: give one with -m PATH, "
            "or point [model] path at your copy in a profile of your own (`llamachat profiles` shows where they go)"
        )


def preflight(settings):
    """Check what can be checked at once (model file, backend, template), so that bad input fails at
    start-up with exit 2; returns the opened checkpoint."""
    from .backends import AUTO
    from .checkpoints import open_checkpoint
    from .default_model import default_model
    from .plugins import registry

    reg = registry()
    if settings.backend != AUTO:  # auto is chosen for the file once it is open (backends.choose_backend)
        if settings.backend not in reg.backends:
            raise LlamachatError(f"unknown backend {settings.backend!r} (available: {', '.join(sorted(reg.backends))})")
        ok, reason = reg.backends[settings.backend].available()
        if not ok:
            raise LlamachatError(f"backend {settings.backend!r} cannot run here: {reason}")
    if settings.template not in (None, "auto") and settings.template not in reg.templates:
        raise LlamachatError(f"unknown template {settings.template!r} (available: {', '.join(sorted(reg.templates))})")
    return open_checkpoint(settings.model or default_model())


def run_chat(argv: Sequence[str]) -> int:
    args = chat_parser().parse_args(argv)
    from .plugins import registry
    from .profiles import load_profile

    reg = registry()
    for problem in reg.problems:
        print(f"llamachat: {problem}", file=sys.stderr)
    from .sampling import SamplerChain

    sampler_params = SamplerChain(reg.samplers, []).params  # qualified where names clash
    profile_name = args.profile or "default"
    profile = load_profile(profile_name, sampler_params)
    chain = build_chain(args, profile)
    settings = settings_from_profile(profile, profile_name, args)
    resume = args.resume
    if args.continue_:
        from .transcript import list_sessions

        sessions = list_sessions()
        if not sessions:
            raise LlamachatError("no earlier chat to continue (`llamachat sessions` lists saved ones)")
        resume = sessions[0]["name"]
    saved = None
    if resume:
        from .transcript import read

        saved = read(resume)  # a missing or corrupt session fails now, with exit 2

    prompt = args.prompt
    if sys.stdin is not None and not sys.stdin.isatty():
        if prompt is None:
            prompt = read_stdin()
            if not prompt.strip():
                raise LlamachatError("empty prompt on stdin: nothing to answer")
        elif _stdin_has_data():
            piped = read_stdin()
            prompt += "\n" + piped if piped.strip() else ""
    if not args.model:
        check_profile_model(settings)
    checkpoint = preflight(settings)

    if prompt is None:
        from .repl import ChatApp

        app = ChatApp(settings, chain, checkpoint=checkpoint, history=not args.no_history, resume=resume, debug=args.debug)
        if resume and resume.startswith("chat-"):
            app.autosave_name = resume
        return app.run()

    from .api import load_checkpoint
    from .session import Session

    model = load_checkpoint(checkpoint, settings.backend, template=settings.template, **settings.backend_options)
    session = Session(
        model, chain, system=settings.system, max_tokens=settings.max_tokens, context=settings.context, overflow=settings.overflow
    )
    session.stop_strings = settings.stop
    if saved is not None:
        from .transcript import restore, save

        restore(session, saved)
        code = one_shot(session, prompt, args.verbose)
        if not args.no_history:
            had_cache = saved.cache_state is not None or bool(saved.cache_problem)  # a damaged one is replaced
            save(session, saved.path.stem, with_cache=had_cache)
        return code
    return one_shot(session, prompt, args.verbose)


def _stdin_has_data() -> bool:
    import select

    try:
        return bool(select.select([sys.stdin], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def one_shot(session, prompt: str, verbose: bool) -> int:
    if verbose:
        model = session.model
        print(f"{model.path.name} on {model.backend} ({model.runner.dtype})", file=sys.stderr)
    reply = session.ask(prompt, on_text=_write)
    for warning in reply.notices:
        print(f"llamachat: warning: {warning}", file=sys.stderr)
    _write("\n")
    if verbose:
        s = reply.stats
        print(
            f"{s.line()}; prefill {s.prefill_tok_s:.1f} tok/s; finish: {s.finish_reason}",
            file=sys.stderr,
        )
    return 130 if reply.interrupted else 0


# ------------------------------------------------------------------------------------------------
# subcommands


def run_plugins(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat plugins", description="List every plugin, its distribution and what it registers.")
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")
    args = p.parse_args(argv)
    from .plugins import registry

    reg = registry()
    rows = []
    for info in reg.plugins:
        samplers = {name: [_param_doc(param) for param in reg.samplers[name].params] for name in info.registered["samplers"]}
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "builtin": info.builtin,
                "backends": info.registered["backends"],
                "samplers": samplers,
                "templates": info.registered["templates"],
            }
        )
    if args.json:
        print(json.dumps({"plugins": rows, "problems": reg.problems}, indent=2))
        return 0
    for row in rows:
        origin = "built-in" if row["builtin"] else "outside"
        print(f"{row['name']} ({row['distribution']}, {origin})")
        for name in row["backends"]:
            print(f"  backend  {name}: {reg.backends[name].description}")
        for name, params in row["samplers"].items():
            print(f"  sampler  {name}")
            for prm in params:
                print(f"             {prm['name']} = {prm['default']} ({prm['range']}): {prm['help']}")
        if row["templates"]:
            print(f"  templates {', '.join(row['templates'])}")
    for problem in reg.problems:
        print(f"problem: {problem}")
    return 0


def _param_doc(param) -> dict[str, Any]:
    return {"name": param.name, "default": param.default, "range": param.describe_range(), "help": param.help}


def run_bench(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat bench", description="Prompt (pp) and decode (tg) speed, and the decode ceiling.")
    p.add_argument("-b", "--backend", default="numpy")
    p.add_argument("-m", "--model", help="a model path (default: the default model)")
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--quantize", help="torch: int4 (weight-only, CPU)")
    p.add_argument("-t", "--threads", type=int)
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("-d", "--n-depth", type=int, default=0, help="tokens already in the cache when tg starts (default 0)")
    p.add_argument("-r", "--reps", type=int, default=3, help="repetitions; the median is reported (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object on one line on stdout")
    args = p.parse_args(argv)
    for name in ("threads", "n_prompt", "n_gen", "reps", "n_depth"):
        if getattr(args, name) is not None:
            _int(getattr(args, name), "--" + name.replace("_", "-"), 0 if name == "n_depth" else 1)
    from .api import load
    from .bench import run_bench as bench
    from .bench import tg_label

    model = load(args.model, args.backend, device=args.device, dtype=args.dtype, quantize=args.quantize, threads=args.threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    result = bench(model.runner, args.backend, model.path.name, args.n_prompt, args.n_gen, args.reps, args.n_depth, log=log)
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"model {result.model} on {result.backend}, weights {result.weight_bytes / 1e6:.0f} MB")
        print(f"pp{result.n_prompt}  {result.pp_tok_s:8.1f} tok/s")
        print(f"{tg_label(result.n_gen, result.n_depth)}  {result.tg_tok_s:8.1f} tok/s")
        print(
            f"ceiling {result.roofline_tg_tok_s:6.1f} tok/s  ({result.bandwidth_gb_s:.1f} GB/s / {result.weight_bytes / 1e6:.0f} MB); "
            f"decode at {100 * result.tg_tok_s / result.roofline_tg_tok_s:.0f}% of it"
        )
    return 0


def run_sessions(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat sessions", description="Saved and autosaved chats, newest first.")
    p.add_argument("--delete", metavar="NAME", help="delete a saved chat")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from . import transcript

    if args.delete:
        removed = transcript.delete(args.delete)
        print(f"deleted {args.delete} ({len(removed)} files)")
        return 0
    sessions = transcript.list_sessions()
    if args.json:
        print(json.dumps(sessions))
        return 0
    if not sessions:
        print(f"no saved chats in {transcript.sessions_dir()}")
    for s in sessions:
        cache = ", with KV cache" if s["cache"] else ""
        print(f"{s['name']:28} {s['saved'][:19]}  {s['model']}  {s['turns']} turns{cache}  {s['first']!r}")
    return 0


def run_profiles(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat profiles", description="Profiles: shipped ones, and the user's (which override them).")
    p.parse_args(argv)
    from .profiles import available_profiles, user_profile_dir

    for name, origin in available_profiles().items():
        print(f"{name:20} {origin}")
    print(f"(your profiles go in {user_profile_dir()})")
    return 0


# ------------------------------------------------------------------------------------------------


def _lazy(module: str):
    """The `run(argv)` of a subcommand that lives in its own module."""

    def run(argv: Sequence[str]) -> int:
        import importlib

        return importlib.import_module(f"llamachat.{module}").run(argv)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _show_engine_logs(debug, "-v" in argv or "--verbose" in argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            handler = {
                "plugins": run_plugins,
                "bench": run_bench,
                "sessions": run_sessions,
                "profiles": run_profiles,
                "info": _lazy("info"),
                "convert": _lazy("convert"),
            }[argv[0]]
            return handler([a for a in argv[1:] if a != "--debug"])
        return run_chat(argv)
    except (LlamachatError, TemplateError) as e:
        if debug:
            raise
        print(f"llamachat: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        print(f"llamachat: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _show_engine_logs(debug: bool, verbose: bool) -> None:
    """Engines' own logs (llama.cpp's, through the `logging` logger of its plugin) are kept off the
    screen; --debug shows all of them, -v the warnings and errors."""
    import logging

    if debug or verbose:
        logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
