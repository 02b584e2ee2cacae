"""The chat's engine, apart from its terminal: the model's life in a chat.

`Chat` loads the model the settings name, builds the Session every turn goes through (the one place
a Session is built: stop strings, context and overflow included), and switches backend, template or
profile mid-chat. Loading takes one way, at start-up and for /backend or /profile alike: `plan`
checks what can be checked at once (the backend, the template's name, the model's files) so that bad
input is one line before anything heavy happens, and `Plan.load` loads the checkpoint on the backend.
The REPL (repl.py) and the one-shot answer (cli.py) drive it; neither builds a model or a Session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .api import Model, load_checkpoint
from .backends import AUTO, choose_backend, find_backend
from .checkpoints import Checkpoint, open_checkpoint
from .default_model import default_model
from .errors import LlamachatError
from .plugins import registry
from .profiles import ChatSettings, check_profile_model, load_profile, settings_from_profile
from .protocols import Backend, Template
from .sampling import SamplerChain
from .session import Session
from .templates import choose_template, get_template


@dataclass(frozen=True)
class Plan:
    """A model to load, checked: the backend found and able to run here, the checkpoint open."""

    settings: ChatSettings
    backend: Backend
    checkpoint: Checkpoint
    reason: str = ""  # why `auto` chose the backend ("" when it was named)
    own_template: Template | None = None  # the model's own Jinja template, compiled when it was checked

    def load(self, template: Template | None = None) -> Model:
        """The model on the backend, with `template` (already made), else the model's own template as
        `plan` compiled it (when the settings ask for it or for none), else the settings' template."""
        s = self.settings
        if template is None:
            template = self.own_template if self.own_template is not None else s.template
        return load_checkpoint(self.checkpoint, self.backend, template=template, backend_reason=self.reason, **s.backend_options)


def let_go(model: Model) -> None:
    """A model the chat has switched away from (once the new one runs: a failed switch keeps it): a
    runner spread over several processes (--tp) stops its other ranks now, not at exit, so they do not
    hold their share of the weights for the rest of the chat (protocols.Backend: `close()`)."""
    close = getattr(model.runner, "close", None)
    if close is not None:
        close()


