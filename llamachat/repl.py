"""The interactive chat: prompt_toolkit for input, rich for output.

The prompt appears at once; the model finishes loading in a background thread (the first message
waits for it). Replies stream as they are generated, rendered as Markdown in a terminal and as plain
text otherwise. Ctrl-C stops a reply and keeps it; Ctrl-C at the prompt clears the line; Ctrl-D,
/quit, /exit or /bye end the chat. After every turn the transcript is saved atomically.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompt_toolkit.completion import Completer, Completion

from . import commands, transcript
from .errors import LlamachatError
from .protocols import TemplateError
from .reply import ReplyPrinter

TRIPLE = '"""'


@dataclass
class ChatSettings:
    """What a profile (and the flags over it) decide for a chat."""

    profile: str = "default"
    model: str | None = None
    backend: str = "numpy"
    template: str | None = None
    device: str | None = None
    dtype: str | None = None
    backend_extra: dict[str, Any] = field(default_factory=dict)  # the profile's threads, quantize, ...
    system: str | None = None
    max_tokens: int = 1024
    context: int | None = None
    overflow: str = "drop-oldest"
    markdown: bool = True
    stop: list[str] = field(default_factory=list)

    @property
    def backend_options(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, **self.backend_extra}


def in_triple_quotes(text: str) -> bool:
    """Inside a \"\"\" block that is not closed yet (Enter then adds a newline)."""
    return text.lstrip().startswith(TRIPLE) and text.count(TRIPLE) < 2


