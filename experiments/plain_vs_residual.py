r"""Trains plain and residual CIFAR nets of each depth and plots training error against depth.

  python experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py:digits --workdir=DIR

Each net trains with the ordinary loop in ``DIR/<plain|resnet><depth>`` (resumable);
then its training split (``config.train_error_split``) is evaluated. Writes
``DIR/plain_vs_residual.json`` and ``DIR/plain_vs_residual.png``
(:func:`convjax.runs.sweeps.plain_vs_residual`).
"""

from __future__ import annotations

import os

from convjax.host_devices import use_all_cpu_cores

use_all_cpu_cores()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax.runs.sweeps import plain_vs_residual  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/plain_vs_residual.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-directory per net, the figure here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    plain_vs_residual(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
