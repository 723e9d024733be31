r"""Fine-tuning torchvision's ImageNet ResNet-18 on Imagenette: frozen backbone, new head.

Export the weights once where torchvision is installed (no pickle is read here):

  python -c "import torchvision, safetensors.torch as st; \
    st.save_file(torchvision.models.resnet18(weights='IMAGENET1K_V1').state_dict(), \
    'resnet18.safetensors')"

Run (tfds' imagenette/160px-v2, downloaded once by tfds):

  python experiments/train.py --config=configs/finetune_resnet18.py \
    --config.task_kwargs.pretrained=resnet18.safetensors --workdir=/tmp/ft_resnet18

The 1000-class ``fc`` is not loaded (``exclude='^head/'``): a fresh 10-class ``head``
is trained while every other parameter is frozen (``freeze=[BACKBONE]``) and every
BatchNorm layer runs on its ImageNet running statistics. Expected: about 97% top-1
on Imagenette's validation split after 2 epochs (its classes are ImageNet classes,
so a linear probe is enough; not measured on this project's CPU machines).

``:full`` fine-tunes everything, with 10x the learning rate on the new head
(``lr_multipliers``, applied by the transfer task's ``make_optimizer``, through which
the train loop builds every optimizer; see docs/models.md). For the "features once"
mode, which computes the frozen backbone's embeddings a single time, see
``convjax.evals.linear_probe.fit_head`` and ``benchmarks/features_once.py``.

Smoke variant (seconds; a CIFAR ResNet-20 on the offline digits, fine-tuned from the
checkpoint of ``configs/resnet_cifar10.py:resnet20,smoke`` given as
``--config.task_kwargs.pretrained=<its workdir>``): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from configs import common
from convjax.data.config import imagenet_dataset
from convjax.models.transfer import BACKBONE


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False, full=False)
    config = ml_collections.ConfigDict()
    config.model = "resnet18"
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10})
    config.dataset = imagenet_dataset(
        True, image_size=160, crop_area=(0.35, 1.0)
    )  # imagenette/160px-v2: 160x160 Inception crops, flips, ImageNet's normalisation
    config.task = "transfer"
    config.task_kwargs = ml_collections.ConfigDict(
        {
            "base": "classification",
            "base_kwargs": {"label_smoothing": 0.0, "topk": (5,)},
            "pretrained": "",  # a .safetensors/.npz torchvision file or a convjax workdir
            "exclude": ["^head/"],
            "freeze": [] if arg.full else [BACKBONE],
            "lr_multipliers": [["^head/", 10.0]] if arg.full else [],
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {
            # Adam without weight decay: frozen weights get exactly zero gradients.
            "name": "adam",
            "learning_rate": 1e-4 if arg.full else 1e-3,
            "schedule": "cosine",
            "warmup_steps": 0,
            "weight_decay": 0.0,
        }
    )
    config.evals = common.evals()
    common.set_run(
        config, batch_size=64, eval_batch_size=250, num_train_steps=2 * 9_469 // 64,
        log_every_steps=20, eval_every_steps=0, checkpoint_every_steps=100,  # eval at the end
        keep_checkpoints=2,
    )  # fmt: skip
    if arg.smoke:  # a CIFAR ResNet-20 on the 32x32x1 digits
        config.model = "resnet20"
        common.digits_smoke(config, 3, eval_every_steps=0)
    return config
