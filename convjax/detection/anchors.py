"""Anchor boxes by clustering box shapes with the YOLOv2 distance ``d = 1 - IoU``.

Boxes are compared by shape only (``(w, h)``, both centred), so large and small boxes
are treated alike (Euclidean k-means would let large boxes dominate). :func:`kmeans_anchors`
updates a centre to the mean of its members, :func:`kmedians_anchors` to their
per-coordinate median; :func:`anchor_sweep` reports the average best IoU for each k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from convjax.detection.yolo import anchor_iou

CENTRE_UPDATES = ("mean", "median")


class Anchors(NamedTuple):
    """``anchors [k, 2]`` (w, h) sorted by area, ``assignment [N]``, ``mean_iou`` of each
    box with its best anchor, and ``iterations`` run."""

    anchors: jax.Array
    assignment: jax.Array
    mean_iou: jax.Array
    iterations: jax.Array


def mean_best_iou(wh: jax.Array, anchors: jax.Array) -> jax.Array:
    """Average over boxes ``wh [N, 2]`` of the IoU with the best of ``anchors [k, 2]``."""
    return jnp.mean(jnp.max(anchor_iou(wh, anchors), axis=-1))


def _update(wh, assignment, centres, update):
    k = centres.shape[0]
    member = assignment[:, None] == jnp.arange(k)[None, :]  # [N, k]
    count = jnp.sum(member, axis=0)
    if update == "mean":
        new = (member.T.astype(wh.dtype) @ wh) / jnp.maximum(count, 1)[:, None]
    else:
        # Per-coordinate median of the members: the middle of each sorted column.
        values = jnp.where(member[:, :, None], wh[:, None, :], jnp.inf)  # [N, k, 2]
        ordered = jnp.sort(values, axis=0)
        lo = jnp.maximum((count - 1) // 2, 0)
        hi = jnp.maximum(count // 2, 0)
        take = lambda i: jnp.take_along_axis(ordered, i[None, :, None], axis=0)[0]
        new = (take(lo) + take(hi)) / 2
    return jnp.where((count > 0)[:, None], new, centres)  # an empty cluster keeps its centre


@jax.jit(static_argnames="k")
def _initial_centres(key: jax.Array, wh: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding with the 1 - IoU distance."""
    n = wh.shape[0]
    first = jax.random.randint(key, (), 0, n)
    centres = jnp.zeros((k, 2), wh.dtype).at[0].set(wh[first])

    def pick(i, state):
        centres, key = state
        key, sub = jax.random.split(key)
        placed = jnp.arange(k) < i
        distance = jnp.where(placed[None, :], 1 - anchor_iou(wh, centres), jnp.inf).min(-1)
        probs = distance**2 / jnp.maximum(jnp.sum(distance**2), 1e-12)
        choice = jax.random.choice(sub, n, p=probs)
        return centres.at[i].set(wh[choice]), key

    centres, _ = jax.lax.fori_loop(1, k, pick, (centres, key))
    return centres


def cluster_anchors(
    wh: jax.Array,
    k: int,
    *,
    key: jax.Array | None = None,
    update: str = "mean",
    max_iterations: int = 100,
    initial: jax.Array | None = None,
) -> Anchors:
    """Lloyd iterations with ``d = 1 - IoU`` until assignments stop changing.

    Args:
      wh: [N, 2] box widths and heights (any unit; anchors come out in the same unit).
      k: number of anchors.
      key: PRNG key for k-means++ seeding (default ``PRNGKey(0)``).
      update: ``'mean'`` (k-means) or ``'median'`` (k-medians).
      initial: optional [k, 2] starting centres instead of the seeding.
    """
    if update not in CENTRE_UPDATES:
        raise ValueError(f"Unknown centre update {update!r}; valid: {', '.join(CENTRE_UPDATES)}")
    wh = jnp.asarray(wh, jnp.float32)
    if wh.ndim != 2 or wh.shape[-1] != 2:
        raise ValueError(f"wh must be [N, 2] (width, height); got {tuple(wh.shape)}")
    if not 1 <= k <= wh.shape[0]:
        raise ValueError(f"k must be in [1, N={wh.shape[0]}]; got {k}")
    key = jax.random.PRNGKey(0) if key is None else key
    centres = (
        _initial_centres(key, wh, k=k) if initial is None else jnp.asarray(initial, jnp.float32)
    )
    return _lloyd(wh, centres, update=update, max_iterations=max_iterations)


@jax.jit(static_argnames=("update", "max_iterations"))
def _lloyd(wh, centres, *, update, max_iterations):
    def assign(c):
        return jnp.argmax(anchor_iou(wh, c), axis=-1)  # nearest = highest IoU

    def cond(state):
        i, _, assignment, previous = state
        return (i < max_iterations) & ((i == 0) | jnp.any(assignment != previous))

    def body(state):
        i, centres, assignment, _ = state
        centres = _update(wh, assignment, centres, update)
        return i + 1, centres, assign(centres), assignment

    first = assign(centres)
    i, centres, assignment, _ = jax.lax.while_loop(cond, body, (0, centres, first, first))
    order = jnp.argsort(jnp.prod(centres, axis=-1))
    rank = jnp.argsort(order)
    return Anchors(centres[order], rank[assignment], mean_best_iou(wh, centres), i)


def kmeans_anchors(wh: jax.Array, k: int, **kwargs) -> Anchors:
    """k-means with ``d = 1 - IoU`` (YOLOv2's dimension clusters)."""
    return cluster_anchors(wh, k, update="mean", **kwargs)


def kmedians_anchors(wh: jax.Array, k: int, **kwargs) -> Anchors:
    """k-medians with ``d = 1 - IoU`` (centres are per-coordinate medians; robust to outliers)."""
    return cluster_anchors(wh, k, update="median", **kwargs)


def anchor_sweep(
    wh: jax.Array, ks: Sequence[int], *, update: str = "mean", seed: int = 0
) -> dict[int, float]:
    """Average best IoU against k (the YOLOv2 paper's Figure 2): ``{k: mean IoU}``."""
    key = jax.random.PRNGKey(seed)
    return {int(k): float(cluster_anchors(wh, int(k), key=key, update=update).mean_iou) for k in ks}


def boxes_wh(boxes: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Widths and heights ``[M, 2]`` of the real boxes in ``boxes [..., 4]`` xyxy."""
    boxes = np.asarray(boxes).reshape(-1, 4)
    wh = boxes[:, 2:] - boxes[:, :2]
    if mask is not None:
        wh = wh[np.asarray(mask).reshape(-1) > 0]
    return wh
