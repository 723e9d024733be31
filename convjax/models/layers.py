"""Layers shared by every architecture, with the convolution swappable in one place.

Every model builds its convolutions from :data:`Conv` (a ``flax.linen.Conv`` whose
``conv_general_dilated`` is :func:`conv_general_dilated`). That function dispatches
to the implementation selected with :func:`set_conv_impl` / :func:`use_conv_impl`
at trace time, so a faster convolution (e.g. one specialised for CPU training) can
replace XLA's for every model without touching any of them.

Select the implementation before a step is traced: jitted functions that were
already compiled keep the implementation they were traced with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import flax.linen as nn
from jax import lax

ConvImpl = Callable[..., object]

_CONV_IMPLS: dict[str, ConvImpl] = {"xla": lax.conv_general_dilated}
_active_conv_impl: str = "xla"


def register_conv_impl(name: str, fn: ConvImpl) -> None:
    """Registers a drop-in replacement for ``jax.lax.conv_general_dilated``."""
    _CONV_IMPLS[name] = fn


def conv_impls() -> list[str]:
    """Names of the registered convolution implementations."""
    return sorted(_CONV_IMPLS)


def set_conv_impl(name: str) -> None:
    """Selects the convolution every :data:`Conv` traces from now on."""
    global _active_conv_impl
    if name not in _CONV_IMPLS:
        raise ValueError(
            f"Unknown convolution implementation {name!r}; valid: {', '.join(conv_impls())}"
        )
    _active_conv_impl = name


def active_conv_impl() -> str:
    return _active_conv_impl


@contextlib.contextmanager
def use_conv_impl(name: str) -> Iterator[None]:
    """Context manager form of :func:`set_conv_impl`."""
    previous = _active_conv_impl
    set_conv_impl(name)
    try:
        yield
    finally:
        set_conv_impl(previous)


def conv_general_dilated(*args, **kwargs):
    """``lax.conv_general_dilated`` signature; dispatches to the active implementation."""
    return _CONV_IMPLS[_active_conv_impl](*args, **kwargs)


class Conv(nn.Conv):
    """``flax.linen.Conv`` routed through the swappable :func:`conv_general_dilated`.

    Once its kernel exists, an input whose channel count does not match it is
    rejected with a ``ValueError`` naming the expected shape (at trace time, before
    XLA compiles anything).
    """

    conv_general_dilated: ConvImpl = conv_general_dilated

    def __call__(self, inputs):
        if self.has_variable("params", "kernel"):
            kernel_shape = self.get_variable("params", "kernel").shape
            expected = kernel_shape[-2] * self.feature_group_count
            if inputs.shape[-1] != expected:
                raise ValueError(
                    f"Conv layer {self.name!r} expects inputs [..., H, W, C] with "
                    f"C={expected} channel(s); got shape {tuple(inputs.shape)}."
                )
        return super().__call__(inputs)
