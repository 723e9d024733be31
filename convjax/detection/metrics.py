"""Detection mAP on padded arrays, jit-able: PASCAL VOC (11-point and all-point) and COCO.

Inputs are batches of images with a fixed number of detection and ground-truth slots:

- detections: ``det_boxes [I, D, 4]`` xyxy, ``det_scores [I, D]``, ``det_classes [I, D]``
  int, ``det_valid [I, D]`` bool (False marks padding);
- ground truth: ``gt_boxes [I, G, 4]`` xyxy, ``gt_classes [I, G]``, ``gt_valid [I, G]``,
  and optionally ``gt_ignore [I, G]`` (VOC's *difficult* / COCO's ``ignore``: such objects
  are neither required nor counted as false positives) and ``gt_areas [I, G]`` (COCO's
  annotation ``area``; default: the box area).

:func:`coco_evaluate` reproduces pycocotools' ``COCOeval`` for boxes (greedy matching per
image and class in score order, best-IoU unmatched ground truth first among the
non-ignored, top ``maxDets`` per image and class, 101 recall points, precision made
monotone, area ranges), and :func:`coco_summary` its 12 ``stats``. Crowd annotations
(``iscrowd``, IoU over the detection's area only) are not modelled: pass them as
``gt_ignore`` if an approximation is acceptable. :func:`voc_evaluate` follows the VOC
devkit (each detection is compared with its best-IoU ground truth of its class; IoU must
be strictly greater than the threshold; a second detection of a found object is a false
positive), with continuous coordinates (no ``+1`` pixel in widths).

Recall thresholds are compared with exact integer arithmetic that reproduces the float64
comparisons of the reference implementations, so recall points that land exactly on a
threshold (e.g. 3 of 100 objects found) agree with them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from convjax.ops.boxes import box_area, iou

COCO_IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())
COCO_MAX_DETS = (1, 10, 100)
COCO_AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
COCO_NUM_RECALL_POINTS = 101
VOC_11_POINTS = np.arange(0.0, 1.1, 0.1)  # the devkit's float64 values, e.g. 0.30000000000000004


def _check_shapes(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid):
    if det_boxes.ndim != 3 or det_boxes.shape[-1] != 4:
        raise ValueError(f"det_boxes must be [I, D, 4] xyxy; got {tuple(det_boxes.shape)}")
    if gt_boxes.ndim != 3 or gt_boxes.shape[-1] != 4:
        raise ValueError(f"gt_boxes must be [I, G, 4] xyxy; got {tuple(gt_boxes.shape)}")
    images, dets, _ = det_boxes.shape
    for name, arr in (
        ("det_scores", det_scores),
        ("det_classes", det_classes),
        ("det_valid", det_valid),
    ):
        if tuple(arr.shape) != (images, dets):
            raise ValueError(f"{name} must be [I, D] = {[images, dets]}; got {tuple(arr.shape)}")
    if gt_boxes.shape[0] != images:
        raise ValueError(f"gt_boxes has {gt_boxes.shape[0]} images, detections have {images}")
    for name, arr in (("gt_classes", gt_classes), ("gt_valid", gt_valid)):
        if tuple(arr.shape) != tuple(gt_boxes.shape[:2]):
            raise ValueError(
                f"{name} must be [I, G] = {list(gt_boxes.shape[:2])}; got {tuple(arr.shape)}"
            )


def _threshold_keys(thresholds: np.ndarray, denominator: int) -> tuple[np.ndarray, np.ndarray]:
    """For ``thresholds[k] ~ k / denominator`` (float64), the integer test equivalent to
    ``fl(tp / n) >= thresholds[k]``: ``denominator * tp >= k * n + bump[k]``.

    ``bump[k]`` is 0 when an exact hit ``tp / n == k / denominator`` passes the float64
    comparison and 1 when it fails (the float64 threshold sits one ulp above ``k/den``).
    """
    steps = np.rint(thresholds * denominator).astype(np.int64)
    if not np.allclose(steps / denominator, thresholds, rtol=0, atol=1e-9):
        raise ValueError("recall thresholds must be multiples of 1/denominator")
    exact = steps.astype(np.float64) / denominator
    bump = (exact < thresholds).astype(np.int64)
    return steps, bump


def _first_reaching(tp: jax.Array, n_pos: jax.Array, steps, bump, denominator: int) -> jax.Array:
    """Index of the first entry with ``tp[i] / n_pos >= threshold_k`` (len(tp) if none).

    tp: [..., N] nondecreasing integer counts; n_pos: [...] -> [..., K].
    """
    key = tp * denominator
    target = n_pos[..., None] * jnp.asarray(steps, jnp.int32) + jnp.asarray(bump, jnp.int32)
    flat_key = key.reshape(-1, key.shape[-1])
    flat_target = target.reshape(-1, target.shape[-1])
    idx = jax.vmap(lambda k, t: jnp.searchsorted(k, t, side="left"))(flat_key, flat_target)
    return idx.reshape(target.shape)


def _sorted_by_score(det_scores, det_valid, *arrays):
    """Per image, sorts detections by descending score (stable), padding last."""
    key = jnp.where(det_valid, -det_scores, jnp.inf)
    order = jnp.argsort(key, axis=-1, stable=True)
    take = lambda a: jnp.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), 1)
    return order, [take(a) for a in (det_scores, det_valid, *arrays)]


def _global_order(scores: jax.Array, valid: jax.Array) -> jax.Array:
    """Flattened [I * D] order: descending score, stable in image-then-detection order."""
    return jnp.argsort(jnp.where(valid, -scores, jnp.inf).reshape(-1), stable=True)


def _last_argmax(values: jax.Array) -> jax.Array:
    """Index of the last maximum along the last axis."""
    size = values.shape[-1]
    return size - 1 - jnp.argmax(values[..., ::-1], axis=-1)


# --------------------------------------------------------------------------- COCO


def _coco_match_image(
    det_boxes,
    det_classes,
    det_include,
    gt_boxes,
    gt_classes,
    gt_valid,
    gt_ignored,
    thresholds,
    area_lo,
    area_hi,
):
    """One image, detections already sorted by score.

    Returns matched [D, T, A] bool and ignored [D, T, A] bool.
    """
    overlaps = iou(det_boxes[:, None, :], gt_boxes[None, :, :])  # [D, G]
    same_class = (det_classes[:, None] == gt_classes[None, :]) & gt_valid[None, :]
    det_area = box_area(det_boxes)
    det_outside = (det_area[:, None] < area_lo) | (det_area[:, None] > area_hi)  # [D, A]
    num_gt = gt_boxes.shape[0]

    def step(gt_matched, inputs):
        overlap, same, include, outside = inputs
        eligible = same & ~gt_matched & (overlap >= thresholds[:, None, None])  # [T, A, G]
        regular = eligible & ~gt_ignored[None]
        ignored = eligible & gt_ignored[None]
        has_regular = jnp.any(regular, -1)
        has_ignored = jnp.any(ignored, -1)
        best_regular = _last_argmax(jnp.where(regular, overlap, -1.0))
        best_ignored = _last_argmax(jnp.where(ignored, overlap, -1.0))
        best = jnp.where(has_regular, best_regular, best_ignored)
        matched = (has_regular | has_ignored) & include
        det_ignored = (matched & ~has_regular) | (~matched & outside[None, :])
        gt_matched = gt_matched | (jax.nn.one_hot(best, num_gt, dtype=bool) & matched[..., None])
        return gt_matched, (matched, det_ignored)

    init = jnp.zeros((thresholds.shape[0], area_lo.shape[0], num_gt), bool)
    _, (matched, ignored) = jax.lax.scan(
        step, init, (overlaps, same_class, det_include, det_outside)
    )
    return matched, ignored


def _rank_within_class(classes: jax.Array, valid: jax.Array) -> jax.Array:
    """Per image, the rank [I, D] of each detection among the earlier valid detections
    of its class (detections already sorted by score)."""
    same = (classes[:, :, None] == classes[:, None, :]) & valid[:, None, :]
    earlier = jnp.tril(jnp.ones(same.shape[1:], bool), k=-1)
    return jnp.sum(same & earlier, axis=-1)


def _coco_class_curves(
    k: jax.Array,
    flat: dict[str, jax.Array],
    gt_classes: jax.Array,
    gt_valid: jax.Array,
    gt_ignored: jax.Array,
    max_dets: tuple[int, ...],
    num_recall_points: int,
) -> tuple[jax.Array, jax.Array]:
    """Class ``k``'s interpolated precision [M, T, A, R] and recall [M, T, A] (-1 without
    ground truth), from the detections of every image in global score order:
    ``flat`` holds classes, include, rank [N] and matched, ignored [T, A, N]."""
    steps, bump = _threshold_keys(np.linspace(0.0, 1.0, num_recall_points), num_recall_points - 1)
    max_dets_arr = jnp.asarray(max_dets, jnp.int32)
    selected = flat["include"] & (flat["classes"] == k)
    selected = selected[None, :] & (flat["rank"][None, :] < max_dets_arr[:, None])  # [M, N]
    selected = selected[:, None, None, :]
    matched, ignored = flat["matched"], flat["ignored"]
    tp = jnp.cumsum(selected & matched & ~ignored, axis=-1, dtype=jnp.int32)
    fp = jnp.cumsum(selected & ~matched & ~ignored, axis=-1, dtype=jnp.int32)
    n_pos = jnp.sum(
        (gt_classes == k)[:, None, :] & gt_valid[:, None, :] & ~gt_ignored, axis=(0, 2)
    ).astype(jnp.int32)  # [A]
    n_pos_b = jnp.broadcast_to(n_pos[None, None, :], tp.shape[:-1])  # [M, T, A]
    total = tp + fp
    precision = jnp.where(total > 0, tp / jnp.maximum(total, 1), 0.0)
    envelope = jax.lax.cummax(precision, axis=precision.ndim - 1, reverse=True)
    envelope = jnp.concatenate([envelope, jnp.zeros(envelope.shape[:-1] + (1,))], -1)
    idx = _first_reaching(tp, n_pos_b, steps, bump, num_recall_points - 1)
    sampled = jnp.take_along_axis(envelope, idx, axis=-1)  # [M, T, A, R]
    recall = tp[..., -1] / jnp.maximum(n_pos_b, 1)
    has_gt = n_pos_b > 0
    return jnp.where(has_gt[..., None], sampled, -1.0), jnp.where(has_gt, recall, -1.0)


def _by_global_score(scores, include, classes, rank, matched, ignored) -> dict[str, jax.Array]:
    """Every image's detections in one list [N = I * D], best score first: classes,
    include, rank [N]; matched, ignored [T, A, N] (from [I, D, T, A])."""
    order = _global_order(scores, include)
    flatten = lambda a: a.reshape((-1,) + a.shape[2:])[order]
    return {
        "classes": flatten(classes),
        "include": flatten(include),
        "rank": flatten(rank),
        "matched": jnp.moveaxis(flatten(matched), 0, -1),
        "ignored": jnp.moveaxis(flatten(ignored), 0, -1),
    }


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_classes",
        "iou_thresholds",
        "max_dets",
        "area_ranges",
        "num_recall_points",
    ),
)
def _coco_evaluate(
    det_boxes,
    det_scores,
    det_classes,
    det_valid,
    gt_boxes,
    gt_classes,
    gt_valid,
    gt_areas,
    gt_ignore,
    *,
    num_classes,
    iou_thresholds,
    max_dets,
    area_ranges,
    num_recall_points,
):
    thresholds = jnp.asarray(iou_thresholds, jnp.float32)
    area_lo = jnp.asarray([lo for lo, _ in area_ranges], jnp.float32)
    area_hi = jnp.asarray([hi for _, hi in area_ranges], jnp.float32)
    _, (scores, valid, boxes, classes) = _sorted_by_score(
        det_scores, det_valid, det_boxes, det_classes
    )
    rank = _rank_within_class(classes, valid)  # [I, D]
    include = valid & (rank < max(max_dets))
    gt_ignored = (
        gt_ignore[:, None, :]
        | (gt_areas[:, None, :] < area_lo[:, None])
        | (gt_areas[:, None, :] > area_hi[:, None])
    )  # [I, A, G]
    matched, ignored = jax.vmap(_coco_match_image, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None, None))(
        boxes,
        classes,
        include,
        gt_boxes,
        gt_classes,
        gt_valid,
        gt_ignored,
        thresholds,
        area_lo,
        area_hi,
    )  # [I, D, T, A]
    flat = _by_global_score(scores, include, classes, rank, matched, ignored)
    precision, recall = jax.lax.map(
        lambda k: _coco_class_curves(
            k, flat, gt_classes, gt_valid, gt_ignored, max_dets, num_recall_points
        ),
        jnp.arange(num_classes),
    )  # [K, M, T, A, (R)]
    # pycocotools' layout: precision [T, R, K, A, M], recall [T, K, A, M].
    return {
        "precision": jnp.transpose(precision, (2, 4, 0, 3, 1)),
        "recall": jnp.transpose(recall, (2, 0, 3, 1)),
    }


def coco_evaluate(
    det_boxes: jax.Array,
    det_scores: jax.Array,
    det_classes: jax.Array,
    det_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_classes: jax.Array,
    gt_valid: jax.Array,
    *,
    num_classes: int,
    gt_areas: jax.Array | None = None,
    gt_ignore: jax.Array | None = None,
    iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
    max_dets: Sequence[int] = COCO_MAX_DETS,
    area_ranges: Sequence[tuple[float, float]] = tuple(COCO_AREA_RANGES.values()),
    num_recall_points: int = COCO_NUM_RECALL_POINTS,
) -> dict[str, jax.Array]:
    """COCO box evaluation (pycocotools ``COCOeval.evaluate()`` + ``accumulate()``).

    Shapes as in the module docstring. Returns ``precision [T, R, K, A, M]`` and
    ``recall [T, K, A, M]`` (-1 where a class has no ground truth in that area range),
    in pycocotools' layout: T IoU thresholds, R recall points, K classes, A area ranges,
    M max-detection caps.
    """
    _check_shapes(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid)
    gt_valid = jnp.asarray(gt_valid, bool)
    return _coco_evaluate(
        jnp.asarray(det_boxes, jnp.float32),
        jnp.asarray(det_scores, jnp.float32),
        jnp.asarray(det_classes, jnp.int32),
        jnp.asarray(det_valid, bool),
        jnp.asarray(gt_boxes, jnp.float32),
        jnp.asarray(gt_classes, jnp.int32),
        gt_valid,
        box_area(jnp.asarray(gt_boxes, jnp.float32))
        if gt_areas is None
        else jnp.asarray(gt_areas, jnp.float32),
        jnp.zeros_like(gt_valid) if gt_ignore is None else jnp.asarray(gt_ignore, bool),
        num_classes=int(num_classes),
        iou_thresholds=tuple(float(t) for t in iou_thresholds),
        max_dets=tuple(int(m) for m in max_dets),
        area_ranges=tuple((float(lo), float(hi)) for lo, hi in area_ranges),
        num_recall_points=int(num_recall_points),
    )


def _mean_valid(values: np.ndarray) -> float:
    values = values[values > -1]
    return -1.0 if values.size == 0 else float(np.mean(values))


COCO_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_small",
    "AP_medium",
    "AP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def coco_summary(result: dict[str, jax.Array]) -> dict[str, float]:
    """pycocotools' 12 ``stats`` from :func:`coco_evaluate` run with the default settings."""
    precision = np.asarray(result["precision"], np.float64)
    recall = np.asarray(result["recall"], np.float64)
    if precision.shape[0] != 10 or precision.shape[3] != 4 or precision.shape[4] != 3:
        raise ValueError(
            "coco_summary needs the default 10 IoU thresholds, 4 area ranges and "
            f"3 maxDets; got precision of shape {precision.shape}"
        )
    last = 2  # maxDets = 100
    stats = [
        _mean_valid(precision[:, :, :, 0, last]),
        _mean_valid(precision[0, :, :, 0, last]),
        _mean_valid(precision[5, :, :, 0, last]),
        *(_mean_valid(precision[:, :, :, a, last]) for a in (1, 2, 3)),
        *(_mean_valid(recall[:, :, 0, m]) for m in (0, 1, 2)),
        *(_mean_valid(recall[:, :, a, last]) for a in (1, 2, 3)),
    ]
    return dict(zip(COCO_STAT_NAMES, stats, strict=True))


