r"""YOLOv2-style detection of circles, squares and triangles on the offline `shapes` scenes.

64x64 scenes with 1-4 objects, clutter and overlaps (``shapes/scenes``: 6,000 train / 500
test, built on first use in ~1 minute); an 8x8 grid with 3 k-means anchors; a small
Darknet-style backbone. No network needed.

Train, then evaluate (mAP, sample detections PNG, precision-recall plot in the workdir):

  python experiments/train.py --config=configs/yolo_shapes.py --workdir=/tmp/yolo_shapes
  python experiments/detect.py --config=configs/yolo_shapes.py --workdir=/tmp/yolo_shapes

Expected: VOC mAP@0.5 >= 0.7 on the test split (see docs/detection.md for the measured
figure, time and steps/s on a 2-core CPU). The YOLOv1 loss: ``--config.task_kwargs.version=v1``
with ``--config.model_kwargs.version=v1``.

Smoke variant (seconds; what the tests run, on ``shapes/scenes_small``):

  python experiments/train.py --config=configs/yolo_shapes.py:smoke --workdir=/tmp/yolo_smoke
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config
from convjax.data.shapes import LANDMARK_FLIP_PERMUTATION
from convjax.tasks.detection import SHAPES_ANCHORS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = "yolo"
    config.model_kwargs = ml_collections.ConfigDict(
        {
            "num_classes": 3,
            "version": "v2",
            "num_anchors": len(SHAPES_ANCHORS),
            "widths": (8, 16, 32, 64),
            "pools": 3,
            "head_width": 64,
        }
    )

    config.dataset = default_dataset_config()
    config.dataset.name = "shapes/scenes"
    config.dataset.max_objects = 6
    config.dataset.augment = "mirror"
    config.dataset.landmark_flip_permutation = LANDMARK_FLIP_PERMUTATION
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.25, 0.25, 0.25)

    config.task = "detection"
    config.task_kwargs = ml_collections.ConfigDict(
        {
            "version": "v2",
            "anchors": SHAPES_ANCHORS,
            "lambda_coord": 5.0,
            "lambda_noobj": 0.5,
            "nms_iou_threshold": 0.45,
            "max_detections": 50,
        }
    )

    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 3e-3,
            "schedule": "cosine",
            "warmup_steps": 100,
            "weight_decay": 0.0,
            "grad_clip_norm": 10.0,
        }
    )

    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_train_steps = 2000
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"

    if arg == "smoke":
        config.dataset.name = "shapes/scenes_small"
        config.model_kwargs.widths = (4, 8, 8, 16)
        config.model_kwargs.head_width = 16
        config.batch_size = 16
        config.eval_batch_size = 16
        config.num_train_steps = 6
        config.log_every_steps = 3
        config.eval_every_steps = 6
        config.checkpoint_every_steps = 6
        config.optimizer.warmup_steps = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r}; valid: 'smoke'")
    return config
