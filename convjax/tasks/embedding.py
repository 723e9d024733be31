"""Metric learning of embeddings: triplet loss with online mining, or contrastive loss.

Batches: ``image`` [B, H, W, C] float, ``label`` [B] int identity; eval batches also
carry ``mask`` [B]. Training batches should hold several images per identity: use
:meth:`Embedding.train_iterator` (P identities x K images, identity-major; with
data parallelism keep P a multiple of the device count so every device's shard
holds whole identities, since mining happens within a device's shard).

Train metrics (means, logged by the loop): ``loss`` and the collapse diagnostics
``mean_pos_dist``, ``mean_neg_dist``, ``fraction_active``, ``spread``
(:mod:`convjax.face.diagnostics`). Eval sums over the valid examples of each
batch: ``recall_at_1`` (the nearest other example in the batch has the same
identity), ``loss`` (batch-hard hinge per anchor), ``count``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.face.diagnostics import embedding_diagnostics, warn_if_collapsed
from convjax.losses.contrastive import CONTRASTIVE_MARGIN, batch_contrastive_loss
from convjax.losses.triplet import FACENET_MARGIN, TRIPLET_MINING, mined_triplet_loss
from convjax.ops.distances import pair_masks, pairwise_squared_distances
from convjax.tasks.base import Batch, EvalFn, LossFn, PyTree, Task, TrainSampler, apply_model
from convjax.tasks.registry import register_task

EMBEDDING_LOSSES = ("triplet", "contrastive")


@register_task("embedding")
@dataclass(frozen=True)
class Embedding(Task):
    """``loss``: ``'triplet'`` (with ``mining`` in :data:`TRIPLET_MINING`) or
    ``'contrastive'`` (every pair of the batch). ``margin``: ``None`` for FaceNet's
    0.2 (triplet) or 1.0 (contrastive). ``images_per_identity``: K of the P x K
    training batches."""

    loss: str = "triplet"
    mining: str = "semi_hard"
    margin: float | None = None
    images_per_identity: int = 4

    def __post_init__(self):
        if self.loss not in EMBEDDING_LOSSES:
            raise ValueError(
                f"Unknown embedding loss {self.loss!r}; valid: {', '.join(EMBEDDING_LOSSES)}"
            )
        if self.mining not in TRIPLET_MINING:
            raise ValueError(
                f"Unknown triplet mining {self.mining!r}; valid: {', '.join(TRIPLET_MINING)}"
            )
        if self.images_per_identity < 2:
            raise ValueError(
                f"images_per_identity must be >= 2 (a positive needs a second image); "
                f"got {self.images_per_identity}"
            )

    @property
    def effective_margin(self) -> float:
        if self.margin is not None:
            return float(self.margin)
        return FACENET_MARGIN if self.loss == "triplet" else CONTRASTIVE_MARGIN

    def _loss(self, embeddings, labels, mask=None):
        if self.loss == "contrastive":
            return batch_contrastive_loss(embeddings, labels, self.effective_margin, mask)
        return mined_triplet_loss(embeddings, labels, self.mining, self.effective_margin, mask)

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            embeddings, new_state = apply_model(
                model, params, model_state, batch["image"], train=True, rng=rng
            )
            loss = self._loss(embeddings, batch["label"])
            metrics = embedding_diagnostics(embeddings, batch["label"], self.effective_margin)
            return loss, ({"loss": loss, **metrics}, new_state)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        margin = self.effective_margin

        def eval_fn(params, model_state, batch: Batch):
            embeddings, _ = apply_model(model, params, model_state, batch["image"], train=False)
            mask = batch["mask"].astype(jnp.float32)
            labels = batch["label"]
            d = pairwise_squared_distances(embeddings)
            positive, negative = pair_masks(labels, mask > 0)
            others = positive | negative  # every other real example
            nearest = jnp.argmin(jnp.where(others, d, jnp.inf), axis=1)
            hit = (labels[nearest] == labels) & jnp.any(others, axis=1)
            d_ap = jnp.max(jnp.where(positive, d, -jnp.inf), axis=1)
            d_an = jnp.min(jnp.where(negative, d, jnp.inf), axis=1)
            has_triplet = jnp.any(positive, axis=1) & jnp.any(negative, axis=1)
            hinge = jnp.where(has_triplet, jnp.maximum(d_ap - d_an + margin, 0.0), 0.0)
            return {
                "recall_at_1": jnp.sum(hit * mask),
                "loss": jnp.sum(hinge * mask),
                "count": jnp.sum(mask),
            }

        return eval_fn

    def train_sampler(self) -> TrainSampler:
        """P x K batches (:func:`convjax.data.samplers.create_pk_train_iterator`)."""
        from convjax.data import samplers  # the input pipeline; only needed to train

        return functools.partial(
            samplers.create_pk_train_iterator, images_per_identity=self.images_per_identity
        )

    def embed_fn(self, model: nn.Module) -> Callable[[PyTree, jax.Array], jax.Array]:
        """``embed(variables, images [B, H, W, C]) -> embeddings [B, D]`` in eval mode:
        the model's own output (what the loss is computed on)."""

        def embed(variables: PyTree, images: jax.Array) -> jax.Array:
            return model.apply(variables, images, train=False)

        return embed

    def check_train_metrics(self, step: int, scalars: dict[str, float]) -> bool:
        """Host-side check of logged train metrics: warns when embeddings collapsed."""
        return warn_if_collapsed(scalars, self.effective_margin, step=step)
