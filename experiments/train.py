r"""Trains any config: ``--config=configs/x.py[:variant] --workdir=DIR [--config.f=v]``.

On a CPU host every core becomes a device (unless XLA_FLAGS is set), because XLA
runs each convolution on one core: data-parallel steps then use the whole machine.
"""

import os

from convjax.host_devices import use_all_cpu_cores

use_all_cpu_cores()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax.runs.train import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and plots go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Progress lines are printed; libraries are quiet.
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
