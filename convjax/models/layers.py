"""The convolution layer every architecture builds from, with its implementation per model.

:class:`Conv` is ``flax.linen.Conv`` with a ``conv_impl`` field naming the convolution
it runs (parameters and outputs are the same whichever it is):

- ``'xla'``: ``jax.lax.conv_general_dilated`` (XLA's convolution; fast on GPU/TPU).
- ``'cpu'``: :func:`convjax.ops.conv_cpu.conv_general_dilated`, whose gradients are
  matrix multiplies and whose one-input-channel case is a fused stencil; several
  times faster to train on CPU, where XLA's weight-gradient convolution is slow.
- ``'auto'`` (the default): ``'cpu'`` when JAX's default backend is the CPU, else
  ``'xla'``, decided when the model is traced.

Every zoo model has a ``conv_impl`` field (default ``'auto'``) that it passes to its
convolutions, so ``get_model('resnet50', conv_impl='xla')`` chooses per model.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
from jax import lax

from convjax.ops import conv_cpu

ConvFunction = Callable[..., jax.Array]

CONV_IMPLS = ("auto", "cpu", "xla")


def resolve_conv_impl(conv_impl: str) -> str:
    """``'cpu'`` or ``'xla'``: what ``conv_impl`` runs on JAX's current default backend."""
    check_conv_impl(conv_impl)
    if conv_impl == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "xla"
    return conv_impl


def check_conv_impl(conv_impl: str) -> None:
    """Raises ``ValueError`` naming the valid choices unless ``conv_impl`` is one."""
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv_impl {conv_impl!r}; valid: {', '.join(CONV_IMPLS)}")


def _auto_conv(*args, **kwargs) -> jax.Array:
    return conv_function(resolve_conv_impl("auto"))(*args, **kwargs)


_FUNCTIONS: dict[str, ConvFunction] = {
    "auto": _auto_conv,
    "cpu": conv_cpu.conv_general_dilated,
    "xla": lax.conv_general_dilated,
}


def conv_function(conv_impl: str) -> ConvFunction:
    """The ``lax.conv_general_dilated``-compatible function ``conv_impl`` names."""
    check_conv_impl(conv_impl)
    return _FUNCTIONS[conv_impl]


class Conv(nn.Conv):
    """``flax.linen.Conv`` running the convolution ``conv_impl`` names.

    x: [B, H, W, C] -> [B, H', W', features]. Once its kernel exists, an input whose
    channel count does not match it is rejected with a ``ValueError`` naming the
    expected shape (at trace time, before XLA compiles anything).
    """

    conv_impl: str = "auto"

    def __post_init__(self) -> None:
        # The function flax.linen.Conv calls follows conv_impl (also through clone()).
        object.__setattr__(self, "conv_general_dilated", conv_function(self.conv_impl))
        super().__post_init__()

    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.has_variable("params", "kernel"):
            kernel_shape = self.get_variable("params", "kernel").shape
            expected = kernel_shape[-2] * self.feature_group_count
            if inputs.shape[-1] != expected:
                raise ValueError(
                    f"Conv layer {self.name!r} expects inputs [..., H, W, C] with "
                    f"C={expected} channel(s); got shape {tuple(inputs.shape)}."
                )
        return super().__call__(inputs)
