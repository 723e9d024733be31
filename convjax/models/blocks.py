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
    return nn.BatchNorm(
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
