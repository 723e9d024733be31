"""Collapse diagnostics for embedding training.

The common failure of triplet training is every embedding collapsing to one point:
then d(a, p) = d(a, n) = 0 and every triplet's loss sits at the margin. The
diagnostics are cheap, jit-able batch statistics logged every step;
:func:`warn_if_collapsed` turns them into a warning on the host.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from absl import logging

from convjax.ops.distances import pair_masks, pairwise_squared_distances

DIAGNOSTICS = ("mean_pos_dist", "mean_neg_dist", "fraction_active", "spread")


class CollapseWarning(UserWarning):
    """The embeddings of a batch have (nearly) collapsed to one point."""


def embedding_diagnostics(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float,
    mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Batch statistics of embeddings [B, D] with labels [B] (jit-able).

    Returns scalars:
      mean_pos_dist: mean squared distance over same-identity pairs.
      mean_neg_dist: mean squared distance over different-identity pairs.
      fraction_active: fraction of all valid triplets with a positive hinge loss
        ``d_ap - d_an + margin > 0``.
      spread: mean squared distance of the embeddings to their batch centroid
        (1 for random unit vectors in high dimension, 0 when collapsed).
    """
    embeddings = jax.lax.stop_gradient(embeddings).astype(jnp.float32)
    d = pairwise_squared_distances(embeddings)
    positive, negative = pair_masks(labels, mask)
    pos, neg = positive.astype(jnp.float32), negative.astype(jnp.float32)
    # Active triplets counted in O(B^2 log B): per anchor, the negatives closer than
    # d(a, p) + margin, found by a search in the anchor's sorted negative distances.
    negative_rows = jnp.sort(jnp.where(negative, d, jnp.inf), axis=1)
    closer = jax.vmap(lambda row, q: jnp.searchsorted(row, q, side="left"))(
        negative_rows, d + margin
    )
    active = jnp.sum(closer * pos)
    triplets = jnp.sum(pos * jnp.sum(neg, axis=1, keepdims=True))
    real = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(real), 1.0)
    centroid = jnp.sum(embeddings * real[:, None], axis=0) / count
    spread = jnp.sum(jnp.sum(jnp.square(embeddings - centroid), axis=-1) * real) / count
    return {
        "mean_pos_dist": jnp.sum(d * pos) / jnp.maximum(jnp.sum(pos), 1.0),
        "mean_neg_dist": jnp.sum(d * neg) / jnp.maximum(jnp.sum(neg), 1.0),
        "fraction_active": active / jnp.maximum(triplets, 1.0),
        "spread": spread,
    }


def is_collapsed(metrics: Mapping[str, float], margin: float, tolerance: float = 0.1) -> bool:
    """True when different identities lie within ``tolerance * margin`` of each other
    on average, so every triplet loss is within that of the margin."""
    return float(metrics["mean_neg_dist"]) < tolerance * margin


def warn_if_collapsed(
    metrics: Mapping[str, float], margin: float, step: int | None = None, tolerance: float = 0.1
) -> bool:
    """Warns (``CollapseWarning`` and the absl log) when the embeddings collapsed.

    ``metrics`` are host floats holding :data:`DIAGNOSTICS` (e.g. one logged step).
    Returns whether it warned.
    """
    if not is_collapsed(metrics, margin, tolerance):
        return False
    where = f" at step {step}" if step is not None else ""
    message = (
        f"Embeddings collapsed{where}: mean negative distance "
        f"{float(metrics['mean_neg_dist']):.4g} and positive distance "
        f"{float(metrics['mean_pos_dist']):.4g} are below {tolerance:g} x margin "
        f"({margin:g}), spread {float(metrics.get('spread', float('nan'))):.4g}; the triplet "
        "loss sits at the margin. Lower the learning rate, use semi-hard mining, or check "
        "that batches hold several images per identity (P x K sampling)."
    )
    logging.warning(message)
    warnings.warn(message, CollapseWarning, stacklevel=2)
    return True
