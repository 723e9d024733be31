"""Box formats and the IoU family against numpy written from the formulas (and torchvision)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.ops import boxes as B


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


def random_boxes(rng: np.random.Generator, n: int, clustered: bool = False) -> np.ndarray:
    """xyxy boxes in a 100x100 image; clustered ones jitter around 3 objects."""
    if clustered:
        centres = rng.random((3, 2)) * 80
        xy = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 2)) * 3
        wh = 20 + rng.normal(size=(n, 2)) * 2
    else:
        xy = rng.random((n, 2)) * 80
        wh = rng.random((n, 2)) * 30 + 0.5
    return np.concatenate([xy, xy + wh], axis=1)


DEGENERATE = np.array(
    [
        [10.0, 10.0, 10.0, 20.0],  # zero width
        [10.0, 10.0, 20.0, 10.0],  # zero height
        [15.0, 15.0, 15.0, 15.0],  # a point
        [15.0, 15.0, 15.0, 15.0],  # the same point
        [0.0, 0.0, 30.0, 30.0],
    ]
)


def np_reference(kind: str, a: np.ndarray, b: np.ndarray) -> float:
    """One pair, from the papers' definitions; 0/0 ratios are 0."""

    def ratio(num, den):
        return num / den if den > 0 else 0.0

    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - inter
    value = ratio(inter, union)
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    if kind == "giou":
        return value - ratio(cw * ch - union, cw * ch)
    if kind in ("diou", "ciou"):
        centre_sq = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + (
            (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
        ) ** 2
        penalty = ratio(centre_sq, cw**2 + ch**2)
        if kind == "diou":
            return value - penalty

        def angle(box):
            w, h = box[2] - box[0], box[3] - box[1]
            return 0.0 if (w == 0 and h == 0) else (math.pi / 2 if h == 0 else math.atan(w / h))

        v = 4 / math.pi**2 * (angle(b) - angle(a)) ** 2
        return value - penalty - ratio(v, 1 - value + v) * v
    return value


def np_pairwise(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[np_reference(kind, x, y) for y in b] for x in a])


PAIRWISE = {
    "iou": B.box_iou,
    "giou": B.generalized_box_iou,
    "diou": B.distance_box_iou,
    "ciou": B.complete_box_iou,
}


def test_conversions_match_formulas_and_round_trip():
    rng = np.random.default_rng(0)
    xyxy = random_boxes(rng, 12)
    x1, y1, x2, y2 = xyxy.T
    expected = {
        "xyxy": xyxy,
        "cxcywh": np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1),
        "xywh": np.stack([x1, y1, x2 - x1, y2 - y1], 1),
        "yxyx": np.stack([y1, x1, y2, x2], 1),
    }
    for src in B.BOX_FORMATS:
        for dst in B.BOX_FORMATS:
            got = B.convert_boxes(jnp.asarray(expected[src], jnp.float32), src, dst)
            np.testing.assert_allclose(got, expected[dst], rtol=1e-5, atol=1e-4)
    # Leading batch axes are kept.
    assert B.convert_boxes(jnp.zeros((2, 3, 4)), "xyxy", "cxcywh").shape == (2, 3, 4)


def test_normalize_and_clip():
    boxes = jnp.array([[10.0, 20.0, 50.0, 80.0]])
    norm = B.normalize_boxes(boxes, height=100, width=200)
    np.testing.assert_allclose(norm, [[0.05, 0.2, 0.25, 0.8]], rtol=1e-6)
    yx = B.normalize_boxes(jnp.array([[20.0, 10.0, 80.0, 50.0]]), 100, 200, fmt="yxyx")
    np.testing.assert_allclose(yx, [[0.2, 0.05, 0.8, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(B.denormalize_boxes(norm, 100, 200), boxes, rtol=1e-6)
    clipped = B.clip_boxes(jnp.array([[-5.0, 3.0, 250.0, 120.0]]), height=100, width=200)
    np.testing.assert_allclose(clipped, [[0.0, 3.0, 200.0, 100.0]])


@pytest.mark.parametrize("kind", sorted(PAIRWISE))
@pytest.mark.parametrize("clustered", [False, True])
def test_pairwise_iou_variants_match_numpy(kind, clustered):
    rng = np.random.default_rng(1 + clustered)
    a, b = random_boxes(rng, 17, clustered), random_boxes(rng, 13, clustered)
    a = np.concatenate([a, DEGENERATE])
    b = np.concatenate([b, DEGENERATE])
    got = np.asarray(
        jax.jit(PAIRWISE[kind])(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    )
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, np_pairwise(kind, a, b), atol=2e-6)


def test_known_values():
    a = jnp.array([0.0, 0.0, 2.0, 2.0])
    b = jnp.array([1.0, 1.0, 3.0, 3.0])
    assert float(B.iou(a, b)) == pytest.approx(1 / 7)
    # enclosing box 3x3 = 9, union 7
    assert float(B.giou(a, b)) == pytest.approx(1 / 7 - 2 / 9)
    # centres (1,1), (2,2): distance^2 = 2, diagonal^2 = 18
    assert float(B.diou(a, b)) == pytest.approx(1 / 7 - 2 / 18)
    assert float(B.ciou(a, b)) == pytest.approx(1 / 7 - 2 / 18)  # same aspect ratio: v = 0
    far = jnp.array([10.0, 10.0, 12.0, 12.0])
    assert float(B.giou(a, far)) < 0 and float(B.iou(a, far)) == 0


@pytest.mark.parametrize("kind", sorted(PAIRWISE))
def test_gradients_finite_for_degenerate_boxes(kind):
    fn = B.get_iou_fn(kind)
    pred = jnp.asarray(DEGENERATE, jnp.float32)
    target = jnp.asarray(DEGENERATE[::-1].copy(), jnp.float32)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fn(p, target))))(pred)
    assert np.isfinite(np.asarray(grads)).all()
    # Identical degenerate boxes too.
    grads = jax.jit(jax.grad(lambda p: jnp.sum(fn(p, pred))))(pred)
    assert np.isfinite(np.asarray(grads)).all()


