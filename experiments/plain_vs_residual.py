r"""Trains plain and residual CIFAR nets of each depth and plots training error against depth.

  python experiments/plain_vs_residual.py --config=configs/plain_vs_residual.py:digits --workdir=DIR

Each net trains with the ordinary loop in ``DIR/<plain|resnet><depth>`` (resumable);
then its training split (``config.train_error_split``) is evaluated. Writes
``DIR/plain_vs_residual.json`` and ``DIR/plain_vs_residual.png``.
"""

from __future__ import annotations

import json
import os

from convjax.host_devices import use_all_cpu_cores

use_all_cpu_cores()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from convjax.runs.train import train_and_evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/plain_vs_residual.py[:variant]")
_WORKDIR = flags.DEFINE_string("workdir", None, "One sub-directory per net, the figure here.")
flags.mark_flags_as_required(["config", "workdir"])


def net_config(config: ml_collections.ConfigDict, depth: int, residual: bool):
    """The single-run config of ``resnet<depth>`` or ``plain<depth>`` (depth = 6n + 2)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR nets have 6n + 2 layers; got depth {depth}")
    n = (depth - 2) // 6
    run = ml_collections.ConfigDict(config.to_dict())
    run.model = "resnet20" if residual else "plain20"
    run.model_kwargs.stage_sizes = (n, n, n)
    run.dataset.eval_split = config.train_error_split
    return run


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {"plain": {}, "resnet": {}}
    for depth in config.depths:
        for kind in ("plain", "resnet"):
            run_dir = os.path.join(workdir, f"{kind}{depth}")
            metrics = train_and_evaluate(net_config(config, depth, kind == "resnet"), run_dir)
            results[kind][depth] = {
                "train_error": 1.0 - metrics["accuracy"],
                "train_loss": metrics["loss"],
            }
            print(
                f"{kind}{depth}: training error {results[kind][depth]['train_error']:.4f}",
                flush=True,
            )
    return results


def plot(results: dict[str, dict[int, dict]], path: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind, style in (("plain", "o--"), ("resnet", "s-")):
        depths = sorted(results[kind])
        ax.plot(
            depths,
            [100 * results[kind][d]["train_error"] for d in depths],
            style,
            label=kind.replace("resnet", "ResNet"),
        )
    ax.set_xlabel("layers")
    ax.set_ylabel("training error (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    config, workdir = _CONFIG.value, os.path.abspath(_WORKDIR.value)
    results = run_sweep(config, workdir)
    with open(os.path.join(workdir, "plain_vs_residual.json"), "w") as f:
        json.dump(results, f, indent=2)
    title = (
        f"{config.dataset.name}, {config.num_train_steps} steps x batch "
        f"{config.batch_size}, training split"
    )
    plot(results, os.path.join(workdir, "plain_vs_residual.png"), title)


if __name__ == "__main__":
    app.run(main)
