"""Classification with localization (task ``localization``) and landmark regression
(task ``landmarks``) on images with at most one object.

Batches use the ``shapes`` example function's layout and read the first object slot:
``image`` [B, H, W, C], ``boxes`` [B, N, 4] normalised (ymin, xmin, ymax, xmax),
``classes`` [B, N], ``box_mask`` [B, N], ``landmarks`` [B, N, K, 2] normalised (y, x);
eval batches also carry ``mask`` [B].
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from convjax.losses.localization import landmark_loss, localization_loss
from convjax.ops.boxes import iou
from convjax.tasks.base import Batch, EvalFn, LossFn, Task, apply_model, per_example_eval_fn
from convjax.tasks.registry import register_task


def course_box(boxes_yxyx: jax.Array) -> jax.Array:
    """[..., 4] (ymin, xmin, ymax, xmax) -> the course's (b_x, b_y, b_h, b_w)."""
    ymin, xmin, ymax, xmax = jnp.moveaxis(boxes_yxyx, -1, 0)
    return jnp.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, ymax - ymin, xmax - xmin], -1)


def course_box_to_xyxy(box: jax.Array) -> jax.Array:
    """[..., 4] (b_x, b_y, b_h, b_w) -> xyxy."""
    bx, by, bh, bw = jnp.moveaxis(box, -1, 0)
    return jnp.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], -1)


@register_task("localization")
@dataclass(frozen=True)
class Localization(Task):
    """The course's ``(p_c, b_x, b_y, b_h, b_w, c_1..c_n)`` output and its loss.

    Metrics: ``loss`` and its terms; ``object_accuracy`` (p_c right); ``accuracy`` (p_c
    right and, with an object, the class too); ``object_rate`` (share of images with an
    object) and ``iou_x_object`` (IoU with the true box where there is one, else 0):
    their ratio is the mean IoU over objects.
    """

    box_weight: float = 5.0

    def _terms(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        present = batch["box_mask"][:, 0]
        terms = localization_loss(
            outputs,
            present,
            course_box(batch["boxes"][:, 0]),
            batch["classes"][:, 0],
            box_weight=self.box_weight,
        )
        predicted_object = outputs[:, 0] > 0
        object_right = predicted_object == (present > 0)
        class_right = jnp.argmax(outputs[:, 5:], -1) == batch["classes"][:, 0]
        overlap = iou(
            course_box_to_xyxy(outputs[:, 1:5]),
            course_box_to_xyxy(course_box(batch["boxes"][:, 0])),
        )
        return {
            **terms,
            "object_accuracy": object_right.astype(jnp.float32),
            "accuracy": (object_right & (class_right | (present == 0))).astype(jnp.float32),
            "object_rate": present.astype(jnp.float32),
            "iou_x_object": overlap * present,
        }

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            outputs, new_state = apply_model(
                model, params, model_state, batch["image"], train=True, rng=rng
            )
            terms = {k: v.mean() for k, v in self._terms(outputs, batch).items()}
            return terms["loss"], (terms, new_state)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        return per_example_eval_fn(model, self._terms)


@register_task("landmarks")
@dataclass(frozen=True)
class Landmarks(Task):
    """Regresses the K landmarks of the first object (images without one weigh 0).

    Metrics: ``loss`` (mean squared distance) and ``mean_distance`` (mean Euclidean error,
    in units of the image side) over examples with an object (as sums: divide by
    ``object_rate``).
    """

    def _terms(self, outputs: jax.Array, batch: Batch) -> dict[str, jax.Array]:
        target = batch["landmarks"][:, 0]
        present = batch["box_mask"][:, 0].astype(jnp.float32)
        loss = landmark_loss(outputs, target, present)
        distance = jnp.mean(jnp.sqrt(jnp.sum((outputs - target) ** 2, -1) + 1e-12), -1)
        return {"loss": loss, "distance_x_object": distance * present, "object_rate": present}

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            outputs, new_state = apply_model(
                model, params, model_state, batch["image"], train=True, rng=rng
            )
            terms = self._terms(outputs, batch)
            present = jnp.maximum(jnp.sum(terms["object_rate"]), 1.0)
            loss = jnp.sum(terms["loss"]) / present
            metrics = {"loss": loss, "mean_distance": jnp.sum(terms["distance_x_object"]) / present}
            return loss, (metrics, new_state)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        return per_example_eval_fn(model, self._terms)
