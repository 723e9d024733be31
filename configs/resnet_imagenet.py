r"""ImageNet ResNets (torchvision's structure: ResNet-18/34/50/101/152).

The torchvision reference recipe: SGD momentum 0.9, learning rate 0.1 per 256
images, divided by 10 every 30 of 90 epochs, weight decay 1e-4, random-resized
224 crops and flips, ImageNet normalisation.

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/resnet_imagenet.py:resnet50 --workdir=/tmp/r50

Expected top-1 on the validation set (torchvision's weights from this recipe):
ResNet-18 69.76%, ResNet-34 73.31%, ResNet-50 76.13%, ResNet-101 77.37%,
ResNet-152 78.31%. Not reproduced on this project's CPU machines.

``:imagenette`` trains on Imagenette (10 easy ImageNet classes, tfds
``imagenette/160px-v2``, 128x128 crops, 40 epochs, cosine); expect roughly 85-90%
for ResNet-50 from scratch (fast.ai's leaderboard range; not measured here).

Smoke variant (offline digits resized to 64x64 RGB; seconds): ``:resnet18,smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, models=MODELS, model="resnet50", smoke=False, imagenette=False)
    batch_size = 256
    optimizer = common.imagenet_momentum(
        0.1 * batch_size / 256, arg.imagenette, weight_decay=1e-4
    )  # 0.1 per 256 images
    config = common.imagenet_classification(
        arg.model, arg.imagenette, batch_size=batch_size, epochs=90, optimizer=optimizer
    )
    epochs = 40 if arg.imagenette else 90
    config.eval_every_steps = config.num_train_steps // epochs * 5  # every 5 epochs
    if arg.smoke:
        common.digits_smoke(config, 2, image_size=64, channels=3)
    return config
