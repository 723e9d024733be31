"""YOLO on an S x S grid: target encoding, prediction parametrisation, decoding to boxes.

Coordinates are normalised to the image (0..1); boxes are ``xyxy`` unless a name says
``cxcywh``. Two layouts of the network output:

- **v1** (Redmon et al. 2016): ``[B, S, S, P * 5 + C]`` — per cell, P box predictors
  ``(tx, ty, sqrt_w, sqrt_h, tc)`` and one set of C class logits. The centre is
  ``((sigmoid(tx) + col) / S, (sigmoid(ty) + row) / S)``; the network predicts the
  *square roots* of width and height (the paper's loss is on them), so the size is
  ``sqrt_w ** 2`` and no square root of a prediction is ever taken (a negative output
  cannot produce NaN); the confidence is ``sigmoid(tc)``.
- **v2** (Redmon & Farhadi 2017): ``[B, S, S, A, 5 + C]`` — per cell and anchor
  ``(tx, ty, tw, th, to, class logits)``; centre as above, size ``anchor * exp(t)``,
  objectness ``sigmoid(to)``.

Targets (:func:`encode_targets`): each object goes to the cell containing its centre
and, with anchors, to the anchor whose shape has the highest IoU with its own (both
centred). When two objects claim the same slot, the first (lowest index) keeps it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from convjax.ops.boxes import convert_boxes, iou
from convjax.ops.nms import nms

MAX_LOG_SCALE = 8.0  # exp(tw) is clipped here so an untrained head cannot overflow


class Targets(NamedTuple):
    """Per-slot targets; slots are ``[S, S]`` (v1) or ``[S, S, A]`` (v2), batched in front.

    ``object``: 1 where an object is assigned; ``box``: its ``cxcywh`` box; ``label``: its
    class; ``gt_boxes``/``gt_mask``: the image's padded xyxy boxes ``[N, 4]`` and mask
    ``[N]`` (the v2 loss ignores no-object predictions that already overlap one).
    """

    object: jax.Array
    box: jax.Array
    label: jax.Array
    gt_boxes: jax.Array
    gt_mask: jax.Array


class Decoded(NamedTuple):
    """Per-image padded detections: ``boxes [..., K, 4]`` xyxy, ``scores``, ``classes``,
    ``valid`` ``[..., K]``."""

    boxes: jax.Array
    scores: jax.Array
    classes: jax.Array
    valid: jax.Array


def anchor_iou(wh: jax.Array, anchors: jax.Array) -> jax.Array:
    """IoU of centred boxes: ``wh [..., 2]``, ``anchors [A, 2]`` -> ``[..., A]``."""
    inter = jnp.prod(jnp.minimum(wh[..., None, :], anchors), axis=-1)
    union = jnp.prod(wh, axis=-1)[..., None] + jnp.prod(anchors, axis=-1) - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def _check_targets_input(boxes, labels, mask):
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4] for one image; got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if tuple(labels.shape) != (n,) or tuple(mask.shape) != (n,):
        raise ValueError(
            f"labels and mask must be [N] = [{n}]; got {tuple(labels.shape)}, {tuple(mask.shape)}"
        )


def encode_targets(
    boxes: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    grid_size: int,
    anchors: jax.Array | None = None,
) -> Targets:
    """One image's objects -> grid targets.

    Args:
      boxes: [N, 4] normalised xyxy; labels: [N] int; mask: [N] (1 real, 0 padding).
      grid_size: S.
      anchors: [A, 2] normalised (w, h) for v2; None for v1's per-cell targets.

    Returns:
      :class:`Targets` with slots ``[S, S]`` (v1) or ``[S, S, A]`` (v2).
    """
    _check_targets_input(boxes, labels, mask)
    valid = mask > 0
    cxcywh = convert_boxes(boxes, "xyxy", "cxcywh")
    col = jnp.clip(jnp.floor(cxcywh[:, 0] * grid_size), 0, grid_size - 1).astype(jnp.int32)
    row = jnp.clip(jnp.floor(cxcywh[:, 1] * grid_size), 0, grid_size - 1).astype(jnp.int32)
    if anchors is None:
        slot_shape = (grid_size, grid_size)
        slot = row * grid_size + col
    else:
        num_anchors = anchors.shape[0]
        slot_shape = (grid_size, grid_size, num_anchors)
        best = jnp.argmax(anchor_iou(cxcywh[:, 2:], anchors), axis=-1).astype(jnp.int32)
        slot = (row * grid_size + col) * num_anchors + best
    n = boxes.shape[0]
    earlier_claim = jnp.any(
        (slot[:, None] == slot[None, :])
        & valid[None, :]
        & (jnp.arange(n)[None, :] < jnp.arange(n)[:, None]),
        axis=1,
    )
    keep = valid & ~earlier_claim
    size = math.prod(slot_shape)
    index = jnp.where(keep, slot, size)  # out of range: dropped
    obj = jnp.zeros(size).at[index].set(1.0, mode="drop")
    box = jnp.zeros((size, 4)).at[index].set(cxcywh, mode="drop")
    label = jnp.zeros(size, jnp.int32).at[index].set(labels.astype(jnp.int32), mode="drop")
    return Targets(
        obj.reshape(slot_shape),
        box.reshape(slot_shape + (4,)),
        label.reshape(slot_shape),
        boxes,
        mask.astype(jnp.float32),
    )


def encode_batch(boxes, labels, mask, grid_size, anchors=None) -> Targets:
    """:func:`encode_targets` over a batch: ``boxes [B, N, 4]`` -> slots ``[B, S, S(, A)]``."""
    return jax.vmap(lambda b, c, m: encode_targets(b, c, m, grid_size, anchors))(
        boxes, labels, mask
    )


def _cell_offsets(grid_size: int) -> tuple[jax.Array, jax.Array]:
    rows, cols = jnp.meshgrid(jnp.arange(grid_size), jnp.arange(grid_size), indexing="ij")
    return cols.astype(jnp.float32), rows.astype(jnp.float32)


def split_v1(outputs: jax.Array, num_predictors: int) -> tuple[jax.Array, jax.Array]:
    """``[B, S, S, P*5 + C]`` -> (box predictions ``[B, S, S, P, 5]``,
    class logits ``[B, S, S, C]``)."""
    boxes = outputs[..., : num_predictors * 5]
    return boxes.reshape(outputs.shape[:-1] + (num_predictors, 5)), outputs[
        ..., num_predictors * 5 :
    ]


def v1_boxes(box_outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[B, S, S, P, 5]`` raw -> (cxcywh boxes ``[B, S, S, P, 4]``,
    confidence ``[B, S, S, P]``)."""
    grid_size = box_outputs.shape[-3]
    cols, rows = _cell_offsets(grid_size)
    cx = (jax.nn.sigmoid(box_outputs[..., 0]) + cols[..., None]) / grid_size
    cy = (jax.nn.sigmoid(box_outputs[..., 1]) + rows[..., None]) / grid_size
    w, h = box_outputs[..., 2] ** 2, box_outputs[..., 3] ** 2
    return jnp.stack([cx, cy, w, h], -1), jax.nn.sigmoid(box_outputs[..., 4])


