"""Face verification as binary classification of pairs (same identity or not).

Batches: ``image`` [B, 2, H, W, C] image pairs (model ``siamese_verifier``) or
[B, 2, D] precomputed embeddings (model ``verification_head``), and ``same`` [B]
(1 same identity, 0 different); eval batches also carry ``mask`` [B]. The model
returns logits [B]; the loss is the sigmoid cross-entropy. ``accuracy`` counts
``logit > 0`` (probability 0.5) as "same"; the operating threshold for deployment
is chosen on validation pairs (:mod:`convjax.face.thresholds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from convjax.models.embedding import SiameseVerifier
from convjax.tasks.base import Batch, EvalFn, LossFn, PyTree, Task, TrainSampler, apply_model
from convjax.tasks.registry import register_task


def _check_pairs(batch: Batch) -> None:
    pairs = batch["image"]
    if pairs.ndim not in (3, 5) or pairs.shape[1] != 2:
        raise ValueError(
            "verification batches need 'image' pairs [B, 2, H, W, C] or embedding pairs "
            f"[B, 2, D]; got shape {tuple(pairs.shape)}"
        )
    if batch["same"].shape != pairs.shape[:1]:
        raise ValueError(f"'same' must be [B] = [{pairs.shape[0]}]; got {batch['same'].shape}")


@register_task("verification")
@dataclass(frozen=True)
class Verification(Task):
    """Sigmoid cross-entropy on same/different pair logits; accuracy at logit 0."""

    def _losses(self, logits: jax.Array, same: jax.Array) -> jax.Array:
        return optax.sigmoid_binary_cross_entropy(logits, same.astype(jnp.float32))

    def init_variables(self, model: nn.Module, rng: jax.Array, dummy: jax.Array):
        """Initialises on a pair of dummy images [1, H, W, C] -> [1, 2, H, W, C]
        (or, for precomputed embeddings, [1, D] -> [1, 2, D])."""
        pair = jnp.stack([dummy, dummy], axis=1)
        return jax.jit(lambda r, x: model.init(r, x, train=False))(rng, pair)

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            _check_pairs(batch)
            logits, new_state = apply_model(
                model, params, model_state, batch["image"], train=True, rng=rng
            )
            loss = self._losses(logits, batch["same"]).mean()
            accuracy = jnp.mean((logits > 0) == (batch["same"] > 0))
            return loss, ({"loss": loss, "accuracy": accuracy}, new_state)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        def eval_fn(params, model_state, batch: Batch):
            _check_pairs(batch)
            logits, _ = apply_model(model, params, model_state, batch["image"], train=False)
            mask = batch["mask"].astype(jnp.float32)
            correct = (logits > 0) == (batch["same"] > 0)
            return {
                "loss": jnp.sum(self._losses(logits, batch["same"]) * mask),
                "accuracy": jnp.sum(correct * mask),
                "count": jnp.sum(mask),
            }

        return eval_fn

    def embed_fn(self, model: nn.Module) -> Callable[[PyTree, jax.Array], jax.Array]:
        """``embed(variables, images [B, H, W, C]) -> embeddings [B, D]`` in eval mode:
        the embedding network of a ``siamese_verifier`` (a ``verification_head`` takes
        precomputed embeddings and embeds no images)."""
        if not isinstance(model, SiameseVerifier):
            raise ValueError(
                "task 'verification' embeds images with model 'siamese_verifier'; "
                f"got {type(model).__name__}"
            )

        def embed(variables: PyTree, images: jax.Array) -> jax.Array:
            return model.apply(variables, images, train=False, method=SiameseVerifier.embed)

        return embed

    def train_sampler(self) -> TrainSampler:
        """Half-same, half-different image pairs
        (:func:`convjax.data.samplers.create_pair_train_iterator`)."""
        from convjax.data import samplers  # the input pipeline; only needed to train

        return samplers.create_pair_train_iterator