def format_metrics(metrics: dict[str, float]) -> str:
    """``name=value`` pairs on one line; pycocotools' -1 (an area range or class with no
    ground-truth object in the evaluated split) is written ``n/a`` and explained once."""
    absent = [name for name, value in metrics.items() if value == -1]
    line = " ".join(f"{k}={'n/a' if k in absent else f'{v:.4f}'}" for k, v in metrics.items())
    if absent:
        line += " (n/a: the evaluated split has no ground-truth object of that size or class)"
    return line


# --------------------------------------------------------------------------- VOC


def _voc_match_image(
    det_boxes, det_classes, det_valid, gt_boxes, gt_classes, gt_valid, gt_difficult, iou_threshold
):
    """One image, detections sorted by score -> (tp [D], fp [D]) bool."""
    overlaps = iou(det_boxes[:, None, :], gt_boxes[None, :, :])
    same_class = (det_classes[:, None] == gt_classes[None, :]) & gt_valid[None, :]
    overlaps = jnp.where(same_class, overlaps, -1.0)

    def step(found, inputs):
        overlap, valid = inputs
        best = jnp.argmax(overlap)  # the first best, as numpy's argmax
        hit = overlap[best] > iou_threshold
        difficult = gt_difficult[best]
        tp = valid & hit & ~difficult & ~found[best]
        fp = valid & ~(hit & difficult) & ~tp
        found = found.at[best].set(found[best] | tp)
        return found, (tp, fp)

    _, (tp, fp) = jax.lax.scan(step, jnp.zeros(gt_boxes.shape[0], bool), (overlaps, det_valid))
    return tp, fp


