"""The `llamachat` command: chat (or answer one prompt) and the tools around it.

    llamachat [options]                  chat with the model (the profile's, or the default one)
    llamachat -p PROMPT [options]        answer once and exit (piped stdin is appended)
    echo PROMPT | llamachat [options]    answer stdin once and exit
    llamachat plugins [--json]           every plugin and what it registers
    llamachat bench [--backend B] [--model M] [-p N] [-n N] [-d DEPTH] [--json]
    llamachat sessions | profiles | info [PATH] | convert SRC DST

This module is argv: every subcommand is a `run_NAME(argv)` here, in SUBCOMMANDS, that parses its
arguments and calls the module doing the work (the chat's engine is chat.py, its terminal repl.py).

Bad input gets one line naming the problem and what is accepted, and exit code 2; --debug shows
the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import ranks
from .errors import LlamachatError, as_int
from .protocols import TemplateError
from .version import __version__


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line."""

    def error(self, message: str):  # type: ignore[override]
        raise LlamachatError(f"{message} (see {self.prog} --help)")


def chat_parser() -> Parser:
    from .sampling import DEFAULT_CHAIN  # the help states the chain the code uses

    p = Parser(prog="llamachat", description="Chat with a LLaMA-family model in the terminal.")
    p.add_argument("-p", "--prompt", help="answer this prompt once and exit (piped stdin is appended)")
    p.add_argument("-m", "--model", help="a model file or directory (default: the profile's, else SmolLM2-135M-Instruct)")
    p.add_argument("-b", "--backend", help="backend plugin (see `llamachat plugins`), or auto (the default profile's: see /info)")
    p.add_argument("--profile", help="a profile name or .toml path (default: default)")
    p.add_argument(
        "--template", help="chat template: auto (the model's own), llama-2, mistral, chatml, zephyr, llama-3, phi-3, jinja, none"
    )
    p.add_argument("-s", "--system", help="system prompt")
    p.add_argument(
        "--samplers",
        metavar="CHAIN",
        help=f"sampler chain, comma-separated, in order (default {', '.join(DEFAULT_CHAIN)})",
    )
    p.add_argument(
        "--temp", "--temperature", dest="temperature", metavar="T", help="temperature (0 = greedy; default: the model's, else 0.8)"
    )
    p.add_argument("--top-k", dest="top_k", metavar="K", help="keep the K likeliest tokens (0 = off; default: the model's, else 40)")
    p.add_argument("--top-p", dest="top_p", metavar="P", help="nucleus sampling mass (1 = off; default: the model's, else 0.95)")
    p.add_argument(
        "--min-p",
        dest="min_p",
        metavar="P",
        help="minimum probability relative to the likeliest (0 = off; default: the model's, else 0.05)",
    )
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
    p.add_argument(
        "--lookup", metavar="N", help="lookup decoding: draft up to N tokens (0-16) from the conversation a pass (default: the backend's)"
    )
    p.add_argument("--device", help="backend device (e.g. cpu, cuda, mps)")
    p.add_argument("--dtype", help="backend dtype (e.g. float32, float16, bfloat16)")
    p.add_argument("-t", "--threads", metavar="N", help="CPU threads for the backend's matrix products (default: its own choice)")
    p.add_argument("--tp", metavar="N", help="tensor parallel over N processes on this machine (torch backend; see README)")
    p.add_argument("--quantize", metavar="KIND", help="weight-only quantization at load (torch: int4; default none)")
    p.add_argument("--context", metavar="N", help="context length in tokens (default: the model's)")
    p.add_argument("-c", "--continue", dest="continue_", action="store_true", help="continue the most recent chat")
    p.add_argument("--resume", metavar="NAME", help="resume a saved chat (see `llamachat sessions`)")
    p.add_argument("--no-history", action="store_true", help="keep no input history and do not autosave the chat")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings to stderr")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


# ------------------------------------------------------------------------------------------------
# chat and one-shot


