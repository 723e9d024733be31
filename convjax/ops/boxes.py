"""Bounding boxes: formats, conversions, and IoU with its GIoU / DIoU / CIoU variants.

Formats (the last axis holds 4 numbers):

- ``'xyxy'``: corners ``(x1, y1, x2, y2)`` — the format every function here computes in;
- ``'cxcywh'``: centre and size ``(cx, cy, w, h)`` — the course's ``(b_x, b_y, b_w, b_h)``
  up to the order of ``h`` and ``w``;
- ``'xywh'``: top-left corner and size ``(x, y, w, h)`` — COCO's annotation format;
- ``'yxyx'``: ``(y1, x1, y2, x2)`` — the order tensorflow-datasets stores boxes in.

Coordinates are pixels or normalised to ``[0, 1]`` (:func:`normalize_boxes` /
:func:`denormalize_boxes`). The IoU family is written elementwise over broadcast
shapes (``boxes1: [..., 4]``, ``boxes2: [..., 4]`` -> ``[...]``), which serves both the
losses (matched pairs) and the pairwise ``box_*`` forms (``[N, 4], [M, 4] -> [N, M]``,
torchvision's names and conventions). Degenerate boxes (zero width or height) never
produce NaN values or NaN gradients: a ratio whose denominator is zero is 0. A NaN
coordinate gives a NaN result (never a silent 0), and every function checks that the
last axis holds 4 numbers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

BOX_FORMATS = ("xyxy", "cxcywh", "xywh", "yxyx")


def _check_format(fmt: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"Unknown box format {fmt!r}; valid: {', '.join(BOX_FORMATS)}")


def _check_boxes(boxes: jax.Array, what: str = "boxes") -> None:
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{what} must have shape [..., 4]; got {tuple(boxes.shape)}")


def _to_xyxy(boxes: jax.Array, fmt: str) -> jax.Array:
    a, b, c, d = jnp.moveaxis(boxes, -1, 0)
    if fmt == "xyxy":
        return boxes
    if fmt == "cxcywh":
        return jnp.stack([a - c / 2, b - d / 2, a + c / 2, b + d / 2], axis=-1)
    if fmt == "xywh":
        return jnp.stack([a, b, a + c, b + d], axis=-1)
    return jnp.stack([b, a, d, c], axis=-1)  # yxyx


def _from_xyxy(boxes: jax.Array, fmt: str) -> jax.Array:
    x1, y1, x2, y2 = jnp.moveaxis(boxes, -1, 0)
    if fmt == "xyxy":
        return boxes
    if fmt == "cxcywh":
        return jnp.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=-1)
    if fmt == "xywh":
        return jnp.stack([x1, y1, x2 - x1, y2 - y1], axis=-1)
    return jnp.stack([y1, x1, y2, x2], axis=-1)  # yxyx


def convert_boxes(boxes: jax.Array, src: str, dst: str) -> jax.Array:
    """Converts ``boxes: [..., 4]`` from format ``src`` to ``dst`` (see :data:`BOX_FORMATS`)."""
    _check_format(src)
    _check_format(dst)
    _check_boxes(boxes)
    boxes = jnp.asarray(boxes)
    if src == dst:
        return boxes
    return _from_xyxy(_to_xyxy(boxes, src), dst)


def _xy_scale(fmt: str, height: float, width: float) -> jax.Array:
    if fmt == "yxyx":
        return jnp.array([height, width, height, width], jnp.float32)
    return jnp.array([width, height, width, height], jnp.float32)


def normalize_boxes(boxes: jax.Array, height: float, width: float, fmt: str = "xyxy") -> jax.Array:
    """Pixel boxes ``[..., 4]`` in ``fmt`` -> coordinates divided by the image size."""
    _check_format(fmt)
    _check_boxes(boxes)
    return boxes / _xy_scale(fmt, height, width)


def denormalize_boxes(
    boxes: jax.Array, height: float, width: float, fmt: str = "xyxy"
) -> jax.Array:
    """Normalised boxes ``[..., 4]`` in ``fmt`` -> pixel coordinates."""
    _check_format(fmt)
    _check_boxes(boxes)
    return boxes * _xy_scale(fmt, height, width)


def box_area(boxes: jax.Array) -> jax.Array:
    """``boxes: [..., 4]`` xyxy -> areas ``[...]`` (0 for inverted or degenerate boxes)."""
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"box_area expects boxes [..., 4] (x1, y1, x2, y2); got {boxes.shape}")
    wh = jnp.maximum(boxes[..., 2:] - boxes[..., :2], 0.0)
    return wh[..., 0] * wh[..., 1]


def clip_boxes(boxes: jax.Array, height: float, width: float) -> jax.Array:
    """Clips xyxy ``boxes: [..., 4]`` to the image ``[0, width] x [0, height]``."""
    upper = jnp.array([width, height, width, height], boxes.dtype)
    return jnp.clip(boxes, 0.0, upper)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den > 0``, NaN where either is NaN, else 0 — with finite
    gradients in both branches."""
    positive = den > 0
    ratio = jnp.where(positive, num / jnp.where(positive, den, 1.0), 0.0)
    return jnp.where(jnp.isnan(num) | jnp.isnan(den), jnp.nan, ratio)


