r"""FaceNet-style triplet training on the offline `identities/faces` set, evaluated one-shot.

Trains a 128-d L2-normalised embedding (LeNet-5 with BatchNorm as the backbone)
with semi-hard triplet mining (alpha = 0.2) on P x K batches of the 1,000 training
identities, then evaluates on the 100 test identities it never saw: one enrolled
image per identity (one-shot top-1 over the other 900 images) and verification
AUC over all test pairs, with the threshold chosen on the 50 validation identities.

Run (builds the dataset on first use, no network):

  python experiments/faces.py train --config=configs/facenet_identities.py \
      --workdir=/tmp/facenet_identities

Expected: one-shot top-1 >= 90 % and verification AUC >= 0.95 on the unseen
identities, in under 15 minutes on a 2-core CPU (see docs/faces.md for measured
figures). Writes checkpoints, metrics, roc.png, threshold.json and face_eval.json.

Smoke variant (seconds; what the tests run, on `identities/faces_small`):

  python experiments/faces.py train --config=configs/facenet_identities.py:smoke \
      --workdir=/tmp/facenet_smoke
"""

from __future__ import annotations

import ml_collections

import convjax.data.identities  # noqa: F401  (registers the `identities` tfds builder)
from configs import common
from convjax.data.config import default_dataset_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False)
    config = ml_collections.ConfigDict()
    config.model = "embedding"
    config.model_kwargs = ml_collections.ConfigDict(
        {
            "backbone": "lenet5",
            "backbone_kwargs": {"batch_norm": True, "activation": "relu", "pool": "max"},
            "embed_dim": 128,
        }
    )

    config.dataset = default_dataset_config()
    config.dataset.name = "identities/faces"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "validation"
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.25, 0.25, 0.25)

    config.task = "embedding"
    # P x K = 16 identities x 4 images; P is a multiple of the device count.
    config.task_kwargs = ml_collections.ConfigDict(
        {"loss": "triplet", "mining": "semi_hard", "margin": 0.2, "images_per_identity": 4}
    )
    # The loop's in-batch check (eval), and on the 100 unseen test identities every 2,000
    # steps: verification (AUC, EER, TAR@FAR, 10-fold) and one-shot identification, the
    # threshold fitted on the 50 validation identities' pairs.
    unseen = {"threshold_split": "validation", "criterion": "accuracy", "target_far": 1e-3}
    config.evals = common.evals(
        verification={"type": "verification", "split": "test", "every_steps": 2000,
                      "options": unseen},
        one_shot={"type": "one_shot", "split": "test", "every_steps": 2000, "options": unseen},
    )  # fmt: skip
    # The verification heads fitted on validation pairs of precomputed embeddings
    # (reported on test pairs by experiments/faces.py evaluate).
    config.face_eval = ml_collections.ConfigDict({"head_kinds": ("l1", "chi2"), "head_steps": 300})
    config.optimizer = common.adam(1e-3, warmup_steps=100)
    common.set_run(
        config, batch_size=64, eval_batch_size=100, num_train_steps=8000,
        log_every_steps=100, eval_every_steps=4000, checkpoint_every_steps=2000,
        keep_checkpoints=2, parallel="jit",  # see docs/faces.md: one device is steadier on CPU
    )  # fmt: skip

    if arg.smoke:
        config.dataset.name = "identities/faces_small"
        # P x K = 8 identities x 4 images.
        common.shrink(config, 10, batch_size=32, eval_batch_size=24, log_every_steps=5)
        for name in ("verification", "one_shot"):
            config.evals[name].every_steps = 0  # at the end
        config.face_eval.head_kinds = ("chi2",)
        config.face_eval.head_steps = 100
    return config
