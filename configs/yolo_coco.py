r"""YOLOv2-style detection on COCO (tfds ``coco/2017``, 80 classes) at 416x416.

Needs the dataset in tfds (``python experiments/prepare_data.py``; about 25 GB). A 13x13
grid (5 pools) with YOLOv2's 5 COCO anchors; crowd annotations are ignored by the mAP
(an approximation of COCO's crowd matching, see docs/detection.md).

  python experiments/train.py --config=configs/yolo_coco.py --workdir=/tmp/yolo_coco
  python experiments/detect.py --config=configs/yolo_coco.py --workdir=/tmp/yolo_coco

Expected: a from-scratch baseline for accelerators (no pretrained backbone); it reports
COCO AP@[.5:.95], AP50, AP75 and the small/medium/large figures in
``detection_metrics.json``.

Smoke variant (offline, seconds; COCO's anchors and object count with the offline
``shapes/scenes_small`` scenes standing in, as in ``configs/yolo_voc.py:smoke``):

  python experiments/train.py --config=configs/yolo_coco.py:smoke --workdir=/tmp/yolo_coco_smoke
"""

from __future__ import annotations

import ml_collections

from configs import common, yolo_voc

# YOLOv2's COCO anchors (in 13x13 grid cells), divided by 13.
COCO_ANCHORS = tuple(
    (round(w / 13, 4), round(h / 13, 4))
    for w, h in ((0.57, 0.68), (1.87, 2.06), (3.34, 5.47), (7.88, 3.53), (9.77, 9.17))
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = common.parse_arg(arg, smoke=False).smoke
    config = yolo_voc.get_config(arg)  # the smoke variant's stand-in data included
    config.model_kwargs.num_anchors = len(COCO_ANCHORS)
    config.task_kwargs.anchors = COCO_ANCHORS
    config.class_names = None  # tfds' ClassLabel order; names come from the dataset info
    config.dataset.max_objects = 100
    if not smoke:
        config.model_kwargs.num_classes = 80
        config.dataset.name = "coco/2017"
        config.dataset.train_split = "train"
        config.dataset.eval_split = "validation"
        config.dataset.image_size = (416, 416)
        config.num_train_steps = 200_000
    return config
