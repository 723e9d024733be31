r"""AlexNet on ImageNet: torchvision's single tower (``alexnet``) or the paper's
grouped convolutions with local response normalisation (``alexnet_original``).

The paper's recipe: SGD momentum 0.9, learning rate 0.01 divided by 10 at 1/3 and
2/3 of 90 epochs (the paper divided on plateaus), weight decay 5e-4, dropout 0.5,
batch 128, random crops and flips, and PCA colour lighting (std 0.1).

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/alexnet_imagenet.py --workdir=/tmp/alexnet

Expected top-1 on the validation set: 56.52% (torchvision's single-tower weights);
the paper's single network reached 59.3% (top-1 error 40.7%, with 10-crop testing).
Not reproduced on this project's CPU machines.

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128 (the smallest input is
63x63), 10 classes; expect roughly 75-80% (not measured here).

Smoke variant (offline digits resized to 64x64 RGB; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import digits_dataset, imagenet_dataset

MODELS = ("alexnet", "alexnet_original")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in MODELS + ("smoke", "imagenette")]
    if unknown:
        raise ValueError(
            f"Unknown config variant(s) {unknown}; valid: smoke, imagenette, {', '.join(MODELS)}"
        )
    imagenette = "imagenette" in parts
    original = "alexnet_original" in parts
    config = ml_collections.ConfigDict()
    config.model = "alexnet_original" if original else "alexnet"
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10 if imagenette else 1000})
    config.dataset = imagenet_dataset(
        imagenette,
        image_size=128 if imagenette else (227 if original else 224),
        augment="random_resized_crop(scale=(0.35, 1.0)), mirror, pca_lighting(std=0.1)",
    )
    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.batch_size = 128
    epochs = 40 if imagenette else 90
    config.num_train_steps = epochs * (9_469 if imagenette else 1_281_167) // config.batch_size
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.01,
            "momentum": 0.9,
            "schedule": "cosine" if imagenette else "step",
            "decay_boundaries": (1 / 3, 2 / 3),
            "decay_factor": 0.1,
            "warmup_steps": 0,
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
        config.model_kwargs.num_classes = 10
        config.dataset = digits_dataset(67 if original else 64, channels=3)
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 2
        config.log_every_steps = 1
        config.eval_every_steps = 2
        config.checkpoint_every_steps = 2
        config.dtype = "float32"
    return config
