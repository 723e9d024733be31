r"""LeNet-5 on scikit-learn's bundled handwritten digits (the default experiment).

1,797 real 8x8 digits resized to 32x32x1, a fixed stratified 80/20 split; no network.

Run (uses every CPU core as a device; about a minute on a 2-core machine):

  python experiments/train.py --config=configs/lenet5_digits.py --workdir=/tmp/lenet5_digits

Expected: >= 97% test accuracy (typically ~98-99%).

Smoke variant (seconds; what the tests run):

  python experiments/train.py --config=configs/lenet5_digits.py:smoke --workdir=/tmp/lenet5_smoke
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = "lenet5"
    config.model_kwargs = ml_collections.ConfigDict(
        {"num_classes": 10, "activation": "relu", "pool": "max", "batch_norm": False}
    )

    config.dataset = default_dataset_config()
    config.dataset.name = "sklearn_digits"
    config.dataset.image_size = (32, 32)
    config.dataset.channels = 1
    config.dataset.mean = (0.5,)
    config.dataset.std = (0.5,)

    config.task = "classification"
    config.task_kwargs = ml_collections.ConfigDict({"label_smoothing": 0.1, "topk": (5,)})

    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 2e-3,
            "schedule": "cosine",
            "warmup_steps": 50,
            "weight_decay": 0.0,
            "grad_clip_norm": None,
        }
    )

    config.batch_size = 128
    config.eval_batch_size = 256
    config.num_train_steps = 400
    config.log_every_steps = 50
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 100
    config.keep_checkpoints = 3
    config.seed = 0
    config.parallel = "auto"  # 'jit' | 'pmap' | 'shard_map' | 'auto'
    config.dtype = "float32"
    config.conv_impl = "xla"

    if arg == "smoke":
        config.num_train_steps = 20
        config.log_every_steps = 5
        config.eval_every_steps = 10
        config.checkpoint_every_steps = 10
        config.optimizer.warmup_steps = 0
    elif arg:
        raise ValueError(f"Unknown config variant {arg!r}; valid: 'smoke'")
    return config
