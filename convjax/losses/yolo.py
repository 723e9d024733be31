"""YOLO losses, written so the known bugs of popular implementations cannot happen.

- The confidence target of a responsible predictor is the IoU between its predicted box
  and the object (held constant), not 1.
- Predictors that are not responsible for an object count as *no-object*, also in a
  cell that holds one (v1: the P - 1 predictors that lost the IoU contest).
- No square root of a prediction is taken: v1 predicts ``sqrt(w)``, ``sqrt(h)`` directly
  (see :mod:`convjax.detection.yolo`), so negative outputs give finite values and
  gradients; targets' square roots are of non-negative numbers.
- The sum over cells, predictors and terms is divided by the batch size only (not by
  the number of cells or objects), so a loss does not change with the batch size or
  the amount of padding.

Both return ``(loss, terms)`` where ``terms`` holds the per-term values (same
normalisation) for logging.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from convjax.detection.yolo import Targets, split_v1, target_iou, v1_boxes, v2_boxes
from convjax.ops.boxes import convert_boxes, iou


def _check(outputs: jax.Array, rank: int, layout: str) -> None:
    if outputs.ndim != rank:
        raise ValueError(f"YOLO outputs must be {layout}; got shape {tuple(outputs.shape)}")


def yolo_v1_loss(
    outputs: jax.Array,
    targets: Targets,
    *,
    num_predictors: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The YOLOv1 sum-squared loss.

    Args:
      outputs: [B, S, S, P*5 + C] raw network outputs (layout in convjax.detection.yolo).
      targets: per-cell :class:`Targets` (``object [B, S, S]``, ``box [B, S, S, 4]``
        cxcywh, ``label [B, S, S]``) from ``encode_batch(..., anchors=None)``.

    Terms: ``coord`` = lambda_coord * responsible * ((x - x*)^2 + (y - y*)^2 +
    (sqrt w - sqrt w*)^2 + (sqrt h - sqrt h*)^2) with x, y the offsets in the cell;
    ``object`` = responsible * (C - IoU)^2; ``noobj`` = lambda_noobj * (1 - responsible) * C^2;
    ``class`` = object cell * softmax cross-entropy.
    """
    _check(outputs, 4, "[B, S, S, P*5 + C]")
    batch, grid_size = outputs.shape[0], outputs.shape[1]
    box_outputs, class_logits = split_v1(outputs, num_predictors)
    boxes, confidence = v1_boxes(box_outputs)  # [B, S, S, P, 4], [B, S, S, P]
    target_box = targets.box[..., None, :]
    overlap = jax.lax.stop_gradient(target_iou(boxes, target_box))  # [B, S, S, P]
    best = jnp.argmax(overlap, axis=-1)
    responsible = jax.nn.one_hot(best, num_predictors) * targets.object[..., None]

    # Centre offsets inside the cell, and square roots of the (non-negative) target sizes.
    xy = jax.nn.sigmoid(box_outputs[..., :2])
    target_xy = targets.box[..., None, :2] * grid_size - jnp.floor(
        targets.box[..., None, :2] * grid_size
    )
    target_sqrt_wh = jnp.sqrt(jnp.maximum(target_box[..., 2:], 0.0))
    coord = jnp.sum((xy - target_xy) ** 2, -1) + jnp.sum(
        (box_outputs[..., 2:4] - target_sqrt_wh) ** 2, -1
    )
    terms = {
        "coord": lambda_coord * jnp.sum(responsible * coord),
        "object": jnp.sum(responsible * (confidence - overlap) ** 2),
        "noobj": lambda_noobj * jnp.sum((1.0 - responsible) * confidence**2),
        "class": jnp.sum(
            targets.object
            * optax.softmax_cross_entropy_with_integer_labels(class_logits, targets.label)
        ),
    }
    terms = {k: v / batch for k, v in terms.items()}
    del boxes
    return sum(terms.values()), terms


def yolo_v2_loss(
    outputs: jax.Array,
    targets: Targets,
    anchors: jax.Array,
    *,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
    ignore_threshold: float = 0.6,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The YOLOv2 anchor loss.

    Args:
      outputs: [B, S, S, A, 5 + C] raw outputs.
      targets: per-anchor :class:`Targets` from ``encode_batch(..., anchors=anchors)``.
      anchors: [A, 2] normalised (w, h).

    Terms: ``coord`` = lambda_coord * responsible * ((sigmoid(tx) - x*)^2 + (sigmoid(ty) -
    y*)^2 + (tw - log(w*/pw))^2 + (th - log(h*/ph))^2); ``object`` = responsible *
    (sigmoid(to) - IoU)^2; ``noobj`` = lambda_noobj * sigmoid(to)^2 over the other anchors,
    except those whose predicted box already has IoU > ``ignore_threshold`` with some object
    of the image (as in the YOLOv2 paper); ``class`` = responsible * cross-entropy.
    """
    _check(outputs, 5, "[B, S, S, A, 5 + C]")
    batch, grid_size = outputs.shape[0], outputs.shape[1]
    boxes, objectness = v2_boxes(outputs, anchors)
    responsible = targets.object
    overlap = jax.lax.stop_gradient(target_iou(boxes, targets.box))

    # Best IoU of each predicted box with any real object of its image: [B, S, S, A].
    pred_xyxy = jax.lax.stop_gradient(convert_boxes(boxes, "cxcywh", "xyxy"))
    gt = targets.gt_boxes[:, None, None, None, :, :]  # [B, 1, 1, 1, N, 4]
    all_iou = iou(pred_xyxy[..., None, :], gt) * targets.gt_mask[:, None, None, None, :]
    ignore = jnp.max(all_iou, axis=-1) > ignore_threshold

    cell_xy = targets.box[..., :2] * grid_size
    target_xy = cell_xy - jnp.floor(cell_xy)
    # Only responsible slots use the log target; elsewhere it is masked (and kept finite).
    safe_wh = jnp.where(responsible[..., None] > 0, targets.box[..., 2:], anchors)
    target_twh = jnp.log(jnp.maximum(safe_wh, 1e-9) / anchors)
    coord = jnp.sum((jax.nn.sigmoid(outputs[..., :2]) - target_xy) ** 2, -1) + jnp.sum(
        (outputs[..., 2:4] - target_twh) ** 2, -1
    )
    noobj_weight = (1.0 - responsible) * (1.0 - ignore.astype(jnp.float32))
    terms = {
        "coord": lambda_coord * jnp.sum(responsible * coord),
        "object": jnp.sum(responsible * (objectness - overlap) ** 2),
        "noobj": lambda_noobj * jnp.sum(noobj_weight * objectness**2),
        "class": jnp.sum(
            responsible
            * optax.softmax_cross_entropy_with_integer_labels(outputs[..., 5:], targets.label)
        ),
    }
    terms = {k: v / batch for k, v in terms.items()}
    return sum(terms.values()), terms
