r"""GoogLeNet / Inception v1 on ImageNet: the true 5x5 branch (``googlenet``) or
torchvision's 3x3 variant (``googlenet_torchvision``).

Recipe after the paper: SGD momentum 0.9, learning rate 0.1 per 256 images with a
cosine decay over 90 epochs (the paper: 4% every 8 epochs, asynchronous), weight
decay 1e-4, random-resized 224 crops and flips, dropout 0.2 before the head.
(The auxiliary classifiers, ``model_kwargs.aux_logits=True``, add their logits as
the modules ``aux1``/``aux2``; the classification task does not weight them yet.)

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/googlenet_imagenet.py --workdir=/tmp/googlenet

Expected top-1 on the validation set: 69.78% (torchvision's googlenet weights; the
paper's single model reported top-5 error 10.07%). Not reproduced on this project's
CPU machines.

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128, 10 classes; expect roughly
85% (not measured here).

Smoke variant (offline digits 32x32 RGB; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config

MODELS = ("googlenet", "googlenet_torchvision")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in MODELS + ("smoke", "imagenette")]
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {unknown}; valid: smoke, imagenette, {', '.join(MODELS)}"
        )
    imagenette = "imagenette" in parts
    config = ml_collections.ConfigDict()
    config.model = next((p for p in parts if p in MODELS), "googlenet")
    config.model_kwargs = ml_collections.ConfigDict(
        {"num_classes": 10 if imagenette else 1000, "aux_logits": False}
    )
    dataset = default_dataset_config()
    dataset.name = "imagenette/160px-v2" if imagenette else "imagenet2012"
    dataset.eval_split = "validation"
    dataset.image_size = (128, 128) if imagenette else (224, 224)
    dataset.channels = 3
    dataset.mean = IMAGENET_MEAN
    dataset.std = IMAGENET_STD
    dataset.augment = "random_resized_crop(scale=(0.08, 1.0)), mirror"
    config.dataset = dataset
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.batch_size = 256
    epochs = 40 if imagenette else 90
    config.num_train_steps = epochs * (9_469 if imagenette else 1_281_167) // config.batch_size
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.1,
            "momentum": 0.9,
            "schedule": "cosine",
            "warmup_steps": 0,
            "weight_decay": 1e-4,
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
        config.model_kwargs.num_classes = 10
        dataset = default_dataset_config()
        dataset.name = "sklearn_digits"
        dataset.image_size = (32, 32)
        dataset.channels = 3
        dataset.mean = (0.5, 0.5, 0.5)
        dataset.std = (0.5, 0.5, 0.5)
        config.dataset = dataset
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.dtype = "float32"
    return config
