"""The step loop: compiled steps over a batch iterator, with callbacks. No files.

:func:`run_steps` drives any compiled ``train_step(state, batch) -> (state, metrics)``
(a network's weights, or an image in style transfer) from ``start_step + 1`` to
``num_steps``. It keeps at most two steps in flight, fetches metrics to the host once
per log interval (their mean over the interval goes to ``on_log``) and calls each
:class:`Every` callback (evaluate, checkpoint, ...) on its cadence and at the last
step. What those callbacks write, and where, is the caller's business
(:func:`convjax.runs.train.train_and_evaluate` is the one for training runs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convjax.train.parallel import Strategy, prefetch_to_device
from convjax.train.step import EvalStep, TrainStep

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Every:
    """``fn(step, state)`` after every ``steps``-th step and after the last one
    (``steps <= 0``: only after the last). ``state`` is the placed (device) state."""

    steps: int
    fn: Callable[[int, PyTree], None]

    def due(self, step: int, num_steps: int) -> bool:
        return step == num_steps or (self.steps > 0 and step % self.steps == 0)


def run_steps(
    train_step: TrainStep,
    state: PyTree,
    batches: Iterator[PyTree],
    *,
    get_metrics: Callable[[PyTree], PyTree],
    start_step: int,
    num_steps: int,
    log_every: int,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    every: Sequence[Every] = (),
) -> PyTree:
    """Runs steps ``start_step + 1 .. num_steps`` and returns the final (device) state.

    Args:
      train_step: compiled step (e.g. ``Strategy.compile_train_step``); may donate state.
      state: the placed state (``Strategy.put_state``).
      batches: placed batches, one per step (see :func:`prefetch_to_device`).
      get_metrics: device metrics -> host numpy (``Strategy.get_metrics``).
      log_every: steps between ``on_log`` calls (and after the last step).
      on_log: ``on_log(step, scalars)`` with each metric's mean over the interval.
      every: callbacks called after the step, in order, when due.
    """
    pending: list[PyTree] = []
    for step in range(start_step + 1, num_steps + 1):
        state, metrics = train_step(state, next(batches))
        if pending:
            # Keep at most two steps in flight: running further ahead only holds
            # memory, and on simulated CPU devices a backlog of launches can exhaust
            # XLA's launch threads while a collective waits (hang).
            jax.block_until_ready(pending[-1])
        pending.append(metrics)
        if step % log_every == 0 or step == num_steps:
            # One host transfer per log interval, not per step.
            fetched = [get_metrics(m) for m in pending]
            pending.clear()
            if on_log is not None:
                on_log(step, {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]})
        for callback in every:
            if callback.due(step, num_steps):
                callback.fn(step, state)
    return state


def evaluate(
    strategy: Strategy,
    eval_step: EvalStep,
    state: PyTree,
    batches: Iterable[Mapping[str, np.ndarray]],
) -> dict[str, float]:
    """Adds the eval step's sums over every host batch and divides by ``count``."""
    total = None
    for batch in prefetch_to_device(iter(batches), strategy.put_batch):
        sums = eval_step(state, batch)
        total = sums if total is None else jax.tree.map(jnp.add, total, sums)
    if total is None:
        raise ValueError("the eval split is empty")
    total = strategy.get_metrics(total)
    count = float(total.pop("count"))
    return {k: float(v) / max(count, 1.0) for k, v in total.items()} | {"count": count}


def check_finite(step: int, scalars: Mapping[str, float], last_checkpoint: int | None) -> None:
    """Raises ``FloatingPointError`` when the logged ``loss`` is NaN or infinite."""
    loss = scalars.get("loss", 0.0)
    if not math.isfinite(loss):
        where = f"step {last_checkpoint}" if last_checkpoint is not None else "none yet"
        raise FloatingPointError(
            f"Training loss is {loss} at step {step}. Lower optimizer.learning_rate, add "
            f"optimizer.grad_clip_norm, or check the inputs; last checkpoint: {where}."
        )


class Progress:
    """A one-line progress report with steps/s and ETA."""

    def __init__(self, start_step: int, total_steps: int):
        self.total = total_steps
        self.last_step = start_step
        self.last_time = time.perf_counter()
        self.steps_per_sec = float("nan")

    def update(self, step: int) -> float:
        now = time.perf_counter()
        if step > self.last_step:
            self.steps_per_sec = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        return self.steps_per_sec

    def line(self, step: int, scalars: Mapping[str, float]) -> str:
        remaining = (self.total - step) / self.steps_per_sec if self.steps_per_sec > 0 else 0.0
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        metrics = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        return (
            f"step {step}/{self.total} ({100.0 * step / self.total:.0f}%) | {metrics} | "
            f"{self.steps_per_sec:.1f} steps/s | ETA {eta}"
        )
