"""Batch normalisation in training mode, with a gradient of two passes over the data.

Differentiated by JAX, BatchNorm's forward stores ``x - mean`` as a residual and its
backward reads the activations in four to six elementwise and reduction passes.
:func:`batch_norm_train` stores only ``x`` (the convolution's output, kept anyway) and
computes its gradient in one reduction pass (``sum dy`` and ``sum dy (x - mean)``) and
one elementwise pass, as PyTorch's fused kernels do. Values equal Flax's ``BatchNorm``
(``use_fast_variance``, statistics in float32, averaged over ``axis_name``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _global_mean(values: jax.Array, axis_name: str | None) -> jax.Array:
    return values if axis_name is None else lax.pmean(values, axis_name)


def _global_sum(values: jax.Array, axis_name: str | None) -> jax.Array:
    return values if axis_name is None else lax.psum(values, axis_name)


def _varying(value: jax.Array) -> frozenset:
    """The mesh axes along which ``value`` differs between devices (shard_map typing)."""
    aval = jax.typeof(value)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _statistics(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-channel mean, variance (clipped at 0) and the unclipped ``E[x^2] - E[x]^2``."""
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    moments = jnp.stack([x32.mean(axes), jnp.square(x32).mean(axes)])
    mean, mean_square = _global_mean(moments, axis_name)
    raw_var = mean_square - jnp.square(mean)
    return mean, jnp.maximum(0.0, raw_var), raw_var


def _normalize(x, mean, var, scale, bias, epsilon):
    return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    epsilon: float = 1e-5,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Normalise x [..., C] with its batch statistics over every axis but the last.

    scale, bias: [C]. Statistics are averaged over the devices of ``axis_name`` (pmap or
    shard_map) when it is given. Returns ``(y [..., C], mean [C], var [C])``: ``y`` in
    the dtype of ``x`` promoted with ``scale`` (as Flax's), the biased batch variance
    ``var`` for the running averages.
    """
    return _forward(x, scale, bias, epsilon, axis_name)[0]


def _forward(x, scale, bias, epsilon, axis_name):
    mean, var, raw_var = _statistics(x, axis_name)
    y = _normalize(x, mean, var, scale, bias, epsilon)
    return (y, mean, var), (x, mean, raw_var, scale)


def _backward(epsilon, axis_name, residuals, cotangents):
    x, mean, raw_var, scale = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    count = x.size // x.shape[-1]
    dy32 = dy.astype(mean.dtype)
    centred = x.astype(mean.dtype) - mean
    sum_dy, sum_dy_centred = dy32.sum(axes), (dy32 * centred).sum(axes)
    inv_std = lax.rsqrt(jnp.maximum(0.0, raw_var) + epsilon)
    multiplier = inv_std * scale
    dbias, dscale = sum_dy, sum_dy_centred * inv_std
    if axis_name is not None and axis_name in _varying(x) and axis_name not in _varying(scale):
        # shard_map with varying-axis checks: as JAX's own autodiff does, a parameter that
        # is the same on every device gets the sum of the devices' gradients.
        dbias, dscale = lax.psum((dbias, dscale), axis_name)
    # Cotangents of the global mean and variance, each device's part summed over devices.
    dvar_local = -0.5 * scale * inv_std**3 * sum_dy_centred
    dmean_local = -multiplier * sum_dy
    total = _global_sum(jnp.stack([dmean_local, dvar_local]), axis_name)
    dvar_total = jnp.where(raw_var > 0, total[1] + dvar, 0.0)
    dmean_total = total[0] + dmean
    global_count = count if axis_name is None else count * lax.psum(1, axis_name)
    # mean = sum(x) / N and var = sum(x^2) / N - mean^2 over the global batch.
    dx = dy32 * multiplier + (dmean_total + 2.0 * dvar_total * centred) / global_count
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_forward, _backward)
