r"""FaceNet-style triplet training on tfds `lfw` (Labeled Faces in the Wild).

LFW has one split of 13,233 images of 5,749 people (1,680 with two or more). The
people are split by a fixed hash of their name into disjoint train (80 %),
validation (5 %, thresholds) and test (15 %) identities; identities with a single
image are never drawn for training. Images: the central 120x120 face crop of the
250x250 image, resized to 64x64. Backbone: ResNet-18 (CIFAR stem) -> 128-d.

Needs the dataset (about 170 MB download, once):

  python -c "import tensorflow_datasets as tfds; tfds.builder('lfw').download_and_prepare()"

Run:

  python experiments/faces.py train --config=configs/facenet_lfw.py --workdir=/tmp/facenet_lfw

Reports one-shot top-1 on the held-out people, verification AUC / EER / TAR@FAR and
LFW-style 10-fold accuracy on pairs of held-out people (not the official
pairs.txt, which tfds does not ship). Expected result: not measured yet -- the
machines this was written on cannot download LFW.

Smoke variant (offline, seconds; the same code path with the drawn faces of
``identities/faces_small`` standing in for LFW: its three splits pooled into one and
re-split by identity hash, as LFW's single split is):

  python experiments/faces.py train --config=configs/facenet_lfw.py:smoke \
      --workdir=/tmp/facenet_lfw_smoke
"""

from __future__ import annotations

import ml_collections

from configs import common, facenet_identities


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False)
    config = facenet_identities.get_config()
    config.model_kwargs = ml_collections.ConfigDict(
        {"backbone": "resnet18_cifar", "backbone_kwargs": {}, "embed_dim": 128}
    )
    config.dataset.name = "lfw"
    config.dataset.example_fn = "lfw_identities"
    config.dataset.image_size = (64, 64)
    config.dataset.train_split = "train"
    config.dataset.eval_split = "train[:2%]"  # the loop's in-batch check only
    config.dataset.identity_split = ml_collections.ConfigDict(
        {
            "source": "train",
            "buckets": 100,
            "train": (0, 80),
            "validation": (80, 85),
            "test": (85, 100),
        }
    )
    config.task_kwargs.mining = "semi_hard"
    config.task_kwargs.images_per_identity = 4
    config.batch_size = 128  # 32 identities x 4 images
    config.num_train_steps = 20_000
    config.eval_every_steps = 5_000
    for name in ("verification", "one_shot"):
        config.evals[name].every_steps = 5_000
    config.checkpoint_every_steps = 2_000
    config.optimizer.learning_rate = 5e-4
    config.optimizer.warmup_steps = 500
    config.parallel = "auto"
    if arg.smoke:
        # 26 drawn identities (4-6 images each) re-split by identity hash into 16 train,
        # 5 validation and 5 test identities; P x K = 8 x 4.
        config.dataset.name = "identities/faces_small"
        config.dataset.example_fn = "identities"
        config.dataset.image_size = (32, 32)  # the drawn faces' own size
        config.dataset.eval_split = "test"
        config.dataset.identity_split = ml_collections.ConfigDict(
            {"source": "train+validation+test", "buckets": 10, "train": (0, 6),
             "validation": (6, 8), "test": (8, 10)}
        )  # fmt: skip
        common.shrink(config, 5, batch_size=32, eval_batch_size=32, log_every_steps=5)
        for name in ("verification", "one_shot"):
            config.evals[name].every_steps = 0  # at the end
        config.face_eval.head_kinds = ("chi2",)
        config.face_eval.head_steps = 100
    return config
