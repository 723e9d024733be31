r"""VGG-11/13/16/19 (with ``_bn``: BatchNorm) on ImageNet.

The paper's recipe as torchvision followed it: SGD momentum 0.9, learning rate 0.01
(divided by 10 at 1/3 and 2/3 of 74 epochs here, where the paper divided on plateaus),
weight decay 5e-4, dropout 0.5 in fc6/fc7, batch 256, random-resized 224 crops and
flips.

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/vgg_imagenet.py:vgg16_bn --workdir=/tmp/vgg16bn

Expected top-1 on the validation set (torchvision's weights): VGG-11 69.02%,
VGG-13 69.93%, VGG-16 71.59%, VGG-19 72.38%; with BN 70.37%, 71.59%, 73.36%, 74.22%.
Not reproduced on this project's CPU machines. (Without BN, VGG-16 from scratch
needs the paper's staged initialisation or a warmup to start learning.)

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128, 10 classes, 40 epochs,
cosine schedule; expect roughly 85% for VGG-16-BN (not measured here).

Smoke variant (offline digits 32x32 RGB, a 64-wide classifier; seconds): ``:vgg11,smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import digits_dataset, imagenet_dataset

MODELS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in MODELS + ("smoke", "imagenette")]
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {unknown}; valid: smoke, imagenette, {', '.join(MODELS)}"
        )
    imagenette = "imagenette" in parts
    config = ml_collections.ConfigDict()
    config.model = next((p for p in parts if p in MODELS), "vgg16_bn")
    config.model_kwargs = ml_collections.ConfigDict(
        {"num_classes": 10 if imagenette else 1000, "pool": "max", "dropout_rate": 0.5}
    )
    config.dataset = imagenet_dataset(imagenette)
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.batch_size = 256
    epochs = 40 if imagenette else 74
    config.num_train_steps = epochs * (9_469 if imagenette else 1_281_167) // config.batch_size
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.01,
            "momentum": 0.9,
            "schedule": "cosine" if imagenette else "step",
            "decay_boundaries": (1 / 3, 2 / 3),
            "decay_factor": 0.1,
            "warmup_steps": 500,
            "weight_decay": 5e-4,
        }
    )
    config.eval_batch_size = 500
    config.log_every_steps = 100
    config.eval_every_steps = config.num_train_steps // 10
    config.checkpoint_every_steps = 1_000
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "bfloat16"
    config.conv_impl = "xla"

    if "smoke" in parts:
        config.model_kwargs = ml_collections.ConfigDict(
            {"num_classes": 10, "adaptive_pool_size": 1, "fc_width": 64}
        )
        config.dataset = digits_dataset(32, channels=3)
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.optimizer.warmup_steps = 0
        config.dtype = "float32"
    return config
