"""``detection``: VOC mAP@0.5 and COCO AP of a detector on a split.

Decodes every batch of the split, runs the task's class-aware NMS and scores the padded
detections (:meth:`convjax.tasks.detection.Detection.evaluate_map`). Headline figures:
``map50_voc`` (all-point VOC mAP at IoU 0.5), ``map50_voc07`` (11-point), ``coco_AP``,
``coco_AP50``, ``coco_AP75``; the breakdown holds the rest of pycocotools' stats and the
per-class APs (``ap50_class<k>``). The details are the arrays of
:meth:`~convjax.tasks.detection.Detection.evaluate_map` (detections, ground truth,
images, COCO precision) that ``experiments/detect.py`` draws.
"""

from __future__ import annotations

import ml_collections

from convjax.data import pipeline
from convjax.evals.base import EvalContext, EvalResult, EvalState, Evaluator, register_evaluator
from convjax.tasks.detection import Detection
from convjax.tasks.transfer import TransferTask

HEADLINE = ("map50_voc", "map50_voc07", "coco_AP", "coco_AP50", "coco_AP75")


@register_evaluator("detection")
class DetectionMAP(Evaluator):
    """VOC and COCO mAP of the model's NMS'd detections (module docstring)."""

    def __init__(self, name: str, context: EvalContext, dataset: ml_collections.ConfigDict):
        super().__init__(name, context, dataset)
        task = context.task.base if isinstance(context.task, TransferTask) else context.task
        if not isinstance(task, Detection):
            raise ValueError(
                f"evals.{name}: type 'detection' needs task 'detection'; the run's task is "
                f"{context.config.task!r}"
            )
        self.task = task
        self.num_classes = int(context.config.model_kwargs.num_classes)

    def evaluate(self, state: EvalState) -> EvalResult:
        batches = pipeline.create_eval_iterator(
            self.dataset, global_batch_size=self.context.eval_batch_size
        )
        host = state.host
        metrics, arrays = self.task.evaluate_map(
            self.context.model, host.params, host.model_state, batches, self.num_classes
        )
        headline = {k: metrics[k] for k in HEADLINE}
        breakdown = {k: v for k, v in metrics.items() if k not in headline}
        return EvalResult(headline, breakdown, details=arrays)
