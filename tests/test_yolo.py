"""YOLO target encoding and decoding against numpy loops written from the papers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.detection import yolo


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


ANCHORS = np.array([[0.1, 0.1], [0.3, 0.15], [0.15, 0.4]], np.float32)


def np_encode(boxes, labels, mask, grid, anchors):
    """Each object -> the cell holding its centre and (v2) the best-IoU anchor; first wins."""
    slots = (grid, grid) if anchors is None else (grid, grid, len(anchors))
    obj = np.zeros(slots)
    box = np.zeros(slots + (4,))
    label = np.zeros(slots, int)
    for b, lab, m in zip(boxes, labels, mask, strict=True):
        if not m:
            continue
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        w, h = b[2] - b[0], b[3] - b[1]
        col, row = min(int(cx * grid), grid - 1), min(int(cy * grid), grid - 1)
        index = (row, col)
        if anchors is not None:
            ious = [
                min(w, aw) * min(h, ah) / (w * h + aw * ah - min(w, aw) * min(h, ah))
                for aw, ah in anchors
            ]
            index = (row, col, int(np.argmax(ious)))
        if obj[index]:
            continue
        obj[index] = 1
        box[index] = (cx, cy, w, h)
        label[index] = lab
    return obj, box, label


def random_objects(rng, n=7):
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.05, 0.4, (n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, 1.0)], 1).astype(np.float32)
    return boxes, rng.integers(0, 3, n), (rng.random(n) < 0.8)


@pytest.mark.parametrize("with_anchors", [False, True])
def test_encoding_matches_reference(with_anchors):
    rng = np.random.default_rng(0)
    anchors = ANCHORS if with_anchors else None
    boxes, labels, mask = random_objects(rng, 9)
    boxes[3] = boxes[1]  # a collision: the first object keeps the slot
    labels[3] = (labels[1] + 1) % 3
    mask[1] = mask[3] = True
    boxes[4] = [0.9, 0.9, 1.0, 1.0]  # centre in the last cell
    mask[4] = True
    targets = yolo.encode_targets(
        jnp.asarray(boxes),
        jnp.asarray(labels),
        jnp.asarray(mask, jnp.float32),
        5,
        None if anchors is None else jnp.asarray(anchors),
    )
    obj, box, label = np_encode(boxes, labels, mask, 5, anchors)
    np.testing.assert_array_equal(np.asarray(targets.object), obj)
    np.testing.assert_allclose(np.asarray(targets.box), box, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(targets.label), label)


def test_encode_batch_vmaps_and_jits():
    rng = np.random.default_rng(1)
    objects = [random_objects(rng) for _ in range(3)]
    boxes = np.stack([o[0] for o in objects])
    labels = np.stack([o[1] for o in objects])
    mask = np.stack([o[2] for o in objects]).astype(np.float32)
    encode = jax.jit(lambda b, c, m: yolo.encode_batch(b, c, m, 4, jnp.asarray(ANCHORS)))
    targets = encode(boxes, labels, mask)
    assert targets.object.shape == (3, 4, 4, 3)
    for i in range(3):
        obj, _, _ = np_encode(boxes[i], labels[i], mask[i], 4, ANCHORS)
        np.testing.assert_array_equal(np.asarray(targets.object[i]), obj)


def inverse_v2(targets, anchors, grid, num_classes=3):
    """Raw v2 outputs that decode exactly to the targets (logit of the cell offset)."""
    box = np.asarray(targets.box)
    cell = box[..., :2] * grid
    offset = np.clip(cell - np.floor(cell), 1e-4, 1 - 1e-4)
    out = np.zeros(box.shape[:-1] + (5 + num_classes,), np.float32)
    out[..., :2] = np.log(offset / (1 - offset))
    out[..., 2:4] = np.log(np.maximum(box[..., 2:], 1e-6) / anchors)
    out[..., 4] = np.where(np.asarray(targets.object) > 0, 8.0, -8.0)
    out[..., 5:] = 10.0 * np.eye(num_classes)[np.asarray(targets.label)]
    return out


def test_v2_decode_and_nms_recover_the_objects():
    rng = np.random.default_rng(2)
    boxes, labels, mask = random_objects(rng, 5)
    mask[:] = True
    targets = jax.jit(yolo.encode_batch, static_argnums=3)(
        jnp.asarray(boxes[None]),
        jnp.asarray(labels[None]),
        jnp.asarray(mask[None], jnp.float32),
        6,
        jnp.asarray(ANCHORS),
    )
    kept = np.asarray(targets.object[0]).sum()
    outputs = jnp.asarray(inverse_v2(targets, ANCHORS, 6))

    @jax.jit
    def detect(outputs):
        candidates = yolo.decode(outputs, version="v2", anchors=jnp.asarray(ANCHORS))
        return candidates[0], yolo.postprocess(*candidates, score_threshold=0.5, max_detections=10)

    cand_boxes, decoded = detect(outputs)
    assert cand_boxes.shape == (1, 6 * 6 * 3, 4)
    assert int(decoded.valid.sum()) == kept
    got = np.asarray(decoded.boxes[0][np.asarray(decoded.valid[0])])
    # Every detection is one of the true boxes, with its class.
    for det, cls in zip(
        got, np.asarray(decoded.classes[0])[np.asarray(decoded.valid[0])], strict=True
    ):
        match = np.argmin(np.abs(boxes - det).sum(1))
        np.testing.assert_allclose(det, boxes[match], atol=1e-3)
        assert cls == labels[match]


def test_v1_decode_squares_the_predicted_root_sizes():
    outputs = np.zeros((1, 2, 2, 2 * 5 + 3), np.float32)
    outputs[0, 1, 0, 0:5] = [0.0, 0.0, 0.5, -0.4, 3.0]  # negative sqrt_h: h = 0.16
    boxes, confidence = yolo.v1_boxes(yolo.split_v1(jnp.asarray(outputs), 2)[0])
    np.testing.assert_allclose(np.asarray(boxes[0, 1, 0, 0]), [0.25, 0.75, 0.25, 0.16], atol=1e-6)
    assert float(confidence[0, 1, 0, 0]) == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-6)
    all_boxes, scores, _ = yolo.decode(jnp.asarray(outputs), version="v1", num_predictors=2)
    assert all_boxes.shape == (1, 8, 4) and np.isfinite(np.asarray(scores)).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"boxes must be \[N, 4\]"):
        yolo.encode_targets(jnp.zeros((2, 5)), jnp.zeros(2), jnp.zeros(2), 4)
    with pytest.raises(ValueError, match="valid: v1, v2"):
        yolo.decode(jnp.zeros((1, 2, 2, 13)), version="v3")
