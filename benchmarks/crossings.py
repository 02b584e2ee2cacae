"""How many calls cross a module boundary on the way of a message and of a backend choice.

    .venv/bin/python benchmarks/crossings.py [--detail]

Counted, not estimated: a profiler hook (sys.setprofile, and threading.setprofile for the chat's
loader thread) records every call from a function of one llamachat module (package or built-in
plugin) to a function of another. Each (caller function, callee function) pair counts once, however
often it runs (a call per token is one crossing); Python's own code, the libraries and this script are
not counted, nor module bodies run by an import. Three journeys, with the default model on numpy:

1. a message: the second turn of a chat, from the typed line to the printed, autosaved reply;
2. a backend choice at start-up: `llamachat --backend numpy` from argv to the chat's Session ready
   (the REPL loop itself is not entered);
3. a backend choice mid-chat: `/backend numpy` after one exchange, in a chat handed a loaded model
   (as the tests make one) and in the chat that journey 2 started.

It runs against whatever `llamachat` is importable, so an older checkout is measured by putting its
source first on PYTHONPATH (docs/design.md gives the command). The harness speaks to both shapes of
the chat (before and after `llamachat.chat` existed).
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
from collections import Counter
from pathlib import Path


def package_module(filename: str) -> str | None:
    """'llamachat.session' for .../llamachat/session.py, 'llamachat_numpy.model' for a plugin; None otherwise."""
    parts = Path(filename).parts
    for i, part in enumerate(parts):
        if part == "llamachat" or part.startswith("llamachat_"):
            if part == "llamachat" and i + 1 < len(parts) and parts[i - 1] == "site-packages":
                continue
            mod = [p[:-3] if p.endswith(".py") else p for p in parts[i:]]
            return ".".join(mod[:-1] if mod[-1] == "__init__" else mod)
    return None


class Crossings:
    def __init__(self) -> None:
        self.pairs: Counter[tuple[tuple[str, str], tuple[str, str]]] = Counter()  # ((module, function), (module, function))

    def hook(self, frame, event, arg) -> None:
        if event != "call" or frame.f_code.co_name == "<module>" or frame.f_back is None:
            return
        callee, caller = package_module(frame.f_code.co_filename), package_module(frame.f_back.f_code.co_filename)
        if callee and caller and callee != caller:
            self.pairs[((caller, frame.f_back.f_code.co_qualname), (callee, frame.f_code.co_qualname))] += 1

    def __enter__(self) -> Crossings:
        threading.setprofile(self.hook)
        sys.setprofile(self.hook)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


def make_app(model):
    from prompt_toolkit.output import DummyOutput
    from rich.console import Console

    from llamachat.plugins import registry
    from llamachat.repl import ChatApp
    from llamachat.sampling import SamplerChain

    chain = SamplerChain(registry().samplers, seed=0)
    chain.set("temperature", 0)
    console = Console(file=io.StringIO(), width=120)
    try:
        from llamachat.chat import Chat
        from llamachat.profiles import ChatSettings

        return ChatApp(Chat(ChatSettings(), chain, model=model), console=console, output=DummyOutput(), history=False)
    except ImportError:  # before llamachat.chat
        from llamachat.repl import ChatSettings

        return ChatApp(ChatSettings(), chain, model=model, console=console, output=DummyOutput(), history=False)


def message_and_backend() -> tuple[Crossings, Crossings]:
    import llamachat

    app = make_app(llamachat.load())
    app.handle_line("What is the capital of France?")
    with Crossings() as message:
        app.handle_line("And of Germany?")
    with Crossings() as switch:
        app.handle_line("/backend numpy")
    return message, switch


def startup_backend_choice() -> tuple[Crossings, Crossings]:
    """The start-up journey, and then `/backend numpy` in the chat it started (which, unlike a chat
    handed a loaded model, has the checkpoint it opened at hand)."""
    from llamachat import cli, repl

    apps = []
    repl.ChatApp.run = lambda self: apps.append(self) or (0 if self.session is not None else 1)  # the session ready, no REPL loop
    repl.ChatApp._make_prompt = lambda self, *a: None  # no terminal here

    class Terminal(io.StringIO):
        def isatty(self) -> bool:  # the chat, not the one-shot path that piped stdin would take
            return True

    sys.stdin = Terminal()
    with Crossings() as startup:
        code = cli.main(["--backend", "numpy", "--no-history"])
    sys.stdin = sys.__stdin__
    assert code == 0, code
    app = apps[0]
    app.handle_line("What is the capital of France?")
    with Crossings() as switch:
        app.handle_line("/backend numpy")
    return startup, switch


def show(title: str, c: Crossings, detail: bool) -> None:
    edges = Counter((a[0], b[0]) for a, b in c.pairs)
    print(f"{title}: {len(c.pairs)} crossing calls, {len(edges)} module edges")
    if detail:
        for (a, b), n in sorted(c.pairs.items()):
            print(f"    {a[0]}:{a[1]} -> {b[0]}:{b[1]}   (x{n})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detail", action="store_true", help="list every crossing call")
    args = ap.parse_args()
    import llamachat

    print(f"llamachat from {Path(llamachat.__file__).parent}")
    startup, started_switch = startup_backend_choice()
    message, switch = message_and_backend()
    show("a message (second turn)", message, args.detail)
    show("a backend choice at start-up (--backend numpy)", startup, args.detail)
    show("a backend choice mid-chat (/backend numpy), chat handed a loaded model", switch, args.detail)
    show("a backend choice mid-chat (/backend numpy), chat started by `llamachat`", started_switch, args.detail)


if __name__ == "__main__":
    main()
