"""The interactive chat's terminal: prompt_toolkit for input, rich for output.

The model's life (loading, the Session, switching backend, template or profile) is the engine's,
chat.Chat; this module keeps the prompt, the toolbar, the reply printer and the messages. The prompt
appears at once; the model finishes loading in a background thread (the first message waits for it). Replies stream as they are generated, rendered as Markdown in a terminal and as plain
text otherwise. Ctrl-C stops a reply and keeps it; Ctrl-C at the prompt clears the line; Ctrl-D,
/quit, /exit or /bye end the chat. After every turn the transcript is saved atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory

from . import commands, transcript
from .chat import Chat
from .datadir import VARIABLE, data_dir, unwritable
from .echo import no_echo
from .errors import LlamachatError
from .printable import printable
from .profiles import ChatSettings
from .protocols import TemplateError
from .reply import ReplyPrinter

TRIPLE = '"""'


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
        chat: Chat,
        *,
        console=None,
        input=None,
        output=None,
        history: bool = True,
        resume: str | None = None,
        debug: bool = False,
    ):
        from rich.console import Console

        self.chat, self.debug = chat, debug
        self.console = console or Console(highlight=False)
        self.history, self.resume = history, resume
        self.storage_problem = ""  # said once at the start: why history and autosave are off
        if history and (problem := unwritable(folder := data_dir())):
            self.history, self.storage_problem = False, self._storage_off(folder, problem)
        self.autosave_name = transcript.new_autosave_name()
        self.autosave_digest: str | None = None  # the autosave file as this chat last read or wrote it
        self._pending = ""  # a message that could not be sent, offered again at the prompt
        self._prompt = self._make_prompt(input, output)

    @property
    def settings(self) -> ChatSettings:
        return self.chat.settings

    @property
    def loaded(self) -> bool:
        return self.chat.session is not None

    @property
    def session(self):
        if self.chat.session is not None:
            return self.chat.session
        if self.chat.load_error is None:  # still loading in the background
            self.say("loading the model ...", "dim")
        try:
            return self.chat.wait()
        except KeyboardInterrupt:  # a message waiting is offered again at the prompt (_handle): nothing is lost
            raise LlamachatError("the model is still loading (Ctrl-C stopped the wait); a message is kept at the prompt") from None

    # -- output -----------------------------------------------------------------------------------
    def say(self, text: str, style: str = "") -> None:
        # what the chat says quotes sessions, model metadata and templates' output: controls escaped
        self.console.print(printable(text), style=style or None, markup=False, highlight=False, soft_wrap=True)

    def reply(self, action: Callable) -> None:
        session = self.session
        with no_echo(), ReplyPrinter(self.console, self.settings.markdown, session.think) as printer:  # echo.py: why
            reply = action(printer)  # the answer goes to printer.write, a reasoning model's reasoning to printer.think
        notices = list(reply.notices)
        if reply.unsent:  # Ctrl-C during the prompt: nothing was generated; the message is offered again
            self._pending = reply.unsent
            notices.append("your message is offered again at the prompt (sending it costs only the rest of the prompt)")
        elif reply.interrupted:
            self.say("[interrupted: the partial reply is kept]", "yellow")
        for notice in notices:
            self.say(notice, "yellow")
        self.say(reply.stats.line(), "dim")
        self.autosave(session)

    def autosave(self, session) -> None:
        if not self.history:
            return
        try:
            path, self.autosave_digest, forked = transcript.save_unless_changed(
                session, self.autosave_name, self.autosave_digest, with_cache=False
            )
            if forked:
                old, self.autosave_name = self.autosave_name, path.stem
                self.say(f"{old} was continued by another chat meanwhile: this chat is saved as {self.autosave_name} (a fork)", "yellow")
        except LlamachatError as e:
            self.say(f"autosave failed: {e}", "red")

    @staticmethod
    def _storage_off(folder: Path, problem: str) -> str:
        return (
            f"{folder} cannot be written ({problem}): input history and autosave are off, the conversation "
            f"is kept in memory; /save PATH.json writes it to a file of your choice, {VARIABLE}=DIR sets another folder"
        )

    def default_save_name(self) -> str:
        return self.autosave_name

    # -- switching (the engine's; the words are the terminal's) ------------------------------------
    def switch_backend(self, name: str) -> None:
        self.say(self.chat.switch_backend(name))

    def switch_template(self, name: str) -> None:
        self.say(self.chat.switch_template(name))

    def switch_profile(self, name: str) -> None:
        self.say(self.chat.switch_profile(name, note=lambda text: self.say(text, "dim")))

    # -- input ------------------------------------------------------------------------------------
    def _make_prompt(self, input, output):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.filters import Condition
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event) -> None:
            event.current_buffer.insert_text("\n")

        history = KeptHistory(str(history_path())) if self.history else InMemoryHistory()
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
            return f" {self.model_name()} · loading on {self.settings.backend} ..."
        s = self.chat.session
        return (
            f" {self.model_name()} · {s.model.backend} · {s.model.template.name} · temp {s.chain.settings.get('temperature')}"
            f" · context {s.used}/{s.context} · cached {len(s.ledger)} "
        )

    def read(self) -> str:
        text, self._pending = self._pending, ""
        line = self._prompt.prompt(">>> ", default=text)
        history = self._prompt.history
        if isinstance(history, KeptHistory) and history.problem and not self.storage_problem:
            self.storage_problem = f"input history is off: {history_path()}: {history.problem}"
            self.say(self.storage_problem, "yellow")
        return line

    # -- the loop ---------------------------------------------------------------------------------
    def model_name(self) -> str:
        return self.chat.model_name()

    def banner(self) -> None:
        name = self.model_name()
        self.say(f"llamachat: chatting with {name} on {self.settings.backend}. /help for commands, Ctrl-D or /quit to end.", "dim")

    def run(self) -> int:
        self.banner()
        if self.storage_problem:
            self.say(self.storage_problem, "yellow")
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
        if self.chat.session is not None and any(m["role"] == "assistant" for m in self.chat.session.messages):
            self.autosave(self.chat.session)
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
            ok = self._handle(lambda: self.reply(lambda out: self.session.ask(text, out.write, out.think)), unsent=text)
        return None if ok else 2

    def _handle(self, action: Callable[[], Any], unsent: str = "") -> bool:
        """Run one action; a problem is one line and the chat goes on. False if the model failed to load."""
        try:
            action()
        except commands.QuitChat:
            raise
        except (LlamachatError, TemplateError, ValueError) as e:
            if self.chat.load_error is e:
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
    return data_dir() / "history"


class KeptHistory(FileHistory):
    """The input history file, whose failures (a disk that filled up mid-chat, a file that cannot
    be read) turn it off with one line instead of prompt_toolkit's traceback at every Enter."""

    problem = ""

    def load_history_strings(self) -> Iterable[str]:
        try:
            yield from list(super().load_history_strings())
        except (OSError, UnicodeDecodeError) as e:
            self.problem = getattr(e, "strerror", None) or str(e)

    def store_string(self, string: str) -> None:
        if self.problem:
            return
        try:
            super().store_string(string)
        except OSError as e:
            self.problem = e.strerror or str(e)


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
                set(self.app.chat.session.chain.params)
                if self.app.loaded
                else {p.name for s in registry().samplers.values() for p in s.params}
            )
            return sorted(params | {"max_tokens", "lookup", "overflow_free"})
        if kind == "backend":
            return sorted(registry().backends)
        if kind == "template":
            return sorted(registry().templates) + ["auto"]
        if kind == "think":
            return ["show", "hide", "off"]
        if kind == "profile":
            from .profiles import available_profiles

            return list(available_profiles())
        if kind == "session":
            return [s["name"] for s in transcript.list_sessions()]
        return []