class Chat:
    def __init__(self, settings: ChatSettings, chain: SamplerChain | None = None, *, model: Model | None = None):
        self.settings, self.chain = settings, chain
        self.session: Session | None = None  # None until the model is loaded
        self.load_error: BaseException | None = None  # what stopped the background load
        self._loader: threading.Thread | None = None
        self._ready = threading.Event()  # set when the background load ends, loaded or not
        self._checkpoint: Checkpoint | None = None  # the last one opened (a backend switch reuses it)
        if model is not None:
            self.session = self._new_session(model)

    # -- loading: start-up, /backend and /profile take the same way --------------------------------
    def plan(self, settings: ChatSettings, path: str | Path | None = None) -> Plan:
        """Check the backend and the template's name, and open the model (`path`, else the
        settings' model, else the default one): bad input fails here, before anything heavy. Backend
        `auto` is chosen for the file once it is open (backends.choose_backend)."""
        backend = None if settings.backend == AUTO else find_backend(settings.backend)
        templates = registry().templates
        if settings.template not in (None, "auto") and settings.template not in templates:
            raise LlamachatError(f"unknown template {settings.template!r} (available: {', '.join(sorted(templates))})")
        where = Path(path or settings.model or default_model())
        if self._checkpoint is None or self._checkpoint.path != where:
            self._checkpoint = open_checkpoint(where)
        own = self._checkpoint.config.chat_template
        own_template = None
        if settings.template in (None, "auto", "jinja") and own:
            # compiled and tried now (a template needing what we lack fails here), and the one loaded
            own_template = get_template("jinja", own)
        reason = ""
        if backend is None:
            name, reason = choose_backend(self._checkpoint.format, settings.backend_options.get("tp", 1))
            backend = find_backend(name)
        return Plan(settings, backend, self._checkpoint, reason, own_template)

    def start(self, plan: Plan, *, background: bool = False) -> None:
        """Load the planned model and start the conversation, now or in a background thread (the
        chat's prompt appears at once; `wait` joins it)."""
        if not background:
            self.session = self._new_session(plan.load())
            return
        self._loader = threading.Thread(target=self._load_and_warm_up, args=(plan,), daemon=True)
        self._loader.start()

    def _load_and_warm_up(self, plan: Plan) -> None:
        try:
            model = plan.load()
            # the first forward pass pays one-time costs (~1 s here): pay them while the user types
            model.runner.forward([model.config.bos_id or 0] * 8, model.runner.new_cache(8))
            self.session = self._new_session(model)
        except BaseException as e:  # surfaced in the thread that waits
            self.load_error = e
        finally:
            self._ready.set()

    def wait(self) -> Session:
        """The session, once the model is loaded; what stopped the load, raised here."""
        if self.session is None and self._loader is not None:
            # an Event, not Thread.join: a join that Ctrl-C interrupts can return at once ever after
            # (CPython before 3.13), and the next wait then found no session
            while not self._ready.wait(0.1):
                pass
        if self.load_error is not None:
            raise self.load_error
        if self.session is None:
            raise LlamachatError("no model is loaded")
        return self.session

    def model_name(self) -> str:
        """The model's display name (checkpoints/names.py), known as soon as its checkpoint is open."""
        if self.session is not None:
            return self.session.model.config.name
        if self._checkpoint is not None:
            return self._checkpoint.config.name
        return self.settings.model or "the default model"

    # -- the one place a Session is built ----------------------------------------------------------
    def _new_session(self, model: Model, carry: Session | None = None) -> Session:
        """A Session on `model` from the settings, or carrying `carry`'s conversation, sampler and
        limits over to it (a switch of backend or model: the cache is re-evaluated at once)."""
        s = self.settings
        if carry is None:
            return Session(
                model,
                self.chain,
                system=s.system,
                max_tokens=s.max_tokens,
                context=s.context,
                overflow=s.overflow,
                overflow_free=s.overflow_free,
                stop=s.stop,
                lookup=s.lookup,
            )
        new = Session(
            model,
            carry.chain,
            max_tokens=carry.max_tokens,
            context=s.context,
            overflow=carry.overflow,
            overflow_free=carry.overflow_free,
            stop=carry.stop_strings,
            lookup=carry.lookup,
        )
        new.messages, new.dropped, new.totals = carry.messages, carry.dropped, carry.totals
        new.template_context, new.think = carry.template_context, carry.think  # the chat's date and /think carry over
        new.resync(evaluate=True)
        return new

    # -- switching ---------------------------------------------------------------------------------
    def switch_backend(self, name: str) -> str:
        """The same model and conversation on backend `name`; says what was left behind."""
        old = self.wait()
        s = self.settings
        # device, dtype and quantize were chosen for the backend being left (numpy refuses bfloat16,
        # mlx a CUDA device): the new one starts from its own defaults; the thread count is the machine's.
        options = {k: v for k, v in s.backend_extra.items() if k == "threads"}
        left = [k for k, v in s.backend_options.items() if v is not None and k not in options]
        new = replace(s, backend=name, device=None, dtype=None, backend_extra=options)
        # the same loader as start-up; the template, already made for this tokenizer, is kept
        self.session = self._new_session(self.plan(new, old.model.path).load(old.model.template), carry=old)
        self.settings = new
        let_go(old.model)
        defaults = f" with its own defaults (the {', '.join(left)} set for {old.model.backend} do not carry over)" if left else ""
        model = self.session.model
        chosen = f"{model.backend} (auto: {model.backend_reason})" if name == AUTO else name
        return f"backend set to {chosen}{defaults}; the conversation was re-evaluated ({len(self.session.ledger)} tokens)"

    def switch_template(self, name: str) -> str:
        session = self.wait()
        template = choose_template(name, session.model.config.chat_template, session.model.tokenizer)
        old, session.model = session.model, session.model.with_template(template)
        try:
            session.resync()
        except LlamachatError:
            session.model = old
            raise
        self.settings.template = name
        return f"template set to {template.name}" if name in (template.name, None) else f"template set to {name} ({template.name})"

    def switch_profile(self, name: str, note: Callable[[str], None] = lambda _: None) -> str:
        """The profile's model, backend, template, sampler and chat settings; `note` hears of a load."""
        session = self.wait()
        profile = load_profile(name, session.chain.params)
        new = settings_from_profile(profile, name)
        check_profile_model(new)
        if (new.model, new.backend, new.backend_options) != (self.settings.model, self.settings.backend, self.settings.backend_options):
            note(f"loading {new.model or 'the default model'} on {new.backend} ...")
            self.session = self._new_session(self.plan(new).load(), carry=session)
            let_go(session.model)
        elif new.template != self.settings.template:
            note(self.switch_template(new.template or "auto"))
        session = self.wait()
        session.chain.configure(profile["sampler"], source=f"profile {name}")
        session.max_tokens, session.overflow, session.lookup = new.max_tokens, new.overflow, new.lookup
        session.overflow_free = new.overflow_free
        if new.system != session.system:
            for line in session.set_system(new.system):
                note(line)
        self.settings = new
        return f"profile set to {name}"
