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

from convjax.data.config import digits_dataset, imagenet_dataset

MODELS = ("googlenet", "googlenet_torchvision")


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
    config.dataset = imagenet_dataset(imagenette)
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
        config.dataset = digits_dataset(32, channels=3)
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.dtype = "float32"
    return config
