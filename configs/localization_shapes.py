r"""Classification with localization, or landmark regression, on single-object `shapes`.

64x64 images with zero or one circle / square / triangle (``shapes/single``: 4,000
train / 500 test, built offline on first use). The default trains the course's output
vector ``(p_c, b_x, b_y, b_h, b_w, c_1..c_3)``; the ``landmarks`` variant regresses the
object's 5 landmarks (centre and four corners).

  python experiments/train.py --config=configs/localization_shapes.py --workdir=/tmp/loc
  python experiments/train.py --config=configs/localization_shapes.py:landmarks \
      --workdir=/tmp/landmarks

Expected (measured on a shared 2-core CPU, see docs/detection.md): ``accuracy``
(object/no-object and class right) 0.998 and mean IoU over objects
(``iou_x_object / object_rate``) 0.83; landmarks: ``distance_x_object / object_rate``
(mean error as a fraction of the image side) 0.036. Smoke variants: ``:smoke`` and
``:landmarks_smoke``.
"""

from __future__ import annotations

import ml_collections

from convjax.data.config import default_dataset_config
from convjax.data.shapes import LANDMARK_FLIP_PERMUTATION, NUM_LANDMARKS

VARIANTS = ("smoke", "landmarks", "landmarks_smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg and arg not in VARIANTS:
        raise ValueError(f"Unknown config variant {arg!r}; valid: {', '.join(VARIANTS)}")
    landmarks = bool(arg) and arg.startswith("landmarks")
    smoke = bool(arg) and arg.endswith("smoke")
    config = ml_collections.ConfigDict()
    config.model = "landmark_net" if landmarks else "localization_net"
    config.model_kwargs = ml_collections.ConfigDict(
        {"num_classes": 3, "widths": (16, 32, 64, 64), "pools": 3}
    )
    if landmarks:
        config.model_kwargs.num_landmarks = NUM_LANDMARKS

    config.dataset = default_dataset_config()
    config.dataset.name = "shapes/single_small" if smoke else "shapes/single"
    config.dataset.max_objects = 1
    config.dataset.augment = "mirror"
    config.dataset.landmark_flip_permutation = LANDMARK_FLIP_PERMUTATION
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.25, 0.25, 0.25)

    config.task = "landmarks" if landmarks else "localization"
    config.task_kwargs = ml_collections.ConfigDict({} if landmarks else {"box_weight": 5.0})
    config.optimizer = ml_collections.ConfigDict(
        {
            "name": "adam",
            "learning_rate": 2e-3,
            "schedule": "cosine",
            "warmup_steps": 100,
            "weight_decay": 0.0,
            "grad_clip_norm": 10.0,
        }
    )
    config.batch_size = 32
    config.eval_batch_size = 100
    config.num_train_steps = 1500
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.seed = 0
    config.parallel = "auto"
    config.dtype = "float32"
    config.conv_impl = "xla"
    if smoke:
        config.model_kwargs.widths = (4, 8, 8, 8)
        config.batch_size = 16
        config.eval_batch_size = 16
        config.num_train_steps = 4
        config.log_every_steps = 2
        config.eval_every_steps = 4
        config.checkpoint_every_steps = 4
        config.optimizer.warmup_steps = 0
    return config
