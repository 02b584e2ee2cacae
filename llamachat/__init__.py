"""llamachat: a terminal chat for LLaMA-family models that people can trust and take apart."""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["load", "hookimpl", "__version__"]


def load(model=None, backend="numpy", **options):
    """Load a model; see `llamachat.api.load`."""
    from .api import load as _load

    return _load(model, backend, **options)
