r"""YOLOv2-style detection of circles, squares and triangles on the offline `shapes` scenes.

64x64 scenes with 1-4 objects, clutter and overlaps (``shapes/scenes``: 6,000 train / 500
test, built once on first use: 3 min 25 s on a 2-core CPU, docs/detection.md); an 8x8 grid
with 3 k-means anchors; a small Darknet-style backbone. No network needed.

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

from configs import common
from convjax.tasks.detection import SHAPES_ANCHORS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False)
    config = common.yolo(
        num_classes=3, anchors=SHAPES_ANCHORS, widths=(8, 16, 32, 64), pools=3, head_width=64,
        dataset=common.shapes_dataset("shapes/scenes", max_objects=6), max_detections=50,
        optimizer=common.adam(3e-3, warmup_steps=100, grad_clip_norm=10.0),
    )  # fmt: skip
    common.set_run(
        config, batch_size=32, eval_batch_size=100, num_train_steps=2000,
        log_every_steps=100, eval_every_steps=500, checkpoint_every_steps=500,
        keep_checkpoints=2,
    )  # fmt: skip
    if arg.smoke:
        config.dataset.name = "shapes/scenes_small"
        config.model_kwargs.widths = (4, 8, 8, 16)
        config.model_kwargs.head_width = 16
        common.shrink(config, 6, batch_size=16, eval_batch_size=16, log_every_steps=3)
    return config
