"""Keeping XLA:CPU from recomputing an array inside a costly consumer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def stored(values: Any, keep: jax.Array) -> Any:
    """``values`` (a pytree of arrays) read from buffers of their own in the consumers.

    XLA fuses the elementwise ops that produced an array (BatchNorm, ReLU, residual
    adds, comparisons) into its consumers and recomputes them there. Inside a transpose
    or a per-window gradient that costs 3-30x reading the stored array: the recomputation
    runs in transposed order, or once per window tap. A conditional is a fusion boundary
    XLA keeps. ``keep`` is a traced scalar bool that XLA cannot fold: it must be true
    whenever the values matter. Where it is false, float leaves come back as NaN and
    other leaves as zeros.
    """

    def lost(tree):
        return jax.tree.map(
            lambda v: (
                jnp.full_like(v, jnp.nan)
                if jnp.issubdtype(v.dtype, jnp.inexact)
                else jnp.zeros_like(v)
            ),
            tree,
        )

    return lax.cond(keep, lambda tree: tree, lost, values)


def always_true(value: jax.Array) -> jax.Array:
    """A traced scalar ``True`` read from ``value``'s first element, which XLA cannot
    fold to a constant: ``stored``'s ``keep`` for values that always matter."""
    first = jnp.ravel(value)[0]
    bits = lax.bitcast_convert_type(first, jnp.dtype(f"uint{8 * first.dtype.itemsize}"))
    return (bits | 1) != 0
