"""llamachat: a terminal chat for LLaMA-family models that people can trust and take apart."""

from .hookspecs import hookimpl
from .version import __version__

__all__ = ["load", "hookimpl", "__version__"]


def load(model=None, backend="numpy", **options):
    """Load a model; see `llamachat.api.load`."""
    from .api import load as _load

    return _load(model, backend, **options)