def v2_boxes(outputs: jax.Array, anchors: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``[B, S, S, A, 5 + C]`` raw -> (cxcywh ``[B, S, S, A, 4]``, objectness ``[B, S, S, A]``)."""
    grid_size = outputs.shape[-4]
    cols, rows = _cell_offsets(grid_size)
    cx = (jax.nn.sigmoid(outputs[..., 0]) + cols[..., None]) / grid_size
    cy = (jax.nn.sigmoid(outputs[..., 1]) + rows[..., None]) / grid_size
    wh = anchors * jnp.exp(jnp.minimum(outputs[..., 2:4], MAX_LOG_SCALE))
    return jnp.concatenate([cx[..., None], cy[..., None], wh], -1), jax.nn.sigmoid(outputs[..., 4])


def decode(
    outputs: jax.Array,
    *,
    version: str,
    anchors: jax.Array | None = None,
    num_predictors: int = 2,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Raw outputs -> every candidate: ``(boxes [B, M, 4] xyxy, scores [B, M], classes [B, M])``.

    The score is confidence x class probability of the most probable class.
    ``M = S*S*P`` (v1) or ``S*S*A`` (v2).
    """
    if version == "v1":
        box_outputs, class_logits = split_v1(outputs, num_predictors)
        boxes, confidence = v1_boxes(box_outputs)
        probs = jax.nn.softmax(class_logits, -1)[..., None, :]  # shared by the cell's predictors
        probs = jnp.broadcast_to(probs, confidence.shape + probs.shape[-1:])
    elif version == "v2":
        if anchors is None:
            raise ValueError("v2 decoding needs anchors [A, 2]")
        boxes, confidence = v2_boxes(outputs, anchors)
        probs = jax.nn.softmax(outputs[..., 5:], -1)
    else:
        raise ValueError(f"Unknown YOLO version {version!r}; valid: v1, v2")
    batch = outputs.shape[0]
    scores = confidence[..., None] * probs
    boxes = convert_boxes(boxes, "cxcywh", "xyxy").reshape(batch, -1, 4)
    scores = scores.reshape(batch, boxes.shape[1], -1)
    return boxes, jnp.max(scores, -1), jnp.argmax(scores, -1).astype(jnp.int32)


def postprocess(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    *,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.01,
    max_detections: int = 100,
    class_aware: bool = True,
) -> Decoded:
    """Batched NMS with a max-detections cap: ``[B, M, ...]`` -> :class:`Decoded` ``[B, K]``."""

    def one(b, s, c):
        result = nms(
            b,
            s,
            iou_threshold,
            max_output_size=max_detections,
            score_threshold=score_threshold,
            classes=c if class_aware else None,
        )
        index = jnp.maximum(result.indices, 0)
        valid = result.indices >= 0
        return Decoded(
            jnp.where(valid[:, None], b[index], 0.0),
            jnp.where(valid, s[index], 0.0),
            jnp.where(valid, c[index], 0),
            valid,
        )

    return jax.vmap(one)(boxes, scores, classes)


def target_iou(pred_cxcywh: jax.Array, target_cxcywh: jax.Array) -> jax.Array:
    """IoU of matched cxcywh boxes ``[..., 4]`` (used as the confidence target)."""
    return iou(
        convert_boxes(pred_cxcywh, "cxcywh", "xyxy"), convert_boxes(target_cxcywh, "cxcywh", "xyxy")
    )