def build_chain(args: argparse.Namespace, profile: dict[str, dict[str, Any]], profile_name: str, checkpoint=None):
    """The sampler chain at the settings that win (sampling_defaults.py): flags over the profile over
    the model's recommendation over the built-in values; each remembers where it came from."""
    from .plugins import registry
    from .sampling import DEFAULT_CHAIN, SamplerChain
    from .sampling_defaults import BUILT_IN, resolve_sampling

    chain = SamplerChain(registry().samplers, DEFAULT_CHAIN)
    recommended = {k: v for k, v in checkpoint.sampling.items() if k in chain.params} if checkpoint is not None else {}
    layers = [
        (BUILT_IN, {"chain": list(DEFAULT_CHAIN)}),
        (checkpoint.sampling_source if checkpoint is not None else "model", recommended),
        (f"profile {profile_name}", profile["sampler"]),
        ("flag", _flag_values(args, chain.available)),
    ]
    values, sources = resolve_sampling(layers)
    chain.set_chain(values.pop("chain"), sources["chain"])
    seed = values.pop("seed", None)
    for name, value in values.items():
        chain.set(name, value, sources[name])
    if seed is not None:
        chain.seed(as_int(seed, "--seed") if sources["seed"] == "flag" else seed)
    return chain


def _flag_values(args: argparse.Namespace, available: Iterable[str]) -> dict[str, Any]:
    """The sampler settings given on the command line (--temp, --samplers, -o NAME=VALUE, --seed)."""
    values: dict[str, Any] = {name: getattr(args, name) for name in ("temperature", "top_k", "top_p", "min_p")}
    if args.samplers is not None:
        names = [n.strip() for n in args.samplers.split(",") if n.strip()]
        if not names:
            raise LlamachatError(f"--samplers names no sampler in {args.samplers!r}: give one or more of {', '.join(sorted(available))}")
        values["chain"] = names
    for option in args.option:
        name, eq, value = option.partition("=")
        if not eq:
            raise LlamachatError(f"-o takes NAME=VALUE, got {option!r}")
        values[name.strip()] = value.strip()
    values["seed"] = args.seed
    return values


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
    check_chat_args(args)
    launch = ranks.from_env()  # torchrun: every rank runs this command line
    if launch is not None and launch.world > 1:
        args.tp = _launched_tp(args.tp, launch)
        if launch.rank > 0:
            return serve_rank(launch, args.backend)
    from .chat import Chat
    from .plugins import registry
    from .profiles import check_profile_model, load_profile, settings_from_profile

    reg = registry()
    for problem in reg.problems:
        print(f"llamachat: {problem}", file=sys.stderr)
    from .sampling import SamplerChain

    sampler_params = SamplerChain(reg.samplers, []).params  # qualified where names clash
    profile_name = args.profile or "default"
    profile = load_profile(profile_name, sampler_params)
    settings = settings_from_profile(profile, profile_name, args)
    if launch is not None and launch.world > 1:
        settings.backend_extra["launch"] = launch
    resume = args.resume
    if args.continue_:
        from .transcript import list_sessions

        sessions = list_sessions(damaged=True)
        if not sessions:
            raise LlamachatError("no earlier chat to continue (`llamachat sessions` lists saved ones)")
        if "problem" in sessions[0]:  # not silently an older chat instead
            raise LlamachatError(f"the latest chat cannot be continued: {sessions[0]['problem']} (--resume NAME continues another)")
        resume = sessions[0]["name"]
    from . import transcript

    saved = transcript.read(resume) if resume else None  # a missing or corrupt session fails now, with exit 2
    if saved is not None and not args.model:  # as `llm -c`: the conversation's own model, unless -m names another
        settings.model = transcript.saved_model(saved) or settings.model
    if saved is not None and args.max_tokens is None:
        settings.max_tokens = transcript.saved_max_tokens(saved) or settings.max_tokens

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
    chat = Chat(settings)
    plan = chat.plan(settings)  # bad input (backend, template, model files) fails here, with exit 2
    trained = plan.checkpoint.config.context_length
    if settings.context and settings.context > trained:  # a cache holds at most the model's context
        name = plan.checkpoint.config.name
        print(
            f"llamachat: context {settings.context:,} is more than {name}'s {trained:,} tokens: the chat holds {trained:,}", file=sys.stderr
        )
    chat.chain = build_chain(args, profile, profile_name, plan.checkpoint)  # the model's sampling recommendation is in its files
    if saved is not None:
        transcript.restore_sampling(chat.chain, saved)  # the conversation's own sampler, under the flags

    if prompt is None:
        from .repl import ChatApp

        app = ChatApp(chat, history=not args.no_history, resume=resume, debug=args.debug)
        if saved is not None and transcript.in_sessions_dir(saved.path):  # as the one-shot path below
            app.autosave_name, app.autosave_digest = saved.path.stem, saved.digest  # it goes on in its own file
        chat.start(plan, background=True)
        return app.run()

    chat.start(plan)
    session = chat.wait()
    if saved is not None:
        notice = transcript.restore(session, saved)
        if args.verbose or transcript.model_note(saved.record, session):
            print(f"llamachat: {notice}", file=sys.stderr)
        code = one_shot(session, prompt, args.verbose)
        if not args.no_history:
            had_cache = saved.cache_state is not None or bool(saved.cache_problem)  # a damaged one is replaced
            if not transcript.in_sessions_dir(saved.path):
                name, why = (
                    transcript.save(session, transcript.new_autosave_name(), with_cache=had_cache).stem,
                    f"is outside {transcript.sessions_dir()}",
                )
            else:
                path, _, forked = transcript.save_unless_changed(session, saved.path.stem, saved.digest, with_cache=had_cache)
                name, why = path.stem, "was continued by another chat meanwhile" if forked else ""
            if why:
                print(
                    f"llamachat: {saved.path} {why}: left as it was, this chat saved as {name} (a fork)",
                    file=sys.stderr,
                )
        return code
    return one_shot(session, prompt, args.verbose)


