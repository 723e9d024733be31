r"""GoogLeNet / Inception v1 on ImageNet: the true 5x5 branch (``googlenet``) or
torchvision's 3x3 variant (``googlenet_torchvision``).

Recipe after the paper: SGD momentum 0.9, learning rate 0.1 per 256 images with a
cosine decay over 90 epochs (the paper: 4% every 8 epochs, asynchronous), weight
decay 1e-4, random-resized 224 crops and flips, dropout 0.2 before the head.
(The auxiliary classifiers: ``--config.model_kwargs.aux_logits=True`` builds them as
the modules ``aux1``/``aux2``, and ``--config.task_kwargs.aux_outputs="('aux1', 'aux2')"``
adds their losses with weight 0.3, as in the paper.)

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/googlenet_imagenet.py --workdir=/tmp/googlenet

Expected top-1 on the validation set: 69.78% (torchvision's googlenet weights; the
paper's single model reported top-5 error 10.07%). Not reproduced on this project's
CPU machines.

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128, 10 classes; expect roughly
85% (not measured here).

Smoke variant (offline digits 32x32 RGB, batch 8 at the recipe's learning rate for
that batch, 0.1 x 8 / 256; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common

MODELS = ("googlenet", "googlenet_torchvision")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, models=MODELS, model="googlenet", smoke=False, imagenette=False)
    optimizer = common.momentum(0.1, schedule="cosine", weight_decay=1e-4)
    config = common.imagenet_classification(
        arg.model, arg.imagenette, batch_size=256, epochs=90, optimizer=optimizer,
        model_kwargs={"aux_logits": False},
    )  # fmt: skip
    if arg.smoke:
        common.digits_smoke(config, 2, image_size=32, channels=3)
        config.optimizer.learning_rate = 0.1 * config.batch_size / 256  # 0.1 per 256 images
    return config
