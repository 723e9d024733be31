r"""AlexNet on ImageNet: torchvision's single tower (``alexnet``) or the paper's
grouped convolutions with local response normalisation (``alexnet_original``).

The paper's recipe: SGD momentum 0.9, learning rate 0.01 divided by 10 at 1/3 and
2/3 of 90 epochs (the paper divided on plateaus), weight decay 5e-4, dropout 0.5,
batch 128, random crops and flips, and PCA colour lighting (std 0.1).

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/alexnet_imagenet.py --workdir=/tmp/alexnet

Reference top-1 on the validation set: torchvision's single-tower weights score 56.52%,
measured on one 224x224 centre crop of each image resized to 256 on its shorter side;
the paper's single network reached 59.3% (top-1 error 40.7%) averaging 10 crops. This
config evaluates each whole image stretched to 224x224 (``dataset.resize_mode``), a
different measurement from either. Not reproduced on this project's CPU machines.

``:imagenette``: tfds ``imagenette/160px-v2`` at 128x128 (the smallest input is
63x63), 10 classes; expect roughly 75-80% (not measured here).

Smoke variant (offline digits resized to 64x64 RGB; seconds): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common

MODELS = ("alexnet", "alexnet_original")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, models=MODELS, model="alexnet", smoke=False, imagenette=False)
    original = arg.model == "alexnet_original"
    optimizer = common.imagenet_momentum(0.01, arg.imagenette, weight_decay=5e-4)
    config = common.imagenet_classification(
        arg.model, arg.imagenette, batch_size=128, epochs=90, optimizer=optimizer,
        image_size=128 if arg.imagenette else (227 if original else 224),
        crop_area=(0.35, 1.0), augment="pca_lighting(std=0.1)",
    )  # fmt: skip
    if arg.smoke:  # 67x67 is the grouped network's smallest input
        common.digits_smoke(config, 2, image_size=67 if original else 64, channels=3)
    return config
