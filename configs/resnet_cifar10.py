r"""CIFAR ResNets (He et al. 2015, section 4.2) and their plain counterparts on CIFAR-10.

Models (first part of the argument): resnet20 (default), resnet32, resnet44, resnet56,
resnet110, plain20 ... plain110 (the same layers without skip connections), and
resnet18_cifar (ResNet-18 with a 3x3 stem). The paper's recipe: SGD momentum 0.9,
learning rate 0.1 divided by 10 at 32k and 48k of 64k steps, weight decay 1e-4,
batch 128, 4-pixel padded crops and flips, per-channel normalisation.

Run (needs tfds' cifar10, downloaded once by tfds):

  python experiments/train.py --config=configs/resnet_cifar10.py:resnet56 --workdir=/tmp/resnet56

Expected test accuracy (the paper's table 6): ResNet-20 91.25%, ResNet-32 92.49%,
ResNet-44 92.83%, ResNet-56 93.03%, ResNet-110 93.39% (+-0.2); the plain nets train
and test worse as they get deeper (figure 6; configs/plain_vs_residual.py).

Smoke variant (seconds, offline digits 32x32x1; what the tests run):

  python experiments/train.py --config=configs/resnet_cifar10.py:resnet20,smoke --workdir=/tmp/r20
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config

MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain32",
          "plain44", "plain56", "plain110", "resnet18_cifar")  # fmt: skip
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    model = next((p for p in parts if p in MODELS), "resnet20")
    unknown = [p for p in parts if p not in MODELS and p != "smoke"]
    if unknown:
        raise ValueError(f"Unknown config variant(s) {unknown}; valid: smoke, {', '.join(MODELS)}")

    config = ml_collections.ConfigDict()
    config.model = model
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10})

    config.dataset = default_dataset_config()
    config.dataset.name = "cifar10"
    config.dataset.mean = CIFAR_MEAN
    config.dataset.std = CIFAR_STD
    config.dataset.augment = "mirror, random_crop(pad=4)"

    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.0, "topk": (5,)})
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "momentum",
            "learning_rate": 0.1,
            "momentum": 0.9,
            "schedule": "step",
            "decay_boundaries": (0.5, 0.75),
            "decay_factor": 0.1,
            "warmup_steps": 0,
            "weight_decay": 1e-4,
        }
    )
    config.batch_size = 128
    config.eval_batch_size = 500
    config.num_train_steps = 64_000
    config.log_every_steps = 200
    config.eval_every_steps = 4_000
    config.checkpoint_every_steps = 2_000
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"

    if "smoke" in parts:
        config.dataset.name = "sklearn_digits"
        config.dataset.image_size = (32, 32)
        config.dataset.channels = 1
        config.dataset.mean = (0.5,)
        config.dataset.std = (0.5,)
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 3
        config.log_every_steps = 1
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
    return config
