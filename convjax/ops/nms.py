"""Non-max suppression with static shapes: hard NMS (class-aware or not) and soft-NMS.

Every function returns padded outputs of a fixed length (``max_output_size``, the
max-detections cap) plus the number of valid entries, so it runs under ``jax.jit``
and ``jax.vmap`` (a batch of images: vmap over the leading axis).

Hard NMS keeps exactly the set torchvision's ``nms`` keeps, in the same order
(descending score, ties by index; a box is suppressed by a kept, higher-scoring box
when their float32 IoU is *strictly* greater than the threshold taken as a float64,
so an IoU equal to the threshold written in decimal -- 0.3, 0.6, 1/3 -- behaves the
same way in both). It is computed in tiles so
that it stays fast for 10,000 boxes: boxes are sorted by score; the top
``LEAD_TILES`` tiles suppress themselves and then every later box in one vectorised
pass; the survivors are compacted (order kept) and taken a tile at a time, each tile
first suppressed by the boxes kept so far (held compacted, so the cost grows with the
number kept, not the number of boxes), then by itself through a fixed-point iteration
that reaches the greedy result exactly (entry ``i`` depends only on entries before it,
so the greedy answer is the unique fixed point).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convjax.ops.boxes import iou

SOFT_NMS_METHODS = ("linear", "gaussian")
LEAD_TILES = 8  # the top LEAD_TILES tiles suppress all later boxes in one vectorised pass


class NMSResult(NamedTuple):
    """``indices: [max_output_size]`` int32 into the input boxes (-1 past ``count``)."""

    indices: jax.Array
    count: jax.Array


class SoftNMSResult(NamedTuple):
    """Kept ``indices`` (-1 padding), their decayed ``scores`` (0 padding), ``count``."""

    indices: jax.Array
    scores: jax.Array
    count: jax.Array


def _check_inputs(boxes, scores, classes, valid) -> int:
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be xyxy [N, 4]; got shape {tuple(boxes.shape)}")
    n = boxes.shape[0]
    for name, arr in (("scores", scores), ("classes", classes), ("valid", valid)):
        if arr is not None and tuple(arr.shape) != (n,):
            raise ValueError(f"{name} must have shape [N] = [{n}]; got {tuple(arr.shape)}")
    return n


def _output_size(n: int, max_output_size: int | None) -> int:
    size = n if max_output_size is None else int(max_output_size)
    if size < 0:
        raise ValueError(f"max_output_size must be >= 0 (or None for N); got {max_output_size}")
    return size


def _block_iou(a: jax.Array, area_a: jax.Array, b: jax.Array, area_b: jax.Array) -> jax.Array:
    """a: [P, 4], b: [Q, 4] -> [P, Q]; torchvision's arithmetic, so ties break the same way."""
    lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
    rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.maximum(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _self_suppress(boxes, area, classes, candidate, iou_threshold):
    """Greedy NMS inside one score-sorted tile: iterate keep = cand & ~(kept predecessor
    overlaps) to its fixed point. boxes: [T, 4] -> keep [T] bool."""
    tile = boxes.shape[0]
    over = _block_iou(boxes, area, boxes, area) > iou_threshold
    over &= jnp.arange(tile)[:, None] < jnp.arange(tile)[None, :]  # row precedes column
    over &= classes[:, None] == classes[None, :]
    over = over.astype(jnp.float32)

    def body(state):
        keep, _ = state
        new = candidate & ((keep.astype(jnp.float32) @ over) == 0)
        return new, jnp.any(new != keep)

    keep, _ = jax.lax.while_loop(lambda s: s[1], body, (candidate, jnp.any(candidate)))
    return keep


def _tiled_nms_keep(
    boxes: jax.Array,
    candidate: jax.Array,
    classes: jax.Array,
    iou_threshold: jax.Array,
    max_output_size: int,
    tile: int,
) -> jax.Array:
    """Greedy NMS on score-sorted, tile-padded inputs; returns keep: [num_tiles * tile] bool.

    1. The top ``LEAD_TILES`` tiles suppress themselves, then every later box in one
       vectorised pass (with clustered boxes this removes most candidates at once).
    2. The surviving candidates are compacted (order kept) and processed a tile at a
       time (:func:`_compacted_keep`).
    """
    npad = boxes.shape[0]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lead = min(npad, LEAD_TILES * tile)
    keep0 = _self_suppress(
        boxes[:lead], area[:lead], classes[:lead], candidate[:lead], iou_threshold
    )
    if lead == npad:
        return keep0
    over = _block_iou(boxes[:lead], area[:lead], boxes, area) > iou_threshold
    over &= keep0[:, None] & (classes[:lead, None] == classes[None, :])
    later = jnp.arange(npad) >= lead
    remaining = candidate & later & ~jnp.any(over, axis=0)
    keep = _compacted_keep(
        boxes, area, classes, remaining, keep0, iou_threshold, max_output_size, tile
    )
    return keep.at[:lead].set(keep0)


def _append_kept(keep, new_boxes, new_area, new_cls, buffers):
    """Appends the kept rows of a tile to the compacted buffers of kept boxes."""
    kept_boxes, kept_area, kept_cls, num_kept = buffers
    dropped = kept_boxes.shape[0]  # an out-of-range slot: mode="drop" ignores it
    slot = jnp.where(keep, num_kept + jnp.cumsum(keep) - 1, dropped)
    return (
        kept_boxes.at[slot].set(new_boxes, mode="drop"),
        kept_area.at[slot].set(new_area, mode="drop"),
        kept_cls.at[slot].set(new_cls, mode="drop"),
        num_kept + jnp.sum(keep).astype(jnp.int32),
    )


def _suppressed_by_kept(buffers, boxes, area, classes, candidate, iou_threshold, tile):
    """Clears the candidates of one tile that a kept box overlaps; the kept buffer is
    read a tile-sized chunk at a time. boxes: [T, 4] -> candidate [T] bool."""
    kept_boxes, kept_area, kept_cls, num_kept = buffers

    def cond(state):
        c, cand = state
        return (c * tile < num_kept) & jnp.any(cand)

    def body(state):
        c, cand = state
        start = c * tile
        chunk = jax.lax.dynamic_slice_in_dim(kept_boxes, start, tile)
        chunk_area = jax.lax.dynamic_slice_in_dim(kept_area, start, tile)
        chunk_cls = jax.lax.dynamic_slice_in_dim(kept_cls, start, tile)
        real = (start + jnp.arange(tile)) < num_kept
        hit = _block_iou(chunk, chunk_area, boxes, area) > iou_threshold
        hit &= real[:, None] & (chunk_cls[:, None] == classes[None, :])
        return c + 1, cand & ~jnp.any(hit, axis=0)

    return jax.lax.while_loop(cond, body, (0, candidate))[1]


def _compacted_keep(boxes, area, classes, remaining, keep0, iou_threshold, max_output_size, tile):
    """Step 2 of :func:`_tiled_nms_keep`: the ``remaining`` candidates, compacted in order
    and taken a tile at a time, each suppressed by the boxes kept so far (a compacted
    buffer, starting with the lead tiles' ``keep0``), then by itself. -> keep [npad]."""
    npad, lead = boxes.shape[0], keep0.shape[0]
    num_tiles = npad // tile
    count = jnp.sum(remaining)
    (position,) = jnp.nonzero(remaining, size=npad, fill_value=0)
    tiles = boxes[position].reshape(num_tiles, tile, 4)
    tile_area = area[position].reshape(num_tiles, tile)
    tile_cls = classes[position].reshape(num_tiles, tile)
    tile_cand = (jnp.arange(npad) < count).reshape(num_tiles, tile)

    def cond(state):
        i, _, buffers = state
        return (i * tile < count) & (buffers[-1] < max_output_size)

    def body(state):
        i, keep_all, buffers = state
        cand = _suppressed_by_kept(
            buffers, tiles[i], tile_area[i], tile_cls[i], tile_cand[i], iou_threshold, tile
        )
        keep = _self_suppress(tiles[i], tile_area[i], tile_cls[i], cand, iou_threshold)
        buffers = _append_kept(keep, tiles[i], tile_area[i], tile_cls[i], buffers)
        return i + 1, keep_all.at[i].set(keep), buffers

    empty = (
        jnp.zeros_like(boxes),
        jnp.zeros_like(area),
        jnp.zeros_like(classes),
        jnp.array(0, jnp.int32),
    )
    buffers = _append_kept(keep0, boxes[:lead], area[:lead], classes[:lead], empty)
    init = (0, jnp.zeros((num_tiles, tile), bool), buffers)
    _, keep_compact, _ = jax.lax.while_loop(cond, body, init)
    target = jnp.where(jnp.arange(npad) < count, position, npad)
    return jnp.zeros(npad, bool).at[target].set(keep_compact.reshape(-1), mode="drop")


def float32_threshold(threshold: float | jax.Array) -> jax.Array:
    """The float32 threshold ``t32`` for which float32 ``iou > t32`` holds exactly when
    ``iou > threshold`` in float64 -- torchvision compares its float32 IoU with a double.

    A Python or numpy float is rounded *down* to float32 (0.3 -> 0.29999998, so an IoU
    that float32 computes as 0.3 exceeds it, as in torchvision); a JAX array (e.g. a
    traced threshold) is taken as its float32 value.
    """
    if isinstance(threshold, jax.Array):
        return jnp.asarray(threshold, jnp.float32)
    value = float(threshold)
    rounded = np.float32(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return jnp.asarray(rounded, jnp.float32)


def _tile_size(n: int, tile_size: int) -> int:
    # One tile when everything fits; otherwise a fixed tile keeps compile shapes small.
    return max(8, 8 * math.ceil(n / 8)) if n <= tile_size else tile_size


def nms(
    boxes: jax.Array,
    scores: jax.Array,
    iou_threshold: float | jax.Array = 0.5,
    *,
    max_output_size: int | None = None,
    score_threshold: float | jax.Array | None = None,
    classes: jax.Array | None = None,
    valid: jax.Array | None = None,
    tile_size: int = 64,
) -> NMSResult:
    """Greedy hard non-max suppression with a static output shape.

    Args:
      boxes: [N, 4] xyxy.
      scores: [N]; higher is better.
      iou_threshold: a kept box suppresses lower-scoring boxes whose IoU with it is > this
        (float32 IoU compared with the threshold as a float64, as torchvision does; see
        :func:`float32_threshold`).
      max_output_size: the max-detections cap (default N); the output length. Zero boxes
        (N = 0) or a cap of 0 give count 0 and all-padding indices.
      score_threshold: boxes scoring <= this are dropped before suppression.
      classes: optional [N] int; when given, boxes only suppress boxes of their own
        class (class-aware "batched" NMS).
      valid: optional [N] bool marking real boxes (padding is never kept).
      tile_size: boxes per tile (a speed knob; the result does not depend on it).

    Returns:
      ``NMSResult(indices [max_output_size] int32, count [] int32)``: indices of the kept
      boxes in descending score order (ties by index), -1 past ``count``.
    """
    n = _check_inputs(boxes, scores, classes, valid)
    max_output_size = _output_size(n, max_output_size)
    if n == 0 or max_output_size == 0:
        return NMSResult(jnp.full((max_output_size,), -1, jnp.int32), jnp.array(0, jnp.int32))
    return _nms_jit(
        boxes,
        scores,
        float32_threshold(iou_threshold),
        jnp.asarray(-jnp.inf if score_threshold is None else score_threshold, jnp.float32),
        jnp.zeros((n,), jnp.int32) if classes is None else classes.astype(jnp.int32),
        jnp.ones((n,), bool) if valid is None else valid.astype(bool),
        max_output_size=max_output_size,
        tile=_tile_size(n, tile_size),
    )


@jax.jit(static_argnames=("max_output_size", "tile"))
def _nms_jit(
    boxes, scores, iou_threshold, score_threshold, classes, valid, *, max_output_size, tile
):
    n = boxes.shape[0]
    npad = tile * math.ceil(n / tile)
    order = jnp.argsort(-scores, stable=True)
    candidate = valid[order] & (scores[order] > score_threshold)

    def pad(x):
        return jnp.pad(x, [(0, npad - n)] + [(0, 0)] * (x.ndim - 1))

    keep = _tiled_nms_keep(
        pad(boxes[order].astype(jnp.float32)),
        pad(candidate),
        pad(classes[order]),
        iou_threshold,
        max_output_size,
        tile,
    )[:n]
    count = jnp.minimum(jnp.sum(keep), max_output_size).astype(jnp.int32)
    (position,) = jnp.nonzero(keep, size=max_output_size, fill_value=0)
    indices = jnp.where(jnp.arange(max_output_size) < count, order[position], -1)
    return NMSResult(indices.astype(jnp.int32), count)


def batched_nms(
    boxes: jax.Array,
    scores: jax.Array,
    classes: jax.Array,
    iou_threshold: float | jax.Array = 0.5,
    **kwargs,
) -> NMSResult:
    """Class-aware NMS (torchvision's ``batched_nms``): boxes only suppress their own class.

    ``boxes: [N, 4]``, ``scores: [N]``, ``classes: [N]``; keyword arguments as :func:`nms`.
    """
    return nms(boxes, scores, iou_threshold, classes=classes, **kwargs)


def soft_nms(
    boxes: jax.Array,
    scores: jax.Array,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    max_output_size: int | None = None,
    classes: jax.Array | None = None,
    valid: jax.Array | None = None,
) -> SoftNMSResult:
    """Soft-NMS (Bodla et al. 2017): decay the scores of overlapping boxes instead of removing.

    Repeatedly takes the highest remaining score ``M`` and rescales every remaining box
    ``b`` of the same class (all boxes when ``classes`` is None) by
    ``1 - IoU(M, b)`` where ``IoU > iou_threshold`` (``'linear'``) or by
    ``exp(-IoU(M, b)^2 / sigma)`` (``'gaussian'``); stops when the best remaining score is
    below ``score_threshold`` or ``max_output_size`` boxes are taken.

    Args:
      boxes: [N, 4] xyxy; scores: [N]; classes: optional [N] int; valid: optional [N] bool.

    Returns:
      ``SoftNMSResult(indices [K], scores [K], count)`` with ``K = max_output_size``, in the
      order taken (descending decayed score).
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(
            f"Unknown soft-NMS method {method!r}; valid: {', '.join(SOFT_NMS_METHODS)}"
        )
    n = _check_inputs(boxes, scores, classes, valid)
    max_output_size = _output_size(n, max_output_size)
    if n == 0 or max_output_size == 0:
        return SoftNMSResult(
            jnp.full((max_output_size,), -1, jnp.int32),
            jnp.zeros((max_output_size,), jnp.float32),
            jnp.array(0, jnp.int32),
        )
    return _soft_nms_jit(
        boxes.astype(jnp.float32),
        scores.astype(jnp.float32),
        jnp.zeros((n,), jnp.int32) if classes is None else classes.astype(jnp.int32),
        jnp.ones((n,), bool) if valid is None else valid.astype(bool),
        jnp.float32(sigma),
        float32_threshold(iou_threshold),
        jnp.float32(score_threshold),
        method=method,
        max_output_size=max_output_size,
    )


@jax.jit(static_argnames=("method", "max_output_size"))
def _soft_nms_jit(
    boxes, scores, classes, valid, sigma, iou_threshold, score_threshold, *, method, max_output_size
):
    def step(state, _):
        current, remaining = state
        masked = jnp.where(remaining, current, -jnp.inf)
        best = jnp.argmax(masked)
        take = masked[best] >= score_threshold
        overlap = iou(boxes[best], boxes)
        if method == "linear":
            decay = jnp.where(overlap > iou_threshold, 1.0 - overlap, 1.0)
        else:
            decay = jnp.exp(-(overlap**2) / sigma)
        decay = jnp.where(classes == classes[best], decay, 1.0)
        remaining = remaining & (jnp.arange(boxes.shape[0]) != best)
        current = jnp.where(take, current * decay, current)
        remaining = remaining & take
        out = (jnp.where(take, best, -1), jnp.where(take, masked[best], 0.0))
        return (current, remaining), out

    _, (indices, kept_scores) = jax.lax.scan(step, (scores, valid), None, length=max_output_size)
    count = jnp.sum(indices >= 0).astype(jnp.int32)
    return SoftNMSResult(indices.astype(jnp.int32), kept_scores, count)
