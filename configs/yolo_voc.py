r"""YOLOv2-style detection on PASCAL VOC (tfds ``voc/2007``, 20 classes) at 320x320.

Needs the dataset in tfds (``python experiments/prepare_data.py`` downloads it, or point
``--config.dataset.data_dir`` at a prepared copy). A 10x10 grid (5 pools), 5 anchors
(YOLOv2's VOC anchors, normalised to the image), VOC's *difficult* objects ignored by
the mAP.

  python experiments/train.py --config=configs/yolo_voc.py --workdir=/tmp/yolo_voc
  python experiments/detect.py --config=configs/yolo_voc.py --workdir=/tmp/yolo_voc

Expected: a from-scratch baseline for the code path (no pretrained backbone), not a
state-of-the-art mAP; on an accelerator, raise ``num_train_steps`` and the widths.

Smoke variant (offline, seconds): the same example function, augmentation and
normalisation for a few steps, with the offline ``shapes/scenes_small`` scenes (3
classes) standing in for VOC:

  python experiments/train.py --config=configs/yolo_voc.py:smoke --workdir=/tmp/yolo_voc_smoke
"""

from __future__ import annotations

import ml_collections

from configs import common
from convjax.data.config import IMAGENET_MEAN, IMAGENET_STD, default_dataset_config

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
    arg = common.parse_arg(arg, smoke=False)
    dataset = default_dataset_config()
    dataset.name = "voc/2007"
    dataset.train_split = "train+validation"
    dataset.eval_split = "test"
    dataset.example_fn = "detection_objects"
    dataset.max_objects = 42
    dataset.image_size = (320, 320)
    dataset.channels = 3
    dataset.augment = "mirror, zoom(lower=0.9, upper=1.1), colour_shift(0.05)"
    dataset.mean = IMAGENET_MEAN
    dataset.std = IMAGENET_STD
    config = common.yolo(
        num_classes=len(VOC_CLASSES), anchors=VOC_ANCHORS, widths=(32, 64, 128, 256, 512, 512),
        pools=5, head_width=512, dataset=dataset, max_detections=100,
        optimizer=common.adam(1e-3, warmup_steps=1000, weight_decay=5e-4, grad_clip_norm=10.0),
    )  # fmt: skip
    config.class_names = VOC_CLASSES
    common.set_run(
        config, batch_size=64, eval_batch_size=64, num_train_steps=60_000,
        log_every_steps=100, eval_every_steps=5000, checkpoint_every_steps=2000,
    )  # fmt: skip

    if arg.smoke:
        # Offline stand-in data with VOC's layout (``objects/bbox``, ``objects/label``).
        config.dataset.name = "shapes/scenes_small"
        config.dataset.train_split = "train"
        config.model_kwargs.num_classes = 3
        config.class_names = None  # the dataset's class names
        config.dataset.image_size = (64, 64)
        config.model_kwargs.widths = (8, 8, 16, 16, 32)
        config.model_kwargs.head_width = 32
        common.shrink(config, 4, batch_size=8, eval_batch_size=8, log_every_steps=2)
    return config
