"""Contrastive loss (Hadsell, Chopra & LeCun 2006) for Siamese embeddings.

For a pair with Euclidean distance ``d = ||f(x1) - f(x2)||`` and ``y = 1`` when the
two images show the same identity:

    L = y * d^2 + (1 - y) * max(margin - d, 0)^2.

Same pairs are pulled together; different pairs are pushed at least ``margin``
apart (distances between L2-normalised embeddings lie in [0, 2]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from convjax.losses.triplet import reduce_losses
from convjax.ops.distances import pair_masks, pairwise_squared_distances, squared_distances

CONTRASTIVE_MARGIN = 1.0


def _safe_sqrt(x: jax.Array) -> jax.Array:
    """sqrt with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def contrastive_pair_losses(
    squared_distances: jax.Array, same: jax.Array, margin: float = CONTRASTIVE_MARGIN
) -> jax.Array:
    """Per-pair losses from squared distances [...] and ``same`` [...] (bool or 0/1)."""
    same = same.astype(jnp.float32)
    d = _safe_sqrt(squared_distances)
    return same * squared_distances + (1.0 - same) * jnp.square(jnp.maximum(margin - d, 0.0))


def contrastive_loss(
    embeddings1: jax.Array,
    embeddings2: jax.Array,
    same: jax.Array,
    margin: float = CONTRASTIVE_MARGIN,
    reduction: str = "mean",
) -> jax.Array:
    """Loss over given pairs: embeddings1, embeddings2 [B, D], same [B] -> scalar."""
    if embeddings1.shape != embeddings2.shape or embeddings1.ndim != 2:
        raise ValueError(
            "embeddings1 and embeddings2 must both be [B, D]; got "
            f"{tuple(embeddings1.shape)} and {tuple(embeddings2.shape)}"
        )
    if same.shape != embeddings1.shape[:1]:
        raise ValueError(f"same must be [B] = [{embeddings1.shape[0]}]; got {tuple(same.shape)}")
    d2 = squared_distances(embeddings1, embeddings2)
    losses = contrastive_pair_losses(d2, same, margin)
    return reduce_losses(losses, jnp.ones_like(losses, bool), reduction)


def batch_contrastive_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = CONTRASTIVE_MARGIN,
    mask: jax.Array | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """Every pair i < j of the batch: embeddings [B, D], labels [B] -> scalar."""
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"expected embeddings [B, D] and labels [B]; got {tuple(embeddings.shape)} "
            f"and {tuple(labels.shape)}"
        )
    d2 = pairwise_squared_distances(embeddings)
    positive, negative = pair_masks(labels, mask)
    upper = jnp.triu(jnp.ones(d2.shape, bool), k=1)
    losses = contrastive_pair_losses(d2, positive, margin)
    return reduce_losses(losses, (positive | negative) & upper, reduction)