def check_chat_args(args: argparse.Namespace) -> None:
    """What argparse does not say: flags that exclude each other, and a value given empty (`-m "$MODEL"`
    with the variable unset ran the default model)."""
    if args.continue_ and args.resume:
        raise LlamachatError("-c continues the latest chat, --resume NAME a chosen one: give one of them")
    for flag in ("model", "backend", "profile", "template", "device", "dtype", "quantize", "resume"):
        value = getattr(args, flag)
        if value is not None and not value.strip():
            raise LlamachatError(f"--{flag} was given an empty value; leave it out for the default")


def _launched_tp(flag: str | None, launch: ranks.Launch) -> str:
    """Under a launcher the world size is the tensor-parallel degree: a --tp that says otherwise is a
    mistake, not a request."""
    if flag is not None and flag.strip() != str(launch.world):
        raise LlamachatError(
            f"--tp {flag} differs from the launcher's WORLD_SIZE={launch.world}; accepted: --tp {launch.world}, or no --tp"
        )
    return str(launch.world)


def serve_rank(launch: ranks.Launch, backend_name: str | None) -> int:
    """A launched rank above 0: it runs what rank 0 sends and never reads the terminal or prints what
    rank 0 prints. The backend is torch (the one that runs tensor parallel) unless --backend names
    another that does; rank 0 refuses a backend that cannot, and the launcher then stops this rank."""
    from .backends import find_backend

    backend = find_backend(backend_name if backend_name not in (None, "auto") else "torch")
    if not hasattr(backend, "serve"):
        backend = find_backend("torch")
    return backend.serve(launch)


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
    from .profiles import check_threads

    if args.threads is not None:
        check_threads(args.threads, "--threads")
    for name in ("n_prompt", "n_gen", "reps", "n_depth"):
        if getattr(args, name) is not None:
            as_int(getattr(args, name), "--" + name.replace("_", "-"), 0 if name == "n_depth" else 1)
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
    sessions = transcript.list_sessions(damaged=True)
    if args.json:
        print(json.dumps(sessions))
        return 0
    if not sessions:
        print(f"no saved chats in {transcript.sessions_dir()}")
    for s in sessions:
        print(transcript.session_line(s))
    return 0


