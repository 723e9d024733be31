"""Registry of model constructors by name.

Model modules register their public constructors with ``@register("name")``;
``get_model(name, **kwargs)`` builds one and names the valid choices when the
name is unknown.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import flax.linen as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: registers a model class or factory under ``name``."""

    def wrap(ctor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = ctor
        return ctor

    return wrap


def register_alias(name: str, ctor: Callable[..., nn.Module]) -> None:
    """Registers an existing constructor (e.g. a ``functools.partial``) under ``name``."""
    register(name)(ctor)


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def get_model_constructor(name: str) -> Callable[..., nn.Module]:
    """The registered constructor for ``name``; unknown names list the valid ones."""
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}.{hint} Valid models: {', '.join(list_models())}"
        ) from None


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds the registered model ``name`` with ``kwargs`` (e.g. ``num_classes=10``)."""
    return get_model_constructor(name)(**kwargs)
