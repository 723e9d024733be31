r"""Trains plain and residual CIFAR nets of each depth and plots training error against depth.

  python experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py:digits --workdir=DIR

Each net trains with the ordinary loop in ``DIR/<plain|resnet><depth>`` (resumable);
then its training split (``config.train_error_split``) is evaluated. Writes
``DIR/plain_vs_residual.json`` and ``DIR/plain_vs_residual.png``
(:func:`convjax.runs.sweeps.plain_vs_residual`).
"""

# JAX, TensorFlow and the drivers are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

import os  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/plain_vs_residual.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-directory per net, the figure here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from convjax.host_devices import use_all_cpu_cores
    from convjax.quiet import quiet_logging

    quiet_logging()
    config = _CONFIG.value
    batch_size = config.get("batch_size")
    use_all_cpu_cores(  # before JAX starts its backend
        batch_sizes={
            "batch_size": batch_size,
            "eval_batch_size": config.get("eval_batch_size") or batch_size,
        }
    )
    distributed.initialize()  # --jax_distributed: join a multi-host run
    from convjax.runs.sweeps import SWEEP_JSON, SWEEP_PNG, plain_vs_residual

    plain_vs_residual(config, _WORKDIR.value)
    for what, name in (("figure", SWEEP_PNG), ("results", SWEEP_JSON)):
        print(f"{what}: {os.path.join(os.path.abspath(_WORKDIR.value), name)}")


if __name__ == "__main__":
    app.run(cli_main(main))
