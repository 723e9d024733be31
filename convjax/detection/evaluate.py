"""Evaluate a trained detector from its workdir: mAP, sample detections, precision-recall.

:func:`evaluate_workdir` is what ``experiments/detect.py`` runs after
``experiments/train.py``: it restores the latest checkpoint of ``config`` in ``workdir``,
decodes and NMS-es the eval split, computes VOC and COCO mAP
(:meth:`convjax.tasks.detection.Detection.evaluate_map`), and writes to the workdir:

- ``detection_metrics.json``: the metrics;
- ``sample_detections.png``: the first eval images with drawn boxes, labels and scores;
- ``precision_recall.png``: per-class precision-recall curves at IoU 0.5.

:func:`detect_images` runs the same checkpoint on image files and writes each with its
detections drawn.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from PIL import Image

from convjax.data import pipeline
from convjax.data.config import resolve_dataset_config
from convjax.detection.draw import (
    draw_detections,
    image_grid,
    plot_precision_recall,
    save_png,
)
from convjax.tasks import get_task
from convjax.tasks.detection import Detection
from convjax.train.checkpointing import Checkpointer
from convjax.train.loop import CHECKPOINT_DIR
from convjax.train.setup import build_model, init_train_state

METRICS_JSON = "detection_metrics.json"
SAMPLES_PNG = "sample_detections.png"
PR_PNG = "precision_recall.png"


def class_names_for(config: ml_collections.ConfigDict, num_classes: int) -> list[str]:
    names = config.get("class_names")
    if names:
        return list(names)
    if config.dataset.name.startswith("shapes"):
        from convjax.data.shapes import CLASS_NAMES

        return list(CLASS_NAMES)
    return [str(k) for k in range(num_classes)]


def restore(config: ml_collections.ConfigDict, workdir: str):
    """-> (model, task, params, model_state, image_shape) from the latest checkpoint."""
    task = get_task(config.task, **(config.get("task_kwargs") or {}))
    if not isinstance(task, Detection):
        raise ValueError(
            f"config.task must be 'detection' to evaluate detections; got {config.task!r}"
        )
    model = build_model(config)
    meta = pipeline.dataset_metadata(config.dataset)
    state = init_train_state(model, task, config, meta.image_shape)
    checkpointer = Checkpointer(os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR))
    try:
        restored = checkpointer.restore(state.checkpoint_items())
    finally:
        checkpointer.close()
    if restored is None:
        raise ValueError(
            f"No checkpoint in {workdir}/{CHECKPOINT_DIR}; train first with "
            "experiments/train.py --config=... --workdir=..."
        )
    return model, task, restored["params"], restored["model_state"], meta.image_shape


def evaluate_workdir(
    config: ml_collections.ConfigDict, workdir: str, *, num_samples: int = 16
) -> dict[str, float]:
    """mAP of the latest checkpoint on the eval split, plus the PNGs (module docstring)."""
    model, task, params, model_state, _ = restore(config, workdir)
    num_classes = int(config.model_kwargs.num_classes)
    batches = pipeline.create_eval_iterator(
        config.dataset, global_batch_size=config.get("eval_batch_size") or config.batch_size
    )
    metrics, arrays = task.evaluate_map(model, params, model_state, batches, num_classes)
    names = class_names_for(config, num_classes)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, METRICS_JSON), "w") as f:
        json.dump(metrics, f, indent=2)
    pictures = []
    for i in range(min(num_samples, len(arrays["image"]))):
        image = arrays["image"][i]
        h, w = image.shape[:2]
        scale = np.array([w, h, w, h], np.float32)
        keep = arrays["det_valid"][i] & (arrays["det_scores"][i] >= 0.3)
        pictures.append(
            draw_detections(
                image,
                arrays["det_boxes"][i][keep] * scale,
                arrays["det_classes"][i][keep],
                arrays["det_scores"][i][keep],
                class_names=names,
                scale=max(1, 256 // max(h, w)),
            )
        )
    if pictures:
        save_png(image_grid(pictures), os.path.join(workdir, SAMPLES_PNG))
    plot_precision_recall(
        arrays["coco_precision"], os.path.join(workdir, PR_PNG), class_names=names
    )
    return metrics


def detect_images(
    config: ml_collections.ConfigDict,
    workdir: str,
    paths: Sequence[str],
    *,
    output_dir: str | None = None,
    min_score: float = 0.3,
) -> list[str]:
    """Runs the latest checkpoint on image files; writes ``<output_dir>/<name>.png`` with
    boxes, class names and scores drawn. Returns the written paths."""
    model, task, params, model_state, image_shape = restore(config, workdir)
    dataset = resolve_dataset_config(config.dataset)
    height, width, channels = image_shape
    output_dir = output_dir or os.path.join(workdir, "detections")
    os.makedirs(output_dir, exist_ok=True)
    predict = task.predict_fn(model)
    names = class_names_for(config, int(config.model_kwargs.num_classes))
    written = []
    for path in paths:
        picture = Image.open(path).convert("RGB" if channels == 3 else "L")
        original = np.asarray(picture)
        resized = np.asarray(picture.resize((width, height), Image.BILINEAR), np.float32) / 255
        resized = resized.reshape(height, width, channels)
        if dataset.mean is not None:
            resized = (resized - np.asarray(dataset.mean)) / np.asarray(dataset.std)
        decoded = jax.device_get(predict(params, model_state, resized[None]))
        keep = decoded.valid[0] & (decoded.scores[0] >= min_score)
        oh, ow = original.shape[:2]
        boxes = decoded.boxes[0][keep] * np.array([ow, oh, ow, oh], np.float32)
        drawn = draw_detections(
            original if original.ndim == 3 else original[..., None],
            boxes,
            decoded.classes[0][keep],
            decoded.scores[0][keep],
            class_names=names,
            scale=max(1, 256 // max(oh, ow)),
        )
        out = os.path.join(output_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        save_png(drawn, out)
        written.append(out)
    return written