def _intersection_union(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    lt = jnp.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = jnp.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter, union


def _enclosing_wh(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    lt = jnp.minimum(boxes1[..., :2], boxes2[..., :2])
    rb = jnp.maximum(boxes1[..., 2:], boxes2[..., 2:])
    return jnp.maximum(rb - lt, 0.0)


def _check_pair(boxes1: jax.Array, boxes2: jax.Array) -> tuple[jax.Array, jax.Array]:
    boxes1, boxes2 = jnp.asarray(boxes1), jnp.asarray(boxes2)
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    return boxes1, boxes2


def iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Intersection over union of xyxy boxes, broadcast: ``[..., 4], [..., 4] -> [...]``.

    Two zero-area boxes (empty union) have IoU 0; a box with a NaN coordinate has IoU
    NaN. Boxes whose last axis is not 4 raise ``ValueError``.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    inter, union = _intersection_union(boxes1, boxes2)
    return _safe_div(inter, union)


def giou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Generalised IoU (Rezatofighi et al. 2019): ``IoU - |C \\ (A u B)| / |C|``, in [-1, 1].

    ``C`` is the smallest box enclosing both. Broadcast: ``[..., 4], [..., 4] -> [...]``.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    inter, union = _intersection_union(boxes1, boxes2)
    wh = _enclosing_wh(boxes1, boxes2)
    enclosing = wh[..., 0] * wh[..., 1]
    return _safe_div(inter, union) - _safe_div(enclosing - union, enclosing)


def _centre_penalty(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Squared centre distance over the enclosing box's squared diagonal."""
    wh = _enclosing_wh(boxes1, boxes2)
    diagonal_sq = wh[..., 0] ** 2 + wh[..., 1] ** 2
    c1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    c2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    centre_sq = jnp.sum((c1 - c2) ** 2, axis=-1)
    return _safe_div(centre_sq, diagonal_sq)


def diou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Distance IoU (Zheng et al. 2020): ``IoU - d(centres)^2 / diag(C)^2``.

    Broadcast: ``[..., 4], [..., 4] -> [...]``.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    return iou(boxes1, boxes2) - _centre_penalty(boxes1, boxes2)


def _aspect_angle(boxes: jax.Array) -> jax.Array:
    """``atan(w / h)``, defined (pi/2) for ``h = 0`` and with a finite gradient at w = h = 0."""
    w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    empty = (w <= 0) & (h <= 0)
    return jnp.where(empty, 0.0, jnp.arctan2(w, jnp.where(empty, 1.0, h)))


def ciou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Complete IoU (Zheng et al. 2020): ``DIoU - alpha * v``.

    ``v = 4 / pi^2 (atan(w2/h2) - atan(w1/h1))^2`` measures aspect-ratio mismatch and
    ``alpha = v / (1 - IoU + v)`` is a weight held constant under differentiation
    (as in the paper's gradient and torchvision). Broadcast: ``[..., 4], [..., 4] -> [...]``.
    """
    boxes1, boxes2 = _check_pair(boxes1, boxes2)
    overlap = iou(boxes1, boxes2)
    v = (4 / math.pi**2) * (_aspect_angle(boxes2) - _aspect_angle(boxes1)) ** 2
    alpha = jax.lax.stop_gradient(_safe_div(v, 1 - overlap + v))
    return overlap - _centre_penalty(boxes1, boxes2) - alpha * v


def _pairwise(fn, boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if boxes1.ndim != 2 or boxes2.ndim != 2:
        raise ValueError(
            f"pairwise IoU takes boxes1 [N, 4] and boxes2 [M, 4]; got {tuple(boxes1.shape)} "
            f"and {tuple(boxes2.shape)}"
        )
    return fn(boxes1[:, None, :], boxes2[None, :, :])


def box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise IoU: xyxy ``boxes1 [N, 4]``, ``boxes2 [M, 4]`` -> ``[N, M]``."""
    return _pairwise(iou, boxes1, boxes2)


def generalized_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise GIoU: ``[N, 4], [M, 4] -> [N, M]``."""
    return _pairwise(giou, boxes1, boxes2)


def distance_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise DIoU: ``[N, 4], [M, 4] -> [N, M]``."""
    return _pairwise(diou, boxes1, boxes2)


def complete_box_iou(boxes1: jax.Array, boxes2: jax.Array) -> jax.Array:
    """Pairwise CIoU: ``[N, 4], [M, 4] -> [N, M]``."""
    return _pairwise(ciou, boxes1, boxes2)


IOU_FUNCTIONS = {"iou": iou, "giou": giou, "diou": diou, "ciou": ciou}


def get_iou_fn(name: str):
    """The elementwise IoU variant called ``name`` (``iou``, ``giou``, ``diou``, ``ciou``)."""
    if name not in IOU_FUNCTIONS:
        raise ValueError(f"Unknown IoU variant {name!r}; valid: {', '.join(IOU_FUNCTIONS)}")
    return IOU_FUNCTIONS[name]