@functools.partial(jax.jit, static_argnames=("num_classes", "use_07_metric"))
def _voc_evaluate(
    det_boxes,
    det_scores,
    det_classes,
    det_valid,
    gt_boxes,
    gt_classes,
    gt_valid,
    gt_difficult,
    iou_threshold,
    *,
    num_classes,
    use_07_metric,
):
    _, (scores, valid, boxes, classes) = _sorted_by_score(
        det_scores, det_valid, det_boxes, det_classes
    )
    tp, fp = jax.vmap(_voc_match_image, in_axes=(0, 0, 0, 0, 0, 0, 0, None))(
        boxes, classes, valid, gt_boxes, gt_classes, gt_valid, gt_difficult, iou_threshold
    )
    order = _global_order(scores, valid)
    f_classes, f_tp, f_fp = (a.reshape(-1)[order] for a in (classes, tp, fp))

    def per_class(k):
        mine = f_classes == k
        tp_sum = jnp.cumsum(mine & f_tp, dtype=jnp.int32)
        fp_sum = jnp.cumsum(mine & f_fp, dtype=jnp.int32)
        n_pos = jnp.sum((gt_classes == k) & gt_valid & ~gt_difficult).astype(jnp.int32)
        total = tp_sum + fp_sum
        precision = jnp.where(total > 0, tp_sum / jnp.maximum(total, 1), 0.0)
        envelope = jax.lax.cummax(precision, axis=0, reverse=True)
        if use_07_metric:
            steps, bump = _threshold_keys(VOC_11_POINTS, 10)
            idx = _first_reaching(tp_sum, n_pos, steps, bump, 10)
            ap = jnp.mean(jnp.concatenate([envelope, jnp.zeros(1)])[idx])
        else:
            # Area under the envelope: each new true positive adds 1/n_pos of recall.
            new_tp = jnp.diff(tp_sum, prepend=0)
            ap = jnp.sum(jnp.where(new_tp > 0, envelope, 0.0)) / jnp.maximum(n_pos, 1)
        return jnp.where(n_pos > 0, ap, -1.0)

    return jax.lax.map(per_class, jnp.arange(num_classes))


