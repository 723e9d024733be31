"""YOLO detection: encode boxes to grid targets, the v1 or v2 loss, and mAP evaluation.

Batches (the ``shapes`` example function's layout; any dataset mapped to it works):
``image`` [B, H, W, C], ``boxes`` [B, N, 4] normalised ``(ymin, xmin, ymax, xmax)``
(tfds order), ``classes`` [B, N] int, ``box_mask`` [B, N] (1 real, 0 padding); eval
batches also carry ``mask`` [B] and may carry ``difficult`` [B, N] (objects the mAP
ignores: VOC's difficult, COCO's crowd).

The task's eval sums are the loss terms (sums over real examples). mAP is not a sum over
examples: :meth:`Detection.evaluate_map` decodes, runs class-aware NMS, gathers the padded
detections of the whole eval set and computes VOC and COCO mAP; the ``detection``
evaluator (:mod:`convjax.evals.detection`) runs it during training and in
``experiments/detect.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from convjax.detection import yolo
from convjax.detection.metrics import coco_evaluate, coco_summary, voc_evaluate
from convjax.losses.yolo import yolo_v1_loss, yolo_v2_loss
from convjax.ops.boxes import convert_boxes
from convjax.tasks.base import Batch, EvalFn, LossFn, Task, apply_model, check_label_range
from convjax.tasks.registry import register_task

# k-means (d = 1 - IoU, k = 3) anchors of the 14,989 boxes of shapes/scenes' train split:
# mean best IoU 0.841 (0.626 / 0.774 / 0.877 / 0.899 for k = 1 / 2 / 4 / 5); see
# docs/detection.md for the command.
SHAPES_ANCHORS = ((0.198, 0.198), (0.291, 0.291), (0.404, 0.404))


@register_task("detection")
@dataclass(frozen=True)
class Detection(Task):
    """YOLO detection task (``version`` 'v1' or 'v2'; v2 needs ``anchors``)."""

    version: str = "v2"
    anchors: Sequence[Sequence[float]] = SHAPES_ANCHORS
    num_predictors: int = 2
    lambda_coord: float = 5.0
    lambda_noobj: float = 0.5
    ignore_threshold: float = 0.6
    nms_iou_threshold: float = 0.45
    score_threshold: float = 0.01
    max_detections: int = 50

    def __post_init__(self):
        if self.version not in ("v1", "v2"):
            raise ValueError(f"Unknown YOLO version {self.version!r}; valid: v1, v2")
        if self.version == "v2" and (not self.anchors or any(len(a) != 2 for a in self.anchors)):
            raise ValueError(f"v2 needs anchors as (w, h) pairs; got {self.anchors!r}")

    @property
    def anchor_array(self) -> jax.Array | None:
        return jnp.asarray(self.anchors, jnp.float32) if self.version == "v2" else None

    def check_labels(self, batch, num_classes: int) -> None:
        """``batch['classes']`` [B, N] of the real boxes (``box_mask`` > 0) must be in
        ``[0, num_classes)``."""
        real = np.asarray(batch["box_mask"]) > 0
        check_label_range(np.asarray(batch["classes"])[real], num_classes, "box classes")

    def _targets(self, batch: Batch, grid_size: int) -> yolo.Targets:
        boxes = convert_boxes(batch["boxes"], "yxyx", "xyxy")
        return yolo.encode_batch(
            boxes, batch["classes"], batch["box_mask"], grid_size, self.anchor_array
        )

    def loss(self, outputs: jax.Array, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The YOLO loss of a batch (summed over slots, divided by the batch size)."""
        targets = self._targets(batch, outputs.shape[1])
        if self.version == "v1":
            return yolo_v1_loss(
                outputs,
                targets,
                num_predictors=self.num_predictors,
                lambda_coord=self.lambda_coord,
                lambda_noobj=self.lambda_noobj,
            )
        return yolo_v2_loss(
            outputs,
            targets,
            self.anchor_array,
            lambda_coord=self.lambda_coord,
            lambda_noobj=self.lambda_noobj,
            ignore_threshold=self.ignore_threshold,
        )

    def loss_fn(self, model: nn.Module) -> LossFn:
        def loss_fn(params, model_state, batch: Batch, rng):
            outputs, new_state = apply_model(
                model, params, model_state, batch["image"], train=True, rng=rng
            )
            loss, terms = self.loss(outputs, batch)
            return loss, ({"loss": loss, **terms}, new_state)

        return loss_fn

    def eval_fn(self, model: nn.Module) -> EvalFn:
        def eval_fn(params, model_state, batch: Batch):
            outputs, _ = apply_model(model, params, model_state, batch["image"], train=False)
            mask = batch["mask"].astype(jnp.float32)

            def one(out, example):  # per-example loss terms: a batch of one
                example = jax.tree.map(lambda x: x[None], example)
                return self.loss(out[None], example)[1]

            fields = {k: batch[k] for k in ("boxes", "classes", "box_mask")}
            terms = jax.vmap(one)(outputs, fields)
            sums = {k: jnp.sum(v * mask) for k, v in terms.items()}
            sums["loss"] = sum(sums.values())
            sums["count"] = jnp.sum(mask)
            return sums

        return eval_fn

    def predict(self, outputs: jax.Array) -> yolo.Decoded:
        """Raw outputs -> NMS'd padded detections [B, max_detections] (xyxy, normalised)."""
        boxes, scores, classes = yolo.decode(
            outputs,
            version=self.version,
            anchors=self.anchor_array,
            num_predictors=self.num_predictors,
        )
        return yolo.postprocess(
            boxes,
            scores,
            classes,
            iou_threshold=self.nms_iou_threshold,
            score_threshold=self.score_threshold,
            max_detections=self.max_detections,
        )

    def predict_fn(self, model: nn.Module):
        """Jitted ``(params, model_state, images) -> Decoded``."""

        @jax.jit
        def predict(params, model_state, images):
            outputs, _ = apply_model(model, params, model_state, images, train=False)
            return self.predict(outputs)

        return predict

    def evaluate_map(
        self,
        model: nn.Module,
        params,
        model_state,
        batches: Iterable[Mapping[str, np.ndarray]],
        num_classes: int,
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Detections over every eval batch, then VOC and COCO mAP.

        Returns ``(metrics, arrays)``: metrics ``map50_voc`` (all-point, IoU 0.5),
        ``map50_voc07`` (11-point), ``coco_AP`` ... (pycocotools' stats in pixels of the
        input size) and ``arrays`` with the detections, ground truth and COCO precision
        (for plots).
        """
        predict = self.predict_fn(model)
        collected: dict[str, list[np.ndarray]] = {}
        image_size = None
        for batch in batches:
            real = np.asarray(batch["mask"]) > 0
            decoded = jax.device_get(predict(params, model_state, batch["image"]))
            image_size = batch["image"].shape[1:3]
            gt = np.asarray(convert_boxes(jnp.asarray(batch["boxes"]), "yxyx", "xyxy"))
            for key, value in (
                ("det_boxes", decoded.boxes),
                ("det_scores", decoded.scores),
                ("det_classes", decoded.classes),
                ("det_valid", decoded.valid),
                ("gt_boxes", gt),
                ("gt_classes", batch["classes"]),
                ("gt_valid", np.asarray(batch["box_mask"]) > 0),
                ("gt_difficult", np.asarray(batch.get("difficult", batch["box_mask"] * 0)) > 0),
                ("image", batch["image"]),
            ):
                collected.setdefault(key, []).append(np.asarray(value)[real])
        if image_size is None:
            raise ValueError("no eval batches")
        arrays = {k: np.concatenate(v) for k, v in collected.items()}
        height, width = image_size
        scale = np.array([width, height, width, height], np.float32)
        args = {k: v for k, v in arrays.items() if k not in ("image", "gt_difficult")}
        pixel_args = dict(
            args, det_boxes=args["det_boxes"] * scale, gt_boxes=args["gt_boxes"] * scale
        )
        difficult = arrays["gt_difficult"]
        voc = voc_evaluate(**pixel_args, num_classes=num_classes, gt_difficult=difficult)
        voc07 = voc_evaluate(
            **pixel_args, num_classes=num_classes, gt_difficult=difficult, use_07_metric=True
        )
        coco = coco_evaluate(**pixel_args, num_classes=num_classes, gt_ignore=difficult)
        metrics = {"map50_voc": float(voc["map"]), "map50_voc07": float(voc07["map"])}
        metrics.update({f"coco_{k}": v for k, v in coco_summary(coco).items()})
        for k, ap in enumerate(np.asarray(voc["ap"])):
            metrics[f"ap50_class{k}"] = float(ap)
        arrays["coco_precision"] = np.asarray(coco["precision"])
        arrays["coco_recall"] = np.asarray(coco["recall"])
        return metrics, arrays
