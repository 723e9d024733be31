"""Triplet loss (FaceNet, Schroff et al. 2015) with online mining inside a batch.

For an anchor A, a positive P (same identity) and a negative N (another identity)

    L(A, P, N) = max(d(A, P) - d(A, N) + alpha, 0),   d(x, y) = ||f(x) - f(y)||^2,

with FaceNet's alpha = 0.2 on L2-normalised embeddings. The batch losses mine the
triplets from ``embeddings [B, D]`` and ``labels [B]``:

- ``batch_all``: every valid triplet (a, p, n), a != p (Hermans et al. 2017).
- ``batch_hard``: per anchor, its farthest positive and closest negative.
- ``semi_hard``: per anchor-positive pair, the closest negative that is still
  farther than the positive (FaceNet's semi-hard negative). When no such negative
  exists the pair falls back to its *farthest* negative, as TF-Addons'
  ``TripletSemiHardLoss`` does (the gentlest violation, which avoids FaceNet's
  collapse from always picking the hardest negative).
- ``soft_margin``: batch-hard with ``softplus(d_ap - d_an)`` in place of the hinge
  (Hermans et al.'s soft margin; ``margin`` is unused).

An optional ``mask [B]`` (1 real, 0 padding) removes examples from every role.
Distances are squared Euclidean, as in the formula above
(:mod:`convjax.ops.distances`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from convjax.ops.distances import pair_masks, pairwise_squared_distances, squared_distances

FACENET_MARGIN = 0.2
TRIPLET_MINING = ("batch_all", "batch_hard", "semi_hard", "soft_margin")
REDUCTIONS = ("sum", "mean", "mean_active")


def reduce_losses(losses: jax.Array, valid: jax.Array, reduction: str) -> jax.Array:
    """Reduces per-triplet ``losses`` over the entries where ``valid`` is true."""
    valid = valid.astype(jnp.float32)
    total = jnp.sum(losses * valid)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / jnp.maximum(jnp.sum(valid), 1.0)
    if reduction == "mean_active":
        active = valid * (losses > 0)
        return total / jnp.maximum(jnp.sum(active), 1.0)
    raise ValueError(f"Unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")


def _check(embeddings: jax.Array, labels: jax.Array, mask: jax.Array | None) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [B, D]; got shape {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"labels must be [B] = [{embeddings.shape[0]}] to match embeddings "
            f"{tuple(embeddings.shape)}; got shape {tuple(labels.shape)}"
        )
    if mask is not None and mask.shape != labels.shape:
        raise ValueError(f"mask must be [B] like labels {tuple(labels.shape)}; got {mask.shape}")


def triplet_loss(
    anchor: jax.Array,
    positive: jax.Array,
    negative: jax.Array,
    margin: float = FACENET_MARGIN,
    reduction: str = "sum",
) -> jax.Array:
    """FaceNet's loss over given triplets: anchor, positive, negative [T, D] -> scalar.

    ``reduction='sum'`` is the paper's sum over the set of triplets.
    """
    if not (anchor.shape == positive.shape == negative.shape) or anchor.ndim != 2:
        raise ValueError(
            "anchor, positive and negative must all be [T, D]; got "
            f"{tuple(anchor.shape)}, {tuple(positive.shape)}, {tuple(negative.shape)}"
        )
    d_ap = squared_distances(anchor, positive)
    d_an = squared_distances(anchor, negative)
    losses = jnp.maximum(d_ap - d_an + margin, 0.0)
    return reduce_losses(losses, jnp.ones_like(losses, bool), reduction)


def batch_all_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = FACENET_MARGIN,
    mask: jax.Array | None = None,
    reduction: str = "mean_active",
) -> jax.Array:
    """Every valid triplet in the batch. embeddings [B, D], labels [B] -> scalar.

    ``mean_active`` averages over the triplets with a positive loss (Hermans et
    al.), ``mean`` over all valid triplets, ``sum`` is FaceNet's sum.
    """
    _check(embeddings, labels, mask)
    d = pairwise_squared_distances(embeddings)
    positive, negative = pair_masks(labels, mask)
    losses = jnp.maximum(d[:, :, None] - d[:, None, :] + margin, 0.0)  # [a, p, n]
    valid = positive[:, :, None] & negative[:, None, :]
    return reduce_losses(losses, valid, reduction)


def _hardest(d: jax.Array, positive: jax.Array, negative: jax.Array):
    """Per anchor: farthest positive, closest negative and whether both exist."""
    d_ap = jnp.max(jnp.where(positive, d, -jnp.inf), axis=1)
    d_an = jnp.min(jnp.where(negative, d, jnp.inf), axis=1)
    valid = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
    return jnp.where(valid, d_ap, 0.0), jnp.where(valid, d_an, 0.0), valid


def batch_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = FACENET_MARGIN,
    mask: jax.Array | None = None,
    reduction: str = "mean",
    soft: bool = False,
) -> jax.Array:
    """One triplet per anchor: its farthest positive and closest negative.

    embeddings [B, D], labels [B] -> scalar; anchors without a positive or a
    negative are left out. ``soft=True`` is the soft margin ``softplus(d_ap - d_an)``.
    """
    _check(embeddings, labels, mask)
    d = pairwise_squared_distances(embeddings)
    positive, negative = pair_masks(labels, mask)
    d_ap, d_an, valid = _hardest(d, positive, negative)
    if soft:
        losses = jax.nn.softplus(d_ap - d_an)
    else:
        losses = jnp.maximum(d_ap - d_an + margin, 0.0)
    return reduce_losses(losses, valid, reduction)


def semi_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = FACENET_MARGIN,
    mask: jax.Array | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """One triplet per anchor-positive pair with a semi-hard negative.

    embeddings [B, D], labels [B] -> scalar. For the pair (a, p) the negative is the
    closest n with d(a, n) > d(a, p); without one, the farthest negative.
    """
    _check(embeddings, labels, mask)
    d = pairwise_squared_distances(embeddings)
    positive, negative = pair_masks(labels, mask)
    d_ap = d[:, :, None]  # [a, p, 1]
    d_an = d[:, None, :]  # [a, 1, n]
    farther = negative[:, None, :] & (d_an > d_ap)  # [a, p, n]
    semi_hard = jnp.min(jnp.where(farther, d_an, jnp.inf), axis=2)  # [a, p]
    farthest = jnp.max(jnp.where(negative, d, -jnp.inf), axis=1)  # [a]
    chosen = jnp.where(jnp.any(farther, axis=2), semi_hard, farthest[:, None])
    valid = positive & jnp.any(negative, axis=1)[:, None]
    losses = jnp.maximum(d - jnp.where(valid, chosen, 0.0) + margin, 0.0)
    return reduce_losses(losses, valid, reduction)


def mined_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mining: str = "semi_hard",
    margin: float = FACENET_MARGIN,
    mask: jax.Array | None = None,
    reduction: str | None = None,
) -> jax.Array:
    """Triplet loss with the online ``mining`` mode (one of :data:`TRIPLET_MINING`).

    ``reduction=None`` takes each mode's usual one: ``mean_active`` for batch-all,
    ``mean`` otherwise.
    """
    if mining not in TRIPLET_MINING:
        raise ValueError(f"Unknown triplet mining {mining!r}; valid: {', '.join(TRIPLET_MINING)}")
    if reduction is not None and reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)}")
    if mining == "batch_all":
        return batch_all_triplet_loss(embeddings, labels, margin, mask, reduction or "mean_active")
    if mining == "semi_hard":
        return semi_hard_triplet_loss(embeddings, labels, margin, mask, reduction or "mean")
    return batch_hard_triplet_loss(
        embeddings, labels, margin, mask, reduction or "mean", soft=mining == "soft_margin"
    )
