r"""Neural style transfer: ``--config=configs/style_transfer.py --workdir=DIR [--config.f=v]``.

Writes ``config.json``, checkpoints, ``result.png``, ``panel.png`` (content | style |
result), ``cost_curves.png`` and ``costs.json`` to the workdir; prints a progress line
(iteration, each cost term, rate, ETA) every ``log_every_steps`` iterations. With no
``--config.network.weights`` it runs the random-weight VGG and says so.
``--workdir=DIR`` alone continues (or re-renders) the run saved there, with the config
it was started with.

One image cannot be split over devices, so a single image runs on one device with
XLA's multi-threaded CPU kernels; a batch of content images becomes one simulated
device per core (as for training), split by the configured strategy.
"""

# JAX, TensorFlow and the drivers are imported in main(): --help answers at once.

from convjax.quiet import cli_main, quiet_startup

quiet_startup()  # before TensorFlow or JAX is imported

import os  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax import distributed  # noqa: E402  (--jax_distributed)
from convjax.host_devices import use_all_cpu_cores  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Style-transfer config file (default: the workdir's config.json)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Result images, panel and cost curves go here.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from convjax.quiet import quiet_logging

    quiet_logging()  # the progress lines speak; libraries only warn
    from convjax.runs.workdir import CONFIG_JSON, load_config  # starts no JAX backend

    config = _CONFIG.value
    if config is None:
        if not os.path.isfile(os.path.join(_WORKDIR.value, CONFIG_JSON)):
            raise app.UsageError(
                f"{_WORKDIR.value} has no {CONFIG_JSON}: start a run with "
                f"--config=configs/style_transfer.py --workdir={_WORKDIR.value}"
            )
        config = load_config(_WORKDIR.value)
    if len([s for s in str(config.content).split(",") if s.strip()]) > 1:
        use_all_cpu_cores()  # before JAX starts its backend
    distributed.initialize()  # --jax_distributed: join a multi-host run
    from convjax.runs.stylize import stylize

    result = stylize(_CONFIG.value, _WORKDIR.value, announce=lambda line: print(line, flush=True))
    start = {k: result.history[k][0] for k in ("content", "style")}
    print(
        f"style cost {start['style']:.4g} -> {result.final['style']:.4g} "
        f"({start['style'] / max(result.final['style'], 1e-30):.0f}x lower); "
        f"content cost {start['content']:.4g} -> {result.final['content']:.4g}"
    )
    for name, path in result.files.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    app.run(cli_main(main))
