"""Squared Euclidean distances between embeddings and same/different pair masks.

One implementation shared by the metric-learning losses (triplet, contrastive), the
collapse diagnostics, the one-shot evaluation and the verification drivers.
Distances are squared Euclidean, ``d(x, y) = ||x - y||^2`` (FaceNet's convention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Row-wise squared distances of matched rows: x, y [..., D] -> [...]."""
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(
            f"squared_distances needs x and y of one shape [..., D]; got {x.shape} and {y.shape}"
        )
    return jnp.sum(jnp.square(x - y), axis=-1)


def pairwise_squared_distances(x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """Squared Euclidean distances ``||x_i - y_j||^2`` between all rows.

    Args:
      x: [N, D].
      y: [M, D]; ``None`` for the distances among the rows of ``x`` (whose diagonal
        is then exactly zero).

    Returns:
      [N, M] float32, computed as a matrix product (full float32 precision) and
      clamped at zero.
    """
    same = y is None
    y = x if same else y
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"pairwise_squared_distances takes x [N, D] and y [M, D]; got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    sq_x = jnp.sum(x * x, axis=-1)
    sq_y = jnp.sum(y * y, axis=-1)
    dots = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    d = jnp.maximum(sq_x[:, None] + sq_y[None, :] - 2.0 * dots, 0.0)
    if same:
        d = d * (1.0 - jnp.eye(d.shape[0], dtype=d.dtype))
    return d


def pair_masks(labels: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Positive and negative pair masks ``[B, B]`` from ``labels [B]``.

    ``positive[i, j]``: i != j, same label, both real; ``negative[i, j]``: different
    labels, both real. ``mask [B]`` (1 real, 0 padding) defaults to all real.
    """
    b = labels.shape[0]
    real = jnp.ones((b,), bool) if mask is None else mask.astype(bool)
    both = real[:, None] & real[None, :]
    same = labels[:, None] == labels[None, :]
    positive = same & both & ~jnp.eye(b, dtype=bool)
    negative = ~same & both
    return positive, negative
