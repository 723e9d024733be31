r"""YOLOv2-style detection on PASCAL VOC (tfds ``voc/2007``, 20 classes) at 320x320.

Needs the dataset in tfds (``python experiments/prepare_data.py`` downloads it, or point
``--config.dataset.data_dir`` at a prepared copy). A 10x10 grid (5 pools), 5 anchors
(YOLOv2's VOC anchors, normalised to the image), VOC's *difficult* objects ignored by
the mAP.

  python experiments/train.py --config=configs/yolo_voc.py --workdir=/tmp/yolo_voc
  python experiments/detect.py --config=configs/yolo_voc.py --workdir=/tmp/yolo_voc

Expected: a from-scratch baseline for the code path (no pretrained backbone), not a
state-of-the-art mAP; on an accelerator, raise ``num_train_steps`` and the widths.
``configs/yolo_voc.py:smoke`` checks the configuration for a few steps.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
# YOLOv2's VOC anchors (in 13x13 grid cells), divided by 13.
VOC_ANCHORS = tuple(
    (round(w / 13, 4), round(h / 13, 4))
    for w, h in ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = "yolo"
    config.model_kwargs = ml_collections.ConfigDict(
        {
            "num_classes": len(VOC_CLASSES),
            "version": "v2",
            "num_anchors": len(VOC_ANCHORS),
            "widths": (32, 64, 128, 256, 512, 512),
            "pools": 5,
            "head_width": 512,
        }
    )
    config.class_names = VOC_CLASSES

    config.dataset = default_dataset_config()
    config.dataset.name = "voc/2007"
    config.dataset.train_split = "train+validation"
    config.dataset.eval_split = "test"
    config.dataset.example_fn = "detection_objects"
    config.dataset.max_objects = 42
    config.dataset.image_size = (320, 320)
    config.dataset.channels = 3
    config.dataset.augment = "mirror, zoom(lower=0.9, upper=1.1), colour_shift(0.05)"
    config.dataset.mean = (0.485, 0.456, 0.406)
    config.dataset.std = (0.229, 0.224, 0.225)

    config.task = "detection"
    config.task_kwargs = ml_collections.ConfigDict(
        {
            "version": "v2",
            "anchors": VOC_ANCHORS,
            "lambda_coord": 5.0,
            "lambda_noobj": 0.5,
            "nms_iou_threshold": 0.45,
            "max_detections": 100,
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 1e-3,
            "schedule": "cosine",
            "warmup_steps": 1000,
            "weight_decay": 5e-4,
            "grad_clip_norm": 10.0,
        }
    )
    config.batch_size = 64
    config.eval_batch_size = 64
    config.num_train_steps = 60_000
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"

    if arg == "smoke":
        config.dataset.image_size = (64, 64)
        config.model_kwargs.widths = (8, 8, 16, 16, 32)
        config.model_kwargs.head_width = 32
        config.batch_size = 8
        config.eval_batch_size = 8
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.eval_every_steps = 4
        config.checkpoint_every_steps = 4
        config.optimizer.warmup_steps = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r}; valid: 'smoke'")
    return config
