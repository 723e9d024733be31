"""Anchor clustering with d = 1 - IoU against a numpy Lloyd loop, on known box shapes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from convjax.detection.anchors import (
    anchor_sweep,
    boxes_wh,
    cluster_anchors,
    kmeans_anchors,
    kmedians_anchors,
)


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


TRUE_SHAPES = np.array([[0.1, 0.1], [0.3, 0.15], [0.15, 0.4]])


def shape_clusters(rng, per_cluster=60, outliers=0):
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.08, (per_cluster, 2))) for c in TRUE_SHAPES])
    if outliers:
        wh = np.concatenate([wh, rng.uniform(0.6, 0.9, (outliers, 2))])
    return wh.astype(np.float32)


def np_iou(wh, centres):
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(
        wh[:, None, 1], centres[None, :, 1]
    )
    return inter / (wh[:, None].prod(-1) + centres[None].prod(-1) - inter)


def np_lloyd(wh, centres, update):
    """Assign each box to the centre with the smallest 1 - IoU; move centres; repeat."""
    centres = centres.astype(np.float64).copy()
    assignment = np.argmax(np_iou(wh, centres), 1)
    for _ in range(100):
        for k in range(len(centres)):
            members = wh[assignment == k]
            if len(members):
                centres[k] = members.mean(0) if update == "mean" else np.median(members, 0)
        new = np.argmax(np_iou(wh, centres), 1)
        if np.array_equal(new, assignment):
            break
        assignment = new
    order = np.argsort(centres.prod(1))
    return centres[order], np.argsort(order)[assignment]


@pytest.mark.parametrize("update", ["mean", "median"])
def test_matches_numpy_lloyd_from_the_same_start(update):
    rng = np.random.default_rng(0)
    wh = shape_clusters(rng, 40, outliers=5)
    start = wh[rng.choice(len(wh), 4, replace=False)]
    got = cluster_anchors(wh, 4, update=update, initial=start)
    centres, assignment = np_lloyd(wh, start, update)
    np.testing.assert_allclose(np.asarray(got.anchors), centres, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.assignment), assignment)
    best = np_iou(wh, centres).max(1).mean()
    assert float(got.mean_iou) == pytest.approx(best, rel=1e-5)


def test_recovers_known_shapes_and_iou_grows_with_k():
    rng = np.random.default_rng(1)
    wh = shape_clusters(rng)
    anchors = np.asarray(kmeans_anchors(wh, 3, key=jax.random.PRNGKey(3)).anchors)
    expected = TRUE_SHAPES[np.argsort(TRUE_SHAPES.prod(1))]
    np.testing.assert_allclose(anchors, expected, rtol=0.06)
    sweep = anchor_sweep(wh, [1, 2, 3])
    values = [sweep[k] for k in (1, 2, 3)]
    assert values[0] < values[1] < values[2]
    assert values[2] > 0.85  # three clusters fit three anchors well


def test_kmedians_resists_outliers():
    rng = np.random.default_rng(2)
    wh = shape_clusters(rng, 30, outliers=0)
    # Outliers that join the largest cluster: they pull its mean, not its median.
    wh = np.concatenate([wh, np.tile([[0.15, 0.9]], (8, 1))]).astype(np.float32)
    start = TRUE_SHAPES.astype(np.float32)
    means = np.asarray(kmeans_anchors(wh, 3, initial=start).anchors)
    medians = np.asarray(kmedians_anchors(wh, 3, initial=start).anchors)
    target = TRUE_SHAPES[2]
    assert np.abs(medians[2] - target).sum() < np.abs(means[2] - target).sum()


def test_boxes_wh_and_bad_inputs():
    boxes = np.array([[[0, 0, 2, 3], [1, 1, 5, 2]]], np.float32)
    np.testing.assert_array_equal(boxes_wh(boxes, np.array([[1, 0]])), [[2, 3]])
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        kmeans_anchors(np.zeros((5, 3)), 2)
    with pytest.raises(ValueError, match=r"k must be in \[1, N=5\]"):
        kmeans_anchors(np.ones((5, 2)), 6)
    with pytest.raises(ValueError, match="valid: mean, median"):
        cluster_anchors(np.ones((5, 2)), 2, update="mode")
