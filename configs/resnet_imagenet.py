r"""ImageNet ResNets (torchvision's structure: ResNet-18/34/50/101/152).

The torchvision reference recipe: SGD momentum 0.9, learning rate 0.1 per 256
images, divided by 10 every 30 of 90 epochs, weight decay 1e-4, random-resized
224 crops and flips, ImageNet normalisation.

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/resnet_imagenet.py:resnet50 --workdir=/tmp/r50

Expected top-1 on the validation set (torchvision's weights from this recipe):
ResNet-18 69.76%, ResNet-34 73.31%, ResNet-50 76.13%, ResNet-101 77.37%,
ResNet-152 78.31%. Not reproduced on this project's CPU machines.

``:imagenette`` trains on Imagenette (10 easy ImageNet classes, tfds
``imagenette/160px-v2``, 128x128 crops, 40 epochs, cosine); expect roughly 85-90%
for ResNet-50 from scratch (fast.ai's leaderboard range; not measured here).

Smoke variant (offline digits resized to 64x64 RGB; seconds): ``:resnet18,smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import digits_dataset, imagenet_dataset

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
IMAGENET_TRAIN = 1_281_167


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in MODELS + ("smoke", "imagenette")]
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {unknown}; valid: smoke, imagenette, {', '.join(MODELS)}"
        )
    imagenette = "imagenette" in parts
    config = ml_collections.ConfigDict()
    config.model = next((p for p in parts if p in MODELS), "resnet50")
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10 if imagenette else 1000})
    config.dataset = imagenet_dataset(imagenette)
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.batch_size = 256
    epochs = 40 if imagenette else 90
    train_size = 9_469 if imagenette else IMAGENET_TRAIN
    config.num_train_steps = epochs * train_size // config.batch_size
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.1 * config.batch_size / 256,
            "momentum": 0.9,
            "schedule": "cosine" if imagenette else "step",
            "decay_boundaries": (1 / 3, 2 / 3),
            "decay_factor": 0.1,
            "warmup_steps": 0,
            "weight_decay": 1e-4,
        }
    )
    config.eval_batch_size = 500
    config.log_every_steps = 100
    config.eval_every_steps = config.num_train_steps // epochs * 5
    config.checkpoint_every_steps = 1_000
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "bfloat16"
    config.conv_impl = "xla"

    if "smoke" in parts:
        config.model_kwargs.num_classes = 10
        config.dataset = digits_dataset(64, channels=3)
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.dtype = "float32"
    return config
