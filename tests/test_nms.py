"""Hard NMS, class-aware NMS and soft-NMS against plain numpy greedy loops (and torchvision)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.ops.nms import batched_nms, nms, soft_nms


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def make_boxes(rng: np.random.Generator, n: int, clustered: bool) -> np.ndarray:
    if clustered:
        centres = rng.random((4, 2)) * 150
        xy = centres[rng.integers(0, 4, n)] + rng.normal(size=(n, 2)) * 4
        wh = 30 + rng.normal(size=(n, 2)) * 3
    else:
        xy = rng.random((n, 2)) * 150
        wh = rng.random((n, 2)) * 40 + 1
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def np_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """torchvision's CPU kernel: float32 ``inter / (area_i + area_j - inter)``, returned as
    float64 so that ``> threshold`` compares with the (double) threshold as its ``ovr >
    iou_threshold`` does."""
    box, others = box.astype(np.float32), others.astype(np.float32)
    iw = np.maximum(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0)
    ih = np.maximum(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0)
    inter = iw * ih
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    ovr = inter / (area + areas - inter)
    assert ovr.dtype == np.float32
    return ovr.astype(np.float64)


def np_greedy_nms(boxes, scores, threshold, classes=None):
    """The textbook loop: take the best remaining box, drop same-class boxes over the threshold."""
    classes = np.zeros(len(boxes), int) if classes is None else classes
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        overlap = np_iou(boxes[i], boxes) > threshold
        suppressed |= overlap & (classes == classes[i])
    return np.array(kept, int)


def np_soft_nms(boxes, scores, method, sigma, threshold, score_threshold, max_out):
    scores = scores.astype(np.float64).copy()
    remaining = np.ones(len(boxes), bool)
    kept, kept_scores = [], []
    while remaining.any() and len(kept) < max_out:
        best = np.flatnonzero(remaining)[np.argmax(scores[remaining])]
        if scores[best] < score_threshold:
            break
        kept.append(best)
        kept_scores.append(scores[best])
        remaining[best] = False
        overlap = np_iou(boxes[best], boxes)
        if method == "linear":
            weight = np.where(overlap > threshold, 1 - overlap, 1.0)
        else:
            weight = np.exp(-(overlap**2) / sigma)
        scores = np.where(remaining, scores * weight, scores)
    return np.array(kept, int), np.array(kept_scores)


def kept(result) -> np.ndarray:
    count = int(result.count)
    assert np.all(np.asarray(result.indices[count:]) == -1)
    return np.asarray(result.indices[:count])


@pytest.mark.parametrize("clustered", [False, True])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_matches_greedy_reference(clustered, threshold):
    rng = np.random.default_rng(int(clustered) * 10 + int(threshold * 10))
    boxes = make_boxes(rng, 300, clustered)
    scores = rng.random(300).astype(np.float32)
    scores[:20] = scores[20:40]  # ties are broken by index, as torchvision does
    expected = np_greedy_nms(boxes, scores, threshold)
    for tile_size in (32, 512):  # many tiles (compacted chunks) and one tile
        got = kept(nms(jnp.asarray(boxes), jnp.asarray(scores), threshold, tile_size=tile_size))
        np.testing.assert_array_equal(got, expected)


def test_class_aware_nms_matches_reference():
    rng = np.random.default_rng(5)
    boxes = make_boxes(rng, 200, clustered=True)
    scores = rng.random(200).astype(np.float32)
    classes = rng.integers(0, 3, 200)
    got = kept(
        batched_nms(
            jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes), 0.5, tile_size=64
        )
    )
    np.testing.assert_array_equal(got, np_greedy_nms(boxes, scores, 0.5, classes))
    # Boxes of different classes do overlap here, so class-agnostic NMS keeps fewer.
    assert len(np_greedy_nms(boxes, scores, 0.5)) < len(got)


def test_cap_score_threshold_and_padding():
    rng = np.random.default_rng(6)
    boxes = make_boxes(rng, 120, clustered=False)
    scores = rng.random(120).astype(np.float32)
    full = np_greedy_nms(boxes, scores, 0.5)
    capped = nms(jnp.asarray(boxes), jnp.asarray(scores), 0.5, max_output_size=10, tile_size=32)
    assert capped.indices.shape == (10,)
    np.testing.assert_array_equal(kept(capped), full[:10])
    # Boxes at or under the score threshold and invalid (padding) boxes are never kept.
    valid = np.arange(120) < 100
    got = kept(
        nms(
            jnp.asarray(boxes),
            jnp.asarray(scores),
            0.5,
            score_threshold=0.5,
            valid=jnp.asarray(valid),
        )
    )
    keep_mask = valid & (scores > 0.5)
    sub = np.flatnonzero(keep_mask)
    np.testing.assert_array_equal(got, sub[np_greedy_nms(boxes[sub], scores[sub], 0.5)])


def test_nms_vmaps_over_images_under_jit():
    rng = np.random.default_rng(8)
    boxes = np.stack([make_boxes(rng, 64, c) for c in (False, True, True)])
    scores = rng.random((3, 64)).astype(np.float32)
    batched = jax.jit(jax.vmap(lambda b, s: nms(b, s, 0.45, max_output_size=16)))
    result = batched(jnp.asarray(boxes), jnp.asarray(scores))
    assert result.indices.shape == (3, 16)
    for i in range(3):
        expected = np_greedy_nms(boxes[i], scores[i], 0.45)[:16]
        np.testing.assert_array_equal(kept(jax.tree.map(lambda x, i=i: x[i], result)), expected)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_matches_reference(method):
    rng = np.random.default_rng(9)
    boxes = make_boxes(rng, 80, clustered=True)
    scores = rng.random(80).astype(np.float32)
    result = soft_nms(
        jnp.asarray(boxes),
        jnp.asarray(scores),
        method=method,
        sigma=0.5,
        iou_threshold=0.3,
        score_threshold=0.05,
        max_output_size=40,
    )
    expected, expected_scores = np_soft_nms(boxes, scores, method, 0.5, 0.3, 0.05, 40)
    got = kept(result)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(np.asarray(result.scores[: len(got)]), expected_scores, rtol=1e-5)
    # Soft-NMS keeps more boxes than hard NMS at the same threshold (it only decays scores).
    assert len(got) >= len(np_greedy_nms(boxes, scores, 0.3))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"xyxy \[N, 4\]"):
        nms(jnp.zeros((5, 5)), jnp.zeros(5))
    with pytest.raises(ValueError, match=r"scores must have shape \[N\] = \[5\]"):
        nms(jnp.zeros((5, 4)), jnp.zeros(4))
    with pytest.raises(ValueError, match="valid: linear, gaussian"):
        soft_nms(jnp.zeros((5, 4)), jnp.zeros(5), method="hard")


@pytest.mark.parametrize("clustered", [False, True])
def test_nms_matches_torchvision(clustered):
    tv = pytest.importorskip(
        "torchvision.ops",
        reason='torchvision is the optional NMS reference: pip install -e ".[torchvision]"',
    )
    torch = pytest.importorskip(
        "torch", reason='PyTorch is an optional reference: pip install -e ".[torch]"'
    )
    rng = np.random.default_rng(11 + clustered)
    boxes = make_boxes(rng, 1000, clustered)
    scores = rng.random(1000).astype(np.float32)
    classes = rng.integers(0, 4, 1000)
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    for threshold in (0.3, 0.5):
        reference = tv.nms(tb, ts, threshold).numpy()
        got = kept(nms(jnp.asarray(boxes), jnp.asarray(scores), threshold, tile_size=128))
        np.testing.assert_array_equal(got, reference)  # same set, same order
    reference = tv.batched_nms(tb, ts, torch.from_numpy(classes), 0.5).numpy()
    got = kept(
        batched_nms(
            jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes), 0.5, tile_size=128
        )
    )
    np.testing.assert_array_equal(got, reference)


# Thresholds float32 rounds up (0.1, 0.3, 1/3, 0.6), down (0.7) or holds exactly (0.5), each
# with a pair of boxes whose float32 IoU is float32(threshold): torchvision suppresses the
# second box exactly when float32(threshold) > threshold.
TIES = [
    (0.1, [[0, 0, 10, 10], [0, 0, 10, 1]], [0]),
    (0.3, [[0, 0, 10, 10], [0, 0, 10, 3]], [0]),
    (1 / 3, [[0, 0, 4, 3], [0, 0, 4, 1]], [0]),
    (0.6, [[0, 0, 10, 10], [0, 0, 10, 6]], [0]),
    (0.7, [[0, 0, 10, 10], [0, 0, 10, 7]], [0, 1]),
    (0.5, [[0, 0, 10, 10], [0, 0, 10, 5]], [0, 1]),
]


@pytest.mark.parametrize("threshold,boxes,want", TIES)
def test_iou_equal_to_threshold_keeps_what_torchvision_keeps(threshold, boxes, want):
    boxes = np.asarray(boxes, np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert np.float32(np_iou(boxes[0], boxes[1:])[0]) == np.float32(threshold)  # a real tie
    np.testing.assert_array_equal(np_greedy_nms(boxes, scores, threshold), want)
    np.testing.assert_array_equal(
        kept(nms(jnp.asarray(boxes), jnp.asarray(scores), threshold)), want
    )
    classes = jnp.zeros(2, jnp.int32)
    got = kept(batched_nms(jnp.asarray(boxes), jnp.asarray(scores), classes, threshold))
    np.testing.assert_array_equal(got, want)


def test_grid_boxes_with_many_exact_ties_match_the_kernel_formula():
    """Integer boxes of a few sizes: IoUs are small-integer ratios, so many equal 1/3, 0.3,
    0.6 exactly; the tiled path (lead tiles, compacted tiles) must break them as torchvision."""
    rng = np.random.default_rng(12)
    n = 1200
    xy = rng.integers(0, 40, (n, 2))
    wh = rng.choice([2, 3, 4, 5, 6, 10], (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.random(n).astype(np.float32)
    for threshold in (0.1, 0.3, 1 / 3, 0.6):
        expected = np_greedy_nms(boxes, scores, threshold)
        ties = sum(np.sum(np_iou(boxes[i], boxes) == np.float32(threshold)) for i in expected)
        assert ties > 50, ties  # the case being tested does occur
        got = kept(nms(jnp.asarray(boxes), jnp.asarray(scores), threshold, tile_size=16))
        np.testing.assert_array_equal(got, expected)


def test_zero_boxes_keep_nothing():
    boxes, scores = jnp.zeros((0, 4)), jnp.zeros((0,))
    for cap, size in ((None, 0), (5, 5)):
        for result in (
            nms(boxes, scores, 0.5, max_output_size=cap),
            batched_nms(boxes, scores, jnp.zeros((0,), jnp.int32), 0.5, max_output_size=cap),
            soft_nms(boxes, scores, method="linear", max_output_size=cap),
            soft_nms(boxes, scores, method="gaussian", max_output_size=cap),
        ):
            assert int(result.count) == 0 and result.indices.shape == (size,)
            assert np.all(np.asarray(result.indices) == -1)
    batched = jax.jit(jax.vmap(lambda b, s: nms(b, s, 0.5, max_output_size=4)))
    result = batched(jnp.zeros((3, 0, 4)), jnp.zeros((3, 0)))
    assert result.indices.shape == (3, 4) and np.all(np.asarray(result.count) == 0)
    # A cap of 0 on real boxes keeps nothing too; a negative cap is an error.
    assert nms(jnp.ones((3, 4)), jnp.ones(3), max_output_size=0).indices.shape == (0,)
    with pytest.raises(ValueError, match="max_output_size must be >= 0"):
        nms(jnp.ones((3, 4)), jnp.ones(3), max_output_size=-1)
