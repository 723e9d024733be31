r"""ImageNet ResNets (torchvision's structure: ResNet-18/34/50/101/152).

The torchvision reference recipe: SGD momentum 0.9, learning rate 0.1 per 256
images, divided by 10 every 30 of 90 epochs, weight decay 1e-4; training images are
Inception crops (area 8-100%, aspect 3/4-4/3) decoded at full resolution and resized
to 224, flipped and normalised; evaluation resizes the shorter side to 256 and takes
the centre 224 (``convjax.data.config.imagenet_chains``). bfloat16 compute with
float32 parameters and BatchNorm statistics (``dtype``; ``--config.dtype=float32``
for full precision).

Run (tfds' imagenet2012 needs the ILSVRC2012 archives in its manual directory):

  python experiments/train.py --config=configs/resnet_imagenet.py:resnet50 --workdir=/tmp/r50

Expected top-1 on the validation set (torchvision's weights from this recipe):
ResNet-18 69.76%, ResNet-34 73.31%, ResNet-50 76.13%, ResNet-101 77.37%,
ResNet-152 78.31%. Not reproduced on this project's CPU machines.

``:imagenette`` trains on Imagenette (10 easy ImageNet classes, tfds
``imagenette/160px-v2``, 128x128 crops, 40 epochs, cosine); expect roughly 85-90%
for ResNet-50 from scratch (fast.ai's leaderboard range; not measured here).

Large batches (``:resnet50,batch=8192``): Goyal et al. 2017's linear scaling, 0.1
per 256 images with a 5-epoch linear warm-up, divided by 10 at epochs 30, 60, 80;
published top-1 76.26% at batch 8k (23.74% error) in one hour on 256 P100 GPUs
(~256 GPU-hours; the batch-256 baseline 76.40%). Any batch from 1k to 8k uses it.

``:resnet50,lars,batch=32768``: LARS (``optax.lars``, trust coefficient 0.001, no
decay or trust ratio for biases and BatchNorm) for batches of 8k and more, after You
et al. 2018 (ImageNet Training in Minutes): 74.9% top-1 at batch 32k in 90 epochs,
20 minutes on 2,048 Xeon Phi (KNL) processors (~680 processor-hours). The paper's
schedule is a polynomial (power 2) decay; here it is the cosine after the same 5-epoch
warm-up (linear scaling for the peak), which is not measured here.

``label_smoothing=0.1`` adds label smoothing (Szegedy et al. 2016; +0.3-0.5% top-1
on ResNet-50 in Goyal-style recipes). An exponential moving average of the weights is
not offered by the trainer yet.

Smoke variant (offline digits resized to 64x64 RGB; seconds): ``:resnet18,smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common

MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _optimizer(batch_size: int, lars: bool, imagenette: bool) -> ml_collections.ConfigDict:
    """torchvision's recipe at 256; Goyal et al.'s linear scaling with a 5-epoch warm-up
    above it; LARS from 8k (module docstring)."""
    learning_rate = 0.1 * batch_size / 256  # 0.1 per 256 images
    warmup = 0 if batch_size <= 256 else 5 * common.IMAGENET_TRAIN // batch_size
    if lars:
        if batch_size < 8192:
            raise ValueError(f"lars is the recipe for batches of 8192 and more; got {batch_size}.")
        optimizer = common.momentum(
            learning_rate, schedule="cosine", weight_decay=1e-4, warmup_steps=warmup
        )
        optimizer.name = "lars"
        return optimizer
    optimizer = common.imagenet_momentum(
        learning_rate, imagenette, weight_decay=1e-4, warmup_steps=warmup
    )
    if batch_size > 256 and not imagenette:  # Goyal et al.: epochs 30, 60, 80 of 90
        optimizer.decay_boundaries = (30 / 90, 60 / 90, 80 / 90)
    return optimizer


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(
        arg, models=MODELS, model="resnet50", smoke=False, imagenette=False, lars=False,
        batch=256, label_smoothing=0.0,
    )  # fmt: skip
    optimizer = _optimizer(arg.batch, arg.lars, arg.imagenette)
    config = common.imagenet_classification(
        arg.model, arg.imagenette, batch_size=arg.batch, epochs=90, optimizer=optimizer
    )
    config.task_kwargs.label_smoothing = arg.label_smoothing
    epochs = 40 if arg.imagenette else 90
    config.eval_every_steps = config.num_train_steps // epochs * 5  # every 5 epochs
    if arg.smoke:
        common.digits_smoke(config, 2, image_size=64, channels=3)
    return config