def run_profiles(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat profiles", description="Profiles: shipped ones, and the user's (which override them).")
    p.parse_args(argv)
    from .profiles import available_profiles, user_profile_dir

    for name, origin in available_profiles().items():
        print(f"{name:20} {origin}")
    print(f"(your profiles go in {user_profile_dir()})")
    return 0


def run_info(argv: Sequence[str]) -> int:
    p = Parser(prog="llamachat info", description="Parameters, memory, KV cache, FLOPs and the decode ceiling of a model.")
    p.add_argument("path", nargs="?", help="a model file or directory, or just its params.json / config.json (default: the default model)")
    p.add_argument("-m", "--model", help="the model, as with `llamachat -m` (the same as PATH)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--bandwidth", type=float, metavar="GB/S", help="use this memory bandwidth instead of measuring it")
    p.add_argument("--no-measure", action="store_true", help="skip the bandwidth measurement (no ceiling)")
    p.add_argument("--tp", metavar="N", help="also what each of N tensor-parallel ranks holds, and the all-reduce cost per token")
    args = p.parse_args(argv)
    from .checkpoints import read_config_only
    from .costs import GB, max_world
    from .info import print_report, print_tp, report, tp_report

    if args.path and args.model:
        p.error("give the model once: as PATH or with -m")
    if args.bandwidth is not None and not 0 < args.bandwidth < float("inf"):
        p.error(f"--bandwidth takes a number of GB/s > 0, got {args.bandwidth:g}")
    args.path = args.path or args.model
    if args.path is None:
        from .default_model import default_model

        args.path = str(default_model())
    found = read_config_only(args.path)
    world = _tp_world(args.tp, max_world(found.config))
    bandwidth = None
    if args.bandwidth:
        bandwidth = args.bandwidth * GB
    elif not args.no_measure:
        from .bench import memory_bandwidth

        bandwidth = memory_bandwidth()
    r = report(found.config, bandwidth, found.rope_scaling)
    on_disk = sum(f.stat().st_size for f in found.weight_files) or None
    tp = {"tp": tp_report(found.config, world, bandwidth)} if world else {}
    if args.json:
        print(json.dumps(r | {"format": found.format, "notes": found.notes, "bytes_on_disk": on_disk} | tp))
    else:
        print_report(r, str(Path(args.path)), found.format, found.notes, on_disk, measured=not args.bandwidth)
        if tp:
            print_tp(tp["tp"], r["bandwidth_GB_s"])
    sys.stdout.flush()
    return 0


def _tp_world(value: str | None, n_heads: int) -> int | None:
    """`info --tp N`: a whole number of ranks from 1 to the model's attention heads (costs.max_world)."""
    if value is None:
        return None
    try:
        world = int(value)
    except ValueError:
        world = 0
    if not 1 <= world <= n_heads:
        raise LlamachatError(f"--tp takes a whole number of ranks from 1 to {n_heads} (the model's attention heads), got {value!r}")
    return world


def run_convert(argv: Sequence[str]) -> int:
    from .convert import DTYPES, TARGETS
    from .quantize import AFFINE_GROUP_SIZES

    p = Parser(prog="llamachat convert", description="Write a model as mlx-lm, GGUF or Hugging Face files.")
    p.add_argument("src", help="any model llamachat reads (file or directory)")
    p.add_argument("dst", help="the output directory (mlx, hf) or .gguf file")
    p.add_argument("--to", choices=TARGETS, help="output format (default: gguf for a .gguf DST, else mlx)")
    p.add_argument("-q", "--q-bits", type=int, choices=(4, 8), help="quantize: MLX affine (mlx) or Q4_0/Q8_0 (gguf)")
    p.add_argument("--group-size", type=int, choices=AFFINE_GROUP_SIZES, help="MLX quantization group (default 64)")
    p.add_argument("--dtype", choices=list(DTYPES), help="float type of unquantized weights (default: the source's)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.progress import Progress

    from .convert import convert

    to = args.to or ("gguf" if args.dst.lower().endswith(".gguf") else "mlx")
    console = Console(stderr=True)
    with Progress(transient=True, console=console, disable=not console.is_terminal) as bar:  # a bar only on a terminal
        task = bar.add_task("converting", total=None)
        result = convert(
            args.src,
            args.dst,
            to,
            args.q_bits,
            args.group_size,
            args.dtype,
            args.force,
            progress=lambda _, n: bar.update(task, total=n, advance=1),
        )
    size = sum(f.stat().st_size for f in result.rglob("*")) if result.is_dir() else result.stat().st_size
    print(f"wrote {result} ({to}{f', {args.q_bits}-bit' if args.q_bits else ''}, {size / 1e6:,.1f} MB)")
    sys.stdout.flush()
    return 0


# ------------------------------------------------------------------------------------------------

SUBCOMMANDS = {
    "plugins": run_plugins,
    "bench": run_bench,
    "sessions": run_sessions,
    "profiles": run_profiles,
    "info": run_info,
    "convert": run_convert,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _show_engine_logs(debug, "-v" in argv or "--verbose" in argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]]([a for a in argv[1:] if a != "--debug"])
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
