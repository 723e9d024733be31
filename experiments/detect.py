r"""Evaluates a trained detector and draws its detections.

  python experiments/detect.py --config=configs/yolo_shapes.py --workdir=/tmp/yolo_shapes \
      [--images='photos/*.png']

Restores the latest checkpoint in ``--workdir`` (train it first with experiments/train.py),
writes ``detection_metrics.json`` (VOC and COCO mAP on the eval split),
``sample_detections.png`` and ``precision_recall.png`` there, and, with ``--images``,
each matching image with its boxes, labels and scores under ``<workdir>/detections/``.
"""

import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax.detection.evaluate import detect_images, evaluate_workdir  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (checkpoints).")
_IMAGES = flags.DEFINE_string("images", None, "Optional glob of image files to run on.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    metrics = evaluate_workdir(_CONFIG.value, _WORKDIR.value)
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    if _IMAGES.value:
        paths = sorted(glob.glob(_IMAGES.value))
        if not paths:
            raise app.UsageError(f"--images={_IMAGES.value!r} matches no file")
        for path in detect_images(_CONFIG.value, _WORKDIR.value, paths):
            print("wrote", path)


if __name__ == "__main__":
    app.run(main)