def unwrap_triple_quotes(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith(TRIPLE):
        stripped = stripped[3:]
        if stripped.endswith(TRIPLE):
            stripped = stripped[:-3]
        return stripped.strip("\n")
    return text


class ChatApp:
    def __init__(
        self,
        settings: ChatSettings,
        chain,
        *,
        model=None,
        checkpoint=None,
        console=None,
        input=None,
        output=None,
        history: bool = True,
        resume: str | None = None,
        debug: bool = False,
    ):
        from rich.console import Console

        self.settings, self.chain, self.debug = settings, chain, debug
        self.console = console or Console(highlight=False)
        self.history, self.resume = history, resume
        self.autosave_name = time.strftime("chat-%Y%m%d-%H%M%S")
        self._session = None
        self._load_error: BaseException | None = None
        self._pending = ""  # a message that could not be sent, offered again at the prompt
        self._prompt = self._make_prompt(input, output)
        self._checkpoint = checkpoint
        if model is not None:
            self._start(model)
            self._loader = None
        else:
            self._loader = threading.Thread(target=self._load, daemon=True)
            self._loader.start()

    # -- loading ----------------------------------------------------------------------------------
    def _load(self) -> None:
        from .api import load, load_checkpoint

        s = self.settings
        try:
            if self._checkpoint is not None:
                model = load_checkpoint(self._checkpoint, s.backend, template=s.template, **s.backend_options)
            else:
                model = load(s.model, s.backend, template=s.template, **s.backend_options)
            # the first forward pass pays one-time costs (~1 s here): pay them while the user types
            model.runner.forward([model.config.bos_id or 0] * 8, model.runner.new_cache(8))
            self._start(model)
        except BaseException as e:  # surfaced in the main thread
            self._load_error = e

    def _start(self, model) -> None:
        from .session import Session

        s = self.settings
        session = Session(model, self.chain, system=s.system, max_tokens=s.max_tokens, context=s.context, overflow=s.overflow)
        session.stop_strings = list(s.stop)
        self._session = session

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def session(self):
        if self._session is None and self._loader is not None:
            if self._loader.is_alive():
                self.say("loading the model ...", "dim")
            self._loader.join()
        if self._load_error is not None:
            raise self._load_error
        return self._session

    # -- output -----------------------------------------------------------------------------------
    def say(self, text: str, style: str = "") -> None:
        self.console.print(text, style=style or None, markup=False, highlight=False, soft_wrap=True)

    def reply(self, action: Callable) -> None:
        session = self.session
        with ReplyPrinter(self.console, self.settings.markdown) as printer:
            reply = action(printer.write)
        if reply.interrupted:
            self.say("[interrupted: the partial reply is kept]", "yellow")
        for notice in reply.notices:
            self.say(notice, "yellow")
        self.say(reply.stats.line(), "dim")
        self.autosave(session)

    def autosave(self, session) -> None:
        if not self.history:
            return
        try:
            transcript.save(session, self.autosave_name, with_cache=False)
        except LlamachatError as e:
            self.say(f"autosave failed: {e}", "red")

    def default_save_name(self) -> str:
        return self.autosave_name

    # -- switching --------------------------------------------------------------------------------
    def switch_backend(self, name: str) -> None:
        from .api import Model
        from .backends import AUTO, choose_backend, load_runner
        from .checkpoints import open_checkpoint

        old = self.session
        m = old.model
        s = self.settings
        # device, dtype and quantize were chosen for the backend being left (numpy refuses bfloat16,
        # mlx a CUDA device): the new one starts from its own defaults; the thread count is the machine's.
        options = {k: v for k, v in s.backend_extra.items() if k == "threads"}
        left = [k for k, v in s.backend_options.items() if v is not None and k not in options]
        checkpoint = open_checkpoint(m.path)
        reason = ""
        if name == AUTO:
            name, reason = choose_backend(checkpoint.format)
        runner = load_runner(name, checkpoint.config, checkpoint.weights, source=checkpoint.path, **options)
        s.backend, s.device, s.dtype, s.backend_extra = name, None, None, options
        self._replace_model(Model(m.path, m.config, m.tokenizer, m.template, runner, name, reason))
        defaults = f" with its own defaults (the {', '.join(left)} set for {m.backend} do not carry over)" if left else ""
        self.say(f"backend set to {name}{defaults}; the conversation was re-evaluated ({len(self.session.ledger)} tokens)")

    def switch_template(self, name: str) -> None:
        from .templates import choose_template

        session = self.session
        template = choose_template(name, session.model.config.chat_template, session.model.tokenizer)
        old, session.model = session.model, session.model.with_template(template)
        try:
            session.resync()
        except LlamachatError:
            session.model = old
            raise
        self.settings.template = name
        self.say(f"template set to {template.name}" if name in (template.name, None) else f"template set to {name} ({template.name})")

    def switch_profile(self, name: str) -> None:
        from .cli import check_profile_model, settings_from_profile
        from .profiles import load_profile

        session = self.session
        profile = load_profile(name, session.chain.params)
        new = settings_from_profile(profile, name)
        check_profile_model(new)
        if (new.model, new.backend, new.backend_options) != (self.settings.model, self.settings.backend, self.settings.backend_options):
            from .api import load

            self.say(f"loading {new.model or 'the default model'} on {new.backend} ...", "dim")
            model = load(new.model, new.backend, template=new.template, **new.backend_options)
            self._replace_model(model)
        elif new.template != self.settings.template:
            self.switch_template(new.template or "auto")
        session = self.session
        session.chain.configure(profile["sampler"])
        session.max_tokens, session.overflow = new.max_tokens, new.overflow
        if new.system != session.system:
            session.set_system(new.system)
        self.settings = new
        self.say(f"profile set to {name}")

    def _replace_model(self, model) -> None:
        from .session import Session

        old = self._session
        s = self.settings
        new = Session(model, old.chain, system=None, max_tokens=old.max_tokens, context=s.context, overflow=old.overflow)
        new.messages, new.dropped, new.totals, new.stop_strings = old.messages, old.dropped, old.totals, old.stop_strings
        new.resync(evaluate=True)
        self._session = new

    # -- input ------------------------------------------------------------------------------------
    def _make_prompt(self, input, output):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event) -> None:
            event.current_buffer.insert_text("\n")

        history = InMemoryHistory()
        if self.history:
            path = history_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            history = FileHistory(str(path))
        self._multiline = Condition(lambda: in_triple_quotes(self._prompt.default_buffer.text))
        return PromptSession(
            history=history,
            multiline=self._multiline,
            key_bindings=keys,
            completer=SlashCompleter(self),
            complete_while_typing=False,
            bottom_toolbar=self.toolbar,
            input=input,
            output=output,
        )

    def toolbar(self) -> str:
        if not self.loaded:
            return f" {self.settings.model or 'default model'} · loading on {self.settings.backend} ..."
        s = self._session
        return (
            f" {s.model.config.name} · {s.model.backend} · {s.model.template.name} · temp {s.chain.settings.get('temperature')}"
            f" · context {s.used}/{s.context} · cached {len(s.ledger)} "
        )

    def read(self) -> str:
        text, self._pending = self._pending, ""
        return self._prompt.prompt(">>> ", default=text)

    # -- the loop ---------------------------------------------------------------------------------
    def banner(self) -> None:
        name = self.settings.model or "the default model (SmolLM2-135M-Instruct)"
        self.say(f"llamachat: chatting with {name} on {self.settings.backend}. /help for commands, Ctrl-D or /quit to end.", "dim")

    def run(self) -> int:
        self.banner()
        if self.resume:
            if not self._handle(lambda: self.say(transcript.restore(self.session, transcript.read(self.resume)))):
                return 2
        while True:
            try:
                line = self.read()
            except KeyboardInterrupt:
                self.say("(Ctrl-D or /quit ends the chat)", "dim")
                continue
            except EOFError:
                break
            code = self.handle_line(line)
            if code is not None:
                if code:
                    return code
                break
        if self._session is not None and any(m["role"] == "assistant" for m in self._session.messages):
            self.autosave(self._session)
        return 0

    def handle_line(self, line: str) -> int | None:
        """Act on one line of input; an exit code when the chat should end."""
        if not line.strip():
            if line:
                self.say("empty message: nothing sent", "dim")
            return None
        parsed = commands.parse(line)
        if parsed and parsed[0] in commands.QUIT:
            return 0
        if parsed:
            ok = self._handle(lambda: commands.run(self, *parsed))
        else:
            text = unwrap_triple_quotes(commands.message_text(line))
            ok = self._handle(lambda: self.reply(lambda on_text: self.session.ask(text, on_text)), unsent=text)
        return None if ok else 2

    def _handle(self, action: Callable[[], Any], unsent: str = "") -> bool:
        """Run one action; a problem is one line and the chat goes on. False if the model failed to load."""
        try:
            action()
        except commands.QuitChat:
            raise
        except (LlamachatError, TemplateError, ValueError) as e:
            if self._load_error is e:
                self.say(f"llamachat: error: {e}", "red")
                return False
            self.say(str(e), "red")
            self._pending = unsent  # offered again at the prompt: nothing the user wrote is lost
        except KeyboardInterrupt:
            self.say("(interrupted)", "dim")
        except Exception as e:
            if self.debug:
                raise
            self.say(f"internal error: {type(e).__name__}: {e} (run with --debug for the traceback)", "red")
        return True


def history_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("llamachat")) / "history"


class SlashCompleter(Completer):
    """Completes /commands and their arguments: parameters, backends, profiles, templates, sessions."""

    def __init__(self, app: ChatApp):
        self.app = app

    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        if " " not in text:
            for name in commands.COMMANDS:
                if name.startswith(text[1:]):
                    yield Completion("/" + name, start_position=-len(text))
            return
        name, _, arg = text[1:].partition(" ")
        command = commands.COMMANDS.get(name)
        if command is None or " " in arg.strip():
            return
        for option in self.options(command.completes):
            if option.startswith(arg):
                yield Completion(option, start_position=-len(arg))

    def options(self, kind: str) -> list[str]:
        from .plugins import registry

        if kind == "param":
            params = (
                set(self.app._session.chain.params) if self.app.loaded else {p.name for s in registry().samplers.values() for p in s.params}
            )
            return sorted(params | {"max_tokens"})
        if kind == "backend":
            return sorted(registry().backends)
        if kind == "template":
            return sorted(registry().templates) + ["auto"]
        if kind == "profile":
            from .profiles import available_profiles

            return list(available_profiles())
        if kind == "session":
            return [s["name"] for s in transcript.list_sessions()]
        return []