def test_elementwise_vmaps_over_batches():
    rng = np.random.default_rng(3)
    a = random_boxes(rng, 24).reshape(2, 3, 4, 4)
    b = random_boxes(rng, 24).reshape(2, 3, 4, 4)
    got = jax.vmap(B.ciou)(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    expected = np.array(
        [
            np_reference("ciou", x, y)
            for x, y in zip(a.reshape(-1, 4), b.reshape(-1, 4), strict=True)
        ]
    )
    np.testing.assert_allclose(np.asarray(got).reshape(-1), expected, atol=2e-6)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="valid: xyxy, cxcywh, xywh, yxyx"):
        B.convert_boxes(jnp.zeros((3, 4)), "ltrb", "xyxy")
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
        B.convert_boxes(jnp.zeros((3, 5)), "xyxy", "cxcywh")
    with pytest.raises(ValueError, match=r"boxes1 \[N, 4\] and boxes2 \[M, 4\]"):
        B.box_iou(jnp.zeros((2, 3, 4)), jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="valid: iou, giou, diou, ciou"):
        B.get_iou_fn("eiou")


@pytest.mark.parametrize("clustered", [False, True])
def test_iou_variants_match_torchvision(clustered):
    ops = pytest.importorskip(
        "torchvision.ops",
        reason='torchvision is the optional IoU reference: pip install -e ".[torchvision]"',
    )
    torch = pytest.importorskip(
        "torch", reason='PyTorch is an optional reference: pip install -e ".[torch]"'
    )
    rng = np.random.default_rng(7 + clustered)
    a, b = random_boxes(rng, 40, clustered), random_boxes(rng, 30, clustered)
    ta, tb = torch.tensor(a), torch.tensor(b)
    reference = {
        "iou": ops.box_iou(ta, tb),
        "giou": ops.generalized_box_iou(ta, tb),
        "diou": ops.distance_box_iou(ta, tb),
        "ciou": ops.complete_box_iou(ta, tb),
    }
    for kind, fn in PAIRWISE.items():
        got = fn(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
        np.testing.assert_allclose(
            np.asarray(got), reference[kind].numpy(), atol=1e-5, err_msg=kind
        )


@pytest.mark.parametrize("kind", sorted(B.IOU_FUNCTIONS))
def test_elementwise_iou_checks_the_last_axis(kind):
    fn = B.get_iou_fn(kind)
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\]; got \(2, 3\)"):
        fn(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[\.\.\., 4\]; got \(5,\)"):
        fn(jnp.zeros(4), jnp.zeros(5))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[\.\.\., 4\]"):
        jax.jit(fn)(jnp.zeros((2, 3)), jnp.zeros((2, 4)))  # traced inputs are checked too


@pytest.mark.parametrize("kind", sorted(B.IOU_FUNCTIONS))
def test_nan_boxes_give_nan_not_zero(kind):
    fn = B.get_iou_fn(kind)
    boxes = jnp.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0]])
    for coord in range(4):
        bad = boxes.at[1, coord].set(jnp.nan)
        for got in (fn(bad, boxes), jax.jit(fn)(boxes, bad)):
            got = np.asarray(got)
            assert np.isnan(got[1]), (coord, got)
            assert np.all(np.isfinite(got[[0, 2]]))  # the other pairs are untouched
        pairwise = np.asarray(PAIRWISE[kind](bad, boxes))
        np.testing.assert_array_equal(np.isnan(pairwise), np.arange(3)[:, None] == [1, 1, 1])
