r"""LeNet-5 on scikit-learn's bundled handwritten digits (the default experiment).

1,797 real 8x8 digits resized to 32x32x1, a fixed stratified 80/20 split; no network.

Run (uses every CPU core as a device; about a minute on a 2-core machine):

  python experiments/train.py --config=configs/lenet5_digits.py --workdir=/tmp/lenet5_digits

Expected: >= 97% test accuracy (typically ~98-99%).

Smoke variant (seconds; what the tests run):

  python experiments/train.py --config=configs/lenet5_digits.py:smoke --workdir=/tmp/lenet5_smoke
"""

from __future__ import annotations

import ml_collections

from configs import common
from convjax.data.config import digits_dataset


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, smoke=False)
    config = common.classification(
        "lenet5",
        {"num_classes": 10, "activation": "relu", "pool": "max", "batch_norm": False},
        digits_dataset(32),  # the offline 1,797 digits as 32x32x1, normalised to [-1, 1]
        common.adam(2e-3, warmup_steps=50),
        label_smoothing=0.1,
    )
    common.set_run(
        config, batch_size=128, eval_batch_size=256, num_train_steps=400,
        log_every_steps=50, eval_every_steps=200, checkpoint_every_steps=100,
    )  # fmt: skip
    if arg.smoke:
        common.shrink(config, 20, log_every_steps=5, eval_every_steps=10, checkpoint_every_steps=10)
    return config
