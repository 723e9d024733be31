r"""Trains any config: ``--config=configs/x.py[:variant] --workdir=DIR [--config.f=v]``.

  python experiments/train.py --config=configs/lenet5_digits.py --workdir=workdirs/lenet5

The workdir keeps checkpoints (the same command resumes), metrics, curves,
``config.json`` and ``results.json``. SIGTERM or Ctrl-C saves the step the run is at
and exits with status 143 or 130 (128 + signal); a second run on a busy workdir, or
one whose config changes the workdir's model, dataset or optimizer (unless
``--resume_with_changed_config``), is refused with exit status 1. On a CPU host every
core becomes a device (unless XLA_FLAGS is set), because XLA runs each convolution on
one core: data-parallel steps then use the whole machine.
"""

# JAX, TensorFlow and the training code are imported in main(), once absl has parsed the
# flags: --help answers at once, and the device count can follow the parsed config.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, configs/<experiment>.py[:variant]."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, metrics and plots go here.")
_RESUME_CHANGED = flags.DEFINE_bool(
    "resume_with_changed_config", False,
    "Resume a workdir although --config changes its model, dataset or optimizer "
    "(config.json is then kept as config.<step>.json).",
)  # fmt: skip
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from convjax.host_devices import use_all_cpu_cores
    from convjax.quiet import quiet_logging

    quiet_logging()  # progress lines are printed; libraries only warn
    config = _CONFIG.value
    batch_size = config.get("batch_size")
    use_all_cpu_cores(  # before JAX starts its backend
        batch_sizes={
            "batch_size": batch_size,
            "eval_batch_size": config.get("eval_batch_size") or batch_size,
        },
        parallel=config.get("parallel"),
    )
    distributed.initialize()  # --jax_distributed: join a multi-host run
    from convjax.runs.train import train_and_evaluate

    train_and_evaluate(config, _WORKDIR.value, resume_with_changed_config=_RESUME_CHANGED.value)


if __name__ == "__main__":
    app.run(cli_main(main))
