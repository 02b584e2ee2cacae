"""The hooks a llamachat plugin implements. Each receives a `register` callback and calls it once per
thing it provides; built-in plugins use exactly these hooks, through the same entry points."""

import pluggy

hookspec = pluggy.HookspecMarker("llamachat")
hookimpl = pluggy.HookimplMarker("llamachat")


@hookspec
def register_backends(register):
    """Register backends: `register(backend)`, a `llamachat.protocols.Backend`."""


@hookspec
def register_samplers(register):
    """Register samplers: `register(sampler)`, a `llamachat.protocols.Sampler`."""


@hookspec
def register_templates(register):
    """Register chat templates: `register(name, factory)`. `factory(model_template)` gets the model's
    own Jinja chat template (or None) and returns a `llamachat.protocols.Template`, or raises
    `TemplateError` when it cannot serve that model."""
