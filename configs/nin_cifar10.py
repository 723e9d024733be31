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

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False)
    optimizer = common.momentum(0.05, schedule="cosine", weight_decay=1e-4, warmup_steps=500)
    config = common.classification(
        "nin", {"num_classes": 10, "dropout_rate": 0.5}, common.cifar10_dataset(), optimizer
    )
    common.set_run(
        config, batch_size=128, eval_batch_size=500, num_train_steps=120 * 50_000 // 128,
        log_every_steps=200, eval_every_steps=4_000, checkpoint_every_steps=2_000,
    )  # fmt: skip
    if arg.smoke:
        common.digits_smoke(config, 2)
    return config
