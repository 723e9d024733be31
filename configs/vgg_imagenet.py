r"""VGG-11/13/16/19 (with ``_bn``: BatchNorm) on ImageNet.

The paper's recipe as torchvision followed it: SGD momentum 0.9, learning rate 0.01
(divided by 10 at 1/3 and 2/3 of 74 epochs here, where the paper divided on plateaus),
weight decay 5e-4, dropout 0.5 in fc6/fc7, batch 256, random-resized 224 crops and
flips.

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/vgg_imagenet.py:vgg16_bn --workdir=/tmp/vgg16bn

Expected top-1 on the validation set (torchvision's weights): VGG-11 69.02%,
VGG-13 69.93%, VGG-16 71.59%, VGG-19 72.38%; with BN 70.37%, 71.59%, 73.36%, 74.22%.
Not reproduced on this project's CPU machines. (Without BN, VGG-16 from scratch
needs the paper's staged initialisation or a warmup to start learning.)

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128, 10 classes, 40 epochs,
cosine schedule; expect roughly 85% for VGG-16-BN (not measured here).

Smoke variant (offline digits 32x32 RGB, a 64-wide classifier; seconds): ``:vgg11,smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common

MODELS = tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn"))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, models=MODELS, model="vgg16_bn", smoke=False, imagenette=False)
    optimizer = common.imagenet_momentum(
        0.01, arg.imagenette, weight_decay=5e-4, warmup_steps=500
    )
    config = common.imagenet_classification(
        arg.model, arg.imagenette, batch_size=256, epochs=74, optimizer=optimizer,
        model_kwargs={"pool": "max", "dropout_rate": 0.5},
    )  # fmt: skip
    if arg.smoke:
        # A global-pooled 64-wide classifier: the 32x32 digits are smaller than 224.
        config.model_kwargs = ml_collections.ConfigDict({"adaptive_pool_size": 1, "fc_width": 64})
        common.digits_smoke(config, 2, image_size=32, channels=3)
    return config
