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

from configs import common
from convjax.data.shapes import NUM_LANDMARKS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(
        arg, smoke=False, landmarks=False, aliases={"landmarks_smoke": "landmarks,smoke"}
    )
    config = ml_collections.ConfigDict()
    config.model = "landmark_net" if arg.landmarks else "localization_net"
    config.model_kwargs = ml_collections.ConfigDict(
        {"num_classes": 3, "widths": (16, 32, 64, 64), "pools": 3}
    )
    if arg.landmarks:
        config.model_kwargs.num_landmarks = NUM_LANDMARKS
    name = "shapes/single_small" if arg.smoke else "shapes/single"
    config.dataset = common.shapes_dataset(name, max_objects=1)
    config.task = "landmarks" if arg.landmarks else "localization"
    config.task_kwargs = ml_collections.ConfigDict({} if arg.landmarks else {"box_weight": 5.0})
    config.optimizer = common.adam(2e-3, warmup_steps=100, grad_clip_norm=10.0)
    config.evals = common.evals()
    common.set_run(
        config, batch_size=32, eval_batch_size=100, num_train_steps=1500,
        log_every_steps=100, eval_every_steps=500, checkpoint_every_steps=500,
        keep_checkpoints=2,
    )  # fmt: skip
    if arg.smoke:
        config.model_kwargs.widths = (4, 8, 8, 8)
        common.shrink(config, 4, batch_size=16, eval_batch_size=16, log_every_steps=2)
    return config
