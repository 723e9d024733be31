"""``train_and_evaluate(config, workdir)``: the one training run for every task.

It builds the model from the registry, the task from ``config.task``, the batches
from the task's ``train_iterator`` and :mod:`convjax.data.pipeline`, the device
placement from a :class:`~convjax.train.parallel.Strategy`, and drives the steps with
:func:`convjax.train.loop.run_steps`. It owns the workdir: ``config.json``,
checkpoints (resumed automatically), metrics, curves and ``results.json``.

Config fields it reads (see ``configs/lenet5_digits.py`` for a complete example):
``model``, ``model_kwargs``, ``dataset``, ``task``, ``task_kwargs``, ``optimizer``,
``batch_size`` (global), ``eval_batch_size``, ``num_train_steps``,
``log_every_steps``, ``eval_every_steps``, ``checkpoint_every_steps``,
``keep_checkpoints``, ``seed``, ``parallel``, ``dtype``, ``conv_impl``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import ml_collections
from absl import logging

from convjax.data import pipeline
from convjax.models.checks import check_image_batch
from convjax.runs import workdir as workdir_lib
from convjax.runs.metrics import MetricLogger
from convjax.tasks import Task, get_task
from convjax.train import loop
from convjax.train.checkpointing import Checkpointer
from convjax.train.parallel import Strategy, get_strategy, prefetch_to_device
from convjax.train.setup import (
    abstract_train_state,
    build_model,
    config_kwargs,
    init_train_state,
)
from convjax.train.state import TrainState

PyTree = Any


@dataclasses.dataclass(frozen=True)
class _Setup:
    """Everything the config decides, built (and checked) before anything compiles."""

    strategy: Strategy
    task: Task
    model: nn.Module
    image_shape: tuple[int, int, int]
    eval_batch_size: int
    num_steps: int


def _setup(config: ml_collections.ConfigDict) -> _Setup:
    strategy = get_strategy(config.get("parallel", "auto"))
    strategy.check_batch_size(config.batch_size)
    eval_batch_size = config.get("eval_batch_size") or config.batch_size
    strategy.check_batch_size(eval_batch_size)
    task = get_task(config.task, **config_kwargs(config.get("task_kwargs")))
    model = build_model(config, strategy.axis_name)
    image_shape = pipeline.dataset_metadata(config.dataset).image_shape
    return _Setup(strategy, task, model, image_shape, eval_batch_size, int(config.num_train_steps))


def _say(message: str) -> None:
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)


def _initial_state(
    setup: _Setup, config: ml_collections.ConfigDict, workdir: str, checkpointer: Checkpointer
) -> TrainState:
    """The newest readable checkpoint's state (restored into a ``jax.eval_shape``
    target), or a freshly initialised one. A workdir trained with an incompatible
    config is refused."""
    if checkpointer.latest_step() is not None:
        abstract = abstract_train_state(setup.model, setup.task, config, setup.image_shape)
        workdir_lib.check_compatible(workdir, config, abstract, setup.image_shape)
        state = workdir_lib.restore_state(checkpointer, abstract)
        if state is not None:
            _say(f"Resumed from {checkpointer.directory} at step {int(state.step)}")
            return state
    return init_train_state(setup.model, setup.task, config, setup.image_shape)


def _train_batches(
    setup: _Setup, config: ml_collections.ConfigDict, start_step: int
) -> Iterator[PyTree]:
    """The task's host batches from ``start_step`` on, checked, then placed on devices."""
    host_batches = setup.task.train_iterator(
        config.dataset, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step
    )
    first = next(host_batches)
    check_image_batch(
        first["image"],
        expected=(config.batch_size // jax.process_count(), *setup.image_shape),
        what=f"dataset {config.dataset.name!r} batches",
    )
    return prefetch_to_device(_chain_first(first, host_batches), setup.strategy.put_batch)


def _chain_first(first, rest):
    yield first
    yield from rest


class _Callbacks:
    """What happens at log, eval and checkpoint time: checks, metric files, console."""

    def __init__(
        self,
        setup: _Setup,
        config: ml_collections.ConfigDict,
        checkpointer: Checkpointer,
        logger: MetricLogger,
        start_step: int,
    ):
        self.setup, self.config = setup, config
        self.checkpointer, self.logger = checkpointer, logger
        self.progress = loop.Progress(
            start_step, setup.num_steps, eval_every=config.get("eval_every_steps") or 0
        )
        self.eval_step = self.progress.timed_first_call(
            setup.strategy.compile_eval_step(setup.task.eval_fn(setup.model)), "eval"
        )
        self.last_checkpoint = checkpointer.latest_step()
        self.eval_metrics: dict[str, float] = {}

    def log(self, step: int, scalars: dict[str, float]) -> None:
        loop.check_finite(step, scalars, self.last_checkpoint)
        if jax.process_index() == 0:
            self.setup.task.check_train_metrics(step, scalars)  # task-specific warnings
        steps_per_sec = self.progress.update(step)
        self.logger.write(step, "train", scalars | {"steps_per_sec": steps_per_sec})
        shown = {k: scalars[k] for k in ("loss", "accuracy") if k in scalars}
        _say(self.progress.line(step, shown))

    def run_eval(self, state: PyTree) -> dict[str, float]:
        batches = pipeline.create_eval_iterator(
            self.config.dataset, global_batch_size=self.setup.eval_batch_size
        )
        self.eval_metrics = loop.evaluate(self.setup.strategy, self.eval_step, state, batches)
        return self.eval_metrics

    def evaluate(self, step: int, state: PyTree) -> None:
        with self.progress.evaluating(step):
            self.run_eval(state)
        # ``count`` is how many examples were evaluated, not a metric to plot.
        metrics = {k: v for k, v in self.eval_metrics.items() if k != "count"}
        self.logger.write(step, "eval", metrics)
        line = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        count = int(self.eval_metrics.get("count", 0))
        _say(f"eval at step {step} on {count:,} examples: {line}")

    def checkpoint(self, step: int, state: PyTree) -> None:
        self.checkpointer.save(step, self.setup.strategy.get_state(state).checkpoint_items())
        self.last_checkpoint = step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final eval metrics. Writes checkpoints, ``metrics.jsonl``/``.csv``,
    TensorBoard summaries, ``training_curves.png``, ``config.json`` and ``results.json``."""
    workdir = os.path.abspath(workdir)
    is_chief = jax.process_index() == 0
    setup = _setup(config)  # Everything that can be wrong with the config fails here.
    checkpointer = Checkpointer(
        os.path.join(workdir, workdir_lib.CHECKPOINT_DIR), keep=config.get("keep_checkpoints", 3)
    )
    state = _initial_state(setup, config, workdir, checkpointer)
    start_step = int(state.step)
    if is_chief:
        workdir_lib.save_config(config, workdir)
    logger = MetricLogger(workdir, resume_step=start_step, enabled=is_chief)
    callbacks = _Callbacks(setup, config, checkpointer, logger, start_step)
    device_state = setup.strategy.put_state(state)
    del state
    try:
        device_state = loop.run_steps(
            callbacks.progress.timed_first_call(  # its first call compiles
                setup.strategy.compile_train_step(
                    setup.task.loss_fn(setup.model),
                    # With dataset.augment_in_pipeline=False: augment + normalise on device.
                    pipeline.device_augment(config.dataset, seed=config.seed),
                )
            ),
            device_state,
            _train_batches(setup, config, start_step),
            get_metrics=setup.strategy.get_metrics,
            start_step=start_step,
            num_steps=setup.num_steps,
            log_every=int(config.get("log_every_steps") or 100),
            on_log=callbacks.log,
            every=(
                loop.Every(config.get("eval_every_steps") or 0, callbacks.evaluate),
                loop.Every(config.get("checkpoint_every_steps") or 0, callbacks.checkpoint),
            ),
        )
        if start_step >= setup.num_steps:  # A finished run: evaluate only.
            callbacks.run_eval(device_state)
    finally:
        checkpointer.close()
        logger.close()
    if is_chief:
        with open(os.path.join(workdir, workdir_lib.RESULTS_JSON), "w") as f:
            json.dump({"step": setup.num_steps, "eval": callbacks.eval_metrics}, f, indent=2)
    return callbacks.eval_metrics