def voc_evaluate(
    det_boxes: jax.Array,
    det_scores: jax.Array,
    det_classes: jax.Array,
    det_valid: jax.Array,
    gt_boxes: jax.Array,
    gt_classes: jax.Array,
    gt_valid: jax.Array,
    *,
    num_classes: int,
    gt_difficult: jax.Array | None = None,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> dict[str, jax.Array]:
    """PASCAL VOC average precision per class and its mean.

    ``use_07_metric=True`` is VOC2007's 11-point interpolation (mean of the best precision
    at recall >= 0, 0.1, ..., 1); otherwise the all-point area under the monotone
    precision-recall curve (VOC2010+). Returns ``{'ap': [K] (-1 for classes without
    ground truth), 'map': []}``.
    """
    _check_shapes(det_boxes, det_scores, det_classes, det_valid, gt_boxes, gt_classes, gt_valid)
    gt_valid = jnp.asarray(gt_valid, bool)
    ap = _voc_evaluate(
        jnp.asarray(det_boxes, jnp.float32),
        jnp.asarray(det_scores, jnp.float32),
        jnp.asarray(det_classes, jnp.int32),
        jnp.asarray(det_valid, bool),
        jnp.asarray(gt_boxes, jnp.float32),
        jnp.asarray(gt_classes, jnp.int32),
        gt_valid,
        jnp.zeros_like(gt_valid) if gt_difficult is None else jnp.asarray(gt_difficult, bool),
        jnp.float32(iou_threshold),
        num_classes=int(num_classes),
        use_07_metric=bool(use_07_metric),
    )
    present = ap > -1
    mean = jnp.sum(jnp.where(present, ap, 0.0)) / jnp.maximum(jnp.sum(present), 1)
    return {"ap": ap, "map": mean}
