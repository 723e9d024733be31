"""Sweeps: several training runs of one config, and the figure that compares them.

:func:`plain_vs_residual` trains ``plain<d>`` and ``resnet<d>`` for every depth ``d``
in ``config.depths`` (``configs/plain_vs_residual.py``), each in its own resumable
workdir ``<workdir>/<plain|resnet><d>``, evaluates each on its training split
(``config.train_error_split``) and writes ``plain_vs_residual.json`` and
``plain_vs_residual.png`` (training error against depth) in ``workdir``.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections
from matplotlib.figure import Figure

from convjax.runs.files import replace_file
from convjax.runs.images import save_figure
from convjax.runs.train import train_and_evaluate
from convjax.train.loop import format_duration

SWEEP_JSON = "plain_vs_residual.json"
SWEEP_PNG = "plain_vs_residual.png"
KINDS = ("plain", "resnet")

Results = dict[str, dict[int, dict[str, float]]]  # kind -> depth -> metrics


def net_config(
    config: ml_collections.ConfigDict, depth: int, residual: bool
) -> ml_collections.ConfigDict:
    """The single-run config of ``resnet<depth>`` or ``plain<depth>`` (depth = 6n + 2)."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR nets have 6n + 2 layers; got depth {depth}")
    n = (depth - 2) // 6
    run = config.copy_and_resolve_references()
    with run.unlocked():  # Configs from --config flags are locked.
        run.model = "resnet20" if residual else "plain20"
        run.model_kwargs.stage_sizes = (n, n, n)
        run.dataset.eval_split = config.train_error_split
    return run


def run_sweep(config: ml_collections.ConfigDict, workdir: str) -> Results:
    """Trains (or resumes) every net of the sweep; its training error and loss."""
    for depth in config.depths:
        net_config(config, depth, True)  # Every depth is checked before anything trains.
    results: Results = {kind: {} for kind in KINDS}
    nets = [(depth, kind) for depth in config.depths for kind in KINDS]
    start = time.perf_counter()
    for i, (depth, kind) in enumerate(nets, 1):
        run_dir = os.path.join(workdir, f"{kind}{depth}")
        print(f"net {i}/{len(nets)}: {kind}{depth} in {run_dir}", flush=True)
        metrics = train_and_evaluate(net_config(config, depth, kind == "resnet"), run_dir)
        results[kind][depth] = {
            "train_error": 1.0 - metrics["accuracy"],
            "train_loss": metrics["loss"],
        }
        elapsed = format_duration(time.perf_counter() - start)
        print(
            f"net {i}/{len(nets)}: {kind}{depth} training error {1.0 - metrics['accuracy']:.4f} "
            f"| sweep {elapsed} so far",
            flush=True,
        )
    return results


def sweep_figure(results: Results, title: str) -> Figure:
    """Training error (%) against depth, plain nets dashed, ResNets solid."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for kind, style in (("plain", "o--"), ("resnet", "s-")):
        depths = sorted(results[kind])
        errors = [100 * results[kind][d]["train_error"] for d in depths]
        ax.plot(depths, errors, style, label=kind.replace("resnet", "ResNet"))
    ax.set_xlabel("layers")
    ax.set_ylabel("training error (%)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return fig


def plain_vs_residual(config: ml_collections.ConfigDict, workdir: str) -> Results:
    """Runs the sweep in ``workdir``; writes its JSON and PNG there and returns the results."""
    workdir = os.path.abspath(workdir)
    results = run_sweep(config, workdir)
    with replace_file(os.path.join(workdir, SWEEP_JSON)) as f:
        json.dump(results, f, indent=2)
    title = (
        f"{config.dataset.name}, {config.num_train_steps} steps x batch "
        f"{config.batch_size}, training split"
    )
    save_figure(sweep_figure(results, title), os.path.join(workdir, SWEEP_PNG), dpi=120)
    return results
