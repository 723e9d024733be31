"""mAP: VOC against the devkit's algorithm written in numpy, COCO against pycocotools."""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convjax.detection.metrics import (
    COCO_STAT_NAMES,
    coco_evaluate,
    coco_summary,
    voc_evaluate,
)


@pytest.fixture(autouse=True, scope="module")
def fast_compiles():
    """Compile time dominates these small cases."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


NUM_CLASSES = 3


def make_scenes(seed: int, images: int = 10, max_gt: int = 8, max_det: int = 14):
    """Padded ground truth and detections: jittered true boxes, duplicates, false positives.

    Box sizes span COCO's small / medium / large ranges; class 0 has exactly 20 objects so
    that recall lands exactly on recall thresholds (multiples of 0.05).
    """
    rng = np.random.default_rng(seed)
    gt_boxes = np.zeros((images, max_gt, 4))
    gt_classes = np.zeros((images, max_gt), int)
    gt_valid = np.zeros((images, max_gt), bool)
    counts = rng.integers(1, max_gt + 1, images)
    counts[0] = 0  # an image without objects
    for i, n in enumerate(counts):
        size = rng.choice([12.0, 50.0, 140.0], (n, 1)) * rng.uniform(0.7, 1.3, (n, 2))
        xy = rng.uniform(0, 300, (n, 2))
        gt_boxes[i, :n] = np.concatenate([xy, xy + size], 1)
        gt_classes[i, :n] = rng.integers(1, NUM_CLASSES, n)
        gt_valid[i, :n] = True
    # Exactly 20 objects of class 0.
    slots = np.argwhere(gt_valid)
    gt_classes[tuple(slots[rng.choice(len(slots), 20, replace=False)].T)] = 0

    det_boxes = np.zeros((images, max_det, 4))
    det_scores = np.zeros((images, max_det))
    det_classes = np.zeros((images, max_det), int)
    det_valid = np.zeros((images, max_det), bool)
    for i in range(images):
        dets = []
        for g in np.flatnonzero(gt_valid[i]):
            if rng.random() < 0.8:
                box = gt_boxes[i, g]
                wh = box[2:] - box[:2]
                jitter = rng.normal(0, 0.12, 4) * np.concatenate([wh, wh])
                cls = gt_classes[i, g] if rng.random() < 0.9 else rng.integers(0, NUM_CLASSES)
                dets.append((box + jitter, cls))
                if rng.random() < 0.3:  # a duplicate
                    dets.append((box + rng.normal(0, 0.1, 4) * np.concatenate([wh, wh]), cls))
        for _ in range(rng.integers(0, 4)):  # false positives
            xy = rng.uniform(0, 300, 2)
            dets.append((np.concatenate([xy, xy + rng.uniform(10, 150, 2)]), rng.integers(0, 3)))
        dets = dets[:max_det]
        for d, (box, cls) in enumerate(dets):
            x1, y1, x2, y2 = box
            det_boxes[i, d] = [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]
            det_classes[i, d] = cls
            det_valid[i, d] = True
        det_scores[i, : len(dets)] = rng.random(len(dets))
    return dict(
        det_boxes=det_boxes.astype(np.float32),
        det_scores=det_scores.astype(np.float32),
        det_classes=det_classes,
        det_valid=det_valid,
        gt_boxes=gt_boxes.astype(np.float32),
        gt_classes=gt_classes,
        gt_valid=gt_valid,
    )


def np_voc_ap(scenes, cls, threshold, use_07, difficult=None):
    """The VOC devkit's voc_eval loop (continuous coordinates)."""
    difficult = np.zeros_like(scenes["gt_valid"]) if difficult is None else difficult
    records = {}
    n_pos = 0
    for i in range(len(scenes["gt_valid"])):
        mask = scenes["gt_valid"][i] & (scenes["gt_classes"][i] == cls)
        records[i] = dict(
            bbox=scenes["gt_boxes"][i][mask].astype(np.float64),
            difficult=difficult[i][mask],
            det=np.zeros(mask.sum(), bool),
        )
        n_pos += int((~difficult[i][mask]).sum())
    image_ids, confidence, bbs = [], [], []
    for i in range(len(scenes["det_valid"])):
        for d in np.flatnonzero(scenes["det_valid"][i] & (scenes["det_classes"][i] == cls)):
            image_ids.append(i)
            confidence.append(scenes["det_scores"][i, d])
            bbs.append(scenes["det_boxes"][i, d].astype(np.float64))
    order = np.argsort(-np.array(confidence), kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for d, j in enumerate(order):
        r = records[image_ids[j]]
        bb = bbs[j]
        ovmax = -np.inf
        if r["bbox"].size:
            g = r["bbox"]
            iw = np.maximum(np.minimum(g[:, 2], bb[2]) - np.maximum(g[:, 0], bb[0]), 0)
            ih = np.maximum(np.minimum(g[:, 3], bb[3]) - np.maximum(g[:, 1], bb[1]), 0)
            inter = iw * ih
            uni = (
                (bb[2] - bb[0]) * (bb[3] - bb[1])
                + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
                - inter
            )
            overlaps = inter / uni
            ovmax, jmax = overlaps.max(), overlaps.argmax()
        if ovmax > threshold:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1
                    r["det"][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(n_pos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap += p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def run_voc(scenes, **kwargs):
    args = {k: jnp.asarray(v) for k, v in scenes.items()}
    return voc_evaluate(**args, num_classes=NUM_CLASSES, **kwargs)


def test_hand_computed_example():
    # Two objects; detections: hit (0.9), miss (0.8), hit (0.7).
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    scenes = dict(
        gt_boxes=np.array([[[0, 0, 10, 10], [20, 20, 30, 30]]], np.float32),
        gt_classes=np.zeros((1, 2), int),
        gt_valid=np.ones((1, 2), bool),
        det_boxes=np.array([[[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]]], np.float32),
        det_scores=np.array([[0.9, 0.8, 0.7]], np.float32),
        det_classes=np.zeros((1, 3), int),
        det_valid=np.ones((1, 3), bool),
    )
    args = {k: jnp.asarray(v) for k, v in scenes.items()}
    all_point = voc_evaluate(**args, num_classes=1)["map"]
    eleven = voc_evaluate(**args, num_classes=1, use_07_metric=True)["map"]
    assert float(all_point) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-6)
    assert float(eleven) == pytest.approx((6 * 1 + 5 * 2 / 3) / 11, abs=1e-6)
    # COCO at IoU 0.5 interpolates at 101 recall points: 51 points at 1, 50 at 2/3.
    coco = coco_evaluate(**args, num_classes=1)
    assert float(coco["precision"][0, :, 0, 0, 2].mean()) == pytest.approx(
        (51 + 50 * 2 / 3) / 101, abs=1e-6
    )


def test_perfect_detections_score_one():
    scenes = make_scenes(0)
    perfect = dict(
        scenes,
        det_boxes=scenes["gt_boxes"],
        det_classes=scenes["gt_classes"],
        det_valid=scenes["gt_valid"],
        det_scores=np.random.default_rng(1).random(scenes["gt_valid"].shape),
    )
    assert float(run_voc(perfect)["map"]) == pytest.approx(1.0)
    summary = coco_summary(
        coco_evaluate(**{k: jnp.asarray(v) for k, v in perfect.items()}, num_classes=NUM_CLASSES)
    )
    assert summary["AP"] == pytest.approx(1.0) and summary["AR100"] == pytest.approx(1.0)


@pytest.mark.parametrize("use_07", [False, True])
def test_voc_matches_devkit_reference(use_07):
    scenes = make_scenes(3, images=12)
    difficult = np.random.default_rng(4).random(scenes["gt_valid"].shape) < 0.15
    for threshold, diff in ((0.5, None), (0.3, difficult)):
        got = run_voc(
            scenes,
            iou_threshold=threshold,
            use_07_metric=use_07,
            gt_difficult=None if diff is None else jnp.asarray(diff),
        )
        expected = [np_voc_ap(scenes, c, threshold, use_07, diff) for c in range(NUM_CLASSES)]
        np.testing.assert_allclose(np.asarray(got["ap"]), expected, atol=1e-6)
        assert float(got["map"]) == pytest.approx(np.mean(expected), abs=1e-6)


def test_evaluation_runs_under_jit():
    scenes = {k: jnp.asarray(v) for k, v in make_scenes(5).items()}
    jitted = jax.jit(lambda s: voc_evaluate(**s, num_classes=NUM_CLASSES)["map"])
    assert float(jitted(scenes)) == pytest.approx(float(run_voc(scenes)["map"]), abs=1e-7)


def test_bad_shapes_raise():
    scenes = {k: jnp.asarray(v) for k, v in make_scenes(0).items()}
    with pytest.raises(ValueError, match=r"det_boxes must be \[I, D, 4\]"):
        voc_evaluate(**dict(scenes, det_boxes=scenes["det_boxes"][0]), num_classes=3)
    with pytest.raises(ValueError, match=r"det_scores must be \[I, D\]"):
        coco_evaluate(**dict(scenes, det_scores=scenes["det_scores"][:, :3]), num_classes=3)


def to_coco(scenes):
    """The same scenes as pycocotools' ground-truth dataset and result list (xywh boxes)."""
    images, annotations, results = [], [], []
    for i in range(len(scenes["gt_valid"])):
        images.append({"id": i + 1, "width": 500, "height": 500})
        for g in np.flatnonzero(scenes["gt_valid"][i]):
            x1, y1, x2, y2 = scenes["gt_boxes"][i, g].astype(np.float64)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(scenes["gt_classes"][i, g]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for d in np.flatnonzero(scenes["det_valid"][i]):
            x1, y1, x2, y2 = scenes["det_boxes"][i, d].astype(np.float64)
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(scenes["det_classes"][i, d]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(scenes["det_scores"][i, d]),
                }
            )
    categories = [{"id": k + 1, "name": f"c{k}"} for k in range(NUM_CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


@pytest.mark.parametrize("seed", [11, 12])
def test_coco_matches_pycocotools(seed):
    coco_mod = pytest.importorskip("pycocotools.coco", reason="pycocotools is the mAP reference")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    scenes = make_scenes(seed, images=16, max_det=12)  # some images have more dets than 10
    dataset, results = to_coco(scenes)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = cocoeval.COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = coco_evaluate(**{k: jnp.asarray(v) for k, v in scenes.items()}, num_classes=NUM_CLASSES)
    np.testing.assert_allclose(
        np.asarray(ours["precision"]), evaluator.eval["precision"], atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(ours["recall"]), evaluator.eval["recall"], atol=1e-6)
    summary = coco_summary(ours)
    np.testing.assert_allclose([summary[k] for k in COCO_STAT_NAMES], evaluator.stats, atol=1e-6)
    assert 0.2 < summary["AP50"] < 0.95  # a non-trivial case


def test_format_metrics_says_which_figures_have_no_objects():
    from convjax.detection.metrics import format_metrics

    assert format_metrics({"map50_voc": 0.98765, "coco_AP": 0.5}) == (
        "map50_voc=0.9877 coco_AP=0.5000"
    )
    line = format_metrics({"coco_AP": 0.74321, "coco_AP_medium": -1.0, "ap50_class2": -1.0})
    assert line == (
        "coco_AP=0.7432 coco_AP_medium=n/a ap50_class2=n/a (n/a: the evaluated split has no "
        "ground-truth object of that size or class)"
    )
    assert "-1" not in line and "\n" not in line
