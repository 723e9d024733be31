"""Image classification: softmax cross-entropy, accuracy and top-k accuracy.

Batches: ``image`` [B, H, W, C] float, ``label`` [B] int; eval batches also carry
``mask`` [B] (1 real, 0 padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from convjax.models.taps import apply_with_taps
from convjax.tasks.base import (
    Batch,
    EvalFn,
    LossFn,
    Task,
    apply_model,
    check_label_range,
    per_example_eval_fn,
)
from convjax.tasks.registry import register_task


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """logits: [B, K], labels: [B] -> [B] float, 1 where the label is among the top k."""
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


@register_task("classification")
@dataclass(frozen=True)
class Classification(Task):
    """Softmax cross-entropy with optional label smoothing; accuracy and top-k.

    ``aux_outputs`` names auxiliary classifiers whose logits are added to the
    training loss with ``aux_loss_weight`` (GoogLeNet: ``('aux1', 'aux2')`` with the
    paper's 0.3); evaluation uses the main output only.
    """

    label_smoothing: float = 0.0
    topk: Sequence[int] = (5,)
    aux_outputs: Sequence[str] = ()
    aux_loss_weight: float = 0.3

    def check_labels(self, batch, num_classes: int) -> None:
        """``batch['label']`` [B] (where ``mask`` > 0) must be in ``[0, num_classes)``."""
        labels = np.asarray(batch["label"])
        if "mask" in batch:
            labels = labels[np.asarray(batch["mask"]) > 0]
        check_label_range(labels, num_classes, "labels")

    def _loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example cross-entropy: logits [B, K], labels [B] -> [B]."""
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), self.label_smoothing)
        return optax.softmax_cross_entropy(logits, targets)

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            metrics = {}
            if self.aux_outputs:
                logits, aux, new_state = apply_with_taps(
                    model,
                    {"params": params, **model_state},
                    batch["image"],
                    tuple(self.aux_outputs),
                    train=True,
                    rngs={"dropout": rng},
                    mutable=list(model_state),
                )
                aux_loss = sum(self._loss(aux[name], batch["label"]).mean() for name in aux)
                metrics["aux_loss"] = aux_loss
            else:
                logits, new_state = apply_model(
                    model, params, model_state, batch["image"], train=True, rng=rng
                )
                aux_loss = 0.0
            main_loss = self._loss(logits, batch["label"]).mean()
            loss = main_loss + self.aux_loss_weight * aux_loss
            accuracy = (jnp.argmax(logits, -1) == batch["label"]).mean()
            metrics.update(loss=loss, main_loss=main_loss, accuracy=accuracy)
            return loss, (metrics, new_state)

        return loss_fn

    def _eval_terms(self, logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        """Per-example eval terms, each [B], of ``logits: [B, num_classes]``."""
        labels = batch["label"]
        terms = {
            "loss": self._loss(logits, labels),
            "accuracy": jnp.argmax(logits, -1) == labels,
        }
        for k in self.topk:
            if k < logits.shape[-1]:
                terms[f"top{k}_accuracy"] = topk_correct(logits, labels, k)
        return terms

    def eval_fn(self, model: nn.Module) -> EvalFn:
        return per_example_eval_fn(model, self._eval_terms)
