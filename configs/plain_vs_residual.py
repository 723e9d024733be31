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

from configs import common
from configs.resnet_cifar10 import STEP_DECAY
from convjax.data.config import digits_dataset


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False, digits=False)
    # model: replaced per run by plain<d> / resnet<d> with the stage sizes of depth d.
    optimizer = common.momentum(0.1, **STEP_DECAY)
    config = common.classification(
        "resnet20", {"num_classes": 10}, common.cifar10_dataset(), optimizer
    )
    config.depths = (20, 32, 44, 56)  # 6n + 2
    config.train_error_split = "train[:10000]"  # evaluated after training: training error
    common.set_run(
        config, batch_size=128, eval_batch_size=500, num_train_steps=64_000,
        log_every_steps=500, eval_every_steps=0, checkpoint_every_steps=4_000,
        keep_checkpoints=1,
    )  # fmt: skip

    if arg.smoke or arg.digits:
        config.dataset = digits_dataset(16)
        config.train_error_split = "train"
        config.optimizer = ml_collections.ConfigDict(
            {"name": "adam", "learning_rate": 1e-3, "schedule": "constant", "weight_decay": 0.0}
        )
        config.depths = (8, 20, 32, 56)
        common.shrink(config, 300, batch_size=64, eval_batch_size=240, log_every_steps=50,
                      eval_every_steps=0)  # fmt: skip
    if arg.smoke:  # plain-8 and ResNet-8
        config.depths = (8,)
        common.shrink(config, 3, batch_size=8, eval_every_steps=0)
    return config
