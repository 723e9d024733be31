"""Pieces shared by the classic architectures: pooling, BatchNorm, option lookup.

Everything here is shape-static and jit-friendly. Pooling follows PyTorch's
conventions (floor division of the output size, explicit padding) so weights
converted from torchvision give the same activations. ``max_pool`` is
:func:`convjax.ops.pooling.max_pool` (``ceil_mode=True`` for GoogLeNet's pools).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.ops.normalization import batch_norm_train
from convjax.ops.pooling import max_pool


def choose(table: Mapping[str, Any], key: str, what: str) -> Any:
    """``table[key]``, or a ``ValueError`` that names the valid keys."""
    if key not in table:
        raise ValueError(f"Unknown {what} {key!r}; valid: {', '.join(sorted(table))}")
    return table[key]


def avg_pool(x: jax.Array, window: int, stride: int, padding: int = 0) -> jax.Array:
    """x: [B, H, W, C] -> [B, H', W', C]; zero padding counted in the mean (PyTorch default)."""
    pad = ((padding, padding), (padding, padding))
    return nn.avg_pool(x, (window, window), strides=(stride, stride), padding=pad)


POOLS = {"max": max_pool, "avg": avg_pool}


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] averaging weights of PyTorch's ``AdaptiveAvgPool``.

    Output cell ``i`` averages input cells ``floor(i * n / m)`` to
    ``ceil((i + 1) * n / m) - 1`` (``n`` = in_size, ``m`` = out_size); the
    cells may overlap and, when ``m > n``, repeat.
    """
    weights = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        weights[i, start:end] = 1.0 / (end - start)
    return weights


def adaptive_avg_pool(x: jax.Array, output_size: int) -> jax.Array:
    """PyTorch ``AdaptiveAvgPool2d``: x [B, H, W, C] -> [B, output_size, output_size, C].

    Computed as two small static matrix products, so any input size works and
    the identity case (``H == W == output_size``) costs nothing.
    """
    _, height, width, _ = x.shape
    if height == output_size and width == output_size:
        return x
    rows = jnp.asarray(adaptive_pool_matrix(height, output_size), x.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(width, output_size), x.dtype)
    return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)


def flatten(x: jax.Array) -> jax.Array:
    """[B, ...] -> [B, prod(...)] in NHWC order."""
    return x.reshape((x.shape[0], -1))


class BatchNorm(nn.BatchNorm):
    """``flax.linen.BatchNorm`` whose training-mode gradient takes two passes over the
    activations (:func:`convjax.ops.normalization.batch_norm_train`); same parameters,
    statistics and values. Other settings (masks, feature axes other than the last,
    axis index groups, exact variance) and evaluation use Flax's own code."""

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
        at_call = use_running_average
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        plain = (
            self.axis in (-1, x.ndim - 1)
            and self.use_scale
            and self.use_bias
            and self.use_fast_variance
            and self.force_float32_reductions
            and self.axis_index_groups is None
            and mask is None
        )
        if use_running_average or self.is_initializing() or not plain:
            return super().__call__(x, at_call, mask=mask)
        channels = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(channels, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(channels, jnp.float32))
        scale = self.param("scale", self.scale_init, (channels,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (channels,), self.param_dtype)
        dtype = self.dtype or jnp.result_type(x, scale, bias)
        y, mean, var = batch_norm_train(
            x, scale.astype(jnp.float32), bias.astype(jnp.float32), self.epsilon, self.axis_name
        )
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(dtype)


def batch_norm(
    train: bool,
    axis_name: str | None,
    dtype: Any,
    name: str,
    zero_init: bool = False,
    epsilon: float = 1e-5,
) -> nn.BatchNorm:
    """BatchNorm with PyTorch's defaults (eps 1e-5, running-average momentum 0.1).

    Statistics are averaged over ``axis_name`` when training data-parallel.
    ``zero_init`` starts the scale at zero (the last BN of a residual branch).
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=epsilon,
        axis_name=axis_name,
        dtype=dtype,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """AlexNet's local response normalisation across channels, x: [B, H, W, C].

    ``b_c = a_c / (k + alpha * sum_{|c' - c| <= size // 2} a_c'^2) ** beta`` with the
    paper's constants. (PyTorch's ``LocalResponseNorm`` divides ``alpha`` by ``size``.)
    """
    squares = jnp.square(x.astype(jnp.float32))
    pad = ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2))
    sums = jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, 1, 1, size), (1, 1, 1, 1), pad)
    return (x / jnp.power(k + alpha * sums, beta)).astype(x.dtype)
