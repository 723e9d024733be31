"""``train_and_evaluate(config, workdir)``: the one training loop for every task.

The loop knows no model, dataset or loss: it gets the model from the registry,
the batches from :mod:`convjax.data.pipeline`, the loss and metrics from a task,
and the device placement from a :class:`~convjax.train.parallel.Strategy`.

Optional task hooks: ``task.train_iterator(dataset, global_batch_size=, seed=,
start_step=)`` replaces the default batch iterator; ``task.check_train_metrics(step,
scalars)`` sees every logged set of train metrics on the chief host.

Config fields it reads (see ``configs/lenet5_digits.py`` for a complete example):
``model``, ``model_kwargs``, ``dataset``, ``task``, ``task_kwargs``, ``optimizer``,
``batch_size`` (global), ``eval_batch_size``, ``num_train_steps``,
``log_every_steps``, ``eval_every_steps``, ``checkpoint_every_steps``,
``keep_checkpoints``, ``seed``, ``parallel``, ``dtype``, ``conv_impl``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from convjax.data import pipeline
from convjax.models.checks import check_image_batch
from convjax.models.layers import set_conv_impl
from convjax.tasks import get_task
from convjax.train.checkpointing import Checkpointer
from convjax.train.metric_logging import MetricLogger, Progress
from convjax.train.parallel import Strategy, get_strategy, prefetch_to_device
from convjax.train.setup import build_model, config_kwargs, init_train_state

CHECKPOINT_DIR = "checkpoints"
RESULTS_JSON = "results.json"


def evaluate(
    strategy: Strategy,
    eval_step,
    state,
    batches: Iterator[Mapping[str, np.ndarray]],
) -> dict[str, float]:
    """Adds the eval step's sums over every batch and divides by ``count``."""
    total = None
    for batch in prefetch_to_device(iter(batches), strategy.put_batch):
        sums = eval_step(state, batch)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the eval split is empty")
    total = strategy.get_metrics(total)
    count = float(total.pop("count"))
    return {k: float(v) / max(count, 1.0) for k, v in total.items()} | {"count": count}


def _check_finite(step: int, scalars: Mapping[str, float], last_checkpoint: int | None) -> None:
    loss = scalars.get("loss", 0.0)
    if not math.isfinite(loss):
        where = f"step {last_checkpoint}" if last_checkpoint is not None else "none yet"
        raise FloatingPointError(
            f"Training loss is {loss} at step {step}. Lower optimizer.learning_rate, add "
            f"optimizer.grad_clip_norm, or check the inputs; last checkpoint: {where}."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains ``config`` in ``workdir`` (resuming from its latest checkpoint) and
    returns the final eval metrics. Writes checkpoints, ``metrics.jsonl``/``.csv``,
    TensorBoard summaries, ``training_curves.png`` and ``results.json``."""
    workdir = os.path.abspath(workdir)
    is_chief = jax.process_index() == 0
    set_conv_impl(config.get("conv_impl", "xla"))

    # Everything that can be wrong with the config fails here, before any compile.
    strategy = get_strategy(config.get("parallel", "auto"))
    strategy.check_batch_size(config.batch_size)
    eval_batch_size = config.get("eval_batch_size") or config.batch_size
    strategy.check_batch_size(eval_batch_size)
    task = get_task(config.task, **config_kwargs(config.get("task_kwargs")))
    model = build_model(config, strategy.axis_name)
    meta = pipeline.dataset_metadata(config.dataset)
    num_steps = int(config.num_train_steps)

    state = init_train_state(model, task, config, meta.image_shape)
    checkpointer = Checkpointer(
        os.path.join(workdir, CHECKPOINT_DIR), keep=config.get("keep_checkpoints", 3)
    )
    restored = checkpointer.restore(state.checkpoint_items())
    if restored is not None:
        state = state.replace_from_checkpoint(restored)
        message = f"Resumed from {checkpointer.directory} at step {int(state.step)}"
        logging.info(message)
        if is_chief:
            print(message, flush=True)
    start_step = int(state.step)
    if is_chief:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    logger = MetricLogger(workdir, resume_step=start_step, enabled=is_chief)
    device_state = strategy.put_state(state)
    del state
    train_step = strategy.compile_train_step(task.loss_fn(model))
    eval_step = strategy.compile_eval_step(task.eval_fn(model))

    def eval_batches():
        return pipeline.create_eval_iterator(config.dataset, global_batch_size=eval_batch_size)

    # A task may define how its training batches are drawn (e.g. P identities x K
    # images for triplet mining); the default is the plain shuffled pipeline.
    make_train_iterator = getattr(task, "train_iterator", None) or pipeline.create_train_iterator
    host_batches = make_train_iterator(
        config.dataset, global_batch_size=config.batch_size, seed=config.seed, start_step=start_step
    )
    check_train_metrics = getattr(task, "check_train_metrics", None)
    first = next(host_batches)
    check_image_batch(
        first["image"],
        expected=(config.batch_size // jax.process_count(), *meta.image_shape),
        what=f"dataset {config.dataset.name!r} batches",
    )
    batches = prefetch_to_device(_chain_first(first, host_batches), strategy.put_batch)

    log_every = config.get("log_every_steps", 100)
    eval_every = config.get("eval_every_steps", 0) or num_steps
    ckpt_every = config.get("checkpoint_every_steps", 0) or num_steps
    progress = Progress(start_step, num_steps)
    pending: list[Any] = []
    last_checkpoint = checkpointer.latest_step()
    eval_metrics: dict[str, float] = {}
    try:
        for step in range(start_step + 1, num_steps + 1):
            device_state, metrics = train_step(device_state, next(batches))
            if pending:
                # Keep at most two steps in flight: running further ahead only
                # holds memory, and on simulated CPU devices a backlog of launches
                # can exhaust XLA's launch threads while a collective waits (hang).
                jax.block_until_ready(pending[-1])
            pending.append(metrics)
            if step % log_every == 0 or step == num_steps:
                # One host transfer per log interval, not per step.
                fetched = [strategy.get_metrics(m) for m in pending]
                pending.clear()
                scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
                _check_finite(step, scalars, last_checkpoint)
                if check_train_metrics is not None and is_chief:
                    check_train_metrics(step, scalars)  # task-specific warnings
                steps_per_sec = progress.update(step)
                logger.write(step, "train", scalars | {"steps_per_sec": steps_per_sec})
                shown = {k: v for k, v in scalars.items() if k in ("loss", "accuracy")}
                logging.info(progress.line(step, shown))
                if is_chief:
                    print(progress.line(step, shown), flush=True)
            if step % eval_every == 0 or step == num_steps:
                eval_metrics = evaluate(strategy, eval_step, device_state, eval_batches())
                logger.write(step, "eval", eval_metrics)
                line = " ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items())
                logging.info("eval at step %d: %s", step, line)
                if is_chief:
                    print(f"eval at step {step}: {line}", flush=True)
            if step % ckpt_every == 0 or step == num_steps:
                checkpointer.save(step, strategy.get_state(device_state).checkpoint_items())
                last_checkpoint = step
        if start_step >= num_steps:
            eval_metrics = evaluate(strategy, eval_step, device_state, eval_batches())
    finally:
        checkpointer.close()
        logger.close()
    if is_chief:
        with open(os.path.join(workdir, RESULTS_JSON), "w") as f:
            json.dump({"step": num_steps, "eval": eval_metrics}, f, indent=2)
    return eval_metrics


def _chain_first(first, rest):
    yield first
    yield from rest
