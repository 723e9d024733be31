r"""Network in Network (Lin et al. 2013) on CIFAR-10: three MLPConv blocks of 1x1
convolutions and a global average pool instead of dense layers.

Recipe: SGD momentum 0.9, learning rate 0.05 with a cosine decay over 120 epochs,
weight decay 1e-4, dropout 0.5 between blocks, flips and 4-pixel padded crops.

Run (needs tfds' cifar10, downloaded once by tfds):

  python experiments/train.py --config=configs/nin_cifar10.py --workdir=/tmp/nin

Expected test accuracy: about 90% (the paper: 10.41% error without augmentation,
8.81% with translation and flipping). Not reproduced on this project's CPU machines.

Smoke variant (offline digits 32x32x1; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "smoke"):
        raise ValueError(f"Unknown config variant {arg!r}; valid: 'smoke'")
    config = ml_collections.ConfigDict()
    config.model = "nin"
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10, "dropout_rate": 0.5})
    config.dataset = default_dataset_config()
    config.dataset.name = "cifar10"
    config.dataset.mean = (0.4914, 0.4822, 0.4465)
    config.dataset.std = (0.2470, 0.2435, 0.2616)
    config.dataset.augment = "mirror, random_crop(pad=4)"
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.05,
            "momentum": 0.9,
            "schedule": "cosine",
            "warmup_steps": 500,
            "weight_decay": 1e-4,
        }
    )
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_train_steps = 120 * 50_000 // 128
    config.log_every_steps = 200
    config.eval_every_steps = 4_000
    config.checkpoint_every_steps = 2_000
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"
    if arg == "smoke":
        config.dataset.name = "sklearn_digits"
        config.dataset.image_size = (32, 32)
        config.dataset.channels = 1
        config.dataset.mean = (0.5,)
        config.dataset.std = (0.5,)
        config.dataset.augment = ""
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.optimizer.warmup_steps = 0
    return config
