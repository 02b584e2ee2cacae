"""The `llamachat` command: chat (or answer one prompt) and the tools around it.

    llamachat [options]                  chat with the model (the profile's, or the default one)
    llamachat -p PROMPT [options]        answer once and exit (piped stdin is appended)
    echo PROMPT | llamachat [options]    answer stdin once and exit
    llamachat plugins [--json]           every plugin and what it registers
    llamachat bench [--backend B] [--model M] [--json]

Bad input gets one line naming the problem and what is accepted, and exit code 2; --debug shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from .errors import LlamachatError
from .protocols import TemplateError

SUBCOMMANDS = ("plugins", "bench")


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str):  # type: ignore[override]
        raise LlamachatError(f"{message} (see {self.prog} --help)")


def chat_parser() -> Parser:
    p = Parser(prog="llamachat", description="Chat with a LLaMA-family model in the terminal.")
    p.add_argument("-p", "--prompt", help="answer this prompt once and exit (piped stdin is appended)")
    p.add_argument("-m", "--model", help="a model file or directory (default: the profile's, else SmolLM2-135M-Instruct)")
    p.add_argument("-b", "--backend", help="backend plugin (see `llamachat plugins`; default numpy)")
    p.add_argument("--profile", help="a profile name or .toml path (default: default)")
    p.add_argument("--template", help="chat template: auto (the model's own), llama-2, chatml, zephyr, llama-3, jinja, none")
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument("--samplers", metavar="CHAIN", help="sampler chain, comma-separated, in order (default top_k,top_p,min_p,temperature)")
    p.add_argument("--temp", "--temperature", dest="temperature", metavar="T", help="temperature (0 = greedy; default 0.8)")
    p.add_argument("--top-k", dest="top_k", metavar="K", help="keep the K likeliest tokens (0 = off; default 40)")
    p.add_argument("--top-p", dest="top_p", metavar="P", help="nucleus sampling mass (1 = off; default 0.95)")
    p.add_argument("--min-p", dest="min_p", metavar="P", help="minimum probability relative to the likeliest (0 = off; default 0.05)")
    p.add_argument("--seed", metavar="N", help="seed for a reproducible reply")
    p.add_argument("-n", "--max-tokens", dest="max_tokens", metavar="N", help="longest reply in tokens (default 1024)")
    p.add_argument("--device", help="backend device (e.g. cpu, cuda, mps)")
    p.add_argument("--dtype", help="backend dtype (e.g. float32, float16, bfloat16)")
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

    sampler = dict(profile["sampler"])
    names = [n.strip() for n in args.samplers.split(",") if n.strip()] if args.samplers else None
    chain = SamplerChain(registry().samplers, names or sampler.pop("chain", None) or DEFAULT_CHAIN)
    sampler.pop("chain", None)
    seed = args.seed if args.seed is not None else sampler.pop("seed", None)
    chain.update(sampler)
    chain.update({name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "min_p")})
    if seed is not None:
        chain.seed(_int(seed, "--seed"))
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


def run_chat(argv: Sequence[str]) -> int:
    args = chat_parser().parse_args(argv)
    from .plugins import registry
    from .profiles import load_profile

    reg = registry()
    for problem in reg.problems:
        print(f"llamachat: {problem}", file=sys.stderr)
    sampler_params = {p.name: p for s in reg.samplers.values() for p in s.params}
    profile = load_profile(args.profile or "default", sampler_params)
    chain = build_chain(args, profile)
    max_tokens = _int(args.max_tokens if args.max_tokens is not None else profile["chat"].get("max_tokens", 1024), "--max-tokens", 1)
    system = args.system if args.system is not None else profile["chat"].get("system")

    prompt = args.prompt
    if sys.stdin is not None and not sys.stdin.isatty():
        if prompt is None:
            prompt = read_stdin()
            if not prompt.strip():
                raise LlamachatError("empty prompt on stdin: nothing to answer")
        elif _stdin_has_data():
            piped = read_stdin()
            prompt += "\n" + piped if piped.strip() else ""

    from .api import load

    model = load(
        args.model or profile["model"].get("path"),
        args.backend or profile["backend"].get("name", "numpy"),
        template=args.template or profile["model"].get("template"),
        device=args.device or profile["backend"].get("device"),
        dtype=args.dtype or profile["backend"].get("dtype"),
    )
    from .session import Session

    session = Session(model, chain, system=system, max_tokens=max_tokens, context=profile["model"].get("context"))
    if prompt is not None:
        return one_shot(session, prompt, args.verbose)
    return plain_chat(session, args.verbose)


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
    reply = session.ask(prompt, on_text=_write)
    for warning in reply.warnings:
        print(f"llamachat: warning: {warning}", file=sys.stderr)
    _write("\n")
    if verbose:
        s = reply.stats
        print(
            f"{s.line()}; prefill {s.prefill_tok_s:.1f} tok/s; finish: {s.finish_reason}",
            file=sys.stderr,
        )
    return 130 if reply.interrupted else 0


def plain_chat(session, verbose: bool) -> int:
    """A plain read-reply loop (the prompt_toolkit REPL replaces it where available)."""
    m = session.model
    print(f"Chatting with {m.config.name} on {m.backend} (template {m.template.name}). /quit or Ctrl-D to end.")
    while True:
        try:
            text = input(">>> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /quit ends the chat)")
            continue
        if text.strip() in ("/quit", "/exit", "/bye"):
            return 0
        if not text.strip():
            continue
        try:
            reply = session.ask(text, on_text=_write)
        except LlamachatError as e:
            print(f"llamachat: {e}")
            continue
        print(" [interrupted]" if reply.interrupted else "")
        print(reply.stats.line(), file=sys.stderr)


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
    p.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (default 512)")
    p.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (default 128)")
    p.add_argument("-r", "--reps", type=int, default=3, help="repetitions; the median is reported (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object on one line on stdout")
    args = p.parse_args(argv)
    from .api import load
    from .bench import run_bench as bench

    model = load(args.model, args.backend, device=args.device, dtype=args.dtype)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    result = bench(model.runner, args.backend, model.path.name, args.n_prompt, args.n_gen, args.reps, log=log)
    if args.json:
        print(json.dumps(result.as_json()))
    else:
        print(f"model {result.model} on {result.backend}, weights {result.weight_bytes / 1e6:.0f} MB")
        print(f"pp{result.n_prompt}  {result.pp_tok_s:8.1f} tok/s")
        print(f"tg{result.n_gen}  {result.tg_tok_s:8.1f} tok/s")
        print(
            f"ceiling {result.roofline_tg_tok_s:6.1f} tok/s  ({result.bandwidth_gb_s:.1f} GB/s / {result.weight_bytes / 1e6:.0f} MB); "
            f"decode at {100 * result.tg_tok_s / result.roofline_tg_tok_s:.0f}% of it"
        )
    return 0


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        if argv and argv[0] in SUBCOMMANDS:
            handler = {"plugins": run_plugins, "bench": run_bench}[argv[0]]
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
