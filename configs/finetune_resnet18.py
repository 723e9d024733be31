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
(``lr_multipliers``; needs the loop to build the optimizer with the task's
``make_optimizer``, see docs/models.md). For the "features once" mode, which computes
the frozen backbone's embeddings a single time, see ``convjax.train.transfer.fit_head``
and ``benchmarks/features_once.py``.

Smoke variant (seconds; a CIFAR ResNet-20 on the offline digits, fine-tuned from the
checkpoint of ``configs/resnet_cifar10.py:resnet20,smoke`` given as
``--config.task_kwargs.pretrained=<its workdir>``): ``:smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import IMAGENET_MEAN, IMAGENET_STD, default_dataset_config
from convjax.models.transfer import BACKBONE


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p for p in (arg or "").split(",") if p]
    unknown = [p for p in parts if p not in ("smoke", "full")]
    if unknown:
        raise ValueError(f"Unknown config variant(s) {unknown}; valid: smoke, full")
    full = "full" in parts
    config = ml_collections.ConfigDict()
    config.model = "resnet18"
    config.model_kwargs = ml_collections.ConfigDict({"num_classes": 10})
    dataset = default_dataset_config()
    dataset.name = "imagenette/160px-v2"
    dataset.eval_split = "validation"
    dataset.image_size = (160, 160)
    dataset.channels = 3
    dataset.mean = IMAGENET_MEAN
    dataset.std = IMAGENET_STD
    dataset.augment = "random_resized_crop(scale=(0.35, 1.0)), mirror"
    config.dataset = dataset
    config.task = "transfer"
    config.task_kwargs = ml_collections.ConfigDict(
        {
            "base": "classification",
            "base_kwargs": {"label_smoothing": 0.0, "topk": (5,)},
            "pretrained": "",  # a .safetensors/.npz torchvision file or a convjax workdir
            "exclude": ["^head/"],
            "freeze": [] if full else [BACKBONE],
            "lr_multipliers": [["^head/", 10.0]] if full else [],
        }
    )
    config.optimizer = ml_collections.ConfigDict(
        {
            # Adam without weight decay: frozen weights get exactly zero gradients.
            "name": "adam",
            "learning_rate": 1e-4 if full else 1e-3,
            "schedule": "cosine",
            "warmup_steps": 0,
            "weight_decay": 0.0,
        }
    )
    config.batch_size = 64
    config.eval_batch_size = 250
    config.num_train_steps = 2 * 9_469 // 64
    config.log_every_steps = 20
    config.eval_every_steps = 0  # at the end
    config.checkpoint_every_steps = 100
    config.keep_checkpoints = 2
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"

    if "smoke" in parts:
        config.model = "resnet20"
        dataset = default_dataset_config()
        dataset.name = "sklearn_digits"
        dataset.image_size = (32, 32)
        dataset.channels = 1
        dataset.mean = (0.5,)
        dataset.std = (0.5,)
        config.dataset = dataset
        config.batch_size = 8
        config.eval_batch_size = 120
        config.num_train_steps = 3
        config.log_every_steps = 1
        config.checkpoint_every_steps = 3
    return config
