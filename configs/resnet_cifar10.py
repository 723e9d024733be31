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

from configs import common

MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "plain20", "plain32",
          "plain44", "plain56", "plain110", "resnet18_cifar")  # fmt: skip
STEP_DECAY = {"schedule": "step", "weight_decay": 1e-4, "decay_boundaries": (0.5, 0.75)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, models=MODELS, model="resnet20", smoke=False)
    optimizer = common.momentum(0.1, **STEP_DECAY)  # /10 at 32k and 48k steps
    config = common.classification(
        arg.model, {"num_classes": 10}, common.cifar10_dataset(), optimizer
    )
    common.set_run(
        config, batch_size=128, eval_batch_size=500, num_train_steps=64_000,
        log_every_steps=200, eval_every_steps=4_000, checkpoint_every_steps=2_000,
    )  # fmt: skip
    if arg.smoke:  # the offline digits, with CIFAR's flips and crops
        common.digits_smoke(config, 3)
        config.dataset.augment = common.CIFAR_AUGMENT
    return config
