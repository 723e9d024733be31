"""Evaluate a trained detector from its workdir, and run it on image files.

:func:`evaluate_workdir` is what ``experiments/detect.py`` runs after
``experiments/train.py``: it rebuilds the model from the workdir's ``config.json``,
restores the latest checkpoint and runs the config's ``detection`` evaluator
(:mod:`convjax.evals.detection`: VOC and COCO mAP, the same code and figures as the
training run's evaluations of that checkpoint), and writes to the workdir:

- ``detection_metrics.json``: the metrics;
- ``sample_detections.png``: the first eval images with drawn boxes, labels and scores;
- ``precision_recall.png``: per-class precision-recall curves at IoU 0.5.

:func:`detect_images` runs the same checkpoint on image files, preprocessed exactly as
the eval split (:func:`convjax.data.pipeline.preprocess_images`), and writes each with
its detections drawn (:func:`convjax.runs.inference.model_inputs`: any image size). It
needs the workdir alone, not the dataset.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence

import jax
import ml_collections
import numpy as np

from convjax.detection.draw import draw_detections, image_grid, precision_recall_figure
from convjax.evals import Evaluator, build_evaluator, build_evaluators
from convjax.runs import workdir as workdir_lib
from convjax.runs.console import Announce, say
from convjax.runs.files import replace_file
from convjax.runs.images import SKIMAGE_PREFIX, read_image, save_figure, save_png
from convjax.runs.inference import model_inputs
from convjax.tasks.detection import Detection

METRICS_JSON = "detection_metrics.json"
SAMPLES_PNG = "sample_detections.png"
PR_PNG = "precision_recall.png"
DETECTIONS_DIR = "detections"


def class_names_for(restored: workdir_lib.Restored, num_classes: int) -> list[str]:
    """``config.class_names``, the names the run recorded (``workdir_info.json``), the
    shapes classes (an older workdir), or ``'0'``, ``'1'``, ..."""
    names = restored.config.get("class_names") or restored.class_names
    if names:
        return list(names)
    if restored.config.dataset.name.startswith("shapes"):
        from convjax.data.shapes import CLASS_NAMES

        return list(CLASS_NAMES)
    return [str(k) for k in range(num_classes)]


def restore_detector(
    workdir: str, config: ml_collections.ConfigDict | None = None
) -> workdir_lib.Restored:
    """The latest checkpoint of a detection workdir (model from its ``config.json``;
    ``config``, when given, must be compatible with it)."""
    restored = workdir_lib.restore(workdir, config=config)
    if not isinstance(restored.task, Detection):
        raise ValueError(
            f"{workdir} was trained with task {restored.config.task!r}; "
            "experiments/detect.py needs task 'detection'"
        )
    return restored


def _sample_pictures(
    arrays: dict[str, np.ndarray], names: list[str], num_samples: int, min_score: float
) -> list[np.ndarray]:
    """The first eval images [H, W, C] with their detections drawn (uint8 [h, w, 3])."""
    pictures = []
    for i in range(min(num_samples, len(arrays["image"]))):
        image = arrays["image"][i]
        h, w = image.shape[:2]
        scale = np.array([w, h, w, h], np.float32)
        keep = arrays["det_valid"][i] & (arrays["det_scores"][i] >= min_score)
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
    return pictures


def map_evaluator(restored: workdir_lib.Restored) -> Evaluator:
    """The run's ``detection`` evaluator (the first in ``config.evals``; a config from
    before evaluators existed gets one on ``dataset.eval_split``)."""
    context = workdir_lib.eval_context(restored)
    found = build_evaluators(context, only=lambda name, spec: spec.get("type") == "detection")
    return found[0] if found else build_evaluator("map", {"type": "detection"}, context)


def evaluate_workdir(
    workdir: str,
    *,
    config: ml_collections.ConfigDict | None = None,
    num_samples: int = 16,
    min_score: float = 0.3,
    announce: Announce | None = None,
) -> dict[str, float]:
    """mAP of the latest checkpoint by the run's ``detection`` evaluator (the figures its
    last evaluation logged), plus the PNGs (module docstring).

    ``config`` defaults to the workdir's ``config.json``. ``announce`` (e.g. ``print``)
    gets a line per stage.
    """
    restored = restore_detector(workdir, config)
    config = restored.config
    say(announce, f"Restored {config.model} at step {restored.step} from {workdir}")
    evaluator = map_evaluator(restored)
    say(announce, f"Detecting on {evaluator.dataset.name} {evaluator.split} ({evaluator.name})")
    result = workdir_lib.evaluate_restored(restored, [evaluator])[evaluator.name]
    metrics, arrays = result.all_metrics, result.details
    names = class_names_for(restored, int(config.model_kwargs.num_classes))
    with replace_file(os.path.join(workdir, METRICS_JSON)) as f:
        json.dump(metrics, f, indent=2)
    pictures = _sample_pictures(arrays, names, num_samples, min_score)
    if pictures:
        save_png(image_grid(pictures), os.path.join(workdir, SAMPLES_PNG))
    figure = precision_recall_figure(arrays["coco_precision"], class_names=names)
    save_figure(figure, os.path.join(workdir, PR_PNG), dpi=120)
    written = [METRICS_JSON, *([SAMPLES_PNG] if pictures else []), PR_PNG]
    say(announce, f"Wrote {', '.join(written)} to {workdir}")
    return metrics


def output_names(paths: Sequence[str]) -> list[str]:
    """Distinct ``.png`` names for ``paths``: each file's path relative to the folder
    that holds them all (``a/x.jpg``, ``b/x.jpg`` -> ``a/x.png``, ``b/x.png``), so
    same-named files in different folders never overwrite each other;
    ``skimage:<name>`` -> ``<name>.png``. Two inputs that would still share a name
    (``x.jpg`` and ``x.png`` in one folder) raise a one-line ``ValueError``."""
    files = [os.path.abspath(p) for p in paths if not p.startswith(SKIMAGE_PREFIX)]
    root = os.path.commonpath([os.path.dirname(f) for f in files]) if files else ""
    names: dict[str, str] = {}
    for path in paths:
        if path.startswith(SKIMAGE_PREFIX):
            relative = path[len(SKIMAGE_PREFIX) :]
        else:
            relative = os.path.relpath(os.path.abspath(path), root)
        name = os.path.splitext(relative)[0] + ".png"
        if name in names:
            raise ValueError(
                f"{names[name]!r} and {path!r} would both be drawn as {name}; rename one"
            )
        names[name] = path
    return list(names)


def _readable(paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, image float32 [h, w, 3]) of each readable file; an unreadable one is
    skipped with a warning line (one file alone: its one-line ``ValueError``)."""
    for i, path in enumerate(paths):
        try:
            yield i, read_image(path)
        except ValueError as error:
            if len(paths) == 1:
                raise
            print(f"warning: skipped {error}", file=sys.stderr, flush=True)


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    """Lists of up to ``size`` consecutive items."""
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _draw(original: np.ndarray, decoded, row: int, names: list[str], min_score: float):
    """``original`` [h, w, 3] with row ``row`` of ``decoded``'s detections drawn."""
    keep = decoded.valid[row] & (decoded.scores[row] >= min_score)
    oh, ow = original.shape[:2]
    return draw_detections(
        original,
        decoded.boxes[row][keep] * np.array([ow, oh, ow, oh], np.float32),
        decoded.classes[row][keep],
        decoded.scores[row][keep],
        class_names=names,
        scale=max(1, 256 // max(oh, ow)),
    )


def detect_images(
    workdir: str,
    paths: Sequence[str],
    *,
    config: ml_collections.ConfigDict | None = None,
    output_dir: str | None = None,
    min_score: float = 0.3,
    batch_size: int = 8,
) -> list[str]:
    """Runs the latest checkpoint on image files (paths, or ``skimage:<name>``), each
    preprocessed as the eval split at the trained input size; writes each with its
    boxes, class names and scores drawn on the original image under ``output_dir``
    (default ``<workdir>/detections/``) as named by :func:`output_names`. Returns the
    written paths.

    Images are read, run and written ``batch_size`` at a time, so memory does not grow
    with the number of files. A file that cannot be read is skipped with a warning
    line (a single file: a one-line ``ValueError`` before the model is restored)."""
    names_out = output_names(paths)
    batches = _chunks(_readable(paths), batch_size)
    first = next(batches, None)  # read before the model is restored: a bad file fails fast
    if first is None:
        raise ValueError(f"none of the {len(paths)} image files could be read")
    restored = restore_detector(workdir, config)
    config = restored.config
    predict = restored.task.predict_fn(restored.model)
    names = class_names_for(restored, int(config.model_kwargs.num_classes))
    output_dir = output_dir or os.path.join(workdir, DETECTIONS_DIR)
    written = []
    for batch in itertools.chain([first], batches):
        inputs = model_inputs([image for _, image in batch], restored.inference_dataset)
        padded = np.zeros((batch_size, *inputs.shape[1:]), inputs.dtype)  # one compile
        padded[: len(batch)] = inputs
        decoded = jax.device_get(predict(restored.state.params, restored.state.model_state, padded))
        for row, (i, original) in enumerate(batch):
            drawn = _draw(original, decoded, row, names, min_score)
            written.append(save_png(drawn, os.path.join(output_dir, names_out[i])))
    return written
