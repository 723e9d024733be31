"""YOLO losses: numpy references written from the papers, and one test per known pitfall."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.detection import yolo
from convjax.losses import yolo as yolo_losses


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


# Jitted once per shape: op-by-op dispatch would dominate these small cases.
yolo_v1_loss = jax.jit(
    yolo_losses.yolo_v1_loss, static_argnames=("num_predictors", "lambda_coord", "lambda_noobj")
)
yolo_v2_loss = jax.jit(
    yolo_losses.yolo_v2_loss, static_argnames=("lambda_coord", "lambda_noobj", "ignore_threshold")
)
encode_batch = jax.jit(yolo.encode_batch, static_argnums=3)

GRID, CLASSES = 3, 3
ANCHORS = np.array([[0.2, 0.2], [0.5, 0.3]], np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_iou_cxcywh(a, b):
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def np_ce(logits, label):
    logits = logits - logits.max()
    return np.log(np.exp(logits).sum()) - logits[label]


def np_v1_loss(out, obj, box, label, P, l_coord=5.0, l_noobj=0.5):
    """Redmon et al. 2016, eq. (3), with confidence target IoU and CE for the class."""
    B, S = out.shape[0], out.shape[1]
    total = 0.0
    for b in range(B):
        for i in range(S):
            for j in range(S):
                preds = out[b, i, j, : P * 5].reshape(P, 5)
                conf = sigmoid(preds[:, 4])
                if obj[b, i, j]:
                    t = box[b, i, j]
                    boxes = [
                        ((sigmoid(p[0]) + j) / S, (sigmoid(p[1]) + i) / S, p[2] ** 2, p[3] ** 2)
                        for p in preds
                    ]
                    ious = [np_iou_cxcywh(pb, t) for pb in boxes]
                    r = int(np.argmax(ious))
                    tx, ty = t[0] * S - np.floor(t[0] * S), t[1] * S - np.floor(t[1] * S)
                    p = preds[r]
                    total += l_coord * (
                        (sigmoid(p[0]) - tx) ** 2
                        + (sigmoid(p[1]) - ty) ** 2
                        + (p[2] - np.sqrt(t[2])) ** 2
                        + (p[3] - np.sqrt(t[3])) ** 2
                    )
                    total += (conf[r] - ious[r]) ** 2
                    total += l_noobj * sum(conf[q] ** 2 for q in range(P) if q != r)
                    total += np_ce(out[b, i, j, P * 5 :], label[b, i, j])
                else:
                    total += l_noobj * np.sum(conf**2)
    return total / B


def np_v2_loss(
    out, obj, box, label, gt_boxes, gt_mask, anchors, l_coord=5.0, l_noobj=0.5, ignore=0.6
):
    B, S, _, A, _ = out.shape
    total = 0.0
    for b in range(B):
        for i in range(S):
            for j in range(S):
                for a in range(A):
                    p = out[b, i, j, a]
                    pred = (
                        (sigmoid(p[0]) + j) / S,
                        (sigmoid(p[1]) + i) / S,
                        anchors[a, 0] * np.exp(p[2]),
                        anchors[a, 1] * np.exp(p[3]),
                    )
                    conf = sigmoid(p[4])
                    if obj[b, i, j, a]:
                        t = box[b, i, j, a]
                        tx, ty = t[0] * S - np.floor(t[0] * S), t[1] * S - np.floor(t[1] * S)
                        total += l_coord * (
                            (sigmoid(p[0]) - tx) ** 2
                            + (sigmoid(p[1]) - ty) ** 2
                            + (p[2] - np.log(t[2] / anchors[a, 0])) ** 2
                            + (p[3] - np.log(t[3] / anchors[a, 1])) ** 2
                        )
                        total += (conf - np_iou_cxcywh(pred, t)) ** 2
                        total += np_ce(p[5:], label[b, i, j, a])
                    else:
                        best = max(
                            [
                                np_iou_cxcywh(
                                    pred,
                                    (
                                        (g[0] + g[2]) / 2,
                                        (g[1] + g[3]) / 2,
                                        g[2] - g[0],
                                        g[3] - g[1],
                                    ),
                                )
                                for g, m in zip(gt_boxes[b], gt_mask[b], strict=True)
                                if m
                            ],
                            default=0.0,
                        )
                        if best <= ignore:
                            total += l_noobj * conf**2
    return total / B


def scene(rng, batch=2, n=3):
    xy = rng.uniform(0.05, 0.6, (batch, n, 2))
    wh = rng.uniform(0.1, 0.35, (batch, n, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    labels = rng.integers(0, CLASSES, (batch, n))
    mask = np.ones((batch, n), np.float32)
    mask[-1, -1] = 0
    return boxes, labels, mask


def v1_targets(boxes, labels, mask):
    return encode_batch(jnp.asarray(boxes), jnp.asarray(labels), jnp.asarray(mask), GRID)


def v2_targets(boxes, labels, mask):
    return encode_batch(
        jnp.asarray(boxes), jnp.asarray(labels), jnp.asarray(mask), GRID, jnp.asarray(ANCHORS)
    )


@pytest.mark.parametrize("lambdas", [(5.0, 0.5), (2.0, 1.0)])
def test_v1_matches_reference(lambdas):
    rng = np.random.default_rng(0)
    boxes, labels, mask = scene(rng)
    t = v1_targets(boxes, labels, mask)
    out = rng.normal(0, 1, (2, GRID, GRID, 2 * 5 + CLASSES)).astype(np.float32)
    loss, terms = yolo_v1_loss(
        jnp.asarray(out), t, num_predictors=2, lambda_coord=lambdas[0], lambda_noobj=lambdas[1]
    )
    expected = np_v1_loss(
        out, np.asarray(t.object), np.asarray(t.box), np.asarray(t.label), 2, *lambdas
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(sum(terms.values())) == pytest.approx(float(loss), rel=1e-6)


def test_v1_defaults_are_the_papers():
    rng = np.random.default_rng(1)
    boxes, labels, mask = scene(rng)
    t = v1_targets(boxes, labels, mask)
    out = rng.normal(0, 1, (2, GRID, GRID, 2 * 5 + CLASSES)).astype(np.float32)
    loss, _ = yolo_v1_loss(jnp.asarray(out), t)  # lambda_coord 5, lambda_noobj 0.5
    expected = np_v1_loss(
        out, np.asarray(t.object), np.asarray(t.box), np.asarray(t.label), 2, 5.0, 0.5
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_v2_matches_reference():
    rng = np.random.default_rng(2)
    boxes, labels, mask = scene(rng)
    t = v2_targets(boxes, labels, mask)
    out = rng.normal(0, 1, (2, GRID, GRID, 2, 5 + CLASSES)).astype(np.float32)
    # Make one non-responsible prediction overlap an object well, to exercise the ignore rule.
    loss, _ = yolo_v2_loss(jnp.asarray(out), t, jnp.asarray(ANCHORS))
    expected = np_v2_loss(
        out, np.asarray(t.object), np.asarray(t.box), np.asarray(t.label), boxes, mask, ANCHORS
    )
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def one_object_cell():
    """One object whose centre is in cell (1, 1) of a 3x3 grid."""
    boxes = np.array([[[0.40, 0.40, 0.60, 0.62]]], np.float32)
    return boxes, np.array([[1]]), np.ones((1, 1), np.float32)


def test_confidence_target_is_the_iou():
    boxes, labels, mask = one_object_cell()
    t = v1_targets(boxes, labels, mask)
    out = np.zeros((1, GRID, GRID, 2 * 5 + CLASSES), np.float32)
    out[..., 4] = out[..., 9] = -20.0  # no confidence anywhere else
    out[0, 1, 1, 0:4] = [0.3, 0.2, np.sqrt(0.25), np.sqrt(0.15)]  # an imperfect box
    pred_box, _ = yolo.v1_boxes(yolo.split_v1(jnp.asarray(out), 2)[0])
    overlap = float(yolo.target_iou(pred_box[0, 1, 1, 0], t.box[0, 1, 1]))
    assert 0.3 < overlap < 0.9

    def loss_at(logit):
        o = jnp.asarray(out).at[0, 1, 1, 4].set(logit)
        return yolo_v1_loss(o, t)[0]

    at_iou = np.log(overlap / (1 - overlap))
    assert abs(float(jax.grad(loss_at)(at_iou))) < 1e-5  # minimum at confidence = IoU
    assert float(jax.grad(loss_at)(np.float32(6.0))) > 0  # confidence 1 is pushed down
    # v2: the same for the responsible anchor.
    t2 = v2_targets(boxes, labels, mask)
    anchor = int(np.argmax(np.asarray(t2.object[0, 1, 1])))
    out2 = np.zeros((1, GRID, GRID, 2, 5 + CLASSES), np.float32)
    out2[..., 4] = -20.0
    out2[0, 1, 1, anchor, :4] = [0.3, 0.2, 0.2, -0.1]
    boxes2, _ = yolo.v2_boxes(jnp.asarray(out2), jnp.asarray(ANCHORS))
    overlap2 = float(yolo.target_iou(boxes2[0, 1, 1, anchor], t2.box[0, 1, 1, anchor]))

    def loss2_at(logit):
        o = jnp.asarray(out2).at[0, 1, 1, anchor, 4].set(logit)
        return yolo_v2_loss(o, t2, jnp.asarray(ANCHORS))[0]

    assert abs(float(jax.grad(loss2_at)(np.log(overlap2 / (1 - overlap2))))) < 1e-5


def test_non_responsible_predictors_count_as_no_object():
    boxes, labels, mask = one_object_cell()
    t = v1_targets(boxes, labels, mask)
    out = np.zeros((1, GRID, GRID, 2 * 5 + CLASSES), np.float32)
    out[0, 1, 1, 0:4] = [0.0, 0.1, np.sqrt(0.2), np.sqrt(0.22)]  # predictor 0: a good box
    out[0, 1, 1, 5:9] = [2.0, 2.0, 0.1, 0.1]  # predictor 1: a poor box in the object's cell
    out[0, 1, 1, 9] = 1.0
    grads = jax.grad(lambda o: yolo_v1_loss(o, t)[0])(jnp.asarray(out))
    c = sigmoid(1.0)
    # d/dt of lambda_noobj * sigmoid(t)^2 = 0.5 * 2c * c(1 - c); batch size 1.
    assert float(grads[0, 1, 1, 9]) == pytest.approx(0.5 * 2 * c * c * (1 - c), rel=1e-5)
    assert np.all(np.asarray(grads[0, 1, 1, 5:9]) == 0)  # no coordinate loss for the loser
    # v2: the other anchor of the object's cell is a no-object prediction too.
    t2 = v2_targets(boxes, labels, mask)
    other = 1 - int(np.argmax(np.asarray(t2.object[0, 1, 1])))
    out2 = np.zeros((1, GRID, GRID, 2, 5 + CLASSES), np.float32)
    out2[0, 1, 1, other, 2:4] = -3.0  # a tiny box: not ignored
    grads2 = jax.grad(lambda o: yolo_v2_loss(o, t2, jnp.asarray(ANCHORS))[0])(jnp.asarray(out2))
    assert float(grads2[0, 1, 1, other, 4]) == pytest.approx(0.5 * 2 * 0.5 * 0.25, rel=1e-5)


def test_v2_ignores_no_object_predictions_that_already_overlap_an_object():
    boxes, labels, mask = one_object_cell()
    t2 = v2_targets(boxes, labels, mask)
    responsible = int(np.argmax(np.asarray(t2.object[0, 1, 1])))
    other = 1 - responsible
    out2 = np.zeros((1, GRID, GRID, 2, 5 + CLASSES), np.float32)
    # The other anchor predicts (nearly) the object's own box: IoU > 0.6, so no penalty.
    target = np.asarray(t2.box[0, 1, 1, responsible])
    cell = target[:2] * GRID - np.floor(target[:2] * GRID)
    out2[0, 1, 1, other, :2] = np.log(cell / (1 - cell))
    out2[0, 1, 1, other, 2:4] = np.log(target[2:] / ANCHORS[other])
    grads = jax.grad(lambda o: yolo_v2_loss(o, t2, jnp.asarray(ANCHORS))[0])(jnp.asarray(out2))
    assert float(grads[0, 1, 1, other, 4]) == 0.0


def test_no_nan_from_negative_or_extreme_size_predictions():
    rng = np.random.default_rng(3)
    boxes, labels, mask = scene(rng)
    boxes[0, 0] = [0.5, 0.5, 0.5, 0.7]  # a zero-width object too
    out = rng.normal(0, 1, (2, GRID, GRID, 2 * 5 + CLASSES)).astype(np.float32)
    out[..., 2:4] = -np.abs(out[..., 2:4])  # negative sqrt(w), sqrt(h) predictions
    out[..., 7:9] = -np.abs(out[..., 7:9])
    t = v1_targets(boxes, labels, mask)
    value, grads = jax.value_and_grad(lambda o: yolo_v1_loss(o, t)[0])(jnp.asarray(out))
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grads)).all()
    out2 = rng.normal(0, 1, (2, GRID, GRID, 2, 5 + CLASSES)).astype(np.float32)
    out2[..., 2:4] = 80.0  # exp would overflow without the clip
    t2 = v2_targets(boxes, labels, mask)
    value, grads = jax.value_and_grad(lambda o: yolo_v2_loss(o, t2, jnp.asarray(ANCHORS))[0])(
        jnp.asarray(out2)
    )
    assert np.isfinite(float(value)) and np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_reduction_is_normalised_by_batch_size(version):
    rng = np.random.default_rng(4)
    boxes, labels, mask = scene(rng)
    if version == "v1":
        out = rng.normal(0, 1, (2, GRID, GRID, 2 * 5 + CLASSES)).astype(np.float32)
        fn = lambda o, b, c, m: yolo_v1_loss(o, v1_targets(b, c, m))[0]
    else:
        out = rng.normal(0, 1, (2, GRID, GRID, 2, 5 + CLASSES)).astype(np.float32)
        fn = lambda o, b, c, m: yolo_v2_loss(o, v2_targets(b, c, m), jnp.asarray(ANCHORS))[0]
    single = [
        float(fn(jnp.asarray(out[i : i + 1]), boxes[i : i + 1], labels[i : i + 1], mask[i : i + 1]))
        for i in range(2)
    ]
    pair = float(fn(jnp.asarray(out), boxes, labels, mask))
    assert pair == pytest.approx(np.mean(single), rel=1e-5)  # a mean over images
    twice = float(
        fn(
            jnp.asarray(np.concatenate([out[:1]] * 2)),
            np.concatenate([boxes[:1]] * 2),
            np.concatenate([labels[:1]] * 2),
            np.concatenate([mask[:1]] * 2),
        )
    )
    assert twice == pytest.approx(single[0], rel=1e-5)
    # A sum over the grid, not a mean: one object's coordinate error keeps its weight on a
    # larger grid (a mean over cells would shrink it by the cell count).
    assert single[0] > 1.0


def test_bad_layout_raises():
    t = v1_targets(*scene(np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"\[B, S, S, A, 5 \+ C\]"):
        yolo_v2_loss(jnp.zeros((2, GRID, GRID, 16)), t, jnp.asarray(ANCHORS))
