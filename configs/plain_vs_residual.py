r"""Plain vs residual CIFAR nets of several depths: training error against depth.

He et al. (2015), figure 6: without skip connections, training error *rises* with
depth (20 -> 56 layers), the degradation problem; the ResNets of the same depths do
not degrade. ``experiments/plain_vs_residual.py`` trains ``plain<d>`` and
``resnet<d>`` for every depth in ``depths`` with this config (one workdir each, then
``train[:N]`` is evaluated as the training set) and draws
``plain_vs_residual.png`` (training error against depth) in the workdir.

Full run, the paper's setting (CIFAR-10, 64k steps per net; days on a CPU):

  python experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py \
    --workdir=/tmp/plain_vs_residual

Expected (paper): plain-20/32/44/56 training error rises with depth while
ResNet-20..56 falls; test error 8.75% (ResNet-20) .. 6.97% (ResNet-56).

``:digits``: the modest offline run that made the figure in docs/models.md (the
bundled 1,797 digits at 16x16, depths 8, 20, 32, 56, 300 steps of batch 64 per net, Adam
1e-3; a CPU run, minutes per net): what it shows is stated there.

Smoke variant (plain-8 and ResNet-8, 3 steps each; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "smoke", "digits"):
        raise ValueError(f"Unknown config variant {arg!r}; valid: 'smoke', 'digits'")
    config = ml_collections.ConfigDict()
    config.depths = (20, 32, 44, 56)  # 6n + 2
    config.model = "resnet20"  # replaced per run: plain<d> / resnet<d> stage sizes
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10})
    config.dataset = default_dataset_config()
    config.dataset.name = "cifar10"
    config.dataset.mean = (0.4914, 0.4822, 0.4465)
    config.dataset.std = (0.2470, 0.2435, 0.2616)
    config.dataset.augment = "mirror, random_crop(pad=4)"
    config.train_error_split = "train[:10000]"  # evaluated after training: training error
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
    config.log_every_steps = 500
    config.eval_every_steps = 0  # at the end only
    config.checkpoint_every_steps = 4_000
    config.keep_checkpoints = 1
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"

    if arg in ("smoke", "digits"):
        config.dataset = default_dataset_config()
        config.dataset.name = "sklearn_digits"
        config.dataset.image_size = (16, 16)
        config.dataset.channels = 1
        config.dataset.mean = (0.5,)
        config.dataset.std = (0.5,)
        config.train_error_split = "train"
        config.optimizer = ml_collections.ConfigDict(
            {"name": "adam", "learning_rate": 1e-3, "schedule": "constant", "weight_decay": 0.0}
        )
        config.batch_size = 64
        config.eval_batch_size = 240
        config.depths = (8, 20, 32, 56)
        config.num_train_steps = 300
        config.log_every_steps = 50
        config.checkpoint_every_steps = 300
    if arg == "smoke":
        config.depths = (8,)
        config.batch_size = 8
        config.num_train_steps = 3
        config.log_every_steps = 1
        config.checkpoint_every_steps = 3
    return config
