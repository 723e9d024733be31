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

import contextlib
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
    stop: Callable[[int], bool] | None = None,
) -> PyTree:
    """Runs steps ``start_step + 1 .. num_steps`` and returns the final (device) state.

    ``stop(step)``, asked after each step but the last, ends the loop early when true:
    that step is logged, its callbacks run, and its state is returned (e.g. to save it
    on a preemption signal, :class:`convjax.train.preemption.StopSignals`).

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
        stopping = stop is not None and step < num_steps and stop(step)
        if step % log_every == 0 or step == num_steps or stopping:
            # One host transfer per log interval, not per step.
            fetched = [get_metrics(m) for m in pending]
            pending.clear()
            if on_log is not None:
                on_log(step, {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]})
        for callback in every:
            if callback.due(step, num_steps):
                callback.fn(step, state)
        if stopping:
            break
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


class Progress:
    """Progress lines that tell the truth about time, for steps ``start_step + 1 ..
    total_steps`` of this process (a resumed run counts only its own steps).

    - The compile time is measured apart (wrap the compiled step with
      :meth:`timed_first_call`: its first call traces and compiles) and shown on the
      first line; steps/s counts only the time since, minus evaluation.
    - steps/s and the ETA average over the whole run so far, not the last interval.
    - The ETA adds the evaluations still to come (every ``eval_every`` steps and after
      the last step, as :class:`Every` calls them; none when ``eval_every`` is
      ``None``), each costing the mean of the evaluations timed so far by
      :meth:`evaluating` (their compile left out).

    ``clock`` is injectable (seconds, monotonic) so tests can drive time.
    """

    def __init__(
        self,
        start_step: int,
        total_steps: int,
        *,
        eval_every: int | None = 0,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.start_step = int(start_step)
        self.total = int(total_steps)
        self.clock = clock
        self.compile_seconds: dict[str, float] = {}  # "train" / "eval" -> first-call seconds
        self.steps_per_sec = float("nan")
        self._steps_since = clock()  # replaced by the end of the first (compiling) call
        self._eval_seconds = 0.0  # evaluation time since _steps_since
        self._eval_costs: list[float] = []  # seconds per evaluation, compile excluded
        self.expect_evals([] if eval_every is None else [eval_every])
        self._compile_shown = False

    def expect_evals(self, cadences: Sequence[int]) -> None:
        """The steps with an evaluation to come: where any of ``cadences`` is due (as
        :class:`Every` calls them: every ``c`` steps and after the last one)."""
        dues = [Every(c, lambda step, state: None).due for c in cadences]
        self._evals_to_come = {
            s
            for s in range(self.start_step + 1, self.total + 1)
            if any(due(s, self.total) for due in dues)
        }

    def timed_first_call(self, fn: Callable, what: str = "train") -> Callable:
        """``fn`` whose first call (trace + compile + dispatch) is timed as
        ``compile_seconds[what]``; for ``"train"`` the step rate is counted from its end."""

        def call(*args, **kwargs):
            if what in self.compile_seconds:
                return fn(*args, **kwargs)
            start = self.clock()
            out = fn(*args, **kwargs)
            end = self.clock()
            self.compile_seconds[what] = end - start
            if what == "train":
                self._steps_since, self._eval_seconds = end, 0.0
            return out

        return call

    @contextlib.contextmanager
    def evaluating(self, step: int) -> Iterator[None]:
        """Times the evaluation at ``step`` (the block): left out of steps/s, its cost
        (less an eval compile inside it) predicts the evaluations to come."""
        compiled = self.compile_seconds.get("eval", 0.0)
        start = self.clock()
        try:
            yield
        finally:
            seconds = self.clock() - start
            self._eval_seconds += seconds
            self._eval_costs.append(seconds - (self.compile_seconds.get("eval", 0.0) - compiled))
            self._evals_to_come.discard(step)

    def update(self, step: int) -> float:
        """steps/s of this process's steps up to ``step`` (compile and evaluation left out)."""
        busy = self.clock() - self._steps_since - self._eval_seconds
        if step > self.start_step and busy > 0:
            self.steps_per_sec = (step - self.start_step) / busy
        return self.steps_per_sec

    def evals_to_come(self, step: int) -> int:
        """Evaluations not yet run at ``step`` (the one due at ``step`` included)."""
        return sum(1 for s in self._evals_to_come if s >= step)

    def eta_seconds(self, step: int) -> float:
        """Seconds left after ``step``: the steps at the mean rate, plus the evaluations
        to come at their mean cost (0 until one has been timed; :meth:`line` says so)."""
        steps = (self.total - step) / self.steps_per_sec if self.steps_per_sec > 0 else math.nan
        cost = float(np.mean(self._eval_costs)) if self._eval_costs else 0.0
        return steps + self.evals_to_come(step) * cost

    def line(self, step: int, scalars: Mapping[str, float]) -> str:
        """``step 50/400 (12%) | loss=1.52 | compile 3.1 s | 6.2 steps/s | ETA 0:01:02 + 2 evals``
        (the compile time on the first line only; ``+ N evals`` until one is timed)."""
        parts = [f"step {step}/{self.total} ({100.0 * step / max(self.total, 1):.0f}%)"]
        if scalars:
            parts.append(" ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
        if "train" in self.compile_seconds and not self._compile_shown:
            parts.append(f"compile {self.compile_seconds['train']:.1f} s")
            self._compile_shown = True
        parts.append(f"{self.steps_per_sec:.1f} steps/s")
        eta = f"ETA {format_duration(self.eta_seconds(step))}"
        untimed = self.evals_to_come(step) if not self._eval_costs else 0
        if untimed:  # no evaluation timed yet: their time is not in the ETA
            eta += f" + {untimed} eval{'s' if untimed > 1 else ''}"
        parts.append(eta)
        return " | ".join(parts)


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded); ``?`` when unknown."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
